//! Hand-written SQL lexer for Postgres and MySQL spellings: the single source of truth for where
//! strings, comments and identifiers begin and end.
//!
//! Both the fingerprint and the text handed to sqlparser are rendered from these tokens, so a
//! disagreement between this lexer and the server is the one thing that could hide code from the
//! analyser. The rules follow the servers' own scanners (scan.l, sql_lex.cc):
//! - Postgres: `--` and nested `/* */` comments; `'..'` (doubled quotes, standard_conforming_strings
//!   on), `E'..'` (backslash escapes), `B'..'`, `X'..'`, `N'..'`, `U&'..'`; `$tag$..$tag$`; `"..."`
//!   and `U&"..."` identifiers; `$n` parameters; operators stop before `--` and `/*`.
//! - MySQL: `#` comments; `--` starts a comment only before whitespace/control/end; `/* */` does not
//!   nest; `/*!NNNNN ... */` and `/*M!NNNNNN ... */` are *executed* by the server, so their content
//!   is lexed as code; `'..'` and `"..."` strings with backslash escapes; backtick identifiers; `?`
//!   parameters; `@var` / `@@var`; identifiers may start with a digit.

use super::spelling::{decode_uescape, mysql_numeric_prefix, wkey_fast};
use super::Dialect;

/// Token class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Unquoted identifier or keyword.
    Word,
    /// Quoted identifier; `ident` holds the decoded name.
    QIdent,
    /// String literal of any spelling (prefix included in `text`).
    Str,
    /// Numeric literal.
    Num,
    /// Bind parameter (`$1`, `?`).
    Param,
    /// Operator.
    Op,
    /// Punctuation: `( ) [ ] , ; . : ::` and braces.
    Punct,
    /// MySQL user or system variable (`@v`, `@@session.v`, `@'v'`).
    Var,
    /// Anything else (a stray byte).
    Other,
}

/// One token.
#[derive(Debug, Clone)]
pub(crate) struct Tok<'a> {
    pub kind: Kind,
    /// Original spelling.
    pub text: &'a str,
    /// Decoded identifier for a `QIdent` whose name differs from its body (doubled quotes,
    /// `U&` escapes); see [`Tok::name`].
    pub ident: Option<Box<str>>,
    /// Whitespace or a comment separated this token from the previous one.
    pub space_before: bool,
    /// [`wkey`] of a `Word` (0 for other tokens and words longer than 8 bytes).
    pub key: u64,
}

impl Tok<'_> {
    /// The identifier a `QIdent` names (quotes removed, escapes decoded).
    pub fn name(&self) -> &str {
        if let Some(i) = &self.ident {
            return i;
        }
        let t = self.text;
        let inner = t.get(1..).unwrap_or("");
        match (t.chars().next(), inner.chars().last()) {
            (Some(q), Some(l)) if q == l && !inner.is_empty() => &inner[..inner.len() - l.len_utf8()],
            _ => inner,
        }
    }
}

/// A case-insensitive key for words of up to 8 ASCII bytes (0 otherwise): keyword checks on
/// the hot path become integer compares.
pub(crate) const fn wkey(w: &str) -> u64 {
    let b = w.as_bytes();
    if b.len() > 8 {
        return 0;
    }
    let mut k = 0u64;
    let mut i = 0;
    while i < b.len() {
        let c = b[i].to_ascii_lowercase();
        k |= (c as u64) << (8 * i);
        i += 1;
    }
    k
}

/// Lexer output. `error` is set for unterminated strings/comments/identifiers and spellings the
/// lexer refuses to guess about; the tokens up to that point are still returned.
#[derive(Debug, Default)]
pub(crate) struct Lexed<'a> {
    pub toks: Vec<Tok<'a>>,
    pub error: Option<String>,
}

const PG_OP_CHARS: &[u8] = b"+-*/<>=~!@#%^&|`?";
const MY_OPS: &[&str] =
    &["<=>", "->>", "->", "<=", ">=", "<>", "!=", "<<", ">>", "&&", "||", ":=", "~", "^", "+", "-", "*", "/", "%"];
