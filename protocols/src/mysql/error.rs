//! Errors raised while framing or decoding MySQL protocol packets.

use thiserror::Error;

/// A MySQL protocol error. Every variant is the peer's fault (malformed or hostile input).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MyProtoError {
    /// A logical packet grew beyond the configured cap.
    #[error("packet of {len} bytes exceeds the limit of {max} bytes")]
    PacketTooLarge {
        /// Size reached so far.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A packet ended before a field was complete.
    #[error("truncated {0} packet")]
    Truncated(&'static str),
    /// A sequence id other than the expected one.
    #[error("packets out of order: expected sequence id {expected}, got {got}")]
    OutOfOrder {
        /// Expected id.
        expected: u8,
        /// Received id.
        got: u8,
    },
    /// A string field was not valid UTF-8.
    #[error("invalid UTF-8 in {0}")]
    InvalidUtf8(&'static str),
    /// The peer does not speak protocol 4.1.
    #[error("the peer does not support protocol 4.1")]
    Protocol41Required,
    /// Anything else structurally wrong, with a short description.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
}

impl MyProtoError {
    /// The MySQL error number a server sends for this error (1153 packet too large, 1047
    /// unknown command / malformed packet).
    pub fn errno(&self) -> u16 {
        match self {
            MyProtoError::PacketTooLarge { .. } => 1153,
            _ => 1835,
        }
    }

    /// SQLSTATE paired with [`Self::errno`].
    pub fn sqlstate(&self) -> &'static str {
        match self {
            MyProtoError::PacketTooLarge { .. } => "08S01",
            _ => "08S01",
        }
    }
}
