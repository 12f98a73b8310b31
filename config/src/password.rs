//! User password forms: plaintext, a SCRAM-SHA-256 verifier or an md5 verifier.

use crate::model::{AuthMethod, UserConfig};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::fmt;

/// What a user's `password` string holds. `Debug` never shows secrets.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordForm {
    /// A plaintext password: works with `scram-sha-256` and `md5`.
    Plain(String),
    /// A SCRAM-SHA-256 verifier (as Postgres stores it): works with `scram-sha-256` only.
    Scram {
        /// PBKDF2 iteration count.
        iterations: u32,
        /// Salt (decoded).
        salt: Vec<u8>,
        /// StoredKey (32 bytes).
        stored_key: Vec<u8>,
        /// ServerKey (32 bytes).
        server_key: Vec<u8>,
    },
    /// An md5 verifier `md5` + hex(md5(password || user)): works with `md5` only.
    /// Holds the 32 lower-case hex digits.
    Md5(String),
}

impl fmt::Debug for PasswordForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain(_) => f.write_str("Plain(***)"),
            Self::Scram { iterations, .. } => write!(f, "Scram {{ iterations: {iterations}, .. }}"),
            Self::Md5(_) => f.write_str("Md5(***)"),
        }
    }
}

impl PasswordForm {
    /// True when a client may authenticate with `method` against this password.
    pub fn supports(&self, method: AuthMethod) -> bool {
        matches!(
            (self, method),
            (_, AuthMethod::Trust)
                | (Self::Plain(_), _)
                | (Self::Scram { .. }, AuthMethod::ScramSha256)
                | (Self::Md5(_), AuthMethod::Md5)
        )
    }
}

const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// Classifies and checks a password string. Messages never contain the password.
pub fn parse_password(p: &str) -> Result<PasswordForm, String> {
    if let Some(rest) = p.strip_prefix(SCRAM_PREFIX) {
        return parse_scram(rest);
    }
    if let Some(hex) = p.strip_prefix("md5") {
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            if hex.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err("md5 verifier must use lower-case hex digits".into());
            }
            return Ok(PasswordForm::Md5(hex.to_owned()));
        }
    }
    if p.is_empty() {
        return Err("password is empty".into());
    }
    Ok(PasswordForm::Plain(p.to_owned()))
}

fn parse_scram(rest: &str) -> Result<PasswordForm, String> {
    const FORM: &str =
        "SCRAM verifier must look like SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>";
    let (iter_salt, keys) = rest.split_once('$').ok_or(FORM)?;
    let (iterations, salt) = iter_salt.split_once(':').ok_or(FORM)?;
    let (stored, server) = keys.split_once(':').ok_or(FORM)?;
    let iterations: u32 = iterations
        .parse()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("{FORM}: iteration count must be a whole number >= 1"))?;
    let decode =
        |what: &str, s: &str| STANDARD.decode(s).map_err(|_| format!("{FORM}: the {what} is not valid base64"));
    let salt = decode("salt", salt)?;
    if salt.is_empty() {
        return Err(format!("{FORM}: the salt is empty"));
    }
    let stored_key = decode("StoredKey", stored)?;
    let server_key = decode("ServerKey", server)?;
    if stored_key.len() != 32 || server_key.len() != 32 {
        return Err(format!("{FORM}: StoredKey and ServerKey must be 32 bytes (SHA-256) each"));
    }
    Ok(PasswordForm::Scram { iterations, salt, stored_key, server_key })
}

impl UserConfig {
    /// The parsed password, `Ok(None)` when none is set.
    pub fn password_form(&self) -> Result<Option<PasswordForm>, String> {
        self.password.as_deref().map(parse_password).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape Postgres stores in pg_authid.rolpassword (keys are arbitrary 32-byte values).
    const SCRAM: &str = "SCRAM-SHA-256$4096:bG9yZW1pcHN1bWRvbG9y$ZJs2mhPGR7mGi1DNIdeDdBXqcjIB4Jxl/wOG3tgEFtk=:7Lwbt9tOH5bFVNI5VRAfWEPXtUoPbXfuY6N9LZVvW0s=";

    #[test]
    fn scram_verifier() {
        match parse_password(SCRAM).unwrap() {
            PasswordForm::Scram { iterations, salt, stored_key, server_key } => {
                assert_eq!(iterations, 4096);
                assert_eq!(salt, b"loremipsumdolor");
                assert_eq!(stored_key.len(), 32);
                assert_eq!(server_key.len(), 32);
            }
            other => panic!("not scram: {other:?}"),
        }
    }

    #[test]
    fn bad_scram_verifiers() {
        let cases = [
            ("SCRAM-SHA-256$4096:c2FsdA==", "must look like"),
            ("SCRAM-SHA-256$abc:c2FsdA==$a:b", "iteration count"),
            ("SCRAM-SHA-256$0:c2FsdA==$a:b", "iteration count"),
            ("SCRAM-SHA-256$4096:!!!$AAAA:AAAA", "salt is not valid base64"),
            ("SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA", "must be 32 bytes"),
            ("SCRAM-SHA-256$4096:$AAAA:AAAA", "salt is empty"),
        ];
        for (p, want) in cases {
            let e = parse_password(p).unwrap_err();
            assert!(e.contains(want), "{p}: {e}");
        }
    }

    #[test]
    fn md5_and_plain() {
        let md5 = "md5f8b3b7e4a5a5c3a2b1d0e9f8a7b6c5d4";
        assert_eq!(parse_password(md5).unwrap(), PasswordForm::Md5(md5[3..].to_owned()));
        assert!(parse_password("md5F8B3B7E4A5A5C3A2B1D0E9F8A7B6C5D4").unwrap_err().contains("lower-case"));
        assert_eq!(parse_password("md5isnotaverifier").unwrap(), PasswordForm::Plain("md5isnotaverifier".into()));
        assert_eq!(parse_password("s3cret").unwrap(), PasswordForm::Plain("s3cret".into()));
        assert!(parse_password("").unwrap_err().contains("empty"));
    }

    #[test]
    fn supports() {
        let plain = parse_password("x").unwrap();
        let scram = parse_password(SCRAM).unwrap();
        let md5 = parse_password("md5f8b3b7e4a5a5c3a2b1d0e9f8a7b6c5d4").unwrap();
        assert!(plain.supports(AuthMethod::ScramSha256) && plain.supports(AuthMethod::Md5));
        assert!(scram.supports(AuthMethod::ScramSha256) && !scram.supports(AuthMethod::Md5));
        assert!(md5.supports(AuthMethod::Md5) && !md5.supports(AuthMethod::ScramSha256));
        assert_eq!(format!("{plain:?}"), "Plain(***)");
    }
}