const MY_OPS_1: &[u8] = b"=<>!&|";

const START: u8 = 1;
const CONT: u8 = 2;
const SPACE: u8 = 4;

impl Lexed<'_> {
    fn with_capacity(bytes: usize) -> Self {
        Self { toks: Vec::with_capacity(bytes / 3 + 8), error: None }
    }
}

/// Byte classes: identifier start/continuation (ASCII letters, `_`, digits, `$`, every byte of a
/// multi-byte character) and whitespace (space, \t, \n, \r, \v, \f).
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 {
            t[i] = START | CONT;
        } else if b.is_ascii_digit() || b == b'$' {
            t[i] = CONT;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            t[i] = SPACE;
        }
        i += 1;
    }
    t
};

#[inline]
fn is_ident_start(b: u8) -> bool {
    CLASS[b as usize] & START != 0
}

#[inline]
fn is_ident_cont(b: u8) -> bool {
    CLASS[b as usize] & CONT != 0
}

#[inline]
fn is_space(b: u8) -> bool {
    CLASS[b as usize] & SPACE != 0
}

/// Lex `sql` in `dialect`.
pub(crate) fn lex(sql: &str, dialect: Dialect) -> Lexed<'_> {
    let mut lx = Lexer {
        s: sql,
        b: sql.as_bytes(),
        i: 0,
        d: dialect,
        out: Lexed::with_capacity(sql.len()),
        space: false,
        in_exec: false,
    };
    lx.run();
    lx.out
}

struct Lexer<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    d: Dialect,
    out: Lexed<'a>,
    space: bool,
    /// Inside a MySQL executable comment (`/*! ... */`).
    in_exec: bool,
}

impl<'a> Lexer<'a> {
    fn at(&self, k: usize) -> u8 {
        self.b.get(self.i + k).copied().unwrap_or(0)
    }

    fn err(&mut self, msg: &str) {
        if self.out.error.is_none() {
            self.out.error = Some(format!("{msg} at byte {}", self.i));
        }
    }

    fn push(&mut self, kind: Kind, start: usize, ident: Option<Box<str>>) {
        let text = &self.s[start..self.i];
        let key = if kind == Kind::Word { wkey_fast(text) } else { 0 };
        self.out.toks.push(Tok { kind, text, ident, space_before: self.space, key });
        self.space = false;
    }

    fn prev_is_wordish(&self) -> bool {
        self.out
            .toks
            .last()
            .is_some_and(|t| matches!(t.kind, Kind::Word | Kind::QIdent | Kind::Var) || matches!(t.text, ")" | "]"))
    }

    fn run(&mut self) {
        while self.i < self.b.len() {
            let c = self.b[self.i];
            if is_space(c) {
                self.i += 1;
                self.space = true;
                continue;
            }
            if self.comment() {
                self.space = true;
                continue;
            }
            let start = self.i;
            match c {
                b'\'' => self.string(start, self.d == Dialect::Mysql),
                b'"' if self.d == Dialect::Mysql => self.string(start, true),
                b'"' => self.quoted_ident(start, b'"'),
                b'`' if self.d == Dialect::Mysql => self.quoted_ident(start, b'`'),
                b'$' if self.d == Dialect::Postgres => self.dollar(start),
                b'?' if self.d == Dialect::Mysql => {
                    self.i += 1;
                    self.push(Kind::Param, start, None);
                }
                b'@' if self.d == Dialect::Mysql => self.variable(start),
                b'0'..=b'9' => self.number_or_word(start),
                b'.' if self.at(1).is_ascii_digit() && !self.prev_is_wordish() => self.number_or_word(start),
                _ if is_ident_start(c) => self.word(start),
                b'$' if self.d == Dialect::Mysql && is_ident_cont(self.at(1)) => self.word(start),
                b'(' | b')' | b'[' | b']' | b',' | b';' | b'.' | b'{' | b'}' => {
                    self.i += 1;
                    self.push(Kind::Punct, start, None);
                }
                b':' if self.d == Dialect::Mysql && self.at(1) == b'=' => {
                    self.i += 2;
                    self.push(Kind::Op, start, None);
                }
                b':' => {
                    self.i += if self.at(1) == b':' { 2 } else { 1 };
                    self.push(Kind::Punct, start, None);
                }
                _ => self.operator(start),
            }
        }
        if self.in_exec {
            self.err("unterminated executable comment");
        }
    }

