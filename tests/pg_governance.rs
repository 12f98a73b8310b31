//! End-to-end governance on the Postgres route: masking (text and binary), denials that leave
//! the session usable, transaction semantics, a corpus of bypass attempts, audit records.

mod common;

use common::pg_gov::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masking_text_binary_and_roles() {
    let env = setup();
    let analyst = client(&env, "analyst").await;
    let admin = client(&env, "admin").await;

    // Text format (simple query).
    let t = simple_text(&analyst, "SELECT id, name, email, ssn, card, age FROM customers ORDER BY id").await.unwrap();
    assert!(leaked(&t).is_none(), "analyst saw clear data: {t}");
    assert!(t.contains("a***@example.com"), "{t}");
    assert!(t.contains("*******6789") && t.contains("************1111"), "{t}");
    assert!(t.contains("alice") && t.contains("|NULL|"), "name clear, age masked to NULL: {t}");
    let t = simple_text(&admin, "SELECT email, ssn FROM customers ORDER BY id").await.unwrap();
    assert!(t.contains("alice@example.com") && t.contains("123-45-6789"), "admin sees clear values: {t}");

    // Binary format (tokio-postgres extended protocol): types stay decodable.
    let rows = analyst.query("SELECT id, email, age, card FROM customers WHERE id = $1", &[&1i32]).await.unwrap();
    let email: String = rows[0].get(1);
    let age: Option<i32> = rows[0].get(2);
    let card: String = rows[0].get(3);
    assert_eq!(
        (rows[0].get::<_, i32>(0), email.as_str(), age, card.as_str()),
        (1, "a***@example.com", None, "************1111")
    );
    // Prepared once, executed many times, across pooled connections.
    let st = analyst.prepare("SELECT * FROM customers ORDER BY id").await.unwrap();
    for _ in 0..3 {
        let rows = analyst.query(&st, &[]).await.unwrap();
        let e: String = rows[1].get("email");
        assert_eq!(e, "b***@example.org");
        let name: String = rows[1].get("name");
        assert_eq!(name, "bob", "unlabelled columns stay clear");
    }
    let rows = admin.query("SELECT email FROM customers WHERE id = $1", &[&2i32]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "bob@example.org");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_are_native_errors_and_keep_the_session() {
    let env = setup();
    let analyst = client(&env, "analyst").await;
    let e = analyst.simple_query("DELETE FROM customers WHERE id = 1").await.unwrap_err();
    assert_eq!(code(&e), "42501");
    assert!(e.as_db_error().unwrap().message().contains("analysts read only"), "{e}");
    assert_eq!(simple_text(&analyst, "SELECT count(*) FROM customers").await.unwrap(), "2|\n");
    // Extended protocol.
    let e = analyst.execute("UPDATE customers SET name = $1", &[&"x"]).await.unwrap_err();
    assert_eq!(code(&e), "42501");
    assert_eq!(analyst.query_one("SELECT 1::int", &[]).await.unwrap().get::<_, i32>(0), 1);
    // Inside a transaction a denial fails the transaction, as a failed statement does.
    analyst.simple_query("BEGIN").await.unwrap();
    analyst.simple_query("SELECT 1").await.unwrap();
    let e = analyst.simple_query("DROP TABLE customers").await.unwrap_err();
    assert_eq!(code(&e), "42501");
    // dgf's refusal, not the PL/pgSQL block that carried it.
    assert_eq!(e.as_db_error().unwrap().where_(), None, "{e:?}");
    let e = analyst.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(code(&e), "25P02", "transaction must be aborted: {e}");
    analyst.simple_query("ROLLBACK").await.unwrap();
    assert_eq!(simple_text(&analyst, "SELECT 2").await.unwrap(), "2|\n");
    // Same in the extended protocol.
    analyst.simple_query("BEGIN").await.unwrap();
    let e = analyst.execute("DELETE FROM notes WHERE body = $1", &[&"x"]).await.unwrap_err();
    assert_eq!(code(&e), "42501");
    let e = analyst.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(code(&e), "25P02", "{e}");
    analyst.simple_query("ROLLBACK").await.unwrap();
    // Admin is not read-only, but nobody drops.
    let admin = client(&env, "admin").await;
    admin.simple_query("INSERT INTO notes VALUES ('ok')").await.unwrap();
    let e = admin.simple_query("DROP TABLE notes").await.unwrap_err();
    assert!(e.as_db_error().unwrap().message().contains("nobody drops or truncates"), "{e}");
    let e = admin.simple_query("SELECT pg_read_file('/etc/passwd')").await.unwrap_err();
    assert!(e.as_db_error().unwrap().message().contains("guard:functions"), "{e}");
    let e = admin.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(code(&e), "42501", "unparseable statements are denied by default");
}

/// Hostile spellings that must be refused outright, leaving the data in place.
const MUST_DENY: &[&str] = &[
    "DROP TABLE customers",
    "drop table \"customers\"",
    "DrOp TaBlE public.customers",
    "/*x*/DROP/**/TABLE customers",
    "DROP TABLE IF EXISTS customers CASCADE",
    "TRUNCATE customers",
    "TRUNCATE TABLE ONLY customers",
    "truncate \"public\".\"customers\"",
    "ALTER TABLE customers DROP COLUMN email",
    "ALTER TABLE customers RENAME TO c2",
    "ALTER TABLE customers ALTER COLUMN email TYPE varchar(3)",
    "DELETE FROM customers",
    "UPDATE customers SET email = 'x'",
    "INSERT INTO customers VALUES (9, 'x', 'x', 'x', 'x', 1)",
    "WITH d AS (DELETE FROM customers RETURNING *) SELECT count(*) FROM d",
    "SELECT 1; DROP TABLE customers",
    "EXPLAIN ANALYZE DELETE FROM customers",
    "CREATE TABLE x (a int)",
    "CREATE TEMP TABLE leak AS SELECT email FROM customers",
    "SELECT email INTO leak2 FROM customers",
    "INSERT INTO notes SELECT email FROM customers",
    "GRANT ALL ON customers TO PUBLIC",
    "COMMENT ON TABLE customers IS 'x'",
    "COPY customers TO STDOUT",
    "COPY (SELECT email FROM customers) TO STDOUT",
    "COPY customers (email) TO STDOUT",
    "PREPARE p1 AS SELECT email FROM customers",
    "EXECUTE p1",
    "DO $$ BEGIN RAISE NOTICE '%', (SELECT email FROM customers LIMIT 1); END $$",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT set_config('role', 'postgres', false)",
    "SET ROLE postgres",
    "SET SESSION AUTHORIZATION postgres",
    "COPY notes FROM PROGRAM 'id'",
    "SELEC email FROM customers",
];

/// Reads that may run but must not show a clear value (or are refused).
const MUST_NOT_LEAK: &[&str] = &[
    "SELECT email FROM customers",
    "SELECT * FROM customers",
    "select EMAIL from CUSTOMERS",
    "SELECT \"email\" FROM \"customers\"",
    "SELECT email AS e FROM customers",
    "SELECT c.email FROM customers c",
    "SELECT public.customers.email FROM public.customers",
    "SELECT upper(email) FROM customers",
    "SELECT lower(upper(email)) FROM customers",
    "SELECT email || '' FROM customers",
    "SELECT concat(email, '') FROM customers",
    "SELECT substr(email, 1, 100) FROM customers",
    "SELECT email::varchar FROM customers",
    "SELECT CAST(ssn AS text) FROM customers",
    "SELECT (SELECT email FROM customers ORDER BY id LIMIT 1)",
    "SELECT x FROM (SELECT email AS x FROM customers) s",
    "SELECT * FROM (SELECT * FROM customers) s",
    "WITH t AS (SELECT email FROM customers) SELECT * FROM t",
    "WITH t(e) AS (SELECT card FROM customers) SELECT e FROM t",
    "SELECT name FROM customers UNION SELECT email FROM customers",
    "SELECT email FROM customers UNION ALL SELECT 'x'",
    "SELECT ssn FROM customers INTERSECT SELECT ssn FROM customers",
    "TABLE customers",
    "SELECT c FROM customers c",
    "SELECT row_to_json(c) FROM customers c",
    "SELECT to_json(c.*) FROM customers c",
    "SELECT array_agg(email) FROM customers",
    "SELECT string_agg(card, ',') FROM customers",
    "SELECT json_agg(customers) FROM customers",
    "SELECT /* comment */ email FROM customers",
    "SELECT email -- comment\n FROM customers",
    "SELECT e.* FROM customers e",
    "SELECT CASE WHEN true THEN email END FROM customers",
    "SELECT coalesce(ssn, 'x') FROM customers",
    "SELECT replace(email, '@', ' at ') FROM customers",
    "SELECT encode(convert_to(email, 'UTF8'), 'base64') FROM customers",
    "SELECT a.email, b.ssn FROM customers a JOIN customers b ON a.id = b.id",
    "SELECT email FROM customers ORDER BY 1",
    "SELECT DISTINCT card FROM customers",
    "SELECT email FROM ONLY customers",
    "SELECT U&\"\\0065mail\" FROM customers",
    "SELECT $$x$$ || email FROM customers",
    "SELECT format('%s', ssn) FROM customers",
    "SELECT (customers).email FROM customers",
    "SELECT (c).* FROM customers c",
    "SELECT unnest(ARRAY[email, ssn]) FROM customers",
    "SELECT l.* FROM customers, LATERAL (SELECT email AS e2) l",
    "SELECT jsonb_build_object('e', email) FROM customers",
    "SELECT email FROM customers FOR UPDATE",
    "SELECT email FROM customers; SELECT ssn FROM customers",
    "SELECT translate(card, '0123456789', 'abcdefghij') FROM customers",
    "SELECT reverse(ssn) FROM customers",
    "SELECT left(card, 8), right(card, 8) FROM customers",
    "SELECT split_part(email, '@', 1) FROM customers",
    "SELECT regexp_replace(ssn, '-', '', 'g') FROM customers",
    "BEGIN; DECLARE cur CURSOR FOR SELECT email FROM customers; FETCH ALL FROM cur; COMMIT",
    "SELECT t.x FROM (VALUES (1)) v, LATERAL (SELECT email AS x FROM customers) t",
    "SELECT * FROM customers WHERE email LIKE '%'",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_corpus() {
    let env = setup();
    let analyst = client(&env, "analyst").await;
    let mut failures = Vec::new();
    for sql in MUST_DENY {
        match analyst.simple_query(sql).await {
            Err(e) if code(&e) == "42501" => {}
            Err(e) => failures.push(format!("{sql}: expected 42501, got {e}")),
            Ok(_) => failures.push(format!("{sql}: expected a denial, it ran")),
        }
        // The session stays usable (and out of any failed transaction).
        let _ = analyst.simple_query("ROLLBACK").await;
        if simple_text(&analyst, "SELECT 1").await.ok().as_deref() != Some("1|\n") {
            failures.push(format!("{sql}: session unusable afterwards"));
        }
    }
    for sql in MUST_NOT_LEAK {
        match simple_text(&analyst, sql).await {
            Ok(t) => {
                if let Some(v) = leaked(&t) {
                    failures.push(format!("{sql}: leaked {v} (simple protocol): {t}"));
                }
            }
            Err(e) if code(&e) == "42501" => {}
            Err(e) => failures.push(format!("{sql}: unexpected error {e}")),
        }
        let _ = analyst.simple_query("ROLLBACK").await;
        // Single statements again through the extended protocol (binary results).
        if !sql.contains(';') {
            if let Ok(rows) = analyst.query(*sql, &[]).await {
                for r in rows {
                    for i in 0..r.len() {
                        let v: Option<String> = r.try_get::<_, Option<String>>(i).ok().flatten();
                        if let Some(leak) = v.as_deref().and_then(leaked) {
                            failures.push(format!("{sql}: leaked {leak} (extended protocol)"));
                        }
                    }
                }
            }
        }
    }
    assert!(MUST_DENY.len() + MUST_NOT_LEAK.len() >= 60);
    assert!(failures.is_empty(), "{} bypasses:\n{}", failures.len(), failures.join("\n"));
    // Nothing was destroyed.
    let conn = format!("host=127.0.0.1 port=5432 user=postgres dbname={}", env.db.name);
    let out = common::psql(&conn, "SELECT count(*), max(email) FROM customers").expect("count");
    assert_eq!(out.trim(), "2|bob@example.org");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_every_statement_and_chain_verifies() {
    let env = setup();
    let analyst = client(&env, "analyst").await;
    let masked = simple_text(&analyst, "SELECT email FROM customers WHERE id = 1").await.unwrap();
    // `bytes` is what the client got: the one DataRow (tag, length, column count, the value's
    // length and the masked value), not the server's longer clear one.
    let masked_row = 1 + 4 + 2 + 4 + masked.trim_end_matches('\n').trim_end_matches('|').len() as u64;
    assert_ne!(masked_row, 1 + 4 + 2 + 4 + "alice@example.com".len() as u64, "{masked}");
    let _ = analyst.simple_query("DELETE FROM customers").await;
    analyst.query("SELECT name FROM customers WHERE id = $1", &[&2i32]).await.unwrap();
    // pgbench through dgf: records == transactions.
    let before = wait_records(&env.audit, 3);
    let status = std::process::Command::new("pgbench")
        .args([
            "-n",
            "-c",
            "4",
            "-j",
            "2",
            "-t",
            "50",
            "-h",
            "127.0.0.1",
            "-p",
            &env.port.to_string(),
            "-U",
            "admin",
            "-f",
        ])
        .arg(write_script(&env))
        .arg(&env.db.name)
        .output()
        .expect("pgbench");
    assert!(status.status.success(), "pgbench: {}", String::from_utf8_lossy(&status.stderr));
    let lines = wait_records(&env.audit, before + 200);
    assert_eq!(lines, before + 200, "one audit record per statement");
    let text = std::fs::read_to_string(&env.audit).unwrap();
    assert!(!text.contains("alice@example.com"), "no literals by default");
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["decision"], "mask");
    assert_eq!(first["user"], "analyst");
    assert!(first["fingerprint"].as_str().unwrap().contains("customers"));
    assert!(text.contains("\"decision\":\"deny\""));
    // Every field of a statement's record, read back as the documented record type.
    let ev: dgf_rules::audit::AuditEvent = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!((ev.protocol.as_str(), ev.user.as_str(), ev.database.as_str()), ("postgres", "analyst", &*env.db.name));
    assert_eq!(ev.roles, ["analyst"]);
    assert!(ev.client.starts_with("127.0.0.1:") && ev.kind == "select" && ev.statement.is_none(), "{ev:?}");
    assert_eq!((ev.rows, ev.bytes, ev.error.as_deref()), (Some(1), Some(masked_row), None), "{ev:?}");
    assert!(ev.duration_us.is_some() && ev.objects.iter().any(|o| o.contains("customers")), "{ev:?}");
    assert!(ev.rules.iter().any(|r| r == "mask email for analysts"), "{ev:?}");
    assert!(ev.time.ends_with('Z') && ev.seq > 0 && ev.hash.len() == 64, "{ev:?}");
    // `rows` counts the rows returned whether or not a column was masked: the unmasked
    // extended-protocol read and every pgbench read return one row each.
    let recs: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let unmasked: Vec<_> = recs.iter().filter(|r| r["decision"] == "allow" && r["kind"] == "select").collect();
    assert!(unmasked.len() >= 200, "{} unmasked reads", unmasked.len());
    for r in unmasked {
        assert_eq!(r["rows"], 1, "{r}");
        // One DataRow of one column: 'alice' (16 bytes) or 'bob' (14).
        assert!(r["bytes"] == 16 || r["bytes"] == 14, "{r}");
    }
    let denied = recs.iter().find(|r| r["decision"] == "deny").unwrap();
    assert_eq!((&denied["rows"], &denied["bytes"]), (&0.into(), &0.into()), "{denied}");
    let report = dgf_rules::audit::verify(std::slice::from_ref(&env.audit)).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_error);
    // Tampering is found: an edited field, a deleted line, two lines swapped.
    let lines: Vec<&str> = text.lines().collect();
    let edited = text.replacen("\"user\":\"analyst\"", "\"user\":\"someone\"", 1);
    let mut deleted = lines.clone();
    deleted.remove(5);
    let mut swapped = lines.clone();
    swapped.swap(7, 8);
    for (what, body) in
        [("edited", edited), ("deleted", deleted.join("\n") + "\n"), ("swapped", swapped.join("\n") + "\n")]
    {
        let p = env._dir.path().join(format!("{what}.jsonl"));
        std::fs::write(&p, body).unwrap();
        let r = dgf_rules::audit::verify(&[p]).unwrap();
        assert!(!r.is_ok(), "{what} audit file must fail verification");
    }
    drop(env.dgf);
}

/// SQL-level cursors through dgf: `MOVE` is analysed (sqlparser alone does not parse it) and
/// runs for a role without masks; a masked role is refused it like `FETCH`. Audit records of
/// writes carry the rows the server says they changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_move_runs_and_writes_record_the_rows_they_change() {
    let env = setup();
    let admin = client(&env, "admin").await;
    let t = simple_text(
        &admin,
        "BEGIN; DECLARE c CURSOR FOR SELECT name FROM customers ORDER BY id; MOVE 1 IN c; FETCH 1 FROM c; COMMIT",
    )
    .await
    .expect("MOVE through dgf");
    assert_eq!(t, "bob|\n");
    admin.simple_query("INSERT INTO notes VALUES ('a'), ('b'), ('c')").await.unwrap();
    admin.simple_query("UPDATE notes SET body = 'z' WHERE body <> 'a'").await.unwrap();
    let analyst = client(&env, "analyst").await;
    let e = analyst
        .simple_query("BEGIN; DECLARE c CURSOR FOR SELECT id FROM customers; MOVE 1 IN c; COMMIT")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    let _ = analyst.simple_query("ROLLBACK").await;
    wait_records(&env.audit, 4);
    let text = std::fs::read_to_string(&env.audit).unwrap();
    let recs: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let rows_of = |fp: &str| {
        recs.iter().find(|r| r["fingerprint"].as_str().is_some_and(|f| f.starts_with(fp))).map(|r| r["rows"].clone())
    };
    assert_eq!(rows_of("insert into notes"), Some(3.into()), "{text}");
    assert_eq!(rows_of("update notes"), Some(2.into()), "{text}");
}

