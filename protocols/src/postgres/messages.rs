//! The Postgres messages the proxy inspects or synthesises: lazy parsers over frame bodies and
//! builders that append to an output buffer.

use super::frame::{get_cbytes, get_cstr, get_i16, get_i32};
use super::startup::put_cstr;
use super::PgProtoError;
use bytes::{BufMut, BytesMut};

/// Frontend (client to server) message tags.
pub mod tag {
    /// Simple query.
    pub const QUERY: u8 = b'Q';
    /// Parse (extended protocol).
    pub const PARSE: u8 = b'P';
    /// Bind.
    pub const BIND: u8 = b'B';
    /// Describe.
    pub const DESCRIBE: u8 = b'D';
    /// Execute.
    pub const EXECUTE: u8 = b'E';
    /// Close.
    pub const CLOSE: u8 = b'C';
    /// Sync.
    pub const SYNC: u8 = b'S';
    /// Flush.
    pub const FLUSH: u8 = b'H';
    /// Terminate.
    pub const TERMINATE: u8 = b'X';
    /// Function call.
    pub const FUNCTION_CALL: u8 = b'F';
    /// Password / SASL responses.
    pub const PASSWORD: u8 = b'p';
    /// COPY data (both directions).
    pub const COPY_DATA: u8 = b'd';
    /// COPY done (both directions).
    pub const COPY_DONE: u8 = b'c';
    /// COPY fail.
    pub const COPY_FAIL: u8 = b'f';
}

/// Backend (server to client) message tags.
pub mod btag {
    /// CopyData (`COPY ... TO STDOUT`).
    pub const COPY_DATA: u8 = b'd';
    /// Authentication request.
    pub const AUTH: u8 = b'R';
    /// ParameterStatus.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// BackendKeyData.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// ReadyForQuery.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// ErrorResponse.
    pub const ERROR: u8 = b'E';
    /// NoticeResponse.
    pub const NOTICE: u8 = b'N';
    /// RowDescription.
    pub const ROW_DESCRIPTION: u8 = b'T';
    /// DataRow.
    pub const DATA_ROW: u8 = b'D';
    /// CommandComplete.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// EmptyQueryResponse.
    pub const EMPTY_QUERY: u8 = b'I';
    /// ParseComplete.
    pub const PARSE_COMPLETE: u8 = b'1';
    /// BindComplete.
    pub const BIND_COMPLETE: u8 = b'2';
    /// CloseComplete.
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// ParameterDescription.
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    /// NoData.
    pub const NO_DATA: u8 = b'n';
    /// PortalSuspended.
    pub const PORTAL_SUSPENDED: u8 = b's';
    /// CopyInResponse.
    pub const COPY_IN: u8 = b'G';
    /// CopyOutResponse.
    pub const COPY_OUT: u8 = b'H';
    /// CopyBothResponse.
    pub const COPY_BOTH: u8 = b'W';
    /// NotificationResponse.
    pub const NOTIFICATION: u8 = b'A';
    /// FunctionCallResponse.
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    /// NegotiateProtocolVersion.
    pub const NEGOTIATE_PROTOCOL: u8 = b'v';
}

/// Parse: statement name, then the query and parameter types kept as raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Prepared statement name ("" = unnamed).
    pub name: &'a str,
    /// Everything after the name: query string, NUL, parameter type count and OIDs.
    pub rest: &'a [u8],
}

impl<'a> Parse<'a> {
    /// Decode a Parse body.
    pub fn decode(mut body: &'a [u8]) -> Result<Self, PgProtoError> {
        let name = get_cstr(&mut body, "Parse")?;
        Ok(Self { name, rest: body })
    }
    /// The SQL text.
    pub fn query(&self) -> Result<&'a str, PgProtoError> {
        let mut r = self.rest;
        get_cstr(&mut r, "Parse query")
    }
}

