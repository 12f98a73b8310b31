//! Cursors under governance: only the dgf user that opened a cursor may getMore or kill it;
//! its getMore batches get the mask plan of the command that opened it (a reload that changes
//! the user's rules ends such cursors with CursorNotFound rather than keep a stale plan; one
//! that leaves them alike keeps them); `limit` rules cap the
//! documents returned across `firstBatch` and every `nextBatch` (and `distinct` values): the
//! batch that reaches the cap is cut, reported with `cursor.id: 0`, and the server cursor is
//! killed on its connection.

use super::backend::MongoConn;
use super::govern::Decision;
use super::pins::Pins;
use bson::{doc, Document};
use dgf_protocols::mongodb::batch;
use dgf_protocols::mongodb::inspect::CommandInfo;
use dgf_protocols::mongodb::MongoProtoError;
use std::time::Duration;

/// Check that `user` may use the cursors a getMore / killCursors names, and give a getMore's
/// decision the plan and remaining cap of its cursor. `Err`: (code, code name, message) —
/// 13 Unauthorized for another user's cursor; 43 CursorNotFound for a cursor opened under a
/// policy that a reload has replaced with different rules for this user (compared by content,
/// `RoleView::same_rules`), when either policy masks or caps this user's results:
/// its plan may no longer be right, and drivers resume change streams after that error by
/// re-running the command (which then gets the new policy's plan).
pub fn gate(
    pins: &Pins,
    info: &CommandInfo<'_>,
    user: &str,
    decision: Option<&mut Decision>,
) -> Result<(), (i32, &'static str, String)> {
    let ids = info.get_more.iter().chain(&info.kill_cursors);
    for &id in ids {
        if let Some(g) = pins.cursor(id) {
            if g.user != user {
                let msg = format!("dgf: cursor id {id} was not created by the authenticated user");
                return Err((13, "Unauthorized", msg));
            }
        }
    }
    if let (Some(id), Some(d)) = (info.get_more, decision) {
        let g = pins.cursor(id).unwrap_or_default();
        let same_policy = g.policy.as_ref().is_some_and(|p| std::sync::Arc::ptr_eq(p, &d.policy));
        // A reload that changed nothing for this user (no change, or changes for other roles)
        // builds a new but alike view: the cursor's plan and cap are still the right ones.
        let alike = same_policy || g.view.as_ref().is_some_and(|v| v.same_rules(&d.view));
        let stale = !alike;
        if stale && (d.governs_results || !g.plan.is_empty() || g.remaining.is_some()) {
            let msg = format!(
                "dgf: cursor id {id} was opened under a policy that has since been reloaded; run the command again"
            );
            return Err((43, "CursorNotFound", msg));
        }
        d.plan = g.plan;
        d.limit = g.remaining;
    }
    Ok(())
}

/// A reply after the row cap.
#[derive(Debug, Default, PartialEq)]
pub struct Capped {
    /// The cut reply body, when the cap cut it.
    pub body: Option<Vec<u8>>,
    /// Documents returned (after the cut).
    pub rows: Option<u64>,
    /// What is left of the cap for later batches.
    pub remaining: Option<u64>,
    /// The server cursor to kill (the cap closed it): id and `db.collection`.
    pub kill: Option<(i64, Option<String>)>,
}

/// Apply a row cap of `limit` documents to a successful reply body.
pub fn cap(body: &[u8], limit: Option<u64>) -> Result<Capped, MongoProtoError> {
    let Some(limit) = limit else { return Ok(Capped::default()) };
    let Some(b) = batch::batch(body)? else { return Ok(Capped { remaining: Some(limit), ..Capped::default() }) };
    let open = b.cursor_id.is_some_and(|id| id != 0);
    if b.len < limit || (b.len == limit && !open) {
        let remaining = Some(limit - b.len);
        return Ok(Capped { rows: Some(b.len), remaining, ..Capped::default() });
    }
    let kill = b.cursor_id.filter(|&id| id != 0).map(|id| (id, b.ns));
    Ok(Capped { body: Some(batch::cut(body, limit)?), rows: Some(limit), remaining: Some(0), kill })
}

/// The `killCursors` command for cursor `id` of `ns` (`db.collection`).
pub fn kill_command(ns: Option<&str>, id: i64) -> Document {
    let (db, coll) = ns.and_then(|n| n.split_once('.')).unwrap_or(("admin", ""));
    doc! { "killCursors": coll, "cursors": [id], "$db": db }
}

/// Kill a server cursor; `false` when the connection should be dropped.
pub async fn kill(conn: &mut MongoConn, ns: Option<&str>, id: i64) -> bool {
    let done = tokio::time::timeout(Duration::from_secs(5), conn.command(&kill_command(ns, id))).await;
    matches!(done, Ok(Ok(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(n: i32, id: i64) -> Vec<u8> {
        let docs: Vec<Document> = (0..n).map(|i| doc! { "_id": i }).collect();
        doc! { "cursor": { "firstBatch": docs, "id": id, "ns": "app.t" }, "ok": 1.0 }.to_vec().unwrap()
    }

    #[test]
    fn caps() {
        assert_eq!(cap(&reply(3, 9), None).unwrap(), Capped::default());
        // Under the cap: counted, nothing cut.
        let c = cap(&reply(3, 9), Some(5)).unwrap();
        assert_eq!((c.body.is_none(), c.rows, c.remaining, c.kill), (true, Some(3), Some(2), None));
        // Exactly the cap on an exhausted cursor: nothing to cut or kill.
        let c = cap(&reply(3, 0), Some(3)).unwrap();
        assert_eq!((c.body.is_none(), c.remaining, c.kill), (true, Some(0), None));
        // Exactly the cap on an open cursor: closed and killed.
        let c = cap(&reply(3, 9), Some(3)).unwrap();
        assert_eq!(c.kill, Some((9, Some("app.t".into()))));
        // Over the cap: cut.
        let c = cap(&reply(5, 9), Some(2)).unwrap();
        let d = Document::from_reader(&c.body.unwrap()[..]).unwrap();
        assert_eq!(d.get_document("cursor").unwrap().get_array("firstBatch").unwrap().len(), 2);
        assert_eq!(d.get_document("cursor").unwrap().get_i64("id").unwrap(), 0);
        assert_eq!((c.rows, c.remaining), (Some(2), Some(0)));
        // Replies without documents keep the cap.
        let c = cap(&doc! { "n": 1, "ok": 1 }.to_vec().unwrap(), Some(4)).unwrap();
        assert_eq!(c.remaining, Some(4));
        assert_eq!(kill_command(Some("app.t.x"), 9), doc! { "killCursors": "t.x", "cursors": [9i64], "$db": "app" });
    }
}
