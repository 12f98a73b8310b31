//! Redis memory budget: poll `INFO memory` on the route's upstream (over one of the route's
//! shared multiplexed connections, so it never needs a connection of its own) and, while
//! `used_memory` is at or above the budget, refuse commands that can grow the dataset with
//! `-OOM` before the provider starts evicting or rejecting. Reads, deletes, expiries and pops
//! still pass.

use super::upstream::{Batch, Msg, DB_UNKNOWN};
use super::RedisRoute;
use crate::live::Route;
use crate::shaping::{Families, Shaper};
use dgf_config::MemoryBudgetConfig;
use dgf_protocols::redis::{decode, Limits, Value};
use prometheus::{IntCounter, IntGauge};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long one `INFO memory` may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);

struct Handles {
    route: String,
    used: IntGauge,
    budget: IntGauge,
    exceeded: IntGauge,
    refused: IntCounter,
}

/// Budget state of one Redis route (lives in [`RedisRoute`], so it follows the upstream).
#[derive(Default)]
pub struct MemoryBudget {
    /// Poll interval; None when no budget is configured (the poller then stops).
    interval: Mutex<Option<Duration>>,
    max: AtomicU64,
    used: AtomicU64,
    over: AtomicBool,
    running: AtomicBool,
    handles: OnceLock<Handles>,
}

impl MemoryBudget {
    /// Whether memory-growing writes are being refused. One relaxed load.
    #[inline]
    pub fn exceeded(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// Whether `name` (upper-cased command name) is refused right now.
    #[inline]
    pub fn refuses(&self, name: &[u8]) -> bool {
        self.exceeded() && dgf_rules::redis::may_grow_memory(name)
    }

    /// The error for a refused command (counts it).
    pub fn refusal(&self) -> String {
        let route = self.handles.get().map_or("", |h| h.route.as_str());
        if let Some(h) = self.handles.get() {
            h.refused.inc();
        }
        format!(
            "OOM dgf: memory budget of route `{route}` reached (used_memory {} >= max_bytes {}): commands that can grow memory are refused; reads and deletes still work",
            self.used.load(Ordering::Relaxed),
            self.max.load(Ordering::Relaxed)
        )
    }

    fn set(&self, route: &str, cfg: Option<&MemoryBudgetConfig>, families: &Families) {
        if cfg.is_none() && self.handles.get().is_none() {
            return; // never configured: no metrics series, nothing to undo
        }
        let h = self.handles.get_or_init(|| {
            let r = [route];
            Handles {
                route: route.to_owned(),
                used: families.memory_used.with_label_values(&r),
                budget: families.memory_budget.with_label_values(&r),
                exceeded: families.memory_exceeded.with_label_values(&r),
                refused: families.memory_refused.with_label_values(&r),
            }
        });
        let max = cfg.map_or(0, |c| c.max_bytes);
        *self.interval.lock().unwrap_or_else(|p| p.into_inner()) =
            cfg.map(|c| Duration::from_millis(c.check_interval_ms));
        self.max.store(max, Ordering::Relaxed);
        h.budget.set(i64::try_from(max).unwrap_or(i64::MAX));
        self.evaluate();
    }

    /// Stop polling and refusing (route removed or upstream changed).
    pub fn stop(&self) {
        *self.interval.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.max.store(0, Ordering::Relaxed);
        self.evaluate();
    }

    fn interval(&self) -> Option<Duration> {
        *self.interval.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn observe(&self, used: u64) {
        self.used.store(used, Ordering::Relaxed);
        if let Some(h) = self.handles.get() {
            h.used.set(i64::try_from(used).unwrap_or(i64::MAX));
        }
        self.evaluate();
    }

    /// Compare the last poll with the budget; log each crossing once.
    fn evaluate(&self) {
        let (max, used) = (self.max.load(Ordering::Relaxed), self.used.load(Ordering::Relaxed));
        let over = max > 0 && used > 0 && used >= max;
        let was = self.over.swap(over, Ordering::Relaxed);
        let Some(h) = self.handles.get() else { return };
        h.exceeded.set(i64::from(over));
        if over && !was {
            tracing::warn!(route = %h.route, used_memory = used, max_bytes = max,
                "upstream memory reached the budget: refusing commands that can grow memory");
        } else if was && !over {
            tracing::warn!(route = %h.route, used_memory = used, max_bytes = max,
                "upstream memory back under the budget (or budget removed): writes accepted again");
        }
    }
}

/// Apply the route's `memory_budget` and make sure a poller runs while one is configured.
pub fn configure(rr: &Arc<RedisRoute>, route: &Route, families: &Families) {
    let m = &rr.memory;
    m.set(&route.name, route.cfg.memory_budget.as_ref(), families);
    if m.interval().is_none() || m.running.swap(true, Ordering::AcqRel) {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(h) => drop(h.spawn(poll(Arc::downgrade(rr), route.shaper.clone()))),
        Err(_) => m.running.store(false, Ordering::Release),
    }
}

async fn poll(rr: Weak<RedisRoute>, shaper: Arc<Shaper>) {
    let mut failing = false;
    loop {
        let Some(r) = rr.upgrade() else { return };
        let Some(interval) = r.memory.interval() else {
            r.memory.running.store(false, Ordering::Release);
            // A budget configured again in between found the poller still running: take over.
            if r.memory.interval().is_some() && !r.memory.running.swap(true, Ordering::AcqRel) {
                continue;
            }
            return;
        };
        // The poll is an upstream command too: it takes an ops/s slot (skipped if refused).
        if shaper.acquire().await.is_ok() {
            match used_memory(&r).await {
                Ok(v) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("memory budget: INFO memory polls work again");
                    }
                    r.memory.observe(v);
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "memory budget: INFO memory poll failed; keeping the last value");
                }
                Err(_) => {}
            }
        }
        drop(r);
        tokio::time::sleep(interval).await;
    }
}

