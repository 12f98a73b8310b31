//! `${NAME}` environment interpolation of one string value (applied after TOML parsing).
//!
//! Syntax:
//! - `${NAME}`: the value of `NAME`; an undefined variable is an error.
//! - `${NAME:-default}`: the value of `NAME`, or `default` when it is undefined or empty.
//!   The default is literal text up to the first `}` (no nesting, no escapes).
//! - `$$`: a literal `$`. A `$` followed by anything other than `{` or `$` is kept as is,
//!   so `pa$word` and SCRAM verifiers (`SCRAM-SHA-256$4096:...`) need no escaping.
//!
//! Names are `[A-Za-z_][A-Za-z0-9_]*`. Substituted values are never scanned again, so a secret
//! containing `$` or `${` is inserted verbatim. Error messages name variables, never values.

use std::fmt;

/// Why a string could not be interpolated. Never carries a variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterpolateError {
    /// `${NAME}` with `NAME` not set.
    Undefined(String),
    /// `${` without a closing `}`.
    Unterminated,
    /// `${...}` whose name is not `[A-Za-z_][A-Za-z0-9_]*`.
    BadName(String),
}

impl fmt::Display for InterpolateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Undefined(name) => write!(
                f,
                "environment variable `{name}` is not set (use `${{{name}:-default}}` for a default, `$$` for a literal `$`)"
            ),
            Self::Unterminated => f.write_str("`${` without a closing `}` (write `$${` for a literal `${`)"),
            Self::BadName(name) => write!(
                f,
                "`${{{name}}}`: a variable name is letters, digits and `_`, not starting with a digit"
            ),
        }
    }
}

/// Result of interpolating one string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpolated {
    /// The string with every `${...}` and `$$` replaced.
    pub text: String,
    /// True when at least one variable's value (not only a default or an escape) was inserted.
    pub used_env: bool,
}

/// Interpolates `input`, reporting every problem in it (not only the first).
pub fn interpolate(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Interpolated, Vec<InterpolateError>> {
    if !input.contains('$') {
        return Ok(Interpolated { text: input.to_owned(), used_env: false });
    }
    let mut out = String::with_capacity(input.len());
    let mut errors = Vec::new();
    let mut used_env = false;
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body_and_tail) = after.strip_prefix('{') {
            let Some(close) = body_and_tail.find('}') else {
                errors.push(InterpolateError::Unterminated);
                rest = "";
                break;
            };
            let body = &body_and_tail[..close];
            rest = &body_and_tail[close + 1..];
            let (name, default) = match body.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (body, None),
            };
            if !valid_name(name) {
                errors.push(InterpolateError::BadName(name.to_owned()));
                continue;
            }
            match (env(name), default) {
                (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Some(value), _) => {
                    used_env = true;
                    out.push_str(&value);
                }
                (None, Some(default)) => out.push_str(default),
                (None, None) => errors.push(InterpolateError::Undefined(name.to_owned())),
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(Interpolated { text: out, used_env })
    } else {
        Err(errors)
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "USER" => Some("alice".into()),
            "EMPTY" => Some(String::new()),
            "TRICKY" => Some("a$${B}\"'".into()),
            _ => None,
        }
    }

    fn run(s: &str) -> Result<String, Vec<InterpolateError>> {
        interpolate(s, &env).map(|i| i.text)
    }

    #[test]
    fn plain_strings_are_untouched() {
        assert_eq!(run("hello").unwrap(), "hello");
        assert_eq!(run("pa$word").unwrap(), "pa$word");
        assert_eq!(run("cost: 5$").unwrap(), "cost: 5$");
        let scram = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy";
        assert_eq!(run(scram).unwrap(), scram);
    }

    #[test]
    fn variables_and_defaults() {
        let r = interpolate("u=${USER}!", &env).unwrap();
        assert_eq!(r.text, "u=alice!");
        assert!(r.used_env);
        assert_eq!(run("${MISSING:-fallback}").unwrap(), "fallback");
        assert_eq!(run("${EMPTY:-fallback}").unwrap(), "fallback");
        assert_eq!(run("[${EMPTY}]").unwrap(), "[]");
        assert_eq!(run("${USER:-x}").unwrap(), "alice");
        assert_eq!(run("${MISSING:-}").unwrap(), "");
        let r = interpolate("${MISSING:-d}", &env).unwrap();
        assert!(!r.used_env);
    }

    #[test]
    fn escapes() {
        assert_eq!(run("$${USER}").unwrap(), "${USER}");
        assert_eq!(run("$$").unwrap(), "$");
        assert_eq!(run("a$$$${USER}").unwrap(), "a$${USER}");
        assert_eq!(run("$$$${USER}").unwrap(), "$${USER}");
        assert_eq!(run("$$${USER}").unwrap(), "$alice");
    }

    #[test]
    fn values_are_not_rescanned() {
        assert_eq!(run("${TRICKY}").unwrap(), "a$${B}\"'");
    }

    #[test]
    fn all_errors_reported_without_values() {
        let errs = run("${A} ${USER} ${B} ${1X} ${").unwrap_err();
        assert_eq!(
            errs,
            vec![
                InterpolateError::Undefined("A".into()),
                InterpolateError::Undefined("B".into()),
                InterpolateError::BadName("1X".into()),
                InterpolateError::Unterminated,
            ]
        );
        for e in &errs {
            assert!(!e.to_string().contains("alice"));
        }
        assert!(errs[0].to_string().contains("`A` is not set"));
    }
}
