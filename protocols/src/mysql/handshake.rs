//! Connection-phase packets: the server greeting (HandshakeV10) dgf sends to clients and
//! parses from upstream servers, SSLRequest, HandshakeResponse41 (both directions) and
//! COM_CHANGE_USER.

use super::consts::{cap, status};
use super::error::MyProtoError;
use super::packets::{put_lenenc, put_lenenc_bytes, Reader};
use bytes::{BufMut, BytesMut};
use mysql_common::io::ParseBuf;
use mysql_common::proto::MyDeserialize;

/// A fresh 20-byte authentication salt: printable ASCII without NUL or `$` (as MySQL makes it).
pub fn new_salt() -> [u8; 20] {
    let mut s = [0u8; 20];
    for b in &mut s {
        loop {
            let c: u8 = rand::random::<u8>() & 0x7f;
            if (0x21..0x7f).contains(&c) && c != b'$' {
                *b = c;
                break;
            }
        }
    }
    s
}

/// Character set and collation names of a collation id (for `SET NAMES cs COLLATE coll`).
pub fn collation_names(id: u16) -> Option<(String, String)> {
    let c = mysql_common::collations::Collation::from(mysql_common::collations::CollationId::from(id));
    let (cs, coll) = (c.charset(), c.collation());
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    (ok(cs) && ok(coll) && cs != "unknown").then(|| (cs.to_owned(), coll.to_owned()))
}

/// The greeting dgf sends to a client.
#[derive(Debug, Clone)]
pub struct Greeting {
    /// Version string shown to the client.
    pub server_version: String,
    /// Connection id.
    pub connection_id: u32,
    /// 20-byte salt.
    pub salt: [u8; 20],
    /// Capabilities offered.
    pub capabilities: u32,
    /// Default collation id.
    pub collation: u8,
    /// Default authentication plugin.
    pub plugin: &'static str,
}

impl Greeting {
    /// Encode as a HandshakeV10 payload.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(10);
        dst.put_slice(self.server_version.as_bytes());
        dst.put_u8(0);
        dst.put_u32_le(self.connection_id);
        dst.put_slice(&self.salt[..8]);
        dst.put_u8(0);
        dst.put_u16_le(self.capabilities as u16);
        dst.put_u8(self.collation);
        dst.put_u16_le(status::AUTOCOMMIT);
        dst.put_u16_le((self.capabilities >> 16) as u16);
        dst.put_u8(21);
        dst.put_slice(&[0u8; 10]);
        dst.put_slice(&self.salt[8..]);
        dst.put_u8(0);
        dst.put_slice(self.plugin.as_bytes());
        dst.put_u8(0);
    }
}

/// What an upstream server's greeting told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerGreeting {
    /// Version string.
    pub server_version: String,
    /// Connection (thread) id.
    pub connection_id: u32,
    /// Full salt (scramble part 1 + 2, without the trailing NUL).
    pub salt: Vec<u8>,
    /// Capabilities.
    pub capabilities: u32,
    /// Default collation.
    pub collation: u8,
    /// Default authentication plugin.
    pub plugin: String,
}

/// The auth-plugin-data length byte of a HandshakeV10: after the protocol version, the
/// NUL-terminated server version, connection id (4), scramble part 1 (8), filler (1),
/// capabilities (2), charset (1), status (2) and upper capabilities (2).
fn greeting_auth_data_len(payload: &[u8]) -> Option<u8> {
    let nul = payload.get(1..)?.iter().position(|&b| b == 0)?;
    payload.get(1 + nul + 1 + 4 + 8 + 1 + 2 + 1 + 2 + 2).copied()
}

