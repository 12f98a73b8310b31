//! Refusals a session makes besides the rules' (a command document with a duplicated field),
//! and what any refusal owes an open transaction: it is aborted on the server, as a failed
//! statement aborts it, so a later `commitTransaction` cannot commit the other statements.

use super::Session;
use crate::mongodb::govern;
use crate::mongodb::pins::Key;
use bson::RawDocument;
use dgf_protocols::mongodb::inspect::{self, CommandInfo};
use dgf_protocols::mongodb::msg::Sequence;
use dgf_rules::Denial;

/// The first field that appears twice in a command: in its body (at any depth), in one of its
/// document sequences (`updates`, `deletes`...), or both as a body field and a sequence.
pub(super) fn duplicate(cmd: &RawDocument, seqs: &[Sequence<'_>]) -> Option<String> {
    if let Some(f) = inspect::duplicate_key(cmd) {
        return Some(f);
    }
    let mut ids: Vec<&str> = Vec::new();
    for s in seqs {
        if ids.contains(&s.identifier) || cmd.get(s.identifier).ok().flatten().is_some() {
            return Some(s.identifier.to_owned());
        }
        ids.push(s.identifier);
        if s.identifier == "documents" {
            continue;
        }
        for (i, d) in s.documents.iter().enumerate() {
            let found = RawDocument::from_bytes(d).ok().and_then(inspect::duplicate_key);
            if let Some(f) = found {
                return Some(format!("{}.{i}.{f}", s.identifier));
            }
        }
    }
    None
}

impl Session {
    /// Refuse a command with a duplicated field (code 2 BadValue), audited as a denial: dgf
    /// checks one copy and the server may run another.
    pub(super) async fn refuse_duplicate(
        &mut self,
        rid: i32,
        more_to_come: bool,
        (cmd, seqs): (&RawDocument, &[Sequence<'_>]),
        info: &CommandInfo<'_>,
        field: &str,
    ) -> Result<(), super::SessionError> {
        let message = format!(
            "dgf: field '{field}' appears more than once in the command document; the server could run another \
             copy than the one dgf checks"
        );
        if let Some(user) = self.user.clone() {
            let policy = self.shared.live.load().policy.clone();
            let (gov, route) = (&self.shared.governance, &self.route.name);
            let env = govern::Env { policy: &policy, gov, route, roles: &user.roles, views: None };
            if let Some(mut d) = self.gov.decide(&env, cmd, seqs, info) {
                d.deny = Some(Denial { id: usize::MAX, rule: "duplicate field".into(), message: message.clone() });
                d.error = Some("2".into());
                govern::audit(&env, &d, &self.peer.to_string(), &user.name);
            }
            self.abort_refused_txn(info).await;
        }
        if more_to_come {
            self.route.metrics.error("BadValue");
            return Ok(());
        }
        self.reply_error(rid, 2, "BadValue", &message).await
    }

    /// A refused command of an open multi-document transaction (`autocommit: false`) aborts
    /// that transaction on the connection it is pinned to, whose reply is discarded: the
    /// client's `commitTransaction` then gets NoSuchTransaction from the server, as after a
    /// statement the server itself failed. A transaction not started on the server yet (its
    /// first statement was refused) has nothing to abort: later statements get the same error.
    pub(super) async fn abort_refused_txn(&mut self, info: &CommandInfo<'_>) {
        let Some(lsid) = info.lsid.filter(|_| info.autocommit && info.txn_number.is_some()) else { return };
        let key = Key::Txn(lsid.to_vec());
        if let Some(entry) = self.mongo.pins.remove(&key) {
            crate::mongodb::release(&self.mongo, key, entry).await;
        }
    }
}
