//! End-to-end governance on the Postgres route, where the catalog knows what statement text
//! does not: views, user functions and partitions over governed tables, and values computed
//! from partially masked columns.

mod common;

use common::pg_gov::*;

/// A view over masked columns or denied tables: the rules on the tables reach it. Before, an
/// analyst read clear emails through `CREATE VIEW v AS SELECT id, email FROM customers`, made by
/// the owner, because RowDescription reports the view's columns, not the table's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_and_functions_over_governed_tables_are_covered() {
    let env = setup();
    let conn = format!("host=127.0.0.1 port=5432 user=postgres dbname={}", env.db.name);
    common::psql(
        &conn,
        "CREATE TABLE payroll (id int, salary int); INSERT INTO payroll VALUES (1, 987654);
         CREATE VIEW v_contacts AS SELECT id, email FROM customers;
         CREATE VIEW v_lower AS SELECT id, lower(email) AS contact FROM customers;
         CREATE VIEW v_nested AS SELECT * FROM v_lower;
         CREATE MATERIALIZED VIEW m_contacts AS SELECT email FROM customers;
         CREATE VIEW v_names AS SELECT id, name FROM customers;
         CREATE VIEW v_labelled AS SELECT id, email FROM customers;
         CREATE VIEW v_renamed AS SELECT id, email AS contact FROM customers;
         CREATE VIEW v_pay AS SELECT count(*) AS n, sum(salary) AS total FROM payroll;
         CREATE FUNCTION f_cust() RETURNS SETOF customers LANGUAGE sql AS 'SELECT * FROM customers';
         CREATE FUNCTION f_mail() RETURNS text LANGUAGE sql AS 'SELECT email FROM customers LIMIT 1';
         CREATE FUNCTION f_ok_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM customers';
         CREATE VIEW v_func AS SELECT * FROM f_cust();
         CREATE TABLE people (id int, region text, email text) PARTITION BY LIST (region);
         CREATE TABLE people_eu PARTITION OF people FOR VALUES IN ('eu');
         INSERT INTO people VALUES (1, 'eu', 'alice@example.com');
         CREATE TABLE payroll_2024 () INHERITS (payroll); INSERT INTO payroll_2024 VALUES (2, 123456);",
    )
    .expect("views");
    let analyst = client(&env, "analyst").await;
    for (sql, view, rule) in [
        ("SELECT * FROM v_contacts", "public.v_contacts", "mask email for analysts"),
        ("SELECT v.email FROM v_contacts v", "public.v_contacts", "mask email for analysts"),
        ("SELECT upper(email) || 'x' FROM public.v_contacts", "public.v_contacts", "mask email for analysts"),
        ("select CONTACT from \"v_lower\"", "public.v_lower", "mask email for analysts"),
        ("SELECT * FROM v_nested", "public.v_nested", "mask email for analysts"),
        ("SELECT * FROM m_contacts", "public.m_contacts", "mask email for analysts"),
        // A label on a view column of another name does not cover the renamed one.
        ("SELECT contact FROM v_renamed", "public.v_renamed", "mask email for analysts"),
        ("SELECT r FROM v_renamed AS r", "public.v_renamed", "mask email for analysts"),
        ("SELECT total FROM public.v_pay", "public.v_pay", "analysts keep out of payroll"),
        ("SELECT x.n FROM (SELECT * FROM v_pay) x", "public.v_pay", "analysts keep out of payroll"),
        ("COPY (SELECT * FROM v_contacts) TO STDOUT", "public.v_contacts", "mask email for analysts"),
        ("WITH c AS (SELECT * FROM v_lower) SELECT contact FROM c", "public.v_lower", "mask email for analysts"),
        ("SELECT (SELECT max(email) FROM v_contacts)", "public.v_contacts", "mask email for analysts"),
        ("SELECT * FROM customers c JOIN v_contacts v USING (id)", "", "mask email for analysts"),
    ] {
        let e = simple_text(&analyst, sql).await.expect_err(sql);
        let msg = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
        assert_eq!(code(&e), "42501", "{sql}: {e}");
        assert!(msg.contains(view) && msg.contains(rule), "{sql}: {msg}");
    }
    // Partitions and inheriting tables carry their parents' rules.
    for (sql, rule) in [
        ("SELECT * FROM people_eu", "mask email for analysts"),
        ("SELECT upper(email) FROM public.people_eu", "mask email for analysts"),
        ("SELECT salary FROM payroll_2024", "analysts keep out of payroll"),
    ] {
        let e = simple_text(&analyst, sql).await.expect_err(sql);
        let msg = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
        assert!(code(&e) == "42501" && msg.contains("partition") && msg.contains(rule), "{sql}: {msg}");
    }
    assert_eq!(simple_text(&analyst, "SELECT id FROM people_eu").await.unwrap(), "1|\n");
    assert_eq!(simple_text(&analyst, "SELECT email FROM people").await.unwrap(), "a***@example.com|\n");
    // Functions defined in the database run with the server's rights: refused for this role
    // unless trusted, also inside a view.
    for sql in ["SELECT * FROM f_cust()", "SELECT (f_cust()).email", "SELECT public.F_MAIL()", "SELECT * FROM v_func"] {
        let e = simple_text(&analyst, sql).await.expect_err(sql);
        let msg = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
        assert_eq!(code(&e), "42501", "{sql}: {e}");
        assert!(msg.contains("f_") && msg.contains("trusted_functions"), "{sql}: {msg}");
    }
    assert_eq!(simple_text(&analyst, "SELECT f_ok_count()").await.unwrap(), "2|\n");
    // The extended protocol is refused the same way (at Parse).
    let e = analyst.query("SELECT email FROM v_contacts WHERE id = $1", &[&1i32]).await.unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    // Views over clean columns pass, and so do the clean columns of a view over masked ones;
    // a view whose columns are labelled is masked by its labels.
    assert_eq!(simple_text(&analyst, "SELECT * FROM v_names ORDER BY id").await.unwrap(), "1|alice|\n2|bob|\n");
    assert_eq!(simple_text(&analyst, "SELECT id FROM v_contacts ORDER BY 1").await.unwrap(), "1|\n2|\n");
    assert_eq!(simple_text(&analyst, "SELECT count(*) FROM v_nested").await.unwrap(), "2|\n");
    let t = simple_text(&analyst, "SELECT * FROM v_labelled ORDER BY id").await.unwrap();
    assert!(leaked(&t).is_none() && t.starts_with("1|a***@example.com|"), "{t}");
    // Roles without those rules read every view in the clear.
    let admin = client(&env, "admin").await;
    let t = simple_text(&admin, "SELECT email FROM v_contacts ORDER BY id").await.unwrap();
    assert_eq!(t, "alice@example.com|\nbob@example.org|\n");
    assert_eq!(simple_text(&admin, "SELECT total FROM v_pay").await.unwrap(), "1111110|\n", "payroll and its child");
    assert_eq!(simple_text(&admin, "SELECT f_mail()").await.unwrap(), "alice@example.com|\n");
}

