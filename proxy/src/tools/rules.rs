//! `dgf rules explain` (what the policy decides for one statement, and why) and `dgf rules test`
//! (table-driven policy tests kept in CI). Both go through [`Checker::explain`], so a test case
//! asserts exactly what `explain` prints.
//!
//! The mask plan shown is the lineage half of the proxy's plan (see
//! `dgf_rules::policy::sql_output_masks`); at run time the Postgres route also resolves direct
//! column references with the catalog, which can only add precision (views, `*`), never remove
//! a mask that lineage calls for.

use super::{load_config, Outcome, ToolError};
use dgf_config::{Config, Protocol, RuleAction};
use dgf_rules::policy::{check_sql, sql_output_masks, FieldPattern};
use dgf_rules::sql::{analyze, ColumnSource, Dialect, StatementInfo};
use dgf_rules::{FieldRef, MaskRule, Namespace, Policy, RoleView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// A compiled configuration to ask questions of.
pub struct Checker {
    cfg: Config,
    policy: Policy,
    with: HashMap<String, String>,
}

/// The decision about one query string.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Explanation {
    /// Route the rules were selected for (empty: none; route-specific rules do not apply).
    pub route: String,
    /// Roles of the session.
    pub roles: Vec<String>,
    /// `postgres` or `mysql`.
    pub dialect: &'static str,
    /// `allow`, `deny` or `mask` (allowed, and some result column is masked).
    pub decision: &'static str,
    /// The rule that refused the statement.
    pub denied_by: Option<DenyInfo>,
    /// Enforced rules that fired (allow, limit, deny).
    pub rules_fired: Vec<String>,
    /// Shadow rules that would have fired (not enforced).
    pub shadow: Vec<String>,
    /// Row cap.
    pub row_limit: Option<u64>,
    /// Why the statement could not be analysed.
    pub parse_error: Option<String>,
    /// One entry per statement.
    pub statements: Vec<StatementExplain>,
}

/// The refusal.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DenyInfo {
    /// Rule name (`on_parse_error` for unparseable statements).
    pub rule: String,
    /// Message the client gets.
    pub message: String,
}

/// One statement of the query string.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatementExplain {
    /// Kind and classes (what `statements = [...]` matches).
    pub kinds: Vec<String>,
    /// Objects touched (`*.t`: no schema written, matches any schema).
    pub objects: Vec<String>,
    /// Functions called.
    pub functions: Vec<String>,
    /// Result columns and their masks.
    pub columns: Vec<ColumnExplain>,
}

/// One result column (or a wildcard standing for several).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ColumnExplain {
    /// Output name.
    pub name: String,
    /// `*` / `t.*`: expanded by the catalog at run time.
    pub wildcard: bool,
    /// Where the value comes from (lineage).
    pub sources: Vec<String>,
    /// The mask that applies (non-wildcard columns).
    pub mask: Option<MaskInfo>,
    /// Wildcards: the labelled columns of the tables involved that will be masked.
    pub masked_columns: Vec<MaskInfo>,
}

/// A mask that applies.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MaskInfo {
    /// For wildcard entries: the `table.column` pattern that is masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Mask rule.
    pub rule: String,
    /// Mask function as configured (`with`).
    pub with: String,
    /// Shadow rule: reported, not applied.
    pub shadow: bool,
}

/// Parses `--dialect`.
pub fn parse_dialect(s: &str) -> Result<Dialect, ToolError> {
    match s.to_ascii_lowercase().as_str() {
        "postgres" | "postgresql" | "pg" => Ok(Dialect::Postgres),
        "mysql" | "mariadb" => Ok(Dialect::Mysql),
        other => Err(ToolError::Usage(format!("unknown dialect `{other}` (postgres or mysql)"))),
    }
}

fn source_text(s: &ColumnSource) -> String {
    match s {
        ColumnSource::Column { schema: Some(s), table, column } => format!("{s}.{table}.{column}"),
        ColumnSource::Column { schema: None, table, column } => format!("{table}.{column}"),
        ColumnSource::AllColumnsOf { schema: Some(s), table } => format!("{s}.{table}.*"),
        ColumnSource::AllColumnsOf { schema: None, table } => format!("{table}.*"),
        ColumnSource::Opaque => "<untraceable>".to_owned(),
    }
}

impl Checker {
    /// Loads, validates and compiles a configuration file.
    pub fn load(path: &Path) -> Result<Checker, ToolError> {
        Self::new(load_config(path)?)
    }

    /// Compiles a validated configuration.
    pub fn new(cfg: Config) -> Result<Checker, ToolError> {
        let policy = Policy::from_config(&cfg)?;
        let with = cfg.rules.iter().filter_map(|r| Some((r.name.clone(), r.with.clone()?))).collect();
        Ok(Checker { cfg, policy, with })
    }

