//! Output-column lineage: the masking layer's soundness depends on these.

use super::*;

#[test]
fn aliases_of_columns_and_tables() {
    let i = pg("SELECT c.email AS e, c.name FROM customers AS c");
    assert_eq!(i.outputs[0].name, "e");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
    assert_eq!(out(&i, 1), vec![col("customers", "name")]);
    let i = pg("SELECT public.customers.email FROM public.customers");
    assert_eq!(out(&i, 0), vec![scol("public", "customers", "email")]);
}

#[test]
fn expressions_casts_and_nested_functions() {
    let i = pg("SELECT lower(email), email::text, substr(c.email, 1, 3) || 'x', upper(trim(both ' ' from email)) FROM customers c");
    for k in 0..4 {
        assert_eq!(out(&i, k), vec![col("customers", "email")], "output {k}");
    }
    let i = pg("SELECT CASE WHEN vip THEN email ELSE phone END, COALESCE(email, phone) FROM customers");
    assert_eq!(out(&i, 0), sorted(vec![col("customers", "vip"), col("customers", "email"), col("customers", "phone")]));
    assert_eq!(out(&i, 1), sorted(vec![col("customers", "email"), col("customers", "phone")]));
    let i = pg("SELECT data->>'email', (data #> '{a,b}')::text FROM events");
    assert_eq!(out(&i, 0), vec![col("events", "data")]);
    assert_eq!(out(&i, 1), vec![col("events", "data")]);
}

#[test]
fn constants_have_no_sources() {
    let i = pg("SELECT 1, 'x', now(), current_user, count(*) FROM customers");
    for k in 0..5 {
        assert!(out(&i, k).is_empty(), "output {k}: {:?}", out(&i, k));
    }
}

#[test]
fn unqualified_column_in_join_takes_every_candidate() {
    let i = pg("SELECT email FROM customers c JOIN orders o ON o.cid = c.id");
    assert_eq!(out(&i, 0), sorted(vec![col("customers", "email"), col("orders", "email")]));
    let i = pg("SELECT id FROM customers JOIN orders USING (id)");
    assert_eq!(out(&i, 0), sorted(vec![col("customers", "id"), col("orders", "id")]));
}

#[test]
fn derived_tables() {
    let i = pg("SELECT s.e FROM (SELECT email AS e FROM customers) s");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
    let i = pg("SELECT x FROM (SELECT email FROM customers) s(x)");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
    let i = pg("SELECT x.email, x.id FROM (SELECT * FROM customers) x");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
    assert_eq!(out(&i, 1), vec![col("customers", "id")]);
    let i = pg("SELECT * FROM (SELECT * FROM customers) x");
    assert!(i.outputs[0].wildcard);
    assert_eq!(out(&i, 0), vec![all("customers")]);
    // A computed output name is not trusted: the lookup takes every uncertain column.
    let i = pg("SELECT lower FROM (SELECT lower(email) FROM customers) s");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
    let i = pg("SELECT e FROM (SELECT lower(email) FROM customers) s(e)");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
}

#[test]
fn renamed_star_keeps_every_source() {
    let i = pg("SELECT a FROM (SELECT * FROM customers) s(a, b)");
    assert_eq!(out(&i, 0), vec![all("customers")]);
    let i = pg("SELECT a FROM customers AS c(a)");
    assert_eq!(out(&i, 0), vec![all("customers")]);
}

#[test]
fn ctes_plain_and_chained() {
    let i = pg("WITH x AS (SELECT email AS e FROM customers), y AS (SELECT e AS f FROM x) SELECT f FROM y");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
    assert_eq!(tables(&i), vec![(None, "customers", false)]);
    let i = pg("WITH x(a) AS (SELECT email FROM customers) SELECT a FROM x");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
    // A CTE shadows a table of the same name; a qualified name does not.
    let i = pg("WITH customers AS (SELECT 1 AS email) SELECT email FROM customers");
    assert!(out(&i, 0).is_empty());
    assert!(i.tables.is_empty());
    let i = pg("WITH customers AS (SELECT 1 AS email) SELECT email FROM public.customers");
    assert_eq!(out(&i, 0), vec![scol("public", "customers", "email")]);
}

#[test]
fn recursive_cte_unions_both_arms() {
    let i = pg("WITH RECURSIVE r(n, e) AS (SELECT 1, email FROM customers UNION ALL SELECT n + 1, e FROM r WHERE n < 3) SELECT e FROM r");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
    let i = pg(
        "WITH RECURSIVE r(n, v) AS (SELECT 1, 'x' UNION ALL SELECT r.n + 1, o.note FROM r JOIN orders o ON o.id = r.n) \
         SELECT v, n FROM r",
    );
    assert_eq!(out(&i, 0), vec![col("orders", "note")]);
    assert!(out(&i, 1).is_empty());
    // The value flowing around the loop picks up sources from later iterations too.
    let i =
        pg("WITH RECURSIVE r(a, b) AS (SELECT email, 'x' FROM customers UNION ALL SELECT b, a FROM r) SELECT b FROM r");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
}

