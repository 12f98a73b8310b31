//! Process-wide state every session can reach: the live snapshot, metrics, cancel keys,
//! connection caps, failed-login throttling and the shutdown signal.

use crate::live::Snapshot;
use crate::metrics::Metrics;
use crate::postgres::cancel::CancelRegistry;
use arc_swap::ArcSwap;
use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// Shared by all sessions.
pub struct Shared {
    /// Current configuration snapshot.
    pub live: ArcSwap<Snapshot>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Postgres cancel keys.
    pub cancels: Arc<CancelRegistry>,
    /// Failed-login throttle.
    pub auth_limiter: AuthLimiter,
    /// Connected clients, all routes.
    pub clients: Arc<AtomicUsize>,
    /// Analysis cache, audit writer, policy metrics.
    pub governance: crate::governance::Governance,
    /// Flips to true on SIGTERM.
    pub shutdown: watch::Receiver<bool>,
}

/// Counts a client against the global and route caps while it lives.
pub struct ClientSlot {
    counters: [Arc<AtomicUsize>; 2],
    /// Whether a cap was already exceeded when the client arrived.
    pub over_cap: bool,
}

impl ClientSlot {
    /// Count a new client; `over_cap` tells whether it must be refused.
    pub fn acquire(
        global: &Arc<AtomicUsize>,
        global_cap: usize,
        route: &Arc<AtomicUsize>,
        route_cap: Option<usize>,
    ) -> Self {
        let g = global.fetch_add(1, Ordering::AcqRel) + 1;
        let r = route.fetch_add(1, Ordering::AcqRel) + 1;
        let over_cap = g > global_cap || route_cap.is_some_and(|c| r > c);
        Self { counters: [global.clone(), route.clone()], over_cap }
    }
}

/// How a session ended, for the line `serve_client` logs.
pub trait SessionEnd: std::fmt::Display {
    /// An ordinary end (the client went away mid-conversation), logged at debug level.
    fn ordinary(&self) -> bool {
        false
    }
}

/// What every protocol's `serve` does around its session: count the client against the caps
/// (`body` gets `over_cap` and refuses the client in its protocol's own words), run `body` in
/// the connection's span, then uncount the client and log how the session ended.
pub async fn serve_client<E, F>(
    shared: &Shared,
    route: &crate::live::Route,
    span: tracing::Span,
    body: impl FnOnce(bool) -> F,
) where
    E: SessionEnd,
    F: std::future::Future<Output = Result<(), E>>,
{
    use tracing::Instrument;
    let slot = ClientSlot::admit(shared, route);
    let result = body(slot.over_cap).instrument(span.clone()).await;
    route.metrics.clients.dec();
    drop(slot);
    let _e = span.enter();
    match result {
        Ok(()) => tracing::debug!("client disconnected"),
        Err(e) if e.ordinary() => tracing::debug!("client disconnected"),
        Err(e) => tracing::info!(error = %e, "session ended"),
    }
}

