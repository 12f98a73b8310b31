//! Lineage of masked fields through MongoDB commands: which paths of the documents a command
//! returns carry masked data ("taints"), or why the command must be refused for a masked role.
//!
//! The analysis is conservative: taints are only ever added (a path that was masked stays
//! masked after a stage that may have replaced its content), a field path copied or renamed
//! as a whole (`{e: "$email"}`, `$push: "$email"`, `$lookup ... as`) moves its mask to the new
//! path, and any computation over masked data (`$concat`, `$toUpper`, `$arrayElemAt`,
//! `$getField`, `$$ROOT` inside an operator, `let` variables...) is refused: the proxy cannot
//! mask what the server computed.

use bson::{Bson, Document};

/// A dotted path split into segments (`*` = any key).
pub type Path = Vec<String>;

/// A masked path in the current document shape and the index of its mask (in the caller's
/// table of masks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    /// Path relative to the document.
    pub path: Path,
    /// Mask index.
    pub mask: usize,
}

/// Why a command is refused: the mask whose data it would expose and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Mask index (the rule to name).
    pub mask: usize,
    /// Human-readable reason.
    pub why: String,
}

/// Inputs of the analysis besides the pipeline.
pub struct Ctx<'a> {
    /// Database of the command (`$lookup.from` is relative to it).
    pub db: &'a str,
    /// Taints of the documents of `db.coll`.
    pub taints_of: &'a dyn Fn(&str, &str) -> Vec<Taint>,
    /// Mask index to blame when the role is masked but no taint is involved (`$out`, JS).
    pub masked_role: Option<usize>,
}

const MAX_DEPTH: usize = 64;

/// Accumulators whose result is (an array of) the input values themselves.
const PASS_ACC: &[&str] = &["$push", "$addToSet", "$first", "$last", "$max", "$min"];

fn refuse(mask: usize, why: impl Into<String>) -> Refusal {
    Refusal { mask, why: why.into() }
}

fn segs(p: &str) -> Path {
    p.split('.').map(str::to_owned).collect()
}

fn prefixed(prefix: &[String], taints: Vec<Taint>) -> impl Iterator<Item = Taint> + '_ {
    taints.into_iter().map(move |t| Taint { path: prefix.iter().cloned().chain(t.path).collect(), mask: t.mask })
}

fn seg_eq(a: &str, b: &str) -> bool {
    a == b || a == "*" || b == "*"
}

/// An array position in a dotted path (`contacts.0.phone`).
fn is_position(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// How a field reference `r` relates to a taint `t`: `Some(rest)` when the referenced value
/// contains masked data at `rest` (empty: the value itself is masked). Array positions are
/// left out on both sides: `contacts.0.phone` is masked like `contacts.phone`.
fn relate(r: &[&str], t: &[String]) -> Option<Path> {
    let r: Vec<&str> = r.iter().copied().filter(|s| !is_position(s)).collect();
    let t: Vec<String> = t.iter().filter(|s| !is_position(s)).cloned().collect();
    let n = r.len().min(t.len());
    if !r.iter().zip(&t).take(n).all(|(a, b)| seg_eq(a, b)) {
        return None;
    }
    Some(if r.len() >= t.len() { Vec::new() } else { t[r.len()..].to_vec() })
}

/// Taints carried by the value of field reference `$path`.
fn ref_taints(path: &str, taints: &[Taint]) -> Vec<Taint> {
    let r: Vec<&str> = path.split('.').collect();
    taints.iter().filter_map(|t| relate(&r, &t.path).map(|path| Taint { path, mask: t.mask })).collect()
}

/// A string expression: `Some(taints)` when it is a field path or `$$ROOT`/`$$CURRENT`.
fn string_ref(s: &str, taints: &[Taint]) -> Option<Vec<Taint>> {
    for root in ["$$ROOT", "$$CURRENT"] {
        if let Some(rest) = s.strip_prefix(root) {
            return Some(match rest.strip_prefix('.') {
                Some(p) => ref_taints(p, taints),
                None if rest.is_empty() => taints.to_vec(),
                None => Vec::new(),
            });
        }
    }
    match s.strip_prefix('$') {
        Some(p) if !p.starts_with('$') && !p.is_empty() => Some(ref_taints(p, taints)),
        _ => None,
    }
}

/// The first masked datum `e` reads anywhere (deep), if any.
pub fn reads_taint(e: &Bson, taints: &[Taint], depth: usize) -> Option<usize> {
    let first = taints.first().map(|t| t.mask)?;
    if depth > MAX_DEPTH {
        return Some(first);
    }
    match e {
        Bson::String(s) => string_ref(s, taints).and_then(|t| t.first().map(|t| t.mask)),
        Bson::Array(a) => a.iter().find_map(|x| reads_taint(x, taints, depth + 1)),
        Bson::Document(d) => {
            if d.keys().any(|k| k == "$getField") {
                return Some(first); // `{$getField: "email"}` reads $$CURRENT implicitly
            }
            d.iter().filter(|(k, _)| *k != "$literal").find_map(|(_, v)| reads_taint(v, taints, depth + 1))
        }
        _ => None,
    }
}

/// Taints of the value an expression produces (relative to that value); refused when it
/// computes over masked data.
pub fn expr(e: &Bson, taints: &[Taint], depth: usize) -> Result<Vec<Taint>, Refusal> {
    if depth > MAX_DEPTH {
        return Err(refuse(taints.first().map_or(0, |t| t.mask), "expression nested too deeply"));
    }
    match e {
        Bson::String(s) => Ok(string_ref(s, taints).unwrap_or_default()),
        Bson::Array(a) => {
            let mut out = Vec::new();
            for x in a {
                out.extend(expr(x, taints, depth + 1)?);
            }
            Ok(out)
        }
        Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')) => {
            let op = d.keys().next().map(String::as_str).unwrap_or("");
            match reads_taint(e, taints, depth) {
                Some(m) => Err(refuse(m, format!("{op} computes over a masked field"))),
                None => Ok(Vec::new()),
            }
        }
        Bson::Document(d) => {
            let mut out = Vec::new();
            for (k, v) in d {
                out.extend(prefixed(&segs(k), expr(v, taints, depth + 1)?));
            }
            Ok(out)
        }
        _ => Ok(Vec::new()),
    }
}

