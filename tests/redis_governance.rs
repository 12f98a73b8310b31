//! Redis governance end to end: command classes in deny rules (-NOPERM, connection stays
//! usable), key-pattern rules on multi-key commands, masking of hash fields and string values
//! by label in RESP2 and RESP3 replies, and one audit record per command.

mod common;

use common::redis::{cleanup, direct, start, Raw};
use common::unique;

/// Keys the hashed key names of the audit records.
const FINGERPRINT_KEY: &str = "test-fingerprint-key-0001";

/// `redis:#` + 16 hex digits of HMAC-SHA-256(FINGERPRINT_KEY, key): what an audit record says.
fn fingerprint(key: &str) -> String {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(FINGERPRINT_KEY.as_bytes()).unwrap();
    m.update(key.as_bytes());
    let hex: String = m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("redis:#{}", &hex[..16])
}

fn config(audit: &str, p: &str) -> String {
    format!(
        r#"
[[users]]
name = "analyst"
password = "apw"
roles = ["analyst"]

[[users]]
name = "app"
password = "bpw"

[[users]]
name = "ops"
password = "opw"
roles = ["ops"]

[[labels]]
name = "email"
match = ["redis:{p}:user:*#email"]

[[labels]]
name = "session"
match = ["redis:{p}:session:*"]

[[rules]]
name = "no flush for analysts"
roles = ["analyst"]
action = "deny"
statements = ["dangerous"]

[[rules]]
name = "analysts do not touch secrets"
roles = ["analyst"]
action = "deny"
tables = ["redis:{p}:secret:*"]

[[rules]]
name = "ops keep out of secrets"
roles = ["ops"]
action = "deny"
tables = ["redis:{p}:secret:*"]

[[rules]]
name = "mask personal data for analysts"
roles = ["analyst"]
action = "mask"
labels = ["email", "session"]
with = "redact"

[audit]
path = "{audit}"
fingerprint_key = "{FINGERPRINT_KEY}"
"#
    )
}

/// A dgf with the policy above and its audit file, plus a hash `<p>:user:1` holding an email
/// and a session string `<p>:session:1` in the real Redis.
struct Fixture {
    _dir: tempfile::TempDir,
    audit: std::path::PathBuf,
    r: common::redis::RedisDgf,
    p: String,
    u: String,
    s: String,
}

fn fixture(prefix: &str, pool: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let p = unique(prefix);
    let r = start(pool, &config(&audit.display().to_string(), &p));
    let (u, s) = (format!("{p}:user:1"), format!("{p}:session:1"));
    direct(&["HSET", &u, "name", "Jane", "email", "jane@acme.com"]);
    direct(&["SET", &s, "tok-123"]);
    Fixture { _dir: dir, audit, r, p, u, s }
}