    /// Skip a comment at the cursor; true if one was consumed.
    fn comment(&mut self) -> bool {
        let (c, n) = (self.at(0), self.at(1));
        match self.d {
            Dialect::Postgres => {
                if c == b'-' && n == b'-' {
                    self.line_comment();
                    true
                } else if c == b'/' && n == b'*' {
                    self.block_comment(true);
                    true
                } else {
                    false
                }
            }
            Dialect::Mysql => {
                if c == b'#' {
                    self.line_comment();
                    true
                } else if c == b'-' && n == b'-' && (self.at(2) <= b' ' || self.at(2) == 0x7f) {
                    // `-- ` needs whitespace or a control character (or the end) after it.
                    self.line_comment();
                    true
                } else if c == b'*' && n == b'/' && self.in_exec {
                    self.i += 2;
                    self.in_exec = false;
                    true
                } else if c == b'/' && n == b'*' {
                    self.mysql_block_comment();
                    true
                } else {
                    false
                }
            }
        }
    }

    fn line_comment(&mut self) {
        while self.i < self.b.len() && self.b[self.i] != b'\n' && self.b[self.i] != b'\r' {
            self.i += 1;
        }
    }

    fn block_comment(&mut self, nests: bool) {
        self.i += 2;
        let mut depth = 1usize;
        while self.i < self.b.len() {
            if self.at(0) == b'*' && self.at(1) == b'/' {
                self.i += 2;
                depth -= 1;
                if depth == 0 {
                    return;
                }
            } else if nests && self.at(0) == b'/' && self.at(1) == b'*' {
                self.i += 2;
                depth += 1;
            } else {
                self.i += 1;
            }
        }
        self.err("unterminated comment");
    }

    /// `/* */`, or an executable `/*!NNNNN` / `/*M!NNNNNN` comment whose content is code.
    fn mysql_block_comment(&mut self) {
        let (bang, mariadb) = match (self.at(2), self.at(3)) {
            (b'!', _) => (3, false),
            (b'M', b'!') => (4, true),
            _ => return self.block_comment(false),
        };
        if self.in_exec {
            // The server rejects nested executable comments; do not guess.
            self.err("nested executable comment");
            return self.block_comment(false);
        }
        self.i += bang;
        let digits = self.b[self.i..].iter().take_while(|b| b.is_ascii_digit()).count();
        let ok = digits == 0 || digits == 5 || (mariadb && digits == 6);
        if !ok {
            // MySQL and MariaDB disagree on where longer version numbers end: refuse.
            self.err("ambiguous version number in executable comment");
        }
        self.i += digits;
        self.in_exec = true;
    }

    fn string(&mut self, start: usize, backslash: bool) {
        let q = self.b[self.i];
        self.i += 1;
        loop {
            match self.b.get(self.i).copied() {
                None => {
                    self.err("unterminated string");
                    break;
                }
                Some(b'\\') if backslash => self.i += 2,
                Some(c) if c == q => {
                    self.i += 1;
                    if self.at(0) == q {
                        self.i += 1;
                    } else {
                        break;
                    }
                }
                Some(_) => self.i += 1,
            }
        }
        self.i = self.i.min(self.b.len());
        self.push(Kind::Str, start, None);
    }