/// One `INFO memory` over a shared connection (the one a client would join now).
async fn used_memory(rr: &RedisRoute) -> Result<u64, String> {
    let conn = rr.fill_shared().await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut bytes = Vec::new();
    dgf_protocols::redis::request::encode_command(&mut bytes, [&b"INFO"[..], b"memory"].into_iter());
    let batch = Batch { bytes: bytes.into(), count: 1, db: DB_UNKNOWN, proto: 2, reply: tx, resets_db: false };
    conn.send(batch).map_err(|_| "upstream connection closed".to_owned())?;
    match tokio::time::timeout(POLL_TIMEOUT, rx.recv()).await {
        Ok(Some(Msg::Replies(b, _))) => parse_used_memory(&b),
        Ok(_) => Err("no reply".into()),
        Err(_) => Err(format!("no reply within {POLL_TIMEOUT:?}")),
    }
}

/// `used_memory` from an `INFO memory` reply.
pub fn parse_used_memory(reply: &[u8]) -> Result<u64, String> {
    let v = match decode(reply, &Limits::SERVER) {
        Ok(Some((v, _))) => v,
        _ => return Err("malformed INFO reply".into()),
    };
    let text = match &v {
        Value::Error(e) => return Err(String::from_utf8_lossy(e).into_owned()),
        v => v.as_bytes().ok_or("unexpected INFO reply")?,
    };
    text.split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"used_memory:"))
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| "INFO reply without used_memory".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info() {
        let body = "# Memory\r\nused_memory:1234567\r\nused_memory_human:1.18M\r\nused_memory_rss:9\r\n";
        let reply = format!("${}\r\n{body}\r\n", body.len());
        assert_eq!(parse_used_memory(reply.as_bytes()), Ok(1_234_567));
        assert!(parse_used_memory(b"-NOPERM no\r\n").unwrap_err().contains("NOPERM"));
        assert!(parse_used_memory(b"$3\r\nabc\r\n").is_err());
        assert!(parse_used_memory(b"$3\r\nab").is_err());
    }

    #[test]
    fn crossing_and_refusal() {
        let f = Families::register(&prometheus::Registry::new());
        let m = MemoryBudget::default();
        m.set("c", Some(&MemoryBudgetConfig { max_bytes: 100, check_interval_ms: 1000 }), &f);
        assert!(!m.exceeded(), "nothing polled yet: fail open");
        m.observe(99);
        assert!(!m.refuses(b"SET"));
        m.observe(100);
        assert!(m.refuses(b"SET") && !m.refuses(b"GET") && !m.refuses(b"DEL"));
        assert!(m.refusal().starts_with("OOM dgf: memory budget of route `c` reached (used_memory 100"));
        assert_eq!(m.handles.get().unwrap().refused.get(), 1);
        // Raising the budget applies at once, with the last value polled.
        m.set("c", Some(&MemoryBudgetConfig { max_bytes: 1000, check_interval_ms: 1000 }), &f);
        assert!(!m.exceeded());
        m.set("c", Some(&MemoryBudgetConfig { max_bytes: 10, check_interval_ms: 1000 }), &f);
        assert!(m.exceeded());
        m.stop();
        assert!(!m.exceeded() && m.interval().is_none());
    }
}