/// Bind: portal and statement names; the parameters stay raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind<'a> {
    /// Destination portal ("" = unnamed).
    pub portal: &'a str,
    /// Source prepared statement.
    pub statement: &'a str,
    /// Formats, parameter values, result formats.
    pub rest: &'a [u8],
}

impl<'a> Bind<'a> {
    /// Decode a Bind body.
    pub fn decode(mut body: &'a [u8]) -> Result<Self, PgProtoError> {
        let portal = get_cstr(&mut body, "Bind")?;
        let statement = get_cstr(&mut body, "Bind")?;
        Ok(Self { portal, statement, rest: body })
    }
}

/// Describe or Close target: `S` statement or `P` portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// b'S' or b'P'.
    pub kind: u8,
    /// Name.
    pub name: &'a str,
}

impl<'a> Target<'a> {
    /// Decode a Describe or Close body.
    pub fn decode(body: &'a [u8]) -> Result<Self, PgProtoError> {
        let (&kind, mut rest) = body.split_first().ok_or(PgProtoError::Truncated("Describe/Close"))?;
        if kind != b'S' && kind != b'P' {
            return Err(PgProtoError::Malformed("Describe/Close target must be 'S' or 'P'"));
        }
        let name = get_cstr(&mut rest, "Describe/Close")?;
        Ok(Self { kind, name })
    }
}

/// The SQL text of a simple Query body.
pub fn query_text(mut body: &[u8]) -> Result<&str, PgProtoError> {
    get_cstr(&mut body, "Query")
}

/// An Authentication request from a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// Login succeeded.
    Ok,
    /// Send the password in clear text.
    Cleartext,
    /// md5 challenge with salt.
    Md5([u8; 4]),
    /// SASL, with the offered mechanisms.
    Sasl(Vec<String>),
    /// SASL continue data.
    SaslContinue(Vec<u8>),
    /// SASL final data.
    SaslFinal(Vec<u8>),
    /// A method we do not support (Kerberos, GSS, SSPI...), by code.
    Unsupported(i32),
}

impl Authentication {
    /// Decode an Authentication body.
    pub fn decode(mut body: &[u8]) -> Result<Self, PgProtoError> {
        let code = get_i32(&mut body, "Authentication")?;
        Ok(match code {
            0 => Authentication::Ok,
            3 => Authentication::Cleartext,
            5 => {
                let salt: [u8; 4] =
                    body.get(..4).and_then(|s| s.try_into().ok()).ok_or(PgProtoError::Truncated("md5 salt"))?;
                Authentication::Md5(salt)
            }
            10 => {
                let mut mechs = Vec::new();
                while !body.is_empty() && body != [0] {
                    mechs.push(get_cstr(&mut body, "SASL mechanism")?.to_owned());
                }
                Authentication::Sasl(mechs)
            }
            11 => Authentication::SaslContinue(body.to_vec()),
            12 => Authentication::SaslFinal(body.to_vec()),
            other => Authentication::Unsupported(other),
        })
    }
}

/// Fields of an ErrorResponse or NoticeResponse that the proxy uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    /// Localised severity (S).
    pub severity: String,
    /// SQLSTATE (C).
    pub code: String,
    /// Primary message (M).
    pub message: String,
    /// Detail (D).
    pub detail: Option<String>,
    /// Hint (H).
    pub hint: Option<String>,
}

