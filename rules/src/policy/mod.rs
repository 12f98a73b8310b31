//! The compiled policy: labels, rules and guards, evaluated per role for any protocol.
//!
//! # Evaluation (documented for users in docs/policies.md)
//! 1. A rule applies to a session when its `roles` is empty or names one of the user's roles,
//!    and its `routes` is empty or names the session's route. Built-in guards apply to every
//!    role not in `guards.exempt_roles`.
//! 2. A `deny`, `allow` or `limit` rule *matches* a statement when every criterion it sets holds:
//!    `statements` (any of the statement's kinds/classes), `tables` (any object touched),
//!    `columns` and `labels` (any field read or written). A rule that sets none matches all.
//! 3. If an enforced `allow` rule matches, no `deny` rule or guard applies (allow carves out
//!    exceptions wherever it is written). Otherwise the first matching enforced `deny` (in file
//!    order, guards after user rules) refuses the statement.
//! 4. `limit` rules cap the rows returned: the smallest matching `max_rows` wins.
//! 5. `mask` rules apply to result fields whose data carries one of their labels (or matches
//!    their `columns`); the first mask rule in file order wins for a field.
//! 6. `mode = "shadow"` rules are evaluated and reported (audit, metrics) but never enforced.

mod glob;
mod lexer_guard;
mod same;
mod sql;

#[cfg(test)]
mod doc_examples;
#[cfg(test)]
mod tests;

pub use glob::{glob_match, FieldPattern, FieldRef, Namespace};
pub use lexer_guard::{check_lexer_settings, set_config_is_plain, touches_lexer_settings, unsafe_client_encoding};
pub use sql::{check_sql, check_sql_cached, qualify, sql_output_masks, sql_output_star_tables, SqlVerdict, StarTable};

use crate::mask::{HashKey, MaskFn};
use crate::RulesError;
use dgf_config::{Config, GuardsConfig, RuleAction, RuleMode};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Built-in guard predicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// UPDATE without WHERE.
    UpdateWithoutWhere,
    /// DELETE without WHERE.
    DeleteWithoutWhere,
    /// Several statements in one query.
    MultiStatement,
    /// Any DDL.
    Ddl,
    /// COPY ... PROGRAM.
    CopyProgram,
    /// SET ROLE / SESSION AUTHORIZATION.
    SetRole,
    /// A function on the deny list.
    Functions,
}

/// Facts about a statement that guards look at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// UPDATE without WHERE.
    pub update_without_where: bool,
    /// DELETE without WHERE.
    pub delete_without_where: bool,
    /// Part of a multi-statement query.
    pub multi_statement: bool,
    /// Runs a program on the server.
    pub copy_program: bool,
    /// Changes the server-side role.
    pub set_role: bool,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Index in [`Policy::rule_names`] (metrics, audit).
    pub id: usize,
    /// Name.
    pub name: Arc<str>,
    /// What it does.
    pub action: RuleAction,
    /// Shadow mode.
    pub shadow: bool,
    roles: Vec<String>,
    routes: Vec<String>,
    statements: Vec<String>,
    tables: Vec<String>,
    fields: Vec<FieldPattern>,
    /// Mask function (mask rules).
    pub mask: Option<MaskFn>,
    /// Row cap (limit rules).
    pub max_rows: Option<u64>,
    guard: Option<Guard>,
    denied_functions: Vec<String>,
}

/// A mask that applies to a field.
#[derive(Debug, Clone)]
pub struct MaskRule {
    /// Rule id.
    pub id: usize,
    /// Rule name.
    pub rule: Arc<str>,
    /// Function.
    pub func: MaskFn,
    /// Shadow: report, do not mask.
    pub shadow: bool,
}

/// A protocol-neutral description of one statement, command or request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Action<'a> {
    /// Statement kind and classes (`select`, `read`, `ddl`, Redis `get`/`read`, ...).
    pub kinds: &'a [&'a str],
    /// Objects touched: SQL `schema.table`, MongoDB `mongodb:db.coll`, Redis `redis:key`.
    pub objects: &'a [String],
    /// Fields read or written.
    pub fields: &'a [FieldRef<'a>],
    /// Functions called (lower case).
    pub functions: &'a [String],
    /// Guard facts.
    pub flags: Flags,
}

/// Why a statement was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Rule id (`usize::MAX` for the parse-error default).
    pub id: usize,
    /// Rule that refused it.
    pub rule: Arc<str>,
    /// Message for the client.
    pub message: String,
}

