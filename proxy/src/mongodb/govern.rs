//! The single governance hook of the MongoDB route: one decision per command before it is
//! forwarded (rules by command kind/class and collection, fail-closed masking lineage), the
//! masking of its replies (cursor batches, `findAndModify` `value`, `distinct` `values`,
//! change-stream events; getMore batches with the plan of the cursor's command, kept with the
//! cursor's pin: see `cursors`), the row cap of `limit` rules, metrics, and one audit record
//! per command.
//!
//! Masked values: strings go through the rule's mask function; values of any other type
//! (numbers, dates, subdocuments...) become the mask's text for `redact` and `fixed("...")`
//! and null for every other function (`email`, `partial`, `hash`, `null`).

use super::lineage::{self, Ctx, Refusal, Taint};
use bson::{Bson, Document, RawDocument};
use dgf_protocols::mongodb::inspect::CommandInfo;
use dgf_protocols::mongodb::msg::Sequence;
use dgf_protocols::mongodb::splice::{self, Replacement, Value};
use dgf_protocols::mongodb::MongoProtoError;
use dgf_rules::audit::{now_rfc3339, AuditEvent};
use dgf_rules::mask::MaskFn;
use dgf_rules::policy::{glob_match, FieldPattern};
use dgf_rules::{Action, Denial, FieldRef, MaskRule, Namespace, Policy, RoleView, Verdict};
use std::sync::Arc;
use std::time::Instant;

/// Where masked fields are in a command's reply.
#[derive(Default, Debug)]
pub struct MaskPlan {
    /// Reply paths (e.g. `cursor.firstBatch.email`) and their masks.
    pub paths: Vec<(Vec<String>, MaskFn)>,
}

impl MaskPlan {
    /// Whether replies pass untouched.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Mask one reply body; `None` when nothing changed.
    pub fn apply(&self, body: &[u8], max_depth: usize) -> Result<Option<Vec<u8>>, MongoProtoError> {
        let mut doc: Option<Vec<u8>> = None;
        for (path, f) in &self.paths {
            let p: Vec<&str> = path.iter().map(String::as_str).collect();
            let cur = doc.as_deref().unwrap_or(body);
            if let Some(d) = splice::replace_values(cur, &p, max_depth, &mut |v| mask_value(f, v))? {
                doc = Some(d);
            }
        }
        Ok(doc)
    }
}

fn mask_value(f: &MaskFn, v: Value<'_>) -> Option<Replacement> {
    Some(match v {
        Value::Str(s) => f.apply_str(s).map_or(Replacement::Null, Replacement::Str),
        Value::Other(0x0A) => return None, // already null
        Value::Other(_) => match f {
            MaskFn::Redact | MaskFn::Fixed(_) => f.apply_str("").map_or(Replacement::Null, Replacement::Str),
            _ => Replacement::Null,
        },
    })
}

/// The decision about one command, kept until its reply for the audit record.
pub struct Decision {
    /// Refusal (rules or masking lineage).
    pub deny: Option<Denial>,
    /// Reply masking.
    pub plan: Arc<MaskPlan>,
    /// Row cap (`limit` rules; for a getMore, what is left of its cursor's cap).
    pub limit: Option<u64>,
    /// The policy this decision was taken under.
    pub policy: Arc<Policy>,
    /// The user's rules under that policy (a reload that leaves them alike keeps cursors).
    pub view: Arc<RoleView>,
    /// Whether that policy masks or caps anything for this user (a getMore of a cursor opened
    /// under another policy cannot keep the old plan then: see `cursors::gate`).
    pub governs_results: bool,
    verdict: Verdict,
    mask_rules: Vec<usize>,
    kind: String,
    fingerprint: String,
    statement: Option<String>,
    objects: Vec<String>,
    database: String,
    started: Instant,
    /// Documents returned.
    pub rows: Option<u64>,
    /// Bytes of the reply the client received (after masking and any cap).
    pub bytes: Option<u64>,
    /// Error code of a failed reply.
    pub error: Option<String>,
}

/// Per-session governance state.
#[derive(Default)]
pub struct GovState {
    policy: Option<Arc<Policy>>,
    /// The roles `view` was built for: a client may authenticate again as another user.
    roles: Vec<String>,
    view: Option<Arc<RoleView>>,
}

/// The shared pieces a decision needs.
pub struct Env<'a> {
    /// Current policy.
    pub policy: &'a Arc<Policy>,
    /// Governance (audit, metrics).
    pub gov: &'a crate::governance::Governance,
    /// Route name.
    pub route: &'a str,
    /// User roles.
    pub roles: &'a [String],
    /// The views of the command's database, when the role's rules need them (`views`).
    pub views: Option<&'a super::views::ViewDefs>,
}

impl GovState {
    fn view(&mut self, env: &Env<'_>) -> Arc<RoleView> {
        let fresh = self.policy.as_ref().is_none_or(|p| !Arc::ptr_eq(p, env.policy)) || self.roles != env.roles;
        if fresh || self.view.is_none() {
            self.view = Some(env.policy.view(env.route, env.roles));
            self.policy = Some(env.policy.clone());
            self.roles = env.roles.to_vec();
        }
        self.view.clone().unwrap_or_else(|| env.policy.view(env.route, env.roles))
    }

