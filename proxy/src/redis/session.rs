//! One client session: frames requests, answers connection-state commands itself, batches the
//! rest onto a shared (or pinned) upstream connection, and writes replies back in order.
//!
//! Ordering: all replies of a client come from one place at a time (its shared connection,
//! its pinned connection, or dgf itself). Switching between them waits until every reply
//! already requested has arrived (a barrier), so the client sees replies in request order.

use super::commands::{self, Where};
use super::govern::{self, GovCtx, Pending};
use super::pubsub::Kind;
use super::upstream::{lost, Batch, Msg, MuxConn, ReplyTx};
use super::{initial_identity, RedisRoute, SessionError};
use crate::live::{Route, User};
use crate::shared::Shared;
use crate::stream::Stream;
use bytes::{Buf, BytesMut};
use dgf_protocols::redis::request::encode_command;
use dgf_protocols::redis::value::enc;
use dgf_protocols::redis::{parse_request, Limits};
use dgf_rules::audit::RawBatch;
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

/// Caps on client requests.
pub const CLIENT_LIMITS: Limits = Limits::CLIENT;
/// Stop reading from a client with this many replies owed to it.
const MAX_OUTSTANDING: usize = 16 * 1024;
/// Stop reading from a client with this many reply bytes not yet written to it.
const MAX_COUT: usize = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Active {
    Shared,
    Pinned,
}

/// What to do with one command.
enum Act {
    /// dgf answers with this error.
    Error(String),
    /// dgf answers (see local.rs).
    Local,
    /// Forward.
    Forward(Where),
}

/// A client session.
pub struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) route: Arc<Route>,
    pub(super) rr: Arc<RedisRoute>,
    pub(super) peer: SocketAddr,
    pub(super) id: u64,
    pub(super) rd: ReadHalf<Stream>,
    pub(super) wr: WriteHalf<Stream>,
    pub(super) cin: BytesMut,
    pub(super) cout: Vec<u8>,
    pub(super) args: Vec<Range<usize>>,
    pub(super) user: Option<Arc<User>>,
    pub(super) authed: bool,
    pub(super) db: u32,
    pub(super) proto: u8,
    pub(super) name: Option<Vec<u8>>,
    pub(super) lib: (Option<String>, Option<String>),
    pub(super) tx: ReplyTx,
    pub(super) rx: mpsc::UnboundedReceiver<Msg>,
    pub(super) outstanding: usize,
    pub(super) batch: BytesMut,
    pub(super) batch_n: u32,
    pub(super) batch_resets: bool,
    pub(super) active: Active,
    pub(super) shared_conn: Option<Arc<MuxConn>>,
    pub(super) pinned: Option<Arc<MuxConn>>,
    pub(super) in_multi: bool,
    /// Mask plans of the commands queued in the open MULTI, in order (EXEC's reply is masked
    /// element by element with them).
    pub(super) multi_plans: Vec<Option<govern::MaskPlan>>,
    /// A command was refused while the MULTI was open: EXEC becomes DISCARD + EXECABORT.
    pub(super) multi_failed: bool,
    pub(super) watching: bool,
    pub(super) pending_select: Option<u32>,
    pub(super) subs: HashSet<(Kind, Vec<u8>)>,
    pub(super) closing: bool,
    pub(super) fatal: Option<String>,
    pub(super) stalled: bool,
    pub(super) gov: Option<GovCtx>,
    /// One entry per forwarded command while masking or auditing is on.
    pub(super) pending: VecDeque<Pending>,
    /// Audit fields `protocol` .. `roles` of this session's records (see govern.rs).
    pub(super) audit_prefix: Vec<u8>,
    /// Audit fields rendered at check time of the commands in `pending`, oldest first, from
    /// `audit_head` on.
    pub(super) audit_fifo: Vec<u8>,
    pub(super) audit_head: usize,
    /// Scratch: one command's check-time fields, and the reply-time fields.
    pub(super) audit_part: Vec<u8>,
    pub(super) audit_tail: Vec<u8>,
    /// Records not yet handed to the writer (sent once per client batch). It holds no buffer
    /// between batches: one is taken from the writer's spares when a batch starts.
    pub(super) audit_out: RawBatch,
    /// Bytes of the last batch sent: the room asked for the next one.
    pub(super) audit_room: usize,
    pub(super) per_reply: bool,
    /// The policy `gov` was built from (a reload swaps it).
    pub(super) policy_seen: Option<Arc<dgf_rules::Policy>>,
    /// The ops/s slot a stalled command waits for (see budget.rs).
    pub(super) gate: crate::shaping::Gate,
}

