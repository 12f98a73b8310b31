//! End-to-end edges: malformed, oversized and slow clients over raw TCP, the `dgf` command line
//! (version, check, run with a taken port), JSON logs without secrets, the embedded default.

mod common;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn dgf_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dgf"))
}

/// A protocol 3.0 StartupMessage.
fn startup(user: &str, db: &str) -> Vec<u8> {
    let mut body = 196608i32.to_be_bytes().to_vec();
    for s in ["user", user, "database", db] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// Connect and log in as a trust user by hand; returns once ReadyForQuery arrived.
fn raw_login(port: u16, user: &str, db: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&startup(user, db)).unwrap();
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).expect("login response");
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).unwrap();
        assert_ne!(head[0], b'E', "login failed: {}", String::from_utf8_lossy(&body));
        if head[0] == b'Z' {
            return s;
        }
    }
}

/// Read until the server closes the connection (EOF or reset) within `limit`.
fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(start.elapsed()).unwrap_or_else(|| panic!("still open after {limit:?}"));
        s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, start.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, start.elapsed()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("still open after {limit:?}; received {got:?}")
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// SQLSTATE of the ErrorResponse that `bytes` starts with.
fn error_code(bytes: &[u8]) -> Option<String> {
    if bytes.first() != Some(&b'E') || bytes.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    let mut fields = bytes.get(5..1 + len)?;
    while let Some((&t, rest)) = fields.split_first() {
        let end = rest.iter().position(|&b| b == 0)?;
        if t == b'C' {
            return Some(String::from_utf8_lossy(&rest[..end]).into_owned());
        }
        fields = &rest[end + 1..];
    }
    None
}

