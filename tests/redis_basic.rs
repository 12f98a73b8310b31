//! Redis route end to end: redis-cli and redis-rs through dgf against the real Redis; AUTH,
//! SELECT isolation, CLIENT commands, inline commands, malformed and oversized input.

mod common;

use common::redis::{cleanup, cli, direct, start, Raw};
use common::unique;

#[test]
fn config_example_and_redis_cli() {
    let r = start(4, "");
    let p = unique("dgft_cli");
    let k = format!("{p}:k");
    assert_eq!(cli(r.port, &["SET", &k, "hello"]), "OK");
    assert_eq!(cli(r.port, &["GET", &k]), "hello");
    assert_eq!(direct(&["GET", &k]), "hello", "the write reached the real Redis");
    assert_eq!(cli(r.port, &["PING"]), "PONG");
    assert_eq!(cli(r.port, &["INCR", &format!("{p}:n")]), "1");
    assert_eq!(cli(r.port, &["DEL", &k, &format!("{p}:n")]), "2");
    assert_eq!(cli(r.port, &["GET", &k]), "");
    // Inline commands (telnet style) are re-encoded as RESP upstream.
    let mut raw = Raw::connect(r.port);
    raw.send(format!("SET {k} \"a b\"\r\nGET {k}\r\nDEL {k}\r\n").as_bytes());
    assert_eq!(raw.replies(3), b"+OK\r\n$3\r\na b\r\n:1\r\n");
    cleanup(&p);
}

#[test]
fn redis_rs_client_works() {
    let r = start(4, "");
    let p = unique("dgft_rs");
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", r.port)).unwrap();
    let mut c = client.get_connection().unwrap();
    let k = format!("{p}:h");
    let _: () = redis::cmd("HSET").arg(&k).arg("a").arg("1").arg("b").arg("2").query(&mut c).unwrap();
    let all: std::collections::HashMap<String, String> = redis::cmd("HGETALL").arg(&k).query(&mut c).unwrap();
    assert_eq!(all.len(), 2);
    let (a, b): (String, String) =
        redis::pipe().cmd("HGET").arg(&k).arg("a").cmd("HGET").arg(&k).arg("b").query(&mut c).unwrap();
    assert_eq!((a.as_str(), b.as_str()), ("1", "2"));
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    assert!(id > 0);
    let _: () = redis::cmd("CLIENT").arg("SETNAME").arg("worker-1").query(&mut c).unwrap();
    let name: String = redis::cmd("CLIENT").arg("GETNAME").query(&mut c).unwrap();
    assert_eq!(name, "worker-1");
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut c).unwrap();
    assert!(info.contains("name=worker-1"), "{info}");
    let _: () = redis::cmd("DEL").arg(&k).query(&mut c).unwrap();
    cleanup(&p);
}

#[test]
fn select_is_per_client() {
    let r = start(2, "");
    let p = unique("dgft_sel");
    let k = format!("{p}:k");
    let mut a = Raw::connect(r.port);
    let mut b = Raw::connect(r.port);
    a.cmd(&["SELECT", "1"]);
    assert_eq!(a.replies(1), b"+OK\r\n");
    a.cmd(&["SET", &k, "in-db1"]);
    b.cmd(&["SET", &k, "in-db0"]);
    assert_eq!(a.replies(1), b"+OK\r\n");
    assert_eq!(b.replies(1), b"+OK\r\n");
    // Interleave many times on the same shared connection.
    for _ in 0..20 {
        a.cmd(&["GET", &k]);
        b.cmd(&["GET", &k]);
        assert_eq!(a.replies(1), b"$6\r\nin-db1\r\n");
        assert_eq!(b.replies(1), b"$6\r\nin-db0\r\n");
    }
    assert_eq!(direct(&["-n", "1", "GET", &k]), "in-db1");
    assert_eq!(direct(&["-n", "0", "GET", &k]), "in-db0");
    a.cmd(&["SELECT", "99999"]);
    let e = a.replies(1);
    assert!(e.starts_with(b"-ERR"), "{}", String::from_utf8_lossy(&e));
    a.cmd(&["GET", &k]);
    assert_eq!(a.replies(1), b"$6\r\nin-db1\r\n", "a failed SELECT keeps the old database");
    cleanup(&p);
}

