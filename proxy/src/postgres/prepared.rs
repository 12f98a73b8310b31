//! Named prepared statements in transaction pooling: clients' statement names are mapped to
//! route-wide ids (one per distinct query + parameter types), prepared on whatever server
//! connection the client gets, and re-prepared transparently where missing.
//!
//! Server-side names are `__dgf_<id>`, so two clients that both call their statement `s0` with
//! different SQL never collide, and two clients preparing the same SQL share one server-side
//! statement per server connection.

use bytes::Bytes;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A statement known to the route.
#[derive(Debug)]
pub struct Statement {
    /// Route-wide id.
    pub id: u64,
    /// Name used on server connections.
    pub server_name: String,
    /// Parse body after the name: query, NUL, parameter types.
    pub rest: Bytes,
}

/// Route-wide statement registry, keyed by the Parse body (query + parameter types).
#[derive(Clone, Default)]
pub struct Registry {
    by_body: Arc<DashMap<Bytes, Arc<Statement>>>,
    next: Arc<AtomicU64>,
}

impl Registry {
    /// The statement for this Parse body, registering it on first sight.
    pub fn intern(&self, rest: &[u8]) -> Arc<Statement> {
        if let Some(s) = self.by_body.get(rest) {
            return s.clone();
        }
        let body = Bytes::copy_from_slice(rest);
        self.by_body
            .entry(body.clone())
            .or_insert_with(|| {
                let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
                Arc::new(Statement { id, server_name: format!("__dgf_{id}"), rest: body })
            })
            .clone()
    }

    /// Forget statements `ids`: the next Parse of their texts gets new ids and server-side
    /// names. For statements whose server-side plans may have gone stale (a result type changed
    /// after DDL: the server refuses every Describe / Bind of such a statement until it is
    /// prepared anew, and a re-prepare under the old name would meet the old plan again).
    pub fn forget(&self, ids: &std::collections::HashSet<u64>) {
        self.by_body.retain(|_, s| !ids.contains(&s.id));
    }

    /// Number of distinct statements seen.
    pub fn len(&self) -> usize {
        self.by_body.len()
    }

    /// Whether no statement was seen.
    pub fn is_empty(&self) -> bool {
        self.by_body.is_empty()
    }
}

/// A request sent to the server whose response has not fully arrived, or a response dgf must
/// synthesise once everything before it has been answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Parse forwarded; `swallow` when dgf injected it (client must not see ParseComplete).
    Parse {
        /// Statement id (to forget it on error).
        id: Option<u64>,
        /// Hide the ParseComplete from the client.
        swallow: bool,
    },
    /// Client's Parse for a statement the server already has: answer ParseComplete ourselves.
    SynthParseComplete,
    /// Client's Close of a shared statement: answer CloseComplete ourselves.
    SynthCloseComplete,
    /// Bytes dgf answers itself (e.g. a policy denial) once everything before is answered.
    Synth(bytes::Bytes),
    /// ReadyForQuery with the server's transaction status at the time it is emitted.
    SynthReady,
    /// The client ended a COPY IN (CopyDone/CopyFail) before the server said the COPY started.
    /// No reply: it marks where the Syncs the server ignores in copy-in mode end (see
    /// `btag::COPY_IN` in relay.rs); dropped unanswered if it reaches the front.
    CopyEnd,
    /// Bind forwarded.
    Bind,
    /// Describe forwarded: of a statement (`statement`) or a portal; `swallow` when dgf sent
    /// it itself (to learn a portal's result formats for masking).
    Describe {
        /// Statement (true) or portal (false).
        statement: bool,
        /// Hide the reply from the client.
        swallow: bool,
    },
    /// Execute forwarded.
    Execute,
    /// Close forwarded.
    Close,
    /// Sync forwarded: ends with ReadyForQuery.
    Sync,
    /// Simple query or function call: ends with ReadyForQuery. `internal` = dgf's own
    /// (parameter sync): nothing of its response reaches the client.
    Query {
        /// dgf's own query.
        internal: bool,
    },
    /// dgf's refusal of a simple query inside a transaction, raised by the server (a DO block)
    /// so that the transaction fails: its error reaches the client as dgf's own, without the
    /// server's PL/pgSQL CONTEXT line. Ends with ReadyForQuery.
    Refusal,
}

impl Pending {
    /// Whether this entry ends at ReadyForQuery.
    pub fn ends_at_ready(&self) -> bool {
        matches!(self, Pending::Sync | Pending::Query { .. } | Pending::Refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_sql_same_id_different_sql_different_id() {
        let r = Registry::default();
        let a = r.intern(b"SELECT 1\0\0\0");
        let b = r.intern(b"SELECT 1\0\0\0");
        let c = r.intern(b"SELECT 2\0\0\0");
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_eq!(a.server_name, format!("__dgf_{}", a.id));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn parameter_types_are_part_of_identity() {
        let r = Registry::default();
        let a = r.intern(b"SELECT $1\0\0\x01\0\0\0\x17");
        let b = r.intern(b"SELECT $1\0\0\x01\0\0\0\x19");
        assert_ne!(a.id, b.id);
    }
}
