//! MongoDB commands for the policy engine: command classes (what `statements = [...]` in a
//! rule matches), a filter fingerprint with every value stripped (audit and caching), and the
//! pipeline facts masking needs (stages that copy data out or run server-side JavaScript).

use bson::{Bson, Document};
use std::fmt::Write;

/// Read commands.
pub const READ: &[&str] = &[
    "find",
    "aggregate",
    "count",
    "distinct",
    "getMore",
    "listCollections",
    "listIndexes",
    "dbStats",
    "collStats",
    "explain",
    "mapReduce",
    "geoNear",
    "dataSize",
];
/// Write commands.
pub const WRITE: &[&str] = &["insert", "update", "delete", "findAndModify", "bulkWrite"];
/// Data-definition commands.
pub const DDL: &[&str] = &[
    "create",
    "drop",
    "dropDatabase",
    "createIndexes",
    "dropIndexes",
    "collMod",
    "renameCollection",
    "convertToCapped",
    "cloneCollectionAsCapped",
    "compact",
    "reIndex",
];
/// Administrative commands.
pub const ADMIN: &[&str] = &[
    "createUser",
    "updateUser",
    "dropUser",
    "dropAllUsersFromDatabase",
    "grantRolesToUser",
    "revokeRolesFromUser",
    "createRole",
    "updateRole",
    "dropRole",
    "usersInfo",
    "rolesInfo",
    "shutdown",
    "fsync",
    "fsyncUnlock",
    "setParameter",
    "getParameter",
    "killOp",
    "currentOp",
    "serverStatus",
    "listDatabases",
    "getLog",
    "logRotate",
    "configureFailPoint",
    "setFeatureCompatibilityVersion",
    "replSetGetStatus",
    "replSetReconfig",
    "replSetStepDown",
    "killAllSessions",
    "killSessions",
    "top",
];
/// Session, transaction and cursor housekeeping.
pub const SESSION: &[&str] =
    &["commitTransaction", "abortTransaction", "endSessions", "startSession", "refreshSessions", "killCursors"];
/// Commands that run server-side JavaScript.
pub const SERVER_JS: &[&str] = &["mapReduce", "$where", "$function", "$accumulator"];

/// The kinds a rule can match for `command`: its lower-case name and its class
/// (`read`, `write`, `ddl`, `admin`, `session` or `unknown`). An aggregate with `$out` or
/// `$merge` is also a `write`. E.g. `["find", "read"]`, `["drop", "ddl"]`.
pub fn kinds(command: &str, doc: Option<&Document>) -> Vec<String> {
    let class = class_of(command);
    let mut out = vec![command.to_ascii_lowercase(), class.to_owned()];
    if command == "aggregate" && doc.is_some_and(|d| writes_out(pipeline(d))) {
        out.push("write".into());
    }
    out
}

/// The class of a command name (case-sensitive, as the wire carries it; `ismaster` aside).
pub fn class_of(command: &str) -> &'static str {
    if READ.contains(&command) {
        "read"
    } else if WRITE.contains(&command) {
        "write"
    } else if DDL.contains(&command) {
        "ddl"
    } else if ADMIN.contains(&command) {
        "admin"
    } else if SESSION.contains(&command) {
        "session"
    } else {
        "unknown"
    }
}

/// The `pipeline` of an aggregate (empty when absent).
pub fn pipeline(doc: &Document) -> &[Bson] {
    doc.get_array("pipeline").map(Vec::as_slice).unwrap_or(&[])
}

