//! End-to-end: simple, extended and prepared queries through dgf's transaction pool with
//! tokio-postgres, psql and pgbench.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_and_prepared_statements_share_a_pool_of_two() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf =
        Dgf::start(&basic_config(port, r#"{ mode = "transaction", size = 2, wait_timeout_ms = 10000 }"#), &[port]);
    let setup = connect(port, "app", &db.name).await.expect("connect");
    setup.batch_execute("CREATE TABLE t (id int primary key, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g").await.unwrap();

    let mut tasks = Vec::new();
    for i in 0..20 {
        let name = db.name.clone();
        tasks.push(tokio::spawn(async move {
            let c = connect(port, "app", &name).await.expect("connect");
            // A named prepared statement that outlives transactions and server connections.
            let stmt = c.prepare("SELECT v FROM t WHERE id = $1").await.expect("prepare");
            for k in 0..30 {
                let id = (i * 7 + k) % 100 + 1;
                let row = c.query_one(&stmt, &[&id]).await.expect("execute prepared");
                assert_eq!(row.get::<_, String>(0), format!("v{id}"));
            }
            let rows = c.simple_query("SELECT 1; SELECT 2").await.expect("multi-statement");
            assert!(rows.len() >= 4);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(db.sessions() <= 2, "pool cap exceeded: {}", db.sessions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_mid_transaction_keep_the_session_usable() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, r#"{ size = 1 }"#), &[port]);
    let c = connect(port, "app", &db.name).await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    assert!(c.batch_execute("SELECT 1/0").await.is_err());
    let e = c.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("25P02"), "in failed transaction");
    c.batch_execute("ROLLBACK").await.unwrap();
    let v: i32 = c.query_one("SELECT 41 + 1", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
}

#[test]
fn private_instance_with_tls_starts_and_restarts() {
    let certs_dir = tempfile::tempdir().unwrap();
    let (_ca, cert, key) = common::pg_instance::make_certs(certs_dir.path(), &["localhost", "127.0.0.1"]);
    let pg = common::pg_instance::PgInstance::start(&common::pg_instance::PgOptions {
        tls: Some((cert, key)),
        ..Default::default()
    });
    assert_eq!(pg.sql("SHOW ssl"), "on");
    pg.stop();
    pg.start_again();
    assert_eq!(pg.sql("SELECT 1"), "1");
}
