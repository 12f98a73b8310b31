//! The Postgres route: accept clients, log them in, and hand them to a relay session.

pub mod backend;
pub mod cancel;
pub mod catalog;
mod checkout;
mod govern;
pub mod login;
mod params;
pub mod prepared;
pub mod relay;
mod responses;
mod views;

use crate::live::Route;
use crate::shared::Shared;
use bytes::BytesMut;
use dgf_protocols::postgres::messages::{self, ErrorFields};
use dgf_protocols::postgres::PgProtoError;
use login::Startup;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Socket error.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol.
    #[error("client protocol violation: {0}")]
    Protocol(String),
    /// Malformed message from the client.
    #[error("malformed client message: {0}")]
    Malformed(#[from] PgProtoError),
    /// TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// We refused the client with this error.
    #[error("refused: {} ({})", .0.message, .0.code)]
    Refused(ErrorFields),
    /// Upstream broke.
    #[error("upstream: {0}")]
    Upstream(String),
    /// The client left.
    #[error("client disconnected")]
    ClientGone,
    /// Login took too long.
    #[error("login timed out")]
    LoginTimeout,
}

impl crate::shared::SessionEnd for SessionError {
    fn ordinary(&self) -> bool {
        matches!(self, SessionError::ClientGone)
    }
}

/// Serve one accepted client connection to completion.
pub async fn serve(shared: Arc<Shared>, route: Arc<Route>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let snap = shared.live.load_full();
    let span =
        tracing::info_span!("pg", route = %route.name, %peer, user = tracing::field::Empty, db = tracing::field::Empty);
    let (counted, counted_route) = (shared.clone(), route.clone());
    crate::shared::serve_client(&counted, &counted_route, span, |over_cap| async move {
        let login_timeout = Duration::from_millis(snap.config.server.client_login_timeout_ms);
        let login = login(shared.clone(), route.clone(), tcp, peer, over_cap);
        let session = match tokio::time::timeout(login_timeout, login).await {
            Ok(Ok(Some(s))) => s,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(SessionError::LoginTimeout),
        };
        session.run().await
    })
    .await;
}

