//! Validation checks of the configuration, one concern per test: users and passwords,
//! listen addresses, upstreams, pools, shaping, TLS, rules, audit and server settings.

use super::*;
const SCRAM: &str = "SCRAM-SHA-256$4096:bG9yZW1pcHN1bWRvbG9y$ZJs2mhPGR7mGi1DNIdeDdBXqcjIB4Jxl/wOG3tgEFtk=:7Lwbt9tOH5bFVNI5VRAfWEPXtUoPbXfuY6N9LZVvW0s=";
const MD5: &str = "md5f8b3b7e4a5a5c3a2b1d0e9f8a7b6c5d4";

fn user(password: Option<&str>, auth: &str) -> String {
    let pw = password.map(|p| format!("password = '{p}'\n")).unwrap_or_default();
    format!("[[users]]\nname = \"u\"\nauth = \"{auth}\"\n{pw}")
}

#[test]
fn password_verifiers() {
    ok(&user(Some(SCRAM), "scram-sha-256"));
    ok(&user(Some(MD5), "md5"));
    ok(&user(Some("plain"), "md5"));
    ok(&user(None, "trust"));
    let e = errs(&user(Some(MD5), "scram-sha-256"));
    assert!(has(&e, "users[0].password", "an md5 verifier only works with auth = \"md5\""), "{e:?}");
    let e = errs(&user(Some(SCRAM), "md5"));
    assert!(has(&e, "users[0].password", "a SCRAM verifier only works with auth = \"scram-sha-256\""), "{e:?}");
    let e = errs(&user(Some("SCRAM-SHA-256$4096:c2FsdA==$AAAA"), "scram-sha-256"));
    assert!(has(&e, "users[0].password", "SCRAM verifier must look like"), "{e:?}");
    assert_eq!(e[0].line, Some(4));
    let e = errs(&user(None, "scram-sha-256"));
    assert!(has(&e, "users[0].password", "password is required unless auth = \"trust\""), "{e:?}");
    assert_eq!(e[0].line, Some(1));
    let e = errs(&user(Some("x"), "trust"));
    assert!(has(&e, "users[0].password", "takes no password"), "{e:?}");
}

#[test]
fn trust_only_on_loopback_and_user_names_unique() {
    let src = "[[users]]\nname = \"u\"\nauth = \"trust\"\n[[users]]\nname = \"u\"\npassword = \"x\"\n[[routes]]\nname = \"r\"\nprotocol = \"postgres\"\nlisten = \"0.0.0.0:6432\"\nupstream = \"postgres://h\"\n";
    let e = errs(src);
    assert!(
        has(
            &e,
            "users[0].auth",
            "only allowed when every route listens on a loopback address (routes[0].listen = 0.0.0.0:6432)"
        ),
        "{e:?}"
    );
    assert!(has(&e, "users[1].name", "user `u` is already defined at users[0]"), "{e:?}");
}

#[test]
fn listen_collisions() {
    let src = r#"[admin]
listen = "127.0.0.1:6432"
[[routes]]
name = "a"
protocol = "postgres"
listen = "127.0.0.1:6432"
upstream = "postgres://h"
[[routes]]
name = "b"
protocol = "redis"
listen = "0.0.0.0:7000"
upstream = "redis://h"
[[routes]]
name = "c"
protocol = "redis"
listen = "127.0.0.1:7000"
upstream = "redis://h"
[[routes]]
name = "d"
protocol = "redis"
listen = "127.0.0.1:0"
upstream = "redis://h"
[[routes]]
name = "e"
protocol = "redis"
listen = "127.0.0.1:0"
upstream = "redis://h"
"#;
    let e = errs(src);
    assert_eq!(
        summary(&e),
        vec![
            (
                Some(6),
                "routes[0].listen".into(),
                "listen address 127.0.0.1:6432 collides with admin.listen (127.0.0.1:6432)".into()
            ),
            (
                Some(16),
                "routes[2].listen".into(),
                "listen address 127.0.0.1:7000 collides with routes[1].listen (0.0.0.0:7000)".into()
            ),
        ]
    );
}

