//! Redis command table for governance: each command's classes (read, write, admin, dangerous,
//! pubsub, scripting, transaction, connection) and where its keys are, including multi-key
//! commands (MGET, MSET, DEL, RENAME, SUNIONSTORE, EVAL's numkeys, XREAD ... STREAMS).
//! Pure data + lookups; the Redis session turns the result into an `Action` for the policy.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Where a command's key arguments are (argument 0 is the command name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// No keys.
    NoKeys,
    /// Keys at `first`, `first+step`, ... up to `last` (negative: counted from the end, -1 =
    /// last argument).
    Range(usize, isize, usize),
    /// `numkeys` at argument `at`, keys right after it; `dest` names a destination key before it.
    NumKeys {
        /// Index of the numkeys argument.
        at: usize,
        /// Index of a destination key, if any.
        dest: Option<usize>,
    },
    /// XREAD / XREADGROUP: after `STREAMS`, the first half of the remaining arguments.
    Streams,
    /// SORT / SORT_RO: key 1 plus the `STORE` destination.
    Sort,
    /// MIGRATE: key 3, or the arguments after `KEYS` when key 3 is empty.
    Migrate,
    /// OBJECT / MEMORY USAGE / DEBUG OBJECT: key at argument 2.
    Second,
}

/// What the table knows about one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandInfo {
    /// Lower-case name, as rules spell statement kinds.
    pub name: &'static str,
    /// Classes, e.g. `["write", "dangerous", "admin"]`.
    pub classes: &'static [&'static str],
    /// Key positions.
    pub keys: KeySpec,
    /// The command's audit fields `,"kind":"<first class>","fingerprint":"<NAME>"`, rendered
    /// once with the table, which lives as long as the process (a session appends them to each
    /// record of this command).
    pub audit_head: &'static [u8],
}

use KeySpec::*;
const R: &[&str] = &["read"];
const W: &[&str] = &["write"];
const A: &[&str] = &["admin"];
const D: &[&str] = &["dangerous", "admin"];
const DW: &[&str] = &["dangerous", "admin", "write"];
const DR: &[&str] = &["dangerous", "read"];
const S: &[&str] = &["scripting", "dangerous", "write"];
const P: &[&str] = &["pubsub"];
const T: &[&str] = &["transaction"];
const C: &[&str] = &["connection"];
const ONE: KeySpec = Range(1, 1, 1);
const ALL: KeySpec = Range(1, -1, 1);
const TWO: KeySpec = Range(1, 2, 1);