    /// Whether this role's rules need the database's views: it masks something, some rule
    /// names collections (a view over them must not get around it), or it has a row cap (a
    /// view's pipeline may gather documents: `gather`).
    pub fn needs_views(&mut self, env: &Env<'_>) -> bool {
        if env.policy.rule_names().is_empty() {
            return false;
        }
        let view = self.view(env);
        view.masks_anything() || view.objects_matter() || view.limits_anything()
    }

    /// Decide about one command (its body and OP_MSG document sequences, e.g. `updates`).
    /// `None`: governance is off (no rules, guards or audit).
    pub fn decide(
        &mut self,
        env: &Env<'_>,
        cmd: &RawDocument,
        seqs: &[Sequence<'_>],
        info: &CommandInfo<'_>,
    ) -> Option<Decision> {
        if env.policy.rule_names().is_empty() && !env.gov.auditing() {
            return None;
        }
        let view = self.view(env);
        // An explain runs the query of the command it wraps: decided as that command.
        let explained = super::commands::explained(cmd, info);
        let (cmd, info) = explained.as_ref().map_or((cmd, info), |(c, i)| (*c, i));
        let mut doc = Document::try_from(cmd).unwrap_or_default();
        for s in seqs.iter().filter(|s| s.identifier != "documents") {
            let docs: Vec<Bson> = s
                .documents
                .iter()
                .map(|d| RawDocument::from_bytes(d).ok().and_then(|r| Document::try_from(r).ok()))
                .map(|d| d.map_or(Bson::Null, Bson::Document))
                .collect();
            doc.insert(s.identifier, docs);
        }
        let db = info.db.unwrap_or("admin");
        let mut kinds_owned = dgf_rules::mongodb::kinds(info.name, Some(&doc));
        if explained.is_some() {
            kinds_owned.push("explain".into());
        }
        let kinds: Vec<&str> = kinds_owned.iter().map(String::as_str).collect();
        let bulk = bulk_namespaces(info.name, &doc);
        let mut objects: Vec<String> = match info.collection {
            Some(c) => vec![format!("mongodb:{db}.{c}")],
            None if !bulk.is_empty() => bulk.iter().map(|ns| format!("mongodb:{ns}")).collect(),
            None => vec![format!("mongodb:{db}")],
        };
        // Collections the command joins, unions, writes, renames or views are its objects too.
        let mut unfollowed = false;
        match dgf_rules::mongodb::referenced_namespaces(info.name, db, &doc) {
            Some(ns) => objects.extend(ns.into_iter().map(|ns| format!("mongodb:{ns}"))),
            None => unfollowed = true,
        }
        // A view reads its sources: rules on them apply, to whole documents (a view renames
        // and computes fields).
        let mut view_sources: Vec<String> = Vec::new();
        for o in objects.iter().filter_map(|o| o.strip_prefix("mongodb:")) {
            let Some((d, c)) = o.split_once('.') else { continue };
            let Some(defs) = env.views.filter(|v| d == db && v.get(c).is_some()) else { continue };
            match defs.sources(d, c) {
                Some(s) => {
                    for ns in s {
                        if !view_sources.contains(&ns) {
                            view_sources.push(ns);
                        }
                    }
                }
                None => unfollowed = true,
            }
        }
        objects.extend(view_sources.iter().map(|ns| format!("mongodb:{ns}")));
        let object = info.collection.map(|c| format!("{db}.{c}"));
        let fields = read_fields(info.name, &doc);
        let mut refs: Vec<FieldRef<'_>> = match &object {
            Some(o) => match &fields {
                Some(f) => f.iter().map(|p| FieldRef { ns: Namespace::Mongo, object: o, field: Some(p) }).collect(),
                None => vec![FieldRef { ns: Namespace::Mongo, object: o, field: None }],
            },
            None => Vec::new(),
        };
        refs.extend(view_sources.iter().map(|o| FieldRef { ns: Namespace::Mongo, object: o, field: None }));
        let mut verdict = view.check(&Action { kinds: &kinds, objects: &objects, fields: &refs, ..Default::default() });
        if let (true, None, Some((id, rule))) = (unfollowed, &verdict.deny, view.first_object_deny("mongodb:")) {
            // Sub-pipelines or views too deep to follow may reach a denied collection: fail closed.
            let message =
                format!("dgf: permission denied: sub-pipelines or views nested too deeply to check (rule \"{rule}\")");
            verdict.hits.push(id);
            verdict.deny = Some(dgf_rules::Denial { id, rule, message });
        }
        let mut d = Decision {
            deny: verdict.deny.clone(),
            plan: Arc::new(MaskPlan::default()),
            limit: if info.get_more.is_some() { None } else { verdict.row_limit },
            policy: env.policy.clone(),
            view: view.clone(),
            governs_results: view.masks_anything() || verdict.row_limit.is_some(),
            verdict,
            mask_rules: Vec::new(),
            kind: dgf_rules::mongodb::class_of(if explained.is_some() { "explain" } else { info.name }).to_owned(),
            fingerprint: match (env.gov.auditing(), &explained) {
                (false, _) => String::new(),
                (true, None) => dgf_rules::mongodb::fingerprint(&doc),
                (true, Some(_)) => format!("{{explain:{}}}", dgf_rules::mongodb::fingerprint(&doc)),
            },
            statement: env.gov.include_literals().then(|| doc.to_string()),
            objects,
            database: db.to_owned(),
            started: Instant::now(),
            rows: None,
            bytes: None,
            error: None,
        };
        // A row cap counts documents: refuse what packs many into one (`gather`).
        if let (None, Some(_), Some(id)) = (&d.deny, d.limit, d.verdict.row_limit_rule) {
            if let Some(why) = super::gather::in_command(info.name, &doc, db, &d.objects, env.views) {
                let rule = env.policy.rule_names().get(id).cloned().unwrap_or_else(|| "limit".into());
                let message = format!("dgf: permission denied: {why}, under a row limit (rule \"{rule}\")");
                d.deny = Some(Denial { id, rule, message });
            }
        }
        // A getMore's plan and cap come from its cursor (`cursors::gate`).
        if d.deny.is_none() && info.get_more.is_none() && view.masks_anything() {
            match plan(&view, env, (db, &d.objects), info, &doc) {
                Ok((p, rules)) => {
                    d.plan = Arc::new(p);
                    d.mask_rules = rules;
                }
                Err(b) => {
                    let (rule, why) = *b;
                    let message = format!("dgf: permission denied: {why} (rule \"{}\")", rule.rule);
                    d.verdict.hits.push(rule.id);
                    d.deny = Some(Denial { id: rule.id, rule: rule.rule, message });
                }
            }
        }
        let masked = !d.plan.is_empty();
        let mut counted = d.verdict.clone();
        counted.deny = d.deny.clone();
        counted.hits.extend(d.mask_rules.iter().copied());
        env.gov.count(env.policy, env.route, &counted, masked);
        Some(d)
    }
}

