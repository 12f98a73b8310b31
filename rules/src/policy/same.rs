//! Comparing role views by content: a reload builds new [`RoleView`]s even where nothing changed
//! for a role, and a protocol that keeps decisions across a reload (MongoDB cursors keep their
//! mask plan and row cap) asks whether the decision it holds would still be taken.

use super::{RoleView, Rule};

impl RoleView {
    /// Whether `other` decides every statement, command and reply exactly as `self` does: the
    /// same rules (names, actions, modes, statements, objects, fields and label patterns, mask
    /// functions and keys, caps, guards) in the same order, and the same parse-error and
    /// trusted-function settings. Rule ids (positions in the whole policy) are not compared: a
    /// rule added for another role shifts them without changing this role's decisions.
    pub fn same_rules(&self, other: &RoleView) -> bool {
        self.parse_error_denies == other.parse_error_denies
            && self.trusted_functions == other.trusted_functions
            && self.rules.len() == other.rules.len()
            && self.rules.iter().zip(&other.rules).all(|(a, b)| same_rule(a, b))
    }
}

fn same_rule(a: &Rule, b: &Rule) -> bool {
    a.name == b.name
        && a.action == b.action
        && a.shadow == b.shadow
        && a.roles == b.roles
        && a.routes == b.routes
        && a.statements == b.statements
        && a.tables == b.tables
        && a.fields == b.fields
        && a.mask == b.mask
        && a.max_rows == b.max_rows
        && a.guard == b.guard
        && a.denied_functions == b.denied_functions
}

#[cfg(test)]
mod tests {
    use crate::policy::Policy;

    fn policy(extra: &str) -> Policy {
        let text = format!(
            r#"
[masking]
hash_key = "0123456789abcdef0123456789abcdef"

[[labels]]
name = "email"
match = ["mongodb:app.users.email"]

[[rules]]
name = "mask email"
roles = ["analyst"]
action = "mask"
labels = ["email"]
with = "hash"

[[rules]]
name = "cap"
roles = ["analyst"]
action = "limit"
statements = ["read"]
max_rows = 5
{extra}"#
        );
        let cfg = dgf_config::parse_str(&text, "t.toml", &|_| None).expect("config");
        Policy::from_config(&cfg).expect("policy")
    }

    fn same(a: &str, b: &str) -> bool {
        let roles = ["analyst".to_owned()];
        policy(a).view("r", &roles).same_rules(&policy(b).view("r", &roles))
    }

    #[test]
    fn unchanged_or_unrelated_changes_keep_views_equal() {
        assert!(same("", ""));
        // A rule for another role (it shifts rule ids) changes nothing for analysts.
        let other = "[[rules]]\nname = \"x\"\nroles = [\"admin\"]\naction = \"deny\"\nstatements = [\"drop\"]\n";
        assert!(same("", other));
    }

    #[test]
    fn changes_for_the_role_make_views_differ() {
        let deny = "[[rules]]\nname = \"x\"\nroles = [\"analyst\"]\naction = \"deny\"\nstatements = [\"drop\"]\n";
        assert!(!same("", deny));
        let label = "[[labels]]\nname = \"more\"\nmatch = [\"mongodb:app.users.phone\"]\n";
        let mask = format!("{label}[[rules]]\nname = \"m\"\nroles = [\"analyst\"]\naction = \"mask\"\nlabels = [\"more\"]\nwith = \"redact\"\n");
        assert!(!same("", &mask));
        let a = policy("");
        let roles = ["analyst".to_owned()];
        let text = |cap: &str, key: &str| {
            format!(
                "[masking]\nhash_key = \"{key}\"\n[[labels]]\nname = \"email\"\nmatch = [\"mongodb:app.users.email\"]\n\
                 [[rules]]\nname = \"mask email\"\nroles = [\"analyst\"]\naction = \"mask\"\nlabels = [\"email\"]\nwith = \"hash\"\n\
                 [[rules]]\nname = \"cap\"\nroles = [\"analyst\"]\naction = \"limit\"\nstatements = [\"read\"]\nmax_rows = {cap}\n"
            )
        };
        let view = |t: String| {
            let cfg = dgf_config::parse_str(&t, "t.toml", &|_| None).expect("config");
            Policy::from_config(&cfg).expect("policy").view("r", &roles)
        };
        let base = a.view("r", &roles);
        assert!(base.same_rules(&view(text("5", "0123456789abcdef0123456789abcdef"))));
        assert!(!base.same_rules(&view(text("6", "0123456789abcdef0123456789abcdef"))), "cap changed");
        assert!(!base.same_rules(&view(text("5", "fedcba9876543210fedcba9876543210"))), "hash key changed");
    }
}
