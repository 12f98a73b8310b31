//! Free-tier shaping shared by every protocol: a per-route ops/s token bucket that queues a
//! request briefly instead of letting the provider throttle it, plus the metric families of
//! shaping and of the Redis memory budget.
//!
//! The bucket hands out *reservations*: a request that finds no token is given the instant at
//! which its token will exist (tokens may go negative, one per waiting request), so requests
//! are served in the order they asked, nobody polls, and the lock is held only for a few
//! arithmetic operations, never across an `.await`. A request whose slot is more than
//! `max_wait_ms` away takes nothing and is refused at once with a protocol-native error.
//! A reservation abandoned before its slot (the client went away) gives its token back.
//! With no `shaping` table the route's shaper is off and costs one relaxed atomic load.

use dgf_config::ShapingConfig;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// Token-bucket arithmetic; the clock is passed in (tests drive it with `tokio::time::pause`).
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    max_wait: Duration,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(ops_per_sec: u32, burst: u32, max_wait: Duration, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: f64::from(ops_per_sec.max(1)), burst, max_wait, tokens: burst, last: now }
    }

    /// New limits. Tokens already earned (or owed to waiting requests) are kept, clamped to
    /// the new burst, so a reload does not hand out a free burst.
    pub fn set_limits(&mut self, ops_per_sec: u32, burst: u32, max_wait: Duration, now: Instant) {
        self.refill(now);
        self.rate = f64::from(ops_per_sec.max(1));
        self.burst = f64::from(burst.max(1));
        self.max_wait = max_wait;
        self.tokens = self.tokens.min(self.burst);
    }

    fn refill(&mut self, now: Instant) {
        if now > self.last {
            self.tokens = (self.tokens + (now - self.last).as_secs_f64() * self.rate).min(self.burst);
            self.last = now;
        }
    }

    /// Take one token. `Ok(wait)`: the request may run after `wait` (zero: now). `Err(wait)`:
    /// its slot is further away than `max_wait`; nothing was taken.
    pub fn reserve(&mut self, now: Instant) -> Result<Duration, Duration> {
        self.refill(now);
        let wait =
            if self.tokens >= 1.0 { Duration::ZERO } else { Duration::from_secs_f64((1.0 - self.tokens) / self.rate) };
        if wait > self.max_wait {
            return Err(wait);
        }
        self.tokens -= 1.0;
        Ok(wait)
    }

    /// Give back the token of a reservation that was abandoned before its slot.
    pub fn refund(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }

    /// Tokens available now (negative: owed to waiting requests).
    pub fn tokens(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }
}

/// Metric families of shaping and memory budgets (registered once, on the admin registry).
#[derive(Clone)]
pub struct Families {
    wait: HistogramVec,
    queued: IntGaugeVec,
    rejected: IntCounterVec,
    limit: IntGaugeVec,
    /// `dgf_upstream_memory_bytes{route}`: the upstream's `used_memory` at the last poll.
    pub memory_used: IntGaugeVec,
    /// `dgf_memory_budget_bytes{route}`: the configured budget (0 = none).
    pub memory_budget: IntGaugeVec,
    /// `dgf_memory_budget_exceeded{route}`: 1 while writes that grow memory are refused.
    pub memory_exceeded: IntGaugeVec,
    /// `dgf_memory_budget_refused_total{route}`: commands refused by the budget.
    pub memory_refused: IntCounterVec,
}

impl Families {
    /// Create and register every family.
    pub fn register(r: &Registry) -> Self {
        let wait = HistogramVec::new(
            HistogramOpts::new("dgf_shaping_wait_seconds", "Time requests queued in dgf for the route's ops/s budget")
                .buckets(vec![0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["route"],
        )
        .expect("valid metric");
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["route"]).expect("valid metric");
        let counter =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["route"]).expect("valid metric");
        let f = Self {
            wait,
            queued: gauge("dgf_shaping_queued", "Requests waiting for an ops/s slot"),
            rejected: counter("dgf_shaping_rejected_total", "Requests refused because their slot was past max_wait_ms"),
            limit: gauge("dgf_shaping_ops_per_sec", "Configured ops/s limit (0 = none)"),
            memory_used: gauge("dgf_upstream_memory_bytes", "used_memory of the upstream at the last INFO poll"),
            memory_budget: gauge("dgf_memory_budget_bytes", "Configured memory budget (0 = none)"),
            memory_exceeded: gauge("dgf_memory_budget_exceeded", "1 while writes that can grow memory are refused"),
            memory_refused: counter("dgf_memory_budget_refused_total", "Commands refused by the memory budget"),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 8] = [
            Box::new(f.wait.clone()),
            Box::new(f.queued.clone()),
            Box::new(f.rejected.clone()),
            Box::new(f.limit.clone()),
            Box::new(f.memory_used.clone()),
            Box::new(f.memory_budget.clone()),
            Box::new(f.memory_exceeded.clone()),
            Box::new(f.memory_refused.clone()),
        ];
        for c in collectors {
            r.register(c).expect("unique metric");
        }
        f
    }
}