/// The fields a command reads, when known (`None`: whole documents).
fn read_fields(name: &str, doc: &Document) -> Option<Vec<String>> {
    match name {
        "distinct" => Some(vec![doc.get_str("key").unwrap_or("").to_owned()]),
        "count" | "delete" | "insert" => Some(Vec::new()),
        "find" => {
            let p = doc.get_document("projection").ok()?;
            let plain = p.iter().all(|(_, v)| matches!(v, Bson::Int32(1) | Bson::Int64(1) | Bson::Boolean(true)));
            let mut f: Vec<String> = p.keys().cloned().collect();
            if !p.contains_key("_id") {
                f.push("_id".into());
            }
            (plain && !p.is_empty()).then_some(f)
        }
        _ => None,
    }
}

/// The role's enforced masks of one collection as taints; shadow masks are counted.
struct Masks<'a> {
    pats: Vec<(&'a FieldPattern, MaskRule)>,
    gov: &'a crate::governance::Governance,
    /// Views of the command's database: a view's documents carry what its pipeline makes of
    /// its source's taints.
    views: Option<(&'a str, &'a super::views::ViewDefs)>,
}

impl Masks<'_> {
    fn taints(&self, db: &str, coll: &str) -> Result<Vec<Taint>, Refused> {
        self.taints_at(db, coll, 0)
    }

    fn taints_at(&self, db: &str, coll: &str, depth: usize) -> Result<Vec<Taint>, Refused> {
        let mut own = self.labelled(db, coll)?;
        let Some(view) = self.views.filter(|(vdb, _)| *vdb == db).and_then(|(_, v)| v.get(coll)) else {
            return Ok(own);
        };
        let rule_of = |i: usize| self.pats.get(i).map(|(_, m)| m.clone());
        let blame = self.pats.iter().position(|(_, m)| !m.shadow);
        if depth >= super::views::MAX_CHAIN {
            let Some(m) = blame.and_then(rule_of) else { return Ok(own) };
            return Err(Box::new((m, format!("views over {db}.{coll} nested too deeply to check"))));
        }
        let err = std::cell::RefCell::new(None);
        let taints_of = |d: &str, c: &str| {
            self.taints_at(d, c, depth + 1).unwrap_or_else(|e| {
                err.borrow_mut().get_or_insert(e);
                Vec::new()
            })
        };
        let source = self.taints_at(db, &view.on, depth + 1)?;
        let ctx = Ctx { db, taints_of: &taints_of, masked_role: blame };
        let out = lineage::pipeline(&view.pipeline, source, &ctx, 0);
        if let Some(e) = err.into_inner() {
            return Err(e);
        }
        match out {
            Ok(t) => own.extend(t),
            Err(r) => {
                let Some(m) = rule_of(r.mask).or_else(|| blame.and_then(rule_of)) else { return Ok(own) };
                return Err(Box::new((m, format!("view {db}.{coll}: {}", r.why))));
            }
        }
        Ok(own)
    }

    /// Taints from labels on `db.coll` itself.
    fn labelled(&self, db: &str, coll: &str) -> Result<Vec<Taint>, Refused> {
        let object = format!("{db}.{coll}");
        let mut out = Vec::new();
        for (i, (p, m)) in self.pats.iter().enumerate() {
            if !p.matches_object(Namespace::Mongo, &object) {
                continue;
            }
            if m.shadow {
                self.gov.shadow_mask(&m.rule);
                continue;
            }
            let field = p.field.as_deref().unwrap_or("*");
            let path: Vec<String> = field.split('.').map(str::to_owned).collect();
            if path.iter().any(|s| s != "*" && (s.contains('*') || s.contains('?'))) {
                let why = format!("label pattern {object}.{field} cannot be applied to documents");
                return Err(Box::new((m.clone(), why)));
            }
            out.push(Taint { path, mask: i });
        }
        Ok(out)
    }

    fn db_masked(&self, db: &str) -> Option<usize> {
        self.pats
            .iter()
            .position(|(p, m)| !m.shadow && glob_match(p.object.split('.').next().unwrap_or("*"), db, false))
    }
}