impl ServerGreeting {
    /// Parse an upstream HandshakeV10 with mysql_common's decoder.
    pub fn parse(payload: &[u8]) -> Result<ServerGreeting, MyProtoError> {
        if payload.first() == Some(&0xff) {
            return Err(MyProtoError::Malformed("server sent an error instead of a greeting"));
        }
        // mysql_common computes `auth_plugin_data_len as i8 - 8`, which overflows (a panic in
        // debug builds) for lengths 0x80..=0x87; no real server sends those (found by fuzzing).
        if let Some(len) = greeting_auth_data_len(payload) {
            if (0x80..=0x87).contains(&len) {
                return Err(MyProtoError::Malformed("invalid auth-plugin-data length in server greeting"));
            }
        }
        let h = mysql_common::packets::HandshakePacket::deserialize((), &mut ParseBuf(payload))
            .map_err(|_| MyProtoError::Malformed("invalid server greeting"))?;
        let capabilities = h.capabilities().bits();
        if capabilities & cap::PROTOCOL_41 == 0 {
            return Err(MyProtoError::Protocol41Required);
        }
        let mut salt = h.nonce();
        if salt.last() == Some(&0) {
            salt.pop();
        }
        Ok(ServerGreeting {
            server_version: h.server_version_str().into_owned(),
            connection_id: h.connection_id(),
            salt,
            capabilities,
            collation: h.default_collation(),
            plugin: h
                .auth_plugin_name_str()
                .map(|s| s.into_owned())
                .unwrap_or_else(|| super::consts::plugin::NATIVE.into()),
        })
    }
}

/// What a client sends first: an SSLRequest or its full HandshakeResponse41.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// Switch to TLS, then the real response follows.
    SslRequest {
        /// Capabilities.
        capabilities: u32,
    },
    /// The login.
    Response(HandshakeResponse),
}

/// HandshakeResponse41.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct HandshakeResponse {
    /// Client capabilities.
    pub capabilities: u32,
    /// Max packet size the client accepts.
    pub max_packet: u32,
    /// Collation id.
    pub collation: u8,
    /// User name.
    pub user: String,
    /// Authentication response (scramble).
    pub auth_response: Vec<u8>,
    /// Initial schema.
    pub database: Option<String>,
    /// Authentication plugin the response was made with.
    pub plugin: Option<String>,
    /// Connection attributes.
    pub attrs: Vec<(String, String)>,
}

impl std::fmt::Debug for HandshakeResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeResponse")
            .field("capabilities", &format_args!("{:#x}", self.capabilities))
            .field("user", &self.user)
            .field("database", &self.database)
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

/// Parse a client's first packet after the greeting.
pub fn parse_client_hello(payload: &[u8]) -> Result<ClientHello, MyProtoError> {
    let mut r = Reader::new(payload, "handshake response");
    let capabilities = r.u32()?;
    if capabilities & cap::PROTOCOL_41 == 0 {
        return Err(MyProtoError::Protocol41Required);
    }
    if payload.len() == 32 && capabilities & cap::SSL != 0 {
        return Ok(ClientHello::SslRequest { capabilities });
    }
    let max_packet = r.u32()?;
    let collation = r.u8()?;
    r.take(23)?;
    let user = r.nul_str("user name")?.to_owned();
    let auth_response = if capabilities & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        r.lenenc_bytes()?.to_vec()
    } else if capabilities & cap::SECURE_CONNECTION != 0 {
        let n = r.u8()? as usize;
        r.take(n)?.to_vec()
    } else {
        r.nul_bytes().to_vec()
    };
    let mut resp = HandshakeResponse { capabilities, max_packet, collation, user, auth_response, ..Default::default() };
    if capabilities & cap::CONNECT_WITH_DB != 0 && !r.is_empty() {
        let db = r.nul_str("database")?;
        if !db.is_empty() {
            resp.database = Some(db.to_owned());
        }
    }
    if capabilities & cap::PLUGIN_AUTH != 0 && !r.is_empty() {
        resp.plugin = Some(r.nul_str("plugin name")?.to_owned());
    }
    if capabilities & cap::CONNECT_ATTRS != 0 && !r.is_empty() {
        resp.attrs = parse_attrs(&mut r)?;
    }
    Ok(ClientHello::Response(resp))
}

fn parse_attrs(r: &mut Reader<'_>) -> Result<Vec<(String, String)>, MyProtoError> {
    let block = r.lenenc_bytes()?;
    let mut a = Reader::new(block, "connection attributes");
    let mut out = Vec::new();
    while !a.is_empty() && out.len() < 256 {
        let k = String::from_utf8_lossy(a.lenenc_bytes()?).into_owned();
        let v = String::from_utf8_lossy(a.lenenc_bytes()?).into_owned();
        out.push((k, v));
    }
    Ok(out)
}

/// Encode an SSLRequest.
pub fn encode_ssl_request(dst: &mut BytesMut, capabilities: u32, collation: u8) {
    dst.put_u32_le(capabilities | cap::SSL);
    dst.put_u32_le(16 << 20);
    dst.put_u8(collation);
    dst.put_slice(&[0u8; 23]);
}

