//! SCRAM as MongoDB carries it in `saslStart` / `saslContinue`: the user name from the
//! client-first message, and a client that sends a user name (Postgres' leaves it empty).

use crate::postgres::scram::ScramClient;

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
    ScramClient::with_nonce(password, user, crate::postgres::scram::random_nonce())
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
    }
}
