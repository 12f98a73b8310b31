//! Tests of `dgf rules explain` / `dgf rules test` logic on a sample policy.

use super::*;

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

[[routes]]
name = "my"
protocol = "mysql"
listen = "127.0.0.1:6433"
upstream = "mysql://root@127.0.0.1:3306"

[[labels]]
name = "email"
match = ["public.customers.email"]

[[labels]]
name = "card"
match = ["customers.card"]

[[rules]]
name = "analysts read only"
roles = ["analyst"]
action = "deny"
statements = ["insert", "update", "delete", "ddl"]

[[rules]]
name = "mask email"
roles = ["analyst"]
action = "mask"
labels = ["email"]
with = "email"

[[rules]]
name = "mask card"
roles = ["analyst"]
action = "mask"
labels = ["card"]
with = "partial(keep_last=4)"
mode = "shadow"

[[rules]]
name = "cap analysts"
roles = ["analyst"]
action = "limit"
max_rows = 50
routes = ["pg"]
"#;

fn checker() -> Checker {
    let cfg = dgf_config::parse_str(CONFIG, "t.toml", &|_| None).expect("config");
    Checker::new(cfg).expect("policy")
}

fn roles(r: &[&str]) -> Vec<String> {
    r.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn explains_masks_by_lineage() {
    let c = checker();
    let e =
        c.explain(&roles(&["analyst"]), "pg", Dialect::Postgres, "SELECT id, lower(email) AS e, card FROM customers");
    assert_eq!(e.decision, "mask");
    assert_eq!(e.row_limit, Some(50));
    assert_eq!(e.rules_fired, vec!["cap analysts".to_owned()]);
    let cols = &e.statements[0].columns;
    assert_eq!(cols.len(), 3);
    assert_eq!(cols[0].mask, None);
    assert_eq!(cols[1].name, "e");
    assert_eq!(cols[1].sources, vec!["customers.email".to_owned()]);
    let m = cols[1].mask.as_ref().expect("email masked");
    assert_eq!((m.rule.as_str(), m.with.as_str(), m.shadow), ("mask email", "email", false));
    let m = cols[2].mask.as_ref().expect("card shadow");
    assert!(m.shadow && m.with == "partial(keep_last=4)");
    assert_eq!(e.shadow, vec!["mask card".to_owned()]);
    let text = render(&e);
    assert!(text.contains("decision: MASK"), "{text}");
    assert!(text.contains("2. e <- customers.email  MASK email (rule \"mask email\")"), "{text}");
    assert!(text.contains("[shadow: not applied]"), "{text}");
    // Other roles see clear data; route-specific rules do not apply elsewhere.
    let e = c.explain(&roles(&["admin"]), "pg", Dialect::Postgres, "SELECT email FROM customers");
    assert_eq!(e.decision, "allow");
    let e = c.explain(&roles(&["analyst"]), "my", Dialect::Mysql, "SELECT 1");
    assert_eq!(e.row_limit, None);
}

#[test]
fn explains_wildcards_and_denials() {
    let c = checker();
    let e = c.explain(&roles(&["analyst"]), "pg", Dialect::Postgres, "SELECT * FROM public.customers");
    assert_eq!(e.decision, "mask");
    let col = &e.statements[0].columns[0];
    assert!(col.wildcard);
    let cols: Vec<&str> = col.masked_columns.iter().filter_map(|m| m.column.as_deref()).collect();
    assert_eq!(cols, vec!["public.customers.email", "public.customers.card"]);
    assert!(render(&e).contains("expanded by the catalog at run time"));

    let e = c.explain(&roles(&["analyst"]), "pg", Dialect::Postgres, "DELETE FROM customers WHERE id = 1");
    assert_eq!(e.decision, "deny");
    let d = e.denied_by.as_ref().unwrap();
    assert_eq!(d.rule, "analysts read only");
    assert!(d.message.contains("permission denied"), "{}", d.message);
    // Fail closed: copying masked data; parse errors.
    let e = c.explain(&roles(&["analyst"]), "pg", Dialect::Postgres, "COPY customers TO STDOUT");
    assert_eq!(e.decision, "deny");
    let e = c.explain(&roles(&["analyst"]), "pg", Dialect::Postgres, "SELEC nonsense");
    assert_eq!(e.denied_by.as_ref().map(|d| d.rule.as_str()), Some("on_parse_error"));
    assert!(e.parse_error.is_some());
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["decision"], "deny");
}

