//! Governance for Redis commands: the facts a rule check needs (kinds = name + classes, keys)
//! from the rules crate's command table, and masking of string values and hash fields in
//! RESP2 and RESP3 replies (GET, MGET, GETEX, GETDEL, HGET, HMGET, HGETALL, HRANDFIELD
//! WITHVALUES).

use super::commands;
use crate::governance::{DecisionCounters, Governance, KeyMac};
use dgf_protocols::redis::value::enc;
use dgf_protocols::redis::{decode, Limits, Value};
use dgf_rules::audit::{now_millis, raw};
use dgf_rules::mask::MaskFn;
use dgf_rules::redis::{each_key, keys, kinds, kinds_into, lookup, mask_shape, MaskShape};
use dgf_rules::{Action, FieldRef, Namespace, Policy, RoleView};
use hmac::Mac;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Instant;

/// What the policy is asked about one command.
pub struct Facts<'a> {
    /// Lower-case command name followed by its classes.
    pub kinds: Vec<String>,
    /// Key arguments.
    pub keys: Vec<&'a [u8]>,
}

/// Facts for `argv` (argument 0 is the command name).
pub fn facts<'a>(argv: &[&'a [u8]]) -> Facts<'a> {
    Facts { kinds: kinds(argv), keys: keys(argv) }
}

/// Resolves the mask for a key's string value (`field` None) or one of its hash fields.
pub type Resolver = Arc<dyn Fn(&[u8], Option<&[u8]>) -> Option<MaskFn> + Send + Sync>;

/// How to mask one command's reply.
pub enum MaskPlan {
    /// Bulk strings at these positions (a single value, or the elements of an array).
    Positional(Vec<Option<MaskFn>>),
    /// Field/value pairs of hash `key` (flat RESP2 array, RESP3 map, or RESP3 array of pairs).
    Pairs(Vec<u8>, Resolver),
    /// EXEC: element i of the reply array is the reply of the i-th queued command.
    Exec(Vec<Option<MaskPlan>>),
}

/// The plan for `argv`, or None when nothing in its reply can need masking.
pub fn plan(argv: &[&[u8]], resolve: &Resolver) -> Option<MaskPlan> {
    let key = argv.get(1).copied().unwrap_or_default();
    let p = match mask_shape(argv) {
        MaskShape::None => return None,
        MaskShape::StringValue => MaskPlan::Positional(vec![resolve(key, None)]),
        MaskShape::StringValues => MaskPlan::Positional(argv[1..].iter().map(|k| resolve(k, None)).collect()),
        MaskShape::HashField => MaskPlan::Positional(vec![resolve(key, argv.get(2).copied())]),
        MaskShape::HashFields => MaskPlan::Positional(argv.iter().skip(2).map(|f| resolve(key, Some(f))).collect()),
        MaskShape::HashPairs => return Some(MaskPlan::Pairs(key.to_vec(), resolve.clone())),
    };
    match &p {
        MaskPlan::Positional(v) if v.iter().all(Option::is_none) => None,
        _ => Some(p),
    }
}

fn masked(out: &mut Vec<u8>, f: &MaskFn, v: &Value<'_>, proto: u8) -> bool {
    let Some(b) = v.as_bytes() else { return false };
    match f.apply_str(&String::from_utf8_lossy(b)) {
        Some(s) => enc::bulk(out, s.as_bytes()),
        None => enc::null(out, proto),
    }
    true
}

fn put(out: &mut Vec<u8>, f: Option<&MaskFn>, v: &Value<'_>, proto: u8) {
    if !f.is_some_and(|f| masked(out, f, v, proto)) {
        v.encode(out);
    }
}

