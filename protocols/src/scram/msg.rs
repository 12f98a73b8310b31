//! The SCRAM message grammar (RFC 5802), the same for every hash: parsing and validation of
//! the four messages, nonces and the constant-time compare. Key derivation lives in `hash`.

use super::{ScramError, MAX_CLIENT_ITERATIONS, MAX_NONCE_LEN, MAX_SCRAM_MESSAGE_LEN};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::RngCore;

/// Length in raw bytes of the random nonces we generate (same as PostgreSQL/libpq).
const NONCE_RAW_LEN: usize = 18;

/// Compares two byte strings in time independent of their contents (the length is not
/// considered secret).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

pub(crate) fn random_nonce() -> String {
    let mut raw = [0u8; NONCE_RAW_LEN];
    rand::rng().fill_bytes(&mut raw);
    B64.encode(raw)
}

pub(crate) fn check_len(msg: &[u8]) -> Result<&str, ScramError> {
    if msg.len() > MAX_SCRAM_MESSAGE_LEN {
        return Err(ScramError::MessageTooLong { len: msg.len(), max: MAX_SCRAM_MESSAGE_LEN });
    }
    std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("message is not valid UTF-8"))
}

/// RFC 5802 `printable` without `,`: the nonce alphabet.
pub(crate) fn valid_nonce(nonce: &str) -> Result<(), ScramError> {
    if nonce.is_empty() {
        return Err(ScramError::Malformed("empty nonce"));
    }
    if nonce.len() > MAX_NONCE_LEN {
        return Err(ScramError::Malformed("nonce too long"));
    }
    if !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',') {
        return Err(ScramError::Malformed("nonce contains non-printable characters"));
    }
    Ok(())
}

/// Returns the value of attribute `name` (`name=value`), or `err` if `part` is another attribute.
pub(crate) fn attr<'a>(part: &'a str, name: char, err: &'static str) -> Result<&'a str, ScramError> {
    part.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')).ok_or(ScramError::Malformed(err))
}

/// An optional extension attribute: `<letter>=<value>`.
pub(crate) fn valid_extension(part: &str) -> Result<(), ScramError> {
    match part.as_bytes() {
        [letter, b'=', ..] if letter.is_ascii_alphabetic() => Ok(()),
        _ => Err(ScramError::Malformed("invalid attribute")),
    }
}

/// Escapes a username as an RFC 5802 `saslname` (`=` -> `=3D`, `,` -> `=2C`).
pub(crate) fn escape_saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// A parsed `client-first-message`.
pub(crate) struct ClientFirst<'a> {
    /// `n,,` or `y,,` (authorization identities are refused).
    pub gs2_header: String,
    /// `client-first-message-bare` (`n=<user>,r=<nonce>[,ext]`).
    pub bare: &'a str,
    /// The client nonce.
    pub nonce: &'a str,
}

/// Parses `client-first-message` = gs2-header client-first-message-bare.
pub(crate) fn parse_client_first(msg: &[u8]) -> Result<ClientFirst<'_>, ScramError> {
    let msg = check_len(msg)?;
    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    let (flag, rest) = msg.split_once(',').ok_or(ScramError::Malformed("missing GS2 header"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(ScramError::ChannelBindingNotSupported),
        _ => return Err(ScramError::Malformed("invalid GS2 channel binding flag")),
    }
    let (authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed("incomplete GS2 header"))?;
    if !authzid.is_empty() {
        return Err(if authzid.starts_with("a=") {
            ScramError::AuthzidNotSupported
        } else {
            ScramError::Malformed("invalid GS2 authorization identity")
        });
    }
    // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
    let mut parts = bare.split(',');
    let first = parts.next().unwrap_or_default();
    if first.starts_with("m=") {
        return Err(ScramError::UnsupportedExtension);
    }
    attr(first, 'n', "expected username attribute")?;
    let nonce = attr(parts.next().ok_or(ScramError::Malformed("missing nonce"))?, 'r', "expected nonce attribute")?;
    valid_nonce(nonce)?;
    for ext in parts {
        valid_extension(ext)?;
    }
    Ok(ClientFirst { gs2_header: format!("{flag},,"), bare, nonce })
}

/// A parsed `client-final-message` whose channel binding echoed the GS2 header.
pub(crate) struct ClientFinal<'a> {
    /// Everything before `,p=`.
    pub without_proof: &'a str,
    /// The combined nonce.
    pub nonce: &'a str,
    /// The proof, still base64.
    pub proof: &'a str,
}

