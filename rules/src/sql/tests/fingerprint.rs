//! Fingerprint and lexer tests: literal stripping, quoting, comments, multi-statement detection.

use super::super::fingerprint::{normalize, Render};
use super::*;

fn fp(q: &str) -> String {
    fingerprint(q, Dialect::Postgres).text
}

fn fpm(q: &str) -> String {
    fingerprint(q, Dialect::Mysql).text
}

#[test]
fn literals_and_placeholders_become_question_marks() {
    assert_eq!(
        fp("SELECT * FROM t WHERE a = 1 AND b = 'x' AND c = $1 AND d = 1.5e3"),
        "select * from t where a = ? and b = ? and c = ? and d = ?"
    );
    assert_eq!(
        fpm("SELECT * FROM t WHERE a = ? AND b = \"x\" AND c = 0x1F"),
        "select * from t where a = ? and b = ? and c = ?"
    );
    assert_eq!(fp("select -1, +2, a - 1, a = - $1"), "select ?, ?, a - ?, a = ?");
}

#[test]
fn doubled_quotes_and_e_strings_end_where_the_server_ends_them() {
    assert_eq!(fp("SELECT 'it''s', email FROM t"), "select ?, email from t");
    // E'\'' is one string; the code after it is code.
    assert_eq!(fp(r"SELECT E'\'' , email FROM t"), "select ? , email from t");
    assert_eq!(fp(r"SELECT e'a\\' , email FROM t"), "select ? , email from t");
    // standard_conforming_strings: a backslash does not escape in a plain string.
    assert_eq!(fp(r"SELECT 'a\' , email FROM t"), "select ? , email from t");
    // B'', X'', N'', U&'' are literals, prefix included.
    assert_eq!(fp("SELECT B'101', X'ff', N'n', U&'x'"), "select ?, ?, ?, ?");
}

#[test]
fn dollar_quoting() {
    assert_eq!(fp("SELECT $$ it's -- not a comment $$, email FROM t"), "select ?, email from t");
    assert_eq!(fp("SELECT $fn$ has $$ inside $fn$ FROM t"), "select ? from t");
    // `$` inside an identifier does not start a dollar quote.
    assert_eq!(fp("SELECT a$$b, c FROM t"), "select a$$b, c from t");
    assert_eq!(fp("SELECT $1, $22"), "select ?, ?");
}