/// The outcome of [`RoleView::check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Set when an enforced rule refuses the statement.
    pub deny: Option<Denial>,
    /// Enforced rules that fired (deny, allow, limit).
    pub hits: Vec<usize>,
    /// Shadow rules that would have fired.
    pub shadow: Vec<usize>,
    /// Row cap.
    pub row_limit: Option<u64>,
    /// The enforced `limit` rule that set [`row_limit`](Self::row_limit) (the smallest cap).
    pub row_limit_rule: Option<usize>,
}

impl Verdict {
    /// Merge another statement's verdict into this one (multi-statement queries).
    pub fn merge(&mut self, o: Verdict) {
        if self.deny.is_none() {
            self.deny = o.deny;
        }
        for h in o.hits {
            if !self.hits.contains(&h) {
                self.hits.push(h);
            }
        }
        for h in o.shadow {
            if !self.shadow.contains(&h) {
                self.shadow.push(h);
            }
        }
        if o.row_limit.is_some_and(|b| self.row_limit.is_none_or(|a| b < a)) {
            self.row_limit = o.row_limit;
            self.row_limit_rule = o.row_limit_rule;
        }
    }
}

/// A compiled policy, shared by every session and swapped on reload.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    inner: Arc<Inner>,
}

/// (route, roles) a [`RoleView`] is cached under.
type ViewKey = (String, Vec<String>);

#[derive(Debug, Default)]
struct Inner {
    rules: Vec<Arc<Rule>>,
    names: Vec<Arc<str>>,
    exempt: Vec<String>,
    parse_error_denies: bool,
    trusted_functions: Arc<[String]>,
    has_user_policy: bool,
    views: RwLock<HashMap<ViewKey, Arc<RoleView>>>,
}

fn lower(v: &[String]) -> Vec<String> {
    v.iter().map(|s| s.trim().to_ascii_lowercase()).collect()
}

impl Policy {
    /// Compile the policy sections of a (validated) configuration.
    pub fn from_config(cfg: &Config) -> Result<Self, RulesError> {
        let key = match &cfg.masking.hash_key {
            Some(k) => {
                Some(HashKey::new(k.as_bytes()).map_err(|e| RulesError::Invalid(format!("masking.hash_key: {e}")))?)
            }
            None => None,
        };
        let labels: HashMap<&str, Vec<FieldPattern>> = cfg
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.matches.iter().map(|m| FieldPattern::parse(m)).collect()))
            .collect();
        let mut rules = Vec::new();
        for r in &cfg.rules {
            let mut fields: Vec<FieldPattern> = r.columns.iter().map(|c| FieldPattern::parse(c)).collect();
            for l in &r.labels {
                let pats = labels
                    .get(l.as_str())
                    .ok_or_else(|| RulesError::Invalid(format!("rule `{}`: unknown label `{l}`", r.name)))?;
                fields.extend(pats.iter().cloned());
            }
            let mask = match (&r.action, &r.with) {
                (RuleAction::Mask, Some(spec)) => Some(
                    MaskFn::parse(spec, key.as_ref())
                        .map_err(|e| RulesError::Invalid(format!("rule `{}`: with = {spec:?}: {e}", r.name)))?,
                ),
                _ => None,
            };
            rules.push(Rule {
                id: rules.len(),
                name: Arc::from(r.name.as_str()),
                action: r.action,
                shadow: r.mode == RuleMode::Shadow,
                roles: r.roles.clone(),
                routes: r.routes.clone(),
                statements: lower(&r.statements),
                tables: r.tables.clone(),
                fields,
                mask,
                max_rows: r.max_rows,
                guard: None,
                denied_functions: Vec::new(),
            });
        }
        let has_user_policy = !rules.is_empty();
        add_guards(&cfg.guards, &mut rules);
        let names = rules.iter().map(|r| r.name.clone()).collect();
        Ok(Policy {
            inner: Arc::new(Inner {
                rules: rules.into_iter().map(Arc::new).collect(),
                names,
                exempt: cfg.guards.exempt_roles.clone(),
                parse_error_denies: cfg.server.on_parse_error == dgf_config::OnParseError::Deny,
                trusted_functions: lower(&cfg.guards.trusted_functions).into(),
                has_user_policy,
                views: RwLock::new(HashMap::new()),
            }),
        })
    }

    /// No user rules: only guards (cheap path for sessions).
    pub fn has_user_rules(&self) -> bool {
        self.inner.has_user_policy
    }

    /// Rule names by id (user rules in file order, then guards named `guard:<name>`).
    pub fn rule_names(&self) -> &[Arc<str>] {
        &self.inner.names
    }

    /// Whether unparseable statements are denied (`server.on_parse_error`).
    pub fn parse_error_denies(&self) -> bool {
        self.inner.parse_error_denies
    }

    /// Whether the user rule with this id is in shadow mode (false for guards and unknown ids).
    pub fn is_shadow(&self, id: usize) -> bool {
        self.inner.rules.iter().any(|r| r.id == id && r.shadow)
    }

    /// The rules that apply to `roles` on `route`, cached.
    pub fn view(&self, route: &str, roles: &[String]) -> Arc<RoleView> {
        let key = (route.to_owned(), roles.to_vec());
        if let Ok(m) = self.inner.views.read() {
            if let Some(v) = m.get(&key) {
                return v.clone();
            }
        }
        let exempt = roles.iter().any(|r| self.inner.exempt.contains(r));
        let rules: Vec<Arc<Rule>> = self
            .inner
            .rules
            .iter()
            .filter(|r| r.roles.is_empty() || r.roles.iter().any(|x| roles.contains(x)))
            .filter(|r| r.routes.is_empty() || r.routes.iter().any(|x| x == route))
            .filter(|r| !(exempt && r.guard.is_some()))
            .cloned()
            .collect();
        let view = Arc::new(RoleView {
            masks: rules.iter().filter(|r| r.action == RuleAction::Mask).cloned().collect(),
            rules,
            parse_error_denies: self.inner.parse_error_denies,
            trusted_functions: self.inner.trusted_functions.clone(),
            verdicts: RwLock::default(),
        });
        if let Ok(mut m) = self.inner.views.write() {
            if m.len() < 10_000 {
                m.insert(key, view.clone());
            }
        }
        view
    }
}