/// Apply `plan` to one complete reply; None when the reply is left as it is (errors, nil,
/// unexpected shapes).
pub fn apply(plan: &MaskPlan, reply: &[u8], proto: u8) -> Option<Vec<u8>> {
    let (v, _) = decode(reply, &Limits::SERVER).ok()??;
    let mut out = Vec::with_capacity(reply.len());
    match (plan, &v) {
        (MaskPlan::Positional(fs), Value::Bulk(Some(_)) | Value::Verbatim(_)) => {
            put(&mut out, fs.first()?.as_ref(), &v, proto)
        }
        (MaskPlan::Positional(fs), Value::Array(Some(items))) => {
            enc::array(&mut out, items.len());
            for (i, item) in items.iter().enumerate() {
                put(&mut out, fs.get(i).and_then(Option::as_ref), item, proto);
            }
        }
        (MaskPlan::Exec(plans), Value::Array(Some(items))) => {
            enc::array(&mut out, items.len());
            let mut one = Vec::new();
            for (i, item) in items.iter().enumerate() {
                one.clear();
                item.encode(&mut one);
                match plans.get(i).and_then(Option::as_ref).and_then(|p| apply(p, &one, proto)) {
                    Some(m) => out.extend_from_slice(&m),
                    None => out.extend_from_slice(&one),
                }
            }
        }
        (MaskPlan::Pairs(key, r), Value::Map(pairs)) => {
            out.extend_from_slice(format!("%{}\r\n", pairs.len()).as_bytes());
            for (k, val) in pairs {
                k.encode(&mut out);
                put(&mut out, k.as_bytes().and_then(|f| r(key, Some(f))).as_ref(), val, proto);
            }
        }
        (MaskPlan::Pairs(key, r), Value::Array(Some(items))) => {
            enc::array(&mut out, items.len());
            if items.iter().all(|i| matches!(i, Value::Array(Some(p)) if p.len() == 2)) && !items.is_empty() {
                // RESP3 HRANDFIELD ... WITHVALUES: [[field, value], ...]
                for i in items {
                    let Value::Array(Some(p)) = i else { return None };
                    enc::array(&mut out, 2);
                    p[0].encode(&mut out);
                    put(&mut out, p[0].as_bytes().and_then(|f| r(key, Some(f))).as_ref(), &p[1], proto);
                }
            } else {
                for pair in items.chunks(2) {
                    pair[0].encode(&mut out);
                    if let Some(val) = pair.get(1) {
                        put(&mut out, pair[0].as_bytes().and_then(|f| r(key, Some(f))).as_ref(), val, proto);
                    }
                }
            }
        }
        _ => return None,
    }
    Some(out)
}

/// A session's view of the policy (None in the session when governance is off).
pub struct GovCtx {
    /// The policy the view came from.
    pub policy: Arc<Policy>,
    /// Rules for the user's roles on this route.
    pub view: Arc<RoleView>,
    /// Mask lookups (None when no mask rule applies to these roles).
    pub resolver: Option<Resolver>,
    /// The first enforced Redis mask rule (id, name): set when this role masks Redis data, and
    /// then commands that would expose it unmasked are refused (exposure.rs).
    pub redis_mask: Option<(usize, Arc<str>)>,
    /// The first enforced deny rule on Redis keys (id, name): set when this role has one, and
    /// then commands that can reach keys they do not name are refused (exposure.rs).
    pub redis_key_deny: Option<(usize, Arc<str>)>,
    /// Whether audit records are written.
    pub audit: bool,
    /// Whether audit records keep key names and the command line.
    pub literals: bool,
    /// Keys the hashed key names of audit records (`[audit] fingerprint_key`).
    pub key_mac: Option<KeyMac>,
    /// The last key fingerprinted for this session's records and its fingerprint (a session
    /// that works one key at a time hashes it once; rebuilt with the context on reload, so
    /// never stale against `key_mac`).
    key_memo: KeyMemo,
    /// `,"database":"N"` as last rendered, and its N (a session changes databases rarely).
    db_field: (u32, Vec<u8>),
    /// Whether a rule names keys (else the verdict depends on the command only).
    objects_matter: bool,
    /// The route's decision counters.
    counters: DecisionCounters,
}

impl GovCtx {
    /// Build for a user's roles; None when there is nothing to enforce or record.
    pub fn new(policy: &Arc<Policy>, route: &str, roles: &[String], gov: &Governance) -> Option<Self> {
        let audit = gov.auditing();
        if policy.rule_names().is_empty() && !audit {
            return None;
        }
        let view = policy.view(route, roles);
        let resolver: Option<Resolver> = view.masks_anything().then(|| {
            let v = view.clone();
            Arc::new(move |key: &[u8], field: Option<&[u8]>| {
                let key = String::from_utf8_lossy(key);
                // String values: only whole-value labels (`redis:session:*`) apply, not
                // hash-field labels of the same key pattern.
                let field = String::from_utf8_lossy(field.unwrap_or_default());
                let m = v.mask_for(&FieldRef { ns: Namespace::Redis, object: &key, field: Some(&field) })?;
                (!m.shadow).then_some(m.func)
            }) as Resolver
        });
        Some(Self {
            policy: policy.clone(),
            objects_matter: view.objects_matter(),
            redis_mask: super::exposure::first_redis_mask(&view),
            redis_key_deny: view.first_object_deny("redis:"),
            view,
            resolver,
            audit,
            literals: gov.include_literals(),
            key_mac: gov.key_mac().cloned(),
            key_memo: KeyMemo::default(),
            db_field: (0, Vec::new()),
            counters: gov.decision_counters(route),
        })
    }
}