    /// The route to evaluate on: the one named (it must exist), else the first route of the
    /// dialect's protocol, else none.
    pub fn route(&self, route: Option<&str>, dialect: Dialect) -> Result<String, ToolError> {
        if let Some(r) = route {
            if !self.cfg.routes.iter().any(|x| x.name == r) {
                return Err(ToolError::Usage(format!("route `{r}` is not defined in the configuration")));
            }
            return Ok(r.to_owned());
        }
        let want = match dialect {
            Dialect::Postgres => Protocol::Postgres,
            Dialect::Mysql => Protocol::Mysql,
        };
        Ok(self.cfg.routes.iter().find(|r| r.protocol == want).map(|r| r.name.clone()).unwrap_or_default())
    }

    fn mask_info(&self, m: &MaskRule, column: Option<String>) -> MaskInfo {
        MaskInfo {
            column,
            rule: m.rule.to_string(),
            with: self.with.get(&*m.rule).cloned().unwrap_or_default(),
            shadow: m.shadow,
        }
    }

    /// Labelled columns of `object` that a mask rule of `view` covers (for `*`).
    fn wildcard_masks(&self, view: &RoleView, object: &str) -> Vec<MaskInfo> {
        let labels: HashMap<&str, &Vec<String>> =
            self.cfg.labels.iter().map(|l| (l.name.as_str(), &l.matches)).collect();
        let mut out: Vec<MaskInfo> = Vec::new();
        for r in self.cfg.rules.iter().filter(|r| r.action == RuleAction::Mask) {
            let pats =
                r.columns.iter().chain(r.labels.iter().filter_map(|l| labels.get(l.as_str())).flat_map(|v| v.iter()));
            for p in pats.map(|p| FieldPattern::parse(p)) {
                let Some(field) = p.field.as_deref() else { continue };
                if !p.matches_object(Namespace::Sql, object) {
                    continue;
                }
                let Some(m) = view.mask_for(&FieldRef { ns: Namespace::Sql, object, field: Some(field) }) else {
                    continue;
                };
                let info = self.mask_info(&m, Some(format!("{object}.{field}")));
                if !out.contains(&info) {
                    out.push(info);
                }
            }
        }
        out
    }

    fn columns(&self, view: &RoleView, st: &StatementInfo) -> Vec<ColumnExplain> {
        let masks = if view.masks_anything() { sql_output_masks(view, st, st.outputs.len()) } else { Vec::new() };
        st.outputs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let mut c = ColumnExplain {
                    name: o.name.clone(),
                    wildcard: o.wildcard,
                    sources: o.sources.iter().map(source_text).collect(),
                    mask: None,
                    masked_columns: Vec::new(),
                };
                if o.wildcard {
                    for s in &o.sources {
                        if let ColumnSource::AllColumnsOf { schema, table } = s {
                            let object = format!("{}.{table}", schema.as_deref().unwrap_or("*"));
                            for m in self.wildcard_masks(view, &object) {
                                if !c.masked_columns.contains(&m) {
                                    c.masked_columns.push(m);
                                }
                            }
                        }
                    }
                } else if let Some(Some(m)) = masks.get(i) {
                    c.mask = Some(self.mask_info(m, None));
                }
                c
            })
            .collect()
    }

    /// What the policy decides for `sql` run by `roles` on `route`.
    pub fn explain(&self, roles: &[String], route: &str, dialect: Dialect, sql: &str) -> Explanation {
        let view = self.policy.view(route, roles);
        let analysis = analyze(sql, dialect);
        let v = check_sql(&view, &analysis);
        let names = self.policy.rule_names();
        let name = |id: usize| names.get(id).map_or_else(|| "on_parse_error".to_owned(), |n| n.to_string());
        let statements: Vec<StatementExplain> = analysis
            .statements
            .iter()
            .map(|st| StatementExplain {
                kinds: st.classes().iter().map(|s| (*s).to_owned()).collect(),
                objects: st
                    .tables
                    .iter()
                    .map(|t| format!("{}.{}", t.schema.as_deref().unwrap_or("*"), t.name))
                    .collect(),
                functions: st.functions.clone(),
                columns: self.columns(&view, st),
            })
            .collect();
        let all_masks =
            || statements.iter().flat_map(|s| &s.columns).flat_map(|c| c.mask.iter().chain(&c.masked_columns));
        let mut shadow: Vec<String> = v.verdict.shadow.iter().map(|id| name(*id)).collect();
        for m in all_masks().filter(|m| m.shadow) {
            if !shadow.contains(&m.rule) {
                shadow.push(m.rule.clone());
            }
        }
        let decision = if v.verdict.deny.is_some() {
            "deny"
        } else if all_masks().any(|m| !m.shadow) {
            "mask"
        } else {
            "allow"
        };
        Explanation {
            route: route.to_owned(),
            roles: roles.to_vec(),
            dialect: match dialect {
                Dialect::Postgres => "postgres",
                Dialect::Mysql => "mysql",
            },
            decision,
            denied_by: v
                .verdict
                .deny
                .as_ref()
                .map(|d| DenyInfo { rule: d.rule.to_string(), message: d.message.clone() }),
            rules_fired: v.verdict.hits.iter().map(|id| name(*id)).collect(),
            shadow,
            row_limit: v.verdict.row_limit,
            parse_error: analysis.parse_error.clone(),
            statements,
        }
    }
}

