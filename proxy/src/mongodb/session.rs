//! One client session: read a command, answer it locally (handshake, auth) or forward it on a
//! server connection checked out for that command (or the one its cursor / transaction is
//! pinned to), bookkeep cursors and transactions from the reply, mask, and send it back.

use super::backend::{Frame, Limits};
use super::cursors::{self, Capped};
use super::govern::{self, Decision, GovState};
use super::hello::{self, Conversation, Step};
use super::pins::{self, Key};
use super::{MongoRoute, SessionError};
use crate::live::{Route, User};
use crate::pool::CheckoutError;
use crate::shared::Shared;
use crate::stream::Stream;
use bson::{doc, Document, RawDocument};
use bytes::BytesMut;
use dgf_protocols::mongodb::frame::{self, Message, OpCode};
use dgf_protocols::mongodb::inspect::{self, CommandInfo};
use dgf_protocols::mongodb::legacy::{self, OpQuery};
use dgf_protocols::mongodb::msg::{self, CHECKSUM_PRESENT, EXHAUST_ALLOWED, MORE_TO_COME};
use dgf_protocols::mongodb::{compress, MongoProtoError, OpMsg, DEFAULT_MAX_DEPTH, DEFAULT_MAX_MESSAGE};
use pins::{Checkout, CursorGov};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod lease;
mod refuse;

use lease::Lease;

/// A server cursor to kill after the reply went out (a row cap closed it), and the
/// connection it lives on.
struct Kill {
    lease: Lease,
    ns: Option<String>,
    id: i64,
}

/// A client session.
pub struct Session {
    shared: Arc<Shared>,
    route: Arc<Route>,
    mongo: Arc<MongoRoute>,
    client: Stream,
    peer: SocketAddr,
    id: u64,
    user: Option<Arc<User>>,
    sasl: Option<Conversation>,
    cin: BytesMut,
    out: BytesMut,
    next_id: i32,
    max_message: usize,
    max_depth: usize,
    gov: GovState,
}

