//! `KILL [QUERY | CONNECTION] <id>` through dgf: the id is the connection id dgf gave a client
//! in its greeting; a kill is mapped onto the server connection that client holds right now.
//!
//! Like the Postgres CancelRequest (see `postgres/cancel.rs`): every session has a slot with
//! the upstream and server thread id of the connection it holds and a "fired" flag. A `KILL
//! QUERY` of a session of the same dgf user (on the same route) is sent upstream on a
//! short-lived connection of its own (never a pool checkout, which could wait behind the
//! pool), and the server connection it was sent to is closed when its client lets go of it
//! instead of going back to the pool: a kill arriving late must never hit another client's
//! statement. `KILL CONNECTION` also ends the target session. Anything else that mentions
//! `KILL` (multi-statements, prepared statements, `KILL QUERY ID`, `KILL USER`) is refused.

use super::backend::{BackendError, MyConn, MyTarget, PoolKey};
use super::session::{Flow, Session};
use super::state::scan;
use super::SessionError;
use dashmap::DashMap;
use dgf_protocols::mysql::consts::{com, errno};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long sending a kill upstream (connect, log in, `KILL QUERY`) may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// A server connection's upstream and thread id.
type KillTarget = (Arc<MyTarget>, u32);

#[derive(Default)]
struct SlotState {
    /// The server connection the session holds.
    target: Option<KillTarget>,
    /// A command of the session is being served.
    running: bool,
    /// A kill was sent (or is on its way) to `target`.
    fired: bool,
    /// The session waits for a pool connection (see [`KillSlot::wait`]).
    waiting: bool,
    /// A kill arrived during that wait.
    wait_killed: bool,
}

/// One client session as `KILL` sees it.
pub struct KillSlot {
    route: String,
    /// The dgf user logged in (changes with COM_CHANGE_USER).
    user: Mutex<String>,
    state: Mutex<SlotState>,
    /// Cancelled by `KILL CONNECTION`: the session ends.
    ended: CancellationToken,
    /// Wakes a session waiting for a pool connection when a kill arrives.
    wake: tokio::sync::Notify,
}

impl KillSlot {
    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session got a server connection with this thread id.
    pub fn set(&self, target: Arc<MyTarget>, thread_id: u32) {
        let mut s = self.state();
        s.target = Some((target, thread_id));
        s.fired = false;
    }

    /// The session let go of its server connection. Returns whether a kill was sent to it:
    /// then it must be closed, not handed to another client.
    #[must_use = "a connection a kill was sent to must be closed"]
    pub fn clear(&self) -> bool {
        let mut s = self.state();
        s.target = None;
        std::mem::take(&mut s.fired)
    }

    /// Whether a kill was sent to the server connection held now.
    pub fn fired(&self) -> bool {
        self.state().fired
    }

    /// A command starts (`true`) or ends (`false`).
    pub fn running(&self, on: bool) {
        self.state().running = on;
    }

    /// COM_CHANGE_USER: the session now belongs to `user`.
    pub fn set_user(&self, user: &str) {
        *self.user.lock().unwrap_or_else(|p| p.into_inner()) = user.to_owned();
    }

    /// Cancelled when the session is killed.
    pub fn ended(&self) -> &CancellationToken {
        &self.ended
    }

    /// Mark the held connection as killed. Returns the target to send `KILL QUERY` to when a
    /// command is running on it. `connection`: mark it even when idle (the session ends, and
    /// so does its server connection). A session waiting for a pool connection is woken: its
    /// statement is interrupted before it starts.
    fn fire(&self, connection: bool) -> Option<KillTarget> {
        let mut s = self.state();
        let running = s.running && s.target.is_some();
        s.fired |= running || (connection && s.target.is_some());
        if s.waiting {
            s.wait_killed = true;
            drop(s);
            self.wake.notify_waiters();
            return None;
        }
        s.target.clone().filter(|_| running)
    }