/// A refusal by masking: the rule and why.
type Refused = Box<(MaskRule, String)>;

type Planned = Result<(MaskPlan, Vec<usize>), Refused>;

/// Masking plan (or refusal) for a command of a role with mask rules.
fn plan(
    view: &RoleView,
    env: &Env<'_>,
    (db, objects): (&str, &[String]),
    info: &CommandInfo<'_>,
    doc: &Document,
) -> Planned {
    let masks = Masks { pats: view.mask_patterns(Namespace::Mongo), gov: env.gov, views: env.views.map(|v| (db, v)) };
    let enforced = masks.pats.iter().position(|(_, m)| !m.shadow);
    let Some(any) = enforced else { return Ok((MaskPlan::default(), Vec::new())) };
    let rule_of = |i: usize| masks.pats.get(i).map(|(_, m)| m.clone()).unwrap_or_else(|| masks.pats[any].1.clone());
    let fail = |r: Refusal| Box::new((rule_of(r.mask), r.why));
    if dgf_rules::mongodb::runs_javascript(info.name, doc) {
        return Err(Box::new((rule_of(any), "server-side JavaScript is not allowed for a masked role".into())));
    }
    if let Some(why) = super::commands::shows_other_clients(info.name, doc, objects) {
        return Err(Box::new((rule_of(any), why.into())));
    }
    let coll = info.collection.unwrap_or("");
    let base = if coll.is_empty() { Vec::new() } else { masks.taints(db, coll)? };
    let taints_err = std::cell::RefCell::new(None);
    let taints_of = |d: &str, c: &str| {
        masks.taints(d, c).unwrap_or_else(|e| {
            taints_err.borrow_mut().get_or_insert(e);
            Vec::new()
        })
    };
    let ctx = Ctx { db, taints_of: &taints_of, masked_role: Some(any) };
    // `$expr` in the command's filters (`filter`, `query`, `q`...); pipelines follow lineage,
    // inserted documents are data.
    if !matches!(info.name, "aggregate" | "create" | "collMod" | "bulkWrite" | "insert") {
        lineage::filter(doc, &base).map_err(fail)?;
    }
    let (prefixes, taints): (&[&[&str]], Vec<Taint>) = match info.name {
        "find" => {
            let t = match doc.get_document("projection") {
                Ok(p) => lineage::projection(p, base).map_err(fail)?,
                Err(_) => base,
            };
            (&[&["cursor", "firstBatch"], &["cursor", "nextBatch"]], t)
        }
        "aggregate" => {
            if coll.is_empty() && info.change_stream {
                if let Some(i) = masks.db_masked(db) {
                    return Err(Box::new((rule_of(i), "a database-wide change stream of masked data".into())));
                }
            }
            let t = lineage::pipeline(dgf_rules::mongodb::pipeline(doc), base, &ctx, 0).map_err(fail)?;
            (&[&["cursor", "firstBatch"], &["cursor", "nextBatch"]], t)
        }
        "findAndModify" | "findandmodify" => {
            check_update(doc.get("update"), &base).map_err(fail)?;
            let t = match doc.get_document("fields") {
                Ok(p) => lineage::projection(p, base).map_err(fail)?,
                Err(_) => base,
            };
            (&[&["value"]], t)
        }
        "update" => {
            for u in doc.get_array("updates").map(Vec::as_slice).unwrap_or(&[]) {
                let u = u.as_document().and_then(|u| u.get("u"));
                check_update(u, &base).map_err(fail)?;
            }
            (&[], Vec::new())
        }
        "bulkWrite" => {
            // MongoDB 8's client bulk write: each op names its namespace by index in `nsInfo`.
            let ns = bulk_namespaces(info.name, doc);
            for op in doc.get_array("ops").map(Vec::as_slice).unwrap_or(&[]) {
                let Some(op) = op.as_document() else { continue };
                let i = ["update", "delete"].iter().find_map(|k| op.get(*k));
                let Some(i) = i.and_then(|i| i.as_i32().map(i64::from).or(i.as_i64())) else { continue };
                let target = usize::try_from(i).ok().and_then(|i| ns.get(i));
                let (d, c) = target.and_then(|n| n.split_once('.')).unwrap_or((db, ""));
                let taints = masks.taints(d, c)?;
                lineage::filter(op.get_document("filter").unwrap_or(&Document::new()), &taints).map_err(fail)?;
                check_update(op.get("updateMods"), &taints).map_err(fail)?;
            }
            (&[], Vec::new())
        }
        "distinct" => (&[&["values"]], lineage::distinct(doc.get_str("key").unwrap_or(""), &base)),
        "create" | "collMod" if doc.contains_key("viewOn") => {
            let on = doc.get_str("viewOn").unwrap_or("");
            let src = masks.taints(db, on)?;
            let p = doc.get_array("pipeline").map(Vec::as_slice).unwrap_or(&[]);
            lineage::pipeline(p, src.clone(), &ctx, 0).map_err(fail)?;
            if let Some(t) = src.first() {
                return Err(Box::new((
                    rule_of(t.mask),
                    "a view over masked data is not allowed for a masked role".into(),
                )));
            }
            (&[], Vec::new())
        }
        "mapReduce" | "geoNear" if !base.is_empty() => {
            return Err(Box::new((rule_of(base[0].mask), format!("{} on masked data", info.name))));
        }
        _ if dgf_rules::mongodb::class_of(info.name) == "unknown" && !base.is_empty() => {
            return Err(Box::new((rule_of(base[0].mask), format!("unknown command {} on masked data", info.name))));
        }
        _ => (&[], Vec::new()),
    };
    if let Some(e) = taints_err.into_inner() {
        return Err(e);
    }
    let mut out = MaskPlan::default();
    let mut rules = Vec::new();
    for t in &taints {
        let m = rule_of(t.mask);
        if !rules.contains(&m.id) {
            rules.push(m.id);
        }
        for pre in prefixes {
            let path: Vec<String> = pre.iter().map(|s| (*s).to_owned()).chain(t.path.iter().cloned()).collect();
            if !out.paths.iter().any(|(p, _)| *p == path) {
                out.paths.push((path, m.func.clone()));
            }
        }
    }
    if out.paths.is_empty() {
        rules.clear();
    }
    Ok((out, rules))
}