fn add_guards(g: &GuardsConfig, rules: &mut Vec<Rule>) {
    let list = [
        (
            g.update_without_where,
            Guard::UpdateWithoutWhere,
            "update_without_where",
            "UPDATE without WHERE is not allowed",
        ),
        (
            g.delete_without_where,
            Guard::DeleteWithoutWhere,
            "delete_without_where",
            "DELETE without WHERE is not allowed",
        ),
        (
            g.multi_statement,
            Guard::MultiStatement,
            "multi_statement",
            "several statements in one query are not allowed",
        ),
        (g.ddl, Guard::Ddl, "ddl", "DDL is not allowed"),
        (g.copy_program, Guard::CopyProgram, "copy_program", "COPY ... PROGRAM is not allowed"),
        (g.set_role, Guard::SetRole, "set_role", "changing the server role is not allowed"),
        (g.functions, Guard::Functions, "functions", "this function is not allowed"),
    ];
    for (on, guard, name, _msg) in list {
        if !on {
            continue;
        }
        rules.push(Rule {
            id: rules.len(),
            name: Arc::from(format!("guard:{name}")),
            action: RuleAction::Deny,
            shadow: false,
            roles: Vec::new(),
            routes: Vec::new(),
            statements: Vec::new(),
            tables: Vec::new(),
            fields: Vec::new(),
            mask: None,
            max_rows: None,
            guard: Some(guard),
            denied_functions: if guard == Guard::Functions { lower(&g.denied_functions) } else { Vec::new() },
        });
    }
}

/// The rules that apply to one role set on one route.
#[derive(Debug)]
pub struct RoleView {
    rules: Vec<Arc<Rule>>,
    masks: Vec<Arc<Rule>>,
    parse_error_denies: bool,
    trusted_functions: Arc<[String]>,
    /// SQL verdicts by analysis (the analysis is kept alive so its address stays unique).
    pub(crate) verdicts: RwLock<HashMap<usize, sql::CachedVerdict>>,
}

impl RoleView {
    /// Whether any mask rule (enforced or shadow) applies.
    pub fn masks_anything(&self) -> bool {
        !self.masks.is_empty()
    }