#[rustfmt::skip]
const TABLE: &[(&str, &[&str], KeySpec)] = &[
    // strings
    ("get", R, ONE), ("getrange", R, ONE), ("strlen", R, ONE), ("mget", R, ALL), ("substr", R, ONE),
    ("lcs", R, TWO), ("getex", W, ONE), ("getdel", W, ONE), ("getset", W, ONE),
    ("set", W, ONE), ("setnx", W, ONE), ("setex", W, ONE), ("psetex", W, ONE), ("setrange", W, ONE),
    ("append", W, ONE), ("incr", W, ONE), ("decr", W, ONE), ("incrby", W, ONE), ("decrby", W, ONE),
    ("incrbyfloat", W, ONE), ("mset", W, Range(1, -1, 2)), ("msetnx", W, Range(1, -1, 2)),
    // keys
    ("exists", R, ALL), ("type", R, ONE), ("ttl", R, ONE), ("pttl", R, ONE), ("expiretime", R, ONE),
    ("pexpiretime", R, ONE), ("dump", R, ONE), ("touch", R, ALL), ("randomkey", R, NoKeys), ("scan", R, NoKeys),
    ("del", W, ALL), ("unlink", W, ALL), ("expire", W, ONE), ("pexpire", W, ONE), ("expireat", W, ONE),
    ("pexpireat", W, ONE), ("persist", W, ONE), ("rename", W, TWO), ("renamenx", W, TWO), ("copy", W, TWO),
    ("move", W, ONE), ("restore", W, ONE), ("sort", W, Sort), ("sort_ro", R, ONE), ("object", R, Second),
    ("keys", DR, NoKeys), ("migrate", DW, Migrate), ("wait", R, NoKeys), ("waitaof", R, NoKeys),
    // hashes
    ("hget", R, ONE), ("hmget", R, ONE), ("hgetall", R, ONE), ("hkeys", R, ONE), ("hvals", R, ONE),
    ("hlen", R, ONE), ("hexists", R, ONE), ("hstrlen", R, ONE), ("hrandfield", R, ONE), ("hscan", R, ONE),
    ("hset", W, ONE), ("hsetnx", W, ONE), ("hmset", W, ONE), ("hdel", W, ONE), ("hincrby", W, ONE),
    ("hincrbyfloat", W, ONE),
    // lists
    ("lrange", R, ONE), ("lindex", R, ONE), ("llen", R, ONE), ("lpos", R, ONE),
    ("lpush", W, ONE), ("rpush", W, ONE), ("lpushx", W, ONE), ("rpushx", W, ONE), ("lpop", W, ONE),
    ("rpop", W, ONE), ("lset", W, ONE), ("linsert", W, ONE), ("lrem", W, ONE), ("ltrim", W, ONE),
    ("rpoplpush", W, TWO), ("lmove", W, TWO), ("blmove", W, TWO), ("brpoplpush", W, TWO),
    ("blpop", W, Range(1, -2, 1)), ("brpop", W, Range(1, -2, 1)), ("lmpop", W, NumKeys { at: 1, dest: None }),
    ("blmpop", W, NumKeys { at: 2, dest: None }),
    // sets
    ("smembers", R, ONE), ("sismember", R, ONE), ("smismember", R, ONE), ("scard", R, ONE),
    ("srandmember", R, ONE), ("sscan", R, ONE), ("sinter", R, ALL), ("sunion", R, ALL), ("sdiff", R, ALL),
    ("sintercard", R, NumKeys { at: 1, dest: None }),
    ("sadd", W, ONE), ("srem", W, ONE), ("spop", W, ONE), ("smove", W, TWO), ("sinterstore", W, ALL),
    ("sunionstore", W, ALL), ("sdiffstore", W, ALL),
    // sorted sets
    ("zrange", R, ONE), ("zrangebyscore", R, ONE), ("zrevrange", R, ONE), ("zrevrangebyscore", R, ONE),
    ("zrangebylex", R, ONE), ("zrevrangebylex", R, ONE), ("zscore", R, ONE), ("zmscore", R, ONE),
    ("zrank", R, ONE), ("zrevrank", R, ONE), ("zcard", R, ONE), ("zcount", R, ONE), ("zlexcount", R, ONE),
    ("zscan", R, ONE), ("zrandmember", R, ONE), ("zunion", R, NumKeys { at: 1, dest: None }),
    ("zinter", R, NumKeys { at: 1, dest: None }), ("zdiff", R, NumKeys { at: 1, dest: None }),
    ("zintercard", R, NumKeys { at: 1, dest: None }),
    ("zadd", W, ONE), ("zincrby", W, ONE), ("zrem", W, ONE), ("zremrangebyscore", W, ONE),
    ("zremrangebyrank", W, ONE), ("zremrangebylex", W, ONE), ("zpopmin", W, ONE), ("zpopmax", W, ONE),
    ("bzpopmin", W, Range(1, -2, 1)), ("bzpopmax", W, Range(1, -2, 1)), ("zrangestore", W, TWO),
    ("zmpop", W, NumKeys { at: 1, dest: None }), ("bzmpop", W, NumKeys { at: 2, dest: None }),
    ("zunionstore", W, NumKeys { at: 2, dest: Some(1) }), ("zinterstore", W, NumKeys { at: 2, dest: Some(1) }),
    ("zdiffstore", W, NumKeys { at: 2, dest: Some(1) }),
    // streams
    ("xrange", R, ONE), ("xrevrange", R, ONE), ("xlen", R, ONE), ("xinfo", R, Second), ("xpending", R, ONE),
    ("xread", R, Streams), ("xreadgroup", W, Streams), ("xadd", W, ONE), ("xdel", W, ONE), ("xtrim", W, ONE),
    ("xack", W, ONE), ("xclaim", W, ONE), ("xautoclaim", W, ONE), ("xgroup", W, Second), ("xsetid", W, ONE),
    // bitmaps, hyperloglog, geo
    ("getbit", R, ONE), ("bitcount", R, ONE), ("bitpos", R, ONE), ("bitfield_ro", R, ONE),
    ("setbit", W, ONE), ("bitfield", W, ONE), ("bitop", W, Range(2, -1, 1)),
    ("pfcount", R, ALL), ("pfadd", W, ONE), ("pfmerge", W, ALL),
    ("geopos", R, ONE), ("geodist", R, ONE), ("geohash", R, ONE), ("geosearch", R, ONE),
    ("georadius_ro", R, ONE), ("georadiusbymember_ro", R, ONE), ("geoadd", W, ONE), ("geosearchstore", W, TWO),
    ("georadius", W, ONE), ("georadiusbymember", W, ONE),
    // scripting and functions
    ("eval", S, NumKeys { at: 2, dest: None }), ("evalsha", S, NumKeys { at: 2, dest: None }),
    ("eval_ro", S, NumKeys { at: 2, dest: None }), ("evalsha_ro", S, NumKeys { at: 2, dest: None }),
    ("fcall", S, NumKeys { at: 2, dest: None }), ("fcall_ro", S, NumKeys { at: 2, dest: None }),
    ("script", D, NoKeys), ("function", D, NoKeys),
    // pub/sub, transactions, connection
    ("publish", P, NoKeys), ("spublish", P, NoKeys), ("subscribe", P, NoKeys), ("psubscribe", P, NoKeys),
    ("ssubscribe", P, NoKeys), ("unsubscribe", P, NoKeys), ("punsubscribe", P, NoKeys), ("sunsubscribe", P, NoKeys),
    ("pubsub", P, NoKeys),
    ("multi", T, NoKeys), ("exec", T, NoKeys), ("discard", T, NoKeys), ("watch", T, ALL), ("unwatch", T, NoKeys),
    ("auth", C, NoKeys), ("hello", C, NoKeys), ("ping", C, NoKeys), ("echo", C, NoKeys), ("select", C, NoKeys),
    ("quit", C, NoKeys), ("reset", C, NoKeys), ("client", C, NoKeys),
    // server
    ("info", A, NoKeys), ("dbsize", R, NoKeys), ("time", R, NoKeys), ("lastsave", A, NoKeys), ("command", C, NoKeys),
    ("memory", A, Second), ("latency", A, NoKeys), ("slowlog", A, NoKeys), ("role", A, NoKeys), ("lolwut", R, NoKeys),
    ("flushall", DW, NoKeys), ("flushdb", DW, NoKeys), ("config", D, NoKeys), ("debug", D, NoKeys),
    ("shutdown", D, NoKeys), ("save", D, NoKeys), ("bgsave", D, NoKeys), ("bgrewriteaof", D, NoKeys),
    ("replicaof", D, NoKeys), ("slaveof", D, NoKeys), ("acl", D, NoKeys), ("monitor", D, NoKeys), ("module", D, NoKeys),
    ("swapdb", DW, NoKeys), ("failover", D, NoKeys), ("sync", D, NoKeys), ("psync", D, NoKeys),
    ("cluster", A, NoKeys), ("readonly", C, NoKeys), ("readwrite", C, NoKeys),
];

