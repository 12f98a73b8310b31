//! SQL statements against the policy: guards, rules, fail-closed masking checks, and the
//! lineage half of a result's mask plan (the catalog half lives with the protocol session).

use super::{Action, Denial, FieldRef, Flags, MaskRule, Namespace, RoleView, Verdict};
use std::sync::Arc;

use crate::sql::{
    Analysis, ColumnSource, CopyDirection, DdlKind, OutputColumn, StatementInfo, StatementKind, TableRef,
};

/// The decision for one query string (all its statements).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlVerdict {
    /// Rules, guards and fail-closed checks.
    pub verdict: Verdict,
    /// Main statement kind (first class of the first statement) for audit and metrics.
    pub kind: &'static str,
    /// Objects touched (qualified; `*.t` when written without a schema).
    pub objects: Vec<String>,
    /// Results may carry masked data: run them through the masking layer.
    pub needs_masking: bool,
    /// A statement changes the schema (catalog caches must be refreshed).
    pub ddl: bool,
}

/// A cached verdict and the analysis it was computed from.
pub(crate) type CachedVerdict = (Arc<Analysis>, Arc<SqlVerdict>);

/// Verdicts cached per role view; cleared when it grows past this.
const MAX_CACHED_VERDICTS: usize = 8192;

/// [`check_sql`] memoised per role view and statement shape: the analysis of a shape is shared
/// (it comes from the analyser's cache), so its address identifies the shape.
pub fn check_sql_cached(view: &RoleView, a: &Arc<Analysis>) -> Arc<SqlVerdict> {
    let key = Arc::as_ptr(a) as usize;
    if let Ok(m) = view.verdicts.read() {
        if let Some((_, v)) = m.get(&key) {
            return v.clone();
        }
    }
    let v = Arc::new(check_sql(view, a));
    if let Ok(mut m) = view.verdicts.write() {
        if m.len() >= MAX_CACHED_VERDICTS {
            m.clear();
        }
        m.insert(key, (a.clone(), v.clone()));
    }
    v
}

/// `schema.table`, or `*.table` when the statement did not name a schema.
pub fn qualify(t: &TableRef) -> String {
    match &t.schema {
        Some(s) => format!("{s}.{}", t.name),
        None => format!("*.{}", t.name),
    }
}

fn source_ref(s: &ColumnSource) -> Option<(String, Option<String>)> {
    match s {
        ColumnSource::Column { schema, table, column } => Some((
            qualify(&TableRef { schema: schema.clone(), name: table.clone(), write: false }),
            Some(column.clone()),
        )),
        ColumnSource::AllColumnsOf { schema, table } => {
            Some((qualify(&TableRef { schema: schema.clone(), name: table.clone(), write: false }), None))
        }
        ColumnSource::Opaque => None,
    }
}

/// Check every statement of an analysed query string.
pub fn check_sql(view: &RoleView, a: &Analysis) -> SqlVerdict {
    let mut out = SqlVerdict {
        kind: a.statements.first().and_then(|s| s.classes().first().copied()).unwrap_or("empty"),
        ..SqlVerdict::default()
    };
    let multi = a.is_multi_statement();
    for st in &a.statements {
        let v = check_statement(view, st, multi, &mut out);
        out.verdict.merge(v);
    }
    if let Some(err) = &a.parse_error {
        if view.parse_error_denies() {
            let d = Denial {
                id: usize::MAX,
                rule: "on_parse_error".into(),
                message: format!(
                    "dgf: statement refused: it cannot be analysed ({err}); set server.on_parse_error = \"allow\" to let such statements through"
                ),
            };
            out.verdict.deny.get_or_insert(d);
        } else if let Some(m) = view.masks.first() {
            fail_closed(&mut out.verdict, m.id, &m.name, m.shadow, "the statement cannot be analysed");
        }
    }
    out
}

fn check_statement(view: &RoleView, st: &StatementInfo, multi: bool, out: &mut SqlVerdict) -> Verdict {
    let kinds = st.classes();
    let objects: Vec<String> = st.tables.iter().map(qualify).collect();
    let refs: Vec<(String, Option<String>)> = st
        .outputs
        .iter()
        .flat_map(|o| o.sources.iter())
        .chain(st.written_sources.iter())
        .filter_map(source_ref)
        .collect();
    let fields: Vec<FieldRef<'_>> =
        refs.iter().map(|(o, c)| FieldRef { ns: Namespace::Sql, object: o, field: c.as_deref() }).collect();
    let flags = Flags {
        update_without_where: st.kind == StatementKind::Update && !st.has_where,
        delete_without_where: st.kind == StatementKind::Delete && !st.has_where,
        multi_statement: multi,
        copy_program: matches!(st.kind, StatementKind::Copy { to_program: true, .. }) || kinds.contains(&"program"),
        set_role: matches!(st.kind, StatementKind::Set { role_change: true }),
    };
    let action = Action { kinds: &kinds, objects: &objects, fields: &fields, functions: &st.functions, flags };
    let mut v = view.check(&action);
    gathering_under_a_limit(view, st, &mut v);
    if kinds.contains(&"ddl") {
        out.ddl = true;
    }
    if view.masks_anything() {
        masking_checks(view, st, &objects, &mut v, out);
    }
    for o in objects {
        if !out.objects.contains(&o) {
            out.objects.push(o);
        }
    }
    v
}