/// Masks that keep pieces of a value (`partial`, `email`) or its equalities (`hash`) hide
/// nothing once the query moves the hidden pieces into the kept window: before, `partial
/// (keep_last=4)` on `reverse(ssn)` showed the SSN's first digits, `left(card, 8)` digits 5-8,
/// and `substr(ssn, 1, 3) || substr(ssn, 5, 2)` the middle group. A value computed from such a
/// column is now NULL; a plain reference keeps its mask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computed_values_hide_what_revealing_masks_keep() {
    let env = setup();
    let analyst = client(&env, "analyst").await;
    for sql in [
        "SELECT reverse(ssn) FROM customers",
        "SELECT left(card, 8), right(card, 8) FROM customers",
        "SELECT substr(ssn, 1, 3) || substr(ssn, 5, 2) FROM customers",
        "SELECT lpad(ssn, 40, 'x') FROM customers",
        "SELECT string_agg(card, ',') FROM customers",
        "SELECT md5(ssn) FROM customers",
        "SELECT substr(email, 3) FROM customers",
        "SELECT e FROM (SELECT reverse(ssn) AS e FROM customers) s",
    ] {
        let t = simple_text(&analyst, sql).await.expect(sql);
        assert!(t.lines().all(|l| l.split('|').all(|v| v.is_empty() || v == "NULL")), "{sql}: {t}");
    }
    // Plain references keep their masks, through subqueries too.
    let t = simple_text(&analyst, "SELECT s FROM (SELECT ssn AS s FROM customers) x ORDER BY 1").await.unwrap();
    assert_eq!(t, "*******6789|\n*******4321|\n");
    // Redacting masks hide everything anyway: a computed value takes them as they are.
    assert_eq!(simple_text(&analyst, "SELECT age + 1 FROM customers WHERE id = 1").await.unwrap(), "NULL|\n");
}

/// Queries on the system catalogs (psql's `\d`, an ORM's reflection) are answered from
/// relations the masking catalog leaves out; they must not make every next statement load
/// the whole catalog again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_catalog_queries_keep_the_catalog_cached() {
    let env = setup();
    let c = analyst_after_first_load(&env).await;
    let loads = || catalog_loads(&env);
    for _ in 0..3 {
        let rel = simple_text(&c, "SELECT relname FROM pg_catalog.pg_class WHERE relname = 'customers'").await;
        assert_eq!(rel.unwrap().trim(), "customers|");
        let cols = simple_text(&c, "SELECT column_name FROM information_schema.columns WHERE column_name = 'ssn'");
        assert_eq!(cols.await.unwrap().trim(), "ssn|");
        // A result that mixes masked columns with system catalog columns is planned column
        // by column: the catalog's column is not a sign of a stale catalog.
        let q = "SELECT c.email, r.relname FROM customers c \
                 JOIN pg_catalog.pg_class r ON r.relname = 'customers' WHERE c.id = 1";
        let mixed = simple_text(&c, q).await.unwrap();
        assert!(!mixed.contains("alice@example.com") && mixed.contains("|customers|"), "{mixed}");
    }
    assert_eq!(loads(), 1, "system catalog queries made dgf reload its catalog");
}