/// `$project`, `$addFields`/`$set` and find projections: new fields take the taints of the
/// values they copy; existing taints stay.
pub fn projection(spec: &Document, taints: Vec<Taint>) -> Result<Vec<Taint>, Refusal> {
    let mut out = taints.clone();
    for (k, v) in spec {
        let key: Path = segs(k).into_iter().filter(|s| s != "$").collect();
        out.extend(prefixed(&key, expr(v, &taints, 1)?));
    }
    Ok(out)
}

fn accumulators(spec: &Document, skip: &str, taints: &[Taint], out: &mut Vec<Taint>) -> Result<(), Refusal> {
    for (k, v) in spec.iter().filter(|(k, _)| *k != skip) {
        let Bson::Document(acc) = v else {
            if let Some(m) = reads_taint(v, taints, 1) {
                return Err(refuse(m, format!("output {k} reads a masked field")));
            }
            continue;
        };
        let Some((op, arg)) = acc.iter().next() else { continue };
        if PASS_ACC.contains(&op.as_str()) {
            out.extend(prefixed(std::slice::from_ref(k), expr(arg, taints, 1)?));
        } else if let Some(m) = reads_taint(v, taints, 1) {
            return Err(refuse(m, format!("{op} computes over a masked field")));
        }
    }
    Ok(())
}

/// `from` of `$lookup`/`$graphLookup`/`$unionWith`: a collection name or `{db, coll}`.
fn foreign(v: Option<&Bson>, ctx: &Ctx<'_>) -> Vec<Taint> {
    match v {
        Some(Bson::String(c)) => (ctx.taints_of)(ctx.db, c),
        Some(Bson::Document(d)) => {
            let db = d.get_str("db").unwrap_or(ctx.db);
            (ctx.taints_of)(db, d.get_str("coll").unwrap_or(""))
        }
        _ => Vec::new(),
    }
}

