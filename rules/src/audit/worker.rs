//! The audit writer's threads: the writer drains the queue in bounded steps, and under
//! `writer_priority = "auto"` (default) it runs under Linux `SCHED_IDLE` beside a
//! normal-priority rescuer that takes the chain over whenever the idle writer falls behind.
//!
//! Why two threads: a `SCHED_IDLE` writer runs only on cores nothing else wants, so its bursts
//! never preempt the threads that relay traffic; but on a host without idle time it would
//! starve, and with `overflow = "block"` every session would slow to its pace. An unprivileged
//! thread cannot leave `SCHED_IDLE` again, so a second thread, at normal priority, watches the
//! backlog and, when records queued [`RESCUE_LAG`] ago are still unwritten (or written records
//! stay unflushed for twice [`FLUSH_INTERVAL`]), takes the [`Core`] lock and drains the queue
//! itself. The idle writer holds that lock for at most [`STEP_RECORDS`] records at a time, which
//! bounds how long a starved writer can keep the rescuer waiting.

use super::raw::RawBatch;
use super::writer::{Msg, Shared, State, FLUSH_INTERVAL};
use dgf_config::AuditWriterPriority;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// While events flow, the writer naps this long when the queue is empty...
const BUSY_NAP: Duration = Duration::from_millis(10);
/// ...this many times in a row before it goes back to a blocking wait.
const BUSY_NAPS: u32 = 10;
/// Records one step handles at most before it lets go of the [`Core`] lock (about 25 us of
/// work: what a starved idle writer may still owe when the rescuer wants the lock).
pub(crate) const STEP_RECORDS: usize = 64;
/// The rescuer looks at the backlog this often...
const RESCUE_TICK: Duration = Duration::from_millis(25);
/// ...and takes over when records queued this long ago are still not written. It then keeps
/// the writer's job this long, doubling on each rescue that follows another within a second,
/// up to [`MAX_HOLD`]: on a host that stays busy it stays the writer.
pub(crate) const RESCUE_LAG: Duration = Duration::from_millis(100);
const MAX_HOLD: Duration = Duration::from_secs(5);

/// What the threads share: the writer's state behind one lock, and the rescuer's signals.
pub(crate) struct Worker {
    core: Mutex<Core>,
    /// Set while the rescuer wants or holds the core: the idle writer keeps out of the way.
    rescuing: std::sync::atomic::AtomicBool,
    /// Set once the core is done (shutdown handled): both threads leave.
    stop: Mutex<bool>,
    stopped: Condvar,
    shared: Arc<Shared>,
}

/// The queue's receiving end and everything needed to drain it.
pub(crate) struct Core {
    state: State,
    rx: Receiver<Msg>,
    /// Unflushed records must reach the OS by then.
    deadline: Option<Instant>,
    /// A batch cut by the step limit, and how many of its records are done.
    partial: Option<(RawBatch, usize)>,
    /// The sink failed: what is still queued is counted as dropped.
    failed: bool,
    done: bool,
}

enum Step {
    /// Work left (the step limit was reached).
    More,
    /// The queue is empty; true when this step wrote something before it found it so.
    Empty(bool),
    /// Shutdown handled, or every sender is gone.
    Done,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("rescuing", &self.rescuing).finish_non_exhaustive()
    }
}

