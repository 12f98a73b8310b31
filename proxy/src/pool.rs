//! A small connection pool shared by every protocol: idle list, FIFO waiter queue, a guard that
//! returns its connection on drop, and a hard cap on open connections that is never exceeded.
//!
//! Accounting: `open` counts every connection that exists or is being created (idle, checked
//! out, connecting). Each unit of `open` is owned by exactly one [`Slot`] (or by an idle entry).
//! Dropping a slot hands its unit to the oldest live waiter or shrinks `open`, so a cancelled
//! waiter or a failed session cannot leak capacity.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Weak;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a pool needs to know about its connections.
pub trait Manager: Send + Sync + 'static {
    /// The connection type.
    type Conn: Send + 'static;
    /// Connect errors.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Open and log in a new connection.
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, Self::Error>> + Send;
    /// Cheap synchronous liveness probe (socket not closed, no unexpected bytes).
    fn is_alive(&self, conn: &mut Self::Conn) -> bool;
    /// Round-trip health check for connections that sat idle a while.
    fn check(&self, conn: &mut Self::Conn) -> impl Future<Output = bool> + Send;
}

/// Pool limits; they can change on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Hard cap on open connections.
    pub max: usize,
    /// Connections kept open when idle.
    pub min_idle: usize,
    /// Longest a checkout waits.
    pub wait_timeout: Duration,
    /// Idle connections unused this long are closed (None: never).
    pub idle_timeout: Option<Duration>,
    /// Connections older than this are closed instead of reused (None: never).
    pub max_lifetime: Option<Duration>,
    /// Connect + login timeout.
    pub connect_timeout: Duration,
    /// Idle time after which a checkout runs the round-trip check first.
    pub check_after: Duration,
}

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError<E: std::error::Error + 'static> {
    /// Waited `wait_timeout` without getting a connection.
    #[error("timed out after {0:?} waiting for a server connection")]
    Timeout(Duration),
    /// Opening a new connection failed.
    #[error("{0}")]
    Connect(#[source] E),
    /// Opening a new connection took longer than `connect_timeout`.
    #[error("timed out connecting to the upstream server")]
    ConnectTimeout,
    /// The pool was closed (route removed or process shutting down).
    #[error("pool is closed")]
    Closed,
    /// The client cancelled its statement while it waited (set by the caller, not the pool).
    #[error("cancelled while waiting for a server connection")]
    Cancelled,
}

/// Numbers for /metrics and /pools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Open connections (idle + active + connecting).
    pub open: usize,
    /// Idle connections.
    pub idle: usize,
    /// Checked-out connections.
    pub active: usize,
    /// Connections being opened.
    pub connecting: usize,
    /// Clients waiting for a connection.
    pub waiting: usize,
    /// Cap.
    pub max: usize,
    /// Connections ever opened.
    pub opened_total: u64,
    /// Connections ever closed.
    pub closed_total: u64,
}

struct Idle<C> {
    conn: C,
    created: Instant,
    since: Instant,
}

enum Handoff<M: Manager> {
    /// A connection, and how many bytes the waiter's prelude wrote to it.
    Conn(Pooled<M>, usize),
    Permit(Slot<M>),
    /// The wait timed out (sent by the pool's reaper).
    Expired,
}

struct State<M: Manager> {
    idle: VecDeque<Idle<M::Conn>>,
    open: usize,
    waiters: VecDeque<Waiter<M>>,
    /// A reaper task is running for this pool's waiters.
    reaping: bool,
    closed: bool,
    opened_total: u64,
    closed_total: u64,
}