/// Taints of the documents a pipeline returns, given those of its input.
pub fn pipeline(stages: &[Bson], mut taints: Vec<Taint>, ctx: &Ctx<'_>, depth: usize) -> Result<Vec<Taint>, Refusal> {
    let blame = |t: &[Taint]| t.first().map(|t| t.mask).or(ctx.masked_role).unwrap_or(0);
    if depth > 8 {
        return Err(refuse(blame(&taints), "sub-pipelines nested too deeply"));
    }
    for stage in stages {
        let Some((name, spec)) = stage.as_document().and_then(|d| d.iter().next()) else {
            return Err(refuse(blame(&taints), "malformed pipeline stage"));
        };
        let empty = Document::new();
        let sd = spec.as_document().unwrap_or(&empty);
        match name.as_str() {
            "$match" => filter(sd, &taints)?,
            "$redact" => filter_expr(spec, &taints, 1).map_err(|r| refuse(r.mask, format!("$redact: {}", r.why)))?,
            "$sort" | "$limit" | "$skip" | "$sample" | "$unset" | "$unwind" | "$count" | "$documents"
            | "$indexStats" | "$collStats" | "$planCacheStats" | "$listSessions" => {}
            "$project" | "$addFields" | "$set" => taints = projection(sd, taints)?,
            "$replaceRoot" | "$replaceWith" => {
                let e = if name == "$replaceRoot" { sd.get("newRoot").unwrap_or(&Bson::Null) } else { spec };
                let new = expr(e, &taints, 1)?;
                if let Some(t) = new.iter().find(|t| t.path.is_empty()) {
                    return Err(refuse(t.mask, format!("{name} makes a masked value the document")));
                }
                taints.extend(new);
            }
            "$group" => {
                let mut new = Vec::new();
                new.extend(prefixed(&["_id".into()], expr(sd.get("_id").unwrap_or(&Bson::Null), &taints, 1)?));
                accumulators(sd, "_id", &taints, &mut new)?;
                taints.extend(new);
            }
            "$bucket" | "$bucketAuto" => {
                if let Some(m) = sd.get("groupBy").and_then(|g| reads_taint(g, &taints, 1)) {
                    return Err(refuse(m, format!("{name} groups by a masked field")));
                }
                let mut new = Vec::new();
                accumulators(sd.get_document("output").unwrap_or(&empty), "", &taints, &mut new)?;
                taints.extend(new);
            }
            "$setWindowFields" => {
                let mut new = Vec::new();
                accumulators(sd.get_document("output").unwrap_or(&empty), "", &taints, &mut new)?;
                taints.extend(new);
            }
            "$sortByCount" => {
                let new = expr(spec, &taints, 1)?;
                taints.extend(prefixed(&["_id".into()], new));
            }
            "$facet" => {
                let mut new = Vec::new();
                for (k, sub) in sd {
                    let sub = sub.as_array().map(Vec::as_slice).unwrap_or(&[]);
                    new.extend(prefixed(std::slice::from_ref(k), pipeline(sub, taints.clone(), ctx, depth + 1)?));
                }
                taints.extend(new);
            }
            "$lookup" | "$graphLookup" => {
                if let Some(m) = sd.get("let").and_then(|l| reads_taint(l, &taints, 1)) {
                    return Err(refuse(m, format!("{name} passes a masked field to a sub-pipeline")));
                }
                let mut joined = foreign(sd.get("from"), ctx);
                filter(sd.get_document("restrictSearchWithMatch").unwrap_or(&empty), &joined)?;
                if let Ok(sub) = sd.get_array("pipeline") {
                    joined = pipeline(sub, joined, ctx, depth + 1)?;
                }
                let at = segs(sd.get_str("as").unwrap_or(""));
                taints.extend(prefixed(&at, joined));
            }
            "$unionWith" => {
                let (coll, sub) = match spec {
                    Bson::Document(d) => (d.get("coll"), d.get_array("pipeline").map(Vec::as_slice).unwrap_or(&[])),
                    other => (Some(other), &[][..]),
                };
                let other = pipeline(sub, foreign(coll, ctx), ctx, depth + 1)?;
                taints.extend(other);
            }
            "$out" | "$merge" => {
                if let Some(m) = taints.first().map(|t| t.mask).or(ctx.masked_role) {
                    return Err(refuse(m, format!("{name} is not allowed for a masked role")));
                }
            }
            "$changeStream" => taints = change_events(&taints),
            _ => {
                if let Some(m) = reads_taint(spec, &taints, 1) {
                    return Err(refuse(m, format!("{name} reads a masked field")));
                }
            }
        }
    }
    Ok(taints)
}

/// Where the fields of a collection's documents appear in change-stream events: the
/// documents (`fullDocument`, `fullDocumentBeforeChange`, `documentKey`) and the new values of
/// an update (`updateDescription.updatedFields`), whose keys may be nested (`{profile: {...}}`)
/// or flattened with array positions (`{"profile.phone": ...}`, `{"contacts.0": {...}}`,
/// `{"contacts.0.phone": ...}`; see the dotted segment forms of `splice`).
pub fn change_events(taints: &[Taint]) -> Vec<Taint> {
    let mut out = Vec::new();
    let mut add = |path: Path, mask: usize| out.push(Taint { path, mask });
    for t in taints {
        for top in ["fullDocument", "fullDocumentBeforeChange", "documentKey"] {
            add(std::iter::once(top.to_owned()).chain(t.path.iter().cloned()).collect(), t.mask);
        }
        let uf = || ["updateDescription".to_owned(), "updatedFields".to_owned()].into_iter();
        add(uf().chain(t.path.iter().cloned()).collect(), t.mask);
        add(uf().chain(std::iter::once(format!("{}.*", t.path.join(".")))).collect(), t.mask);
        for k in 1..t.path.len() {
            let head = format!("{}.#", t.path[..k].join("."));
            add(uf().chain(std::iter::once(head)).chain(t.path[k..].iter().cloned()).collect(), t.mask);
        }
    }
    out
}