impl Session {
    /// A session for an accepted (and, on TLS routes, decrypted) client stream.
    pub fn new(
        shared: Arc<Shared>,
        route: Arc<Route>,
        rr: Arc<RedisRoute>,
        peer: SocketAddr,
        id: u64,
        stream: Stream,
    ) -> Self {
        let (authed, user) = initial_identity(&shared.live.load());
        let (rd, wr) = tokio::io::split(stream);
        let (tx, rx) = mpsc::unbounded_channel();
        let db = rr.target.db;
        Self {
            shared,
            route,
            rr,
            peer,
            id,
            rd,
            wr,
            cin: BytesMut::with_capacity(4096),
            cout: Vec::with_capacity(4096),
            args: Vec::new(),
            user,
            authed,
            db,
            proto: 2,
            name: None,
            lib: (None, None),
            tx,
            rx,
            outstanding: 0,
            batch: BytesMut::new(),
            batch_n: 0,
            batch_resets: false,
            active: Active::Shared,
            shared_conn: None,
            pinned: None,
            in_multi: false,
            multi_plans: Vec::new(),
            multi_failed: false,
            watching: false,
            pending_select: None,
            subs: HashSet::new(),
            closing: false,
            fatal: None,
            stalled: false,
            gov: None,
            pending: VecDeque::new(),
            audit_prefix: Vec::new(),
            audit_fifo: Vec::new(),
            audit_head: 0,
            audit_part: Vec::new(),
            audit_tail: Vec::new(),
            audit_out: RawBatch::new(),
            audit_room: 0,
            per_reply: false,
            policy_seen: None,
            gate: Default::default(),
        }
        .with_gov()
    }

    fn with_gov(mut self) -> Self {
        self.refresh_gov();
        self
    }

    pub(super) fn busy(&self) -> bool {
        self.outstanding > 0 || self.batch_n > 0
    }

    pub(super) fn in_section(&self) -> bool {
        self.in_multi || self.watching
    }

    /// Run until the client leaves.
    pub async fn run(mut self) -> Result<(), SessionError> {
        let mut shutdown = self.shared.shutdown.clone();
        let result = self.run_inner(&mut shutdown).await;
        self.cleanup();
        result
    }

    async fn run_inner(&mut self, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> Result<(), SessionError> {
        // One future for the whole session, not one per loop turn (each registers a waiter).
        let seen = shutdown.clone();
        let changed = std::pin::pin!(shutdown.changed());
        let mut stop = crate::shared::Stop::new(changed, seen);
        loop {
            self.process_input().await;
            self.flush_batch().await;
            if !self.cout.is_empty() {
                self.write_now()?;
            }
            if self.outstanding == 0 {
                if let Some(msg) = self.fatal.take() {
                    enc::error(&mut self.cout, &msg);
                    self.wr.write_all(&self.cout).await?;
                    let _ = self.wr.shutdown().await;
                    return Err(SessionError::Protocol(msg));
                }
                if self.closing && self.cout.is_empty() {
                    let _ = self.wr.shutdown().await;
                    return Ok(());
                }
                self.maybe_release();
            }
            let can_read = !self.closing
                && self.fatal.is_none()
                && !self.stalled
                && self.cout.len() < MAX_COUT
                && self.outstanding < MAX_OUTSTANDING;
            tokio::select! {
                r = self.rd.read_buf(&mut self.cin), if can_read => {
                    let n = r?;
                    if n == 0 {
                        return Ok(());
                    }
                    self.route.metrics.bytes_in.inc_by(n as u64);
                }
                m = self.rx.recv() => {
                    if let Some(m) = m {
                        // One clock read for every reply that arrived together.
                        let now = self.per_reply.then(std::time::Instant::now);
                        self.on_msg(m, now);
                        while let Ok(m) = self.rx.try_recv() {
                            self.on_msg(m, now);
                        }
                        self.flush_audit();
                    }
                }
                w = self.wr.write(&self.cout), if !self.cout.is_empty() => {
                    let n = w?;
                    self.route.metrics.bytes_out.inc_by(n as u64);
                    self.cout.drain(..n);
                }
                _ = &mut stop, if !self.closing => {
                    self.closing = true;
                }
                _ = crate::shaping::sleep_until(self.gate.deadline()), if self.gate.deadline().is_some() => {}
            }
        }
    }

    /// Writes what the socket takes now, without waiting: replies usually leave in the loop
    /// turn that produced them instead of one more turn through the `select!` (the write arm
    /// there, polled with the task's waker, covers a socket that is full).
    fn write_now(&mut self) -> std::io::Result<()> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        while !self.cout.is_empty() {
            match std::pin::Pin::new(&mut self.wr).poll_write(&mut cx, &self.cout) {
                std::task::Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                std::task::Poll::Ready(Ok(n)) => {
                    self.route.metrics.bytes_out.inc_by(n as u64);
                    self.cout.drain(..n);
                }
                std::task::Poll::Ready(Err(e)) => return Err(e),
                std::task::Poll::Pending => break,
            }
        }
        Ok(())
    }

