//! SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL uses it: verifiers plus pure server and client state machines, no I/O.
//!
//! PostgreSQL specifics:
//!
//! * the username inside `client-first-message` is ignored (libpq sends an empty `n=`);
//!   the user is the one named in the startup packet;
//! * authorization identities (`a=`) and mandatory extensions (`m=`) are refused;
//! * only `SCRAM-SHA-256` (without `-PLUS`) is implemented, so a client that asks for
//!   channel binding (`p=...`) is refused, while `n,,` and `y,,` are accepted. `y,,` means
//!   "I could bind but I think the server can't": that is true for us because we never
//!   advertise `SCRAM-SHA-256-PLUS`;
//! * passwords are used as raw bytes. PostgreSQL runs SASLprep (RFC 4013) over the password
//!   first and falls back to the raw bytes when SASLprep fails (e.g. invalid UTF-8 or
//!   prohibited characters). For plain ASCII passwords without control characters SASLprep
//!   is the identity, so both agree; passwords with non-ASCII characters that SASLprep would
//!   normalise (e.g. non-ASCII spaces, compatibility forms) may differ from what PostgreSQL
//!   derives.
//!
//! Every message handed in is capped at [`MAX_SCRAM_MESSAGE_LEN`] bytes and every nonce at
//! [`MAX_NONCE_LEN`] bytes so a hostile peer cannot make us buffer or hash unbounded input.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub(crate) use super::scram_msg::{
    check_len, constant_time_eq, decode_proof, escape_saslname, parse_client_final, parse_client_first,
    parse_server_final, parse_server_first, random_nonce, ServerFirst,
};

/// SASL mechanism name advertised in `AuthenticationSASL`.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// Largest SCRAM message (client-first, client-final, server-first, server-final) accepted.
pub const MAX_SCRAM_MESSAGE_LEN: usize = 16 * 1024;

/// Largest nonce (client or combined) accepted.
pub const MAX_NONCE_LEN: usize = 1024;

/// Highest iteration count a [`ScramClient`] agrees to compute; a hostile server could
/// otherwise make the client burn CPU for minutes.
pub const MAX_CLIENT_ITERATIONS: u32 = 1_000_000;

/// Iteration count PostgreSQL uses by default (and that [`ScramVerifier::mock`] uses).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Salt length PostgreSQL uses for new verifiers (and that [`ScramVerifier::mock`] uses).
pub const DEFAULT_SALT_LEN: usize = 16;

const VERIFIER_PREFIX: &str = "SCRAM-SHA-256$";

