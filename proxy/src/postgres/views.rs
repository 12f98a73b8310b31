//! What the catalog knows that statement text does not: views, user functions and partitions
//! over governed tables.
//! - A statement that names a view (or materialized view) is checked against what the view
//!   reads: deny rules on the tables and columns it reads (`pg_depend` of its rewrite rule,
//!   through views over views) apply as if the statement named them; each view column the
//!   statement reads is traced through the view's query (`pg_get_viewdef`) to its sources, and a
//!   masked source refuses the statement unless that view column is labelled itself, because
//!   RowDescription reports view columns under the view and the result plan cannot see through.
//! - Functions defined in the database (not by extensions) run with the server's rights and read
//!   what dgf cannot see: roles with masks or table rules may only call those in
//!   `guards.trusted_functions`, in statements and in the views they read.
//! - A partition (or inheriting table) carries its ancestors' deny rules and masks.

use super::catalog::Catalog;
use super::govern::Gov;
use super::relay::Session;
use dgf_rules::policy::qualify;
use dgf_rules::sql::{Analysis, Analyzer, ColumnSource, Dialect, TableRef};
use dgf_rules::{Action, Denial, FieldRef, MaskRule, Namespace, RoleView};
use std::sync::Arc;

/// Views over views are traced this deep; deeper, a column counts as reading everything its
/// view reads.
const MAX_DEPTH: usize = 16;

/// What a check needs besides the statement.
pub struct Ctx<'a> {
    /// The role's view.
    pub view: &'a RoleView,
    /// The database's catalog.
    pub catalog: &'a Catalog,
    /// Analyses of view definitions (cached like statements).
    pub analyzer: &'a Analyzer,
}

/// The refusal for a statement (`analysis`, whose objects are `objects`, qualified `schema.t`
/// or `*.t`) that names a view reading data denied or masked for this role.
pub fn check(
    cx: &Ctx<'_>,
    analysis: &Analysis,
    objects: &[String],
    classes: impl Fn() -> Vec<&'static str>,
) -> Option<Denial> {
    if let Some(d) = untrusted_function(cx, analysis, None) {
        return Some(d);
    }
    let mut kinds_cache: Option<Vec<&'static str>> = None;
    for object in objects {
        for c in cx.catalog.children_named(object) {
            let kinds = &kinds_cache.get_or_insert_with(&classes)[..];
            if let Some(d) = inherited(cx, analysis, c, kinds) {
                return Some(d);
            }
        }
        for v in cx.catalog.views_named(object) {
            let Some(vname) = cx.catalog.relation(v) else { continue };
            let kinds = &kinds_cache.get_or_insert_with(&classes)[..];
            if let Some(d) = denied_source(cx, v, vname, kinds) {
                return Some(d);
            }
            let def = cx.catalog.view_definition(v).map(|d| cx.analyzer.analyze_cached(d, Dialect::Postgres));
            if let Some(d) = def.and_then(|a| untrusted_function(cx, &a, Some(vname))) {
                return Some(d);
            }
            for (attnum, col) in read_columns(cx.catalog, analysis, v, vname) {
                let own = FieldRef { ns: Namespace::Sql, object: vname, field: Some(col) };
                if cx.view.mask_for(&own).is_some_and(|m| !m.shadow) {
                    continue; // labelled view column: the result plan masks it
                }
                let sources = column_sources(cx, v, attnum, 0).unwrap_or_else(|| all_sources(cx.catalog, v));
                for (table, column) in &sources {
                    let f = FieldRef { ns: Namespace::Sql, object: table, field: Some(column) };
                    if let Some(m) = cx.view.mask_for(&f).filter(|m| !m.shadow) {
                        return Some(masked(vname, col, table, column, m));
                    }
                }
            }
        }
    }
    None
}

/// A call, in the statement or in the query of view `within`, of a function defined in the
/// database and not in `guards.trusted_functions`: it runs with the server's rights, and dgf
/// cannot see what it reads.
fn untrusted_function(cx: &Ctx<'_>, analysis: &Analysis, within: Option<&str>) -> Option<Denial> {
    let calls = analysis.statements.iter().flat_map(|s| s.functions.iter());
    let f = calls.into_iter().find(|f| cx.catalog.is_user_function(f) && !cx.view.trusts_function(f))?;
    let (id, rule) = cx.view.first_protecting_rule()?;
    let place = within.map(|v| format!(" (in view \"{v}\")")).unwrap_or_default();
    let message = format!(
        "dgf: function \"{f}\"{place} is defined in the database and runs with the server's rights: dgf cannot see \
         what it reads, and rule \"{rule}\" protects data for this role; list it in guards.trusted_functions \
         to allow it"
    );
    Some(Denial { id, rule, message })
}