impl HandshakeResponse {
    /// Encode as HandshakeResponse41 (dgf logging in upstream).
    pub fn encode(&self, dst: &mut BytesMut) {
        let mut caps = self.capabilities;
        if self.database.is_some() {
            caps |= cap::CONNECT_WITH_DB;
        } else {
            caps &= !cap::CONNECT_WITH_DB;
        }
        dst.put_u32_le(caps);
        dst.put_u32_le(self.max_packet);
        dst.put_u8(self.collation);
        dst.put_slice(&[0u8; 23]);
        dst.put_slice(self.user.as_bytes());
        dst.put_u8(0);
        if caps & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc_bytes(dst, &self.auth_response);
        } else {
            dst.put_u8(self.auth_response.len() as u8);
            dst.put_slice(&self.auth_response);
        }
        if let Some(db) = &self.database {
            dst.put_slice(db.as_bytes());
            dst.put_u8(0);
        }
        if caps & cap::PLUGIN_AUTH != 0 {
            dst.put_slice(self.plugin.as_deref().unwrap_or(super::consts::plugin::NATIVE).as_bytes());
            dst.put_u8(0);
        }
        if caps & cap::CONNECT_ATTRS != 0 {
            let mut block = BytesMut::new();
            for (k, v) in &self.attrs {
                put_lenenc_bytes(&mut block, k.as_bytes());
                put_lenenc_bytes(&mut block, v.as_bytes());
            }
            put_lenenc(dst, block.len() as u64);
            dst.put_slice(&block);
        }
    }
}

/// A COM_CHANGE_USER request.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ChangeUser {
    /// New user.
    pub user: String,
    /// Scramble made with the connection's current salt.
    pub auth_response: Vec<u8>,
    /// New schema.
    pub database: Option<String>,
    /// Collation, when sent.
    pub collation: Option<u16>,
    /// Plugin used for the scramble.
    pub plugin: Option<String>,
}

impl std::fmt::Debug for ChangeUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeUser").field("user", &self.user).field("database", &self.database).finish_non_exhaustive()
    }
}

/// Parse COM_CHANGE_USER (including the command byte) for a client with `caps`.
pub fn parse_change_user(payload: &[u8], caps: u32) -> Result<ChangeUser, MyProtoError> {
    let mut r = Reader::new(payload, "COM_CHANGE_USER");
    r.u8()?;
    let user = r.nul_str("user name")?.to_owned();
    let auth_response = if caps & cap::SECURE_CONNECTION != 0 {
        let n = r.u8()? as usize;
        r.take(n)?.to_vec()
    } else {
        r.nul_bytes().to_vec()
    };
    let db = r.nul_str("database")?;
    let mut cu =
        ChangeUser { user, auth_response, database: (!db.is_empty()).then(|| db.to_owned()), ..Default::default() };
    if r.rest().len() >= 2 {
        cu.collation = Some(r.u16()?);
        if caps & cap::PLUGIN_AUTH != 0 && !r.is_empty() {
            cu.plugin = Some(r.nul_str("plugin name")?.to_owned());
        }
    }
    Ok(cu)
}

/// Encode an AuthSwitchRequest (0xFE, plugin, salt + NUL).
pub fn encode_auth_switch(dst: &mut BytesMut, plugin: &str, salt: &[u8]) {
    dst.put_u8(0xfe);
    dst.put_slice(plugin.as_bytes());
    dst.put_u8(0);
    dst.put_slice(salt);
    dst.put_u8(0);
}

/// Parse an AuthSwitchRequest: (plugin, salt without trailing NUL).
pub fn parse_auth_switch(payload: &[u8]) -> Result<(String, Vec<u8>), MyProtoError> {
    let mut r = Reader::new(payload, "AuthSwitchRequest");
    if r.u8()? != 0xfe {
        return Err(MyProtoError::Malformed("not an AuthSwitchRequest"));
    }
    let plugin = r.nul_str("plugin name")?.to_owned();
    let mut salt = r.rest().to_vec();
    if salt.last() == Some(&0) {
        salt.pop();
    }
    Ok((plugin, salt))
}

#[cfg(test)]
mod tests {

