//! The analysis cache: shape keys, bounds, concurrency.

use super::*;
use std::sync::Arc;

#[test]
fn same_shape_with_other_literals_hits() {
    let c = Analyzer::new(100);
    let a = c.analyze_cached("SELECT email FROM customers WHERE id = 1", Dialect::Postgres);
    let b = c.analyze_cached("select email   from customers where id = 42 -- other", Dialect::Postgres);
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!((c.hits(), c.misses()), (1, 1));
    let d = c.analyze_cached("SELECT email FROM customers WHERE id = 'x'", Dialect::Postgres);
    assert!(!Arc::ptr_eq(&a, &d), "a string literal is a different parse text");
    assert_eq!(*a, analyze("SELECT email FROM customers WHERE id = 7", Dialect::Postgres));
}

#[test]
fn different_shapes_dialects_and_flags_miss() {
    let c = Analyzer::new(100);
    let a = c.analyze_cached("SELECT email FROM customers", Dialect::Postgres);
    let b = c.analyze_cached("SELECT email FROM customers", Dialect::Mysql);
    let o = c.analyze_cached("SELECT email FROM customers INTO OUTFILE '/tmp/x'", Dialect::Mysql);
    let q = c.analyze_cached(r#"SELECT "email" FROM customers"#, Dialect::Postgres);
    assert!(!Arc::ptr_eq(&a, &b) && !Arc::ptr_eq(&b, &o) && !Arc::ptr_eq(&a, &q));
    assert!(o.statements[0].server_io && !b.statements[0].server_io);
    // MySQL identifiers keep their case in the key (table names are case-sensitive there).
    let u = c.analyze_cached("SELECT email FROM Customers", Dialect::Mysql);
    assert_eq!(u.statements[0].tables[0].name, "Customers");
}

#[test]
fn bounded_with_clock_eviction() {
    let c = Analyzer::new(8);
    assert_eq!(c.capacity(), 8);
    for i in 0..200 {
        let _ = c.analyze_cached(&format!("SELECT c{i} FROM t"), Dialect::Postgres);
    }
    assert!(c.len() <= 8, "{}", c.len());
    // A hot entry survives a sweep of cold ones better than they do.
    let hot = "SELECT hot FROM t";
    for i in 0..50 {
        let _ = c.analyze_cached(hot, Dialect::Postgres);
        let _ = c.analyze_cached(&format!("SELECT d{i} FROM t"), Dialect::Postgres);
    }
    let before = c.misses();
    let _ = c.analyze_cached(hot, Dialect::Postgres);
    assert_eq!(c.misses(), before, "hot entry was evicted");
    c.clear();
    assert!(c.is_empty());
}

#[test]
fn zero_capacity_disables_caching() {
    let c = Analyzer::new(0);
    let a = c.analyze_cached("SELECT 1", Dialect::Postgres);
    let b = c.analyze_cached("SELECT 1", Dialect::Postgres);
    assert!(!Arc::ptr_eq(&a, &b) && c.is_empty());
}

#[test]
fn shared_across_threads() {
    let c = Arc::new(Analyzer::new(64));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    let q = format!("SELECT email FROM customers WHERE id = {} AND k{} = 1", i, i % 10 + t % 2);
                    let a = c.analyze_cached(&q, Dialect::Postgres);
                    assert_eq!(a.statements[0].outputs[0].sources, vec![col("customers", "email")]);
                }
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().is_ok());
    }
    assert!(c.len() <= 11);
    assert_eq!(c.hits() + c.misses(), 4000);
}

#[test]
fn classify_returns_fingerprint_and_analysis() {
    let c = Analyzer::new(10);
    let (f, a) = c.classify("DELETE FROM t WHERE id = 5", Dialect::Postgres);
    assert_eq!(f.text, "delete from t where id = ?");
    assert_eq!(*f, fingerprint("DELETE FROM t WHERE id = 6", Dialect::Postgres));
    assert_eq!(a.statements[0].kind, StatementKind::Delete);
}