/// The test venv's python (made by scripts/py-venv.sh if missing).
fn venv_python() -> String {
    let venv = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/py-venv.sh"))
        .output()
        .expect("py-venv.sh");
    assert!(venv.status.success(), "py-venv.sh: {}", String::from_utf8_lossy(&venv.stderr));
    format!("{}/bin/python", String::from_utf8_lossy(&venv.stdout).trim())
}

fn write_script(env: &Env) -> std::path::PathBuf {
    let p = env._dir.path().join("bench.sql");
    std::fs::write(&p, "\\set id random(1, 2)\nSELECT name FROM customers WHERE id = :id;\n").unwrap();
    p
}

fn wait_records(path: &std::path::Path, want: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n = std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0);
        if n >= want || std::time::Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_metrics_and_reload() {
    let env = setup();
    let admin = client(&env, "admin").await;
    // Shadow: decided and counted, not enforced.
    admin.simple_query("INSERT INTO notes VALUES ('shadowed')").await.unwrap();
    let _ = admin.simple_query("DROP TABLE customers").await.unwrap_err();
    // Mask rules count where they masked a result (they used to count only when they refused).
    let analyst = client(&env, "analyst").await;
    analyst.simple_query("SELECT email FROM customers").await.unwrap();
    let mask_hit = r#"dgf_rule_hits_total{mode="enforce",rule="mask email for analysts"} 1"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (status, metrics) = loop {
        let (status, metrics) = env.dgf.admin("GET", "/metrics");
        if metrics.contains(mask_hit) || std::time::Instant::now() > deadline {
            break (status, metrics);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status, 200);
    assert!(metrics.contains(mask_hit), "{metrics}");
    assert!(metrics.contains(r#"dgf_rule_hits_total{mode="shadow",rule="watch notes"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"dgf_rule_hits_total{mode="enforce",rule="nobody drops or truncates"} 1"#), "{metrics}");
    assert!(metrics.contains("dgf_policy_decisions_total"), "{metrics}");
    // The audit gauges, the idle writer's rescues among them (default writer_priority).
    assert!(metrics.contains("dgf_audit_records{state=\"written\"}"), "{metrics}");
    assert!(metrics.lines().any(|l| l.starts_with("dgf_audit_writer_rescues ")), "{metrics}");
    // Reload without the drop rule: the same session sees the new policy at its next statement.
    let text = std::fs::read_to_string(&env.dgf.config).unwrap();
    let relaxed = text.replace("statements = [\"drop\", \"truncate\"]", "statements = [\"truncate\"]");
    assert_ne!(text, relaxed);
    env.dgf.rewrite_config(&relaxed);
    let (status, body) = env.dgf.admin("POST", "/reload");
    assert_eq!(status, 200, "{body}");
    admin.simple_query("CREATE TABLE scratch (a int)").await.unwrap();
    admin.simple_query("DROP TABLE scratch").await.expect("drop allowed after reload");
    // A broken policy is rejected and the old one keeps serving.
    env.dgf.rewrite_config(&relaxed.replace("labels = [\"email\"]", "labels = [\"nope\"]"));
    let (status, body) = env.dgf.admin("POST", "/reload");
    assert_ne!(status, 200, "{body}");
    let e = admin.simple_query("TRUNCATE notes").await.unwrap_err();
    assert_eq!(code(&e), "42501");
    // A statement prepared before a reload is decided again under the new policy at its next
    // Bind: a deny rule added by the reload refuses it, and the session stays usable.
    let prepared = admin.prepare("DELETE FROM notes WHERE false").await.unwrap();
    admin.execute(&prepared, &[]).await.expect("allowed before the reload");
    let tightened =
        format!("{relaxed}\n[[rules]]\nname = \"no deletes\"\naction = \"deny\"\nstatements = [\"delete\"]\n");
    env.dgf.rewrite_config(&tightened);
    let (status, body) = env.dgf.admin("POST", "/reload");
    assert_eq!(status, 200, "{body}");
    let e = admin.execute(&prepared, &[]).await.unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    assert!(e.to_string().contains("no deletes") || format!("{e:?}").contains("no deletes"), "{e:?}");
    admin.simple_query("SELECT 1").await.expect("the session stays usable");
}

/// Real drivers beyond tokio-postgres: psql (text) and psycopg 3 (text and binary cursors).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_psycopg_see_masked_values() {
    let env = setup();
    let conninfo =
        |u: &str| format!("host=127.0.0.1 port={} user={u} dbname={} sslmode=disable", env.port, env.db.name);
    let out = common::psql(&conninfo("analyst"), "SELECT email, ssn FROM customers ORDER BY id").expect("psql");
    assert!(out.contains("a***@example.com|*******6789"), "{out}");
    let out = common::psql(&conninfo("admin"), "SELECT email FROM customers ORDER BY id").expect("psql");
    assert!(out.contains("alice@example.com"), "{out}");
    let err = common::psql(&conninfo("analyst"), "DELETE FROM customers").unwrap_err();
    assert!(err.contains("analysts read only"), "{err}");

    let python = venv_python();
    let script = r#"
import sys, psycopg
dsn = sys.argv[1]
with psycopg.connect(dsn) as c:
    for binary in (False, True):
        cur = c.cursor(binary=binary)
        cur.execute("SELECT email, age, card FROM customers WHERE id = %s", (1,))
        print(binary, cur.fetchone())
    try:
        c.execute("UPDATE customers SET name = 'x'")
    except psycopg.errors.InsufficientPrivilege as e:
        print("denied", e.sqlstate)
        c.rollback()
    print("after", c.execute("SELECT 1").fetchone())
"#;
    let out =
        std::process::Command::new(&python).arg("-c").arg(script).arg(conninfo("analyst")).output().expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "psycopg: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("False ('a***@example.com', None, '************1111')"), "{stdout}");
    assert!(stdout.contains("True ('a***@example.com', None, '************1111')"), "{stdout}");
    assert!(stdout.contains("denied 42501") && stdout.contains("after (1,)"), "{stdout}");
    assert!(leaked(&stdout).is_none(), "{stdout}");
}

/// A session reuses the decision of a statement shape it repeats, but not one that read the
/// statement's values: `set_config` calls of one shape differ by their literals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_that_read_values_are_not_reused_for_the_shape() {
    let env = setup();
    let admin = client(&env, "admin").await;
    for _ in 0..2 {
        for (setting, refused) in [("jit", false), ("role", true), ("jit", false), ("session_authorization", true)] {
            let value = if refused { "postgres" } else { "off" };
            let r = admin.simple_query(&format!("SELECT set_config('{setting}', '{value}', false)")).await;
            assert_eq!(r.is_err(), refused, "{setting}: {r:?}");
            if let Err(e) = r {
                assert_eq!(code(&e), "42501", "{e}");
            }
        }
    }
    admin.simple_query("RESET jit").await.unwrap();
    // Plain repeats of a shape with other values are decided alike.
    let analyst = client(&env, "analyst").await;
    for id in [1, 2, 1] {
        let t = simple_text(&analyst, &format!("SELECT email FROM customers WHERE id = {id}")).await.unwrap();
        assert!(t.contains("***@example") && !t.contains("alice@") && !t.contains("bob@"), "{t}");
    }
}

