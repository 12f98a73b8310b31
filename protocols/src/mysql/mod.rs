//! MySQL / MariaDB client-server protocol: packet framing, handshake and authentication state
//! machines (both sides), lazy packet decoders and the result-set boundary tracker. No I/O.
//!
//! Framing is hand-written (4-byte header, the hot path); `mysql_common` supplies the
//! authentication scrambles, the RSA public-key encryption of caching_sha2_password and the
//! parser of the upstream server's greeting. Column definitions are never re-serialised: the
//! server's bytes are forwarded (mysql_common's serialiser writes column_length before
//! character_set, which is the wrong wire order).

pub mod auth;
pub mod consts;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod packets;
pub mod response;
pub mod rows;

pub use error::MyProtoError;
pub use frame::{put_packet, split_frame, Frame, MAX_PAYLOAD};
