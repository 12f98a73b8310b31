//! The hash chain: sealing a record into a line, and checking one line on its own.

use super::{AuditError, AuditEvent};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record of a chain: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `,"hash":"` before the 64 hex digits and `"}` after them.
const HASH_PREFIX: &[u8] = b",\"hash\":\"";
const HASH_SUFFIX: &[u8] = b"\"}";
/// Bytes of `,"hash":"<64 hex>"}` at the end of every line (before the newline).
pub(crate) const SUFFIX_LEN: usize = HASH_PREFIX.len() + 64 + HASH_SUFFIX.len();

/// The two lower-case hex digits of every byte value (one lookup per byte, not two).
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
        i += 1;
    }
    t
};

/// Lower-case hex of `bytes` into `out`, two digits per byte, as far as `out` reaches.
pub fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let [hi, lo] = HEX_PAIRS[usize::from(*b)];
        s.push(char::from(hi));
        s.push(char::from(lo));
    }
    s
}

/// `lower_hex(SHA-256(prev_hash || body))`.
pub(crate) fn chain_hash(prev_hash: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(body);
    hex(&h.finalize())
}

/// The line of a raw record (see raw.rs): `{"time":..,"seq":..,"instance":..` + `fields` (+
/// `,"prev_hash":..` when `with_prev`) + `}`, sealed like [`seal`] does, into `line` (cleared
/// first). `hash` holds the previous record's hash on entry and this record's on return.
pub(crate) fn seal_raw(
    line: &mut Vec<u8>,
    time: &str,
    seq: u64,
    instance_json: &[u8],
    fields: &[u8],
    with_prev: bool,
    hash: &mut String,
) {
    // `time` (RFC 3339) and `hash` (hex) never need JSON escaping: written as they are.
    line.clear();
    line.extend_from_slice(b"{\"time\":\"");
    line.extend_from_slice(time.as_bytes());
    line.extend_from_slice(b"\",\"seq\":");
    super::json::number(line, seq);
    line.extend_from_slice(b",\"instance\":");
    line.extend_from_slice(instance_json);
    line.extend_from_slice(fields);
    if with_prev {
        line.extend_from_slice(b",\"prev_hash\":\"");
        line.extend_from_slice(hash.as_bytes());
        line.push(b'"');
    }
    line.push(b'}');
    let mut h = Sha256::new();
    h.update(hash.as_bytes());
    h.update(&line[..]);
    let digest = h.finalize();
    let mut hex = [0u8; 64];
    hex_into(&digest, &mut hex);
    hash.clear();
    hash.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    line.pop();
    line.extend_from_slice(HASH_PREFIX);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(HASH_SUFFIX);
    line.push(b'\n');
}

fn is_hash(s: &[u8]) -> bool {
    s.len() == 64 && s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Serialises `ev` (whose `seq` is set, `prev_hash` set or empty, and `hash` ignored), chained
/// to the previous record's hash `prev`, into its line, newline included, and returns the line
/// and the record's hash.
pub(crate) fn seal(ev: &mut AuditEvent, prev: &str) -> Result<(Vec<u8>, String), AuditError> {
    ev.hash.clear();
    let mut line = super::json::to_vec(ev);
    if line.last() != Some(&b'}') {
        return Err(AuditError::Encode("record did not serialise to a JSON object".into()));
    }
    let hash = chain_hash(prev, &line);
    line.pop();
    line.reserve(SUFFIX_LEN + 1);
    line.extend_from_slice(HASH_PREFIX);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(HASH_SUFFIX);
    line.push(b'\n');
    ev.hash.clone_from(&hash);
    Ok((line, hash))
}

/// The chain fields of one line, after checking it as far as it can be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checked {
    /// `seq` field.
    pub seq: u64,
    /// `prev_hash` field (None in a compact record, which leaves it to the previous line).
    pub prev_hash: Option<String>,
    /// `hash` field as written in the line.
    pub hash: String,
    /// Whether `hash` equals the hash recomputed from the body and the record's `prev_hash`
    /// (or, without one, the `prev` given to [`check_line`]); None when neither is known.
    pub hash_ok: Option<bool>,
}

/// Only the chain fields; the hash covers the bytes of everything else.
#[derive(Deserialize)]
struct Link {
    seq: u64,
    #[serde(default)]
    prev_hash: Option<String>,
}

