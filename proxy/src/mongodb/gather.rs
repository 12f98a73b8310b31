//! Row caps and aggregations that pack documents into one result: a `limit` rule counts the
//! documents of a command's batches, so a pipeline that gathers many input documents into
//! arrays of one result document (`$group {all: {$push: "$$ROOT"}}`, `$facet`, `$lookup`)
//! would hand out every document under a cap of one. For a role whose command has a row cap,
//! such pipelines are refused (also in the pipelines of the views a command reads, and
//! `mapReduce`): cutting arrays inside result documents cannot be done reliably (an array may
//! be nested in computed values, `$concatArrays`-ed, re-shaped), refusing can.

use super::views::ViewDefs;
use bson::{Bson, Document};

/// Stages whose output always holds arrays of documents from other inputs.
const GATHERING_STAGES: &[&str] = &["$facet", "$lookup", "$graphLookup"];

/// Stages whose accumulators / window functions may gather input documents.
const ACCUMULATING_STAGES: &[&str] = &["$group", "$bucket", "$bucketAuto", "$setWindowFields"];

/// Accumulators (and window functions) that return many input values in one: arrays, or
/// merged documents.
const GATHERING_ACCUMULATORS: &[&str] = &[
    "$push",
    "$addToSet",
    "$topN",
    "$bottomN",
    "$firstN",
    "$lastN",
    "$maxN",
    "$minN",
    "$mergeObjects",
    "$accumulator",
];

/// Sub-pipeline nesting followed; deeper pipelines are refused (fail closed).
const MAX_DEPTH: usize = dgf_rules::mongodb::MAX_PIPELINE_DEPTH;

/// What in command `name` gathers documents into one result (a description for the refusal),
/// `None` when nothing does. `doc` is the command document (for an `explain`, the wrapped one).
/// `db` is the command's database.
pub fn command(name: &str, doc: &Document, db: &str) -> Option<String> {
    match name {
        "mapReduce" | "mapreduce" => Some("mapReduce (its reduce gathers documents)".into()),
        "aggregate" => doc.get_array("pipeline").ok().and_then(|p| pipeline(p, db, 0)),
        _ => None,
    }
}

/// What gathers documents in command `name` or in the pipelines of the views among its
/// `objects` (`mongodb:db.coll`, view sources included) that `views` (of database `db`) lists.
pub fn in_command(
    name: &str,
    doc: &Document,
    db: &str,
    objects: &[String],
    views: Option<&ViewDefs>,
) -> Option<String> {
    command(name, doc, db).or_else(|| {
        let views = views?;
        objects.iter().filter_map(|o| o.strip_prefix("mongodb:")?.strip_prefix(db)?.strip_prefix('.')).find_map(|c| {
            let v = views.get(c)?;
            pipeline(&v.pipeline, db, 0).map(|why| format!("view {db}.{c}: {why}"))
        })
    })
}

/// What in `pipeline` (run in database `db`) gathers documents into one result document. A
/// `$unionWith` of another database's collection is refused too: only the views of `db` are
/// listed, and that collection may be a view that gathers.
pub fn pipeline(stages: &[Bson], db: &str, depth: usize) -> Option<String> {
    if depth > MAX_DEPTH {
        return Some("sub-pipelines nested too deeply to check".into());
    }
    for stage in stages {
        let Bson::Document(d) = stage else { continue };
        for (k, v) in d {
            let k = k.as_str();
            if GATHERING_STAGES.contains(&k) {
                return Some(format!("{k} (it gathers documents into arrays)"));
            }
            if ACCUMULATING_STAGES.contains(&k) {
                if let Some(acc) = accumulator(v, 0) {
                    return Some(format!("{k} with {acc} (it gathers documents into one)"));
                }
            }
            if let ("$unionWith", Some(u)) = (k, v.as_document()) {
                let other = u.get_document("coll").ok().and_then(|c| c.get_str("db").ok()).filter(|d| *d != db);
                if let Some(other) = other {
                    return Some(format!("$unionWith of a collection of {other} (its views are not checked)"));
                }
                if let Some(why) = u.get_array("pipeline").ok().and_then(|p| pipeline(p, db, depth + 1)) {
                    return Some(why);
                }
            }
        }
    }
    None
}

