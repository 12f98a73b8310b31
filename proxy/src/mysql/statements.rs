//! Prepared statements on the MySQL route: COM_STMT_PREPARE / EXECUTE / SEND_LONG_DATA /
//! RESET / FETCH with client statement ids remapped to whichever server connection runs them
//! (prepared there on demand, parameter types carried over), see docs/ARCHITECTURE.md.

use super::backend::BackendError;
use super::govern::Gov;
use super::session::{ClientStmt, Session};
use super::state::StmtEntry;
use super::SessionError;
use bytes::Bytes;
use dgf_protocols::mysql::consts::{com, errno};
use dgf_protocols::mysql::frame::put_frame;
use dgf_protocols::mysql::packets::{execute_layout, execute_with_types, set_statement_id, statement_id, ErrPacket};
use dgf_protocols::mysql::response::{Expect, Out, Tracker};
use std::sync::Arc;

impl Session {
    pub(super) async fn prepare(&mut self, seq: u8, payload: Bytes, gov: Option<Arc<Gov>>) -> Result<(), SessionError> {
        if !self.acquire(seq).await? {
            return Ok(());
        }
        let schema = self.server.as_ref().map(|s| s.schema.clone()).unwrap_or_default();
        self.next_stmt = self.next_stmt.wrapping_add(1).max(1);
        let client_id = self.next_stmt;
        let rewrite = move |p: &[u8]| {
            let mut v = p.to_vec();
            if v.first() == Some(&0) {
                set_statement_id(&mut v, client_id);
            }
            Some(v)
        };
        let known = self.pools.statements.get(&schema, &payload);
        let held = self.server.as_ref().expect("held");
        if let Some(e) = known.as_ref().filter(|e| held.prepared.contains_key(&e.id)) {
            // Already prepared on this connection: replay the metadata.
            let mut t = Tracker::new(Expect::Prepare, held.caps, self.caps);
            let mut cseq = seq;
            for (i, p) in e.response.iter().enumerate() {
                let out = t.feed(p).map_err(|e| SessionError::Upstream(e.to_string()))?;
                let p = if i == 0 { rewrite(p) } else { None };
                match (out, p) {
                    (_, Some(p)) | (Out::Rewrite(p), None) => put_frame(&mut self.cout, cseq, &p),
                    (Out::Pass, None) => put_frame(&mut self.cout, cseq, &e.response[i]),
                    (Out::Drop, None) => continue,
                }
                cseq = cseq.wrapping_add(1);
            }
            self.stmts.insert(client_id, ClientStmt { entry: e.clone(), gov, types: None });
            self.maybe_release().await;
            return Ok(());
        }
        let mut packets = Vec::new();
        let t = self.exchange(seq, &payload, Expect::Prepare, rewrite, Some(&mut packets)).await?;
        self.after_response(&t);
        if let (Some(ok), None) = (t.prepare_ok, &t.error) {
            let entry = self.pools.statements.insert(&schema, payload, ok.num_params, ok.num_columns, packets);
            if let Some(s) = self.server.as_mut() {
                if let Err(e) = s.remember_statement(entry.id, ok.statement_id).await {
                    tracing::debug!(error = %e, "closing a prepared statement failed");
                    s.mark_broken();
                }
            }
            self.stmts.insert(client_id, ClientStmt { entry, gov, types: None });
        }
        self.maybe_release().await;
        Ok(())
    }

    /// Make sure the held connection has `entry` prepared; its server id, or the error.
    async fn ensure_prepared(&mut self, entry: &StmtEntry) -> Result<Result<u32, ErrPacket>, SessionError> {
        let s = self.server.as_mut().expect("held");
        if let Some(id) = s.prepared.get(&entry.id) {
            return Ok(Ok(*id));
        }
        let r: Result<Result<u32, ErrPacket>, BackendError> = async {
            s.command(&entry.prepare).await?;
            let mut t = Tracker::new(Expect::Prepare, s.caps, s.caps);
            while !t.done() {
                let (_, p) = s.read_packet().await?;
                t.feed(&p)?;
            }
            match (t.prepare_ok, t.error) {
                (_, Some(e)) => Ok(Err(e)),
                (Some(ok), None) => Ok(Ok(ok.statement_id)),
                (None, None) => Err(BackendError::Protocol("no COM_STMT_PREPARE_OK".into())),
            }
        }
        .await;
        match r {
            Ok(Ok(id)) => {
                if s.remember_statement(entry.id, id).await.is_err() {
                    s.mark_broken();
                }
                Ok(Ok(id))
            }
            Ok(Err(e)) => Ok(Err(e)),
            Err(e) => {
                s.mark_broken();
                self.server = None;
                Err(SessionError::Upstream(e.to_string()))
            }
        }
    }

    fn unknown_stmt(&mut self, seq: u8, id: u32, what: &str) {
        self.send_err(
            seq,
            errno::UNKNOWN_STMT_HANDLER,
            &format!("Unknown prepared statement handler ({id}) given to {what}"),
        );
    }

