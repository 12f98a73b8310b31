//! Unit tests for the pool: cap, waiters, timeouts, broken connections, reload.

use super::*;
use std::sync::atomic::{AtomicBool, AtomicUsize};

#[derive(Default)]
struct Fake {
    live: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    made: AtomicUsize,
    fail: AtomicBool,
    checks: AtomicUsize,
    check_fails: AtomicBool,
}

struct FakeConn {
    live: Arc<AtomicUsize>,
    id: usize,
    dead: bool,
}

impl Drop for FakeConn {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

impl Manager for Fake {
    type Conn = FakeConn;
    type Error = Refused;
    async fn connect(&self) -> Result<FakeConn, Refused> {
        tokio::task::yield_now().await;
        if self.fail.load(Ordering::SeqCst) {
            return Err(Refused);
        }
        let n = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        Ok(FakeConn { live: self.live.clone(), id: self.made.fetch_add(1, Ordering::SeqCst), dead: false })
    }
    fn is_alive(&self, c: &mut FakeConn) -> bool {
        !c.dead
    }
    async fn check(&self, _c: &mut FakeConn) -> bool {
        self.checks.fetch_add(1, Ordering::SeqCst);
        !self.check_fails.load(Ordering::SeqCst)
    }
}

fn settings(max: usize, wait_ms: u64) -> PoolSettings {
    PoolSettings {
        max,
        min_idle: 0,
        wait_timeout: Duration::from_millis(wait_ms),
        idle_timeout: None,
        max_lifetime: None,
        connect_timeout: Duration::from_secs(1),
        check_after: Duration::from_secs(30),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_is_never_exceeded_under_contention() {
    let fake = Fake::default();
    let peak = fake.peak.clone();
    let live = fake.live.clone();
    let pool = Pool::new(fake, settings(3, 5_000));
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                let c = pool.get().await.expect("checkout");
                tokio::task::yield_now().await;
                drop(c);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    let s = pool.stats();
    assert_eq!((s.open, s.idle, s.active, s.waiting), (3, 3, 0, 0));
    assert_eq!(live.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn waiter_times_out_and_does_not_leak() {
    let pool = Pool::new(Fake::default(), settings(1, 50));
    let held = pool.get().await.unwrap();
    let err = pool.get().await.err().expect("must time out");
    assert!(matches!(err, CheckoutError::Timeout(_)));
    drop(held);
    // The connection went back to the idle list, not to the timed-out waiter.
    let again = pool.get().await.unwrap();
    assert_eq!(again.id, 0);
    assert_eq!(pool.stats().open, 1);
}

#[tokio::test]
async fn release_hands_connection_to_waiter_in_order() {
    let pool = Pool::new(Fake::default(), settings(1, 2_000));
    let held = pool.get().await.unwrap();
    let p2 = pool.clone();
    let waiter = tokio::spawn(async move { p2.get().await.map(|c| c.id) });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(pool.stats().waiting, 1);
    drop(held);
    assert_eq!(waiter.await.unwrap().unwrap(), 0);
}

/// A waiting checkout's prelude runs when the connection is released, in the releaser's turn
/// (before the waiter's task runs), and a connection it wrote to skips the idle check.
#[tokio::test]
async fn a_prelude_runs_in_the_releasers_turn() {
    let pool = Pool::new(Fake::default(), settings(1, 2_000));
    let held = pool.get().await.unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let (p2, r2) = (pool.clone(), ran.clone());
    let waiter = tokio::spawn(async move {
        let prelude: Prelude<Fake> = Box::new(move |c: &mut FakeConn| {
            r2.store(c.id + 1, Ordering::SeqCst);
            // Busy now (as a server answering the request would be): no idle check may run.
            c.dead = true;
            7
        });
        p2.get_with(Some(move || prelude)).await.map(|(c, sent)| (c.id, sent))
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(ran.load(Ordering::SeqCst), 0, "not before the release");
    drop(held);
    assert_eq!(ran.load(Ordering::SeqCst), 1, "ran inside the release, on connection 0");
    assert_eq!(waiter.await.unwrap().unwrap(), (0, 7));
}

/// A connection a prelude wrote to is closed, not pooled, when its waiter goes away before
/// claiming it (here: the waiter's task is aborted from inside the prelude).
#[tokio::test]
async fn a_written_connection_dropped_unclaimed_is_closed() {
    let fake = Fake::default();
    let live = fake.live.clone();
    let pool = Pool::new(fake, settings(1, 2_000));
    let held = pool.get().await.unwrap();
    let abort: Arc<std::sync::Mutex<Option<tokio::task::AbortHandle>>> = Arc::default();
    let (p2, a2) = (pool.clone(), abort.clone());
    let waiter = tokio::spawn(async move {
        let prelude: Prelude<Fake> = Box::new(move |_| {
            if let Some(a) = a2.lock().unwrap().take() {
                a.abort();
            }
            5
        });
        p2.get_with(Some(move || prelude)).await.map(|(c, _)| c.id)
    });
    *abort.lock().unwrap() = Some(waiter.abort_handle());
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(held);
    assert!(waiter.await.unwrap_err().is_cancelled());
    assert_eq!((pool.stats().open, live.load(Ordering::SeqCst)), (0, 0), "closed, not pooled");
    let c = pool.get().await.unwrap();
    assert_eq!(c.id, 1, "a new connection");
}

/// A waiter that left before the release gets no prelude run: the connection goes idle.
#[tokio::test]
async fn a_departed_waiters_prelude_never_runs() {
    let pool = Pool::new(Fake::default(), settings(1, 2_000));
    let held = pool.get().await.unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let (p2, r2) = (pool.clone(), ran.clone());
    let waiter = tokio::spawn(async move {
        let prelude: Prelude<Fake> = Box::new(move |_| {
            r2.store(true, Ordering::SeqCst);
            1
        });
        p2.get_with(Some(move || prelude)).await.map(|(c, _)| c.id)
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    waiter.abort();
    let _ = waiter.await;
    drop(held);
    assert!(!ran.load(Ordering::SeqCst));
    let s = pool.stats();
    assert_eq!((s.open, s.idle), (1, 1), "{s:?}");
}

#[tokio::test]
async fn broken_connections_are_closed_and_capacity_returns() {
    let fake = Fake::default();
    let live = fake.live.clone();
    let pool = Pool::new(fake, settings(1, 2_000));
    let mut c = pool.get().await.unwrap();
    c.mark_broken();
    drop(c);
    assert_eq!(live.load(Ordering::SeqCst), 0);
    assert_eq!(pool.stats().open, 0);
    let c = pool.get().await.unwrap();
    assert_eq!(c.id, 1);
}

#[tokio::test]
async fn dead_idle_connection_is_replaced() {
    let pool = Pool::new(Fake::default(), settings(1, 2_000));
    let mut c = pool.get().await.unwrap();
    c.dead = true;
    drop(c);
    let c = pool.get().await.unwrap();
    assert_eq!(c.id, 1);
    assert_eq!(pool.stats().open, 1);
}

/// A probe's ping: never opens a connection, leaves an answering one idle since its last real
/// use (so `idle_timeout` still closes it), closes one that fails.
#[tokio::test]
async fn ping_idle_checks_without_opening_or_refreshing() {
    let mut s = settings(2, 1_000);
    s.idle_timeout = Some(Duration::from_millis(200));
    let pool = Pool::new(Fake::default(), s);
    assert_eq!(pool.ping_idle().await, None, "no idle connection");
    assert_eq!(pool.stats().opened_total, 0, "a ping never opens one");
    drop(pool.get().await.unwrap());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(pool.ping_idle().await, Some(true));
    assert_eq!(pool.manager().checks.load(Ordering::SeqCst), 1);
    assert_eq!((pool.stats().idle, pool.stats().opened_total), (1, 1));
    tokio::time::sleep(Duration::from_millis(120)).await;
    pool.maintain();
    assert_eq!(pool.stats().open, 0, "the ping must not count as a use for idle_timeout");
    drop(pool.get().await.unwrap());
    pool.manager().check_fails.store(true, Ordering::SeqCst);
    assert_eq!(pool.ping_idle().await, Some(false));
    assert_eq!((pool.stats().open, pool.stats().closed_total), (0, 2));
}

#[tokio::test]
async fn connect_failure_frees_the_slot_for_a_waiter() {
    let fake = Fake::default();
    fake.fail.store(true, Ordering::SeqCst);
    let pool = Pool::new(fake, settings(1, 500));
    assert!(matches!(pool.get().await, Err(CheckoutError::Connect(_))));
    assert_eq!(pool.stats().open, 0);
    pool.manager().fail.store(false, Ordering::SeqCst);
    assert!(pool.get().await.is_ok());
}

#[tokio::test]
async fn growing_the_cap_wakes_waiters() {
    let pool = Pool::new(Fake::default(), settings(1, 5_000));
    let _held = pool.get().await.unwrap();
    let p2 = pool.clone();
    let waiter = tokio::spawn(async move { p2.get().await.map(|c| c.id) });
    tokio::time::sleep(Duration::from_millis(20)).await;
    pool.update_settings(settings(2, 5_000));
    let id = tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("woken").unwrap().unwrap();
    assert_eq!(id, 1);
}

#[tokio::test]
async fn shrinking_the_cap_closes_on_return() {
    let fake = Fake::default();
    let live = fake.live.clone();
    let pool = Pool::new(fake, settings(2, 1_000));
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    pool.update_settings(settings(1, 1_000));
    drop(a);
    drop(b);
    assert_eq!(pool.stats().open, 1);
    assert_eq!(live.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn idle_timeout_and_min_idle() {
    let mut s = settings(3, 1_000);
    s.idle_timeout = Some(Duration::from_millis(10));
    s.min_idle = 1;
    let pool = Pool::new(Fake::default(), s);
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(pool.maintain(), 0);
    assert_eq!(pool.stats().idle, 1);
    pool.close();
    assert_eq!(pool.stats().open, 0);
    assert!(matches!(pool.get().await, Err(CheckoutError::Closed)));
}

#[tokio::test]
async fn lazy_holder_is_told_when_a_checkout_waits() {
    let pool = Pool::new(Fake::default(), settings(1, 2_000));
    let held = pool.get().await.unwrap();
    assert!(!held.wanted(), "nobody waits yet");
    // the holder waits for demand while "its client is idle"
    let (tx, rx) = tokio::sync::oneshot::channel();
    let holder = tokio::spawn(async move {
        held.until_wanted().await;
        let _ = tx.send(());
        held // dropped here: the connection goes to the waiter
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!holder.is_finished());
    let p2 = pool.clone();
    let waiter = tokio::spawn(async move { p2.get().await.map(|c| c.id) });
    tokio::time::timeout(Duration::from_secs(1), rx).await.expect("holder woken").unwrap();
    drop(holder.await.unwrap());
    assert_eq!(waiter.await.unwrap().unwrap(), 0);
    assert_eq!(pool.stats().open, 1);
}

#[tokio::test]
async fn lazy_holder_is_told_on_close_shrink_and_lifetime() {
    let pool = Pool::new(Fake::default(), settings(2, 1_000));
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    pool.update_settings(settings(1, 1_000));
    assert!(a.wanted() && b.wanted(), "over the new cap");
    drop(a);
    assert!(!b.wanted(), "back within the cap");
    pool.close();
    tokio::time::timeout(Duration::from_secs(1), b.until_wanted()).await.expect("closed pool wants it back");
    let mut s = settings(1, 1_000);
    s.max_lifetime = Some(Duration::from_millis(30));
    let pool = Pool::new(Fake::default(), s);
    let c = pool.get().await.unwrap();
    assert!(!c.wanted());
    tokio::time::timeout(Duration::from_secs(1), c.until_wanted()).await.expect("lifetime reached");
    assert!(c.wanted());
}

#[tokio::test]
async fn retire_all_closes_idle_now_and_busy_ones_on_return() {
    let fake = Fake::default();
    let live = fake.live.clone();
    let pool = Pool::new(fake, settings(3, 2_000));
    let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    let busy = pool.get().await.unwrap();
    drop((a, b));
    assert_eq!((pool.stats().open, pool.stats().idle), (3, 2));
    assert!(!busy.wanted());

    assert_eq!(pool.retire_all(), 2);
    assert_eq!((pool.stats().open, pool.stats().idle, live.load(Ordering::SeqCst)), (1, 0, 1));
    // A session keeping the busy one between requests is told to give it back...
    assert!(busy.wanted());
    // ...and when it does, it is closed, not pooled, nor handed to a waiter.
    let p2 = pool.clone();
    let waiter = tokio::spawn(async move { p2.get().await.map(|c| c.id) });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(busy.id, 2);
    drop(busy);
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(got, 3, "the waiter gets a fresh connection, not the retired one");
    assert_eq!((pool.stats().open, pool.stats().idle, live.load(Ordering::SeqCst)), (1, 1, 1));
    // Fresh connections are pooled as usual.
    assert_eq!(pool.get().await.unwrap().id, 3);
}

/// `retire_generation`: the first stale report of a generation retires the pool; more reports
/// from connections of that generation leave the fresh connections alone.
#[tokio::test]
async fn a_generation_is_retired_once_and_fresh_connections_survive_stale_reports() {
    let fake = Fake::default();
    let live = fake.live.clone();
    let pool = Pool::new(fake, settings(3, 2_000));
    let (a, b, idle) = (pool.get().await.unwrap(), pool.get().await.unwrap(), pool.get().await.unwrap());
    assert_eq!((a.generation(), b.generation()), (0, 0));
    drop(idle);
    // `a` reports: the idle one closes now; `a` and `b` when they come back.
    assert_eq!(pool.retire_generation(a.generation()), Some(1));
    drop(a);
    assert_eq!((pool.stats().open, pool.stats().idle, live.load(Ordering::SeqCst)), (1, 0, 1));
    let fresh = pool.get().await.unwrap();
    assert_eq!(fresh.generation(), 1);
    drop(fresh);
    // `b`, of the old generation, reports the same failover: the fresh one stays pooled.
    assert_eq!(pool.retire_generation(b.generation()), None);
    assert_eq!(pool.stats().idle, 1);
    drop(b);
    assert_eq!((pool.stats().open, pool.stats().idle, live.load(Ordering::SeqCst)), (1, 1, 1));
    // A report from the fresh generation (a second failover) retires it.
    assert_eq!(pool.retire_generation(1), Some(1));
    assert_eq!((pool.stats().open, pool.stats().idle), (0, 0));
}
