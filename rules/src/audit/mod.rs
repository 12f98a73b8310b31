//! Audit events, the SHA-256 hash chain, file/stdout sinks with rotation, and verification.
//!
//! # Record format
//! One JSON object per line (`\n`-terminated), fields in this order (see [`AuditEvent`]):
//! `time, seq, instance, protocol, route, client, user, [roles], database, kind, fingerprint,
//! [statement], objects, decision, [rules], [rows], [bytes], [duration_us], [error],
//! [prev_hash], hash`. Bracketed fields are left out when they carry nothing: `statement` unless
//! `include_literals = true`, `roles` and `rules` when empty, the numbers and `error` when
//! unknown (readers take a missing field as empty or null), and `prev_hash` everywhere but in
//! the first record of each file (the previous line's `hash` is the value it would have).
//! Files written before this compact form (every field, `null`s, `prev_hash` on every line)
//! verify as they are, and both forms may share a file. `seq` starts at 1 and grows by
//! exactly 1 per record across rotated files.
//! Hot paths may hand the writer records already rendered as JSON fields ([`RawBatch`], see
//! raw.rs); their lines are byte for byte those of the equivalent [`AuditEvent`].
//!
//! # Hash chain (exact canonicalisation, for external verifiers)
//! ```text
//! body = serde_json::to_vec(record)        // compact, struct field order, `hash` field absent
//! hash = lower_hex(SHA-256(prev || body))
//!        // prev: the previous record's hash as 64 ASCII hex characters (64 zeros for the first
//!        // record), which is also the record's `prev_hash` field when it has one; body as
//!        // bytes, no newline
//! line = body without its final '}' ++ ",\"hash\":\"" ++ hash ++ "\"}" ++ "\n"
//! ```
//! So a verifier needs no JSON canonicalisation: take a line, drop the `\n`, cut the fixed
//! 75-byte suffix `,"hash":"<64 hex>"}`, append `}` and that is `body`, byte for byte. Any change
//! to any byte of a record (even whitespace or an added field) changes its hash, and so does
//! any change to the record before it. In shell, with `prev` the previous line's hash:
//! ```text
//! body="$(printf '%s' "$line" | head -c -75)}"; printf '%s%s' "$prev" "$body" | sha256sum
//! ```
//! The first record of a chain has `prev_hash` = 64 zeros ([`GENESIS_HASH`]); the first record of
//! a rotated continuation file links to the last hash of the previous file, so one chain spans
//! every file, and each file can be checked on its own from its first line. The chain is
//! unkeyed: it proves that nothing was edited, removed or reordered
//! *relative to a known hash*; against someone who rewrites the whole tail, anchor the latest
//! hash elsewhere (the proxy exposes it; ship the file off-host).
//!
//! # Files
//! A file sink rotates past `max_file_bytes` by renaming `PATH` to `PATH.<YYYYMMDDTHHMMSS.mmmZ>`
//! (`.N` appended on a collision) and continuing in a fresh `PATH`. On start it continues the
//! chain from the last record of `PATH` (or of the newest rotated sibling when `PATH` is empty or
//! missing). If that last line is damaged (a crash mid-write, an edit) the file is set aside under
//! a rotated name, the chain continues from the last intact record, and the first record of the
//! new file is a `kind = "audit.recover"` event whose `error` says what happened — the chain is
//! never restarted silently, and `verify` still reports the damaged line. One writer per file.
//! With `keep_rotated = N`, each rotation then deletes the oldest rotated siblings (chain
//! order) beyond N; N >= 1, so the newest one still holds the tip when `PATH` is empty.
//!
//! The stdout sink has no rotation and starts a fresh chain (genesis) at every start.

mod chain;
mod file;
mod json;
mod pretty;
pub mod raw;
mod resume;
mod verify;
mod worker;
mod writer;

#[cfg(test)]
mod tests;

