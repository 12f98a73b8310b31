//! Views over governed data on the MySQL route: a statement that names a view is checked
//! against what the view reads. The route caches every view's definition
//! (`information_schema.VIEWS`, read on the session's own server connection, kept 60 s,
//! dropped after DDL through dgf, and read again before a governed statement that names a
//! relation it does not have) and analyses it like a statement: deny rules on the tables a
//! view reads (through views over views) apply as if the statement named them, and each view
//! column the statement reads is traced to its source columns; a masked source refuses the
//! statement unless that view column is labelled itself (the server reports view columns under
//! the view's name, so the result plan cannot see through them). Stored functions and
//! procedures (`information_schema.ROUTINES`, cached alike) run with their definer's rights:
//! roles with masks or table rules may only call those in `guards.trusted_functions`.

use super::govern::Gov;
use super::session::Session;
use arc_swap::ArcSwapOption;
use dgf_rules::policy::qualify;
use dgf_rules::sql::{Analysis, Analyzer, ColumnSource, Dialect, TableRef};
use dgf_rules::{Action, Denial, FieldRef, Namespace, RoleView};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cached view definitions are read again after this long.
const MAX_AGE: Duration = Duration::from_secs(60);
/// More views than this on the server are not cached (governed roles are refused instead).
const MAX_VIEWS: usize = 100_000;
/// Views over views are followed this deep.
const MAX_DEPTH: usize = 16;
const QUERY: &str = "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS \
     WHERE TABLE_SCHEMA NOT IN ('mysql', 'sys', 'performance_schema', 'information_schema')";
const ROUTINES: &str = "SELECT ROUTINE_SCHEMA, ROUTINE_NAME FROM information_schema.ROUTINES \
     WHERE ROUTINE_SCHEMA NOT IN ('mysql', 'sys', 'performance_schema', 'information_schema')";
const TABLES: &str = "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE <> 'VIEW' \
     AND TABLE_SCHEMA NOT IN ('mysql', 'sys', 'performance_schema', 'information_schema')";
/// More tables than this are not listed (a relation the cache lacks then does not reload it).
const MAX_TABLES: usize = 1_000_000;

/// Every view of the server (`schema.view` -> its query) and every stored function and
/// procedure (lower case, bare and `schema.name`).
#[derive(Debug)]
pub struct ViewDefs {
    defs: HashMap<String, String>,
    routines: std::collections::HashSet<String>,
    /// Every other relation (`schema.table`), when it could be listed.
    tables: Option<std::collections::HashSet<String>>,
    /// Objects statements named that this load, fresh, did not have (temporary tables, names
    /// about to be created, typos): they do not make it reload again.
    missing: crate::missing::MissingNames,
    loaded: Instant,
}

impl ViewDefs {
    /// Whether `full` (`schema.name`) is a view or table of this load, was already looked for
    /// in vain since, is in a system schema, or cannot be told (tables not listed).
    fn knows(&self, full: &str) -> bool {
        let schema = full.split_once('.').map_or("", |(s, _)| s);
        let Some(tables) = &self.tables else { return true };
        matches!(schema, "mysql" | "sys" | "performance_schema" | "information_schema")
            || self.defs.contains_key(full)
            || tables.contains(full)
            || self.missing.contains(full)
    }

    fn note_missing(&self, full: &str) {
        self.missing.note(full);
    }
}

/// `schema.name` of an object of an analysis (`*.name`: in the session's database).
fn full_name(object: &str, database: &str) -> String {
    match object.strip_prefix("*.") {
        Some(t) => format!("{database}.{t}"),
        None => object.to_owned(),
    }
}

/// The route's cached [`ViewDefs`] (read without a lock on every governed statement).
#[derive(Default)]
pub struct ViewCache(ArcSwapOption<ViewDefs>);

impl ViewCache {
    fn get(&self) -> Option<Arc<ViewDefs>> {
        self.0.load_full().filter(|d| d.loaded.elapsed() <= MAX_AGE)
    }

    fn set(&self, d: Arc<ViewDefs>) {
        self.0.store(Some(d));
    }

    /// Forget the views (DDL went through).
    pub fn invalidate(&self) {
        self.0.store(None);
    }
}