    fn quoted_ident(&mut self, start: usize, q: u8) {
        self.i += 1;
        let body = self.i;
        let mut doubled = false;
        loop {
            match self.b.get(self.i).copied() {
                None => {
                    self.err("unterminated quoted identifier");
                    break;
                }
                Some(c) if c == q => {
                    if self.at(1) == q {
                        self.i += 2;
                        doubled = true;
                    } else {
                        break;
                    }
                }
                Some(_) => self.i += 1,
            }
        }
        let raw = &self.s[body..self.i.min(self.b.len())];
        self.i = (self.i + 1).min(self.b.len());
        let ident = doubled.then(|| {
            let qs = if q == b'"' { "\"" } else { "`" };
            raw.replace(&format!("{qs}{qs}"), qs).into_boxed_str()
        });
        self.push(Kind::QIdent, start, ident);
    }

    /// Postgres `$1` parameter or `$tag$ ... $tag$` string.
    fn dollar(&mut self, start: usize) {
        if self.at(1).is_ascii_digit() {
            self.i += 1;
            while self.at(0).is_ascii_digit() {
                self.i += 1;
            }
            return self.push(Kind::Param, start, None);
        }
        let mut j = self.i + 1;
        if j < self.b.len() && is_ident_start(self.b[j]) {
            while j < self.b.len() && is_ident_cont(self.b[j]) && self.b[j] != b'$' {
                j += 1;
            }
        }
        if self.b.get(j) != Some(&b'$') {
            self.i += 1;
            return self.push(Kind::Other, start, None);
        }
        let tag = &self.s[self.i..=j];
        match self.s[j + 1..].find(tag) {
            Some(k) => self.i = j + 1 + k + tag.len(),
            None => {
                self.err("unterminated dollar-quoted string");
                self.i = self.b.len();
            }
        }
        self.push(Kind::Str, start, None);
    }

    fn variable(&mut self, start: usize) {
        self.i += if self.at(1) == b'@' { 2 } else { 1 };
        match self.at(0) {
            q @ (b'\'' | b'"' | b'`') => {
                // `@'name'`: a quoted variable name, not a literal.
                let mut sub = Lexer {
                    s: self.s,
                    b: self.b,
                    i: self.i,
                    d: self.d,
                    out: Lexed::default(),
                    space: false,
                    in_exec: false,
                };
                if q == b'`' {
                    sub.quoted_ident(self.i, q)
                } else {
                    sub.string(self.i, true)
                }
                self.i = sub.i;
                if let Some(e) = sub.out.error {
                    self.err(&e);
                }
            }
            _ => {
                while self.i < self.b.len() && (is_ident_cont(self.b[self.i]) || self.b[self.i] == b'.') {
                    self.i += 1;
                }
            }
        }
        self.push(Kind::Var, start, None);
    }

    fn word(&mut self, start: usize) {
        while self.i < self.b.len() && is_ident_cont(self.b[self.i]) {
            self.i += 1;
        }
        let w = &self.b[start..self.i];
        let next = self.at(0);
        // String prefixes: E'..' B'..' X'..' N'..' (and MySQL _charset'..'), U&'..', U&"..".
        let prefixed = match self.d {
            Dialect::Postgres => w.len() == 1 && b"eEbBxXnN".contains(&w[0]) && next == b'\'',
            Dialect::Mysql => {
                (w.len() == 1 && b"bBxXnN".contains(&w[0]) && next == b'\'')
                    || (w[0] == b'_' && w.len() > 1 && (next == b'\'' || next == b'"'))
            }
        };
        if prefixed {
            let backslash = self.d == Dialect::Mysql || w[0].eq_ignore_ascii_case(&b'e');
            return self.string(start, backslash);
        }
        if self.d == Dialect::Postgres && w.len() == 1 && w[0].eq_ignore_ascii_case(&b'u') && next == b'&' {
            match self.at(1) {
                b'\'' => {
                    self.i += 1;
                    self.string(start, false);
                    return self.refuse_uescape();
                }
                b'"' => {
                    self.i += 1;
                    self.unicode_ident(start);
                    return self.refuse_uescape();
                }
                _ => {}
            }
        }
        self.push(Kind::Word, start, None);
    }