/// Parses `client-final-message` = "c=" cbind "," "r=" nonce ["," extensions] "," "p=" proof
/// and checks that `c=` echoes `gs2_header`.
pub(crate) fn parse_client_final<'a>(msg: &'a [u8], gs2_header: &str) -> Result<ClientFinal<'a>, ScramError> {
    let msg = check_len(msg)?;
    let (without_proof, proof) =
        msg.rsplit_once(',').ok_or(ScramError::Malformed("client-final-message is incomplete"))?;
    let proof = attr(proof, 'p', "expected proof as last attribute")?;
    let mut parts = without_proof.split(',');
    let cbind = attr(parts.next().unwrap_or_default(), 'c', "expected channel binding attribute")?;
    let nonce = attr(parts.next().ok_or(ScramError::Malformed("missing nonce"))?, 'r', "expected nonce attribute")?;
    for ext in parts {
        valid_extension(ext)?;
        if ext.starts_with("p=") {
            return Err(ScramError::Malformed("proof must be the last attribute"));
        }
    }
    let cbind = B64.decode(cbind).map_err(|_| ScramError::Malformed("channel binding is not valid base64"))?;
    if cbind != gs2_header.as_bytes() {
        return Err(ScramError::ChannelBindingMismatch);
    }
    Ok(ClientFinal { without_proof, nonce, proof })
}

/// Decodes a base64 client proof of the hash's length (`K` is `[u8; hash length]`).
pub(crate) fn decode_proof<K: TryFrom<Vec<u8>>>(proof: &str) -> Result<K, ScramError> {
    B64.decode(proof)
        .map_err(|_| ScramError::Malformed("proof is not valid base64"))?
        .try_into()
        .map_err(|_| ScramError::Malformed("proof has the wrong length"))
}

/// A parsed `server-first-message`.
pub(crate) struct ServerFirst<'a> {
    /// Combined nonce (checked to extend the client's).
    pub nonce: &'a str,
    /// Salt (decoded, not empty).
    pub salt: Vec<u8>,
    /// Iteration count (1..=[`MAX_CLIENT_ITERATIONS`]).
    pub iterations: u32,
}

/// Parses `server-first-message` = [reserved-mext ","] nonce "," salt "," iteration-count
/// ["," extensions]; refuses nonces that do not extend `client_nonce` and iteration counts
/// above [`MAX_CLIENT_ITERATIONS`].
pub(crate) fn parse_server_first<'a>(server_first: &'a str, client_nonce: &str) -> Result<ServerFirst<'a>, ScramError> {
    let mut parts = server_first.split(',');
    let first = parts.next().unwrap_or_default();
    if first.starts_with("m=") {
        return Err(ScramError::UnsupportedExtension);
    }
    let nonce = attr(first, 'r', "expected nonce attribute")?;
    valid_nonce(nonce)?;
    if nonce.len() <= client_nonce.len() || !nonce.starts_with(client_nonce) {
        return Err(ScramError::NonceMismatch);
    }
    let salt = attr(parts.next().ok_or(ScramError::Malformed("missing salt"))?, 's', "expected salt attribute")?;
    let salt = B64.decode(salt).map_err(|_| ScramError::Malformed("salt is not valid base64"))?;
    if salt.is_empty() {
        return Err(ScramError::Malformed("empty salt"));
    }
    let iterations = attr(
        parts.next().ok_or(ScramError::Malformed("missing iteration count"))?,
        'i',
        "expected iteration count attribute",
    )?;
    if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ScramError::Malformed("iteration count is not a number"));
    }
    let iterations: u32 = match iterations.parse() {
        Ok(i) => i,
        Err(_) => return Err(ScramError::IterationCountTooHigh { iterations: u32::MAX, max: MAX_CLIENT_ITERATIONS }),
    };
    if iterations == 0 {
        return Err(ScramError::Malformed("iteration count must be positive"));
    }
    if iterations > MAX_CLIENT_ITERATIONS {
        return Err(ScramError::IterationCountTooHigh { iterations, max: MAX_CLIENT_ITERATIONS });
    }
    for ext in parts {
        valid_extension(ext)?;
    }
    Ok(ServerFirst { nonce, salt, iterations })
}

/// Parses `server-final-message` = (server-error / verifier) ["," extensions]; returns the
/// decoded server signature, or the server's `e=` error.
pub(crate) fn parse_server_final(msg: &[u8]) -> Result<Vec<u8>, ScramError> {
    let msg = check_len(msg)?;
    let first = msg.split(',').next().unwrap_or_default();
    if let Some(err) = first.strip_prefix("e=") {
        let mut err = err.to_owned();
        if err.len() > 256 {
            let mut cut = 256;
            while !err.is_char_boundary(cut) {
                cut -= 1;
            }
            err.truncate(cut);
        }
        return Err(ScramError::ServerError(err));
    }
    let v = attr(first, 'v', "expected verifier attribute")?;
    B64.decode(v).map_err(|_| ScramError::Malformed("server signature is not valid base64"))
}