/// Human-readable rendering of an [`Explanation`].
pub fn render(e: &Explanation) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let route = if e.route.is_empty() { "(none)" } else { &e.route };
    let _ = writeln!(s, "route: {route}   roles: {}   dialect: {}", e.roles.join(", "), e.dialect);
    match &e.denied_by {
        Some(d) => {
            let _ = writeln!(s, "decision: DENY by rule \"{}\"\n  message: {}", d.rule, d.message);
        }
        None => {
            let _ = writeln!(s, "decision: {}", e.decision.to_uppercase());
        }
    }
    if let Some(p) = &e.parse_error {
        let _ = writeln!(s, "parse error: {p}");
    }
    let list = |v: &[String]| if v.is_empty() { "-".to_owned() } else { v.join(", ") };
    let _ = writeln!(s, "rules fired: {}", list(&e.rules_fired));
    let _ = writeln!(s, "shadow (not enforced): {}", list(&e.shadow));
    let _ = writeln!(s, "row limit: {}", e.row_limit.map_or_else(|| "none".to_owned(), |n| n.to_string()));
    for (i, st) in e.statements.iter().enumerate() {
        let _ = writeln!(s, "statement {}: {}", i + 1, st.kinds.join(", "));
        let _ = writeln!(s, "  objects: {}", list(&st.objects));
        if !st.functions.is_empty() {
            let _ = writeln!(s, "  functions: {}", st.functions.join(", "));
        }
        if st.columns.is_empty() {
            continue;
        }
        let _ = writeln!(s, "  columns:");
        for (j, c) in st.columns.iter().enumerate() {
            let from = if c.sources.is_empty() { "(constant)".to_owned() } else { c.sources.join(", ") };
            let _ = write!(s, "    {}. {} <- {from}", j + 1, c.name);
            let mask_text = |m: &MaskInfo| {
                let shadow = if m.shadow { " [shadow: not applied]" } else { "" };
                format!("{} (rule \"{}\"){shadow}", m.with, m.rule)
            };
            if c.wildcard {
                let _ = writeln!(s, "  [* is expanded by the catalog at run time]");
                if c.masked_columns.is_empty() {
                    let _ = writeln!(s, "       no labelled column of these tables is masked for these roles");
                }
                for m in &c.masked_columns {
                    let _ = writeln!(s, "       {} -> {}", m.column.as_deref().unwrap_or("?"), mask_text(m));
                }
            } else {
                match &c.mask {
                    Some(m) => {
                        let _ = writeln!(s, "  MASK {}", mask_text(m));
                    }
                    None => {
                        let _ = writeln!(s, "  clear");
                    }
                }
            }
        }
    }
    s
}

/// `dgf rules explain`.
pub fn explain_cmd(
    config: &Path,
    roles: &[String],
    route: Option<&str>,
    dialect: &str,
    json: bool,
    sql: &str,
    out: &mut dyn Write,
) -> Result<Outcome, ToolError> {
    let dialect = parse_dialect(dialect)?;
    let c = Checker::load(config)?;
    let route = c.route(route, dialect)?;
    let e = c.explain(roles, &route, dialect, sql);
    let text = if json {
        serde_json::to_string_pretty(&e).map_err(|e| ToolError::Usage(format!("cannot encode JSON: {e}")))? + "\n"
    } else {
        render(&e)
    };
    out.write_all(text.as_bytes()).map_err(ToolError::stdout)?;
    Ok(Outcome::Ok)
}

/// The expected decision of a case.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// Runs, nothing masked.
    Allow,
    /// Refused.
    Deny,
    /// Runs, some result column masked.
    Mask,
}

impl Expect {
    fn as_str(self) -> &'static str {
        match self {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
            Expect::Mask => "mask",
        }
    }
}