struct Inner<M: Manager> {
    manager: M,
    settings: Mutex<PoolSettings>,
    state: Mutex<State<M>>,
    waiting: AtomicUsize,
    connecting: AtomicUsize,
    /// Entries in `State::waiters` (mirrored for lock-free reads by lazy holders).
    queued: AtomicUsize,
    /// The pool was closed, or holds more connections than its (reloaded) cap.
    shrink: AtomicBool,
    /// `max_lifetime` in milliseconds (0: none), mirrored for lock-free reads.
    max_lifetime_ms: AtomicU64,
    /// Sessions keeping a connection between requests (see [`Pooled::until_wanted`]): woken
    /// when a checkout starts waiting, the pool closes or its limits change.
    holders: Mutex<Vec<Weak<Holder>>>,
    /// Bumped by [`Pool::retire_all`], under the state lock (so `put_back` and the idle list
    /// agree on it); read without the lock by lazy holders.
    generation: AtomicU64,
}

/// What [`Pool::retire_all`] bumps: a connection opened before is closed when it comes back.
type Generation = u64;

/// The wake-up slot of one lazily held connection.
#[derive(Default)]
struct Holder {
    waker: Mutex<Option<Waker>>,
}

/// A pool of connections made by `M`. Cloning shares the pool.
pub struct Pool<M: Manager> {
    inner: Arc<Inner<M>>,
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

/// Ownership of one unit of pool capacity.
struct Slot<M: Manager> {
    inner: Option<Arc<Inner<M>>>,
}

impl<M: Manager> Slot<M> {
    fn new(inner: &Arc<Inner<M>>) -> Self {
        Self { inner: Some(inner.clone()) }
    }
    /// Give up ownership without releasing the unit (it moved elsewhere).
    fn disarm(mut self) {
        self.inner = None;
    }
}

impl<M: Manager> Drop for Slot<M> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.release_unit();
        }
    }
}

/// A checked-out connection; returns to the pool when dropped unless marked broken.
pub struct Pooled<M: Manager> {
    conn: Option<M::Conn>,
    created: Instant,
    broken: bool,
    slot: Option<Slot<M>>,
    /// Registered in the pool's holder list once a session keeps this connection idle.
    holder: std::sync::OnceLock<Arc<Holder>>,
    /// The pool's generation when it was opened (see [`Pool::retire_all`]).
    generation: Generation,
}

impl<M: Manager> Pooled<M> {
    /// Close this connection on drop instead of reusing it.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }
    /// Whether it was marked broken.
    pub fn is_broken(&self) -> bool {
        self.broken
    }
    /// When the connection was opened.
    pub fn created(&self) -> Instant {
        self.created
    }
    /// The pool's generation when it was opened ([`Pool::retire_generation`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the pool wants this connection back now: a checkout is waiting, the pool was
    /// closed or shrunk by a reload, or the connection outlived `max_lifetime`. Sessions that
    /// keep a clean connection between requests ("lazy release") ask this at the end of every
    /// request; it costs a few atomic loads.
    pub fn wanted(&self) -> bool {
        let Some(inner) = self.slot.as_ref().and_then(|s| s.inner.as_ref()) else { return true };
        if inner.queued.load(Ordering::Acquire) > 0
            || inner.shrink.load(Ordering::Acquire)
            || inner.generation.load(Ordering::Acquire) > self.generation
        {
            return true;
        }
        let life = inner.max_lifetime_ms.load(Ordering::Relaxed);
        life != 0 && self.created.elapsed() >= Duration::from_millis(life)
    }

