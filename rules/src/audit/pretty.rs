//! One-line human rendering of audit records, for `dgf audit tail`.

use serde_json::Value;
use std::fmt::Write;

/// Renders one audit line as one line of text:
/// `TIME #SEQ USER@CLIENT PROTOCOL:ROUTE/DB DECISION KIND FINGERPRINT [rules=..] [rows=..]
/// [bytes=..] [dur=..] [error=..]` (`bytes` only when not 0). Control characters are escaped so a hostile statement cannot move the
/// cursor or forge extra lines; an unreadable line renders as `<not an audit record: ...>`.
pub fn pretty(line: &str) -> String {
    let v: Value = match serde_json::from_str(line.trim_end()) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return format!("<not an audit record: {}>", clean(line.trim_end(), 120)),
        Err(e) => return format!("<not an audit record: {e}: {}>", clean(line.trim_end(), 120)),
    };
    let s = |k: &str| v.get(k).and_then(Value::as_str).map_or_else(|| "-".to_owned(), |s| clean(s, 200));
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    let list = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(|s| clean(s, 80)).collect())
            .unwrap_or_default()
    };
    let mut out = String::with_capacity(160);
    let _ = write!(out, "{} #{} ", s("time"), n("seq").map_or_else(|| "?".to_owned(), |n| n.to_string()));
    let _ = write!(out, "{}@{} {}:{}/{} ", s("user"), s("client"), s("protocol"), s("route"), s("database"));
    let _ = write!(out, "{} {} {}", s("decision").to_uppercase(), s("kind"), s("fingerprint"));
    let rules = list("rules");
    if !rules.is_empty() {
        let _ = write!(out, " rules=[{}]", rules.join(", "));
    }
    if let Some(rows) = n("rows") {
        let _ = write!(out, " rows={rows}");
    }
    if let Some(bytes) = n("bytes").filter(|&b| b > 0) {
        let _ = write!(out, " bytes={bytes}");
    }
    if let Some(us) = n("duration_us") {
        if us >= 1000 {
            let _ = write!(out, " dur={:.1}ms", us as f64 / 1000.0);
        } else {
            let _ = write!(out, " dur={us}us");
        }
    }
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        let _ = write!(out, " error={}", clean(e, 200));
    }
    out
}

/// Escapes control characters and caps the length (in chars) with an ellipsis.
fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max + 3));
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line() {
        let line = r#"{"time":"2025-01-31T12:00:00.123Z","seq":42,"instance":"i","protocol":"postgres","route":"pg","client":"10.0.0.1:5555","user":"alice","roles":["analyst"],"database":"app","kind":"select","fingerprint":"SELECT * FROM t WHERE id = $1","objects":["public.t"],"decision":"mask","rules":["mask email","x"],"rows":3,"bytes":100,"duration_us":1500,"error":null,"prev_hash":"00","hash":"11"}"#;
        assert_eq!(
            pretty(line),
            "2025-01-31T12:00:00.123Z #42 alice@10.0.0.1:5555 postgres:pg/app MASK select \
             SELECT * FROM t WHERE id = $1 rules=[mask email, x] rows=3 bytes=100 dur=1.5ms"
        );
    }

    #[test]
    fn hostile_and_broken_lines_stay_on_one_line() {
        let line = r#"{"seq":1,"user":"a\u001b[2J","fingerprint":"x\ny","decision":"deny","error":"42501"}"#;
        let p = pretty(line);
        assert!(!p.contains('\n') && !p.contains('\u{1b}'), "{p}");
        assert!(p.contains("a\\u{1b}[2J") && p.contains("x y") && p.ends_with("error=42501"), "{p}");
        assert!(pretty("{not json").starts_with("<not an audit record"));
        assert!(pretty("[1,2]").starts_with("<not an audit record"));
    }
}