/// A command's audit fields `database` .. `rules`, rendered at check time into a session
/// buffer (`len` bytes), and its time; the reply adds bytes, duration and error.
#[derive(Debug, Clone, Copy)]
pub struct AuditPart {
    /// Statement time, Unix milliseconds.
    pub millis: u64,
    /// Length of the rendered fields.
    pub len: usize,
}

/// What is kept about a forwarded command until its reply arrives.
pub struct Pending {
    /// Reply masking.
    pub plan: Option<MaskPlan>,
    /// Audit record to complete (its fields are next in the session's audit buffer).
    pub audit: Option<AuditPart>,
    /// When it was sent.
    pub started: Instant,
}

/// One remembered key fingerprint (see [`GovCtx`]).
#[derive(Default)]
struct KeyMemo {
    key: Vec<u8>,
    hex: [u8; 16],
}

impl KeyMemo {
    /// Keys longer than this are hashed every time (the memo stays small).
    const MAX_KEY: usize = 256;

    /// The fingerprint of `key` (16 lower-case hex digits), from the memo when it is the key
    /// of the last call.
    fn get(&mut self, key: &[u8], mac: Option<&KeyMac>) -> &[u8; 16] {
        if self.key.is_empty() || self.key != key {
            key_hash(key, mac, &mut self.hex);
            self.key.clear();
            if key.len() <= Self::MAX_KEY {
                self.key.extend_from_slice(key);
            }
        }
        &self.hex
    }
}

/// Lower-case hex of the first 8 bytes of HMAC-SHA-256(`[audit] fingerprint_key`, `key`), or
/// of SHA-256(`key`) without that key: the key fingerprint of audit records without
/// `include_literals`.
fn key_hash(key: &[u8], mac: Option<&KeyMac>, out: &mut [u8; 16]) {
    let h: [u8; 32] = match mac {
        Some(m) => {
            let mut m = m.clone();
            m.update(key);
            m.finalize().into_bytes().into()
        }
        None => Sha256::digest(key).into(),
    };
    // 16 digits: the first 8 bytes.
    dgf_rules::audit::hex_into(&h, out);
}

/// One reading of the clocks, shared by every command of a client batch: a command's audit
/// `time` and the start of its `duration_us` are when dgf read the batch that carried it
/// (two clock reads per batch instead of per command).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Monotonic time (durations).
    pub at: Instant,
    /// Wall clock, Unix milliseconds (the record's `time`).
    pub millis: u64,
}

impl Clock {
    /// Read both clocks.
    pub fn now() -> Self {
        Self { at: Instant::now(), millis: now_millis() }
    }
}

/// The outcome of checking one command (pure: nothing counted or recorded yet).
pub struct Checked {
    /// `NOPERM ...` when refused.
    pub denied: Option<String>,
    /// Reply masking.
    pub plan: Option<MaskPlan>,
    /// Audit fields rendered by [`check`].
    pub audit: Option<AuditPart>,
    /// When it was checked.
    pub started: Instant,
    verdict: dgf_rules::Verdict,
}

impl Checked {
    /// Count the decision (a refusal's audit record is the caller's). Called once the command
    /// is actually handled (not when it waits behind a barrier).
    pub fn settle(&self, g: &GovCtx, gov: &Governance) {
        let v = &self.verdict;
        if !v.hits.is_empty() || !v.shadow.is_empty() || v.deny.is_some() {
            gov.count_rules(&g.policy, v);
        }
        g.counters.inc(crate::governance::decision(v, self.plan.is_some()));
    }
}

/// `v` in decimal.
fn decimal(mut v: u32, buf: &mut [u8; 10]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or_default()
}