/// Stage names of a pipeline, including those nested in `$facet`, `$lookup`/`$unionWith`
/// sub-pipelines.
pub fn stages(pipeline: &[Bson]) -> Vec<String> {
    let mut out = Vec::new();
    for s in pipeline {
        let Bson::Document(d) = s else { continue };
        for (k, v) in d {
            out.push(k.clone());
            match (k.as_str(), v) {
                ("$facet", Bson::Document(f)) => {
                    for sub in f.values() {
                        if let Bson::Array(a) = sub {
                            out.extend(stages(a));
                        }
                    }
                }
                ("$lookup" | "$unionWith", Bson::Document(l)) => {
                    if let Ok(p) = l.get_array("pipeline") {
                        out.extend(stages(p));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Every namespace (`db.collection`) command `name` reads or writes besides its own target:
/// an aggregation's joins, unions and outputs ([`pipeline_namespaces`]), a view's source
/// (`create` / `collMod` with `viewOn`, and its pipeline), both sides of `renameCollection` and
/// `cloneCollectionAsCapped`, and `mapReduce`'s output. None when a pipeline nests too deeply
/// to follow (the caller fails closed).
pub fn referenced_namespaces(name: &str, db: &str, doc: &Document) -> Option<Vec<String>> {
    let full = |k: &str| doc.get_str(k).ok().map(str::to_owned);
    let local = |k: &str| doc.get_str(k).ok().map(|c| format!("{db}.{c}"));
    match name {
        "aggregate" => pipeline_namespaces(db, pipeline(doc)),
        "create" | "collMod" => {
            let mut out: Vec<String> = local("viewOn").into_iter().collect();
            out.extend(pipeline_namespaces(db, pipeline(doc))?);
            Some(out)
        }
        "renameCollection" => Some(full("renameCollection").into_iter().chain(full("to")).collect()),
        "cloneCollectionAsCapped" => {
            Some(local("cloneCollectionAsCapped").into_iter().chain(local("toCollection")).collect())
        }
        "mapReduce" => Some(match doc.get("out") {
            Some(Bson::String(c)) => vec![format!("{db}.{c}")],
            Some(Bson::Document(o)) => {
                let coll = ["replace", "merge", "reduce"].iter().find_map(|k| o.get_str(k).ok()).unwrap_or("*");
                vec![format!("{}.{coll}", o.get_str("db").unwrap_or(db))]
            }
            _ => Vec::new(),
        }),
        _ => Some(Vec::new()),
    }
}

/// Every namespace (`db.collection`) a pipeline reads or writes besides its own collection:
/// `$lookup` / `$graphLookup` `from`, `$unionWith`, `$out`, `$merge` `into`, also in `$facet`
/// and sub-pipelines. `db` is the command's database. None past [`MAX_PIPELINE_DEPTH`] levels
/// of sub-pipelines (the caller fails closed).
pub fn pipeline_namespaces(db: &str, pipeline: &[Bson]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    walk_namespaces(db, pipeline, 0, &mut out).then_some(out)
}

/// Sub-pipeline nesting followed by [`pipeline_namespaces`].
pub const MAX_PIPELINE_DEPTH: usize = 16;

fn walk_namespaces(db: &str, pipeline: &[Bson], depth: usize, out: &mut Vec<String>) -> bool {
    if depth > MAX_PIPELINE_DEPTH {
        return false;
    }
    let mut ok = true;
    // A collection name, or `{db, coll}`.
    let ns = |v: Option<&Bson>, out: &mut Vec<String>| match v {
        Some(Bson::String(c)) => out.push(format!("{db}.{c}")),
        Some(Bson::Document(d)) => {
            out.push(format!("{}.{}", d.get_str("db").unwrap_or(db), d.get_str("coll").unwrap_or("*")));
        }
        _ => {}
    };
    for stage in pipeline {
        let Bson::Document(d) = stage else { continue };
        for (k, v) in d {
            match (k.as_str(), v) {
                ("$facet", Bson::Document(f)) => {
                    for sub in f.values() {
                        if let Bson::Array(a) = sub {
                            ok &= walk_namespaces(db, a, depth + 1, out);
                        }
                    }
                }
                ("$lookup" | "$graphLookup", Bson::Document(l)) => {
                    ns(l.get("from"), out);
                    if let Ok(p) = l.get_array("pipeline") {
                        ok &= walk_namespaces(db, p, depth + 1, out);
                    }
                }
                ("$unionWith", Bson::Document(u)) => {
                    ns(u.get("coll"), out);
                    if let Ok(p) = u.get_array("pipeline") {
                        ok &= walk_namespaces(db, p, depth + 1, out);
                    }
                }
                ("$unionWith" | "$out", v) => ns(Some(v), out),
                ("$merge", Bson::Document(m)) => ns(m.get("into"), out),
                ("$merge", v) => ns(Some(v), out),
                _ => {}
            }
        }
    }
    ok
}

/// Whether the pipeline writes its result somewhere (`$out`, `$merge`).
pub fn writes_out(pipeline: &[Bson]) -> bool {
    stages(pipeline).iter().any(|s| s == "$out" || s == "$merge")
}

/// Whether a command runs server-side JavaScript anywhere (`$where`, `$function`,
/// `$accumulator`, mapReduce).
pub fn runs_javascript(command: &str, doc: &Document) -> bool {
    command == "mapReduce" || any_key(&Bson::Document(doc.clone()), &|k| SERVER_JS.contains(&k), 0)
}

fn any_key(v: &Bson, pred: &dyn Fn(&str) -> bool, depth: usize) -> bool {
    if depth > 100 {
        return true; // fail closed on absurd nesting
    }
    match v {
        Bson::Document(d) => d.iter().any(|(k, v)| pred(k) || any_key(v, pred, depth + 1)),
        Bson::Array(a) => a.iter().any(|v| any_key(v, pred, depth + 1)),
        _ => false,
    }
}

/// Fields that carry no shape (session plumbing) and are left out of fingerprints.
const PLUMBING: &[&str] = &[
    "lsid",
    "$clusterTime",
    "txnNumber",
    "$db",
    "autocommit",
    "startTransaction",
    "$readPreference",
    "readConcern",
    "writeConcern",
    "comment",
    "maxTimeMS",
];

/// A fingerprint of a command with every value stripped: keys and operators stay, scalars
/// become `?`, arrays keep one representative element, inserted documents and plumbing
/// (lsid, txnNumber, $clusterTime...) go. Two finds that differ only in values fingerprint
/// the same. E.g. `{find:"users",filter:{age:{$gt:?},email:?}}`.
pub fn fingerprint(doc: &Document) -> String {
    let mut out = String::new();
    out.push('{');
    let mut first = true;
    for (i, (k, v)) in doc.iter().enumerate() {
        if PLUMBING.contains(&k.as_str()) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push(':');
        if i == 0 {
            // The command's target (collection name) is shape, not data.
            match v {
                Bson::String(s) => {
                    let _ = write!(out, "{s:?}");
                }
                _ => out.push('?'),
            }
        } else if k == "documents" {
            out.push('?');
        } else {
            shape(v, &mut out, 0);
        }
    }
    out.push('}');
    out
}

fn shape(v: &Bson, out: &mut String, depth: usize) {
    if depth > 64 {
        out.push('…');
        return;
    }
    match v {
        Bson::Document(d) => {
            out.push('{');
            let mut keys: Vec<(&String, &Bson)> = d.iter().collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            for (i, (k, v)) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(k);
                out.push(':');
                shape(v, out, depth + 1);
            }
            out.push('}');
        }
        Bson::Array(a) => {
            out.push('[');
            if let Some(first) = a.iter().find(|x| matches!(x, Bson::Document(_) | Bson::Array(_))) {
                shape(first, out, depth + 1);
            } else if !a.is_empty() {
                out.push('?');
            }
            out.push(']');
        }
        _ => out.push('?'),
    }
}

#[cfg(test)]
mod namespace_tests {
    use super::*;
    use bson::bson;

    #[test]
    fn pipeline_namespaces_follow_every_stage_that_names_a_collection() {
        let p = vec![
            bson!({ "$lookup": { "from": "a", "localField": "x", "foreignField": "y", "as": "j" } }),
            bson!({ "$facet": { "f": [ { "$unionWith": { "coll": "b", "pipeline": [ { "$lookup": { "from": { "db": "o", "coll": "c" }, "pipeline": [], "as": "k" } } ] } } ] } }),
            bson!({ "$graphLookup": { "from": "d", "startWith": "$x", "connectFromField": "x", "connectToField": "y", "as": "g" } }),
            bson!({ "$unionWith": "e" }),
            bson!({ "$merge": { "into": { "db": "o2", "coll": "f" } } }),
        ];
        assert_eq!(pipeline_namespaces("app", &p).unwrap(), ["app.a", "app.b", "o.c", "app.d", "app.e", "o2.f"]);
        assert_eq!(pipeline_namespaces("app", &[bson!({ "$out": "g" })]).unwrap(), ["app.g"]);
        assert_eq!(pipeline_namespaces("app", &[bson!({ "$merge": "h" })]).unwrap(), ["app.h"]);
        // Absurd nesting: not followed (the caller fails closed).
        let mut deep = bson!({ "$match": {} });
        for _ in 0..20 {
            deep = bson!({ "$facet": { "f": [deep] } });
        }
        assert_eq!(pipeline_namespaces("app", &[deep]), None);
    }

    #[test]
    fn commands_that_name_other_collections() {
        use bson::doc;
        let r = |name: &str, d: bson::Document| referenced_namespaces(name, "app", &d).unwrap();
        assert_eq!(r("create", doc! { "create": "v", "viewOn": "payroll", "pipeline": [] }), ["app.payroll"]);
        assert_eq!(
            r("collMod", doc! { "collMod": "v", "viewOn": "p2", "pipeline": [{ "$unionWith": "p3" }] }),
            ["app.p2", "app.p3"]
        );
        assert_eq!(
            r("renameCollection", doc! { "renameCollection": "app.payroll", "to": "app.x" }),
            ["app.payroll", "app.x"]
        );
        assert_eq!(
            r("cloneCollectionAsCapped", doc! { "cloneCollectionAsCapped": "payroll", "toCollection": "c", "size": 1 }),
            ["app.payroll", "app.c"]
        );
        assert_eq!(r("mapReduce", doc! { "mapReduce": "u", "out": { "merge": "m", "db": "o" } }), ["o.m"]);
        assert_eq!(r("find", doc! { "find": "u" }), Vec::<String>::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn classes() {
        assert_eq!(kinds("find", None), vec!["find", "read"]);
        assert_eq!(kinds("drop", None), vec!["drop", "ddl"]);
        assert_eq!(kinds("findAndModify", None), vec!["findandmodify", "write"]);
        assert_eq!(kinds("createUser", None), vec!["createuser", "admin"]);
        assert_eq!(kinds("frobnicate", None), vec!["frobnicate", "unknown"]);
        let agg = doc! { "aggregate": "c", "pipeline": [{ "$match": {} }, { "$merge": { "into": "x" } }] };
        assert_eq!(kinds("aggregate", Some(&agg)), vec!["aggregate", "read", "write"]);
        for c in ["create", "dropDatabase", "createIndexes", "collMod", "renameCollection"] {
            assert_eq!(class_of(c), "ddl", "{c}");
        }
    }

    #[test]
    fn pipelines() {
        let p = doc! { "pipeline": [
            { "$facet": { "a": [{ "$project": { "e": "$email" } }], "b": [{ "$out": "copy" }] } },
            { "$lookup": { "from": "u", "pipeline": [{ "$addFields": { "x": 1 } }], "as": "j" } },
        ] };
        let s = stages(pipeline(&p));
        assert_eq!(s, vec!["$facet", "$project", "$out", "$lookup", "$addFields"]);
        assert!(writes_out(pipeline(&p)));
        let js = doc! { "find": "c", "filter": { "$or": [{ "$where": "this.a > 1" }] } };
        assert!(runs_javascript("find", &js));
        let js = doc! { "aggregate": "c", "pipeline": [{ "$group": { "_id": 1, "x": { "$accumulator": {} } } }] };
        assert!(runs_javascript("aggregate", &js));
        assert!(!runs_javascript("find", &doc! { "find": "c", "filter": { "a": "$where" } }));
    }

    #[test]
    fn fingerprints_strip_values() {
        let a = doc! { "find": "users", "filter": { "email": "a@b.c", "age": { "$gt": 30 } }, "lsid": { "id": 1 }, "$db": "app" };
        let b = doc! { "find": "users", "filter": { "age": { "$gt": 99 }, "email": "z@y.x" }, "$db": "app", "txnNumber": 4i64 };
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a), r#"{find:"users",filter:{age:{$gt:?},email:?}}"#);
        let i = doc! { "insert": "users", "documents": [{ "email": "secret@x.y" }], "ordered": true };
        let f = fingerprint(&i);
        assert!(!f.contains("secret"), "{f}");
        let ids = doc! { "find": "c", "filter": { "_id": { "$in": [1, 2, 3] } } };
        assert_eq!(fingerprint(&ids), r#"{find:"c",filter:{_id:{$in:[?]}}}"#);
    }
}