/// Errors of the SCRAM exchange.
///
/// [`ScramError::is_protocol_violation`] separates malformed or out-of-sequence input
/// (SQLSTATE `08P01`) from authentication failures (SQLSTATE `28P01`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A SCRAM message exceeded [`MAX_SCRAM_MESSAGE_LEN`].
    #[error("SCRAM message too long ({len} bytes, at most {max} allowed)")]
    MessageTooLong {
        /// Length received.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A SCRAM message does not follow the RFC 5802 grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// A step was called out of order, or after the exchange finished or failed.
    #[error("unexpected SCRAM message in the current state of the exchange")]
    UnexpectedMessage,
    /// The client asked for channel binding (`p=...`), which we do not offer.
    #[error("client requested SCRAM channel binding, but only SCRAM-SHA-256 without channel binding is supported")]
    ChannelBindingNotSupported,
    /// The `c=` attribute of client-final does not echo the GS2 header of client-first.
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,
    /// The client sent an authorization identity (`a=`), which PostgreSQL does not support.
    #[error("client uses SCRAM authorization identity, which is not supported")]
    AuthzidNotSupported,
    /// The peer requires an extension (`m=`) we do not implement.
    #[error("peer requires an unsupported SCRAM extension")]
    UnsupportedExtension,
    /// The nonce in client-final differs from client nonce + server nonce (server side), or
    /// the server nonce does not extend the client nonce (client side).
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The client proof is wrong: wrong password (or unknown user with a mock verifier).
    #[error("password authentication failed")]
    InvalidPassword,
    /// The server demanded more PBKDF2 iterations than [`MAX_CLIENT_ITERATIONS`].
    #[error("server requested {iterations} SCRAM iterations, at most {max} allowed")]
    IterationCountTooHigh {
        /// Iterations requested by the server.
        iterations: u32,
        /// Limit.
        max: u32,
    },
    /// The server signature in server-final is wrong: the server does not know the password.
    #[error("SCRAM server signature mismatch: the server could not prove it knows the password")]
    ServerSignatureMismatch,
    /// The server answered with `e=<error>` in server-final.
    #[error("server reported SCRAM error: {0}")]
    ServerError(String),
    /// A stored verifier is not in PostgreSQL's `SCRAM-SHA-256$...` format.
    #[error("invalid SCRAM verifier: {0}")]
    InvalidVerifier(&'static str),
}

impl ScramError {
    /// `true` when the peer broke the protocol (SQLSTATE `08P01`); `false` for
    /// authentication failures (SQLSTATE `28P01`) and for bad stored verifiers (a
    /// configuration problem, never the peer's fault).
    ///
    /// Like PostgreSQL, a nonce mismatch in client-final counts as an authentication
    /// failure, while a broken channel-binding echo counts as a protocol violation.
    pub fn is_protocol_violation(&self) -> bool {
        match self {
            ScramError::MessageTooLong { .. }
            | ScramError::Malformed(_)
            | ScramError::UnexpectedMessage
            | ScramError::ChannelBindingNotSupported
            | ScramError::ChannelBindingMismatch
            | ScramError::AuthzidNotSupported
            | ScramError::UnsupportedExtension
            | ScramError::IterationCountTooHigh { .. } => true,
            ScramError::NonceMismatch
            | ScramError::InvalidPassword
            | ScramError::ServerSignatureMismatch
            | ScramError::ServerError(_)
            | ScramError::InvalidVerifier(_) => false,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Primitives
// ---------------------------------------------------------------------------------------

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC is defined for keys of any length (long keys are hashed, short ones padded), so
    // `new_from_slice` cannot fail for `Hmac<Sha256>`; the key never causes this panic.
    #[allow(clippy::expect_used)]
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC-SHA-256 accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations.max(1), &mut out);
    out
}

/// ClientKey = HMAC(SaltedPassword, "Client Key").
fn client_key(salted: &[u8; 32]) -> [u8; 32] {
    hmac_sha256(salted, &[b"Client Key"])
}

/// ServerKey = HMAC(SaltedPassword, "Server Key").
fn server_key(salted: &[u8; 32]) -> [u8; 32] {
    hmac_sha256(salted, &[b"Server Key"])
}

fn xor32(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

// ---------------------------------------------------------------------------------------
// Verifier
// ---------------------------------------------------------------------------------------

/// A stored SCRAM-SHA-256 secret, as kept in `pg_authid.rolpassword`.
///
/// `Display` renders PostgreSQL's format
/// `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.
/// `Debug` redacts the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// PBKDF2 iteration count (at least 1).
    pub iterations: u32,
    /// Salt (raw bytes).
    pub salt: Vec<u8>,
    /// StoredKey = SHA-256(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: [u8; 32],
    /// ServerKey = HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl ScramVerifier {
    /// Parses PostgreSQL's `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` format.
    pub fn parse(s: &str) -> Result<Self, ScramError> {
        let rest =
            s.strip_prefix(VERIFIER_PREFIX).ok_or(ScramError::InvalidVerifier("missing SCRAM-SHA-256$ prefix"))?;
        let (iter_salt, keys) =
            rest.split_once('$').ok_or(ScramError::InvalidVerifier("missing '$' before the keys"))?;
        let (iter, salt) =
            iter_salt.split_once(':').ok_or(ScramError::InvalidVerifier("missing ':' between iterations and salt"))?;
        let (stored, server) =
            keys.split_once(':').ok_or(ScramError::InvalidVerifier("missing ':' between StoredKey and ServerKey"))?;
        if iter.is_empty() || !iter.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ScramError::InvalidVerifier("iteration count is not a number"));
        }
        let iterations: u32 = iter.parse().map_err(|_| ScramError::InvalidVerifier("iteration count out of range"))?;
        if iterations == 0 {
            return Err(ScramError::InvalidVerifier("iteration count must be positive"));
        }
        let salt = B64.decode(salt).map_err(|_| ScramError::InvalidVerifier("salt is not valid base64"))?;
        if salt.is_empty() {
            return Err(ScramError::InvalidVerifier("empty salt"));
        }
        let stored_key =
            decode_key(stored).ok_or(ScramError::InvalidVerifier("StoredKey is not 32 bytes of base64"))?;
        let server_key =
            decode_key(server).ok_or(ScramError::InvalidVerifier("ServerKey is not 32 bytes of base64"))?;
        Ok(ScramVerifier { iterations, salt, stored_key, server_key })
    }

    /// Derives the verifier PostgreSQL would store for `password` with this salt and
    /// iteration count.
    ///
    /// No SASLprep normalisation is applied: the password's UTF-8 bytes are used as is.
    /// PostgreSQL applies SASLprep and falls back to the raw bytes when SASLprep fails;
    /// for plain ASCII passwords both give the same result. An `iterations` of 0 is
    /// treated as 1.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        Self::from_password_bytes(password.as_bytes(), salt, iterations)
    }

    pub(crate) fn from_password_bytes(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let iterations = iterations.max(1);
        let salted = salted_password(password, salt, iterations);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key(&salted)),
            server_key: server_key(&salted),
        }
    }

    /// `true` if `password` (raw bytes, see [`ScramVerifier::from_password`] about SASLprep)
    /// derives this verifier's StoredKey. Constant-time in the key comparison.
    pub fn matches_password(&self, password: &[u8]) -> bool {
        let salted = salted_password(password, &self.salt, self.iterations);
        constant_time_eq(&sha256(&client_key(&salted)), &self.stored_key)
    }

    /// A deterministic fake verifier for a user that does not exist (or has no usable
    /// SCRAM secret), so the server can run a plausible exchange and fail it only at the
    /// end with [`ScramError::InvalidPassword`], without revealing that the user is unknown.
    ///
    /// `secret` should be a per-deployment (or per-process) random value of at least 16
    /// bytes: the same user then always gets the same salt, like a real user would, but
    /// nobody can predict it. The keys are random-looking, so no password matches them.
    pub fn mock(username: &str, secret: &[u8]) -> Self {
        let user = username.as_bytes();
        let salt = hmac_sha256(secret, &[b"dgf scram mock salt\0", user]);
        ScramVerifier {
            iterations: DEFAULT_ITERATIONS,
            salt: salt[..DEFAULT_SALT_LEN].to_vec(),
            stored_key: hmac_sha256(secret, &[b"dgf scram mock stored key\0", user]),
            server_key: hmac_sha256(secret, &[b"dgf scram mock server key\0", user]),
        }
    }
}

