//! Result rows: locate the values of a text-protocol row (length-encoded strings, 0xFB for
//! NULL) or a binary-protocol row (NULL bitmap + typed values), and rebuild a row with some
//! values replaced (masking). Values are borrowed; nothing is decoded beyond boundaries.

use super::error::MyProtoError;
use super::packets::{put_lenenc_bytes, Reader};
use bytes::{BufMut, BytesMut};
use std::ops::Range;

/// Column type bytes (`MYSQL_TYPE_*`) the row codecs need.
pub mod ty {
    /// DECIMAL.
    pub const DECIMAL: u8 = 0x00;
    /// TINYINT.
    pub const TINY: u8 = 0x01;
    /// SMALLINT.
    pub const SHORT: u8 = 0x02;
    /// INT.
    pub const LONG: u8 = 0x03;
    /// FLOAT.
    pub const FLOAT: u8 = 0x04;
    /// DOUBLE.
    pub const DOUBLE: u8 = 0x05;
    /// NULL.
    pub const NULL: u8 = 0x06;
    /// BIGINT.
    pub const LONGLONG: u8 = 0x08;
    /// MEDIUMINT.
    pub const INT24: u8 = 0x09;
    /// YEAR.
    pub const YEAR: u8 = 0x0d;
    /// VARCHAR.
    pub const VARCHAR: u8 = 0x0f;
    /// NEWDECIMAL.
    pub const NEWDECIMAL: u8 = 0xf6;
    /// ENUM.
    pub const ENUM: u8 = 0xf7;
    /// SET.
    pub const SET: u8 = 0xf8;
    /// VAR_STRING.
    pub const VAR_STRING: u8 = 0xfd;
    /// STRING (CHAR).
    pub const STRING: u8 = 0xfe;
}

/// Whether a column type carries character or byte strings.
pub fn is_string_type(t: u8) -> bool {
    matches!(t, ty::VARCHAR | ty::ENUM | ty::SET | 0xf9..=0xfc | ty::VAR_STRING | ty::STRING)
}

/// Byte ranges of each value of a text-protocol row (`None` for NULL).
pub fn text_row(payload: &[u8], ncols: usize) -> Result<Vec<Option<Range<usize>>>, MyProtoError> {
    let mut out = Vec::with_capacity(ncols);
    let mut r = Reader::new(payload, "text row");
    for _ in 0..ncols {
        if r.rest().first() == Some(&0xfb) {
            r.take(1)?;
            out.push(None);
            continue;
        }
        let before = payload.len() - r.rest().len();
        let v = r.lenenc_bytes()?;
        let start = payload.len() - r.rest().len() - v.len();
        debug_assert!(start >= before);
        out.push(Some(start..start + v.len()));
    }
    Ok(out)
}

fn fixed_len(t: u8) -> Option<usize> {
    match t {
        ty::TINY => Some(1),
        ty::SHORT | ty::YEAR => Some(2),
        ty::LONG | ty::INT24 | ty::FLOAT => Some(4),
        ty::LONGLONG | ty::DOUBLE => Some(8),
        ty::NULL => Some(0),
        _ => None,
    }
}

/// Byte ranges of each value of a binary-protocol row (header 0x00, NULL bitmap with offset
/// 2, values) for columns of `types` (`None` for NULL).
pub fn binary_row(payload: &[u8], types: &[u8]) -> Result<Vec<Option<Range<usize>>>, MyProtoError> {
    let n = types.len();
    let bitmap_len = (n + 9) / 8;
    if payload.first() != Some(&0x00) || payload.len() < 1 + bitmap_len {
        return Err(MyProtoError::Malformed("binary row header"));
    }
    let bitmap = &payload[1..1 + bitmap_len];
    let mut at = 1 + bitmap_len;
    let mut out = Vec::with_capacity(n);
    for (i, &t) in types.iter().enumerate() {
        let bit = i + 2;
        if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
            out.push(None);
            continue;
        }
        let range = match fixed_len(t) {
            Some(len) => at..at + len,
            None if matches!(t, 0x07 | 0x0a | 0x0b | 0x0c) => {
                // temporal: 1-byte length then that many bytes
                let len = *payload.get(at).ok_or(MyProtoError::Truncated("binary row"))? as usize;
                at..at + 1 + len
            }
            None => {
                let mut r = Reader::new(&payload[at..], "binary row");
                let v = r.lenenc_bytes()?;
                let hdr = payload.len() - at - r.rest().len() - v.len();
                at..at + hdr + v.len()
            }
        };
        if range.end > payload.len() {
            return Err(MyProtoError::Truncated("binary row"));
        }
        at = range.end;
        out.push(Some(range));
    }
    Ok(out)
}