pub use chain::{hex_into, GENESIS_HASH};
pub use pretty::pretty;
pub use raw::RawBatch;
pub use verify::{discover, verify, verify_with, VerifyError, VerifyReason, VerifyReport, VerifyStart};
pub use writer::{AuditStats, AuditWriter, DEFAULT_MAX_FILE_BYTES, DEFAULT_QUEUE, FLUSH_INTERVAL};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// One audited statement, command or request. Field order is the serialisation order and part of
/// the hash-chain format: only ever append fields (before `prev_hash`), never reorder. The
/// writer serialises it by hand (audit/json.rs, byte-identical to serde_json and tested against
/// it): a new field goes there too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// RFC 3339 UTC with milliseconds, e.g. `2025-01-31T12:00:00.123Z`. The writer fills it in when
    /// the caller leaves it empty (prefer stamping at statement time with [`now_rfc3339`]).
    #[serde(default)]
    pub time: String,
    /// Position in the chain (1-based, +1 per record). Assigned by the writer.
    #[serde(default)]
    pub seq: u64,
    /// Proxy instance name. Assigned by the writer from [`AuditWriter::start`].
    #[serde(default)]
    pub instance: String,
    /// `postgres`, `mysql`, `redis`, `mongodb`, `http`.
    #[serde(default)]
    pub protocol: String,
    /// Route name.
    #[serde(default)]
    pub route: String,
    /// Client address (`ip:port`).
    #[serde(default)]
    pub client: String,
    /// dgf user.
    #[serde(default)]
    pub user: String,
    /// Roles of the user (left out of the line when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Database / keyspace.
    #[serde(default)]
    pub database: String,
    /// Statement kind or command class (`select`, `ddl`, `read`...).
    #[serde(default)]
    pub kind: String,
    /// Statement with literals stripped (computed by the caller).
    #[serde(default)]
    pub fingerprint: String,
    /// Full statement text with literals. Kept only when `include_literals = true`; the writer
    /// clears it otherwise, so callers may always fill it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// Objects touched (tables, collections, key patterns).
    #[serde(default)]
    pub objects: Vec<String>,
    /// `allow`, `deny`, `mask`, `shadow-deny`, `shadow-mask`, ...
    #[serde(default)]
    pub decision: String,
    /// Names of the rules that fired (left out of the line when none did).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// Rows returned or affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Bytes returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Duration in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// Error code (e.g. SQLSTATE), if the statement failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Hash of the previous record ([`GENESIS_HASH`] for the first). Assigned by the writer to the
    /// first record of each file only (empty, and left out of the line, everywhere else: the
    /// previous line holds it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prev_hash: String,
    /// This record's hash. Assigned by the writer; absent from the hashed body.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

/// Errors of the audit writer and verifier. Chain breaks are not errors: [`verify`] reports them
/// in [`VerifyReport::first_error`].
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The `[audit]` section cannot be used as given.
    #[error("audit config: {0}")]
    Config(String),
    /// A file could not be opened, read, written or renamed.
    #[error("audit file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(std::io::Error),
    /// The writer stopped after an error; the event was not written (it is counted as dropped).
    #[error("audit writer stopped: {0}")]
    Stopped(String),
    /// A record could not be encoded.
    #[error("cannot encode an audit record: {0}")]
    Encode(String),
}

impl AuditError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// Now as RFC 3339 UTC with milliseconds (`2025-01-31T12:00:00.123Z`).
pub fn now_rfc3339() -> String {
    rfc3339_utc(SystemTime::now())
}

/// Now as Unix milliseconds (the stamp of a [`RawBatch`] record).
pub fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `t` as RFC 3339 UTC with milliseconds. Times before 1970 print as the epoch.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(t);
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z");
    }
    // Hand-rolled: this runs once per audited statement and `format!` costs ~3k instructions.
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y as u32);
    put(5, 2, mo);
    put(8, 2, d);
    put(11, 2, h);
    put(14, 2, mi);
    put(17, 2, s);
    put(20, 3, ms);
    std::str::from_utf8(&b).map(str::to_owned).unwrap_or_default()
}

/// Compact UTC stamp for rotated file names: `20250131T120000.123Z` (sorts chronologically).
pub(crate) fn file_stamp(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(t);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}.{ms:03}Z")
}

/// (year, month, day, hour, minute, second, millisecond) in UTC.
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, (rem / 3600) as u32, (rem % 3600 / 60) as u32, (rem % 60) as u32, since.subsec_millis())
}
