//! End-to-end: dgf's pool under load and at its edges — pgbench in every query mode, 1,000
//! clients on two server connections, wait timeouts, cancel, COPY, vanishing clients, parameter
//! consistency, session-mode reset, client caps, pipelining and many prepared statements.

mod common;
use common::*;
use futures_util::{SinkExt, TryStreamExt};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const POOL2: &str = r#"{ mode = "transaction", size = 2 }"#;

/// Await `f` for at most `secs` seconds.
async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s: {what}"))
}

/// The SQLSTATE of an error (or a description of the non-database error).
fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_else(|| format!("<no SQLSTATE: {e}>"))
}

/// The error of a request that must fail.
fn err<T>(r: Result<T, tokio_postgres::Error>, what: &str) -> tokio_postgres::Error {
    match r {
        Ok(_) => panic!("{what}: expected an error"),
        Err(e) => e,
    }
}

/// First column of each row of a simple query's result.
fn simple_rows(msgs: &[SimpleQueryMessage]) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// Connect through dgf with extra conninfo; also returns the connection task (abort it to close
/// the socket abruptly, without a Terminate message).
async fn open(port: u16, db: &str, extra: &str) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
    let (c, conn) =
        tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user=app dbname={db} {extra}"), NoTls).await?;
    Ok((
        c,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    ))
}

