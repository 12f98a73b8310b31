//! MySQL route end to end with the `mysql` CLI (MariaDB client) and mysql_async: the issue's
//! example config, login (both auth methods, wrong passwords), queries, multi-statements and
//! multi-result sets, errors, COM_INIT_DB / USE, LOCAL INFILE refused, COM_CHANGE_USER and
//! COM_RESET_CONNECTION.

mod common;

use common::my::{my_admin, my_config, via_dgf, MyDb};
use common::{free_port, Dgf};
use mysql_async::prelude::*;

fn opts(port: u16, user: &str, pw: &str, db: &str) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(pw))
        .db_name((!db.is_empty()).then_some(db))
        .prefer_socket(false)
        .into()
}

#[test]
fn example_config_from_the_issue_passes_check_and_serves() {
    let example = r#"
[[routes]]
name = "mysql"
protocol = "mysql"
listen = "127.0.0.1:3307"
upstream = "mysql://root@127.0.0.1:3306"
pool = { size = 4 }
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dgf.toml");
    std::fs::write(&path, example).unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_dgf")).arg("check").arg("--config").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("route   mysql mysql 127.0.0.1:3307 -> mysql://root@127.0.0.1:3306"), "{text}");

    // The same route on a free port, with a user to log in as.
    let port = free_port();
    let cfg = format!(
        "[admin]\nlisten = \"{{admin}}\"\n[[users]]\nname = \"app\"\npassword = \"app_pw\"\n{}",
        example.replace("127.0.0.1:3307", &format!("127.0.0.1:{port}"))
    );
    let _d = Dgf::start(&cfg, &[port]);
    assert_eq!(via_dgf(port, "app", "app_pw", "", "SELECT 1+1").unwrap(), "2");
}

#[test]
fn cli_queries_multi_results_errors_and_use() {
    let db = MyDb::create();
    let port = free_port();
    let _d = Dgf::start(&my_config(port, &db.upstream(), "{ size = 2 }", ""), &[port]);
    let n = &db.name;
    let out = via_dgf(
        port,
        "app",
        "app_pw",
        n,
        "CREATE TABLE t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(20)); \
         INSERT INTO t (v) VALUES ('a'),('b'),('c'); SELECT COUNT(*) FROM t; SELECT v FROM t ORDER BY id DESC LIMIT 1",
    )
    .unwrap();
    assert_eq!(out, "3\nc");
    // wrong password and unknown user: MySQL-native access denied
    let e = via_dgf(port, "app", "nope", n, "SELECT 1").unwrap_err();
    assert!(e.contains("1045") && e.contains("Access denied"), "{e}");
    let e = via_dgf(port, "ghost", "x", n, "SELECT 1").unwrap_err();
    assert!(e.contains("1045"), "{e}");
    // server errors pass through with errno and SQLSTATE; the connection stays usable
    let e = via_dgf(port, "app", "app_pw", n, "SELECT * FROM missing_table").unwrap_err();
    assert!(e.contains("1146") && e.contains("42S02"), "{e}");
    let out = via_dgf(port, "app", "app_pw", n, "SELECT nope; ").unwrap_err();
    assert!(out.contains("1054"), "{out}");
    // unknown database at login
    let e = via_dgf(port, "app", "app_pw", "no_such_db_dgf", "SELECT 1").unwrap_err();
    assert!(e.contains("1044") || e.contains("1049"), "{e}");
    // USE and DATABASE() follow the client
    let out =
        via_dgf(port, "app", "app_pw", "", &format!("USE {n}; SELECT DATABASE(); SELECT COUNT(*) FROM t")).unwrap();
    assert_eq!(out, format!("{n}\n3"));
    // LOAD DATA LOCAL INFILE is refused
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), "9\tz\n").unwrap();
    let sql = format!("LOAD DATA LOCAL INFILE '{}' INTO TABLE t", f.path().display());
    let e =
        common::my::mysql_cli(&["-P", &port.to_string(), "-u", "app", "-papp_pw", "-D", n, "--local-infile=1"], &sql)
            .unwrap_err();
    assert!(e.contains("ERROR"), "{e}");
    assert_eq!(my_admin(&format!("SELECT COUNT(*) FROM {n}.t")), "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_async_prepared_statements_and_transactions() {
    let db = MyDb::create();
    let port = free_port();
    let _d = Dgf::start(&my_config(port, &db.upstream(), "{ size = 2 }", ""), &[port]);
    let mut c = mysql_async::Conn::new(opts(port, "app", "app_pw", &db.name)).await.unwrap();
    c.query_drop("CREATE TABLE kv (k INT PRIMARY KEY, v TEXT, b BLOB)").await.unwrap();
    let stmt = c.prep("INSERT INTO kv VALUES (?, ?, ?)").await.unwrap();
    for i in 0..20 {
        c.exec_drop(&stmt, (i, format!("v{i}"), vec![i as u8; 3])).await.unwrap();
    }
    let rows: Vec<(i32, String)> = c.exec("SELECT k, v FROM kv WHERE k >= ? ORDER BY k", (15,)).await.unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0], (15, "v15".to_owned()));
    // transaction: rollback is honoured on the same server connection
    let mut tx = c.start_transaction(Default::default()).await.unwrap();
    tx.exec_drop("DELETE FROM kv WHERE k < ?", (10,)).await.unwrap();
    let n: Option<i64> = tx.query_first("SELECT COUNT(*) FROM kv").await.unwrap();
    assert_eq!(n, Some(10));
    tx.rollback().await.unwrap();
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM kv").await.unwrap();
    assert_eq!(n, Some(20));
    // multi-result set over the text protocol
    let mut r = c.query_iter("SELECT 1; SELECT 2, 3").await.unwrap();
    let a: Vec<i64> = r.collect().await.unwrap();
    let b: Vec<(i64, i64)> = r.collect().await.unwrap();
    assert_eq!((a, b), (vec![1], vec![(2, 3)]));
    drop(r);
    // a statement error leaves the connection usable
    assert!(c.exec_drop("SELECT * FROM nope WHERE a = ?", (1,)).await.is_err());
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    c.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_and_reset_connection() {
    let db = MyDb::create();
    let port = free_port();
    let _d = Dgf::start(&my_config(port, &db.upstream(), "{ size = 2 }", ""), &[port]);
    let mut c = mysql_async::Conn::new(opts(port, "app", "app_pw", &db.name)).await.unwrap();
    c.query_drop("SET @mine = 7").await.unwrap();
    let v: Option<i64> = c.query_first("SELECT @mine").await.unwrap();
    assert_eq!(v, Some(7));
    // COM_RESET_CONNECTION clears the variable for real
    c.reset().await.unwrap();
    let v: Option<Option<i64>> = c.query_first("SELECT @mine").await.unwrap();
    assert_eq!(v, Some(None));
    // COM_CHANGE_USER re-authenticates against dgf users
    c.query_drop("SET @mine = 8").await.unwrap();
    let co = mysql_async::ChangeUserOpts::default().with_user(Some("other".into())).with_pass(Some("other_pw".into()));
    c.change_user(co).await.unwrap();
    let (u, v): (String, Option<i64>) = c.query_first("SELECT CURRENT_USER(), @mine").await.unwrap().unwrap();
    assert!(u.starts_with(&db.name), "{u}"); // upstream identity is the route's
    assert_eq!(v, None, "state of the previous user leaked");
    let bad = mysql_async::ChangeUserOpts::default().with_user(Some("app".into())).with_pass(Some("wrong".into()));
    let e = c.change_user(bad).await.unwrap_err();
    assert!(e.to_string().contains("1045") || e.to_string().contains("Access denied"), "{e}");
}
