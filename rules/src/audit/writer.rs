//! The audit writer: a bounded queue to one writer thread that chains, buffers, flushes and
//! rotates (resuming the chain of an existing file on start: resume.rs). It takes whole
//! [`AuditEvent`]s and batches of pre-rendered records ([`RawBatch`]) alike.

use super::chain::{seal, seal_raw};
use super::file::FileSink;
use super::raw::RawBatch;
use super::resume::{resume, Resume};
use super::worker::{spawn, Worker};
use super::{now_rfc3339, rfc3339_utc, AuditError, AuditEvent};
use dgf_config::{AuditConfig, AuditOverflow, AuditWriterPriority};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Queue length when `audit.queue` is not set.
pub const DEFAULT_QUEUE: usize = 65_536;
/// Rotation size when `audit.max_file_bytes` is not set: 100 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;
/// Buffered records reach the OS at most this long after they were written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

pub(crate) const WRITE_BUFFER: usize = 64 * 1024;
/// Emptied batch buffers kept for reuse, and the largest kept.
const SPARE_BATCHES: usize = 64;
const SPARE_BATCH_BYTES: usize = 256 << 10;

/// Counters and chain tip, as returned by [`AuditWriter::shutdown`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditStats {
    /// Records flushed to the sink.
    pub written: u64,
    /// Records lost: dropped on a full queue in `drop` mode, or not written after a failure.
    pub dropped: u64,
    /// `seq` of the last flushed record (0 = none yet).
    pub last_seq: u64,
    /// `hash` of the last flushed record ([`GENESIS_HASH`] when none yet).
    pub last_hash: String,
    /// Why the writer stopped early, if it did.
    pub failure: Option<String>,
}

pub(crate) enum Msg {
    Event(Box<AuditEvent>),
    Batch(RawBatch),
    Shutdown,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) written: AtomicU64,
    pub(crate) dropped: AtomicU64,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
    tip: Mutex<(u64, String)>,
    /// Records handed to the queue, and records taken off it (written or counted as lost):
    /// the rescuer's view of the backlog.
    pub(crate) queued: AtomicU64,
    pub(crate) taken: AtomicU64,
    /// Times the rescuer took over from an idle writer.
    pub(crate) rescues: AtomicU64,
    /// Rotated files deleted past `keep_rotated`.
    pub(crate) removed: AtomicU64,
    /// The writer thread's policy once it started (`AuditWriterPriority as i32`), -1 before.
    pub(crate) policy: AtomicI32,
    /// Emptied batch buffers handed back by the writer for callers to fill again: a busy
    /// session reuses warm memory instead of allocating (and faulting in) a buffer per batch.
    spare: Mutex<Vec<RawBatch>>,
    /// Tests hold this to stall the writer thread between messages.
    #[cfg(test)]
    pub(crate) pause: Mutex<()>,
    /// Tests set this to keep an idle writer off the CPU (as a busy host would).
    #[cfg(test)]
    pub(crate) stall_idle: AtomicBool,
}

impl Shared {
    fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Keep `batch`'s buffer for [`AuditWriter::batch`] (within [`SPARE_BATCHES`] buffers of
    /// at most [`SPARE_BATCH_BYTES`] each; others are freed).
    pub(crate) fn recycle(&self, mut batch: RawBatch) {
        if batch.capacity() > SPARE_BATCH_BYTES {
            return;
        }
        let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < SPARE_BATCHES {
            batch.clear();
            spare.push(batch);
        }
    }

    fn fail(&self, why: String) {
        let mut slot = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(why);
        self.failed.store(true, Ordering::Release);
    }
}

/// Hands audit events to a dedicated writer thread through a bounded queue.
///
/// Share it through an `Arc`; [`record`](Self::record) takes `&self` and may be called from any
/// number of threads. The writer thread assigns `seq`, `instance`, `prev_hash` and `hash` (and
/// `time` when empty), so callers never coordinate. Dropping the writer drains it like
/// [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct AuditWriter {
    tx: Option<SyncSender<Msg>>,
    /// The writer thread, then the rescuer (if any).
    threads: Vec<JoinHandle<()>>,
    worker: Option<Arc<Worker>>,
    shared: Arc<Shared>,
    drop_on_full: bool,
    notice: Option<String>,
}

