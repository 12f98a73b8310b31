//! Fingerprints and the normalised text handed to sqlparser, rendered from one lexer pass.
//!
//! Fingerprint text: comments removed, whitespace collapsed (one space where the client had any),
//! literals and parameters as `?`, `IN (?, ?, ...)` and repeated `VALUES (...)` rows of literals
//! collapsed to one, keywords lower-cased (Postgres: every unquoted word, as the server folds
//! them; MySQL: words in sqlparser's keyword list), quoted identifiers kept with their quotes.
//!
//! Parse text (the analyser's input and cache key): the same token stream with string literals
//! as `''`, numbers as `0`, parameters as `$1` (Postgres) / `?` (MySQL), MySQL words kept as
//! written, plus a few rewrites of spellings sqlparser does not accept but that mean the same
//! thing (`TABLE t` -> `SELECT * FROM t`, MySQL `DO expr` -> `SELECT expr`, `SET @v := x`,
//! `INTO OUTFILE '...'`); the information a rewrite drops is kept in the statement's flags.

use super::lexer::{lex, wkey, Kind, Lexed, Tok};
use super::Dialect;

/// A literal-free statement fingerprint for audit records and grouping.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Normalised text (see module docs).
    pub text: String,
    /// [`stable_hash`] of `text`: the same on every machine and release.
    pub hash: u64,
    /// Number of non-empty statements (`;` outside strings/comments with something after it).
    pub statements: usize,
}

impl Fingerprint {
    /// More than one statement.
    pub fn is_multi_statement(&self) -> bool {
        self.statements > 1
    }
}

/// Fingerprint `sql`. Never fails: unterminated strings or comments run to the end of input.
pub fn fingerprint(sql: &str, dialect: Dialect) -> Fingerprint {
    normalize(sql, dialect, Render::Fingerprint).fingerprint()
}

/// Stable 64-bit hash (FNV-1a over 8-byte words, murmur3 finaliser); not keyed, not for DoS
/// resistance, identical across processes, machines and releases.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    const P: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(P).rotate_left(29);
    }
    let mut w = [0u8; 8];
    let rest = chunks.remainder();
    w[..rest.len()].copy_from_slice(rest);
    h = (h ^ u64::from_le_bytes(w)).wrapping_mul(P);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The `DO expr` statement was rewritten to `SELECT expr` (MySQL).
pub(crate) const FLAG_DO: u8 = 1;
/// `INTO OUTFILE` / `INTO DUMPFILE` was removed from the parse text.
pub(crate) const FLAG_OUTFILE: u8 = 2;

/// One statement of the parse text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct StmtText {
    /// Byte range in [`Normalized::text`].
    pub start: usize,
    /// End of the range.
    pub end: usize,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Tokens that can extend an operator chain (operators, `::`, `[`, AND/OR/IS/...): sqlparser
    /// builds such chains without counting them against its recursion limit.
    pub chain: usize,
}

/// Output of [`normalize`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Normalized {
    /// Fingerprint text.
    pub fp: String,
    /// Parse text, statements separated by `;\n`.
    pub text: String,
    /// Statements in `text`.
    pub stmts: Vec<StmtText>,
    /// Lexer error, if any.
    pub error: Option<String>,
    /// Number of string and numeric literals (parameters excluded).
    pub literals: usize,
    /// Render the fingerprint text.
    want_fp: bool,
    /// Render the parse text.
    want_text: bool,
}

impl Normalized {
    pub(crate) fn fingerprint(self) -> Fingerprint {
        Fingerprint { hash: stable_hash(self.fp.as_bytes()), statements: self.stmts.len(), text: self.fp }
    }
}

/// Postgres truncates identifiers to NAMEDATALEN-1 bytes.
const PG_MAX_IDENT: usize = 63;

/// Is `t` the word with key `k` (see [`wkey`])?
fn eq(t: &Tok<'_>, k: u64) -> bool {
    t.kind == Kind::Word && t.key == k
}

fn any(t: &Tok<'_>, ks: &[u64]) -> bool {
    t.kind == Kind::Word && t.key != 0 && ks.contains(&t.key)
}