fn decode_key(s: &str) -> Option<[u8; 32]> {
    B64.decode(s).ok()?.try_into().ok()
}

impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VERIFIER_PREFIX}{}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt", &B64.encode(&self.salt))
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

impl std::str::FromStr for ScramVerifier {
    type Err = ScramError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
enum ServerState {
    /// Waiting for client-first-message.
    Initial,
    /// server-first-message sent, waiting for client-final-message.
    FirstSent { gs2_header: String, client_first_bare: String, server_first: String, nonce: String },
    /// Exchange succeeded.
    Done,
    /// Exchange failed; every further call errors.
    Failed,
}

/// Server side of a SCRAM-SHA-256 exchange, as a pure state machine.
///
/// Feed the body of the client's `SASLInitialResponse` to
/// [`ScramServer::handle_client_first`] and send the result in `AuthenticationSASLContinue`;
/// feed the `SASLResponse` body to [`ScramServer::handle_client_final`] and send the result
/// in `AuthenticationSASLFinal`. Any error leaves the machine failed.
#[derive(Debug)]
pub struct ScramServer {
    verifier: ScramVerifier,
    server_nonce: String,
    state: ServerState,
}

impl ScramServer {
    /// Starts an exchange against `verifier` (use [`ScramVerifier::mock`] for unknown
    /// users), with an 18-byte random server nonce.
    pub fn new(verifier: ScramVerifier) -> Self {
        Self::with_nonce(verifier, random_nonce())
    }

    /// Starts an exchange with an explicit server nonce (tests, RFC vectors).
    pub(crate) fn with_nonce(verifier: ScramVerifier, server_nonce: String) -> Self {
        ScramServer { verifier, server_nonce, state: ServerState::Initial }
    }

    /// `true` once [`ScramServer::handle_client_final`] has succeeded.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, ServerState::Done)
    }

