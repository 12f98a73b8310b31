//! Statement templates: the text of a statement with its plain literals cut out, so that the
//! next statement of the same shape (the same text around other numbers and strings) is
//! recognised by comparing bytes, without lexing it again.
//!
//! A template is built from the tokens the lexer made of a statement. Only literals whose
//! spelling cannot change how anything around them is read become slots:
//! - a number of ASCII digits only, followed by a byte that cannot continue a number or a
//!   word (not a letter, digit, `_`, `$`, `.` or a byte of a multi-byte character);
//! - a string `'...'` holding no quote and no backslash, not followed by a quote.
//!
//! A text matches when it is the template's fixed bytes with each slot filled by a literal of
//! the same class (`[0-9]+`, or `'` + bytes other than `'`, `\` and NUL + `'`). The lexer
//! reads such a text as the same tokens, with only the slots' texts differing: its state
//! before each slot comes from identical bytes, a slot of either class is one token ended by
//! the same delimiter, and no rule of the lexer looks back at a literal's text. So the text
//! has the template's skeleton ([`skeleton`](super::cache::skeleton)), hence its fingerprint
//! and analysis. A text that does not match is simply classified the long way.

use super::lexer::{Kind, Tok};

/// What fills a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// `[0-9]+`.
    Digits,
    /// `'` + bytes other than `'`, `\` and NUL + `'`.
    Quoted,
}

/// A statement's fixed bytes and literal slots (no literal value is kept).
#[derive(Debug, Clone)]
pub(crate) struct Template {
    /// The fixed bytes, all segments concatenated.
    fixed: Box<[u8]>,
    /// Each slot with the length of the fixed segment before it; the rest of `fixed` follows
    /// the last slot.
    slots: Box<[(u32, Slot)]>,
}

/// Bytes that may follow a digits slot: anything that cannot continue a number or a word.
fn ends_number(b: Option<u8>) -> bool {
    match b {
        None => true,
        Some(c) => !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'.') || c >= 0x80),
    }
}

impl Template {
    /// A text without literals: only the same bytes match.
    pub(crate) fn exact(sql: &str) -> Self {
        Self { fixed: sql.as_bytes().into(), slots: Box::new([]) }
    }