    /// Wait for `checkout` (a pool checkout) unless a kill arrives first: `None` then.
    pub async fn wait<T>(&self, checkout: impl std::future::Future<Output = T>) -> Option<T> {
        {
            let mut s = self.state();
            s.waiting = true;
            s.wait_killed = false;
        }
        let killed = async {
            loop {
                let notified = self.wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.state().wait_killed {
                    return;
                }
                notified.await;
            }
        };
        let r = tokio::select! {
            r = checkout => Some(r),
            () = killed => None,
        };
        let mut s = self.state();
        s.waiting = false;
        s.wait_killed = false;
        r
    }
}

/// Live MySQL sessions of this process by dgf connection id.
static SESSIONS: LazyLock<DashMap<u32, Arc<KillSlot>>> = LazyLock::new(DashMap::new);

/// Removes a session's registration when it ends.
pub struct KillGuard {
    id: u32,
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        SESSIONS.remove(&self.id);
    }
}

/// Register the session with connection id `id`.
pub fn register(id: u32, route: &str, user: &str) -> (Arc<KillSlot>, KillGuard) {
    let slot = Arc::new(KillSlot {
        route: route.to_owned(),
        user: Mutex::new(user.to_owned()),
        state: Mutex::default(),
        ended: CancellationToken::new(),
        wake: tokio::sync::Notify::new(),
    });
    SESSIONS.insert(id, slot.clone());
    (slot, KillGuard { id })
}

/// The session `id` if `user` may kill it from `route`: the same dgf user on the same route.
fn lookup(id: u64, route: &str, user: &str) -> Option<Arc<KillSlot>> {
    let id = u32::try_from(id).ok()?;
    let slot = SESSIONS.get(&id)?.clone();
    let same_user = *slot.user.lock().unwrap_or_else(|p| p.into_inner()) == user;
    (same_user && slot.route == route).then_some(slot)
}

/// Send `KILL QUERY <thread_id>` to `target` on a connection of its own.
async fn send_kill(target: &MyTarget, thread_id: u32) -> Result<(), BackendError> {
    let run = async {
        let mut conn = MyConn::connect(target, &PoolKey { found_rows: false }).await?;
        // An error (1094: the thread is gone) means there is nothing left to interrupt.
        let r = conn.query_drain(&format!("KILL QUERY {thread_id}")).await?;
        if let Err(e) = r {
            tracing::debug!(thread_id, errno = e.errno, "KILL QUERY upstream: {}", e.message);
        }
        let _ = conn.command(&[com::QUIT]).await;
        Ok(())
    };
    match tokio::time::timeout(KILL_TIMEOUT, run).await {
        Ok(r) => r,
        Err(_) => Err(BackendError::Io(std::io::ErrorKind::TimedOut.into())),
    }
}

/// What a `KILL` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillWhat {
    /// The statement running (`KILL QUERY`).
    Query,
    /// The session (`KILL`, `KILL CONNECTION`).
    Connection,
}

/// Whether a COM_QUERY / COM_STMT_PREPARE text is, or prepares, a `KILL` statement.
pub fn mentions_kill(sql: &[u8]) -> bool {
    use super::sql_prepare::{recognise, SqlPrepared};
    scan(sql).kill
        || matches!(recognise(sql), Some(SqlPrepared::Prepare { statement, .. }) if scan(statement.as_bytes()).kill)
}

/// Parse a text that is exactly one `KILL [HARD | SOFT] [QUERY | CONNECTION] <number>` (in
/// any case, with comments, in a `/*! */` comment, with a trailing `;`). `None` for anything
/// else: expressions, `KILL QUERY ID` (a query id), `KILL USER`, more statements.
pub fn parse(sql: &[u8]) -> Option<(KillWhat, u64)> {
    let tokens = tokens(sql)?;
    let mut t = tokens.iter().map(|w| w.to_ascii_lowercase());
    if t.next()? != "kill" {
        return None;
    }
    let mut word = t.next()?;
    if word == "hard" || word == "soft" {
        word = t.next()?;
    }
    let what = match word.as_str() {
        "query" => KillWhat::Query,
        "connection" => KillWhat::Connection,
        _ => return parse_id(&word, t).map(|id| (KillWhat::Connection, id)),
    };
    parse_id(&t.next()?, t).map(|id| (what, id))
}