impl ClientSlot {
    /// Count a client that `route` just accepted against the global and route caps, and in
    /// the route's client metrics. Every protocol's `serve` starts here.
    pub fn admit(shared: &Shared, route: &crate::live::Route) -> Self {
        let cap = shared.live.load().config.server.max_client_connections;
        let slot = Self::acquire(&shared.clients, cap, &route.clients, route.cfg.max_client_connections);
        route.metrics.clients_total.inc();
        route.metrics.clients.inc();
        slot
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        for c in &self.counters {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Token bucket of failed logins per source address.
pub struct AuthLimiter {
    buckets: DashMap<IpAddr, (f64, Instant)>,
}

impl Default for AuthLimiter {
    fn default() -> Self {
        Self { buckets: DashMap::new() }
    }
}

impl AuthLimiter {
    fn refill(entry: &mut (f64, Instant), burst: u32, refill_secs: u64) {
        let rate = 1.0 / refill_secs.max(1) as f64;
        let now = Instant::now();
        entry.0 = (entry.0 + now.duration_since(entry.1).as_secs_f64() * rate).min(burst as f64);
        entry.1 = now;
    }

    /// Whether this address may try to log in now.
    pub fn allowed(&self, ip: IpAddr, burst: u32, refill_secs: u64) -> bool {
        match self.buckets.get_mut(&ip) {
            None => true,
            Some(mut e) => {
                Self::refill(&mut e, burst, refill_secs);
                e.0 >= 1.0
            }
        }
    }

    /// Record a failed login.
    pub fn failed(&self, ip: IpAddr, burst: u32, refill_secs: u64) {
        let mut e = self.buckets.entry(ip).or_insert((burst as f64, Instant::now()));
        Self::refill(&mut e, burst, refill_secs);
        e.0 = (e.0 - 1.0).max(0.0);
    }

    /// Forget addresses whose bucket is full again (housekeeping).
    pub fn sweep(&self, burst: u32, refill_secs: u64) {
        self.buckets.retain(|_, e| {
            Self::refill(e, burst, refill_secs);
            e.0 < burst as f64
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_blocks_after_burst() {
        let l = AuthLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.allowed(ip, 3, 3600));
            l.failed(ip, 3, 3600);
        }
        assert!(!l.allowed(ip, 3, 3600));
        assert!(l.allowed("10.0.0.2".parse().unwrap(), 3, 3600));
    }

    #[test]
    fn caps_count_and_release() {
        let g = Arc::new(AtomicUsize::new(0));
        let r = Arc::new(AtomicUsize::new(0));
        let a = ClientSlot::acquire(&g, 2, &r, Some(1));
        assert!(!a.over_cap);
        let b = ClientSlot::acquire(&g, 2, &r, Some(1));
        assert!(b.over_cap);
        drop((a, b));
        assert_eq!(g.load(Ordering::SeqCst), 0);
    }
}

/// The shutdown signal as a session waits on it: `changed()` of the shutdown watch, polled
/// through an atomic version check once it holds the task's waker. A session's `select!`
/// polls it every time the session goes idle; the inner future locks the watch's waiter list
/// on each poll, this reads one atomic.
pub struct Stop<F> {
    changed: F,
    seen: watch::Receiver<bool>,
    waker: Option<std::task::Waker>,
}

impl<F> Stop<F> {
    /// `changed`: `rx.changed()` of a receiver cloned from `seen`'s sender side (any clone of
    /// the shutdown receiver).
    pub fn new(changed: F, seen: watch::Receiver<bool>) -> Self {
        Stop { changed, seen, waker: None }
    }
}

impl<F: std::future::Future + Unpin> std::future::Future for Stop<F> {
    type Output = F::Output;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let this = &mut *self;
        // Registered with this very waker and nothing sent (a closed sender counts as sent):
        // the inner future would say Pending too.
        if this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) && matches!(this.seen.has_changed(), Ok(false))
        {
            return std::task::Poll::Pending;
        }
        let r = std::pin::Pin::new(&mut this.changed).poll(cx);
        this.waker = r.is_pending().then(|| cx.waker().clone());
        r
    }
}

#[cfg(test)]
mod stop_tests {
    use super::Stop;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    #[tokio::test]
    async fn stop_fires_once_sent_and_only_then() {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let seen = rx.clone();
        let mut stop = Stop::new(Box::pin(rx.changed()), seen);
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..3 {
            assert!(std::pin::Pin::new(&mut stop).poll(&mut cx).is_pending());
        }
        tx.send(true).unwrap();
        assert!(std::pin::Pin::new(&mut stop).poll(&mut cx).is_ready(), "a send is seen with the same waker");
        // Woken for real: a task parked on it wakes when the signal is sent.
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let seen = rx.clone();
        let waiter = tokio::spawn(async move { Stop::new(Box::pin(rx.changed()), seen).await.is_ok() });
        tokio::task::yield_now().await;
        tx.send(true).unwrap();
        assert!(tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap());
        // A dropped sender ends the wait too.
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let seen = rx.clone();
        let mut stop = Stop::new(Box::pin(rx.changed()), seen);
        assert!(std::pin::Pin::new(&mut stop).poll(&mut cx).is_pending());
        drop(tx);
        assert!(matches!(std::pin::Pin::new(&mut stop).poll(&mut cx), Poll::Ready(Err(_))));
    }
}