#[test]
fn deny_mask_and_audit() {
    let Fixture { _dir, audit, r, p, u, s } = fixture("dgft_gov", 4);
    direct(&["SET", &format!("{p}:plain"), "visible"]);

    let mut a = Raw::connect(r.port);
    a.cmd(&["AUTH", "analyst", "apw"]);
    assert_eq!(a.replies(1), b"+OK\r\n");
    a.cmd(&["FLUSHALL"]);
    let e = String::from_utf8_lossy(&a.replies(1)).into_owned();
    assert!(e.starts_with("-NOPERM") && e.contains("no flush for analysts"), "{e}");
    a.cmd(&["KEYS", "*"]);
    assert!(a.replies(1).starts_with(b"-NOPERM"));
    // Multi-key: one secret key among others is enough to refuse.
    a.cmd(&["MGET", &format!("{p}:plain"), &format!("{p}:secret:x")]);
    let e = String::from_utf8_lossy(&a.replies(1)).into_owned();
    assert!(e.starts_with("-NOPERM") && e.contains("analysts do not touch secrets"), "{e}");
    a.cmd(&["EVAL", "return 1", "1", &format!("{p}:secret:y")]);
    assert!(a.replies(1).starts_with(b"-NOPERM"));
    // The connection stays usable; masking applies in RESP2.
    a.cmd(&["HGET", &u, "email"]);
    let v = String::from_utf8_lossy(&a.replies(1)).into_owned();
    assert!(v.starts_with('$') && !v.contains("jane@"), "{v}");
    a.cmd(&["HGET", &u, "name"]);
    assert_eq!(a.replies(1), b"$4\r\nJane\r\n");
    a.cmd(&["HGETALL", &u]);
    let all = String::from_utf8_lossy(&a.replies(1)).into_owned();
    assert!(all.contains("Jane") && !all.contains("jane@"), "{all}");
    a.cmd(&["MGET", &s, &format!("{p}:plain")]);
    let m = String::from_utf8_lossy(&a.replies(1)).into_owned();
    assert!(!m.contains("tok-123") && m.contains("visible"), "{m}");
    // RESP3.
    a.cmd(&["HELLO", "3"]);
    assert!(a.replies(1).starts_with(b"%7"));
    a.cmd(&["HGETALL", &u]);
    let all = String::from_utf8_lossy(&a.replies(1)).into_owned();
    assert!(all.starts_with("%2") && all.contains("Jane") && !all.contains("jane@"), "{all}");
    a.cmd(&["GET", &s]);
    assert!(!String::from_utf8_lossy(&a.replies(1)).contains("tok-123"));

    // Other roles see real data and may flush... (not tested: shared Redis) but may read secrets.
    let mut b = Raw::connect(r.port);
    b.cmd(&["AUTH", "app", "bpw"]);
    assert_eq!(b.replies(1), b"+OK\r\n");
    b.cmd(&["HGET", &u, "email"]);
    assert_eq!(b.replies(1), b"$13\r\njane@acme.com\r\n");
    b.cmd(&["GET", &format!("{p}:secret:x")]);
    assert_eq!(b.replies(1), b"$-1\r\n");

    drop((a, b));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = std::fs::read_to_string(&audit).unwrap_or_default();
    let recs: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let redis: Vec<_> = recs.iter().filter(|r| r["protocol"] == "redis").collect();
    assert!(redis.len() >= 14, "one record per command: {log}");
    let denied = redis.iter().filter(|r| r["decision"] == "deny").count();
    assert_eq!(denied, 4, "{log}");
    assert!(redis.iter().any(|r| r["decision"] == "mask"));
    assert!(!log.contains(&p), "keys are hashed in audit records unless include_literals: {log}");
    cleanup(&p);
}

