//! Lazy decoders and builders for the packets the proxy must understand: length-encoded
//! integers and strings, OK / ERR / EOF, column definitions (only the names governance needs;
//! the bytes themselves are always forwarded as the server sent them), COM_STMT_PREPARE_OK and
//! COM_STMT_EXECUTE headers.

use super::consts::{cap, status};
use super::error::MyProtoError;
use bytes::{BufMut, BytesMut};

/// A cursor over a packet payload.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Read `buf`, naming the packet `what` in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }
    /// Bytes left.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }
    /// Nothing left.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// Take `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], MyProtoError> {
        if self.buf.len() < n {
            return Err(MyProtoError::Truncated(self.what));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8, MyProtoError> {
        Ok(self.take(1)?[0])
    }
    /// Little-endian u16.
    pub fn u16(&mut self) -> Result<u16, MyProtoError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    /// Little-endian u32.
    pub fn u32(&mut self) -> Result<u32, MyProtoError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// Length-encoded integer.
    pub fn lenenc(&mut self) -> Result<u64, MyProtoError> {
        match self.u8()? {
            n @ 0..=0xfa => Ok(n as u64),
            0xfc => Ok(self.u16()? as u64),
            0xfd => {
                let b = self.take(3)?;
                Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]) as u64)
            }
            0xfe => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Ok(u64::from_le_bytes(a))
            }
            _ => Err(MyProtoError::Malformed("invalid length-encoded integer")),
        }
    }
    /// Length-encoded string.
    pub fn lenenc_bytes(&mut self) -> Result<&'a [u8], MyProtoError> {
        let n = self.lenenc()?;
        let n = usize::try_from(n).map_err(|_| MyProtoError::Truncated(self.what))?;
        self.take(n)
    }
    /// NUL-terminated string (the NUL is consumed). A missing NUL takes the rest.
    pub fn nul_bytes(&mut self) -> &'a [u8] {
        match self.buf.iter().position(|&b| b == 0) {
            Some(i) => {
                let s = &self.buf[..i];
                self.buf = &self.buf[i + 1..];
                s
            }
            None => std::mem::take(&mut self.buf),
        }
    }
    /// NUL-terminated UTF-8 string.
    pub fn nul_str(&mut self, field: &'static str) -> Result<&'a str, MyProtoError> {
        std::str::from_utf8(self.nul_bytes()).map_err(|_| MyProtoError::InvalidUtf8(field))
    }
}

/// Append a length-encoded integer.
pub fn put_lenenc(dst: &mut BytesMut, n: u64) {
    match n {
        0..=0xfa => dst.put_u8(n as u8),
        0xfb..=0xffff => {
            dst.put_u8(0xfc);
            dst.put_u16_le(n as u16);
        }
        0x1_0000..=0xff_ffff => {
            dst.put_u8(0xfd);
            dst.put_uint_le(n, 3);
        }
        _ => {
            dst.put_u8(0xfe);
            dst.put_u64_le(n);
        }
    }
}

/// Append a length-encoded string.
pub fn put_lenenc_bytes(dst: &mut BytesMut, b: &[u8]) {
    put_lenenc(dst, b.len() as u64);
    dst.put_slice(b);
}

/// A decoded OK packet (header 0x00, or 0xFE as the end of a result set with DEPRECATE_EOF).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OkPacket {
    /// Affected rows.
    pub affected_rows: u64,
    /// Last insert id.
    pub last_insert_id: u64,
    /// Server status flags.
    pub status: u16,
    /// Warnings.
    pub warnings: u16,
    /// Human-readable info.
    pub info: Vec<u8>,
    /// Session state changes (raw, only with CLIENT_SESSION_TRACK).
    pub session_state: Vec<u8>,
}

impl OkPacket {
    /// Decode an OK packet negotiated with `caps` (looks at SESSION_TRACK).
    pub fn parse(payload: &[u8], caps: u32) -> Result<OkPacket, MyProtoError> {
        let mut r = Reader::new(payload, "OK");
        let h = r.u8()?;
        if h != 0x00 && h != 0xfe {
            return Err(MyProtoError::Malformed("not an OK packet"));
        }
        let affected_rows = r.lenenc()?;
        let last_insert_id = r.lenenc()?;
        let status = r.u16()?;
        let warnings = r.u16()?;
        let mut ok = OkPacket { affected_rows, last_insert_id, status, warnings, ..Default::default() };
        if caps & cap::SESSION_TRACK != 0 {
            if !r.is_empty() {
                ok.info = r.lenenc_bytes()?.to_vec();
            }
            if status & status::SESSION_STATE_CHANGED != 0 && !r.is_empty() {
                ok.session_state = r.lenenc_bytes()?.to_vec();
            }
        } else if !r.is_empty() {
            // Servers write the message length-encoded (net_store_data) although the protocol
            // documentation says string<EOF>; clients (libmysqlclient, libmariadb) read it so.
            let rest = r.rest();
            ok.info = match r.lenenc_bytes() {
                Ok(b) if r.is_empty() => b.to_vec(),
                _ => rest.to_vec(),
            };
        }
        Ok(ok)
    }