impl AuditWriter {
    /// Opens the sink (continuing the chain of an existing file) and starts the writer thread.
    pub fn start(cfg: &AuditConfig, instance: &str) -> Result<AuditWriter, AuditError> {
        let queue = cfg.queue.unwrap_or(DEFAULT_QUEUE);
        let max = cfg.max_file_bytes.unwrap_or(DEFAULT_MAX_FILE_BYTES);
        if queue == 0 {
            return Err(AuditError::Config("queue must be >= 1".into()));
        }
        if max == 0 {
            return Err(AuditError::Config("max_file_bytes must be >= 1".into()));
        }
        if cfg.keep_rotated == Some(0) {
            return Err(AuditError::Config("keep_rotated must be >= 1".into()));
        }
        let to_stdout = match (cfg.sink.as_deref(), cfg.path.as_deref()) {
            (Some("stdout"), None | Some("-")) | (None | Some("file"), Some("-")) => true,
            (None | Some("file"), Some(_)) => false,
            (None | Some("file"), None) => {
                return Err(AuditError::Config("set path = \"FILE\" or sink = \"stdout\"".into()))
            }
            (Some("stdout"), Some(_)) => return Err(AuditError::Config("sink = \"stdout\" takes no path".into())),
            (Some(other), _) => {
                return Err(AuditError::Config(format!("sink `{other}` is not \"file\" or \"stdout\"")))
            }
        };
        let (sink, resume) = if to_stdout {
            (Sink::Stdout { buf: Vec::with_capacity(WRITE_BUFFER), fresh: true }, Resume::genesis())
        } else {
            let path = PathBuf::from(cfg.path.as_deref().unwrap_or_default());
            let resume = resume(&path)?;
            (Sink::File(FileSink::open(path, max, cfg.keep_rotated)?), resume)
        };
        let shared = Arc::new(Shared {
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            tip: Mutex::new((resume.seq, resume.hash.clone())),
            queued: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            rescues: AtomicU64::new(0),
            removed: AtomicU64::new(0),
            policy: AtomicI32::new(-1),
            spare: Mutex::new(Vec::new()),
            #[cfg(test)]
            pause: Mutex::new(()),
            #[cfg(test)]
            stall_idle: AtomicBool::new(false),
        });
        let mut instance_json = Vec::new();
        super::json::string(&mut instance_json, instance);
        let mut state = State {
            sink,
            seq: resume.seq,
            hash: resume.hash,
            prev: String::with_capacity(64),
            instance: instance.to_owned(),
            instance_json,
            line: Vec::with_capacity(1024),
            clock: (u64::MAX, String::new()),
            include_literals: cfg.include_literals,
            pending: 0,
            shared: Arc::clone(&shared),
        };
        if let Some(notice) = &resume.notice {
            let marker = AuditEvent {
                protocol: "dgf".into(),
                kind: "audit.recover".into(),
                decision: "recover".into(),
                objects: resume.set_aside.iter().map(|p| p.display().to_string()).collect(),
                error: Some(notice.clone()),
                ..AuditEvent::default()
            };
            state.write_event(marker)?;
            state.flush()?;
        }
        let (tx, rx) = sync_channel(queue);
        let worker = Worker::new(state, rx);
        let threads = spawn(&worker, cfg.writer_priority).map_err(AuditError::Spawn)?;
        Ok(AuditWriter {
            tx: Some(tx),
            threads,
            worker: Some(worker),
            shared,
            drop_on_full: cfg.overflow == AuditOverflow::Drop,
            notice: resume.notice,
        })
    }