/// Aggregates that gather many rows into one value: a row cap counts rows, not what they carry.
/// `array` is the `ARRAY(SELECT ...)` constructor (`ARRAY[...]` is not a call).
const GATHERING: &[&str] = &[
    "array",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "xmlagg",
    "group_concat",
    "json_arrayagg",
    "json_objectagg",
];

/// Under an enforced `limit` rule, refuse a statement that packs rows into one value
/// (`SELECT array_agg(t) FROM t` returns every row as one): the cap would let all of them out.
fn gathering_under_a_limit(view: &RoleView, st: &StatementInfo, v: &mut Verdict) {
    let Some(id) = v.row_limit_rule.filter(|_| v.deny.is_none()) else { return };
    let last = |f: &str| f.rsplit('.').next().unwrap_or(f).to_owned();
    let Some(f) = st.functions.iter().map(|f| last(f)).find(|f| GATHERING.contains(&f.as_str())) else { return };
    let Some(rule) = view.rules.iter().find(|r| r.id == id) else { return };
    v.hits.push(id);
    v.deny = Some(Denial {
        id,
        rule: rule.name.clone(),
        message: format!(
            "dgf: permission denied: {f}() gathers rows into one value, under a row limit (rule \"{}\")",
            rule.name
        ),
    });
}

/// Fail closed where masking cannot follow the data.
fn masking_checks(view: &RoleView, st: &StatementInfo, objects: &[String], v: &mut Verdict, out: &mut SqlVerdict) {
    if st.kind == StatementKind::Call {
        // A routine that may run at all (trusted, see guards.trusted_functions) is trusted with
        // what it computes, not with handing out labelled columns as they are: its result sets
        // go through the masking layer, which masks every column the server names as a
        // labelled one (MySQL column definitions carry org_table / org_name).
        out.needs_masking = true;
    }
    let masked: Option<MaskRule> = objects.iter().find_map(|o| view.mask_for_object(Namespace::Sql, o));
    let any = || view.masks.first().map(|m| (m.id, m.name.clone(), m.shadow));
    let untraceable = matches!(st.kind, StatementKind::Execute | StatementKind::Prepare)
        || matches!(&st.kind, StatementKind::Other(k) if k == "fetch" || k == "move" || k == "do");
    if untraceable {
        if let Some((id, name, shadow)) = any() {
            fail_closed(
                v,
                id,
                &name,
                shadow,
                "its results cannot be traced to their columns (SQL-level PREPARE / EXECUTE / FETCH, DO)",
            );
        }
        return;
    }
    // Every session behind dgf shares the route's upstream user, so these show the statements
    // of other dgf clients (literals included) or sampled column values.
    let log = objects.iter().map(String::as_str).chain(st.functions.iter().map(String::as_str)).find(|o| {
        let o = o.to_ascii_lowercase();
        let last = o.rsplit('.').next().unwrap_or(&o);
        STATEMENT_LOGS.iter().any(|l| if l.contains('.') { o == *l } else { last == *l })
    });
    if let (Some(log), Some((id, name, shadow))) = (log, any()) {
        let why = format!("{log} shows other sessions' statements or column values, which dgf cannot mask");
        fail_closed(v, id, &name, shadow, &why);
        return;
    }
    let copies_masked = st.written_sources.iter().any(|s| match source_ref(s) {
        Some((o, c)) => view.mask_for(&FieldRef { ns: Namespace::Sql, object: &o, field: c.as_deref() }).is_some(),
        None => masked.is_some(),
    });
    let Some(m) = masked.or_else(|| {
        // Copies of labelled data need no masked table in FROM to be caught (`SET @v := ...`).
        copies_masked
            .then(|| any().map(|(id, rule, shadow)| MaskRule { id, rule, func: crate::mask::MaskFn::Null, shadow }))?
    }) else {
        return;
    };
    if copies_masked {
        fail_closed(v, m.id, &m.rule, m.shadow, "it would copy masked data where masking cannot follow it");
    }
    if matches!(st.kind, StatementKind::Ddl(DdlKind::Alter | DdlKind::Create)) {
        // ALTER TABLE ... ADD c AS (masked) (generated columns), column defaults, CREATE
        // TRIGGER / INDEX expressions: new places the masked values reach, under names no label
        // covers.
        fail_closed(v, m.id, &m.rule, m.shadow, "schema changes to a table with masked columns can copy them");
    }
    if matches!(st.kind, StatementKind::Copy { direction: CopyDirection::To, .. }) {
        fail_closed(v, m.id, &m.rule, m.shadow, "COPY ... TO of masked data is not supported; use SELECT");
    }
    if st.outputs.iter().any(OutputColumn::is_opaque) {
        fail_closed(v, m.id, &m.rule, m.shadow, "a result column cannot be traced to its source columns");
    }
    if !st.outputs.is_empty() {
        out.needs_masking = true;
    }
}