/// A direct superuser connection to the shared Postgres (to watch pg_stat_activity).
async fn direct() -> Client {
    let (c, conn) =
        tokio_postgres::connect(&format!("host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres"), NoTls)
            .await
            .expect("direct connection");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

/// Wait until a query matching `like` is active on `db`.
async fn wait_active(watcher: &Client, db: &str, like: &str) {
    within(10, &format!("waiting for `{like}` to run"), async {
        loop {
            let n: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND query LIKE $2",
                    &[&db, &like],
                )
                .await
                .unwrap()
                .get(0);
            if n > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

fn psql_conninfo(port: u16, db: &str) -> String {
    format!("host=127.0.0.1 port={port} user=app dbname={db}")
}

async fn pgbench(args: &[&str]) -> (bool, String) {
    let run = tokio::process::Command::new("pgbench").args(args).kill_on_drop(true).output();
    let out = within(120, "pgbench", run).await.expect("run pgbench");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_extended_and_simple_on_a_pool_of_two() {
    let db = TestDb::create();
    let (ok, out) = pgbench(&["-i", "-q", "-s", "1", "-h", PG_HOST, "-p", "5432", "-U", "postgres", &db.name]).await;
    assert!(ok, "pgbench -i: {out}");
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, POOL2), &[port]);
    let p = port.to_string();
    // PgBouncer 1.18 fails `-M prepared` in transaction mode; dgf maps statement names per client.
    for (mode, clients) in [("prepared", 200), ("extended", 50), ("simple", 50)] {
        let c = clients.to_string();
        let args = ["-n", "-S", "-M", mode, "-c", &c, "-j", "2", "-t", "20", "-h", "127.0.0.1", "-p", &p, "-U", "app"];
        let (ok, out) = pgbench(&[&args[..], &[db.name.as_str()]].concat()).await;
        assert!(ok, "pgbench -M {mode} failed: {out}");
        assert!(out.contains("number of failed transactions: 0 "), "pgbench -M {mode}: {out}");
        let total = clients * 20;
        let want = format!("number of transactions actually processed: {total}/{total}\n");
        assert!(out.contains(&want), "pgbench -M {mode}: {out}");
    }
    assert!(db.sessions() <= 2, "pool cap exceeded: {}", db.sessions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_share_two_server_connections() {
    const CLIENTS: i32 = 1000;
    let db = TestDb::create();
    let port = free_port();
    // A long wait timeout: this test is about the cap and correctness, not about queueing limits.
    let _dgf =
        Dgf::start(&basic_config(port, r#"{ mode = "transaction", size = 2, wait_timeout_ms = 25000 }"#), &[port]);
    let setup = connect(port, "app", &db.name).await.unwrap();
    setup.batch_execute("CREATE TABLE t (client int, k int)").await.unwrap();

    let watcher = direct().await;
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, name) = (stop.clone(), db.name.clone());
    let sampler = tokio::spawn(async move {
        let (mut max, mut samples) = (0i64, 0);
        while !stop2.load(Ordering::Relaxed) {
            let q = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1";
            let n: i64 = watcher.query_one(q, &[&name]).await.unwrap().get(0);
            max = max.max(n);
            samples += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (max, samples)
    });

    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS as usize));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (barrier, name) = (barrier.clone(), db.name.clone());
        tasks.push(tokio::spawn(async move {
            let c = connect(port, "app", &name).await;
            // Everyone is connected at once before anyone starts working.
            barrier.wait().await;
            let c = c.map_err(|e| format!("connect: {e}"))?;
            let e = |e: tokio_postgres::Error| format!("client {i}: {e}");
            for k in 0..3 {
                let v: i32 = c.query_one("SELECT $1::int * 2", &[&(i * 10 + k)]).await.map_err(e)?.get(0);
                if v != (i * 10 + k) * 2 {
                    return Err(format!("client {i}: wrong result {v}"));
                }
            }
            c.batch_execute("BEGIN").await.map_err(e)?;
            for k in 0..2 {
                c.execute("INSERT INTO t VALUES ($1, $2)", &[&i, &k]).await.map_err(e)?;
            }
            let n: i64 = c.query_one("SELECT count(*) FROM t WHERE client = $1", &[&i]).await.map_err(e)?.get(0);
            c.batch_execute("COMMIT").await.map_err(e)?;
            let rows = c.simple_query("SELECT 1; SELECT 2").await.map_err(e)?;
            if n != 2 || simple_rows(&rows) != ["1", "2"] {
                return Err(format!("client {i}: saw {n} own rows, simple query gave {:?}", simple_rows(&rows)));
            }
            Ok::<_, String>(())
        }));
    }
    let mut errors = Vec::new();
    within(60, "1,000 clients", async {
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                errors.push(e);
            }
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (max, samples) = within(10, "sampler", sampler).await.unwrap();
    assert!(errors.is_empty(), "{} clients failed, e.g. {:?}", errors.len(), &errors[..errors.len().min(5)]);
    let total: i64 = setup.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(total, 2 * CLIENTS as i64);
    assert!(max <= 2, "saw {max} server sessions on a pool of 2");
    assert!(max >= 1 && samples > 1, "sampler saw nothing ({samples} samples)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_timeout_fails_the_query_with_53300_and_the_session_survives() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, r#"{ mode = "transaction", size = 1, wait_timeout_ms = 300 }"#), &[port]);
    let a = connect(port, "app", &db.name).await.unwrap();
    let b = connect(port, "app", &db.name).await.unwrap();
    a.batch_execute("BEGIN; SELECT 1").await.unwrap(); // A sits idle in transaction, holding the only server.

    let t0 = Instant::now();
    let e = err(within(5, "B's simple query", b.simple_query("SELECT 2")).await, "B");
    let waited = t0.elapsed();
    assert_eq!(code(&e), "53300", "{e}");
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_millis(1500), "failed after {waited:?}");
    let e = err(within(5, "B's extended query", b.query_one("SELECT $1::int", &[&5i32])).await, "B");
    assert_eq!(code(&e), "53300", "{e}");

    a.batch_execute("COMMIT").await.unwrap();
    let v: i32 = within(5, "B after A", b.query_one("SELECT $1::int + 1", &[&41i32])).await.unwrap().get(0);
    assert_eq!(v, 42);
    let rows = within(5, "B simple after A", b.simple_query("SELECT 7")).await.unwrap();
    assert_eq!(simple_rows(&rows), ["7"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_only_the_running_query_and_the_session_goes_on() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, POOL2), &[port]);
    let watcher = direct().await;
    let c1 = connect(port, "app", &db.name).await.unwrap();
    let c2 = connect(port, "app", &db.name).await.unwrap();
    let token = c1.cancel_token();

    let sleeper = async {
        let r = c1.simple_query("SELECT pg_sleep(30)").await;
        (r, Instant::now())
    };
    let other = c2.query_one("SELECT 'done'::text FROM pg_sleep(2)", &[]);
    let canceller = async {
        wait_active(&watcher, &db.name, "SELECT pg_sleep(30)%").await;
        wait_active(&watcher, &db.name, "SELECT 'done'%").await;
        token.cancel_query(NoTls).await.expect("send cancel");
        Instant::now()
    };
    let ((r1, done), r2, sent) = within(25, "cancel", async { tokio::join!(sleeper, other, canceller) }).await;
    assert_eq!(code(&err(r1, "cancelled query")), "57014");
    assert!(done.saturating_duration_since(sent) < Duration::from_secs(5), "cancel took too long");
    assert_eq!(r2.expect("the other client's query must not be cancelled").get::<_, String>(0), "done");
    let v: i32 = within(5, "c1 after cancel", c1.query_one("SELECT 1", &[])).await.unwrap().get(0);
    assert_eq!(v, 1);

    // A cancel from an idle client goes nowhere, even if its old server now runs someone else's query.
    let other = c2.query_one("SELECT 'still'::text FROM pg_sleep(1.5)", &[]);
    let stale = async {
        wait_active(&watcher, &db.name, "SELECT 'still'%").await;
        token.cancel_query(NoTls).await.expect("send cancel");
    };
    let (r2, ()) = within(10, "stale cancel", async { tokio::join!(other, stale) }).await;
    assert_eq!(r2.expect("stale cancel must not hit another client").get::<_, String>(0), "still");

    // psql sends a CancelRequest on SIGINT.
    let child = tokio::process::Command::new("psql")
        .args(["-X", "-d", &psql_conninfo(port, &db.name), "-c", "SELECT pg_sleep(30)"])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_active(&watcher, &db.name, "SELECT pg_sleep(30)%").await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let out = within(10, "psql cancel", async { child.wait_with_output().await.unwrap() }).await;
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && msg.contains("canceling statement due to user request"), "psql: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_with_tokio_postgres_and_psql() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, POOL2), &[port]);
    let c = connect(port, "app", &db.name).await.unwrap();
    c.batch_execute("CREATE TABLE t (id int primary key, v text)").await.unwrap();
    let lines = |r: std::ops::RangeInclusive<i32>| r.map(|i| format!("{i}\tv{i}\n")).collect::<String>();

    let expected = lines(1..=10_000);
    let sink = within(10, "copy_in", c.copy_in::<_, bytes::Bytes>("COPY t FROM STDIN")).await.unwrap();
    futures_util::pin_mut!(sink);
    for chunk in expected.as_bytes().chunks(7000) {
        within(10, "copy data", sink.send(bytes::Bytes::copy_from_slice(chunk))).await.unwrap();
    }
    assert_eq!(within(10, "copy done", sink.finish()).await.unwrap(), 10_000);

    let cref = &c;
    let copy_out = move |sql: &'static str| async move {
        let stream = cref.copy_out(sql).await.unwrap();
        let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
        String::from_utf8(chunks.concat()).unwrap()
    };
    let mut got: Vec<String> =
        within(10, "copy out", copy_out("COPY t TO STDOUT")).await.lines().map(String::from).collect();
    got.sort_by_key(|l| l.split('\t').next().unwrap().parse::<i32>().unwrap());
    assert_eq!(got.join("\n") + "\n", expected);
    assert_eq!(
        within(10, "copy query out", copy_out("COPY (SELECT id * 2 FROM t WHERE id <= 3 ORDER BY id) TO STDOUT")).await,
        "2\n4\n6\n"
    );

    // psql \copy both ways.
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("in.tsv"), dir.path().join("out.tsv"));
    std::fs::write(&src, lines(10_001..=10_500)).unwrap();
    let ci = psql_conninfo(port, &db.name);
    psql(&ci, &format!("\\copy t FROM '{}'", src.display())).expect("psql \\copy from");
    psql(&ci, &format!("\\copy (SELECT * FROM t WHERE id > 10000 ORDER BY id) TO '{}'", dst.display()))
        .expect("psql \\copy to");
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), lines(10_001..=10_500));
    assert_eq!(psql(&ci, "SELECT count(*) FROM t").unwrap(), "10500");

    // Bad data in the middle of a long COPY: an error, nothing loaded, the session goes on.
    let bad = format!("{}oops\tbad\n{}", lines(20_001..=25_000), lines(25_001..=30_000));
    let sink = within(10, "copy_in", c.copy_in::<_, bytes::Bytes>("COPY t FROM STDIN")).await.unwrap();
    futures_util::pin_mut!(sink);
    let mut failed = None;
    for chunk in bad.as_bytes().chunks(4096) {
        if let Err(e) = within(10, "copy data", sink.send(bytes::Bytes::copy_from_slice(chunk))).await {
            failed = Some(e);
            break;
        }
    }
    let e = match failed {
        Some(e) => e,
        None => within(10, "copy done", sink.finish()).await.expect_err("bad COPY data must fail"),
    };
    assert_eq!(code(&e), "22P02", "{e}");
    let n: i64 = within(5, "after failed copy", c.query_one("SELECT count(*) FROM t", &[])).await.unwrap().get(0);
    assert_eq!(n, 10_500);
    std::fs::write(&src, bad).unwrap();
    let msg = psql(&ci, &format!("\\copy t FROM '{}'", src.display())).expect_err("psql bad \\copy must fail");
    assert!(msg.contains("invalid input syntax"), "{msg}");
    assert_eq!(psql(&ci, "SELECT count(*) FROM t").unwrap(), "10500");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_vanishing_mid_transaction_is_rolled_back() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, r#"{ mode = "transaction", size = 1 }"#), &[port]);
    let b = connect(port, "app", &db.name).await.unwrap();
    b.batch_execute("CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, 'one')").await.unwrap();
    let (a, a_conn) = open(port, &db.name, "").await.unwrap();
    a.batch_execute("BEGIN; INSERT INTO t VALUES (100, 'uncommitted')").await.unwrap();
    let r = a.query_one("SELECT pg_backend_pid(), now()::text", &[]).await.unwrap();
    let (a_pid, a_now): (i32, String) = (r.get(0), r.get(1));
    a_conn.abort(); // The socket closes with no Terminate, in the middle of A's transaction.
    drop(a);

    let q = "SELECT pg_backend_pid(), txid_current_if_assigned() IS NULL, now() > $1::text::timestamptz, \
             (SELECT count(*) FROM t WHERE id = 100)";
    let row = within(10, "B after A vanished", b.query_one(q, &[&a_now])).await.expect("pool recovers");
    assert_eq!(row.get::<_, i32>(0), a_pid, "pool of 1: B must reuse A's server connection");
    assert!(row.get::<_, bool>(1), "B must not be inside A's transaction (it has an xid)");
    assert!(row.get::<_, bool>(2), "B must not be inside A's transaction (old now())");
    assert_eq!(row.get::<_, i64>(3), 0, "B sees A's uncommitted row");
    // Had A's transaction survived, B's COMMIT would commit A's row too.
    b.batch_execute("BEGIN; INSERT INTO t VALUES (101, 'b'); COMMIT").await.unwrap();
    let ids: Vec<i32> =
        b.query("SELECT id FROM t WHERE id >= 100 ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![101]);
}

/// LISTEN in transaction mode: a notification must never reach a client other than the one
/// that listened (before, the next client of the connection got it, payload included). The
/// LISTEN gets a warning, and its connection is closed when released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_in_transaction_mode_reaches_no_other_client() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, r#"{ mode = "transaction", size = 1 }"#), &[port]);
    let a = connect(port, "app", &db.name).await.unwrap();
    let a_pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    a.batch_execute("LISTEN dgf_leak_test").await.unwrap();
    // B, with its asynchronous messages collected.
    let (b, mut b_conn) =
        tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user=app dbname={}", db.name), NoTls)
            .await
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut msgs = futures_util::stream::poll_fn(move |cx| b_conn.poll_message(cx));
        while let Some(Ok(m)) = futures_util::StreamExt::next(&mut msgs).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    let watcher = direct().await;
    // Notifications stay within a database: sent from the test's own, by its owner.
    let conn = format!("host={PG_HOST} port={PG_PORT} user=postgres dbname={}", db.name);
    let (owner, c) = tokio_postgres::connect(&conn, NoTls).await.unwrap();
    tokio::spawn(c);
    // B sleeps on the (only) server connection while a notification is sent; returns the
    // backend B ran on.
    let notify_while_b_sleeps = |payload: &'static str| {
        let (b, watcher, owner, db) = (&b, &watcher, &owner, &db.name);
        async move {
            let notify = async {
                wait_active(watcher, db, "SELECT pg_sleep%").await;
                owner.batch_execute(&format!("NOTIFY dgf_leak_test, '{payload}'")).await.unwrap();
            };
            let (r, ()) = tokio::join!(b.simple_query("SELECT pg_sleep(1.5), pg_backend_pid()"), notify);
            let pid: i32 = r
                .unwrap()
                .iter()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(1).and_then(|p| p.parse().ok()),
                    _ => None,
                })
                .expect("a row");
            pid
        }
    };
    let b_pid = notify_while_b_sleeps("secret payload").await;
    b.query_one("SELECT 1", &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.try_recv().ok(), None, "another client's notification reached B");
    assert_ne!(a_pid, b_pid, "the connection that ran LISTEN went back to the pool");
    // A LISTEN dgf does not see (run by a function) is caught by its first notification: not
    // forwarded, and that connection is closed.
    owner
        .batch_execute(
            "CREATE FUNCTION listen_quietly() RETURNS void LANGUAGE plpgsql \
             AS $$ BEGIN EXECUTE 'LISTEN dgf_leak_test'; END $$",
        )
        .await
        .unwrap();
    a.batch_execute("SELECT listen_quietly()").await.unwrap();
    let a_pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    assert_eq!(notify_while_b_sleeps("second secret").await, a_pid, "B slept on A's connection");
    let after: i32 = b.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.try_recv().ok(), None, "another client's notification reached B");
    assert_ne!(after, a_pid, "the connection that got the notification went back to the pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_locks_of_a_vanished_client_are_released() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, POOL2), &[port]);
    let watcher = direct().await;
    let b = connect(port, "app", &db.name).await.unwrap();
    b.batch_execute("CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, 'one')").await.unwrap();
    let lock = "BEGIN; SET LOCAL lock_timeout = '3s'; SELECT v FROM t WHERE id = 1 FOR UPDATE; COMMIT";

    // A holds the row lock idle in transaction, then vanishes.
    let (a, a_conn) = open(port, &db.name, "").await.unwrap();
    a.batch_execute("BEGIN; SELECT v FROM t WHERE id = 1 FOR UPDATE").await.unwrap();
    a_conn.abort();
    drop(a);
    within(5, "lock after idle A vanished", b.batch_execute(lock)).await.expect("B gets the lock");

    // A holds the lock and vanishes while a long statement runs: the server must not keep
    // sleeping (and locking) until it happens to notice the closed socket.
    let (a, a_conn) = open(port, &db.name, "").await.unwrap();
    a.batch_execute("BEGIN; SELECT v FROM t WHERE id = 1 FOR UPDATE").await.unwrap();
    let running = tokio::spawn(async move {
        let _ = a.simple_query("SELECT pg_sleep(60)").await;
    });
    wait_active(&watcher, &db.name, "SELECT pg_sleep(60)%").await;
    a_conn.abort();
    running.abort();
    within(8, "lock after busy A vanished", b.batch_execute(lock)).await.expect("B gets the lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_parameters_follow_the_client_across_server_connections() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, POOL2), &[port]);
    let x = connect(port, "app", &db.name).await.unwrap();
    let y = connect(port, "app", &db.name).await.unwrap();
    let hog = connect(port, "app", &db.name).await.unwrap();
    x.batch_execute("CREATE SCHEMA myschema; SET application_name = 'x1'").await.unwrap();
    x.batch_execute("SET TimeZone = 'Asia/Tokyo'").await.unwrap();
    let (z, _z_conn) = open(port, &db.name, "application_name=abc options='-c search_path=myschema'").await.unwrap();

    let q = "SELECT current_setting('application_name'), current_setting('TimeZone'), \
             current_setting('search_path'), pg_backend_pid()";
    let mut pids = std::collections::HashSet::new();
    within(30, "50 rounds", async {
        for i in 0..50 {
            let tz = if i % 2 == 0 { "America/New_York" } else { "UTC" };
            y.batch_execute(&format!("SET application_name = 'y{i}'; SET TimeZone = '{tz}'; SET search_path = public"))
                .await
                .unwrap();
            // Every other round the hog holds the most recently used server, so X and Z move.
            if i % 2 == 1 {
                hog.batch_execute("BEGIN; SELECT 1").await.unwrap();
            }
            let r = x.query_one(q, &[]).await.unwrap();
            assert_eq!((r.get::<_, String>(0), r.get::<_, String>(1)), ("x1".into(), "Asia/Tokyo".into()), "round {i}");
            pids.insert(r.get::<_, i32>(3));
            let r = z.query_one(q, &[]).await.unwrap();
            assert_eq!((r.get::<_, String>(0), r.get::<_, String>(2)), ("abc".into(), "myschema".into()), "round {i}");
            let r = y.query_one(q, &[]).await.unwrap();
            assert_eq!((r.get::<_, String>(0), r.get::<_, String>(1)), (format!("y{i}"), tz.into()), "round {i}");
            if i % 2 == 1 {
                hog.batch_execute("COMMIT").await.unwrap();
            }
        }
    })
    .await;
    assert_eq!(pids.len(), 2, "X should have run on both server connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_resets_the_server_connection_between_clients() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, r#"{ mode = "session", size = 1 }"#), &[port]);
    let a = connect(port, "app", &db.name).await.unwrap();
    // Statement names unlike tokio-postgres's own (s0, s1...), which D also prepares.
    a.batch_execute("SET my.var = 'a'; PREPARE a_stmt AS SELECT 1").await.unwrap();
    let a_pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let r = a.simple_query("EXECUTE a_stmt").await.expect("A's statement works in A's session");
    assert_eq!(simple_rows(&r), ["1"]);
    drop(a);

    let b = within(10, "B connects", connect(port, "app", &db.name)).await.unwrap();
    let r = b.query_one("SELECT pg_backend_pid(), current_setting('my.var', true)", &[]).await.unwrap();
    assert_eq!(r.get::<_, i32>(0), a_pid, "pool of 1: B must get A's server connection");
    let var: Option<String> = r.get(1);
    assert!(var.as_deref().unwrap_or("").is_empty(), "A's variable leaked: {var:?}");
    let e = err(b.simple_query("EXECUTE a_stmt").await, "A's prepared statement leaked");
    assert_eq!(code(&e), "26000", "{e}");
    drop(b);

    // psql ends with a Terminate message: the connection is still reset and reused.
    let ci = psql_conninfo(port, &db.name);
    let pid = psql(&ci, "SET my.var = 'p'; PREPARE psql_stmt AS SELECT 2; SELECT pg_backend_pid()").expect("psql");
    assert_eq!(
        pid.lines().last(),
        Some(a_pid.to_string().as_str()),
        "pool of 1: psql must get the same server connection"
    );
    let d = within(10, "D connects", connect(port, "app", &db.name)).await.unwrap();
    let r = d.query_one("SELECT pg_backend_pid(), current_setting('my.var', true)", &[]).await.unwrap();
    assert_eq!(r.get::<_, i32>(0), a_pid, "a connection psql used was closed instead of reset and reused");
    let var: Option<String> = r.get(1);
    assert!(var.as_deref().unwrap_or("").is_empty(), "psql's variable leaked: {var:?}");
    let e = err(d.simple_query("EXECUTE psql_stmt").await, "psql's prepared statement leaked");
    assert_eq!(code(&e), "26000", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_caps_refuse_with_53300_and_free_up_on_disconnect() {
    let db = TestDb::create();
    for (cap, route_level) in [(5, false), (3, true)] {
        let port = free_port();
        let cfg = match route_level {
            false => format!("[server]\nmax_client_connections = {cap}\n{}", basic_config(port, POOL2)),
            true => format!("{}max_client_connections = {cap}\n", basic_config(port, POOL2)), // in [[routes]]
        };
        let _dgf = Dgf::start(&cfg, &[port]);
        let mut clients = Vec::new();
        for _ in 0..cap {
            clients.push(within(10, "connect", open(port, &db.name, "")).await.expect("under the cap"));
        }
        let e = err(within(10, "connect over cap", open(port, &db.name, "")).await, "over the cap");
        assert_eq!(code(&e), "53300", "cap {cap}: {e}");
        let msg = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
        assert_eq!(msg, "sorry, too many clients already");
        let (c, conn) = clients.pop().unwrap();
        drop(c);
        within(5, "first client gone", conn).await.unwrap();
        let c = within(10, "reconnect", async {
            loop {
                match open(port, &db.name, "").await {
                    Ok(c) => return c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
        .await;
        assert_eq!(c.0.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_errors_and_pipelined_queries() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, POOL2), &[port]);
    let c = connect(port, "app", &db.name).await.unwrap();
    let other = connect(port, "app", &db.name).await.unwrap();

    let e = err(within(5, "multi", c.simple_query("SELECT 1; SELECT 1/0; SELECT 3")).await, "1/0");
    assert_eq!(code(&e), "22012", "{e}");
    let rows = within(5, "after multi", c.simple_query("SELECT 4; SELECT 5")).await.unwrap();
    assert_eq!(simple_rows(&rows), ["4", "5"]);

    // 50 pipelined extended-protocol queries (one with an error) while another client keeps
    // the pool busy, so the pipeline may move between server connections.
    let stmt = c.prepare("SELECT $1::int * 2").await.unwrap();
    let busy = async {
        for _ in 0..20 {
            other.batch_execute("BEGIN; SELECT 1; COMMIT").await.unwrap();
        }
    };
    let queries = futures_util::future::join_all((0..50).map(|i| {
        let (c, stmt) = (&c, &stmt);
        async move {
            match i % 3 {
                0 => c.query_one(stmt, &[&i]).await.map(|r| r.get::<_, i32>(0)),
                1 => c.query_one("SELECT $1::int * 2", &[&i]).await.map(|r| r.get::<_, i32>(0)),
                _ => c.query_one("SELECT 2 * 100 / ($1::int - 26)", &[&i]).await.map(|r| r.get::<_, i32>(0)),
            }
        }
    }));
    let (results, ()) = within(20, "pipeline", async { tokio::join!(queries, busy) }).await;
    for (i, r) in results.into_iter().enumerate() {
        let i = i as i32;
        match (i % 3, i) {
            (2, 26) => assert_eq!(code(&err(r, "query 26")), "22012"),
            (2, _) => assert_eq!(r.unwrap(), 200 / (i - 26), "query {i}"),
            _ => assert_eq!(r.unwrap(), i * 2, "query {i}"),
        }
    }
    assert_eq!(c.query_one(&stmt, &[&21i32]).await.unwrap().get::<_, i32>(0), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_distinct_prepared_and_unnamed_statements_across_the_pool() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, POOL2), &[port]);
    let mut tasks = Vec::new();
    for i in 0..20i32 {
        let name = db.name.clone();
        tasks.push(tokio::spawn(async move {
            let c = connect(port, "app", &name).await.unwrap();
            // Client i prepares texts i*15 .. i*15+44: 300 distinct texts, overlapping clients.
            let mut stmts = Vec::new();
            for k in 0..45 {
                let j = (i * 15 + k) % 300;
                stmts.push((j, c.prepare(&format!("SELECT $1::int + {j}, 'q{j}'")).await.unwrap()));
            }
            for _round in 0..2 {
                for (j, s) in &stmts {
                    let r = c.query_one(s, &[&i]).await.unwrap();
                    assert_eq!((r.get::<_, i32>(0), r.get::<_, String>(1)), (i + j, format!("q{j}")));
                }
            }
            for k in 0..10i32 {
                let sql = format!("SELECT $1::int * {k}");
                let rows = c.query_typed(&sql, &[(&i, Type::INT4)]).await.unwrap();
                assert_eq!(rows[0].get::<_, i32>(0), i * k);
            }
        }));
    }
    within(60, "20 clients", async {
        for t in tasks {
            t.await.expect("client task");
        }
    })
    .await;
    assert!(db.sessions() <= 2, "pool cap exceeded: {}", db.sessions());
}

/// One frontend message: tag, length, body.
fn fe(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Parse, Bind and Execute of `sql` (unnamed statement and portal, no parameters).
fn extended(sql: &str) -> Vec<u8> {
    let mut parse = vec![0u8];
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    let mut out = fe(b'P', &parse);
    out.extend(fe(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
    out.extend(fe(b'E', &[0, 0, 0, 0, 0]));
    out
}

/// Read backend messages until one with tag `until`; returns the tags seen and its body.
fn read_until(s: &mut std::net::TcpStream, until: u8) -> (Vec<u8>, Vec<u8>) {
    use std::io::Read;
    let mut tags = Vec::new();
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).expect("backend message");
        let mut body = vec![0u8; u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize - 4];
        s.read_exact(&mut body).unwrap();
        tags.push(head[0]);
        if head[0] == until {
            return (tags, body);
        }
    }
}

/// An error in the middle of an extended-protocol batch (before its Sync) makes the server skip
/// to the Sync: what the client sends until then must not run. dgf used to take the error for a
/// dying connection and let the client go on elsewhere, so the statements after the error ran
/// and committed (`INSERT 3` below), outside the transaction the client had begun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_inside_an_unsynced_batch_skips_the_rest_of_it() {
    use std::io::Write;
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, POOL2), &[port]);
    let b = connect(port, "app", &db.name).await.unwrap();
    b.batch_execute("CREATE TABLE pl (v int CHECK (v <> 2))").await.unwrap();
    let name = db.name.clone();
    let (tags, status) = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut startup = 196608u32.to_be_bytes().to_vec();
        for p in ["user", "app", "database", &name, ""] {
            startup.extend_from_slice(p.as_bytes());
            startup.push(0);
        }
        let mut m = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
        m.extend(startup);
        s.write_all(&m).unwrap();
        read_until(&mut s, b'Z');
        let mut batch = extended("BEGIN");
        batch.extend(extended("INSERT INTO pl VALUES (1)"));
        batch.extend(extended("INSERT INTO pl VALUES (2)"));
        batch.extend(fe(b'H', &[]));
        s.write_all(&batch).unwrap();
        read_until(&mut s, b'E');
        let mut rest = extended("INSERT INTO pl VALUES (3)");
        rest.extend(extended("COMMIT"));
        rest.extend(fe(b'S', &[]));
        s.write_all(&rest).unwrap();
        let (tags, status) = read_until(&mut s, b'Z');
        s.write_all(&fe(b'Q', b"ROLLBACK\0")).unwrap();
        read_until(&mut s, b'Z');
        (tags, status)
    })
    .await
    .unwrap();
    assert_eq!((tags, status), (vec![b'Z'], vec![b'E']), "only ReadyForQuery (failed transaction) after the Sync");
    let n: i64 = b.query_one("SELECT count(*) FROM pl", &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "nothing of the failed batch may be committed");
}

/// In transaction mode a server connection goes from client to client: what one client SETs
/// must not reach the next. Reported parameters (TimeZone, DateStyle, ...) start at the
/// connection's defaults for a client that did not ask for them, and unreported ones
/// (work_mem, search_path, statement_timeout) are reset before another client gets the
/// connection. Before, B ran with A's TimeZone, DateStyle and work_mem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_settings_do_not_reach_the_next_client() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, r#"{ mode = "transaction", size = 1 }"#), &[port]);
    let q = "SELECT current_setting('TimeZone'), current_setting('DateStyle'), current_setting('work_mem'), \
             current_setting('search_path')";
    let row = |r: tokio_postgres::Row| {
        (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2), r.get::<_, String>(3))
    };
    let before = row(direct().await.query_one(q, &[]).await.unwrap());
    let a = connect(port, "app", &db.name).await.unwrap();
    a.batch_execute("SET TimeZone = 'America/New_York'; SET DateStyle = 'German'").await.unwrap();
    a.batch_execute("SET work_mem = '77kB'; SET search_path = pg_temp, public").await.unwrap();
    let mine = row(a.query_one(q, &[]).await.unwrap());
    assert_eq!(mine.2, "77kB");
    // A client connected while A's settings sit on the only server connection, and one after A.
    let b = connect(port, "app", &db.name).await.unwrap();
    assert_eq!(row(b.query_one(q, &[]).await.unwrap()), before, "B while A is connected");
    // A keeps its reported settings; unreported ones set by a plain SET do not survive a
    // hand-over in transaction mode (documented; as with PgBouncer).
    let again = row(a.query_one(q, &[]).await.unwrap());
    assert_eq!((again.0, again.1), (mine.0.clone(), mine.1.clone()), "A keeps its own settings");
    // A session-level advisory lock would stay with the connection after A left.
    a.batch_execute("SELECT pg_advisory_lock(4242)").await.unwrap();
    drop(a);
    let c = connect(port, "app", &db.name).await.unwrap();
    assert_eq!(row(c.query_one(q, &[]).await.unwrap()), before, "C after A left");
    // Advisory locks are per database: ask in the test's database.
    let (d, conn) =
        tokio_postgres::connect(&format!("host={PG_HOST} port={PG_PORT} user=postgres dbname={}", db.name), NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    let free: bool = d.query_one("SELECT pg_try_advisory_lock(4242)", &[]).await.unwrap().get(0);
    assert!(free, "A's advisory lock outlived A");
    drop(d);
    assert_eq!(row(b.query_one(q, &[]).await.unwrap()), before, "B again");
}

/// A startup parameter is reported back in the server's own spelling (asyncpg sends
/// `client_encoding='utf-8'`, quotes included): dgf used to keep the raw text and report it to
/// later clients, whose drivers then failed (psycopg: codec "'utf-8'" not available).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_are_reported_as_the_server_spells_them() {
    use std::io::Write;
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, r#"{ mode = "transaction", size = 1 }"#), &[port]);
    let name = db.name.clone();
    let encodings = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for enc in ["'utf-8'", ""] {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut startup = 196608u32.to_be_bytes().to_vec();
            let mut params = vec!["user", "app", "database", &name];
            if !enc.is_empty() {
                params.extend(["client_encoding", enc]);
            }
            for p in params.into_iter().chain([""]) {
                startup.extend_from_slice(p.as_bytes());
                startup.push(0);
            }
            let mut m = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
            m.extend(startup);
            s.write_all(&m).unwrap();
            let enc_seen = loop {
                let (tags, body) = read_until(&mut s, b'S');
                assert!(!tags.contains(&b'E'), "login failed");
                let mut parts = body.split(|&b| b == 0);
                if parts.next() == Some(b"client_encoding") {
                    break String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                }
            };
            read_until(&mut s, b'Z');
            s.write_all(&fe(b'Q', b"SELECT 1\0")).unwrap();
            read_until(&mut s, b'Z');
            out.push(enc_seen);
        }
        out
    })
    .await
    .unwrap();
    assert_eq!(encodings, vec!["UTF8".to_owned(), "UTF8".to_owned()]);
}

