//! Errors raised while framing RESP requests and replies.

use thiserror::Error;

/// A RESP framing error. Every variant is the peer's fault (malformed or hostile input); the
/// connection that produced it cannot be resynchronised and must be closed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RespError {
    /// A bulk string announced a length above the cap.
    #[error("bulk length {len} exceeds the limit of {max} bytes")]
    BulkTooLong {
        /// Announced length.
        len: i64,
        /// Cap.
        max: usize,
    },
    /// An aggregate announced more elements than the cap.
    #[error("aggregate of {len} elements exceeds the limit of {max}")]
    ArrayTooLong {
        /// Announced count.
        len: i64,
        /// Cap.
        max: usize,
    },
    /// Aggregates nested deeper than the cap.
    #[error("nesting deeper than {max} levels")]
    TooDeep {
        /// Cap.
        max: usize,
    },
    /// An inline command or a simple line longer than the cap.
    #[error("line longer than {max} bytes")]
    LineTooLong {
        /// Cap.
        max: usize,
    },
    /// A byte that starts no RESP type.
    #[error("unknown RESP type byte {0:#04x}")]
    UnknownType(u8),
    /// Anything else structurally wrong.
    #[error("{0}")]
    Malformed(&'static str),
}
