//! End-to-end operations: reload under load, upstream restarts, graceful shutdown and the admin
//! API (health, readiness, metrics, pools).

mod common;
use common::pg_instance::PgInstance;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// Value of the first sample of `name` whose labels include every `labels` pair.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        let all = n == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        if all {
            value.parse().ok()
        } else {
            None
        }
    })
}

fn metrics(dgf: &Dgf) -> String {
    let (status, body) = dgf.admin("GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The /pools entry of `database`.
fn pool_entry(dgf: &Dgf, database: &str) -> serde_json::Value {
    let (status, body) = dgf.admin("GET", "/pools");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("/pools is JSON");
    let found = v.as_array().expect("/pools is an array").iter().find(|p| p["database"] == database).cloned();
    found.unwrap_or_else(|| panic!("no pool for {database} in {body}"))
}

/// SQLSTATE of an error ("" when it is not a server error, e.g. connection closed).
fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

async fn one(c: &tokio_postgres::Client, sql: &str) -> i32 {
    c.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// Users `app` + `extra_users` (trust) and one Postgres route `pg` on `port` -> `upstream_port`.
fn ops_config(port: u16, upstream_port: u16, size: u32, extra_users: &[&str], server: &str) -> String {
    let mut s = format!("[admin]\nlisten = \"{{admin}}\"\n{server}\n[[users]]\nname = \"app\"\nauth = \"trust\"\n");
    for u in extra_users {
        s += &format!("\n[[users]]\nname = \"{u}\"\nauth = \"trust\"\n");
    }
    s + &format!(
        r#"
[[routes]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:{port}"
upstream = "postgres://postgres@127.0.0.1:{upstream_port}"
pool = {{ mode = "transaction", size = {size}, wait_timeout_ms = 20000 }}
"#
    )
}

/// Poll `f` every 50 ms until it returns true or `limit` passes.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn reload_under_pgbench_load_drops_no_query() {
    let db = TestDb::create();
    let direct = format!("host={PG_HOST} port={PG_PORT} user=postgres dbname={}", db.name);
    let init = Command::new("pgbench").args(["-i", "-q", "-s", "1", &direct]).output().expect("pgbench -i");
    assert!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    let port = free_port();
    let dgf = Dgf::start(&ops_config(port, PG_PORT, 2, &[], ""), &[port]);
    let out = dgf.dir.path().join("pgbench.out");
    let err = dgf.dir.path().join("pgbench.err");
    let mut bench = Command::new("pgbench")
        .args(["-n", "-S", "-c", "20", "-j", "2", "-T", "8", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "app", &db.name])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("spawn pgbench");
    std::thread::sleep(Duration::from_secs(2));

    // SIGHUP: pool 2 -> 4 and a new user.
    dgf.rewrite_config(&ops_config(port, PG_PORT, 4, &["hup_user"], ""));
    dgf.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || pool_entry(&dgf, &db.name)["max"] == 4),
        "SIGHUP did not raise the pool to 4: {:?}",
        pool_entry(&dgf, &db.name)
    );
    std::thread::sleep(Duration::from_millis(500));
    // POST /reload: another user.
    dgf.rewrite_config(&ops_config(port, PG_PORT, 4, &["hup_user", "post_user"], ""));
    let (status, body) = dgf.admin("POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(bench.try_wait().unwrap().is_none(), "both reloads must happen while pgbench runs");

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = bench.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = bench.kill();
            panic!("pgbench did not finish");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(status.success(), "pgbench failed: {stdout}\n{stderr}");
    assert!(stdout.contains("number of failed transactions: 0 "), "{stdout}");
    assert!(!stderr.contains("error"), "pgbench errors: {stderr}");
    let processed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in {stdout}"));
    assert!(processed > 100, "pgbench processed only {processed}: {stdout}");

    for user in ["app", "hup_user", "post_user"] {
        let r = psql(&format!("host=127.0.0.1 port={port} user={user} dbname={}", db.name), "SELECT 1");
        assert_eq!(r.as_deref(), Ok("1"), "{user} after reload");
    }
    let p = pool_entry(&dgf, &db.name);
    assert_eq!(p["max"], 4, "{p}");
    assert!(p["open"].as_u64().unwrap() <= 4, "{p}");
    let m = metrics(&dgf);
    assert_eq!(metric(&m, "dgf_reloads_total", &[("result", "ok")]), Some(2.0), "{m}");
    assert_eq!(metric(&m, "dgf_reloads_total", &[("result", "error")]), None, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reload_is_rejected_and_old_config_keeps_serving() {
    let db = TestDb::create();
    let port = free_port();
    let dgf = Dgf::start(&ops_config(port, PG_PORT, 2, &[], ""), &[port]);
    let c = connect(port, "app", &db.name).await.unwrap();
    assert_eq!(one(&c, "SELECT 1").await, 1);

    // A new user, an unknown key and a bad pool size: the file is rejected as a whole.
    let bad = ops_config(port, PG_PORT, 0, &["intruder"], "").replace("protocol = ", "colour = \"red\"\nprotocol = ");
    dgf.rewrite_config(&bad);
    let line_of = |needle: &str| bad.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    let (status, body) = tokio::task::block_in_place(|| dgf.admin("POST", "/reload"));
    assert_eq!(status, 422, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["reloaded"], false);
    let e = v["error"].as_str().unwrap();
    let file = dgf.config.display().to_string();
    assert!(e.contains(&format!("{file}:{}:", line_of("colour"))) && e.contains("colour"), "{e}");
    assert!(e.contains(&format!("{file}:{}:", line_of("pool"))) && e.contains("size"), "{e}");
    dgf.signal("HUP");
    let errors = || metric(&metrics(&dgf), "dgf_reloads_total", &[("result", "error")]);
    assert!(tokio::task::block_in_place(|| eventually(Duration::from_secs(5), || errors() == Some(2.0))));

    // The old config still serves: same session, new sessions, old user; the new user is unknown.
    assert_eq!(one(&c, "SELECT 2").await, 2);
    let c2 = connect(port, "app", &db.name).await.expect("old user still logs in");
    assert_eq!(one(&c2, "SELECT 3").await, 3);
    assert!(connect(port, "intruder", &db.name).await.is_err(), "user of the rejected file logged in");
    assert_eq!(pool_entry(&dgf, &db.name)["max"], 2);
    assert_eq!(metric(&metrics(&dgf), "dgf_reloads_total", &[("result", "ok")]), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_restart_gives_clean_errors_and_recovers() {
    let pg = PgInstance::start(&Default::default());
    let port = free_port();
    let dgf = Dgf::start(&ops_config(port, pg.port, 4, &[], ""), &[port]);
    let a = connect(port, "app", "postgres").await.unwrap();
    assert_eq!(one(&a, "SELECT 1").await, 1);
    assert_eq!(dgf.admin("GET", "/ready").0, 200);

    tokio::task::block_in_place(|| pg.stop());
    // The idle session's pooled server connection is dead: a clean error, not a hang.
    let e = timeout(Duration::from_secs(10), a.simple_query("SELECT 1")).await.expect("hung").unwrap_err();
    let code = sqlstate(&e);
    assert!(code.starts_with("08") || code == "57P01", "unexpected error {code:?}: {e}");
    assert!(!a.is_closed(), "the client session must survive an upstream outage");
    let e = timeout(Duration::from_secs(10), connect(port, "app", "postgres")).await.expect("hung").unwrap_err();
    assert!(sqlstate(&e).starts_with("08"), "new login while down: {e}");
    assert_eq!(dgf.admin("GET", "/health"), (200, "ok\n".to_owned()));
    let (status, body) = dgf.admin("GET", "/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"reachable\":false"), "{body}");

    tokio::task::block_in_place(|| pg.start_again());
    assert_eq!(dgf.admin("GET", "/ready").0, 200);
    let b = connect(port, "app", "postgres").await.expect("new connection after restart");
    assert_eq!(one(&b, "SELECT 2").await, 2);
    // The same session works again: no stale server connection is handed out.
    for i in 0..5 {
        let v = timeout(Duration::from_secs(10), a.query_one("SELECT $1::int", &[&i])).await.expect("hung");
        assert_eq!(v.expect("same session after restart").get::<_, i32>(0), i);
    }

    // A query running when the server stops fails quickly.
    let c = connect(port, "app", "postgres").await.unwrap();
    let long = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(10)").await.map(|_| ()) });
    let running = "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(10)' AND state = 'active'";
    assert!(tokio::task::block_in_place(|| eventually(Duration::from_secs(5), || pg.sql(running) == "1")));
    let stopped = Instant::now();
    tokio::task::block_in_place(|| pg.stop());
    let r = timeout(Duration::from_secs(5), long).await.expect("long query hung after the server stopped").unwrap();
    let e = r.expect_err("pg_sleep cannot complete");
    assert!(["57P01", "08006"].contains(&sqlstate(&e).as_str()), "unexpected error: {e:?}");
    assert!(stopped.elapsed() < Duration::from_secs(5));
    assert_eq!(dgf.admin("GET", "/health").0, 200);
}

fn shutdown_config(port: u16, timeout_ms: u64) -> String {
    ops_config(port, PG_PORT, 4, &[], &format!("[server]\nshutdown_timeout_ms = {timeout_ms}\n"))
}

/// `c`'s next query must fail as a session closed by the shutdown (57P01 or connection closed).
async fn assert_closed_by_shutdown(c: &tokio_postgres::Client) {
    let r = timeout(Duration::from_secs(3), c.simple_query("SELECT 1")).await.expect("query hung during shutdown");
    let e = r.expect_err("session must be closed by the shutdown");
    assert!(sqlstate(&e) == "57P01" || c.is_closed(), "unexpected error: {e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_transactions_commit_then_exits() {
    let db = TestDb::create();
    let direct = format!("host={PG_HOST} port={PG_PORT} user=postgres dbname={}", db.name);
    psql(&direct, "CREATE TABLE t (id int)").unwrap();
    let port = free_port();
    let mut dgf = Dgf::start(&shutdown_config(port, 5000), &[port]);
    let txn = connect(port, "app", &db.name).await.unwrap();
    let idle = connect(port, "app", &db.name).await.unwrap();
    assert_eq!(one(&idle, "SELECT 1").await, 1);
    txn.batch_execute("BEGIN; INSERT INTO t VALUES (1)").await.unwrap();

    let term = Instant::now();
    dgf.signal("TERM");
    let refused = tokio::task::block_in_place(|| {
        eventually(Duration::from_secs(2), || std::net::TcpStream::connect(("127.0.0.1", port)).is_err())
    });
    assert!(refused, "the listener still accepts 2 s after SIGTERM");
    assert_closed_by_shutdown(&idle).await;

    timeout(Duration::from_secs(3), txn.batch_execute("INSERT INTO t VALUES (2); COMMIT"))
        .await
        .expect("hung")
        .expect("an open transaction may finish during shutdown");
    assert_closed_by_shutdown(&txn).await;
    assert_eq!(psql(&direct, "SELECT count(*) FROM t").unwrap(), "2");
    let code = tokio::task::block_in_place(|| dgf.wait_exit(Duration::from_secs(6)));
    assert_eq!(code, Some(0), "exit code");
    assert!(term.elapsed() < Duration::from_secs(5), "took {:?}, longer than shutdown_timeout", term.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_disconnects_idle_clients_and_exits_promptly() {
    let db = TestDb::create();
    let port = free_port();
    let mut dgf = Dgf::start(&shutdown_config(port, 5000), &[port]);
    let mut clients = Vec::new();
    for _ in 0..3 {
        let c = connect(port, "app", &db.name).await.unwrap();
        assert_eq!(one(&c, "SELECT 1").await, 1);
        clients.push(c);
    }
    let term = Instant::now();
    dgf.signal("TERM");
    let code = tokio::task::block_in_place(|| dgf.wait_exit(Duration::from_secs(4)));
    assert_eq!(code, Some(0), "exit code");
    assert!(term.elapsed() < Duration::from_secs(2), "idle clients delayed the exit: {:?}", term.elapsed());
    for c in &clients {
        assert_closed_by_shutdown(c).await;
    }
    assert!(dgf.logs().contains("all clients drained"), "{}", dgf.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_stuck_transactions_after_the_timeout() {
    let db = TestDb::create();
    let direct = format!("host={PG_HOST} port={PG_PORT} user=postgres dbname={}", db.name);
    psql(&direct, "CREATE TABLE t (id int)").unwrap();
    let port = free_port();
    let mut dgf = Dgf::start(&shutdown_config(port, 2000), &[port]);
    let txn = connect(port, "app", &db.name).await.unwrap();
    txn.batch_execute("BEGIN; INSERT INTO t VALUES (1)").await.unwrap();
    let term = Instant::now();
    dgf.signal("TERM");
    let code = tokio::task::block_in_place(|| dgf.wait_exit(Duration::from_secs(8)));
    let took = term.elapsed();
    assert_eq!(code, Some(0), "exit code");
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(5), "exit after {took:?}");
    assert_closed_by_shutdown(&txn).await;
    let rolled_back = || psql(&direct, "SELECT count(*) FROM t").unwrap() == "0";
    assert!(tokio::task::block_in_place(|| eventually(Duration::from_secs(5), rolled_back)), "never rolled back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_reports_health_readiness_metrics_and_pools() {
    let db = TestDb::create();
    let port = free_port();
    let dgf = Dgf::start(&ops_config(port, PG_PORT, 3, &[], ""), &[port]);
    assert_eq!(dgf.admin("GET", "/health"), (200, "ok\n".to_owned()));
    let (status, body) = dgf.admin("GET", "/ready");
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true, "{body}");
    assert_eq!(ready["routes"][0]["reachable"], true, "{body}");

    let c = connect(port, "app", &db.name).await.unwrap();
    for _ in 0..3 {
        assert_eq!(one(&c, "SELECT 1").await, 1);
    }
    let m = metrics(&dgf);
    let pool = [("route", "pg"), ("database", db.name.as_str())];
    assert!(m.contains("# TYPE dgf_queries_total counter"), "{m}");
    assert_eq!(metric(&m, "dgf_client_connections", &[("route", "pg")]), Some(1.0), "{m}");
    assert_eq!(metric(&m, "dgf_server_connections", &[pool[0], pool[1], ("state", "idle")]), Some(1.0), "{m}");
    assert_eq!(metric(&m, "dgf_server_connections", &[pool[0], pool[1], ("state", "active")]), Some(0.0), "{m}");
    assert_eq!(metric(&m, "dgf_pool_waiting_clients", &pool), Some(0.0), "{m}");
    let waits = metric(&m, "dgf_pool_wait_seconds_bucket", &[("route", "pg"), ("le", "+Inf")]);
    assert!(waits >= Some(3.0), "{m}");
    let q1 = metric(&m, "dgf_queries_total", &[("route", "pg")]).expect("dgf_queries_total");
    assert!(q1 >= 3.0, "{m}");
    for _ in 0..5 {
        assert_eq!(one(&c, "SELECT 2").await, 2);
    }
    let e = c.simple_query("SELECT * FROM no_such_table").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42P01");
    // Postgres flushes an error before its ReadyForQuery: one more query makes sure dgf saw both.
    assert_eq!(one(&c, "SELECT 3").await, 3);
    let m = metrics(&dgf);
    assert_eq!(metric(&m, "dgf_queries_total", &[("route", "pg")]), Some(q1 + 7.0), "{m}");
    assert_eq!(metric(&m, "dgf_errors_total", &[("route", "pg"), ("code", "42P01")]), Some(1.0), "{m}");

    let want = [("open", 1), ("idle", 1), ("active", 0), ("waiting", 0), ("max", 3)];
    let settled = || want.iter().all(|(k, v)| pool_entry(&dgf, &db.name)[k] == *v);
    tokio::task::block_in_place(|| eventually(Duration::from_secs(2), settled));
    let p = pool_entry(&dgf, &db.name);
    assert_eq!(p["route"], "pg", "{p}");
    assert_eq!(p["mode"], "transaction", "{p}");
    for (k, v) in want {
        assert_eq!(p[k], v, "{k} in {p}");
    }
    drop(c);
    let gone = || metric(&metrics(&dgf), "dgf_client_connections", &[("route", "pg")]) == Some(0.0);
    assert!(tokio::task::block_in_place(|| eventually(Duration::from_secs(3), gone)));

    // A route whose upstream port is closed: alive, but not ready.
    let (port2, closed) = (free_port(), free_port());
    let down = Dgf::start(&ops_config(port2, closed, 1, &[], ""), &[port2]);
    assert_eq!(down.admin("GET", "/health").0, 200);
    let (status, body) = down.admin("GET", "/ready");
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false, "{body}");
    assert_eq!(v["routes"][0]["upstream"], format!("127.0.0.1:{closed}"), "{body}");
    assert_eq!(v["routes"][0]["reachable"], false, "{body}");
}

/// `/ready` with a warm pool asks a pooled connection that is idle anyway (the pool's health
/// query) instead of dialling Postgres: a probe every few seconds forks no backend and adds
/// nothing to the provider's connection count. Cold, or once Postgres is gone, it dials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_asks_an_idle_pooled_connection_before_dialling() {
    use common::pg_instance::PgOptions;
    let pg = PgInstance::start(&PgOptions { extra_conf: vec!["log_connections = on".into()], ..Default::default() });
    let port = free_port();
    let dgf = Dgf::start(&ops_config(port, pg.port, 4, &[], ""), &[port]);
    let log = pg.dir.join("server.log");
    let dialled = || std::fs::read_to_string(&log).unwrap_or_default().matches("connection received").count();
    let before = dialled();
    assert_eq!(dgf.admin("GET", "/ready").0, 200);
    assert!(eventually(Duration::from_secs(5), || dialled() > before), "a cold pool's /ready must dial");
    let a = connect(port, "app", "postgres").await.unwrap();
    assert_eq!(one(&a, "SELECT 1").await, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let warm = dialled();
    for _ in 0..5 {
        assert_eq!(dgf.admin("GET", "/ready").0, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(dialled(), warm, "a warm pool's /ready dialled Postgres");
    tokio::task::block_in_place(|| pg.stop());
    assert_eq!(dgf.admin("GET", "/ready").0, 503, "the idle connection is dead and so is the server");
}
