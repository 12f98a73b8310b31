//! Postgres transaction pooling hands a server connection from client to client: what one
//! client leaves on it (settings, advisory locks, an unsynced batch, a cancel in flight, stale
//! shared statements) must not reach the next, and a cancel must end a wait for a connection.

mod common;
use common::pg_client::*;
use common::*;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

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

/// A client waiting for the only server connection has its simple Query written by the
/// session that releases the connection, but only when the connection needs no parameter sync
/// for it: B (settings unlike A's) must see its own TimeZone, so its query waits for the sync;
/// D (settings like B's) has its query sent at once, and gets the right answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_query_is_sent_at_hand_over_only_without_a_sync() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, r#"{ mode = "transaction", size = 1 }"#), &[port]);
    let tz = "SELECT current_setting('TimeZone')";
    let first = |m: Vec<tokio_postgres::SimpleQueryMessage>| {
        m.into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap_or_default()
    };
    let before = first(direct().await.simple_query(tz).await.unwrap());
    assert_ne!(before, "Asia/Tokyo");
    // Logins take the connection for a moment: all three first.
    let a = connect(port, "app", &db.name).await.unwrap();
    let b = connect(port, "app", &db.name).await.unwrap();
    let d = connect(port, "app", &db.name).await.unwrap();
    a.batch_execute("SET TimeZone = 'Asia/Tokyo'").await.unwrap();
    a.batch_execute("BEGIN").await.unwrap();
    let waiting = tokio::spawn(async move { (first(b.simple_query(tz).await.unwrap()), b) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "B waits for A's connection");
    a.batch_execute("COMMIT").await.unwrap();
    let (seen, b) = waiting.await.unwrap();
    assert_eq!(seen, before, "B's query ran before its settings were synced");

    // Now the connection holds B's settings; D has the same ones.
    b.batch_execute("BEGIN").await.unwrap();
    let q = format!("SELECT 'd:' || current_setting('TimeZone') FROM {}", "generate_series(1, 3)");
    let waiting = tokio::spawn(async move { d.simple_query(&q).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "D waits for B's connection");
    b.batch_execute("COMMIT").await.unwrap();
    let rows = waiting.await.unwrap();
    let got: Vec<_> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![format!("d:{before}"); 3]);
    assert_eq!(first(a.simple_query(tz).await.unwrap()), "Asia/Tokyo", "A keeps its setting");
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

/// Governance off: a session-level advisory lock or a `set_config` (in any case, anywhere in
/// the statement) must not stay on the connection for the next client. Before, only a leading
/// SET/RESET was seen without governance: C got the connection with A's lock still held
/// (another app instance then waits forever for it) and A's work_mem. psql sends only reported
/// startup parameters, so nothing else makes dgf reset the connection between A and C.
/// (With the default guards on, statements are analysed and the analysis names the lock.)
#[test]
fn ungoverned_advisory_locks_and_set_config_do_not_reach_the_next_client() {
    let db = TestDb::create();
    let port = free_port();
    // No rules and every guard off: statements are not analysed at all.
    let config = basic_config(port, r#"{ mode = "transaction", size = 1 }"#)
        + "\n[guards]\ncopy_program = false\nset_role = false\nfunctions = false\n";
    let _dgf = Dgf::start(&config, &[port]);
    let direct = format!("host={PG_HOST} port={PG_PORT} user=postgres dbname={}", db.name);
    let via_dgf = format!("host=127.0.0.1 port={port} user=app dbname={} sslmode=disable", db.name);
    let held = |key: i64| {
        let sql = format!("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = {key}");
        psql(&direct, &sql).unwrap() != "0"
    };
    let work_mem = "SELECT current_setting('work_mem')";
    let default_mem = psql(&direct, work_mem).unwrap();
    for (key, sql) in [
        (4343i64, "SELECT 1 AS one, pg_advisory_lock(4343)"),
        (4344, "select PG_Try_Advisory_Lock_Shared(4344)"),
        (4345, "SELECT set_config('work_mem', '99kB', false), pg_catalog.pg_advisory_lock(4345)"),
    ] {
        // psql exits after the statement: A's session ends with the lock taken.
        psql(&via_dgf, sql).unwrap();
        assert!(held(key), "{sql}: the lock must be held on the pooled connection");
        let mem = psql(&via_dgf, work_mem).unwrap();
        assert_eq!(mem, default_mem, "{sql}: C got A's work_mem");
        assert!(!held(key), "{sql}: A's advisory lock outlived A");
    }
}