fn parse_id(word: &str, mut rest: impl Iterator<Item = String>) -> Option<u64> {
    let digits = !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit());
    let id = if digits { Some(word.parse().unwrap_or(u64::MAX)) } else { None };
    match rest.next().as_deref() {
        None => id,
        Some(";") if rest.next().is_none() => id,
        Some(_) => None,
    }
}

/// Words of a short statement: runs of `[A-Za-z0-9_]` and `;`. Whitespace and comments
/// separate them, the markers of a `/*! */` comment count as whitespace (the server runs
/// its body). `None` on any other character (operators, quotes, parentheses...).
fn tokens(sql: &[u8]) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sql.len() {
        let c = sql[i];
        let rest = &sql[i..];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if rest.starts_with(b"/*!") || rest.starts_with(b"/*M!") {
            i += if c == b'/' && sql.get(i + 2) == Some(&b'!') { 3 } else { 4 };
            while sql.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            let end = rest[2..].windows(2).position(|w| w == b"*/")?;
            i += end + 4;
        } else if rest.starts_with(b"*/") {
            i += 2;
        } else if c == b'#' || (rest.starts_with(b"--") && rest.get(2).is_none_or(u8::is_ascii_whitespace)) {
            while sql.get(i).is_some_and(|b| *b != b'\n') {
                i += 1;
            }
        } else if c == b';' {
            out.push(";");
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            let start = i;
            while sql.get(i).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_') {
                i += 1;
            }
            out.push(std::str::from_utf8(&sql[start..i]).ok()?);
        } else {
            return None;
        }
    }
    Some(out)
}

impl Session {
    /// A COM_QUERY or COM_STMT_PREPARE that mentions `KILL` (see [`mentions_kill`]): decided
    /// and audited like any statement; a plain `KILL` is served, anything else refused.
    pub(super) async fn kill_statement(&mut self, seq: u8, cmd: u8, sql: &[u8]) -> Result<Flow, SessionError> {
        let gov = self.govern_sql(sql, cmd == com::QUERY);
        if let Some(g) = gov.as_ref().filter(|g| g.denied().is_some()) {
            let g = g.clone();
            self.deny(seq, &g);
            return Ok(Flow::Continue);
        }
        self.begin(gov, false);
        let request = if cmd == com::QUERY { parse(sql) } else { None };
        let (flow, error) = match request {
            Some((what, id)) => self.kill(seq, what, id).await,
            None => {
                // The thread ids a client can see (CONNECTION_ID(), the processlist) belong to
                // pooled server connections that other clients use next.
                let why = "dgf: only a single KILL [QUERY | CONNECTION] <connection id> statement is available \
                           through dgf (server threads are shared by the pool's clients)";
                self.send_err(seq, errno::KILL_DENIED, why);
                (Flow::Continue, Some(errno::KILL_DENIED.0))
            }
        };
        self.finish_statement(error.map(|n| n.to_string()));
        Ok(flow)
    }

