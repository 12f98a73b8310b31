//! Tests of the whole pipeline: parse, interpolate, validate, report.

use super::*;

mod checks;

fn env(name: &str) -> Option<String> {
    match name {
        "APP_PASSWORD" => Some("s3cr\"et'pw".into()),
        "DB_PASS" => Some("p@ss word".into()),
        "PROTO" => Some("hunter2".into()),
        _ => None,
    }
}

fn ok(src: &str) -> Config {
    match parse_str(src, "dgf.toml", &env) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn errs(src: &str) -> Vec<ConfigError> {
    match parse_str(src, "dgf.toml", &env) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0,
    }
}

/// `(line, path, message fragment)` of every error, for compact assertions.
fn summary(errors: &[ConfigError]) -> Vec<(Option<usize>, String, String)> {
    errors.iter().map(|e| (e.line, e.path.clone(), e.message.clone())).collect()
}

fn has(errors: &[ConfigError], path: &str, fragment: &str) -> bool {
    errors.iter().any(|e| e.path == path && e.message.contains(fragment))
}

const BASIC: &str = r#"[admin]
listen = "127.0.0.1:9930"

[[users]]
name = "app"
password = "${APP_PASSWORD}"
roles = ["analyst"]

[[routes]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:6432"
upstream = "postgres://postgres@127.0.0.1:5432"
pool = { mode = "transaction", size = 2, wait_timeout_ms = 5000 }
"#;

const POLICY: &str = r#"
[[labels]]
name = "email"
match = ["public.customers.email", "mongodb:app.users.email", "redis:user:*#email"]

[[rules]]
name = "analysts read only"
roles = ["analyst"]
action = "deny"
statements = ["insert", "update", "delete", "ddl"]

[[rules]]
name = "mask email for analysts"
roles = ["analyst"]
action = "mask"
labels = ["email"]
with = "email"

[[rules]]
name = "nobody drops or truncates"
action = "deny"
statements = ["drop", "truncate"]

[audit]
path = "dgf-audit.jsonl"
"#;

const MORE_ROUTES: &str = r#"
[[routes]]
name = "cache"
protocol = "redis"
listen = "127.0.0.1:6380"
upstream = "redis://127.0.0.1:6379"
pool = { size = 4 }

[[routes]]
name = "mysql"
protocol = "mysql"
listen = "127.0.0.1:3307"
upstream = "mysql://root@127.0.0.1:3306"
pool = { size = 4 }

[[routes]]
name = "docs"
protocol = "mongodb"
listen = "127.0.0.1:27018"
upstream = "mongodb://127.0.0.1:27017/?directConnection=true"
pool = { size = 4 }
"#;

#[test]
fn default_config_is_valid() {
    let c = default_config();
    assert_eq!(c.admin.listen, "127.0.0.1:9930");
    assert_eq!(c.routes.len(), 1);
    let r = &c.routes[0];
    assert_eq!((r.name.as_str(), r.protocol, r.listen.as_str()), ("postgres", Protocol::Postgres, "127.0.0.1:6432"));
    assert_eq!(r.pool.mode, PoolMode::Transaction);
    assert_eq!(r.pool.size, 10);
    let u = r.upstream().unwrap();
    assert_eq!((u.host.as_str(), u.port, u.user.as_deref()), ("127.0.0.1", 5432, Some("postgres")));
    assert_eq!(c.users.len(), 1);
    assert_eq!((c.users[0].name.as_str(), c.users[0].auth), ("postgres", AuthMethod::Trust));
    assert_eq!(c.users[0].password, None);
    assert!(DEFAULT_TOML.contains("Loopback default only"));
}

#[test]
fn basic_example_parses_and_interpolates_secrets_verbatim() {
    let c = ok(BASIC);
    assert_eq!(c.users[0].password.as_deref(), Some("s3cr\"et'pw"));
    assert_eq!(c.users[0].roles, vec!["analyst".to_owned()]);
    assert_eq!(c.users[0].auth, AuthMethod::ScramSha256);
    assert_eq!(c.routes[0].pool.size, 2);
    assert_eq!(c.routes[0].pool.wait_timeout_ms, 5000);
    assert_eq!(c.routes[0].pool.min_idle, 0);
    assert!(c.audit.is_none());
}

#[test]
fn policy_example_parses_alone() {
    let c = ok(POLICY);
    assert_eq!(c.labels[0].matches.len(), 3);
    assert_eq!(c.rules.len(), 3);
    assert_eq!(c.rules[1].action, RuleAction::Mask);
    assert_eq!(c.rules[1].with.as_deref(), Some("email"));
    assert_eq!(c.rules[2].roles, Vec::<String>::new());
    assert_eq!(c.audit.as_ref().and_then(|a| a.path.as_deref()), Some("dgf-audit.jsonl"));
}

#[test]
fn route_examples_parse_alone() {
    let c = ok(MORE_ROUTES);
    let protocols: Vec<Protocol> = c.routes.iter().map(|r| r.protocol).collect();
    assert_eq!(protocols, vec![Protocol::Redis, Protocol::Mysql, Protocol::Mongodb]);
    for r in &c.routes {
        assert_eq!(r.pool.size, 4);
        r.upstream().unwrap();
    }
}

#[test]
fn all_examples_combined_parse() {
    let c = ok(&format!("{BASIC}{POLICY}{MORE_ROUTES}"));
    assert_eq!(c.routes.len(), 4);
    assert_eq!(c.rules.len(), 3);
    let s = c.summary();
    assert!(
        s.contains(
            "route   pg postgres 127.0.0.1:6432 -> postgres://postgres@127.0.0.1:5432 (transaction pool, size 2)"
        ),
        "{s}"
    );
    assert!(s.contains("users   app (scram-sha-256)"), "{s}");
    assert!(s.contains("audit   dgf-audit.jsonl (overflow block)"), "{s}");
}

#[test]
fn many_errors_reported_together_with_lines() {
    let src = r#"[[routes]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:6432"
upstream = "postgres://app:${DB_PASSWORD}@127.0.0.1:5432"
pool = { size = 0 }
colour = "blue"

[[routes]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:6433"
upstream = "postgres://127.0.0.1:5432"
"#;
    let e = errs(src);
    assert_eq!(
        summary(&e),
        vec![
            (Some(5), "routes[0].upstream".into(), "environment variable `DB_PASSWORD` is not set (use `${DB_PASSWORD:-default}` for a default, `$$` for a literal `$`)".into()),
            (Some(6), "routes[0].pool.size".into(), "must be >= 1".into()),
            (Some(7), "routes[0].colour".into(), "unknown key `colour`".into()),
            (Some(10), "routes[1].name".into(), "route `pg` is already defined at routes[0]".into()),
        ]
    );
    assert_eq!(e[1].column, Some(10));
    assert_eq!(e[2].column, Some(1));
    let shown = ConfigErrors(e).to_string();
    assert_eq!(shown.lines().count(), 4);
    assert!(shown.lines().nth(1).unwrap().starts_with("dgf.toml:6:10: routes[0].pool.size: must be >= 1"), "{shown}");
}

#[test]
fn errors_after_a_bad_element_still_reported() {
    let src = r#"[[routes]]
name = "a"
protocol = "postgress"
listen = "127.0.0.1:1"
upstream = "postgres://h"

[[routes]]
name = "b"
protocol = "postgres"
listen = "127.0.0.1:2"
upstream = "postgres://h"
pool = { size = -1, min_idle = 1, sise = 3 }

[[routes]]
name = "c"
protocol = "redis"
listen = "nowhere"
upstream = "redis://h"

[server]
unknown_knob = true
"#;
    let e = errs(src);
    assert_eq!(
        summary(&e),
        vec![
            (
                Some(3),
                "routes[0].protocol".into(),
                "unknown variant `postgress`, expected one of `postgres`, `mysql`, `redis`, `mongodb`".into()
            ),
            (
                Some(12),
                "routes[1].pool.size".into(),
                "invalid value: integer `-1`, expected a whole number >= 0".into()
            ),
            (Some(12), "routes[1].pool.sise".into(), "unknown key `sise`".into()),
            (
                Some(17),
                "routes[2].listen".into(),
                "`nowhere` is not an IP:port address (e.g. 127.0.0.1:6432; host names are not accepted)".into()
            ),
            (Some(21), "server.unknown_knob".into(), "unknown key `unknown_knob`".into()),
        ]
    );
}

#[test]
fn missing_field_points_at_the_element() {
    let src = "[admin]\nlisten = \"127.0.0.1:9930\"\n\n[[routes]]\nname = \"x\"\nprotocol = \"redis\"\nlisten = \"127.0.0.1:6380\"\n";
    let e = errs(src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "routes[0]");
    assert_eq!(e[0].message, "missing field `upstream`");
    assert_eq!(e[0].line, Some(4), "{e:?}");
}

#[test]
fn syntax_errors_have_lines() {
    let e = errs("[admin]\nlisten = \"127.0.0.1:9930\n[[routes]]\n");
    assert_eq!(e[0].line, Some(2), "{e:?}");
    assert_eq!(e[0].path, "");
    let e = errs("[admin]\nlisten = \"a\"\nlisten = \"b\"\n");
    assert_eq!(e[0].line, Some(3), "{e:?}");
}

#[test]
fn unknown_section_and_wrong_list_shape() {
    let e = errs("[admn]\nlisten = \"127.0.0.1:1\"\nroutes = 3\n");
    assert!(has(&e, "admn", "unknown section `admn` (expected one of server, admin"), "{e:?}");
    let e = errs("routes = 3\n");
    assert!(has(&e, "routes", "must be an array of tables: write [[routes]] sections"), "{e:?}");
}

#[test]
fn interpolation_escapes_and_defaults() {
    let src = r#"
[[users]]
name = "a"
password = "$${APP_PASSWORD}"

[[users]]
name = "b"
password = "pa$$word$"

[[users]]
name = "c"
password = "${NOT_SET:-fallback}"

[[routes]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:6432"
upstream = "postgres://app:${DB_PASS}@h/db"
"#;
    let c = ok(src);
    let pw: Vec<&str> = c.users.iter().filter_map(|u| u.password.as_deref()).collect();
    assert_eq!(pw, vec!["${APP_PASSWORD}", "pa$word$", "fallback"]);
    // The substituted value is not URL-decoded into something else: a raw space stays a space
    // only if the URL parser accepts it; here the URL keeps it percent-encoded.
    let u = c.routes[0].upstream().unwrap();
    assert_eq!(u.password.as_deref(), Some("p@ss word"));
}

#[test]
fn env_values_never_appear_in_errors() {
    let src = r#"
[[routes]]
name = "r"
protocol = "${PROTO}"
listen = "127.0.0.1:1"
upstream = "postgres://h"

[[users]]
name = "u"
password = "${APP_PASSWORD}"
auth = "trust"
"#;
    let e = errs(src);
    let text = ConfigErrors(e.clone()).to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("s3cr"), "{text}");
    assert!(has(&e, "routes[0].protocol", "unknown variant `***`"), "{e:?}");
}

#[test]
fn undefined_variables_all_reported_but_no_follow_on_noise() {
    let src = r#"
[[users]]
name = "u"
password = "${A}${B}"

[[routes]]
name = "r"
protocol = "postgres"
listen = "127.0.0.1:1"
upstream = "${DB_URL}"
"#;
    let e = errs(src);
    assert_eq!(
        summary(&e)
            .into_iter()
            .map(|(l, p, m)| (l, p, m.split(' ').nth(2).unwrap_or("").to_owned()))
            .collect::<Vec<_>>(),
        vec![
            (Some(4), "users[0].password".into(), "`A`".into()),
            (Some(4), "users[0].password".into(), "`B`".into()),
            (Some(10), "routes[0].upstream".into(), "`DB_URL`".into()),
        ]
    );
}

#[test]
fn error_display_forms() {
    let e = ConfigError {
        file: "f.toml".into(),
        line: Some(3),
        column: Some(7),
        path: "a.b".into(),
        message: "bad".into(),
    };
    assert_eq!(e.to_string(), "f.toml:3:7: a.b: bad");
    let e =
        ConfigError { file: "f.toml".into(), line: None, column: None, path: String::new(), message: "gone".into() };
    assert_eq!(e.to_string(), "f.toml: gone");
}

#[test]
fn load_reads_files_and_reports_missing_ones() {
    let dir = std::env::temp_dir().join(format!("dgf-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dgf.toml");
    std::fs::write(&path, DEFAULT_TOML).unwrap();
    assert_eq!(load(&path).unwrap(), default_config());
    let missing = dir.join("missing.toml");
    let e = load(&missing).unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(e.to_string().starts_with(&format!("{}: cannot read the config file", missing.display())), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn debug_output_hides_secrets() {
    let src = format!("{BASIC}\n[[routes]]\nname = \"x\"\nprotocol = \"redis\"\nlisten = \"127.0.0.1:1\"\nupstream = \"redis://:hunter2@h\"\n");
    let c = ok(&src);
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("s3cr") && !dbg.contains("hunter2"), "{dbg}");
    assert!(dbg.contains("redis://:***@h:6379"), "{dbg}");
}

#[test]
fn examples_in_the_configuration_reference_are_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let blocks: Vec<&str> = doc.split("```toml\n").skip(1).filter_map(|b| b.split("```").next()).collect();
    assert_eq!(blocks.len(), 5, "toml blocks in {path}");
    let env = |name: &str| match name {
        "APP_PASSWORD" => Some("x".to_owned()),
        "PG_PASSWORD_URLENCODED" => Some("p%40ss".to_owned()),
        _ => None,
    };
    for block in blocks {
        match parse_str(block, "configuration.md", &env) {
            Ok(_) => {}
            // The last example names certificate files that exist only on a real server.
            Err(e) => assert!(
                e.iter().all(|e| e.message.starts_with("cannot read") && e.message.contains("/etc/dgf/")),
                "{e}\n--- in ---\n{block}"
            ),
        }
    }
    // The reference quotes the embedded default (comments aside).
    let quoted = doc
        .split("## The embedded default")
        .nth(1)
        .and_then(|d| d.split("```toml\n").nth(1))
        .and_then(|d| d.split("```").next())
        .unwrap();
    assert_eq!(settings(quoted), settings(DEFAULT_TOML));
}

/// Non-comment, non-blank lines.
fn settings(toml: &str) -> Vec<&str> {
    toml.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

#[test]
fn unset_workers_mean_one_loop_on_small_hosts_and_one_per_core_above() {
    let unset = ok("");
    assert_eq!(unset.server.workers, None);
    assert_eq!(unset.server.worker_threads(1), 1);
    assert_eq!(unset.server.worker_threads(2), 1);
    assert_eq!(unset.server.worker_threads(3), 3);
    assert_eq!(unset.server.worker_threads(16), 16);
    let per_core = ok("[server]\nworkers = 0\n");
    assert_eq!(per_core.server.worker_threads(2), 2);
    assert_eq!(per_core.server.worker_threads(0), 1);
    let fixed = ok("[server]\nworkers = 4\n");
    assert_eq!(fixed.server.worker_threads(2), 4);
    assert_eq!(ok("[server]\nworkers = 1\n").server.worker_threads(64), 1);
}

#[test]
fn audit_keep_rotated_is_optional_and_at_least_one() {
    let with = |v: &str| {
        format!("[[routes]]\nname = \"cache\"\nprotocol = \"redis\"\nlisten = \"127.0.0.1:6380\"\nupstream = \"redis://127.0.0.1:6379\"\n\n[audit]\npath = \"dgf-audit.jsonl\"\n{v}")
    };
    assert_eq!(ok(&with("")).audit.and_then(|a| a.keep_rotated), None);
    assert_eq!(ok(&with("keep_rotated = 20")).audit.and_then(|a| a.keep_rotated), Some(20));
    assert!(has(&errs(&with("keep_rotated = 0")), "audit.keep_rotated", "must be >= 1"));
}