/// The server must close promptly; anything it says first must be an ErrorResponse in `codes`.
fn expect_error_or_close(s: &mut TcpStream, codes: &[&str], error_required: bool, what: &str) {
    let (bytes, took) = read_to_close(s, Duration::from_secs(3));
    assert!(took < Duration::from_secs(3), "{what}: closed after {took:?}");
    if bytes.is_empty() && !error_required {
        return;
    }
    let code = error_code(&bytes).unwrap_or_else(|| panic!("{what}: expected an ErrorResponse, got {bytes:?}"));
    assert!(codes.contains(&code.as_str()), "{what}: SQLSTATE {code}, want one of {codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_input_is_refused_without_harming_others() {
    let db = TestDb::create();
    let port = free_port();
    let _dgf = Dgf::start(&basic_config(port, "{ size = 2 }"), &[port]);
    let good = connect(port, "app", &db.name).await.unwrap();
    let v: i32 = good.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(v, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let bg = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let v: i32 = good.query_one("SELECT $1::int", &[&n]).await.expect("well-behaved client").get(0);
                assert_eq!(v, n);
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (good, n)
        }
    });
    let name = db.name.clone();
    tokio::task::spawn_blocking(move || {
        // (a) garbage instead of a startup packet (reads as a 1.2 GB length).
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: dgf\r\n\r\n").unwrap();
        expect_error_or_close(&mut s, &["08P01", "54000"], false, "garbage");
        // (a') a startup packet shorter than its own header.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&[0, 0, 0, 4, 0, 3, 0, 0]).unwrap();
        expect_error_or_close(&mut s, &["08P01"], false, "short startup");
        // (b) a startup packet announcing more than 10000 bytes.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut big = 20_000i32.to_be_bytes().to_vec();
        big.extend_from_slice(&196608i32.to_be_bytes());
        big.extend(std::iter::repeat_n(b'x', 2000));
        s.write_all(&big).unwrap();
        expect_error_or_close(&mut s, &["08P01", "54000"], false, "oversized startup");
        // (c) after login, a message announcing 2 GB.
        let mut s = raw_login(port, "app", &name);
        s.write_all(b"Q\x7f\xff\xff\xffSELECT 1").unwrap();
        expect_error_or_close(&mut s, &["54000", "08P01"], true, "2 GB message");
        // (c') after login, a length below the minimum of 4.
        let mut s = raw_login(port, "app", &name);
        s.write_all(b"Q\x00\x00\x00\x02").unwrap();
        expect_error_or_close(&mut s, &["08P01"], true, "length 2");
        // (c'') after login, a Query whose text lacks its terminating NUL.
        let mut s = raw_login(port, "app", &name);
        s.write_all(b"Q\x00\x00\x00\x0dSELECT 42").unwrap();
        expect_error_or_close(&mut s, &["08P01"], true, "unterminated query string");
        // (d) after login, an unknown message type.
        let mut s = raw_login(port, "app", &name);
        s.write_all(b"y\x00\x00\x00\x04").unwrap();
        expect_error_or_close(&mut s, &["08P01"], true, "unknown message type");
        // A raw client that behaves still gets answers.
        let mut s = raw_login(port, "app", &name);
        s.write_all(b"Q\x00\x00\x00\x0eSELECT 42\x00").unwrap();
        let mut buf = vec![0u8; 256];
        let n = s.read(&mut buf).unwrap();
        assert_eq!(buf[0], b'T', "{:?}", &buf[..n]);
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let (good, n) = tokio::time::timeout(Duration::from_secs(10), bg).await.expect("good client hung").unwrap();
    assert!(n >= 3, "the well-behaved client ran only {n} queries during the attacks");
    let v: i32 = good.query_one("SELECT 7", &[]).await.expect("after").get(0);
    assert_eq!(v, 7);
    let fresh = connect(port, "app", &db.name).await.expect("new client after the attacks");
    assert_eq!(fresh.query_one("SELECT 8", &[]).await.unwrap().get::<_, i32>(0), 8);
}

#[test]
fn silent_clients_are_closed_after_the_login_timeout() {
    let db = TestDb::create();
    let port = free_port();
    let cfg =
        basic_config(port, "{ size = 2 }").replace("[[users]]", "[server]\nclient_login_timeout_ms = 500\n\n[[users]]");
    let _dgf = Dgf::start(&cfg, &[port]);
    // Sends nothing at all.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (bytes, took) = read_to_close(&mut s, Duration::from_secs(3));
    assert!(took >= Duration::from_millis(450), "closed too early: {took:?}");
    assert!(bytes.is_empty() || error_code(&bytes).is_some(), "{bytes:?}");
    // Sends half a startup packet, then stalls.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&startup("app", &db.name)[..10]).unwrap();
    let (_, took) = read_to_close(&mut s, Duration::from_secs(3));
    assert!(took >= Duration::from_millis(450), "closed too early: {took:?}");
    // The timeout covers login only: a logged-in client may sit idle longer.
    let mut s = raw_login(port, "app", &db.name);
    std::thread::sleep(Duration::from_millis(1200));
    s.write_all(b"Q\x00\x00\x00\x0eSELECT 42\x00").unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert!(n > 0 && buf[0] == b'T', "idle logged-in client was dropped: {:?}", &buf[..n]);
}

#[test]
fn cli_version_check_and_bind_errors() {
    let out = dgf_cmd().arg("--version").output().unwrap();
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.starts_with("dgf ") && v.contains(env!("CARGO_PKG_VERSION")), "{v}");

    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let valid = basic_config(port, "{ size = 2 }").replace("{admin}", &format!("127.0.0.1:{admin}"));
    let good = dir.path().join("good.toml");
    std::fs::write(&good, &valid).unwrap();
    let out = dgf_cmd().args(["check", "--config"]).arg(&good).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("{}: OK", good.display())), "{stdout}");
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "check must not bind anything");

    // Three different problems, each reported with file:line:col.
    let var = "DGF_TEST_SURELY_UNDEFINED_7Q";
    let bad_text = valid
        .replace("auth = \"trust\"", &format!("auth = \"scram-sha-256\"\npassword = \"${{{var}}}\""))
        .replace("protocol =", "colour = \"red\"\nprotocol =")
        .replace("{ size = 2 }", "{ size = 0 }");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, &bad_text).unwrap();
    let out = dgf_cmd().args(["check", "--config"]).arg(&bad).env_remove(var).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for (needle, topic) in [("password", var), ("colour", "colour"), ("pool", "size")] {
        let line = bad_text.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
        let prefix = format!("{}:{line}:", bad.display());
        let reported = stderr.lines().find(|l| l.starts_with(&prefix) && l.contains(topic));
        let col = reported.and_then(|l| l[prefix.len()..].split(':').next()).map(|c| c.parse::<u32>());
        assert!(matches!(col, Some(Ok(c)) if c >= 1), "no {prefix}COL: ...{topic}... in:\n{stderr}");
    }
    assert!(stderr.contains("3 problem(s) found"), "{stderr}");

    // `dgf run` on a taken route port, then on a taken admin port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let (p2, a2) = (free_port(), free_port());
    for (route_port, admin_port) in [(taken_port, a2), (p2, taken_port)] {
        let cfg = basic_config(route_port, "{ size = 2 }").replace("{admin}", &format!("127.0.0.1:{admin_port}"));
        let f = dir.path().join(format!("run{route_port}.toml"));
        std::fs::write(&f, cfg).unwrap();
        let mut child = dgf_cmd()
            .args(["run", "--config"])
            .arg(&f)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("dgf run kept running with port {taken_port} taken");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(!status.success(), "{err}");
        assert!(err.contains(&format!("bind 127.0.0.1:{taken_port}")) && err.contains("in use"), "{err}");
    }
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_a_span_per_connection_and_no_secrets() {
    let db = TestDb::create();
    let port = free_port();
    let (user_secret, upstream_secret) = ("CliS3cret-4f1e", "UpS3cret-9a2b");
    let cfg = format!(
        r#"
[admin]
listen = "{{admin}}"

[log]
format = "json"

[[users]]
name = "app"
auth = "trust"

[[users]]
name = "sec"
password = "{user_secret}"

[[routes]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:{port}"
upstream = "postgres://postgres:{upstream_secret}@127.0.0.1:5432"
pool = {{ size = 2 }}
"#
    );
    let dgf = Dgf::start_with_env(&cfg, &[port], &[("DGF_LOG", "debug")]);
    let conn =
        |user: &str, pw: &str| format!("host=127.0.0.1 port={port} user={user} password={pw} dbname={}", db.name);
    let (c, conn_task) = tokio_postgres::connect(&conn("sec", user_secret), tokio_postgres::NoTls).await.unwrap();
    let task = tokio::spawn(conn_task);
    assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
    let e = tokio_postgres::connect(&conn("sec", "Wr0ngPw-77"), tokio_postgres::NoTls).await.err().unwrap();
    assert_eq!(e.code().map(|c| c.code()), Some("28P01"), "{e}");
    let app = connect(port, "app", &db.name).await.unwrap();
    assert!(app.simple_query("SELECT * FROM missing_table").await.is_err());
    drop((c, app));
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    let valid = dgf_cmd().args(["check", "--config"]).arg(&dgf.config).output().unwrap();
    assert!(valid.status.success(), "{}", String::from_utf8_lossy(&valid.stderr));
    let mut check_out = String::from_utf8_lossy(&valid.stdout).into_owned();
    // A rejected reload whose file also carries both secrets.
    dgf.rewrite_config(&cfg.replace("127.0.0.1:5432\"", "127.0.0.1:5432?sslmode=bogus\""));
    let (status, body) = dgf.admin("POST", "/reload");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("sslmode"), "{body}");
    let check = dgf_cmd().args(["check", "--config"]).arg(&dgf.config).output().unwrap();
    check_out += &format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(!check.status.success(), "{check_out}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let logs = dgf.logs();
    for (what, text) in [("log", &logs), ("reload error", &body), ("dgf check", &check_out)] {
        for secret in [user_secret, upstream_secret, "Wr0ngPw-77"] {
            assert!(!text.contains(secret), "{what} leaks {secret}:\n{text}");
        }
    }
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(lines.iter().any(|l| l["level"] == "DEBUG"), "DGF_LOG=debug ignored");
    let spans: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["span"]["name"] == "pg").map(|l| &l["span"]).collect();
    let peers: std::collections::HashSet<String> = spans.iter().map(|s| s["peer"].to_string()).collect();
    assert!(peers.len() >= 3, "want one span per connection (3), got peers {peers:?}");
    assert!(spans.iter().all(|s| s["route"] == "pg"), "{spans:?}");
    assert!(spans.iter().any(|s| s["user"] == "sec" && s["db"] == db.name.as_str()), "{spans:?}");
}