/// A cancel can reach the server after the statement it was meant for has ended (asyncpg's
/// timeouts race this way): had the connection gone back to the pool, it would cancel the next
/// client's statement there. A connection a cancel was sent to is closed instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_was_sent_a_cancel_serves_no_one_else() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, r#"{ mode = "transaction", size = 1 }"#), &[port]);
    let watcher = direct().await;
    let c = connect(port, "app", &db.name).await.unwrap();
    let pid = |r: tokio_postgres::Row| r.get::<_, i32>(0);
    let before = pid(c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap());
    assert_eq!(before, pid(c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap()), "pool of one");
    let token = c.cancel_token();
    let sleeper = c.simple_query("SELECT pg_backend_pid() FROM pg_sleep(30)");
    let canceller = async {
        wait_active(&watcher, &db.name, "SELECT pg_backend_pid() FROM pg_sleep(30)%").await;
        token.cancel_query(NoTls).await.expect("send cancel");
    };
    let (r, ()) = within(20, "cancel", async { tokio::join!(sleeper, canceller) }).await;
    assert_eq!(code(&err(r, "cancelled query")), "57014");
    let after = pid(within(10, "after the cancel", c.query_one("SELECT pg_backend_pid()", &[])).await.unwrap());
    assert_ne!(before, after, "the cancelled connection went back to the pool");
}