    pub(super) async fn execute(&mut self, seq: u8, payload: Bytes) -> Result<(), SessionError> {
        let id = statement_id(&payload).map_err(|e| SessionError::Protocol(e.to_string()))?;
        let Some(cs) = self.stmts.get(&id) else {
            self.unknown_stmt(seq, id, "mysqld_stmt_execute");
            return Ok(());
        };
        let (entry, prepared_gov) = (cs.entry.clone(), cs.gov.clone());
        let stmt_gov = prepared_gov.map(|g| self.revalidate(g));
        let stmt_gov = match stmt_gov {
            Some(g) if g.denied().is_none() => match self.check_views(seq, g).await {
                Ok(g) => Some(g),
                Err(()) => return Ok(()),
            },
            other => other,
        };
        if let Some(g) = stmt_gov.as_ref().filter(|g| g.denied().is_some()) {
            let g = g.clone();
            self.deny(seq, &g);
            return Ok(());
        }
        let Some(cs) = self.stmts.get_mut(&id) else { return Ok(()) };
        cs.gov.clone_from(&stmt_gov);
        let layout = execute_layout(&payload, entry.num_params).map_err(|e| SessionError::Protocol(e.to_string()))?;
        if layout.types_included {
            cs.types = Some(payload[layout.types.clone()].to_vec());
        }
        let mut p = match (&cs.types, layout.types_included || entry.num_params == 0) {
            (Some(types), false) => execute_with_types(&payload, &layout, types),
            _ => payload.to_vec(),
        };
        if !self.acquire(seq).await? {
            return Ok(());
        }
        let server_id = match self.ensure_prepared(&entry).await? {
            Ok(id) => id,
            Err(e) => {
                self.send_err_packet(seq, &e);
                self.maybe_release().await;
                return Ok(());
            }
        };
        set_statement_id(&mut p, server_id);
        if layout.flags & 0x0f != 0 {
            if stmt_gov.as_ref().is_some_and(|g| g.needs_plan()) {
                // Rows fetched later (COM_STMT_FETCH) would bypass the masking plan: fail closed.
                let msg = "dgf: permission denied: masked data cannot be read through a server-side cursor";
                self.send_err(seq, errno::COLUMNACCESS_DENIED, msg);
                self.maybe_release().await;
                return Ok(());
            }
            self.pin_to("open cursor");
        }
        self.begin(stmt_gov, true);
        let t = self.exchange(seq, &p, Expect::ResultSet, |_| None, None).await?;
        self.finish_statement(t.error.as_ref().map(|e| e.errno.to_string()));
        self.after_response(&t);
        self.long_data = false;
        let ok = t.last_ok.as_ref();
        self.sticky = ok.is_some_and(|o| o.last_insert_id != 0 || o.affected_rows != 0);
        self.maybe_release().await;
        Ok(())
    }

    pub(super) async fn long_data(&mut self, payload: Bytes) -> Result<(), SessionError> {
        let Ok(id) = statement_id(&payload) else { return Ok(()) };
        let Some(entry) = self.stmts.get(&id).map(|c| c.entry.clone()) else { return Ok(()) };
        // No response exists for this command: errors surface on the execute.
        let mut scratch = std::mem::take(&mut self.cout);
        let acquired = self.acquire(0).await?;
        std::mem::swap(&mut self.cout, &mut scratch);
        if !acquired {
            return Ok(());
        }
        let Ok(server_id) = self.ensure_prepared(&entry).await? else { return Ok(()) };
        let mut p = payload.to_vec();
        set_statement_id(&mut p, server_id);
        let s = self.server.as_mut().expect("held");
        if let Err(e) = s.command(&p).await {
            s.mark_broken();
            self.server = None;
            return Err(SessionError::Upstream(e.to_string()));
        }
        self.long_data = true;
        Ok(())
    }

    /// COM_STMT_RESET / COM_STMT_FETCH: only meaningful on the connection that holds the
    /// statement's long data or cursor.
    pub(super) async fn stmt_on_server(&mut self, seq: u8, payload: Bytes) -> Result<(), SessionError> {
        let cmd = payload[0];
        let id = statement_id(&payload).map_err(|e| SessionError::Protocol(e.to_string()))?;
        let Some(entry) = self.stmts.get(&id).map(|c| c.entry.clone()) else {
            let what = if cmd == com::STMT_FETCH { "mysqld_stmt_fetch" } else { "mysqld_stmt_reset" };
            self.unknown_stmt(seq, id, what);
            return Ok(());
        };
        let server_id = self.server.as_ref().and_then(|s| s.prepared.get(&entry.id).copied());
        match (server_id, cmd) {
            (Some(sid), _) => {
                let mut p = payload.to_vec();
                set_statement_id(&mut p, sid);
                let expect = if cmd == com::STMT_FETCH { Expect::Fetch } else { Expect::Ok };
                let t = self.exchange(seq, &p, expect, |_| None, None).await?;
                self.after_response(&t);
            }
            (None, com::STMT_RESET) => self.send_ok(seq),
            (None, _) => self.send_err(seq, (1421, "HY000"), "The statement has no open cursor"),
        }
        if cmd == com::STMT_RESET {
            self.long_data = false;
            self.maybe_release().await;
        }
        Ok(())
    }
}
