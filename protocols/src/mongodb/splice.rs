//! Replace values inside a raw BSON document by splicing bytes: walk a dotted field path
//! (descending into every element of arrays on the way, so `cursor.firstBatch.email` reaches
//! the `email` of every document in the batch and `addresses.city` every address), hand each
//! string found to a callback, write the new value and fix the lengths of every enclosing
//! document. Untouched bytes are copied as they are.
//!
//! Path segments: a key; `*` (any key at this level); and two forms for the flattened dotted
//! keys of change-stream `updatedFields` (`{"contacts.0.phone": ...}`), which only match keys
//! that contain a dot, comparing their parts with array indices (all-digit parts) left out:
//! `a.b.*` matches a dotted key whose parts start with `a`, `b` (`a.b`, `a.0.b`, `a.b.c`);
//! `a.b.#` matches a dotted key whose parts are exactly `a`, `b` (`a.b`, `a.3.b`, `a.b.1`), and
//! the path continues inside its value. `*` parts match any part.

use super::bsonwalk::{elements, kind};
use super::MongoProtoError as E;

/// What to put in place of a string value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replacement {
    /// Another string.
    Str(String),
    /// BSON null.
    Null,
}

/// A value found at the end of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// A UTF-8 string.
    Str(&'a str),
    /// Any other type (the BSON element type byte); documents included, arrays never (their
    /// elements are visited instead).
    Other(u8),
}

/// Replace every string reached by `path` in `doc`. Returns `None` when nothing changed.
/// `f` gets each string and returns its replacement (or `None` to keep it). Depth is capped
/// by `max_depth` (the document itself is depth 1).
pub fn replace_strings(
    doc: &[u8],
    path: &[&str],
    max_depth: usize,
    f: &mut dyn FnMut(&str) -> Option<Replacement>,
) -> Result<Option<Vec<u8>>, E> {
    replace_values(doc, path, max_depth, &mut |v| match v {
        Value::Str(s) => f(s),
        Value::Other(_) => None,
    })
}