/// The classes every unknown command gets: treated as a dangerous admin command, so that a
/// `dangerous` deny rule also covers commands newer than this table (fail closed).
pub const UNKNOWN_CLASSES: &[&str] = &["unknown", "dangerous", "admin", "write"];

/// FNV-1a: the table is looked up once per command with names of a few bytes, where SipHash's
/// setup dominates; the keys are the fixed command names, so flooding is not a concern.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Table = HashMap<&'static str, CommandInfo, std::hash::BuildHasherDefault<Fnv>>;

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        TABLE
            .iter()
            .map(|&(name, classes, keys)| {
                let mut head = Vec::new();
                crate::audit::raw::field_str(&mut head, "kind", classes.first().copied().unwrap_or_default());
                crate::audit::raw::field_str(&mut head, "fingerprint", &name.to_ascii_uppercase());
                (name, CommandInfo { name, classes, keys, audit_head: Box::leak(head.into_boxed_slice()) })
            })
            .collect()
    })
}

/// Look up a command by name (any case).
pub fn lookup(name: &[u8]) -> Option<&'static CommandInfo> {
    let mut buf = [0u8; 32];
    let b = buf.get_mut(..name.len())?;
    for (d, s) in b.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    table().get(std::str::from_utf8(b).ok()?)
}

