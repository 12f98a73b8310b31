//! Verification of a chain across files, and discovery of a file's rotated siblings.

use super::chain::{check_line, GENESIS_HASH};
use super::AuditError;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};

/// Longest first line [`discover`] reads to order a file.
const FIRST_LINE_MAX: u64 = 16 * 1024 * 1024;
use std::path::{Path, PathBuf};

/// Where the chain handed to [`verify_with`] must start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyStart {
    /// At the beginning: seq 1 with `prev_hash` = [`GENESIS_HASH`] (what [`verify`] uses).
    Genesis,
    /// Wherever the first record says (older files were deleted by retention). Compare
    /// [`VerifyReport::first_seq`] with an anchor kept elsewhere.
    Any,
    /// Right after a record known from elsewhere (an anchored `seq` and `hash`).
    After {
        /// `seq` of the anchored record.
        seq: u64,
        /// `hash` of the anchored record.
        hash: String,
    },
}

/// What is wrong at the first broken place of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyReason {
    /// The record's content does not match its `hash`: it was edited (or, for a record
    /// without `prev_hash`, which chains to the previous line's hash, the record before it was
    /// replaced by a re-hashed one).
    HashMismatch,
    /// `seq` is higher than the next expected: records were removed (or moved later).
    SeqGap {
        /// Expected seq.
        expected: u64,
        /// Seq found.
        found: u64,
    },
    /// `seq` is not higher than the previous one: records were reordered or replayed.
    SeqBackwards {
        /// Expected seq.
        expected: u64,
        /// Seq found.
        found: u64,
    },
    /// `prev_hash` is not the previous record's hash: the link is broken (a record was replaced
    /// with a re-hashed one, or the chain does not start where it should).
    PrevHashMismatch {
        /// The previous record's hash (or the expected start).
        expected: String,
        /// The `prev_hash` written in this record.
        found: String,
    },
    /// The first record checked has no `prev_hash` and no previous hash is known, so its hash
    /// cannot be checked: verify from the start of its file, or from an anchor.
    NoPrevHash,
    /// The file ends in the middle of a line (truncated).
    Truncated,
    /// The line is not an audit record.
    Malformed(String),
}

impl fmt::Display for VerifyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HashMismatch => f.write_str(
                "record was edited: its content does not match its hash (for a record without prev_hash: \
                 or the record before it was replaced)",
            ),
            Self::NoPrevHash => f.write_str(
                "record has no prev_hash and no previous record to chain to: verify from the start of its \
                 file or from an anchor",
            ),
            Self::SeqGap { expected, found } => {
                write!(f, "seq {found} where {expected} was expected: record(s) removed or reordered")
            }
            Self::SeqBackwards { expected, found } => {
                write!(f, "seq {found} where {expected} was expected: records reordered or replayed")
            }
            Self::PrevHashMismatch { expected, found } => {
                write!(f, "prev_hash {found} does not link to the previous record ({expected})")
            }
            Self::Truncated => f.write_str("file ends in the middle of a record (truncated)"),
            Self::Malformed(why) => write!(f, "not an audit record: {why}"),
        }
    }
}

/// The first broken place of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// File holding the broken record.
    pub file: PathBuf,
    /// 1-based line in that file.
    pub line: u64,
    /// The record's `seq`, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: VerifyReason,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if let Some(seq) = self.seq {
            write!(f, "seq {seq}: ")?;
        }
        write!(f, "{}", self.reason)
    }
}

/// Result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Intact, correctly linked records before the first error (all of them when none).
    pub records: u64,
    /// Files opened.
    pub files: usize,
    /// `seq` of the first record.
    pub first_seq: Option<u64>,
    /// `seq` of the last intact record.
    pub last_seq: Option<u64>,
    /// `hash` of the last intact record: compare it with an anchor to detect a cut-off tail.
    pub last_hash: Option<String>,
    /// The first broken link, if any.
    pub first_error: Option<VerifyError>,
}

impl VerifyReport {
    /// True when the chain is intact.
    pub fn is_ok(&self) -> bool {
        self.first_error.is_none()
    }
}

/// Verifies a chain that starts at genesis, spread over `paths` (oldest first; see [`discover`]).
/// `Err` only for files that cannot be read; chain problems are in
/// [`VerifyReport::first_error`].
pub fn verify(paths: &[PathBuf]) -> Result<VerifyReport, AuditError> {
    verify_with(paths, &VerifyStart::Genesis)
}

