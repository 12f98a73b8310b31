//! End-to-end: client authentication (scram-sha-256, md5, trust), failed-login rate limiting,
//! client-side and upstream TLS, upstream password authentication, GSSENCRequest handling, and
//! secrets never reaching the logs.

mod common;
use common::pg_instance::{make_certs, PgInstance, PgOptions};
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, Error, NoTls, SimpleQueryMessage};

/// Bound on every connect / query / psql run.
const WAIT: Duration = Duration::from_secs(30);
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
const SSL_SQL: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

fn code(e: &Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

fn message(e: &Error) -> String {
    e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| e.to_string())
}

fn cfg(port: u16, user: &str, password: Option<&str>, db: &str) -> Config {
    let mut c = Config::new();
    c.host("127.0.0.1").port(port).user(user).dbname(db).connect_timeout(Duration::from_secs(10));
    if let Some(p) = password {
        c.password(p);
    }
    c
}

async fn open(c: &Config) -> Result<Client, Error> {
    let (client, conn) = tokio::time::timeout(WAIT, c.connect(NoTls)).await.expect("connect timed out")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn open_tls(c: &Config, tls: rustls::ClientConfig) -> Result<Client, Error> {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    let (client, conn) = tokio::time::timeout(WAIT, c.connect(tls)).await.expect("connect timed out")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The error of a login expected to fail (`Client` has no `Debug`, so no `expect_err`).
fn failed(r: Result<Client, Error>, what: &str) -> Error {
    match r {
        Ok(_) => panic!("{what}: login should have been refused"),
        Err(e) => e,
    }
}

async fn refused(c: &Config) -> Error {
    failed(open(c).await, "plaintext login")
}

/// First column of the first row, as text.
async fn one(c: &Client, sql: &str) -> String {
    let msgs = tokio::time::timeout(WAIT, c.simple_query(sql)).await.expect("query timed out").expect("query");
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_owned()),
            _ => None,
        })
        .expect("a row")
}

