//! Authentication state machines (no I/O).
//!
//! Server side ([`ServerAuth`], dgf authenticating a client against a plaintext password):
//! ```text
//! start(plugin, response)
//!   mysql_native_password ........................ verify SHA-1 scramble -> Success | Failure
//!   caching_sha2_password, scramble matches ...... Success (send 0x01 0x03 fast_auth_success, then OK)
//!   caching_sha2_password, otherwise ............. Failure (dgf knows the password: the cache is warm)
//!   caching_sha2_password, always_full_auth ...... Reply 0x01 0x04 (perform full auth) -> FullAuth
//!   any other plugin ............................. Reply AuthSwitchRequest(mysql_native_password) -> Switched
//! FullAuth + 0x02 (public key request) ........... Reply 0x01 <PEM> -> AwaitRsa (needs a key)
//! FullAuth + password\0 over TLS ................. Success | Failure
//! FullAuth + RSA-OAEP(...) without TLS ........... Success | Failure (3159 without a key)
//! AwaitRsa + RSA-OAEP(password\0 XOR salt) ....... Success | Failure
//! Switched + native scramble ..................... Success | Failure
//! ```
//! Client side ([`ClientAuth`], dgf logging in upstream): the greeting's plugin gives the first
//! response; then AuthSwitchRequest (0xFE), AuthMoreData (0x01: caching_sha2 fast-auth success,
//! full authentication over TLS, or the server's RSA public key), OK or ERR.

use super::consts::plugin;
use super::handshake::{encode_auth_switch, parse_auth_switch};
use super::packets::ErrPacket;
use bytes::BytesMut;
use mysql_common::auth::plugins::caching_sha2_password::scramble_sha256;
use mysql_common::auth::plugins::mysql_native_password::scramble_native;

/// RSA private-key operations for caching_sha2_password full authentication without TLS.
pub trait RsaKey: Send + Sync {
    /// PEM of the public key sent to clients that ask for it.
    fn public_pem(&self) -> &[u8];
    /// Decrypt an RSA-OAEP (SHA-1) ciphertext.
    fn decrypt(&self, ciphertext: &[u8]) -> Option<Vec<u8>>;
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn xor_salt(data: &[u8], salt: &[u8]) -> Vec<u8> {
    if salt.is_empty() {
        return data.to_vec();
    }
    data.iter().enumerate().map(|(i, b)| b ^ salt[i % salt.len()]).collect()
}

/// Native (SHA-1) scramble of `password` with `salt`; empty for an empty password.
pub fn native_scramble(salt: &[u8], password: &[u8]) -> Vec<u8> {
    scramble_native(salt, password).map(|s| s.to_vec()).unwrap_or_default()
}

/// caching_sha2_password scramble; empty for an empty password or a salt that is not 20 bytes.
pub fn sha2_scramble(salt: &[u8], password: &[u8]) -> Vec<u8> {
    let Ok(nonce) = <&[u8; 20]>::try_from(salt) else { return Vec::new() };
    scramble_sha256(nonce, password).map(|s| s.to_vec()).unwrap_or_default()
}

/// What the server side does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStep {
    /// Send this payload and wait for the client's next packet.
    Reply(Vec<u8>),
    /// Authenticated: send `extra` (if any) and then OK.
    Success {
        /// AuthMoreData to send before the OK (fast_auth_success).
        extra: Option<Vec<u8>>,
    },
    /// Wrong credentials (errno 1045).
    Failure,
    /// Full authentication needs TLS or an RSA key that is not available (errno 3159).
    InsecureTransport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SState {
    Start,
    FullAuth,
    AwaitRsa,
    Switched,
    Done,
}

/// Server-side authentication of one client.
pub struct ServerAuth<'k> {
    salt: [u8; 20],
    password: Option<Vec<u8>>,
    tls: bool,
    rsa: Option<&'k dyn RsaKey>,
    state: SState,
    always_full: bool,
}

