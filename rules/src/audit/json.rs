//! The audit record's JSON body written by hand, byte for byte what `serde_json::to_vec`
//! writes for [`AuditEvent`] (compact, struct field order, serde_json's string escaping), at a
//! fraction of the cost: the writer thread serialises one record per audited statement. A
//! property test holds the two equal; the hash chain's documented recipe is unchanged.

use super::AuditEvent;

/// Whether any of the 8 bytes of `w` needs escaping (< 0x20, `"` or `\`): the classic
/// "has a byte less than n" / "has a zero byte" word tricks, exact for presence.
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & HIGH != 0
}

/// Append `s` as a JSON string the way serde_json escapes it: `"` and `\` with a backslash,
/// the control characters with their short forms (`\b \t \n \f \r`) or `\u00xx` (lower-case
/// hex); everything else (DEL, non-ASCII) raw. Clean 8-byte runs are skipped a word at a time.
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape(out, s);
    out.push(b'"');
}

/// One JSON string made of `parts` concatenated.
pub(crate) fn string_parts(out: &mut Vec<u8>, parts: &[&str]) {
    out.push(b'"');
    for p in parts {
        escape(out, p);
    }
    out.push(b'"');
}

/// Whether no byte of `bytes` needs escaping: a word at a time, the last (short) word padded
/// with spaces.
fn clean(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    for c in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        if word_needs_escape(u64::from_le_bytes(w)) {
            return false;
        }
    }
    let rest = words.remainder();
    let mut w = [b' '; 8];
    w[..rest.len()].copy_from_slice(rest);
    !word_needs_escape(u64::from_le_bytes(w))
}

