//! Session settings that follow a client across pooled connections instead of pinning it: a
//! `SET` whose every assignment is a literal for one of a few session variables (autocommit,
//! sql_mode, time_zone, the character set variables, `SET NAMES` / `SET CHARACTER SET`) is
//! remembered and replayed on the next server connection the client gets (as ProxySQL does).
//! Anything else that `SET`s still pins (see docs/ARCHITECTURE.md, "MySQL: what pins a
//! client").

/// Session variables whose value is replayed rather than pinned.
const REPLAYABLE: &[&str] = &[
    "autocommit",
    "sql_mode",
    "time_zone",
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    Str,
    Num,
    Punct(u8),
}

/// Tokens of `sql`, or None for anything outside the tiny grammar (comments, `@` other than
/// a leading `@@`, backticks, unterminated strings, non-ASCII).
fn tokens(sql: &[u8]) -> Option<Vec<Tok<'_>>> {
    let text = std::str::from_utf8(sql).ok()?;
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            c if c.is_ascii_whitespace() => i += 1,
            b'\'' | b'"' => {
                i += 1;
                loop {
                    match b.get(i)? {
                        b'\\' => i += 2,
                        q if *q == c && b.get(i + 1) == Some(&c) => i += 2,
                        q if *q == c => break,
                        _ => i += 1,
                    }
                }
                i += 1;
                out.push(Tok::Str);
            }
            b'0'..=b'9' => {
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                out.push(Tok::Num);
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Word(&text[start..i]));
            }
            b'@' if b.get(i + 1) == Some(&b'@') => {
                out.push(Tok::Punct(b'@'));
                i += 2;
            }
            b'=' | b',' | b'.' | b';' => {
                out.push(Tok::Punct(c));
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Whether `sql` is one `SET` statement that only gives literal values to replayable session
/// variables (then it can be replayed on another connection instead of pinning the client).
pub fn replayable_set(sql: &[u8]) -> bool {
    let Some(t) = tokens(sql) else { return false };
    let word = |i: usize, w: &str| matches!(t.get(i), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w));
    if !word(0, "set") {
        return false;
    }
    let value = |i: usize| matches!(t.get(i), Some(Tok::Str | Tok::Num | Tok::Word(_)));
    let mut i = 1;
    loop {
        if word(i, "names") {
            if !value(i + 1) {
                return false;
            }
            i += 2;
            if word(i, "collate") {
                if !value(i + 1) {
                    return false;
                }
                i += 2;
            }
        } else if word(i, "charset") || (word(i, "character") && word(i + 1, "set")) {
            i += if word(i, "charset") { 1 } else { 2 };
            if !value(i) {
                return false;
            }
            i += 1;
        } else {
            // [SESSION | LOCAL] var, or @@[session. | local.]var
            if word(i, "session") || word(i, "local") {
                i += 1;
            } else if t.get(i) == Some(&Tok::Punct(b'@')) {
                i += 1;
                if (word(i, "session") || word(i, "local")) && t.get(i + 1) == Some(&Tok::Punct(b'.')) {
                    i += 2;
                }
            }
            let Some(Tok::Word(var)) = t.get(i) else { return false };
            if !REPLAYABLE.iter().any(|r| r.eq_ignore_ascii_case(var)) {
                return false;
            }
            if t.get(i + 1) != Some(&Tok::Punct(b'=')) || !value(i + 2) {
                return false;
            }
            i += 3;
        }
        match t.get(i) {
            None => return true,
            Some(Tok::Punct(b';')) => return i + 1 == t.len(),
            Some(Tok::Punct(b',')) => i += 1,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::replayable_set;

    #[test]
    fn allow_list_of_literal_session_settings() {
        for sql in [
            "SET autocommit = 0",
            "set AUTOCOMMIT=1;",
            "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_DATE'",
            "SET @@session.time_zone = '+00:00'",
            "SET @@time_zone='Europe/Paris', autocommit = OFF",
            "SET NAMES utf8mb4",
            "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_unicode_ci'",
            "SET CHARACTER SET utf8mb4",
            "set charset latin1",
            "SET character_set_results = NULL",
            "SET LOCAL sql_mode = DEFAULT",
            "SET sql_mode = 'it''s'",
        ] {
            assert!(replayable_set(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn everything_else_pins() {
        for sql in [
            "SET @a = 1",
            "SET @@global.autocommit = 0",
            "SET GLOBAL sql_mode = ''",
            "SET sql_safe_updates = 1",
            "SET autocommit = (SELECT 0)",
            "SET autocommit = @x",
            "SET time_zone = CONCAT('+0', '0:00')",
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "SET autocommit = 0; SELECT 1",
            "SET autocommit = 0; SET @a = 1",
            "/* x */ SET autocommit = 0",
            "/*!40101 SET @saved = @@sql_mode */",
            "SET autocommit := 0",
            "SET `autocommit` = 0",
            "SET sql_mode = 'unterminated",
            "SET",
            "SET NAMES",
            "SET autocommit = 0,",
            "SELECT 1",
            "SET PASSWORD = 'x'",
        ] {
            assert!(!replayable_set(sql.as_bytes()), "{sql}");
        }
    }
}
