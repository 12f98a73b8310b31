//! A minimal BSON walker over raw bytes: element boundaries with offsets, full structural
//! validation with a nesting-depth cap. Used to vet client documents and to splice values.

use super::MongoProtoError as E;

/// One element of a document: its type byte, key and the byte range of its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element<'a> {
    /// BSON type byte.
    pub kind: u8,
    /// Key (UTF-8 not enforced; keys are compared as bytes).
    pub key: &'a [u8],
    /// Offset of the type byte within the document.
    pub start: usize,
    /// Offset of the first value byte.
    pub value_start: usize,
    /// Offset one past the last value byte.
    pub end: usize,
}

/// BSON type bytes dgf cares about by name.
pub mod kind {
    /// UTF-8 string.
    pub const STRING: u8 = 0x02;
    /// Embedded document.
    pub const DOCUMENT: u8 = 0x03;
    /// Array.
    pub const ARRAY: u8 = 0x04;
    /// Null.
    pub const NULL: u8 = 0x0A;
    /// Code with scope.
    pub const CODE_W_SCOPE: u8 = 0x0F;
}

fn i32_at(b: &[u8], at: usize) -> Result<i32, E> {
    let s = b.get(at..at + 4).ok_or(E::Bson("truncated length"))?;
    Ok(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn cstring_end(b: &[u8], at: usize) -> Result<usize, E> {
    let rest = b.get(at..).ok_or(E::Bson("truncated cstring"))?;
    let n = rest.iter().position(|&c| c == 0).ok_or(E::Bson("unterminated cstring"))?;
    Ok(at + n + 1)
}

/// Length of a whole document starting at `at` (checked against the buffer).
pub fn doc_len(b: &[u8], at: usize) -> Result<usize, E> {
    let len = i32_at(b, at)?;
    if len < 5 || at + len as usize > b.len() {
        return Err(E::Bson("bad document length"));
    }
    if b[at + len as usize - 1] != 0 {
        return Err(E::Bson("document not NUL-terminated"));
    }
    Ok(len as usize)
}

fn string_end(b: &[u8], at: usize) -> Result<usize, E> {
    let len = i32_at(b, at)?;
    if len < 1 {
        return Err(E::Bson("bad string length"));
    }
    let end = at + 4 + len as usize;
    if end > b.len() || b[end - 1] != 0 {
        return Err(E::Bson("bad string"));
    }
    Ok(end)
}

/// End offset of a value of type `kind` starting at `at`.
fn value_end(b: &[u8], kind: u8, at: usize) -> Result<usize, E> {
    let fixed = |n: usize| if at + n <= b.len() { Ok(at + n) } else { Err(E::Bson("truncated value")) };
    match kind {
        0x01 | 0x09 | 0x11 | 0x12 => fixed(8),
        0x02 | 0x0D | 0x0E => string_end(b, at),
        0x03 | 0x04 | 0x0F => Ok(at + doc_len(b, at)?),
        0x05 => {
            let len = i32_at(b, at)?;
            if len < 0 {
                return Err(E::Bson("bad binary length"));
            }
            fixed(5 + len as usize)
        }
        0x06 | 0x0A | 0xFF | 0x7F => Ok(at),
        0x07 => fixed(12),
        0x08 => fixed(1),
        0x0B => cstring_end(b, cstring_end(b, at)?),
        0x0C => {
            let e = string_end(b, at)?;
            if e + 12 <= b.len() {
                Ok(e + 12)
            } else {
                Err(E::Bson("truncated dbpointer"))
            }
        }
        0x10 => fixed(4),
        0x13 => fixed(16),
        _ => Err(E::Bson("unknown element type")),
    }
}

/// The elements of the document at `b[at..]` (one level, no recursion).
pub fn elements(b: &[u8], at: usize) -> Result<Vec<Element<'_>>, E> {
    let len = doc_len(b, at)?;
    let end = at + len - 1;
    let mut pos = at + 4;
    let mut out = Vec::new();
    while pos < end {
        let kind = b[pos];
        let key_end = cstring_end(b, pos + 1)?;
        if key_end > end {
            return Err(E::Bson("key past document end"));
        }
        let v_end = value_end(b, kind, key_end)?;
        if v_end > end {
            return Err(E::Bson("value past document end"));
        }
        out.push(Element { kind, key: &b[pos + 1..key_end - 1], start: pos, value_start: key_end, end: v_end });
        pos = v_end;
    }
    if pos != end {
        return Err(E::Bson("document length mismatch"));
    }
    Ok(out)
}

/// Validate a whole document: structure, lengths and nesting depth (the top level is depth 1).
pub fn validate(b: &[u8], max_depth: usize) -> Result<(), E> {
    if doc_len(b, 0)? != b.len() {
        return Err(E::Bson("trailing bytes after document"));
    }
    validate_at(b, 0, 1, max_depth)
}

fn validate_at(b: &[u8], at: usize, depth: usize, max_depth: usize) -> Result<(), E> {
    if depth > max_depth {
        return Err(E::TooDeep(max_depth));
    }
    for e in elements(b, at)? {
        match e.kind {
            kind::DOCUMENT | kind::ARRAY => validate_at(b, e.value_start, depth + 1, max_depth)?,
            kind::STRING | 0x0D | 0x0E if std::str::from_utf8(&b[e.value_start + 4..e.end - 1]).is_err() => {
                return Err(E::Bson("string is not UTF-8"))
            }
            kind::CODE_W_SCOPE => {
                let s_end = string_end(b, e.value_start + 4)?;
                validate_at(b, s_end, depth + 1, max_depth)?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn walks_and_validates() {
        let d = doc! { "a": 1, "b": "x", "c": { "d": [1, 2, { "e": null }] }, "f": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![1,2] } };
        let b = d.to_vec().unwrap();
        validate(&b, 8).unwrap();
        let els = elements(&b, 0).unwrap();
        assert_eq!(els.iter().map(|e| e.key).collect::<Vec<_>>(), vec![&b"a"[..], b"b", b"c", b"f"]);
        assert_eq!(validate(&b, 3), Err(E::TooDeep(3)));
    }

    #[test]
    fn rejects_garbage() {
        assert!(validate(&[5, 0, 0, 0, 1], 8).is_err());
        assert!(validate(&[9, 0, 0, 0, 0x10, b'a', 0, 1, 0], 8).is_err());
        assert!(validate(&[6, 0, 0, 0, 0x42, 0], 8).is_err());
        validate(&[5, 0, 0, 0, 0], 8).unwrap();
    }
}
