//! The MySQL route: accept clients, log them in against dgf users, and serve their commands
//! over pooled upstream connections (transaction-level multiplexing with honest pinning).

pub mod backend;
pub mod control;
pub mod govern;
pub mod hold;
pub mod kill;
pub mod login;
pub mod pools;
pub mod replay;
pub mod rsa;
pub mod session;
mod sql_prepare;
pub mod state;
pub mod statements;
pub mod views;

use crate::live::Route;
use crate::shared::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
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
    /// TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// We refused the client with this error.
    #[error("refused: {1} ({0})")]
    Refused(u16, String),
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
    let span = tracing::info_span!("mysql", route = %route.name, %peer, user = tracing::field::Empty, db = tracing::field::Empty);
    let (counted, counted_route) = (shared.clone(), route.clone());
    crate::shared::serve_client(&counted, &counted_route, span, |over_cap| async move {
        let Some(pools) = route.my.clone() else {
            return Err(SessionError::Protocol("route is not a MySQL route".into()));
        };
        let login_timeout = Duration::from_millis(snap.config.server.client_login_timeout_ms);
        let login = login::login(shared.clone(), route.clone(), pools, tcp, peer, over_cap);
        let session = match tokio::time::timeout(login_timeout, login).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(SessionError::LoginTimeout),
        };
        session.run().await
    })
    .await;
}
