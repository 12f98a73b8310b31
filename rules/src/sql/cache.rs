//! `Analyzer`: a bounded, sharded, thread-safe cache of analyses keyed by normalised text.
//!
//! Key: the dialect, the normalised parse text (literals already replaced, so the same shape
//! with other literal values hits) and the rewrite flags; the stored text is compared on every
//! hit, so a 64-bit hash collision costs a miss, never a wrong analysis. The analysis is a pure
//! function of that key (see the module docs of `sql`), so caching cannot change a result.
//!
//! Eviction: each of up to 16 shards holds `ceil(capacity / shards)` entries in a ring and
//! evicts with CLOCK (second chance): a hit sets the entry's reference bit; an insert into a
//! full shard sweeps the hand forward, clearing set bits, and replaces the first entry whose bit
//! was already clear. This approximates LRU with O(1) hits that only flip a bit under a short
//! per-shard lock. Statements whose normalised text exceeds 16 KiB are analysed but not cached,
//! which bounds memory at roughly `capacity * (16 KiB + analysis)` in the worst case.

use super::analyze::analyze_normalized;
use super::fingerprint::{normalize, stable_hash, Fingerprint, Normalized, Render};
use super::{Analysis, Dialect};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Longest normalised text that is cached.
const MAX_CACHED_TEXT: usize = 16 * 1024;
const MAX_SHARDS: usize = 16;

/// The key is already a hash: use it as is.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Slot {
    hash: u64,
    dialect: Dialect,
    text: Box<str>,
    flags: Box<[u8]>,
    value: Arc<Analysis>,
    referenced: bool,
}

#[derive(Default)]
struct Shard {
    index: HashMap<u64, usize, BuildHasherDefault<IdHasher>>,
    slots: Vec<Slot>,
    hand: usize,
}

/// Thread-safe analysis cache; share it behind an `Arc` (all methods take `&self`).
pub struct Analyzer {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer").field("capacity", &self.capacity()).field("len", &self.len()).finish()
    }
}

fn flags_of(n: &Normalized) -> Box<[u8]> {
    n.stmts.iter().map(|s| s.flags).collect()
}

fn key_hash(dialect: Dialect, text: &str, flags: &[u8]) -> u64 {
    let mut h = stable_hash(text.as_bytes());
    for f in flags {
        h = (h ^ u64::from(*f)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    h ^ (dialect as u64 + 1).wrapping_mul(0xff51_afd7_ed55_8ccd)
}

impl Analyzer {
    /// A cache holding at most `capacity` analyses (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        let n = capacity.clamp(1, MAX_SHARDS);
        let per_shard = capacity.div_ceil(n);
        Self {
            shards: (0..n).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Maximum number of cached analyses.
    pub fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    /// Number of cached analyses.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).slots.len()).sum()
    }

    /// Nothing cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cache hits so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Cache misses so far (each one parsed a statement).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Drop every cached analysis.
    pub fn clear(&self) {
        for s in self.shards.iter() {
            *lock(s) = Shard::default();
        }
    }

    /// Analyse `sql`, reusing the analysis of any earlier statement of the same shape.
    pub fn analyze_cached(&self, sql: &str, dialect: Dialect) -> Arc<Analysis> {
        self.lookup(&normalize(sql, dialect, Render::Text), dialect)
    }

    /// Fingerprint and analysis from one lexer pass (what the proxy needs per statement).
    pub fn classify(&self, sql: &str, dialect: Dialect) -> (Fingerprint, Arc<Analysis>) {
        let n = normalize(sql, dialect, Render::Both);
        let a = self.lookup(&n, dialect);
        (n.fingerprint(), a)
    }

    fn lookup(&self, n: &Normalized, dialect: Dialect) -> Arc<Analysis> {
        // A lexer error is not part of the key: such input is never cached (it is denied anyway).
        if self.per_shard == 0 || n.text.len() > MAX_CACHED_TEXT || n.error.is_some() {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Arc::new(analyze_normalized(n, dialect));
        }
        let flags = flags_of(n);
        let h = key_hash(dialect, &n.text, &flags);
        let shard = &self.shards[(h >> 32) as usize % self.shards.len()];
        if let Some(v) = find(&mut lock(shard), h, dialect, &n.text, &flags) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return v;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let value = Arc::new(analyze_normalized(n, dialect));
        let mut s = lock(shard);
        if let Some(v) = find(&mut s, h, dialect, &n.text, &flags) {
            return v; // another thread analysed it meanwhile
        }
        let slot =
            Slot { hash: h, dialect, text: n.text.as_str().into(), flags, value: value.clone(), referenced: false };
        insert(&mut s, slot, self.per_shard);
        value
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding the lock cannot leave a shard inconsistent in a way that matters
    // (worst case a stale index entry, which `find` verifies): keep using it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn find(s: &mut Shard, h: u64, dialect: Dialect, text: &str, flags: &[u8]) -> Option<Arc<Analysis>> {
    let i = *s.index.get(&h)?;
    let slot = s.slots.get_mut(i)?;
    if slot.hash == h && slot.dialect == dialect && &*slot.text == text && &*slot.flags == flags {
        slot.referenced = true;
        return Some(slot.value.clone());
    }
    None
}

fn insert(s: &mut Shard, slot: Slot, cap: usize) {
    let h = slot.hash;
    if s.slots.len() < cap {
        s.slots.push(slot);
        let i = s.slots.len() - 1;
        s.index.insert(h, i);
        return;
    }
    let len = s.slots.len();
    loop {
        let i = s.hand % len;
        s.hand = (i + 1) % len;
        if std::mem::take(&mut s.slots[i].referenced) {
            continue;
        }
        let old = s.slots[i].hash;
        if s.index.get(&old) == Some(&i) {
            s.index.remove(&old);
        }
        s.slots[i] = slot;
        s.index.insert(h, i);
        return;
    }
}