/// Checks one line (without its trailing newline); `prev` is the previous record's hash when
/// known (needed for a record without `prev_hash`). `Err` = not a record at all (malformed);
/// `Ok` with `hash_ok == Some(false)` = a well-formed record whose content does not match its
/// hash.
pub(crate) fn check_line(line: &[u8], prev: Option<&str>) -> Result<Checked, String> {
    if line.len() < SUFFIX_LEN + 2 {
        return Err(if line.is_empty() { "empty line".into() } else { "too short to be a record".into() });
    }
    let (head, tail) = line.split_at(line.len() - SUFFIX_LEN);
    let (prefix, rest) = tail.split_at(HASH_PREFIX.len());
    let (hash, suffix) = rest.split_at(64);
    if prefix != HASH_PREFIX || suffix != HASH_SUFFIX || !is_hash(hash) {
        return Err("does not end with ,\"hash\":\"<64 lower-case hex digits>\"}".into());
    }
    let mut body = Vec::with_capacity(head.len() + 1);
    body.extend_from_slice(head);
    body.push(b'}');
    let link: Link = serde_json::from_slice(&body).map_err(|e| format!("not a JSON audit record: {e}"))?;
    if link.prev_hash.as_ref().is_some_and(|p| !is_hash(p.as_bytes())) {
        return Err("prev_hash is not 64 lower-case hex digits".into());
    }
    let hash = String::from_utf8_lossy(hash).into_owned();
    let hash_ok = link.prev_hash.as_deref().or(prev).map(|p| chain_hash(p, &body) == hash);
    Ok(Checked { seq: link.seq, prev_hash: link.prev_hash, hash, hash_ok })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_check_roundtrips_and_matches_documented_recipe() {
        let mut ev = AuditEvent { seq: 7, prev_hash: GENESIS_HASH.into(), user: "alice".into(), ..Default::default() };
        let (line, hash) = seal(&mut ev, GENESIS_HASH).unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        let text = std::str::from_utf8(&line[..line.len() - 1]).unwrap();
        // The documented recipe: cut the 75-byte suffix, append '}', hash prev || body.
        assert_eq!(SUFFIX_LEN, 75);
        let body = format!("{}}}", &text[..text.len() - 75]);
        assert!(!body.contains("\"hash\""), "{body}");
        let mut h = Sha256::new();
        h.update(GENESIS_HASH.as_bytes());
        h.update(body.as_bytes());
        assert_eq!(hex(&h.finalize()), hash);
        // The line is the record as serde_json writes it, with the hash last.
        let back: AuditEvent = serde_json::from_str(text).unwrap();
        assert_eq!(back, ev);
        let c = check_line(text.as_bytes(), None).unwrap();
        let want = Checked { seq: 7, prev_hash: Some(GENESIS_HASH.into()), hash: hash.clone(), hash_ok: Some(true) };
        assert_eq!(c, want);
        // A compact record (no prev_hash) checks against the previous hash it is given.
        let mut next = AuditEvent { seq: 8, user: "bob".into(), ..Default::default() };
        let (line, next_hash) = seal(&mut next, &hash).unwrap();
        let text = std::str::from_utf8(&line[..line.len() - 1]).unwrap();
        assert!(!text.contains("prev_hash"), "{text}");
        assert_eq!(check_line(text.as_bytes(), None).unwrap().hash_ok, None);
        assert_eq!(check_line(text.as_bytes(), Some(&hash)).unwrap().hash_ok, Some(true));
        assert_eq!(check_line(text.as_bytes(), Some(GENESIS_HASH)).unwrap().hash_ok, Some(false));
        let body = format!("{}}}", &text[..text.len() - 75]);
        assert_eq!(chain_hash(&hash, body.as_bytes()), next_hash);
    }

    #[test]
    fn hex_matches_format() {
        let bytes: Vec<u8> = (0..=255).collect();
        let want: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&bytes), want);
        let mut out = [0u8; 16];
        hex_into(&bytes[250..], &mut out);
        assert_eq!(&out[..12], &want.as_bytes()[500..]);
        assert_eq!(out[12..], [0u8; 4], "only as far as the input reaches");
    }

    #[test]
    fn any_byte_change_breaks_the_hash() {
        let mut ev = AuditEvent { seq: 1, prev_hash: GENESIS_HASH.into(), user: "alice".into(), ..Default::default() };
        let (line, _) = seal(&mut ev, GENESIS_HASH).unwrap();
        let text = String::from_utf8(line).unwrap();
        let edited = text.trim_end().replacen("alice", "alicf", 1);
        assert_eq!(check_line(edited.as_bytes(), None).unwrap().hash_ok, Some(false));
        let spaced = text.trim_end().replacen("\"user\":", "\"user\": ", 1);
        assert_eq!(check_line(spaced.as_bytes(), None).unwrap().hash_ok, Some(false));
        // Its own prev_hash wins over the one the caller expects.
        assert_eq!(check_line(text.trim_end().as_bytes(), Some(&"1".repeat(64))).unwrap().hash_ok, Some(true));
        assert!(check_line(b"", None).is_err());
        assert!(check_line(b"{\"seq\":1}", None).is_err());
        assert!(check_line(&text.as_bytes()[..text.len() - 10], None).is_err());
    }
}