/// Masking is fail-closed: every command that would hand a masked value out in a form dgf
/// does not mask (sub-ranges, raw values of a hash, scans, dumps, copies to an unmasked name,
/// SET ... GET, SORT ... GET patterns, unknown module commands) is refused for the masked role,
/// while metadata, writes and the masked read commands keep working. Other roles are unaffected.
#[test]
fn masked_values_cannot_leave_through_other_commands() {
    let Fixture { _dir, audit, r, p, u, s } = fixture("dgft_leak", 2);
    let plain = format!("{p}:plain");
    direct(&["SET", &plain, "visible"]);
    direct(&["HSET", &u, "visits", "3"]);
    let copy = format!("{p}:copy");

    let mut a = Raw::connect(r.port);
    a.cmd(&["AUTH", "analyst", "apw"]);
    assert_eq!(a.replies(1), b"+OK\r\n");
    let by_mask = "(rule \"mask personal data for analysts\")";
    let sort_get = format!("{p}:user:*->email");
    let refused: Vec<Vec<&str>> = vec![
        vec!["GETRANGE", &s, "0", "-1"],
        vec!["SUBSTR", &s, "0", "-1"],
        vec!["LCS", &s, &plain],
        vec!["GETBIT", &s, "3"],
        vec!["BITFIELD", &s, "GET", "u8", "0"],
        vec!["DUMP", &s],
        vec!["COPY", &s, &copy],
        vec!["RENAME", &s, &copy],
        vec!["SET", &s, "x", "GET"],
        vec!["INCRBY", &s, "0"],
        vec!["HVALS", &u],
        vec!["HSCAN", &u, "0"],
        vec!["HINCRBY", &u, "email", "0"],
    ];
    for cmd in &refused {
        a.cmd(cmd);
        let e = String::from_utf8_lossy(&a.replies(1)).into_owned();
        assert!(e.starts_with("-NOPERM dgf:") && e.contains(by_mask), "{cmd:?}: {e}");
        assert!(!e.contains("tok-123") && !e.contains("jane@"), "{cmd:?}: {e}");
    }
    // Commands that reach keys they do not name, and commands dgf does not know (modules), are
    // refused too (here by the rules that deny keys and dangerous commands, which come first).
    a.cmd(&["SORT", &plain, "BY", "nosort", "GET", &sort_get]);
    assert!(a.replies(1).starts_with(b"-NOPERM dgf:"));
    a.cmd(&["JSON.GET", &s]);
    assert!(a.replies(1).starts_with(b"-NOPERM dgf:"));
    // Nothing was copied or renamed; the values are where they were.
    assert_eq!(direct(&["EXISTS", &copy]).trim(), "0");
    assert_eq!(direct(&["GET", &s]).trim(), "tok-123");
    // What carries no masked value still works, and the masked reads are masked.
    let allowed: Vec<(Vec<&str>, &str)> = vec![
        (vec!["HKEYS", &u], "email"),
        (vec!["HINCRBY", &u, "visits", "1"], ":4"),
        (vec!["STRLEN", &s], ":7"),
        (vec!["EXISTS", &s, &u], ":2"),
        (vec!["GETRANGE", &plain, "0", "2"], "vis"),
        (vec!["HGET", &u, "email"], "[REDACTED]"),
        (vec!["GET", &s], "[REDACTED]"),
        (vec!["SET", &s, "tok-456"], "+OK"),
    ];
    for (cmd, want) in &allowed {
        a.cmd(cmd);
        let out = String::from_utf8_lossy(&a.replies(1)).into_owned();
        assert!(out.contains(want) && !out.starts_with('-'), "{cmd:?}: {out}");
    }
    // Inside a transaction the refusal aborts it, as any refusal does.
    a.cmd(&["MULTI"]);
    a.cmd(&["HVALS", &u]);
    a.cmd(&["EXEC"]);
    let out = String::from_utf8_lossy(&a.replies(3)).into_owned();
    assert!(out.contains("-NOPERM") && out.contains("-EXECABORT") && !out.contains("jane@"), "{out}");

    // A role without mask rules reads the raw values.
    let mut b = Raw::connect(r.port);
    b.cmd(&["AUTH", "app", "bpw"]);
    assert_eq!(b.replies(1), b"+OK\r\n");
    b.cmd(&["HVALS", &u]);
    assert!(String::from_utf8_lossy(&b.replies(1)).contains("jane@acme.com"));
    b.cmd(&["GETRANGE", &s, "0", "-1"]);
    assert_eq!(b.replies(1), b"$7\r\ntok-456\r\n");

    drop((a, b));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = std::fs::read_to_string(&audit).unwrap_or_default();
    let recs: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let hvals = recs
        .iter()
        .find(|r| r["fingerprint"] == "HVALS" && r["user"] == "analyst")
        .expect("audit record of the refused HVALS");
    assert_eq!(hvals["decision"], "deny", "{hvals}");
    assert!(hvals["rules"].to_string().contains("mask personal data for analysts"), "{hvals}");
    cleanup(&p);
}

/// Deny rules on keys fail closed too: a role with one cannot run what reaches keys it does not
/// name (a script reading a key from ARGV, SORT ... GET patterns), while its other commands and
/// other roles' scripts run.
#[test]
fn key_rules_cannot_be_bypassed_by_scripts_or_patterns() {
    let Fixture { _dir, r, p, .. } = fixture("dgft_keyd", 2);
    let secret = format!("{p}:secret:x");
    direct(&["SET", &secret, "hidden-42"]);
    let list = format!("{p}:ids");
    direct(&["RPUSH", &list, "x"]);
    let script = "return redis.call('GET', ARGV[1])";

    let mut o = Raw::connect(r.port);
    o.cmd(&["AUTH", "ops", "opw"]);
    assert_eq!(o.replies(1), b"+OK\r\n");
    o.cmd(&["GET", &secret]);
    let e = String::from_utf8_lossy(&o.replies(1)).into_owned();
    assert!(e.starts_with("-NOPERM") && e.contains("ops keep out of secrets"), "{e}");
    let get_pattern = format!("{p}:secret:*");
    for cmd in [
        vec!["EVAL", script, "0", &secret],
        vec!["EVAL_RO", script, "0", &secret],
        vec!["SORT", &list, "BY", "nosort", "GET", &get_pattern],
    ] {
        o.cmd(&cmd);
        let e = String::from_utf8_lossy(&o.replies(1)).into_owned();
        assert!(e.starts_with("-NOPERM dgf:") && e.contains("ops keep out of secrets"), "{cmd:?}: {e}");
        assert!(!e.contains("hidden-42"), "{e}");
    }
    // The session stays usable for keys the rule does not cover.
    o.cmd(&["LRANGE", &list, "0", "-1"]);
    assert_eq!(o.replies(1), b"*1\r\n$1\r\nx\r\n");

    // A role without key rules runs the same script.
    let mut b = Raw::connect(r.port);
    b.cmd(&["AUTH", "app", "bpw"]);
    assert_eq!(b.replies(1), b"+OK\r\n");
    b.cmd(&["EVAL", script, "0", &secret]);
    assert_eq!(b.replies(1), b"$9\r\nhidden-42\r\n");
    cleanup(&p);
}

