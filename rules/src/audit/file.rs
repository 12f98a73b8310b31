//! The audit file sink: appends lines through a write buffer, rotates the file aside when it
//! is full (the chain goes on in the next file), and writes behind.
//!
//! Write-behind: hands written chunks to the disk early and lets the kernel drop them from the
//! page cache, so a busy writer keeps reusing the same few warm pages instead of filling fresh
//! ones.
//!
//! Why: an audit file is written once and rarely read back, yet every byte of it would stay
//! in the page cache until memory pressure evicts it, and each new page is one the kernel must
//! first allocate. On virtual machines whose host takes free guest memory back (free page
//! reporting, ballooning), first-touch pages are several times slower to fill: measured on the
//! 2-core test VM, the copy into fresh page-cache pages was 63% of the audit writer's CPU at
//! 650k records/s, and the writer took 0.83 of a core; with write-behind, 0.40
//! (docs/benchmarks.md).
//!
//! How (Linux; a no-op elsewhere): each time another [`CHUNK`] has reached the file,
//! `posix_fadvise(POSIX_FADV_DONTNEED)` is called over the chunks written since the previous
//! call *and* the ones that call covered. On Linux that advice starts writeback of dirty pages
//! in the range without waiting, and drops the pages that are already clean; so a chunk is
//! sent to the disk by the first call that covers it and leaves the cache at the second, once
//! its writeback is done. Nothing waits for the disk (no `fsync` here: durability stays as
//! [`FLUSH_INTERVAL`](super::writer::FLUSH_INTERVAL) and rotation define it), and an advice
//! that fails changes nothing but the cache.

use super::verify::{discover, rotated_name};
use super::writer::WRITE_BUFFER;
use super::{file_stamp, AuditError};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The audit file being appended to, and its size (buffered bytes included).
pub(crate) struct FileSink {
    pub(crate) path: PathBuf,
    pub(crate) out: BufWriter<File>,
    pub(crate) size: u64,
    pub(crate) max: u64,
    /// Rotated files kept beside the live one (None: all).
    keep: Option<u32>,
    behind: WriteBehind,
}

impl FileSink {
    pub(crate) fn open(path: PathBuf, max: u64, keep: Option<u32>) -> Result<Self, AuditError> {
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| AuditError::io(&path, e))?;
        let size = file.metadata().map_err(|e| AuditError::io(&path, e))?.len();
        let behind = WriteBehind::new(size);
        Ok(Self { out: BufWriter::with_capacity(WRITE_BUFFER, file), path, size, max, keep, behind })
    }

    /// Appends a line (the writer rotates first when the line would not fit).
    pub(crate) fn write_line(&mut self, line: &[u8]) -> Result<(), AuditError> {
        self.out.write_all(line).map_err(|e| AuditError::io(&self.path, e))?;
        self.size += line.len() as u64;
        let written = self.size - self.out.buffer().len() as u64;
        self.behind.after_write(self.out.get_ref(), written);
        Ok(())
    }

    pub(crate) fn sync(&mut self) -> Result<(), AuditError> {
        self.out.flush().map_err(|e| AuditError::io(&self.path, e))?;
        self.out.get_ref().sync_data().map_err(|e| AuditError::io(&self.path, e))
    }

    /// Renames the full file aside and continues in a fresh one; the chain state lives in
    /// the writer's state, so the next record links to the last one of the renamed file.
    /// Then deletes the oldest rotated files past `keep`; returns how many went.
    pub(crate) fn rotate(&mut self) -> Result<u64, AuditError> {
        self.sync()?;
        // Synced: every page of the full file is clean and may leave the cache.
        advise(self.out.get_ref(), 0, 0);
        set_aside(&self.path)?;
        *self = Self::open(self.path.clone(), self.max, self.keep)?;
        Ok(self.keep.map_or(0, |keep| prune(&self.path, keep)))
    }
}

/// Deletes the oldest rotated siblings of `path` (in chain order, see [`discover`]) until
/// `keep` are left; returns how many were deleted. Best effort: the records go on whatever
/// happens here, and a file that could not be deleted is tried again at the next rotation.
fn prune(path: &Path, keep: u32) -> u64 {
    let Ok(files) = discover(path) else { return 0 };
    let rotated: Vec<&PathBuf> = files.iter().filter(|p| p.as_path() != path).collect();
    let excess = rotated.len().saturating_sub(keep as usize);
    rotated.iter().take(excess).filter(|p| std::fs::remove_file(p).is_ok()).count() as u64
}