/// Statement kinds without allocating: the lower-case name (`lower` for a command missing
/// from the table, `info.name` otherwise) followed by its classes, in `out`; returns how many.
pub fn kinds_into<'a>(info: Option<&'static CommandInfo>, lower: &'a str, out: &mut [&'a str; 5]) -> usize {
    let (name, classes) = match info {
        Some(i) => (i.name, i.classes),
        None => (lower, UNKNOWN_CLASSES),
    };
    out[0] = name;
    for (d, c) in out[1..].iter_mut().zip(classes) {
        *d = c;
    }
    1 + classes.len().min(4)
}

/// Statement kinds for a rule check: the lower-case name followed by its classes.
pub fn kinds(argv: &[&[u8]]) -> Vec<String> {
    let name = argv.first().map(|n| String::from_utf8_lossy(n).to_lowercase()).unwrap_or_default();
    let classes = lookup(name.as_bytes()).map_or(UNKNOWN_CLASSES, |i| i.classes);
    std::iter::once(name).chain(classes.iter().map(|c| (*c).to_owned())).collect()
}

/// Write-class commands that cannot make the dataset bigger: deletes, expiries, pops, trims,
/// renames and moves, and the read-only script variants. Like Redis's own `denyoom` flag,
/// a memory budget lets these through.
#[rustfmt::skip]
const NO_GROWTH: &[&str] = &[
    "del", "unlink", "expire", "pexpire", "expireat", "pexpireat", "persist", "getdel", "getex", "rename",
    "renamenx", "move", "hdel", "lpop", "rpop", "lmpop", "blpop", "brpop", "blmpop", "lrem", "ltrim", "srem", "spop",
    "smove", "zrem", "zremrangebyscore", "zremrangebyrank", "zremrangebylex", "zpopmin", "zpopmax", "bzpopmin",
    "bzpopmax", "zmpop", "bzmpop", "xdel", "xtrim", "xack", "xclaim", "xautoclaim", "xreadgroup", "flushall",
    "flushdb", "swapdb", "eval_ro", "evalsha_ro", "fcall_ro",
];

/// Whether a command may grow the dataset: every `write`-class command of the table except
/// [`NO_GROWTH`]; unknown commands count as writes (fail closed).
pub fn may_grow_memory(name: &[u8]) -> bool {
    match lookup(name) {
        None => true,
        Some(i) => i.classes.contains(&"write") && !NO_GROWTH.contains(&i.name),
    }
}

fn numkeys(argv: &[&[u8]], at: usize) -> usize {
    argv.get(at).and_then(|n| std::str::from_utf8(n).ok()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The key arguments of a command (empty for unknown commands and malformed argument lists).
pub fn keys<'a>(argv: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    if let Some(info) = argv.first().and_then(|n| lookup(n)) {
        each_key(info, argv, |k| out.push(k));
    }
    out
}