/// For words longer than a key holds.
fn any_long(t: &Tok<'_>, ws: &[&str]) -> bool {
    t.kind == Kind::Word && t.key == 0 && ws.iter().any(|w| t.text.eq_ignore_ascii_case(w))
}

const IN: u64 = wkey("in");
const VALUES: u64 = wkey("values");
const VALUE: u64 = wkey("value");
const TABLE: u64 = wkey("table");
const DO: u64 = wkey("do");
const SET: u64 = wkey("set");
const INTO: u64 = wkey("into");
const OUTFILE: u64 = wkey("outfile");
const DUMPFILE: u64 = wkey("dumpfile");
const ROW_WORDS: &[u64] = &[wkey("null"), wkey("true"), wkey("false"), wkey("default")];
const SETOP_WORDS: &[u64] = &[wkey("union"), wkey("except"), wkey("all"), wkey("distinct")];
const OUTFILE_TAIL: &[u64] = &[wkey("from"), wkey("for"), wkey("lock"), wkey("union")];

fn punct(t: &Tok<'_>, p: &str) -> bool {
    t.kind == Kind::Punct && t.text == p
}

fn is_keyword(w: &str) -> bool {
    sqlparser::keywords::ALL_KEYWORDS
        .binary_search_by(|k| {
            let (a, b) = (k.as_bytes(), w.as_bytes());
            let n = a.len().min(b.len());
            for i in 0..n {
                let o = a[i].cmp(&b[i].to_ascii_uppercase());
                if o.is_ne() {
                    return o;
                }
            }
            a.len().cmp(&b.len())
        })
        .is_ok()
}

/// A literal atom: optional sign then a literal or parameter (plus NULL/TRUE/FALSE/DEFAULT in rows).
fn atom(t: &[Tok<'_>], mut i: usize, row: bool) -> Option<usize> {
    if t.get(i).is_some_and(|x| x.kind == Kind::Op && (x.text == "-" || x.text == "+")) {
        i += 1;
    }
    let x = t.get(i)?;
    let ok = matches!(x.kind, Kind::Str | Kind::Num | Kind::Param) || (row && any(x, ROW_WORDS));
    ok.then_some(i + 1)
}

/// `( atom, atom, ... )` starting at `i`: (number of atoms, index after `)`, index after first atom).
fn atom_list(t: &[Tok<'_>], i: usize, row: bool) -> Option<(usize, usize, usize)> {
    if !punct(t.get(i)?, "(") {
        return None;
    }
    let first = atom(t, i + 1, row)?;
    let (mut j, mut n) = (first, 1);
    loop {
        let x = t.get(j)?;
        if punct(x, ")") {
            return Some((n, j + 1, first));
        }
        if !punct(x, ",") {
            return None;
        }
        j = atom(t, j + 1, row)?;
        n += 1;
    }
}

/// Replacement spellings for the parse text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rw {
    SelectStarFrom,
    Select,
    Assign,
}

impl Rw {
    fn text(self) -> &'static str {
        match self {
            Rw::SelectStarFrom => "select * from",
            Rw::Select => "select",
            Rw::Assign => "=",
        }
    }
}

/// What to do with one token of the parse text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Emit {
    Normal,
    Skip,
    /// Parse text only: replace.
    Replace(Rw),
    /// Parse text only: drop (fingerprint keeps it).
    Hide,
}

/// What [`normalize`] renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Render {
    /// Fingerprint and parse text.
    Both,
    /// Fingerprint only.
    Fingerprint,
    /// Parse text only.
    Text,
}

/// Lex `sql` once and render the fingerprint and/or the parse text.
pub(crate) fn normalize(sql: &str, dialect: Dialect, what: Render) -> Normalized {
    normalize_lexed(&lex(sql, dialect), sql.len(), dialect, what)
}