#[test]
fn embedded_default_config_passes_check() {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/default.toml");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("default.toml");
    std::fs::copy(src, &copy).expect("config/default.toml");
    let out = dgf_cmd().args(["check", "--config"]).arg(&copy).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("{}: OK", copy.display())), "{stdout}");
    assert!(stdout.contains("127.0.0.1:6432") && stdout.contains("127.0.0.1:9930"), "{stdout}");
}

/// `/ready` probes every upstream at once: three routes whose upstream never answers a TCP
/// handshake (a listener with a full accept queue drops SYNs) cost one 2 s probe timeout, not
/// three in a row, and the report lists the routes by name.
#[test]
fn ready_probes_upstreams_at_once() {
    use socket2::{Domain, Socket, Type};
    let tarpit = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    tarpit.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    tarpit.listen(0).unwrap();
    let tarpit_port = tarpit.local_addr().unwrap().as_socket().unwrap().port();
    // Fill the accept queue (never accepted): further SYNs to the port are dropped.
    let mut held = Vec::new();
    for _ in 0..4 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], tarpit_port)).into());
        held.push(s);
    }
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let route = |name: &str, port: u16, upstream: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\nprotocol = \"redis\"\nlisten = \"127.0.0.1:{port}\"\nupstream = \"redis://{upstream}\"\n"
        )
    };
    let tarpit_addr = format!("127.0.0.1:{tarpit_port}");
    let toml = format!(
        "[admin]\nlisten = \"{{admin}}\"\n{}{}{}{}",
        route("c-slow", ports[0], &tarpit_addr),
        route("a-slow", ports[1], &tarpit_addr),
        route("b-slow", ports[2], &tarpit_addr),
        route("d-redis", ports[3], "127.0.0.1:6379"),
    );
    let d = Dgf::start(&toml, &ports);
    let started = Instant::now();
    let (status, body) = d.admin("GET", "/ready");
    let took = started.elapsed();
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let routes: Vec<(&str, bool)> = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["route"].as_str().unwrap(), r["reachable"].as_bool().unwrap()))
        .collect();
    assert_eq!(routes, [("a-slow", false), ("b-slow", false), ("c-slow", false), ("d-redis", true)], "{body}");
    assert!(took >= Duration::from_secs(2), "the tarpit answered: {took:?} {body}");
    assert!(took < Duration::from_secs(5), "probes ran one after another: {took:?}");
    drop(held);
}