/// Check one command against the policy, prepare its mask plan and, with audit on, append
/// its audit fields `database` .. `rules` to `out` (see [`AuditPart`]). No heap allocation for
/// a command of the table when no rule names keys and literals are off.
pub fn check(g: &mut GovCtx, argv: &[&[u8]], db: u32, now: Clock, out: &mut Vec<u8>) -> Checked {
    let name = argv.first().copied().unwrap_or_default();
    let info = lookup(name);
    let lower = match info {
        Some(_) => String::new(),
        None => String::from_utf8_lossy(name).to_lowercase(),
    };
    let mut kinds = [""; 5];
    let n = kinds_into(info, &lower, &mut kinds);
    let kinds = &kinds[..n];
    let objects = |objects: &mut Vec<String>| {
        if let Some(info) = info {
            each_key(info, argv, |k| objects.push(format!("redis:{}", String::from_utf8_lossy(k))));
        }
    };
    let mut objs = Vec::new();
    if g.objects_matter {
        objects(&mut objs);
    }
    let action = |o: &[String]| {
        g.view.check(&Action { kinds, objects: o, fields: &[], functions: &[], flags: Default::default() })
    };
    let mut v = action(&objs);
    if v.deny.is_some() && !g.objects_matter {
        // Same verdict with the keys; its message names the first one.
        objects(&mut objs);
        v = action(&objs);
    }
    if v.deny.is_none() {
        // Fail closed: a command that would hand masked data out unmasked is refused.
        if let Some(d) = super::exposure::check(g, argv) {
            v.hits.push(d.id);
            v.deny = Some(d);
        }
    }
    // A hash read in whole is planned only when some label covers fields of that key.
    let object_mask = |k: &[u8]| {
        g.view.mask_for_object(Namespace::Redis, &String::from_utf8_lossy(k)).filter(|m| !m.shadow).map(|m| m.id)
    };
    let plan = g
        .resolver
        .as_ref()
        .and_then(|r| plan(argv, r))
        .filter(|p| !matches!(p, MaskPlan::Pairs(key, _) if object_mask(key).is_none()));
    let audit = g.audit.then(|| {
        let at = out.len();
        if g.db_field.1.is_empty() || g.db_field.0 != db {
            let mut nbuf = [0u8; 10];
            g.db_field.1.clear();
            raw::field_str(&mut g.db_field.1, "database", decimal(db, &mut nbuf));
            g.db_field.0 = db;
        }
        out.extend_from_slice(&g.db_field.1);
        match info {
            // Rendered once per command of the table: its first class and upper-case name.
            Some(info) => out.extend_from_slice(info.audit_head),
            None => {
                raw::field_str(out, "kind", kinds.get(1).copied().unwrap_or_default());
                let mut ubuf = [0u8; 32];
                // ASCII: the name upper-cased; else as Unicode does it.
                match commands::upper(name, &mut ubuf)
                    .filter(|u| u.is_ascii())
                    .and_then(|u| std::str::from_utf8(u).ok())
                {
                    Some(upper) => raw::field_str(out, "fingerprint", upper),
                    None => raw::field_str(out, "fingerprint", &kinds[0].to_uppercase()),
                }
            }
        }
        if g.literals {
            let args: Vec<_> = argv.iter().map(|a| String::from_utf8_lossy(a)).collect();
            let mut parts: Vec<&str> = Vec::with_capacity(2 * args.len());
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    parts.push(" ");
                }
                parts.push(a);
            }
            raw::field_str_parts(out, "statement", &parts);
        }
        let list = raw::list_start(out, "objects");
        if let Some(info) = info {
            each_key(info, argv, |k| {
                if g.literals {
                    raw::list_item(out, list, &["redis:", &String::from_utf8_lossy(k)]);
                } else {
                    // Hex digits: nothing to escape.
                    raw::list_item_verbatim(out, list, &[b"redis:#", g.key_memo.get(k, g.key_mac.as_ref())]);
                }
            });
        }
        raw::list_end(out);
        out.extend_from_slice(crate::governance::decision_field(&v, plan.is_some()));
        // The mask rules of the keys whose reply is masked, after the rules that decided (the
        // order of SQL and MongoDB records).
        let mut masks = Vec::new();
        if let (Some(_), Some(info)) = (&plan, info) {
            each_key(info, argv, |k| {
                let seen = |id: &usize| masks.contains(id) || v.hits.contains(id) || v.shadow.contains(id);
                if let Some(id) = object_mask(k).filter(|id| !seen(id)) {
                    masks.push(id);
                }
            });
        }
        if !(v.hits.is_empty() && v.shadow.is_empty() && masks.is_empty()) {
            let names = g.policy.rule_names();
            let ids = v.hits.iter().chain(v.shadow.iter()).chain(&masks);
            raw::field_strs_if_any(out, "rules", ids.filter_map(|&i| names.get(i).map(|n| &**n)));
        }
        AuditPart { millis: now.millis, len: out.len() - at }
    });
    Checked {
        denied: v.deny.as_ref().map(|d| format!("NOPERM {}", d.message)),
        plan,
        audit,
        started: now.at,
        verdict: v,
    }
}

