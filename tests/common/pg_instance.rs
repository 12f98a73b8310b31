//! A private PostgreSQL instance for tests that restart, stop or reconfigure the server
//! (initdb + pg_ctl as user `postgres`, own port, own data folder, removed on drop).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Folder holding initdb/pg_ctl (newest installed major version).
pub fn pg_bindir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (run scripts/ensure-services.sh)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("initdb not found")
}

fn as_postgres(args: &[&str]) -> std::process::Output {
    let am_root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let mut cmd = if am_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]);
        c.args(args);
        c
    } else {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]);
        c
    };
    cmd.output().expect("run postgres tool")
}

/// Settings for a private instance.
#[derive(Default, Clone)]
pub struct PgOptions {
    /// `host` lines' method for 127.0.0.1: "trust", "md5", "scram-sha-256".
    pub auth: Option<String>,
    /// PEM certificate and key to enable `ssl = on`.
    pub tls: Option<(String, String)>,
    /// Extra postgresql.conf lines.
    pub extra_conf: Vec<String>,
}

/// A running private PostgreSQL.
pub struct PgInstance {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Data folder.
    pub dir: PathBuf,
    _root: tempfile::TempDir,
}

impl PgInstance {
    /// initdb + start. Superuser `postgres` can always log in over the unix socket in `dir`.
    pub fn start(opts: &PgOptions) -> PgInstance {
        let root = tempfile::Builder::new().prefix("dgf-pg-").tempdir_in("/tmp").expect("tempdir");
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        let _ = Command::new("chown").args(["-R", "postgres:postgres", root.path().to_str().unwrap()]).status();
        let bin = pg_bindir();
        let out = as_postgres(&[
            bin.join("initdb").to_str().unwrap(),
            "-D",
            dir.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = super::free_port();
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 50\n",
            dir.display()
        );
        if let Some((cert, key)) = &opts.tls {
            let c = dir.join("server.crt");
            let k = dir.join("server.key");
            std::fs::copy(cert, &c).unwrap();
            std::fs::copy(key, &k).unwrap();
            let _ =
                Command::new("chown").args(["postgres:postgres", c.to_str().unwrap(), k.to_str().unwrap()]).status();
            let _ = Command::new("chmod").args(["600", k.to_str().unwrap()]).status();
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        for l in &opts.extra_conf {
            conf.push_str(l);
            conf.push('\n');
        }
        append(&dir.join("postgresql.conf"), &conf);
        let method = opts.auth.clone().unwrap_or_else(|| "trust".into());
        let hba =
            format!("local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 {method}\n");
        std::fs::write(dir.join("pg_hba.conf"), hba).unwrap();
        let inst = PgInstance { port, dir, _root: root };
        inst.ctl("start");
        inst
    }

    fn ctl(&self, action: &str) {
        let bin = pg_bindir();
        let log = self.dir.join("server.log");
        let out = as_postgres(&[
            bin.join("pg_ctl").to_str().unwrap(),
            "-D",
            self.dir.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "30",
            "-m",
            "fast",
            action,
        ]);
        assert!(
            out.status.success(),
            "pg_ctl {action}: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stop the server (fast shutdown: clients get 57P01 and are disconnected).
    pub fn stop(&self) {
        self.ctl("stop");
    }

    /// Start it again on the same port.
    pub fn start_again(&self) {
        self.ctl("start");
    }

    /// Run SQL as superuser over the unix socket.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.dir.to_str().unwrap()])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres", "-c", sql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        let bin = pg_bindir();
        let _ = as_postgres(&[
            bin.join("pg_ctl").to_str().unwrap(),
            "-D",
            self.dir.to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A self-signed CA and a server certificate for `names`, written as PEM into `dir`.
/// Returns (ca_cert_path, server_cert_path, server_key_path).
pub fn make_certs(dir: &Path, names: &[&str]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "dgf test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let ca_path = dir.join("ca.pem");
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server.key");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    for p in [&ca_path, &cert_path, &key_path] {
        let _ = Command::new("chmod").args(["644", p.to_str().unwrap()]).status();
    }
    (ca_path.display().to_string(), cert_path.display().to_string(), key_path.display().to_string())
}