/// After DDL changes a table's columns, Postgres refuses every Bind of a statement prepared
/// before (`0A000 cached plan must not change result type`) until it is prepared anew. dgf
/// shares prepared statements between clients under one server-side name per text, so the
/// re-prepare of a driver (asyncpg retries once) got the same stale statement, and a client that
/// had never prepared it failed on every try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_whose_result_type_changed_is_prepared_anew() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, r#"{ mode = "transaction", size = 1 }"#), &[port]);
    let a = connect(port, "app", &db.name).await.unwrap();
    a.batch_execute("CREATE TABLE t3 (a int, b text); INSERT INTO t3 VALUES (1, 'x')").await.unwrap();
    let q = "SELECT * FROM t3";
    assert_eq!(a.query(q, &[]).await.unwrap()[0].len(), 2);
    a.batch_execute("ALTER TABLE t3 ADD COLUMN c int").await.unwrap();
    let b = connect(port, "app", &db.name).await.unwrap();
    // The first try may meet the stale plan (as asyncpg's first try does); the retry may not.
    let cols = match b.query(q, &[]).await {
        Ok(rows) => rows[0].len(),
        Err(e) => {
            assert_eq!(code(&e), "0A000", "{e}");
            b.query(q, &[]).await.expect("the retry prepares the statement anew")[0].len()
        }
    };
    assert_eq!(cols, 3);
}

