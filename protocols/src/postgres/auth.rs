//! PostgreSQL password secrets and the server side of cleartext and md5 password authentication (no I/O).
//!
//! A [`PasswordSecret`] is what dgf knows about a user's password: the plaintext, an md5
//! verifier (`md5` + 32 hex digits, as in `pg_authid.rolpassword`) or a SCRAM-SHA-256
//! verifier. Its `Debug` output never contains the secret. All comparisons of secret-derived
//! values are constant-time.
//!
//! Passwords are handled as raw bytes, without SASLprep; see [`crate::postgres::scram`].

use std::fmt;

use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::scram::{ScramError, ScramVerifier, DEFAULT_ITERATIONS};
use crate::scram::constant_time_eq;

/// Errors of the password-authentication helpers.
///
/// [`AuthError::is_protocol_violation`] separates malformed client messages (SQLSTATE
/// `08P01`) from authentication failures (SQLSTATE `28P01`); bad configured secrets are
/// neither the client's fault nor a protocol violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A `PasswordMessage` body is not a single NUL-terminated string.
    #[error("invalid password packet: {0}")]
    MalformedPasswordMessage(&'static str),
    /// The client sent an empty password (PostgreSQL refuses these as an authentication failure).
    #[error("empty password returned by client")]
    EmptyPassword,
    /// A configured secret is empty.
    #[error("empty password secret")]
    EmptySecret,
    /// A configured secret starts with `SCRAM-SHA-256$` but is not a valid verifier.
    #[error("invalid SCRAM-SHA-256 secret: {0}")]
    InvalidScramVerifier(#[source] ScramError),
}

impl AuthError {
    /// `true` when the client broke the protocol (SQLSTATE `08P01`); `false` for
    /// authentication failures (SQLSTATE `28P01`) and configuration errors.
    pub fn is_protocol_violation(&self) -> bool {
        match self {
            AuthError::MalformedPasswordMessage(_) => true,
            AuthError::EmptyPassword | AuthError::EmptySecret | AuthError::InvalidScramVerifier(_) => false,
        }
    }
}

/// Extracts the password (cleartext or md5 response) from a `PasswordMessage` body: a
/// string terminated by exactly one NUL, as PostgreSQL requires. The NUL is not returned.
///
/// An empty password gives [`AuthError::EmptyPassword`] (an authentication failure, like
/// PostgreSQL); any other shape gives [`AuthError::MalformedPasswordMessage`].
pub fn password_from_message(body: &[u8]) -> Result<&[u8], AuthError> {
    let Some((&0, password)) = body.split_last() else {
        return Err(AuthError::MalformedPasswordMessage("missing NUL terminator"));
    };
    if password.contains(&0) {
        return Err(AuthError::MalformedPasswordMessage("embedded NUL in password"));
    }
    if password.is_empty() {
        return Err(AuthError::EmptyPassword);
    }
    Ok(password)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The 32 hex digits of an md5 verifier: `md5` followed by exactly 32 lowercase hex
/// digits (PostgreSQL's test), or `None`.
fn md5_verifier_hex(s: &str) -> Option<&str> {
    let digits = s.strip_prefix("md5")?;
    (digits.len() == 32 && digits.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(digits)
}

/// hex(md5(password || user)), without the `md5` prefix.
fn md5_inner(password: &[u8], user: &str) -> String {
    let mut h = Md5::new();
    h.update(password);
    h.update(user.as_bytes());
    hex(&h.finalize())
}

/// `"md5" + hex(md5(inner_hex || salt))`.
fn md5_salted(inner_hex: &str, salt: [u8; 4]) -> String {
    let mut h = Md5::new();
    h.update(inner_hex.as_bytes());
    h.update(salt);
    format!("md5{}", hex(&h.finalize()))
}

/// The md5 verifier PostgreSQL stores for `password`: `"md5" + hex(md5(password || user))`.
pub fn md5_verifier(user: &str, password: &str) -> String {
    format!("md5{}", md5_inner(password.as_bytes(), user))
}

/// What a correct client sends in response to `AuthenticationMD5Password` with `salt`:
/// `"md5" + hex(md5(hex(md5(password || user)) || salt))`.
///
/// `stored_verifier_or_password` may be the plaintext password or an md5 verifier
/// (`md5` + 32 lowercase hex digits). Like PostgreSQL, a plaintext password that happens to
/// look exactly like an md5 verifier is taken as a verifier.
pub fn md5_response(stored_verifier_or_password: &str, user: &str, salt: [u8; 4]) -> String {
    if let Some(digits) = md5_verifier_hex(stored_verifier_or_password) {
        md5_salted(digits, salt)
    } else {
        md5_salted(&md5_inner(stored_verifier_or_password.as_bytes(), user), salt)
    }
}

/// Checks a client's md5 response (the `PasswordMessage` string without its NUL) against
/// `secret`, in constant time. Always `false` for SCRAM secrets (md5 cannot be verified
/// against them), for empty plaintext secrets and for malformed md5 secrets.
pub fn verify_md5(client_response: &[u8], secret: &PasswordSecret, user: &str, salt: [u8; 4]) -> bool {
    let expected = match secret {
        PasswordSecret::Plain(p) if !p.is_empty() => md5_salted(&md5_inner(p.as_bytes(), user), salt),
        PasswordSecret::Md5(v) => match md5_verifier_hex(v) {
            Some(digits) => md5_salted(digits, salt),
            None => return false,
        },
        PasswordSecret::Plain(_) | PasswordSecret::Scram(_) => return false,
    };
    constant_time_eq(client_response, expected.as_bytes())
}

/// Checks a cleartext password (the `PasswordMessage` string without its NUL) against
/// `secret`, whatever its kind: plaintext (compared via SHA-256 digests so the length does
/// not leak either), md5 (recomputed from `user`) or SCRAM (derived with the verifier's
/// salt and iteration count, StoredKey compared). Constant-time; `false` for an empty
/// `given` or an empty plaintext secret.
pub fn verify_cleartext(given: &[u8], secret: &PasswordSecret, user: &str) -> bool {
    if given.is_empty() {
        return false;
    }
    match secret {
        PasswordSecret::Plain(p) => {
            !p.is_empty() && constant_time_eq(&Sha256::digest(given), &Sha256::digest(p.as_bytes()))
        }
        PasswordSecret::Md5(v) => {
            md5_verifier_hex(v).is_some()
                && constant_time_eq(format!("md5{}", md5_inner(given, user)).as_bytes(), v.as_bytes())
        }
        PasswordSecret::Scram(v) => v.matches_password(given),
    }
}

/// What dgf knows about a user's password. `Debug` never prints the secret.
#[derive(Clone)]
pub enum PasswordSecret {
    /// The plaintext password.
    Plain(String),
    /// An md5 verifier: `md5` + 32 lowercase hex digits of md5(password || user).
    Md5(String),
    /// A SCRAM-SHA-256 verifier.
    Scram(ScramVerifier),
}

impl PasswordSecret {
    /// Classifies a configured secret the way PostgreSQL classifies `rolpassword`:
    /// `SCRAM-SHA-256$...` is a SCRAM verifier, `md5` + 32 lowercase hex digits is an md5
    /// verifier, anything else is a plaintext password.
    ///
    /// Unlike PostgreSQL (which silently treats a malformed SCRAM verifier as plaintext), a
    /// string starting with `SCRAM-SHA-256$` that does not parse is an error: it is far more
    /// likely a broken verifier than a password. Empty secrets are refused.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        if s.is_empty() {
            Err(AuthError::EmptySecret)
        } else if s.starts_with("SCRAM-SHA-256$") {
            ScramVerifier::parse(s).map(PasswordSecret::Scram).map_err(AuthError::InvalidScramVerifier)
        } else if md5_verifier_hex(s).is_some() {
            Ok(PasswordSecret::Md5(s.to_owned()))
        } else {
            Ok(PasswordSecret::Plain(s.to_owned()))
        }
    }

    /// The SCRAM verifier to run a SCRAM exchange against: for a plaintext secret, derived
    /// with `cache_salt` and 4096 iterations (callers should use a random 16-byte salt and
    /// cache the result, PBKDF2 is deliberately slow); for a SCRAM secret, a clone; for an
    /// md5 secret `None` (SCRAM cannot be done from md5). Also `None` for an empty
    /// plaintext secret or an empty `cache_salt`.
    pub fn scram_verifier(&self, cache_salt: &[u8]) -> Option<ScramVerifier> {
        match self {
            PasswordSecret::Plain(p) if !p.is_empty() && !cache_salt.is_empty() => {
                Some(ScramVerifier::from_password(p, cache_salt, DEFAULT_ITERATIONS))
            }
            PasswordSecret::Scram(v) => Some(v.clone()),
            PasswordSecret::Plain(_) | PasswordSecret::Md5(_) => None,
        }
    }

    /// `true` if md5 authentication can be verified against this secret (plaintext or md5).
    pub fn allows_md5(&self) -> bool {
        matches!(self, PasswordSecret::Plain(_) | PasswordSecret::Md5(_))
    }
}

impl fmt::Debug for PasswordSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            PasswordSecret::Plain(_) => "Plain",
            PasswordSecret::Md5(_) => "Md5",
            PasswordSecret::Scram(_) => "Scram",
        };
        write!(f, "PasswordSecret::{kind}(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::scram::{ScramClient, ScramServer};

    /// From PostgreSQL 15: `SET password_encryption='md5'; CREATE ROLE tmp_md5_check LOGIN PASSWORD 'secret'`.
    const PG_MD5_TMP: &str = "md5b6701934c2c638a54bc41d96154df29a";
    /// From PostgreSQL 15: `SELECT 'md5' || md5('secretpostgres')`.
    const PG_MD5_POSTGRES: &str = "md553f48b7c4b76a86ce72276c5755f217d";
    /// From PostgreSQL 15: `SELECT 'md5' || md5(convert_to(md5('secretpostgres'),'UTF8') || '\x01020304'::bytea)`.
    const PG_MD5_RESPONSE_POSTGRES: &str = "md5bb41a296aab6baccb36ff243a562abff";
    /// Same with user tmp_md5_check and salt de ad be ef.
    const PG_MD5_RESPONSE_TMP: &str = "md56662a4f2471de64667b40c5b92b26965";
    /// From PostgreSQL 15: `SET password_encryption='scram-sha-256'; CREATE ROLE ... PASSWORD 'secret'`.
    const PG_SCRAM_SECRET: &str = "SCRAM-SHA-256$4096:OPFghirySu7CKImVf8lWMg==$QZ+OwrCC0QozrE0Z8WIVi4O3V/1Z4OnJkXaY3qdqWWE=:VThFGm+vE39xLMTCUWYXaucppYmJIF0rXrcRzr1/lz4=";

    fn independent_md5_hex(data: &[u8]) -> String {
        Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn md5_verifier_vectors() {
        let independent = format!("md5{}", independent_md5_hex(b"secretpostgres"));
        assert_eq!(md5_verifier("postgres", "secret"), independent);
        assert_eq!(md5_verifier("postgres", "secret"), PG_MD5_POSTGRES);
        assert_eq!(md5_verifier("tmp_md5_check", "secret"), PG_MD5_TMP);
    }

    #[test]
    fn md5_response_vectors() {
        let salt = [1, 2, 3, 4];
        let inner = independent_md5_hex(b"secretpostgres");
        let mut data = inner.into_bytes();
        data.extend_from_slice(&salt);
        let independent = format!("md5{}", independent_md5_hex(&data));
        assert_eq!(md5_response("secret", "postgres", salt), independent);
        assert_eq!(md5_response("secret", "postgres", salt), PG_MD5_RESPONSE_POSTGRES);
        // From the stored verifier; the user is then irrelevant.
        assert_eq!(md5_response(PG_MD5_POSTGRES, "postgres", salt), PG_MD5_RESPONSE_POSTGRES);
        assert_eq!(md5_response(PG_MD5_POSTGRES, "whoever", salt), PG_MD5_RESPONSE_POSTGRES);
        assert_eq!(md5_response(PG_MD5_TMP, "tmp_md5_check", [0xde, 0xad, 0xbe, 0xef]), PG_MD5_RESPONSE_TMP);
        assert_eq!(md5_response("secret", "tmp_md5_check", [0xde, 0xad, 0xbe, 0xef]), PG_MD5_RESPONSE_TMP);
    }

    #[test]
    fn verify_md5_against_all_secret_kinds() {
        let salt = [1, 2, 3, 4];
        let plain = PasswordSecret::parse("secret").unwrap();
        let md5 = PasswordSecret::parse(PG_MD5_POSTGRES).unwrap();
        let scram = PasswordSecret::parse(PG_SCRAM_SECRET).unwrap();
        let good = PG_MD5_RESPONSE_POSTGRES.as_bytes();
        assert!(verify_md5(good, &plain, "postgres", salt));
        assert!(verify_md5(good, &md5, "postgres", salt));
        assert!(!verify_md5(good, &scram, "postgres", salt));
        // Wrong salt, wrong user, wrong response, truncated, with NUL.
        assert!(!verify_md5(good, &plain, "postgres", [1, 2, 3, 5]));
        assert!(!verify_md5(good, &plain, "postgrex", salt));
        assert!(!verify_md5(b"md5bb41a296aab6baccb36ff243a562abfe", &md5, "postgres", salt));
        assert!(!verify_md5(&good[..34], &md5, "postgres", salt));
        let mut with_nul = good.to_vec();
        with_nul.push(0);
        assert!(!verify_md5(&with_nul, &md5, "postgres", salt));
        assert!(!verify_md5(b"", &plain, "postgres", salt));
        // Degenerate hand-built secrets never verify.
        let empty = PasswordSecret::Plain(String::new());
        assert!(!verify_md5(md5_response("", "postgres", salt).as_bytes(), &empty, "postgres", salt));
        let bogus = PasswordSecret::Md5("md5XYZ".into());
        assert!(!verify_md5(good, &bogus, "postgres", salt));
    }

    #[test]
    fn verify_cleartext_against_all_secret_kinds() {
        let plain = PasswordSecret::parse("secret").unwrap();
        let md5 = PasswordSecret::parse(PG_MD5_TMP).unwrap();
        let scram = PasswordSecret::parse(PG_SCRAM_SECRET).unwrap();
        for s in [&plain, &md5, &scram] {
            assert!(verify_cleartext(b"secret", s, "tmp_md5_check"), "{s:?}");
            assert!(!verify_cleartext(b"Secret", s, "tmp_md5_check"), "{s:?}");
            assert!(!verify_cleartext(b"secret ", s, "tmp_md5_check"), "{s:?}");
            assert!(!verify_cleartext(b"", s, "tmp_md5_check"), "{s:?}");
        }
        // The md5 verifier is bound to its user.
        assert!(!verify_cleartext(b"secret", &md5, "postgres"));
        // An empty plaintext secret never verifies.
        assert!(!verify_cleartext(b"", &PasswordSecret::Plain(String::new()), "u"));
        // Non-UTF-8 passwords are compared as bytes.
        let v = ScramVerifier::from_password_bytes(b"\xffpw", b"0123456789abcdef", 4096);
        assert!(verify_cleartext(b"\xffpw", &PasswordSecret::Scram(v), "u"));
    }

    #[test]
    fn parse_classifies_like_postgres() {
        assert!(matches!(PasswordSecret::parse("secret"), Ok(PasswordSecret::Plain(p)) if p == "secret"));
        assert!(matches!(PasswordSecret::parse(PG_MD5_TMP), Ok(PasswordSecret::Md5(v)) if v == PG_MD5_TMP));
        assert!(matches!(PasswordSecret::parse(PG_SCRAM_SECRET), Ok(PasswordSecret::Scram(_))));
        // Uppercase hex, wrong length: plaintext (as in PostgreSQL).
        assert!(matches!(PasswordSecret::parse("md5B6701934C2C638A54BC41D96154DF29A"), Ok(PasswordSecret::Plain(_))));
        assert!(matches!(PasswordSecret::parse("md5b6701934"), Ok(PasswordSecret::Plain(_))));
        assert!(matches!(PasswordSecret::parse("md5"), Ok(PasswordSecret::Plain(_))));
        // Broken SCRAM verifier and empty secret are errors.
        let err = PasswordSecret::parse("SCRAM-SHA-256$4096:xx").unwrap_err();
        assert!(matches!(err, AuthError::InvalidScramVerifier(_)));
        assert!(!err.is_protocol_violation());
        assert_eq!(PasswordSecret::parse("").unwrap_err(), AuthError::EmptySecret);
    }

    #[test]
    fn scram_verifier_and_allows_md5() {
        let salt = b"0123456789abcdef";
        let plain = PasswordSecret::parse("secret").unwrap();
        let md5 = PasswordSecret::parse(PG_MD5_TMP).unwrap();
        let scram = PasswordSecret::parse(PG_SCRAM_SECRET).unwrap();
        assert!(plain.allows_md5());
        assert!(md5.allows_md5());
        assert!(!scram.allows_md5());

        let derived = plain.scram_verifier(salt).unwrap();
        assert_eq!(derived, ScramVerifier::from_password("secret", salt, 4096));
        assert_eq!(derived.iterations, 4096);
        assert_eq!(derived.salt, salt);
        assert!(plain.scram_verifier(b"").is_none());
        assert!(md5.scram_verifier(salt).is_none());
        let PasswordSecret::Scram(orig) = &scram else { panic!("not scram") };
        assert_eq!(scram.scram_verifier(salt).as_ref(), Some(orig));

        // A SCRAM exchange against a plaintext-derived verifier works.
        let mut c = ScramClient::new("secret");
        let mut s = ScramServer::new(derived);
        let sf = s.handle_client_first(&c.client_first()).unwrap();
        let cf = c.handle_server_first(&sf).unwrap();
        let fin = s.handle_client_final(&cf).unwrap();
        c.handle_server_final(&fin).unwrap();
    }

    #[test]
    fn debug_never_prints_secrets() {
        let plain = PasswordSecret::parse("hunter2hunter2").unwrap();
        let md5 = PasswordSecret::parse(PG_MD5_TMP).unwrap();
        let scram = PasswordSecret::parse(PG_SCRAM_SECRET).unwrap();
        assert_eq!(format!("{plain:?}"), "PasswordSecret::Plain(<redacted>)");
        assert_eq!(format!("{md5:?}"), "PasswordSecret::Md5(<redacted>)");
        assert_eq!(format!("{scram:?}"), "PasswordSecret::Scram(<redacted>)");
        assert_eq!(format!("{plain:#?}"), "PasswordSecret::Plain(<redacted>)");
        let wrapped = format!("{:?}", Some(vec![plain, md5, scram]));
        assert!(!wrapped.contains("hunter2"));
        assert!(!wrapped.contains("b6701934"));
        assert!(!wrapped.contains("QZ+Owr"));
    }

    #[test]
    fn password_message_parsing() {
        assert_eq!(password_from_message(b"secret\0"), Ok(&b"secret"[..]));
        let err = password_from_message(b"\0").unwrap_err();
        assert_eq!(err, AuthError::EmptyPassword);
        assert!(!err.is_protocol_violation());
        for bad in [&b""[..], b"secret", b"sec\0ret\0", b"\0\0"] {
            let err = password_from_message(bad).unwrap_err();
            assert!(err.is_protocol_violation(), "{bad:?}");
        }
    }
}
