//! Client side of the MySQL handshake: greeting with a fresh salt, optional TLS (SSLRequest),
//! authentication against the dgf user (mysql_native_password or caching_sha2_password), and
//! the first OK.

use super::pools::MyPools;
use super::session::Session;
use super::SessionError;
use crate::live::{Route, User};
use crate::shared::Shared;
use crate::stream::Stream;
use bytes::{Bytes, BytesMut};
use dgf_config::AuthMethod;
use dgf_protocols::mysql::auth::{RsaKey, ServerAuth, ServerStep};
use dgf_protocols::mysql::consts::{cap, errno, plugin, status};
use dgf_protocols::mysql::frame::{put_packet, split_packet};
use dgf_protocols::mysql::handshake::{new_salt, parse_client_hello, ClientHello, Greeting};
use dgf_protocols::mysql::packets::{put_err, ErrPacket, OkPacket};
use dgf_protocols::postgres::auth::PasswordSecret;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Cap on packets during the connection phase.
const MAX_LOGIN_PACKET: usize = 16 * 1024;

/// Capabilities dgf offers clients (SSL is added when the route has a certificate).
/// Never COMPRESS, never LOCAL_FILES (LOAD DATA LOCAL INFILE is refused), never SESSION_TRACK.
pub const CLIENT_CAPS: u32 = cap::LONG_PASSWORD
    | cap::FOUND_ROWS
    | cap::LONG_FLAG
    | cap::CONNECT_WITH_DB
    | cap::IGNORE_SPACE
    | cap::PROTOCOL_41
    | cap::INTERACTIVE
    | cap::TRANSACTIONS
    | cap::SECURE_CONNECTION
    | cap::MULTI_STATEMENTS
    | cap::MULTI_RESULTS
    | cap::PS_MULTI_RESULTS
    | cap::PLUGIN_AUTH
    | cap::CONNECT_ATTRS
    | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
    | cap::DEPRECATE_EOF;

static NEXT_CONN_ID: AtomicU32 = AtomicU32::new(1);

/// Result of an authentication exchange; carries the next sequence id to use.
pub enum AuthOutcome {
    /// Authenticated.
    Ok(u8),
    /// Refused, with a specific error to send (or the generic access-denied one).
    Failed(u8, Option<ErrPacket>),
}

async fn write_packet(stream: &mut Stream, seq: u8, payload: &[u8]) -> Result<(), SessionError> {
    let mut out = BytesMut::with_capacity(payload.len() + 4);
    put_packet(&mut out, seq, payload);
    stream.write_all(&out).await?;
    Ok(())
}

async fn read_packet(stream: &mut Stream, buf: &mut BytesMut) -> Result<(u8, Bytes), SessionError> {
    loop {
        if let Some((_, last, p)) =
            split_packet(buf, MAX_LOGIN_PACKET).map_err(|e| SessionError::Protocol(e.to_string()))?
        {
            return Ok((last, p));
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(SessionError::ClientGone);
        }
    }
}

/// Read exactly one packet (header, then payload) without reading ahead: a client sends its
/// TLS ClientHello right behind the SSLRequest, and those bytes belong to the TLS acceptor.
async fn read_packet_exact(stream: &mut Stream) -> Result<(u8, Bytes), SessionError> {
    let mut h = [0u8; 4];
    stream.read_exact(&mut h).await.map_err(|_| SessionError::ClientGone)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
    if len > MAX_LOGIN_PACKET {
        return Err(SessionError::Protocol(format!("login packet of {len} bytes")));
    }
    let mut p = vec![0u8; len];
    stream.read_exact(&mut p).await.map_err(|_| SessionError::ClientGone)?;
    Ok((h[3], Bytes::from(p)))
}

/// Send an ERR and give up on the client.
pub async fn refuse(stream: &mut Stream, seq: u8, (n, state): (u16, &str), message: &str) -> SessionError {
    let mut b = BytesMut::new();
    put_err(&mut b, n, state, message);
    let _ = write_packet(stream, seq, &b).await;
    let _ = stream.shutdown().await;
    SessionError::Refused(n, message.to_owned())
}