    /// Encode for a peer that negotiated `caps`, with header byte `header` (0x00 or 0xFE).
    pub fn encode(&self, dst: &mut BytesMut, header: u8, caps: u32) {
        dst.put_u8(header);
        put_lenenc(dst, self.affected_rows);
        put_lenenc(dst, self.last_insert_id);
        let mut st = self.status;
        if caps & cap::SESSION_TRACK == 0 {
            st &= !status::SESSION_STATE_CHANGED;
        }
        dst.put_u16_le(st);
        dst.put_u16_le(self.warnings);
        if caps & cap::SESSION_TRACK != 0 {
            if !self.info.is_empty() || st & status::SESSION_STATE_CHANGED != 0 {
                put_lenenc_bytes(dst, &self.info);
            }
            if st & status::SESSION_STATE_CHANGED != 0 {
                put_lenenc_bytes(dst, &self.session_state);
            }
        } else if !self.info.is_empty() {
            put_lenenc_bytes(dst, &self.info);
        }
    }

    /// The new default schema, if the session state says it changed (tracker type 1).
    pub fn schema_change(&self) -> Option<String> {
        let mut r = Reader::new(&self.session_state, "session state");
        while !r.is_empty() {
            let kind = r.u8().ok()?;
            let data = r.lenenc_bytes().ok()?;
            if kind == 1 {
                let mut d = Reader::new(data, "schema");
                return d.lenenc_bytes().ok().map(|s| String::from_utf8_lossy(s).into_owned());
            }
        }
        None
    }
}

/// Whether `payload` is an EOF packet (0xFE with fewer than 9 bytes).
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&0xfe) && payload.len() < 9
}

/// Whether `payload` is an ERR packet.
pub fn is_err(payload: &[u8]) -> bool {
    payload.first() == Some(&0xff)
}

/// Status flags of an EOF packet (warnings u16, status u16 after the header).
pub fn eof_status(payload: &[u8]) -> u16 {
    if payload.len() >= 5 {
        u16::from_le_bytes([payload[3], payload[4]])
    } else {
        0
    }
}

/// Warnings of an EOF packet.
pub fn eof_warnings(payload: &[u8]) -> u16 {
    if payload.len() >= 3 {
        u16::from_le_bytes([payload[1], payload[2]])
    } else {
        0
    }
}

/// Append an EOF packet payload.
pub fn put_eof(dst: &mut BytesMut, warnings: u16, status: u16) {
    dst.put_u8(0xfe);
    dst.put_u16_le(warnings);
    dst.put_u16_le(status & !status::SESSION_STATE_CHANGED);
}

/// Append an ERR packet payload (protocol 4.1 form with SQLSTATE).
pub fn put_err(dst: &mut BytesMut, errno: u16, sqlstate: &str, message: &str) {
    dst.put_u8(0xff);
    dst.put_u16_le(errno);
    dst.put_u8(b'#');
    let mut st = [b'H', b'Y', b'0', b'0', b'0'];
    for (d, s) in st.iter_mut().zip(sqlstate.bytes()) {
        *d = s;
    }
    dst.put_slice(&st);
    dst.put_slice(message.as_bytes());
}

/// A decoded ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    /// Error number.
    pub errno: u16,
    /// SQLSTATE ("HY000" when absent).
    pub sqlstate: String,
    /// Message.
    pub message: String,
}

impl ErrPacket {
    /// Decode an ERR packet.
    pub fn parse(payload: &[u8]) -> Result<ErrPacket, MyProtoError> {
        let mut r = Reader::new(payload, "ERR");
        if r.u8()? != 0xff {
            return Err(MyProtoError::Malformed("not an ERR packet"));
        }
        let errno = r.u16()?;
        let mut sqlstate = "HY000".to_owned();
        if r.rest().first() == Some(&b'#') && r.rest().len() >= 6 {
            r.take(1)?;
            sqlstate = String::from_utf8_lossy(r.take(5)?).into_owned();
        }
        Ok(ErrPacket { errno, sqlstate, message: String::from_utf8_lossy(r.rest()).into_owned() })
    }

    /// Encode.
    pub fn encode(&self, dst: &mut BytesMut) {
        put_err(dst, self.errno, &self.sqlstate, &self.message);
    }
}