/// What a check needs besides the statement.
struct Ctx<'a> {
    view: &'a RoleView,
    defs: &'a ViewDefs,
    analyzer: &'a Analyzer,
    /// The session's current database (unqualified names live there).
    database: &'a str,
}

impl Ctx<'_> {
    /// `schema.view` for an object of an analysis, if it names a view.
    fn view_named(&self, object: &str) -> Option<String> {
        let full = full_name(object, self.database);
        self.defs.defs.contains_key(&full).then_some(full)
    }

    fn analysis(&self, v: &str) -> Option<Arc<Analysis>> {
        let a = self.analyzer.analyze_cached(self.defs.defs.get(v)?, Dialect::Mysql);
        (a.parse_error.is_none() && a.statements.len() == 1).then_some(a)
    }

    /// The objects a view reads, through views over views; `None` when untraceable.
    fn tables(&self, v: &str, depth: usize) -> Option<Vec<String>> {
        let a = self.analysis(v).filter(|_| depth < MAX_DEPTH)?;
        let mut out = Vec::new();
        for t in a.statements.first()?.tables.iter().map(qualify) {
            if let Some(inner) = self.view_named(&t) {
                out.extend(self.tables(&inner, depth + 1)?);
            }
            out.push(t);
        }
        Some(out)
    }

    /// The source columns (`schema.table`, column) of column `col` of view `v`; `None` when
    /// untraceable.
    fn sources(&self, v: &str, col: &str, depth: usize) -> Option<Vec<(String, String)>> {
        let a = self.analysis(v).filter(|_| depth < MAX_DEPTH)?;
        let out = a.statements.first()?.outputs.iter().find(|o| o.name.eq_ignore_ascii_case(col))?;
        if out.wildcard || out.is_opaque() {
            return None;
        }
        let mut res = Vec::new();
        for s in &out.sources {
            let ColumnSource::Column { schema, table, column } = s else { return None };
            let object = qualify(&TableRef { schema: schema.clone(), name: table.clone(), write: false });
            if let Some(inner) = self.view_named(&object) {
                res.extend(self.sources(&inner, column, depth + 1)?);
            }
            res.push((object, column.clone()));
        }
        Some(res)
    }

    /// Every column view `v` may read, for a column that cannot be traced: whole tables.
    fn everything(&self, v: &str) -> Vec<(String, Option<String>)> {
        self.tables(v, 0).unwrap_or_default().into_iter().map(|t| (t, None)).collect()
    }

    /// The names of `v`'s columns the statement reads (`None`: all of them, or unknown).
    fn read_columns(&self, analysis: &Analysis, v: &str) -> Option<Vec<String>> {
        let (vs, vn) = v.split_once('.')?;
        let names_v = |schema: &Option<String>, table: &str| {
            table.eq_ignore_ascii_case(vn) && schema.as_deref().unwrap_or(self.database) == vs
        };
        let mut out: Vec<String> = Vec::new();
        let sts = &analysis.statements;
        let all = sts.iter().flat_map(|s| s.outputs.iter().flat_map(|o| o.sources.iter()));
        for s in all.chain(sts.iter().flat_map(|s| s.written_sources.iter())) {
            match s {
                ColumnSource::Column { schema, table, column } if names_v(schema, table) => {
                    if !out.contains(column) {
                        out.push(column.clone());
                    }
                }
                ColumnSource::Column { .. } => {}
                ColumnSource::AllColumnsOf { schema, table } if !names_v(schema, table) => {}
                ColumnSource::AllColumnsOf { .. } | ColumnSource::Opaque => return None,
            }
        }
        Some(out)
    }
}

