//! The server side of a SCRAM exchange, generic over the hash: checks the client's proof
//! against a stored [`Verifier`] and proves in turn that it holds the ServerKey.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::hash::{h, hmac_of, xor, ScramHash, Verifier};
use super::msg::{constant_time_eq, decode_proof, parse_client_final, parse_client_first, random_nonce};
use super::{ScramError, MAX_NONCE_LEN};

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

/// Server side of a SCRAM exchange, as a pure state machine.
///
/// [`Server::handle_client_first`] takes `client-first-message` and returns
/// `server-first-message`; [`Server::handle_client_final`] takes `client-final-message`,
/// checks the proof and returns `server-final-message`. The caller carries them in its
/// protocol's messages (PostgreSQL `SASLInitialResponse` / `AuthenticationSASLContinue` /
/// `SASLResponse` / `AuthenticationSASLFinal`, MongoDB `saslStart` / `saslContinue`).
/// Any error leaves the machine failed.
pub struct Server<H: ScramHash> {
    verifier: Verifier<H>,
    server_nonce: String,
    state: ServerState,
}

impl<H: ScramHash> fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("verifier", &self.verifier)
            .field("server_nonce", &self.server_nonce)
            .field("state", &self.state)
            .finish()
    }
}

impl<H: ScramHash> Server<H> {
    /// Starts an exchange against `verifier` (a mock one for unknown users, so they fail only
    /// at the proof like a wrong password), with an 18-byte random server nonce.
    pub fn new(verifier: Verifier<H>) -> Self {
        Self::with_nonce(verifier, random_nonce())
    }

    /// Starts an exchange with an explicit server nonce (tests, RFC vectors).
    pub(crate) fn with_nonce(verifier: Verifier<H>, server_nonce: String) -> Self {
        Server { verifier, server_nonce, state: ServerState::Initial }
    }

    /// `true` once [`Server::handle_client_final`] has succeeded.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, ServerState::Done)
    }

    /// Processes `client-first-message` and returns `server-first-message`
    /// (`r=<client nonce><server nonce>,s=<salt>,i=<iterations>`). The user name inside is
    /// not looked at: the caller knows the user from its own protocol.
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

    /// Processes `client-final-message`, checks the proof and returns `server-final-message`
    /// (`v=<server signature>`). A wrong password gives [`ScramError::InvalidPassword`].
    pub fn handle_client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ServerState::FirstSent { gs2_header, client_first_bare, server_first, nonce } =
            std::mem::replace(&mut self.state, ServerState::Failed)
        else {
            return Err(ScramError::UnexpectedMessage);
        };
        let fin = parse_client_final(msg, &gs2_header)?;
        let proof: H::Key = decode_proof(fin.proof)?;
        if fin.nonce != nonce {
            return Err(ScramError::NonceMismatch);
        }
        let auth_message = format!("{client_first_bare},{server_first},{}", fin.without_proof);
        // ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); it must hash to StoredKey.
        let client_signature = hmac_of::<H>(self.verifier.stored_key.as_ref(), &[auth_message.as_bytes()]);
        let client_key = xor::<H>(&proof, &client_signature);
        if !constant_time_eq(h::<H>(client_key.as_ref()).as_ref(), self.verifier.stored_key.as_ref()) {
            return Err(ScramError::InvalidPassword);
        }
        let server_signature = hmac_of::<H>(self.verifier.server_key.as_ref(), &[auth_message.as_bytes()]);
        self.state = ServerState::Done;
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}
