//! Property tests: no panics on arbitrary input; literal values never change the result.

use super::*;
use proptest::prelude::*;

fn lit() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| format!("{}.{}", n % 1000, n % 97)),
        "[ -~]{0,12}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
        "[a-z ]{0,8}".prop_map(|s| format!("$$ {s} $$")),
        "[ -&(-~]{0,8}".prop_map(|s| format!("E'{}'", s.replace('\\', "\\\\"))),
    ]
}

fn mysql_lit() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "[ -~]{0,12}".prop_map(|s| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))),
        "[a-z#*/ ]{0,8}".prop_map(|s| format!("\"{s}\"")),
    ]
}

const TEMPLATES: &[&str] = &[
    "SELECT email, {} FROM customers WHERE id = {} AND name LIKE {}",
    "UPDATE t SET a = {}, b = {} WHERE c IN ({}, {})",
    "INSERT INTO t (a, b) VALUES ({}, {}), ({}, {})",
    "SELECT lower(email) || {} FROM customers c JOIN orders o ON o.x = {} -- {}\n WHERE o.y > {}",
];

/// One analyser shared by every case of a property, so later cases are served from what
/// earlier ones cached.
fn shared() -> &'static Analyzer {
    static CACHE: std::sync::OnceLock<Analyzer> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| Analyzer::new(64))
}

/// What the cache returns is what a fresh fingerprint and analysis give.
fn same_as_fresh(q: &str, d: Dialect) -> Result<(), TestCaseError> {
    let (f, a) = shared().classify(q, d);
    prop_assert_eq!(&*f, &fingerprint(q, d), "fingerprint of {:?}", q);
    prop_assert_eq!(&*a, &analyze(q, d), "analysis of {:?}", q);
    Ok(())
}

fn fill(t: &str, lits: &[String]) -> String {
    let mut out = String::new();
    let mut it = lits.iter().cycle();
    for (i, part) in t.split("{}").enumerate() {
        if i > 0 {
            out.push_str(it.next().map_or("0", String::as_str));
        }
        out.push_str(part);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fingerprint_and_analyze_never_panic(s in "\\PC{0,200}") {
        for d in [Dialect::Postgres, Dialect::Mysql] {
            let f = fingerprint(&s, d);
            prop_assert_eq!(f.hash, stable_hash(f.text.as_bytes()));
            let _ = analyze(&s, d);
        }
    }

    #[test]
    fn sql_like_noise_never_panics(s in "[a-zA-Z0-9 '\"`$#;:*/!@?().,=<>\\\\-]{0,120}") {
        for d in [Dialect::Postgres, Dialect::Mysql] {
            let _ = fingerprint(&s, d);
            let _ = analyze(&s, d);
        }
    }

    #[test]
    fn literal_values_do_not_change_fingerprint_or_analysis(
        t in 0..TEMPLATES.len(),
        a in proptest::collection::vec(lit(), 4),
        b in proptest::collection::vec(lit(), 4),
    ) {
        // Same literal kinds in both, other values: identical results.
        let b: Vec<String> = a.iter().zip(&b).map(|(x, y)| if x.starts_with(|c: char| c.is_ascii_digit() || c == '-') == y.starts_with(|c: char| c.is_ascii_digit() || c == '-') { y.clone() } else { x.clone() }).collect();
        let (qa, qb) = (fill(TEMPLATES[t], &a), fill(TEMPLATES[t], &b));
        let d = Dialect::Postgres;
        prop_assert_eq!(fingerprint(&qa, d), fingerprint(&qb, d));
        let (ra, rb) = (analyze(&qa, d), analyze(&qb, d));
        prop_assert_eq!(ra.parse_error.is_none(), rb.parse_error.is_none());
        prop_assert_eq!(ra.statements.iter().map(|s| (&s.kind, &s.tables, &s.outputs)).collect::<Vec<_>>(),
                        rb.statements.iter().map(|s| (&s.kind, &s.tables, &s.outputs)).collect::<Vec<_>>());
    }

    #[test]
    fn cached_classification_equals_a_fresh_one(
        t in 0..TEMPLATES.len(),
        a in proptest::collection::vec(prop_oneof![lit(), mysql_lit()], 4),
        noise in "[a-zA-Z0-9 '\"`$#;:*/!@?().,=<>\\-]{0,60}",
    ) {
        // Literal kinds vary freely here: the same template is cached under each mix of kinds,
        // and the other dialect reads some of these literals as identifiers or comments.
        for d in [Dialect::Postgres, Dialect::Mysql] {
            same_as_fresh(&fill(TEMPLATES[t], &a), d)?;
            same_as_fresh(&noise, d)?;
            same_as_fresh(&format!("SELECT {noise} FROM t WHERE x = {}", a[0]), d)?;
        }
    }

    #[test]
    fn mysql_literal_values_do_not_change_fingerprint(
        t in 0..TEMPLATES.len(),
        a in proptest::collection::vec(mysql_lit(), 4),
        b in proptest::collection::vec(mysql_lit(), 4),
    ) {
        let d = Dialect::Mysql;
        prop_assert_eq!(fingerprint(&fill(TEMPLATES[t], &a), d), fingerprint(&fill(TEMPLATES[t], &b), d));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    /// The lexer's word-at-a-time key equals the byte-by-byte one, for every byte value.
    #[test]
    fn fast_word_keys_equal_the_reference(b in proptest::collection::vec(any::<u8>(), 0..10)) {
        let s = String::from_utf8_lossy(&b);
        prop_assert_eq!(crate::sql::spelling::wkey_fast(&s), crate::sql::lexer::wkey(&s), "{:?}", s);
        let ascii: String = b.iter().map(|&c| char::from(c & 0x7f)).collect();
        prop_assert_eq!(crate::sql::spelling::wkey_fast(&ascii), crate::sql::lexer::wkey(&ascii), "{:?}", ascii);
    }
}