    /// The first enforced deny rule that names objects starting with `prefix` (`"redis:"`),
    /// or all objects (`*`): id and name. A protocol refuses, for such a role, the commands
    /// that can reach objects they do not name (scripts, patterns).
    pub fn first_object_deny(&self, prefix: &str) -> Option<(usize, Arc<str>)> {
        self.rules
            .iter()
            .find(|r| {
                r.action == RuleAction::Deny && !r.shadow && r.tables.iter().any(|t| t == "*" || t.starts_with(prefix))
            })
            .map(|r| (r.id, r.name.clone()))
    }

    /// Whether any deny / allow / limit rule names objects: when none does, [`check`](Self::check)
    /// matches on statement kinds (and guard facts) only, and an action without objects gets
    /// the same verdict, except for a denial's message, which names the first object.
    pub fn objects_matter(&self) -> bool {
        self.rules.iter().any(|r| r.action != RuleAction::Mask && !r.tables.is_empty())
    }

    /// Whether any enforced `limit` rule applies.
    pub fn limits_anything(&self) -> bool {
        self.rules.iter().any(|r| r.action == RuleAction::Limit && !r.shadow)
    }

    /// Whether unparseable statements are denied.
    pub fn parse_error_denies(&self) -> bool {
        self.parse_error_denies
    }

    /// Whether `guards.trusted_functions` lists `name` (lower case; a schema-qualified name
    /// also matches by its last part).
    pub fn trusts_function(&self, name: &str) -> bool {
        let last = name.rsplit('.').next().unwrap_or(name);
        self.trusted_functions.iter().any(|p| glob_match(p, name, true) || glob_match(p, last, true))
    }

    /// The rule to name when a role is refused something dgf cannot see into: its first
    /// enforced mask rule, else its first enforced deny rule on tables.
    pub fn first_protecting_rule(&self) -> Option<(usize, Arc<str>)> {
        let mask = self.masks.iter().find(|r| !r.shadow).map(|r| (r.id, r.name.clone()));
        mask.or_else(|| {
            self.rules
                .iter()
                .find(|r| r.action == RuleAction::Deny && !r.shadow && !r.tables.is_empty())
                .map(|r| (r.id, r.name.clone()))
        })
    }

    /// The first mask rule for a field.
    pub fn mask_for(&self, f: &FieldRef<'_>) -> Option<MaskRule> {
        let r = self.masks.iter().find(|r| r.fields.iter().any(|p| p.matches(f)))?;
        Some(MaskRule { id: r.id, rule: r.name.clone(), func: r.mask.clone()?, shadow: r.shadow })
    }

    /// Every mask rule's field patterns in `ns` (enforced and shadow), in rule order: for
    /// protocols that must enumerate the labelled paths of an object (MongoDB documents).
    pub fn mask_patterns(&self, ns: Namespace) -> Vec<(&FieldPattern, MaskRule)> {
        let mut out = Vec::new();
        for r in &self.masks {
            let Some(func) = r.mask.clone() else { continue };
            for p in r.fields.iter().filter(|p| p.ns == ns) {
                out.push((p, MaskRule { id: r.id, rule: r.name.clone(), func: func.clone(), shadow: r.shadow }));
            }
        }
        out
    }

    /// The first mask rule that may apply to some field of `object` (`None` = clean object).
    pub fn mask_for_object(&self, ns: Namespace, object: &str) -> Option<MaskRule> {
        self.mask_for(&FieldRef { ns, object, field: None })
    }

    /// Evaluate deny / allow / limit rules and guards for one statement.
    pub fn check(&self, a: &Action<'_>) -> Verdict {
        let mut v = Verdict::default();
        let mut allowed = false;
        let mut first_deny: Option<&Rule> = None;
        for r in &self.rules {
            if r.action == RuleAction::Mask || !self.matches(r, a) {
                continue;
            }
            if r.shadow {
                v.shadow.push(r.id);
                continue;
            }
            match r.action {
                RuleAction::Allow => {
                    allowed = true;
                    v.hits.push(r.id);
                }
                RuleAction::Deny => {
                    if first_deny.is_none() {
                        first_deny = Some(r);
                    }
                }
                RuleAction::Limit => {
                    v.hits.push(r.id);
                    let cap = r.max_rows.unwrap_or(u64::MAX);
                    if v.row_limit.is_none_or(|l| cap < l) {
                        v.row_limit = Some(cap);
                        v.row_limit_rule = Some(r.id);
                    }
                }
                RuleAction::Mask => {}
            }
        }
        if let (Some(r), false) = (first_deny, allowed) {
            v.hits.push(r.id);
            v.deny = Some(Denial { id: r.id, rule: r.name.clone(), message: deny_message(r, a) });
        }
        v
    }