    /// Processes `client-first-message` and returns `server-first-message`
    /// (`r=<client nonce><server nonce>,s=<salt>,i=<iterations>`).
    pub fn handle_client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ServerState::Initial = std::mem::replace(&mut self.state, ServerState::Failed) else {
            return Err(ScramError::UnexpectedMessage);
        };
        // The username is ignored: PostgreSQL takes it from the startup packet.
        let first = parse_client_first(msg)?;
        let nonce = format!("{}{}", first.nonce, self.server_nonce);
        if nonce.len() > MAX_NONCE_LEN {
            return Err(ScramError::Malformed("nonce too long"));
        }
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&self.verifier.salt), self.verifier.iterations);
        let out = server_first.clone().into_bytes();
        self.state = ServerState::FirstSent {
            gs2_header: first.gs2_header,
            client_first_bare: first.bare.to_owned(),
            server_first,
            nonce,
        };
        Ok(out)
    }

    /// Processes `client-final-message`, checks the proof and returns `server-final-message`
    /// (`v=<server signature>`). A wrong password gives [`ScramError::InvalidPassword`].
    pub fn handle_client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ServerState::FirstSent { gs2_header, client_first_bare, server_first, nonce } =
            std::mem::replace(&mut self.state, ServerState::Failed)
        else {
            return Err(ScramError::UnexpectedMessage);
        };
        let fin = parse_client_final(msg, &gs2_header)?;
        let proof: [u8; 32] = decode_proof(fin.proof)?;
        if fin.nonce != nonce {
            return Err(ScramError::NonceMismatch);
        }
        let without_proof = fin.without_proof;

        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac_sha256(&self.verifier.stored_key, &[auth_message.as_bytes()]);
        let client_key = xor32(&proof, &client_signature);
        if !constant_time_eq(&sha256(&client_key), &self.verifier.stored_key) {
            return Err(ScramError::InvalidPassword);
        }
        let server_signature = hmac_sha256(&self.verifier.server_key, &[auth_message.as_bytes()]);
        self.state = ServerState::Done;
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

enum ClientState {
    /// client-first-message not answered yet.
    Initial,
    /// client-final-message sent; the expected server signature is kept.
    FinalSent { server_signature: [u8; 32] },
    /// Server signature verified.
    Done,
    /// Exchange failed; every further call errors.
    Failed,
}

/// Client side of a SCRAM-SHA-256 exchange (no channel binding), as a pure state machine:
/// [`ScramClient::client_first`] for `SASLInitialResponse`, then
/// [`ScramClient::handle_server_first`] on `AuthenticationSASLContinue`, then
/// [`ScramClient::handle_server_final`] on `AuthenticationSASLFinal`.
///
/// `Debug` does not print the password.
pub struct ScramClient {
    password: Vec<u8>,
    /// Escaped saslname; empty as libpq sends it.
    username: String,
    client_nonce: String,
    state: ClientState,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ClientState::Initial => "Initial",
            ClientState::FinalSent { .. } => "FinalSent",
            ClientState::Done => "Done",
            ClientState::Failed => "Failed",
        };
        f.debug_struct("ScramClient")
            .field("password", &"<redacted>")
            .field("client_nonce", &self.client_nonce)
            .field("state", &state)
            .finish()
    }
}

impl ScramClient {
    /// A client for `password` (used as raw UTF-8 bytes, see
    /// [`ScramVerifier::from_password`] about SASLprep) with an 18-byte random nonce.
    pub fn new(password: &str) -> Self {
        Self::with_nonce(password, "", random_nonce())
    }

    /// A client with explicit username (sent in `n=`) and nonce (tests, RFC vectors).
    pub(crate) fn with_nonce(password: &str, username: &str, client_nonce: String) -> Self {
        ScramClient {
            password: password.as_bytes().to_vec(),
            username: escape_saslname(username),
            client_nonce,
            state: ClientState::Initial,
        }
    }

    fn client_first_bare(&self) -> String {
        format!("n={},r={}", self.username, self.client_nonce)
    }