impl<'k> ServerAuth<'k> {
    /// `password` is the user's plaintext (None: unknown user, every path fails without telling).
    pub fn new(salt: [u8; 20], password: Option<&[u8]>, tls: bool, rsa: Option<&'k dyn RsaKey>) -> Self {
        Self { salt, password: password.map(<[u8]>::to_vec), tls, rsa, state: SState::Start, always_full: false }
    }

    /// Skip the caching_sha2_password fast path: every such login does full authentication
    /// (what a MySQL server does while its cache is empty).
    pub fn always_full_auth(mut self, on: bool) -> Self {
        self.always_full = on;
        self
    }

    fn verdict(&mut self, ok: bool) -> ServerStep {
        self.state = SState::Done;
        if ok {
            ServerStep::Success { extra: None }
        } else {
            ServerStep::Failure
        }
    }

    fn check_native(&self, response: &[u8]) -> bool {
        match &self.password {
            Some(p) => ct_eq(response, &native_scramble(&self.salt, p)),
            None => false,
        }
    }

    fn check_plain(&self, given: &[u8]) -> bool {
        let given = given.strip_suffix(&[0]).unwrap_or(given);
        self.password.as_deref().is_some_and(|p| ct_eq(given, p))
    }

    /// The client's first response, made with `client_plugin` (None: mysql_native_password).
    pub fn start(&mut self, client_plugin: Option<&str>, response: &[u8]) -> ServerStep {
        match client_plugin.unwrap_or(plugin::NATIVE) {
            plugin::NATIVE => {
                let ok = self.check_native(response);
                self.verdict(ok)
            }
            plugin::CACHING_SHA2 => {
                let fast = !self.always_full
                    && self
                        .password
                        .as_deref()
                        .is_some_and(|p| response.len() == 32 && ct_eq(response, &sha2_scramble(&self.salt, p)));
                if fast {
                    self.state = SState::Done;
                    return ServerStep::Success { extra: Some(vec![0x01, 0x03]) };
                }
                if !self.always_full {
                    // dgf holds the password, so its "cache" is always warm: a wrong scramble is
                    // a wrong password, as on a MySQL server with the user cached.
                    return self.verdict(false);
                }
                self.state = SState::FullAuth;
                ServerStep::Reply(vec![0x01, 0x04])
            }
            _ => {
                self.state = SState::Switched;
                let mut b = BytesMut::new();
                encode_auth_switch(&mut b, plugin::NATIVE, &self.salt);
                ServerStep::Reply(b.to_vec())
            }
        }
    }

    /// The client's next packet.
    pub fn next(&mut self, packet: &[u8]) -> ServerStep {
        match self.state {
            SState::FullAuth if packet == [0x02] => match self.rsa {
                Some(k) => {
                    self.state = SState::AwaitRsa;
                    let mut p = vec![0x01];
                    p.extend_from_slice(k.public_pem());
                    ServerStep::Reply(p)
                }
                None => {
                    self.state = SState::Done;
                    ServerStep::InsecureTransport
                }
            },
            SState::FullAuth if self.tls => {
                let ok = self.check_plain(packet);
                self.verdict(ok)
            }
            SState::FullAuth if self.rsa.is_none() => {
                self.state = SState::Done;
                ServerStep::InsecureTransport
            }
            // Without TLS, a client that already has the public key (`--server-public-key-path`)
            // sends the encrypted password without asking for the key first.
            SState::FullAuth | SState::AwaitRsa => {
                let plain = self.rsa.and_then(|k| k.decrypt(packet)).map(|d| xor_salt(&d, &self.salt));
                let ok = plain.is_some_and(|p| self.check_plain(&p));
                self.verdict(ok)
            }
            SState::Switched => {
                let ok = self.check_native(packet);
                self.verdict(ok)
            }
            SState::Start | SState::Done => self.verdict(false),
        }
    }
}

