//! dgf wire formats: message framing, codecs and handshake state machines. No sockets, no config.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod mongodb;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod scram;