/// A transaction must not be a way around masking: EXEC's reply carries the queued commands'
/// results, masked per command; a command refused while queueing aborts the transaction as
/// Redis itself does (nothing in it runs).
#[test]
fn transactions_are_masked_and_refusals_abort_them() {
    let Fixture { _dir, r, p, u, s, .. } = fixture("dgft_multi", 2);
    let plain = format!("{p}:plain");

    let mut a = Raw::connect(r.port);
    a.cmd(&["AUTH", "analyst", "apw"]);
    assert_eq!(a.replies(1), b"+OK\r\n");
    for proto in ["2", "3"] {
        a.cmd(&["HELLO", proto]);
        a.replies(1);
        a.cmd(&["MULTI"]);
        a.cmd(&["SET", &plain, "v"]);
        a.cmd(&["GET", &s]);
        a.cmd(&["HGETALL", &u]);
        a.cmd(&["HMGET", &u, "name", "email"]);
        a.cmd(&["GET", &plain]);
        a.cmd(&["EXEC"]);
        let out = String::from_utf8_lossy(&a.replies(7)).into_owned();
        assert!(out.contains("+QUEUED") && out.contains("*5\r\n+OK\r\n"), "RESP{proto}: {out}");
        assert!(!out.contains("tok-123") && !out.contains("jane@"), "EXEC leaked masked data (RESP{proto}): {out}");
        assert!(out.contains("Jane") && out.ends_with("$1\r\nv\r\n"), "RESP{proto}: {out}");
    }

    // A refused command inside MULTI: EXECABORT, and the queued write never ran.
    a.cmd(&["MULTI"]);
    a.cmd(&["SET", &plain, "changed"]);
    a.cmd(&["GET", &format!("{p}:secret:x")]);
    a.cmd(&["EXEC"]);
    let out = String::from_utf8_lossy(&a.replies(4)).into_owned();
    assert!(
        out.contains("-NOPERM") && out.ends_with("-EXECABORT Transaction discarded because of previous errors.\r\n"),
        "{out}"
    );
    assert_eq!(direct(&["GET", &plain]).trim(), "v", "the aborted transaction's write ran");
    // Commands dgf answers itself cannot be queued: refused, and the transaction aborts.
    a.cmd(&["MULTI"]);
    a.cmd(&["CLIENT", "SETNAME", "x"]);
    a.cmd(&["EXEC"]);
    let out = String::from_utf8_lossy(&a.replies(3)).into_owned();
    assert_eq!(out, "+OK\r\n-ERR Command not allowed inside a transaction\r\n-EXECABORT Transaction discarded because of previous errors.\r\n");
    // The session goes on normally, a new transaction works.
    a.cmd(&["MULTI"]);
    a.cmd(&["GET", &plain]);
    a.cmd(&["EXEC"]);
    assert_eq!(a.replies(3), b"+OK\r\n+QUEUED\r\n*1\r\n$1\r\nv\r\n");
    a.cmd(&["DISCARD"]);
    assert!(a.replies(1).starts_with(b"-ERR DISCARD without MULTI"));
    cleanup(&p);
}

fn resp(cmds: &[&[&str]]) -> Vec<u8> {
    let mut out = String::new();
    for args in cmds {
        out.push_str(&format!("*{}\r\n", args.len()));
        for a in *args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
    }
    out.into_bytes()
}

