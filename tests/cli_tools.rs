//! End-to-end: the real `dgf` binary's offline tools — `rules explain`, `rules test`,
//! `audit verify` (intact, edited, deleted and swapped records) and `audit tail`.

use dgf_config::{AuditConfig, AuditOverflow};
use dgf_rules::audit::{AuditEvent, AuditWriter};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CONFIG: &str = r#"
[[users]]
name = "ann"
password = "x"
roles = ["analyst"]

[[routes]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:6432"
upstream = "postgres://postgres@127.0.0.1:5432"

[[labels]]
name = "pii"
match = ["public.customers.email", "public.customers.phone"]

[[labels]]
name = "card"
match = ["customers.card_number"]

[[rules]]
name = "analysts read only"
roles = ["analyst"]
action = "deny"
statements = ["write", "ddl"]

[[rules]]
name = "mask pii"
roles = ["analyst"]
action = "mask"
labels = ["pii"]
with = "email"

[[rules]]
name = "mask cards"
roles = ["analyst", "support"]
action = "mask"
labels = ["card"]
with = "partial(keep_last=4)"
"#;

const CASES: &str = r#"
[[case]]
name = "analysts cannot delete"
role = "analyst"
sql = "DELETE FROM customers WHERE id = 1"
expect = "deny"
rule = "analysts read only"

[[case]]
name = "analysts see masked email"
role = "analyst"
sql = "SELECT id, email AS contact FROM customers"
expect = "mask"
rule = "mask pii"
masked = ["contact"]

[[case]]
name = "support sees the last four digits only"
roles = ["support"]
route = "pg"
sql = "SELECT * FROM public.customers"
expect = "mask"
masked = ["card_number"]
"#;

fn dgf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dgf")).args(args).output().expect("run dgf")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write");
    p.display().to_string()
}

#[test]
fn rules_explain_prints_decision_and_mask_plan() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "dgf.toml", CONFIG);
    let o = dgf(&[
        "rules",
        "explain",
        "--config",
        &cfg,
        "--role",
        "analyst",
        "SELECT id, upper(email) AS e FROM customers",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("route: pg"), "{t}");
    assert!(t.contains("decision: MASK"), "{t}");
    assert!(t.contains("1. id <- customers.id  clear"), "{t}");
    assert!(t.contains("2. e <- customers.email  MASK email (rule \"mask pii\")"), "{t}");

    let o = dgf(&["rules", "explain", "-c", &cfg, "--role", "analyst", "DROP TABLE customers"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("decision: DENY by rule \"analysts read only\""), "{t}");

    let o = dgf(&["rules", "explain", "-c", &cfg, "--role", "support", "--json", "SELECT * FROM customers"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["decision"], "mask");
    let col = &v["statements"][0]["columns"][0];
    assert_eq!(col["wildcard"], true);
    assert_eq!(col["masked_columns"][0]["column"], "*.customers.card_number");
    assert_eq!(col["masked_columns"][0]["with"], "partial(keep_last=4)");

    // Unusable input: exit 2 with the reason.
    let bad = write(dir.path(), "bad.toml", "[[rules]]\nname = \"x\"\naction = \"mask\"\n");
    let o = dgf(&["rules", "explain", "-c", &bad, "--role", "a", "SELECT 1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("bad.toml"), "{}", text(&o));
    let o = dgf(&["rules", "explain", "-c", &cfg, "--role", "a", "--route", "nope", "SELECT 1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn rules_test_reports_each_case_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "dgf.toml", CONFIG);
    let cases = write(dir.path(), "cases.toml", CASES);
    let o = dgf(&["rules", "test", "--config", &cfg, &cases]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("ok    analysts cannot delete"), "{t}");
    assert!(t.contains("3 case(s): 3 passed, 0 failed"), "{t}");

    let failing = format!(
        "{CASES}\n[[case]]\nname = \"admins are masked too (wrong)\"\nrole = \"admin\"\nsql = \"SELECT email FROM customers\"\nexpect = \"mask\"\nmasked = [\"email\"]\n"
    );
    let cases = write(dir.path(), "failing.toml", &failing);
    let o = dgf(&["rules", "test", "--config", &cfg, &cases]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("FAIL  admins are masked too (wrong): expected mask, got allow; column `email` is not masked"),
        "{t}"
    );
    assert!(t.contains("4 case(s): 3 passed, 1 failed"), "{t}");

    let broken = write(dir.path(), "broken.toml", "[[case]]\nname = 1\n");
    let o = dgf(&["rules", "test", "--config", &cfg, &broken]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

fn write_chain(path: &Path, n: usize) {
    let cfg = AuditConfig {
        path: Some(path.display().to_string()),
        sink: None,
        overflow: AuditOverflow::Block,
        include_literals: false,
        max_file_bytes: Some(1 << 20),
        keep_rotated: None,
        queue: Some(16),
        fingerprint_key: None,
        writer_priority: Default::default(),
    };
    let w = AuditWriter::start(&cfg, "e2e").expect("writer");
    for i in 0..n {
        let ev = AuditEvent {
            protocol: "postgres".into(),
            route: "pg".into(),
            user: format!("user{i}"),
            kind: "select".into(),
            fingerprint: "SELECT * FROM t WHERE id = $1".into(),
            decision: "allow".into(),
            rows: Some(i as u64),
            ..AuditEvent::default()
        };
        w.record(ev).expect("record");
    }
    w.shutdown();
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn put(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

fn verify(path: &Path) -> (Option<i32>, String) {
    let o = dgf(&["audit", "verify", &path.display().to_string()]);
    (o.status.code(), text(&o))
}

#[test]
fn audit_verify_detects_edits_deletions_and_swaps() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("audit.jsonl");
    write_chain(&path, 10);
    let (code, t) = verify(&path);
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains("OK: 10 record(s) in 1 file(s), seq 1..10"), "{t}");
    let good = lines(&path);

    // Edit one field of record 4.
    let mut edited = good.clone();
    edited[3] = edited[3].replace("\"user\":\"user3\"", "\"user\":\"mallory\"");
    assert_ne!(edited[3], good[3]);
    put(&path, &edited);
    let (code, t) = verify(&path);
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains(&format!("BROKEN: {}:4: seq 4: record was edited", path.display())), "{t}");

    // Delete record 6: line 6 now holds seq 7.
    let mut deleted = good.clone();
    deleted.remove(5);
    put(&path, &deleted);
    let (code, t) = verify(&path);
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains(&format!("{}:6: seq 7: seq 7 where 6 was expected", path.display())), "{t}");

    // Swap records 2 and 3.
    let mut swapped = good.clone();
    swapped.swap(1, 2);
    put(&path, &swapped);
    let (code, t) = verify(&path);
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains(&format!("{}:2: seq 3:", path.display())), "{t}");

    // Unreadable: exit 2.
    let (code, t) = verify(&dir.path().join("missing.jsonl"));
    assert_eq!(code, Some(2), "{t}");

    // Tail of the intact chain.
    put(&path, &good);
    let o = dgf(&["audit", "tail", "-n", "2", &path.display().to_string()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let shown: Vec<&str> = stdout.lines().collect();
    assert_eq!(shown.len(), 2, "{t}");
    assert!(shown[0].contains("#9 user8@") && shown[1].contains("#10 user9@"), "{t}");
    assert!(shown[1].contains("ALLOW select SELECT * FROM t WHERE id = $1 rows=9"), "{t}");
}