#[test]
fn lexer_errors_are_never_served_from_the_cache() {
    let c = Analyzer::new(10);
    // Same parse text as the UESCAPE spelling below would decode to with the default escape.
    let ok = c.analyze_cached(r#"SELECT "!0065mail" FROM customers"#, Dialect::Postgres);
    assert!(ok.parse_error.is_none());
    let bad = c.analyze_cached(r#"SELECT U&"!0065mail" UESCAPE '!' FROM customers"#, Dialect::Postgres);
    assert!(bad.parse_error.is_some());
    let bad = c.analyze_cached("SELECT 'unterminated", Dialect::Postgres);
    assert!(bad.parse_error.is_some());
}

#[test]
fn collapsed_rows_do_not_count_against_limits() {
    let c = Analyzer::new(10);
    let one = c.analyze_cached("INSERT INTO t VALUES (-1, -2)", Dialect::Postgres);
    let many = format!("INSERT INTO t VALUES {}", vec!["(-1, -2)"; 20_000].join(", "));
    let b = c.analyze_cached(&many, Dialect::Postgres);
    assert!(Arc::ptr_eq(&one, &b) && b.parse_error.is_none());
    assert!(analyze(&many, Dialect::Postgres).parse_error.is_none());
}

#[test]
fn exact_text_fast_path_only_for_statements_without_literals() {
    let c = Analyzer::new(10);
    let q = "SELECT email FROM customers WHERE id = $1";
    let (f1, a1) = c.classify(q, Dialect::Postgres);
    let (f2, a2) = c.classify(q, Dialect::Postgres);
    assert!(Arc::ptr_eq(&f1, &f2) && Arc::ptr_eq(&a1, &a2));
    // The same shape spelled differently still shares the analysis.
    let (_, a3) = c.classify("select email from customers where id = $2", Dialect::Postgres);
    assert!(Arc::ptr_eq(&a1, &a3));
    // Statements with literals are not kept verbatim: the skeleton level serves them.
    let (f4, _) = c.classify("ALTER ROLE app PASSWORD 'hunter2'", Dialect::Postgres);
    let (f5, _) = c.classify("ALTER ROLE app PASSWORD 'hunter2'", Dialect::Postgres);
    assert!(Arc::ptr_eq(&f4, &f5));
    assert!(!f4.text.contains("hunter2"));
    let keys = c.cached_keys();
    assert!(!keys.is_empty() && keys.iter().all(|k| !k.contains("hunter2")), "{keys:?}");
}

#[test]
fn literal_varying_statements_are_served_by_their_skeleton() {
    let c = Analyzer::new(10);
    let d = Dialect::Postgres;
    let (f1, a1) = c.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 17;", d);
    let (hits, misses) = (c.hits(), c.misses());
    let (f2, a2) = c.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 90210;", d);
    assert!(Arc::ptr_eq(&f1, &f2) && Arc::ptr_eq(&a1, &a2));
    assert_eq!((c.hits(), c.misses()), (hits + 1, misses), "one lookup, no parse");
    // Anything else in the token stream is another skeleton, with its own (correct) result.
    for (q, table) in [
        ("SELECT abalance FROM pgbench_accounts WHERE aid = '17';", "pgbench_accounts"),
        ("SELECT abalance FROM pgbench_accounts  WHERE aid = 17;", "pgbench_accounts"),
        ("SELECT abalance FROM pgbench_tellers WHERE aid = 17;", "pgbench_tellers"),
        (r#"SELECT abalance FROM "pgbench_Accounts" WHERE aid = 17;"#, "pgbench_Accounts"),
        ("SELECT abalance FROM pgbench_accounts WHERE aid = 17; DROP TABLE x", "pgbench_accounts"),
    ] {
        let (f, a) = c.classify(q, d);
        assert!(!Arc::ptr_eq(&a, &a1) || q.contains("  "), "{q}");
        assert_eq!(*f, fingerprint(q, d), "{q}");
        assert_eq!(*a, analyze(q, d), "{q}");
        assert_eq!(a.statements[0].tables[0].name, table, "{q}");
    }
    // A quoted identifier is keyed by the name it decodes to.
    let (_, x) = c.classify(r#"SELECT "a""b" FROM t WHERE id = 1"#, d);
    let (_, y) = c.classify(r#"SELECT "a" "b" FROM t WHERE id = 1"#, d);
    assert_eq!(*x, analyze(r#"SELECT "a""b" FROM t WHERE id = 2"#, d));
    assert_eq!(*y, analyze(r#"SELECT "a" "b" FROM t WHERE id = 2"#, d));
}