/// Calls `f` with each key argument of `argv`, a command described by `info`, in order
/// (what [`keys`] collects, without allocating).
pub fn each_key<'a>(info: &CommandInfo, argv: &[&'a [u8]], mut f: impl FnMut(&'a [u8])) {
    let n = argv.len();
    let out = &mut f;
    match info.keys {
        NoKeys => {}
        Range(first, last, step) => {
            let last = if last < 0 { n as isize + last } else { last };
            let mut i = first as isize;
            while i <= last && (i as usize) < n {
                out(argv[i as usize]);
                i += step as isize;
            }
        }
        NumKeys { at, dest } => {
            if let Some(d) = dest.and_then(|d| argv.get(d)) {
                out(d);
            }
            let k = numkeys(argv, at);
            argv.iter().skip(at + 1).take(k).for_each(|k| out(k));
        }
        Streams => {
            if let Some(p) = argv.iter().position(|a| a.eq_ignore_ascii_case(b"STREAMS")) {
                let rest = &argv[p + 1..];
                rest.iter().take(rest.len() / 2).for_each(|k| out(k));
            }
        }
        Sort => {
            argv.get(1).into_iter().for_each(|k| out(k));
            if let Some(p) = argv.iter().position(|a| a.eq_ignore_ascii_case(b"STORE")) {
                argv.get(p + 1).into_iter().for_each(|k| out(k));
            }
        }
        Migrate => match argv.get(3) {
            Some(k) if !k.is_empty() => out(k),
            _ => {
                if let Some(p) = argv.iter().position(|a| a.eq_ignore_ascii_case(b"KEYS")) {
                    argv[p + 1..].iter().for_each(|k| out(k));
                }
            }
        },
        Second => argv.get(2).into_iter().for_each(|k| out(k)),
    }
}

/// Whether a reply may carry hash field values that masking must look at, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskShape {
    /// No value to mask.
    None,
    /// One string value of the key (GET, GETEX, GETDEL, GETSET).
    StringValue,
    /// One value per key, in order (MGET).
    StringValues,
    /// One hash field value (HGET field).
    HashField,
    /// Values of the named fields, in order (HMGET).
    HashFields,
    /// Field/value pairs (HGETALL; HRANDFIELD ... WITHVALUES).
    HashPairs,
}

/// How the reply of `argv` is shaped for masking.
pub fn mask_shape(argv: &[&[u8]]) -> MaskShape {
    let Some(info) = argv.first().and_then(|n| lookup(n)) else { return MaskShape::None };
    match info.name {
        "get" | "getex" | "getdel" | "getset" => MaskShape::StringValue,
        "mget" => MaskShape::StringValues,
        "hget" => MaskShape::HashField,
        "hmget" => MaskShape::HashFields,
        "hgetall" => MaskShape::HashPairs,
        "hrandfield" if argv.iter().any(|a| a.eq_ignore_ascii_case(b"WITHVALUES")) => MaskShape::HashPairs,
        _ => MaskShape::None,
    }
}

/// What a command does with the stored values of its keys, for a role whose view masks Redis
/// data. Masking is fail-closed: a command that would return (or copy elsewhere) the value of a
/// key with masked content in a form dgf does not mask is refused for that role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueUse {
    /// The reply carries no stored value and nothing is copied to another key: key metadata,
    /// deletes, and writes that answer OK, a count or a length.
    Safe,
    /// The reply carries values in a shape dgf masks ([`mask_shape`]).
    Masked,
    /// HINCRBY / HINCRBYFLOAT: the reply is the new value of the field at argument 2.
    Field,
    /// Values leave unmasked (GETRANGE, HVALS, HSCAN, DUMP, COPY, RENAME, SET ... GET, LRANGE,
    /// ...): refused when one of the keys has masked content.
    Exposes,
    /// Reads keys that are not in its arguments (scripts, functions, SORT ... BY/GET patterns),
    /// or other clients' commands and data (MONITOR, SLOWLOG, SYNC), or a command dgf does not
    /// know: refused whenever the role masks anything in Redis.
    Anything,
}

