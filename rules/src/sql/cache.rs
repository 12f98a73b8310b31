//! `Analyzer`: a bounded, sharded, thread-safe cache of analyses.
//!
//! Three levels, each bounded by `capacity` entries:
//! - **Shape** (the contract): key = dialect + normalised parse text (literals already replaced,
//!   so the same shape with other literal values hits) + rewrite flags. The analysis is a pure
//!   function of that key (see the `sql` module docs), so caching cannot change a result.
//! - **Exact text** (a fast path): key = dialect + the client's bytes, value = fingerprint and
//!   analysis (both pure functions of those bytes). Only statements *without literals* go here
//!   (bind parameters, constant SQL: the text repeats verbatim), so a literal-varying workload
//!   does not churn it and no literal value (a password in `ALTER ROLE`, say) is kept in memory.
//! - **Skeleton** (the fast path for literal-varying statements): key = dialect + the token
//!   stream without literal and parameter texts ([`skeleton`]), value = fingerprint and
//!   analysis. Fingerprint and parse text are rendered from exactly what the skeleton holds,
//!   so a statement whose skeleton is cached skips the rendering and the shape lookup (one
//!   lexer pass, one lookup). No literal value is kept.
//!
//! Every hit compares the stored text, so a 64-bit hash collision costs a miss, never a wrong
//! analysis. Input with a lexer error is never cached (its error is not part of any key).
//!
//! Eviction: each level has up to 16 shards of `ceil(capacity / shards)` entries evicted with
//! CLOCK (second chance): a hit sets the entry's reference bit; an insert into a full shard
//! sweeps the hand forward, clearing set bits, and replaces the first entry whose bit was
//! already clear. This approximates LRU with O(1) hits that flip a bit under a short per-shard
//! lock. Texts over 16 KiB are analysed but not cached, bounding memory at roughly
//! `3 * capacity * (16 KiB + analysis)` in the worst case.

use super::analyze::analyze_normalized;
use super::fingerprint::{normalize, normalize_lexed, stable_hash, Fingerprint, Normalized, Render};
use super::lexer::{lex, Kind, Tok};
use super::template::Template;
use super::{Analysis, Dialect};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Longest text that is cached.
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

struct Slot<V> {
    hash: u64,
    dialect: Dialect,
    text: Box<str>,
    flags: Box<[u8]>,
    value: V,
    referenced: bool,
}

struct Shard<V> {
    index: HashMap<u64, usize, BuildHasherDefault<IdHasher>>,
    slots: Vec<Slot<V>>,
    hand: usize,
}

impl<V> Default for Shard<V> {
    fn default() -> Self {
        Self { index: HashMap::default(), slots: Vec::new(), hand: 0 }
    }
}

/// One bounded CLOCK-evicted level.
struct Level<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    per_shard: usize,
}

impl<V: Clone> Level<V> {
    fn new(capacity: usize) -> Self {
        let n = capacity.clamp(1, MAX_SHARDS);
        Self { shards: (0..n).map(|_| Mutex::new(Shard::default())).collect(), per_shard: capacity.div_ceil(n) }
    }

    fn shard(&self, h: u64) -> MutexGuard<'_, Shard<V>> {
        // A panic while holding the lock cannot leave a shard inconsistent in a way that
        // matters (worst case a stale index entry, which `get` verifies): keep using it.
        self.shards[(h >> 32) as usize % self.shards.len()].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, h: u64, dialect: Dialect, text: &str, flags: &[u8]) -> Option<V> {
        if self.per_shard == 0 {
            return None;
        }
        let mut s = self.shard(h);
        let i = *s.index.get(&h)?;
        let slot = s.slots.get_mut(i)?;
        if slot.hash == h && slot.dialect == dialect && &*slot.text == text && &*slot.flags == flags {
            slot.referenced = true;
            return Some(slot.value.clone());
        }
        None
    }

    /// Insert unless present; returns the cached value (the existing one if another thread won).
    fn insert(&self, h: u64, dialect: Dialect, text: &str, flags: &[u8], value: V) -> V {
        if self.per_shard == 0 {
            return value;
        }
        let mut s = self.shard(h);
        if let Some(&i) = s.index.get(&h) {
            if let Some(slot) = s.slots.get(i) {
                if slot.dialect == dialect && &*slot.text == text && &*slot.flags == flags {
                    return slot.value.clone();
                }
            }
        }
        let slot =
            Slot { hash: h, dialect, text: text.into(), flags: flags.into(), value: value.clone(), referenced: false };
        if s.slots.len() < self.per_shard {
            s.slots.push(slot);
            let i = s.slots.len() - 1;
            s.index.insert(h, i);
            return value;
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
            return value;
        }
    }

    #[cfg(test)]
    fn keys(&self) -> Vec<String> {
        let shards = self.shards.iter().map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        shards.flat_map(|s| s.slots.iter().map(|slot| slot.text.to_string()).collect::<Vec<_>>()).collect()
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner).slots.len()).sum()
    }

    fn clear(&self) {
        for s in self.shards.iter() {
            *s.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Shard::default();
        }
    }
}