/// What the client side does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientStep {
    /// Send this payload (next sequence id) and read again.
    Send(Vec<u8>),
    /// Read the next packet.
    Wait,
    /// Logged in (the OK packet was received).
    Done,
    /// The server refused us.
    Refused(ErrPacket),
    /// The server asked for something dgf does not do.
    Unsupported(String),
}

/// Client-side authentication of one upstream login.
pub struct ClientAuth {
    password: Vec<u8>,
    tls: bool,
    plugin: String,
    salt: Vec<u8>,
    awaiting_key: bool,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth").field("plugin", &self.plugin).field("tls", &self.tls).finish_non_exhaustive()
    }
}

impl ClientAuth {
    /// A login with `password` (empty for none) over a connection that is `tls` or not.
    pub fn new(password: &[u8], tls: bool, greeting_plugin: &str, salt: &[u8]) -> Self {
        Self {
            password: password.to_vec(),
            tls,
            plugin: greeting_plugin.to_owned(),
            salt: salt.to_vec(),
            awaiting_key: false,
        }
    }

    /// The plugin the first response is made for (unknown plugins fall back to native).
    pub fn plugin(&self) -> &str {
        match self.plugin.as_str() {
            plugin::CACHING_SHA2 => plugin::CACHING_SHA2,
            plugin::CLEAR if self.tls => plugin::CLEAR,
            _ => plugin::NATIVE,
        }
    }

    fn response_for(&self, plugin_name: &str) -> Result<Vec<u8>, String> {
        if self.password.is_empty() {
            return Ok(Vec::new());
        }
        match plugin_name {
            plugin::NATIVE => Ok(native_scramble(&self.salt, &self.password)),
            plugin::CACHING_SHA2 => Ok(sha2_scramble(&self.salt, &self.password)),
            plugin::CLEAR if self.tls => {
                let mut p = self.password.clone();
                p.push(0);
                Ok(p)
            }
            other => Err(format!("upstream asks for authentication plugin `{other}`, which dgf does not support")),
        }
    }

    /// The auth response for the greeting.
    pub fn initial(&self) -> Vec<u8> {
        self.response_for(self.plugin()).unwrap_or_default()
    }

