//! Redis multiplexing end to end: many pipelined clients over few upstream connections each
//! see exactly their own replies in order; MULTI/EXEC and BLPOP on pinned connections; 200
//! subscribers on one upstream subscriber connection; a quiet route on one shared upstream
//! connection, and a second one while a large reply streams in; the pool cap holds throughout.

mod common;

use common::redis::{cleanup, direct, start, upstream_conns, Raw, REDIS_PORT};
use common::unique;
use std::time::{Duration, Instant};

#[test]
fn pipelined_interleaved_clients_get_their_own_replies_in_order() {
    let r = start(4, "");
    let p = unique("dgft_pipe");
    let clients = 24;
    let per = 300;
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let port = r.port;
            let p = p.clone();
            std::thread::spawn(move || {
                let mut raw = Raw::connect(port);
                let key = format!("{p}:c{c}");
                // One big pipeline: SET then a mix of INCR / GET / ECHO, all unique per client.
                let mut out = String::new();
                let mut expect = String::new();
                let push = |out: &mut String, args: &[&str]| {
                    out.push_str(&format!("*{}\r\n", args.len()));
                    for a in args {
                        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
                    }
                };
                push(&mut out, &["SET", &key, "0"]);
                expect.push_str("+OK\r\n");
                for i in 1..=per {
                    push(&mut out, &["INCR", &key]);
                    expect.push_str(&format!(":{i}\r\n"));
                    let tag = format!("c{c}-{i}");
                    push(&mut out, &["ECHO", &tag]);
                    expect.push_str(&format!("${}\r\n{tag}\r\n", tag.len()));
                }
                push(&mut out, &["GET", &key]);
                let v = per.to_string();
                expect.push_str(&format!("${}\r\n{v}\r\n", v.len()));
                // Send in uneven chunks so frames straddle reads.
                for chunk in out.as_bytes().chunks(777) {
                    raw.send(chunk);
                }
                let got = raw.replies(2 * per + 2);
                assert_eq!(String::from_utf8_lossy(&got), expect, "client {c}");
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread");
    }
    assert!(upstream_conns(&format!("dgf-{}", r.route)) <= 4);
    cleanup(&p);
}

#[test]
fn a_quiet_route_holds_one_upstream_connection() {
    // Eight shared slots' worth of pool, twelve clients one command at a time: never
    // `FILL` commands in flight, so every client joins the first connection.
    let r = start(16, "");
    let p = unique("dgft_quiet");
    let handles: Vec<_> = (0..12)
        .map(|c| {
            let (port, key) = (r.port, format!("{p}:c{c}"));
            std::thread::spawn(move || {
                let mut raw = Raw::connect(port);
                for i in 0..100 {
                    raw.cmd(&["SET", &key, &i.to_string()]);
                    assert_eq!(raw.replies(1), b"+OK\r\n");
                    raw.cmd(&["GET", &key]);
                    let v = i.to_string();
                    assert_eq!(String::from_utf8_lossy(&raw.replies(1)), format!("${}\r\n{v}\r\n", v.len()));
                }
                raw
            })
        })
        .collect();
    let clients: Vec<Raw> = handles.into_iter().map(|h| h.join().expect("client thread")).collect();
    let conns = upstream_conns(&format!("dgf-{}", r.route));
    assert_eq!(conns, 1, "twelve clients at one command each should share one upstream connection, dgf holds {conns}");
    drop(clients);
    cleanup(&p);
}

#[test]
fn a_large_reply_arriving_sends_other_clients_to_the_next_connection() {
    let r = start(4, "");
    let p = unique("dgft_large");
    let key = format!("{p}:big");
    let value = "x".repeat(48 << 20);
    let mut up = Raw::connect(REDIS_PORT);
    up.cmd(&["SET", &key, &value]);
    assert_eq!(up.replies(1), b"+OK\r\n");
    let name = format!("dgf-{}", r.route);
    let mut a = Raw::connect(r.port);
    a.cmd(&["GET", &format!("{p}:none")]);
    assert_eq!(a.replies(1), b"$-1\r\n");
    assert_eq!(upstream_conns(&name), 1, "a quiet route holds one shared connection");
    // Client A asks for four copies (192 MiB) and reads them as they come. Once its first
    // reply is in, the next ones stream in on the first shared connection: client B's
    // command must not queue behind them.
    let gets = 4;
    let one = value.len() + format!("${}\r\n\r\n", value.len()).len();
    let get = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
    a.send(get.repeat(gets).as_bytes());
    let (first_in, first) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let (mut total, mut tmp) = (0, vec![0u8; 1 << 16]);
        while total < gets * one {
            let n = std::io::Read::read(&mut a.s, &mut tmp).expect("read");
            assert!(n > 0, "dgf closed A after {total} bytes");
            if total < one && total + n >= one {
                let _ = first_in.send(());
            }
            total += n;
        }
        (total, Instant::now())
    });
    first.recv_timeout(Duration::from_secs(60)).expect("A's first reply");
    std::thread::sleep(Duration::from_millis(10));
    let mut b = Raw::connect(r.port);
    b.cmd(&["GET", &format!("{p}:none")]);
    assert_eq!(b.replies(1), b"$-1\r\n");
    let b_done = Instant::now();
    let conns = upstream_conns(&name);
    let (total, a_done) = reader.join().expect("reader");
    assert_eq!(total, gets * one);
    assert_eq!(conns, 2, "B should have gone to a second shared connection while A's replies streamed in");
    assert!(b_done < a_done, "B's reply waited for A's");
    cleanup(&p);
}