/// `s` escaped, without the quotes.
fn escape(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    // Audit fields are almost always clean (names, numbers, fingerprints): one check, one copy.
    if clean(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            if !word_needs_escape(u64::from_le_bytes(w)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x00..=0x1f => 0,
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        i += 1;
        start = i;
        if short != 0 {
            out.extend_from_slice(&[b'\\', short]);
        } else {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

pub(crate) fn number(out: &mut Vec<u8>, v: u64) {
    // itoa writes two digits per step from a table (what serde_json itself uses).
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn strings(out: &mut Vec<u8>, list: &[String]) {
    out.push(b'[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, s);
    }
    out.push(b']');
}

pub(crate) fn key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// The record as `serde_json::to_vec(ev)` writes it.
pub(crate) fn to_vec(ev: &AuditEvent) -> Vec<u8> {
    let text_len = ev.fingerprint.len() + ev.statement.as_ref().map_or(0, String::len);
    let mut out = Vec::with_capacity(448 + text_len);
    out.extend_from_slice(b"{\"time\":");
    string(&mut out, &ev.time);
    key(&mut out, "seq");
    number(&mut out, ev.seq);
    for (name, v) in [
        ("instance", &ev.instance),
        ("protocol", &ev.protocol),
        ("route", &ev.route),
        ("client", &ev.client),
        ("user", &ev.user),
    ] {
        key(&mut out, name);
        string(&mut out, v);
    }
    if !ev.roles.is_empty() {
        key(&mut out, "roles");
        strings(&mut out, &ev.roles);
    }
    for (name, v) in [("database", &ev.database), ("kind", &ev.kind), ("fingerprint", &ev.fingerprint)] {
        key(&mut out, name);
        string(&mut out, v);
    }
    if let Some(st) = &ev.statement {
        key(&mut out, "statement");
        string(&mut out, st);
    }
    key(&mut out, "objects");
    strings(&mut out, &ev.objects);
    key(&mut out, "decision");
    string(&mut out, &ev.decision);
    if !ev.rules.is_empty() {
        key(&mut out, "rules");
        strings(&mut out, &ev.rules);
    }
    for (name, v) in [("rows", ev.rows), ("bytes", ev.bytes), ("duration_us", ev.duration_us)] {
        if let Some(n) = v {
            key(&mut out, name);
            number(&mut out, n);
        }
    }
    if let Some(e) = &ev.error {
        key(&mut out, "error");
        string(&mut out, e);
    }
    if !ev.prev_hash.is_empty() {
        key(&mut out, "prev_hash");
        string(&mut out, &ev.prev_hash);
    }
    if !ev.hash.is_empty() {
        key(&mut out, "hash");
        string(&mut out, &ev.hash);
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same(ev: &AuditEvent) {
        let want = serde_json::to_vec(ev).unwrap();
        let got = to_vec(ev);
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
    }

    #[test]
    fn matches_serde_json_on_typical_and_odd_records() {
        same(&AuditEvent::default());
        same(&AuditEvent { roles: vec!["r".into()], rules: vec!["x".into()], ..AuditEvent::default() });
        same(&AuditEvent {
            time: "2026-11-28T14:56:57.658Z".into(),
            seq: u64::MAX,
            instance: "dgf-1".into(),
            protocol: "mysql".into(),
            route: "r\"oute\\".into(),
            client: "127.0.0.1:58382".into(),
            user: "ü\u{2028}\u{7f}".into(),
            roles: vec!["a".into(), "\u{0}\u{1f}\u{8}\u{c}\n\r\t".into()],
            database: "db".into(),
            kind: "select".into(),
            fingerprint: "select c from t where id=?".into(),
            statement: Some("select 'x'".into()),
            objects: vec!["*.sbtest3".into()],
            decision: "allow".into(),
            rules: vec![],
            rows: Some(0),
            bytes: None,
            duration_us: Some(8955),
            error: Some("1146".into()),
            prev_hash: "0".repeat(64),
            hash: "f".repeat(64),
        });
    }

    #[test]
    fn word_check_finds_every_escape_position() {
        for at in 0..8 {
            for b in (0u8..=0x1f).chain([b'"', b'\\']) {
                let mut w = *b"abcdefgh";
                w[at] = b;
                assert!(word_needs_escape(u64::from_le_bytes(w)), "{b:#x} at {at}");
            }
        }
        for w in [*b"abcdefgh", [0x20; 8], [0x7f; 8], [0xff; 8], *b"!#[]^~ /"] {
            assert!(!word_needs_escape(u64::from_le_bytes(w)), "{w:?}");
        }
    }

    #[test]
    fn short_and_tail_bytes_are_checked() {
        for len in 1..=17 {
            for at in 0..len {
                for b in [0x01u8, 0x1f, b'"', b'\\', b'\n'] {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    let s = String::from_utf8(s).unwrap();
                    let mut out = Vec::new();
                    string(&mut out, &s);
                    assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn escapes_like_serde_json(s in any::<String>(), t in "[ -~\\x00-\\x1f\"\\\\]{0,40}") {
            for s in [&s, &t] {
                let mut out = Vec::new();
                string(&mut out, s);
                prop_assert_eq!(out, serde_json::to_vec(s).unwrap());
            }
        }

        #[test]
        fn equals_serde_json(
            strs in proptest::collection::vec(any::<String>(), 14),
            nums in proptest::collection::vec(any::<Option<u64>>(), 3),
            seq in any::<u64>(),
            statement in any::<Option<String>>(),
            error in any::<Option<String>>(),
            roles in proptest::collection::vec(any::<String>(), 0..3),
            rules in proptest::collection::vec(any::<String>(), 0..3),
            with_prev in any::<bool>(),
        ) {
            let ev = AuditEvent {
                time: strs[0].clone(), seq, instance: strs[1].clone(), protocol: strs[2].clone(),
                route: strs[3].clone(), client: strs[4].clone(), user: strs[5].clone(),
                roles, database: strs[8].clone(),
                kind: strs[9].clone(), fingerprint: strs[10].clone(), statement,
                objects: vec![strs[11].clone()], decision: strs[12].clone(), rules,
                rows: nums[0], bytes: nums[1], duration_us: nums[2], error,
                prev_hash: if with_prev { strs[13].clone() } else { String::new() }, hash: String::new(),
            };
            prop_assert_eq!(to_vec(&ev), serde_json::to_vec(&ev).unwrap());
        }
    }
}
