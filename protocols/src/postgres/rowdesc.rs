//! RowDescription decoding: what the masking layer needs of each result column.

use super::error::PgProtoError;
use super::frame::{get_cstr, get_i16, get_i32};

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDesc<'a> {
    /// Column name (alias).
    pub name: &'a str,
    /// OID of the table the column comes from directly, 0 for expressions.
    pub table_oid: u32,
    /// Attribute number within that table, 0 for expressions.
    pub attnum: i16,
    /// Type OID.
    pub type_oid: u32,
    /// Format code (0 text, 1 binary; always 0 in a statement Describe).
    pub format: i16,
}

/// Hard cap on columns (Postgres allows 1664 in a result).
pub const MAX_FIELDS: usize = 4096;

/// Decode a RowDescription body.
pub fn row_description(mut body: &[u8]) -> Result<Vec<FieldDesc<'_>>, PgProtoError> {
    let n = get_i16(&mut body, "RowDescription count")?;
    let n = usize::try_from(n).map_err(|_| PgProtoError::Truncated("RowDescription count"))?;
    if n > MAX_FIELDS {
        return Err(PgProtoError::Truncated("RowDescription too many fields"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let name = get_cstr(&mut body, "field name")?;
        let table_oid = get_i32(&mut body, "table oid")? as u32;
        let attnum = get_i16(&mut body, "attnum")?;
        let type_oid = get_i32(&mut body, "type oid")? as u32;
        let _typlen = get_i16(&mut body, "type length")?;
        let _typmod = get_i32(&mut body, "type modifier")?;
        let format = get_i16(&mut body, "format")?;
        out.push(FieldDesc { name, table_oid, attnum, type_oid, format });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_two_fields() {
        let mut b = vec![0, 2];
        for (name, oid, att, ty, fmt) in [("id", 16384u32, 1i16, 23u32, 0i16), ("e", 0, 0, 25, 1)] {
            b.extend_from_slice(name.as_bytes());
            b.push(0);
            b.extend_from_slice(&oid.to_be_bytes());
            b.extend_from_slice(&att.to_be_bytes());
            b.extend_from_slice(&ty.to_be_bytes());
            b.extend_from_slice(&(-1i16).to_be_bytes());
            b.extend_from_slice(&(-1i32).to_be_bytes());
            b.extend_from_slice(&fmt.to_be_bytes());
        }
        let f = row_description(&b).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].name, f[0].table_oid, f[0].attnum, f[0].type_oid, f[0].format), ("id", 16384, 1, 23, 0));
        assert_eq!((f[1].name, f[1].table_oid, f[1].format), ("e", 0, 1));
        assert!(row_description(&b[..b.len() - 1]).is_err());
        assert!(row_description(&[0xff, 0xff]).is_err());
    }
}
