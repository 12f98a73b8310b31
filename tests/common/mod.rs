//! Harness for dgf's end-to-end tests: free ports, a running dgf binary, unique databases.
#![allow(dead_code)]

pub mod mongo;
pub mod mongo_gov;
pub mod my;
pub mod pg_client;
pub mod pg_gov;
pub mod pg_instance;
pub mod redis;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Postgres every test may use (shared: create your own database).
pub const PG_HOST: &str = "127.0.0.1";
/// Its port.
pub const PG_PORT: u16 = 5432;

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    // The kernel may hand the same port out again once its listener is closed, so two ports
    // picked for one dgf (a route's and the admin's) could collide: never return a port twice
    // in one test process.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A unique name with a prefix, safe as an identifier.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{:08x}", std::process::id(), rand::random::<u32>())
}

/// A running dgf process; killed on drop.
pub struct Dgf {
    child: Child,
    /// Temporary folder holding the config (and anything else the test writes).
    pub dir: tempfile::TempDir,
    /// Config file path.
    pub config: PathBuf,
    /// Admin address.
    pub admin: SocketAddr,
    /// Log file.
    pub log: PathBuf,
}

impl Dgf {
    /// Write `toml` (with `{admin}` replaced by a free admin address) and start `dgf run`.
    /// Waits until every `wait_ports` accepts connections.
    pub fn start(toml: &str, wait_ports: &[u16]) -> Dgf {
        Self::start_with_env(toml, wait_ports, &[])
    }

    /// Same, with extra environment variables.
    pub fn start_with_env(toml: &str, wait_ports: &[u16], env: &[(&str, &str)]) -> Dgf {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("dgf.toml");
        let text = toml.replace("{admin}", &admin.to_string());
        std::fs::write(&config, text).expect("write config");
        let log = dir.path().join("dgf.log");
        let logf = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dgf"));
        cmd.arg("run").arg("--config").arg(&config).stdout(Stdio::null()).stderr(logf);
        cmd.env("DGF_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn dgf");
        let mut d = Dgf { child, dir, config, admin, log };
        let mut ports = wait_ports.to_vec();
        ports.push(admin.port());
        for p in ports {
            d.wait_port(p);
        }
        d
    }

    fn wait_port(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("dgf exited with {status}: {}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("dgf did not listen on {port}: {}", self.logs());
    }

    /// The process's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (e.g. "HUP", "TERM").
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().expect("kill");
        assert!(ok.success());
    }

    /// Wait for the process to exit (up to `timeout`) and return its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Replace the config file contents (same `{admin}` substitution).
    pub fn rewrite_config(&self, toml: &str) {
        let text = toml.replace("{admin}", &self.admin.to_string());
        let mut f = std::fs::File::create(&self.config).expect("config");
        f.write_all(text.as_bytes()).expect("write");
    }

    /// HTTP GET/POST against the admin API: (status, body).
    pub fn admin(&self, method: &str, path: &str) -> (u16, String) {
        http(self.admin, method, path)
    }
}

impl Drop for Dgf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- dgf log ----\n{}", self.logs());
        }
    }
}

/// Minimal HTTP/1.1 client for the admin API.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: dgf\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("admin read");
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Run psql against the real Postgres as superuser and return stdout (panics on failure).
pub fn psql_admin(sql: &str) -> String {
    psql(&format!("host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres"), sql).expect("psql admin")
}

/// Run `psql -X -A -t -c sql` with a conninfo string; Ok(stdout) or Err(stderr).
pub fn psql(conninfo: &str, sql: &str) -> Result<String, String> {
    psql_env(conninfo, sql, &[])
}

/// `psql` with extra environment (e.g. PGPASSWORD).
pub fn psql_env(conninfo: &str, sql: &str, env: &[(&str, &str)]) -> Result<String, String> {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A database created for one test on the shared Postgres; dropped at the end.
pub struct TestDb {
    /// Its name.
    pub name: String,
}

impl TestDb {
    /// Create a fresh database.
    pub fn create() -> TestDb {
        let name = unique("dgft");
        psql_admin(&format!("CREATE DATABASE {name}"));
        TestDb { name }
    }

    /// Number of server sessions currently connected to this database.
    pub fn sessions(&self) -> i64 {
        psql_admin(&format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'", self.name))
            .parse()
            .unwrap_or(-1)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = psql(
            &format!("host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres"),
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A minimal route config: one trust user `app`, one Postgres route on `port`.
pub fn basic_config(port: u16, pool: &str) -> String {
    format!(
        r#"
[admin]
listen = "{{admin}}"

[[users]]
name = "app"
auth = "trust"

[[routes]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:{port}"
upstream = "postgres://postgres@127.0.0.1:5432"
pool = {pool}
"#
    )
}

/// tokio-postgres connection through dgf (no TLS); spawns the connection task.
pub async fn connect(port: u16, user: &str, db: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) =
        tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user={user} dbname={db}"), tokio_postgres::NoTls)
            .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// How many TCP sockets process `pid` holds (open file descriptors) whose remote end is
/// 127.0.0.1/::1 port `remote_port`, in any state: the ground truth of how many upstream
/// connections dgf has open, with no lag from the server noticing a close.
pub fn sockets_to(pid: u32, remote_port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    inodes.insert(inode.to_string());
                }
            }
        }
    }
    // Distinct inodes: the kernel lists the table in chunks, and a socket that moves between
    // two reads can be listed twice.
    let mut seen = std::collections::HashSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(inode)) = (cols.get(2), cols.get(9)) else { continue };
            let port = remote.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if port == Some(remote_port) && inodes.contains(*inode) {
                seen.insert(inode.to_string());
            }
        }
    }
    seen.len()
}

/// Samples `sockets_to(pid, remote_port)` every 5 ms on a thread until the returned guard's
/// `finish` is called; `finish` gives the largest count seen.
pub struct SocketWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl SocketWatch {
    /// Start sampling.
    pub fn start(pid: u32, remote_port: u16) -> SocketWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut max = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(sockets_to(pid, remote_port));
                std::thread::sleep(Duration::from_millis(5));
            }
            max
        });
        SocketWatch { stop, thread }
    }

    /// Stop sampling; the largest count seen.
    pub fn finish(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(usize::MAX)
    }
}
