//! Errors raised while framing or decoding Postgres protocol messages.

use thiserror::Error;

/// A Postgres protocol error. Every variant is the peer's fault (malformed or hostile input).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PgProtoError {
    /// A message announced a length above the configured cap.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Announced length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A length field smaller than the length field itself.
    #[error("invalid message length {0}")]
    InvalidLength(i64),
    /// A message body ended before a field was complete.
    #[error("truncated {0} message")]
    Truncated(&'static str),
    /// A string field was not valid UTF-8.
    #[error("invalid UTF-8 in {0}")]
    InvalidUtf8(&'static str),
    /// The client asked for a protocol version we do not speak.
    #[error("unsupported frontend protocol {major}.{minor}")]
    UnsupportedProtocol {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
    /// Anything else structurally wrong, with a short description.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

impl PgProtoError {
    /// The SQLSTATE a server sends for this error (`08P01` protocol violation, `54000` too large).
    pub fn sqlstate(&self) -> &'static str {
        match self {
            PgProtoError::MessageTooLarge { .. } => "54000",
            PgProtoError::UnsupportedProtocol { .. } => "0A000",
            _ => "08P01",
        }
    }
}
