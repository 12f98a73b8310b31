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

/// Decide about one command. Until the policy engine lands this allows everything and masks
/// nothing; the session already calls it once per command and applies the plan to replies.
pub fn govern(_info: &CommandInfo<'_>, _roles: &[String]) -> Result<MaskPlan, Denied> {
    Ok(MaskPlan::default())
}
