//! The Postgres governance fixture shared by the governance test files: a table with email,
//! SSN and card columns, a policy that masks them for `analyst`, and the helpers that read
//! results as text and look for clear values.

use super::{free_port, Dgf, TestDb};
use tokio_postgres::{Client, SimpleQueryMessage};

pub const EMAILS: [&str; 2] = ["alice@example.com", "bob@example.org"];
pub const SSNS: [&str; 2] = ["123-45-6789", "987-65-4321"];
pub const CARDS: [&str; 2] = ["4111111111111111", "5500005555555559"];

pub fn config(port: u16, audit: &str) -> String {
    format!(
        r#"
[admin]
listen = "{{admin}}"

[[users]]
name = "analyst"
auth = "trust"
roles = ["analyst"]

[[users]]
name = "admin"
auth = "trust"
roles = ["admin"]

[[routes]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:{port}"
upstream = "postgres://postgres@127.0.0.1:5432"
pool = {{ size = 2 }}

[audit]
path = "{audit}"

[[labels]]
name = "email"
match = ["public.customers.email", "mongodb:app.users.email", "redis:user:*#email", "public.v_labelled.email", "public.v_renamed.email", "public.people.email"]

[[labels]]
name = "ssn"
match = ["customers.ssn"]

[[labels]]
name = "card"
match = ["public.customers.card"]

[[labels]]
name = "age"
match = ["public.customers.age"]

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
name = "mask ssn and card"
roles = ["analyst"]
action = "mask"
labels = ["ssn", "card"]
with = "partial(keep_last=4)"

[[rules]]
name = "hide age"
roles = ["analyst"]
action = "mask"
labels = ["age"]
with = "redact"

[[rules]]
name = "nobody drops or truncates"
action = "deny"
statements = ["drop", "truncate"]

[[rules]]
name = "watch notes"
action = "deny"
tables = ["notes"]
mode = "shadow"

[guards]
trusted_functions = ["f_ok_*"]

[[rules]]
name = "analysts keep out of payroll"
roles = ["analyst"]
action = "deny"
tables = ["payroll"]
"#
    )
}

pub struct Env {
    pub dgf: Dgf,
    pub db: TestDb,
    pub port: u16,
    pub audit: std::path::PathBuf,
    pub _dir: tempfile::TempDir,
}

pub fn setup() -> Env {
    let db = TestDb::create();
    let conn = format!("host=127.0.0.1 port=5432 user=postgres dbname={}", db.name);
    super::psql(
        &conn,
        "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, ssn text, card varchar(20), age int);
         INSERT INTO customers VALUES
           (1, 'alice', 'alice@example.com', '123-45-6789', '4111111111111111', 34),
           (2, 'bob', 'bob@example.org', '987-65-4321', '5500005555555559', 51);
         CREATE TABLE notes (body text);",
    )
    .expect("schema");
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.jsonl");
    let port = free_port();
    let dgf = Dgf::start(&config(port, &audit.display().to_string()), &[port]);
    Env { dgf, db, port, audit, _dir: dir }
}

pub async fn client(env: &Env, user: &str) -> Client {
    super::connect(env.port, user, &env.db.name).await.expect("connect through dgf")
}

pub async fn simple_text(c: &Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    let mut out = String::new();
    for m in c.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(r) = m {
            for i in 0..r.len() {
                out.push_str(r.get(i).unwrap_or("NULL"));
                out.push('|');
            }
            out.push('\n');
        }
    }
    Ok(out)
}

pub fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut o = String::new();
    for ch in b.chunks(3) {
        let n =
            (u32::from(ch[0]) << 16) | (u32::from(*ch.get(1).unwrap_or(&0)) << 8) | u32::from(*ch.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= ch.len() {
                o.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
    }
    o
}

/// Any clear sensitive value (or an obvious encoding of one) in `text`.
pub fn leaked(text: &str) -> Option<String> {
    let low = text.to_lowercase();
    for s in EMAILS.iter().chain(SSNS.iter()).chain(CARDS.iter()) {
        if low.contains(&s.to_lowercase()) || text.contains(&b64(s)[..12]) {
            return Some((*s).to_owned());
        }
    }
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    for s in SSNS.iter().chain(CARDS.iter()) {
        let d: String = s.chars().filter(char::is_ascii_digit).collect();
        if digits.contains(&d) {
            return Some((*s).to_owned());
        }
    }
    None
}

pub fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_else(|| format!("{e}"))
}
