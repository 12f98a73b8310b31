//! Where a file sink's chain continues on start: the last record of the file (or of its newest
//! rotated sibling), with a damaged last line set aside and reported, never silently skipped.

use super::chain::{check_line, GENESIS_HASH};
use super::file::set_aside;
use super::verify::discover;
use super::writer::WRITE_BUFFER;
use super::AuditError;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A last line longer than this is treated as damaged when resuming.
const MAX_TAIL_LINE: u64 = 64 * 1024 * 1024;

/// Where the chain continues.
pub(crate) struct Resume {
    pub seq: u64,
    pub hash: String,
    pub notice: Option<String>,
    pub set_aside: Option<PathBuf>,
}

impl Resume {
    pub fn genesis() -> Self {
        Self { seq: 0, hash: GENESIS_HASH.into(), notice: None, set_aside: None }
    }
}

/// Finds the chain tip for a file sink at `path`: its last record, or the newest rotated
/// sibling's when it is empty or missing. A damaged last line is never silently skipped.
pub(crate) fn resume(path: &Path) -> Result<Resume, AuditError> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(AuditError::io(path, e)),
    };
    if len > 0 {
        return match tail(path)? {
            Ok((seq, hash)) => Ok(Resume { seq, hash, notice: None, set_aside: None }),
            Err(why) => {
                let good = last_intact(path)?;
                let aside = set_aside(path)?;
                Ok(damaged(&aside, &why, good, Some(aside.clone())))
            }
        };
    }
    let siblings = discover(path)?;
    let Some(newest) = siblings.iter().rev().find(|p| p.as_path() != path) else {
        return Ok(Resume::genesis());
    };
    match tail(newest)? {
        Ok((seq, hash)) => Ok(Resume { seq, hash, notice: None, set_aside: None }),
        Err(why) => Ok(damaged(newest, &why, last_intact(newest)?, None)),
    }
}

fn damaged(file: &Path, why: &str, good: Option<(u64, String)>, set_aside: Option<PathBuf>) -> Resume {
    let moved = if set_aside.is_some() { " (moved aside)" } else { "" };
    let (seq, hash, from) = match good {
        Some((seq, hash)) => (seq, hash, format!("continues from its last intact record, seq {seq}")),
        None => (0, GENESIS_HASH.to_owned(), "has no intact record: the chain restarts at genesis".to_owned()),
    };
    let notice = format!("audit file {}{moved} ends with a damaged record ({why}); the chain {from}", file.display());
    Resume { seq, hash, notice: Some(notice), set_aside }
}

/// `Ok(Ok((seq, hash)))` when the last line of `path` is a complete record matching its hash
/// (checked against the line before it when it has no `prev_hash` of its own), `Ok(Err(why))`
/// when it is damaged.
fn tail(path: &Path) -> Result<Result<(u64, String), String>, AuditError> {
    let io = |e| AuditError::io(path, e);
    let mut f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok(Err("the file is empty".into()));
    }
    let mut last = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1)).map_err(io)?;
    f.read_exact(&mut last).map_err(io)?;
    if last[0] != b'\n' {
        return Ok(Err("the last line is incomplete (truncated write)".into()));
    }
    // Walk back from the final newline over the last two lines.
    let end = len - 1;
    let mut start = end;
    let mut newlines = 0;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    while start > 0 {
        if end - start > 2 * MAX_TAIL_LINE {
            return Ok(Err("the last line is implausibly long".into()));
        }
        let from = start.saturating_sub(WRITE_BUFFER as u64);
        let mut chunk = vec![0u8; (start - from) as usize];
        f.seek(SeekFrom::Start(from)).map_err(io)?;
        f.read_exact(&mut chunk).map_err(io)?;
        let mut cut = None;
        for (i, _) in chunk.iter().enumerate().rev().filter(|(_, &b)| b == b'\n') {
            newlines += 1;
            if newlines == 2 {
                cut = Some(i);
                break;
            }
        }
        if let Some(i) = cut {
            chunks.push(chunk.split_off(i + 1));
            break;
        }
        chunks.push(chunk);
        start = from;
    }
    let text: Vec<u8> = chunks.into_iter().rev().flatten().collect();
    let (before, line) = match text.iter().rposition(|&b| b == b'\n') {
        Some(i) => (Some(&text[..i]), &text[i + 1..]),
        None => (None, &text[..]),
    };
    if line.len() as u64 > MAX_TAIL_LINE {
        return Ok(Err("the last line is implausibly long".into()));
    }
    let prev = before.and_then(|b| check_line(b, None).ok()).map(|c| c.hash);
    Ok(match check_line(line, prev.as_deref()) {
        Ok(c) if c.hash_ok == Some(true) => Ok((c.seq, c.hash)),
        Ok(c) if c.hash_ok.is_none() => {
            Err("the last record has no prev_hash and the line before it is not a record".into())
        }
        Ok(_) => Err("the last record does not match its hash".into()),
        Err(why) => Err(format!("the last line is malformed: {why}")),
    })
}

/// `(seq, hash)` of the last complete line of `path` that matches its hash (its own
/// `prev_hash`, or the hash of the line before it).
fn last_intact(path: &Path) -> Result<Option<(u64, String)>, AuditError> {
    let f = File::open(path).map_err(|e| AuditError::io(path, e))?;
    let mut reader = BufReader::new(f);
    let mut line = Vec::new();
    let mut good = None;
    let mut prev: Option<String> = None;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(|e| AuditError::io(path, e))? == 0 {
            return Ok(good);
        }
        let Some(complete) = line.strip_suffix(b"\n") else { return Ok(good) };
        match check_line(complete, prev.as_deref()) {
            Ok(c) => {
                if c.hash_ok == Some(true) {
                    good = Some((c.seq, c.hash.clone()));
                }
                prev = Some(c.hash);
            }
            Err(_) => prev = None,
        }
    }
}
