//! The hash a SCRAM mechanism is built on (SHA-1 or SHA-256), the RFC 5802 key derivation
//! over it, and the stored verifier (salt, iterations, StoredKey, ServerKey).

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::digest::{Digest, FixedOutput, KeyInit, Output, Update};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

/// A hash SCRAM runs over, implemented on the digest type itself (`sha1::Sha1`,
/// `sha2::Sha256`): it fixes the key length, HMAC, H and PBKDF2 (RFC 5802 section 2.2).
pub trait ScramHash: Digest + 'static {
    /// The SASL mechanism name without channel binding (`SCRAM-SHA-256`).
    const MECHANISM: &'static str;
    /// A hash-sized value (ClientKey, StoredKey, proofs, signatures): `[u8; hash length]`.
    type Key: Copy
        + Eq
        + Default
        + fmt::Debug
        + AsRef<[u8]>
        + AsMut<[u8]>
        + TryFrom<Vec<u8>>
        + From<Output<Self>>
        + From<Output<Self::Prf>>;
    /// HMAC over this hash, also the PRF of PBKDF2 (Hi).
    type Prf: Mac + KeyInit + Update + FixedOutput + Clone + Sync;
}

/// SCRAM-SHA-1 (RFC 5802), as MongoDB uses it.
impl ScramHash for Sha1 {
    const MECHANISM: &'static str = "SCRAM-SHA-1";
    type Key = [u8; 20];
    type Prf = Hmac<Sha1>;
}

/// SCRAM-SHA-256 (RFC 7677), as PostgreSQL and MongoDB use it.
impl ScramHash for Sha256 {
    const MECHANISM: &'static str = "SCRAM-SHA-256";
    type Key = [u8; 32];
    type Prf = Hmac<Sha256>;
}

/// H(data).
pub(crate) fn h<H: ScramHash>(data: &[u8]) -> H::Key {
    <H as Digest>::digest(data).into()
}

/// HMAC(key, parts concatenated).
pub(crate) fn hmac_of<H: ScramHash>(key: &[u8], parts: &[&[u8]]) -> H::Key {
    // HMAC is defined for keys of any length (long keys are hashed, short ones padded), so
    // `new_from_slice` cannot fail; the key never causes this panic.
    #[allow(clippy::expect_used)]
    let mut mac = <H::Prf as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        Mac::update(&mut mac, part);
    }
    mac.finalize().into_bytes().into()
}

/// SaltedPassword = Hi(password, salt, i), PBKDF2 with HMAC; 0 iterations count as 1.
pub(crate) fn salted_password<H: ScramHash>(password: &[u8], salt: &[u8], iterations: u32) -> H::Key {
    let mut out = H::Key::default();
    // PBKDF2 fails only when the PRF refuses the password as a key, which HMAC never does.
    #[allow(clippy::expect_used)]
    pbkdf2::pbkdf2::<H::Prf>(password, salt, iterations.max(1), out.as_mut()).expect("HMAC accepts keys of any length");
    out
}

/// ClientKey = HMAC(SaltedPassword, "Client Key").
pub(crate) fn client_key<H: ScramHash>(salted: &H::Key) -> H::Key {
    hmac_of::<H>(salted.as_ref(), &[b"Client Key"])
}

/// ServerKey = HMAC(SaltedPassword, "Server Key").
pub(crate) fn server_key<H: ScramHash>(salted: &H::Key) -> H::Key {
    hmac_of::<H>(salted.as_ref(), &[b"Server Key"])
}

/// a XOR b.
pub(crate) fn xor<H: ScramHash>(a: &H::Key, b: &H::Key) -> H::Key {
    let mut out = *a;
    for (o, y) in out.as_mut().iter_mut().zip(b.as_ref()) {
        *o ^= y;
    }
    out
}

/// A stored SCRAM secret: what the server needs to check a proof and sign its answer,
/// without the password. `Debug` redacts the keys.
pub struct Verifier<H: ScramHash> {
    /// PBKDF2 iteration count (at least 1).
    pub iterations: u32,
    /// Salt (raw bytes).
    pub salt: Vec<u8>,
    /// StoredKey = H(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: H::Key,
    /// ServerKey = HMAC(SaltedPassword, "Server Key").
    pub server_key: H::Key,
}

impl<H: ScramHash> Verifier<H> {
    /// The verifier of the SCRAM password `secret` (already normalised or digested by the
    /// mechanism) with this salt and iteration count (0 counts as 1).
    pub(crate) fn from_secret(secret: &[u8], salt: &[u8], iterations: u32) -> Self {
        let iterations = iterations.max(1);
        let salted = salted_password::<H>(secret, salt, iterations);
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: h::<H>(client_key::<H>(&salted).as_ref()),
            server_key: server_key::<H>(&salted),
        }
    }

    /// A deterministic fake verifier for `user` keyed by `secret`: salt and keys are
    /// `HMAC(secret, "dgf <domain> mock <salt|stored key|server key>\0" user)`, so the same
    /// user always gets the same salt and no password matches the keys.
    pub(crate) fn mock_keyed(domain: &str, user: &str, secret: &[u8], iterations: u32, salt_len: usize) -> Self {
        let label = |what: &str| {
            hmac_of::<H>(secret, &[b"dgf ", domain.as_bytes(), b" mock ", what.as_bytes(), b"\0", user.as_bytes()])
        };
        let salt = label("salt");
        Verifier {
            iterations,
            salt: salt.as_ref()[..salt_len.min(salt.as_ref().len())].to_vec(),
            stored_key: label("stored key"),
            server_key: label("server key"),
        }
    }
}