#[test]
fn upstream_checks() {
    let route = |proto: &str, url: &str| {
        format!("[[routes]]\nname = \"r\"\nprotocol = \"{proto}\"\nlisten = \"127.0.0.1:1\"\nupstream = \"{url}\"\n")
    };
    let e = errs(&route("postgres", "mysql://h"));
    assert!(has(&e, "routes[0].upstream", "scheme `mysql` does not match protocol postgres"), "{e:?}");
    assert_eq!(e[0].line, Some(5));
    let e = errs(&route("postgres", "postgres://h?sslmode=always"));
    assert!(has(&e, "routes[0].upstream", "sslmode `always`"), "{e:?}");
    let e = errs(&route("postgres", "postgres://h?sslrootcert=/nonexistent/ca.pem&sslsni=2"));
    assert!(has(&e, "routes[0].upstream", "cannot read sslrootcert CA file `/nonexistent/ca.pem`"), "{e:?}");
    assert!(has(&e, "routes[0].upstream", "sslsni must be 0 or 1"), "{e:?}");
    ok(&route("mongodb", "mongodb+srv://cluster.example.net"));
    let e = errs(&route("mongodb", "mongodb+srv://cluster.example.net:27017"));
    assert!(has(&e, "routes[0].upstream", "without a port"), "{e:?}");
    let e = errs(&(route("mongodb", "mongodb+srv://c.example.net") + "\n[server]\ndns_servers = [\"ns1\"]\n"));
    assert!(has(&e, "server.dns_servers", "`ns1` is not an IP address"), "{e:?}");
    ok(&(route("mongodb", "mongodb+srv://c.example.net")
        + "\n[server]\ndns_servers = [\"10.0.0.2\", \"127.0.0.1:5353\"]\n"));
    let e = errs(&route("redis", "redis://h?sslmode=require"));
    assert!(has(&e, "routes[0].upstream", "sslmode applies to postgres upstreams only"), "{e:?}");
    ok(&route("postgres", "postgresql://u:p%40ss@h:5433/db?sslmode=verify-full&sslsni=0"));
    let e = errs(&route("redis", "redis://h?tls_verify=none&foo=1"));
    assert!(has(&e, "routes[0].upstream", "tls_verify needs a rediss://"), "{e:?}");
    assert!(has(&e, "routes[0].upstream", "unknown redis upstream parameter `foo`"), "{e:?}");
    let e = errs(&route("redis", "rediss://u@h?tls_verify=maybe&tls_ca=/nonexistent/ca.pem"));
    assert!(has(&e, "routes[0].upstream", "tls_verify must be full, ca or none"), "{e:?}");
    assert!(has(&e, "routes[0].upstream", "cannot read tls_ca CA file"), "{e:?}");
    assert!(has(&e, "routes[0].upstream", "ACL user needs a password"), "{e:?}");
    ok(&route("redis", "rediss://app:s3cret@redis-123.cloud.redislabs.com:12345/0?tls_verify=full"));
    ok(&route("redis", "redis://:pw@127.0.0.1:6379/2"));
}

#[test]
fn pool_and_route_limits() {
    let src = "[[routes]]\nname = \"\"\nprotocol = \"postgres\"\nlisten = \"127.0.0.1:1\"\nupstream = \"postgres://h\"\nmax_client_connections = 0\nprovider = \"oracle_cloud\"\n[routes.pool]\nsize = 2\nmin_idle = 3\nwait_timeout_ms = 0\n";
    let e = errs(src);
    assert_eq!(
        summary(&e).into_iter().map(|(l, p, _)| (l, p)).collect::<Vec<_>>(),
        vec![
            (Some(2), "routes[0].name".into()),
            (Some(6), "routes[0].max_client_connections".into()),
            (Some(7), "routes[0].provider".into()),
            (Some(10), "routes[0].pool.min_idle".into()),
            (Some(11), "routes[0].pool.wait_timeout_ms".into()),
        ]
    );
    assert!(has(&e, "routes[0].pool.min_idle", "must be <= pool.size (2)"));
}

