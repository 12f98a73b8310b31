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

/// `dgf check` on a file: (success, stdout + stderr).
fn dgf_check(path: &std::path::Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dgf"));
    cmd.arg("check").arg("--config").arg(path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run dgf check");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn shipped_examples_pass_dgf_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let env = [("APP_PASSWORD", "pw"), ("UPSTREAM_URL", "postgres://u:p@db.example.com:5432/app?sslmode=verify-full")];

    // README quick start.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start =
        readme.find("cat > dgf.toml <<'TOML'\n").expect("quick start block") + "cat > dgf.toml <<'TOML'\n".len();
    let end = start + readme[start..].find("\nTOML\n").expect("end of block");
    let quick = dir.path().join("quick.toml");
    std::fs::write(&quick, &readme[start..end]).unwrap();

    // The TOML inside the Kubernetes sidecar example.
    let k8s = std::fs::read_to_string(root.join("config/examples/k8s-sidecar.yaml")).unwrap();
    let block = k8s.split("dgf.toml: |\n").nth(1).unwrap().split("\n---").next().unwrap();
    let sidecar = dir.path().join("sidecar.toml");
    std::fs::write(&sidecar, block.lines().map(|l| l.strip_prefix("    ").unwrap_or(l)).collect::<Vec<_>>().join("\n"))
        .unwrap();

    for path in [root.join("config/examples/docker.toml"), root.join("config/default.toml"), quick, sidecar] {
        let (ok, out) = dgf_check(&path, &env);
        assert!(ok, "{} failed dgf check: {out}", path.display());
        assert!(out.contains("OK"), "{out}");
    }
}
