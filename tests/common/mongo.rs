//! MongoDB-wire test server (`secantusdb` from the shared Python venv) and Python client
//! helpers. Each test binary starts its own server on a free port; it is stopped on drop.

use super::free_port;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Path of the Python venv (created or updated once per test binary by scripts/py-venv.sh).
pub fn venv() -> PathBuf {
    static V: OnceLock<PathBuf> = OnceLock::new();
    V.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = Command::new("bash").arg(root.join("scripts/py-venv.sh")).output().expect("run py-venv.sh");
        assert!(out.status.success(), "py-venv.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    })
    .clone()
}

/// The venv's python.
pub fn python_bin() -> PathBuf {
    venv().join("bin/python")
}

/// Run a Python script with the venv; Ok(stdout) or Err(stderr + stdout).
pub fn python(script: &str, env: &[(&str, &str)]) -> Result<String, String> {
    let mut cmd = Command::new(python_bin());
    cmd.arg("-c").arg(script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{}\n--- stdout ---\n{stdout}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Options of a test server.
#[derive(Default, Clone)]
pub struct MongoOpts {
    /// Create this user (root role) and restart with `--auth`.
    pub auth: Option<(String, String)>,
    /// TLS certificate and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Run as a one-node replica set (no `--standalone`): change streams work; connect with
    /// `directConnection=true` (dgf always does).
    pub replica_set: bool,
    /// `mechanisms` of the created user (empty: the server's default, SCRAM-SHA-256).
    pub mechanisms: Vec<String>,
}

/// A running secantusdb.
pub struct MongoServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Storage and logs.
    pub dir: tempfile::TempDir,
    opts: MongoOpts,
}

impl MongoServer {
    /// A standalone server without auth or TLS.
    pub fn start() -> MongoServer {
        Self::start_with(MongoOpts::default())
    }

    /// A one-node replica set (change streams), without auth or TLS.
    pub fn start_replica_set() -> MongoServer {
        Self::start_with(MongoOpts { replica_set: true, ..MongoOpts::default() })
    }

    /// A server with options.
    pub fn start_with(opts: MongoOpts) -> MongoServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut s = MongoServer { child: None, port, dir, opts: opts.clone() };
        if let Some((user, pass)) = &opts.auth {
            s.spawn(false, None);
            let mechs =
                if opts.mechanisms.is_empty() { String::new() } else { format!(", mechanisms={:?}", opts.mechanisms) };
            let script = format!(
                "import pymongo\nc = pymongo.MongoClient('mongodb://127.0.0.1:{port}/?directConnection=true')\nc.admin.command('createUser', '{user}', pwd='{pass}', roles=['root']{mechs})\n"
            );
            python(&script, &[]).expect("createUser");
            s.stop();
            s.spawn(true, opts.tls.clone());
        } else {
            s.spawn(false, opts.tls.clone());
        }
        s
    }

    fn spawn(&mut self, auth: bool, tls: Option<(PathBuf, PathBuf)>) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log");
        let mut cmd = Command::new(python_bin());
        cmd.args(["-m", "secantus", "--host", "127.0.0.1", "--port", &self.port.to_string()]);
        if !self.opts.replica_set {
            cmd.arg("--standalone");
        }
        cmd.arg("--storage-path")
            .arg(self.dir.path().join("data"))
            .args(["--log-level", "WARNING"])
            .stdout(Stdio::null())
            .stderr(log);
        if auth {
            cmd.arg("--auth");
        }
        if let Some((c, k)) = tls {
            cmd.arg("--tls-cert-file").arg(c).arg("--tls-key-file").arg(k);
        }
        self.child = Some(cmd.spawn().expect("spawn secantus"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("secantus exited with {st}: {}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("secantus did not listen on {}: {}", self.port, self.logs());
    }

    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// The server's log.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A URI for connecting to the server directly (the test's admin credentials included).
    pub fn direct_uri(&self) -> String {
        let creds = self.opts.auth.as_ref().map(|(u, p)| format!("{u}:{p}@")).unwrap_or_default();
        let tls = if self.opts.tls.is_some() { "&tls=true&tlsAllowInvalidCertificates=true" } else { "" };
        format!("mongodb://{creds}127.0.0.1:{}/?directConnection=true{tls}", self.port)
    }

    /// Connections the server currently has open (serverStatus, minus the one asking).
    pub fn connections(&self) -> i64 {
        let script = format!(
            "import pymongo\nc = pymongo.MongoClient('{}', maxPoolSize=1, serverMonitoringMode='poll')\nprint(c.admin.command('serverStatus')['connections']['current'])\n",
            self.direct_uri()
        );
        let out = python(&script, &[]).expect("serverStatus");
        // pymongo opens a (polling) monitor connection and one for the command.
        out.trim().parse::<i64>().unwrap_or(-1) - 2
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- secantus log ----\n{}", self.logs());
        }
        self.stop();
    }
}

/// A self-signed certificate for 127.0.0.1 / localhost written to `dir`: (cert, key).
pub fn self_signed(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).expect("rcgen");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("key");
    (cert, key)
}
