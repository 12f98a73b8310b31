//! Errors raised while framing or decoding MongoDB wire messages.

use thiserror::Error;

/// A MongoDB wire protocol error. Every variant is the peer's fault (malformed or hostile input).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MongoProtoError {
    /// A message announced a length above the configured cap.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Announced length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A length field that cannot be right (negative, smaller than the header, past the end).
    #[error("invalid length {0}")]
    InvalidLength(i64),
    /// The body ended before a field was complete.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// An opcode dgf does not speak.
    #[error("unsupported opcode {0}")]
    UnsupportedOpCode(i32),
    /// OP_MSG flag bits that are required-to-understand but unknown.
    #[error("unknown required OP_MSG flag bits {0:#x}")]
    UnknownFlags(u32),
    /// The CRC-32C checksum did not match.
    #[error("OP_MSG checksum mismatch")]
    ChecksumMismatch,
    /// A BSON document or array nested deeper than allowed.
    #[error("BSON nesting deeper than {0}")]
    TooDeep(usize),
    /// Malformed BSON.
    #[error("invalid BSON: {0}")]
    Bson(&'static str),
    /// An unknown compressor id, or a compressor that failed.
    #[error("compression: {0}")]
    Compression(String),
    /// Anything else structurally wrong.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

impl MongoProtoError {
    /// The MongoDB error code a server would answer with.
    pub fn code(&self) -> (i32, &'static str) {
        match self {
            MongoProtoError::MessageTooLarge { .. } => (10334, "BSONObjectTooLarge"),
            MongoProtoError::ChecksumMismatch => (40441, "ChecksumMismatch"),
            MongoProtoError::TooDeep(_) => (15, "Overflow"),
            _ => (2, "BadValue"),
        }
    }
}
