//! Mask functions applied to result values.
//!
//! A [`MaskFn`] is built from a rule's `with = "..."` spec (parsed by `dgf_config`) and applied to
//! one value at a time: [`MaskFn::apply_str`] for protocols whose values are strings (Redis,
//! MongoDB, HTTP), [`MaskFn::apply_pg`] for Postgres result columns, where the output must stay
//! valid for the column's type and wire format.
//!
//! # Functions
//! | spec | on text |
//! |------|---------|
//! | `redact` | the fixed marker [`REDACTED`] (`[REDACTED]`), whatever the length |
//! | `null` | NULL |
//! | `email` | first character of the local part, `***`, `@domain`: `j***@example.com`; anything that is not `local@domain` (no whitespace) becomes [`REDACTED`] |
//! | `partial(keep_first=F, keep_last=L)` | keeps F leading and L trailing characters (Unicode scalar values, not bytes), one `*` per hidden character; a value of at most F+L characters is all `*` |
//! | `hash` | keyed pseudonym: `h:` + the first 16 hex digits (64 bits) of HMAC-SHA-256(key, value) |
//! | `fixed("x")` | `x` |
//!
//! `hash` is deterministic for one key, so hashed columns still join and group; it needs a secret
//! [`HashKey`] (at least 16 bytes) so that nobody can confirm a guess without it. 64 bits: two
//! distinct values collide with probability about n²/2⁶⁵ (≈3·10⁻⁶ for ten million values).
//!
//! # Postgres values
//! Text-format values are UTF-8 (the proxy assumes `client_encoding = UTF8`); binary-format values
//! of text types are the same UTF-8 bytes. NULL stays NULL under every function. By type:
//! - text types ([`PgType::Text`]: text, varchar, bpchar, name, unknown — OIDs 25, 1043, 1042,
//!   19, 705 — plus whatever the caller resolves as text, e.g. citext): as above, in both formats.
//!   A text value that is not UTF-8 gets [`REDACTED`] from `email`/`partial`.
//! - int2/int4/int8: `hash` gives a deterministic integer of the same width (text: decimal,
//!   binary: big-endian), identical for text and binary input, so joins between columns of the
//!   same type still work; `fixed` gives the fixed value if it is an integer that fits; else NULL.
//! - uuid: `hash` gives a deterministic version-8 UUID; `fixed` a valid UUID; else NULL.
//! - bytea: `hash` gives 8 pseudonym bytes (text format `\x<hex>`), computed on the raw bytes
//!   (hex and escape text output both decode); `fixed` the text's UTF-8 bytes; else NULL.
//! - float4/float8, numeric, bool: only `fixed` with a valid literal (properly encoded in binary,
//!   numeric included); everything else is NULL.
//! - json/jsonb and every other type (date/time, arrays, user types...): NULL. Masking inside
//!   JSON needs labels on JSON paths (later); a string would not be a valid value of the type.
//!
//! The input of `hash` is the value's canonical text form (what Postgres sends in text format:
//! decimal for integers, lower-case hyphenated for uuid; raw bytes for bytea), which is why text
//! and binary formats pseudonymise identically.

use dgf_config::{parse_mask_spec, MaskSpec};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

mod pg_values;
use pg_values::*;

/// What `redact` writes for text values.
pub const REDACTED: &str = "[REDACTED]";
/// Prefix of `hash` pseudonyms in text.
pub const HASH_PREFIX: &str = "h:";
/// Hex digits of a `hash` pseudonym after [`HASH_PREFIX`].
pub const HASH_HEX_DIGITS: usize = 16;
/// Shortest accepted [`HashKey`] secret, in bytes.
pub const MIN_HASH_KEY_BYTES: usize = 16;

