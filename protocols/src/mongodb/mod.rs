//! MongoDB wire protocol: message framing (header, OP_MSG, OP_QUERY/OP_REPLY, OP_COMPRESSED),
//! zero-copy command inspection over `bson` raw documents, a BSON byte-splice for masking, and
//! the SCRAM payload helpers of Mongo's SASL conversation (and SCRAM-SHA-1). No I/O.

pub mod batch;
pub mod bsonwalk;
pub mod compress;
pub mod error;
pub mod frame;
pub mod inspect;
pub mod legacy;
pub mod msg;
pub mod sasl;
pub mod scram_sha1;
pub mod splice;

pub use error::MongoProtoError;
pub use frame::{Header, Message, OpCode};
pub use msg::OpMsg;

/// Default cap on one message (MongoDB's `maxMessageSizeBytes`).
pub const DEFAULT_MAX_MESSAGE: usize = 48_000_000;
/// Default cap on BSON nesting depth (documents and arrays inside each other).
pub const DEFAULT_MAX_DEPTH: usize = 128;