async fn login(
    shared: Arc<Shared>,
    route: Arc<Route>,
    tcp: TcpStream,
    peer: SocketAddr,
    over_cap: bool,
) -> Result<Option<relay::Session>, SessionError> {
    let (mut stream, startup) = match login::negotiate(tcp, &route, &shared).await? {
        Startup::Cancelled => return Ok(None),
        Startup::Session(s, m) => (s, m),
    };
    let snap = shared.live.load_full();
    if over_cap {
        route.metrics.clients_rejected.inc();
        return Err(login::fatal(&mut stream, "53300", "sorry, too many clients already").await);
    }
    if route.cfg.require_tls && !stream.is_tls() {
        return Err(login::fatal(
            &mut stream,
            "28000",
            format!("dgf route \"{}\" requires TLS (use sslmode=require)", route.name),
        )
        .await);
    }
    let mut out = BytesMut::new();
    let options: Vec<&str> = startup.protocol_options().collect();
    if startup.minor > 0 || !options.is_empty() {
        messages::put_negotiate_protocol(&mut out, 0, &options);
        stream.write_all(&out).await?;
        out.clear();
    }
    let Some(user_name) = startup.user().map(str::to_owned) else {
        return Err(login::fatal(&mut stream, "28000", "no PostgreSQL user name specified in startup packet").await);
    };
    let database = startup.database().unwrap_or(&user_name).to_owned();
    let span = tracing::Span::current();
    span.record("user", user_name.as_str());
    span.record("db", database.as_str());
    let srv = &snap.config.server;
    if !shared.auth_limiter.allowed(peer.ip(), srv.auth_failure_burst, srv.auth_failure_refill_secs) {
        route.metrics.login_failures.inc();
        return Err(login::fatal(
            &mut stream,
            "28P01",
            "too many failed login attempts from this address; try again later",
        )
        .await);
    }
    let user = snap.users.get(&user_name).cloned();
    if !login::authenticate(&mut stream, &user_name, user.as_ref()).await? {
        shared.auth_limiter.failed(peer.ip(), srv.auth_failure_burst, srv.auth_failure_refill_secs);
        route.metrics.login_failures.inc();
        tracing::info!("password authentication failed");
        return Err(login::fatal(
            &mut stream,
            "28P01",
            format!("password authentication failed for user \"{user_name}\""),
        )
        .await);
    }
    let user = user.ok_or(SessionError::Protocol("unreachable: authenticated unknown user".into()))?;
    let pg = route.pg.clone().ok_or(SessionError::Protocol("route is not a Postgres route".into()))?;
    let pool = pg.pool(&database);

    // Check a server out once: it proves the database exists upstream and gives the
    // parameters to report.
    let mut server = match pool.get().await {
        Ok(s) => s,
        Err(e) => {
            let f = match &e {
                crate::pool::CheckoutError::Connect(be) => be.to_client_error(),
                crate::pool::CheckoutError::Timeout(_) => {
                    ErrorFields::new("FATAL", "53300", format!("dgf: no server connection available: {e}"))
                }
                other => ErrorFields::new("FATAL", "08006", format!("dgf: {other}")),
            };
            return Err(login::fatal(&mut stream, &f.code, f.message).await);
        }
    };
    let requested = login::requested_params(&startup);
    if let Some((_, enc)) = requested
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case("client_encoding") && dgf_rules::policy::unsafe_client_encoding(v))
    {
        // Its multi-byte characters can end in a `\` byte: dgf would no longer read statements as
        // the server does (`SET client_encoding` to it is refused the same way).
        let why = format!("dgf: client_encoding {enc} is not supported through dgf (use UTF8)");
        return Err(login::fatal(&mut stream, "0A000", why).await);
    }
    let mut sql = String::new();
    // What the client does not ask for starts at the connection's own defaults: whoever used
    // it before may have SET them (transaction mode hands connections from client to client).
    for (k, v) in &server.defaults {
        let asked = requested.iter().any(|(rk, _)| rk.eq_ignore_ascii_case(k));
        if !asked && server.params.get(k) != Some(v) {
            sql.push_str(&params::set_statement(k, v));
        }
    }
    for (k, v) in &requested {
        sql.push_str(&params::set_statement(k, v));
    }
    if !sql.is_empty() {
        if let Err(e) = server.run_internal(&sql).await {
            let f = e.to_client_error();
            return Err(login::fatal(&mut stream, &f.code, f.message).await);
        }
    }
    let mut reported: Vec<(&String, &String)> = server.params.iter().collect();
    reported.sort();
    for (k, v) in reported {
        messages::put_parameter_status(&mut out, k, v);
    }
    let mut desired: Vec<(String, String)> = Vec::new();
    for k in relay::TRACKED {
        if let Some(v) = server.params.get(k) {
            desired.push((k.to_owned(), v.clone()));
        }
    }
    for (k, v) in requested {
        // A reported parameter keeps the value the server reported after the SET (its own
        // spelling: `UTF8` for a requested `'utf-8'`); the others are set again on every
        // checkout, as the client wrote them.
        if relay::TRACKED.iter().any(|t| t.eq_ignore_ascii_case(&k)) {
            continue;
        }
        server.params.insert(k.clone(), v.clone());
        (server.dirty, server.dirty_for) = (true, 0);
        match desired.iter_mut().find(|(dk, _)| *dk == k) {
            Some(e) => e.1 = v,
            None => desired.push((k, v)),
        }
    }
    let (pid, secret, cancel, key_guard) = shared.cancels.register();
    messages::put_backend_key_data(&mut out, pid, secret);
    messages::put_ready_for_query(&mut out, b'I');
    let mut ok = BytesMut::new();
    messages::put_auth(&mut ok, 0, &[]);
    ok.extend_from_slice(&out);
    stream.write_all(&ok).await?;
    tracing::debug!("logged in");
    let mode = pg.opts.load().mode;
    let held = (mode == dgf_config::PoolMode::Session).then(|| {
        cancel.set(pg.target.clone(), server.key);
        server
    });
    let params_sig = relay::Session::params_sig(&desired);
    Ok(Some(relay::Session {
        shared: shared.clone(),
        route: route.clone(),
        pg,
        pool,
        user,
        database,
        peer,
        client: stream,
        cin: BytesMut::new(),
        cout: BytesMut::new(),
        sout: BytesMut::new(),
        server: held,
        pending: VecDeque::new(),
        statements: HashMap::new(),
        desired,
        params_sig,
        txn: mode == dgf_config::PoolMode::Transaction,
        skip_until_sync: false,
        cancel,
        _key_guard: key_guard,
        client_flush: false,
        server_flush: false,
        copy_in: false,
        unsynced: false,
        gov: Default::default(),
    }))
}