/// The names a column definition carries (protocol 4.1 layout), borrowed from the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnNames<'a> {
    /// Schema.
    pub schema: &'a [u8],
    /// Table alias.
    pub table: &'a [u8],
    /// Physical table.
    pub org_table: &'a [u8],
    /// Column alias.
    pub name: &'a [u8],
    /// Physical column.
    pub org_name: &'a [u8],
    /// Character set / collation id.
    pub charset: u16,
    /// Column type byte.
    pub column_type: u8,
    /// Column flags.
    pub flags: u16,
}

/// Decode the names and type of a column definition without copying.
pub fn column_names(payload: &[u8]) -> Result<ColumnNames<'_>, MyProtoError> {
    let mut r = Reader::new(payload, "column definition");
    let _catalog = r.lenenc_bytes()?;
    let schema = r.lenenc_bytes()?;
    let table = r.lenenc_bytes()?;
    let org_table = r.lenenc_bytes()?;
    let name = r.lenenc_bytes()?;
    let org_name = r.lenenc_bytes()?;
    let _fixed = r.lenenc()?;
    let charset = r.u16()?;
    let _len = r.u32()?;
    let column_type = r.u8()?;
    let flags = r.u16()?;
    Ok(ColumnNames { schema, table, org_table, name, org_name, charset, column_type, flags })
}

/// COM_STMT_PREPARE_OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareOk {
    /// Server statement id.
    pub statement_id: u32,
    /// Result columns.
    pub num_columns: u16,
    /// Parameters.
    pub num_params: u16,
    /// Warnings.
    pub warnings: u16,
}

impl PrepareOk {
    /// Decode.
    pub fn parse(payload: &[u8]) -> Result<PrepareOk, MyProtoError> {
        let mut r = Reader::new(payload, "COM_STMT_PREPARE_OK");
        if r.u8()? != 0 {
            return Err(MyProtoError::Malformed("not a COM_STMT_PREPARE_OK"));
        }
        let statement_id = r.u32()?;
        let num_columns = r.u16()?;
        let num_params = r.u16()?;
        let _filler = r.u8()?;
        let warnings = if r.rest().len() >= 2 { r.u16()? } else { 0 };
        Ok(PrepareOk { statement_id, num_columns, num_params, warnings })
    }
}

/// Statement id of COM_STMT_EXECUTE / SEND_LONG_DATA / CLOSE / RESET / FETCH (bytes 1..5).
pub fn statement_id(payload: &[u8]) -> Result<u32, MyProtoError> {
    let mut r = Reader::new(payload, "statement command");
    r.u8()?;
    r.u32()
}

/// Replace the statement id of a statement command in place.
pub fn set_statement_id(payload: &mut [u8], id: u32) {
    if payload.len() >= 5 {
        payload[1..5].copy_from_slice(&id.to_le_bytes());
    }
}

/// The parts of a COM_STMT_EXECUTE that depend on earlier executions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecuteLayout {
    /// Cursor flags byte.
    pub flags: u8,
    /// Offset of the new-params-bound flag (None when the statement has no parameters).
    pub bound_flag_at: Option<usize>,
    /// Whether types are included in this packet.
    pub types_included: bool,
    /// Byte range of the types (when included).
    pub types: std::ops::Range<usize>,
}

/// Locate the cursor flags and parameter types in a COM_STMT_EXECUTE for a statement with
/// `num_params` parameters.
pub fn execute_layout(payload: &[u8], num_params: u16) -> Result<ExecuteLayout, MyProtoError> {
    if payload.len() < 10 {
        return Err(MyProtoError::Truncated("COM_STMT_EXECUTE"));
    }
    let flags = payload[5];
    if num_params == 0 {
        return Ok(ExecuteLayout { flags, bound_flag_at: None, types_included: false, types: 0..0 });
    }
    let at = 10 + (num_params as usize).div_ceil(8);
    let Some(&bound) = payload.get(at) else { return Err(MyProtoError::Truncated("COM_STMT_EXECUTE")) };
    let types = at + 1..at + 1 + 2 * num_params as usize;
    if bound == 1 && payload.len() < types.end {
        return Err(MyProtoError::Truncated("COM_STMT_EXECUTE"));
    }
    Ok(ExecuteLayout { flags, bound_flag_at: Some(at), types_included: bound == 1, types })
}