#[test]
fn auth_against_dgf_users() {
    let users = r#"
[[users]]
name = "default"
password = "topsecret"

[[users]]
name = "alice"
password = "SCRAM-SHA-256$4096:OPFghirySu7CKImVf8lWMg==$QZ+OwrCC0QozrE0Z8WIVi4O3V/1Z4OnJkXaY3qdqWWE=:VThFGm+vE39xLMTCUWYXaucppYmJIF0rXrcRzr1/lz4="

[[users]]
name = "bob"
password = "bobpw"
roles = ["analyst"]
"#;
    let r = start(2, users);
    let mut c = Raw::connect(r.port);
    c.cmd(&["GET", "x"]);
    assert_eq!(c.replies(1), b"-NOAUTH Authentication required.\r\n");
    c.cmd(&["AUTH", "wrong"]);
    let e = c.replies(1);
    assert!(e.starts_with(b"-WRONGPASS"), "{}", String::from_utf8_lossy(&e));
    c.cmd(&["AUTH", "topsecret"]);
    assert_eq!(c.replies(1), b"+OK\r\n");
    c.cmd(&["PING"]);
    assert_eq!(c.replies(1), b"+PONG\r\n");
    let mut b = Raw::connect(r.port);
    b.cmd(&["AUTH", "bob", "bobpw"]);
    assert_eq!(b.replies(1), b"+OK\r\n");
    b.cmd(&["CLIENT", "INFO"]);
    assert!(String::from_utf8_lossy(&b.replies(1)).contains("user=bob"));
    // HELLO 3 with AUTH inside, and a SCRAM verifier checked against a plaintext password
    // (the verifier above is what PostgreSQL 15 stores for the password "secret").
    let mut h = Raw::connect(r.port);
    h.cmd(&["HELLO", "3", "AUTH", "alice", "secret"]);
    let hello = h.replies(1);
    assert!(hello.starts_with(b"%7\r\n"), "{}", String::from_utf8_lossy(&hello));
    let mut h2 = Raw::connect(r.port);
    h2.cmd(&["HELLO", "3", "AUTH", "alice", "nope"]);
    assert!(h2.replies(1).starts_with(b"-WRONGPASS"));
    h2.cmd(&["HELLO", "3"]);
    assert!(h2.replies(1).starts_with(b"-NOAUTH"));
    // redis-cli with a password.
    assert_eq!(cli(r.port, &["--no-auth-warning", "--user", "bob", "--pass", "bobpw", "PING"]), "PONG");
    assert!(
        cli(r.port, &["--no-auth-warning", "--user", "bob", "--pass", "bad", "PING"]).contains("WRONGPASS")
            || cli(r.port, &["--no-auth-warning", "--user", "bob", "--pass", "bad", "PING"]).contains("NOAUTH")
    );
}

#[test]
fn malformed_and_oversized_input_close_only_that_client() {
    let r = start(2, "");
    let mut good = Raw::connect(r.port);
    good.cmd(&["PING"]);
    assert_eq!(good.replies(1), b"+PONG\r\n");
    let mut bad = Raw::connect(r.port);
    bad.send(b"*1\r\n:12\r\n");
    let out = String::from_utf8_lossy(&bad.read_to_close()).into_owned();
    assert!(out.starts_with("-ERR Protocol error"), "{out}");
    let mut big = Raw::connect(r.port);
    big.send(b"*2\r\n$3\r\nGET\r\n$999999999999\r\n");
    let out = String::from_utf8_lossy(&big.read_to_close()).into_owned();
    assert!(out.starts_with("-ERR Protocol error: bulk length"), "{out}");
    let mut deep = Raw::connect(r.port);
    deep.send(b"*99999999999\r\n");
    let out = String::from_utf8_lossy(&deep.read_to_close()).into_owned();
    assert!(out.starts_with("-ERR Protocol error"), "{out}");
    // Replies owed before the bad frame are still delivered, in order.
    let mut mixed = Raw::connect(r.port);
    mixed.send(b"PING\r\n*1\r\n$4\r\nPING\r\n*x\r\n");
    let out = String::from_utf8_lossy(&mixed.read_to_close()).into_owned();
    assert!(out.starts_with("+PONG\r\n+PONG\r\n-ERR Protocol error"), "{out}");
    good.cmd(&["PING"]);
    assert_eq!(good.replies(1), b"+PONG\r\n", "other clients keep working");
}

/// `/ready` on a Redis route with an open multiplexed connection PINGs down it instead of
/// dialling Redis: a probe every few seconds adds nothing to the provider's connection count
/// (Redis Cloud free: 30). Cold, or once Redis is gone, it dials (and fails).
#[test]
fn ready_pings_an_open_connection_before_dialling() {
    use common::{free_port, Dgf};
    use std::time::{Duration, Instant};
    let up = free_port();
    let dir = std::env::temp_dir().join(unique("dgft_ready_redis"));
    std::fs::create_dir_all(&dir).unwrap();
    /// Kills the private server however the test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let server = std::process::Command::new("redis-server")
        .args(["--port", &up.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    let server = Killed(server);
    let received = || -> usize {
        let info = cli(up, &["INFO", "stats"]);
        let line = info.lines().find_map(|l| l.strip_prefix("total_connections_received:"));
        line.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    let t0 = Instant::now();
    while received() == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "private redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let port = free_port();
    let toml = format!(
        "[admin]\nlisten = \"{{admin}}\"\n[[routes]]\nname = \"cache\"\nprotocol = \"redis\"\n\
         listen = \"127.0.0.1:{port}\"\nupstream = \"redis://127.0.0.1:{up}\"\npool = {{ size = 4 }}\n"
    );
    let dgf = Dgf::start(&toml, &[port]);
    // Each count is itself one connection (redis-cli INFO).
    let before = received();
    assert_eq!(dgf.admin("GET", "/ready").0, 200);
    assert_eq!(received(), before + 2, "a cold route's /ready dials");
    assert_eq!(cli(port, &["PING"]), "PONG", "opens the shared connection");
    let warm = received();
    for _ in 0..5 {
        let (status, body) = dgf.admin("GET", "/ready");
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(received(), warm + 1, "a warm route's /ready dialled Redis");
    drop(server);
    assert_eq!(dgf.admin("GET", "/ready").0, 503, "the open connection is dead and so is the server");
    let _ = std::fs::remove_dir_all(&dir);
}