/// A rustls client trusting only the PEM CA at `ca` (verifies chain and host name).
fn tls_client(ca: &str) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(c.expect("CA pem")).expect("add CA");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// psql bounded in time, isolated from ambient PG* settings; Ok(stdout) or Err(stderr).
fn psql_t(conninfo: &str, sql: &str, password: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new("timeout");
    cmd.args(["30", "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql]);
    for v in ["PGPASSWORD", "PGSSLMODE", "PGGSSENCMODE", "PGUSER", "PGDATABASE", "PGHOST", "PGPORT", "PGOPTIONS"] {
        cmd.env_remove(v);
    }
    cmd.env("PGPASSFILE", "/dev/null").env("PGCONNECT_TIMEOUT", "10");
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd.output().expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A login role on the shared server, dropped at the end of the test.
struct SharedRole(String);

impl Drop for SharedRole {
    fn drop(&mut self) {
        let _ = psql(
            &format!("host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres"),
            &format!("DROP ROLE IF EXISTS {}", self.0),
        );
    }
}

fn raw_connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Send an SSLRequest / GSSENCRequest and return the one-byte answer.
fn answer(s: &mut TcpStream, request: &[u8; 8]) -> u8 {
    let mut b = [0u8; 1];
    s.write_all(request).unwrap();
    s.read_exact(&mut b).expect("one-byte answer");
    b[0]
}

fn startup_packet(user: &str, db: &str) -> Vec<u8> {
    let mut body = 196608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", db)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Read one backend message: (tag, body).
fn read_message(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).expect("message header");
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).expect("message body");
    (head[0], body)
}

/// Send a startup packet and expect AuthenticationSASL offering SCRAM-SHA-256.
fn expect_sasl_offer(s: &mut TcpStream, user: &str, db: &str) {
    s.write_all(&startup_packet(user, db)).unwrap();
    let (tag, body) = read_message(s);
    assert_eq!(tag, b'R', "expected an authentication request for {user}, got {:?}", tag as char);
    assert_eq!(&body[..4], &10u32.to_be_bytes(), "expected AuthenticationSASL for {user}");
    assert_eq!(&body[4..], b"SCRAM-SHA-256\0\0", "SASL mechanisms offered to {user}");
}

const SHARED: &str = "postgres://postgres@127.0.0.1:5432";

/// `[admin]` on the harness's address, then `rest` (users, server settings).
fn header(rest: &str) -> String {
    format!("[admin]\nlisten = \"{{admin}}\"\n\n{rest}\n")
}

/// One Postgres route as TOML; `extra` adds keys.
fn route(name: &str, port: u16, upstream: &str, extra: &str) -> String {
    format!(
        "\n[[routes]]\nname = \"{name}\"\nprotocol = \"postgres\"\nlisten = \"127.0.0.1:{port}\"\n\
         upstream = \"{upstream}\"\npool = {{ size = 2 }}\n{extra}\n"
    )
}

/// Config with one trust user `app` and a route per (name, upstream) on the given ports.
fn trust_routes(routes: &[(String, String)], ports: &[u16]) -> String {
    let mut toml = header("[[users]]\nname = \"app\"\nauth = \"trust\"");
    for ((name, up), port) in routes.iter().zip(ports) {
        toml.push_str(&route(name, *port, up, ""));
    }
    toml
}

fn assert_no_secrets(dgf: &Dgf, secrets: &[&str]) {
    let logs = dgf.logs();
    assert!(!logs.is_empty(), "dgf wrote no log at all");
    for s in secrets {
        assert!(!logs.contains(s), "secret {s:?} found in dgf's log:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth_methods_accept_right_and_refuse_wrong_passwords() {
    let db = TestDb::create();
    let port = free_port();
    let scram_pw = unique("ScramPlainPw");
    let verifier_pw = unique("ScramVerifierPw");
    let md5_pw = unique("Md5PlainPw");
    let md5v_pw = unique("Md5VerifierPw");
    // A SCRAM verifier exactly as Postgres stores it (it does not depend on the role name).
    let role = SharedRole(unique("dgft_role"));
    psql_admin(&format!("SET password_encryption = 'scram-sha-256'; CREATE ROLE {} PASSWORD '{verifier_pw}'", role.0));
    let scram_verifier = psql_admin(&format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{}'", role.0));
    assert!(scram_verifier.starts_with("SCRAM-SHA-256$"), "{scram_verifier}");
    // The md5 verifier Postgres would store for user u_md5_verifier.
    let md5_verifier = psql_admin(&format!("SELECT 'md5' || md5('{md5v_pw}' || 'u_md5_verifier')"));
    let users = format!(
        r#"[server]
auth_failure_burst = 1000

[[users]]
name = "u_scram_plain"
password = "${{DGFT_SCRAM_PW}}"

[[users]]
name = "u_scram_verifier"
password = '{scram_verifier}'

[[users]]
name = "u_md5_plain"
auth = "md5"
password = "${{DGFT_MD5_PW}}"

[[users]]
name = "u_md5_verifier"
auth = "md5"
password = "{md5_verifier}"

[[users]]
name = "u_trust"
auth = "trust""#
    );
    let toml = header(&users) + &route("pg", port, SHARED, "");
    let env = [("DGFT_SCRAM_PW", scram_pw.as_str()), ("DGFT_MD5_PW", md5_pw.as_str()), ("DGF_LOG", "debug")];
    let dgf = Dgf::start_with_env(&toml, &[port], &env);

    let users = [
        ("u_scram_plain", &scram_pw),
        ("u_scram_verifier", &verifier_pw),
        ("u_md5_plain", &md5_pw),
        ("u_md5_verifier", &md5v_pw),
    ];
    for (user, pw) in users {
        let c = open(&cfg(port, user, Some(pw), &db.name)).await.unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(one(&c, "SELECT current_database()").await, db.name, "{user}");
        let e = refused(&cfg(port, user, Some("wrong-password"), &db.name)).await;
        assert_eq!(code(&e), Some("28P01"), "{user}: {e}");
        assert_eq!(message(&e), format!("password authentication failed for user \"{user}\""));
        // The other password of the same kind must not work either.
        let e = refused(&cfg(port, user, Some(&format!("{pw}x")), &db.name)).await;
        assert_eq!(code(&e), Some("28P01"), "{user}: {e}");
        // libpq: right password works, wrong one prints the server's message.
        let ci = format!("host=127.0.0.1 port={port} user={user} dbname={} sslmode=disable", db.name);
        assert_eq!(psql_t(&ci, "SELECT 40 + 2", Some(pw)).as_deref(), Ok("42"), "psql {user}");
        let err = psql_t(&ci, "SELECT 1", Some("nope")).expect_err("psql wrong password");
        assert!(err.contains(&format!("password authentication failed for user \"{user}\"")), "{err}");
    }

    // Trust: no password asked, any supplied one is irrelevant.
    let c = open(&cfg(port, "u_trust", None, &db.name)).await.expect("trust login");
    assert_eq!(one(&c, "SELECT 7").await, "7");
    let ci = format!("host=127.0.0.1 port={port} user=u_trust dbname={}", db.name);
    assert_eq!(psql_t(&ci, "SELECT 8", None).as_deref(), Ok("8"));

    // Unknown user: same code and message shape as a wrong password.
    let e = refused(&cfg(port, "nosuch_user", Some("whatever"), &db.name)).await;
    assert_eq!(code(&e), Some("28P01"), "{e}");
    assert_eq!(message(&e), "password authentication failed for user \"nosuch_user\"");
    let ci = format!("host=127.0.0.1 port={port} user=nosuch_user dbname={}", db.name);
    let err = psql_t(&ci, "SELECT 1", Some("whatever")).expect_err("unknown user");
    assert!(err.contains("password authentication failed for user \"nosuch_user\""), "{err}");

    assert_no_secrets(&dgf, &[&scram_pw, &verifier_pw, &md5_pw, &md5v_pw]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited_per_address_and_per_process() {
    let db = TestDb::create();
    let toml = |port: u16| {
        let users = "[server]\nauth_failure_burst = 3\nauth_failure_refill_secs = 3600\n\n\
                     [[users]]\nname = \"rl\"\npassword = \"rl-right-password\"";
        header(users) + &route("pg", port, SHARED, "")
    };
    let (p1, p2) = (free_port(), free_port());
    let _d1 = Dgf::start(&toml(p1), &[p1]);
    let _d2 = Dgf::start(&toml(p2), &[p2]);
    let right = cfg(p1, "rl", Some("rl-right-password"), &db.name);
    let wrong = cfg(p1, "rl", Some("rl-wrong-password"), &db.name);
    // Successful logins do not use up the allowance.
    for _ in 0..5 {
        let c = open(&right).await.expect("right password");
        assert_eq!(one(&c, "SELECT 1").await, "1");
    }
    for i in 0..3 {
        let e = refused(&wrong).await;
        assert_eq!(code(&e), Some("28P01"), "attempt {i}: {e}");
        assert_eq!(message(&e), "password authentication failed for user \"rl\"", "attempt {i}");
    }
    for _ in 0..2 {
        let e = refused(&right).await;
        assert_eq!(code(&e), Some("28P01"), "{e}");
        assert!(message(&e).starts_with("too many failed login attempts"), "{}", message(&e));
    }
    // Another dgf process keeps its own accounting.
    let c = open(&cfg(p2, "rl", Some("rl-right-password"), &db.name)).await.expect("other instance");
    assert_eq!(one(&c, "SELECT 2").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_tls_optional_required_and_absent() {
    let db = TestDb::create();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path(), &["localhost", "127.0.0.1"]);
    let other_dir = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = make_certs(other_dir.path(), &["localhost", "127.0.0.1"]);
    let (p_tls, p_req, p_plain) = (free_port(), free_port(), free_port());
    let tls = format!("tls = {{ cert = \"{cert}\", key = \"{key}\" }}");
    let toml = header("[[users]]\nname = \"app\"\npassword = \"tls-user-pw\"")
        + &route("tls", p_tls, SHARED, &tls)
        + &route("req", p_req, SHARED, &format!("{tls}\nrequire_tls = true"))
        + &route("plain", p_plain, SHARED, "");
    let _dgf = Dgf::start(&toml, &[p_tls, p_req, p_plain]);
    let pw = Some("tls-user-pw");

    // TLS route: verified TLS (chain + name, by IP and by host name), SCRAM over TLS.
    for host in ["127.0.0.1", "localhost"] {
        let mut c = cfg(p_tls, "app", pw, &db.name);
        c.host(host).ssl_mode(SslMode::Require);
        let client = open_tls(&c, tls_client(&ca)).await.unwrap_or_else(|e| panic!("TLS via {host}: {e}"));
        assert_eq!(one(&client, "SELECT current_database()").await, db.name);
    }
    // Proof the TLS is dgf's own certificate: a client trusting another CA fails the handshake.
    let mut c = cfg(p_tls, "app", pw, &db.name);
    c.ssl_mode(SslMode::Require);
    let e = failed(open_tls(&c, tls_client(&other_ca)).await, "untrusted certificate");
    assert_eq!(code(&e), None, "handshake failure, not a server error: {e}");
    // TLS is optional on this route.
    let client = open(&cfg(p_tls, "app", pw, &db.name)).await.expect("plaintext on optional-TLS route");
    assert_eq!(one(&client, "SELECT 1").await, "1");
    let base = format!("port={p_tls} user=app dbname={}", db.name);
    let ci = format!("host=localhost {base} sslmode=verify-full sslrootcert={ca}");
    assert_eq!(psql_t(&ci, "SELECT 3", pw).as_deref(), Ok("3"), "psql verify-full");
    let ci = format!("host=127.0.0.1 {base} sslmode=require");
    assert_eq!(psql_t(&ci, "SELECT 4", pw).as_deref(), Ok("4"), "psql require");
    let ci = format!("host=localhost {base} sslmode=verify-full sslrootcert={other_ca}");
    let err = psql_t(&ci, "SELECT 1", pw).expect_err("psql with the wrong CA");
    // OpenSSL reports "certificate verify failed" or, as the CAs share a subject name, "EVP lib".
    assert!(err.contains("SSL error"), "{err}");

    // require_tls route: plaintext refused with 28000, TLS accepted.
    let e = refused(&cfg(p_req, "app", pw, &db.name)).await;
    assert_eq!(code(&e), Some("28000"), "{e}");
    assert!(message(&e).contains("requires TLS"), "{}", message(&e));
    let err =
        psql_t(&format!("host=127.0.0.1 port={p_req} user=app dbname={} sslmode=disable", db.name), "SELECT 1", pw)
            .expect_err("psql plaintext on require_tls route");
    assert!(err.contains("requires TLS"), "{err}");
    let mut c = cfg(p_req, "app", pw, &db.name);
    c.ssl_mode(SslMode::Require);
    let client = open_tls(&c, tls_client(&ca)).await.expect("TLS on require_tls route");
    assert_eq!(one(&client, "SELECT 5").await, "5");
    let ci = format!("host=localhost port={p_req} user=app dbname={} sslmode=verify-full sslrootcert={ca}", db.name);
    assert_eq!(psql_t(&ci, "SELECT 6", pw).as_deref(), Ok("6"));

    // Route without a certificate: SSLRequest answered 'N', prefer falls back, require fails.
    let mut s = raw_connect(p_plain);
    assert_eq!(answer(&mut s, &SSL_REQUEST), b'N');
    expect_sasl_offer(&mut s, "app", &db.name);
    let base = format!("host=127.0.0.1 port={p_plain} user=app dbname={}", db.name);
    assert_eq!(psql_t(&format!("{base} sslmode=prefer"), "SELECT 9", pw).as_deref(), Ok("9"));
    let err = psql_t(&format!("{base} sslmode=require"), "SELECT 1", pw).expect_err("require without cert");
    assert!(err.contains("server does not support SSL, but SSL was required"), "{err}");
    let mut c = cfg(p_plain, "app", pw, &db.name);
    c.ssl_mode(SslMode::Prefer);
    let client = open_tls(&c, tls_client(&ca)).await.expect("prefer falls back to plaintext");
    assert_eq!(one(&client, "SELECT 10").await, "10");
    c.ssl_mode(SslMode::Require);
    let e = failed(open_tls(&c, tls_client(&ca)).await, "require without a certificate");
    assert_eq!(code(&e), None, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_sslmodes() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path(), &["localhost", "127.0.0.1"]);
    let other_dir = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = make_certs(other_dir.path(), &["localhost", "127.0.0.1"]);
    let pg = PgInstance::start(&PgOptions { tls: Some((cert, key)), ..Default::default() });
    let pp = pg.port;
    let routes = [
        ("verify_full", format!("127.0.0.1:{pp}/?sslmode=verify-full&sslrootcert={ca}"), Some("t")),
        ("verify_full_sni", format!("localhost:{pp}/?sslmode=verify-full&sslrootcert={ca}"), Some("t")),
        ("verify_ca", format!("127.0.0.1:{pp}/?sslmode=verify-ca&sslrootcert={ca}"), Some("t")),
        ("require", format!("127.0.0.1:{pp}/?sslmode=require"), Some("t")),
        ("prefer", format!("127.0.0.1:{pp}/"), Some("t")),
        ("disable", format!("127.0.0.1:{pp}/?sslmode=disable"), Some("f")),
        ("wrong_ca", format!("127.0.0.1:{pp}/?sslmode=verify-full&sslrootcert={other_ca}"), None),
    ];
    let ports: Vec<u16> = routes.iter().map(|_| free_port()).collect();
    let spec: Vec<_> = routes.iter().map(|(n, up, _)| (n.to_string(), format!("postgres://postgres@{up}"))).collect();
    let dgf = Dgf::start(&trust_routes(&spec, &ports), &ports);
    for round in 0..2 {
        for ((name, _, want), port) in routes.iter().zip(&ports) {
            let res = open(&cfg(*port, "app", None, "postgres")).await;
            match (want, res) {
                (Some(w), Ok(c)) => assert_eq!(one(&c, SSL_SQL).await, *w, "route {name}"),
                (Some(_), Err(e)) => panic!("route {name} (round {round}): {e}"),
                (None, Ok(_)) => panic!("route {name}: a certificate from an untrusted CA was accepted"),
                (None, Err(e)) => {
                    assert_eq!(code(&e), Some("08006"), "route {name}: {e}");
                    let m = message(&e);
                    assert!(m.contains("upstream") && m.contains("TLS"), "route {name}: {m}");
                }
            }
        }
    }
    let (status, _) = dgf.admin("GET", "/health");
    assert_eq!(status, 200, "dgf still healthy after upstream TLS failures");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_host_name_and_sni() {
    // The server certificate names only `localhost`.
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path(), &["localhost"]);
    let pg = PgInstance::start(&PgOptions { tls: Some((cert, key)), ..Default::default() });
    let pp = pg.port;
    let routes = [
        ("full_localhost", format!("localhost:{pp}/?sslmode=verify-full&sslrootcert={ca}"), true),
        // sslsni=0 only drops the SNI extension; the host name is still verified (libpq).
        ("full_localhost_nosni", format!("localhost:{pp}/?sslmode=verify-full&sslrootcert={ca}&sslsni=0"), true),
        ("ca_ip", format!("127.0.0.1:{pp}/?sslmode=verify-ca&sslrootcert={ca}"), true),
        ("full_ip", format!("127.0.0.1:{pp}/?sslmode=verify-full&sslrootcert={ca}"), false),
        ("full_ip_nosni", format!("127.0.0.1:{pp}/?sslmode=verify-full&sslrootcert={ca}&sslsni=0"), false),
    ];
    let ports: Vec<u16> = routes.iter().map(|_| free_port()).collect();
    let spec: Vec<_> = routes.iter().map(|(n, up, _)| (n.to_string(), format!("postgres://postgres@{up}"))).collect();
    let _dgf = Dgf::start(&trust_routes(&spec, &ports), &ports);
    for ((name, _, works), port) in routes.iter().zip(&ports) {
        match open(&cfg(*port, "app", None, "postgres")).await {
            Ok(c) if *works => assert_eq!(one(&c, SSL_SQL).await, "t", "{name}"),
            Ok(_) => panic!("route {name}: a certificate for another host name was accepted"),
            Err(e) if *works => panic!("route {name}: {e}"),
            Err(e) => {
                assert_eq!(code(&e), Some("08006"), "route {name}: {e}");
                assert!(message(&e).contains("TLS"), "route {name}: {}", message(&e));
            }
        }
    }
}

/// A password full of URL-special characters, and its percent-encoded form for upstream URLs.
const SPECIAL_PW: &str = "p@ss:w/rd?#%&+ x";
const SPECIAL_PW_ENC: &str = "p%40ss%3Aw%2Frd%3F%23%25%26%2B%20x";

fn upstream_instance(method: &str, password: &str) -> PgInstance {
    let mut opts = PgOptions { auth: Some(method.into()), ..Default::default() };
    opts.extra_conf.push(format!("password_encryption = '{method}'"));
    let pg = PgInstance::start(&opts);
    pg.sql(&format!(
        "CREATE ROLE app_up LOGIN PASSWORD '{password}'; CREATE ROLE app_sp LOGIN PASSWORD '{SPECIAL_PW}'"
    ));
    let stored =
        pg.sql("SELECT string_agg(left(rolpassword, 6), ',') FROM pg_authid WHERE rolname IN ('app_up', 'app_sp')");
    let prefix = if method == "md5" { "md5" } else { "SCRAM-" };
    assert!(stored.split(',').all(|s| s.starts_with(prefix)), "stored passwords: {stored}");
    pg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_password_auth_scram_and_md5() {
    let up_pw = unique("UpstreamPw");
    let scram = upstream_instance("scram-sha-256", &up_pw);
    let md5 = upstream_instance("md5", &up_pw);
    let mut routes = Vec::new();
    for (kind, pg) in [("scram", &scram), ("md5", &md5)] {
        let at = format!("127.0.0.1:{}/postgres?sslmode", pg.port);
        routes.push((format!("{kind}_ok"), format!("app_up:{up_pw}@{at}=disable"), Ok("app_up")));
        // sslmode=prefer against a server without TLS falls back to plaintext.
        routes.push((format!("{kind}_prefer"), format!("app_up:{up_pw}@{at}=prefer"), Ok("app_up")));
        routes.push((format!("{kind}_special"), format!("app_sp:{SPECIAL_PW_ENC}@{at}=disable"), Ok("app_sp")));
        routes.push((format!("{kind}_bad"), format!("app_up:not-{up_pw}@{at}=disable"), Err("app_up")));
        routes.push((format!("{kind}_nopw"), format!("app_up@{at}=disable"), Err("")));
        // sslmode=require against a server without TLS: refused before any password is sent.
        routes.push((format!("{kind}_require"), format!("app_up:{up_pw}@{at}=require"), Err("TLS")));
    }
    let ports: Vec<u16> = routes.iter().map(|_| free_port()).collect();
    let spec: Vec<_> = routes.iter().map(|(n, up, _)| (n.clone(), format!("postgres://{up}"))).collect();
    let dgf = Dgf::start_with_env(&trust_routes(&spec, &ports), &ports, &[("DGF_LOG", "debug")]);
    for round in 0..2 {
        for ((name, _, want), port) in routes.iter().zip(&ports) {
            let res = open(&cfg(*port, "app", None, "postgres")).await;
            match (want, res) {
                (Ok(user), Ok(c)) => assert_eq!(one(&c, "SELECT current_user").await, *user, "route {name}"),
                (Ok(_), Err(e)) => panic!("route {name} (round {round}): {e}"),
                (Err(_), Ok(_)) => panic!("route {name}: login with a wrong upstream password succeeded"),
                (Err("TLS"), Err(e)) => {
                    assert_eq!(code(&e), Some("08006"), "route {name}: {e}");
                    assert!(message(&e).contains("server refused TLS"), "route {name}: {}", message(&e));
                }
                (Err(""), Err(e)) => {
                    // No password in the URL: dgf cannot answer the server's challenge.
                    assert_eq!(code(&e), Some("08006"), "route {name}: {e}");
                    assert!(message(&e).contains("has none"), "route {name}: {}", message(&e));
                }
                (Err(user), Err(e)) => {
                    assert_eq!(code(&e), Some("28P01"), "route {name}: {e}");
                    let m = message(&e);
                    assert_eq!(m, format!("password authentication failed for user \"{user}\""), "route {name}");
                }
            }
        }
    }
    let (status, _) = dgf.admin("GET", "/health");
    assert_eq!(status, 200);
    assert_no_secrets(&dgf, &[&up_pw, SPECIAL_PW, SPECIAL_PW_ENC]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_request_is_refused_and_login_continues() {
    let db = TestDb::create();
    let port = free_port();
    let toml = header("[[users]]\nname = \"app\"\npassword = \"gss-test-pw\"") + &route("pg", port, SHARED, "");
    let _dgf = Dgf::start(&toml, &[port]);
    // GSSENCRequest -> 'N'; then SSLRequest -> 'N' (no certificate); then a normal startup.
    let mut s = raw_connect(port);
    assert_eq!(answer(&mut s, &GSSENC_REQUEST), b'N', "GSSENCRequest must be refused with 'N'");
    assert_eq!(answer(&mut s, &SSL_REQUEST), b'N');
    expect_sasl_offer(&mut s, "app", &db.name);
    // An unknown user sees the very same challenge (no user enumeration).
    let mut s = raw_connect(port);
    assert_eq!(answer(&mut s, &GSSENC_REQUEST), b'N');
    expect_sasl_offer(&mut s, "nosuch_user", &db.name);
    // Bytes pipelined behind an encryption request are refused: connection closed, no answer.
    let mut s = raw_connect(port);
    let mut pipelined = GSSENC_REQUEST.to_vec();
    pipelined.extend_from_slice(&startup_packet("app", &db.name));
    s.write_all(&pipelined).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "expected the connection to be closed without an answer, got {rest:?}");

    // libpq with GSS encryption preferred (its default) and disabled both connect.
    for mode in ["prefer", "disable"] {
        let ci = format!("host=127.0.0.1 port={port} user=app dbname={} gssencmode={mode}", db.name);
        assert_eq!(psql_t(&ci, "SELECT 11", Some("gss-test-pw")).as_deref(), Ok("11"), "gssencmode={mode}");
    }
    let c = open(&cfg(port, "app", Some("gss-test-pw"), &db.name)).await.expect("tokio-postgres login");
    assert_eq!(one(&c, "SELECT 12").await, "12");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_or_check_output() {
    let up_pw = unique("LogUpstreamPw");
    let client_pw = unique("LogClientPw");
    let pg = upstream_instance("scram-sha-256", &up_pw);
    let (p_ok, p_bad) = (free_port(), free_port());
    let at = format!("@127.0.0.1:{}/postgres", pg.port);
    let toml =
        header("[server]\nauth_failure_burst = 1000\n\n[[users]]\nname = \"app\"\npassword = \"${DGFT_CLIENT_PW}\"")
            + &route("ok", p_ok, &format!("postgres://app_up:${{DGFT_UP_PW}}{at}"), "")
            + &route("bad", p_bad, &format!("postgres://app_up:x${{DGFT_UP_PW}}{at}"), "");
    let env = [("DGFT_CLIENT_PW", client_pw.as_str()), ("DGFT_UP_PW", up_pw.as_str()), ("DGF_LOG", "trace")];
    let dgf = Dgf::start_with_env(&toml, &[p_ok, p_bad], &env);
    let c = open(&cfg(p_ok, "app", Some(&client_pw), "postgres")).await.expect("login through ok route");
    assert_eq!(one(&c, "SELECT current_user").await, "app_up");
    let e = refused(&cfg(p_ok, "app", Some("wrong"), "postgres")).await;
    assert_eq!(code(&e), Some("28P01"));
    let e = refused(&cfg(p_bad, "app", Some(&client_pw), "postgres")).await;
    assert_eq!(code(&e), Some("28P01"), "upstream refusal: {e}");
    assert_eq!(message(&e), "password authentication failed for user \"app_up\"");
    let ci = format!("host=127.0.0.1 port={p_ok} user=app dbname=postgres");
    assert_eq!(psql_t(&ci, "SELECT 1", Some(&client_pw)).as_deref(), Ok("1"));
    let (_, metrics) = dgf.admin("GET", "/metrics");
    drop(c);
    assert_no_secrets(&dgf, &[&client_pw, &up_pw]);
    assert!(!metrics.contains(&up_pw) && !metrics.contains(&client_pw), "secret in /metrics");

    // `dgf check` prints the configuration summary with passwords masked.
    let out = Command::new("timeout")
        .args(["30", env!("CARGO_BIN_EXE_dgf"), "check", "--config"])
        .arg(&dgf.config)
        .envs(env)
        .output()
        .expect("dgf check");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "dgf check failed: {text}");
    assert!(text.contains("***"), "{text}");
    assert!(!text.contains(&up_pw) && !text.contains(&client_pw), "secret in dgf check output: {text}");
}