    /// A custom `UESCAPE` changes how the preceding `U&` token decodes: refuse rather than guess.
    fn refuse_uescape(&mut self) {
        let mut j = self.i;
        while j < self.b.len() && is_space(self.b[j]) {
            j += 1;
        }
        if self.b.len() >= j + 7 && self.b[j..j + 7].eq_ignore_ascii_case(b"uescape") {
            self.err("UESCAPE is not supported");
        }
    }

    /// `U&"d\0061t\+000061"`: decode to the identifier the server sees.
    fn unicode_ident(&mut self, start: usize) {
        let before = self.out.toks.len();
        self.quoted_ident(self.i, b'"');
        if self.out.toks.len() > before {
            let tok = self.out.toks.pop();
            if let Some(tok) = tok {
                match decode_uescape(tok.name()) {
                    Some(s) => self.out.toks.push(Tok {
                        kind: Kind::QIdent,
                        text: &self.s[start..self.i],
                        ident: Some(s.into_boxed_str()),
                        ..tok
                    }),
                    None => {
                        self.err("invalid Unicode escape in identifier");
                        self.out.toks.push(Tok { text: &self.s[start..self.i], ..tok });
                    }
                }
            }
        }
    }

    fn number_or_word(&mut self, start: usize) {
        if self.d == Dialect::Mysql && self.b[self.i] != b'.' {
            // MySQL identifiers may start with a digit: decide on the whole run.
            let mut j = self.i;
            while j < self.b.len() && is_ident_cont(self.b[j]) {
                j += 1;
            }
            let run = &self.s[self.i..j];
            if !mysql_numeric_prefix(run, self.b.get(j).copied(), self.b.get(j + 1).copied()) {
                self.i = j;
                return self.push(Kind::Word, start, None);
            }
        }
        let radix = self.at(0) == b'0' && matches!(self.at(1), b'x' | b'X' | b'o' | b'O' | b'b' | b'B');
        if radix && self.at(2).is_ascii_alphanumeric() {
            self.i += 2;
            while self.i < self.b.len() && (self.b[self.i].is_ascii_alphanumeric() || self.b[self.i] == b'_') {
                self.i += 1;
            }
            return self.push(Kind::Num, start, None);
        }
        let digits = |lx: &mut Self| {
            while lx.i < lx.b.len() && (lx.b[lx.i].is_ascii_digit() || lx.b[lx.i] == b'_') {
                lx.i += 1;
            }
        };
        digits(self);
        if self.at(0) == b'.' && self.at(1) != b'.' {
            self.i += 1;
            digits(self);
        }
        if matches!(self.at(0), b'e' | b'E') {
            let k = if matches!(self.at(1), b'+' | b'-') { 2 } else { 1 };
            if self.at(k).is_ascii_digit() {
                self.i += k;
                digits(self);
            }
        }
        self.push(Kind::Num, start, None);
    }

    fn operator(&mut self, start: usize) {
        match self.d {
            Dialect::Postgres => {
                while self.i < self.b.len() && PG_OP_CHARS.contains(&self.b[self.i]) {
                    // An operator never contains the start of a comment.
                    if self.i > start
                        && ((self.at(0) == b'-' && self.at(1) == b'-') || (self.at(0) == b'/' && self.at(1) == b'*'))
                    {
                        break;
                    }
                    self.i += 1;
                }
                if self.i == start {
                    self.i += self.s[start..].chars().next().map_or(1, char::len_utf8);
                    return self.push(Kind::Other, start, None);
                }
                self.push(Kind::Op, start, None);
            }
            Dialect::Mysql => {
                let rest = &self.s[start..];
                if let Some(op) = MY_OPS.iter().find(|op| rest.starts_with(**op)) {
                    self.i += op.len();
                    return self.push(Kind::Op, start, None);
                }
                let c = self.b[self.i];
                self.i += self.s[start..].chars().next().map_or(1, char::len_utf8);
                let kind = if MY_OPS_1.contains(&c) { Kind::Op } else { Kind::Other };
                self.push(kind, start, None);
            }
        }
    }
}