struct Handles {
    wait: Histogram,
    queued: IntGauge,
    rejected: IntCounter,
    limit: IntGauge,
}

/// A request that was refused: its slot was further away than `max_wait_ms`.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "ops/s budget of route `{route}` exhausted ({ops_per_sec} ops/s): the next slot is {:.0} ms away, more than max_wait_ms {}; retry later",
    .wait.as_secs_f64() * 1e3,
    .max_wait.as_millis()
)]
pub struct Refused {
    /// Route name.
    pub route: String,
    /// Configured rate.
    pub ops_per_sec: u32,
    /// How long the request would have waited.
    pub wait: Duration,
    /// The configured cap on waiting.
    pub max_wait: Duration,
}

/// The ops/s limiter of one route, kept across reloads (by route name).
pub struct Shaper {
    route: String,
    on: AtomicBool,
    state: Mutex<Option<(Bucket, u32)>>,
    families: Families,
    handles: OnceLock<Handles>,
}

/// Outcome of asking for a slot.
pub enum Reservation {
    /// Go now.
    Now,
    /// Go at the ticket's instant.
    Later(Ticket),
    /// Refused (already counted when it came from [`Shaper::acquire`] or [`Gate::admit`]).
    Refused(Refused),
}

impl Shaper {
    /// An idle shaper for `route` (no limit until [`Shaper::configure`]).
    pub fn new(route: &str, families: &Families) -> Arc<Self> {
        Arc::new(Self {
            route: route.to_owned(),
            on: AtomicBool::new(false),
            state: Mutex::new(None),
            families: families.clone(),
            handles: OnceLock::new(),
        })
    }

    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| {
            let r = [self.route.as_str()];
            Handles {
                wait: self.families.wait.with_label_values(&r),
                queued: self.families.queued.with_label_values(&r),
                rejected: self.families.rejected.with_label_values(&r),
                limit: self.families.limit.with_label_values(&r),
            }
        })
    }

    /// Apply the route's `shaping` table (None: no limit). Called when a snapshot goes live.
    pub fn configure(&self, cfg: Option<&ShapingConfig>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match cfg {
            None => {
                if st.take().is_some() {
                    self.handles().limit.set(0);
                }
            }
            Some(c) => {
                let max_wait = Duration::from_millis(c.max_wait_ms);
                match st.as_mut() {
                    Some((b, rate)) => {
                        b.set_limits(c.ops_per_sec, c.burst(), max_wait, now);
                        *rate = c.ops_per_sec;
                    }
                    None => *st = Some((Bucket::new(c.ops_per_sec, c.burst(), max_wait, now), c.ops_per_sec)),
                }
                self.handles().limit.set(i64::from(c.ops_per_sec));
            }
        }
        self.on.store(st.is_some(), Ordering::Release);
    }

    /// Whether a limit is configured. The only cost a route without `shaping` pays.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Ask for a slot (refusals are not counted here).
    pub fn reserve(self: &Arc<Self>) -> Reservation {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some((bucket, rate)) = st.as_mut() else { return Reservation::Now };
        let r = bucket.reserve(now);
        let rate = *rate;
        let max_wait = bucket.max_wait;
        drop(st);
        match r {
            Ok(w) if w.is_zero() => {
                self.handles().wait.observe(0.0);
                Reservation::Now
            }
            Ok(w) => {
                self.handles().queued.inc();
                Reservation::Later(Ticket { shaper: self.clone(), at: now + w, since: now, done: false })
            }
            Err(wait) => Reservation::Refused(Refused { route: self.route.clone(), ops_per_sec: rate, wait, max_wait }),
        }
    }

    fn count_refused(&self) {
        self.handles().rejected.inc();
    }

    /// Wait for a slot (async, no lock held while waiting), or be refused.
    pub async fn acquire(self: &Arc<Self>) -> Result<(), Refused> {
        if !self.enabled() {
            return Ok(());
        }
        match self.reserve() {
            Reservation::Now => Ok(()),
            Reservation::Later(t) => {
                t.wait().await;
                Ok(())
            }
            Reservation::Refused(r) => {
                self.count_refused();
                Err(r)
            }
        }
    }

    fn refund(&self) {
        if let Some((b, _)) = self.state.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            b.refund(Instant::now());
        }
    }
}