/// Like [`replace_strings`], for values of any type: `f` also sees non-string values
/// (numbers, dates, subdocuments...) and may replace them.
pub fn replace_values(
    doc: &[u8],
    path: &[&str],
    max_depth: usize,
    f: &mut dyn FnMut(Value<'_>) -> Option<Replacement>,
) -> Result<Option<Vec<u8>>, E> {
    if path.is_empty() {
        return Ok(None);
    }
    rewrite(doc, 0, path, false, 1, max_depth, f)
}

/// Whether path segment `seg` names `key` (see the module docs).
fn seg_matches(seg: &str, key: &[u8]) -> bool {
    if seg == "*" || seg.as_bytes() == key {
        return true;
    }
    if let Some(head) = seg.strip_suffix(".*") {
        return flat_matches(head, key, true);
    }
    if let Some(head) = seg.strip_suffix(".#") {
        return flat_matches(head, key, false);
    }
    false
}

/// A flattened dotted key against a dotted pattern, array indices left out on both sides.
fn flat_matches(pattern: &str, key: &[u8], prefix: bool) -> bool {
    let Ok(key) = std::str::from_utf8(key) else { return false };
    if !key.contains('.') {
        return false;
    }
    let named = |s: &str| !s.is_empty() && !s.bytes().all(|b| b.is_ascii_digit());
    let mut k = key.split('.').filter(|p| named(p));
    for p in pattern.split('.').filter(|p| named(p)) {
        match k.next() {
            Some(kp) if p == "*" || p == kp => {}
            _ => return false,
        }
    }
    prefix || k.next().is_none()
}

/// Count the values reached by `path` (any type); used to decide whether a reply needs work.
pub fn count_at(doc: &[u8], path: &[&str], max_depth: usize) -> Result<usize, E> {
    let mut n = 0;
    count(doc, 0, path, false, 1, max_depth, &mut n)?;
    Ok(n)
}

fn count(b: &[u8], at: usize, path: &[&str], array: bool, depth: usize, max: usize, n: &mut usize) -> Result<(), E> {
    if depth > max {
        return Err(E::TooDeep(max));
    }
    for e in elements(b, at)? {
        let rest = if array {
            path
        } else if seg_matches(path[0], e.key) {
            &path[1..]
        } else {
            continue;
        };
        match e.kind {
            kind::ARRAY => count(b, e.value_start, rest, true, depth + 1, max, n)?,
            _ if rest.is_empty() => *n += 1,
            kind::DOCUMENT => count(b, e.value_start, rest, false, depth + 1, max, n)?,
            _ => {}
        }
    }
    Ok(())
}

/// Rewrite the document (or array, when `array`) at `b[at..]`. In array mode every element
/// continues with the same `path`; otherwise only the element named `path[0]` continues.
fn rewrite(
    b: &[u8],
    at: usize,
    path: &[&str],
    array: bool,
    depth: usize,
    max: usize,
    f: &mut dyn FnMut(Value<'_>) -> Option<Replacement>,
) -> Result<Option<Vec<u8>>, E> {
    if depth > max {
        return Err(E::TooDeep(max));
    }
    let els = elements(b, at)?;
    let mut out: Option<Vec<u8>> = None;
    let mut copied_to = at + 4;
    for e in &els {
        let rest = if array {
            path
        } else if seg_matches(path[0], e.key) {
            &path[1..]
        } else {
            continue;
        };
        let new_value: Option<(u8, Vec<u8>)> = match e.kind {
            kind::ARRAY => rewrite(b, e.value_start, rest, true, depth + 1, max, f)?.map(|v| (kind::ARRAY, v)),
            kind::STRING if rest.is_empty() => {
                let s = std::str::from_utf8(&b[e.value_start + 4..e.end - 1])
                    .map_err(|_| E::Bson("string is not UTF-8"))?;
                f(Value::Str(s)).map(|r| match r {
                    Replacement::Str(s) => (kind::STRING, bson_string(&s)),
                    Replacement::Null => (kind::NULL, Vec::new()),
                })
            }
            kind::DOCUMENT if !rest.is_empty() => {
                rewrite(b, e.value_start, rest, false, depth + 1, max, f)?.map(|v| (kind::DOCUMENT, v))
            }
            k if rest.is_empty() => f(Value::Other(k)).map(|r| match r {
                Replacement::Str(s) => (kind::STRING, bson_string(&s)),
                Replacement::Null => (kind::NULL, Vec::new()),
            }),
            _ => None,
        };
        if let Some((k, v)) = new_value {
            let o = out.get_or_insert_with(|| {
                let mut o = Vec::with_capacity(b.len() + 16);
                o.extend_from_slice(&b[at..at + 4]);
                o
            });
            o.extend_from_slice(&b[copied_to..e.start]);
            o.push(k);
            o.extend_from_slice(&b[e.start + 1..e.value_start]);
            o.extend_from_slice(&v);
            copied_to = e.end;
        }
    }
    let Some(mut o) = out else { return Ok(None) };
    let end = at + i32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
    o.extend_from_slice(&b[copied_to..end]);
    let len = o.len() as i32;
    o[..4].copy_from_slice(&len.to_le_bytes());
    Ok(Some(o))
}

fn bson_string(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 5);
    v.extend_from_slice(&((s.len() + 1) as i32).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, Document};

    fn mask(d: &Document, path: &str) -> Option<Document> {
        let b = d.to_vec().unwrap();
        let p: Vec<&str> = path.split('.').collect();
        let out = replace_strings(&b, &p, 32, &mut |s| Some(Replacement::Str(format!("<{}>", s.len())))).unwrap()?;
        crate::mongodb::bsonwalk::validate(&out, 32).unwrap();
        Some(Document::from_reader(&out[..]).unwrap())
    }

    #[test]
    fn top_level_and_nested() {
        let d = doc! { "_id": 1, "email": "a@b.c", "n": 2 };
        assert_eq!(mask(&d, "email").unwrap(), doc! { "_id": 1, "email": "<5>", "n": 2 });
        let d = doc! { "a": { "b": { "c": "secret", "d": 1 }, "e": "x" }, "z": true };
        assert_eq!(mask(&d, "a.b.c").unwrap(), doc! { "a": { "b": { "c": "<6>", "d": 1 }, "e": "x" }, "z": true });
        assert_eq!(mask(&d, "a.b.d"), None, "non-strings are left alone");
        assert_eq!(mask(&d, "a.x"), None);
    }

    #[test]
    fn arrays_of_subdocuments_and_batches() {
        let d = doc! { "cursor": { "firstBatch": [ { "email": "x@y.z" }, { "other": 1 }, { "email": "longer@example.com", "k": [1] } ], "id": 0i64 }, "ok": 1.0 };
        let m = mask(&d, "cursor.firstBatch.email").unwrap();
        assert_eq!(
            m,
            doc! { "cursor": { "firstBatch": [ { "email": "<5>" }, { "other": 1 }, { "email": "<18>", "k": [1] } ], "id": 0i64 }, "ok": 1.0 }
        );
        let d = doc! { "addr": [ { "city": "Paris" }, { "city": "Rome" } ], "tags": ["a", "bb"] };
        assert_eq!(
            mask(&d, "addr.city").unwrap(),
            doc! { "addr": [ { "city": "<5>" }, { "city": "<4>" } ], "tags": ["a", "bb"] }
        );
        assert_eq!(
            mask(&d, "tags").unwrap(),
            doc! { "addr": [ { "city": "Paris" }, { "city": "Rome" } ], "tags": ["<1>", "<2>"] }
        );
        assert_eq!(count_at(&d.to_vec().unwrap(), &["addr", "city"], 8).unwrap(), 2);
    }

    #[test]
    fn null_replacement_and_depth() {
        let d = doc! { "a": { "b": "x" } };
        let b = d.to_vec().unwrap();
        let out = replace_strings(&b, &["a", "b"], 8, &mut |_| Some(Replacement::Null)).unwrap().unwrap();
        assert_eq!(Document::from_reader(&out[..]).unwrap(), doc! { "a": { "b": null } });
        assert_eq!(replace_strings(&b, &["a", "b"], 1, &mut |_| None), Err(E::TooDeep(1)));
    }

    #[test]
    fn other_types_and_segment_globs() {
        let d = doc! { "a": 5, "b": { "c": 1.5, "d": [ { "e": "x" }, { "e": { "f": 1 } } ] }, "u": { "p.q": "s", "p.q.0": "t", "p.qq": "k" } };
        let b = d.to_vec().unwrap();
        let mut nulls = |v: Value<'_>| match v {
            Value::Str(_) => Some(Replacement::Str("m".into())),
            Value::Other(_) => Some(Replacement::Null),
        };
        let out = replace_values(&b, &["b", "d", "e"], 8, &mut nulls).unwrap().unwrap();
        let want = doc! { "a": 5, "b": { "c": 1.5, "d": [ { "e": "m" }, { "e": null } ] }, "u": { "p.q": "s", "p.q.0": "t", "p.qq": "k" } };
        assert_eq!(Document::from_reader(&out[..]).unwrap(), want);
        let out = replace_values(&b, &["*"], 8, &mut nulls).unwrap().unwrap();
        assert_eq!(Document::from_reader(&out[..]).unwrap(), doc! { "a": null, "b": null, "u": null });
        let out = replace_values(&b, &["u", "p.q.*"], 8, &mut nulls).unwrap().unwrap();
        let u = Document::from_reader(&out[..]).unwrap().get_document("u").unwrap().clone();
        assert_eq!(u, doc! { "p.q": "m", "p.q.0": "m", "p.qq": "k" });
        assert!(seg_matches("p.q.*", b"p.2.q.x") && seg_matches("p.*.*", b"p.z"));
        assert!(!seg_matches("p.q.*", b"p") && !seg_matches("p.*", b"p") && !seg_matches("p.q.*", b"p.qq"));
        assert!(seg_matches("p.#", b"p.0") && seg_matches("p.q.#", b"p.1.q.2") && !seg_matches("p.#", b"p.0.q"));
        // `a.#` continues inside the value of `a.0`: an array element written by position.
        let d = doc! { "uf": { "c.0": { "kind": "home", "phone": "1" }, "c.1.phone": "2", "c": [{ "phone": "3" }] } };
        let b = d.to_vec().unwrap();
        let mut out = b.clone();
        for p in [&["uf", "c", "phone"][..], &["uf", "c.#", "phone"], &["uf", "c.phone.*"]] {
            out = replace_values(&out, p, 8, &mut nulls).unwrap().unwrap_or(out);
        }
        let want =
            doc! { "uf": { "c.0": { "kind": "home", "phone": "m" }, "c.1.phone": "m", "c": [{ "phone": "m" }] } };
        assert_eq!(Document::from_reader(&out[..]).unwrap(), want);
        assert_eq!(replace_strings(&b, &["a"], 8, &mut |_| Some(Replacement::Null)).unwrap(), None);
    }
}
