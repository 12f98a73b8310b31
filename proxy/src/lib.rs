//! dgf proxy library: everything the `dgf` binary runs, exposed for tests and benchmarks.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod governance;
pub mod live;
pub mod metrics;
pub mod missing;
pub mod mongodb;
pub mod mysql;
pub mod pool;
pub mod postgres;
pub mod redis;
pub mod shaping;
pub mod shared;
pub mod stream;
pub mod tls;
pub mod tools;