#[test]
fn quoted_identifiers_keep_case_unquoted_fold() {
    assert_eq!(fp(r#"SELECT "Email", EMAIL FROM "My""Table""#), r#"select "Email", email from "My""Table""#);
    assert_eq!(
        fpm("SELECT `Email`, Email FROM Customers WHERE X = 1"),
        "select `Email`, Email from Customers where X = ?"
    );
}

#[test]
fn postgres_comments_nest_and_are_removed() {
    assert_eq!(fp("SELECT /* a /* nested */ still comment */ email -- tail\nFROM t"), "select email from t");
    assert_eq!(fp("SELECT 1 --; DROP TABLE x"), "select ?");
    assert_eq!(fp("/* c */ drop/**/table x"), "drop table x");
}

#[test]
fn mysql_comment_rules() {
    assert_eq!(fpm("SELECT 1 # comment\n, email FROM t"), "select ? , email from t");
    assert_eq!(fpm("SELECT 1 -- comment\n, email FROM t"), "select ? , email from t");
    // `--` without a following space is two minus signs: email is code.
    assert_eq!(fpm("SELECT 1--email\nFROM t"), "select ?- -email from t");
    assert_eq!(fpm("SELECT 1--2"), "select ?-?");
    // MySQL block comments do not nest.
    assert_eq!(fpm("SELECT /* /* */ email FROM t"), "select email from t");
}

#[test]
fn mysql_executable_comments_are_code() {
    assert_eq!(fpm("SELECT 1 /*!50000 , email */ FROM customers"), "select ? , email from customers");
    assert_eq!(fpm("SELECT 1 /*! , email */ FROM customers"), "select ? , email from customers");
    assert_eq!(fpm("SELECT 1 /*M!100100 , email */ FROM customers"), "select ? , email from customers");
    assert_eq!(fpm("SELECT 1 /*+ hint */ FROM t"), "select ? from t");
    // Version numbers whose end MySQL and MariaDB disagree on are refused.
    assert!(normalize("SELECT 1 /*!500001, email */ FROM t", Dialect::Mysql, Render::Both).error.is_some());
}

#[test]
fn in_lists_and_values_rows_collapse() {
    assert_eq!(fp("SELECT * FROM t WHERE id IN (1, 2, 3)"), fp("select * from t where id in (7)"));
    assert_eq!(fp("SELECT * FROM t WHERE id IN ($1,$2)"), "select * from t where id in ($1)".replace("$1", "?"));
    assert_eq!(fp("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, NULL)"), "insert into t values (?, ?)");
    // A different width or a non-literal row is not collapsed.
    assert_eq!(fp("INSERT INTO t VALUES (1), (2, 3)"), "insert into t values (?), (?, ?)");
    assert_eq!(fp("INSERT INTO t VALUES (1), (now())"), "insert into t values (?), (now())");
    // IN with an expression is kept.
    assert_eq!(fp("SELECT 1 WHERE a IN (b, 1)"), "select ? where a in (b, ?)");
}

#[test]
fn multi_statement_detection() {
    let n = |q: &str| fingerprint(q, Dialect::Postgres).statements;
    assert_eq!(n("SELECT 1; SELECT 2"), 2);
    assert_eq!(n("SELECT 1;"), 1);
    assert_eq!(n("SELECT ';' ; "), 1);
    assert_eq!(n("SELECT 1; -- DROP TABLE x;"), 1);
    assert_eq!(n("SELECT 1; /* ; */ ;;"), 1);
    assert_eq!(n(";;"), 0);
    assert_eq!(n("SELECT $$;$$; DROP TABLE x"), 2);
    assert!(fingerprint("SELECT 1; DROP TABLE x", Dialect::Postgres).is_multi_statement());
    assert_eq!(fp("SELECT 1 ;  SELECT 2 ;"), "select ?; select ?");
}

#[test]
fn whitespace_is_collapsed() {
    assert_eq!(fp("SELECT\t\n  a ,\r\n b\x0cFROM   t"), "select a , b from t");
    assert_eq!(fp("  SELECT 1  "), "select ?");
}

#[test]
fn unterminated_input_does_not_panic_and_fails_analysis() {
    for q in ["SELECT 'abc", "SELECT \"abc", "SELECT /* abc", "SELECT $$ abc", "SELECT E'\\", "SELECT U&\"\\"] {
        let f = fingerprint(q, Dialect::Postgres);
        assert!(f.text.starts_with("select"), "{q}");
        assert!(analyze(q, Dialect::Postgres).parse_error.is_some(), "{q}");
    }
    assert!(analyze("SELECT 1 /*! , email", Dialect::Mysql).parse_error.is_some());
}

#[test]
fn hash_is_stable_and_follows_text() {
    let a = fingerprint("SELECT * FROM t WHERE id = 1", Dialect::Postgres);
    let b = fingerprint("select *   from t where id = 99", Dialect::Postgres);
    assert_eq!(a, b);
    assert_eq!(a.hash, stable_hash(a.text.as_bytes()));
    // Pinned: audit records compare fingerprints across releases.
    assert_eq!(stable_hash(b"select * from t where id = ?"), 8_217_393_573_328_459_280);
    assert_ne!(stable_hash(b"a"), stable_hash(b"b"));
}

#[test]
fn unicode_escaped_identifiers_are_decoded() {
    let i = pg(r#"SELECT * FROM U&"c\0075stomers""#);
    assert_eq!(tables(&i), vec![(None, "customers", false)]);
    let i = pg(r#"SELECT U&"\+000065mail" FROM customers"#);
    assert_eq!(out(&i, 0), vec![col("customers", "email")]);
    // A custom escape character is refused rather than guessed.
    assert!(analyze(r#"SELECT U&"!0065mail" UESCAPE '!' FROM customers"#, Dialect::Postgres).parse_error.is_some());
}

#[test]
fn postgres_truncates_long_identifiers_like_the_server() {
    let long = format!("customers{}", "x".repeat(80));
    let i = pg(&format!("SELECT * FROM {long}"));
    assert_eq!(i.tables[0].name.len(), 63);
    assert!(long.starts_with(&i.tables[0].name));
}

#[test]
fn keyword_table_is_sorted_for_binary_search() {
    let k = sqlparser::keywords::ALL_KEYWORDS;
    assert!(k.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(fpm("SeLeCt Cust FrOm Tbl"), "select Cust from Tbl");
}

#[test]
fn parse_text_never_contains_literal_values() {
    let n = normalize(
        "SELECT 'secret', 42, $$body$$, E'x' FROM t WHERE a = 'p@ss' /* c */",
        Dialect::Postgres,
        Render::Both,
    );
    assert!(!n.text.contains("secret") && !n.text.contains("42") && !n.text.contains("p@ss"));
    assert!(!n.text.contains("body") && !n.text.contains("/*"));
    let a = analyze("SELECT 'secret' AS x FROM t WHERE a = 'p@ss'", Dialect::Postgres);
    assert!(!format!("{a:?}").contains("secret") && !format!("{a:?}").contains("p@ss"));
}