    /// Queues one event. With overflow `block` (default) this waits while the queue is full
    /// (lossless backpressure); with `drop` a full queue drops the event and counts it.
    ///
    /// `Err(Stopped)` means the writer failed (disk error, closed stdout) and the event was not
    /// written — it is counted in [`dropped`](Self::dropped). A governing proxy should treat that
    /// as "audit unavailable" and fail closed.
    pub fn record(&self, ev: AuditEvent) -> Result<(), AuditError> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(self.lost());
        }
        self.send(Msg::Event(Box::new(ev)), 1)
    }

    /// An empty batch with room for at least `bytes` bytes, on a buffer the writer has emptied
    /// when one is spare (fill it and hand it to [`record_batch`](Self::record_batch)).
    pub fn batch(&self, bytes: usize) -> RawBatch {
        let spare = self.shared.spare.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match spare {
            Some(mut b) => {
                b.reserve(bytes);
                b
            }
            None => RawBatch::with_capacity(bytes),
        }
    }

    /// Queues a batch of pre-rendered records (one queue slot for all of them), with the same
    /// backpressure, drop and failure rules as [`record`](Self::record), counted per record.
    pub fn record_batch(&self, batch: RawBatch) -> Result<(), AuditError> {
        let n = batch.len() as u64;
        if n == 0 {
            return Ok(());
        }
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(self.lost_n(n));
        }
        self.send(Msg::Batch(batch), n)
    }

    fn send(&self, msg: Msg, n: u64) -> Result<(), AuditError> {
        let Some(tx) = &self.tx else { return Err(self.lost_n(n)) };
        let sent = if self.drop_on_full {
            match tx.try_send(msg) {
                Err(TrySendError::Full(_)) => {
                    self.shared.dropped.fetch_add(n, Ordering::Relaxed);
                    return Ok(());
                }
                other => other.is_ok(),
            }
        } else {
            tx.send(msg).is_ok()
        };
        if sent {
            self.shared.queued.fetch_add(n, Ordering::Release);
            Ok(())
        } else {
            Err(self.lost_n(n))
        }
    }

    fn lost(&self) -> AuditError {
        self.lost_n(1)
    }

    fn lost_n(&self, n: u64) -> AuditError {
        self.shared.dropped.fetch_add(n, Ordering::Relaxed);
        AuditError::Stopped(self.shared.failure().unwrap_or_else(|| "the writer thread is gone".into()))
    }

    /// Records flushed to the sink so far.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Records lost so far (full queue in `drop` mode, or after a writer failure).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Why the writer stopped, once it has.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// What was repaired on start (a damaged last line set aside), for the operator's log.
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// The scheduling the writer thread really runs under: `Idle` where `SCHED_IDLE` was asked
    /// for (`"idle"`, `"auto"`) and granted, `Normal` otherwise; None until it started.
    pub fn writer_priority(&self) -> Option<AuditWriterPriority> {
        [AuditWriterPriority::Normal, AuditWriterPriority::Idle]
            .into_iter()
            .find(|p| *p as i32 == self.shared.policy.load(Ordering::Acquire))
    }

    /// Waits (up to `timeout`) for the writer thread to start, then returns
    /// [`writer_priority`](Self::writer_priority).
    pub fn wait_writer_priority(&self, timeout: Duration) -> Option<AuditWriterPriority> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.writer_priority() {
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                got => return got,
            }
        }
    }

    /// Times the normal-priority rescuer took the chain over from an idle writer that lagged.
    pub fn rescues(&self) -> u64 {
        self.shared.rescues.load(Ordering::Relaxed)
    }

    /// Rotated audit files deleted because more than `keep_rotated` were beside the live one.
    pub fn removed_files(&self) -> u64 {
        self.shared.removed.load(Ordering::Relaxed)
    }

    /// `(seq, hash)` of the last flushed record: anchor it elsewhere to detect tail truncation.
    pub fn tip(&self) -> (u64, String) {
        self.shared.tip.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Writes every queued event, flushes and syncs the file, and stops the thread.
    pub fn shutdown(mut self) -> AuditStats {
        self.finish();
        let (last_seq, last_hash) = self.tip();
        AuditStats { written: self.written(), dropped: self.dropped(), last_seq, last_hash, failure: self.failure() }
    }

    fn finish(&mut self) {
        if let Some(tx) = self.tx.take() {
            // Err only when the thread is already gone; joining reports why.
            let _ = tx.send(Msg::Shutdown);
        }
        let mut threads = std::mem::take(&mut self.threads).into_iter();
        if let Some(writer) = threads.next() {
            if writer.join().is_err() {
                self.shared.fail("the audit writer thread panicked".into());
            }
        }
        // The writer lets the rescuer go when it is done; if it panicked, do it here.
        if let Some(worker) = self.worker.take() {
            worker.finish();
        }
        for t in threads {
            if t.join().is_err() {
                self.shared.fail("the audit rescuer thread panicked".into());
            }
        }
    }
}