/// Comparisons `$expr` may make of a masked field with constants (a query filter on the field
/// tests as much, and a comparison cannot fail on a value).
const COMPARE: &[&str] = &["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$cmp"];

/// Check every `$expr` of a query filter (find `filter`, `$match`, count / distinct /
/// findAndModify `query`, update and delete `q`...): an operator expression over a masked
/// field is refused as in `$project`, since the server's errors quote the values it fails on
/// (`{$toInt: "$email"}`: "Failed to parse number '...'"). A field path, and `$eq`-style
/// comparisons of field paths and constants (under `$and` / `$or` / `$not`), pass.
pub fn filter(f: &Document, taints: &[Taint]) -> Result<(), Refusal> {
    if taints.is_empty() {
        return Ok(());
    }
    filter_value(&Bson::Document(f.clone()), taints, 1)
}

fn filter_value(v: &Bson, taints: &[Taint], depth: usize) -> Result<(), Refusal> {
    let first = taints.first().map_or(0, |t| t.mask);
    if depth > MAX_DEPTH {
        return Err(refuse(first, "filter nested too deeply"));
    }
    match v {
        Bson::Document(d) => {
            for (k, v) in d {
                if k == "$expr" {
                    filter_expr(v, taints, depth + 1).map_err(|r| refuse(r.mask, format!("$expr: {}", r.why)))?;
                } else {
                    filter_value(v, taints, depth + 1)?;
                }
            }
            Ok(())
        }
        Bson::Array(a) => a.iter().try_for_each(|x| filter_value(x, taints, depth + 1)),
        _ => Ok(()),
    }
}

/// A constant of an `$in` list (not a field path or variable, whose value the list would hold).
fn string_ref_free(v: &Bson) -> bool {
    !matches!(v, Bson::String(s) if s.starts_with('$'))
}

fn filter_expr(e: &Bson, taints: &[Taint], depth: usize) -> Result<(), Refusal> {
    if let Some((op, arg)) = e.as_document().filter(|d| d.len() == 1).and_then(|d| d.iter().next()) {
        let args = match arg {
            Bson::Array(a) => a.as_slice(),
            other => std::slice::from_ref(other),
        };
        if matches!(op.as_str(), "$and" | "$or" | "$not") && depth <= MAX_DEPTH {
            return args.iter().try_for_each(|x| filter_expr(x, taints, depth + 1));
        }
        let scalar = |x: &Bson| !matches!(x, Bson::Document(_) | Bson::Array(_));
        if COMPARE.contains(&op.as_str()) && args.iter().all(scalar) {
            return Ok(());
        }
        // `{$in: ["$email", [constants]]}`: membership in a literal list.
        if let ("$in", [x, Bson::Array(list)]) = (op.as_str(), args) {
            if scalar(x) && list.iter().all(|v| scalar(v) && string_ref_free(v)) {
                return Ok(());
            }
        }
    }
    expr(e, taints, depth).map(|_| ())
}