fn opt_usize(route: &Route, key: &str, default: usize) -> usize {
    route.cfg.options.get(key).and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Session {
    /// A session for an accepted (and possibly TLS) client.
    pub fn new(
        shared: Arc<Shared>,
        route: Arc<Route>,
        mongo: Arc<MongoRoute>,
        client: Stream,
        peer: SocketAddr,
        id: u64,
        anonymous: Option<Arc<User>>,
    ) -> Self {
        let max_message = opt_usize(&route, "max_message_bytes", DEFAULT_MAX_MESSAGE);
        let max_depth = opt_usize(&route, "max_bson_depth", DEFAULT_MAX_DEPTH);
        Session {
            shared,
            route,
            mongo,
            client,
            peer,
            id,
            user: anonymous,
            sasl: None,
            cin: BytesMut::with_capacity(8 * 1024),
            out: BytesMut::new(),
            next_id: 0,
            max_message,
            max_depth,
            gov: GovState::default(),
        }
    }

    /// Serve commands until the client leaves.
    pub async fn run(&mut self) -> Result<(), SessionError> {
        loop {
            let Some(m) = self.read_client().await? else { return Ok(()) };
            let m = if m.header.op_code == OpCode::Compressed.code() {
                match compress::decompress(&m.header, &m.body, self.max_message) {
                    Ok((inner, _)) => inner,
                    Err(e) => return Err(SessionError::Protocol(e.to_string())),
                }
            } else {
                m
            };
            self.route.metrics.bytes_in.inc_by(m.body.len() as u64 + 16);
            match m.op() {
                Ok(OpCode::Msg) => self.on_msg(&m).await?,
                Ok(OpCode::Query) => self.on_query(&m).await?,
                _ => return Err(SessionError::Protocol(format!("unsupported opcode {}", m.header.op_code))),
            }
        }
    }

    async fn read_client(&mut self) -> Result<Option<Message>, SessionError> {
        loop {
            match frame::split_frame(&mut self.cin, self.max_message) {
                Ok(Some(m)) => return Ok(Some(m)),
                Ok(None) => {}
                Err(e) => return Err(SessionError::Protocol(e.to_string())),
            }
            if self.client.read_buf(&mut self.cin).await? == 0 {
                return Ok(None);
            }
        }
    }

    async fn write_client(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.route.metrics.bytes_out.inc_by(bytes.len() as u64);
        self.client.write_all(bytes).await?;
        Ok(())
    }

    async fn reply_doc(&mut self, response_to: i32, d: &[u8]) -> Result<(), SessionError> {
        self.next_id = self.next_id.wrapping_add(1);
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        msg::put_msg(&mut out, self.next_id, response_to, 0, d, &[]);
        let r = self.write_client(&out).await;
        self.out = out;
        r
    }

    async fn reply_error(&mut self, response_to: i32, code: i32, name: &str, msg: &str) -> Result<(), SessionError> {
        self.route.metrics.error(name);
        self.reply_doc(response_to, &inspect::error_reply(code, name, msg)).await
    }

    async fn on_msg(&mut self, m: &Message) -> Result<(), SessionError> {
        let rid = m.header.request_id;
        let parsed = OpMsg::parse(&m.header, &m.body, Some(self.max_depth));
        let op = match parsed {
            Ok(op) => op,
            Err(e) => {
                let (code, name) = e.code();
                return self.reply_error(rid, code, name, &format!("dgf: {e}")).await;
            }
        };
        let cmd = op.command().map_err(|e| SessionError::Protocol(e.to_string()))?;
        let info = match inspect::command(cmd) {
            Ok(i) => i,
            Err(e) => return self.reply_error(rid, 2, "BadValue", &format!("dgf: {e}")).await,
        };
        if let Some(field) = refuse::duplicate(cmd, &op.sequences) {
            let more = op.flags & MORE_TO_COME != 0;
            return self.refuse_duplicate(rid, more, (cmd, &op.sequences), &info, &field).await;
        }
        if let Some(reply) = self.local(cmd, &info).await? {
            if op.flags & MORE_TO_COME == 0 {
                let bytes = reply.to_vec().map_err(|e| SessionError::Protocol(e.to_string()))?;
                self.reply_doc(rid, &bytes).await?;
            }
            return Ok(());
        }
        let Some(user) = self.user.clone() else {
            let msg = format!("command {} requires authentication", info.name);
            return self.reply_error(rid, 13, "Unauthorized", &msg).await;
        };
        let policy = self.shared.live.load().policy.clone();
        let db = info.db.unwrap_or("admin");
        let needs_views = info.get_more.is_none() && info.kill_cursors.is_empty() && {
            let (gov, route) = (&self.shared.governance, &self.route.name);
            self.gov.needs_views(&govern::Env { policy: &policy, gov, route, roles: &user.roles, views: None })
        };
        let mut views_err = None;
        // An explain is decided as the command it wraps: list the views that one names.
        let explained = super::commands::explained(cmd, &info);
        let (of, views_info) = (explained.as_ref().map_or(&info, |(_, i)| i), needs_views);
        let views =
            if views_info { self.ensure_views(of, db).await.map_err(|e| views_err = Some(e)).ok() } else { None };
        let env = govern::Env {
            policy: &policy,
            gov: &self.shared.governance,
            route: &self.route.name,
            roles: &user.roles,
            views: views.as_deref(),
        };
        let mut decision = self.gov.decide(&env, cmd, &op.sequences, &info);
        if let (Some(e), Some(d)) = (views_err, decision.as_mut().filter(|d| d.deny.is_none())) {
            let message = format!("dgf: command refused: cannot list the views of {db} to check it ({e}); retry it");
            d.deny = Some(dgf_rules::Denial { id: usize::MAX, rule: "views".into(), message });
        }
        if let Some(d) = decision.as_mut().filter(|d| d.deny.is_some()) {
            d.error = Some("13".into());
            govern::audit(&env, d, &self.peer.to_string(), &user.name);
            let msg = d.deny.as_ref().map(|x| x.message.clone()).unwrap_or_default();
            self.route.metrics.error("Unauthorized");
            self.abort_refused_txn(&info).await;
            if op.flags & MORE_TO_COME != 0 {
                return Ok(());
            }
            return self.reply_doc(rid, &inspect::error_reply(13, "Unauthorized", &msg)).await;
        }
        if let Err((code, name, msg)) = cursors::gate(&self.mongo.pins, &info, &user.name, decision.as_mut()) {
            if let Some(d) = decision.as_mut() {
                d.error = Some(code.to_string());
                govern::audit(&env, d, &self.peer.to_string(), &user.name);
            }
            if let (43, Some(id)) = (code, info.get_more) {
                super::release_cursor(&self.mongo, id).await;
            }
            self.abort_refused_txn(&info).await;
            return self.reply_error(rid, code, name, &msg).await;
        }
        if let Err(e) = self.route.shaper.acquire().await {
            // 262 ExceededTimeLimit: retryable for drivers (nothing ran upstream).
            if let Some(d) = decision.as_mut() {
                d.error = Some("262".into());
                govern::audit(&env, d, &self.peer.to_string(), &user.name);
            }
            if op.flags & MORE_TO_COME != 0 {
                self.route.metrics.error("ExceededTimeLimit");
                return Ok(());
            }
            return self.reply_error(rid, 262, "ExceededTimeLimit", &format!("dgf: {e}")).await;
        }
        self.route.metrics.queries.inc();
        let bytes = if op.flags & (EXHAUST_ALLOWED | CHECKSUM_PRESENT) != 0 {
            // dgf never streams several replies for one request: clear exhaustAllowed, and
            // re-encode without the checksum (the flags changed).
            let mut out = BytesMut::new();
            let flags = op.flags & !(EXHAUST_ALLOWED | CHECKSUM_PRESENT);
            OpMsg { flags, ..op.clone() }.encode(&mut out, rid, 0);
            out
        } else {
            m.to_bytes()
        };
        let r = self.forward(rid, &bytes, &info, op.flags & MORE_TO_COME != 0, decision.as_mut()).await;
        for changed in super::views::changed_dbs(info.name, db, cmd) {
            self.mongo.views.invalidate(changed);
        }
        if let Some(d) = &decision {
            let env = govern::Env {
                policy: &policy,
                gov: &self.shared.governance,
                route: &self.route.name,
                roles: &user.roles,
                views: None,
            };
            govern::audit(&env, d, &self.peer.to_string(), &user.name);
        }
        r
    }

    /// Commands dgf answers itself; `None` when the command goes upstream.
    async fn local(&mut self, cmd: &RawDocument, info: &CommandInfo<'_>) -> Result<Option<Document>, SessionError> {
        Ok(Some(match info.name {
            "hello" | "isMaster" | "ismaster" => self.hello(cmd, info.name != "hello").await?,
            "saslStart" => {
                let users = self.shared.live.load().users.clone();
                let (conv, step) = hello::start(cmd, &users);
                self.sasl = conv;
                self.sasl_step(step)
            }
            "saslContinue" => match self.sasl.as_mut() {
                None => error(17, "ProtocolError", "No SASL session state found"),
                Some(c) => {
                    let (step, more) = c.next(cmd);
                    if !more {
                        self.sasl = None;
                    }
                    self.sasl_step(step)
                }
            },
            "authenticate" => error(334, "MechanismUnavailable", "dgf supports SCRAM-SHA-256 and SCRAM-SHA-1 only"),
            "logout" => doc! { "ok": 1.0 },
            "ping" => doc! { "ok": 1.0 },
            _ => return Ok(None),
        }))
    }

    fn sasl_step(&mut self, step: Step) -> Document {
        let srv = &self.shared.live.load().config.server;
        let refused = matches!(step, Step::Refused(_));
        match step {
            Step::Reply(d) => d,
            Step::Done(u, d) => {
                tracing::Span::current().record("user", u.name.as_str());
                self.user = Some(u);
                d
            }
            Step::Failed(why) | Step::Refused(why) => {
                self.shared.auth_limiter.failed(self.peer.ip(), srv.auth_failure_burst, srv.auth_failure_refill_secs);
                self.route.metrics.login_failures.inc();
                tracing::info!(reason = %why, "authentication failed");
                let shown = if refused { why.as_str() } else { "Authentication failed." };
                error(18, "AuthenticationFailed", shown)
            }
        }
    }

    /// The upstream's limits (from the first connection's `hello`), or why none could be made.
    async fn limits(&mut self) -> Result<Limits, String> {
        if let Some(l) = self.mongo.pool.manager().limits.get() {
            return Ok(*l);
        }
        match self.mongo.pool.get().await {
            Ok(p) => drop(p),
            Err(e) => {
                tracing::warn!(error = %e, "upstream unavailable for hello");
                return Err(e.to_string());
            }
        }
        self.mongo.pool.manager().limits.get().copied().ok_or_else(|| "no hello from the upstream".to_owned())
    }

    async fn hello(&mut self, cmd: &RawDocument, legacy: bool) -> Result<Document, SessionError> {
        let limits = match self.limits().await {
            Ok(l) => l,
            // The reason holds addresses and server messages, never the route's credentials.
            Err(why) => {
                return Ok(error(6, "HostUnreachable", &format!("dgf: the upstream server is unreachable: {why}")));
            }
        };
        let users = self.shared.live.load().users.clone();
        let mut d = hello::reply(cmd, legacy, &limits, (self.id & 0x7fff_ffff) as i32, &users);
        if let Ok(spec) = cmd.get_document("speculativeAuthenticate") {
            let srv = &self.shared.live.load().config.server;
            if self.shared.auth_limiter.allowed(self.peer.ip(), srv.auth_failure_burst, srv.auth_failure_refill_secs) {
                if let (Some(conv), Step::Reply(r)) = hello::start(spec, &users) {
                    self.sasl = Some(conv);
                    d.insert("speculativeAuthenticate", r);
                }
            }
        }
        d.insert("ok", 1.0);
        Ok(d)
    }

    async fn on_query(&mut self, m: &Message) -> Result<(), SessionError> {
        let rid = m.header.request_id;
        let q = OpQuery::parse(&m.body, self.max_depth).map_err(|e| SessionError::Protocol(e.to_string()))?;
        let cmd = RawDocument::from_bytes(q.query).map_err(|e| SessionError::Protocol(e.to_string()))?;
        // Legacy drivers may wrap the command: {$query: {...}, $readPreference: ...}.
        let cmd = cmd.get_document("$query").unwrap_or(cmd);
        let name = cmd.iter().next().and_then(|r| r.ok()).map(|(k, _)| k.as_str().to_owned()).unwrap_or_default();
        let reply = if q.collection.ends_with(".$cmd") && matches!(name.as_str(), "hello" | "isMaster" | "ismaster") {
            self.hello(cmd, name != "hello").await?
        } else {
            error(352, "UnsupportedOpQueryCommand", "dgf: OP_QUERY is only supported for the handshake; use OP_MSG")
        };
        let bytes = reply.to_vec().map_err(|e| SessionError::Protocol(e.to_string()))?;
        self.next_id = self.next_id.wrapping_add(1);
        let mut out = BytesMut::new();
        legacy::put_reply(&mut out, self.next_id, rid, &[&bytes]);
        self.write_client(&out).await
    }

    /// The views of `db`: cached, or listed now on the connection this command would use.
    async fn ensure_views(&mut self, info: &CommandInfo<'_>, db: &str) -> Result<Arc<super::views::ViewDefs>, String> {
        let cached = self.mongo.views.get(db);
        // A collection the listing lacks may be a view made since, outside dgf: list again.
        let coll = info.collection.filter(|_| info.get_more.is_none());
        match cached {
            Some(v) if coll.is_none_or(|c| v.knows(c)) => return Ok(v),
            _ => {}
        }
        let txn = info.lsid.filter(|_| info.txn_number.is_some()).map(|l| Key::Txn(l.to_vec()));
        let mut lease = self.lease(info, txn.as_ref()).await.map_err(|(_, _, m)| m)?;
        let r = self.mongo.views.load(lease.conn(), db).await;
        if r.is_err() && !lease.conn().is_quiet_and_open() {
            lease.broken(&self.mongo.pins);
        }
        if let (Ok(v), Some(c)) = (&r, coll) {
            if !v.knows(c) {
                v.note_missing(c);
            }
        }
        r
    }

    /// The connection this command must run on, or a fresh checkout.
    async fn lease(&mut self, info: &CommandInfo<'_>, txn: Option<&Key>) -> Result<Lease, (i32, &'static str, String)> {
        let pins = &self.mongo.pins;
        let pinned = if let Some(id) = info.get_more {
            pins.get(&Key::Cursor(id), self.id)
        } else if let Some(id) = info.kill_cursors.first() {
            pins.get(&Key::Cursor(*id), self.id)
        } else {
            txn.and_then(|k| pins.get(k, self.id))
        };
        if let Some(s) = pinned {
            let g = s.clone().lock_owned().await;
            return Ok(Lease::Pinned(s, g));
        }
        let started = std::time::Instant::now();
        let r = pins.checkout(&self.mongo.pool, txn.is_none()).await;
        self.route.metrics.wait.observe(started.elapsed().as_secs_f64());
        match r {
            Ok(Checkout::Pooled(p)) => Ok(Lease::Pool(p)),
            Ok(Checkout::Borrowed(s, g)) => Ok(Lease::Pinned(s, g)),
            Err(CheckoutError::Timeout(t)) => {
                Err((89, "NetworkTimeout", format!("dgf: no server connection available within {t:?}")))
            }
            Err(e) => Err((6, "HostUnreachable", format!("dgf: upstream unavailable: {e}"))),
        }
    }

    async fn forward(
        &mut self,
        rid: i32,
        bytes: &[u8],
        info: &CommandInfo<'_>,
        more_to_come: bool,
        mut decision: Option<&mut Decision>,
    ) -> Result<(), SessionError> {
        let txn = info.lsid.filter(|_| info.txn_number.is_some()).map(|l| Key::Txn(l.to_vec()));
        let mut lease = match self.lease(info, txn.as_ref()).await {
            Ok(l) => l,
            Err((code, name, msg)) => {
                if let Some(d) = decision {
                    d.error = Some(code.to_string());
                }
                return self.reply_error(rid, code, name, &msg).await;
            }
        };
        let sent = lease.conn().send(bytes).await;
        if more_to_come {
            if sent.is_err() {
                lease.broken(&self.mongo.pins);
            }
            return Ok(());
        }
        let reply = match sent {
            Ok(()) => lease.conn().recv().await,
            Err(e) => Err(e.into()),
        };
        let frame = match reply {
            Ok(f) => f,
            Err(e) => {
                lease.broken(&self.mongo.pins);
                if let Some(d) = decision {
                    d.error = Some("6".into());
                }
                return self.reply_error(rid, 6, "HostUnreachable", &format!("dgf: {e}")).await;
            }
        };
        let out = self.bookkeep(lease, &frame, info, txn, decision.as_deref_mut());
        let kill = match out {
            Ok((Some(changed), kill)) => {
                self.write_client(&changed).await?;
                kill
            }
            Ok((None, kill)) => {
                self.write_client(&frame.bytes).await?;
                kill
            }
            Err(e) => {
                let (code, name) = e.code();
                if let Some(d) = decision {
                    d.error = Some(code.to_string());
                }
                let msg = format!("dgf: cannot process the server reply: {e}");
                return self.reply_error(rid, code, name, &msg).await;
            }
        };
        if let Some(mut k) = kill {
            if !cursors::kill(k.lease.conn(), k.ns.as_deref(), k.id).await {
                k.lease.broken(&self.mongo.pins);
            }
        }
        Ok(())
    }

    /// Pin or unpin from the reply; apply the row cap and the mask plan. Returns replacement
    /// bytes if the reply changed, and the server cursor to kill if the cap closed one.
    fn bookkeep(
        &mut self,
        mut lease: Lease,
        frame: &Frame,
        info: &CommandInfo<'_>,
        txn: Option<Key>,
        decision: Option<&mut Decision>,
    ) -> Result<(Option<BytesMut>, Option<Kill>), MongoProtoError> {
        if frame.header.op_code != OpCode::Msg.code() {
            return Ok((None, None));
        }
        let op = OpMsg::parse(&frame.header, frame.body(), None)?;
        let body = op.command()?;
        let mut r = inspect::reply(body);
        if r.not_primary() {
            // A failover or shutdown: the next connection finds the primary anew, and so do
            // the other pooled ones of a replica-set route.
            super::stale_primary(&self.route.name, &self.mongo, lease.generation());
            lease.broken(&self.mongo.pins);
        }
        let limit = decision.as_ref().and_then(|d| d.limit).filter(|_| r.ok);
        let capped = cursors::cap(op.body, limit)?;
        if capped.kill.is_some() {
            r.cursor_id = Some(0);
        }
        let pins = &self.mongo.pins;
        if let Some(id) = info.get_more {
            if !r.ok || r.cursor_id == Some(0) {
                pins.remove(&Key::Cursor(id));
            } else if limit.is_some() {
                pins.set_remaining(id, capped.remaining);
            }
        }
        for id in &info.kill_cursors {
            pins.remove(&Key::Cursor(*id));
        }
        let ends_txn = matches!(info.name, "commitTransaction" | "abortTransaction");
        if ends_txn {
            if let Some(k) = &txn {
                pins.remove(k);
            }
        }
        let new_cursor = r.cursor_id.filter(|&id| id != 0 && info.get_more != Some(id));
        let start_txn = info.start_transaction && !ends_txn;
        let mut lease = Some(lease);
        if new_cursor.is_some() || start_txn {
            let ns = body.get_document("cursor").ok().and_then(|c| c.get_str("ns").ok()).map(str::to_owned);
            let shared = lease.take().map(Lease::into_shared);
            if let (Some(id), Some(shared)) = (new_cursor, &shared) {
                let user = self.user.as_ref().map(|u| u.name.clone()).unwrap_or_default();
                let plan = decision.as_ref().map(|d| d.plan.clone()).unwrap_or_default();
                let policy = decision.as_ref().map(|d| d.policy.clone());
                let view = decision.as_ref().map(|d| d.view.clone());
                let gov = CursorGov { user, plan, remaining: capped.remaining, policy, view };
                pins.insert_cursor(id, shared.clone(), self.id, ns, gov);
            }
            if let (true, Some(k), Some(shared)) = (start_txn, txn, shared.clone()) {
                pins.insert(k, shared, self.id, None, info.txn_number.unwrap_or(0));
            }
            // A capped cursor inside a transaction: kill it on the (now pinned) connection.
            if let (Some(_), Some(s)) = (&capped.kill, shared) {
                lease = s.clone().try_lock_owned().ok().map(|g| Lease::Pinned(s, g));
            }
        }
        let kill = match (capped.kill.clone(), lease) {
            (Some((id, ns)), Some(lease)) => Some(Kill { lease, ns, id }),
            _ => None,
        };
        let Some(d) = decision else { return Ok((None, kill)) };
        let Capped { body: cut, rows, .. } = capped;
        let reply = cut.as_deref().unwrap_or(op.body);
        let raw = bson::RawDocument::from_bytes(reply).map_err(|_| MongoProtoError::Bson("reply"))?;
        (d.rows, d.error) = govern::outcome(raw);
        d.rows = rows.or(d.rows);
        d.bytes = Some(frame.bytes.len() as u64);
        let masked = if d.plan.is_empty() { None } else { d.plan.apply(reply, self.max_depth.max(200))? };
        let Some(doc) = masked.or(cut) else { return Ok((None, kill)) };
        let mut out = BytesMut::new();
        let seqs: Vec<(&str, &[&[u8]])> = op.sequences.iter().map(|s| (s.identifier, &s.documents[..])).collect();
        msg::put_msg(
            &mut out,
            frame.header.request_id,
            frame.header.response_to,
            op.flags & !CHECKSUM_PRESENT,
            &doc,
            &seqs,
        );
        d.bytes = Some(out.len() as u64);
        Ok((Some(out), kill))
    }
}

fn error(code: i32, name: &str, msg: &str) -> Document {
    doc! { "ok": 0.0, "errmsg": msg, "code": code, "codeName": name }
}