/// Run the server side of authentication for `user` starting with the client's first
/// response. Used at login and for COM_CHANGE_USER.
#[allow(clippy::too_many_arguments)]
pub async fn auth_exchange(
    stream: &mut Stream,
    buf: &mut BytesMut,
    mut seq: u8,
    salt: [u8; 20],
    client_plugin: Option<&str>,
    response: &[u8],
    user: Option<&Arc<User>>,
    tls: bool,
    rsa: Option<&dyn RsaKey>,
    always_full: bool,
) -> Result<AuthOutcome, SessionError> {
    let password = match user {
        Some(u) if u.auth == AuthMethod::Trust => return Ok(AuthOutcome::Ok(seq)),
        Some(u) => match &u.secret {
            Some(PasswordSecret::Plain(p)) => Some(p.as_bytes()),
            _ => {
                let msg = format!(
                    "dgf user '{}' has a stored verifier; MySQL authentication needs a plaintext password in [[users]]",
                    u.name
                );
                return Ok(AuthOutcome::Failed(seq, Some(access_denied_msg(msg))));
            }
        },
        None => None,
    };
    let mut auth = ServerAuth::new(salt, password, tls, rsa).always_full_auth(always_full);
    let mut step = auth.start(client_plugin, response);
    loop {
        match step {
            ServerStep::Reply(p) => {
                write_packet(stream, seq, &p).await?;
                let (last, p) = read_packet(stream, buf).await?;
                seq = last.wrapping_add(1);
                step = auth.next(&p);
            }
            ServerStep::Success { extra } => {
                if let Some(x) = extra {
                    write_packet(stream, seq, &x).await?;
                    seq = seq.wrapping_add(1);
                }
                return Ok(AuthOutcome::Ok(seq));
            }
            ServerStep::Failure => return Ok(AuthOutcome::Failed(seq, None)),
            ServerStep::InsecureTransport => {
                let (n, st) = errno::SECURE_TRANSPORT_REQUIRED;
                return Ok(AuthOutcome::Failed(
                    seq,
                    Some(ErrPacket {
                        errno: n,
                        sqlstate: st.into(),
                        message: "caching_sha2_password full authentication requires a TLS connection".into(),
                    }),
                ));
            }
        }
    }
}

/// Route option `caching_sha2_full_auth = "always"`: no fast path for caching_sha2_password.
pub fn full_auth_always(route: &Route) -> bool {
    route.cfg.options.get("caching_sha2_full_auth").is_some_and(|v| v == "always")
}

/// Route option `default_auth = "caching_sha2_password"`: greet with that plugin (as MySQL 8
/// does) instead of mysql_native_password; clients that follow the greeting's plugin
/// (PyMySQL) then use caching_sha2_password.
pub fn greeting_plugin(route: &Route) -> &'static str {
    match route.cfg.options.get("default_auth").map(String::as_str) {
        Some(plugin::CACHING_SHA2) => plugin::CACHING_SHA2,
        _ => plugin::NATIVE,
    }
}

fn access_denied_msg(message: String) -> ErrPacket {
    ErrPacket { errno: errno::ACCESS_DENIED.0, sqlstate: errno::ACCESS_DENIED.1.into(), message }
}

