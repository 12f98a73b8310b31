//! Mask specs of `mask` rules (`with = "..."`): redact | null | email | hash |
//! partial(keep_first=N, keep_last=N) | fixed("text").

use std::fmt;

/// A parsed `with` value of a `mask` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskSpec {
    /// Replace the value with a fixed redaction marker.
    Redact,
    /// Replace the value with NULL / nil.
    Null,
    /// Keep the shape of an e-mail address, hide the local part.
    Email,
    /// Replace the value with a stable hash.
    Hash,
    /// Keep the first / last characters, hide the rest.
    Partial {
        /// Characters kept at the start.
        keep_first: Option<usize>,
        /// Characters kept at the end.
        keep_last: Option<usize>,
    },
    /// Replace the value with this text.
    Fixed(String),
}

impl fmt::Display for MaskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redact => f.write_str("redact"),
            Self::Null => f.write_str("null"),
            Self::Email => f.write_str("email"),
            Self::Hash => f.write_str("hash"),
            Self::Partial { keep_first, keep_last } => {
                let args: Vec<String> = [("keep_first", keep_first), ("keep_last", keep_last)]
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
                    .collect();
                write!(f, "partial({})", args.join(", "))
            }
            Self::Fixed(text) => write!(f, "fixed({text:?})"),
        }
    }
}

const FORMS: &str = "expected redact | null | email | hash | partial(keep_first=N, keep_last=N) | fixed(\"text\")";

/// Parses a mask spec.
pub fn parse_mask_spec(spec: &str) -> Result<MaskSpec, String> {
    let s = spec.trim();
    match s {
        "redact" => return Ok(MaskSpec::Redact),
        "null" => return Ok(MaskSpec::Null),
        "email" => return Ok(MaskSpec::Email),
        "hash" => return Ok(MaskSpec::Hash),
        _ => {}
    }
    let (name, args) = match s.split_once('(') {
        Some((name, rest)) => match rest.strip_suffix(')') {
            Some(args) => (name.trim(), args),
            None => return Err(format!("mask `{s}`: missing `)`")),
        },
        None if s == "partial" => {
            return Err("mask `partial` needs keep_first=N and/or keep_last=N, e.g. partial(keep_last=4)".into())
        }
        None if s == "fixed" => return Err("mask `fixed` needs a text, e.g. fixed(\"***\")".into()),
        None => return Err(format!("unknown mask `{s}`: {FORMS}")),
    };
    match name {
        "partial" => parse_partial(args),
        "fixed" => parse_fixed(args.trim()).map(MaskSpec::Fixed),
        _ => Err(format!("unknown mask `{name}(...)`: {FORMS}")),
    }
}

fn parse_partial(args: &str) -> Result<MaskSpec, String> {
    let mut keep_first = None;
    let mut keep_last = None;
    for arg in args.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let Some((key, value)) = arg.split_once('=') else {
            return Err(format!("partial(...): `{arg}` should be keep_first=N or keep_last=N"));
        };
        let n: usize =
            value.trim().parse().map_err(|_| format!("partial(...): `{}` must be a whole number", value.trim()))?;
        let slot = match key.trim() {
            "keep_first" => &mut keep_first,
            "keep_last" => &mut keep_last,
            other => {
                return Err(format!("partial(...): unknown argument `{other}` (expected keep_first or keep_last)"))
            }
        };
        if slot.replace(n).is_some() {
            return Err(format!("partial(...): `{}` given twice", key.trim()));
        }
    }
    if keep_first.is_none() && keep_last.is_none() {
        return Err("partial(...) needs keep_first=N and/or keep_last=N".into());
    }
    Ok(MaskSpec::Partial { keep_first, keep_last })
}

/// Parses `"text"` or `'text'`; inside double quotes `\"` and `\\` are escapes.
fn parse_fixed(arg: &str) -> Result<String, String> {
    const HINT: &str = "fixed(...) takes one quoted text, e.g. fixed(\"***\")";
    let mut chars = arg.chars();
    let quote = match chars.next() {
        Some(q @ ('"' | '\'')) => q,
        _ => return Err(HINT.into()),
    };
    let mut out = String::new();
    let mut closed = false;
    while let Some(c) = chars.next() {
        if closed {
            return Err(HINT.into());
        }
        match c {
            '\\' if quote == '"' => match chars.next() {
                Some(e @ ('"' | '\\')) => out.push(e),
                _ => return Err("fixed(\"...\"): only \\\" and \\\\ are escapes".into()),
            },
            c if c == quote => closed = true,
            c => out.push(c),
        }
    }
    if closed {
        Ok(out)
    } else {
        Err(HINT.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_specs() {
        let ok = |s: &str| parse_mask_spec(s).unwrap();
        assert_eq!(ok("redact"), MaskSpec::Redact);
        assert_eq!(ok(" null "), MaskSpec::Null);
        assert_eq!(ok("email"), MaskSpec::Email);
        assert_eq!(ok("hash"), MaskSpec::Hash);
        assert_eq!(ok("partial(keep_last=4)"), MaskSpec::Partial { keep_first: None, keep_last: Some(4) });
        assert_eq!(
            ok("partial( keep_last = 4 , keep_first=1 )"),
            MaskSpec::Partial { keep_first: Some(1), keep_last: Some(4) }
        );
        assert_eq!(ok("fixed(\"x\")"), MaskSpec::Fixed("x".into()));
        assert_eq!(ok("fixed('a\"b')"), MaskSpec::Fixed("a\"b".into()));
        assert_eq!(ok(r#"fixed("say \"hi\" \\o/")"#), MaskSpec::Fixed(r#"say "hi" \o/"#.into()));
        assert_eq!(ok("fixed(\"\")"), MaskSpec::Fixed(String::new()));
        assert_eq!(ok("partial(keep_first=2)").to_string(), "partial(keep_first=2)");
    }

    #[test]
    fn invalid_specs() {
        let cases = [
            ("blur", "unknown mask `blur`"),
            ("partial", "needs keep_first=N and/or keep_last=N"),
            ("partial()", "needs keep_first=N and/or keep_last=N"),
            ("partial(keep_last=x)", "must be a whole number"),
            ("partial(keep_last=-1)", "must be a whole number"),
            ("partial(keep=1)", "unknown argument `keep`"),
            ("partial(keep_last=1, keep_last=2)", "given twice"),
            ("partial(keep_last=1", "missing `)`"),
            ("fixed", "needs a text"),
            ("fixed(x)", "one quoted text"),
            ("fixed(\"x\" \"y\")", "one quoted text"),
            ("fixed(\"x)", "one quoted text"),
            ("hash(sha1)", "unknown mask `hash(...)`"),
        ];
        for (spec, want) in cases {
            let e = parse_mask_spec(spec).unwrap_err();
            assert!(e.contains(want), "{spec}: {e}");
        }
    }
}
