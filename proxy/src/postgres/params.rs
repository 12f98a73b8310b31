//! Client run-time parameters across pooled server connections: the signature that lets a
//! checkout skip re-checking them, and the SETs that bring a connection in line.

use super::backend::ServerConn;
use super::prepared::Pending;
use super::relay::{Session, TRACKED};
use dgf_protocols::postgres::messages;

/// Whether `conn` already holds the settings of the session `me` whose parameter signature is
/// `sig`: [`Session::sync_params`] then sends nothing (and a hand-over may write that
/// session's query before it runs, see `ensure_server_for`).
pub(super) fn in_sync(conn: &ServerConn, sig: u64, me: u64) -> bool {
    conn.synced_for == sig && !(conn.dirty && conn.dirty_for != me)
}

impl Session {
    /// The signature of a parameter list. Lists of reported parameters only (whose every
    /// change on a server connection dgf sees as ParameterStatus) get a content hash, so that
    /// clients with the same settings share it; any other list gets a value unique in this
    /// process (an unreported parameter may have been changed unseen by whoever held the
    /// connection, so only the same session may skip re-setting it).
    pub(super) fn params_sig(desired: &[(String, String)]) -> u64 {
        use std::hash::{Hash, Hasher};
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        if desired.iter().all(|(k, _)| TRACKED.iter().any(|t| t.eq_ignore_ascii_case(k))) {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            desired.hash(&mut h);
            // Odd: never equal to a counter value below (those are even) nor to 0.
            h.finish() | 1
        } else {
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 1
        }
    }

    /// An id of this session (for [`ServerConn::dirty_for`]), never reused in this process.
    pub(super) fn session_id(&self) -> u64 {
        self.cancel.id()
    }

    /// Queue SETs so the server matches the parameters this client expects; a connection
    /// another client left with unreported settings changed gets `RESET ALL` first.
    pub(super) fn sync_params(&mut self, conn: &mut ServerConn) {
        let reset = conn.dirty && conn.dirty_for != self.session_id();
        if in_sync(conn, self.params_sig, self.session_id()) {
            // The connection already holds exactly these settings.
            return;
        }
        conn.synced_for = self.params_sig;
        let mut sql = String::new();
        if reset {
            sql.push_str("RESET ALL; SELECT pg_advisory_unlock_all();");
            conn.dirty = false;
            for (k, v) in &conn.defaults {
                conn.params.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in &self.desired {
            // Only reported parameters (ParameterStatus) are known to be current on `conn`:
            // any other one (search_path, statement_timeout...) may have been SET by another
            // client since dgf set it, unseen, so it is set again on every checkout.
            let reported = TRACKED.iter().any(|t| t.eq_ignore_ascii_case(k));
            if reported && conn.params.get(k) == Some(v) {
                continue;
            }
            sql.push_str(&set_statement(k, v));
            conn.params.insert(k.clone(), v.clone());
            if !reported {
                conn.dirty = true;
                conn.dirty_for = self.session_id();
            }
        }
        if !sql.is_empty() {
            messages::put_query(&mut self.sout, &sql);
            self.pending.push_back(Pending::Query { internal: true });
        }
    }
}

/// `SET name TO 'value';` with the value quoted; names that are not plain identifiers are
/// skipped (they cannot come from a well-formed startup packet).
pub fn set_statement(name: &str, value: &str) -> String {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        return String::new();
    }
    format!("SET {name} TO '{}';", value.replace('\'', "''"))
}

/// Session-level advisory locks: they outlive the transaction, so in transaction mode they
/// would stay with the server connection (and the next client) after their client left.
const SESSION_LOCKS: [&str; 4] =
    ["pg_advisory_lock", "pg_try_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock_shared"];

/// Whether a statement (its text, or its analysis when governed) may change settings the
/// server does not report or take a session-level advisory lock: the connection then needs
/// `RESET ALL` and `pg_advisory_unlock_all()` before another client. Without an analysis
/// (governance off) the text is scanned: a leading `SET` / `RESET`, or `set_config` or
/// `advisory_lock` (`pg_advisory_lock`, `pg_try_advisory_lock`, their `_shared` forms) in any
/// case anywhere in it. A mention in a string or a column name only costs the next client a
/// `RESET ALL`; PgBouncer does not look at all.
pub fn changes_settings(sql: &[u8], analysis: Option<&dgf_rules::sql::Analysis>) -> bool {
    if let Some(a) = analysis {
        return a.statements.iter().any(|st| {
            st.set_variables.iter().any(|v| !TRACKED.iter().any(|t| t.eq_ignore_ascii_case(v)))
                || st.functions.iter().any(|f| {
                    let f = f.strip_prefix("pg_catalog.").unwrap_or(f);
                    f == "set_config" || SESSION_LOCKS.contains(&f)
                })
        });
    }
    let start = sql.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(sql.len());
    let head = &sql[start..];
    let set = ["set", "reset"].iter().any(|w| {
        head.len() > w.len()
            && head[..w.len()].eq_ignore_ascii_case(w.as_bytes())
            && !head[w.len()].is_ascii_alphanumeric()
    });
    set || mentions_session_state(sql)
}

/// `set_config` or `advisory_lock` anywhere in `sql`, in any case: one SIMD pass for `_`, then a
/// look around each (a pgbench `SELECT` has one `_`).
fn mentions_session_state(sql: &[u8]) -> bool {
    let ends_with = |end: usize, w: &[u8]| end >= w.len() && sql[end - w.len()..end].eq_ignore_ascii_case(w);
    let starts_with = |at: usize, w: &[u8]| sql.len() >= at + w.len() && sql[at..at + w.len()].eq_ignore_ascii_case(w);
    memchr::memchr_iter(b'_', sql).any(|i| {
        let word_start = |at: usize| at == 0 || !(sql[at - 1].is_ascii_alphanumeric() || sql[at - 1] == b'_');
        (ends_with(i, b"advisory") && starts_with(i + 1, b"lock"))
            || (ends_with(i, b"set") && word_start(i - 3) && starts_with(i + 1, b"config"))
    })
}

#[cfg(test)]
mod tests {
    use super::changes_settings;

