//! The MongoDB governance fixture shared by the governance test files: the issue's route and
//! label as written plus masking, deny and limit rules, and a private server with dgf in front.

use super::mongo::MongoServer;
use super::{free_port, Dgf};

/// The configuration block of issue 6, verbatim.
pub const ISSUE_CONFIG: &str = r#"[[routes]]
name = "docs"
protocol = "mongodb"
listen = "127.0.0.1:27018"
upstream = "mongodb://127.0.0.1:27017/?directConnection=true"
pool = { size = 4 }

[[labels]]
name = "email"
match = ["mongodb:app.users.email"]
"#;

pub fn config(port: u16, upstream: u16, audit: &str) -> String {
    let issue = ISSUE_CONFIG.replace("27018", &port.to_string()).replace("27017", &upstream.to_string());
    assert_eq!(issue.matches(&port.to_string()).count(), 1);
    format!(
        r#"
[admin]
listen = "{{admin}}"

[audit]
path = "{audit}"

[[users]]
name = "analyst"
password = "analyst-pw"
roles = ["analyst"]

[[users]]
name = "admin"
password = "admin-pw"
roles = ["admin"]

{issue}
[[labels]]
name = "phone"
match = ["mongodb:app.users.contacts.phone"]

[[rules]]
name = "mask email for analysts"
roles = ["analyst"]
action = "mask"
labels = ["email"]
with = "email"

[[rules]]
name = "hide phones"
roles = ["analyst"]
action = "mask"
labels = ["phone"]
with = "redact"

[[rules]]
name = "analysts never drop"
roles = ["analyst"]
action = "deny"
statements = ["drop", "dropDatabase"]

[[rules]]
name = "admins keep out of payroll"
roles = ["admin"]
action = "deny"
tables = ["mongodb:app.payroll"]
"#
    )
}

/// A private MongoDB-wire server and dgf in front of it with [`config`], auditing to a file
/// in a temporary directory.
pub struct Stack {
    pub server: MongoServer,
    pub port: u16,
    pub cfg: String,
    pub dgf: Dgf,
    pub audit: std::path::PathBuf,
    pub _dir: tempfile::TempDir,
}

pub fn stack() -> Stack {
    let server = MongoServer::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let cfg = config(port, server.port, &audit.display().to_string());
    let dgf = Dgf::start(&cfg, &[port]);
    Stack { server, port, cfg, dgf, audit, _dir: dir }
}