#[test]
fn shaping_and_memory_budget() {
    let head = "[[routes]]\nname = \"c\"\nprotocol = \"redis\"\nlisten = \"127.0.0.1:1\"\nupstream = \"redis://h\"\n";
    let c = ok(&format!(
        "{head}shaping = {{ ops_per_sec = 100, burst = 20, max_wait_ms = 2000 }}\nmemory_budget = {{ max_bytes = 30000000 }}\n"
    ));
    let s = c.routes[0].shaping.as_ref().unwrap();
    assert_eq!((s.ops_per_sec, s.burst(), s.max_wait_ms), (100, 20, 2000));
    let m = c.routes[0].memory_budget.as_ref().unwrap();
    assert_eq!((m.max_bytes, m.check_interval_ms), (30_000_000, 1000));
    // Defaults: burst = one second's worth, max_wait_ms = 5000.
    let c = ok(&format!("{head}shaping = {{ ops_per_sec = 50 }}\n"));
    let s = c.routes[0].shaping.as_ref().unwrap();
    assert_eq!((s.burst(), s.max_wait_ms), (50, 5000));
    assert!(c.summary().contains("50 ops/s"), "{}", c.summary());
    let e = errs(&format!(
        "{head}shaping = {{ ops_per_sec = 0, burst = 0, max_wait_ms = 900000, queue = 3 }}\nmemory_budget = {{ max_bytes = 0, check_interval_ms = 5 }}\n"
    ));
    for (path, msg) in [
        ("routes[0].shaping.queue", "unknown key `queue`"),
        ("routes[0].shaping.ops_per_sec", "must be >= 1"),
        ("routes[0].shaping.burst", "must be >= 1"),
        ("routes[0].shaping.max_wait_ms", "<= 600000"),
        ("routes[0].memory_budget.max_bytes", "must be >= 1"),
        ("routes[0].memory_budget.check_interval_ms", "must be >= 100"),
    ] {
        assert!(has(&e, path, msg), "{path}: {e:?}");
    }
    let e = errs(&format!("{head}shaping = {{ burst = 3 }}\n"));
    assert!(e.iter().any(|e| e.path.starts_with("routes[0]") && e.message.contains("ops_per_sec")), "{e:?}");
    let pg =
        "[[routes]]\nname = \"p\"\nprotocol = \"postgres\"\nlisten = \"127.0.0.1:1\"\nupstream = \"postgres://h\"\n";
    let e = errs(&format!("{pg}memory_budget = {{ max_bytes = 10 }}\n"));
    assert!(has(&e, "routes[0].memory_budget", "redis routes only"), "{e:?}");
    ok(&format!("{pg}shaping = {{ ops_per_sec = 10 }}\n"));
}

#[test]
fn tls_requirements() {
    let src = "[[routes]]\nname = \"r\"\nprotocol = \"postgres\"\nlisten = \"127.0.0.1:1\"\nupstream = \"postgres://h\"\nrequire_tls = true\n";
    let e = errs(src);
    assert_eq!(
        summary(&e),
        vec![(
            Some(6),
            "routes[0].require_tls".into(),
            "require_tls needs a certificate: set routes[0].tls or [tls]".into()
        )]
    );
    let with_tls = format!(
        "[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"{}\"\n{src}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")
    );
    let e = errs(&with_tls);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "tls.cert");
    assert!(e[0].message.starts_with("cannot read certificate `/nonexistent/cert.pem`"), "{e:?}");
}