/// Taints of the values `distinct` returns for `key`.
pub fn distinct(key: &str, taints: &[Taint]) -> Vec<Taint> {
    ref_taints(key, taints)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn t(p: &str) -> Taint {
        Taint { path: segs(p), mask: 0 }
    }

    fn run(stages: Vec<Document>) -> Result<Vec<String>, Refusal> {
        let taints_of = |_: &str, c: &str| if c == "users" { vec![t("email")] } else { Vec::new() };
        let ctx = Ctx { db: "app", taints_of: &taints_of, masked_role: Some(0) };
        let st: Vec<Bson> = stages.into_iter().map(Bson::Document).collect();
        let out = pipeline(&st, vec![t("email"), t("profile.phone")], &ctx, 0)?;
        Ok(out.into_iter().map(|t| t.path.join(".")).collect())
    }

    #[test]
    fn renames_follow_and_computations_refuse() {
        let r = run(vec![doc! { "$project": { "e": "$email", "p": "$profile", "n": "$name" } }]).unwrap();
        assert!(r.contains(&"e".into()) && r.contains(&"p.phone".into()) && !r.contains(&"n".into()), "{r:?}");
        let r = run(vec![doc! { "$group": { "_id": "$email", "all": { "$push": "$$ROOT" }, "n": { "$sum": 1 } } }])
            .unwrap();
        assert!(r.contains(&"_id".into()) && r.contains(&"all.email".into()), "{r:?}");
        for bad in [
            doc! { "$project": { "e": { "$toUpper": "$email" } } },
            doc! { "$addFields": { "e": { "$concat": ["x", "$profile.phone"] } } },
            doc! { "$project": { "e": { "$getField": "email" } } },
            doc! { "$replaceRoot": { "newRoot": { "$mergeObjects": ["$$ROOT", {}] } } },
            doc! { "$group": { "_id": null, "s": { "$sum": { "$strLenCP": "$email" } } } },
            doc! { "$out": "copy" },
            doc! { "$lookup": { "from": "x", "let": { "e": "$email" }, "pipeline": [], "as": "j" } },
        ] {
            assert!(run(vec![bad.clone()]).is_err(), "{bad}");
        }
        assert!(run(vec![doc! { "$project": { "e": { "$literal": "$email" } } }]).unwrap().len() == 2);
    }

    #[test]
    fn joins_facets_and_change_streams() {
        let r = run(vec![doc! { "$lookup": { "from": "users", "localField": "a", "foreignField": "b", "as": "j" } }])
            .unwrap();
        assert!(r.contains(&"j.email".into()), "{r:?}");
        let r = run(vec![doc! { "$facet": { "f": [{ "$project": { "x": "$email" } }] } }]).unwrap();
        assert!(r.contains(&"f.x".into()), "{r:?}");
        assert!(
            run(vec![doc! { "$facet": { "f": [{ "$project": { "x": { "$substr": ["$email", 0, 3] } } }] } }]).is_err()
        );
        let r = run(vec![doc! { "$changeStream": {} }]).unwrap();
        assert!(
            r.contains(&"fullDocument.email".into()) && r.contains(&"updateDescription.updatedFields.email.*".into())
        );
        assert_eq!(distinct("profile", &[t("profile.phone")])[0].path, segs("phone"));
        // Array positions are left out: they index the arrays the label's path crosses.
        assert!(distinct("contacts.0.phone", &[t("contacts.phone")])[0].path.is_empty());
        assert_eq!(distinct("contacts.1", &[t("contacts.phone")])[0].path, segs("phone"));
        assert!(distinct("contacts.0.kind", &[t("contacts.phone")]).is_empty());
        assert!(distinct("email", &[t("email")])[0].path.is_empty());
    }

    #[test]
    fn expr_in_filters_is_checked_like_a_projection() {
        let taints = [t("email"), t("contacts.phone")];
        let ok = |f: Document| filter(&f, &taints).is_ok();
        assert!(!ok(doc! { "$expr": { "$eq": [{ "$toInt": "$email" }, 1] } }));
        assert!(!ok(doc! { "$or": [{ "a": 1 }, { "$expr": { "$gt": [{ "$strLenCP": "$email" }, 3] } }] }));
        assert!(!ok(doc! { "$expr": { "$and": [{ "$toDate": "$contacts.0.phone" }] } }));
        assert!(ok(doc! { "$expr": { "$eq": ["$email", "x@y.z"] } }), "a comparison tests like {{email: ...}}");
        assert!(ok(doc! { "$expr": { "$toInt": "$age" } }));
        assert!(ok(doc! { "$expr": { "$in": ["$email", ["a@b.c", "d@e.f"]] } }));
        assert!(!ok(doc! { "$expr": { "$in": ["$email", [{ "$toUpper": "$email" }]] } }));
        assert!(!ok(doc! { "$expr": { "$in": ["x", "$contacts.phone"] } }));
        assert!(ok(doc! { "email": "x", "contacts.phone": { "$in": ["1"] } }));
        assert!(filter(&doc! { "$expr": { "$toInt": "$email" } }, &[]).is_ok(), "nothing masked");
        assert!(run(vec![doc! { "$match": { "$expr": { "$eq": [{ "$toInt": "$email" }, 1] } } }]).is_err());
        // After a rename the masked value lives under its new name.
        assert!(run(vec![doc! { "$project": { "e": "$email" } }, doc! { "$match": { "$expr": { "$toInt": "$e" } } }])
            .is_err());
        assert!(run(vec![doc! { "$match": { "$expr": { "$toInt": "$age" } } }]).is_ok());
    }
}
