//! Policy evaluation tests: the brief's example, precedence, guards, shadow, fail-closed masking.

use super::*;
use crate::sql::{analyze, Dialect};

const EXAMPLE: &str = r#"
[[labels]]
name = "email"
match = ["public.customers.email", "mongodb:app.users.email", "redis:user:*#email"]

[[labels]]
name = "ssn"
match = ["customers.ssn"]

[[rules]]
name = "analysts read only"
roles = ["analyst"]
action = "deny"
statements = ["insert", "update", "delete", "ddl"]

[[rules]]
name = "mask email for analysts"
roles = ["analyst"]
action = "mask"
labels = ["email"]
with = "email"

[[rules]]
name = "mask ssn for analysts"
roles = ["analyst"]
action = "mask"
labels = ["ssn"]
with = "partial(keep_last=4)"

[[rules]]
name = "nobody drops or truncates"
action = "deny"
statements = ["drop", "truncate"]

[[rules]]
name = "ops may truncate scratch"
roles = ["ops"]
action = "allow"
statements = ["truncate"]
tables = ["scratch.*"]

[[rules]]
name = "cap analyst rows"
roles = ["analyst"]
action = "limit"
max_rows = 100

[[rules]]
name = "watch orders"
action = "deny"
tables = ["orders"]
mode = "shadow"
"#;

fn policy(extra: &str) -> Policy {
    let cfg = dgf_config::parse_str(&format!("{EXAMPLE}{extra}"), "t.toml", &|_| None).expect("config");
    Policy::from_config(&cfg).expect("policy")
}

fn check(p: &Policy, roles: &[&str], sql: &str) -> SqlVerdict {
    let roles: Vec<String> = roles.iter().map(|s| (*s).to_owned()).collect();
    let view = p.view("pg", &roles);
    check_sql(&view, &analyze(sql, Dialect::Postgres))
}

fn denied_by(v: &SqlVerdict) -> Option<&str> {
    v.verdict.deny.as_ref().map(|d| &*d.rule)
}

#[test]
fn example_rules() {
    let p = policy("");
    assert_eq!(denied_by(&check(&p, &["analyst"], "INSERT INTO t VALUES (1)")), Some("analysts read only"));
    assert_eq!(denied_by(&check(&p, &["analyst"], "create table x (a int)")), Some("analysts read only"));
    assert_eq!(denied_by(&check(&p, &["app"], "INSERT INTO t VALUES (1)")), None);
    assert_eq!(denied_by(&check(&p, &["app"], "DROP TABLE t")), Some("nobody drops or truncates"));
    assert_eq!(denied_by(&check(&p, &["app"], "TRUNCATE scratch.tmp")), Some("nobody drops or truncates"));
    // allow carves out an exception wherever it is written.
    assert_eq!(denied_by(&check(&p, &["ops"], "TRUNCATE scratch.tmp")), None);
    assert_eq!(denied_by(&check(&p, &["ops"], "TRUNCATE public.tmp")), Some("nobody drops or truncates"));
    // An allow rule's schema-qualified glob does not widen to unqualified names...
    assert_eq!(denied_by(&check(&p, &["ops"], "TRUNCATE tmp")), Some("nobody drops or truncates"));
    // ...while a deny rule's does catch them.
    let q = policy("[[rules]]\nname = \"no patients\"\naction = \"deny\"\ntables = [\"public.patients\"]\n");
    assert_eq!(denied_by(&check(&q, &["app"], "SELECT * FROM patients")), Some("no patients"));
    assert_eq!(denied_by(&check(&q, &["app"], "SELECT * FROM public.patients")), Some("no patients"));
    assert_eq!(denied_by(&check(&q, &["app"], "SELECT * FROM other.patients")), None);
    let v = check(&p, &["analyst"], "SELECT name FROM customers");
    assert_eq!(v.verdict.row_limit, Some(100));
    assert!(v.needs_masking);
    assert!(!check(&p, &["app"], "SELECT name FROM customers").needs_masking);
}

#[test]
fn shadow_rules_report_only() {
    let p = policy("");
    let v = check(&p, &["app"], "SELECT * FROM orders");
    assert!(v.verdict.deny.is_none());
    let id = p.rule_names().iter().position(|n| &**n == "watch orders").unwrap();
    assert_eq!(v.verdict.shadow, vec![id]);
}