/// The value bytes inside a binary-row field range (without its length prefix).
pub fn binary_value<'a>(payload: &'a [u8], range: &Range<usize>, column_type: u8) -> &'a [u8] {
    let field = &payload[range.clone()];
    if fixed_len(column_type).is_some() {
        return field;
    }
    if matches!(column_type, 0x07 | 0x0a | 0x0b | 0x0c) {
        return field.get(1..).unwrap_or_default();
    }
    let mut r = Reader::new(field, "binary value");
    r.lenenc_bytes().unwrap_or_default()
}

/// How one value is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replace {
    /// Keep the original bytes.
    Keep,
    /// SQL NULL.
    Null,
    /// These bytes as a length-encoded string (text rows; string columns of binary rows).
    Bytes(Vec<u8>),
}

/// Rebuild a text row.
pub fn rebuild_text_row(payload: &[u8], fields: &[Option<Range<usize>>], with: &[Replace]) -> Vec<u8> {
    let mut b = BytesMut::with_capacity(payload.len() + 16);
    for (i, f) in fields.iter().enumerate() {
        match (with.get(i).unwrap_or(&Replace::Keep), f) {
            (Replace::Keep, None) | (Replace::Null, _) => b.put_u8(0xfb),
            (Replace::Keep, Some(r)) => put_lenenc_bytes(&mut b, &payload[r.clone()]),
            (Replace::Bytes(v), _) => put_lenenc_bytes(&mut b, v),
        }
    }
    b.to_vec()
}

/// Rebuild a binary row. `Bytes` is only valid for string columns (callers turn other
/// masked values into `Null`).
pub fn rebuild_binary_row(payload: &[u8], fields: &[Option<Range<usize>>], with: &[Replace]) -> Vec<u8> {
    let n = fields.len();
    let bitmap_len = (n + 9) / 8;
    let mut bitmap = payload[1..1 + bitmap_len].to_vec();
    let mut values = BytesMut::with_capacity(payload.len());
    for (i, f) in fields.iter().enumerate() {
        let bit = i + 2;
        match (with.get(i).unwrap_or(&Replace::Keep), f) {
            (Replace::Keep, Some(r)) => values.put_slice(&payload[r.clone()]),
            (Replace::Keep, None) => {}
            (Replace::Null, _) => bitmap[bit / 8] |= 1 << (bit % 8),
            (Replace::Bytes(v), _) => {
                bitmap[bit / 8] &= !(1 << (bit % 8));
                put_lenenc_bytes(&mut values, v);
            }
        }
    }
    let mut out = Vec::with_capacity(1 + bitmap_len + values.len());
    out.push(0);
    out.extend_from_slice(&bitmap);
    out.extend_from_slice(&values);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_row_roundtrip_with_mask() {
        let p = b"\x011\xfb\x05a@b.c";
        let f = text_row(p, 3).unwrap();
        assert_eq!(f, vec![Some(1..2), None, Some(4..9)]);
        let out = rebuild_text_row(p, &f, &[Replace::Keep, Replace::Keep, Replace::Bytes(b"x".to_vec())]);
        assert_eq!(out, b"\x011\xfb\x01x");
        assert!(text_row(b"\x05ab", 1).is_err());
    }

    #[test]
    fn binary_row_roundtrip_with_mask() {
        // INT 7, VARCHAR "abc", NULL DOUBLE
        let mut p = vec![0x00, 0b0001_0000];
        p.extend_from_slice(&7i32.to_le_bytes());
        p.extend_from_slice(b"\x03abc");
        let types = [ty::LONG, ty::VAR_STRING, ty::DOUBLE];
        let f = binary_row(&p, &types).unwrap();
        assert_eq!(f, vec![Some(2..6), Some(6..10), None]);
        assert_eq!(binary_value(&p, &(6..10), ty::VAR_STRING), b"abc");
        assert_eq!(binary_value(&p, &(2..6), ty::LONG), &7i32.to_le_bytes());
        let out = rebuild_binary_row(&p, &f, &[Replace::Null, Replace::Bytes(b"xy".to_vec()), Replace::Keep]);
        assert_eq!(out, vec![0x00, 0b0001_0100, 2, b'x', b'y']);
        assert_eq!(binary_row(&out, &types).unwrap(), vec![None, Some(2..5), None]);
    }

    #[test]
    fn garbage_never_panics() {
        for n in 0..40usize {
            let data: Vec<u8> = (0..n).map(|i| (i * 53 + 7) as u8).collect();
            let _ = text_row(&data, 4);
            let _ = binary_row(&data, &[ty::LONG, ty::VAR_STRING, 0x0c, ty::TINY]);
        }
    }
}