    /// Resolves once [`wanted`](Self::wanted) is true (checked again after every wake-up), for
    /// a session that keeps this connection while its client is idle. Registering costs a
    /// small uncontended lock per wait (the pool's holder list is touched once per checkout).
    pub async fn until_wanted(&self) {
        let Some(inner) = self.slot.as_ref().and_then(|s| s.inner.as_ref()) else { return };
        let holder = self.holder.get_or_init(|| {
            let h = Arc::new(Holder::default());
            let mut list = inner.holders.lock().unwrap_or_else(|p| p.into_inner());
            list.retain(|w| w.strong_count() > 0);
            list.push(Arc::downgrade(&h));
            h
        });
        let this = self;
        let life = inner.max_lifetime_ms.load(Ordering::Relaxed);
        let wait = std::future::poll_fn(|cx| {
            if this.wanted() {
                return Poll::Ready(());
            }
            {
                let mut slot = holder.waker.lock().unwrap_or_else(|p| p.into_inner());
                match slot.as_ref() {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *slot = Some(cx.waker().clone()),
                }
            }
            if this.wanted() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        if life == 0 {
            wait.await;
        } else {
            let left = Duration::from_millis(life).saturating_sub(self.created.elapsed());
            let _ = tokio::time::timeout(left, wait).await;
        }
    }

    fn into_parts(mut self) -> (M::Conn, Instant, Slot<M>, Generation) {
        let conn = self.conn.take().expect("present until drop");
        let slot = self.slot.take().expect("present until drop");
        (conn, self.created, slot, self.generation)
    }
}

impl<M: Manager> std::ops::Deref for Pooled<M> {
    type Target = M::Conn;
    fn deref(&self) -> &M::Conn {
        self.conn.as_ref().expect("present until drop")
    }
}

impl<M: Manager> std::ops::DerefMut for Pooled<M> {
    fn deref_mut(&mut self) -> &mut M::Conn {
        self.conn.as_mut().expect("present until drop")
    }
}

impl<M: Manager> Drop for Pooled<M> {
    fn drop(&mut self) {
        let (Some(conn), Some(slot)) = (self.conn.take(), self.slot.take()) else { return };
        if self.broken {
            drop(conn);
            drop(slot);
            return;
        }
        let Some(inner) = slot.inner.clone() else { return };
        inner.put_back(conn, self.created, slot, None, self.generation);
    }
}

impl<M: Manager> Inner<M> {
    fn state(&self) -> MutexGuard<'_, State<M>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn settings(&self) -> PoolSettings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A unit of capacity became free: the oldest live waiter may connect with it; otherwise
    /// `open` shrinks.
    fn release_unit(self: Arc<Self>) {
        let max = self.settings().max;
        let mut st = self.state();
        if !st.closed && st.open <= max {
            while let Some(w) = st.waiters.pop_front() {
                self.queued.store(st.waiters.len(), Ordering::Release);
                match w.tx.send(Handoff::Permit(Slot::new(&self))) {
                    Ok(()) => return,
                    Err(Handoff::Permit(s)) => s.disarm(),
                    Err(_) => unreachable!("sent a permit"),
                }
            }
        }
        st.open -= 1;
        st.closed_total += 1;
        self.note_shrink(&st, max);
    }

    /// Tell every session that keeps a connection idle to look at [`Pooled::wanted`].
    fn wake_holders(&self) {
        let list = self.holders.lock().unwrap_or_else(|p| p.into_inner());
        for h in list.iter().filter_map(Weak::upgrade) {
            if let Some(w) = h.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
                w.wake();
            }
        }
    }

    /// Keep the `shrink` flag in step with the state (closed, or over the cap).
    fn note_shrink(&self, st: &State<M>, max: usize) {
        self.shrink.store(st.closed || st.open > max, Ordering::Release);
    }

    /// A connection comes back: to the oldest waiter, or idle since `since` (None: now).
    fn put_back(
        self: Arc<Self>,
        conn: M::Conn,
        created: Instant,
        slot: Slot<M>,
        since: Option<Instant>,
        generation: Generation,
    ) {
        let settings = self.settings();
        let now = Instant::now();
        let since = since.unwrap_or(now);
        let expired = settings.max_lifetime.is_some_and(|l| now.saturating_duration_since(created) >= l);
        let mut st = self.state();
        if st.closed || expired || st.open > settings.max || generation < self.generation.load(Ordering::Acquire) {
            drop(st);
            drop(conn);
            drop(slot);
            return;
        }
        let mut item = Pooled {
            conn: Some(conn),
            created,
            broken: false,
            slot: Some(slot),
            holder: std::sync::OnceLock::new(),
            generation,
        };
        while let Some(mut w) = st.waiters.pop_front() {
            self.queued.store(st.waiters.len(), Ordering::Release);
            let mut sent = 0;
            if let Some(prelude) = w.prelude.take().filter(|_| !w.tx.is_closed()) {
                // Outside the lock: the prelude may write to a socket.
                drop(st);
                sent = item.conn.as_mut().map_or(0, prelude);
                st = self.state();
            }
            // A request is in flight on it: until the waiter claims it, dropping it (the
            // waiter gone, or dropped before its next poll) closes it instead of pooling it.
            item.broken = sent > 0;
            match w.tx.send(Handoff::Conn(item, sent)) {
                Ok(()) => return,
                Err(Handoff::Conn(back, sent)) if sent > 0 => {
                    drop(st);
                    drop(back);
                    return;
                }
                Err(Handoff::Conn(back, _)) => item = back,
                Err(_) => unreachable!("sent a connection"),
            }
        }
        let (conn, created, slot, _) = item.into_parts();
        slot.disarm();
        st.idle.push_back(Idle { conn, created, since });
    }
}

enum Step<M: Manager> {
    Idle(Pooled<M>, Duration),
    Connect(Slot<M>),
    Wait(oneshot::Receiver<Handoff<M>>),
    Closed,
}

struct Counted<'a>(&'a AtomicUsize);
impl<'a> Counted<'a> {
    fn new(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Self(c)
    }
}
impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<M: Manager> Pool<M> {
    /// A new, empty pool.
    pub fn new(manager: M, settings: PoolSettings) -> Self {
        let lifetime = lifetime_ms(&settings);
        Self {
            inner: Arc::new(Inner {
                manager,
                settings: Mutex::new(settings),
                state: Mutex::new(State {
                    idle: VecDeque::new(),
                    open: 0,
                    waiters: VecDeque::new(),
                    reaping: false,
                    closed: false,
                    opened_total: 0,
                    closed_total: 0,
                }),
                waiting: AtomicUsize::new(0),
                connecting: AtomicUsize::new(0),
                queued: AtomicUsize::new(0),
                shrink: AtomicBool::new(false),
                max_lifetime_ms: AtomicU64::new(lifetime),
                holders: Mutex::new(Vec::new()),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// The connection factory.
    pub fn manager(&self) -> &M {
        &self.inner.manager
    }

    /// Current limits.
    pub fn settings(&self) -> PoolSettings {
        self.inner.settings()
    }

    /// Numbers for monitoring.
    pub fn stats(&self) -> PoolStats {
        let max = self.inner.settings().max;
        let st = self.inner.state();
        let connecting = self.inner.connecting.load(Ordering::Relaxed);
        PoolStats {
            open: st.open,
            idle: st.idle.len(),
            active: st.open.saturating_sub(st.idle.len() + connecting),
            connecting,
            waiting: self.inner.waiting.load(Ordering::Relaxed),
            max,
            opened_total: st.opened_total,
            closed_total: st.closed_total,
        }
    }

    /// Check a connection out, waiting up to `wait_timeout` for one.
    pub async fn get(&self) -> Result<Pooled<M>, CheckoutError<M::Error>> {
        self.get_with(None::<fn() -> Prelude<M>>).await.map(|(p, _)| p)
    }

    /// [`get`](Self::get), and if the checkout has to wait, the prelude `make` builds (only
    /// then: most checkouts find a connection idle) runs on the connection when a release
    /// hands it over (see [`Prelude`]); also returns the bytes it wrote.
    pub async fn get_with(
        &self,
        mut make: Option<impl FnOnce() -> Prelude<M>>,
    ) -> Result<(Pooled<M>, usize), CheckoutError<M::Error>> {
        let settings = self.inner.settings();
        // Set at the first wait; a second wait (a handed-over connection was dead) keeps it.
        let mut deadline = None;
        loop {
            let slot = match self.next_step(&settings, &mut deadline, || make.take().map(|f| f())) {
                Step::Idle(mut p, idle_for) => {
                    if self.inner.manager.is_alive(&mut p)
                        && (idle_for < settings.check_after || self.inner.manager.check(&mut p).await)
                    {
                        return Ok((p, 0));
                    }
                    p.mark_broken();
                    continue;
                }
                Step::Connect(slot) => slot,
                Step::Closed => return Err(CheckoutError::Closed),
                Step::Wait(rx) => {
                    let _w = Counted::new(&self.inner.waiting);
                    match rx.await {
                        Ok(Handoff::Conn(mut p, sent)) if sent > 0 => {
                            p.broken = false;
                            return Ok((p, sent));
                        }
                        Ok(Handoff::Conn(mut p, _)) => {
                            if self.inner.manager.is_alive(&mut p) {
                                return Ok((p, 0));
                            }
                            p.mark_broken();
                            continue;
                        }
                        Ok(Handoff::Permit(slot)) => slot,
                        Ok(Handoff::Expired) => return Err(CheckoutError::Timeout(settings.wait_timeout)),
                        Err(_) => return Err(CheckoutError::Closed),
                    }
                }
            };
            return self.connect_with(slot, &settings).await.map(|p| (p, 0));
        }
    }

    async fn connect_with(&self, slot: Slot<M>, settings: &PoolSettings) -> Result<Pooled<M>, CheckoutError<M::Error>> {
        let _c = Counted::new(&self.inner.connecting);
        // A connection that started before a `retire_all` may lead where the retired ones did.
        let generation = self.inner.generation.load(Ordering::Acquire);
        match tokio::time::timeout(settings.connect_timeout, self.inner.manager.connect()).await {
            Ok(Ok(conn)) => Ok(Pooled {
                conn: Some(conn),
                created: Instant::now(),
                broken: false,
                slot: Some(slot),
                holder: std::sync::OnceLock::new(),
                generation,
            }),
            Ok(Err(e)) => Err(CheckoutError::Connect(e)),
            Err(_) => Err(CheckoutError::ConnectTimeout),
        }
    }

    /// The most recently used idle connection that is not past `max_lifetime`, and how long it
    /// was idle (older ones met on the way are closed).
    fn pop_idle(&self, st: &mut State<M>, settings: &PoolSettings) -> Option<(Pooled<M>, Duration)> {
        let now = Instant::now();
        while let Some(idle) = st.idle.pop_back() {
            if settings.max_lifetime.is_some_and(|l| now.saturating_duration_since(idle.created) >= l) {
                st.open -= 1;
                st.closed_total += 1;
                continue;
            }
            let p = Pooled {
                conn: Some(idle.conn),
                created: idle.created,
                broken: false,
                slot: Some(Slot::new(&self.inner)),
                holder: std::sync::OnceLock::new(),
                generation: self.inner.generation.load(Ordering::Acquire),
            };
            return Some((p, now.saturating_duration_since(idle.since)));
        }
        None
    }

    fn next_step(
        &self,
        settings: &PoolSettings,
        deadline: &mut Option<tokio::time::Instant>,
        prelude: impl FnOnce() -> Option<Prelude<M>>,
    ) -> Step<M> {
        let mut st = self.inner.state();
        if st.closed {
            return Step::Closed;
        }
        if let Some((p, idle_for)) = self.pop_idle(&mut st, settings) {
            return Step::Idle(p, idle_for);
        }
        if st.open < settings.max {
            st.open += 1;
            st.opened_total += 1;
            return Step::Connect(Slot::new(&self.inner));
        }
        let (tx, rx) = oneshot::channel();
        let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + settings.wait_timeout);
        st.waiters.push_back(Waiter { deadline, tx, prelude: prelude() });
        self.inner.queued.store(st.waiters.len(), Ordering::Release);
        if !st.reaping {
            st.reaping = true;
            tokio::spawn(reap(Arc::downgrade(&self.inner)));
        }
        drop(st);
        self.inner.wake_holders();
        Step::Wait(rx)
    }
}

fn lifetime_ms(s: &PoolSettings) -> u64 {
    s.max_lifetime.map_or(0, |l| (l.as_millis() as u64).max(1))
}

#[path = "pool_maintain.rs"]
mod maintain;
#[path = "pool_probe.rs"]
mod probe;
#[path = "pool_waiters.rs"]
mod waiters;
pub use waiters::Prelude;
use waiters::{reap, Waiter};

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