/// The skeleton of a token stream, into `out` (cleared first): every token's kind and
/// whether space preceded it, and the text of every token that is not a literal or a
/// parameter (a quoted identifier's decoded name), each text prefixed with its length (digits
/// least significant first) so the encoding is unambiguous.
///
/// [`normalize_lexed`](super::fingerprint::normalize_lexed) reads nothing else of a token
/// (literal and parameter texts only by kind), so two token streams with the same skeleton
/// render the same fingerprint and parse text: the skeleton is a sound cache key for both.
pub(crate) fn skeleton(toks: &[Tok<'_>], out: &mut String) {
    out.clear();
    for t in toks {
        let kind = t.kind as u8;
        out.push(char::from(b'A' + 2 * kind + u8::from(t.space_before)));
        let text = match t.kind {
            Kind::Str | Kind::Num | Kind::Param => continue,
            Kind::QIdent => t.name(),
            _ => t.text,
        };
        let mut n = text.len();
        loop {
            out.push(char::from(b'0' + (n % 10) as u8));
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.push(':');
        out.push_str(text);
    }
}

type Classified = (Arc<Fingerprint>, Arc<Analysis>);

/// Statements each thread remembers for [`Analyzer::classify`].
const RECENT: usize = 8;

/// A statement classified lately on this thread, by the analyzer `owner`.
struct Recent {
    owner: u64,
    dialect: Dialect,
    template: Template,
    value: Classified,
}

thread_local! {
    /// The skeleton buffer of [`Analyzer::classify`], kept between calls.
    static SKELETON: RefCell<String> = const { RefCell::new(String::new()) };
    /// The templates of the statements this thread classified last, newest first: the next
    /// statement of one of those shapes skips the lexer and the lookups (`template` module).
    /// Thread-local, so a hit takes no lock; a session's statements run on one worker thread
    /// between awaits, so its repeated shapes hit.
    static RECENTS: RefCell<Vec<Recent>> = const { RefCell::new(Vec::new()) };
}

/// Analyzer identities (a thread's remembered statements belong to one analyzer).
static NEXT_ANALYZER: AtomicU64 = AtomicU64::new(1);

/// Thread-safe analysis cache; share it behind an `Arc` (all methods take `&self`).
pub struct Analyzer {
    shape: Level<Arc<Analysis>>,
    exact: Level<Classified>,
    skeleton: Level<Classified>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// This analyzer's identity in the threads' remembered statements (new after `clear`).
    id: AtomicU64,
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
    /// A cache holding at most `capacity` analyses per level (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        Self {
            shape: Level::new(capacity),
            exact: Level::new(capacity),
            skeleton: Level::new(capacity),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            id: AtomicU64::new(NEXT_ANALYZER.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// Maximum number of cached shapes.
    pub fn capacity(&self) -> usize {
        self.shape.per_shard * self.shape.shards.len()
    }

    /// Number of cached shapes.
    pub fn len(&self) -> usize {
        self.shape.len()
    }

    /// Nothing cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.exact.len() == 0 && self.skeleton.len() == 0
    }

    /// Lookups answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that had to parse (each one ran sqlparser).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Every key held by the three levels.
    #[cfg(test)]
    pub(crate) fn cached_keys(&self) -> Vec<String> {
        [self.shape.keys(), self.exact.keys(), self.skeleton.keys()].concat()
    }

    /// Drop every cached analysis.
    pub fn clear(&self) {
        self.shape.clear();
        self.exact.clear();
        self.skeleton.clear();
        self.id.store(NEXT_ANALYZER.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The classification of a statement this thread classified lately with the same
    /// template (its text around other plain literals).
    fn recent(&self, sql: &str, dialect: Dialect) -> Option<Classified> {
        let id = self.id.load(Ordering::Relaxed);
        RECENTS.with(|r| {
            let mut r = r.borrow_mut();
            let i = r.iter().position(|e| e.owner == id && e.dialect == dialect && e.template.matches(sql))?;
            r[..=i].rotate_right(1);
            Some(r[0].value.clone())
        })
    }

    /// Remember a statement's classification on this thread.
    fn remember(&self, dialect: Dialect, template: Template, value: &Classified) {
        if self.shape.per_shard == 0 || template.len() > MAX_CACHED_TEXT {
            return;
        }
        let owner = self.id.load(Ordering::Relaxed);
        RECENTS.with(|r| {
            let mut r = r.borrow_mut();
            if r.len() >= RECENT {
                r.pop();
            }
            r.insert(0, Recent { owner, dialect, template, value: value.clone() });
        });
    }

    /// Analyse `sql`, reusing the analysis of any earlier statement of the same shape.
    pub fn analyze_cached(&self, sql: &str, dialect: Dialect) -> Arc<Analysis> {
        let cacheable = sql.len() <= MAX_CACHED_TEXT;
        let h = key_hash(dialect, sql, &[]);
        if cacheable {
            if let Some(v) = self.exact.get(h, dialect, sql, &[]) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return v.1;
            }
        }
        let n = normalize(sql, dialect, Render::Text);
        let analysis = self.shape_lookup(&n, dialect);
        if cacheable && n.error.is_none() && n.literals == 0 {
            // Once per distinct text: the fingerprint pass the exact entry needs.
            let fp = Arc::new(normalize(sql, dialect, Render::Fingerprint).fingerprint());
            return self.exact.insert(h, dialect, sql, &[], (fp, analysis)).1;
        }
        analysis
    }

    /// Fingerprint and analysis of `sql` from at most one lexer pass (what the proxy needs per
    /// statement: the fingerprint for the audit record, the analysis for the policy).
    pub fn classify(&self, sql: &str, dialect: Dialect) -> (Arc<Fingerprint>, Arc<Analysis>) {
        let cacheable = sql.len() <= MAX_CACHED_TEXT && self.shape.per_shard > 0;
        if cacheable {
            if let Some(v) = self.recent(sql, dialect) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return v;
            }
        }
        let h = key_hash(dialect, sql, &[]);
        if cacheable {
            if let Some(v) = self.exact.get(h, dialect, sql, &[]) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.remember(dialect, Template::exact(sql), &v);
                return v;
            }
        }
        let lexed = lex(sql, dialect);
        let render = |this: &Self| {
            let n = normalize_lexed(&lexed, sql.len(), dialect, Render::Both);
            let analysis = this.shape_lookup(&n, dialect);
            let literals = n.literals;
            ((Arc::new(n.fingerprint()), analysis), literals)
        };
        // Below, the lexer found no error: what is cached never depends on one.
        if !cacheable || lexed.error.is_some() {
            return render(self).0;
        }
        let mut key = SKELETON.with(|k| std::mem::take(&mut *k.borrow_mut()));
        skeleton(&lexed.toks, &mut key);
        let sh = key_hash(dialect, &key, &[]);
        let found = self.skeleton.get(sh, dialect, &key, &[]);
        let value = match found {
            Some(v) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                v
            }
            None => match render(self) {
                (v, 0) => self.exact.insert(h, dialect, sql, &[], v),
                (v, _) if key.len() <= MAX_CACHED_TEXT => self.skeleton.insert(sh, dialect, &key, &[], v),
                (v, _) => {
                    SKELETON.with(|k| *k.borrow_mut() = key);
                    return v;
                }
            },
        };
        SKELETON.with(|k| *k.borrow_mut() = key);
        self.remember(dialect, Template::from_tokens(sql, &lexed.toks), &value);
        value
    }

    fn shape_lookup(&self, n: &Normalized, dialect: Dialect) -> Arc<Analysis> {
        // A lexer error is not part of the key: such input is never cached (it is denied anyway).
        if n.text.len() > MAX_CACHED_TEXT || n.error.is_some() {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Arc::new(analyze_normalized(n, dialect));
        }
        let flags = flags_of(n);
        let h = key_hash(dialect, &n.text, &flags);
        if let Some(v) = self.shape.get(h, dialect, &n.text, &flags) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return v;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let value = Arc::new(analyze_normalized(n, dialect));
        self.shape.insert(h, dialect, &n.text, &flags, value)
    }
}
