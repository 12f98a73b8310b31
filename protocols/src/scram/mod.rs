//! SCRAM (RFC 5802) once for every hash: the message grammar, the stored verifier and pure
//! server and client state machines, generic over [`ScramHash`] (SHA-1 or SHA-256), no I/O.
//!
//! The mechanisms built on it keep their own parts: `postgres::scram` (SCRAM-SHA-256 as
//! PostgreSQL speaks it: the `SCRAM-SHA-256$...` verifier format, an empty `n=`, the SQLSTATE
//! classification of errors) and `mongodb::scram_sha1` (MongoDB's password digest, a user
//! name in `n=`, an iteration floor on the client).
//!
//! What every mechanism here shares:
//!
//! * only the mechanism without `-PLUS`: a client asking for channel binding (`p=...`) is
//!   refused, while `n,,` and `y,,` are accepted (we never advertise `-PLUS`, so `y,,` is
//!   truthful) and must be echoed in `c=`;
//! * authorization identities (`a=`) and mandatory extensions (`m=`) are refused; the
//!   server ignores the user name inside `client-first-message` (the caller takes it from
//!   the startup packet or the `saslStart` command);
//! * every message handed in is capped at [`MAX_SCRAM_MESSAGE_LEN`] bytes and every nonce at
//!   [`MAX_NONCE_LEN`] bytes so a hostile peer cannot make us buffer or hash unbounded input;
//!   a client computes at most [`MAX_CLIENT_ITERATIONS`] PBKDF2 rounds.
//!
//! ```text
//! Server:  Initial --client-first--> FirstSent --client-final (proof ok)--> Done
//! Client:  Initial --server-first--> FinalSent --server-final (signature ok)--> Done
//!          any error, or a step out of order, --> Failed (every later step errors)
//! ```

mod client;
mod hash;
mod msg;
mod server;

pub use client::Client;
pub use hash::{ScramHash, Verifier};
pub(crate) use msg::{constant_time_eq, random_nonce};
pub use server::Server;

/// Largest SCRAM message (client-first, client-final, server-first, server-final) accepted.
pub const MAX_SCRAM_MESSAGE_LEN: usize = 16 * 1024;

/// Largest nonce (client or combined) accepted.
pub const MAX_NONCE_LEN: usize = 1024;

/// Highest iteration count a [`Client`] agrees to compute; a hostile server could otherwise
/// make the client burn CPU for minutes.
pub const MAX_CLIENT_ITERATIONS: u32 = 1_000_000;

/// Errors of the SCRAM exchange.
///
/// `ScramError::is_protocol_violation` (in `postgres::scram`, beside the SQLSTATEs it
/// stands for) separates malformed or out-of-sequence input from authentication failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A SCRAM message exceeded [`MAX_SCRAM_MESSAGE_LEN`].
    #[error("SCRAM message too long ({len} bytes, at most {max} allowed)")]
    MessageTooLong {
        /// Length received.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A SCRAM message does not follow the RFC 5802 grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// A step was called out of order, or after the exchange finished or failed.
    #[error("unexpected SCRAM message in the current state of the exchange")]
    UnexpectedMessage,
    /// The client asked for channel binding (`p=...`), which we do not offer.
    #[error("client requested SCRAM channel binding, but only SCRAM-SHA-256 without channel binding is supported")]
    ChannelBindingNotSupported,
    /// The `c=` attribute of client-final does not echo the GS2 header of client-first.
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,
    /// The client sent an authorization identity (`a=`), which PostgreSQL does not support.
    #[error("client uses SCRAM authorization identity, which is not supported")]
    AuthzidNotSupported,
    /// The peer requires an extension (`m=`) we do not implement.
    #[error("peer requires an unsupported SCRAM extension")]
    UnsupportedExtension,
    /// The nonce in client-final differs from client nonce + server nonce (server side), or
    /// the server nonce does not extend the client nonce (client side).
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The client proof is wrong: wrong password (or unknown user with a mock verifier).
    #[error("password authentication failed")]
    InvalidPassword,
    /// The server demanded more PBKDF2 iterations than [`MAX_CLIENT_ITERATIONS`].
    #[error("server requested {iterations} SCRAM iterations, at most {max} allowed")]
    IterationCountTooHigh {
        /// Iterations requested by the server.
        iterations: u32,
        /// Limit.
        max: u32,
    },
    /// The server signature in server-final is wrong: the server does not know the password.
    #[error("SCRAM server signature mismatch: the server could not prove it knows the password")]
    ServerSignatureMismatch,
    /// The server answered with `e=<error>` in server-final.
    #[error("server reported SCRAM error: {0}")]
    ServerError(String),
    /// A stored verifier is not in PostgreSQL's `SCRAM-SHA-256$...` format.
    #[error("invalid SCRAM verifier: {0}")]
    InvalidVerifier(&'static str),
}