#[test]
fn rule_checks() {
    let src = r#"[[labels]]
name = "pii"
match = ["*.*.ssn"]
[[labels]]
name = "pii"
match = []
[[rules]]
name = "m"
action = "mask"
labels = ["pii", "secret"]
[[rules]]
name = "m"
action = "mask"
columns = ["*.*.card"]
with = "partial(keep_last=x)"
[[rules]]
name = "lim"
action = "limit"
routes = ["nope"]
[[rules]]
name = "d"
action = "deny"
with = "redact"
max_rows = 5
[[rules]]
name = "nothing"
action = "mask"
with = "hash"
"#;
    let e = errs(src);
    let got: Vec<(Option<usize>, String)> = summary(&e).into_iter().map(|(l, p, _)| (l, p)).collect();
    assert_eq!(
        got,
        vec![
            (Some(5), "labels[1].name".into()),
            (Some(6), "labels[1].match".into()),
            (Some(7), "rules[0].with".into()),
            (Some(10), "rules[0].labels[1]".into()),
            (Some(12), "rules[1].name".into()),
            (Some(15), "rules[1].with".into()),
            (Some(16), "rules[2]".into()),
            (Some(19), "rules[2].routes[0]".into()),
            (Some(23), "rules[3].with".into()),
            (Some(24), "rules[3].max_rows".into()),
            (Some(25), "rules[4]".into()),
            (Some(28), "rules[4].with".into()),
        ]
    );
    assert!(has(&e, "rules[4].with", "`hash` needs a key"));
    assert!(has(&e, "rules[0].labels[1]", "unknown label `secret`"));
    assert!(has(&e, "rules[2].routes[0]", "unknown route `nope`"));
    assert!(has(&e, "rules[2]", "a limit rule needs `max_rows`"));
    assert!(has(&e, "rules[4]", "needs `labels` or `columns`"));
    assert!(has(&e, "rules[1].with", "must be a whole number"));
}

#[test]
fn audit_and_server_checks() {
    let e = errs("[audit]\noverflow = \"drop\"\nqueue = 0\n[server]\nauth_failure_burst = 0\n");
    assert!(has(&e, "audit.path", "set audit.path"), "{e:?}");
    assert_eq!(e[0].line, Some(1));
    assert!(has(&e, "audit.queue", "must be >= 1"), "{e:?}");
    assert!(has(&e, "server.auth_failure_burst", "must be >= 1"), "{e:?}");
    let e = errs("[audit]\nsink = \"kafka\"\n");
    assert!(has(&e, "audit.sink", "sink `kafka` is not"), "{e:?}");
    let e = errs("[audit]\npath = \"/nonexistent/dir/a.jsonl\"\n");
    assert!(has(&e, "audit.path", "directory `/nonexistent/dir` of the audit file does not exist"), "{e:?}");
    let e = errs("[audit]\noverflow = \"spill\"\n");
    assert!(has(&e, "audit.overflow", "unknown variant `spill`"), "{e:?}");
    let c = ok("[audit]\nsink = \"stdout\"\noverflow = \"drop\"\ninclude_literals = true\n");
    assert_eq!(c.audit.map(|a| a.overflow), Some(AuditOverflow::Drop));
    let e = errs("[audit]\nsink = \"stdout\"\nfingerprint_key = \"short\"\n");
    assert!(has(&e, "audit.fingerprint_key", "at least 16 bytes"), "{e:?}");
    let c = ok("[audit]\nsink = \"stdout\"\nfingerprint_key = \"0123456789abcdef-secret\"\n");
    let a = c.audit.unwrap();
    assert_eq!(a.fingerprint_key.as_ref().map(Secret::expose), Some("0123456789abcdef-secret"));
    // The secret never shows in debug output (logs, `dgf check`).
    assert!(!format!("{a:?}").contains("secret"), "{a:?}");
    assert_eq!(a.writer_priority, AuditWriterPriority::Auto);
    for (text, want) in [
        ("idle", AuditWriterPriority::Idle),
        ("normal", AuditWriterPriority::Normal),
        ("auto", AuditWriterPriority::Auto),
    ] {
        let c = ok(&format!("[audit]\nsink = \"stdout\"\nwriter_priority = \"{text}\"\n"));
        assert_eq!(c.audit.map(|a| a.writer_priority), Some(want));
    }
    let e = errs("[audit]\nsink = \"stdout\"\nwriter_priority = \"realtime\"\n");
    assert!(has(&e, "audit.writer_priority", "unknown variant `realtime`"), "{e:?}");
}