    #[test]
    fn leading_set_or_reset_changes_settings() {
        for q in ["SET search_path = x", "  set\tstatement_timeout = 1", "RESET ALL", "reset work_mem"] {
            assert!(changes_settings(q.as_bytes(), None), "{q}");
        }
        for q in [
            "SELECT 1",
            "settle",
            "SETOF",
            "",
            "   ",
            "_",
            "_lock",
            "advisory_",
            "SELECT pg_advisory_xact_lock(1)",
            "SELECT pg_advisory_unlock(1)",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "select current_setting('work_mem')",
            "SELECT reset_config",
        ] {
            assert!(!changes_settings(q.as_bytes(), None), "{q}");
        }
        // Ungoverned: session-level advisory locks and set_config in any case, anywhere.
        for q in [
            "select pg_advisory_lock(1)",
            "SELECT PG_TRY_ADVISORY_LOCK(7)",
            "SELECT 1; select Pg_Advisory_Lock_Shared(2)",
            "SELECT pg_catalog.pg_try_advisory_lock_shared(3)",
            "SELECT set_config('work_mem', '1MB', false)",
            "select SET_CONFIG('search_path', 'x', false)",
        ] {
            assert!(changes_settings(q.as_bytes(), None), "{q}");
        }
        let a = dgf_rules::sql::analyze("SET TimeZone = 'UTC'", dgf_rules::sql::Dialect::Postgres);
        assert!(!changes_settings(b"", Some(&a)), "a reported parameter is tracked, not reset");
        for q in [
            "SET search_path TO evil, public",
            "SELECT set_config('work_mem', '1MB', false)",
            "RESET ALL",
            "SELECT pg_advisory_lock(42)",
        ] {
            let a = dgf_rules::sql::analyze(q, dgf_rules::sql::Dialect::Postgres);
            assert!(changes_settings(b"", Some(&a)), "{q}");
        }
    }
}