#[test]
fn multi_exec_is_pinned_and_others_keep_working() {
    let r = start(4, "");
    let p = unique("dgft_tx");
    let k = format!("{p}:k");
    let mut t = Raw::connect(r.port);
    let mut o = Raw::connect(r.port);
    t.cmd(&["MULTI"]);
    assert_eq!(t.replies(1), b"+OK\r\n");
    t.cmd(&["SET", &k, "from-tx"]);
    assert_eq!(t.replies(1), b"+QUEUED\r\n");
    // Another client on the shared connections is not inside the transaction.
    o.cmd(&["GET", &k]);
    assert_eq!(o.replies(1), b"$-1\r\n");
    o.cmd(&["SET", &format!("{p}:o"), "1"]);
    assert_eq!(o.replies(1), b"+OK\r\n");
    t.cmd(&["INCR", &format!("{p}:n")]);
    assert_eq!(t.replies(1), b"+QUEUED\r\n");
    t.cmd(&["EXEC"]);
    assert_eq!(t.replies(1), b"*2\r\n+OK\r\n:1\r\n");
    o.cmd(&["GET", &k]);
    assert_eq!(o.replies(1), b"$7\r\nfrom-tx\r\n");
    // WATCH + a conflicting write from another client aborts EXEC.
    t.cmd(&["WATCH", &k]);
    assert_eq!(t.replies(1), b"+OK\r\n");
    o.cmd(&["SET", &k, "changed"]);
    assert_eq!(o.replies(1), b"+OK\r\n");
    t.send(
        format!("*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n$1\r\nx\r\n*1\r\n$4\r\nEXEC\r\n", k.len())
            .as_bytes(),
    );
    assert_eq!(t.replies(3), b"+OK\r\n+QUEUED\r\n*-1\r\n");
    // Pipelined: commands after EXEC go back to the shared connection, in order.
    t.send(b"*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nECHO\r\n$1\r\na\r\n*1\r\n$4\r\nEXEC\r\n*2\r\n$4\r\nECHO\r\n$1\r\nb\r\n");
    assert_eq!(t.replies(4), b"+OK\r\n+QUEUED\r\n*1\r\n$1\r\na\r\n$1\r\nb\r\n");
    // A client that leaves inside MULTI does not leak its transaction to anyone.
    let mut gone = Raw::connect(r.port);
    gone.cmd(&["MULTI"]);
    assert_eq!(gone.replies(1), b"+OK\r\n");
    gone.cmd(&["SET", &k, "never"]);
    assert_eq!(gone.replies(1), b"+QUEUED\r\n");
    drop(gone);
    for _ in 0..5 {
        let mut n = Raw::connect(r.port);
        n.cmd(&["MULTI"]);
        assert_eq!(n.replies(1), b"+OK\r\n");
        n.cmd(&["EXEC"]);
        assert_eq!(n.replies(1), b"*0\r\n");
    }
    assert_eq!(direct(&["GET", &k]), "changed");
    cleanup(&p);
}