    fn on_msg(&mut self, m: Msg, now: Option<std::time::Instant>) {
        match m {
            Msg::Replies(b, n) => {
                self.outstanding = self.outstanding.saturating_sub(n as usize);
                if let Some(db) = self.pending_select.take() {
                    if b.first() == Some(&b'+') {
                        self.db = db;
                    }
                }
                if self.per_reply {
                    self.per_reply_out(&b, n, now.unwrap_or_else(std::time::Instant::now));
                } else {
                    self.cout.extend_from_slice(&b);
                }
            }
            Msg::Push(b) => self.cout.extend_from_slice(&b),
            Msg::Confirm(b) => {
                self.outstanding = self.outstanding.saturating_sub(1);
                self.cout.extend_from_slice(&b);
            }
        }
    }

    async fn process_input(&mut self) {
        self.stalled = false;
        // A reloaded policy applies to connections already open, from their next command on.
        if self.policy_seen.as_ref().is_some_and(|p| !Arc::ptr_eq(p, &self.shared.live.load().policy)) {
            self.refresh_gov();
        }
        let mut cin = std::mem::take(&mut self.cin);
        let mut argv_ranges = std::mem::take(&mut self.args);
        let mut part = std::mem::take(&mut self.audit_part);
        let mut clock = None;
        while self.fatal.is_none() && !self.closing {
            let req = match parse_request(&cin, &CLIENT_LIMITS, &mut argv_ranges) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    self.fatal = Some(format!("ERR Protocol error: {e}"));
                    break;
                }
            };
            if argv_ranges.is_empty() {
                cin.advance(req.len);
                continue;
            }
            // Up to 8 arguments (GET, SET, most commands) without a heap allocation.
            let mut small: [&[u8]; 8] = [&[]; 8];
            let big: Vec<&[u8]>;
            let argv: &[&[u8]] = if argv_ranges.len() <= small.len() {
                for (d, r) in small.iter_mut().zip(&argv_ranges) {
                    *d = &cin[r.clone()];
                }
                &small[..argv_ranges.len()]
            } else {
                big = argv_ranges.iter().map(|r| &cin[r.clone()]).collect();
                &big
            };
            let mut nb = [0u8; 32];
            let name: &[u8] = match commands::upper(argv[0], &mut nb) {
                Some(n) => n,
                None => argv[0],
            };
            part.clear();
            let (mut act, checked) = self.decide(name, argv, &mut clock, &mut part);
            if let Some(msg) = checked.as_ref().and_then(|c| c.denied.as_ref()) {
                // A refusal is answered in order: behind the barrier below when replies are owed.
                act = Act::Error(msg.clone());
            }
            if name == b"EXEC" && self.in_multi && self.multi_failed && matches!(act, Act::Forward(_)) {
                // Redis refuses a transaction that had a command refused while queueing.
                act = Act::Error("EXECABORT Transaction discarded because of previous errors.".into());
            }
            let needs_barrier = match &act {
                Act::Error(_) | Act::Local => self.busy(),
                Act::Forward(Where::Select) => self.busy(),
                Act::Forward(Where::Shared) => self.active != Active::Shared && self.busy(),
                Act::Forward(Where::Pinned) => self.active != Active::Pinned && self.busy(),
                Act::Forward(Where::Local) => self.busy(),
            };
            if needs_barrier {
                self.stalled = true;
                break;
            }
            let upstream = matches!(act, Act::Forward(Where::Shared | Where::Pinned | Where::Select));
            let mut refused = None;
            if upstream {
                match self.budgets(name) {
                    super::budget::Budget::Go => {}
                    super::budget::Budget::Stall => {
                        self.stalled = true;
                        break;
                    }
                    super::budget::Budget::Refuse(msg) => {
                        refused = msg.split_whitespace().next().map(str::to_owned);
                        act = Act::Error(msg);
                    }
                }
            }
            self.route.metrics.queries.inc();
            let mut pending = None;
            if let (Some(mut c), Some(g)) = (checked, self.gov.as_ref()) {
                c.settle(g, &self.shared.governance);
                let audit = c.audit.take();
                if c.denied.is_some() {
                    if let Some(a) = audit {
                        self.audit_now(a, &part, Some("NOPERM"));
                    }
                } else if matches!(act, Act::Forward(Where::Shared | Where::Pinned | Where::Select)) && self.per_reply {
                    pending = Some(Pending { plan: c.plan.take(), audit, started: c.started });
                } else if let Some(a) = audit {
                    self.audit_now(a, &part, refused.as_deref());
                }
            }
            let queued = self.in_multi && !matches!(name, b"EXEC" | b"DISCARD" | b"MULTI" | b"WATCH");
            match (&act, name) {
                (Act::Error(_), b"EXEC") if self.in_multi && self.multi_failed => self.abort_multi(),
                (Act::Error(_), _) if queued => self.multi_failed = true,
                (Act::Forward(_), b"EXEC") if self.in_multi => {
                    let plans = std::mem::take(&mut self.multi_plans);
                    if let Some(p) = pending.as_mut() {
                        p.plan = plans.iter().any(Option::is_some).then_some(govern::MaskPlan::Exec(plans));
                    }
                }
                (Act::Forward(_), b"DISCARD") => {
                    self.multi_plans.clear();
                    self.multi_failed = false;
                }
                (Act::Forward(_), _) if queued => {
                    // Its reply now is QUEUED; its result arrives inside EXEC's.
                    self.multi_plans.push(pending.as_mut().and_then(|p| p.plan.take()));
                }
                _ => {}
            }
            match act {
                Act::Error(msg) => enc::error(&mut self.cout, &msg),
                Act::Local | Act::Forward(Where::Local) => self.local(name, argv),
                Act::Forward(w) => {
                    let target = if w == Where::Shared { Active::Shared } else { Active::Pinned };
                    if target == Active::Pinned && self.pinned.is_none() {
                        match self.rr.pinned_conn().await {
                            Ok(c) => self.pinned = Some(c),
                            Err(e) => {
                                enc::error(&mut self.cout, &format!("ERR dgf: {e}"));
                                if let Some(a) = pending.take().and_then(|p| p.audit) {
                                    self.audit_now(a, &part, Some("ERR"));
                                }
                                cin.advance(req.len);
                                continue;
                            }
                        }
                    }
                    if target == Active::Shared && self.active == Active::Pinned {
                        // The barrier above guarantees nothing is in flight on it.
                        if let Some(c) = self.pinned.take() {
                            self.rr.release_pinned(c);
                        }
                    }
                    self.active = target;
                    if target == Active::Pinned {
                        self.track_section(name);
                    }
                    if req.inline {
                        let mut v = Vec::new();
                        encode_command(&mut v, argv.iter().copied());
                        self.batch.extend_from_slice(&v);
                    } else {
                        self.batch.extend_from_slice(&cin[..req.len]);
                    }
                    self.batch_n += 1;
                    if self.per_reply {
                        let p = pending.take().unwrap_or_else(|| Pending {
                            plan: None,
                            audit: None,
                            started: std::time::Instant::now(),
                        });
                        if p.audit.is_some() {
                            // Its check-time audit fields, completed when its reply arrives.
                            self.audit_fifo.extend_from_slice(&part);
                        }
                        self.pending.push_back(p);
                    }
                    if w == Where::Select || name == b"EXEC" || name == b"RESET" {
                        self.batch_resets = true;
                    }
                    if w == Where::Select {
                        self.pending_select = std::str::from_utf8(argv.get(1).copied().unwrap_or_default())
                            .ok()
                            .and_then(|s| s.parse().ok());
                        cin.advance(req.len);
                        // Its reply decides the client's database: nothing may follow it in the batch.
                        break;
                    }
                }
            }
            cin.advance(req.len);
        }
        self.cin = cin;
        self.args = argv_ranges;
        self.audit_part = part;
        self.flush_audit();
    }

    /// The hook point of the query path: classify, authorise and route one command.
    /// With audit on, the command's check-time audit fields are appended to `part`.
    fn decide(
        &mut self,
        name: &[u8],
        argv: &[&[u8]],
        clock: &mut Option<govern::Clock>,
        part: &mut Vec<u8>,
    ) -> (Act, Option<govern::Checked>) {
        let act = self.route_cmd(name, argv);
        if matches!(act, Act::Error(_)) {
            return (act, None);
        }
        let db = self.db;
        let checked = self.gov.as_mut().map(|g| {
            let now = *clock.get_or_insert_with(govern::Clock::now);
            govern::check(g, argv, db, now, part)
        });
        (act, checked)
    }

    fn route_cmd(&self, name: &[u8], argv: &[&[u8]]) -> Act {
        if !self.authed && !commands::allowed_before_auth(name) {
            return Act::Error("NOAUTH Authentication required.".into());
        }
        let subscribed = !self.subs.is_empty();
        if subscribed && self.proto < 3 {
            if !commands::allowed_while_subscribed(name) {
                return Act::Error(format!(
                    "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                    String::from_utf8_lossy(name).to_lowercase()
                ));
            }
            if name == b"PING" {
                return Act::Local;
            }
        }
        let w = commands::route(name, argv);
        if self.in_multi && w == Where::Local && !matches!(name, b"RESET" | b"QUIT") {
            // dgf answers these itself, at once: inside MULTI that would take them out of the
            // transaction's order (the client expects QUEUED and a slot in EXEC's reply).
            return Act::Error("ERR Command not allowed inside a transaction".into());
        }
        if self.in_section() && matches!(w, Where::Shared | Where::Select) {
            return Act::Forward(Where::Pinned);
        }
        match w {
            Where::Local => Act::Local,
            other => Act::Forward(other),
        }
    }

    async fn flush_batch(&mut self) {
        if self.batch_n == 0 {
            return;
        }
        let n = std::mem::take(&mut self.batch_n);
        let resets = std::mem::take(&mut self.batch_resets);
        let bytes = self.batch.split().freeze();
        self.outstanding += n as usize;
        let conn = match self.active {
            Active::Pinned => self.pinned.clone().ok_or_else(|| "no pinned connection".to_owned()),
            // Nothing else outstanding: free to (re)choose, filling connections in order.
            Active::Shared => match self.shared_conn.as_ref().filter(|c| !c.is_dead() && self.outstanding > n as usize)
            {
                Some(c) => Ok(c.clone()),
                None => self.rr.fill_shared().await.inspect(|c| self.shared_conn = Some(c.clone())),
            },
        };
        let batch =
            Batch { bytes, count: n, db: self.db, proto: self.proto, reply: self.tx.clone(), resets_db: resets };
        match conn {
            Ok(c) => {
                if c.send(batch).is_err() {
                    self.shared_conn = None;
                    let _ = self.tx.send(Msg::Replies(lost(n), n));
                }
            }
            Err(e) => {
                let mut v = Vec::new();
                for _ in 0..n {
                    enc::error(&mut v, &format!("ERR dgf: upstream unavailable: {e}"));
                }
                let _ = self.tx.send(Msg::Replies(v.into(), n));
            }
        }
    }
}