/// [`normalize`] of tokens already lexed from a text of `len` bytes.
pub(crate) fn normalize_lexed(lexed: &Lexed<'_>, len: usize, dialect: Dialect, what: Render) -> Normalized {
    let toks = &lexed.toks;
    let (want_fp, want_text) = (what != Render::Text, what != Render::Fingerprint);
    let mut out = Normalized {
        fp: String::with_capacity(if want_fp { len } else { 0 }),
        text: String::with_capacity(if want_text { len + 8 } else { 0 }),
        stmts: Vec::new(),
        error: lexed.error.clone(),
        literals: toks.iter().filter(|t| matches!(t.kind, Kind::Str | Kind::Num)).count(),
        want_fp,
        want_text,
    };
    let mut start = 0;
    for i in 0..=toks.len() {
        if i == toks.len() || punct(&toks[i], ";") {
            if i > start {
                render_stmt(&toks[start..i], dialect, &mut out);
            }
            start = i + 1;
        }
    }
    out
}

fn plan(t: &[Tok<'_>], dialect: Dialect, flags: &mut u8) -> Vec<Emit> {
    let mut e = vec![Emit::Normal; t.len()];
    let mut i = 0;
    while i < t.len() {
        // IN (lit, lit, ...) -> IN (lit)
        if eq(&t[i], IN) {
            if let Some((_, end, first)) = atom_list(t, i + 1, false) {
                e[first..end - 1].fill(Emit::Skip);
                i = end;
                continue;
            }
        }
        // VALUES (row), (row), ... -> VALUES (row) while rows are literal-only and the same width.
        if eq(&t[i], VALUES) || (dialect == Dialect::Mysql && eq(&t[i], VALUE)) {
            if let Some((n, mut end, _)) = atom_list(t, i + 1, true) {
                while t.get(end).is_some_and(|x| punct(x, ",")) {
                    match atom_list(t, end + 1, true) {
                        Some((m, next, _)) if m == n => {
                            e[end..next].fill(Emit::Skip);
                            end = next;
                        }
                        _ => break,
                    }
                }
                i = end;
                continue;
            }
        }
        // Adjacent string literals concatenate.
        if t[i].kind == Kind::Str && i > 0 && t[i - 1].kind == Kind::Str {
            e[i] = Emit::Skip;
        }
        // TABLE t -> SELECT * FROM t at a query start.
        if eq(&t[i], TABLE) {
            let p = if i == 0 { None } else { Some(&t[i - 1]) };
            let at_query_start = match p {
                None => true,
                Some(p) => punct(p, "(") || any(p, SETOP_WORDS) || any_long(p, &["intersect"]),
            };
            let next_is_name = t.get(i + 1).is_some_and(|n| matches!(n.kind, Kind::Word | Kind::QIdent));
            if at_query_start && next_is_name {
                e[i] = Emit::Replace(Rw::SelectStarFrom);
            }
        }
        i += 1;
    }
    if dialect == Dialect::Mysql {
        mysql_rewrites(t, &mut e, flags);
    }
    e
}

fn mysql_rewrites(t: &[Tok<'_>], e: &mut [Emit], flags: &mut u8) {
    if eq(&t[0], DO) {
        e[0] = Emit::Replace(Rw::Select);
        *flags |= FLAG_DO;
    }
    if eq(&t[0], SET) {
        let mut depth = 0i32;
        for (i, x) in t.iter().enumerate() {
            match (x.kind, x.text) {
                (Kind::Punct, "(") => depth += 1,
                (Kind::Punct, ")") => depth -= 1,
                (Kind::Op, ":=") if depth == 0 => e[i] = Emit::Replace(Rw::Assign),
                _ => {}
            }
        }
    }
    // INTO OUTFILE 'f' [export options] / INTO DUMPFILE 'f': remove (flagged) when followed only
    // by export-option words and strings up to FROM / FOR / LOCK / the end.
    const OPTS: &[u64] = &[
        wkey("fields"),
        wkey("columns"),
        wkey("enclosed"),
        wkey("escaped"),
        wkey("lines"),
        wkey("starting"),
        wkey("by"),
        wkey("set"),
        wkey("charset"),
    ];
    for i in 0..t.len().saturating_sub(2) {
        if eq(&t[i], INTO) && (eq(&t[i + 1], OUTFILE) || eq(&t[i + 1], DUMPFILE)) && t[i + 2].kind == Kind::Str {
            let mut j = i + 3;
            while j < t.len()
                && (t[j].kind == Kind::Str
                    || any(&t[j], OPTS)
                    || any_long(&t[j], &["terminated", "optionally", "character"]))
            {
                j += 1;
            }
            let tail_ok = j == t.len() || any(&t[j], OUTFILE_TAIL);
            if tail_ok {
                e[i..j].fill(Emit::Hide);
            }
            *flags |= FLAG_OUTFILE;
        }
    }
}

/// A `+`/`-` in prefix position directly before a numeric literal or parameter.
fn is_sign(t: &[Tok<'_>], i: usize) -> bool {
    const BEFORE: &[u64] = &[
        wkey("select"),
        wkey("where"),
        wkey("and"),
        wkey("or"),
        wkey("not"),
        wkey("when"),
        wkey("then"),
        wkey("else"),
        wkey("by"),
        wkey("values"),
        wkey("limit"),
        wkey("offset"),
        wkey("between"),
        wkey("like"),
        wkey("in"),
        wkey("is"),
        wkey("return"),
        wkey("set"),
        wkey("having"),
        wkey("on"),
    ];
    let tok = &t[i];
    if tok.kind != Kind::Op || (tok.text != "-" && tok.text != "+") {
        return false;
    }
    if !t.get(i + 1).is_some_and(|n| matches!(n.kind, Kind::Num | Kind::Param)) {
        return false;
    }
    match i.checked_sub(1).map(|p| &t[p]) {
        None => true,
        Some(p) => match p.kind {
            Kind::Op => true,
            Kind::Punct => matches!(p.text, "(" | "," | "[" | "::" | ":"),
            Kind::Word => any(p, BEFORE),
            _ => false,
        },
    }
}

/// Can this token extend an operator chain (see [`StmtText::chain`])?
fn is_chain_token(x: &Tok<'_>) -> bool {
    const WORDS: &[u64] = &[
        wkey("and"),
        wkey("or"),
        wkey("not"),
        wkey("is"),
        wkey("isnull"),
        wkey("notnull"),
        wkey("collate"),
        wkey("at"),
        wkey("like"),
        wkey("ilike"),
        wkey("similar"),
        wkey("between"),
        wkey("in"),
        wkey("escape"),
        wkey("overlaps"),
        wkey("regexp"),
        wkey("rlike"),
        wkey("div"),
        wkey("mod"),
        wkey("xor"),
        wkey("sounds"),
        wkey("member"),
    ];
    match x.kind {
        Kind::Op => true,
        Kind::Punct => x.text == "::" || x.text == "[",
        Kind::Word => any(x, WORDS),
        _ => false,
    }
}

/// Unquoted identifiers sqlparser might split or misread: non-ASCII, `$`, a leading digit.
fn needs_quoting(w: &str, dialect: Dialect) -> bool {
    let b = w.as_bytes();
    b.iter().any(|c| *c >= 0x80 || *c == b'$')
        || (dialect == Dialect::Mysql && b.first().is_some_and(u8::is_ascii_digit))
}

fn wordish(k: Kind) -> bool {
    matches!(k, Kind::Word | Kind::QIdent | Kind::Str | Kind::Num | Kind::Param | Kind::Var)
}

fn needs_sep(prev: Option<Kind>, cur: Kind) -> bool {
    match prev {
        None => false,
        Some(p) => (wordish(p) && wordish(cur)) || (p == Kind::Op && cur == Kind::Op),
    }
}

/// Append `w` ASCII-lower-cased.
fn push_lower(s: &mut String, w: &str) {
    let at = s.len();
    s.push_str(w);
    s[at..].make_ascii_lowercase();
}

fn push_ident(s: &mut String, ident: &str, dialect: Dialect) {
    let (q, qq) = match dialect {
        Dialect::Postgres => ('"', "\"\""),
        Dialect::Mysql => ('`', "``"),
    };
    s.push(q);
    let ident = if dialect == Dialect::Postgres { clip(ident, PG_MAX_IDENT) } else { ident };
    let mut rest = ident;
    while let Some(k) = rest.find(q) {
        s.push_str(&rest[..k]);
        s.push_str(qq);
        rest = &rest[k + 1..];
    }
    s.push_str(rest);
    s.push(q);
}

/// Longest prefix of at most `max` bytes ending on a char boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut n = max;
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// Append token `i` to the fingerprint text.
fn render_fp(t: &[Tok<'_>], i: usize, dialect: Dialect, fp: &mut String, pf: &mut Option<Kind>, gap: &mut bool) {
    let tok = &t[i];
    if is_sign(t, i) {
        // `-1` and `1` are the same shape: the sign belongs to the literal.
        *gap |= tok.space_before;
        return;
    }
    if (pf.is_some() && (tok.space_before || *gap)) || needs_sep(*pf, tok.kind) {
        fp.push(' ');
    }
    *gap = false;
    match tok.kind {
        Kind::Str | Kind::Num | Kind::Param => fp.push('?'),
        Kind::QIdent => push_ident(fp, tok.name(), dialect),
        Kind::Word if dialect == Dialect::Postgres || is_keyword(tok.text) => push_lower(fp, tok.text),
        _ => fp.push_str(tok.text),
    }
    *pf = Some(tok.kind);
}

fn render_stmt(t: &[Tok<'_>], dialect: Dialect, out: &mut Normalized) {
    let mut flags = 0;
    let plan = plan(t, dialect, &mut flags);
    if !out.stmts.is_empty() {
        if out.want_fp {
            out.fp.push_str("; ");
        }
        if out.want_text {
            out.text.push_str(";\n");
        }
    }
    let start = out.text.len();
    let (mut pf, mut pt): (Option<Kind>, Option<Kind>) = (None, None);
    let (mut gap_f, mut gap_t, mut skipping) = (false, false, false);
    let mut chain = 0;
    for (i, (tok, emit)) in t.iter().zip(plan).enumerate() {
        if emit == Emit::Skip {
            if !skipping {
                // Keep the separation before a skipped run, not the spacing inside it.
                gap_f = tok.space_before;
                gap_t = tok.space_before;
            }
            skipping = true;
            continue;
        }
        skipping = false;
        if out.want_fp {
            render_fp(t, i, dialect, &mut out.fp, &mut pf, &mut gap_f);
        }
        // Parse text.
        if !out.want_text {
            continue;
        }
        if emit == Emit::Hide {
            gap_t = true;
            continue;
        }
        let replaced = matches!(emit, Emit::Replace(_));
        chain += usize::from(is_chain_token(tok));
        if (pt.is_some() && (tok.space_before || gap_t || replaced)) || needs_sep(pt, tok.kind) {
            out.text.push(' ');
        }
        gap_t = false;
        match (emit, tok.kind) {
            (Emit::Replace(r), _) => out.text.push_str(r.text()),
            (_, Kind::Str) => out.text.push_str("''"),
            (_, Kind::Num) => out.text.push('0'),
            (_, Kind::Param) => out.text.push_str(if dialect == Dialect::Postgres { "$1" } else { "?" }),
            (_, Kind::QIdent) => push_ident(&mut out.text, tok.name(), dialect),
            (_, Kind::Word) if needs_quoting(tok.text, dialect) => {
                // Never a keyword; quoted so sqlparser reads exactly one identifier.
                let w = if dialect == Dialect::Postgres { tok.text.to_ascii_lowercase() } else { tok.text.to_string() };
                push_ident(&mut out.text, &w, dialect)
            }
            (_, Kind::Word) if dialect == Dialect::Postgres => push_lower(&mut out.text, clip(tok.text, PG_MAX_IDENT)),
            _ => out.text.push_str(tok.text),
        }
        pt = Some(if replaced { Kind::Word } else { tok.kind });
    }
    if out.want_text && out.text.len() == start {
        // Only hidden tokens: keep the statement visible to the parser as an error.
        out.text.push_str("into");
    }
    out.stmts.push(StmtText { start, end: out.text.len(), flags, chain });
}