/// One `[[case]]` of a cases file (format in docs/policies.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Shown in the report.
    pub name: String,
    /// One role (or use `roles`).
    #[serde(default)]
    pub role: Option<String>,
    /// Several roles.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// Route name; default: the first route of the dialect's protocol.
    #[serde(default)]
    pub route: Option<String>,
    /// `postgres` (default) or `mysql`.
    #[serde(default)]
    pub dialect: Option<String>,
    /// The statement(s).
    pub sql: String,
    /// Expected decision.
    pub expect: Expect,
    /// The rule that must decide (deny: the denying rule; allow: a rule that fired; mask: a
    /// rule that masks a column).
    #[serde(default)]
    pub rule: Option<String>,
    /// Output column names that must be masked.
    #[serde(default)]
    pub masked: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

/// Parses a cases file.
pub fn parse_cases(text: &str, path: &Path) -> Result<Vec<Case>, ToolError> {
    let err = |message: String| ToolError::Cases { path: path.to_path_buf(), message };
    let f: CasesFile = toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_owned()))?;
    if f.cases.is_empty() {
        return Err(err("no [[case]] entries".into()));
    }
    for c in &f.cases {
        if c.role.is_some() == c.roles.is_some() {
            return Err(err(format!("case \"{}\": set exactly one of `role` and `roles`", c.name)));
        }
    }
    Ok(f.cases)
}

/// Runs one case: `Ok(())` or what differed.
pub fn run_case(c: &Checker, case: &Case) -> Result<(), String> {
    let dialect = parse_dialect(case.dialect.as_deref().unwrap_or("postgres")).map_err(|e| e.to_string())?;
    let route = c.route(case.route.as_deref(), dialect).map_err(|e| e.to_string())?;
    let roles = match (&case.role, &case.roles) {
        (Some(r), _) => vec![r.clone()],
        (None, Some(r)) => r.clone(),
        (None, None) => Vec::new(),
    };
    let e = c.explain(&roles, &route, dialect, &case.sql);
    let mut problems = Vec::new();
    if e.decision != case.expect.as_str() {
        let why = match &e.denied_by {
            Some(d) => format!(" by rule \"{}\"", d.rule),
            None => String::new(),
        };
        problems.push(format!("expected {}, got {}{why}", case.expect.as_str(), e.decision));
    }
    let masks: Vec<(&str, &MaskInfo)> = e
        .statements
        .iter()
        .flat_map(|s| &s.columns)
        .flat_map(|c| {
            let direct = c.mask.iter().map(move |m| (c.name.as_str(), m));
            let wild = c.masked_columns.iter().map(|m| {
                let col = m.column.as_deref().unwrap_or("");
                (col.rsplit('.').next().unwrap_or(col), m)
            });
            direct.chain(wild)
        })
        .filter(|(_, m)| !m.shadow)
        .collect();
    if let Some(rule) = &case.rule {
        let decided = match case.expect {
            Expect::Deny => e.denied_by.as_ref().is_some_and(|d| &d.rule == rule),
            Expect::Allow => e.rules_fired.contains(rule),
            Expect::Mask => masks.iter().any(|(_, m)| &m.rule == rule),
        };
        if !decided {
            let actual = match (&e.denied_by, case.expect) {
                (Some(d), _) => format!("denied by \"{}\"", d.rule),
                (None, Expect::Mask) => {
                    let r: Vec<&str> = masks.iter().map(|(_, m)| m.rule.as_str()).collect();
                    format!("masked by [{}]", r.join(", "))
                }
                (None, _) => format!("rules fired: [{}]", e.rules_fired.join(", ")),
            };
            problems.push(format!("expected rule \"{rule}\" to decide, got {actual}"));
        }
    }
    for col in &case.masked {
        if !masks.iter().any(|(n, _)| n.eq_ignore_ascii_case(col)) {
            problems.push(format!("column `{col}` is not masked"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// `dgf rules test`: runs every case, one line each, then a summary.
pub fn test_cmd(config: &Path, cases: &Path, out: &mut dyn Write) -> Result<Outcome, ToolError> {
    let c = Checker::load(config)?;
    let text = std::fs::read_to_string(cases).map_err(|e| ToolError::Io { path: cases.to_path_buf(), source: e })?;
    let cases = parse_cases(&text, cases)?;
    let mut failed = 0usize;
    for case in &cases {
        let line = match run_case(&c, case) {
            Ok(()) => format!("ok    {}", case.name),
            Err(why) => {
                failed += 1;
                format!("FAIL  {}: {why}", case.name)
            }
        };
        writeln!(out, "{line}").map_err(ToolError::stdout)?;
    }
    writeln!(out, "{} case(s): {} passed, {failed} failed", cases.len(), cases.len() - failed)
        .map_err(ToolError::stdout)?;
    Ok(if failed == 0 { Outcome::Ok } else { Outcome::Failed })
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