/// A reserved slot in the future. Dropping it before its instant gives the token back.
pub struct Ticket {
    shaper: Arc<Shaper>,
    at: Instant,
    since: Instant,
    done: bool,
}

impl Ticket {
    /// When the request may go.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// Sleep until the slot, then go.
    pub async fn wait(self) {
        tokio::time::sleep_until(self.at).await;
        self.finish();
    }

    /// The request goes now: record how long it waited.
    pub fn finish(mut self) {
        self.done = true;
        self.shaper.handles().wait.observe((Instant::now() - self.since).as_secs_f64());
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.shaper.handles().queued.dec();
        if !self.done && Instant::now() < self.at {
            self.shaper.refund();
        }
    }
}

/// For sessions that must keep serving replies while a command waits (Redis): holds at most
/// one reservation across the re-parses of the command that is waiting for it.
#[derive(Default)]
pub struct Gate {
    ticket: Option<Ticket>,
}

/// What a [`Gate`] says about the next command.
pub enum Admit {
    /// Forward it.
    Go,
    /// Not yet: leave it unread and come back at [`Gate::deadline`] (or when replies arrive).
    Stall,
    /// Refuse it (counted).
    Refused(Refused),
}

impl Gate {
    /// Admit the next command. `busy`: replies are still owed to the client, so a refusal
    /// (answered by dgf, in order) must wait until they are in; the command stalls instead.
    #[inline]
    pub fn admit(&mut self, shaper: &Arc<Shaper>, busy: bool) -> Admit {
        if self.ticket.is_none() && !shaper.enabled() {
            return Admit::Go;
        }
        self.admit_slow(shaper, busy)
    }

    fn admit_slow(&mut self, shaper: &Arc<Shaper>, busy: bool) -> Admit {
        if let Some(t) = self.ticket.take() {
            if t.at <= Instant::now() {
                t.finish();
                return Admit::Go;
            }
            self.ticket = Some(t);
            return Admit::Stall;
        }
        match shaper.reserve() {
            Reservation::Now => Admit::Go,
            Reservation::Later(t) => {
                self.ticket = Some(t);
                Admit::Stall
            }
            Reservation::Refused(_) if busy => Admit::Stall,
            Reservation::Refused(r) => {
                shaper.count_refused();
                Admit::Refused(r)
            }
        }
    }

    /// When the held reservation comes due.
    pub fn deadline(&self) -> Option<Instant> {
        self.ticket.as_ref().map(|t| t.at)
    }
}