/// Append the audit fields known once a command is answered: `bytes`, `duration_us` and
/// `error` (`rows` is unknown for Redis, so left out).
pub fn audit_tail(out: &mut Vec<u8>, bytes: Option<u64>, duration_us: Option<u64>, error: Option<&str>) {
    raw::field_u64(out, "bytes", bytes);
    raw::field_u64(out, "duration_us", duration_us);
    raw::field_opt_str(out, "error", error);
}

/// The constant audit fields of a session's records: `protocol` .. `roles`.
pub fn audit_prefix(route: &str, client: &str, user: &str, roles: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    raw::field_str(&mut out, "protocol", "redis");
    raw::field_str(&mut out, "route", route);
    raw::field_str(&mut out, "client", client);
    raw::field_str(&mut out, "user", user);
    raw::field_strs_if_any(&mut out, "roles", roles.iter().map(String::as_str));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> Resolver {
        Arc::new(|key: &[u8], field: Option<&[u8]>| match (key, field) {
            (k, Some(b"email")) if k.starts_with(b"user:") => Some(MaskFn::Email),
            (k, None) if k.starts_with(b"session:") => Some(MaskFn::Redact),
            _ => None,
        })
    }

    fn run(argv: &[&[u8]], reply: &[u8], proto: u8) -> Option<String> {
        let p = plan(argv, &resolver())?;
        apply(&p, reply, proto).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn string_values() {
        let out = run(&[b"GET", b"session:1"], b"$6\r\nsecret\r\n", 2).unwrap();
        assert!(out.starts_with('$') && !out.contains("secret"), "{out}");
        assert!(plan(&[b"GET", b"other"], &resolver()).is_none());
        assert_eq!(run(&[b"GET", b"session:1"], b"$-1\r\n", 2), None);
        let out = run(&[b"MGET", b"a", b"session:2"], b"*2\r\n$1\r\nx\r\n$3\r\nabc\r\n", 3).unwrap();
        assert!(out.starts_with("*2\r\n$1\r\nx\r\n$") && !out.contains("abc"), "{out}");
        assert!(plan(&[b"GETDEL", b"session:1"], &resolver()).is_some());
    }

    #[test]
    fn hash_fields_resp2_and_resp3() {
        let out = run(&[b"HGET", b"user:1", b"email"], b"$13\r\njane@acme.com\r\n", 2).unwrap();
        assert!(!out.contains("jane@"), "{out}");
        assert!(plan(&[b"HGET", b"user:1", b"name"], &resolver()).is_none());
        let out =
            run(&[b"HMGET", b"user:1", b"name", b"email"], b"*2\r\n$4\r\nJane\r\n$13\r\njane@acme.com\r\n", 2).unwrap();
        assert!(out.contains("Jane") && !out.contains("jane@"), "{out}");
        let r2 = b"*4\r\n$4\r\nname\r\n$4\r\nJane\r\n$5\r\nemail\r\n$13\r\njane@acme.com\r\n";
        let out = run(&[b"HGETALL", b"user:1"], r2, 2).unwrap();
        assert!(out.starts_with("*4\r\n") && out.contains("Jane") && !out.contains("jane@"), "{out}");
        let r3 = b"%2\r\n$4\r\nname\r\n$4\r\nJane\r\n$5\r\nemail\r\n$13\r\njane@acme.com\r\n";
        let out = run(&[b"HGETALL", b"user:1"], r3, 3).unwrap();
        assert!(out.starts_with("%2\r\n") && !out.contains("jane@"), "{out}");
        let r3 = b"*1\r\n*2\r\n$5\r\nemail\r\n$13\r\njane@acme.com\r\n";
        let out = run(&[b"HRANDFIELD", b"user:1", b"1", b"WITHVALUES"], r3, 3).unwrap();
        assert!(out.starts_with("*1\r\n*2\r\n$5\r\nemail\r\n") && !out.contains("jane@"), "{out}");
        // Masking to null follows the client's protocol.
        let null: Resolver = Arc::new(|_: &[u8], _: Option<&[u8]>| Some(MaskFn::Null));
        let p = plan(&[b"GET", b"k"], &null).unwrap();
        assert_eq!(apply(&p, b"$1\r\nx\r\n", 3).unwrap(), b"_\r\n");
        assert_eq!(apply(&p, b"$1\r\nx\r\n", 2).unwrap(), b"$-1\r\n");
        assert_eq!(apply(&p, b"-ERR x\r\n", 2), None);
    }

    #[test]
    fn exec_replies_masked_per_queued_command() {
        let plans = vec![None, plan(&[b"GET", b"session:1"], &resolver()), plan(&[b"HGETALL", b"user:1"], &resolver())];
        let p = MaskPlan::Exec(plans);
        let reply =
            b"*3\r\n+OK\r\n$6\r\nsecret\r\n*4\r\n$4\r\nname\r\n$4\r\nJane\r\n$5\r\nemail\r\n$13\r\njane@acme.com\r\n";
        let out = String::from_utf8(apply(&p, reply, 2).unwrap()).unwrap();
        assert!(out.starts_with("*3\r\n+OK\r\n$"), "{out}");
        assert!(!out.contains("secret") && !out.contains("jane@") && out.contains("Jane"), "{out}");
        // A nil EXEC (WATCH fired) and errors pass as they are.
        assert_eq!(apply(&p, b"*-1\r\n", 2), None);
    }

    #[test]
    fn the_key_memo_answers_what_hashing_answers() {
        let fresh = |k: &[u8], mac: Option<&KeyMac>| {
            let mut out = [0u8; 16];
            key_hash(k, mac, &mut out);
            out
        };
        let mac = KeyMac::new_from_slice(b"0123456789abcdef").unwrap();
        let long = vec![b'x'; KeyMemo::MAX_KEY + 1];
        let long2 = vec![b'y'; KeyMemo::MAX_KEY + 1];
        // Repeats, alternation, the empty key, keys too long to remember, a prefix of the last.
        let keys: [&[u8]; 12] = [b"a", b"a", b"b", b"a", b"", b"", &long, &long, &long2, b"ab", b"a", b""];
        for m in [None, Some(&mac)] {
            let mut memo = KeyMemo::default();
            for k in keys {
                assert_eq!(*memo.get(k, m), fresh(k, m), "key {:?}", String::from_utf8_lossy(k));
            }
        }
    }

    #[test]
    fn key_fingerprints_are_keyed_when_a_key_is_set() {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let dir = tempfile::tempdir().unwrap();
        // The fingerprint `check` writes into a GET's audit record, under a governance started
        // from `[audit]` with `include_literals` and, if given, `fingerprint_key`.
        let key_label = |key: &[u8], literals: bool, secret: Option<&str>| {
            let path = dir.path().join(format!("a{}.jsonl", next_file_number()));
            let mut toml = format!("[audit]\npath = \"{}\"\ninclude_literals = {literals}\n", path.display());
            if let Some(k) = secret {
                toml.push_str(&format!("fingerprint_key = \"{k}\"\n"));
            }
            let (mut g, _gov) = ctx(&toml);
            let mut out = Vec::new();
            let _ = check(&mut g, &[b"GET", key], 0, Clock::now(), &mut out);
            let text = format!("{{\"x\":0{}}}", String::from_utf8(out).unwrap());
            let rec: serde_json::Value = serde_json::from_str(&text).unwrap();
            rec["objects"][0].as_str().unwrap().to_owned()
        };
        let plain = key_label(b"user:1001", false, None);
        assert_eq!(plain, format!("redis:#{}", &hex(&Sha256::digest(b"user:1001"))[..16]));
        let secret = "0123456789abcdef";
        let keyed = key_label(b"user:1001", false, Some(secret));
        let mut want = KeyMac::new_from_slice(secret.as_bytes()).unwrap();
        want.update(b"user:1001");
        let want = hex(&want.finalize().into_bytes());
        assert_eq!(keyed, format!("redis:#{}", &want[..16]));
        assert_ne!(keyed, plain);
        // Stable for one key (so records still correlate), different under another.
        assert_eq!(key_label(b"user:1001", false, Some(secret)), keyed);
        assert_ne!(key_label(b"user:1001", false, Some("fedcba9876543210")), keyed);
        assert_eq!(key_label(b"user:1001", true, Some(secret)), "redis:user:1001");
    }

    #[test]
    fn audit_kind_and_fingerprint_of_known_and_unknown_commands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let toml = format!("[audit]\npath = \"{}\"\n", path.display());
        let (mut g, _gov) = ctx(&toml);
        let mut part = |argv: &[&[u8]]| {
            let mut out = Vec::new();
            let _ = check(&mut g, argv, 3, Clock::now(), &mut out);
            let text = format!("{{\"x\":0{}}}", String::from_utf8(out).unwrap());
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        };
        // Table commands in any case: the pre-rendered head (first class, upper-case name).
        for (argv, kind, fp) in [
            (&[&b"gEt"[..], b"k"][..], "read", "GET"),
            (&[&b"set"[..], b"k", b"v"][..], "write", "SET"),
            (&[&b"FLUSHALL"[..]][..], "dangerous", "FLUSHALL"),
            // Not in the table: rendered on the spot, and classed as unknown.
            (&[&b"fooBar"[..], b"k"][..], "unknown", "FOOBAR"),
            (&[&b"f\"o"[..]][..], "unknown", "F\"O"),
        ] {
            let rec = part(argv);
            assert_eq!((rec["kind"].as_str(), rec["fingerprint"].as_str()), (Some(kind), Some(fp)), "{rec}");
            assert_eq!(rec["database"], "3");
            assert_eq!(rec["decision"], "allow");
            assert!(rec.get("rules").is_none(), "{rec}");
        }
    }

    /// A masked reply's record says `mask` and names the mask rule; a hash read in whole whose
    /// key no label covers is neither planned nor recorded as masked.
    #[test]
    fn mask_decisions_name_their_rule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let toml = format!(
            "[audit]\npath = \"{}\"\n[[labels]]\nname = \"s\"\nmatch = [\"redis:session:*\", \"redis:user:*#email\"]\n\
             [[rules]]\nname = \"mask s\"\naction = \"mask\"\nlabels = [\"s\"]\nwith = \"redact\"\n",
            path.display()
        );
        let (mut g, _gov) = ctx(&toml);
        let mut run = |argv: &[&[u8]]| {
            let mut out = Vec::new();
            let c = check(&mut g, argv, 0, Clock::now(), &mut out);
            let text = format!("{{\"x\":0{}}}", String::from_utf8(out).unwrap());
            (c.plan.is_some(), serde_json::from_str::<serde_json::Value>(&text).unwrap())
        };
        for argv in [&[&b"GET"[..], b"session:1"][..], &[b"MGET", b"a", b"session:2"], &[b"HGETALL", b"user:7"]] {
            let (planned, rec) = run(argv);
            assert!(planned, "{rec}");
            assert_eq!(
                (rec["decision"].as_str(), rec["rules"].clone()),
                (Some("mask"), serde_json::json!(["mask s"])),
                "{rec}"
            );
        }
        for argv in [&[&b"GET"[..], b"other"][..], &[b"HGETALL", b"cart:7"], &[b"HGET", b"user:7", b"name"]] {
            let (planned, rec) = run(argv);
            assert!(!planned, "{rec}");
            assert_eq!(rec["decision"], "allow", "{rec}");
            assert!(rec.get("rules").is_none(), "{rec}");
        }
    }

    /// A session context (and the governance it audits to) for the config `toml`.
    fn ctx(toml: &str) -> (GovCtx, Governance) {
        let cfg = dgf_config::parse_str(toml, "t.toml", &|_| None).expect("config");
        let policy = Arc::new(Policy::from_config(&cfg).expect("policy"));
        let gov = Governance::start(&cfg, &prometheus::Registry::new()).expect("governance");
        (GovCtx::new(&policy, "r", &[], &gov).expect("auditing"), gov)
    }

    /// A distinct file name per writer in one test.
    fn next_file_number() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn facts_for_rules() {
        let f = facts(&[b"MSET", b"a", b"1", b"b", b"2"]);
        assert_eq!(f.kinds, ["mset", "write"]);
        assert_eq!(f.keys, [&b"a"[..], b"b"]);
    }
}
