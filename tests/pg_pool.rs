//! End-to-end: dgf's pool under load and at its edges — pgbench in every query mode, 1,000
//! clients on two server connections, wait timeouts, cancel, COPY, vanishing clients, parameter
//! consistency, session-mode reset, client caps, pipelining and many prepared statements.

mod common;
use common::pg_client::*;
use common::*;
use futures_util::{SinkExt, TryStreamExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::types::Type;
use tokio_postgres::{NoTls, SimpleQueryMessage};

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
    // dgf's default runtime (one event loop on a host of one or two cores, as CI's) and two
    // worker threads, whatever the host.
    for server in ["", "[server]\nworkers = 2\n"] {
        let port = free_port();
        let dgf = Dgf::start(&format!("{server}{}", basic_config(port, POOL2)), &[port]);
        let p = port.to_string();
        // PgBouncer 1.18 fails `-M prepared` in transaction mode; dgf maps statement names per
        // client.
        for (mode, clients) in [("prepared", 200), ("extended", 50), ("simple", 50)] {
            let c = clients.to_string();
            let args =
                ["-n", "-S", "-M", mode, "-c", &c, "-j", "2", "-t", "20", "-h", "127.0.0.1", "-p", &p, "-U", "app"];
            let (ok, out) = pgbench(&[&args[..], &[db.name.as_str()]].concat()).await;
            assert!(ok, "{server}pgbench -M {mode} failed: {out}");
            assert!(out.contains("number of failed transactions: 0 "), "{server}pgbench -M {mode}: {out}");
            let total = clients * 20;
            let want = format!("number of transactions actually processed: {total}/{total}\n");
            assert!(out.contains(&want), "{server}pgbench -M {mode}: {out}");
        }
        assert!(db.sessions() <= 2, "{server}pool cap exceeded: {}", db.sessions());
        drop(dgf);
    }
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