    #[test]
    fn greeting_with_overflowing_auth_data_len_is_refused_not_panicking() {
        let mut p = vec![10u8];
        p.extend_from_slice(b"5.7.0\0");
        p.extend_from_slice(&[1, 0, 0, 0]);
        p.extend_from_slice(&[b'a'; 8]);
        p.push(0);
        p.extend_from_slice(&[0xff, 0xff, 33, 2, 0, 0xff, 0xff]);
        p.push(0x80);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(&[b'b'; 13]);
        p.extend_from_slice(b"mysql_native_password\0");
        assert_eq!(greeting_auth_data_len(&p), Some(0x80));
        assert!(ServerGreeting::parse(&p).is_err());
    }

    use super::*;

    #[test]
    fn greeting_parses_back() {
        let g = Greeting {
            server_version: "10.11.6-MariaDB-dgf".into(),
            connection_id: 42,
            salt: new_salt(),
            capabilities: cap::PROTOCOL_41 | cap::SECURE_CONNECTION | cap::PLUGIN_AUTH | cap::SSL | cap::DEPRECATE_EOF,
            collation: 45,
            plugin: super::super::consts::plugin::NATIVE,
        };
        let mut b = BytesMut::new();
        g.encode(&mut b);
        let s = ServerGreeting::parse(&b).unwrap();
        assert_eq!(s.server_version, g.server_version);
        assert_eq!(s.connection_id, 42);
        assert_eq!(s.salt, g.salt.to_vec());
        assert_eq!(s.capabilities, g.capabilities);
        assert_eq!(s.plugin, "mysql_native_password");
        assert!(g.salt.iter().all(|&c| c != 0 && c != b'$'));
        assert_ne!(new_salt(), new_salt());
    }

    #[test]
    fn response_roundtrip_and_ssl_request() {
        let r = HandshakeResponse {
            capabilities: cap::PROTOCOL_41
                | cap::SECURE_CONNECTION
                | cap::PLUGIN_AUTH
                | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
                | cap::CONNECT_ATTRS,
            max_packet: 1 << 24,
            collation: 45,
            user: "app".into(),
            auth_response: vec![1; 20],
            database: Some("shop".into()),
            plugin: Some("caching_sha2_password".into()),
            attrs: vec![("_client_name".into(), "t".into())],
        };
        let mut b = BytesMut::new();
        r.encode(&mut b);
        let ClientHello::Response(back) = parse_client_hello(&b).unwrap() else { panic!() };
        assert_eq!(back.capabilities, r.capabilities | cap::CONNECT_WITH_DB);
        assert_eq!((back.user.as_str(), back.database.as_deref()), ("app", Some("shop")));
        assert_eq!(back.auth_response, r.auth_response);
        assert_eq!(back.plugin, r.plugin);
        assert_eq!(back.attrs, r.attrs);
        let mut b = BytesMut::new();
        encode_ssl_request(&mut b, cap::PROTOCOL_41, 45);
        assert_eq!(b.len(), 32);
        assert!(matches!(parse_client_hello(&b).unwrap(), ClientHello::SslRequest { .. }));
    }

    #[test]
    fn collations() {
        assert_eq!(collation_names(45), Some(("utf8mb4".into(), "utf8mb4_general_ci".into())));
        assert_eq!(collation_names(8), Some(("latin1".into(), "latin1_swedish_ci".into())));
        assert_eq!(collation_names(0), None);
    }

    #[test]
    fn change_user_golden() {
        let mut p = vec![0x11];
        p.extend_from_slice(b"bob\0");
        p.push(3);
        p.extend_from_slice(&[9, 9, 9]);
        p.extend_from_slice(b"db\0");
        p.extend_from_slice(&45u16.to_le_bytes());
        p.extend_from_slice(b"mysql_native_password\0");
        let c = parse_change_user(&p, cap::SECURE_CONNECTION | cap::PLUGIN_AUTH).unwrap();
        assert_eq!(c.user, "bob");
        assert_eq!(c.auth_response, vec![9, 9, 9]);
        assert_eq!(c.database.as_deref(), Some("db"));
        assert_eq!(c.plugin.as_deref(), Some("mysql_native_password"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for n in 0..40 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let _ = parse_client_hello(&data);
            let _ = ServerGreeting::parse(&data);
            let _ = parse_change_user(&data, u32::MAX);
            let _ = parse_auth_switch(&data);
        }
    }
}
