//! Helpers for Redis end-to-end tests: a dgf with a Redis route, redis-cli, raw RESP, and a
//! view of the real Redis (connections dgf holds).

use super::{free_port, Dgf};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

/// The Redis every test may use (shared: use unique key prefixes and clean up).
pub const REDIS_PORT: u16 = 6379;

/// A dgf running one Redis route named `route` on a free port.
pub struct RedisDgf {
    /// The process.
    pub dgf: Dgf,
    /// Route listen port.
    pub port: u16,
    /// Route name (upstream connections are named `dgf-<route>`).
    pub route: String,
    /// `pool.size` of the route.
    pub pool_size: usize,
}

fn route_toml(route: &str, port: u16, pool_size: usize, extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "{{admin}}"

[[routes]]
name = "{route}"
protocol = "redis"
listen = "127.0.0.1:{port}"
upstream = "redis://127.0.0.1:{REDIS_PORT}"
pool = {{ size = {pool_size} }}
{extra}
"#
    )
}

/// Start dgf with a Redis route; `extra` is appended to the config (users, rules, ...).
pub fn start(pool_size: usize, extra: &str) -> RedisDgf {
    let port = free_port();
    let route = super::unique("r").replace('_', "-");
    let dgf = Dgf::start(&route_toml(&route, port, pool_size, extra), &[port]);
    RedisDgf { dgf, port, route, pool_size }
}

impl RedisDgf {
    /// Rewrite the config file with the same route and another `extra`, and reload it.
    #[allow(dead_code)]
    pub fn reload(&self, extra: &str) {
        self.dgf.rewrite_config(&route_toml(&self.route, self.port, self.pool_size, extra));
        let (status, body) = self.dgf.admin("POST", "/reload");
        assert_eq!(status, 200, "reload: {body}");
    }
}

/// Run redis-cli against `port` with `args`; stdout (trimmed).
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Run redis-cli against the real Redis.
pub fn direct(args: &[&str]) -> String {
    cli(REDIS_PORT, args)
}

/// Number of connections on the real Redis whose client name is `name`.
pub fn upstream_conns(name: &str) -> usize {
    direct(&["CLIENT", "LIST"]).lines().filter(|l| l.split(' ').any(|f| f == format!("name={name}"))).count()
}

/// A raw RESP connection.
pub struct Raw {
    /// The socket.
    pub s: TcpStream,
}

impl Raw {
    /// Connect to `port`.
    pub fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw { s }
    }

    /// Send raw bytes.
    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("write");
    }

    /// Send one command as a RESP array.
    pub fn cmd(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.send(out.as_bytes());
    }

    /// Read until `n` complete replies are buffered; returns their bytes.
    pub fn replies(&mut self, n: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        loop {
            let mut pos = 0;
            let mut got = 0;
            while got < n {
                match dgf_protocols::redis::reply_len(&buf[pos..], &dgf_protocols::redis::Limits::SERVER) {
                    Ok(Some(l)) => {
                        pos += l;
                        got += 1;
                    }
                    Ok(None) => break,
                    Err(e) => panic!("bad reply {e}: {:?}", String::from_utf8_lossy(&buf)),
                }
            }
            if got == n {
                return buf;
            }
            let mut tmp = [0u8; 65536];
            let r = self.s.read(&mut tmp).expect("read");
            assert!(r > 0, "connection closed after {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&tmp[..r]);
        }
    }

    /// Read everything until the peer closes.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut v = Vec::new();
        let _ = self.s.read_to_end(&mut v);
        v
    }
}

/// Delete every key with `prefix` on the real Redis (all databases used by tests).
pub fn cleanup(prefix: &str) {
    for db in ["0", "1", "2"] {
        let keys = cli(REDIS_PORT, &["-n", db, "--scan", "--pattern", &format!("{prefix}*")]);
        for k in keys.lines().filter(|k| !k.is_empty()) {
            cli(REDIS_PORT, &["-n", db, "DEL", k]);
        }
    }
}
