//! Refuse session settings that change how the server reads SQL text: the analyser lexes
//! strings and identifiers as the defaults have it (Postgres `standard_conforming_strings = on`
//! and an ASCII-safe client encoding; MySQL without `ANSI_QUOTES` / `NO_BACKSLASH_ESCAPES` and
//! with an ASCII-safe client character set). A client that changes them would have the server
//! read a column where dgf reads a string (or the end of a string where dgf reads its middle),
//! and every rule and mask after that would be decided on a different statement.
//!
//! The analysis is shared per statement shape (literals stripped), so the values are read from
//! the statement's own text here. Only values that are plainly safe pass; anything else that
//! assigns one of these settings (a variable, a function, a number, a list dgf does not know) is
//! refused like a statement that cannot be analysed.

use super::sql::SqlVerdict;
use super::RoleView;
use crate::sql::{Analysis, Dialect};
use crate::Denial;

/// Settings whose value changes how the server tokenises SQL, by dialect.
fn sensitive(dialect: Dialect, var: &str) -> bool {
    let last = var.rsplit('.').next().unwrap_or(var).trim_start_matches('@');
    match dialect {
        Dialect::Postgres => matches!(last, "standard_conforming_strings" | "client_encoding" | "names"),
        Dialect::Mysql => matches!(
            last,
            "sql_mode"
                | "names"
                | "charset"
                | "character_set_client"
                | "character_set_connection"
                | "collation_connection"
        ),
    }
}

/// Client encodings / character sets whose multi-byte characters can end in a `\` or quote byte,
/// and MySQL sql_mode words that turn on `ANSI_QUOTES` or `NO_BACKSLASH_ESCAPES` (directly or as
/// part of a combination mode).
const UNSAFE_WORDS: &[&str] = &[
    "sjis",
    "shift_jis",
    "mskanji",
    "big5",
    "gbk",
    "gb18030",
    "uhc",
    "johab",
    "cp932",
    "cp936",
    "cp949",
    "cp950",
    "windows932",
    "windows936",
    "windows949",
    "windows950",
    "win932",
    "win936",
    "win949",
    "win950",
    "ansi",
    "no_backslash_escapes",
    "db2",
    "mssql",
    "oracle",
    "postgresql",
    "maxdb",
];

/// The character sets of [`UNSAFE_WORDS`] (the rest are sql_mode words).
const UNSAFE_CHARSETS: usize = 20;

/// Whether a client encoding / character set name (a startup parameter, a handshake charset)
/// is one whose multi-byte characters can end in a `\` or quote byte.
pub fn unsafe_client_encoding(name: &str) -> bool {
    let lower = name.to_ascii_lowercase().replace('-', "_");
    UNSAFE_WORDS[..UNSAFE_CHARSETS].iter().any(|w| lower.contains(w))
}

/// Why `text` (a statement the analysis says assigns a sensitive setting) is unsafe, if it is.
fn unsafe_value(dialect: Dialect, text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    if UNSAFE_WORDS.iter().any(|w| lower.contains(w)) {
        return Some("it sets a mode or character set in which the server reads quotes and backslashes differently");
    }
    let bytes = lower.as_bytes();
    let user_var = bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'@' && bytes.get(i + 1) != Some(&b'@') && (i == 0 || bytes[i - 1] != b'@'));
    if lower.contains('(') || user_var || lower.contains("0x") || lower.contains("x'") || lower.contains("b'") {
        return Some("it sets the setting to a value dgf cannot see");
    }
    if dialect == Dialect::Mysql && !sql_mode_values_are_words(&lower) {
        // sql_mode also takes bit masks (`SET sql_mode = 4` is ANSI_QUOTES).
        return Some("it sets sql_mode to a value dgf cannot see");
    }
    if dialect == Dialect::Postgres && lower.contains("standard_conforming_strings") {
        let squeezed: String = lower.chars().filter(|c| !c.is_whitespace() && *c != '\'' && *c != '"').collect();
        let squeezed = squeezed.trim_end_matches(';');
        let safe = squeezed.starts_with("reset")
            || ["on", "true", "yes", "1", "default"]
                .iter()
                .any(|v| squeezed.ends_with(&format!("={v}")) || squeezed.ends_with(&format!("to{v}")));
        if !safe {
            return Some("it turns standard_conforming_strings off");
        }
    }
    None
}

/// Whether a statement of `a` assigns a setting the analyser's lexer depends on (cheap: the
/// statement's `set_variables`; [`check_lexer_settings`] then reads the values).
pub fn touches_lexer_settings(a: &Analysis, dialect: Dialect) -> bool {
    a.statements.iter().any(|st| st.set_variables.iter().any(|v| sensitive(dialect, v)))
}

