//! The client side of a SCRAM exchange (no channel binding), generic over the hash: dgf
//! logging in to an upstream server with a password it holds.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::hash::{client_key, h, hmac_of, salted_password, server_key, xor, ScramHash};
use super::msg::{check_len, constant_time_eq, escape_saslname, parse_server_final, parse_server_first, ServerFirst};
use super::ScramError;

enum ClientState<K> {
    /// client-first-message not answered yet.
    Initial,
    /// client-final-message sent; the expected server signature is kept.
    FinalSent { server_signature: K },
    /// Server signature verified.
    Done,
    /// Exchange failed; every further call errors.
    Failed,
}

/// Client side of a SCRAM exchange, as a pure state machine: [`Client::client_first`], then
/// [`Client::handle_server_first`] on the server's first answer, then
/// [`Client::handle_server_final`] on its last. The mechanisms build it with their own
/// password treatment (`postgres::scram::ScramClient::new`, `mongodb::scram_sha1::Sha1Client::new`).
///
/// `Debug` does not print the password.
pub struct Client<H: ScramHash> {
    /// The SCRAM password as the mechanism defines it (raw bytes, or MongoDB's digest).
    password: Vec<u8>,
    /// Escaped saslname sent in `n=` (empty for PostgreSQL, as libpq sends it).
    username: String,
    client_nonce: String,
    /// Fewest iterations accepted from the server, and the refusal below that.
    min_iterations: Option<(u32, &'static str)>,
    state: ClientState<H::Key>,
}

impl<H: ScramHash> fmt::Debug for Client<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ClientState::Initial => "Initial",
            ClientState::FinalSent { .. } => "FinalSent",
            ClientState::Done => "Done",
            ClientState::Failed => "Failed",
        };
        f.debug_struct("Client")
            .field("mechanism", &H::MECHANISM)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("client_nonce", &self.client_nonce)
            .field("state", &state)
            .finish()
    }
}

impl<H: ScramHash> Client<H> {
    /// A client sending `username` (unescaped) in `n=`, proving `password` (the SCRAM
    /// password bytes, after whatever normalisation or digest the mechanism applies).
    pub(crate) fn start(password: Vec<u8>, username: &str, client_nonce: String) -> Self {
        Client {
            password,
            username: escape_saslname(username),
            client_nonce,
            min_iterations: None,
            state: ClientState::Initial,
        }
    }

    /// Refuses server-first messages with fewer than `min` iterations, with `Malformed(refusal)`.
    pub(crate) fn with_min_iterations(mut self, min: u32, refusal: &'static str) -> Self {
        self.min_iterations = Some((min, refusal));
        self
    }

    fn client_first_bare(&self) -> String {
        format!("n={},r={}", self.username, self.client_nonce)
    }

    /// `client-first-message`: `n,,n=<user>,r=<nonce>`.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare()).into_bytes()
    }

    /// Processes `server-first-message` and returns `client-final-message` with the proof.
    ///
    /// Refuses iteration counts above [`super::MAX_CLIENT_ITERATIONS`] (or below the
    /// mechanism's floor) and server nonces that do not extend the client nonce.
    pub fn handle_server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ClientState::Initial = std::mem::replace(&mut self.state, ClientState::Failed) else {
            return Err(ScramError::UnexpectedMessage);
        };
        let server_first = check_len(msg)?;
        let ServerFirst { nonce, salt, iterations } = parse_server_first(server_first, &self.client_nonce)?;
        if let Some((min, refusal)) = self.min_iterations {
            if iterations < min {
                return Err(ScramError::Malformed(refusal));
            }
        }

        let salted = salted_password::<H>(&self.password, &salt, iterations);
        let client_key = client_key::<H>(&salted);
        let stored_key = h::<H>(client_key.as_ref());
        // "biws" = base64("n,,")
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare());
        let client_signature = hmac_of::<H>(stored_key.as_ref(), &[auth_message.as_bytes()]);
        let proof = xor::<H>(&client_key, &client_signature);
        let server_signature = hmac_of::<H>(server_key::<H>(&salted).as_ref(), &[auth_message.as_bytes()]);
        self.state = ClientState::FinalSent { server_signature };
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Processes `server-final-message`, verifying the server signature.
    pub fn handle_server_final(&mut self, msg: &[u8]) -> Result<(), ScramError> {
        let ClientState::FinalSent { server_signature } = std::mem::replace(&mut self.state, ClientState::Failed)
        else {
            return Err(ScramError::UnexpectedMessage);
        };
        let v = parse_server_final(msg)?;
        if !constant_time_eq(&v, server_signature.as_ref()) {
            return Err(ScramError::ServerSignatureMismatch);
        }
        self.state = ClientState::Done;
        Ok(())
    }

    /// `true` once [`Client::handle_server_final`] has verified the server.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, ClientState::Done)
    }
}