/// A client encoding whose multi-byte characters can end in a `\` byte is refused at login:
/// dgf would no longer read statements as the server does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_encodings_that_hide_backslashes_are_refused_at_login() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, POOL2), &[port]);
    let out = common::psql(&format!("{} client_encoding=SJIS", psql_conninfo(port, &db.name)), "SELECT 1");
    let e = out.expect_err("SJIS must be refused");
    assert!(e.contains("client_encoding") && e.contains("not supported"), "{e}");
    let ok = common::psql(&format!("{} client_encoding=UTF8", psql_conninfo(port, &db.name)), "SELECT 1").unwrap();
    assert!(ok.contains('1'), "{ok}");
}

/// A cancel sent while the client waits for a server connection ends the wait with 57014 (the
/// statement never started); it used to be dropped, and the statement ran once a connection
/// came free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_ends_the_wait_for_a_server_connection() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, r#"{ mode = "transaction", size = 1 }"#), &[port]);
    let watcher = direct().await;
    let a = connect(port, "app", &db.name).await.unwrap();
    let c = connect(port, "app", &db.name).await.unwrap();
    let token = c.cancel_token();
    let holder = a.simple_query("SELECT pg_sleep(3)");
    let waiter = async {
        wait_active(&watcher, &db.name, "SELECT pg_sleep(3)%").await;
        let r = c.simple_query("SELECT 'waited'").await;
        (r, Instant::now())
    };
    let canceller = async {
        wait_active(&watcher, &db.name, "SELECT pg_sleep(3)%").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(NoTls).await.expect("send cancel");
        Instant::now()
    };
    let (held, (r, done), sent) =
        within(20, "cancel while waiting", async { tokio::join!(holder, waiter, canceller) }).await;
    held.expect("the holder's statement is not cancelled");
    assert_eq!(code(&err(r, "cancelled wait")), "57014");
    assert!(done.saturating_duration_since(sent) < Duration::from_secs(1), "the wait went on after the cancel");
    let v = simple_rows(&within(10, "after", c.simple_query("SELECT 'again'")).await.unwrap());
    assert_eq!(v, vec!["again".to_owned()]);
}