/// Whether every `sql_mode` assignment in `lower` (lower-cased text) gives a quoted list of mode
/// words or a bare word (`DEFAULT`, `TRADITIONAL`): no number, no expression.
fn sql_mode_values_are_words(lower: &str) -> bool {
    let b = lower.as_bytes();
    let mut from = 0;
    while let Some(at) = lower[from..].find("sql_mode") {
        let mut i = from + at + "sql_mode".len();
        from = i;
        let skip = |i: &mut usize| {
            while b.get(*i).is_some_and(u8::is_ascii_whitespace) {
                *i += 1;
            }
        };
        skip(&mut i);
        match (b.get(i), b.get(i + 1)) {
            (Some(b'='), _) => i += 1,
            (Some(b':'), Some(b'=')) => i += 2,
            _ => continue, // read, not assigned (`@@sql_mode` in an expression)
        }
        skip(&mut i);
        let word = |c: &u8| c.is_ascii_lowercase() || *c == b'_';
        let ok = match b.get(i) {
            Some(&q @ (b'\'' | b'"')) => {
                let body = &b[i + 1..];
                body.iter()
                    .position(|&c| c == q)
                    .is_some_and(|end| body[..end].iter().all(|c| word(c) || *c == b',' || *c == b' '))
            }
            Some(c) => word(c),
            None => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Refuse (into `out`) a statement of `text` that assigns a setting the analyser's lexer
/// depends on, to a value that is not plainly safe. Refused like an unparseable statement
/// (`server.on_parse_error`; with "allow", roles with masks are still refused). Returns whether
/// it refused.
pub fn check_lexer_settings(view: &RoleView, a: &Analysis, text: &str, dialect: Dialect, out: &mut SqlVerdict) -> bool {
    let Some(why) = touches_lexer_settings(a, dialect).then(|| unsafe_value(dialect, text)).flatten() else {
        return false;
    };
    if view.parse_error_denies() {
        out.verdict.deny.get_or_insert(Denial {
            id: usize::MAX,
            rule: "on_parse_error".into(),
            message: format!(
                "dgf: statement refused: {why}, and dgf would no longer read statements as the server does; set server.on_parse_error = \"allow\" to let such statements through"
            ),
        });
        return true;
    }
    if let Some(m) = view.masks.first() {
        super::sql::fail_closed(&mut out.verdict, m.id, &m.name, m.shadow, why);
        return out.verdict.deny.is_some();
    }
    false
}

/// Settings a `set_config()` call may not name however it is spelled: the role (a way around
/// the `set_role` guard) and what the lexer depends on.
const SET_CONFIG_GUARDED: &[&str] =
    &["role", "session_authorization", "standard_conforming_strings", "client_encoding"];

/// Whether every `set_config(` in `text` (a Postgres statement) names its setting with a plain
/// string literal (`set_config('jit', 'off', false)`, as asyncpg's type introspection sends)
/// that is not one of [`SET_CONFIG_GUARDED`]: such a call does what `SET name = ...` does, which
/// no guard refuses. Any other spelling (a variable, a comment, `E'...'`, `$$...$$`, adjacent
/// literals that Postgres would join) is not plain, and the `functions` guard keeps refusing it.
pub fn set_config_is_plain(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    let mut found = false;
    let mut from = 0;
    while let Some(at) = lower[from..].find("set_config") {
        found = true;
        let mut i = from + at + "set_config".len();
        from = i;
        let skip = |i: &mut usize| {
            while b.get(*i).is_some_and(u8::is_ascii_whitespace) {
                *i += 1;
            }
        };
        skip(&mut i);
        if b.get(i) != Some(&b'(') {
            return false;
        }
        i += 1;
        skip(&mut i);
        if b.get(i) != Some(&b'\'') {
            return false;
        }
        let start = i + 1;
        let Some(len) = b[start..].iter().position(|&c| c == b'\'') else { return false };
        let name = &lower[start..start + len];
        i = start + len + 1;
        skip(&mut i);
        let plain = !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.');
        if !plain || b.get(i) != Some(&b',') || SET_CONFIG_GUARDED.contains(&name) {
            return false;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_encodings() {
        assert_eq!(UNSAFE_WORDS[UNSAFE_CHARSETS], "ansi");
        for e in ["SJIS", "'Shift-JIS'", "BIG5", "gbk", "WIN950", "GB18030"] {
            assert!(unsafe_client_encoding(e), "{e}");
        }
        for e in ["UTF8", "utf-8", "'utf-8'", "LATIN1", "SQL_ASCII", "EUC_JP", "WIN1252"] {
            assert!(!unsafe_client_encoding(e), "{e}");
        }
    }

    #[test]
    fn set_config_with_a_plain_harmless_name() {
        for s in [
            "SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new",
            "select SET_CONFIG ( 'app.tenant' , '7', true)",
        ] {
            assert!(set_config_is_plain(s), "{s}");
        }
        for s in [
            "SELECT set_config('role', 'admin', false)",
            "SELECT set_config('ROLE', 'admin', false)",
            "SELECT set_config('ro'\n'le', 'admin', false)",
            "SELECT set_config(E'rol\\x65', 'admin', false)",
            "SELECT set_config($$role$$, 'admin', false)",
            "SELECT set_config(name, 'x', false) FROM t",
            "SELECT set_config/**/('role', 'admin', false)",
            "SELECT set_config('jit', 'off', false), set_config('session_authorization', 'x', false)",
            "SELECT set_config('standard_conforming_strings', 'off', false)",
            "SELECT 1",
        ] {
            assert!(!set_config_is_plain(s), "{s}");
        }
    }

    #[test]
    fn only_plainly_safe_values_pass() {
        let risky = |d, s: &str| unsafe_value(d, s).is_some();
        for s in [
            "SET sql_mode='ANSI_QUOTES'",
            "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES'",
            "SET @@sql_mode := 'ANSI'",
            "SET sql_mode = 'DB2'",
            "SET sql_mode = 4",
            "SET sql_mode = '4'",
            "SET autocommit = 0, sql_mode = 4",
            "SET sql_mode = @saved",
            "SET sql_mode = CONCAT(@@sql_mode, ',AN', 'SI_QUOTES')",
            "SET sql_mode = 0x414E5349",
            "SET NAMES gbk",
            "SET character_set_client = sjis",
            "SET CHARACTER SET big5",
        ] {
            assert!(risky(Dialect::Mysql, s), "{s}");
        }
        for s in [
            "SET sql_mode='STRICT_TRANS_TABLES,NO_ZERO_DATE'",
            "SET @@SESSION.sql_mode = 'TRADITIONAL'",
            "SET sql_mode = DEFAULT",
            "SET SESSION sql_mode = 'NO_ZERO_DATE', autocommit = 0",
            "SET NAMES utf8mb4",
            "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_unicode_ci'",
        ] {
            assert!(!risky(Dialect::Mysql, s), "{s}");
        }
        for s in [
            "SET standard_conforming_strings = off",
            "SET standard_conforming_strings TO 'of'\n'f'",
            "SET standard_conforming_strings = false",
            "SET client_encoding = 'SJIS'",
            "SET NAMES 'big5'",
            "SET client_encoding TO 'WIN950'",
        ] {
            assert!(risky(Dialect::Postgres, s), "{s}");
        }
        for s in [
            "SET standard_conforming_strings = on",
            "SET standard_conforming_strings TO DEFAULT",
            "RESET standard_conforming_strings",
            "SET client_encoding = 'UTF8'",
            "SET NAMES 'LATIN1'",
        ] {
            assert!(!risky(Dialect::Postgres, s), "{s}");
        }
    }

    #[test]
    fn refuses_only_statements_that_assign_those_settings() {
        let toml = "[[labels]]\nname = \"pii\"\nmatch = [\"t.email\"]\n[[rules]]\nname = \"m\"\nroles = [\"analyst\"]\naction = \"mask\"\nlabels = [\"pii\"]\nwith = \"redact\"\n";
        let cfg = dgf_config::parse_str(toml, "t.toml", &|_| None).expect("config");
        let p = super::super::Policy::from_config(&cfg).expect("policy");
        let view = p.view("r", &["analyst".to_owned()]);
        let run = |sql: &str, d| {
            let a = crate::sql::analyze(sql, d);
            let mut out = super::super::check_sql(&view, &a);
            check_lexer_settings(&view, &a, sql, d, &mut out);
            out.verdict.deny.map(|d| d.message)
        };
        let m = run("SET sql_mode = 'ANSI_QUOTES'", Dialect::Mysql);
        assert!(m.as_deref().is_some_and(|m| m.contains("quotes and backslashes")), "{m:?}");
        assert!(run("SET standard_conforming_strings = off", Dialect::Postgres).is_some());
        // Text that mentions the words without assigning the settings is analysed as usual.
        assert_eq!(run("SELECT 'ansi' AS sql_mode FROM t", Dialect::Mysql), None);
        assert_eq!(run("SET sql_mode = 'STRICT_ALL_TABLES'", Dialect::Mysql), None);
    }
}