    /// Handle the server's next packet.
    pub fn next(&mut self, packet: &[u8]) -> ClientStep {
        match packet.first() {
            Some(0x00) => ClientStep::Done,
            Some(0xff) => match ErrPacket::parse(packet) {
                Ok(e) => ClientStep::Refused(e),
                Err(_) => ClientStep::Unsupported("malformed error packet during login".into()),
            },
            Some(0xfe) => match parse_auth_switch(packet) {
                Ok((p, salt)) => {
                    self.plugin = p.clone();
                    self.salt = salt;
                    match self.response_for(&p) {
                        Ok(r) => ClientStep::Send(r),
                        Err(e) => ClientStep::Unsupported(e),
                    }
                }
                Err(e) => ClientStep::Unsupported(e.to_string()),
            },
            Some(0x01) if self.plugin == plugin::CACHING_SHA2 => {
                let data = &packet[1..];
                if self.awaiting_key {
                    self.awaiting_key = false;
                    let mut pw = self.password.clone();
                    pw.push(0);
                    return match mysql_common::crypto::encrypt(&xor_salt(&pw, &self.salt), data) {
                        Ok(c) => ClientStep::Send(c),
                        Err(e) => ClientStep::Unsupported(format!("server RSA public key: {e}")),
                    };
                }
                match data {
                    [0x03] => ClientStep::Wait,
                    [0x04] if self.tls => {
                        let mut pw = self.password.clone();
                        pw.push(0);
                        ClientStep::Send(pw)
                    }
                    [0x04] => {
                        self.awaiting_key = true;
                        ClientStep::Send(vec![0x02])
                    }
                    _ => ClientStep::Unsupported("unexpected caching_sha2_password message".into()),
                }
            }
            _ => ClientStep::Unsupported("unexpected packet during upstream login".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: [u8; 20] = *b"abcdefghijklmnopqrst";

    #[test]
    fn native_roundtrip_both_sides() {
        let c = ClientAuth::new(b"s3cret", false, plugin::NATIVE, &SALT);
        let mut s = ServerAuth::new(SALT, Some(b"s3cret"), false, None);
        assert_eq!(s.start(Some(plugin::NATIVE), &c.initial()), ServerStep::Success { extra: None });
        let mut s = ServerAuth::new(SALT, Some(b"other"), false, None);
        assert_eq!(s.start(None, &c.initial()), ServerStep::Failure);
        let mut s = ServerAuth::new(SALT, None, false, None);
        assert_eq!(s.start(None, &c.initial()), ServerStep::Failure);
    }

    #[test]
    fn caching_sha2_fast_and_full() {
        let mut c = ClientAuth::new(b"pw", true, plugin::CACHING_SHA2, &SALT);
        let mut s = ServerAuth::new(SALT, Some(b"pw"), true, None);
        assert_eq!(s.start(Some(plugin::CACHING_SHA2), &c.initial()), ServerStep::Success { extra: Some(vec![1, 3]) });
        assert_eq!(c.next(&[1, 3]), ClientStep::Wait);
        assert_eq!(c.next(&[0, 0, 0, 2, 0, 0, 0]), ClientStep::Done);
        // a wrong scramble is a wrong password
        let mut s = ServerAuth::new(SALT, Some(b"pw"), true, None);
        assert_eq!(s.start(Some(plugin::CACHING_SHA2), &[0u8; 32]), ServerStep::Failure);
        // with full authentication forced, over TLS the cleartext decides
        let mut s = ServerAuth::new(SALT, Some(b"pw"), true, None).always_full_auth(true);
        let ServerStep::Reply(r) = s.start(Some(plugin::CACHING_SHA2), &[0u8; 32]) else { panic!() };
        assert_eq!(c.next(&r), ClientStep::Send(b"pw\0".to_vec()));
        assert_eq!(s.next(b"pw\0"), ServerStep::Success { extra: None });
        // without TLS and without a key the cleartext path is refused
        let mut s = ServerAuth::new(SALT, Some(b"pw"), false, None).always_full_auth(true);
        s.start(Some(plugin::CACHING_SHA2), &[]);
        assert_eq!(s.next(b"pw\0"), ServerStep::InsecureTransport);
        let mut c = ClientAuth::new(b"pw", false, plugin::CACHING_SHA2, &SALT);
        assert_eq!(c.next(&[1, 4]), ClientStep::Send(vec![2]));
    }

    #[test]
    fn forced_full_auth() {
        let c = ClientAuth::new(b"pw", true, plugin::CACHING_SHA2, &SALT);
        let mut s = ServerAuth::new(SALT, Some(b"pw"), true, None).always_full_auth(true);
        assert_eq!(s.start(Some(plugin::CACHING_SHA2), &c.initial()), ServerStep::Reply(vec![1, 4]));
        assert_eq!(s.next(b"wrong\0"), ServerStep::Failure);
    }

    #[test]
    fn unknown_plugin_switches_to_native() {
        let mut s = ServerAuth::new(SALT, Some(b"pw"), false, None);
        let ServerStep::Reply(r) = s.start(Some("client_ed25519"), b"x") else { panic!() };
        let mut c = ClientAuth::new(b"pw", false, "client_ed25519", &[]);
        let ClientStep::Send(resp) = c.next(&r) else { panic!() };
        assert_eq!(s.next(&resp), ServerStep::Success { extra: None });
    }

    #[test]
    fn upstream_error_is_reported() {
        let mut c = ClientAuth::new(b"pw", false, plugin::NATIVE, &SALT);
        let ClientStep::Refused(e) = c.next(b"\xff\x15\x04#28000Access denied") else { panic!() };
        assert_eq!(e.errno, 1045);
    }
}
