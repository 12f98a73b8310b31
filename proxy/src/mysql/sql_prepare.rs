//! SQL-level prepared statements on the MySQL path: recognise `PREPARE name FROM '...'`,
//! `EXECUTE name [USING @v, ...]` and `DEALLOCATE | DROP PREPARE name` sent as a whole
//! COM_QUERY, so that the statement a PREPARE carries is analysed and decided like a query and
//! an EXECUTE gets that statement's decision and masking plan (see `Session::govern_sql`).
//!
//! Only unambiguous spellings are recognised: plain whitespace between the words (no comments:
//! `/*! ... */` is executed by the server), a single-quoted literal without backslashes (its
//! meaning then does not depend on `NO_BACKSLASH_ESCAPES`) and with nothing after it (MySQL
//! joins adjacent literals), `USING` with user variables only. Anything else is not recognised
//! and goes through the ordinary analysis, which fails closed on it.

use std::borrow::Cow;

/// A recognised SQL-level prepared-statement command. Names are lower-cased (MySQL compares
/// prepared statement names without regard to case).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SqlPrepared<'a> {
    /// `PREPARE name FROM 'statement'`: the statement text, unquoted.
    Prepare { name: String, statement: Cow<'a, str> },
    /// `EXECUTE name [USING @a, @b]`.
    Execute { name: String },
    /// `DEALLOCATE PREPARE name` / `DROP PREPARE name`.
    Deallocate { name: String },
}

/// Recognise `text` (a whole COM_QUERY) as one of the commands above.
pub(super) fn recognise(text: &[u8]) -> Option<SqlPrepared<'_>> {
    let text = std::str::from_utf8(text).ok()?;
    let mut c = Cursor { s: text, i: 0 };
    c.ws();
    let verb = c.word()?.to_ascii_lowercase();
    let out = match verb.as_str() {
        "prepare" => {
            c.ws1()?;
            let name = c.name()?;
            c.ws1()?;
            if !c.word()?.eq_ignore_ascii_case("from") {
                return None;
            }
            c.ws();
            let statement = c.literal()?;
            SqlPrepared::Prepare { name, statement }
        }
        "execute" => {
            c.ws1()?;
            let name = c.name()?;
            if c.ws() && c.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
                if !c.word()?.eq_ignore_ascii_case("using") {
                    return None;
                }
                c.ws1()?;
                loop {
                    c.user_variable()?;
                    c.ws();
                    if c.peek() != Some(b',') {
                        break;
                    }
                    c.i += 1;
                    c.ws();
                }
            }
            SqlPrepared::Execute { name }
        }
        "deallocate" | "drop" => {
            c.ws1()?;
            if !c.word()?.eq_ignore_ascii_case("prepare") {
                return None;
            }
            c.ws1()?;
            SqlPrepared::Deallocate { name: c.name()? }
        }
        _ => return None,
    };
    c.ws();
    if c.peek() == Some(b';') {
        c.i += 1;
        c.ws();
    }
    (c.i == text.len()).then_some(out)
}

struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    /// Skip whitespace; true when there was some.
    fn ws(&mut self) -> bool {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
        self.i > start
    }

    fn ws1(&mut self) -> Option<()> {
        self.ws().then_some(())
    }

    /// An unquoted identifier or keyword.
    fn word(&mut self) -> Option<&'a str> {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80) {
            self.i += 1;
        }
        (self.i > start).then(|| &self.s[start..self.i])
    }

    /// A statement name: unquoted, or in backticks (a doubled backtick stands for one).
    fn name(&mut self) -> Option<String> {
        if self.peek() != Some(b'`') {
            return self.word().map(str::to_lowercase);
        }
        let mut out = String::new();
        let rest = &self.s[self.i + 1..];
        let mut chars = rest.char_indices().peekable();
        while let Some((at, ch)) = chars.next() {
            if ch != '`' {
                out.push(ch);
                continue;
            }
            if chars.peek().is_some_and(|&(_, c)| c == '`') {
                chars.next();
                out.push('`');
                continue;
            }
            self.i += 1 + at + 1;
            return (!out.is_empty()).then(|| out.to_lowercase());
        }
        None
    }

    /// A single-quoted string literal without backslashes; `''` stands for one quote.
    fn literal(&mut self) -> Option<Cow<'a, str>> {
        if self.peek() != Some(b'\'') {
            return None;
        }
        let start = self.i + 1;
        let bytes = self.s.as_bytes();
        let mut j = start;
        let mut doubled = false;
        loop {
            match bytes.get(j)? {
                b'\\' => return None,
                b'\'' if bytes.get(j + 1) == Some(&b'\'') => {
                    doubled = true;
                    j += 2;
                }
                b'\'' => break,
                _ => j += 1,
            }
        }
        self.i = j + 1;
        let raw = &self.s[start..j];
        Some(if doubled { Cow::Owned(raw.replace("''", "'")) } else { Cow::Borrowed(raw) })
    }

    /// `@name` (unquoted).
    fn user_variable(&mut self) -> Option<()> {
        if self.peek() != Some(b'@') {
            return None;
        }
        self.i += 1;
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'.') {
            self.i += 1;
        }
        (self.i > start).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare(name: &str, statement: &str) -> Option<SqlPrepared<'static>> {
        Some(SqlPrepared::Prepare { name: name.into(), statement: Cow::Owned(statement.into()) })
    }

    #[test]
    fn recognises_the_plain_spellings() {
        let r = |s: &str| {
            recognise(s.as_bytes()).map(|p| match p {
                SqlPrepared::Prepare { name, statement } => {
                    SqlPrepared::Prepare { name, statement: Cow::Owned(statement.into_owned()) }
                }
                SqlPrepared::Execute { name } => SqlPrepared::Execute { name },
                SqlPrepared::Deallocate { name } => SqlPrepared::Deallocate { name },
            })
        };
        assert_eq!(
            r("PREPARE s FROM 'SELECT email FROM t WHERE id = ?'"),
            prepare("s", "SELECT email FROM t WHERE id = ?")
        );
        assert_eq!(r("  prepare   S1\nfrom'select 1' ; "), prepare("s1", "select 1"));
        assert_eq!(r("PREPARE `My``Stmt` FROM 'select ''a'''"), prepare("my`stmt", "select 'a'"));
        assert_eq!(r("EXECUTE s"), Some(SqlPrepared::Execute { name: "s".into() }));
        assert_eq!(r("execute S using @a, @b_2 ,@c;"), Some(SqlPrepared::Execute { name: "s".into() }));
        assert_eq!(r("DEALLOCATE PREPARE s"), Some(SqlPrepared::Deallocate { name: "s".into() }));
        assert_eq!(r("drop prepare `S`;"), Some(SqlPrepared::Deallocate { name: "s".into() }));
    }

    #[test]
    fn leaves_every_other_spelling_to_the_analyser() {
        for s in [
            "PREPARE s FROM @q",                                     // text unknown until run time
            "PREPARE s FROM 'select 1' 'union select email from t'", // adjacent literals join
            "PREPARE s FROM 'select \\'a\\''",                       // backslash: depends on sql_mode
            "PREPARE s FROM \"select 1\"",                           // ANSI_QUOTES makes it a name
            "PREPARE s FROM _utf8'select 1'",                        // introducer
            "/* c */ PREPARE s FROM 'select 1'",                     // comments
            "PREPARE s /*! x */ FROM 'select 1'",
            "PREPARE s FROM 'select 1'; SELECT 2",   // more than one statement
            "PREPARE s FROM 'select 1",              // unterminated
            "PREPARE s AS SELECT 1",                 // Postgres spelling
            "EXECUTE s USING (SELECT email FROM t)", // MariaDB takes expressions
            "EXECUTE s USING @a, 1",
            "EXECUTE IMMEDIATE 'select 1'",
            "EXECUTE s x",
            "DEALLOCATE s",
            "SELECT 1",
            "PREPARE ``  FROM 'select 1'",
            "PREPARE s FROM 'select 1' -- c",
        ] {
            assert_eq!(recognise(s.as_bytes()), None, "{s}");
        }
        assert_eq!(recognise(&[b'E', 0xff]), None);
    }
}
