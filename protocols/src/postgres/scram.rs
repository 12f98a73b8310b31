//! SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL uses it: the shared SCRAM machines of
//! [`crate::scram`] over SHA-256, plus PostgreSQL's verifier format and error classes. No I/O.
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

use sha2::Sha256;

use crate::scram::{constant_time_eq, random_nonce, Client, ScramHash, Server, Verifier};
pub use crate::scram::{ScramError, MAX_CLIENT_ITERATIONS, MAX_NONCE_LEN, MAX_SCRAM_MESSAGE_LEN};

/// SASL mechanism name advertised in `AuthenticationSASL`.
pub const MECHANISM: &str = Sha256::MECHANISM;

/// Iteration count PostgreSQL uses by default (and that [`ScramVerifier::mock`] uses).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Salt length PostgreSQL uses for new verifiers (and that [`ScramVerifier::mock`] uses).
pub const DEFAULT_SALT_LEN: usize = 16;

const VERIFIER_PREFIX: &str = "SCRAM-SHA-256$";

/// A stored SCRAM-SHA-256 secret, as kept in `pg_authid.rolpassword`.
///
/// `Display` renders PostgreSQL's format
/// `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.
/// `Debug` redacts the keys.
pub type ScramVerifier = Verifier<Sha256>;

/// Server side of a SCRAM-SHA-256 exchange, as a pure state machine.
///
/// Feed the body of the client's `SASLInitialResponse` to
/// [`Server::handle_client_first`] and send the result in `AuthenticationSASLContinue`;
/// feed the `SASLResponse` body to [`Server::handle_client_final`] and send the result
/// in `AuthenticationSASLFinal`. Any error leaves the machine failed.
pub type ScramServer = Server<Sha256>;

/// Client side of a SCRAM-SHA-256 exchange (no channel binding), as a pure state machine:
/// [`Client::client_first`] for `SASLInitialResponse`, then
/// [`Client::handle_server_first`] on `AuthenticationSASLContinue`, then
/// [`Client::handle_server_final`] on `AuthenticationSASLFinal`.
///
/// `Debug` does not print the password.
pub type ScramClient = Client<Sha256>;

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
// Verifier
// ---------------------------------------------------------------------------------------

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
        Self::from_secret(password, salt, iterations)
    }

    /// `true` if `password` (raw bytes, see [`ScramVerifier::from_password`] about SASLprep)
    /// derives this verifier's StoredKey. Constant-time in the key comparison.
    pub fn matches_password(&self, password: &[u8]) -> bool {
        constant_time_eq(&Self::from_secret(password, &self.salt, self.iterations).stored_key, &self.stored_key)
    }

    /// A deterministic fake verifier for a user that does not exist (or has no usable
    /// SCRAM secret), so the server can run a plausible exchange and fail it only at the
    /// end with [`ScramError::InvalidPassword`], without revealing that the user is unknown.
    ///
    /// `secret` should be a per-deployment (or per-process) random value of at least 16
    /// bytes: the same user then always gets the same salt, like a real user would, but
    /// nobody can predict it. The keys are random-looking, so no password matches them.
    pub fn mock(username: &str, secret: &[u8]) -> Self {
        Verifier::mock_keyed("scram", username, secret, DEFAULT_ITERATIONS, DEFAULT_SALT_LEN)
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

impl std::str::FromStr for ScramVerifier {
    type Err = ScramError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

impl ScramClient {
    /// A client for `password` (used as raw UTF-8 bytes, see
    /// [`ScramVerifier::from_password`] about SASLprep) with an 18-byte random nonce.
    pub fn new(password: &str) -> Self {
        Self::with_nonce(password, "", random_nonce())
    }

    /// A client with explicit username (sent in `n=`) and nonce (MongoDB, tests, RFC vectors).
    pub(crate) fn with_nonce(password: &str, username: &str, client_nonce: String) -> Self {
        Client::start(password.as_bytes().to_vec(), username, client_nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use proptest::prelude::*;
    use sha2::Digest;

    fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

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
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(b"pencil", &v.salt, 4096, &mut salted);
        let ck = hmac_sha256(&salted, b"Client Key");
        let without_proof = "c=eSws,r=clientnonceservernonce";
        let auth = format!("n=,r=clientnonce,r=clientnonceservernonce,s={RFC_SALT},i=4096,{without_proof}");
        let sig = hmac_sha256(&Sha256::digest(ck), auth.as_bytes());
        let proof: Vec<u8> = ck.iter().zip(sig).map(|(a, b)| a ^ b).collect();
        let msg = format!("{without_proof},p={}", B64.encode(proof));
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
