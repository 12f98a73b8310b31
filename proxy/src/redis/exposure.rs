//! Fail-closed governance for Redis: refuses, for a role whose view masks Redis data, the
//! commands that would return or copy a masked key's value in a form dgf does not mask
//! (GETRANGE, HVALS, HSCAN, DUMP, COPY, SET ... GET, ...), and, for a role with deny rules on
//! keys, the commands that reach keys they do not name (scripts, SORT ... GET patterns).
//! See `dgf_rules::redis::ValueUse`.

use super::govern::GovCtx;
use dgf_rules::redis::{each_key, lookup, value_use, ValueUse};
use dgf_rules::{Denial, FieldRef, Namespace, RoleView};
use std::sync::Arc;

/// The first enforced (not shadow) Redis mask rule of `view`: id and name.
pub fn first_redis_mask(view: &RoleView) -> Option<(usize, Arc<str>)> {
    view.mask_patterns(Namespace::Redis).into_iter().find(|(_, m)| !m.shadow).map(|(_, m)| (m.id, m.rule))
}

/// The refusal for `argv` when it would expose masked data; None when it is safe for this role.
pub fn check(g: &GovCtx, argv: &[&[u8]]) -> Option<Denial> {
    if g.redis_mask.is_none() && g.redis_key_deny.is_none() {
        return None;
    }
    let deny = |id: usize, rule: Arc<str>, what: String| {
        // Worded only for a refusal: commands that pass allocate nothing here.
        let name = String::from_utf8_lossy(argv.first().copied().unwrap_or_default()).to_uppercase();
        let message = format!("dgf: {name} {what} (rule \"{rule}\")");
        Some(Denial { id, rule, message })
    };
    let used = value_use(argv);
    if let (ValueUse::Anything, Some((id, rule))) = (used, g.redis_key_deny.clone()) {
        return deny(id, rule, "can reach keys it does not name, and keys are denied to this role".to_owned());
    }
    let (first_id, first_rule) = g.redis_mask.clone()?;
    let masked_key = |k: &[u8]| {
        let key = String::from_utf8_lossy(k);
        g.view.mask_for_object(Namespace::Redis, &key).filter(|m| !m.shadow).map(|m| (m, key.into_owned()))
    };
    match used {
        ValueUse::Safe | ValueUse::Masked => None,
        ValueUse::Field => {
            let (key, field) = (argv.get(1).copied()?, argv.get(2).copied()?);
            let (k, f) = (String::from_utf8_lossy(key), String::from_utf8_lossy(field));
            let m = g.view.mask_for(&FieldRef { ns: Namespace::Redis, object: &k, field: Some(&f) })?;
            if m.shadow {
                return None;
            }
            deny(m.id, m.rule, format!("would return masked field '{f}' of key '{k}' unmasked"))
        }
        ValueUse::Exposes => {
            let info = argv.first().and_then(|n| lookup(n))?;
            let mut hit = None;
            each_key(info, argv, |k| {
                if hit.is_none() {
                    hit = masked_key(k);
                }
            });
            let (m, key) = hit?;
            deny(m.id, m.rule, format!("would hand out masked data of key '{key}' unmasked"))
        }
        ValueUse::Anything => deny(first_id, first_rule, "can read masked data that dgf cannot mask".to_owned()),
    }
}