    fn matches(&self, r: &Rule, a: &Action<'_>) -> bool {
        if let Some(g) = r.guard {
            return guard_matches(g, r, a);
        }
        if !r.statements.is_empty()
            && !r.statements.iter().any(|s| s == "*" || s == "all" || a.kinds.iter().any(|k| k.eq_ignore_ascii_case(s)))
        {
            return false;
        }
        // Names written without a schema (`*.t`) may be in any schema: deny rules treat them as
        // matching (over-match, safe), allow rules as not matching unless the rule's schema is
        // `*` (an exception must never widen by spelling).
        let strict = r.action == RuleAction::Allow;
        if !r.tables.is_empty() && !a.objects.iter().any(|o| r.tables.iter().any(|t| table_matches(t, o, strict))) {
            return false;
        }
        if !r.fields.is_empty()
            && !a.fields.iter().any(|f| {
                r.fields
                    .iter()
                    .any(|p| p.matches(f) && !(strict && f.object.starts_with("*.") && !p.object.starts_with("*.")))
            })
        {
            return false;
        }
        true
    }
}

/// Table globs: `customers` matches the last part of `public.customers`; globs with a dot or a
/// protocol prefix (`redis:`, `mongodb:`) match the whole qualified name, except that an object
/// written without a schema (`*.t`) is compared by table name only (it may be in any schema).
fn table_matches(glob: &str, object: &str, strict: bool) -> bool {
    let prefixed = object.starts_with("redis:") || object.starts_with("mongodb:");
    if prefixed {
        return glob_match(glob, object, false);
    }
    if glob.contains('.') {
        // A name written without a schema may resolve to any schema: `public.t` must match it.
        match object.strip_prefix("*.") {
            Some(table) if !strict || glob.starts_with("*.") => {
                glob_match(glob.rsplit('.').next().unwrap_or(glob), table, true)
            }
            Some(_) => false,
            None => glob_match(glob, object, true),
        }
    } else {
        glob_match(glob, object.rsplit('.').next().unwrap_or(object), true)
    }
}

fn guard_matches(g: Guard, r: &Rule, a: &Action<'_>) -> bool {
    match g {
        Guard::UpdateWithoutWhere => a.flags.update_without_where,
        Guard::DeleteWithoutWhere => a.flags.delete_without_where,
        Guard::MultiStatement => a.flags.multi_statement,
        Guard::Ddl => a.kinds.contains(&"ddl"),
        Guard::CopyProgram => a.flags.copy_program,
        Guard::SetRole => a.flags.set_role,
        Guard::Functions => a.functions.iter().any(|f| {
            let last = f.rsplit('.').next().unwrap_or(f);
            r.denied_functions.iter().any(|d| d == f || d == last)
        }),
    }
}

fn deny_message(r: &Rule, a: &Action<'_>) -> String {
    let what = match r.guard {
        Some(Guard::UpdateWithoutWhere) => "UPDATE without WHERE is not allowed".to_owned(),
        Some(Guard::DeleteWithoutWhere) => "DELETE without WHERE is not allowed".to_owned(),
        Some(Guard::MultiStatement) => "several statements in one query are not allowed".to_owned(),
        Some(Guard::Ddl) => "DDL is not allowed".to_owned(),
        Some(Guard::CopyProgram) => "COPY ... PROGRAM is not allowed".to_owned(),
        Some(Guard::SetRole) => "changing the server role is not allowed".to_owned(),
        Some(Guard::Functions) => {
            let f = a.functions.iter().find(|f| {
                let last = f.rsplit('.').next().unwrap_or(f);
                r.denied_functions.iter().any(|d| d == *f || d == last)
            });
            format!("function {} is not allowed", f.map_or("?", |s| s.as_str()))
        }
        None => {
            let kind = a.kinds.first().copied().unwrap_or("statement");
            // Name the object the rule matched (a joined collection), not just the first one.
            let strict = r.action == RuleAction::Allow;
            let hit = a.objects.iter().find(|o| r.tables.iter().any(|t| table_matches(t, o, strict)));
            match hit.or(a.objects.first()) {
                Some(o) => format!("{kind} on {o} is not allowed"),
                None => format!("{kind} is not allowed"),
            }
        }
    };
    format!("dgf: permission denied: {what} (rule \"{}\")", r.name)
}
