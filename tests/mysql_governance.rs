//! Governance on the MySQL route: a bypass corpus in MySQL spelling (backticks, version
//! comments, `#` / `-- ` comments, INTO OUTFILE/DUMPFILE, LOAD_FILE, HANDLER, SHOW CREATE,
//! INFORMATION_SCHEMA, user variables, derived expressions, views, prepared statements).
//! Every case must be refused or come back with the labelled data masked; nothing may be
//! destroyed; the connection stays usable after each refusal; one audit record per statement.

mod common;

use common::my::{my_admin, MyDb};
use common::{free_port, Dgf};
use mysql_async::prelude::*;

const EMAILS: [&str; 3] = ["alice.secret@example.com", "bob.hidden@example.org", "carol.private@example.net"];
const SSNS: [&str; 3] = ["123-45-6789", "987-65-4321", "555-12-3456"];

fn forbidden() -> Vec<String> {
    let mut out = Vec::new();
    for s in EMAILS.iter().chain(SSNS.iter()) {
        out.push(s.to_string());
        out.push(s.chars().rev().collect());
        out.push(s.bytes().map(|b| format!("{b:02X}")).collect());
        out.push(s.bytes().map(|b| format!("{b:02x}")).collect());
        out.push(base64(s.as_bytes()));
        // local part alone is the secret too
        if let Some((local, _)) = s.split_once('@') {
            out.push(local.to_owned());
        }
    }
    out.push("root:x:0:0".into());
    out
}

