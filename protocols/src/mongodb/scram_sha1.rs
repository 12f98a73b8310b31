//! SCRAM-SHA-1 as MongoDB speaks it: the shared SCRAM machines of [`crate::scram`] over
//! SHA-1, with MongoDB's legacy password digest `hex(md5("<user>:mongo:<password>"))` used as
//! the SCRAM password (no SASLprep), the user name in `n=`, and the drivers' iteration floor.

use md5::{Digest as _, Md5};

use sha1::Sha1;

use crate::scram::{random_nonce, Client, ScramHash, Server, Verifier};

/// The SASL mechanism name.
pub const MECHANISM: &str = Sha1::MECHANISM;

/// Iterations for verifiers dgf derives (MongoDB's default `scramIterationCount`).
pub const DEFAULT_ITERATIONS: u32 = 10_000;

/// Fewest iterations a client accepts from a server (the drivers' authentication spec).
pub const MIN_ITERATIONS: u32 = 4096;

/// Salt length for verifiers dgf derives (MongoDB uses 16 bytes for SHA-1).
pub const SALT_LEN: usize = 16;

/// MongoDB's password digest: lower-case hex of md5(`user:mongo:password`).
pub fn password_digest(user: &str, password: &str) -> String {
    let d = Md5::digest(format!("{user}:mongo:{password}").as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A SCRAM-SHA-1 secret as MongoDB stores it (`credentials.SCRAM-SHA-1`). `Debug` redacts
/// the keys.
pub type Sha1Verifier = Verifier<Sha1>;

/// Server side of a SCRAM-SHA-1 exchange: [`Server::handle_client_first`] returns the
/// server-first message, [`Server::handle_client_final`] checks the proof and returns
/// the server-final message. Any error leaves the machine failed.
pub type Sha1Server = Server<Sha1>;

/// Client side of a SCRAM-SHA-1 exchange with MongoDB (dgf logging in upstream when the
/// server offers only SCRAM-SHA-1). `Debug` does not show the password.
pub type Sha1Client = Client<Sha1>;

impl Sha1Verifier {
    /// The verifier MongoDB derives for `user` / `password` (digest first, then PBKDF2).
    pub fn from_password(user: &str, password: &str, salt: &[u8], iterations: u32) -> Self {
        Self::from_secret(password_digest(user, password).as_bytes(), salt, iterations)
    }

    /// A deterministic fake verifier for an unknown user (same salt every time, no password
    /// matches), so the exchange fails only at the proof like a wrong password does.
    pub fn mock(user: &str, secret: &[u8]) -> Self {
        Verifier::mock_keyed("scram-sha-1", user, secret, DEFAULT_ITERATIONS, SALT_LEN)
    }
}

impl Sha1Client {
    /// A client for `user` / `password` with a random nonce; refuses servers asking for
    /// fewer than [`MIN_ITERATIONS`].
    pub fn new(user: &str, password: &str) -> Self {
        Self::with_nonce(user, password, random_nonce())
    }

    fn with_nonce(user: &str, password: &str, client_nonce: String) -> Self {
        Client::start(password_digest(user, password).into_bytes(), user, client_nonce)
            .with_min_iterations(MIN_ITERATIONS, "SCRAM-SHA-1 iteration count below 4096")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scram::ScramError;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;

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
