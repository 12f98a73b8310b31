//! PostgreSQL v3 protocol: framing, the messages governance needs, startup and auth state machines.

pub mod auth;
pub mod error;
pub mod frame;
pub mod messages;
pub mod rowdesc;
pub mod scram;
pub mod startup;

pub use error::PgProtoError;
pub use frame::{Frame, FrameCodec, MAX_MESSAGE_LEN};