fn base64(b: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

fn setup(db: &MyDb) {
    let n = &db.name;
    my_admin(&format!(
        "CREATE TABLE {n}.customers (id INT PRIMARY KEY, name VARCHAR(50), email VARCHAR(100), ssn VARCHAR(20)); \
         CREATE TABLE {n}.orders (id INT PRIMARY KEY, customer_id INT, total DECIMAL(10,2)); \
         INSERT INTO {n}.customers VALUES (1, 'Alice', '{}', '{}'), (2, 'Bob', '{}', '{}'), (3, 'Carol', '{}', '{}'); \
         INSERT INTO {n}.orders VALUES (10, 1, 9.50), (11, 2, 20.00);",
        EMAILS[0], SSNS[0], EMAILS[1], SSNS[1], EMAILS[2], SSNS[2]
    ));
}

fn config(port: u16, db: &MyDb, audit: &str) -> String {
    let n = &db.name;
    format!(
        r#"
[admin]
listen = "{{admin}}"

[[users]]
name = "analyst"
password = "an_pw"
roles = ["analyst"]

[[users]]
name = "clerk"
password = "cl_pw"

[[routes]]
name = "mysql"
protocol = "mysql"
listen = "127.0.0.1:{port}"
upstream = "{up}"
pool = {{ size = 2 }}

[[labels]]
name = "email"
match = ["{n}.customers.email", "{n}.v_labelled.email"]

[[labels]]
name = "ssn"
match = ["{n}.customers.ssn"]

[[rules]]
name = "mask email for analysts"
roles = ["analyst"]
action = "mask"
labels = ["email"]
with = "email"

[[rules]]
name = "redact ssn for analysts"
roles = ["analyst"]
action = "mask"
labels = ["ssn"]
with = "redact"

[[rules]]
name = "analysts read only"
roles = ["analyst"]
action = "deny"
statements = ["insert", "update", "delete", "ddl"]

[[rules]]
name = "nobody drops or truncates"
action = "deny"
statements = ["drop", "truncate"]

[[rules]]
name = "analysts keep out of salaries"
roles = ["analyst"]
action = "deny"
tables = ["{n}.salaries"]

[audit]
path = "{audit}"
"#,
        up = db.upstream()
    )
}

const CORPUS: &[&str] = &[
    "SELECT email FROM customers",
    "SELECT `email` FROM `customers`",
    "SELECT c.email FROM customers c",
    "SELECT `c`.`email` FROM `customers` AS `c`",
    "SELECT email AS e FROM customers",
    "select EMAIL from customers",
    "SELECT * FROM customers",
    "SELECT customers.* FROM customers",
    "SELECT * FROM (SELECT * FROM customers) AS t",
    "SELECT UPPER(email) FROM customers",
    "SELECT LOWER(CONCAT(name, ':', email)) FROM customers",
    "SELECT SUBSTRING(email, 1, 100) FROM customers",
    "SELECT REVERSE(email) FROM customers",
    "SELECT HEX(email) FROM customers",
    "SELECT TO_BASE64(email) FROM customers",
    "SELECT (SELECT email FROM customers LIMIT 1)",
    "SELECT e FROM (SELECT email AS e FROM customers) t",
    "WITH x AS (SELECT email FROM customers) SELECT * FROM x",
    "SELECT name FROM customers UNION SELECT email FROM customers",
    "SELECT email FROM customers WHERE 1 UNION ALL SELECT 'x'",
    "(SELECT email FROM customers)",
    "SELECT /*! email */ FROM customers",
    "SELECT /*!50000 email */ FROM customers",
    "SELECT /*M!100000 email */ FROM customers",
    "SELECT email FROM customers # trailing comment",
    "SELECT email FROM customers -- trailing comment",
    "SELECT email/* inline */FROM customers",
    "SELECT GROUP_CONCAT(email) FROM customers",
    "SELECT JSON_OBJECT('e', email) FROM customers",
    "SELECT JSON_ARRAYAGG(email) FROM customers",
    "SELECT CAST(email AS BINARY) FROM customers",
    "SELECT CONVERT(email USING latin1) FROM customers",
    "SELECT email COLLATE utf8mb4_bin FROM customers",
    "SELECT IF(1, email, name) FROM customers",
    "SELECT CASE WHEN id > 0 THEN email END FROM customers",
    "SELECT COALESCE(NULL, email) FROM customers",
    "SELECT MAX(email), MIN(email) FROM customers",
    "SELECT DISTINCT email FROM customers ORDER BY 1",
    "SELECT o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id",
    "SELECT email FROM customers LOCK IN SHARE MODE",
    "SELECT email FROM customers FOR UPDATE",
    "SELECT ssn FROM customers",
    "SELECT CONCAT(ssn, '') FROM customers",
    "SELECT email FROM customers INTO OUTFILE '/tmp/dgf_outfile_test'",
    "SELECT email FROM customers LIMIT 1 INTO DUMPFILE '/tmp/dgf_dumpfile_test'",
    "SELECT LOAD_FILE('/etc/passwd')",
    "HANDLER customers OPEN",
    "HANDLER customers READ FIRST",
    "SHOW CREATE TABLE customers",
    "SELECT * FROM information_schema.columns WHERE table_name = 'customers'",
    "SET @v := (SELECT email FROM customers LIMIT 1)",
    "SELECT @v",
    "SELECT email INTO @w FROM customers LIMIT 1",
    "SELECT @w",
    "SELECT @x := email FROM customers LIMIT 1",
    "SELECT @x",
    "PREPARE s FROM 'SELECT email FROM customers'",
    "EXECUTE s",
    "CREATE VIEW v_leak AS SELECT email FROM customers",
    "CREATE TABLE t_leak AS SELECT email FROM customers",
    "INSERT INTO orders SELECT id + 100, id, 0 FROM customers",
    "UPDATE customers SET email = 'x'",
    "DELETE FROM customers",
    "DROP TABLE customers",
    "TRUNCATE customers",
    "TRUNCATE TABLE `customers`",
    "SELECT 1; DROP TABLE customers",
    "SELECT 1; SELECT email FROM customers",
    "DO 1; SELECT name, ssn FROM customers",
    "/*!50000 DROP TABLE customers */",
    "SELECT 1 /*! ; DROP TABLE customers */",
    "DR/**/OP TABLE customers",
];

/// A database with the test tables, and a dgf governing it with the policy above and an audit
/// file: (database, its temp dir, audit path, dgf, route port).
fn start() -> (MyDb, tempfile::TempDir, std::path::PathBuf, Dgf, u16) {
    let db = MyDb::create();
    setup(&db);
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let _d = Dgf::start(&config(port, &db, &audit.display().to_string()), &[port]);
    (db, dir, audit, _d, port)
}

async fn connect(port: u16, db: &MyDb, user: &str, password: &str) -> mysql_async::Conn {
    let opts: mysql_async::Opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(password))
        .db_name(Some(db.name.clone()))
        .prefer_socket(false)
        .into();
    mysql_async::Conn::new(opts).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_corpus_is_denied_or_masked() {
    let (db, _dir, audit, _d, port) = start();
    let mut c = connect(port, &db, "analyst", "an_pw").await;
    let bad = forbidden();
    let mut report = Vec::new();
    let mut leaks = Vec::new();
    for sql in CORPUS {
        let outcome = match c.query_iter(*sql).await {
            Err(e) => format!("refused: {e}"),
            Ok(mut r) => {
                let mut text = String::new();
                let mut err = None;
                loop {
                    match r.collect::<mysql_async::Row>().await {
                        Ok(rows) => {
                            for row in rows {
                                text.push_str(&format!("{:?}", row.unwrap()));
                            }
                        }
                        Err(e) => {
                            err = Some(e.to_string());
                            break;
                        }
                    }
                    if r.is_empty() {
                        break;
                    }
                }
                drop(r);
                if let Some(hit) = bad.iter().find(|b| text.contains(b.as_str())) {
                    leaks.push(format!("{sql}  ->  leaked {hit}: {text}"));
                }
                match err {
                    Some(e) => format!("error: {e}"),
                    None => format!("ok: {}", text.chars().take(120).collect::<String>()),
                }
            }
        };
        report.push(format!("{sql}\n    {outcome}"));
        // the connection stays usable after every case
        let one: Option<i64> = c.query_first("SELECT 1").await.unwrap_or_else(|e| panic!("after `{sql}`: {e}"));
        assert_eq!(one, Some(1), "after `{sql}`");
    }
    // binary protocol: a prepared statement gets the same masks
    let rows: Vec<(i64, Option<String>, Option<String>)> =
        c.exec("SELECT id, email, ssn FROM customers WHERE id >= ? ORDER BY id", (1,)).await.unwrap();
    for (id, email, ssn) in &rows {
        let text = format!("{id} {email:?} {ssn:?}");
        if let Some(hit) = bad.iter().find(|b| text.contains(b.as_str())) {
            leaks.push(format!("prepared SELECT -> leaked {hit}: {text}"));
        }
    }
    assert_eq!(rows.len(), 3);
    let first_masked = rows[0].1.clone().unwrap_or_default();
    eprintln!("{}", report.join("\n"));
    assert!(leaks.is_empty(), "leaks:\n{}", leaks.join("\n"));
    assert!(first_masked.contains('@') || first_masked.is_empty(), "email mask keeps the shape: {first_masked}");
    // nothing was destroyed or created
    let n = &db.name;
    assert_eq!(my_admin(&format!("SELECT COUNT(*) FROM {n}.customers")), "3");
    assert_eq!(my_admin(&format!("SELECT email FROM {n}.customers WHERE id = 1")), EMAILS[0]);
    assert_eq!(my_admin(&format!("SELECT COUNT(*) FROM {n}.orders")), "2");
    let objects = my_admin(&format!("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{n}'"));
    assert_eq!(objects, "2", "a view or table was created");
    drop(c);
    // one audit record per statement sent (corpus + probes + prepared), hash-chained
    // The writer flushes asynchronously: give it a moment to catch up before counting.
    let count = |t: &str| t.lines().filter(|l| l.contains("\"protocol\":\"mysql\"")).count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut text = std::fs::read_to_string(&audit).unwrap_or_default();
    let complete = |t: &str| count(t) >= CORPUS.len() && t.contains("\"decision\":\"deny\"");
    while !complete(&text) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        text = std::fs::read_to_string(&audit).unwrap_or_default();
    }
    let records = count(&text);
    assert!(records >= CORPUS.len(), "audit records: {records}");
    assert!(text.contains("\"decision\":\"deny\"") && text.contains("\"decision\":\"mask\""), "{text}");
    // A masked statement's record names the mask rule that applied and reads back whole.
    let masked: Vec<dgf_rules::audit::AuditEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &dgf_rules::audit::AuditEvent| e.protocol == "mysql" && e.decision == "mask")
        .collect();
    assert!(!masked.is_empty());
    assert!(masked.iter().all(|e| !e.rules.is_empty() && e.user == "analyst" && e.statement.is_none()), "{masked:?}");
    assert!(masked.iter().any(|e| e.rules.iter().any(|r| r == "mask email for analysts")), "{masked:?}");
}

