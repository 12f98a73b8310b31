//! Zero-copy inspection of commands and replies: command name, `$db`, collection, session and
//! transaction fields, cursor ids; and builders for Mongo-native error replies.

use super::MongoProtoError as E;
use bson::{RawBsonRef, RawDocument};

/// What the proxy needs to know about one command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandInfo<'a> {
    /// Command name (the first key), as sent.
    pub name: &'a str,
    /// `$db`.
    pub db: Option<&'a str>,
    /// Collection: the first key's value when it is a string (`find: "users"`), or
    /// `collection` for getMore.
    pub collection: Option<&'a str>,
    /// Raw bytes of the `lsid` document.
    pub lsid: Option<&'a [u8]>,
    /// `txnNumber`.
    pub txn_number: Option<i64>,
    /// `startTransaction: true`.
    pub start_transaction: bool,
    /// `autocommit` was given (only inside transactions).
    pub autocommit: bool,
    /// The cursor id of a getMore.
    pub get_more: Option<i64>,
    /// Cursor ids of killCursors.
    pub kill_cursors: Vec<i64>,
    /// An aggregate whose first stage is `$changeStream`.
    pub change_stream: bool,
}

fn as_i64(v: RawBsonRef<'_>) -> Option<i64> {
    match v {
        RawBsonRef::Int64(i) => Some(i),
        RawBsonRef::Int32(i) => Some(i.into()),
        RawBsonRef::Double(d) if d.fract() == 0.0 => Some(d as i64),
        _ => None,
    }
}

/// Inspect a command document.
pub fn command(doc: &RawDocument) -> Result<CommandInfo<'_>, E> {
    let bad = |_| E::Bson("command document");
    let mut it = doc.iter();
    let (name, first) = match it.next() {
        Some(r) => r.map_err(bad)?,
        None => return Err(E::Malformed("empty command document")),
    };
    let name = name.as_str();
    let mut info = CommandInfo {
        name,
        db: None,
        collection: first.as_str(),
        lsid: None,
        txn_number: None,
        start_transaction: false,
        autocommit: false,
        get_more: None,
        kill_cursors: Vec::new(),
        change_stream: false,
    };
    if name == "getMore" {
        info.get_more = as_i64(first);
    }
    for r in it {
        let (k, v) = r.map_err(bad)?;
        match k.as_str() {
            "$db" => info.db = v.as_str(),
            "lsid" => info.lsid = v.as_document().map(|d| d.as_bytes()),
            "txnNumber" => info.txn_number = as_i64(v),
            "startTransaction" => info.start_transaction = v.as_bool() == Some(true),
            "autocommit" => info.autocommit = true,
            "collection" if name == "getMore" => info.collection = v.as_str(),
            "cursors" if name == "killCursors" => {
                if let Some(a) = v.as_array() {
                    info.kill_cursors = a.into_iter().filter_map(|x| x.ok().and_then(as_i64)).collect();
                }
            }
            "pipeline" if name == "aggregate" => {
                info.change_stream = v
                    .as_array()
                    .and_then(|a| a.into_iter().next())
                    .and_then(|s| s.ok())
                    .and_then(|s| s.as_document())
                    .is_some_and(|s| s.get("$changeStream").ok().flatten().is_some());
            }
            _ => {}
        }
    }
    Ok(info)
}

/// The first field name that appears twice in one document of a command, as a dotted path
/// (`find`, `updates.0.u`), searched at every depth except inside the top-level `documents`
/// (inserted data). Parsers disagree on which copy wins (the bson crate and Python dicts keep
/// the last, the server's own BSON lookups the first), so a proxy that checks one copy while
/// the server runs the other is bypassed: such a command must be refused.
pub fn duplicate_key(doc: &RawDocument) -> Option<String> {
    dup_in(doc, "", 0)
}

fn dup_in(doc: &RawDocument, at: &str, depth: usize) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    let path = |k: &str| if at.is_empty() { k.to_owned() } else { format!("{at}.{k}") };
    for (k, v) in doc.iter().flatten() {
        let k = k.as_str();
        if !seen.insert(k) {
            return Some(path(k));
        }
        if depth == 0 && k == "documents" {
            continue;
        }
        if matches!(v, RawBsonRef::Document(_) | RawBsonRef::Array(_)) {
            if let Some(found) = dup_in_value(v, &path(k), depth + 1) {
                return Some(found);
            }
        }
    }
    None
}

fn dup_in_value(v: RawBsonRef<'_>, at: &str, depth: usize) -> Option<String> {
    match v {
        RawBsonRef::Document(d) => dup_in(d, at, depth),
        // Array keys are positions: only their elements are searched.
        RawBsonRef::Array(a) => {
            let nested = |x: &RawBsonRef<'_>| matches!(x, RawBsonRef::Document(_) | RawBsonRef::Array(_));
            let mut items = a.into_iter().flatten().enumerate().filter(|(_, x)| nested(x));
            items.find_map(|(i, x)| dup_in_value(x, &format!("{at}.{i}"), depth + 1))
        }
        _ => None,
    }
}

/// What the proxy needs to know about a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyInfo {
    /// `ok` is 1.
    pub ok: bool,
    /// `cursor.id`, when the reply carries a cursor.
    pub cursor_id: Option<i64>,
    /// `code` of a failed reply.
    pub code: Option<i64>,
}