#[test]
fn blpop_blocks_only_its_client() {
    let r = start(4, "");
    let p = unique("dgft_bl");
    let list = format!("{p}:list");
    let mut blocked = Raw::connect(r.port);
    blocked.cmd(&["BLPOP", &list, "10"]);
    std::thread::sleep(Duration::from_millis(100));
    // Others keep working over the shared connections while BLPOP waits.
    let start = Instant::now();
    let mut o = Raw::connect(r.port);
    for i in 0..50 {
        o.cmd(&["ECHO", &i.to_string()]);
        let s = i.to_string();
        assert_eq!(o.replies(1), format!("${}\r\n{s}\r\n", s.len()).into_bytes());
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    o.cmd(&["RPUSH", &list, "item"]);
    assert_eq!(o.replies(1), b":1\r\n");
    let got = blocked.replies(1);
    assert_eq!(got, format!("*2\r\n${}\r\n{list}\r\n$4\r\nitem\r\n", list.len()).into_bytes());
    // The blocked client goes back to shared connections afterwards.
    blocked.cmd(&["PING"]);
    assert_eq!(blocked.replies(1), b"+PONG\r\n");
    // A client that disconnects while blocked frees its pinned connection.
    for _ in 0..4 {
        let mut b = Raw::connect(r.port);
        b.cmd(&["BLPOP", &format!("{p}:never"), "0"]);
        std::thread::sleep(Duration::from_millis(50));
        drop(b);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut b = Raw::connect(r.port);
    b.cmd(&["BLPOP", &format!("{p}:never"), "0.1"]);
    assert_eq!(b.replies(1), b"*-1\r\n", "pinned connections of gone clients were freed");
    assert!(upstream_conns(&format!("dgf-{}", r.route)) <= 4);
    cleanup(&p);
}

#[test]
fn two_hundred_subscribers_share_one_upstream_connection() {
    let r = start(4, "");
    let ch = unique("dgft_ch");
    let mut subs: Vec<Raw> = (0..200).map(|_| Raw::connect(r.port)).collect();
    for (i, s) in subs.iter_mut().enumerate() {
        if i % 2 == 0 {
            s.cmd(&["SUBSCRIBE", &ch]);
            assert_eq!(s.replies(1), format!("*3\r\n$9\r\nsubscribe\r\n${}\r\n{ch}\r\n:1\r\n", ch.len()).into_bytes());
        } else {
            let pat = format!("{ch}*");
            s.cmd(&["PSUBSCRIBE", &pat]);
            assert_eq!(
                s.replies(1),
                format!("*3\r\n$10\r\npsubscribe\r\n${}\r\n{pat}\r\n:1\r\n", pat.len()).into_bytes()
            );
        }
    }
    let mut publisher = Raw::connect(r.port);
    publisher.cmd(&["PUBLISH", &ch, "hello"]);
    // The upstream counts one subscriber per channel/pattern: dgf's hub connection.
    assert_eq!(publisher.replies(1), b":2\r\n");
    for (i, s) in subs.iter_mut().enumerate() {
        let m = String::from_utf8_lossy(&s.replies(1)).into_owned();
        if i % 2 == 0 {
            assert_eq!(m, format!("*3\r\n$7\r\nmessage\r\n${}\r\n{ch}\r\n$5\r\nhello\r\n", ch.len()));
        } else {
            assert!(m.starts_with("*4\r\n$8\r\npmessage\r\n"), "{m}");
        }
    }
    // Subscribed RESP2 clients may only run subscription commands (and PING).
    subs[0].cmd(&["GET", "x"]);
    assert!(subs[0].replies(1).starts_with(b"-ERR Can't execute 'get'"));
    subs[0].cmd(&["PING"]);
    assert_eq!(subs[0].replies(1), b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    let name = format!("dgf-{}", r.route);
    let conns = upstream_conns(&name);
    assert!(conns <= 4 + 1, "dgf holds {conns} upstream connections");
    let numsub = direct(&["PUBSUB", "NUMSUB", &ch]);
    assert_eq!(numsub.lines().nth(1), Some("1"), "one upstream subscription for 100 clients: {numsub}");
    // Unsubscribing everyone drops the upstream subscription.
    for s in subs.iter_mut().step_by(2) {
        s.cmd(&["UNSUBSCRIBE"]);
        assert!(s.replies(1).starts_with(b"*3\r\n$11\r\nunsubscribe\r\n"));
    }
    drop(subs);
    let deadline = Instant::now() + Duration::from_secs(5);
    while direct(&["PUBSUB", "NUMSUB", &ch]).lines().nth(1) != Some("0") {
        assert!(Instant::now() < deadline, "upstream subscription not released");
        std::thread::sleep(Duration::from_millis(50));
    }
}