/// Server views and functions that show the statement texts of every session of the server
/// user, or sampled column values (lower case; matched by the last name part, or in full when
/// written with a schema).
const STATEMENT_LOGS: &[&str] = &[
    // Postgres
    "pg_stat_activity",
    "pg_stat_get_activity",
    "pg_stat_statements",
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    // Statements and cursors of the server connection, which dgf's pool shares between clients.
    "pg_prepared_statements",
    "pg_cursors",
    "pg_stat_get_backend_activity",
    // MySQL / MariaDB
    "processlist",
    "innodb_trx",
    "innodb_locks",
    "column_stats",
    "general_log",
    "slow_log",
    "performance_schema.threads",
    "events_statements_current",
    "events_statements_history",
    "events_statements_history_long",
    "events_statements_summary_by_digest",
    "prepared_statements_instances",
];

pub(super) fn fail_closed(v: &mut Verdict, id: usize, rule: &str, shadow: bool, why: &str) {
    if shadow {
        if !v.shadow.contains(&id) {
            v.shadow.push(id);
        }
        return;
    }
    if v.deny.is_none() {
        v.hits.push(id);
        v.deny = Some(Denial {
            id,
            rule: rule.into(),
            message: format!("dgf: permission denied: masked data: {why} (rule \"{rule}\")"),
        });
    }
}

/// The sources of each of `ncols` result columns, and whether the column is in a wildcard
/// run. Positions are matched to the analysis around wildcards (`*` expands to an unknown number
/// of columns): columns before the first wildcard and after the last one map one to one, the
/// rest get the union of everything in between.
fn output_groups(st: &StatementInfo, ncols: usize) -> Vec<(Vec<&ColumnSource>, bool)> {
    let outs = &st.outputs;
    fn union(cols: &[OutputColumn]) -> Vec<&ColumnSource> {
        cols.iter().flat_map(|o| o.sources.iter()).collect()
    }
    fn one(o: &OutputColumn) -> (Vec<&ColumnSource>, bool) {
        (o.sources.iter().collect(), false)
    }
    match outs.iter().position(|o| o.wildcard) {
        None if outs.len() == ncols => outs.iter().map(one).collect(),
        None => vec![(union(outs), false); ncols],
        Some(first) => {
            let last = outs.iter().rposition(|o| o.wildcard).unwrap_or(first);
            let tail = outs.len() - last - 1;
            if first + tail > ncols {
                vec![(union(outs), true); ncols]
            } else {
                let mut g: Vec<_> = outs[..first].iter().map(one).collect();
                let mid = union(&outs[first..=last]);
                g.extend(std::iter::repeat_n((mid, true), ncols - first - tail));
                g.extend(outs[last + 1..].iter().map(one));
                g
            }
        }
    }
}

/// Lineage half of the mask plan: for each of `ncols` result columns, the mask its sources call
/// for (see [`output_groups`] for how positions meet wildcards). Over-reports, never
/// under-reports.
pub fn sql_output_masks(view: &RoleView, st: &StatementInfo, ncols: usize) -> Vec<Option<MaskRule>> {
    let fallback = || st.tables.iter().map(qualify).find_map(|o| view.mask_for_object(Namespace::Sql, &o));
    output_groups(st, ncols)
        .into_iter()
        .map(|(srcs, _)| {
            srcs.into_iter().find_map(|s| match source_ref(s) {
                Some((o, c)) => view.mask_for(&FieldRef { ns: Namespace::Sql, object: &o, field: c.as_deref() }),
                None => fallback(),
            })
        })
        .collect()
}

/// A table a `*` reads: (schema if written, name).
pub type StarTable<'a> = (Option<&'a str>, &'a str);

/// For each of `ncols` result columns: when it is one of the columns a `*` (or `t.*`) of base
/// tables expands to, and nothing else, those tables as (schema if written, name); else None.
/// Such a column is exactly the base column the server reports for it (MySQL's `org_table` /
/// `org_name`), so that report can decide its mask instead of the union of the whole `*`.
pub fn sql_output_star_tables(st: &StatementInfo, ncols: usize) -> Vec<Option<Vec<StarTable<'_>>>> {
    output_groups(st, ncols)
        .into_iter()
        .map(|(srcs, star)| {
            let tables: Option<Vec<_>> = srcs
                .iter()
                .map(|s| match s {
                    ColumnSource::AllColumnsOf { schema, table } => Some((schema.as_deref(), table.as_str())),
                    _ => None,
                })
                .collect();
            tables.filter(|t| star && !t.is_empty())
        })
        .collect()
}
