//! SCRAM-SHA-1 as MongoDB speaks it: RFC 5802 over SHA-1, with MongoDB's legacy password
//! digest `hex(md5("<user>:mongo:<password>"))` used as the SCRAM password (no SASLprep).
//! Verifier, server and client state machines; no I/O. The message grammar is shared with
//! the SCRAM-SHA-256 implementation (`postgres::scram`).

use crate::postgres::scram::{
    check_len, constant_time_eq, decode_proof, escape_saslname, parse_client_final, parse_client_first,
    parse_server_final, parse_server_first, random_nonce, ScramError, ServerFirst, MAX_NONCE_LEN,
};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use sha1::Sha1;
use std::fmt;

/// The SASL mechanism name.
pub const MECHANISM: &str = "SCRAM-SHA-1";

/// Iterations for verifiers dgf derives (MongoDB's default `scramIterationCount`).
pub const DEFAULT_ITERATIONS: u32 = 10_000;

/// Fewest iterations a client accepts from a server (the drivers' authentication spec).
pub const MIN_ITERATIONS: u32 = 4096;

/// Salt length for verifiers dgf derives (MongoDB uses 16 bytes for SHA-1).
pub const SALT_LEN: usize = 16;

const KEY_LEN: usize = 20;
type Key = [u8; KEY_LEN];

/// MongoDB's password digest: lower-case hex of md5(`user:mongo:password`).
pub fn password_digest(user: &str, password: &str) -> String {
    let d = Md5::digest(format!("{user}:mongo:{password}").as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Key {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail.
    #[allow(clippy::expect_used)]
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC-SHA-1 accepts keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn sha1(data: &[u8]) -> Key {
    <Sha1 as sha1::Digest>::digest(data).into()
}

fn salted_password(secret: &[u8], salt: &[u8], iterations: u32) -> Key {
    let mut out = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha1>(secret, salt, iterations.max(1), &mut out);
    out
}

fn xor(a: &Key, b: &Key) -> Key {
    let mut out = [0u8; KEY_LEN];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

/// A SCRAM-SHA-1 secret as MongoDB stores it (`credentials.SCRAM-SHA-1`). `Debug` redacts
/// the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Sha1Verifier {
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// Salt (raw bytes).
    pub salt: Vec<u8>,
    /// StoredKey = SHA-1(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: [u8; 20],
    /// ServerKey = HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 20],
}

impl fmt::Debug for Sha1Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sha1Verifier").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl Sha1Verifier {
    /// The verifier MongoDB derives for `user` / `password` (digest first, then PBKDF2).
    pub fn from_password(user: &str, password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = salted_password(password_digest(user, password).as_bytes(), salt, iterations);
        Sha1Verifier {
            iterations: iterations.max(1),
            salt: salt.to_vec(),
            stored_key: sha1(&hmac_sha1(&salted, &[b"Client Key"])),
            server_key: hmac_sha1(&salted, &[b"Server Key"]),
        }
    }

    /// A deterministic fake verifier for an unknown user (same salt every time, no password
    /// matches), so the exchange fails only at the proof like a wrong password does.
    pub fn mock(user: &str, secret: &[u8]) -> Self {
        let salt = hmac_sha1(secret, &[b"dgf scram-sha-1 mock salt\0", user.as_bytes()]);
        Sha1Verifier {
            iterations: DEFAULT_ITERATIONS,
            salt: salt[..SALT_LEN].to_vec(),
            stored_key: hmac_sha1(secret, &[b"dgf scram-sha-1 mock stored key\0", user.as_bytes()]),
            server_key: hmac_sha1(secret, &[b"dgf scram-sha-1 mock server key\0", user.as_bytes()]),
        }
    }
}

enum ServerState {
    Initial,
    FirstSent { gs2_header: String, client_first_bare: String, server_first: String, nonce: String },
    Done,
    Failed,
}

/// Server side of a SCRAM-SHA-1 exchange: [`Sha1Server::handle_client_first`] returns the
/// server-first message, [`Sha1Server::handle_client_final`] checks the proof and returns
/// the server-final message. Any error leaves the machine failed.
pub struct Sha1Server {
    verifier: Sha1Verifier,
    server_nonce: String,
    state: ServerState,
}

impl Sha1Server {
    /// An exchange against `verifier` with a random server nonce.
    pub fn new(verifier: Sha1Verifier) -> Self {
        Self::with_nonce(verifier, random_nonce())
    }

    fn with_nonce(verifier: Sha1Verifier, server_nonce: String) -> Self {
        Sha1Server { verifier, server_nonce, state: ServerState::Initial }
    }

    /// `true` once the client's proof has been checked.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, ServerState::Done)
    }

    /// client-first -> server-first (`r=<nonces>,s=<salt>,i=<iterations>`).
    pub fn handle_client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ServerState::Initial = std::mem::replace(&mut self.state, ServerState::Failed) else {
            return Err(ScramError::UnexpectedMessage);
        };
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

    /// client-final -> server-final (`v=<signature>`); a wrong proof is
    /// [`ScramError::InvalidPassword`].
    pub fn handle_client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ServerState::FirstSent { gs2_header, client_first_bare, server_first, nonce } =
            std::mem::replace(&mut self.state, ServerState::Failed)
        else {
            return Err(ScramError::UnexpectedMessage);
        };
        let fin = parse_client_final(msg, &gs2_header)?;
        let proof: Key = decode_proof(fin.proof)?;
        if fin.nonce != nonce {
            return Err(ScramError::NonceMismatch);
        }
        let auth_message = format!("{client_first_bare},{server_first},{}", fin.without_proof);
        let client_key = xor(&proof, &hmac_sha1(&self.verifier.stored_key, &[auth_message.as_bytes()]));
        if !constant_time_eq(&sha1(&client_key), &self.verifier.stored_key) {
            return Err(ScramError::InvalidPassword);
        }
        let signature = hmac_sha1(&self.verifier.server_key, &[auth_message.as_bytes()]);
        self.state = ServerState::Done;
        Ok(format!("v={}", B64.encode(signature)).into_bytes())
    }
}