impl ErrorFields {
    /// A new error with severity, SQLSTATE and message.
    pub fn new(severity: &str, code: &str, message: impl Into<String>) -> Self {
        Self { severity: severity.into(), code: code.into(), message: message.into(), detail: None, hint: None }
    }
    /// Decode an ErrorResponse / NoticeResponse body.
    pub fn decode(mut body: &[u8]) -> Result<Self, PgProtoError> {
        let mut f = ErrorFields::default();
        while let Some((&t, mut rest)) = body.split_first() {
            if t == 0 {
                break;
            }
            let v = String::from_utf8_lossy(get_cbytes(&mut rest, "error field")?).into_owned();
            match t {
                b'S' => f.severity = v,
                b'V' if f.severity.is_empty() => f.severity = v,
                b'C' => f.code = v,
                b'M' => f.message = v,
                b'D' => f.detail = Some(v),
                b'H' => f.hint = Some(v),
                _ => {}
            }
            body = rest;
        }
        Ok(f)
    }
    /// Whether the error ends the connection.
    pub fn is_fatal(&self) -> bool {
        self.severity == "FATAL" || self.severity == "PANIC"
    }
    /// Append as an ErrorResponse.
    pub fn encode(&self, out: &mut BytesMut) {
        self.encode_as(btag::ERROR, out)
    }
    /// Append as an ErrorResponse (`E`) or NoticeResponse (`N`).
    pub fn encode_as(&self, tag: u8, out: &mut BytesMut) {
        let start = begin(out, tag);
        for (t, v) in [
            (b'S', Some(&self.severity)),
            (b'V', Some(&self.severity)),
            (b'C', Some(&self.code)),
            (b'M', Some(&self.message)),
            (b'D', self.detail.as_ref()),
            (b'H', self.hint.as_ref()),
        ] {
            if let Some(v) = v {
                out.put_u8(t);
                put_cstr(out, v);
            }
        }
        out.put_u8(0);
        finish(out, start);
    }
}

/// Decode a ParameterStatus body into (name, value).
pub fn parameter_status(mut body: &[u8]) -> Result<(&str, &str), PgProtoError> {
    let k = get_cstr(&mut body, "ParameterStatus")?;
    let v = get_cstr(&mut body, "ParameterStatus")?;
    Ok((k, v))
}

/// Decode a BackendKeyData body into (pid, secret).
pub fn backend_key_data(mut body: &[u8]) -> Result<(i32, i32), PgProtoError> {
    Ok((get_i32(&mut body, "BackendKeyData")?, get_i32(&mut body, "BackendKeyData")?))
}

/// Transaction status byte of a ReadyForQuery body: b'I' idle, b'T' in transaction, b'E' failed.
pub fn ready_status(body: &[u8]) -> Result<u8, PgProtoError> {
    match body.first() {
        Some(&s @ (b'I' | b'T' | b'E')) => Ok(s),
        _ => Err(PgProtoError::Malformed("ReadyForQuery status")),
    }
}

/// SASLInitialResponse: mechanism and initial client data (None when length is -1).
pub fn sasl_initial_response(mut body: &[u8]) -> Result<(&str, Option<&[u8]>), PgProtoError> {
    let mech = get_cstr(&mut body, "SASLInitialResponse")?;
    let len = get_i32(&mut body, "SASLInitialResponse")?;
    if len < 0 {
        return Ok((mech, None));
    }
    let data = body.get(..len as usize).ok_or(PgProtoError::Truncated("SASLInitialResponse"))?;
    Ok((mech, Some(data)))
}

/// A PasswordMessage body's password (NUL-terminated).
pub fn password(mut body: &[u8]) -> Result<&[u8], PgProtoError> {
    get_cbytes(&mut body, "PasswordMessage")
}

/// Column count of a RowDescription or DataRow body.
pub fn field_count(mut body: &[u8]) -> Result<i16, PgProtoError> {
    get_i16(&mut body, "field count")
}

/// Start a message: tag and placeholder length. Returns the position of the length field.
#[inline]
pub fn begin(out: &mut BytesMut, tag: u8) -> usize {
    out.put_u8(tag);
    let pos = out.len();
    out.put_i32(0);
    pos
}

/// Fill in the length of a message started with [`begin`].
#[inline]
pub fn finish(out: &mut BytesMut, len_pos: usize) {
    let len = (out.len() - len_pos) as i32;
    out[len_pos..len_pos + 4].copy_from_slice(&len.to_be_bytes());
}