#[test]
fn set_operations_union_positionally() {
    let i = pg("SELECT email, 1 FROM customers UNION SELECT name, id FROM staff");
    assert_eq!(out(&i, 0), sorted(vec![col("customers", "email"), col("staff", "name")]));
    assert_eq!(out(&i, 1), vec![col("staff", "id")]);
    let i = pg("SELECT id FROM a INTERSECT SELECT id FROM b EXCEPT SELECT id FROM c");
    assert_eq!(out(&i, 0).len(), 3);
    // Unaligned arms (a `*` of unknown width): everything from the right arm everywhere.
    let i = pg("SELECT * FROM customers UNION ALL SELECT a, b FROM t");
    assert_eq!(out(&i, 0), sorted(vec![all("customers"), col("t", "a"), col("t", "b")]));
}

#[test]
fn scalar_and_correlated_subqueries() {
    let i = pg("SELECT (SELECT c.email FROM customers c WHERE c.id = o.cid) FROM orders o");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
    // Unqualified name inside a correlated subquery: inner and outer base tables both count.
    let i = pg("SELECT (SELECT email FROM orders LIMIT 1) FROM customers");
    assert_eq!(out(&i, 0), sorted(vec![col("orders", "email"), col("customers", "email")]));
    // `cid` might also be an outer reference to customers: both are reported.
    let i = pg("SELECT id IN (SELECT cid FROM orders) FROM customers");
    let s = out(&i, 0);
    assert!(s.contains(&col("customers", "id")) && s.contains(&col("orders", "cid")));
    let i = pg("SELECT EXISTS (SELECT 1 FROM orders) FROM customers");
    assert!(out(&i, 0).is_empty());
    assert_eq!(tables(&i), vec![(None, "customers", false), (None, "orders", false)]);
}

#[test]
fn whole_row_references() {
    let i = pg("SELECT c FROM customers c");
    assert!(out(&i, 0).contains(&all("customers")));
    for q in [
        "SELECT row_to_json(c) FROM customers c",
        "SELECT to_jsonb(c.*) FROM customers c",
        "SELECT json_agg(c) FROM customers c",
    ] {
        let i = pg(q);
        assert!(i.outputs[0].is_opaque(), "{q}");
    }
    let i = pg("SELECT jsonb_agg(s) FROM (SELECT email FROM customers) s");
    assert!(i.outputs[0].is_opaque() && out(&i, 0).contains(&col("customers", "email")));
    // Counting rows does not reveal their values.
    assert!(!pg("SELECT count(c) FROM customers c").outputs[0].is_opaque());
}

#[test]
fn star_across_joins() {
    let i = pg("SELECT * FROM customers c JOIN orders o ON o.cid = c.id");
    assert_eq!(i.outputs.len(), 2);
    assert_eq!(out(&i, 0), vec![all("customers")]);
    assert_eq!(out(&i, 1), vec![all("orders")]);
    let i = pg("SELECT o.*, c.email FROM customers c, orders o");
    assert_eq!(out(&i, 0), vec![all("orders")]);
    assert!(i.outputs[0].wildcard && !i.outputs[1].wildcard);
    // USING / NATURAL merge columns: one wildcard standing for both tables.
    for q in ["SELECT * FROM customers JOIN orders USING (id)", "SELECT * FROM customers NATURAL JOIN orders"] {
        let i = pg(q);
        assert_eq!(i.outputs.len(), 1, "{q}");
        assert_eq!(out(&i, 0), sorted(vec![all("customers"), all("orders")]), "{q}");
    }
}

#[test]
fn returning_star_and_expressions() {
    let i = pg("UPDATE customers SET email = lower(email) RETURNING *, upper(name)");
    assert!(i.outputs[0].wildcard);
    assert_eq!(out(&i, 0), vec![all("customers")]);
    assert_eq!(out(&i, 1), vec![col("customers", "name")]);
    assert_eq!(i.written_sources, vec![col("customers", "email")]);
    let i = pg("DELETE FROM customers c WHERE id = 1 RETURNING c.email");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
}

#[test]
fn window_functions_and_aggregates() {
    let i = pg(
        "SELECT lag(email) OVER (PARTITION BY region ORDER BY ts), count(email), max(email), count(*) FROM customers",
    );
    let w = out(&i, 0);
    assert!(w.contains(&col("customers", "email")) && w.contains(&col("customers", "region")));
    assert_eq!(out(&i, 1), vec![col("customers", "email")]);
    assert_eq!(out(&i, 2), vec![col("customers", "email")]);
    assert!(out(&i, 3).is_empty());
    let i = pg("SELECT string_agg(email, ',' ORDER BY name) FROM customers");
    assert_eq!(out(&i, 0), sorted(vec![col("customers", "email"), col("customers", "name")]));
}