#[test]
fn routes_and_dialects() {
    let c = checker();
    assert_eq!(c.route(None, Dialect::Postgres).unwrap(), "pg");
    assert_eq!(c.route(None, Dialect::Mysql).unwrap(), "my");
    assert!(c.route(Some("nope"), Dialect::Postgres).is_err());
    assert!(parse_dialect("MySQL").is_ok() && parse_dialect("oracle").is_err());
}

const CASES: &str = r#"
[[case]]
name = "analysts cannot delete"
role = "analyst"
sql = "DELETE FROM customers WHERE id = 1"
expect = "deny"
rule = "analysts read only"

[[case]]
name = "email masked"
roles = ["analyst", "other"]
route = "pg"
sql = "SELECT id, email AS mail FROM customers"
expect = "mask"
rule = "mask email"
masked = ["mail"]

[[case]]
name = "wildcard masked"
role = "analyst"
sql = "SELECT * FROM customers"
expect = "mask"
masked = ["email"]

[[case]]
name = "admins see everything"
role = "admin"
sql = "SELECT email FROM customers"
expect = "allow"

[[case]]
name = "wrong on purpose"
role = "analyst"
sql = "SELECT card FROM customers"
expect = "mask"
masked = ["card"]
"#;

#[test]
fn cases_pass_and_fail_with_reasons() {
    let c = checker();
    let cases = parse_cases(CASES, Path::new("cases.toml")).unwrap();
    assert_eq!(cases.len(), 5);
    for case in &cases[..4] {
        assert_eq!(run_case(&c, case), Ok(()), "{}", case.name);
    }
    let why = run_case(&c, &cases[4]).unwrap_err();
    assert_eq!(why, "expected mask, got allow; column `card` is not masked");
    let mut wrong = cases[0].clone();
    wrong.rule = Some("mask email".into());
    wrong.expect = Expect::Allow;
    let why = run_case(&c, &wrong).unwrap_err();
    assert!(why.starts_with("expected allow, got deny by rule \"analysts read only\""), "{why}");
}

#[test]
fn bad_cases_files_are_refused() {
    let p = Path::new("c.toml");
    let e = parse_cases("[[case]]\nname='x'\nsql='select 1'\nexpect='allow'\n", p).unwrap_err();
    assert!(e.to_string().contains("exactly one of `role` and `roles`"), "{e}");
    let e = parse_cases("[[case]]\nname='x'\nrole='a'\nsql='select 1'\nexpect='maybe'\n", p).unwrap_err();
    assert!(e.to_string().contains("maybe"), "{e}");
    let e = parse_cases("[[case]]\nname='x'\nrole='a'\nsql='s'\nexpect='allow'\ncolour=1\n", p).unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
    assert!(parse_cases("", p).is_err());
}

/// The worked examples of docs/policies.md: each ```` ```toml cases ```` block passes against the
/// configuration block just before it, so the documented behaviour is the real one.
#[test]
fn worked_examples_in_policies_md_behave_as_documented() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/policies.md");
    let doc = std::fs::read_to_string(path).expect("docs/policies.md");
    let examples = doc.split("## Worked examples").nth(1).expect("worked examples section");
    let env = |n: &str| (n == "DGF_MASK_KEY").then(|| "0123456789abcdef0123456789abcdef".to_owned());
    let mut checker: Option<Checker> = None;
    let mut ran = 0;
    for block in examples.split("```toml").skip(1) {
        let (info, body) = block.split_once('\n').expect("fence line");
        let body = body.split("```").next().unwrap_or_default();
        match info.trim() {
            "" => {
                let cfg = dgf_config::parse_str(body, "policies.md", &env).expect("example config");
                checker = Some(Checker::new(cfg).expect("example policy"));
            }
            "cases" => {
                let c = checker.as_ref().expect("a config block before the cases");
                for case in parse_cases(body, Path::new("policies.md")).expect("cases") {
                    assert_eq!(run_case(c, &case), Ok(()), "case \"{}\" of docs/policies.md", case.name);
                    ran += 1;
                }
            }
            other => panic!("unknown fence info `toml {other}`"),
        }
    }
    assert!(ran >= 15, "only {ran} documented cases ran");
}