#[test]
fn guards_default_on_and_switchable() {
    let p = policy("");
    assert_eq!(denied_by(&check(&p, &["app"], "SELECT pg_read_file('/etc/passwd')")), Some("guard:functions"));
    assert_eq!(denied_by(&check(&p, &["app"], "select PG_CATALOG.pg_read_file('x')")), Some("guard:functions"));
    // Functions that run SQL given as text: what they read is invisible to table rules.
    for q in [
        "select query_to_xml('select * from payroll', true, false, '')",
        "SELECT pg_catalog.table_to_xml('payroll', true, false, '')",
        "select xpath('/r', database_to_xml(true, false, ''))",
        "select * from ts_stat('select v from payroll')",
    ] {
        assert_eq!(denied_by(&check(&p, &["app"], q)), Some("guard:functions"), "{q}");
    }
    assert_eq!(denied_by(&check(&p, &["app"], "COPY t TO PROGRAM 'sh'")), Some("guard:copy_program"));
    assert_eq!(denied_by(&check(&p, &["app"], "SET ROLE postgres")), Some("guard:set_role"));
    assert_eq!(denied_by(&check(&p, &["app"], "SET SESSION AUTHORIZATION postgres")), Some("guard:set_role"));
    assert_eq!(denied_by(&check(&p, &["app"], "DELETE FROM t")), None);
    let p = policy("[guards]\ndelete_without_where = true\nupdate_without_where = true\nmulti_statement = true\nddl = true\nexempt_roles = [\"dba\"]\n");
    assert_eq!(denied_by(&check(&p, &["app"], "DELETE FROM t")), Some("guard:delete_without_where"));
    assert_eq!(denied_by(&check(&p, &["app"], "DELETE FROM t WHERE id = 1")), None);
    assert_eq!(denied_by(&check(&p, &["app"], "update t set a = 1")), Some("guard:update_without_where"));
    assert_eq!(denied_by(&check(&p, &["app"], "SELECT 1; SELECT 2")), Some("guard:multi_statement"));
    assert_eq!(denied_by(&check(&p, &["app"], "CREATE INDEX i ON t (a)")), Some("guard:ddl"));
    assert_eq!(denied_by(&check(&p, &["dba"], "DELETE FROM t")), None);
}

#[test]
fn parse_errors_deny_by_default() {
    let p = policy("");
    assert_eq!(denied_by(&check(&p, &["app"], "SELEC 1")), Some("on_parse_error"));
    let p = policy("[server]\non_parse_error = \"allow\"\n");
    assert_eq!(denied_by(&check(&p, &["app"], "SELEC 1")), None);
    // A masked role still fails closed.
    assert_eq!(denied_by(&check(&p, &["analyst"], "SELEC 1")), Some("mask email for analysts"));
}

#[test]
fn masking_fails_closed_where_lineage_stops() {
    let p = policy("");
    let a = ["analyst"];
    for sql in [
        "INSERT INTO notes SELECT email FROM customers",
        "CREATE TABLE leak AS SELECT email FROM customers",
        "COPY customers TO STDOUT",
        "COPY (SELECT email FROM customers) TO STDOUT",
        "FETCH ALL FROM c",
        "EXECUTE s1",
    ] {
        assert!(check(&p, &a, sql).verdict.deny.is_some(), "{sql} must be denied");
    }
    for sql in ["SELECT email FROM customers", "SELECT * FROM customers", "SELECT lower(email) FROM customers c"] {
        let v = check(&p, &a, sql);
        assert!(v.verdict.deny.is_none(), "{sql}: {:?}", v.verdict.deny);
        assert!(v.needs_masking, "{sql}");
    }
    // Not a masked role: nothing to fail closed on.
    assert!(check(&p, &["app"], "COPY customers TO STDOUT").verdict.deny.is_none());
}

#[test]
fn lineage_masks_by_position() {
    let p = policy("");
    let view = p.view("pg", &["analyst".to_owned()]);
    let a = analyze("SELECT id, upper(email) AS e, c.ssn FROM customers c", Dialect::Postgres);
    let m = sql_output_masks(&view, &a.statements[0], 3);
    assert!(m[0].is_none());
    assert_eq!(m[1].as_ref().map(|r| &*r.rule), Some("mask email for analysts"));
    assert_eq!(m[2].as_ref().map(|r| &*r.rule), Some("mask ssn for analysts"));
    // Around a wildcard: the first and last columns map one to one.
    let a = analyze("SELECT id, *, 1 AS one FROM customers", Dialect::Postgres);
    let m = sql_output_masks(&view, &a.statements[0], 6);
    assert!(m[0].is_none());
    assert!(m[1].is_some() && m[4].is_some());
    assert!(m[5].is_none());
    // Unions: every arm counts.
    let a = analyze("SELECT name FROM staff UNION SELECT email FROM customers", Dialect::Postgres);
    let m = sql_output_masks(&view, &a.statements[0], 1);
    assert!(m[0].is_some());
}

