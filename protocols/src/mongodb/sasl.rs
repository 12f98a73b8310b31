//! SCRAM as MongoDB carries it in `saslStart` / `saslContinue`: the user name from the
//! client-first message, and a client (SCRAM-SHA-256 or SCRAM-SHA-1, chosen from the
//! server's `saslSupportedMechs`) that sends a user name (Postgres' leaves it empty).

use super::scram_sha1::{self, Sha1Client};
use crate::postgres::scram::{ScramClient, ScramError};
use crate::scram::random_nonce;

/// The (unescaped) user name in a SCRAM client-first message `n,,n=<user>,r=<nonce>`.
pub fn scram_username(client_first: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(client_first).ok()?;
    let mut parts = s.splitn(3, ',');
    let _flag = parts.next()?;
    let _authzid = parts.next()?;
    let bare = parts.next()?;
    let user = bare.split(',').next()?.strip_prefix("n=")?;
    let mut out = String::with_capacity(user.len());
    let mut rest = user;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// A SCRAM-SHA-256 client that names `user` (MongoDB requires it).
pub fn scram_client(user: &str, password: &str) -> ScramClient {
    ScramClient::with_nonce(password, user, random_nonce())
}

/// A SCRAM client of either mechanism MongoDB offers.
#[derive(Debug)]
pub enum Client {
    /// SCRAM-SHA-256.
    Sha256(ScramClient),
    /// SCRAM-SHA-1 (MongoDB's password digest).
    Sha1(Sha1Client),
}

impl Client {
    /// The client for the mechanism to use given the server's `saslSupportedMechs` (`None`:
    /// not announced): SCRAM-SHA-256 unless only SCRAM-SHA-1 is offered.
    pub fn choose(offered: Option<&[&str]>, user: &str, password: &str) -> Client {
        match offered {
            Some(m) if !m.contains(&"SCRAM-SHA-256") && m.contains(&scram_sha1::MECHANISM) => {
                Client::Sha1(Sha1Client::new(user, password))
            }
            _ => Client::Sha256(scram_client(user, password)),
        }
    }

    /// The mechanism name for `saslStart`.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Client::Sha256(_) => "SCRAM-SHA-256",
            Client::Sha1(_) => scram_sha1::MECHANISM,
        }
    }

    /// The client-first message.
    pub fn client_first(&self) -> Vec<u8> {
        match self {
            Client::Sha256(c) => c.client_first(),
            Client::Sha1(c) => c.client_first(),
        }
    }

    /// server-first -> client-final.
    pub fn handle_server_first(&mut self, m: &[u8]) -> Result<Vec<u8>, ScramError> {
        match self {
            Client::Sha256(c) => c.handle_server_first(m),
            Client::Sha1(c) => c.handle_server_first(m),
        }
    }

    /// Check server-final.
    pub fn handle_server_final(&mut self, m: &[u8]) -> Result<(), ScramError> {
        match self {
            Client::Sha256(c) => c.handle_server_final(m),
            Client::Sha1(c) => c.handle_server_final(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(scram_username(b"n,,n=bob,r=abc").as_deref(), Some("bob"));
        assert_eq!(scram_username(b"n,,n=a=2Cb=3Dc,r=abc").as_deref(), Some("a,b=c"));
        assert_eq!(scram_username(b"n,,n=a=XX,r=abc"), None);
        assert_eq!(scram_username(b"garbage"), None);
        let c = scram_client("u=1", "p");
        assert!(String::from_utf8(c.client_first()).unwrap().starts_with("n,,n=u=3D1,r="));
        assert_eq!(Client::choose(None, "u", "p").mechanism(), "SCRAM-SHA-256");
        assert_eq!(Client::choose(Some(&["SCRAM-SHA-1", "SCRAM-SHA-256"]), "u", "p").mechanism(), "SCRAM-SHA-256");
        assert_eq!(Client::choose(Some(&["SCRAM-SHA-1"]), "u", "p").mechanism(), "SCRAM-SHA-1");
        assert_eq!(Client::choose(Some(&[]), "u", "p").mechanism(), "SCRAM-SHA-256");
    }
}
