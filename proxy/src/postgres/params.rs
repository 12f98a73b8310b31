//! Client run-time parameters across pooled server connections: the signature that lets a
//! checkout skip re-checking them, and the SETs that bring a connection in line.

use super::backend::ServerConn;
use super::prepared::Pending;
use super::relay::{Session, TRACKED};
use dgf_protocols::postgres::messages;

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

    /// Queue SETs so the server matches the parameters this client expects.
    pub(super) fn sync_params(&mut self, conn: &mut ServerConn) {
        if conn.synced_for == self.params_sig {
            // The connection already holds exactly these settings.
            return;
        }
        conn.synced_for = self.params_sig;
        let mut sql = String::new();
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