/// How `argv` uses stored values (see [`ValueUse`]).
pub fn value_use(argv: &[&[u8]]) -> ValueUse {
    let Some(info) = argv.first().and_then(|n| lookup(n)) else { return ValueUse::Anything };
    // An option word among the arguments from `from` on (not the key, not SET's value).
    let has = |from: usize, word: &[u8]| argv.iter().skip(from).any(|a| a.eq_ignore_ascii_case(word));
    match info.name {
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" | "monitor" | "sync" | "psync"
        | "slowlog" => ValueUse::Anything,
        "sort" | "sort_ro" if has(2, b"BY") || has(2, b"GET") => ValueUse::Anything,
        "set" if has(3, b"GET") => ValueUse::Exposes,
        "hincrby" | "hincrbyfloat" => ValueUse::Field,
        "hrandfield" if !has(3, b"WITHVALUES") => ValueUse::Safe,
        "exists" | "type" | "ttl" | "pttl" | "expiretime" | "pexpiretime" | "touch" | "del" | "unlink" | "expire"
        | "pexpire" | "expireat" | "pexpireat" | "persist" | "object" | "memory" | "strlen" | "hstrlen" | "hlen"
        | "hexists" | "hkeys" | "hset" | "hsetnx" | "hmset" | "hdel" | "set" | "setnx" | "setex" | "psetex"
        | "mset" | "msetnx" | "append" | "setrange" | "restore" | "llen" | "scard" | "zcard" | "xlen" | "lpush"
        | "rpush" | "lpushx" | "rpushx" | "sadd" | "srem" | "ltrim" | "xadd" | "xdel" | "xtrim" | "pfadd" => {
            ValueUse::Safe
        }
        _ if mask_shape(argv) != MaskShape::None => ValueUse::Masked,
        _ => ValueUse::Exposes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_heads_name_the_first_class_and_the_upper_case_name() {
        for &(name, classes, _) in TABLE {
            let info = lookup(name.as_bytes()).unwrap();
            let text = format!("{{\"x\":0{}}}", std::str::from_utf8(info.audit_head).unwrap());
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["kind"], classes.first().copied().unwrap_or_default(), "{name}");
            assert_eq!(v["fingerprint"], name.to_uppercase(), "{name}");
        }
    }

    fn k<'a>(args: &[&'a str]) -> Vec<&'a str> {
        let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        keys(&argv).into_iter().map(|b| std::str::from_utf8(b).unwrap()).collect()
    }

    #[test]
    fn key_extraction() {
        assert_eq!(k(&["GET", "a"]), ["a"]);
        assert_eq!(k(&["mget", "a", "b", "c"]), ["a", "b", "c"]);
        assert_eq!(k(&["MSET", "a", "1", "b", "2"]), ["a", "b"]);
        assert_eq!(k(&["DEL", "a", "b"]), ["a", "b"]);
        assert_eq!(k(&["RENAME", "a", "b"]), ["a", "b"]);
        assert_eq!(k(&["SUNIONSTORE", "d", "a", "b"]), ["d", "a", "b"]);
        assert_eq!(k(&["EVAL", "return 1", "2", "k1", "k2", "arg"]), ["k1", "k2"]);
        assert_eq!(k(&["EVAL", "return 1", "99", "k1"]), ["k1"]);
        assert_eq!(k(&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"]), ["d", "a", "b"]);
        assert_eq!(k(&["XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"]), ["s1", "s2"]);
        assert_eq!(k(&["BLPOP", "a", "b", "0"]), ["a", "b"]);
        assert_eq!(k(&["BLMPOP", "0", "2", "a", "b", "LEFT"]), ["a", "b"]);
        assert_eq!(k(&["SORT", "a", "STORE", "d"]), ["a", "d"]);
        assert_eq!(k(&["MIGRATE", "h", "6379", "", "0", "5000", "KEYS", "a", "b"]), ["a", "b"]);
        assert_eq!(k(&["OBJECT", "ENCODING", "a"]), ["a"]);
        assert_eq!(k(&["BITOP", "AND", "d", "a", "b"]), ["d", "a", "b"]);
        assert!(k(&["FLUSHALL"]).is_empty());
        assert!(k(&["NOSUCH", "a"]).is_empty());
    }

    #[test]
    fn classes() {
        assert_eq!(kinds(&[b"GET", b"k"]), ["get", "read"]);
        assert_eq!(kinds(&[b"FlushAll"]), ["flushall", "dangerous", "admin", "write"]);
        assert_eq!(kinds(&[b"KEYS", b"*"]), ["keys", "dangerous", "read"]);
        assert!(kinds(&[b"EVAL"]).contains(&"dangerous".to_owned()));
        assert_eq!(kinds(&[b"NEWCMD"]), ["newcmd", "unknown", "dangerous", "admin", "write"]);
        for (name, classes, _) in TABLE {
            assert!(!classes.is_empty(), "{name}");
            assert_eq!(name.to_lowercase(), *name);
        }
        assert_eq!(table().len(), TABLE.len(), "duplicate command in the table");
    }

    #[test]
    fn memory_growth() {
        for grows in ["SET", "set", "hset", "lpush", "sadd", "zadd", "xadd", "append", "incr", "eval", "mset", "NOSUCH"]
        {
            assert!(may_grow_memory(grows.as_bytes()), "{grows}");
        }
        for not in ["GET", "del", "UNLINK", "expire", "hdel", "lpop", "ltrim", "flushall", "ping", "info", "eval_ro"] {
            assert!(!may_grow_memory(not.as_bytes()), "{not}");
        }
        for name in NO_GROWTH {
            assert!(table().contains_key(name), "{name} is not in the table");
        }
    }

    #[test]
    fn kinds_without_allocating() {
        let mut out = [""; 5];
        let n = kinds_into(lookup(b"GET"), "", &mut out);
        assert_eq!(&out[..n], ["get", "read"]);
        let n = kinds_into(lookup(b"NEWCMD"), "newcmd", &mut out);
        assert_eq!(&out[..n], kinds(&[b"NEWCMD"]));
        let mut seen = Vec::new();
        each_key(lookup(b"MSET").unwrap(), &[b"MSET", b"a", b"1", b"b", b"2"], |k| seen.push(k));
        assert_eq!(seen, [&b"a"[..], b"b"]);
    }

    #[test]
    fn value_uses() {
        let u = |args: &[&str]| value_use(&args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>());
        assert_eq!(u(&["GET", "k"]), ValueUse::Masked);
        assert_eq!(u(&["hgetall", "k"]), ValueUse::Masked);
        assert_eq!(u(&["HRANDFIELD", "k", "2"]), ValueUse::Safe);
        assert_eq!(u(&["HRANDFIELD", "k", "2", "WithValues"]), ValueUse::Masked);
        assert_eq!(u(&["SET", "k", "v"]), ValueUse::Safe);
        assert_eq!(u(&["SET", "k", "v", "get"]), ValueUse::Exposes);
        assert_eq!(u(&["SET", "get", "get"]), ValueUse::Safe, "a key or value named get is not the option");
        for c in ["GETRANGE", "SUBSTR", "LCS", "DUMP", "COPY", "RENAME", "HVALS", "HSCAN", "LRANGE", "GETBIT", "INCR"] {
            assert_eq!(u(&[c, "k", "x", "y"]), ValueUse::Exposes, "{c}");
        }
        assert_eq!(u(&["HINCRBY", "k", "f", "1"]), ValueUse::Field);
        assert_eq!(u(&["SORT", "k"]), ValueUse::Exposes);
        assert_eq!(u(&["SORT", "k", "GET", "user:*->email"]), ValueUse::Anything);
        for c in ["EVAL", "FCALL", "MONITOR", "JSON.GET", "slowlog"] {
            assert_eq!(u(&[c, "k"]), ValueUse::Anything, "{c}");
        }
    }

    #[test]
    fn mask_shapes() {
        assert_eq!(mask_shape(&[b"HRANDFIELD", b"h", b"2", b"withvalues"]), MaskShape::HashPairs);
        assert_eq!(mask_shape(&[b"HRANDFIELD", b"h", b"2"]), MaskShape::None);
        assert_eq!(mask_shape(&[b"getdel", b"k"]), MaskShape::StringValue);
    }
}
