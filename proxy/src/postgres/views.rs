//! Views over governed data: a statement that names a view (or materialized view) is checked
//! against what the view reads, from the catalog (`pg_depend` of its rewrite rule, through
//! views over views). Deny rules on the base tables and columns apply as if the statement named
//! them; a column masked for the role makes the statement fail closed unless the view's own
//! columns are labelled, because a view's columns are renamed and computed where dgf cannot
//! follow them (RowDescription reports the view, not the table).

use super::catalog::Catalog;
use super::govern::Gov;
use super::relay::Session;
use dgf_rules::{Action, Denial, FieldRef, Namespace, RoleView};
use std::sync::Arc;

/// The refusal for a statement whose `objects` (as the analysis qualified them: `schema.t`
/// or `*.t`) include a view that reads data denied or masked for this role.
pub fn check(
    view: &RoleView,
    catalog: &Catalog,
    objects: &[String],
    classes: impl Fn() -> Vec<&'static str>,
) -> Option<Denial> {
    let mut kinds_cache: Option<Vec<&'static str>> = None;
    for object in objects {
        for v in catalog.views_named(object) {
            let Some(vname) = catalog.relation(v) else { continue };
            let kinds = &kinds_cache.get_or_insert_with(&classes)[..];
            // Rules that refuse these statement kinds whatever they touch were already
            // applied to the statement itself: only rules on objects count here.
            let baseline = view.check(&Action { kinds, ..Action::default() }).deny.is_some();
            for (rel, att) in catalog.view_sources(v) {
                let Some(table) = catalog.relation(rel) else { continue };
                let column = if att > 0 { catalog.column(rel, att).map(|(_, c)| c) } else { None };
                let field = FieldRef { ns: Namespace::Sql, object: table, field: column };
                let objects = [table.to_owned()];
                let fields = [field];
                let action = Action { kinds, objects: &objects, fields: &fields, ..Action::default() };
                if let (Some(d), false) = (view.check(&action).deny, baseline) {
                    let what = column.map_or_else(|| table.to_owned(), |c| format!("{table}.{c}"));
                    let message =
                        format!("dgf: view \"{vname}\" reads {what}, which rule \"{}\" denies to this role", d.rule);
                    return Some(Denial { message, ..d });
                }
                let masked = match column {
                    Some(_) => view.mask_for(&field),
                    None => None,
                };
                let Some(m) = masked.filter(|m| !m.shadow) else { continue };
                let name = column.unwrap_or_default();
                let own = FieldRef { ns: Namespace::Sql, object: vname, field: Some(name) };
                if view.mask_for(&own).is_some_and(|o| !o.shadow) {
                    continue;
                }
                let message = format!(
                    "dgf: view \"{vname}\" reads {table}.{name}, which rule \"{}\" masks for this role, and dgf cannot \
                     follow a view's columns: label the view's column (match = [\"{vname}.{name}\"] or \"{vname}.*\") \
                     or query the table",
                    m.rule
                );
                return Some(Denial { id: m.id, rule: m.rule, message });
            }
        }
    }
    None
}

impl Session {
    /// `gov` refused instead when it names a view over data denied or masked for this role
    /// (see [`check`]); `gov` itself otherwise. Without a catalog (not loadable at this point of
    /// a pipeline) such a role's statements that name relations are refused: retrying works.
    pub(super) async fn check_views(&mut self, gov: Arc<Gov>) -> Arc<Gov> {
        if gov.sql.objects.is_empty() || !(gov.view().masks_anything() || gov.view().objects_matter()) {
            return gov;
        }
        self.ensure_catalog().await;
        let denial = match self.pg.catalog_any(&self.database) {
            Some(c) => {
                let kinds = || gov.analysis().statements.iter().flat_map(|s| s.classes()).collect();
                check(gov.view(), &c, &gov.sql.objects, kinds)
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