#[test]
fn unknown_functions_are_opaque() {
    let i = pg("SELECT my_func(id), get_secret(), public.lower(email) FROM customers");
    for k in 0..3 {
        assert!(i.outputs[k].is_opaque(), "output {k}");
    }
    assert!(out(&i, 0).contains(&col("customers", "id")));
    let i = pg("SELECT query_to_xml('select email from customers', true, false, '')");
    assert!(i.outputs[0].is_opaque());
    assert_eq!(i.functions, vec!["query_to_xml".to_string()]);
}

#[test]
fn values_and_table_statements() {
    let i = pg("VALUES (1, 'a'), (2, 'b')");
    assert_eq!(i.kind, StatementKind::Select);
    assert_eq!(i.outputs.len(), 2);
    assert!(out(&i, 0).is_empty());
    let i = pg("TABLE customers");
    assert_eq!(i.kind, StatementKind::Select);
    assert!(i.outputs[0].wildcard);
    assert_eq!(out(&i, 0), vec![all("customers")]);
    let i = pg("SELECT * FROM (VALUES (1, 'x')) v(a, b) JOIN customers c ON c.id = v.a");
    assert_eq!(i.outputs.len(), 3);
    assert_eq!(out(&i, 2), vec![all("customers")]);
}

#[test]
fn table_functions_and_lateral() {
    let i = pg("SELECT g FROM generate_series(1, 3) g");
    assert!(out(&i, 0).is_empty());
    assert!(i.tables.is_empty());
    let i = pg("SELECT e.value FROM customers c, jsonb_each(c.data) e");
    assert_eq!(out(&i, 0), vec![col("customers", "data")]);
    let i = pg("SELECT s.x FROM customers c, LATERAL (SELECT c.email AS x) s");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
    let i = pg("SELECT u FROM customers c, unnest(c.tags) AS u");
    assert!(out(&i, 0).contains(&col("customers", "tags")));
}

#[test]
fn unresolvable_references_fail_closed() {
    let i = pg("SELECT x.email FROM (SELECT 1 AS a) s");
    assert!(i.outputs[0].is_opaque());
    // No relation `x`: the only other reading is a composite column `x` of customers.
    let i = pg("SELECT x.email FROM customers c");
    assert_eq!(out(&i, 0), vec![col("customers", "x")]);
    let i = pg("SELECT nope FROM (SELECT 1 AS a) s");
    assert!(i.outputs[0].is_opaque());
    let i = my("SELECT @v");
    assert!(i.outputs[0].is_opaque());
    assert!(!my("SELECT @@version").outputs[0].is_opaque());
}

#[test]
fn mysql_names_compare_case_insensitively() {
    let i = my("SELECT EMAIL FROM (SELECT email FROM customers) s");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
    let i = my("SELECT S.e FROM (SELECT email AS e FROM customers) s");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
    let i = my("SELECT 1 /*!50000 , email */ FROM customers");
    assert_eq!(i.outputs.len(), 2);
    assert_eq!(out(&i, 1), vec![col("customers", "email")]);
}

#[test]
fn postgres_quoted_names_are_case_sensitive() {
    let i = pg(r#"SELECT "Email", email FROM "Customers""#);
    assert_eq!(out(&i, 0), vec![col("Customers", "Email")]);
    assert_eq!(out(&i, 1), vec![col("Customers", "email")]);
    let i = pg(r#"SELECT "E" FROM (SELECT email AS e FROM customers) s"#);
    assert!(i.outputs[0].is_opaque());
}

#[test]
fn nested_join_with_alias() {
    let i = pg("SELECT j.email FROM (customers c JOIN orders o ON true) AS j");
    assert_eq!(out(&i, 0), sorted(vec![col("customers", "email"), col("orders", "email")]));
    let i = pg("SELECT c.email FROM (customers c JOIN orders o ON true)");
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
}

#[test]
fn mysql_identifiers_sqlparser_could_misread_are_quoted() {
    let i = my("SELECT 1abc, $d FROM t");
    assert_eq!(out(&i, 0), vec![col("t", "1abc")]);
    assert_eq!(out(&i, 1), vec![col("t", "$d")]);
    let i = pg("SELECT a$b FROM t");
    assert_eq!(out(&i, 0), vec![col("t", "a$b")]);
}

#[test]
fn user_defined_operators_are_opaque() {
    assert!(pg("SELECT id ### 2 FROM customers").outputs[0].is_opaque());
    assert!(pg("SELECT id OPERATOR(myschema.+) 2 FROM customers").outputs[0].is_opaque());
    assert!(!pg("SELECT id + 2 FROM customers").outputs[0].is_opaque());
}