/// Rules on the tables partition (or inheriting table) `c` inherits from: deny rules apply
/// to it, and a column masked on an ancestor refuses the statement unless `c`'s own column is
/// labelled (RowDescription reports the partition, whose name the labels do not match).
fn inherited(cx: &Ctx<'_>, analysis: &Analysis, c: u32, kinds: &[&str]) -> Option<Denial> {
    let cname = cx.catalog.relation(c)?;
    let ancestors: Vec<&str> = cx.catalog.ancestors(c).into_iter().filter_map(|a| cx.catalog.relation(a)).collect();
    if cx.view.check(&Action { kinds, ..Action::default() }).deny.is_none() {
        for a in &ancestors {
            let (objects, fields) = ([(*a).to_owned()], [FieldRef { ns: Namespace::Sql, object: a, field: None }]);
            if let Some(d) =
                cx.view.check(&Action { kinds, objects: &objects, fields: &fields, ..Action::default() }).deny
            {
                let message =
                    format!("dgf: \"{cname}\" is a partition of {a}, which rule \"{}\" denies to this role", d.rule);
                return Some(Denial { message, ..d });
            }
        }
    }
    for (_, col) in read_columns(cx.catalog, analysis, c, cname) {
        if cx
            .view
            .mask_for(&FieldRef { ns: Namespace::Sql, object: cname, field: Some(col) })
            .is_some_and(|m| !m.shadow)
        {
            continue;
        }
        for a in &ancestors {
            let f = FieldRef { ns: Namespace::Sql, object: a, field: Some(col) };
            if let Some(m) = cx.view.mask_for(&f).filter(|m| !m.shadow) {
                let message = format!(
                    "dgf: column \"{col}\" of \"{cname}\", a partition of {a}, is masked by rule \"{}\" for this \
                     role; query {a} (masked there), or label the partition's column (match = [\"{cname}.{col}\"])",
                    m.rule
                );
                return Some(Denial { id: m.id, rule: m.rule, message });
            }
        }
    }
    None
}

fn masked(vname: &str, col: &str, table: &str, column: &str, m: MaskRule) -> Denial {
    let table = table.strip_prefix("*.").unwrap_or(table);
    let message = format!(
        "dgf: column \"{col}\" of view \"{vname}\" reads {table}.{column}, which rule \"{}\" masks for this role; \
         label the view's column (match = [\"{vname}.{col}\"]) to have it masked, or query the table",
        m.rule
    );
    Denial { id: m.id, rule: m.rule, message }
}

/// A deny rule on something view `v` reads (rules on statement kinds alone were applied to the
/// statement itself).
fn denied_source(cx: &Ctx<'_>, v: u32, vname: &str, kinds: &[&str]) -> Option<Denial> {
    if cx.view.check(&Action { kinds, ..Action::default() }).deny.is_some() {
        return None;
    }
    for (rel, att) in cx.catalog.view_sources(v) {
        let Some(table) = cx.catalog.relation(rel) else { continue };
        let column = if att > 0 { cx.catalog.column(rel, att).map(|(_, c)| c) } else { None };
        let objects = [table.to_owned()];
        let fields = [FieldRef { ns: Namespace::Sql, object: table, field: column }];
        let action = Action { kinds, objects: &objects, fields: &fields, ..Action::default() };
        if let Some(d) = cx.view.check(&action).deny {
            let what = column.map_or_else(|| table.to_owned(), |c| format!("{table}.{c}"));
            let message = format!("dgf: view \"{vname}\" reads {what}, which rule \"{}\" denies to this role", d.rule);
            return Some(Denial { message, ..d });
        }
    }
    None
}

/// The columns of view `v` (attnum, name) that `analysis` reads: by name where its lineage
/// names them, all of them for `*`, whole-row references or untraceable values.
fn read_columns<'c>(catalog: &'c Catalog, analysis: &Analysis, v: u32, vname: &str) -> Vec<(i16, &'c str)> {
    let all = catalog.columns(v);
    let rel = vname.split_once('.').map_or(vname, |(_, r)| r);
    let names_v = |schema: &Option<String>, table: &str| {
        table == rel && schema.as_deref().is_none_or(|s| vname.split_once('.').is_some_and(|(vs, _)| vs == s))
    };
    let mut out: Vec<(i16, &str)> = Vec::new();
    let sources = analysis.statements.iter().flat_map(|s| s.outputs.iter().flat_map(|o| o.sources.iter()));
    for s in sources.chain(analysis.statements.iter().flat_map(|s| s.written_sources.iter())) {
        match s {
            ColumnSource::Column { schema, table, column } if names_v(schema, table) => {
                match all.iter().find(|(_, c)| c == column) {
                    Some(c) if !out.contains(c) => out.push(*c),
                    Some(_) => {}
                    None => return all,
                }
            }
            ColumnSource::Column { .. } => {}
            ColumnSource::AllColumnsOf { schema, table } if !names_v(schema, table) => {}
            ColumnSource::AllColumnsOf { .. } | ColumnSource::Opaque => return all,
        }
    }
    out
}