// Not derived: a derive would ask the digest type itself to be `Clone + PartialEq`.
impl<H: ScramHash> Clone for Verifier<H> {
    fn clone(&self) -> Self {
        Verifier {
            iterations: self.iterations,
            salt: self.salt.clone(),
            stored_key: self.stored_key,
            server_key: self.server_key,
        }
    }
}

impl<H: ScramHash> PartialEq for Verifier<H> {
    fn eq(&self, other: &Self) -> bool {
        (self.iterations, &self.salt, self.stored_key, self.server_key)
            == (other.iterations, &other.salt, other.stored_key, other.server_key)
    }
}

impl<H: ScramHash> Eq for Verifier<H> {}

impl<H: ScramHash> fmt::Debug for Verifier<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("mechanism", &H::MECHANISM)
            .field("iterations", &self.iterations)
            .field("salt", &B64.encode(&self.salt))
            .field("keys", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scram::{Client, ScramError, Server};

    /// HMAC computed straight with the crates, for pinning the derived values.
    fn direct_hmac<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = <M as KeyInit>::new_from_slice(key).unwrap();
        Mac::update(&mut mac, data);
        mac.finalize().into_bytes().to_vec()
    }

    #[test]
    fn mock_labels_are_the_historic_ones() {
        // Mocks must not change between versions, or an unknown user's salt would change
        // where a real user's does not.
        let v = Verifier::<Sha256>::mock_keyed("scram", "alice", b"k", 4096, 16);
        assert_eq!(v.salt, direct_hmac::<Hmac<Sha256>>(b"k", b"dgf scram mock salt\0alice")[..16]);
        assert_eq!(v.stored_key[..], direct_hmac::<Hmac<Sha256>>(b"k", b"dgf scram mock stored key\0alice"));
        assert_eq!(v.server_key[..], direct_hmac::<Hmac<Sha256>>(b"k", b"dgf scram mock server key\0alice"));
        let v = Verifier::<Sha1>::mock_keyed("scram-sha-1", "bob", b"k", 10_000, 16);
        assert_eq!(v.salt, direct_hmac::<Hmac<Sha1>>(b"k", b"dgf scram-sha-1 mock salt\0bob")[..16]);
        assert_eq!(v.stored_key[..], direct_hmac::<Hmac<Sha1>>(b"k", b"dgf scram-sha-1 mock stored key\0bob"));
        assert_eq!(v.server_key[..], direct_hmac::<Hmac<Sha1>>(b"k", b"dgf scram-sha-1 mock server key\0bob"));
        assert_eq!(v.iterations, 10_000);
    }

    fn exchange<H: ScramHash>(password: &[u8], verifier: Verifier<H>) -> Result<(), ScramError> {
        let mut c = Client::<H>::start(password.to_vec(), "u,=", "clientnonce".into());
        let mut s = Server::new(verifier);
        let first = c.client_first();
        assert!(first.starts_with(b"n,,n=u=2C=3D,r=clientnonce"));
        let fin = c.handle_server_first(&s.handle_client_first(&first)?)?;
        c.handle_server_final(&s.handle_client_final(&fin)?)?;
        assert!(c.is_authenticated() && s.is_authenticated());
        Ok(())
    }

    #[test]
    fn one_machine_for_both_hashes() {
        exchange::<Sha1>(b"pw", Verifier::from_secret(b"pw", b"salt", 2)).unwrap();
        exchange::<Sha256>(b"pw", Verifier::from_secret(b"pw", b"salt", 2)).unwrap();
        let err = exchange::<Sha1>(b"pw", Verifier::from_secret(b"other", b"salt", 2)).unwrap_err();
        assert_eq!(err, ScramError::InvalidPassword);
        assert_eq!(Verifier::<Sha1>::from_secret(b"pw", b"s", 0).iterations, 1);
    }

    #[test]
    fn iteration_floor_and_debug_redaction() {
        let mut c = Client::<Sha1>::start(b"hunter2".to_vec(), "", "abc".into()).with_min_iterations(5, "too few");
        assert_eq!(c.handle_server_first(b"r=abcdef,s=c2FsdA==,i=4"), Err(ScramError::Malformed("too few")));
        let c = Client::<Sha256>::start(b"hunter2".to_vec(), "", "abc".into());
        assert!(!format!("{c:?}").contains("hunter2"));
        let v = Verifier::<Sha256>::from_secret(b"pw", b"salt", 1);
        let dbg = format!("{:?}", Server::new(v.clone()));
        assert!(!dbg.contains(&B64.encode(v.stored_key)) && !dbg.contains(&B64.encode(v.server_key)), "{dbg}");
    }
}