#[test]
fn star_columns_of_base_tables_are_known_by_position() {
    let st = |q: &str, n: usize| {
        let a = analyze(q, Dialect::Mysql);
        sql_output_star_tables(&a.statements[0], n)
            .into_iter()
            .map(|t| t.map(|v| v.into_iter().map(|(s, t)| format!("{s:?}.{t}")).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    };
    let c = Some(vec!["None.customers".to_string()]);
    assert_eq!(st("SELECT * FROM customers", 3), vec![c.clone(); 3]);
    assert_eq!(st("SELECT id, *, 1 FROM customers", 5), vec![None, c.clone(), c.clone(), c, None]);
    let both = Some(vec!["Some(\"db\").customers".to_string(), "None.staff".to_string()]);
    assert_eq!(st("SELECT c.*, s.* FROM db.customers c JOIN staff s", 2), vec![both.clone(), both]);
    // A star over a derived table that renames columns is not a star of base tables.
    assert_eq!(st("SELECT * FROM (SELECT id, email AS name FROM customers) AS customers", 2), vec![None, None]);
    assert_eq!(st("SELECT *, email FROM customers", 4)[3], None);
    // More columns named than the result has: no position is trusted.
    assert_eq!(st("SELECT id, *, name FROM customers", 1), vec![None]);
}

#[test]
fn views_are_cached_and_role_scoped() {
    let p = policy("");
    let a = p.view("pg", &["analyst".to_owned()]);
    let b = p.view("pg", &["analyst".to_owned()]);
    assert!(Arc::ptr_eq(&a, &b));
    assert!(a.masks_anything());
    assert!(!p.view("pg", &["app".to_owned()]).masks_anything());
    let m = a.mask_for(&FieldRef { ns: Namespace::Redis, object: "user:7", field: Some("email") });
    assert_eq!(m.map(|r| r.rule.to_string()), Some("mask email for analysts".to_owned()));
}

#[test]
fn statement_logs_fail_closed_for_masked_roles() {
    let p = policy("");
    let analyst = p.view("pg", &["analyst".to_owned()]);
    let deny = |sql: &str, d: Dialect| check_sql(&analyst, &analyze(sql, d)).verdict.deny;
    for sql in [
        "SELECT query FROM pg_stat_activity",
        "SELECT * FROM pg_catalog.pg_stat_activity",
        "SELECT query FROM pg_stat_statements",
        "SELECT * FROM pg_stat_get_activity(NULL)",
        "SELECT most_common_vals FROM pg_stats WHERE tablename = 'customers'",
        "SELECT statement FROM pg_prepared_statements",
        "SELECT statement FROM pg_catalog.pg_cursors",
        "SELECT pg_stat_get_backend_activity(s) FROM pg_stat_get_backend_idset() s",
    ] {
        let d = deny(sql, Dialect::Postgres);
        assert!(d.as_ref().is_some_and(|d| d.message.contains("other sessions")), "{sql}: {d:?}");
    }
    for sql in [
        "SHOW FULL PROCESSLIST",
        "SELECT info FROM information_schema.processlist",
        "SELECT SQL_TEXT FROM performance_schema.events_statements_history",
        "SELECT PROCESSLIST_INFO FROM performance_schema.threads",
        "SELECT trx_query FROM information_schema.INNODB_TRX",
        "SELECT lock_data FROM information_schema.innodb_locks",
        "SELECT min_value, max_value, histogram FROM mysql.column_stats",
        "SELECT argument FROM mysql.general_log",
        "SELECT sql_text FROM mysql.slow_log",
    ] {
        let d = deny(sql, Dialect::Mysql);
        assert!(d.as_ref().is_some_and(|d| d.message.contains("other sessions")), "{sql}: {d:?}");
    }
    // A user table that shares a name with a performance_schema table is not one.
    assert!(deny("SELECT title FROM threads", Dialect::Mysql).is_none());
    // Roles without masks read them (monitoring).
    assert!(check(&p, &["app"], "SELECT query FROM pg_stat_activity").verdict.deny.is_none());
}

#[test]
fn schema_changes_to_masked_tables_fail_closed_for_masked_roles() {
    let p = policy("");
    let analyst = p.view("my", &["analyst".to_owned()]);
    let deny = |sql: &str| check_sql(&analyst, &analyze(sql, Dialect::Mysql)).verdict.deny;
    // The analyst of EXAMPLE may not run DDL at all; give a masked role that may.
    assert!(deny("ALTER TABLE customers ADD COLUMN s2 VARCHAR(20) AS (ssn) VIRTUAL").is_some());
    let p = policy("\n[[rules]]\nname = \"mask email for writers\"\nroles = [\"writer\"]\naction = \"mask\"\nlabels = [\"email\"]\nwith = \"redact\"\n");
    let writer = p.view("my", &["writer".to_owned()]);
    let d = |sql: &str| check_sql(&writer, &analyze(sql, Dialect::Mysql)).verdict.deny.map(|d| d.message);
    for sql in
        ["ALTER TABLE customers ADD COLUMN e2 VARCHAR(200) AS (email) VIRTUAL", "CREATE INDEX i ON customers (email)"]
    {
        assert!(d(sql).is_some_and(|m| m.contains("schema changes")), "{sql}");
    }
    assert_eq!(d("ALTER TABLE orders ADD COLUMN note TEXT"), None);
    assert_eq!(d("CREATE TABLE scratch (id INT)"), None);
}

#[test]
fn denials_name_the_object_the_rule_matched_and_caps_name_their_rule() {
    let p = policy(
        "\n[[rules]]\nname = \"keep out of payroll\"\nroles = [\"hr\"]\naction = \"deny\"\ntables = [\"mongodb:app.payroll\"]\n\
         [[rules]]\nname = \"ten\"\nroles = [\"hr\"]\naction = \"limit\"\nmax_rows = 10\n\
         [[rules]]\nname = \"three\"\nroles = [\"hr\"]\naction = \"limit\"\nmax_rows = 3\n",
    );
    let hr = p.view("m", &["hr".to_owned()]);
    // `aggregate` on orders joining payroll: the message names payroll, the collection the
    // rule protects, not the aggregated one.
    let objects = ["mongodb:app.orders".to_owned(), "mongodb:app.payroll".to_owned()];
    let v = hr.check(&Action { kinds: &["aggregate", "read"], objects: &objects, ..Default::default() });
    let m = v.deny.map(|d| d.message).unwrap_or_default();
    assert!(m.contains("aggregate on mongodb:app.payroll is not allowed"), "{m}");
    // The smallest cap wins and names its rule.
    let v = hr.check(&Action { kinds: &["find", "read"], objects: &objects[..1], ..Default::default() });
    assert_eq!(v.row_limit, Some(3));
    assert_eq!(v.row_limit_rule.map(|id| &*p.rule_names()[id]), Some("three"));
}

#[test]
fn gathering_aggregates_are_refused_under_a_row_limit() {
    let p = policy("");
    // EXAMPLE caps analysts at 100 rows.
    for sql in [
        "SELECT array_agg(c) FROM customers c",
        "SELECT json_agg(name) FROM customers",
        "SELECT pg_catalog.string_agg(name, ',') FROM customers",
        "SELECT ARRAY(SELECT name FROM customers)",
        "SELECT array_to_string(ARRAY(SELECT c::text FROM customers c), ';')",
        "SELECT 1 WHERE 1 = (SELECT cardinality(ARRAY(SELECT email FROM customers)))",
    ] {
        let v = check(&p, &["analyst"], sql);
        assert_eq!(denied_by(&v), Some("cap analyst rows"), "{sql}");
        assert!(v.verdict.deny.as_ref().is_some_and(|d| d.message.contains("gathers rows")), "{sql}");
    }
    let my = |sql: &str| {
        let view = p.view("my", &["analyst".to_owned()]);
        check_sql(&view, &analyze(sql, Dialect::Mysql))
    };
    assert_eq!(denied_by(&my("SELECT GROUP_CONCAT(name) FROM customers")), Some("cap analyst rows"));
    // One value per row, and roles without a cap, are not affected.
    assert_eq!(denied_by(&check(&p, &["analyst"], "SELECT count(*), max(name) FROM customers")), None);
    assert_eq!(denied_by(&check(&p, &["app"], "SELECT array_agg(name) FROM customers")), None);
    assert_eq!(denied_by(&check(&p, &["analyst"], "SELECT ARRAY[name, name] FROM customers")), None);
}
