//! The untagged startup phase: StartupMessage, SSLRequest, GSSENCRequest, CancelRequest.

use super::frame::{get_cstr, get_i32};
use super::PgProtoError;
use bytes::{BufMut, BytesMut};

/// Request code of an SSLRequest.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// Request code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// Request code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Protocol 3.0 as sent in a StartupMessage.
pub const PROTOCOL_3_0: i32 = 196_608;
/// Cap on a startup packet (Postgres uses 10,000 bytes).
pub const MAX_STARTUP_LEN: usize = 10_000;

/// The first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupRequest {
    /// Client wants TLS.
    Ssl,
    /// Client wants GSSAPI encryption.
    GssEnc,
    /// Cancel the query running on the connection identified by the key.
    Cancel {
        /// Backend process id from BackendKeyData.
        pid: i32,
        /// Secret key from BackendKeyData.
        secret: i32,
    },
    /// A real startup.
    Startup(StartupMessage),
}

/// StartupMessage parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartupMessage {
    /// Minor protocol version requested (major is always 3).
    pub minor: u16,
    /// Parameters in the order sent (user, database, options, application_name, GUCs, `_pq_.*`).
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// Value of a parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    /// The `user` parameter (required by the protocol).
    pub fn user(&self) -> Option<&str> {
        self.get("user")
    }
    /// The `database` parameter, defaulting to the user name as Postgres does.
    pub fn database(&self) -> Option<&str> {
        self.get("database").filter(|d| !d.is_empty()).or_else(|| self.user())
    }
    /// Protocol extension options (`_pq_.` prefix) the client asked for.
    pub fn protocol_options(&self) -> impl Iterator<Item = &str> {
        self.params.iter().filter(|(k, _)| k.starts_with("_pq_.")).map(|(k, _)| k.as_str())
    }
}

/// Parse the first complete startup packet in `buf`, splitting it off.
pub fn parse_startup(buf: &mut BytesMut) -> Result<Option<StartupRequest>, PgProtoError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 {
        return Err(PgProtoError::InvalidLength(len as i64));
    }
    let len = len as usize;
    if len > MAX_STARTUP_LEN {
        return Err(PgProtoError::MessageTooLarge { len, max: MAX_STARTUP_LEN });
    }
    if buf.len() < len {
        return Ok(None);
    }
    let packet = buf.split_to(len);
    let mut body = &packet[4..];
    let code = get_i32(&mut body, "startup")?;
    match code {
        SSL_REQUEST_CODE if body.is_empty() => Ok(Some(StartupRequest::Ssl)),
        GSSENC_REQUEST_CODE if body.is_empty() => Ok(Some(StartupRequest::GssEnc)),
        CANCEL_REQUEST_CODE => {
            let pid = get_i32(&mut body, "cancel request")?;
            let secret = get_i32(&mut body, "cancel request")?;
            Ok(Some(StartupRequest::Cancel { pid, secret }))
        }
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => Err(PgProtoError::Malformed("encryption request with a body")),
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(PgProtoError::UnsupportedProtocol { major, minor });
            }
            let mut params = Vec::new();
            loop {
                if body.is_empty() {
                    return Err(PgProtoError::Truncated("startup message"));
                }
                if body == [0] {
                    break;
                }
                let k = get_cstr(&mut body, "startup parameter name")?;
                let v = get_cstr(&mut body, "startup parameter value")?;
                if k.is_empty() {
                    return Err(PgProtoError::Malformed("empty startup parameter name"));
                }
                params.push((k.to_owned(), v.to_owned()));
            }
            Ok(Some(StartupRequest::Startup(StartupMessage { minor, params })))
        }
    }
}

/// Encode a StartupMessage (protocol 3.0) with the given parameters.
pub fn encode_startup(params: &[(&str, &str)]) -> BytesMut {
    let mut b = BytesMut::with_capacity(64);
    b.put_i32(0);
    b.put_i32(PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(&mut b, k);
        put_cstr(&mut b, v);
    }
    b.put_u8(0);
    let len = b.len() as i32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b
}

/// Encode an SSLRequest.
pub fn encode_ssl_request() -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&8i32.to_be_bytes());
    b[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    b
}

/// Encode a CancelRequest.
pub fn encode_cancel_request(pid: i32, secret: i32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&16i32.to_be_bytes());
    b[4..8].copy_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    b[8..12].copy_from_slice(&pid.to_be_bytes());
    b[12..].copy_from_slice(&secret.to_be_bytes());
    b
}

/// Append a NUL-terminated string.
pub(crate) fn put_cstr(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_startup_round_trip() {
        let encoded = encode_startup(&[("user", "app"), ("database", "shop")]);
        let golden: &[u8] = b"\0\0\0\x20\0\x03\0\0user\0app\0database\0shop\0\0";
        assert_eq!(&encoded[..], golden);
        let mut buf = BytesMut::from(golden);
        let Some(StartupRequest::Startup(m)) = parse_startup(&mut buf).unwrap() else { panic!("not a startup") };
        assert_eq!(m.user(), Some("app"));
        assert_eq!(m.database(), Some("shop"));
        assert!(buf.is_empty());
    }

    #[test]
    fn database_defaults_to_user() {
        let mut buf = encode_startup(&[("user", "app")]);
        let Some(StartupRequest::Startup(m)) = parse_startup(&mut buf).unwrap() else { panic!() };
        assert_eq!(m.database(), Some("app"));
    }

    #[test]
    fn ssl_and_cancel() {
        let mut buf = BytesMut::from(&encode_ssl_request()[..]);
        assert_eq!(parse_startup(&mut buf).unwrap(), Some(StartupRequest::Ssl));
        let mut buf = BytesMut::from(&encode_cancel_request(42, -7)[..]);
        assert_eq!(parse_startup(&mut buf).unwrap(), Some(StartupRequest::Cancel { pid: 42, secret: -7 }));
    }

    #[test]
    fn rejects_bad_packets() {
        let mut buf = BytesMut::from(&b"\0\0\0\x04"[..]);
        assert!(parse_startup(&mut buf).is_err());
        let mut buf = BytesMut::from(&b"\x7f\0\0\0"[..]);
        assert!(matches!(parse_startup(&mut buf), Err(PgProtoError::MessageTooLarge { .. })));
        // Protocol 2.0.
        let mut buf = BytesMut::from(&b"\0\0\0\x09\0\x02\0\0\0"[..]);
        assert!(matches!(parse_startup(&mut buf), Err(PgProtoError::UnsupportedProtocol { major: 2, .. })));
        // Missing final NUL.
        let mut buf = BytesMut::from(&b"\0\0\0\x0d\0\x03\0\0user\0"[..]);
        assert!(parse_startup(&mut buf).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut buf = BytesMut::from(&data[..]);
            let _ = parse_startup(&mut buf);
        }
    }
}
