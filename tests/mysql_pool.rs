//! MySQL multiplexing end to end: prepared statements of many clients across a pool of two,
//! state pinning (temporary table and user variable stay with their client and never show up
//! for another), the pool cap counted in information_schema.processlist, and readiness probes
//! that log in.

mod common;

use common::my::{my_config, MyDb};
use common::{free_port, Dgf};
use mysql_async::prelude::*;

fn opts(port: u16, db: &str) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("app"))
        .pass(Some("app_pw"))
        .db_name(Some(db))
        .prefer_socket(false)
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_follow_clients_across_a_pool_of_two() {
    let db = MyDb::create();
    let port = free_port();
    let _d = Dgf::start(&my_config(port, &db.upstream(), "{ size = 2 }", ""), &[port]);
    let mut setup = mysql_async::Conn::new(opts(port, &db.name)).await.unwrap();
    setup.query_drop("CREATE TABLE n (id INT PRIMARY KEY, sq BIGINT)").await.unwrap();
    setup.disconnect().await.unwrap();
    let mut tasks = Vec::new();
    for client in 0..8i64 {
        let o = opts(port, &db.name);
        tasks.push(tokio::spawn(async move {
            let mut c = mysql_async::Conn::new(o).await.unwrap();
            let ins = c.prep("INSERT INTO n VALUES (?, ?)").await.unwrap();
            let sel = c.prep("SELECT sq FROM n WHERE id = ?").await.unwrap();
            for i in 0..15i64 {
                let id = client * 100 + i;
                c.exec_drop(&ins, (id, id * id)).await.unwrap();
                let got: Option<i64> = c.exec_first(&sel, (id,)).await.unwrap();
                assert_eq!(got, Some(id * id), "client {client} row {id}");
            }
            c.close(sel).await.unwrap();
            let again = c.prep("SELECT COUNT(*) FROM n WHERE id DIV 100 = ?").await.unwrap();
            let n: Option<i64> = c.exec_first(&again, (client,)).await.unwrap();
            assert_eq!(n, Some(15));
            c.disconnect().await.unwrap();
        }));
    }
    let watcher = {
        let name = db.name.clone();
        tokio::task::spawn_blocking(move || {
            let mut max = 0;
            for _ in 0..20 {
                let n: i64 = common::my::my_admin(&format!(
                    "SELECT COUNT(*) FROM information_schema.processlist WHERE user = '{name}'"
                ))
                .parse()
                .unwrap();
                max = max.max(n);
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            max
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    let max = watcher.await.unwrap();
    assert!(max <= 2, "pool cap exceeded: {max} server connections");
    assert!(db.sessions() <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_pins_and_never_leaks() {
    let db = MyDb::create();
    let port = free_port();
    let _d = Dgf::start(&my_config(port, &db.upstream(), "{ size = 2 }", ""), &[port]);
    let mut a = mysql_async::Conn::new(opts(port, &db.name)).await.unwrap();
    let mut b = mysql_async::Conn::new(opts(port, &db.name)).await.unwrap();
    a.query_drop("CREATE TEMPORARY TABLE scratch (x INT)").await.unwrap();
    a.query_drop("INSERT INTO scratch VALUES (1), (2)").await.unwrap();
    a.query_drop("SET @secret = 'a-only'").await.unwrap();
    // b runs plenty of statements; it must never see a's state
    for _ in 0..10 {
        let v: Option<Option<String>> = b.query_first("SELECT @secret").await.unwrap();
        assert_eq!(v, Some(None), "user variable leaked to another client");
        assert!(b.query_drop("SELECT * FROM scratch").await.is_err(), "temporary table leaked");
    }
    let n: Option<i64> = a.query_first("SELECT COUNT(*) FROM scratch").await.unwrap();
    assert_eq!(n, Some(2));
    let v: Option<String> = a.query_first("SELECT @secret").await.unwrap();
    assert_eq!(v.as_deref(), Some("a-only"));
    a.disconnect().await.unwrap();
    // the connection a used was reset before reuse: two fresh clients see nothing
    for _ in 0..2 {
        let mut c = mysql_async::Conn::new(opts(port, &db.name)).await.unwrap();
        let v: Option<Option<String>> = c.query_first("SELECT @secret").await.unwrap();
        assert_eq!(v, Some(None));
        assert!(c.query_drop("SELECT * FROM scratch").await.is_err());
        c.disconnect().await.unwrap();
    }
    // LAST_INSERT_ID() reads the client's own insert
    let mut c = mysql_async::Conn::new(opts(port, &db.name)).await.unwrap();
    c.query_drop("CREATE TABLE ai (id INT AUTO_INCREMENT PRIMARY KEY, v INT)").await.unwrap();
    c.query_drop("INSERT INTO ai (v) VALUES (1), (2), (3)").await.unwrap();
    c.query_drop("INSERT INTO ai (v) VALUES (4)").await.unwrap();
    let id: Option<i64> = c.query_first("SELECT LAST_INSERT_ID()").await.unwrap();
    assert_eq!(id, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_cap_holds_under_concurrency() {
    let db = MyDb::create();
    let port = free_port();
    let _d = Dgf::start(&my_config(port, &db.upstream(), "{ size = 2, wait_timeout_ms = 20000 }", ""), &[port]);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let o = opts(port, &db.name);
        tasks.push(tokio::spawn(async move {
            let mut c = mysql_async::Conn::new(o).await.unwrap();
            for _ in 0..3 {
                let v: Option<i64> = c.query_first("SELECT SLEEP(0.1) + 1").await.unwrap();
                assert_eq!(v, Some(1));
            }
            c.disconnect().await.unwrap();
        }));
    }
    let name = db.name.clone();
    let max = tokio::task::spawn_blocking(move || {
        let mut max = 0i64;
        for _ in 0..15 {
            let n: i64 = common::my::my_admin(&format!(
                "SELECT COUNT(*) FROM information_schema.processlist WHERE user = '{name}'"
            ))
            .parse()
            .unwrap();
            max = max.max(n);
            std::thread::sleep(std::time::Duration::from_millis(60));
        }
        max
    })
    .await
    .unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    assert!((1..=2).contains(&max), "server connections seen: {max}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_session_settings_follow_their_client_without_pinning() {
    let db = MyDb::create();
    let port = free_port();
    // one server connection: if a SET pinned client a, client b would wait and time out
    let _d = Dgf::start(&my_config(port, &db.upstream(), "{ size = 1, wait_timeout_ms = 3000 }", ""), &[port]);
    let mut a = mysql_async::Conn::new(opts(port, &db.name)).await.unwrap();
    let mut b = mysql_async::Conn::new(opts(port, &db.name)).await.unwrap();
    let default_tz: Option<String> = b.query_first("SELECT @@session.time_zone").await.unwrap();
    a.query_drop("SET time_zone = '+05:00'").await.unwrap();
    a.query_drop("SET SESSION sql_mode = 'NO_ZERO_DATE', autocommit = 0").await.unwrap();
    for round in 0..3 {
        // b shares the only server connection and never sees a's settings
        let (tz, mode, ac): (String, String, i64) =
            b.query_first("SELECT @@session.time_zone, @@session.sql_mode, @@autocommit").await.unwrap().unwrap();
        assert_eq!(Some(tz), default_tz.clone(), "round {round}: time_zone leaked");
        assert!(!mode.contains("NO_ZERO_DATE"), "round {round}: sql_mode leaked: {mode}");
        assert_eq!(ac, 1, "round {round}: autocommit leaked");
        // a gets them back on whatever connection it runs
        let (tz, mode): (String, String) =
            a.query_first("SELECT @@session.time_zone, @@session.sql_mode").await.unwrap().unwrap();
        assert_eq!(tz, "+05:00");
        assert_eq!(mode, "NO_ZERO_DATE");
        // autocommit = 0 opens a transaction: a is pinned until it ends it
        a.query_drop("COMMIT").await.unwrap();
    }
    // a reset forgets the settings
    a.reset().await.unwrap();
    let tz: Option<String> = a.query_first("SELECT @@session.time_zone").await.unwrap();
    assert_eq!(tz, default_tz);
    // a SET outside the allow-list still pins (and is never seen by b)
    a.query_drop("SET @@session.sql_select_limit = 7").await.unwrap();
    let n: Option<u64> = a.query_first("SELECT @@session.sql_select_limit").await.unwrap();
    assert_eq!(n, Some(7));
    a.disconnect().await.unwrap();
    let n: Option<u64> = b.query_first("SELECT @@session.sql_select_limit").await.unwrap();
    assert_ne!(n, Some(7));
}

/// `/ready` probes a MySQL upstream with a real login and COM_QUIT, never a bare TCP connection:
/// MySQL counts a connection closed before its handshake as a connection error of the client's
/// host (`Aborted_connects`), and blocks the host after `max_connect_errors` in a row, so a
/// readiness probe every few seconds would lock dgf out of a remote server. The login also
/// proves the route's credentials: a wrong upstream password makes the route not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_probes_log_in_and_leave_no_aborted_connection() {
    let db = MyDb::create();
    let port = free_port();
    let d = Dgf::start(&my_config(port, &db.upstream(), "{ size = 2 }", ""), &[port]);
    let aborted = || -> u64 {
        let out = common::my::my_admin("SHOW GLOBAL STATUS LIKE 'Aborted_connects'");
        out.split_whitespace().last().and_then(|n| n.parse().ok()).expect("Aborted_connects")
    };
    let before = aborted();
    for _ in 0..6 {
        let (status, body) = d.admin("GET", "/ready");
        assert_eq!(status, 200, "{body}");
    }
    let after = aborted();
    // Six bare TCP probes would add six; other tests on the shared server rarely add any.
    assert!(after - before < 6, "readiness probes left {} aborted connections", after - before);
    drop(d);

    let wrong = db.upstream().replacen(&format!(":{}@", db.password), ":not-the-password@", 1);
    assert_ne!(wrong, db.upstream());
    let port = free_port();
    let d = Dgf::start(&my_config(port, &wrong, "{ size = 2 }", ""), &[port]);
    let (status, body) = d.admin("GET", "/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"reachable\":false"), "{body}");
}
