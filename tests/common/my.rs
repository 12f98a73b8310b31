//! MySQL helpers for end-to-end tests: the shared MariaDB (root, no password) driven with the
//! `mysql` CLI, unique databases and upstream users per test, and dgf configs for MySQL routes.

use super::unique;
use std::process::Command;

/// The MariaDB every test may use (shared: create your own database and user).
pub const MY_PORT: u16 = 3306;

/// Run `mysql` with `args` and `sql`; Ok(stdout) or Err(stderr).
pub fn mysql_cli(args: &[&str], sql: &str) -> Result<String, String> {
    let out = Command::new("mysql")
        .args(["--protocol=TCP", "-h", "127.0.0.1", "--batch", "--skip-column-names"])
        .args(args)
        .args(["-e", sql])
        .output()
        .expect("run mysql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Run SQL on the real server as root (panics on failure).
pub fn my_admin(sql: &str) -> String {
    mysql_cli(&["-P", "3306", "-u", "root"], sql).unwrap_or_else(|e| panic!("mysql admin `{sql}`: {e}"))
}

/// A database and an upstream user owning it, created for one test; dropped at the end.
pub struct MyDb {
    /// Database (and user) name.
    pub name: String,
    /// The upstream user's password.
    pub password: String,
}

impl MyDb {
    /// Create a fresh database and a `mysql_native_password` user with all rights on it.
    pub fn create() -> MyDb {
        let name = unique("dgfm");
        let password = format!("pw_{}", rand::random::<u32>());
        my_admin(&format!(
            "CREATE DATABASE {name}; CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'; \
             CREATE USER '{name}'@'localhost' IDENTIFIED BY '{password}'; \
             GRANT ALL ON {name}.* TO '{name}'@'%'; GRANT ALL ON {name}.* TO '{name}'@'localhost';"
        ));
        MyDb { name, password }
    }

    /// Upstream URL for a route that logs in as this database's user.
    pub fn upstream(&self) -> String {
        format!("mysql://{}:{}@127.0.0.1:{MY_PORT}/{}", self.name, self.password, self.name)
    }

    /// Server connections the upstream user currently has open.
    pub fn sessions(&self) -> i64 {
        my_admin(&format!("SELECT COUNT(*) FROM information_schema.processlist WHERE user = '{}'", self.name))
            .parse()
            .unwrap_or(-1)
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let n = &self.name;
        let _ = mysql_cli(
            &["-P", "3306", "-u", "root"],
            &format!(
                "DROP DATABASE IF EXISTS {n}; DROP USER IF EXISTS '{n}'@'%'; DROP USER IF EXISTS '{n}'@'localhost';"
            ),
        );
    }
}

/// A dgf config with one MySQL route on `port` to `upstream`, users `app` / `app_pw`
/// (plaintext) and `trusty` (trust), and `extra` appended to the route table.
pub fn my_config(port: u16, upstream: &str, pool: &str, extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "{{admin}}"

[[users]]
name = "app"
password = "app_pw"
roles = ["app"]

[[users]]
name = "other"
password = "other_pw"

[[routes]]
name = "mysql"
protocol = "mysql"
listen = "127.0.0.1:{port}"
upstream = "{upstream}"
pool = {pool}
{extra}
"#
    )
}

/// `mysql` CLI through dgf as `user` with `password`.
pub fn via_dgf(port: u16, user: &str, password: &str, db: &str, sql: &str) -> Result<String, String> {
    let p = port.to_string();
    let pw = format!("-p{password}");
    let mut args = vec!["-P", p.as_str(), "-u", user, pw.as_str()];
    if !db.is_empty() {
        args.push("-D");
        args.push(db);
    }
    mysql_cli(&args, sql)
}

/// Path to the Python venv with PyMySQL and mysql-connector-python.
pub fn py_venv() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("bash").arg(format!("{root}/scripts/py-venv.sh")).output().expect("py-venv.sh");
    assert!(out.status.success(), "py-venv.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Run a Python snippet in the venv; Ok(stdout) or Err(stderr).
pub fn python(code: &str) -> Result<String, String> {
    let venv = py_venv();
    let out = Command::new(format!("{venv}/bin/python")).arg("-c").arg(code).output().expect("python");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