/// [`verify`] with a chosen start.
pub fn verify_with(paths: &[PathBuf], start: &VerifyStart) -> Result<VerifyReport, AuditError> {
    let (mut expect_seq, mut expect_prev) = match start {
        VerifyStart::Genesis => (Some(1), Some(GENESIS_HASH.to_owned())),
        VerifyStart::Any => (None, None),
        VerifyStart::After { seq, hash } => (Some(seq.saturating_add(1)), Some(hash.clone())),
    };
    let mut report = VerifyReport::default();
    let mut buf = Vec::new();
    for path in paths {
        report.files += 1;
        let f = File::open(path).map_err(|e| AuditError::io(path, e))?;
        let mut reader = BufReader::with_capacity(256 * 1024, f);
        let mut line_no = 0u64;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(|e| AuditError::io(path, e))? == 0 {
                break;
            }
            line_no += 1;
            let broken = |seq, reason| Some(VerifyError { file: path.clone(), line: line_no, seq, reason });
            let Some(line) = buf.strip_suffix(b"\n") else {
                let seq = check_line(&buf, None).ok().map(|c| c.seq);
                report.first_error = broken(seq, VerifyReason::Truncated);
                return Ok(report);
            };
            let c = match check_line(line, expect_prev.as_deref()) {
                Ok(c) => c,
                Err(why) => {
                    report.first_error = broken(None, VerifyReason::Malformed(why));
                    return Ok(report);
                }
            };
            let reason = match expect_seq {
                Some(expected) if c.seq > expected => Some(VerifyReason::SeqGap { expected, found: c.seq }),
                Some(expected) if c.seq < expected => Some(VerifyReason::SeqBackwards { expected, found: c.seq }),
                _ => match (c.hash_ok, &expect_prev, &c.prev_hash) {
                    (Some(false), _, _) => Some(VerifyReason::HashMismatch),
                    (None, _, _) => Some(VerifyReason::NoPrevHash),
                    (Some(true), Some(expected), Some(found)) if expected != found => {
                        Some(VerifyReason::PrevHashMismatch { expected: expected.clone(), found: found.clone() })
                    }
                    (Some(true), _, _) => None,
                },
            };
            if let Some(reason) = reason {
                report.first_error = broken(Some(c.seq), reason);
                return Ok(report);
            }
            report.records += 1;
            report.first_seq.get_or_insert(c.seq);
            report.last_seq = Some(c.seq);
            expect_seq = Some(c.seq.saturating_add(1));
            expect_prev = Some(c.hash.clone());
            report.last_hash = Some(c.hash);
        }
    }
    Ok(report)
}

/// The name a rotated file gets: `PATH.<stamp>` (`.N` appended for `n > 0`).
pub(crate) fn rotated_name(path: &Path, stamp: &str, n: u32) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(stamp);
    if n > 0 {
        name.push(format!(".{n}"));
    }
    path.with_file_name(name)
}

/// True for `YYYYMMDDTHHMMSS.mmmZ` optionally followed by `.N`.
fn is_rotation_suffix(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit));
    let stamp = b.len() >= 20 && digits(0..8) && b[8] == b'T' && digits(9..15) && b[15] == b'.' && digits(16..19);
    stamp && b[19] == b'Z' && (b.len() == 20 || (b[20] == b'.' && digits(21..b.len())))
}

/// `path` (if it exists) and its rotated siblings, oldest first: ordered by the `seq` of their
/// first record (files without a readable first record last, the live `path` after the rotated
/// ones), then by name. Pass the result to [`verify`].
pub fn discover(path: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Err(AuditError::Config(format!("{} does not name a file", path.display())));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let prefix = format!("{name}.");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| AuditError::io(&dir, e))? {
        let entry = entry.map_err(|e| AuditError::io(&dir, e))?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else { continue };
        if !entry.file_type().map_err(|e| AuditError::io(&dir, e))?.is_file() {
            continue;
        }
        let live = file_name == name;
        if !live && !file_name.strip_prefix(&prefix).is_some_and(is_rotation_suffix) {
            continue;
        }
        let full = path.with_file_name(file_name);
        let first = first_seq(&full)?;
        found.push((first.unwrap_or(u64::MAX), live, file_name.to_owned(), full));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, _, _, p)| p).collect())
}

fn first_seq(path: &Path) -> Result<Option<u64>, AuditError> {
    let f = File::open(path).map_err(|e| AuditError::io(path, e))?;
    let mut line = Vec::new();
    // Bounded: a file without newlines must not be read whole just to order it.
    BufReader::new(f.take(FIRST_LINE_MAX)).read_until(b'\n', &mut line).map_err(|e| AuditError::io(path, e))?;
    Ok(line.strip_suffix(b"\n").and_then(|l| check_line(l, None).ok()).map(|c| c.seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_suffixes() {
        assert!(is_rotation_suffix("20250131T120000.123Z"));
        assert!(is_rotation_suffix("20250131T120000.123Z.7"));
        assert!(!is_rotation_suffix("20250131T120000.123Z."));
        assert!(!is_rotation_suffix("20250131T120000.123"));
        assert!(!is_rotation_suffix("bak"));
        assert!(!is_rotation_suffix("20250131T120000.123Z.gz"));
        let p = rotated_name(Path::new("/x/audit.jsonl"), "20250131T120000.123Z", 2);
        assert_eq!(p, PathBuf::from("/x/audit.jsonl.20250131T120000.123Z.2"));
    }
}