/// The first gathering accumulator anywhere in a stage's specification (any depth: over-refusing
/// an expression operator of the same name inside `_id` is harmless).
fn accumulator(v: &Bson, depth: usize) -> Option<&'static str> {
    if depth > 64 {
        return Some("expressions nested too deeply to check");
    }
    match v {
        Bson::Document(d) => d.iter().find_map(|(k, v)| {
            GATHERING_ACCUMULATORS.iter().find(|a| **a == k.as_str()).copied().or_else(|| accumulator(v, depth + 1))
        }),
        Bson::Array(a) => a.iter().find_map(|v| accumulator(v, depth + 1)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{bson, doc};

    fn agg(stages: Vec<Bson>) -> Option<String> {
        command("aggregate", &doc! { "aggregate": "t", "pipeline": stages, "cursor": {} }, "app")
    }

    #[test]
    fn gathering_pipelines_are_found() {
        for stage in [
            bson!({ "$group": { "_id": null, "all": { "$push": "$$ROOT" } } }),
            bson!({ "$group": { "_id": "$g", "s": { "$addToSet": "$email" } } }),
            bson!({ "$group": { "_id": null, "t": { "$topN": { "n": 500, "sortBy": { "a": 1 }, "output": "$$ROOT" } } } }),
            bson!({ "$group": { "_id": null, "m": { "$mergeObjects": "$$ROOT" } } }),
            bson!({ "$bucket": { "groupBy": "$a", "boundaries": [0, 10], "output": { "d": { "$push": "$$ROOT" } } } }),
            bson!({ "$bucketAuto": { "groupBy": "$a", "buckets": 1, "output": { "d": { "$lastN": { "n": 9, "input": "$$ROOT" } } } } }),
            bson!({ "$setWindowFields": { "output": { "w": { "$push": "$$ROOT", "window": { "documents": ["unbounded", "unbounded"] } } } } }),
            bson!({ "$group": { "_id": null, "j": { "$accumulator": { "init": "f" } } } }),
            bson!({ "$facet": { "a": [{ "$match": {} }] } }),
            bson!({ "$lookup": { "from": "u", "localField": "a", "foreignField": "b", "as": "j" } }),
            bson!({ "$graphLookup": { "from": "u", "startWith": "$a", "connectFromField": "a", "connectToField": "b", "as": "g" } }),
            bson!({ "$unionWith": { "coll": "u", "pipeline": [{ "$group": { "_id": null, "x": { "$firstN": { "n": 3, "input": "$a" } } } }] } }),
            bson!({ "$unionWith": { "coll": { "db": "other", "coll": "v" }, "pipeline": [] } }),
        ] {
            assert!(agg(vec![bson!({ "$match": {} }), stage.clone()]).is_some(), "{stage}");
        }
        assert!(command("mapReduce", &doc! { "mapReduce": "t" }, "app").is_some());
    }

    #[test]
    fn other_pipelines_pass() {
        for stage in [
            bson!({ "$group": { "_id": "$g", "n": { "$sum": 1 }, "f": { "$first": "$$ROOT" }, "m": { "$max": "$a" } } }),
            bson!({ "$bucketAuto": { "groupBy": "$a", "buckets": 4 } }),
            bson!({ "$setWindowFields": { "output": { "r": { "$rank": {} } }, "sortBy": { "a": 1 } } }),
            bson!({ "$unionWith": "u" }),
            bson!({ "$unionWith": { "coll": { "db": "app", "coll": "u" }, "pipeline": [] } }),
            bson!({ "$unionWith": { "coll": "u", "pipeline": [{ "$project": { "a": 1 } }] } }),
            bson!({ "$project": { "a": { "$concatArrays": ["$x", "$y"] } } }),
            bson!({ "$unwind": "$a" }),
            bson!({ "$sortByCount": "$a" }),
        ] {
            assert_eq!(agg(vec![stage.clone()]), None, "{stage}");
        }
        assert_eq!(command("find", &doc! { "find": "t" }, "app"), None);
        // Too deep to check: refused.
        let mut p = bson!([{ "$project": { "a": 1 } }]);
        for _ in 0..20 {
            p = bson!([{ "$unionWith": { "coll": "u", "pipeline": p } }]);
        }
        assert!(pipeline(p.as_array().map(Vec::as_slice).unwrap_or_default(), "app", 0).is_some());
    }
}
