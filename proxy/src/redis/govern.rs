//! Governance for Redis commands: the facts a rule check needs (kinds = name + classes, keys)
//! from the rules crate's command table, and masking of string values and hash fields in
//! RESP2 and RESP3 replies (GET, MGET, GETEX, GETDEL, HGET, HMGET, HGETALL, HRANDFIELD
//! WITHVALUES).

use dgf_protocols::redis::value::enc;
use dgf_protocols::redis::{decode, Limits, Value};
use dgf_rules::mask::MaskFn;
use dgf_rules::redis::{keys, kinds, mask_shape, MaskShape};
use std::sync::Arc;

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
    fn facts_for_rules() {
        let f = facts(&[b"MSET", b"a", b"1", b"b", b"2"]);
        assert_eq!(f.kinds, ["mset", "write"]);
        assert_eq!(f.keys, [&b"a"[..], b"b"]);
    }
}
