//! The single governance hook of the MongoDB route: one call per command, before it is
//! forwarded, returning a denial or the masking plan to apply to its replies.

use dgf_protocols::mongodb::inspect::CommandInfo;

/// Fields to mask in this command's replies: (reply path, mask function).
#[derive(Default)]
pub struct MaskPlan {
    /// Dotted paths inside the reply body, e.g. `cursor.firstBatch.email`.
    pub paths: Vec<(Vec<String>, MaskFn)>,
}

/// A mask applied to one string value.
pub type MaskFn = std::sync::Arc<dyn Fn(&str) -> String + Send + Sync>;

impl MaskPlan {
    /// Whether replies pass untouched.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// A refusal: the rule that fired and the message for the client.
#[derive(Debug, Clone)]
pub struct Denied {
    /// Rule name.
    pub rule: String,
    /// Message.
    pub message: String,
}

/// Decide about one command: its kinds (name + class, see `dgf_rules::mongodb`) and the
/// collection it touches (`mongodb:db.coll`) go through the role's policy view. Masking plans
/// are not built yet (the reply hook applies whatever plan this returns).
pub fn govern(
    policy: &dgf_rules::Policy,
    route: &str,
    roles: &[String],
    info: &CommandInfo<'_>,
) -> Result<MaskPlan, Denied> {
    let kinds_owned = dgf_rules::mongodb::kinds(info.name, None);
    let kinds: Vec<&str> = kinds_owned.iter().map(String::as_str).collect();
    let objects: Vec<String> = match (info.db, info.collection) {
        (Some(db), Some(c)) => vec![format!("mongodb:{db}.{c}")],
        (Some(db), None) => vec![format!("mongodb:{db}")],
        _ => Vec::new(),
    };
    let view = policy.view(route, roles);
    let v = view.check(&dgf_rules::Action { kinds: &kinds, objects: &objects, ..Default::default() });
    if let Some(d) = v.deny {
        return Err(Denied { rule: d.rule.to_string(), message: d.message });
    }
    Ok(MaskPlan::default())
}