    /// Serve `KILL [QUERY | CONNECTION] id`; the errno sent, if any.
    async fn kill(&mut self, seq: u8, what: KillWhat, id: u64) -> (Flow, Option<u16>) {
        let Some(slot) = lookup(id, &self.route.name, &self.user.name) else {
            self.send_err(seq, errno::UNKNOWN_THREAD, &format!("Unknown thread id: {id}"));
            return (Flow::Continue, Some(errno::UNKNOWN_THREAD.0));
        };
        if Arc::ptr_eq(&slot, &self.kill) {
            // Its own connection: nothing else runs for it; KILL CONNECTION ends it.
            if what == KillWhat::Query {
                self.send_ok(seq);
                return (Flow::Continue, None);
            }
            self.send_err(seq, errno::CONNECTION_KILLED, "Connection was killed");
            let _ = self.flush().await;
            return (Flow::Quit, Some(errno::CONNECTION_KILLED.0));
        }
        let target = slot.fire(what == KillWhat::Connection);
        if what == KillWhat::Connection {
            slot.ended.cancel();
        }
        tracing::info!(conn_id = id, ?what, server_thread = target.as_ref().map(|t| t.1), "KILL");
        if let Some((target, thread_id)) = target {
            if let Err(e) = send_kill(&target, thread_id).await {
                let msg = format!("dgf: the kill could not be sent upstream: {e}");
                self.send_err(seq, errno::CONN_HOST_ERROR, &msg);
                return (Flow::Continue, Some(errno::CONN_HOST_ERROR.0));
            }
        }
        self.send_ok(seq);
        (Flow::Continue, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_kills_only() {
        let q = |id| Some((KillWhat::Query, id));
        let c = |id| Some((KillWhat::Connection, id));
        for (sql, want) in [
            ("KILL QUERY 5", q(5)),
            ("kill query 5;", q(5)),
            ("  Kill   Query\n12 ; ", q(12)),
            ("/*!50000 KILL QUERY 7 */", q(7)),
            ("/* why */ KILL HARD QUERY 8 -- done", q(8)),
            ("KILL 9", c(9)),
            ("KILL CONNECTION 10", c(10)),
            ("kill soft connection 11 # x", c(11)),
            ("KILL QUERY 99999999999", q(99_999_999_999)),
            ("KILL 99999999999999999999999", c(u64::MAX)),
        ] {
            assert_eq!(parse(sql.as_bytes()), want, "{sql}");
        }
        for sql in [
            "KILL QUERY ID 5",
            "KILL USER bob",
            "KILL -5",
            "KILL 1+1",
            "KILL (SELECT 1)",
            "KILL QUERY 5; SELECT 1",
            "SELECT 1; KILL 5",
            "KILL QUERY",
            "KILL '5'",
            "KILL QUERY 5 6",
            "KILL /* open",
            "KILL @id",
        ] {
            assert_eq!(parse(sql.as_bytes()), None, "{sql}");
        }
    }

    #[test]
    fn kill_in_a_prepare_is_found() {
        assert!(mentions_kill(b"PREPARE s FROM 'KILL 5'"));
        assert!(mentions_kill(b"kill query 5"));
        assert!(!mentions_kill(b"PREPARE s FROM 'SELECT 5'"));
    }

    #[test]
    fn only_the_same_user_on_the_same_route_finds_a_session() {
        let (slot, guard) = register(u32::MAX - 7, "r", "alice");
        assert!(lookup(u64::from(u32::MAX - 7), "r", "alice").is_some());
        assert!(lookup(u64::from(u32::MAX - 7), "r", "bob").is_none());
        assert!(lookup(u64::from(u32::MAX - 7), "other", "alice").is_none());
        slot.set_user("bob");
        assert!(lookup(u64::from(u32::MAX - 7), "r", "bob").is_some());
        drop(guard);
        assert!(lookup(u64::from(u32::MAX - 7), "r", "bob").is_none());
    }

    #[test]
    fn a_fired_connection_is_reported_on_clear() {
        let (slot, _g) = register(u32::MAX - 8, "r", "u");
        assert!(slot.fire(false).is_none(), "nothing held");
        let target = Arc::new(MyTarget {
            host: "127.0.0.1".into(),
            port: 1,
            user: "u".into(),
            password: String::new(),
            ssl_mode: dgf_config::MySslMode::Disabled,
            tls: None,
            server_name: rustls_pki_types::ServerName::try_from("localhost").expect("name"),
        });
        slot.set(target.clone(), 42);
        assert!(slot.fire(false).is_none(), "idle: nothing to interrupt");
        assert!(!slot.clear(), "an idle session's connection was not killed");
        slot.set(target.clone(), 43);
        slot.running(true);
        assert_eq!(slot.fire(false).map(|t| t.1), Some(43));
        assert!(slot.fired());
        assert!(slot.clear());
        slot.set(target, 44);
        assert!(!slot.fired(), "a new connection starts unfired");
    }
}