impl ReplyInfo {
    /// The server is not (or no longer) the replica set's primary, or is shutting down: its
    /// connections should not be reused (NotWritablePrimary, NotPrimaryNoSecondaryOk,
    /// NotPrimaryOrSecondary, PrimarySteppedDown, InterruptedDueToReplStateChange,
    /// ShutdownInProgress, InterruptedAtShutdown).
    pub fn not_primary(&self) -> bool {
        !self.ok && matches!(self.code, Some(10107 | 13435 | 13436 | 189 | 11602 | 91 | 11600))
    }
}

/// Inspect a reply document.
pub fn reply(doc: &RawDocument) -> ReplyInfo {
    let ok = doc.get("ok").ok().flatten().and_then(|v| match v {
        RawBsonRef::Double(d) => Some(d == 1.0),
        other => as_i64(other).map(|i| i == 1),
    });
    let cursor_id = doc
        .get("cursor")
        .ok()
        .flatten()
        .and_then(|c| c.as_document())
        .and_then(|c| c.get("id").ok().flatten())
        .and_then(as_i64);
    let ok = ok.unwrap_or(false);
    let code = if ok { None } else { doc.get("code").ok().flatten().and_then(as_i64) };
    ReplyInfo { ok, cursor_id, code }
}

/// `{ok: 0, errmsg, code, codeName}` as BSON bytes.
pub fn error_reply(code: i32, code_name: &str, errmsg: &str) -> Vec<u8> {
    let d = bson::doc! { "ok": 0.0, "errmsg": errmsg, "code": code, "codeName": code_name };
    d.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn raw(d: bson::Document) -> Vec<u8> {
        d.to_vec().unwrap()
    }

    #[test]
    fn find_in_transaction() {
        let b = raw(
            doc! { "find": "users", "filter": {"a": 1}, "lsid": {"id": 1}, "txnNumber": 3i64, "startTransaction": true, "autocommit": false, "$db": "app" },
        );
        let i = command(RawDocument::from_bytes(&b).unwrap()).unwrap();
        assert_eq!((i.name, i.collection, i.db, i.txn_number), ("find", Some("users"), Some("app"), Some(3)));
        assert!(i.start_transaction && i.autocommit && i.lsid.is_some());
    }

    #[test]
    fn cursors() {
        let b = raw(doc! { "getMore": 77i64, "collection": "c", "$db": "d" });
        let i = command(RawDocument::from_bytes(&b).unwrap()).unwrap();
        assert_eq!((i.get_more, i.collection), (Some(77), Some("c")));
        let b = raw(doc! { "killCursors": "c", "cursors": [5i64, 6i64], "$db": "d" });
        assert_eq!(command(RawDocument::from_bytes(&b).unwrap()).unwrap().kill_cursors, vec![5, 6]);
        let b = raw(doc! { "aggregate": 1, "pipeline": [{"$changeStream": {}}], "$db": "d" });
        assert!(command(RawDocument::from_bytes(&b).unwrap()).unwrap().change_stream);
        let r = raw(doc! { "cursor": { "id": 9i64, "ns": "d.c", "firstBatch": [] }, "ok": 1.0 });
        assert_eq!(reply(RawDocument::from_bytes(&r).unwrap()), ReplyInfo { ok: true, cursor_id: Some(9), code: None });
        let r = error_reply(13, "Unauthorized", "no");
        let info = reply(RawDocument::from_bytes(&r).unwrap());
        assert_eq!(info, ReplyInfo { ok: false, cursor_id: None, code: Some(13) });
        assert!(!info.not_primary());
        for code in [10107, 13435, 189, 11602, 91] {
            let r = error_reply(code, "NotWritablePrimary", "not primary");
            assert!(reply(RawDocument::from_bytes(&r).unwrap()).not_primary(), "{code}");
        }
        let r = raw(doc! { "ok": 1.0, "code": 10107 });
        assert!(!reply(RawDocument::from_bytes(&r).unwrap()).not_primary(), "an ok reply");
    }
    /// Bytes of a document made of the given raw elements (type byte, key, value bytes).
    fn raw_elements(elems: &[(u8, &str, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, k, v) in elems {
            body.push(*t);
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v);
        }
        let mut out = ((body.len() + 5) as i32).to_le_bytes().to_vec();
        out.extend(body);
        out.push(0);
        out
    }

    fn bstr(s: &str) -> Vec<u8> {
        let mut v = ((s.len() + 1) as i32).to_le_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        v
    }

    #[test]
    fn duplicate_keys_are_found_at_any_depth() {
        let top = raw_elements(&[(2, "find", bstr("orders")), (2, "find", bstr("users")), (2, "$db", bstr("app"))]);
        assert_eq!(duplicate_key(RawDocument::from_bytes(&top).unwrap()).as_deref(), Some("find"));
        let inner = raw_elements(&[(2, "u", bstr("a")), (2, "u", bstr("b"))]);
        let arr = raw_elements(&[(3, "0", inner.clone())]);
        let nested = raw_elements(&[(2, "update", bstr("users")), (4, "updates", arr)]);
        assert_eq!(duplicate_key(RawDocument::from_bytes(&nested).unwrap()).as_deref(), Some("updates.0.u"));
        // Inserted documents are data; a sane command has none.
        let ins = raw_elements(&[(2, "insert", bstr("users")), (4, "documents", raw_elements(&[(3, "0", inner)]))]);
        assert_eq!(duplicate_key(RawDocument::from_bytes(&ins).unwrap()), None);
        let ok =
            raw(doc! { "find": "users", "filter": { "a": { "b": 1 }, "c": [{ "b": 1 }, { "b": 2 }] }, "$db": "app" });
        assert_eq!(duplicate_key(RawDocument::from_bytes(&ok).unwrap()), None);
    }
}
