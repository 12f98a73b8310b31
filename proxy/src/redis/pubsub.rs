//! Pub/Sub fan-out: ONE upstream subscriber connection per route carries the union of every
//! client's channels, patterns and shard channels (reference-counted); messages are copied to
//! each subscribed client, as RESP2 arrays or RESP3 pushes.

use super::upstream::{connect, Msg, RedisTarget, ReplyTx};
use bytes::{Bytes, BytesMut};
use dgf_protocols::redis::request::encode_command;
use dgf_protocols::redis::{decode, reply_len, Limits, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Subscription kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// SUBSCRIBE.
    Channel,
    /// PSUBSCRIBE.
    Pattern,
    /// SSUBSCRIBE.
    Shard,
}

impl Kind {
    fn commands(self) -> (&'static [u8], &'static [u8]) {
        match self {
            Kind::Channel => (b"SUBSCRIBE", b"UNSUBSCRIBE"),
            Kind::Pattern => (b"PSUBSCRIBE", b"PUNSUBSCRIBE"),
            Kind::Shard => (b"SSUBSCRIBE", b"SUNSUBSCRIBE"),
        }
    }
}

struct Sub {
    tx: ReplyTx,
    proto: u8,
}

/// Subscribers of one channel/pattern, and whether the upstream has confirmed it.
#[derive(Default)]
struct Entry {
    clients: HashMap<u64, Sub>,
    active: bool,
    /// Confirmations owed to clients, sent once the upstream confirms (so that a message
    /// published after a client saw its confirmation always reaches it).
    waiting: Vec<(ReplyTx, Vec<u8>)>,
}

impl Entry {
    fn release_waiting(&mut self) {
        for (tx, c) in self.waiting.drain(..) {
            let _ = tx.send(Msg::Confirm(Bytes::from(c)));
        }
    }
}

#[derive(Default)]
struct State {
    subs: HashMap<(Kind, Vec<u8>), Entry>,
    conn: Option<mpsc::UnboundedSender<Vec<u8>>>,
}

/// The route's subscriber hub.
pub struct Hub {
    target: Arc<RedisTarget>,
    state: Arc<Mutex<State>>,
}

impl Hub {
    /// A hub that connects on first use.
    pub fn new(target: Arc<RedisTarget>) -> Self {
        Self { target, state: Arc::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of distinct upstream subscriptions (for tests and metrics).
    pub fn upstream_subscriptions(&self) -> usize {
        self.lock().subs.len()
    }

    /// Subscribe client `id` to `name`. `confirmation` is sent to the client as one reply once
    /// the upstream subscription is active (at once if it already is).
    pub fn subscribe(&self, kind: Kind, name: &[u8], id: u64, tx: &ReplyTx, proto: u8, confirmation: Vec<u8>) {
        let mut st = self.lock();
        let key = (kind, name.to_vec());
        let first = !st.subs.contains_key(&key);
        let e = st.subs.entry(key).or_default();
        e.clients.insert(id, Sub { tx: tx.clone(), proto });
        if e.active {
            let _ = tx.send(Msg::Confirm(Bytes::from(confirmation)));
        } else {
            e.waiting.push((tx.clone(), confirmation));
        }
        if first {
            let mut cmd = Vec::new();
            encode_command(&mut cmd, [kind.commands().0, name].into_iter());
            self.send_locked(&mut st, cmd);
        }
    }

    /// Unsubscribe client `id` from `name`.
    pub fn unsubscribe(&self, kind: Kind, name: &[u8], id: u64) {
        let mut st = self.lock();
        let key = (kind, name.to_vec());
        let Some(m) = st.subs.get_mut(&key) else { return };
        m.clients.remove(&id);
        if m.clients.is_empty() {
            if let Some(mut e) = st.subs.remove(&key) {
                e.release_waiting();
            }
            let mut cmd = Vec::new();
            encode_command(&mut cmd, [kind.commands().1, name].into_iter());
            self.send_locked(&mut st, cmd);
        }
    }

    fn send_locked(&self, st: &mut State, cmd: Vec<u8>) {
        if let Some(c) = &st.conn {
            if c.send(cmd).is_ok() {
                return;
            }
        }
        // (Re)start the connection task; it subscribes to everything in `subs` itself.
        let (tx, rx) = mpsc::unbounded_channel();
        st.conn = Some(tx);
        tokio::spawn(run(self.target.clone(), self.state.clone(), rx));
    }
}

async fn run(target: Arc<RedisTarget>, state: Arc<Mutex<State>>, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            if st.subs.is_empty() {
                // Nothing to carry: stop; the next SUBSCRIBE starts a new task.
                st.conn = None;
                return;
            }
        }
        let mut conn = match connect(&target).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "pub/sub upstream connection failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let Some(mut stream) = conn.stream.take() else { return };
        backoff = Duration::from_millis(50);
        // Snapshot the subscriptions and drop commands queued so far (the snapshot covers them);
        // later commands are sent under the same lock, so none is lost.
        let mut initial = Vec::new();
        {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            while rx.try_recv().is_ok() {}
            for e in st.subs.values_mut() {
                e.active = false;
            }
            for (kind, name) in st.subs.keys() {
                encode_command(&mut initial, [kind.commands().0, name.as_slice()].into_iter());
            }
        }
        if stream.write_all(&initial).await.is_err() {
            continue;
        }
        let mut buf = BytesMut::with_capacity(16 * 1024);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(c) => if stream.write_all(&c).await.is_err() { break },
                    None => return,
                },
                r = stream.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if !dispatch(&state, &mut buf) {
                            break;
                        }
                    }
                },
            }
        }
        tracing::warn!("pub/sub upstream connection lost; reconnecting");
    }
}

/// Deliver every complete frame in `buf`; false on a protocol error.
fn dispatch(state: &Mutex<State>, buf: &mut BytesMut) -> bool {
    loop {
        let n = match reply_len(buf, &Limits::SERVER) {
            Ok(Some(n)) => n,
            Ok(None) => return true,
            Err(_) => return false,
        };
        let frame = buf.split_to(n).freeze();
        let Ok(Some((Value::Array(Some(items)) | Value::Push(items), _))) = decode(&frame, &Limits::SERVER) else {
            continue;
        };
        let key = match (items.first().and_then(Value::as_bytes), items.get(1).and_then(Value::as_bytes)) {
            (Some(b"message"), Some(ch)) => (Kind::Channel, ch.to_vec()),
            (Some(b"pmessage"), Some(p)) => (Kind::Pattern, p.to_vec()),
            (Some(b"smessage"), Some(ch)) => (Kind::Shard, ch.to_vec()),
            (Some(what @ (b"subscribe" | b"psubscribe" | b"ssubscribe")), Some(name)) => {
                let kind = match what {
                    b"subscribe" => Kind::Channel,
                    b"psubscribe" => Kind::Pattern,
                    _ => Kind::Shard,
                };
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(e) = st.subs.get_mut(&(kind, name.to_vec())) {
                    e.active = true;
                    e.release_waiting();
                }
                continue;
            }
            _ => continue, // unsubscribe confirmations
        };
        let st = state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(subs) = st.subs.get(&key).map(|e| &e.clients) else { continue };
        let mut resp3: Option<Bytes> = None;
        for s in subs.values() {
            let b = if s.proto >= 3 {
                resp3
                    .get_or_insert_with(|| {
                        let mut v = frame.to_vec();
                        v[0] = b'>';
                        Bytes::from(v)
                    })
                    .clone()
            } else {
                frame.clone()
            };
            let _ = s.tx.send(Msg::Push(b));
        }
    }
}
