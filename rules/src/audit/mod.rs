//! Audit events, the SHA-256 hash chain, file/stdout sinks with rotation, and verification.