/// Renames `path` to a free rotated name and returns that name.
pub(crate) fn set_aside(path: &Path) -> Result<PathBuf, AuditError> {
    let stamp = file_stamp(SystemTime::now());
    let mut n = 0u32;
    loop {
        let candidate = rotated_name(path, &stamp, n);
        if !candidate.exists() {
            std::fs::rename(path, &candidate).map_err(|e| AuditError::io(path, e))?;
            return Ok(candidate);
        }
        n += 1;
    }
}

/// Bytes between two advices.
pub(crate) const CHUNK: u64 = 4 << 20;

/// Where the write-behind of one file stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriteBehind {
    /// Start of the range the next advice covers (the chunks the last advice only started).
    from: u64,
    /// End of the range the last advice covered (a multiple of [`CHUNK`]).
    to: u64,
}

impl WriteBehind {
    /// For a file that already holds `size` bytes (appends go after them).
    pub(crate) fn new(size: u64) -> Self {
        let at = size - size % CHUNK;
        Self { from: at, to: at }
    }

    /// The range to advise now that `written` bytes of the file have reached the kernel
    /// (buffered bytes not counted), if a new chunk is complete; updates the state.
    pub(crate) fn due(&mut self, written: u64) -> Option<(u64, u64)> {
        let end = written - written % CHUNK;
        if end < self.to + CHUNK {
            return None;
        }
        let range = (self.from, end - self.from);
        (self.from, self.to) = (self.to, end);
        Some(range)
    }

    /// Advise the kernel for `file` when a new chunk is complete (see the module docs).
    pub(crate) fn after_write(&mut self, file: &File, written: u64) {
        if let Some((offset, len)) = self.due(written) {
            advise(file, offset, len);
        }
    }
}

#[cfg(target_os = "linux")]
/// `len` 0: to the end of the file.
fn advise(file: &File, offset: u64, len: u64) {
    use rustix::fs::{fadvise, Advice};
    // Best effort: a refused advice leaves the pages cached, as without it.
    let _ = fadvise(file, offset, std::num::NonZeroU64::new(len), Advice::DontNeed);
}

#[cfg(not(target_os = "linux"))]
fn advise(_: &File, _: u64, _: u64) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_chunk_is_advised_twice_then_left_alone() {
        let mut w = WriteBehind::new(0);
        assert_eq!(w.due(CHUNK - 1), None, "no complete chunk yet");
        assert_eq!(w.due(CHUNK), Some((0, CHUNK)), "first chunk: writeback starts");
        assert_eq!(w.due(CHUNK + 10), None);
        // The second advice covers the first chunk again (now clean: dropped) and the new one.
        assert_eq!(w.due(2 * CHUNK + 5), Some((0, 2 * CHUNK)));
        // Several chunks at once (a large batch): one advice over all of them.
        assert_eq!(w.due(5 * CHUNK), Some((CHUNK, 4 * CHUNK)));
        assert_eq!(w.due(6 * CHUNK), Some((2 * CHUNK, 4 * CHUNK)));
    }

    #[test]
    fn an_existing_file_starts_at_its_last_whole_chunk() {
        let mut w = WriteBehind::new(3 * CHUNK + 100);
        assert_eq!(w.due(4 * CHUNK - 1), None);
        assert_eq!(w.due(4 * CHUNK), Some((3 * CHUNK, CHUNK)));
    }

    #[test]
    fn advised_pages_keep_their_content() {
        use std::io::{Read, Seek, Write};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut f = File::options().create(true).read(true).append(true).open(&path).unwrap();
        let mut w = WriteBehind::new(0);
        let line = [b'x'; 1000];
        let mut written = 0u64;
        while written < 3 * CHUNK {
            f.write_all(&line).unwrap();
            written += line.len() as u64;
            w.after_write(&f, written);
        }
        let mut back = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut back).unwrap();
        assert_eq!(back.len() as u64, written);
        assert!(back.iter().all(|&b| b == b'x'));
    }
}