/// Sleep until `deadline`; never returns when there is none (for `select!` branches).
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn families() -> Families {
        Families::register(&Registry::new())
    }

    fn cfg(ops: u32, burst: u32, max_wait_ms: u64) -> ShapingConfig {
        ShapingConfig { ops_per_sec: ops, burst: Some(burst), max_wait_ms }
    }

    /// Milliseconds, rounded (slots are computed in floating point).
    fn ms(d: Duration) -> u128 {
        (d.as_secs_f64() * 1000.0).round() as u128
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 3, Duration::from_secs(1), t0);
        for _ in 0..3 {
            assert_eq!(b.reserve(t0), Ok(Duration::ZERO));
        }
        // Each further request is scheduled 100 ms after the previous one.
        let waits: Vec<u128> = (0..5).map(|_| ms(b.reserve(t0).unwrap())).collect();
        assert_eq!(waits, [100, 200, 300, 400, 500]);
        // Half a second later the debt is paid down by five tokens.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(ms(b.reserve(t1).unwrap()), 100);
        // Refill never exceeds the burst.
        let t2 = t1 + Duration::from_secs(60);
        assert!((b.tokens(t2) - 3.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_refuses_past_max_wait_without_taking() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2, 1, Duration::from_millis(1000), t0);
        assert_eq!(b.reserve(t0), Ok(Duration::ZERO));
        assert_eq!(ms(b.reserve(t0).unwrap()), 500);
        assert_eq!(ms(b.reserve(t0).unwrap()), 1000);
        let refused = b.reserve(t0).unwrap_err();
        assert_eq!(ms(refused), 1500);
        // The refusal took nothing: the next request after 500 ms waits 1000 ms, not 1500.
        assert_eq!(ms(b.reserve(t0 + Duration::from_millis(500)).unwrap()), 1000);
        // max_wait 0: no queueing at all.
        let mut z = Bucket::new(1, 1, Duration::ZERO, t0);
        assert!(z.reserve(t0).is_ok());
        assert!(z.reserve(t0).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_reconfigure_and_refund() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100, 100, Duration::from_secs(5), t0);
        b.set_limits(10, 2, Duration::from_secs(5), t0);
        assert!((b.tokens(t0) - 2.0).abs() < 1e-9, "clamped to the new burst");
        b.reserve(t0).unwrap();
        b.reserve(t0).unwrap();
        assert_eq!(ms(b.reserve(t0).unwrap()), 100);
        b.refund(t0);
        assert_eq!(ms(b.reserve(t0).unwrap()), 100, "the abandoned slot is reused");
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_queues_in_order_and_refuses() {
        let s = Shaper::new("r", &families());
        assert!(s.acquire().await.is_ok(), "off: no limit");
        s.configure(Some(&cfg(10, 1, 250)));
        let start = Instant::now();
        s.acquire().await.unwrap();
        assert_eq!(Instant::now(), start);
        let mut tasks = Vec::new();
        for i in 0..2 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.acquire().await.unwrap();
                (i, Instant::now() - start)
            }));
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        assert_eq!(s.handles().queued.get(), 2);
        // A third waiter would need 300 ms > 250 ms: refused at once.
        let e = s.acquire().await.unwrap_err();
        assert_eq!(ms(e.wait), 300);
        assert!(e.to_string().contains("max_wait_ms 250"), "{e}");
        assert_eq!(s.handles().rejected.get(), 1);
        let mut done = Vec::new();
        for t in tasks {
            done.push(t.await.unwrap());
        }
        assert_eq!(done.iter().map(|(i, d)| (*i, ms(*d))).collect::<Vec<_>>(), [(0, 100), (1, 200)]);
        assert_eq!(s.handles().queued.get(), 0);
        assert_eq!(s.handles().wait.get_sample_count(), 3);
        s.configure(None);
        assert!(!s.enabled());
        for _ in 0..100 {
            s.acquire().await.unwrap();
        }
        assert_eq!(ms(Instant::now() - start), 200, "no waiting once off");
    }

    #[tokio::test(start_paused = true)]
    async fn gate_holds_one_ticket_and_refunds_on_drop() {
        let s = Shaper::new("g", &families());
        s.configure(Some(&cfg(10, 1, 1000)));
        let mut g = Gate::default();
        assert!(matches!(g.admit(&s, false), Admit::Go));
        assert!(matches!(g.admit(&s, false), Admit::Stall));
        let due = g.deadline().unwrap();
        // Asking again before the deadline does not reserve a second slot.
        assert!(matches!(g.admit(&s, false), Admit::Stall));
        assert_eq!(g.deadline(), Some(due));
        sleep_until(g.deadline()).await;
        assert!(matches!(g.admit(&s, false), Admit::Go));
        assert_eq!(g.deadline(), None);
        // A client that leaves while waiting gives its slot back.
        assert!(matches!(g.admit(&s, false), Admit::Stall));
        drop(g);
        let mut other = Gate::default();
        assert!(matches!(other.admit(&s, false), Admit::Stall));
        assert_eq!(ms(other.deadline().unwrap() - Instant::now()), 100);
        // Refused while busy: stall (uncounted); when idle: refused and counted.
        let tight = Shaper::new("t", &families());
        tight.configure(Some(&cfg(1, 1, 0)));
        let mut g = Gate::default();
        assert!(matches!(g.admit(&tight, false), Admit::Go));
        assert!(matches!(g.admit(&tight, true), Admit::Stall));
        assert_eq!(tight.handles().rejected.get(), 0);
        assert!(matches!(g.admit(&tight, false), Admit::Refused(_)));
        assert_eq!(tight.handles().rejected.get(), 1);
    }
}