/// `SELECT *` masks only the labelled columns: before, every column a `*` expanded to took the
/// mask of the whole `*` (a masked column among them), so an analyst read NULL ids and names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_star_masks_only_the_labelled_columns() {
    let (db, _dir, _audit, _d, port) = start();
    let mut c = connect(port, &db, "analyst", "an_pw").await;
    for sql in ["SELECT * FROM customers ORDER BY id", "SELECT c.*, 7 FROM customers c ORDER BY id"] {
        let rows: Vec<mysql_async::Row> = c.query(sql).await.unwrap();
        assert_eq!(rows.len(), 3, "{sql}");
        let r = &rows[0];
        let first: (i32, String, String, String) =
            (r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap(), r.get(3).unwrap());
        assert_eq!((first.0, first.1.as_str()), (1, "Alice"), "{sql}");
        assert!(first.2 != EMAILS[0] && first.2.ends_with("@example.com"), "{sql}: email {}", first.2);
        assert!(first.3 != SSNS[0] && !first.3.contains("6789"), "{sql}: ssn {}", first.3);
    }
    // Binary protocol (COM_STMT_EXECUTE): the same.
    let r: Vec<mysql_async::Row> = c.exec("SELECT * FROM customers WHERE id = ?", (1,)).await.unwrap();
    let (id, name, email): (i32, String, String) = (r[0].get(0).unwrap(), r[0].get(1).unwrap(), r[0].get(2).unwrap());
    assert_eq!((id, name.as_str()), (1, "Alice"));
    assert!(email != EMAILS[0] && email.ends_with("@example.com"), "{email}");
    // The same column through a derived table that renames it is still masked.
    let v: Vec<(i32, Option<String>)> =
        c.query("SELECT * FROM (SELECT id, email AS name FROM customers) AS customers ORDER BY id").await.unwrap();
    assert!(v.iter().all(|(_, n)| n.as_deref().is_none_or(|n| !EMAILS.contains(&n))), "{v:?}");
}

