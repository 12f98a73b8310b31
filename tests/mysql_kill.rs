//! `KILL QUERY` / `KILL CONNECTION` through dgf (query cancellation as drivers do it: a new
//! connection of the same user sends `KILL QUERY <connection id from the handshake>`): the
//! statement is interrupted with the server's own 1317 and the session goes on; another
//! user's kill is "Unknown thread id"; the server connection a kill was sent to is closed,
//! never handed to another client.

mod common;

use common::my::{my_admin, my_config, MyDb};
use common::{free_port, Dgf};
use mysql_async::prelude::*;
use std::time::{Duration, Instant};

fn opts(port: u16, db: &str, user: &str, pw: &str) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(pw))
        .db_name(Some(db))
        .prefer_socket(false)
        .into()
}

fn start(pool: &str) -> (MyDb, Dgf, u16) {
    let db = MyDb::create();
    let port = free_port();
    let d = Dgf::start(&my_config(port, &db.upstream(), pool, ""), &[port]);
    (db, d, port)
}

/// Wait until a statement containing `marker` runs on the server; its server thread id.
async fn running_on_server(marker: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let id = my_admin(&format!(
            "SELECT id FROM information_schema.processlist WHERE info LIKE '%{marker}%' AND info NOT LIKE '%processlist%'"
        ));
        if let Ok(id) = id.trim().parse() {
            return id;
        }
        assert!(Instant::now() < deadline, "`{marker}` never ran on the server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Running = tokio::task::JoinHandle<(mysql_async::Conn, Result<(), mysql_async::Error>)>;

/// Client `app` runs `SELECT SLEEP(30)` tagged with `marker` in the background.
async fn sleeper(port: u16, db: &str, marker: &str) -> (u32, Running) {
    let mut a = mysql_async::Conn::new(opts(port, db, "app", "app_pw")).await.unwrap();
    let id = a.id();
    let sql = format!("SELECT SLEEP(30) AS {marker}");
    let running = tokio::spawn(async move {
        let r = a.query_drop(sql).await;
        (a, r)
    });
    (id, running)
}

/// The session of `running` was killed: its statement failed, the session is closed, and its
/// server thread `thread` is gone.
async fn assert_connection_killed(running: Running, thread: u64) {
    let (mut a, r) = tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap();
    assert!(r.is_err(), "the statement must be interrupted");
    assert!(a.query_drop("SELECT 1").await.is_err(), "the killed session must be closed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while my_admin(&format!("SELECT COUNT(*) FROM information_schema.processlist WHERE id = {thread}")) != "0" {
        assert!(Instant::now() < deadline, "server thread {thread} is still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn server_errno(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// (a) The driver's way: a second connection of the same user kills the first one's query by
/// the id from its handshake. The query fails at once with 1317, and its session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_query_interrupts_the_statement_and_the_session_goes_on() {
    let (db, _d, port) = start("{ size = 2 }");
    let (a_id, running) = sleeper(port, &db.name, "kq_a_marker").await;
    running_on_server("kq_a_marker").await;
    let mut b = mysql_async::Conn::new(opts(port, &db.name, "app", "app_pw")).await.unwrap();
    let started = Instant::now();
    b.query_drop(format!("KILL QUERY {a_id}")).await.unwrap();
    let (mut a, r) = tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap();
    let e = r.expect_err("the statement must be interrupted");
    assert_eq!(server_errno(&e), Some(1317), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let one: Option<i32> = a.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    // The requester's own session is fine too, and a kill of an idle session is a no-op.
    b.query_drop(format!("/*!50000 kill query {a_id} */;")).await.unwrap();
    let one: Option<i32> = a.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
}

/// (b) Another dgf user may not kill the session (nor learn that it exists): 1094, and the
/// statement runs on. Unknown ids, KILL QUERY ID, and KILL inside other statements or
/// prepared statements are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_kill_is_an_unknown_thread() {
    let (db, _d, port) = start("{ size = 3 }");
    let (a_id, running) = sleeper(port, &db.name, "kq_b_marker").await;
    running_on_server("kq_b_marker").await;
    let mut other = mysql_async::Conn::new(opts(port, &db.name, "other", "other_pw")).await.unwrap();
    for sql in [format!("KILL QUERY {a_id}"), format!("KILL {a_id}"), "KILL QUERY 4000000000".into()] {
        let e = other.query_drop(&sql).await.unwrap_err();
        assert_eq!(server_errno(&e), Some(1094), "{sql}: {e}");
        assert!(e.to_string().contains("Unknown thread id"), "{sql}: {e}");
    }
    for sql in [
        format!("KILL QUERY ID {a_id}"),
        format!("SELECT 1; KILL QUERY {a_id}"),
        format!("PREPARE s FROM 'KILL QUERY {a_id}'"),
    ] {
        // 1142: governance, which decides first, cannot parse `KILL QUERY ID` and fails closed.
        let e = other.query_drop(&sql).await.unwrap_err();
        assert!(matches!(server_errno(&e), Some(1095 | 1142)), "{sql}: {e}");
    }
    let e = other.prep(format!("KILL QUERY {a_id}")).await.unwrap_err();
    assert_eq!(server_errno(&e), Some(1095), "prepared: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!running.is_finished(), "the statement was interrupted");
    running.abort();
}

/// (c) The server connection a kill was sent to is closed, not given to the next client: on a
/// pool of one, a later client runs on a new server thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_connection_is_closed_not_reused() {
    let (db, _d, port) = start("{ size = 2 }");
    let (a_id, running) = sleeper(port, &db.name, "kq_c_marker").await;
    let thread = running_on_server("kq_c_marker").await;
    let mut b = mysql_async::Conn::new(opts(port, &db.name, "app", "app_pw")).await.unwrap();
    b.query_drop(format!("KILL QUERY {a_id}")).await.unwrap();
    let (mut a, r) = tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap();
    assert_eq!(r.as_ref().err().and_then(server_errno), Some(1317), "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while my_admin(&format!("SELECT COUNT(*) FROM information_schema.processlist WHERE id = {thread}")) != "0" {
        assert!(Instant::now() < deadline, "server thread {thread} is still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.disconnect().await.unwrap();
    for _ in 0..3 {
        let now: Option<u64> = a.query_first("SELECT CONNECTION_ID()").await.unwrap();
        assert_ne!(now, Some(thread), "the killed server connection was reused");
        let mut c = mysql_async::Conn::new(opts(port, &db.name, "app", "app_pw")).await.unwrap();
        let now: Option<u64> = c.query_first("SELECT CONNECTION_ID()").await.unwrap();
        assert_ne!(now, Some(thread), "the killed server connection was reused");
        c.disconnect().await.unwrap();
    }
}

/// (d) `KILL CONNECTION` ends the session (running or idle) and closes its server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_connection_ends_the_session() {
    let (db, _d, port) = start("{ size = 3 }");
    let (a_id, running) = sleeper(port, &db.name, "kq_d_marker").await;
    let thread = running_on_server("kq_d_marker").await;
    let mut b = mysql_async::Conn::new(opts(port, &db.name, "app", "app_pw")).await.unwrap();
    b.query_drop(format!("KILL CONNECTION {a_id}")).await.unwrap();
    assert_connection_killed(running, thread).await;
    // An idle session is ended too; the same id is then unknown.
    let mut idle = mysql_async::Conn::new(opts(port, &db.name, "app", "app_pw")).await.unwrap();
    idle.query_drop("SELECT 1").await.unwrap();
    b.query_drop(format!("KILL {}", idle.id())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(idle.query_drop("SELECT 1").await.is_err(), "the killed idle session must be closed");
    let e = b.query_drop(format!("KILL {}", idle.id())).await.unwrap_err();
    assert_eq!(server_errno(&e), Some(1094), "{e}");
    // Killing one's own connection ends it.
    let own = b.id();
    assert!(b.query_drop(format!("KILL {own}")).await.is_err());
    assert!(b.query_drop("SELECT 1").await.is_err());
}

/// (e) The mysql CLI's way (its Ctrl-C): a new connection that only sends `KILL QUERY`. On a
/// pool of one that the statement to kill holds, the login must not wait behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_kills_a_query_that_holds_the_only_server_connection() {
    let (db, _d, port) = start("{ size = 1, wait_timeout_ms = 20000 }");
    let (a_id, running) = sleeper(port, &db.name, "kq_e_marker").await;
    running_on_server("kq_e_marker").await;
    let started = Instant::now();
    let out = tokio::process::Command::new("mysql")
        .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", "app", "-papp_pw", "--skip-ssl", &db.name])
        .args(["-e", &format!("KILL QUERY {a_id}")])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), out).await.expect("the CLI's login waited").unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (mut a, r) = tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap();
    assert_eq!(r.as_ref().err().and_then(server_errno), Some(1317), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let one: Option<i32> = a.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
}

/// (f) A statement still waiting for a pool connection (all of them in use) is killed before
/// it starts: 1317 at once instead of running once a connection frees, and its session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_query_ends_a_wait_for_a_server_connection() {
    let (db, _d, port) = start("{ size = 1, wait_timeout_ms = 20000 }");
    // Logged in first: the driver runs statements of its own while connecting.
    let mut holder = mysql_async::Conn::new(opts(port, &db.name, "app", "app_pw")).await.unwrap();
    let mut waiter = mysql_async::Conn::new(opts(port, &db.name, "app", "app_pw")).await.unwrap();
    let mut killer = mysql_async::Conn::new(opts(port, &db.name, "app", "app_pw")).await.unwrap();
    let waiter_id = waiter.id();
    holder.query_drop("BEGIN").await.unwrap();
    holder.query_drop("SELECT 1").await.unwrap();
    let waiting = tokio::spawn(async move {
        let r: Result<Option<i32>, _> = waiter.query_first("SELECT 7").await;
        (waiter, r)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the statement must be waiting for the pool");
    let started = Instant::now();
    killer.query_drop(format!("KILL QUERY {waiter_id}")).await.unwrap();
    let (mut waiter, r) = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("still waiting").unwrap();
    assert_eq!(r.as_ref().err().and_then(server_errno), Some(1317), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    holder.query_drop("COMMIT").await.unwrap();
    drop(holder);
    let seven: Option<i32> = waiter.query_first("SELECT 7").await.unwrap();
    assert_eq!(seven, Some(7));
}

/// (g) The binary COM_PROCESS_KILL (PyMySQL's `Connection.kill`, `mysql_kill()` of old client
/// libraries) is `KILL CONNECTION`: the target's statement is interrupted and its session
/// ends. A COM_PROCESS_KILL too short to hold an id gets 1835 and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn com_process_kill_is_kill_connection() {
    let (db, _d, port) = start("{ size = 3 }");
    let (a_id, running) = sleeper(port, &db.name, "kq_g_marker").await;
    let thread = running_on_server("kq_g_marker").await;
    let script = format!(
        r#"
import pymysql
c = pymysql.connect(host="127.0.0.1", port={port}, user="app", password="app_pw", database="{db}")
c.kill({a_id})
try:
    c._execute_command(0x0c, b"\x01")
    c._read_ok_packet()
    print("short: ok")
except pymysql.MySQLError as e:
    print("short:", e.args[0])
cur = c.cursor()
cur.execute("SELECT 41 + 1")
print("after:", cur.fetchone()[0])
"#,
        db = db.name
    );
    let out = tokio::task::spawn_blocking(move || common::my::python(&script)).await.unwrap();
    let out = out.expect("PyMySQL");
    assert!(out.contains("short: 1835") && out.contains("after: 42"), "{out}");
    assert_connection_killed(running, thread).await;
}