/// The namespaces (`db.collection`) of a client `bulkWrite`'s `nsInfo`, in order.
fn bulk_namespaces(name: &str, doc: &Document) -> Vec<String> {
    if name != "bulkWrite" {
        return Vec::new();
    }
    let infos = doc.get_array("nsInfo").map(Vec::as_slice).unwrap_or(&[]);
    infos.iter().map(|n| n.as_document().and_then(|n| n.get_str("ns").ok()).unwrap_or("").to_owned()).collect()
}

/// Updates that copy masked values elsewhere (pipeline updates reading them, `$rename`).
fn check_update(u: Option<&Bson>, taints: &[Taint]) -> Result<(), Refusal> {
    match u {
        Some(Bson::Array(stages)) => {
            for s in stages {
                if let Some(m) = lineage::reads_taint(s, taints, 1) {
                    return Err(Refusal { mask: m, why: "an update pipeline reads a masked field".into() });
                }
            }
            Ok(())
        }
        Some(Bson::Document(d)) => {
            let Ok(r) = d.get_document("$rename") else { return Ok(()) };
            for k in r.keys() {
                let field = Bson::String(format!("${k}"));
                if let Some(m) = lineage::reads_taint(&field, taints, 1) {
                    return Err(Refusal { mask: m, why: "$rename of a masked field".into() });
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Documents returned (or written) and the error code of a reply.
pub fn outcome(body: &RawDocument) -> (Option<u64>, Option<String>) {
    let ok = body.get("ok").ok().flatten().and_then(|v| v.as_f64().or(v.as_i32().map(f64::from)));
    if ok != Some(1.0) {
        let code = body.get_i32("code").map(|c| c.to_string()).unwrap_or_else(|_| "?".into());
        return (Some(0), Some(code));
    }
    let len = |a: Option<&bson::RawArray>| a.map(|a| a.into_iter().count() as u64);
    let rows = if let Ok(c) = body.get_document("cursor") {
        len(c.get_array("firstBatch").ok().or(c.get_array("nextBatch").ok()))
    } else if let Ok(v) = body.get_array("values") {
        len(Some(v))
    } else if let Ok(Some(v)) = body.get("value") {
        Some(u64::from(v.as_null().is_none()))
    } else {
        body.get_i32("n").ok().map(|n| n.max(0) as u64)
    };
    (rows, None)
}

/// Write the audit record of a command (no-op without an audit sink).
pub fn audit(env: &Env<'_>, d: &Decision, client: &str, user: &str) {
    if !env.gov.auditing() {
        return;
    }
    let names = env.policy.rule_names();
    let v = &d.verdict;
    let rules: Vec<String> = v
        .hits
        .iter()
        .chain(&v.shadow)
        .chain(&d.mask_rules)
        .filter_map(|&i| names.get(i).map(|n| n.to_string()))
        .collect();
    let mut shown = v.clone();
    shown.deny = d.deny.clone();
    let ev = AuditEvent {
        time: now_rfc3339(),
        protocol: "mongodb".into(),
        route: env.route.to_owned(),
        client: client.to_owned(),
        user: user.to_owned(),
        roles: env.roles.to_vec(),
        database: d.database.clone(),
        kind: d.kind.clone(),
        fingerprint: d.fingerprint.clone(),
        statement: d.statement.clone(),
        objects: d.objects.clone(),
        decision: crate::governance::decision(&shown, !d.plan.is_empty()).to_owned(),
        rules,
        rows: d.rows,
        bytes: d.bytes,
        duration_us: Some(d.started.elapsed().as_micros() as u64),
        error: d.error.clone(),
        ..AuditEvent::default()
    };
    if !env.gov.record(ev) {
        tracing::error!("mongodb audit record lost");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, Document};
    use dgf_protocols::mongodb::inspect;

    const POLICY: &str = r#"
[[labels]]
name = "pii"
match = ["mongodb:app.users.email", "mongodb:app.users.contacts.phone", "mongodb:app.users.profile.ssn"]

[[rules]]
name = "mask pii"
roles = ["analyst"]
action = "mask"
labels = ["pii"]
with = "redact"

[[rules]]
name = "keep out of payroll"
roles = ["auditor"]
action = "deny"
tables = ["mongodb:app.payroll"]

[[rules]]
name = "cap reads"
roles = ["capped"]
action = "limit"
statements = ["read"]
max_rows = 3
"#;

    const SECRETS: &[&str] = &["s3cr3t", "555-", "123-45"];

    fn decide_for(role: &str, cmd: Document) -> Decision {
        let cfg = dgf_config::parse_str(POLICY, "t.toml", &|_| None).expect("config");
        let policy = Arc::new(Policy::from_config(&cfg).expect("policy"));
        let gov = crate::governance::Governance::start(&cfg, &prometheus::Registry::new()).expect("governance");
        let roles = vec![role.to_owned()];
        let env = Env { policy: &policy, gov: &gov, route: "docs", roles: &roles, views: None };
        let bytes = cmd.to_vec().unwrap();
        let raw = RawDocument::from_bytes(&bytes).unwrap();
        let info = inspect::command(raw).unwrap();
        GovState::default().decide(&env, raw, &[], &info).expect("governance is on")
    }

    /// A client may authenticate again on the same connection as another user: the session's
    /// cached policy view must follow the new roles (both ways).
    #[test]
    fn one_session_state_follows_a_change_of_user() {
        let cfg = dgf_config::parse_str(POLICY, "t.toml", &|_| None).expect("config");
        let policy = Arc::new(Policy::from_config(&cfg).expect("policy"));
        let gov = crate::governance::Governance::start(&cfg, &prometheus::Registry::new()).expect("governance");
        let bytes = doc! { "find": "users", "filter": {}, "$db": "app" }.to_vec().unwrap();
        let raw = RawDocument::from_bytes(&bytes).unwrap();
        let info = inspect::command(raw).unwrap();
        let mut state = GovState::default();
        let mut masks_for = |roles: &[String]| {
            let env = Env { policy: &policy, gov: &gov, route: "docs", roles, views: None };
            !state.decide(&env, raw, &[], &info).expect("governance is on").plan.is_empty()
        };
        assert!(!masks_for(&["clerk".to_owned()]));
        assert!(masks_for(&["analyst".to_owned()]), "the analyst got the previous user's view");
        assert!(!masks_for(&[]));
    }

    /// A getMore reply carrying one change event of each kind, with every way an update can
    /// spell a masked field (nested, dotted, by array position, whole array, whole subdocument).
    fn events_reply() -> Vec<u8> {
        let token = doc! { "_data": "8263" };
        let ns = doc! { "db": "app", "coll": "users" };
        doc! {
            "cursor": {
                "nextBatch": [
                    { "_id": token.clone(), "operationType": "insert", "ns": ns.clone(), "documentKey": { "_id": 1 },
                      "fullDocument": { "_id": 1, "name": "alice", "email": "s3cr3t@a.com",
                                        "contacts": [{ "kind": "home", "phone": "555-01" }], "profile": { "ssn": "123-45", "city": "Oslo" } } },
                    { "_id": token.clone(), "operationType": "update", "ns": ns.clone(), "documentKey": { "_id": 1 },
                      "updateDescription": {
                          "updatedFields": { "email": "s3cr3t2@a.com", "profile.ssn": "123-45-2", "contacts.0.phone": "555-02",
                                             "contacts.1": { "kind": "work", "phone": "555-03" }, "name": "alicia",
                                             "profile": { "ssn": "123-45-3", "city": "Bergen" } },
                          "removedFields": ["age"], "truncatedArrays": [] },
                      "fullDocument": { "_id": 1, "email": "s3cr3t2@a.com", "contacts": [{ "phone": "555-02" }, { "phone": "555-03" }] },
                      "fullDocumentBeforeChange": { "_id": 1, "email": "s3cr3t@a.com", "profile": { "ssn": "123-45" } } },
                    { "_id": token.clone(), "operationType": "update", "ns": ns.clone(), "documentKey": { "_id": 1 },
                      "updateDescription": { "updatedFields": { "contacts": [{ "kind": "x", "phone": "555-04" }] }, "removedFields": [] } },
                    { "_id": token.clone(), "operationType": "replace", "ns": ns.clone(), "documentKey": { "_id": 1 },
                      "fullDocument": { "_id": 1, "email": "s3cr3t3@a.com", "profile": { "ssn": 123456 } } },
                    { "_id": token, "operationType": "delete", "ns": ns, "documentKey": { "_id": 1 } },
                ],
                "id": 42i64, "ns": "app.users",
            },
            "ok": 1.0,
        }
        .to_vec()
        .unwrap()
    }

    fn leaks(d: &Document) -> Vec<&'static str> {
        let s = d.to_string();
        SECRETS.iter().copied().filter(|k| s.contains(k)).collect()
    }

    #[test]
    fn change_events_in_next_batches_are_masked() {
        let d = decide_for(
            "analyst",
            doc! { "aggregate": "users", "pipeline": [{ "$changeStream": { "fullDocument": "updateLookup" } }], "cursor": {}, "$db": "app" },
        );
        assert!(d.deny.is_none() && !d.plan.is_empty());
        let reply = events_reply();
        assert!(!leaks(&Document::from_reader(&reply[..]).unwrap()).is_empty(), "the fixture carries secrets");
        let out = d.plan.apply(&reply, 200).unwrap().expect("masked");
        let m = Document::from_reader(&out[..]).unwrap();
        assert!(leaks(&m).is_empty(), "{m}");
        let batch = m.get_document("cursor").unwrap().get_array("nextBatch").unwrap();
        let ev = |i: usize| batch[i].as_document().unwrap();
        // Clear fields stay as they were.
        assert_eq!(ev(0).get_document("fullDocument").unwrap().get_str("name").unwrap(), "alice");
        assert_eq!(
            ev(0).get_document("fullDocument").unwrap().get_document("profile").unwrap().get_str("city").unwrap(),
            "Oslo"
        );
        assert_eq!(ev(0).get_document("fullDocument").unwrap().get_str("email").unwrap(), "[REDACTED]");
        let uf = ev(1).get_document("updateDescription").unwrap().get_document("updatedFields").unwrap();
        assert_eq!(uf.get_str("name").unwrap(), "alicia");
        assert_eq!(uf.get_str("contacts.0.phone").unwrap(), "[REDACTED]");
        assert_eq!(uf.get_document("contacts.1").unwrap().get_str("kind").unwrap(), "work");
        assert_eq!(uf.get_document("profile").unwrap().get_str("city").unwrap(), "Bergen");
        assert_eq!(ev(1).get_document("updateDescription").unwrap().get_array("removedFields").unwrap().len(), 1);
        // Non-string values become the mask's text for redact.
        assert_eq!(
            ev(3).get_document("fullDocument").unwrap().get_document("profile").unwrap().get_str("ssn").unwrap(),
            "[REDACTED]"
        );
        assert_eq!(ev(4).get_str("operationType").unwrap(), "delete");
        assert_eq!(m.get_document("cursor").unwrap().get_i64("id").unwrap(), 42);
        // An admin gets no plan; a database-wide stream of a masked database is refused.
        assert!(decide_for(
            "admin",
            doc! { "aggregate": "users", "pipeline": [{ "$changeStream": {} }], "$db": "app" }
        )
        .plan
        .is_empty());
        let d = decide_for("analyst", doc! { "aggregate": 1, "pipeline": [{ "$changeStream": {} }], "$db": "app" });
        assert!(d.deny.is_some());
    }

    /// Every client reaches the server as the route's user: another client's in-progress
    /// command, its filter values included, must not reach a masked role.
    #[test]
    fn current_op_is_refused_for_masked_roles() {
        for cmd in [
            doc! { "currentOp": 1, "$all": true, "$db": "admin" },
            doc! { "aggregate": 1, "pipeline": [{ "$currentOp": { "allUsers": true } }], "cursor": {}, "$db": "admin" },
            doc! { "aggregate": 1, "pipeline": [{ "$queryStats": {} }], "cursor": {}, "$db": "admin" },
        ] {
            let d = decide_for("analyst", cmd.clone());
            assert!(d.deny.as_ref().is_some_and(|x| x.message.contains("other clients")), "{cmd}: {:?}", d.deny);
            assert!(decide_for("admin", cmd).deny.is_none());
        }
    }

    /// An explain runs its command's query (`executionStats` counts what a filter matches): it
    /// is decided, and audited, as that command.
    #[test]
    fn explain_is_decided_as_the_command_it_wraps() {
        let explain = |inner: Document| doc! { "explain": inner, "verbosity": "executionStats", "$db": "app" };
        let d = decide_for("auditor", explain(doc! { "find": "payroll", "filter": { "salary": { "$gte": 1 } } }));
        assert!(d.deny.as_ref().is_some_and(|x| &*x.rule == "keep out of payroll"), "{:?}", d.deny);
        assert_eq!(d.objects, vec!["mongodb:app.payroll".to_owned()]);
        let union = doc! { "aggregate": "users", "pipeline": [{ "$unionWith": "payroll" }], "cursor": {} };
        assert!(decide_for("auditor", explain(union)).deny.is_some());
        assert!(decide_for("auditor", explain(doc! { "find": "users" })).deny.is_none());
        let toint = doc! { "find": "users", "filter": { "$expr": { "$eq": [{ "$toInt": "$email" }, 1] } } };
        assert!(decide_for("analyst", explain(toint.clone())).deny.is_some());
        let mut direct = toint;
        direct.insert("$db", "app");
        assert!(decide_for("analyst", direct).deny.is_some());
        let d = decide_for(
            "analyst",
            explain(doc! { "aggregate": "users", "pipeline": [{ "$project": { "x": { "$toUpper": "$email" } } }] }),
        );
        assert!(d.deny.is_some());
    }

    /// The profiler's output holds other clients' commands with their literals.
    #[test]
    fn profiling_is_refused_for_masked_roles() {
        for cmd in [
            doc! { "profile": 2, "$db": "app" },
            doc! { "find": "system.profile", "filter": {}, "$db": "app" },
            doc! { "aggregate": "system.profile", "pipeline": [], "cursor": {}, "$db": "app" },
            doc! { "aggregate": "users", "pipeline": [{ "$unionWith": "system.profile" }], "cursor": {}, "$db": "app" },
            doc! { "explain": { "find": "system.profile" }, "$db": "app" },
        ] {
            let d = decide_for("analyst", cmd.clone());
            assert!(d.deny.as_ref().is_some_and(|x| x.message.contains("other clients")), "{cmd}: {:?}", d.deny);
            assert!(decide_for("admin", cmd).deny.is_none());
        }
        assert!(decide_for("analyst", doc! { "profile": -1, "$db": "app" }).deny.is_none());
    }

    #[test]
    fn bulk_write_updates_are_checked_per_namespace() {
        let bulk = |mods: Bson| {
            doc! { "bulkWrite": 1, "ops": [{ "insert": 0, "document": { "a": 1 } }, { "update": 1, "filter": {}, "updateMods": mods, "multi": true }],
            "nsInfo": [{ "ns": "app.other" }, { "ns": "app.users" }], "$db": "admin" }
        };
        let d = decide_for("analyst", bulk(bson::bson!([{ "$set": { "copy": "$email" } }])));
        assert!(
            d.deny.as_ref().is_some_and(|x| x.message.contains("update pipeline")),
            "{:?}",
            d.deny.map(|x| x.message)
        );
        let d = decide_for("analyst", bulk(bson::bson!({ "$rename": { "email": "copy" } })));
        assert!(d.deny.is_some());
        let d = decide_for("analyst", bulk(bson::bson!({ "$set": { "name": "x" } })));
        assert!(d.deny.is_none());
        assert_eq!(d.objects, vec!["mongodb:app.other".to_owned(), "mongodb:app.users".to_owned()]);
    }

    #[test]
    fn limits_and_find_and_modify() {
        let d = decide_for("capped", doc! { "find": "users", "filter": {}, "$db": "app" });
        assert_eq!(d.limit, Some(3));
        let d = decide_for("capped", doc! { "insert": "users", "documents": [], "$db": "app" });
        assert_eq!(d.limit, None, "writes are not read statements");
        let d = decide_for("capped", doc! { "getMore": 5i64, "collection": "users", "$db": "app" });
        assert_eq!(d.limit, None, "a getMore takes its cursor's remaining cap");
        let d = decide_for(
            "analyst",
            doc! { "findAndModify": "users", "query": {}, "update": { "$set": { "a": 1 } }, "$db": "app" },
        );
        let reply = doc! { "lastErrorObject": { "n": 1, "updatedExisting": true },
        "value": { "_id": 1, "email": "s3cr3t@a.com", "contacts": [{ "phone": "555-01" }] }, "ok": 1.0 };
        let out = d.plan.apply(&reply.to_vec().unwrap(), 200).unwrap().expect("masked");
        let m = Document::from_reader(&out[..]).unwrap();
        assert!(leaks(&m).is_empty(), "{m}");
    }
}