/// COM_CHANGE_USER switches users on a live connection: the policy view must follow the new
/// user (a view cached for the first user would show an analyst unmasked data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_switches_the_policy_view() {
    let (db, _dir, audit, d, port) = start();
    let mut c = connect(port, &db, "clerk", "cl_pw").await;
    let email = "SELECT email FROM customers WHERE id = 1";
    let clear: Option<String> = c.query_first(email).await.unwrap();
    assert_eq!(clear.as_deref(), Some(EMAILS[0]), "a user without roles reads clear data");
    let to =
        |u: &str, p: &str| mysql_async::ChangeUserOpts::default().with_user(Some(u.into())).with_pass(Some(p.into()));
    c.change_user(to("analyst", "an_pw")).await.unwrap();
    let masked: Option<String> = c.query_first(email).await.unwrap();
    assert_ne!(masked.as_deref(), Some(EMAILS[0]), "the analyst got the previous user's view");
    assert!(c.query_drop(format!("DELETE FROM {}.orders", db.name)).await.is_err(), "analysts are read only");
    c.change_user(to("clerk", "cl_pw")).await.unwrap();
    let clear: Option<String> = c.query_first(email).await.unwrap();
    assert_eq!(clear.as_deref(), Some(EMAILS[0]));
    // A statement prepared before a reload is decided again under the new policy when executed.
    let stmt = c.prep("DELETE FROM orders WHERE id = ?").await.unwrap();
    c.exec_drop(&stmt, (999,)).await.expect("allowed before the reload");
    let tightened = format!(
        "{}\n[[rules]]\nname = \"no deletes\"\naction = \"deny\"\nstatements = [\"delete\"]\n",
        config(port, &db, &audit.display().to_string())
    );
    d.rewrite_config(&tightened);
    let (status, body) = d.admin("POST", "/reload");
    assert_eq!(status, 200, "{body}");
    let e = c.exec_drop(&stmt, (999,)).await.unwrap_err().to_string();
    assert!(e.contains("1142") && e.contains("no deletes"), "{e}");
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the connection stays usable");
    // Audit `rows`: the rows a write changed (the server's affected rows), the rows a read
    // returned.
    c.query_drop("UPDATE orders SET total = total + 1 WHERE id IN (10, 11)").await.unwrap();
    let _: Vec<i64> = c.query("SELECT id FROM orders ORDER BY id").await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let record = |fp: &str| {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| r["fingerprint"].as_str().is_some_and(|f| f.starts_with(fp)))
    };
    let (update, select) = loop {
        let (u, s) =
            (record("update orders set total = total + ? where id in"), record("select id from orders order by id"));
        if let (Some(u), Some(s)) = (&u, &s) {
            break (u.clone(), s.clone());
        }
        assert!(std::time::Instant::now() < deadline, "records not written: {u:?} {s:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!((update["rows"].clone(), select["rows"].clone()), (2.into(), 2.into()), "{update} {select}");
    // `bytes`: the row packets the client got, two text rows "10" and "11" (4-byte header,
    // length byte, two digits); a write returns no rows.
    assert_eq!((update["bytes"].clone(), select["bytes"].clone()), (0.into(), 14.into()), "{update} {select}");
}

/// Views made by the owner over governed tables: the rules on the tables reach them. Before,
/// an analyst read clear emails through `CREATE VIEW v AS SELECT id, email AS contact FROM
/// customers`: the server reports a view's columns under the view's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_and_routines_over_governed_tables_are_covered() {
    let (db, _dir, _audit, _d, port) = start();
    let n = &db.name;
    my_admin(&format!(
        "CREATE TABLE {n}.salaries (id INT, amount INT); INSERT INTO {n}.salaries VALUES (1, 987654); \
         CREATE VIEW {n}.v_contacts AS SELECT id, email AS contact FROM {n}.customers; \
         CREATE VIEW {n}.v_lower AS SELECT id, LOWER(email) AS l FROM {n}.customers; \
         CREATE VIEW {n}.v_nested AS SELECT * FROM {n}.v_contacts; \
         CREATE ALGORITHM=TEMPTABLE VIEW {n}.v_temp AS SELECT id, email FROM {n}.customers; \
         CREATE VIEW {n}.v_names AS SELECT id, name FROM {n}.customers; \
         CREATE VIEW {n}.v_labelled AS SELECT id, email FROM {n}.customers; \
         CREATE VIEW {n}.v_pay AS SELECT SUM(amount) AS total FROM {n}.salaries; \
         CREATE FUNCTION {n}.f_mail() RETURNS VARCHAR(100) READS SQL DATA \
           RETURN (SELECT email FROM {n}.customers WHERE id = 1); \
         CREATE PROCEDURE {n}.p_all() SELECT * FROM {n}.customers; \
         CREATE VIEW {n}.v_func AS SELECT {n}.f_mail() AS m;"
    ));
    let mut c = connect(port, &db, "analyst", "an_pw").await;
    let refused = [
        ("SELECT * FROM v_contacts".to_owned(), "mask email"),
        ("SELECT contact FROM v_contacts".to_owned(), "mask email"),
        (format!("SELECT `contact` FROM `{n}`.`v_contacts`"), "mask email"),
        ("SELECT UPPER(l) FROM v_lower".to_owned(), "mask email"),
        ("SELECT * FROM v_nested".to_owned(), "mask email"),
        ("SELECT email FROM v_temp".to_owned(), "mask email"),
        ("SELECT total FROM v_pay".to_owned(), "keep out of salaries"),
    ];
    for (sql, rule) in &refused {
        let e = c.query_drop(sql).await.expect_err(sql).to_string();
        assert!(e.contains("view") && e.contains(rule), "{sql}: {e}");
    }
    // Stored routines run with their definer's rights: refused unless trusted.
    for sql in ["SELECT f_mail()", &format!("SELECT `{n}`.F_MAIL()"), "CALL p_all()", "SELECT m FROM v_func"] {
        let e = c.query_drop(sql).await.expect_err(sql).to_string();
        assert!(e.contains("trusted_functions") && e.contains("mask email"), "{sql}: {e}");
    }
    let e = c.prep("SELECT contact FROM v_contacts WHERE id = ?").await.expect_err("prepared").to_string();
    assert!(e.contains("mask email"), "{e}");
    // Clean columns of such a view, views over clean columns, and labelled view columns.
    let ids: Vec<i32> = c.query("SELECT id FROM v_contacts ORDER BY id").await.unwrap();
    assert_eq!(ids, vec![1, 2, 3]);
    let names: Vec<String> = c.query("SELECT name FROM v_names ORDER BY id").await.unwrap();
    assert_eq!(names, vec!["Alice", "Bob", "Carol"]);
    let masked: Option<String> = c.query_first("SELECT email FROM v_labelled WHERE id = 1").await.unwrap();
    assert!(masked.as_deref().is_some_and(|m| m != EMAILS[0] && m.ends_with("@example.com")), "{masked:?}");
    // A user without rules reads the views in the clear.
    let mut clerk = connect(port, &db, "clerk", "cl_pw").await;
    let clear: Option<String> = clerk.query_first("SELECT contact FROM v_contacts WHERE id = 1").await.unwrap();
    assert_eq!(clear.as_deref(), Some(EMAILS[0]));
    let clear: Option<String> = clerk.query_first("SELECT f_mail()").await.unwrap();
    assert_eq!(clear.as_deref(), Some(EMAILS[0]));
}