    /// The template of `sql`, lexed into `toks` (which must be the lexer's tokens of `sql`,
    /// without a lexer error).
    pub(crate) fn from_tokens(sql: &str, toks: &[Tok<'_>]) -> Self {
        let b = sql.as_bytes();
        let base = sql.as_ptr() as usize;
        let mut fixed = Vec::with_capacity(sql.len());
        let mut slots = Vec::new();
        let mut from = 0;
        for t in toks {
            let text = t.text.as_bytes();
            let Some(start) = (t.text.as_ptr() as usize).checked_sub(base) else { continue };
            let end = start + text.len();
            if end > b.len() || start < from {
                continue;
            }
            let slot = match t.kind {
                Kind::Num
                    if !text.is_empty() && text.iter().all(u8::is_ascii_digit) && ends_number(b.get(end).copied()) =>
                {
                    Slot::Digits
                }
                Kind::Str
                    if text.len() >= 2
                        && text[0] == b'\''
                        && text[text.len() - 1] == b'\''
                        && !text[1..text.len() - 1].iter().any(|&c| matches!(c, b'\'' | b'\\' | 0))
                        && b.get(end) != Some(&b'\'') =>
                {
                    Slot::Quoted
                }
                _ => continue,
            };
            fixed.extend_from_slice(&b[from..start]);
            slots.push(((start - from) as u32, slot));
            from = end;
        }
        fixed.extend_from_slice(&b[from..]);
        Self { fixed: fixed.into(), slots: slots.into() }
    }

    /// Whether `sql` is this template with its slots filled (see the module docs).
    pub(crate) fn matches(&self, sql: &str) -> bool {
        let s = sql.as_bytes();
        let (mut pos, mut f) = (0usize, 0usize);
        for &(len, slot) in self.slots.iter() {
            let len = len as usize;
            if s.get(pos..pos + len) != self.fixed.get(f..f + len) {
                return false;
            }
            pos += len;
            f += len;
            match slot {
                Slot::Digits => {
                    let n = s[pos..].iter().take_while(|c| c.is_ascii_digit()).count();
                    if n == 0 {
                        return false;
                    }
                    pos += n;
                }
                Slot::Quoted => {
                    if s.get(pos) != Some(&b'\'') {
                        return false;
                    }
                    let Some(n) = s[pos + 1..].iter().position(|&c| matches!(c, b'\'' | b'\\' | 0)) else {
                        return false;
                    };
                    if s[pos + 1 + n] != b'\'' {
                        return false;
                    }
                    pos += n + 2;
                }
            }
        }
        s.get(pos..) == self.fixed.get(f..)
    }

    /// Bytes held (for bounding memory).
    pub(crate) fn len(&self) -> usize {
        self.fixed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::cache::skeleton;
    use super::super::lexer::lex;
    use super::super::Dialect;
    use super::*;
    use proptest::prelude::*;

    fn template(sql: &str, d: Dialect) -> Template {
        let l = lex(sql, d);
        assert!(l.error.is_none(), "{sql}");
        Template::from_tokens(sql, &l.toks)
    }

    #[test]
    fn numbers_and_plain_strings_are_slots() {
        let d = Dialect::Postgres;
        let t = template("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;", d);
        assert!(t.matches("SELECT abalance FROM pgbench_accounts WHERE aid = 7;"));
        assert!(t.matches("SELECT abalance FROM pgbench_accounts WHERE aid = 99999999999999999999;"));
        assert!(!t.matches("SELECT abalance FROM pgbench_accounts WHERE aid = 7 OR true;"));
        assert!(!t.matches("SELECT abalance FROM pgbench_accounts WHERE aid = x;"));
        assert!(!t.matches("SELECT abalance FROM pgbench_accounts WHERE aid = ;"));
        assert!(!t.matches("SELECT abalance FROM pgbench_accounts WHERE aid = 1.5;"));
        let t = template("SELECT * FROM t WHERE a = 'x' AND b = 2", d);
        assert!(t.matches("SELECT * FROM t WHERE a = '' AND b = 30"));
        assert!(t.matches("SELECT * FROM t WHERE a = 'ünïcode' AND b = 30"));
        assert!(!t.matches("SELECT * FROM t WHERE a = 'it''s' AND b = 30"));
        assert!(!t.matches("SELECT * FROM t WHERE a = 'a\\' AND b = 30"));
        assert!(!t.matches("SELECT * FROM t WHERE a = 'x' AND b = 2 --"));
    }

    #[test]
    fn literals_that_could_change_the_reading_stay_fixed() {
        for (sql, d) in [
            ("SELECT 1e5, 0x1f, 1.5, 1_000, E'a', 'it''s', U&'x', $1", Dialect::Postgres),
            ("SELECT 12abc, \"s\", 'a\\'b', _utf8'x', ?", Dialect::Mysql),
        ] {
            let t = template(sql, d);
            assert!(t.slots.is_empty(), "{sql}: {t:?}");
            assert!(t.matches(sql));
        }
        // A number followed by a quote, or a string followed by one, is not a slot either way.
        let t = template("SELECT 'a''b'", Dialect::Postgres);
        assert!(t.slots.is_empty());
    }

    /// Literal spellings to fill slots with, including ones that must not match.
    fn fill() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9]{1,6}",
            "'[a-z ]{0,4}'",
            "[0-9]{1,3}[a-z_.$'\"][0-9a-z]{0,2}",
            "'[a-z'\\\\]{0,4}'",
            "[-+*/ ;()'\"#$.a-z0-9]{0,4}",
            Just("--".to_string()),
            Just("/*".to_string()),
            Just("'\n'".to_string()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        /// Whatever fills the slots, a text that matches has the template's skeleton.
        #[test]
        fn a_match_has_the_same_skeleton(
            base in prop::sample::select(vec![
                "SELECT a FROM t WHERE id = 5 AND name = 'x'",
                "UPDATE t SET n = 1, s = 'v' WHERE id = 42;",
                "SELECT 'a' 'b', 3, f(4)-5 FROM u WHERE x IN (1, 2, 3)",
                "INSERT INTO t VALUES (1, 'a'), (2, 'b') -- tail",
                "SELECT * FROM t WHERE a = 1 /* c */ AND b = 'q' # h",
                "SELECT x.1, 1.y, 7:: int, '1' || '2' FROM t LIMIT 10 OFFSET 20",
                "SELECT @a := 5, `c` FROM t WHERE s = 'x'",
                "SELECT $1, 5 FROM t WHERE n=-3",
                "SELECT $q$ 'x' $q$, 'a', 2 FROM t -- '3'",
                "SELECT E'\\'', 'b', 4 /* ' */ , 'c'",
                "SELECT /*!50000 5, 'x' */ 6 FROM t WHERE a='y'#'z'",
                "SELECT _utf8'a', N'b', X'0f', 7 FROM t",
                "SELECT 'a'\n'b', 8, \"q\" FROM t WHERE u = U&'d\\0061'",
                "SELECT a.1e2, 1.e3, .5, 9 FROM t WHERE b = 0x1F OR c = 0b1",
            ]),
            mysql in any::<bool>(),
            fills in prop::collection::vec(fill(), 8),
            fair in prop::collection::vec(("[0-9]{1,6}", "'[a-z 0-9%_]{0,5}'"), 8),
            odd in 0usize..9,
        ) {
            let d = if mysql { Dialect::Mysql } else { Dialect::Postgres };
            let l = lex(base, d);
            prop_assert!(l.error.is_none(), "{}: {:?}", base, l.error);
            let t = Template::from_tokens(base, &l.toks);
            // Rebuild a text: the fixed segments with the fills in the slots.
            let mut text = Vec::new();
            let mut f = 0;
            // Every slot gets a fill of its class, but for slot `odd` (none when past the end),
            // which gets one of any spelling.
            for (i, &(len, slot)) in t.slots.iter().enumerate() {
                text.extend_from_slice(&t.fixed[f..f + len as usize]);
                f += len as usize;
                let (digits, quoted) = &fair[i % fair.len()];
                let fill = match slot {
                    _ if i == odd => &fills[i % fills.len()],
                    Slot::Digits => digits,
                    Slot::Quoted => quoted,
                };
                text.extend_from_slice(fill.as_bytes());
            }
            text.extend_from_slice(&t.fixed[f..]);
            let text = String::from_utf8(text).unwrap();
            if t.matches(&text) {
                let n = lex(&text, d);
                prop_assert!(n.error.is_none(), "{text}");
                let (mut a, mut b) = (String::new(), String::new());
                skeleton(&l.toks, &mut a);
                skeleton(&n.toks, &mut b);
                prop_assert_eq!(a, b, "{} vs {}", base, text);
            }
        }
    }
}