/// asyncpg with the default guards: its type introspection calls `set_config('jit', 'off',
/// false)` (refused by the `functions` guard before, for every column type it must look up:
/// arrays, enums), and its pool's reset query ends with `RESET ALL` (refused as a role change).
/// `set_config('role', ...)` stays refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_introspection_and_pool_reset_pass_the_guards() {
    let env = setup();
    let python = venv_python();
    let script = r#"
import asyncio, sys, asyncpg
async def main(dsn):
    c = await asyncpg.connect(dsn)
    await c.execute("CREATE TYPE mood AS ENUM ('ok', 'sad'); CREATE TABLE arr (nums int[], m mood)")
    await c.execute("INSERT INTO arr VALUES (ARRAY[1, 2], 'ok')")
    r = await c.fetchrow("SELECT nums, m FROM arr")
    print("row", list(r["nums"]), r["m"])
    try:
        await c.fetchval("SELECT set_config('role', 'postgres', false)")
        print("role changed")
    except asyncpg.exceptions.InsufficientPrivilegeError as e:
        print("role refused")
    await c.close()
    p = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    for _ in range(3):
        async with p.acquire() as c2:
            await c2.fetchval("SELECT 1")
    await p.close()
    print("pool ok")
asyncio.run(main(sys.argv[1]))
"#;
    let dsn = format!("postgresql://admin@127.0.0.1:{}/{}?sslmode=disable", env.port, env.db.name);
    let out = std::process::Command::new(&python).arg("-c").arg(script).arg(dsn).output().expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "asyncpg: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout, "row [1, 2] ok\nrole refused\npool ok\n");
}

/// The first masked query of a session arrives inside a transaction: the catalog is loaded on
/// the transaction's own connection without disturbing it, and `*` is resolved exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masking_inside_a_transaction_from_the_first_statement() {
    let env = setup();
    let analyst = client(&env, "analyst").await;
    analyst.simple_query("BEGIN").await.unwrap();
    let t = simple_text(&analyst, "SELECT * FROM customers ORDER BY id").await.unwrap();
    assert!(leaked(&t).is_none(), "{t}");
    assert!(t.starts_with("1|alice|a***@example.com|"), "unlabelled columns clear, email masked: {t}");
    analyst.simple_query("INSERT INTO notes VALUES ('x')").await.unwrap_err();
    let e = analyst.simple_query("SELECT * FROM customers").await.unwrap_err();
    assert_eq!(code(&e), "25P02");
    analyst.simple_query("ROLLBACK").await.unwrap();
    let t = simple_text(&analyst, "SELECT name, ssn FROM customers WHERE id = 2").await.unwrap();
    assert_eq!(t, "bob|*******4321|\n");
}