enum ClientState {
    Initial,
    FinalSent { server_signature: Key },
    Done,
    Failed,
}

/// Client side of a SCRAM-SHA-1 exchange with MongoDB (dgf logging in upstream when the
/// server offers only SCRAM-SHA-1). `Debug` does not show the password.
pub struct Sha1Client {
    digest: String,
    username: String,
    client_nonce: String,
    state: ClientState,
}

impl fmt::Debug for Sha1Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sha1Client").field("username", &self.username).finish_non_exhaustive()
    }
}

impl Sha1Client {
    /// A client for `user` / `password` with a random nonce.
    pub fn new(user: &str, password: &str) -> Self {
        Self::with_nonce(user, password, random_nonce())
    }

    fn with_nonce(user: &str, password: &str, client_nonce: String) -> Self {
        Sha1Client {
            digest: password_digest(user, password),
            username: escape_saslname(user),
            client_nonce,
            state: ClientState::Initial,
        }
    }

    fn bare(&self) -> String {
        format!("n={},r={}", self.username, self.client_nonce)
    }

    /// `n,,n=<user>,r=<nonce>`.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.bare()).into_bytes()
    }

    /// server-first -> client-final with the proof. Refuses fewer than [`MIN_ITERATIONS`].
    pub fn handle_server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ClientState::Initial = std::mem::replace(&mut self.state, ClientState::Failed) else {
            return Err(ScramError::UnexpectedMessage);
        };
        let server_first = check_len(msg)?;
        let ServerFirst { nonce, salt, iterations } = parse_server_first(server_first, &self.client_nonce)?;
        if iterations < MIN_ITERATIONS {
            return Err(ScramError::Malformed("SCRAM-SHA-1 iteration count below 4096"));
        }
        let salted = salted_password(self.digest.as_bytes(), &salt, iterations);
        let client_key = hmac_sha1(&salted, &[b"Client Key"]);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.bare());
        let proof = xor(&client_key, &hmac_sha1(&sha1(&client_key), &[auth_message.as_bytes()]));
        let server_key = hmac_sha1(&salted, &[b"Server Key"]);
        self.state = ClientState::FinalSent { server_signature: hmac_sha1(&server_key, &[auth_message.as_bytes()]) };
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server's signature.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    // The drivers' authentication spec example (user "user", password "pencil"): the SCRAM
    // password is the MongoDB digest.
    const NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL";
    const SERVER_NONCE: &str = "Ho+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE";
    const SERVER_FIRST: &str =
        "r=fyko+d2lbbFgONRv9qkxdawLHo+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE,s=rQ9ZY3MntBeuP3E1TDVC4w==,i=10000";
    const CLIENT_FINAL: &str =
        "c=biws,r=fyko+d2lbbFgONRv9qkxdawLHo+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE,p=MC2T8BvbmWRckDw8oWl5IVghwCY=";
    const SERVER_FINAL: &str = "v=UMWeI25JD1yNYZRMpZ4VHvhZ9e0=";

    fn spec_verifier() -> Sha1Verifier {
        Sha1Verifier::from_password("user", "pencil", &B64.decode("rQ9ZY3MntBeuP3E1TDVC4w==").unwrap(), 10_000)
    }

    #[test]
    fn digest() {
        assert_eq!(password_digest("user", "pencil"), "1c33006ec1ffd90f9cadcbcc0e118200");
    }

    #[test]
    fn client_vector() {
        let mut c = Sha1Client::with_nonce("user", "pencil", NONCE.into());
        assert_eq!(c.client_first(), format!("n,,n=user,r={NONCE}").into_bytes());
        assert_eq!(c.handle_server_first(SERVER_FIRST.as_bytes()).unwrap(), CLIENT_FINAL.as_bytes());
        c.handle_server_final(SERVER_FINAL.as_bytes()).unwrap();
        let mut bad = Sha1Client::with_nonce("user", "pencil", NONCE.into());
        bad.handle_server_first(SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(
            bad.handle_server_final(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(ScramError::ServerSignatureMismatch)
        );
    }

    #[test]
    fn server_vector() {
        let mut s = Sha1Server::with_nonce(spec_verifier(), SERVER_NONCE.into());
        let first = s.handle_client_first(format!("n,,n=user,r={NONCE}").as_bytes()).unwrap();
        assert_eq!(first, SERVER_FIRST.as_bytes());
        assert_eq!(s.handle_client_final(CLIENT_FINAL.as_bytes()).unwrap(), SERVER_FINAL.as_bytes());
        assert!(s.is_authenticated());
    }

    #[test]
    fn round_trips_and_failures() {
        let v = Sha1Verifier::from_password("bob", "s3cret", b"0123456789abcdef", 4096);
        let run = |user: &str, pw: &str, v: Sha1Verifier| -> Result<(), ScramError> {
            let mut c = Sha1Client::new(user, pw);
            let mut s = Sha1Server::new(v);
            let sf = s.handle_client_first(&c.client_first())?;
            let cf = c.handle_server_first(&sf)?;
            let fin = s.handle_client_final(&cf)?;
            c.handle_server_final(&fin)
        };
        run("bob", "s3cret", v.clone()).unwrap();
        assert_eq!(run("bob", "wrong", v.clone()), Err(ScramError::InvalidPassword));
        // The digest includes the user name: the same password under another name fails.
        assert_eq!(run("alice", "s3cret", v), Err(ScramError::InvalidPassword));
        assert_eq!(run("ghost", "x", Sha1Verifier::mock("ghost", b"k")), Err(ScramError::InvalidPassword));
        assert_eq!(Sha1Verifier::mock("ghost", b"k"), Sha1Verifier::mock("ghost", b"k"));
        assert!(!format!("{:?}", spec_verifier()).contains("stored"));
    }

    #[test]
    fn refusals() {
        let mut s = Sha1Server::new(spec_verifier());
        assert!(s.handle_client_final(b"c=biws,r=x,p=AAAA").is_err(), "out of order");
        let mut s = Sha1Server::new(spec_verifier());
        assert_eq!(s.handle_client_first(b"p=tls-unique,,n=u,r=abc"), Err(ScramError::ChannelBindingNotSupported));
        let mut s = Sha1Server::new(spec_verifier());
        let sf = String::from_utf8(s.handle_client_first(b"n,,n=user,r=abc").unwrap()).unwrap();
        let nonce = sf.split(',').next().unwrap().trim_start_matches("r=");
        // A SHA-256 sized proof is refused as malformed.
        let long = format!("c=biws,r={nonce},p={}", B64.encode([0u8; 32]));
        assert_eq!(s.handle_client_final(long.as_bytes()), Err(ScramError::Malformed("proof has the wrong length")));
        let mut c = Sha1Client::with_nonce("user", "pencil", NONCE.into());
        let low = SERVER_FIRST.replace("i=10000", "i=100");
        assert!(c.handle_server_first(low.as_bytes()).is_err());
    }
}
