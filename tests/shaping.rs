//! Free-tier shaping end to end: a route's ops/s limit queues Redis commands (pipelined ones
//! included, replies in order), MongoDB requests, Postgres and MySQL statements instead of
//! failing them, refuses only requests whose slot is past `max_wait_ms` (connection stays
//! usable), and shows the wait in /metrics; the Redis memory budget refuses memory-growing
//! writes with `-OOM` while reads and deletes pass, and a reload raises it.
//! Timing asserts are lower bounds only (the limit makes things at least this slow).

mod common;

use common::mongo::{python, MongoServer};
use common::redis::{cleanup, direct, Raw, REDIS_PORT};
use common::{free_port, http, unique, Dgf};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Value of `name{route="route"...}` in the admin /metrics (None when absent).
fn metric(admin: SocketAddr, name: &str, route: &str) -> Option<f64> {
    let (_, body) = http(admin, "GET", "/metrics");
    let label = format!("route=\"{route}\"");
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn redis_route(name: &str, port: u16, extra: &str) -> String {
    format!(
        r#"
[[routes]]
name = "{name}"
protocol = "redis"
listen = "127.0.0.1:{port}"
upstream = "redis://127.0.0.1:{REDIS_PORT}"
pool = {{ size = 4 }}
{extra}
"#
    )
}

#[test]
fn redis_commands_queue_at_the_route_rate_and_none_fail() {
    let (port, tight_port) = (free_port(), free_port());
    let route = unique("shape").replace('_', "-");
    let tight = format!("{route}-tight");
    let toml = format!(
        "[admin]\nlisten = \"{{admin}}\"\n{}{}",
        redis_route(&route, port, "shaping = { ops_per_sec = 50 }"),
        redis_route(&tight, tight_port, "shaping = { ops_per_sec = 1, burst = 1, max_wait_ms = 200 }"),
    );
    let dgf = Dgf::start(&toml, &[port, tight_port]);
    let p = unique("dgft_shape");
    let admin = dgf.admin;

    // Sample the queue gauge while four clients send 200 commands (two of them as one
    // pipeline of 50 each). Burst 50 + 150 more at 50/s: at least 3 s.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, route) = (stop.clone(), route.clone());
        std::thread::spawn(move || {
            let mut max_queued = 0.0f64;
            while !stop.load(Ordering::Relaxed) {
                max_queued = max_queued.max(metric(admin, "dgf_shaping_queued", &route).unwrap_or(0.0));
                std::thread::sleep(Duration::from_millis(20));
            }
            max_queued
        })
    };
    let start = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let key = format!("{p}:{i}");
            std::thread::spawn(move || {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
                let mut c = client.get_connection().unwrap();
                if i % 2 == 0 {
                    for n in 1..=50i64 {
                        let v: i64 = redis::cmd("INCR").arg(&key).query(&mut c).unwrap();
                        assert_eq!(v, n);
                    }
                } else {
                    let mut pipe = redis::pipe();
                    for _ in 0..50 {
                        pipe.cmd("INCR").arg(&key);
                    }
                    let v: Vec<i64> = pipe.query(&mut c).unwrap();
                    assert_eq!(v, (1..=50).collect::<Vec<i64>>(), "pipelined replies in order");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a client failed");
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let max_queued = sampler.join().unwrap();
    assert!(elapsed >= Duration::from_millis(2900), "200 commands at 50 ops/s took only {elapsed:?}");
    for i in 0..4 {
        assert_eq!(direct(&["GET", &format!("{p}:{i}")]), "50");
    }
    let count = metric(admin, "dgf_shaping_wait_seconds_count", &route).unwrap();
    let sum = metric(admin, "dgf_shaping_wait_seconds_sum", &route).unwrap();
    assert!(count >= 200.0, "wait histogram count {count}");
    assert!(sum > 0.5, "total queueing time {sum}");
    assert!(max_queued >= 1.0, "queued gauge never rose");
    assert_eq!(metric(admin, "dgf_shaping_rejected_total", &route), Some(0.0));
    assert_eq!(metric(admin, "dgf_shaping_ops_per_sec", &route), Some(50.0));

    // 1 op/s, max_wait 200 ms: the first command takes the only token; the next two would
    // wait ~1 s and are refused, in order, and the connection stays usable.
    let k = format!("{p}:t");
    let mut raw = Raw::connect(tight_port);
    raw.send(format!("SET {k} v\r\nGET {k}\r\nGET {k}\r\n").as_bytes());
    let out = String::from_utf8(raw.replies(3)).unwrap();
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert_eq!(lines[0], "+OK", "{out}");
    for l in &lines[1..3] {
        assert!(l.starts_with("-ERR dgf: ops/s budget of route") && l.contains("max_wait_ms 200"), "{out}");
    }
    std::thread::sleep(Duration::from_millis(1100));
    raw.cmd(&["GET", &k]);
    assert_eq!(raw.replies(1), b"$1\r\nv\r\n");
    // A slot within max_wait_ms (~150 ms away) is waited for, not refused.
    std::thread::sleep(Duration::from_millis(850));
    let t = Instant::now();
    raw.cmd(&["GET", &k]);
    assert_eq!(raw.replies(1), b"$1\r\nv\r\n");
    assert!(t.elapsed() >= Duration::from_millis(100), "{:?}", t.elapsed());
    assert_eq!(metric(admin, "dgf_shaping_rejected_total", &tight), Some(2.0));
    cleanup(&p);
}

#[test]
fn redis_memory_budget_refuses_growing_writes_until_raised() {
    let port = free_port();
    let route = unique("mem").replace('_', "-");
    let cfg = |budget: &str| format!("[admin]\nlisten = \"{{admin}}\"\n{}", redis_route(&route, port, budget));
    let dgf = Dgf::start(&cfg("memory_budget = { max_bytes = 1, check_interval_ms = 100 }"), &[port]);
    let admin = dgf.admin;
    wait_for("the first INFO memory poll", || {
        metric(admin, "dgf_memory_budget_exceeded", &route) == Some(1.0)
            && metric(admin, "dgf_upstream_memory_bytes", &route).is_some_and(|v| v > 1.0)
    });
    assert_eq!(metric(admin, "dgf_memory_budget_bytes", &route), Some(1.0));
    let p = unique("dgft_mem");
    let k = format!("{p}:k");
    assert_eq!(direct(&["SET", &k, "v"]), "OK");
    let (n, h) = (format!("{p}:n"), format!("{p}:h"));
    let mut raw = Raw::connect(port);
    let growing: [&[&str]; 3] = [&["SET", &k, "w"], &["INCR", &n], &["HSET", &h, "f", "v"]];
    for cmd in growing {
        raw.cmd(cmd);
        let r = String::from_utf8(raw.replies(1)).unwrap();
        assert!(r.starts_with("-OOM dgf: memory budget of route"), "{cmd:?}: {r}");
    }
    raw.cmd(&["GET", &k]);
    assert_eq!(raw.replies(1), b"$1\r\nv\r\n", "reads pass");
    raw.cmd(&["EXPIRE", &k, "100"]);
    assert_eq!(raw.replies(1), b":1\r\n", "expiries pass");
    raw.cmd(&["DEL", &k]);
    assert_eq!(raw.replies(1), b":1\r\n", "deletes pass");
    assert_eq!(direct(&["EXISTS", &k]), "0");
    assert_eq!(metric(admin, "dgf_memory_budget_refused_total", &route), Some(3.0));

    // Raise the budget by reload: writes pass again at once, on the same connection.
    dgf.rewrite_config(&cfg("memory_budget = { max_bytes = 1000000000000 }"));
    let (status, body) = dgf.admin("POST", "/reload");
    assert_eq!(status, 200, "{body}");
    raw.cmd(&["SET", &k, "w"]);
    assert_eq!(raw.replies(1), b"+OK\r\n");
    assert_eq!(metric(admin, "dgf_memory_budget_exceeded", &route), Some(0.0));
    let logs = dgf.logs();
    assert_eq!(logs.matches("upstream memory reached the budget").count(), 1, "{logs}");
    assert_eq!(logs.matches("upstream memory back under the budget").count(), 1, "{logs}");
    cleanup(&p);
}

#[test]
fn mongodb_requests_queue_and_hello_is_free() {
    let server = MongoServer::start();
    let (port, tight_port) = (free_port(), free_port());
    let route = unique("mshape");
    let mongo_route = |name: &str, port: u16, shaping: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\nprotocol = \"mongodb\"\nlisten = \"127.0.0.1:{port}\"\nupstream = \"mongodb://127.0.0.1:{}/?directConnection=true\"\npool = {{ size = 2 }}\nshaping = {shaping}\n",
            server.port
        )
    };
    let toml = format!(
        "[admin]\nlisten = \"{{admin}}\"\n{}{}",
        mongo_route(&route, port, "{ ops_per_sec = 20, burst = 5 }"),
        mongo_route(&format!("{route}_tight"), tight_port, "{ ops_per_sec = 1, burst = 1, max_wait_ms = 0 }"),
    );
    let dgf = Dgf::start(&toml, &[port, tight_port]);
    let db = unique("dgfshape");
    let script = format!(
        r#"
import pymongo, threading, time
opts = dict(retryReads=False, retryWrites=False, serverSelectionTimeoutMS=10000)
c = pymongo.MongoClient("mongodb://127.0.0.1:{port}/?directConnection=true", **opts)
col = c["{db}"].items
errors = []
def work(i):
    try:
        for n in range(20):
            col.insert_one({{"t": i, "n": n}})
    except Exception as e:
        errors.append(repr(e))
start = time.time()
ts = [threading.Thread(target=work, args=(i,)) for i in range(3)]
for t in ts: t.start()
for t in ts: t.join()
elapsed = time.time() - start
assert not errors, errors
# burst 5, then 20/s: 60 requests take at least 2.75 s
assert elapsed >= 2.6, elapsed
assert col.count_documents({{}}) == 60
# hello / isMaster are answered by dgf and cost nothing: many handshakes, no waiting
t0 = time.time()
for _ in range(30):
    c.admin.command("hello")
assert time.time() - t0 < 1.0, "hello was shaped"
tc = pymongo.MongoClient("mongodb://127.0.0.1:{tight_port}/?directConnection=true", **opts)
tcol = tc["{db}"].items
assert tcol.find_one({{"n": 0}}) is not None
try:
    tcol.find_one({{"n": 1}})
    raise SystemExit("expected a refusal")
except pymongo.errors.OperationFailure as e:
    assert e.code == 262, e.details
    assert "ops/s budget" in str(e), e.details
time.sleep(1.2)
assert tcol.find_one({{"n": 1}}) is not None, "connection usable after a refusal"
c.drop_database("{db}")
print("elapsed", elapsed)
"#
    );
    let out = python(&script, &[]).unwrap_or_else(|e| panic!("{e}\n{}", dgf.logs()));
    assert!(out.contains("elapsed"), "{out}");
    let count = metric(dgf.admin, "dgf_shaping_wait_seconds_count", &route).unwrap();
    assert!(count >= 60.0, "wait histogram count {count}");
    assert!(metric(dgf.admin, "dgf_shaping_wait_seconds_sum", &route).unwrap() > 0.5);
    assert_eq!(metric(dgf.admin, "dgf_shaping_rejected_total", &format!("{route}_tight")), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_mysql_statements_are_shaped() {
    let (pg_port, my_port) = (free_port(), free_port());
    let toml = format!(
        r#"
[admin]
listen = "{{admin}}"

[[users]]
name = "app"
password = "app_pw"

[[routes]]
name = "pgshape"
protocol = "postgres"
listen = "127.0.0.1:{pg_port}"
upstream = "postgres://postgres@127.0.0.1:5432"
shaping = {{ ops_per_sec = 5, burst = 1, max_wait_ms = 0 }}

[[routes]]
name = "myshape"
protocol = "mysql"
listen = "127.0.0.1:{my_port}"
upstream = "mysql://root@127.0.0.1:3306"
shaping = {{ ops_per_sec = 5, burst = 3, max_wait_ms = 0 }}
"#
    );
    let dgf = Dgf::start(&toml, &[pg_port, my_port]);
    let nap = || tokio::time::sleep(Duration::from_millis(300));

    let (pg, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={pg_port} user=app password=app_pw dbname=postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    nap().await;
    pg.simple_query("SELECT 1").await.unwrap();
    let e = pg.simple_query("SELECT 2").await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("53400"), "{e}");
    nap().await;
    pg.simple_query("SELECT 3").await.unwrap();
    // Extended protocol: each Execute counts; a refused one skips to Sync.
    nap().await;
    let stmt = pg.prepare("SELECT $1::int").await.unwrap();
    let row = pg.query_one(&stmt, &[&7i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    let e = pg.query_one(&stmt, &[&8i32]).await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("53400"), "{e}");
    nap().await;
    assert_eq!(pg.query_one(&stmt, &[&9i32]).await.unwrap().get::<_, i32>(0), 9);
    assert_eq!(metric(dgf.admin, "dgf_shaping_rejected_total", "pgshape"), Some(2.0));

    use mysql_async::prelude::*;
    let opts: mysql_async::Opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(my_port)
        .user(Some("app"))
        .pass(Some("app_pw"))
        .prefer_socket(false)
        .into();
    // (The driver's own setup queries also count: burst 3, then fire until one is refused.)
    let mut my = mysql_async::Conn::new(opts).await.unwrap();
    let mut refused = None;
    for i in 0..10 {
        if let Err(e) = my.query_drop(format!("SELECT {i}")).await {
            refused = Some(e.to_string());
            break;
        }
    }
    let e = refused.expect("back-to-back statements past the burst were all accepted");
    assert!(e.contains("1226") && e.contains("ops/s budget"), "{e}");
    nap().await;
    let v: Option<i64> = my.query_first("SELECT 3").await.unwrap();
    assert_eq!(v, Some(3));
    my.disconnect().await.unwrap();
    assert!(metric(dgf.admin, "dgf_shaping_rejected_total", "myshape").is_some_and(|v| v >= 1.0));
}