/// Append an Authentication message with the given code and payload.
pub fn put_auth(out: &mut BytesMut, code: i32, payload: &[u8]) {
    let p = begin(out, btag::AUTH);
    out.put_i32(code);
    out.put_slice(payload);
    finish(out, p);
}

/// Append AuthenticationSASL offering SCRAM-SHA-256.
pub fn put_auth_sasl(out: &mut BytesMut, mechanisms: &[&str]) {
    let p = begin(out, btag::AUTH);
    out.put_i32(10);
    for m in mechanisms {
        put_cstr(out, m);
    }
    out.put_u8(0);
    finish(out, p);
}

/// Append ParameterStatus.
pub fn put_parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    let p = begin(out, btag::PARAMETER_STATUS);
    put_cstr(out, name);
    put_cstr(out, value);
    finish(out, p);
}

/// Append BackendKeyData.
pub fn put_backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    let p = begin(out, btag::BACKEND_KEY_DATA);
    out.put_i32(pid);
    out.put_i32(secret);
    finish(out, p);
}

/// Append ReadyForQuery.
pub fn put_ready_for_query(out: &mut BytesMut, status: u8) {
    out.put_slice(&[btag::READY_FOR_QUERY, 0, 0, 0, 5, status]);
}

/// Append a body-less message (ParseComplete, CloseComplete, Sync, Terminate, ...).
pub fn put_empty(out: &mut BytesMut, tag: u8) {
    out.put_slice(&[tag, 0, 0, 0, 4]);
}

/// Append NegotiateProtocolVersion (newest minor we support, options we do not).
pub fn put_negotiate_protocol(out: &mut BytesMut, minor: i32, unsupported: &[&str]) {
    let p = begin(out, btag::NEGOTIATE_PROTOCOL);
    out.put_i32(minor);
    out.put_i32(unsupported.len() as i32);
    for o in unsupported {
        put_cstr(out, o);
    }
    finish(out, p);
}

/// Append a simple Query.
pub fn put_query(out: &mut BytesMut, sql: &str) {
    let p = begin(out, tag::QUERY);
    put_cstr(out, sql);
    finish(out, p);
}

/// Append a Parse with a new statement name and the original query/types bytes.
pub fn put_parse(out: &mut BytesMut, name: &str, rest: &[u8]) {
    let p = begin(out, tag::PARSE);
    put_cstr(out, name);
    out.put_slice(rest);
    finish(out, p);
}

/// Append a Bind with a renamed statement.
pub fn put_bind(out: &mut BytesMut, portal: &str, statement: &str, rest: &[u8]) {
    let p = begin(out, tag::BIND);
    put_cstr(out, portal);
    put_cstr(out, statement);
    out.put_slice(rest);
    finish(out, p);
}

/// Append a Describe or Close (`tag`) of a statement/portal.
pub fn put_target(out: &mut BytesMut, tag: u8, kind: u8, name: &str) {
    let p = begin(out, tag);
    out.put_u8(kind);
    put_cstr(out, name);
    finish(out, p);
}

/// Append a PasswordMessage carrying a NUL-terminated password.
pub fn put_password(out: &mut BytesMut, password: &[u8]) {
    let p = begin(out, tag::PASSWORD);
    out.put_slice(password);
    out.put_u8(0);
    finish(out, p);
}

/// Append SASLInitialResponse.
pub fn put_sasl_initial(out: &mut BytesMut, mechanism: &str, data: &[u8]) {
    let p = begin(out, tag::PASSWORD);
    put_cstr(out, mechanism);
    out.put_i32(data.len() as i32);
    out.put_slice(data);
    finish(out, p);
}

/// Append SASLResponse.
pub fn put_sasl_response(out: &mut BytesMut, data: &[u8]) {
    let p = begin(out, tag::PASSWORD);
    out.put_slice(data);
    finish(out, p);
}

