//! What a command does beyond its name, for governance: the command an `explain` wraps (it
//! runs that command's query, so it is decided as that command), and the commands that show
//! a masked role other clients' commands (every dgf client reaches the server as the route's
//! upstream user, so the server's statement logs hold all of their literals).

use bson::{Document, RawDocument};
use dgf_protocols::mongodb::inspect::{self, CommandInfo};

/// The command `explain: {...}` wraps and its facts (`$db`, session and transaction fields
/// are the explain's own). `None` for any other command, or an explain of something that is
/// not a command document (the server refuses it).
pub fn explained<'a>(cmd: &'a RawDocument, info: &CommandInfo<'a>) -> Option<(&'a RawDocument, CommandInfo<'a>)> {
    if info.name != "explain" {
        return None;
    }
    let inner = cmd.get_document("explain").ok()?;
    let i = inspect::command(inner).ok()?;
    let merged = CommandInfo {
        db: info.db,
        lsid: info.lsid,
        txn_number: info.txn_number,
        start_transaction: info.start_transaction,
        autocommit: info.autocommit,
        ..i
    };
    // An explain of an explain (the server refuses it) is still decided by what it reaches.
    if merged.name == "explain" {
        return explained(inner, &merged);
    }
    Some((inner, merged))
}

/// Why a command would show a masked role other clients' commands, if it does: `currentOp`,
/// `$currentOp`, `$queryStats`, the server log (`getLog`), turning the profiler on or reading
/// its output (`profile`, `system.profile` named by the command, joined or under a view:
/// `objects` are the command's `mongodb:db.coll` objects, view sources included).
pub fn shows_other_clients(name: &str, doc: &Document, objects: &[String]) -> Option<&'static str> {
    if name.eq_ignore_ascii_case("currentOp") {
        return Some("currentOp and $queryStats show other clients' commands");
    }
    if name == "aggregate" {
        let st = dgf_rules::mongodb::stages(dgf_rules::mongodb::pipeline(doc));
        if st.iter().any(|s| matches!(s.as_str(), "$currentOp" | "$queryStats")) {
            return Some("currentOp and $queryStats show other clients' commands");
        }
    }
    if name.eq_ignore_ascii_case("getLog") {
        return Some("the server log shows other clients' commands");
    }
    // `profile: -1` reads the level and `profile: 0` turns the profiler off.
    let level =
        doc.get("profile").and_then(|v| v.as_f64().or(v.as_i32().map(f64::from)).or(v.as_i64().map(|i| i as f64)));
    if name.eq_ignore_ascii_case("profile") && !matches!(level, Some(l) if l == -1.0 || l == 0.0) {
        return Some("the profiler records other clients' commands");
    }
    if objects.iter().any(|o| o.ends_with(".system.profile")) {
        return Some("system.profile holds other clients' commands");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn explain_is_its_command() {
        let b = doc! { "explain": { "find": "payroll", "filter": { "salary": { "$gte": 1 } } }, "verbosity": "executionStats", "$db": "app" }
            .to_vec()
            .unwrap();
        let raw = RawDocument::from_bytes(&b).unwrap();
        let info = inspect::command(raw).unwrap();
        let (inner, i) = explained(raw, &info).expect("an explain");
        assert_eq!((i.name, i.collection, i.db), ("find", Some("payroll"), Some("app")));
        assert!(inner.get_document("filter").is_ok());
        let b = doc! { "explain": { "explain": { "find": "payroll" } }, "$db": "app" }.to_vec().unwrap();
        let raw = RawDocument::from_bytes(&b).unwrap();
        let (_, i) = explained(raw, &inspect::command(raw).unwrap()).expect("an explain");
        assert_eq!((i.name, i.collection), ("find", Some("payroll")));
        let b = doc! { "find": "x", "$db": "app" }.to_vec().unwrap();
        let raw = RawDocument::from_bytes(&b).unwrap();
        assert!(explained(raw, &inspect::command(raw).unwrap()).is_none());
    }

    #[test]
    fn statement_logs() {
        assert!(shows_other_clients("profile", &doc! { "profile": 2 }, &[]).is_some());
        assert!(shows_other_clients("profile", &doc! { "profile": 1, "slowms": 0 }, &[]).is_some());
        assert!(shows_other_clients("profile", &doc! { "profile": -1 }, &[]).is_none(), "reading the level");
        assert!(shows_other_clients("profile", &doc! { "profile": 0 }, &[]).is_none(), "turning it off");
        assert!(shows_other_clients("find", &doc! {}, &["mongodb:app.system.profile".into()]).is_some());
        assert!(shows_other_clients("find", &doc! {}, &["mongodb:app.users".into()]).is_none());
        assert!(shows_other_clients("getLog", &doc! { "getLog": "global" }, &[]).is_some());
    }
}