/// A view made outside dgf after dgf read the view definitions: before, statements on it read
/// masked data in the clear until the cache expired (60 s). Now a governed statement naming a
/// relation the cache lacks reads the definitions again first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_made_outside_dgf_after_the_cache_loaded_are_covered() {
    let (db, _dir, _audit, _d, port) = start();
    let n = &db.name;
    let mut c = connect(port, &db, "analyst", "an_pw").await;
    let ids: Vec<i32> = c.query("SELECT id FROM customers ORDER BY id").await.unwrap();
    assert_eq!(ids, vec![1, 2, 3]);
    // A missing name is an error from the server, as without dgf.
    for _ in 0..2 {
        let e = c.query_drop("SELECT * FROM v_late").await.expect_err("no such view yet").to_string();
        assert!(e.contains("1146") || e.contains("doesn't exist"), "{e}");
    }
    my_admin(&format!(
        "CREATE VIEW {n}.v_late2 AS SELECT id, LOWER(email) AS contact FROM {n}.customers; \
         CREATE VIEW {n}.v_late3 AS SELECT id, email AS contact FROM {n}.customers;"
    ));
    for sql in ["SELECT contact FROM v_late2".to_owned(), format!("SELECT * FROM `{n}`.`v_late3`")] {
        let e = c.query_drop(&sql).await.expect_err(&sql).to_string();
        assert!(e.contains("view") && e.contains("mask email"), "{sql}: {e}");
    }
    let ids: Vec<i32> = c.query("SELECT id FROM v_late2 ORDER BY id").await.unwrap();
    assert_eq!(ids, vec![1, 2, 3]);
}