pub use super::rowdesc::{row_description, FieldDesc};
/// The NUL-terminated string at the start of `body` (e.g. Execute's portal name); "" when it is
/// not terminated or not UTF-8.
pub fn cstr_prefix(body: &[u8]) -> &str {
    body.iter().position(|&b| b == 0).and_then(|end| std::str::from_utf8(&body[..end]).ok()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_error_response() {
        let mut out = BytesMut::new();
        ErrorFields::new("ERROR", "42501", "no").encode(&mut out);
        assert_eq!(&out[..], b"E\0\0\0\x1eSERROR\0VERROR\0C42501\0Mno\0\0");
        let f = ErrorFields::decode(&out[5..]).unwrap();
        assert_eq!((f.severity.as_str(), f.code.as_str(), f.message.as_str()), ("ERROR", "42501", "no"));
        assert!(!f.is_fatal());
    }

    #[test]
    fn parse_bind_rewrite_round_trip() {
        let mut out = BytesMut::new();
        put_parse(&mut out, "s0", b"SELECT $1\0\0\x01\0\0\0\x17");
        let p = Parse::decode(&out[5..]).unwrap();
        assert_eq!(p.name, "s0");
        assert_eq!(p.query().unwrap(), "SELECT $1");
        let mut renamed = BytesMut::new();
        put_parse(&mut renamed, "__dgf_1", p.rest);
        let q = Parse::decode(&renamed[5..]).unwrap();
        assert_eq!((q.name, q.rest), ("__dgf_1", p.rest));

        let mut b = BytesMut::new();
        put_bind(&mut b, "", "s0", b"\0\0\0\0\0\0");
        let bind = Bind::decode(&b[5..]).unwrap();
        assert_eq!((bind.portal, bind.statement, bind.rest), ("", "s0", &b"\0\0\0\0\0\0"[..]));
    }

    #[test]
    fn describe_close_targets() {
        let mut out = BytesMut::new();
        put_target(&mut out, tag::DESCRIBE, b'S', "s1");
        assert_eq!(&out[..], b"D\0\0\0\x08Ss1\0");
        assert_eq!(Target::decode(&out[5..]).unwrap(), Target { kind: b'S', name: "s1" });
        assert!(Target::decode(b"Xs1\0").is_err());
        assert!(Target::decode(b"").is_err());
    }

    #[test]
    fn authentication_decoding() {
        assert_eq!(Authentication::decode(&[0, 0, 0, 0]).unwrap(), Authentication::Ok);
        assert_eq!(Authentication::decode(&[0, 0, 0, 5, 1, 2, 3, 4]).unwrap(), Authentication::Md5([1, 2, 3, 4]));
        assert!(Authentication::decode(&[0, 0, 0, 5, 1]).is_err());
        let mut out = BytesMut::new();
        put_auth_sasl(&mut out, &["SCRAM-SHA-256"]);
        assert_eq!(Authentication::decode(&out[5..]).unwrap(), Authentication::Sasl(vec!["SCRAM-SHA-256".into()]));
    }

    #[test]
    fn sasl_initial_response_round_trip() {
        let mut out = BytesMut::new();
        put_sasl_initial(&mut out, "SCRAM-SHA-256", b"n,,n=,r=abc");
        let (m, d) = sasl_initial_response(&out[5..]).unwrap();
        assert_eq!((m, d), ("SCRAM-SHA-256", Some(&b"n,,n=,r=abc"[..])));
        assert!(sasl_initial_response(b"SCRAM-SHA-256\0\0\0\0\x10ab").is_err());
    }

    #[test]
    fn ready_and_key_data() {
        let mut out = BytesMut::new();
        put_ready_for_query(&mut out, b'T');
        assert_eq!(ready_status(&out[5..]).unwrap(), b'T');
        assert!(ready_status(b"x").is_err());
        let mut out = BytesMut::new();
        put_backend_key_data(&mut out, 7, -9);
        assert_eq!(backend_key_data(&out[5..]).unwrap(), (7, -9));
    }
}