/// The base columns (`schema.table` or `*.table`, column) view column `attnum` of `v` comes
/// from, through views over views; `None` when its view's query cannot be traced.
fn column_sources(cx: &Ctx<'_>, v: u32, attnum: i16, depth: usize) -> Option<Vec<(String, String)>> {
    if depth >= MAX_DEPTH {
        return None;
    }
    let a = cx.analyzer.analyze_cached(cx.catalog.view_definition(v)?, Dialect::Postgres);
    let st = a.statements.first().filter(|_| a.parse_error.is_none() && a.statements.len() == 1)?;
    let idx = cx.catalog.columns(v).iter().position(|(n, _)| *n == attnum)?;
    let out = st.outputs.get(idx).filter(|o| !o.wildcard && !o.is_opaque())?;
    let mut res = Vec::new();
    for s in &out.sources {
        let ColumnSource::Column { schema, table, column } = s else { return None };
        let object = qualify(&TableRef { schema: schema.clone(), name: table.clone(), write: false });
        for inner in cx.catalog.views_named(&object) {
            let att = cx.catalog.columns(inner).iter().find(|(_, c)| c == column)?.0;
            res.extend(column_sources(cx, inner, att, depth + 1)?);
        }
        res.push((object, column.clone()));
    }
    Some(res)
}

/// Every column view `v` reads (its `pg_depend` sources), for a column that cannot be traced.
fn all_sources(catalog: &Catalog, v: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (rel, att) in catalog.view_sources(v) {
        let Some(table) = catalog.relation(rel) else { continue };
        let cols: Vec<(i16, &str)> = match att {
            0 => catalog.columns(rel),
            a => catalog.column(rel, a).map(|(_, c)| vec![(a, c)]).unwrap_or_default(),
        };
        out.extend(cols.into_iter().map(|(_, c)| (table.to_owned(), c.to_owned())));
    }
    out
}

impl Session {
    /// `gov` refused instead when it names a view over data denied or masked for this role
    /// (see [`check`]); `gov` itself otherwise. A statement naming a relation the catalog does
    /// not have loads it again first. Without a catalog (not loadable at this point of
    /// a pipeline) such a role's statements that name relations are refused: retrying works.
    pub(super) async fn check_views(&mut self, gov: Arc<Gov>) -> Arc<Gov> {
        let calls = gov.analysis().statements.iter().any(|s| !s.functions.is_empty());
        if (gov.sql.objects.is_empty() && !calls) || !(gov.view().masks_anything() || gov.view().objects_matter()) {
            return gov;
        }
        self.ensure_catalog().await;
        let mut catalog = self.pg.catalog_any(&self.database);
        if catalog.as_ref().is_some_and(|c| self.gov.views_passed.holds(&gov, c)) {
            return gov;
        }
        // A relation the catalog does not have may be a view made since it was loaded,
        // outside dgf: load it again before deciding (once per name and load).
        let unknown = |c: &Catalog| gov.sql.objects.iter().any(|o| !c.knows(o));
        if let Some(before) = catalog.clone().filter(|c| unknown(c)) {
            self.load_catalog().await;
            catalog = self.pg.catalog_any(&self.database);
            // Only a catalog loaded just now may remember names as missing (the load is skipped
            // in the middle of a pipeline).
            if let Some(c) = catalog.as_ref().filter(|c| !Arc::ptr_eq(c, &before)) {
                gov.sql.objects.iter().filter(|o| !c.knows(o)).for_each(|o| c.note_missing(o));
            }
        }
        let denial = match catalog {
            Some(c) => {
                let cx = Ctx { view: gov.view(), catalog: &c, analyzer: &self.shared.governance.analyzer };
                let kinds = || gov.analysis().statements.iter().flat_map(|s| s.classes()).collect();
                let denial = check(&cx, gov.analysis(), &gov.sql.objects, kinds);
                // Not while a name is still unknown (its reload was skipped mid-pipeline): the
                // next statement must try that reload again.
                if denial.is_none() && !unknown(&c) {
                    self.gov.views_passed.remember(&gov, &c);
                }
                denial
            }
            None => Some(Denial {
                id: usize::MAX,
                rule: "views".into(),
                message: "dgf: statement refused: the catalog dgf checks views against is not loaded yet; retry the \
                          statement"
                    .into(),
            }),
        };
        match denial {
            Some(d) => Arc::new(gov.refused(d)),
            None => gov,
        }
    }
}

/// The last statement shape that passed [`check`] in a session, and the role view and catalog
/// it passed under: the same shape under the same two passes again (the check is a function of
/// the three, and every relation it named was known to that catalog or noted missing by it),
/// so a session repeating a statement checks it once per catalog load and policy. Held weakly:
/// it keeps no catalog alive, and a dropped one's address cannot be taken by another while the
/// memo points at it.
#[derive(Default)]
pub struct Passed(Option<(std::sync::Weak<Analysis>, std::sync::Weak<RoleView>, std::sync::Weak<Catalog>)>);

impl Passed {
    fn holds(&self, gov: &Gov, catalog: &Arc<Catalog>) -> bool {
        self.0.as_ref().is_some_and(|(a, v, c)| {
            std::ptr::eq(a.as_ptr(), gov.analysis())
                && std::ptr::eq(v.as_ptr(), gov.view())
                && std::ptr::eq(c.as_ptr(), Arc::as_ptr(catalog))
        })
    }

    fn remember(&mut self, gov: &Gov, catalog: &Arc<Catalog>) {
        let (a, v) = gov.arcs();
        self.0 = Some((Arc::downgrade(a), Arc::downgrade(v), Arc::downgrade(catalog)));
    }
}