/// Greet, negotiate TLS, authenticate and check the schema. `Ok(None)` never happens today
/// (kept for symmetry with the Postgres login).
pub async fn login(
    shared: Arc<Shared>,
    route: Arc<Route>,
    pools: Arc<MyPools>,
    tcp: TcpStream,
    peer: SocketAddr,
    over_cap: bool,
) -> Result<Session, SessionError> {
    let mut stream = Stream::Plain(tcp);
    let mut buf = BytesMut::with_capacity(512);
    let snap = shared.live.load_full();
    if over_cap {
        route.metrics.clients_rejected.inc();
        return Err(refuse(&mut stream, 0, errno::TOO_MANY_CONNECTIONS, "Too many connections").await);
    }
    let salt = new_salt();
    let mut offered = CLIENT_CAPS;
    if route.tls.is_some() {
        offered |= cap::SSL;
    }
    let conn_id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
    let greeting = Greeting {
        server_version: pools.server_version().await,
        connection_id: conn_id,
        salt,
        capabilities: offered,
        collation: 45,
        plugin: greeting_plugin(&route),
    };
    let mut g = BytesMut::new();
    greeting.encode(&mut g);
    write_packet(&mut stream, 0, &g).await?;
    let (mut last, p) = read_packet_exact(&mut stream).await?;
    let mut hello = parse_client_hello(&p).map_err(|e| SessionError::Protocol(e.to_string()))?;
    if let ClientHello::SslRequest { .. } = hello {
        let Some(acceptor) = route.tls.clone() else {
            return Err(SessionError::Protocol("SSLRequest without the SSL capability offered".into()));
        };
        let Stream::Plain(tcp) = stream else { return Err(SessionError::Protocol("TLS twice".into())) };
        let tls = acceptor.accept(tcp).await.map_err(|e| SessionError::Tls(e.to_string()))?;
        stream = Stream::Tls(Box::new(tls.into()));
        let (l, p) = read_packet(&mut stream, &mut buf).await?;
        last = l;
        hello = parse_client_hello(&p).map_err(|e| SessionError::Protocol(e.to_string()))?;
    }
    let ClientHello::Response(resp) = hello else {
        return Err(SessionError::Protocol("second SSLRequest".into()));
    };
    let seq = last.wrapping_add(1);
    let span = tracing::Span::current();
    span.record("user", resp.user.as_str());
    span.record("db", resp.database.as_deref().unwrap_or(""));
    if route.cfg.require_tls && !stream.is_tls() {
        let msg = format!("dgf route \"{}\" requires TLS (use --ssl / ssl-mode=REQUIRED)", route.name);
        return Err(refuse(&mut stream, seq, errno::SECURE_TRANSPORT_REQUIRED, &msg).await);
    }
    let srv = &snap.config.server;
    if !shared.auth_limiter.allowed(peer.ip(), srv.auth_failure_burst, srv.auth_failure_refill_secs) {
        route.metrics.login_failures.inc();
        let msg = "too many failed login attempts from this address; try again later";
        return Err(refuse(&mut stream, seq, (1129, "HY000"), msg).await);
    }
    let user = snap.users.get(&resp.user).cloned();
    let tls = stream.is_tls();
    let outcome = auth_exchange(
        &mut stream,
        &mut buf,
        seq,
        salt,
        resp.plugin.as_deref(),
        &resp.auth_response,
        user.as_ref(),
        tls,
        pools.rsa.as_deref(),
        full_auth_always(&route),
    )
    .await?;
    let (seq, failure) = match outcome {
        AuthOutcome::Ok(s) => (s, None),
        AuthOutcome::Failed(s, e) => (s, Some(e)),
    };
    let user = match (failure, user) {
        (None, Some(u)) => u,
        (failure, _) => {
            let e = failure.flatten();
            shared.auth_limiter.failed(peer.ip(), srv.auth_failure_burst, srv.auth_failure_refill_secs);
            route.metrics.login_failures.inc();
            tracing::info!("authentication failed");
            let e = e.unwrap_or_else(|| {
                let using = if resp.auth_response.is_empty() { "NO" } else { "YES" };
                access_denied_msg(format!(
                    "Access denied for user '{}'@'{}' (using password: {using})",
                    resp.user,
                    peer.ip()
                ))
            });
            return Err(refuse(&mut stream, seq, (e.errno, &e.sqlstate), &e.message).await);
        }
    };
    let caps = (resp.capabilities & offered) | (resp.capabilities & cap::SSL);
    let collation = if resp.collation == 0 { 45 } else { resp.collation };
    if let Some((cs, _)) = dgf_protocols::mysql::handshake::collation_names(collation.into())
        .filter(|(cs, _)| dgf_rules::policy::unsafe_client_encoding(cs))
    {
        // Their multi-byte characters can end in a `\` or quote byte: dgf would no longer read
        // statements as the server does (the same sets are refused in SET NAMES).
        let why = format!("dgf: character set '{cs}' is not supported through dgf (use utf8mb4)");
        return Err(refuse(&mut stream, seq, (1115, "42000"), &why).await);
    }
    let mut session = Session::new(
        shared.clone(),
        route.clone(),
        pools.clone(),
        user,
        peer,
        stream,
        caps,
        collation,
        salt,
        resp.database.clone().unwrap_or_default(),
        conn_id,
    );
    // Prove the schema exists (and the upstream answers) before saying OK.
    if let Some(e) = session.check_upstream().await {
        return Err(refuse(&mut session.client, seq, (e.errno, &e.sqlstate), &e.message).await);
    }
    let ok = OkPacket { status: status::AUTOCOMMIT, ..Default::default() };
    let mut b = BytesMut::new();
    ok.encode(&mut b, 0, caps);
    write_packet(&mut session.client, seq, &b).await?;
    tracing::debug!("logged in");
    Ok(session)
}