/// Postgres type OIDs the mask functions know.
pub mod oid {
    /// bool
    pub const BOOL: u32 = 16;
    /// bytea
    pub const BYTEA: u32 = 17;
    /// name
    pub const NAME: u32 = 19;
    /// int8
    pub const INT8: u32 = 20;
    /// int2
    pub const INT2: u32 = 21;
    /// int4
    pub const INT4: u32 = 23;
    /// text
    pub const TEXT: u32 = 25;
    /// json
    pub const JSON: u32 = 114;
    /// float4
    pub const FLOAT4: u32 = 700;
    /// float8
    pub const FLOAT8: u32 = 701;
    /// unknown (untyped literals)
    pub const UNKNOWN: u32 = 705;
    /// bpchar (char(n))
    pub const BPCHAR: u32 = 1042;
    /// varchar
    pub const VARCHAR: u32 = 1043;
    /// numeric
    pub const NUMERIC: u32 = 1700;
    /// uuid
    pub const UUID: u32 = 2950;
    /// jsonb
    pub const JSONB: u32 = 3802;
}

/// Errors building a mask function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// The `with` spec does not parse.
    #[error("{0}")]
    Spec(String),
    /// `hash` was asked for without a key.
    #[error("mask `hash` needs a secret hash key")]
    MissingHashKey,
    /// The hash key is too short to keep pseudonyms unguessable.
    #[error("the mask hash key has {0} bytes; at least {MIN_HASH_KEY_BYTES} are required")]
    WeakHashKey(usize),
}

/// Wire format of a Postgres value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Text (format code 0).
    Text,
    /// Binary (format code 1).
    Binary,
}

impl Format {
    /// From a protocol format code (0 text, 1 binary).
    pub fn from_code(code: i16) -> Option<Format> {
        match code {
            0 => Some(Format::Text),
            1 => Some(Format::Binary),
            _ => None,
        }
    }
}

/// A masked Postgres value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskedValue {
    /// SQL NULL.
    Null,
    /// The value's bytes in the requested format.
    Bytes(Vec<u8>),
}