#[cfg(test)]
impl AuditWriter {
    /// Stalls the writer thread (before its next message) while the guard lives.
    pub(crate) fn pause(&self) -> std::sync::MutexGuard<'_, ()> {
        self.shared.pause.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps an idle writer from taking the next step (the rescuer is not stalled).
    pub(crate) fn stall_idle_writer(&self, on: bool) {
        self.shared.stall_idle.store(on, Ordering::Release);
    }

    /// The threads behind this writer (writer, rescuer).
    pub(crate) fn threads_for_test(&self) -> usize {
        self.threads.len()
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The writer thread's state.
pub(crate) struct State {
    sink: Sink,
    seq: u64,
    hash: String,
    /// The hash before the record being sealed (to seal it again after a rotation).
    prev: String,
    instance: String,
    /// `instance` as a JSON string.
    instance_json: Vec<u8>,
    /// Line buffer of raw records.
    line: Vec<u8>,
    /// The last raw record's millisecond and its RFC 3339 text.
    clock: (u64, String),
    include_literals: bool,
    /// Records written to the buffer since the last flush.
    pending: u64,
    pub(crate) shared: Arc<Shared>,
}

impl State {
    /// The sink failed: count what is lost (`lost` plus the records buffered since the last
    /// flush) and record why; [`AuditWriter::record`] refuses from now on.
    pub(crate) fn fail(&mut self, e: AuditError, lost: u64) {
        self.shared.dropped.fetch_add(lost + std::mem::take(&mut self.pending), Ordering::Relaxed);
        self.shared.fail(e.to_string());
    }

    pub(crate) fn write_event(&mut self, mut ev: AuditEvent) -> Result<(), AuditError> {
        ev.seq = self.seq + 1;
        ev.prev_hash.clear();
        if self.sink.at_start() {
            ev.prev_hash.clone_from(&self.hash);
        }
        ev.instance.clone_from(&self.instance);
        if ev.time.is_empty() {
            ev.time = now_rfc3339();
        }
        if !self.include_literals {
            ev.statement = None;
        }
        let mut sealed = seal(&mut ev, &self.hash);
        if let Ok((line, _)) = &sealed {
            if ev.prev_hash.is_empty() && self.sink.must_rotate(line.len()) {
                self.rotate()?;
                ev.prev_hash.clone_from(&self.hash);
                sealed = seal(&mut ev, &self.hash);
            }
        }
        let (line, hash) = match sealed {
            Ok(sealed) => sealed,
            Err(_) => {
                // Cannot happen for this struct; if it ever does, lose one event, not the log.
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        };
        self.sink.write_line(&line)?;
        self.seq = ev.seq;
        self.hash = hash;
        self.pending += 1;
        Ok(())
    }

    /// Chain and write records `from..end` of `batch`; on error, the records of that range
    /// not written.
    pub(crate) fn write_batch(&mut self, batch: &RawBatch, from: usize, end: usize) -> Result<(), (AuditError, u64)> {
        let mut left = end.saturating_sub(from) as u64;
        for (millis, fields) in batch.records().skip(from).take(end.saturating_sub(from)) {
            if self.clock.0 != millis {
                self.clock = (millis, rfc3339_utc(UNIX_EPOCH + Duration::from_millis(millis)));
            }
            let seq = self.seq + 1;
            let first = self.sink.at_start();
            self.prev.clone_from(&self.hash);
            seal_raw(&mut self.line, &self.clock.1, seq, &self.instance_json, fields, first, &mut self.hash);
            if !first && self.sink.must_rotate(self.line.len()) {
                self.rotate().map_err(|e| (e, left))?;
                self.hash.clone_from(&self.prev);
                seal_raw(&mut self.line, &self.clock.1, seq, &self.instance_json, fields, true, &mut self.hash);
            }
            self.sink.write_line(&self.line).map_err(|e| (e, left))?;
            self.seq = seq;
            self.pending += 1;
            left -= 1;
        }
        Ok(())
    }

    /// Rotates the sink and counts the old rotated files that went with it.
    fn rotate(&mut self) -> Result<(), AuditError> {
        let removed = self.sink.rotate()?;
        self.shared.removed.fetch_add(removed, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<(), AuditError> {
        self.sink.flush()?;
        self.shared.written.fetch_add(std::mem::take(&mut self.pending), Ordering::Relaxed);
        let mut tip = self.shared.tip.lock().unwrap_or_else(PoisonError::into_inner);
        tip.0 = self.seq;
        tip.1.clone_from(&self.hash);
        Ok(())
    }

    pub(crate) fn sync(&mut self) -> Result<(), AuditError> {
        match &mut self.sink {
            Sink::File(f) => f.sync(),
            Sink::Stdout { .. } => Ok(()),
        }
    }
}

enum Sink {
    /// Whole lines buffered here and written under the stdout lock, so that other writers to
    /// stdout (logs) can never land in the middle of a record. `fresh` until the first line.
    Stdout {
        buf: Vec<u8>,
        fresh: bool,
    },
    File(FileSink),
}

impl Sink {
    /// Whether the next line is the first of its file (it then carries `prev_hash`).
    fn at_start(&self) -> bool {
        match self {
            Sink::Stdout { fresh, .. } => *fresh,
            Sink::File(f) => f.size == 0,
        }
    }

    /// Whether a line of `len` bytes must start a fresh file: call [`rotate`](Self::rotate)
    /// and seal it again as a first line.
    fn must_rotate(&self, len: usize) -> bool {
        match self {
            Sink::Stdout { .. } => false,
            Sink::File(f) => f.size > 0 && f.size + len as u64 > f.max,
        }
    }

    /// Rotates a file sink; returns the old rotated files deleted past `keep_rotated`.
    fn rotate(&mut self) -> Result<u64, AuditError> {
        match self {
            Sink::Stdout { .. } => Ok(0),
            Sink::File(f) => f.rotate(),
        }
    }

    fn write_line(&mut self, line: &[u8]) -> Result<(), AuditError> {
        match self {
            Sink::Stdout { buf, fresh } => {
                *fresh = false;
                buf.extend_from_slice(line);
                if buf.len() >= WRITE_BUFFER {
                    flush_stdout(buf)?;
                }
                Ok(())
            }
            Sink::File(f) => f.write_line(line),
        }
    }

    fn flush(&mut self) -> Result<(), AuditError> {
        match self {
            Sink::Stdout { buf, .. } => flush_stdout(buf),
            Sink::File(f) => f.out.flush().map_err(|e| AuditError::io(&f.path, e)),
        }
    }
}

fn flush_stdout(buf: &mut Vec<u8>) -> Result<(), AuditError> {
    let mut out = std::io::stdout().lock();
    out.write_all(buf).and_then(|()| out.flush()).map_err(|e| AuditError::io("<stdout>", e))?;
    buf.clear();
    Ok(())
}