/// SQL-level prepared statements: `PREPARE name FROM '...'` is decided on the statement it
/// carries, and `EXECUTE name` runs under that statement's masking plan. They used to be
/// refused for every role (sqlparser has no `PREPARE ... FROM`), masked or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_level_prepare_and_execute_follow_the_policy() {
    let (db, _dir, audit, _d, port) = start();
    // A role without masks gets clear values.
    let mut clerk = connect(port, &db, "clerk", "cl_pw").await;
    clerk.query_drop("PREPARE s FROM 'SELECT id, email FROM customers WHERE id = ?'").await.unwrap();
    clerk.query_drop("SET @id = 1").await.unwrap();
    let v: Vec<(i32, String)> = clerk.query("EXECUTE s USING @id").await.unwrap();
    assert_eq!(v, vec![(1, EMAILS[0].to_owned())]);
    clerk.query_drop("DEALLOCATE PREPARE s").await.unwrap();

    let mut c = connect(port, &db, "analyst", "an_pw").await;
    c.query_drop("PREPARE `Q` FROM 'SELECT id, email, concat(ssn, '''') AS s FROM customers ORDER BY id'")
        .await
        .unwrap();
    let v: Vec<(i32, String, Option<String>)> = c.query("EXECUTE q").await.unwrap();
    assert_eq!(v.len(), 3);
    for (i, (id, email, ssn)) in v.iter().enumerate() {
        assert_eq!(*id, i as i32 + 1);
        assert!(email != EMAILS[i] && email.contains("***@"), "{email}");
        assert!(ssn.as_deref().is_none_or(|s| !s.contains(&SSNS[i][7..])), "{ssn:?}");
    }
    // What the analyst may not run directly, it may not prepare either; and the refused
    // PREPARE forgets what the name held before.
    let e = c.query_drop("PREPARE q FROM 'DELETE FROM orders'").await.unwrap_err().to_string();
    assert!(e.contains("analysts read only"), "{e}");
    let e = c.query_drop("EXECUTE q").await.unwrap_err().to_string();
    assert!(e.contains("1143") && e.contains("cannot be traced"), "{e}");
    // Text dgf cannot see is refused: a statement held in a variable, adjacent literals.
    for sql in
        ["PREPARE r FROM @text", "PREPARE r FROM 'SELECT id FROM customers' ' UNION SELECT email FROM customers'"]
    {
        assert!(c.query_drop(sql).await.is_err(), "{sql}");
        assert!(c.query_drop("EXECUTE r").await.is_err(), "{sql}");
    }
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM orders").await.unwrap();
    assert_eq!(n, Some(2), "nothing was deleted");
    drop(c);
    drop(clerk);
    // The analyst's records (after the client's own connect-time query): PREPARE (kind
    // prepare), EXECUTE (the select it ran, masked), the refused PREPARE.
    let want = [("prepare", "allow"), ("select", "mask"), ("prepare", "deny")];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let kinds = loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        let kinds: Vec<(String, String)> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|e: &dgf_rules::audit::AuditEvent| e.user == "analyst")
            .map(|e| (e.kind, e.decision))
            .collect();
        if kinds.len() > want.len() || std::time::Instant::now() > deadline {
            break kinds;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let got: Vec<(&str, &str)> = kinds.iter().skip(1).take(3).map(|(k, d)| (k.as_str(), d.as_str())).collect();
    assert_eq!(got, want, "{kinds:?}");
}