/// Build a COM_STMT_EXECUTE that carries `types` although the client's packet did not (the
/// statement runs on a server connection that never saw them).
pub fn execute_with_types(payload: &[u8], layout: &ExecuteLayout, types: &[u8]) -> Vec<u8> {
    let Some(at) = layout.bound_flag_at else { return payload.to_vec() };
    if layout.types_included {
        return payload.to_vec();
    }
    let mut out = Vec::with_capacity(payload.len() + types.len());
    out.extend_from_slice(&payload[..at]);
    out.push(1);
    out.extend_from_slice(types);
    out.extend_from_slice(&payload[at + 1..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_ok_roundtrip() {
        // OK: 1 row affected, insert id 5, autocommit, 0 warnings
        let bytes = [0x00, 0x01, 0x05, 0x02, 0x00, 0x00, 0x00];
        let ok = OkPacket::parse(&bytes, 0).unwrap();
        assert_eq!((ok.affected_rows, ok.last_insert_id, ok.status), (1, 5, status::AUTOCOMMIT));
        let mut b = BytesMut::new();
        ok.encode(&mut b, 0, 0);
        assert_eq!(&b[..], &bytes);
    }

    #[test]
    fn info_is_length_encoded() {
        // INSERT of 2 rows: info "Records: 2" is written length-encoded, with or without
        // session tracking
        let mut b = BytesMut::new();
        let ok = OkPacket { affected_rows: 2, status: 2, info: b"Records: 2".to_vec(), ..Default::default() };
        ok.encode(&mut b, 0, 0);
        assert_eq!(&b[..], b"\x00\x02\x00\x02\x00\x00\x00\x0aRecords: 2");
        assert_eq!(OkPacket::parse(&b, 0).unwrap(), ok);
        let mut t = BytesMut::new();
        ok.encode(&mut t, 0, cap::SESSION_TRACK);
        assert_eq!(&t[..], &b[..]);
        assert_eq!(OkPacket::parse(&t, cap::SESSION_TRACK).unwrap(), ok);
    }

    #[test]
    fn session_track_schema() {
        // status AUTOCOMMIT|SESSION_STATE_CHANGED, info "", state: type 1, len 5, lenenc "test"
        let bytes = [0x00, 0x00, 0x00, 0x02, 0x40, 0x00, 0x00, 0x00, 0x07, 0x01, 0x05, 0x04, b't', b'e', b's', b't'];
        let ok = OkPacket::parse(&bytes, cap::SESSION_TRACK).unwrap();
        assert_eq!(ok.schema_change().as_deref(), Some("test"));
        let mut b = BytesMut::new();
        ok.encode(&mut b, 0, 0);
        assert_eq!(&b[..], &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00]);
        let mut b = BytesMut::new();
        ok.encode(&mut b, 0, cap::SESSION_TRACK);
        assert_eq!(&b[..], &bytes);
    }

    #[test]
    fn golden_err() {
        let mut b = BytesMut::new();
        put_err(&mut b, 1142, "42000", "no");
        assert_eq!(&b[..], b"\xff\x76\x04#42000no");
        let e = ErrPacket::parse(&b).unwrap();
        assert_eq!((e.errno, e.sqlstate.as_str(), e.message.as_str()), (1142, "42000", "no"));
    }

    #[test]
    fn golden_column_definition() {
        // catalog "def", schema "db", table "t", org_table "t", name "e", org_name "email",
        // 0x0c, charset 45, length 1020, type VAR_STRING (0xfd), flags 0, decimals 0, filler
        let mut p = BytesMut::new();
        for s in [&b"def"[..], b"db", b"t", b"t", b"e", b"email"] {
            put_lenenc_bytes(&mut p, s);
        }
        p.put_u8(0x0c);
        p.put_u16_le(45);
        p.put_u32_le(1020);
        p.put_u8(0xfd);
        p.put_u16_le(0);
        p.put_u8(0);
        p.put_u16_le(0);
        let c = column_names(&p).unwrap();
        assert_eq!((c.schema, c.org_table, c.name, c.org_name), (&b"db"[..], &b"t"[..], &b"e"[..], &b"email"[..]));
        assert_eq!((c.charset, c.column_type), (45, 0xfd));
    }

    #[test]
    fn execute_types_are_inserted() {
        // id 7, flags 0, iterations 1, null bitmap (1 param) 0, bound 0, value i32 5
        let p = [0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0x00, 0x00, 5, 0, 0, 0];
        let l = execute_layout(&p, 1).unwrap();
        assert!(!l.types_included);
        let out = execute_with_types(&p, &l, &[0x03, 0x00]);
        assert_eq!(out, vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0x00, 0x01, 0x03, 0x00, 5, 0, 0, 0]);
        let l2 = execute_layout(&out, 1).unwrap();
        assert!(l2.types_included);
        assert_eq!(&out[l2.types], &[0x03, 0x00]);
    }

    proptest! {
        #[test]
        fn lenenc_roundtrip(n in any::<u64>()) {
            let mut b = BytesMut::new();
            put_lenenc(&mut b, n);
            prop_assert_eq!(Reader::new(&b, "t").lenenc().unwrap(), n);
        }

        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64), caps in any::<u32>()) {
            let _ = OkPacket::parse(&data, caps).map(|o| o.schema_change());
            let _ = ErrPacket::parse(&data);
            let _ = column_names(&data);
            let _ = PrepareOk::parse(&data);
            let _ = execute_layout(&data, 3);
        }
    }
}