impl MaskedValue {
    /// The bytes, or `None` for NULL.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            MaskedValue::Null => None,
            MaskedValue::Bytes(b) => Some(b),
        }
    }

    /// Appends the value as a DataRow field: Int32 length (-1 for NULL) and the bytes.
    pub fn encode_field(&self, out: &mut Vec<u8>) {
        match self {
            MaskedValue::Null => out.extend_from_slice(&(-1i32).to_be_bytes()),
            MaskedValue::Bytes(b) => {
                out.extend_from_slice(&i32::try_from(b.len()).unwrap_or(i32::MAX).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
}

/// How a Postgres type is masked; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    /// text, varchar, bpchar, name, unknown (and caller-resolved text types such as citext).
    Text,
    /// int2.
    Int2,
    /// int4.
    Int4,
    /// int8.
    Int8,
    /// float4.
    Float4,
    /// float8.
    Float8,
    /// numeric.
    Numeric,
    /// bool.
    Bool,
    /// uuid.
    Uuid,
    /// bytea.
    Bytea,
    /// json, jsonb.
    Json,
    /// Anything else: masked to NULL.
    Other,
}

impl PgType {
    /// The class of a built-in type OID; unknown OIDs (user types, arrays, extensions) are
    /// [`PgType::Other`]. Resolve extension types such as citext yourself and use
    /// [`MaskFn::apply_pg_type`].
    pub fn from_oid(type_oid: u32) -> PgType {
        match type_oid {
            oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::UNKNOWN => PgType::Text,
            oid::INT2 => PgType::Int2,
            oid::INT4 => PgType::Int4,
            oid::INT8 => PgType::Int8,
            oid::FLOAT4 => PgType::Float4,
            oid::FLOAT8 => PgType::Float8,
            oid::NUMERIC => PgType::Numeric,
            oid::BOOL => PgType::Bool,
            oid::UUID => PgType::Uuid,
            oid::BYTEA => PgType::Bytea,
            oid::JSON | oid::JSONB => PgType::Json,
            _ => PgType::Other,
        }
    }
}

/// The secret behind `hash` pseudonyms. `Debug` does not show it.
#[derive(Clone)]
pub struct HashKey {
    mac: Hmac<Sha256>,
}

impl HashKey {
    /// A key from a secret of at least [`MIN_HASH_KEY_BYTES`] bytes.
    pub fn new(secret: &[u8]) -> Result<HashKey, MaskError> {
        if secret.len() < MIN_HASH_KEY_BYTES {
            return Err(MaskError::WeakHashKey(secret.len()));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| MaskError::WeakHashKey(secret.len()))?;
        Ok(HashKey { mac })
    }

    fn digest(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

/// Keys are equal when they pseudonymise alike (compared by the digest of a fixed probe, so
/// the secret itself is never compared or kept elsewhere): a reload that keeps the key keeps
/// `hash` masks equal.
impl PartialEq for HashKey {
    fn eq(&self, other: &Self) -> bool {
        const PROBE: &[u8] = b"dgf: hash key equality probe";
        self.digest(PROBE) == other.digest(PROBE)
    }
}

impl Eq for HashKey {}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(***)")
    }
}

/// A mask function, ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskFn {
    /// Replace with [`REDACTED`].
    Redact,
    /// Replace with NULL.
    Null,
    /// `j***@example.com`.
    Email,
    /// Keep `keep_first` leading and `keep_last` trailing characters.
    Partial {
        /// Characters kept at the start.
        keep_first: usize,
        /// Characters kept at the end.
        keep_last: usize,
    },
    /// Keyed pseudonym.
    Hash(HashKey),
    /// Replace with this text.
    Fixed(String),
}

impl MaskFn {
    /// Whether its output depends on its input: `email` and `partial` keep pieces of it and
    /// `hash` keeps its equalities. Applied to a value *computed* from a labelled column
    /// (`reverse(ssn)`, `substr(card, 1, 8)`), such a function shows the pieces of the column it
    /// was meant to hide, so a computed value takes the [`for_computed`](Self::for_computed)
    /// function instead.
    pub fn reveals_input(&self) -> bool {
        match self {
            MaskFn::Email | MaskFn::Hash(_) => true,
            MaskFn::Partial { keep_first, keep_last } => keep_first + keep_last > 0,
            MaskFn::Redact | MaskFn::Null | MaskFn::Fixed(_) => false,
        }
    }

    /// The function for a value computed from a column this function masks: itself when it
    /// hides everything, NULL otherwise.
    pub fn for_computed(&self) -> MaskFn {
        if self.reveals_input() {
            MaskFn::Null
        } else {
            self.clone()
        }
    }

    /// Builds the function for a parsed spec; `hash` needs `key`.
    pub fn from_spec(spec: &MaskSpec, key: Option<&HashKey>) -> Result<MaskFn, MaskError> {
        Ok(match spec {
            MaskSpec::Redact => MaskFn::Redact,
            MaskSpec::Null => MaskFn::Null,
            MaskSpec::Email => MaskFn::Email,
            MaskSpec::Partial { keep_first, keep_last } => {
                MaskFn::Partial { keep_first: keep_first.unwrap_or(0), keep_last: keep_last.unwrap_or(0) }
            }
            MaskSpec::Hash => MaskFn::Hash(key.ok_or(MaskError::MissingHashKey)?.clone()),
            MaskSpec::Fixed(text) => MaskFn::Fixed(text.clone()),
        })
    }

    /// Parses a `with` spec (`redact | null | email | partial(...) | hash | fixed("x")`).
    pub fn parse(spec: &str, key: Option<&HashKey>) -> Result<MaskFn, MaskError> {
        Self::from_spec(&parse_mask_spec(spec).map_err(MaskError::Spec)?, key)
    }

    /// Masks a string value; `None` means null / nil.
    pub fn apply_str(&self, s: &str) -> Option<String> {
        Some(match self {
            MaskFn::Redact => REDACTED.to_owned(),
            MaskFn::Null => return None,
            MaskFn::Email => mask_email(s),
            MaskFn::Partial { keep_first, keep_last } => mask_partial(s, *keep_first, *keep_last),
            MaskFn::Hash(key) => text_pseudonym(key, s.as_bytes()),
            MaskFn::Fixed(text) => text.clone(),
        })
    }

    /// Masks one Postgres result value of type `type_oid` in `format`.
    pub fn apply_pg(&self, value: Option<&[u8]>, type_oid: u32, format: Format) -> MaskedValue {
        self.apply_pg_type(value, PgType::from_oid(type_oid), format)
    }

    /// [`apply_pg`](Self::apply_pg) with the type class already resolved (e.g. citext as text).
    pub fn apply_pg_type(&self, value: Option<&[u8]>, ty: PgType, format: Format) -> MaskedValue {
        let Some(value) = value else { return MaskedValue::Null };
        if matches!(self, MaskFn::Null) {
            return MaskedValue::Null;
        }
        let out = match ty {
            PgType::Text => Some(self.mask_text_bytes(value)),
            PgType::Int2 | PgType::Int4 | PgType::Int8 => self.mask_int(value, ty, format),
            PgType::Uuid => self.mask_uuid(value, format),
            PgType::Bytea => self.mask_bytea(value, format),
            PgType::Float4 | PgType::Float8 | PgType::Numeric | PgType::Bool => match self {
                MaskFn::Fixed(text) => encode_fixed_scalar(text, ty, format),
                _ => None,
            },
            PgType::Json | PgType::Other => None,
        };
        out.map_or(MaskedValue::Null, MaskedValue::Bytes)
    }

    fn mask_text_bytes(&self, value: &[u8]) -> Vec<u8> {
        match self {
            MaskFn::Hash(key) => text_pseudonym(key, value).into_bytes(),
            MaskFn::Email | MaskFn::Partial { .. } => match std::str::from_utf8(value) {
                Ok(s) => self.apply_str(s).unwrap_or_default().into_bytes(),
                Err(_) => REDACTED.as_bytes().to_vec(),
            },
            other => other.apply_str("").unwrap_or_default().into_bytes(),
        }
    }

    fn mask_int(&self, value: &[u8], ty: PgType, format: Format) -> Option<Vec<u8>> {
        let width = match ty {
            PgType::Int2 => 2,
            PgType::Int4 => 4,
            _ => 8,
        };
        let n: i64 = match self {
            MaskFn::Hash(key) => {
                let v = decode_int(value, width, format)?;
                let d = key.digest(v.to_string().as_bytes());
                match width {
                    2 => i64::from(i16::from_be_bytes([d[0], d[1]])),
                    4 => i64::from(i32::from_be_bytes([d[0], d[1], d[2], d[3]])),
                    _ => i64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]),
                }
            }
            MaskFn::Fixed(text) => text.trim().parse().ok()?,
            _ => return None,
        };
        encode_int(n, width, format)
    }

    fn mask_uuid(&self, value: &[u8], format: Format) -> Option<Vec<u8>> {
        let uuid = match self {
            MaskFn::Hash(key) => {
                let raw = match format {
                    Format::Binary => <[u8; 16]>::try_from(value).ok()?,
                    Format::Text => parse_uuid(std::str::from_utf8(value).ok()?)?,
                };
                let d = key.digest(uuid_text(&raw).as_bytes());
                let mut u = [0u8; 16];
                u.copy_from_slice(&d[..16]);
                u[6] = (u[6] & 0x0f) | 0x80; // version 8 (custom)
                u[8] = (u[8] & 0x3f) | 0x80; // RFC 4122 variant
                u
            }
            MaskFn::Fixed(text) => parse_uuid(text)?,
            _ => return None,
        };
        Some(match format {
            Format::Binary => uuid.to_vec(),
            Format::Text => uuid_text(&uuid).into_bytes(),
        })
    }

    fn mask_bytea(&self, value: &[u8], format: Format) -> Option<Vec<u8>> {
        let bytes = match self {
            MaskFn::Hash(key) => {
                let raw = match format {
                    Format::Binary => value.to_vec(),
                    Format::Text => decode_bytea_text(value)?,
                };
                key.digest(&raw)[..HASH_HEX_DIGITS / 2].to_vec()
            }
            MaskFn::Fixed(text) => text.as_bytes().to_vec(),
            _ => return None,
        };
        Some(match format {
            Format::Binary => bytes,
            Format::Text => format!("\\x{}", hex(&bytes)).into_bytes(),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text_pseudonym(key: &HashKey, data: &[u8]) -> String {
    let d = key.digest(data);
    format!("{HASH_PREFIX}{}", hex(&d[..HASH_HEX_DIGITS / 2]))
}

fn mask_email(s: &str) -> String {
    let s = s.trim();
    let bad = |part: &str| part.is_empty() || part.chars().any(|c| c.is_whitespace() || c.is_control());
    match s.rsplit_once('@') {
        Some((local, domain)) if !bad(local) && !bad(domain) => {
            let first = local.chars().next().map(String::from).unwrap_or_default();
            format!("{first}***@{domain}")
        }
        _ => REDACTED.to_owned(),
    }
}

fn mask_partial(s: &str, keep_first: usize, keep_last: usize) -> String {
    let n = s.chars().count();
    if keep_first.saturating_add(keep_last) >= n {
        return "*".repeat(n);
    }
    let mut out = String::with_capacity(s.len());
    out.extend(s.chars().take(keep_first));
    out.extend(std::iter::repeat_n('*', n - keep_first - keep_last));
    out.extend(s.chars().skip(n - keep_last));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT_OIDS: [u32; 5] = [oid::TEXT, oid::VARCHAR, oid::BPCHAR, oid::NAME, oid::UNKNOWN];

    fn key(k: &str) -> HashKey {
        HashKey::new(format!("{k}-0123456789abcdef").as_bytes()).unwrap()
    }

    fn f(spec: &str) -> MaskFn {
        MaskFn::parse(spec, Some(&key("k1"))).unwrap()
    }

    fn text(m: &MaskedValue) -> &str {
        std::str::from_utf8(m.as_bytes().unwrap()).unwrap()
    }

    #[test]
    fn every_function_on_ascii_and_multibyte_text() {
        let cases: [(&str, &str, Option<&str>); 14] = [
            ("redact", "secret", Some(REDACTED)),
            ("redact", "日本語", Some(REDACTED)),
            ("null", "x", None),
            ("email", "john.doe@example.com", Some("j***@example.com")),
            ("email", "ñandú@example.es", Some("ñ***@example.es")),
            ("email", "日本@例え.jp", Some("日***@例え.jp")),
            ("partial(keep_last=4)", "4111111111111111", Some("************1111")),
            ("partial(keep_first=1, keep_last=1)", "héllo", Some("h***o")),
            ("partial(keep_first=2)", "日本語テキスト", Some("日本*****")),
            ("partial(keep_first=1,keep_last=2)", "🙂🙃😀😎x", Some("🙂**😎x")),
            ("fixed(\"n/a\")", "whatever", Some("n/a")),
            ("fixed(\"\")", "whatever", Some("")),
            ("fixed(\"—\")", "x", Some("—")),
            ("email", "  jane@example.org ", Some("j***@example.org")),
        ];
        for (spec, input, want) in cases {
            assert_eq!(f(spec).apply_str(input).as_deref(), want, "{spec} on {input:?}");
            for oid in TEXT_OIDS {
                for format in [Format::Text, Format::Binary] {
                    let got = f(spec).apply_pg(Some(input.as_bytes()), oid, format);
                    let want = want.map_or(MaskedValue::Null, |w| MaskedValue::Bytes(w.as_bytes().to_vec()));
                    assert_eq!(got, want, "{spec} on {input:?} as {oid} {format:?}");
                }
            }
        }
    }

    #[test]
    fn email_edge_cases_redact() {
        for s in ["", "plain", "@example.com", "john@", "jo hn@example.com", "john@exa mple.com", "a\u{0}@b.c", "@"] {
            assert_eq!(f("email").apply_str(s).as_deref(), Some(REDACTED), "{s:?}");
        }
        // The last @ separates the domain; everything before it is hidden but the first char.
        assert_eq!(f("email").apply_str("\"a@b\"@example.com").as_deref(), Some("\"***@example.com"));
        assert_eq!(f("email").apply_str("x@localhost").as_deref(), Some("x***@localhost"));
        // Not UTF-8: nothing is revealed.
        let v = f("email").apply_pg(Some(b"j\xffn@example.com"), oid::TEXT, Format::Text);
        assert_eq!(text(&v), REDACTED);
    }

    #[test]
    fn partial_short_values_are_fully_masked() {
        let p = |spec: &str, s: &str| f(spec).apply_str(s).unwrap();
        assert_eq!(p("partial(keep_first=2, keep_last=2)", "abc"), "***");
        assert_eq!(p("partial(keep_first=2, keep_last=2)", "abcd"), "****", "nothing hidden = all hidden");
        assert_eq!(p("partial(keep_first=2, keep_last=2)", "abcde"), "ab*de");
        assert_eq!(p("partial(keep_last=4)", "ü€"), "**");
        assert_eq!(p("partial(keep_last=4)", ""), "");
        let huge = MaskFn::Partial { keep_first: usize::MAX, keep_last: usize::MAX };
        assert_eq!(huge.apply_str("abc").unwrap(), "***");
        let none = MaskFn::Partial { keep_first: 0, keep_last: 0 };
        assert_eq!(none.apply_str("añb").unwrap(), "***");
    }

    #[test]
    fn hash_is_deterministic_per_key_and_differs_across_keys() {
        let k1 = MaskFn::parse("hash", Some(&key("k1"))).unwrap();
        let k1b = MaskFn::parse("hash", Some(&key("k1"))).unwrap();
        let k2 = MaskFn::parse("hash", Some(&key("k2"))).unwrap();
        let a = k1.apply_str("alice@example.com").unwrap();
        assert_eq!(a.len(), HASH_PREFIX.len() + HASH_HEX_DIGITS);
        assert!(a.starts_with("h:") && a[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{a}");
        assert_eq!(a, k1b.apply_str("alice@example.com").unwrap());
        assert_ne!(a, k2.apply_str("alice@example.com").unwrap());
        assert_ne!(a, k1.apply_str("bob@example.com").unwrap());
        // Same pseudonym for every text type and both formats, so joins across them still work.
        for oid in TEXT_OIDS {
            for format in [Format::Text, Format::Binary] {
                assert_eq!(text(&k1.apply_pg(Some(b"alice@example.com"), oid, format)), a);
            }
        }
        assert_eq!(k1.apply_str("日本").unwrap(), k1b.apply_str("日本").unwrap());
    }

    #[test]
    fn hashed_ints_keep_width_and_agree_across_formats() {
        let h = f("hash");
        let h2 = MaskFn::parse("hash", Some(&key("k2"))).unwrap();
        let cases: [(u32, usize, Vec<u8>); 3] = [
            (oid::INT2, 2, 42i16.to_be_bytes().to_vec()),
            (oid::INT4, 4, 42i32.to_be_bytes().to_vec()),
            (oid::INT8, 8, 42i64.to_be_bytes().to_vec()),
        ];
        for (oid, width, bin) in cases {
            let t = h.apply_pg(Some(b"42"), oid, Format::Text);
            let b = h.apply_pg(Some(&bin), oid, Format::Binary);
            let b = b.as_bytes().unwrap();
            assert_eq!(b.len(), width, "oid {oid}");
            let from_bin = match width {
                2 => i64::from(i16::from_be_bytes([b[0], b[1]])),
                4 => i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                _ => i64::from_be_bytes(b.try_into().unwrap()),
            };
            let from_text: i64 = text(&t).parse().unwrap();
            assert_eq!(from_text, from_bin, "oid {oid}: text and binary give the same int");
            match width {
                2 => assert!(text(&t).parse::<i16>().is_ok()),
                4 => assert!(text(&t).parse::<i32>().is_ok()),
                _ => {}
            }
            assert_eq!(h.apply_pg(Some(b"42"), oid, Format::Text), t, "deterministic");
            assert_ne!(h.apply_pg(Some(b"43"), oid, Format::Text), t);
            assert_ne!(h2.apply_pg(Some(b"42"), oid, Format::Text), t, "key-dependent");
            // Undecodable input fails closed.
            assert_eq!(h.apply_pg(Some(b"4x2"), oid, Format::Text), MaskedValue::Null);
            assert_eq!(h.apply_pg(Some(&[1, 2, 3]), oid, Format::Binary), MaskedValue::Null);
        }
    }

    #[test]
    fn masked_ints_stay_valid_ints_or_null() {
        for spec in ["redact", "email", "partial(keep_last=2)", "null", "fixed(\"abc\")", "fixed(\"1.5\")"] {
            for oid in [oid::INT2, oid::INT4, oid::INT8] {
                for format in [Format::Text, Format::Binary] {
                    assert_eq!(f(spec).apply_pg(Some(b"12345"), oid, format), MaskedValue::Null, "{spec} {oid}");
                }
            }
        }
        let zero = f("fixed(\"0\")");
        assert_eq!(text(&zero.apply_pg(Some(b"7"), oid::INT4, Format::Text)), "0");
        assert_eq!(zero.apply_pg(Some(&[0, 7]), oid::INT2, Format::Binary).as_bytes(), Some(&[0u8, 0][..]));
        let neg = f("fixed(\"-2\")").apply_pg(Some(&[0; 8]), oid::INT8, Format::Binary);
        assert_eq!(neg.as_bytes(), Some(&(-2i64).to_be_bytes()[..]));
        assert_eq!(f("fixed(\"70000\")").apply_pg(Some(b"1"), oid::INT2, Format::Text), MaskedValue::Null);
        assert_eq!(text(&f("fixed(\"70000\")").apply_pg(Some(b"1"), oid::INT4, Format::Text)), "70000");
    }

    #[test]
    fn fixed_floats_numerics_bools_encode_correctly() {
        let fx = |spec: &str, oid: u32, format: Format| f(spec).apply_pg(Some(b"1"), oid, format);
        assert_eq!(fx("fixed(\"1.5\")", oid::FLOAT8, Format::Binary).as_bytes(), Some(&1.5f64.to_be_bytes()[..]));
        assert_eq!(fx("fixed(\"1.5\")", oid::FLOAT4, Format::Binary).as_bytes(), Some(&[0x3f, 0xc0, 0, 0][..]));
        assert_eq!(text(&fx("fixed(\"1.5\")", oid::FLOAT4, Format::Text)), "1.5");
        assert_eq!(text(&fx("fixed(\"-inf\")", oid::FLOAT8, Format::Text)), "-Infinity");
        assert_eq!(text(&fx("fixed(\"nan\")", oid::FLOAT8, Format::Text)), "NaN");
        assert_eq!(fx("fixed(\"x\")", oid::FLOAT8, Format::Text), MaskedValue::Null);
        assert_eq!(fx("redact", oid::FLOAT8, Format::Binary), MaskedValue::Null);
        assert_eq!(fx("hash", oid::FLOAT8, Format::Binary), MaskedValue::Null);

        let num = |s: &str| fx(&format!("fixed(\"{s}\")"), oid::NUMERIC, Format::Binary);
        assert_eq!(num("0").as_bytes(), Some(&[0u8; 8][..]));
        assert_eq!(num("123.45").as_bytes(), Some(&[0, 2, 0, 0, 0, 0, 0, 2, 0, 0x7b, 0x11, 0x94][..]));
        assert_eq!(num("-0.001").as_bytes(), Some(&[0, 1, 0xff, 0xff, 0x40, 0, 0, 3, 0, 10][..]));
        assert_eq!(num("10000").as_bytes(), Some(&[0, 1, 0, 1, 0, 0, 0, 0, 0, 1][..]));
        assert_eq!(num("NaN").as_bytes(), Some(&[0, 0, 0, 0, 0xc0, 0, 0, 0][..]));
        assert_eq!(num("1e5"), MaskedValue::Null);
        assert_eq!(num("1.2.3"), MaskedValue::Null);
        let numt = |s: &str| fx(&format!("fixed(\"{s}\")"), oid::NUMERIC, Format::Text);
        assert_eq!(text(&numt("+007.50")), "7.50");
        assert_eq!(text(&numt("-0")), "0");
        assert_eq!(text(&numt(".5")), "0.5");
        assert_eq!(numt("-"), MaskedValue::Null);

        assert_eq!(text(&fx("fixed(\"true\")", oid::BOOL, Format::Text)), "t");
        assert_eq!(fx("fixed(\"off\")", oid::BOOL, Format::Binary).as_bytes(), Some(&[0u8][..]));
        assert_eq!(fx("fixed(\"maybe\")", oid::BOOL, Format::Text), MaskedValue::Null);
    }

    #[test]
    fn uuid_hash_is_a_stable_valid_uuid() {
        let h = f("hash");
        let u = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        let raw = parse_uuid(u).unwrap();
        let t = h.apply_pg(Some(u.as_bytes()), oid::UUID, Format::Text);
        let b = h.apply_pg(Some(&raw), oid::UUID, Format::Binary);
        let upper = h.apply_pg(Some(u.to_uppercase().as_bytes()), oid::UUID, Format::Text);
        assert_eq!(t, upper, "canonical input");
        let t = text(&t).to_owned();
        assert_eq!(t.len(), 36);
        assert_eq!(parse_uuid(&t).unwrap().as_slice(), b.as_bytes().unwrap());
        assert_eq!(&t[14..15], "8", "version 8");
        assert!(matches!(&t[19..20], "8" | "9" | "a" | "b"), "variant: {t}");
        assert_ne!(t, u);
        assert_eq!(h.apply_pg(Some(b"not-a-uuid"), oid::UUID, Format::Text), MaskedValue::Null);
        let fixed = f("fixed(\"{00000000000000000000000000000000}\")");
        assert_eq!(
            text(&fixed.apply_pg(Some(u.as_bytes()), oid::UUID, Format::Text)),
            "00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(f("redact").apply_pg(Some(u.as_bytes()), oid::UUID, Format::Text), MaskedValue::Null);
    }

    #[test]
    fn bytea_hash_agrees_across_output_forms() {
        let h = f("hash");
        let hex_form = h.apply_pg(Some(b"\\x01025c"), oid::BYTEA, Format::Text);
        let escape_form = h.apply_pg(Some(b"\\001\\002\\\\"), oid::BYTEA, Format::Text);
        let binary = h.apply_pg(Some(&[1, 2, b'\\']), oid::BYTEA, Format::Binary);
        assert_eq!(hex_form, escape_form);
        let t = text(&hex_form);
        assert!(t.starts_with("\\x") && t.len() == 2 + HASH_HEX_DIGITS, "{t}");
        assert_eq!(format!("\\x{}", hex(binary.as_bytes().unwrap())), t);
        assert_eq!(h.apply_pg(Some(b"\\x0"), oid::BYTEA, Format::Text), MaskedValue::Null);
        assert_eq!(text(&f("fixed(\"ab\")").apply_pg(Some(b"\\x00"), oid::BYTEA, Format::Text)), "\\x6162");
        assert_eq!(f("partial(keep_last=1)").apply_pg(Some(b"\\x00"), oid::BYTEA, Format::Text), MaskedValue::Null);
    }

    #[test]
    fn json_other_types_and_nulls_become_null() {
        for spec in ["redact", "email", "partial(keep_last=1)", "hash", "fixed(\"{}\")", "null"] {
            for oid in [oid::JSON, oid::JSONB, 1082, 1114, 1184, 1009, 16_385] {
                for format in [Format::Text, Format::Binary] {
                    assert_eq!(f(spec).apply_pg(Some(b"{\"a\":1}"), oid, format), MaskedValue::Null, "{spec} {oid}");
                }
            }
            for oid in TEXT_OIDS.into_iter().chain([oid::INT4, oid::UUID]) {
                assert_eq!(f(spec).apply_pg(None, oid, Format::Text), MaskedValue::Null, "NULL stays NULL");
            }
        }
        // A caller that resolved citext can mask it as text.
        let v = f("email").apply_pg_type(Some(b"jo@x.io"), PgType::Text, Format::Binary);
        assert_eq!(text(&v), "j***@x.io");
    }

    #[test]
    fn building_from_specs_and_keys() {
        assert!(matches!(MaskFn::parse("hash", None), Err(MaskError::MissingHashKey)));
        assert!(matches!(MaskFn::parse("blur", None), Err(MaskError::Spec(e)) if e.contains("unknown mask")));
        assert!(matches!(
            MaskFn::parse("partial(keep_last=4)", None),
            Ok(MaskFn::Partial { keep_first: 0, keep_last: 4 })
        ));
        assert!(matches!(MaskFn::parse("fixed('x')", None), Ok(MaskFn::Fixed(t)) if t == "x"));
        assert_eq!(HashKey::new(b"short").unwrap_err(), MaskError::WeakHashKey(5));
        assert_eq!(format!("{:?}", key("secret")), "HashKey(***)");
        assert_eq!(Format::from_code(1), Some(Format::Binary));
        assert_eq!(Format::from_code(2), None);
    }

    #[test]
    fn encode_field_writes_datarow_fields() {
        let mut out = Vec::new();
        MaskedValue::Null.encode_field(&mut out);
        MaskedValue::Bytes(b"ab".to_vec()).encode_field(&mut out);
        assert_eq!(out, [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2, b'a', b'b']);
    }
}