/// Settings that change how the server reads SQL text (`ANSI_QUOTES`, `NO_BACKSLASH_ESCAPES`,
/// multi-byte client character sets) are refused: with ANSI_QUOTES on, `CONCAT("ssn", '')` read
/// the ssn column while dgf read a string. KILL takes dgf connection ids and only reaches the
/// same user's sessions (another user's id is "Unknown thread id"); KILL in a multi-statement
/// is refused; both are audited. The server's transaction and statistics tables are refused
/// to masked roles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_change_the_lexer_and_kill_are_refused() {
    let (db, _dir, audit, _d, port) = start();
    let mut c = connect(port, &db, "analyst", "an_pw").await;
    for sql in [
        "SET sql_mode = 'ANSI_QUOTES'",
        "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')",
        "SET @@sql_mode := 'ANSI'",
        "SET NAMES gbk",
        "SELECT trx_query FROM information_schema.INNODB_TRX",
        "SELECT min_value, max_value FROM mysql.column_stats",
    ] {
        let e = c.query_drop(sql).await.unwrap_err().to_string();
        assert!(e.contains("dgf:"), "{sql}: {e}");
    }
    // Still the default mode: a double-quoted "ssn" is a string, and the session is usable.
    let v: Vec<String> = c.query("SELECT CONCAT(\"ssn\", '') FROM customers WHERE id = 1").await.unwrap();
    assert_eq!(v, vec!["ssn".to_owned()]);
    c.query_drop("SET sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_DATE'").await.unwrap();
    // The same statement shape with another value is decided on its value again.
    let e = c.query_drop("SET sql_mode = 'ANSI_QUOTES'").await.unwrap_err().to_string();
    assert!(e.contains("dgf:"), "after an allowed value of the same shape: {e}");
    let mut clerk = connect(port, &db, "clerk", "cl_pw").await;
    let analyst = c.id();
    for sql in [format!("KILL {analyst}"), format!("/*!50000 KILL QUERY {analyst} */")] {
        let e = clerk.query_drop(&sql).await.unwrap_err().to_string();
        assert!(e.contains("1094") && e.contains(&format!("Unknown thread id: {analyst}")), "{sql}: {e}");
    }
    let e = clerk.query_drop(format!("SELECT 1; KILL {analyst}")).await.unwrap_err().to_string();
    assert!(e.contains("1095") && e.contains("KILL"), "{e}");
    let one: Option<i32> = clerk.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    let one: Option<i32> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the analyst's session was not killed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        let errors: Vec<Option<String>> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|e: &dgf_rules::audit::AuditEvent| {
                e.user == "clerk" && e.fingerprint.to_lowercase().contains("kill")
            })
            .map(|e| e.error)
            .collect();
        if errors.len() >= 3 {
            let want = ["1094", "1094", "1095"].map(|n| Some(n.to_owned()));
            assert_eq!(errors, want, "{text}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "KILL not audited: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A trusted stored procedure may be called by a masked role; the labelled columns its result
/// sets carry are still masked (the column definitions name them). They used to come back in
/// the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_procedure_results_are_masked() {
    let db = MyDb::create();
    setup(&db);
    let n = &db.name;
    my_admin(&format!("CREATE PROCEDURE {n}.p_all() SELECT id, name, email, ssn FROM {n}.customers ORDER BY id"));
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let cfg =
        format!("{}\n[guards]\ntrusted_functions = [\"p_all\"]\n", config(port, &db, &audit.display().to_string()));
    let _d = Dgf::start(&cfg, &[port]);
    let mut c = connect(port, &db, "analyst", "an_pw").await;
    let rows: Vec<(i32, String, String, String)> = c.query("CALL p_all()").await.unwrap();
    assert_eq!(rows.len(), 3);
    for (i, (id, name, email, ssn)) in rows.iter().enumerate() {
        assert_eq!((*id, name.as_str()), (i as i32 + 1, ["Alice", "Bob", "Carol"][i]));
        assert!(email != EMAILS[i] && email.contains("***@"), "{email}");
        assert!(ssn != SSNS[i] && !ssn.contains(&SSNS[i][7..]), "{ssn}");
    }
}

/// A statement whose upstream connection is lost mid-way still gets its audit record (error
/// 2013); before, it had none, and the chain verified without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_cut_off_by_a_lost_upstream_is_audited() {
    let (db, _dir, audit, _d, port) = start();
    let mut c = connect(port, &db, "clerk", "cl_pw").await;
    let running = tokio::spawn(async move { c.query_drop("SELECT SLEEP(20) AS cut_marker").await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let id = loop {
        let id = my_admin("SELECT id FROM information_schema.processlist WHERE info LIKE '%cut_marker%' AND info NOT LIKE '%processlist%'");
        if !id.trim().is_empty() || std::time::Instant::now() > deadline {
            break id;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    my_admin(&format!("KILL {}", id.trim()));
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), running).await.unwrap().unwrap();
    assert!(r.is_err(), "the statement must fail");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        let rec = text.lines().find(|l| l.contains("cut_marker"));
        if let Some(l) = rec {
            assert!(l.contains("\"error\":\"2013\""), "{l}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no audit record: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