impl Worker {
    pub(crate) fn new(state: State, rx: Receiver<Msg>) -> Arc<Self> {
        let shared = Arc::clone(&state.shared);
        let core = Core { state, rx, deadline: None, partial: None, failed: false, done: false };
        Arc::new(Self {
            core: Mutex::new(core),
            rescuing: std::sync::atomic::AtomicBool::new(false),
            stop: Mutex::new(false),
            stopped: Condvar::new(),
            shared,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn stalled(&self) -> bool {
        self.shared.stall_idle.load(Ordering::Acquire)
    }

    #[cfg(not(test))]
    fn stalled(&self) -> bool {
        false
    }

    /// Let the rescuer go (the writer is done, or gone).
    pub(crate) fn finish(&self) {
        *self.stop.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.stopped.notify_all();
    }

    /// The writer thread: block while idle; while events flow, drain the queue without
    /// blocking and nap briefly when it is empty, so a busy proxy never pays a thread wake-up
    /// per event (a writer blocked in `recv` would be woken by every `send`).
    pub(crate) fn run_writer(&self, priority: AuditWriterPriority) {
        if matches!(priority, AuditWriterPriority::Idle | AuditWriterPriority::Auto) {
            set_idle_priority();
        }
        let got = current_priority();
        self.shared.policy.store(got as i32, Ordering::Release);
        let mut naps = 0;
        loop {
            while self.rescuing.load(Ordering::Acquire) || self.stalled() {
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut core = self.lock();
            if self.rescuing.load(Ordering::Acquire) {
                continue;
            }
            let step = core.step(naps >= BUSY_NAPS);
            drop(core);
            match step {
                Step::More => naps = 0,
                // Events flow: nap, then look again (no wake-up per event).
                Step::Empty(true) => {
                    naps = 1;
                    std::thread::sleep(BUSY_NAP);
                }
                Step::Empty(false) if naps < BUSY_NAPS => {
                    naps += 1;
                    std::thread::sleep(BUSY_NAP);
                }
                // Quiet: the next step blocks (it just did, up to the flush deadline).
                Step::Empty(false) => {}
                Step::Done => break,
            }
        }
        self.finish();
    }

    /// The rescuer thread (only beside an idle writer): drain the queue at normal priority
    /// whenever the writer lags.
    pub(crate) fn run_rescuer(&self) {
        let ticks_lag = (RESCUE_LAG.as_millis() / RESCUE_TICK.as_millis()) as usize;
        let ticks_flush = 2 * (FLUSH_INTERVAL.as_millis() / RESCUE_TICK.as_millis()) as usize;
        // (queued, taken) at each tick, newest last.
        let mut seen: std::collections::VecDeque<(u64, u64)> = std::collections::VecDeque::new();
        let calm_reset = (1000 / RESCUE_TICK.as_millis()) as usize;
        let (mut hold, mut calm) = (RESCUE_LAG, 0);
        let mut stop = self.stop.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            stop = match self.stopped.wait_timeout(stop, RESCUE_TICK) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
            if *stop {
                return;
            }
            let queued = self.shared.queued.load(Ordering::Acquire);
            let taken = self.shared.taken.load(Ordering::Acquire);
            let written = self.shared.written.load(Ordering::Acquire);
            seen.push_back((queued, taken));
            if seen.len() > ticks_flush + 1 {
                seen.pop_front();
            }
            let ago = |ticks: usize| seen.len().checked_sub(ticks + 1).and_then(|i| seen.get(i).copied());
            let behind = ago(ticks_lag).is_some_and(|(q, _)| taken < q);
            let unflushed = ago(ticks_flush).is_some_and(|(_, t)| written < t);
            if !(behind || unflushed) {
                calm += 1;
                if calm >= calm_reset {
                    hold = RESCUE_LAG;
                }
                continue;
            }
            calm = 0;
            drop(stop);
            if self.rescue(hold) {
                return;
            }
            hold = (hold * 2).min(MAX_HOLD);
            seen.clear();
            stop = self.stop.lock().unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Take the core from the idle writer and be the writer for `hold` (drain, nap, drain...),
    /// then flush and hand it back. True when the writer is done (shutdown handled).
    fn rescue(&self, hold: Duration) -> bool {
        self.rescuing.store(true, Ordering::Release);
        self.shared.rescues.fetch_add(1, Ordering::Relaxed);
        let until = Instant::now() + hold;
        let done = loop {
            let mut core = self.lock();
            let done = loop {
                match core.step(false) {
                    Step::More => {}
                    Step::Empty(_) => break false,
                    Step::Done => break true,
                }
            };
            if done || Instant::now() >= until {
                if !done {
                    core.flush_now();
                }
                break done;
            }
            drop(core);
            std::thread::sleep(BUSY_NAP);
        };
        self.rescuing.store(false, Ordering::Release);
        if done {
            self.finish();
        }
        done
    }
}

impl Core {
    /// Handle queued messages, up to [`STEP_RECORDS`] records. With `block`, wait for the first
    /// message (until the flush deadline, or for ever when nothing is unflushed).
    fn step(&mut self, block: bool) -> Step {
        if self.done {
            return Step::Done;
        }
        let mut budget = STEP_RECORDS;
        let mut first = true;
        let mut worked = false;
        while budget > 0 {
            let msg = if let Some((batch, from)) = self.partial.take() {
                Ok((Msg::Batch(batch), from))
            } else {
                match self.rx.try_recv() {
                    Ok(m) => Ok((m, 0)),
                    Err(TryRecvError::Empty) if block && first => self.wait(),
                    Err(TryRecvError::Empty) => Err(RecvTimeoutError::Timeout),
                    Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                }
            };
            first = false;
            #[cfg(test)]
            drop(self.state.shared.pause.lock().unwrap_or_else(PoisonError::into_inner));
            match msg {
                Ok((Msg::Shutdown, _)) | Err(RecvTimeoutError::Disconnected) => {
                    if !self.failed {
                        let closed = self.state.flush().and_then(|()| self.state.sync());
                        if let Err(e) = closed {
                            self.state.fail(e, 0);
                        }
                    }
                    self.done = true;
                    return Step::Done;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.flush_due();
                    return Step::Empty(worked);
                }
                Ok((m, from)) => {
                    budget = budget.saturating_sub(self.handle(m, from, budget));
                    worked = true;
                }
            }
            self.flush_due();
        }
        Step::More
    }

    /// Block for the next message while the queue is empty (flushing at the deadline).
    fn wait(&mut self) -> Result<(Msg, usize), RecvTimeoutError> {
        let got = match self.deadline {
            None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => self.rx.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        got.map(|m| (m, 0))
    }

    /// Write (or, after a failure, count as dropped) one message from record `from` on, at most
    /// `budget` records; returns the records handled. A cut batch is kept for the next step.
    fn handle(&mut self, m: Msg, from: usize, budget: usize) -> usize {
        let n = match m {
            Msg::Event(ev) => {
                if !self.failed {
                    if let Err(e) = self.state.write_event(*ev) {
                        self.failed = true;
                        self.state.fail(e, 1);
                    }
                } else {
                    self.state.shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
                1
            }
            Msg::Batch(b) => {
                let end = b.len().min(from + budget);
                if !self.failed {
                    if let Err((e, lost)) = self.state.write_batch(&b, from, end) {
                        self.failed = true;
                        // Everything of this batch not written is lost.
                        self.state.fail(e, lost + (b.len() - end) as u64);
                        self.state.shared.taken.fetch_add((b.len() - from) as u64, Ordering::Release);
                        return b.len() - from;
                    }
                } else {
                    self.state.shared.dropped.fetch_add((end - from) as u64, Ordering::Relaxed);
                }
                if end < b.len() {
                    self.partial = Some((b, end));
                } else {
                    self.state.shared.recycle(b);
                }
                end - from
            }
            Msg::Shutdown => 0,
        };
        self.state.shared.taken.fetch_add(n as u64, Ordering::Release);
        if self.deadline.is_none() && !self.failed {
            self.deadline = Some(Instant::now() + FLUSH_INTERVAL);
        }
        n.max(1)
    }

    /// Flush when the deadline has passed.
    fn flush_due(&mut self) {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.flush_now();
        }
    }

    fn flush_now(&mut self) {
        self.deadline = None;
        if self.failed {
            return;
        }
        if let Err(e) = self.state.flush() {
            self.failed = true;
            self.state.fail(e, 0);
        }
    }
}

/// Starts the writer thread (and, for an idle writer, the rescuer); returns their handles.
pub(crate) fn spawn(
    worker: &Arc<Worker>,
    priority: AuditWriterPriority,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let w = Arc::clone(worker);
    let writer = std::thread::Builder::new().name("dgf-audit".into()).spawn(move || w.run_writer(priority))?;
    let mut threads = vec![writer];
    if priority == AuditWriterPriority::Auto {
        let w = Arc::clone(worker);
        let rescuer = std::thread::Builder::new().name("dgf-audit-rescue".into()).spawn(move || {
            // Without SCHED_IDLE (refused, or not Linux) the writer needs no help.
            while w.shared.policy.load(Ordering::Acquire) < 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            if w.shared.policy.load(Ordering::Acquire) == AuditWriterPriority::Idle as i32 {
                w.run_rescuer();
            }
        });
        match rescuer {
            Ok(t) => threads.push(t),
            Err(e) => {
                worker.finish();
                return Err(e);
            }
        }
    }
    Ok(threads)
}

/// `SCHED_IDLE` for the calling thread (best effort: the thread stays as it is where the call
/// is refused or unsupported). Lowering one's own priority needs no privilege.
fn set_idle_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadSchedulePolicy,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        let _ = set_thread_priority_and_policy(thread_native_id(), thread_priority::ThreadPriority::Min, idle);
    }
}

/// The calling thread's policy: `Idle` under `SCHED_IDLE`, `Normal` otherwise.
fn current_priority() -> AuditWriterPriority {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{thread_schedule_policy, NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        if matches!(thread_schedule_policy(), Ok(ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle))) {
            return AuditWriterPriority::Idle;
        }
    }
    AuditWriterPriority::Normal
}