/// A view made outside dgf after dgf loaded its catalog: before, the first statements on it
/// (until the catalog was reloaded) read masked data in the clear, because the view was not in
/// the catalog and its computed column had no table to mask. Now a governed statement naming a
/// relation the catalog lacks loads the catalog again first, once per name and load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_made_outside_dgf_after_the_catalog_loaded_are_covered() {
    let env = setup();
    let analyst = analyst_after_first_load(&env).await;
    let loads = || catalog_loads(&env);
    // A name no relation has: one reload, then remembered as missing.
    for _ in 0..3 {
        let e = simple_text(&analyst, "SELECT * FROM v_late").await.expect_err("no such view yet");
        assert_eq!(code(&e), "42P01", "{e}");
    }
    assert_eq!(loads(), 2, "a missing name reloads the catalog once");
    let conn = format!("host=127.0.0.1 port=5432 user=postgres dbname={}", env.db.name);
    common::psql(
        &conn,
        "CREATE VIEW v_late2 AS SELECT id, lower(email) AS contact FROM customers;
         CREATE VIEW \"V Mixed\" AS SELECT id, email AS contact FROM customers;",
    )
    .expect("views made outside dgf");
    for sql in [
        "SELECT contact FROM v_late2",
        "SELECT x.contact FROM public.v_late2 x",
        "SELECT * FROM \"V Mixed\" ORDER BY 1",
    ] {
        let e = simple_text(&analyst, sql).await.expect_err(sql);
        let msg = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
        assert_eq!(code(&e), "42501", "{sql}: {e}");
        assert!(msg.contains("mask email for analysts"), "{sql}: {msg}");
    }
    assert_eq!(simple_text(&analyst, "SELECT id FROM v_late2 ORDER BY 1").await.unwrap(), "1|\n2|\n");
    assert_eq!(loads(), 3, "known views do not reload the catalog again");
}

/// A session that repeats a statement checks it against the views once per catalog load and
/// policy (a memo of the last shape that passed). The memo must not outlive the catalog it was
/// made with: here a view is redefined outside dgf to read a masked column, DDL through dgf
/// drops the cached catalog, and the same statement on the same session is then refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_check_that_passed_is_redone_with_the_next_catalog() {
    let env = setup();
    let conn = format!("host=127.0.0.1 port=5432 user=postgres dbname={}", env.db.name);
    common::psql(&conn, "CREATE VIEW v_memo AS SELECT id, name AS contact FROM customers;").expect("view");
    let analyst = client(&env, "analyst").await;
    let admin = client(&env, "admin").await;
    for id in [1, 2, 1] {
        let sql = format!("SELECT contact FROM v_memo WHERE id = {id}");
        let got = simple_text(&analyst, &sql).await.expect("a view over clean columns reads");
        assert_eq!(got, if id == 1 { "alice|\n" } else { "bob|\n" });
    }
    common::psql(&conn, "CREATE OR REPLACE VIEW v_memo AS SELECT id, email AS contact FROM customers;")
        .expect("view redefined outside dgf");
    simple_text(&admin, "CREATE TABLE memo_ddl (i int)").await.expect("DDL through dgf drops the catalog");
    let e = simple_text(&analyst, "SELECT contact FROM v_memo WHERE id = 1").await.expect_err("now reads email");
    assert_eq!(code(&e), "42501", "{e}");
    let msg = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
    assert!(msg.contains("mask email for analysts"), "{msg}");
}

/// An analyst session whose first statement (a masked read) made dgf load the catalog once.
async fn analyst_after_first_load(env: &Env) -> tokio_postgres::Client {
    let analyst = client(env, "analyst").await;
    let masked = simple_text(&analyst, "SELECT email FROM customers WHERE id = 1").await.unwrap();
    assert!(!masked.contains("alice@example.com") && leaked(&masked).is_none(), "{masked}");
    assert_eq!(catalog_loads(env), 1);
    analyst
}

/// `dgf_catalog_loads_total` of the route: how often dgf loaded the Postgres catalog.
fn catalog_loads(env: &Env) -> u64 {
    let (status, body) = env.dgf.admin("GET", "/metrics");
    assert_eq!(status, 200);
    let line = body.lines().find(|l| l.starts_with("dgf_catalog_loads_total{route=\"pg\"}"));
    line.and_then(|l| l.rsplit(' ').next()).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)
}