/// A refused command in a pipeline is answered in its place, not ahead of the replies still
/// owed for the commands before it; the audit records follow the same order, chain and
/// carry every field.
#[test]
fn pipelined_refusal_replies_in_order() {
    let Fixture { _dir, audit, r, p, .. } = fixture("dgft_pipe", 2);
    let (k1, k2, secret) = (format!("{p}:a"), format!("{p}:b"), format!("{p}:secret:x"));
    direct(&["SET", &k1, "v1"]);
    direct(&["SET", &k2, "v2"]);

    let mut a = Raw::connect(r.port);
    a.cmd(&["AUTH", "analyst", "apw"]);
    assert_eq!(a.replies(1), b"+OK\r\n");
    for _ in 0..20 {
        a.send(&resp(&[&["GET", &k1], &["GET", &secret], &["GET", &k2], &["MGET", &secret, &k1], &["GET", &k1]]));
        let out = String::from_utf8_lossy(&a.replies(5)).into_owned();
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(lines[..2], ["$2", "v1"], "{out}");
        assert!(lines[2].starts_with("-NOPERM"), "{out}");
        assert_eq!(lines[3..5], ["$2", "v2"], "{out}");
        assert!(lines[5].starts_with("-NOPERM"), "{out}");
        assert_eq!(lines[6..], ["$2", "v1", ""], "{out}");
    }
    drop(a);
    // The writer flushes asynchronously (every 100 ms): wait for the 101 records.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut log = String::new();
    while log.lines().count() < 101 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        log = std::fs::read_to_string(&audit).unwrap_or_default();
    }
    let report = dgf_rules::audit::verify(std::slice::from_ref(&audit)).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_error);
    let recs: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let redis: Vec<_> = recs.iter().filter(|r| r["protocol"] == "redis" && r["fingerprint"] != "AUTH").collect();
    assert_eq!(redis.len(), 100, "{log}");
    for (i, rec) in redis.iter().enumerate() {
        let denied = matches!(i % 5, 1 | 3);
        assert_eq!(rec["decision"], if denied { "deny" } else { "allow" }, "{rec}");
        assert_eq!(rec["user"], "analyst");
        assert_eq!(rec["roles"], serde_json::json!(["analyst"]));
        assert_eq!(rec["database"], "0");
        assert_eq!(rec["kind"], "read");
        assert!(rec["time"].as_str().is_some_and(|t| t.len() == 24), "{rec}");
        let objects = rec["objects"].as_array().unwrap();
        assert_eq!(objects.len(), if i % 5 == 3 { 2 } else { 1 }, "{rec}");
        assert!(objects.iter().all(|o| o.as_str().unwrap().starts_with("redis:#")), "{rec}");
        // Keyed with [audit] fingerprint_key: not the plain SHA-256 anyone could recompute.
        let first = match i % 5 {
            0 | 4 => &k1,
            1 | 3 => &secret,
            _ => &k2,
        };
        assert_eq!(objects[0], fingerprint(first), "{rec}");
        if denied {
            assert_eq!(rec["error"], "NOPERM", "{rec}");
            assert_eq!(rec["rules"], serde_json::json!(["analysts do not touch secrets"]), "{rec}");
        } else {
            assert_eq!(rec["bytes"], 8, "{rec}");
            assert!(rec["duration_us"].is_u64() && rec["error"].is_null(), "{rec}");
        }
    }
    cleanup(&p);
}

/// A reload applies to connections already open: rules added by the reload refuse and mask on
/// a connection that was opened (and logged in) before it, from its next command on.
#[test]
fn reloaded_rules_apply_to_open_connections() {
    let Fixture { _dir, audit, r, p, u, s } = fixture("dgft_reload", 2);
    let plain = format!("{p}:plain");
    direct(&["SET", &plain, "visible"]);
    let mut a = Raw::connect(r.port);
    a.cmd(&["AUTH", "app", "bpw"]);
    assert_eq!(a.replies(1), b"+OK\r\n");
    a.cmd(&["GET", &plain]);
    a.cmd(&["HGET", &u, "email"]);
    assert_eq!(a.replies(2), b"$7\r\nvisible\r\n$13\r\njane@acme.com\r\n");
    // Rules without `roles` apply to every user, `app` included.
    let tightened = format!(
        "{}\n[[rules]]\nname = \"nobody reads plain\"\naction = \"deny\"\ntables = [\"redis:{p}:plain\"]\n\n\
         [[rules]]\nname = \"mask for everyone\"\naction = \"mask\"\nlabels = [\"email\", \"session\"]\nwith = \"redact\"\n",
        config(&audit.display().to_string(), &p)
    );
    r.reload(&tightened);
    a.cmd(&["GET", &plain]);
    let e = String::from_utf8_lossy(&a.replies(1)).into_owned();
    assert!(e.starts_with("-NOPERM") && e.contains("nobody reads plain"), "{e}");
    a.cmd(&["HGET", &u, "email"]);
    a.cmd(&["GET", &s]);
    let out = String::from_utf8_lossy(&a.replies(2)).into_owned();
    assert!(!out.contains("jane@") && !out.contains("tok-123"), "{out}");
    cleanup(&p);
}