/// A call, in the statement or in the query of view `within`, of a stored function or
/// procedure not in `guards.trusted_functions`: it runs with its definer's rights and reads
/// what dgf cannot see.
fn untrusted_routine(cx: &Ctx<'_>, analysis: &Analysis, within: Option<&str>) -> Option<Denial> {
    let calls = analysis.statements.iter().flat_map(|s| s.functions.iter());
    let f = calls.into_iter().find(|f| cx.defs.routines.contains(f.as_str()) && !cx.view.trusts_function(f))?;
    let (id, rule) = cx.view.first_protecting_rule()?;
    let place = within.map(|v| format!(" (in view `{v}`)")).unwrap_or_default();
    let message = format!(
        "dgf: routine `{f}`{place} is stored in the database and runs with its definer's rights: dgf cannot see \
         what it reads, and rule \"{rule}\" protects data for this role; list it in guards.trusted_functions to \
         allow it"
    );
    Some(Denial { id, rule, message })
}

fn check(
    cx: &Ctx<'_>,
    analysis: &Analysis,
    objects: &[String],
    classes: impl Fn() -> Vec<&'static str>,
) -> Option<Denial> {
    if !cx.defs.routines.is_empty() {
        if let Some(d) = untrusted_routine(cx, analysis, None) {
            return Some(d);
        }
    }
    if cx.defs.defs.is_empty() {
        return None; // no views on the server: nothing more to look up per statement
    }
    // Statement kinds and the kinds-only verdict are worked out only once a view is named.
    let mut kinds_cache: Option<(Vec<&'static str>, bool)> = None;
    for v in objects.iter().filter_map(|o| cx.view_named(o)) {
        let (kinds, baseline) = kinds_cache.get_or_insert_with(|| {
            let k = classes();
            let denied = cx.view.check(&Action { kinds: &k, ..Action::default() }).deny.is_some();
            (k, denied)
        });
        let (kinds, baseline) = (&kinds[..], *baseline);
        if let Some(d) = cx.analysis(&v).and_then(|a| untrusted_routine(cx, &a, Some(&v))) {
            return Some(d);
        }
        let Some(tables) = cx.tables(&v, 0) else {
            // Not visible (no SHOW VIEW for the upstream user), unparseable or nested too deep.
            let (id, rule) = (usize::MAX, "views".into());
            return Some(Denial { id, rule, message: format!("dgf: view \"{v}\" cannot be analysed to check it") });
        };
        for t in tables {
            let (objects, fields) = ([t.clone()], [FieldRef { ns: Namespace::Sql, object: &t, field: None }]);
            let d = cx.view.check(&Action { kinds, objects: &objects, fields: &fields, ..Action::default() }).deny;
            if let (Some(d), false) = (d, baseline) {
                let message = format!("dgf: view \"{v}\" reads {t}, which rule \"{}\" denies to this role", d.rule);
                return Some(Denial { message, ..d });
            }
        }
        if !cx.view.masks_anything() {
            continue;
        }
        let cols = cx.read_columns(analysis, &v);
        let cols =
            cols.unwrap_or_else(|| cx.analysis(&v).map(|a| output_names(&a)).unwrap_or_else(|| vec!["*".into()]));
        for col in cols {
            let own = FieldRef { ns: Namespace::Sql, object: &v, field: Some(&col) };
            if cx.view.mask_for(&own).is_some_and(|m| !m.shadow) {
                continue;
            }
            let sources: Vec<(String, Option<String>)> = match cx.sources(&v, &col, 0) {
                Some(s) => s.into_iter().map(|(t, c)| (t, Some(c))).collect(),
                None => cx.everything(&v),
            };
            for (t, c) in &sources {
                let f = FieldRef { ns: Namespace::Sql, object: t, field: c.as_deref() };
                if let Some(m) = cx.view.mask_for(&f).filter(|m| !m.shadow) {
                    let what = c.as_ref().map_or_else(|| t.clone(), |c| format!("{t}.{c}"));
                    let message = format!(
                        "dgf: column `{col}` of view `{v}` reads {what}, which rule \"{}\" masks for this role; label \
                         the view's column (match = [\"{v}.{col}\"]) to have it masked, or query the table",
                        m.rule
                    );
                    return Some(Denial { id: m.id, rule: m.rule, message });
                }
            }
        }
    }
    None
}

fn output_names(a: &Analysis) -> Vec<String> {
    a.statements.first().map(|s| s.outputs.iter().map(|o| o.name.clone()).collect()).unwrap_or_default()
}

impl Session {
    /// `gov` refused instead when it names a view over data denied or masked for this role.
    /// `Err(())`: no server connection could be had (the client got the error).
    pub(super) async fn check_views(&mut self, seq: u8, gov: Arc<Gov>) -> Result<Arc<Gov>, ()> {
        let calls = gov.analysis().statements.iter().any(|s| !s.functions.is_empty());
        if (gov.sql.objects.is_empty() && !calls) || !(gov.view().masks_anything() || gov.view().objects_matter()) {
            return Ok(gov);
        }
        let (mut defs, mut fresh) = match self.pools.views.get() {
            Some(d) => (Ok(d), false),
            None => (self.load_views(seq).await?, true),
        };
        // A relation the cache does not have may be a view made since it was read, outside
        // dgf: read it again before deciding (once per name and load).
        let db = self.database.clone();
        let unknown = |d: &ViewDefs| gov.sql.objects.iter().any(|o| !d.knows(&full_name(o, &db)));
        if !fresh && defs.as_ref().is_ok_and(|d| unknown(d)) {
            defs = self.load_views(seq).await?;
            fresh = true;
        }
        if let (Ok(d), true) = (&defs, fresh) {
            for f in gov.sql.objects.iter().map(|o| full_name(o, &db)) {
                if !d.knows(&f) {
                    d.note_missing(&f);
                }
            }
        }
        let denial = match defs {
            Ok(defs) => {
                let g = &self.shared.governance;
                let cx = Ctx { view: gov.view(), defs: &defs, analyzer: &g.analyzer, database: &self.database };
                let kinds = || gov.analysis().statements.iter().flat_map(|s| s.classes()).collect();
                check(&cx, gov.analysis(), &gov.sql.objects, kinds)
            }
            Err(e) => Some(Denial {
                id: usize::MAX,
                rule: "views".into(),
                message: format!("dgf: statement refused: cannot read the view definitions to check it ({e})"),
            }),
        };
        Ok(denial.map_or(gov.clone(), |d| Arc::new(gov.refused(d))))
    }

    async fn load_views(&mut self, seq: u8) -> Result<Result<Arc<ViewDefs>, String>, ()> {
        if !self.acquire(seq).await.unwrap_or(false) {
            return Err(());
        }
        let mut tables = Vec::with_capacity(2);
        for sql in [QUERY, ROUTINES] {
            let Some(server) = self.server.as_mut() else { return Err(()) };
            match server.query_rows(sql, MAX_VIEWS).await {
                Ok(Ok(rows)) => tables.push(rows),
                Ok(Err(e)) => return Ok(Err(e.message)),
                Err(e) => {
                    server.mark_broken();
                    self.server = None;
                    return Ok(Err(e.to_string()));
                }
            }
        }
        let (mut defs, mut routines) = (HashMap::new(), std::collections::HashSet::new());
        for r in tables.first().map(Vec::as_slice).unwrap_or_default() {
            if let [Some(s), Some(n), Some(d)] = &r[..] {
                defs.insert(format!("{s}.{n}"), d.clone());
            }
        }
        for r in tables.get(1).map(Vec::as_slice).unwrap_or_default() {
            if let [Some(s), Some(n)] = &r[..] {
                routines.insert(n.to_lowercase());
                routines.insert(format!("{s}.{n}").to_lowercase());
            }
        }
        // Listing the tables is best effort: without it, only the 60 s expiry and DDL through
        // dgf refresh the views.
        let tables = match self.server.as_mut() {
            Some(server) => match server.query_rows(TABLES, MAX_TABLES).await {
                Ok(Ok(rows)) => Some(
                    rows.into_iter()
                        .filter_map(|r| match &r[..] {
                            [Some(s), Some(n)] => Some(format!("{s}.{n}")),
                            _ => None,
                        })
                        .collect(),
                ),
                Ok(Err(_)) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "listing the tables failed; views made outside dgf wait for the 60 s refresh");
                    server.mark_broken();
                    self.server = None;
                    None
                }
            },
            None => None,
        };
        let missing = Default::default();
        let d = Arc::new(ViewDefs { defs, routines, tables, missing, loaded: Instant::now() });
        self.pools.views.set(d.clone());
        Ok(Ok(d))
    }
}