    /// `client-first-message`: `n,,n=,r=<nonce>`.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare()).into_bytes()
    }

    /// Processes `server-first-message` and returns `client-final-message` with the proof.
    ///
    /// Refuses iteration counts above [`MAX_CLIENT_ITERATIONS`] and server nonces that do
    /// not extend the client nonce.
    pub fn handle_server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ClientState::Initial = std::mem::replace(&mut self.state, ClientState::Failed) else {
            return Err(ScramError::UnexpectedMessage);
        };
        let server_first = check_len(msg)?;
        let ServerFirst { nonce, salt, iterations } = parse_server_first(server_first, &self.client_nonce)?;

        let salted = salted_password(&self.password, &salt, iterations);
        let client_key = client_key(&salted);
        let stored_key = sha256(&client_key);
        // "biws" = base64("n,,")
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare());
        let client_signature = hmac_sha256(&stored_key, &[auth_message.as_bytes()]);
        let proof = xor32(&client_key, &client_signature);
        let server_signature = hmac_sha256(&server_key(&salted), &[auth_message.as_bytes()]);
        self.state = ClientState::FinalSent { server_signature };
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Processes `server-final-message`, verifying the server signature.
    pub fn handle_server_final(&mut self, msg: &[u8]) -> Result<(), ScramError> {
        let ClientState::FinalSent { server_signature } = std::mem::replace(&mut self.state, ClientState::Failed)
        else {
            return Err(ScramError::UnexpectedMessage);
        };
        let v = parse_server_final(msg)?;
        if !constant_time_eq(&v, &server_signature) {
            return Err(ScramError::ServerSignatureMismatch);
        }
        self.state = ClientState::Done;
        Ok(())
    }

    /// `true` once [`ScramClient::handle_server_final`] has verified the server.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, ClientState::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str =
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    /// From PostgreSQL 15: `SET password_encryption='scram-sha-256'; CREATE ROLE ... PASSWORD 'secret'`.
    const PG_SECRET_VERIFIER: &str = "SCRAM-SHA-256$4096:OPFghirySu7CKImVf8lWMg==$QZ+OwrCC0QozrE0Z8WIVi4O3V/1Z4OnJkXaY3qdqWWE=:VThFGm+vE39xLMTCUWYXaucppYmJIF0rXrcRzr1/lz4=";

    fn rfc_verifier() -> ScramVerifier {
        let salt = B64.decode(RFC_SALT).unwrap();
        ScramVerifier::from_password("pencil", &salt, 4096)
    }

    fn round_trip(client: &mut ScramClient, server: &mut ScramServer) -> Result<(), ScramError> {
        let sf = server.handle_client_first(&client.client_first())?;
        let cf = client.handle_server_first(&sf)?;
        let fin = server.handle_client_final(&cf)?;
        client.handle_server_final(&fin)
    }

    #[test]
    fn rfc7677_client_vector() {
        let mut c = ScramClient::with_nonce("pencil", "user", RFC_CLIENT_NONCE.into());
        assert_eq!(c.client_first(), RFC_CLIENT_FIRST.as_bytes());
        let cf = c.handle_server_first(RFC_SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(std::str::from_utf8(&cf).unwrap(), RFC_CLIENT_FINAL);
        c.handle_server_final(RFC_SERVER_FINAL.as_bytes()).unwrap();
        assert!(c.is_authenticated());
    }

    #[test]
    fn rfc7677_server_vector() {
        let mut s = ScramServer::with_nonce(rfc_verifier(), RFC_SERVER_NONCE.into());
        let sf = s.handle_client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(std::str::from_utf8(&sf).unwrap(), RFC_SERVER_FIRST);
        assert!(!s.is_authenticated());
        let fin = s.handle_client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(std::str::from_utf8(&fin).unwrap(), RFC_SERVER_FINAL);
        assert!(s.is_authenticated());
    }

    #[test]
    fn rfc7677_verifier_formulas() {
        // Independent computation of the RFC formulas with the underlying crates.
        let salt = B64.decode(RFC_SALT).unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(b"pencil", &salt, 4096, &mut salted);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&salted).unwrap();
        mac.update(b"Client Key");
        let ck = mac.finalize().into_bytes();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&salted).unwrap();
        mac.update(b"Server Key");
        let sk: [u8; 32] = mac.finalize().into_bytes().into();
        let stored: [u8; 32] = Sha256::digest(ck).into();
        let v = rfc_verifier();
        assert_eq!(v.stored_key, stored);
        assert_eq!(v.server_key, sk);
        assert_eq!(v.iterations, 4096);
        assert_eq!(v.salt, salt);
    }

    #[test]
    fn round_trip_succeeds_with_random_nonces() {
        let v = ScramVerifier::from_password("hunter2", b"0123456789abcdef", 4096);
        let mut c = ScramClient::new("hunter2");
        let mut s = ScramServer::new(v);
        round_trip(&mut c, &mut s).unwrap();
        assert!(c.is_authenticated());
        assert!(s.is_authenticated());
        // Client-first is what libpq sends: empty user name.
        let first = String::from_utf8(ScramClient::new("x").client_first()).unwrap();
        assert!(first.starts_with("n,,n=,r="));
        assert_eq!(first.len(), "n,,n=,r=".len() + 24);
    }

    #[test]
    fn wrong_password_fails() {
        let v = ScramVerifier::from_password("hunter2", b"0123456789abcdef", 4096);
        let mut c = ScramClient::new("hunter3");
        let mut s = ScramServer::new(v);
        let err = round_trip(&mut c, &mut s).unwrap_err();
        assert_eq!(err, ScramError::InvalidPassword);
        assert!(!err.is_protocol_violation());
        assert!(!s.is_authenticated());
        // The machine is dead afterwards.
        assert_eq!(s.handle_client_final(b"c=biws,r=x,p=AAAA").unwrap_err(), ScramError::UnexpectedMessage);
    }

    #[test]
    fn tampered_nonce_fails() {
        let v = ScramVerifier::from_password("pw", b"saltsaltsaltsalt", 4096);
        let mut c = ScramClient::new("pw");
        let mut s = ScramServer::new(v);
        let sf = s.handle_client_first(&c.client_first()).unwrap();
        let cf = String::from_utf8(c.handle_server_first(&sf).unwrap()).unwrap();
        // Flip one character of the combined nonce.
        let idx = "c=biws,r=".len() + 3;
        let mut bytes = cf.into_bytes();
        bytes[idx] = if bytes[idx] == b'A' { b'B' } else { b'A' };
        let err = s.handle_client_final(&bytes).unwrap_err();
        assert_eq!(err, ScramError::NonceMismatch);
        assert!(!err.is_protocol_violation());
    }

    #[test]
    fn client_rejects_server_nonce_not_extending_its_own() {
        let mut c = ScramClient::with_nonce("pw", "", "abc".into());
        let err = c.handle_server_first(b"r=abd123,s=c2FsdA==,i=4096").unwrap_err();
        assert_eq!(err, ScramError::NonceMismatch);
        let mut c = ScramClient::with_nonce("pw", "", "abc".into());
        let err = c.handle_server_first(b"r=abc,s=c2FsdA==,i=4096").unwrap_err();
        assert_eq!(err, ScramError::NonceMismatch);
    }

    #[test]
    fn client_caps_iterations() {
        let mut c = ScramClient::with_nonce("pw", "", "abc".into());
        let err = c.handle_server_first(b"r=abcdef,s=c2FsdA==,i=1000001").unwrap_err();
        assert!(matches!(err, ScramError::IterationCountTooHigh { .. }));
        let mut c = ScramClient::with_nonce("pw", "", "abc".into());
        let err = c.handle_server_first(b"r=abcdef,s=c2FsdA==,i=99999999999").unwrap_err();
        assert!(matches!(err, ScramError::IterationCountTooHigh { .. }));
        let mut c = ScramClient::with_nonce("pw", "", "abc".into());
        let err = c.handle_server_first(b"r=abcdef,s=c2FsdA==,i=0").unwrap_err();
        assert!(err.is_protocol_violation());
    }

    #[test]
    fn client_detects_bad_server_signature_and_server_error() {
        let v = ScramVerifier::from_password("pw", b"saltsaltsaltsalt", 4096);
        let mut c = ScramClient::new("pw");
        let mut s = ScramServer::new(v);
        let sf = s.handle_client_first(&c.client_first()).unwrap();
        let cf = c.handle_server_first(&sf).unwrap();
        let mut fin = s.handle_client_final(&cf).unwrap();
        let last = fin.len() - 2;
        fin[last] = if fin[last] == b'A' { b'B' } else { b'A' };
        let err = c.handle_server_final(&fin).unwrap_err();
        assert!(matches!(err, ScramError::ServerSignatureMismatch | ScramError::Malformed(_)));

        let mut c = ScramClient::new("pw");
        let sf = format!(
            "r={}xyz,s=c2FsdA==,i=4096",
            String::from_utf8(c.client_first()).unwrap()["n,,n=,r=".len()..].to_owned()
        );
        c.handle_server_first(sf.as_bytes()).unwrap();
        assert_eq!(
            c.handle_server_final(b"e=invalid-proof").unwrap_err(),
            ScramError::ServerError("invalid-proof".into())
        );
    }

    #[test]
    fn y_flag_is_accepted_and_must_be_echoed() {
        let v = ScramVerifier::from_password("pencil", &B64.decode(RFC_SALT).unwrap(), 4096);
        let mut s = ScramServer::with_nonce(v.clone(), "servernonce".into());
        s.handle_client_first(b"y,,n=,r=clientnonce").unwrap();
        // Build a correct y,, client-final by hand.
        let salted = salted_password(b"pencil", &v.salt, 4096);
        let ck = client_key(&salted);
        let without_proof = "c=eSws,r=clientnonceservernonce";
        let auth = format!("n=,r=clientnonce,r=clientnonceservernonce,s={RFC_SALT},i=4096,{without_proof}");
        let sig = hmac_sha256(&sha256(&ck), &[auth.as_bytes()]);
        let msg = format!("{without_proof},p={}", B64.encode(xor32(&ck, &sig)));
        s.handle_client_final(msg.as_bytes()).unwrap();
        assert!(s.is_authenticated());

        // y,, in first message but c=biws in the final: channel binding mismatch.
        let mut s = ScramServer::with_nonce(v, "servernonce".into());
        s.handle_client_first(b"y,,n=,r=clientnonce").unwrap();
        let err = s
            .handle_client_final(b"c=biws,r=clientnonceservernonce,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .unwrap_err();
        assert_eq!(err, ScramError::ChannelBindingMismatch);
        assert!(err.is_protocol_violation());
    }

    #[test]
    fn client_first_rejections() {
        let cases: &[(&[u8], ScramError)] = &[
            (b"p=tls-server-end-point,,n=,r=abc", ScramError::ChannelBindingNotSupported),
            (b"n,a=admin,n=,r=abc", ScramError::AuthzidNotSupported),
            (b"n,,m=ext,n=,r=abc", ScramError::UnsupportedExtension),
            (b"x,,n=,r=abc", ScramError::Malformed("invalid GS2 channel binding flag")),
            (b"n,,n=,r=", ScramError::Malformed("empty nonce")),
            (b"n,,n=", ScramError::Malformed("missing nonce")),
            (b"", ScramError::Malformed("missing GS2 header")),
            (b"n,,n=,r=a\x01b", ScramError::Malformed("nonce contains non-printable characters")),
            (b"n,,n=,r=\xff", ScramError::Malformed("message is not valid UTF-8")),
        ];
        for (msg, want) in cases {
            let mut s = ScramServer::new(rfc_verifier());
            let err = s.handle_client_first(msg).unwrap_err();
            assert_eq!(&err, want, "{:?}", String::from_utf8_lossy(msg));
            assert!(err.is_protocol_violation());
        }
        let mut s = ScramServer::new(rfc_verifier());
        let long = format!("n,,n=,r={}", "a".repeat(MAX_SCRAM_MESSAGE_LEN));
        assert!(matches!(s.handle_client_first(long.as_bytes()).unwrap_err(), ScramError::MessageTooLong { .. }));
        let mut s = ScramServer::new(rfc_verifier());
        let long = format!("n,,n=,r={}", "a".repeat(MAX_NONCE_LEN + 1));
        assert_eq!(s.handle_client_first(long.as_bytes()).unwrap_err(), ScramError::Malformed("nonce too long"));
        // Username content and extensions are ignored.
        let mut s = ScramServer::new(rfc_verifier());
        s.handle_client_first(b"n,,n=someone=2Celse,r=abc,x=ext").unwrap();
    }

    #[test]
    fn out_of_order_steps_fail() {
        let mut s = ScramServer::new(rfc_verifier());
        assert_eq!(s.handle_client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap_err(), ScramError::UnexpectedMessage);
        let mut s = ScramServer::new(rfc_verifier());
        s.handle_client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
        let err = s.handle_client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap_err();
        assert_eq!(err, ScramError::UnexpectedMessage);
        assert!(err.is_protocol_violation());

        let mut c = ScramClient::new("pw");
        assert_eq!(c.handle_server_final(RFC_SERVER_FINAL.as_bytes()).unwrap_err(), ScramError::UnexpectedMessage);
    }

    #[test]
    fn verifier_parse_format_round_trip() {
        let v = ScramVerifier::parse(PG_SECRET_VERIFIER).unwrap();
        assert_eq!(v.iterations, 4096);
        assert_eq!(v.salt.len(), 16);
        assert_eq!(v.to_string(), PG_SECRET_VERIFIER);
        assert_eq!(PG_SECRET_VERIFIER.parse::<ScramVerifier>().unwrap(), v);
        let dbg = format!("{v:?}");
        assert!(!dbg.contains("QZ+OwrCC0"), "{dbg}");
        assert!(dbg.contains("redacted"));

        let rfc = rfc_verifier();
        assert_eq!(ScramVerifier::parse(&rfc.to_string()).unwrap(), rfc);

        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$0:c2FsdA==$QZ+OwrCC0QozrE0Z8WIVi4O3V/1Z4OnJkXaY3qdqWWE=:VThFGm+vE39xLMTCUWYXaucppYmJIF0rXrcRzr1/lz4=",
            "SCRAM-SHA-256$+1:c2FsdA==$QZ+OwrCC0QozrE0Z8WIVi4O3V/1Z4OnJkXaY3qdqWWE=:VThFGm+vE39xLMTCUWYXaucppYmJIF0rXrcRzr1/lz4=",
            "SCRAM-SHA-256$4096:$QZ+OwrCC0QozrE0Z8WIVi4O3V/1Z4OnJkXaY3qdqWWE=:VThFGm+vE39xLMTCUWYXaucppYmJIF0rXrcRzr1/lz4=",
            "SCRAM-SHA-256$4096:c2FsdA==$c2FsdA==:VThFGm+vE39xLMTCUWYXaucppYmJIF0rXrcRzr1/lz4=",
            "SCRAM-SHA-256$4096:c2FsdA==$QZ+OwrCC0QozrE0Z8WIVi4O3V/1Z4OnJkXaY3qdqWWE=:!!",
        ] {
            let err = ScramVerifier::parse(bad).unwrap_err();
            assert!(matches!(err, ScramError::InvalidVerifier(_)), "{bad}");
            assert!(!err.is_protocol_violation());
        }
    }

    #[test]
    fn from_password_matches_real_postgres() {
        let pg = ScramVerifier::parse(PG_SECRET_VERIFIER).unwrap();
        let ours = ScramVerifier::from_password("secret", &pg.salt, pg.iterations);
        assert_eq!(ours, pg);
        assert_eq!(ours.to_string(), PG_SECRET_VERIFIER);
        assert!(pg.matches_password(b"secret"));
        assert!(!pg.matches_password(b"Secret"));

        let mut c = ScramClient::new("secret");
        let mut s = ScramServer::new(pg.clone());
        round_trip(&mut c, &mut s).unwrap();
        assert!(s.is_authenticated() && c.is_authenticated());

        let mut c = ScramClient::new("wrong");
        let mut s = ScramServer::new(pg);
        assert_eq!(round_trip(&mut c, &mut s).unwrap_err(), ScramError::InvalidPassword);
    }

    #[test]
    fn mock_verifier_is_deterministic_plausible_and_unusable() {
        let secret = b"per-process random secret 0123456789";
        let a = ScramVerifier::mock("alice", secret);
        assert_eq!(a, ScramVerifier::mock("alice", secret));
        assert_ne!(a, ScramVerifier::mock("bob", secret));
        assert_ne!(a, ScramVerifier::mock("alice", b"other secret"));
        assert_eq!(a.salt.len(), DEFAULT_SALT_LEN);
        assert_eq!(a.iterations, DEFAULT_ITERATIONS);
        assert_eq!(ScramVerifier::parse(&a.to_string()).unwrap(), a);

        let mut c = ScramClient::new("");
        let mut s = ScramServer::new(a);
        assert_eq!(round_trip(&mut c, &mut s).unwrap_err(), ScramError::InvalidPassword);
    }

    #[test]
    fn client_debug_redacts_password() {
        let c = ScramClient::new("topsecretpw");
        assert!(!format!("{c:?}").contains("topsecretpw"));
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn garbage_client_first_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut s = ScramServer::with_nonce(ScramVerifier::mock("u", b"k"), "srv".into());
            let _ = s.handle_client_first(&msg);
        }

        #[test]
        fn structured_client_first_never_panics(msg in "[nyp]?(=[a-z-]*)?,(a=[a-z]*)?,(m=x,)?(n=[^,]*)?(,r=[!-~]{0,8})?(,[a-z=,]{0,6})?") {
            let mut s = ScramServer::with_nonce(ScramVerifier::mock("u", b"k"), "srv".into());
            let _ = s.handle_client_first(msg.as_bytes());
        }

        #[test]
        fn garbage_client_final_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut s = ScramServer::with_nonce(ScramVerifier::mock("u", b"k"), "srv".into());
            s.handle_client_first(b"n,,n=,r=cli").unwrap();
            let _ = s.handle_client_final(&msg);
        }

        #[test]
        fn structured_client_final_never_panics(msg in "(c=(biws|eSws|[A-Za-z0-9+/=]{0,8}))?,?(r=(clisrv|[!-~]{0,8}))?(,[a-z]=[a-z]{0,3})*,?(p=[A-Za-z0-9+/=]{0,48})?") {
            let mut s = ScramServer::with_nonce(ScramVerifier::mock("u", b"k"), "srv".into());
            s.handle_client_first(b"n,,n=,r=cli").unwrap();
            let _ = s.handle_client_final(msg.as_bytes());
        }

        #[test]
        fn garbage_server_messages_never_panic(
            first in proptest::collection::vec(any::<u8>(), 0..128),
            fin in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let mut c = ScramClient::with_nonce("pw", "", "cli".into());
            let _ = c.handle_server_first(&first);
            let _ = c.handle_server_final(&fin);
            let mut c = ScramClient::with_nonce("pw", "", "cli".into());
            // A structurally valid first step with a cheap iteration count, then garbage.
            c.handle_server_first(b"r=clisrv,s=c2FsdA==,i=1").unwrap();
            let _ = c.handle_server_final(&fin);
        }

        #[test]
        fn verifier_parse_never_panics(s in "(SCRAM-SHA-256\\$)?[0-9+:$A-Za-z/=]{0,80}") {
            let _ = ScramVerifier::parse(&s);
        }
    }
}
