//! Row caps on replies: the size of a cursor batch (`cursor.firstBatch` / `cursor.nextBatch`)
//! or `distinct` `values`, and cutting it to its first documents by splicing bytes. A cut
//! cursor batch reports the cursor closed (`cursor.id: 0`); the caller kills it upstream.

use super::bsonwalk::{elements, kind, Element};
use super::MongoProtoError as E;

/// The documents of one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Number of documents (or values).
    pub len: u64,
    /// The cursor id (`None`: `distinct` values, not a cursor).
    pub cursor_id: Option<i64>,
    /// `cursor.ns` (`db.collection`) when present.
    pub ns: Option<String>,
}

fn find<'a>(els: &'a [Element<'a>], key: &str) -> Option<&'a Element<'a>> {
    els.iter().find(|e| e.key == key.as_bytes())
}

fn cursor_batch<'a>(els: &'a [Element<'a>]) -> Option<&'a Element<'a>> {
    els.iter().find(|e| e.kind == kind::ARRAY && (e.key == b"firstBatch" || e.key == b"nextBatch"))
}

/// The batch of a reply body, `None` when it carries neither a cursor batch nor `values`.
pub fn batch(body: &[u8]) -> Result<Option<Batch>, E> {
    let top = elements(body, 0)?;
    if let Some(c) = find(&top, "cursor").filter(|c| c.kind == kind::DOCUMENT) {
        let inner = elements(body, c.value_start)?;
        let Some(arr) = cursor_batch(&inner) else { return Ok(None) };
        let len = elements(body, arr.value_start)?.len() as u64;
        let cursor_id = find(&inner, "id").and_then(|e| match e.kind {
            0x12 => body.get(e.value_start..e.end)?.try_into().ok().map(i64::from_le_bytes),
            0x10 => body.get(e.value_start..e.end)?.try_into().ok().map(i32::from_le_bytes).map(i64::from),
            _ => None,
        });
        let ns = find(&inner, "ns").filter(|e| e.kind == kind::STRING).and_then(|e| {
            let s = body.get(e.value_start + 4..e.end.checked_sub(1)?)?;
            std::str::from_utf8(s).ok().map(str::to_owned)
        });
        return Ok(Some(Batch { len, cursor_id: Some(cursor_id.unwrap_or(0)), ns }));
    }
    if let Some(v) = find(&top, "values").filter(|v| v.kind == kind::ARRAY) {
        let len = elements(body, v.value_start)?.len() as u64;
        return Ok(Some(Batch { len, cursor_id: None, ns: None }));
    }
    Ok(None)
}

/// The array at `b[at..]` with only its first `keep` elements.
fn cut_array(b: &[u8], at: usize, keep: usize) -> Result<Vec<u8>, E> {
    let els = elements(b, at)?;
    let body_end = els.get(keep.min(els.len()).wrapping_sub(1)).map_or(at + 4, |e| e.end);
    let mut out = Vec::with_capacity(body_end - at + 1);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&b[at + 4..body_end]);
    out.push(0);
    let len = out.len() as i32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

/// Rebuild the document at `b[at..]`, replacing the values of some elements (type byte and
/// value bytes); other elements are copied as they are.
fn rebuild(
    b: &[u8],
    at: usize,
    mut f: impl FnMut(&Element<'_>) -> Result<Option<(u8, Vec<u8>)>, E>,
) -> Result<Vec<u8>, E> {
    let els = elements(b, at)?;
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&[0; 4]);
    for e in &els {
        match f(e)? {
            Some((k, v)) => {
                out.push(k);
                out.extend_from_slice(&b[e.start + 1..e.value_start]);
                out.extend_from_slice(&v);
            }
            None => out.extend_from_slice(&b[e.start..e.end]),
        }
    }
    out.push(0);
    let len = out.len() as i32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

/// The reply body with its batch (or `values`) cut to the first `keep` documents; a cursor
/// reply also gets `cursor.id: 0` (the caller kills the server cursor).
pub fn cut(body: &[u8], keep: u64) -> Result<Vec<u8>, E> {
    let keep = usize::try_from(keep).unwrap_or(usize::MAX);
    rebuild(body, 0, |e| {
        if e.key == b"cursor" && e.kind == kind::DOCUMENT {
            let cursor = rebuild(body, e.value_start, |c| {
                Ok(if c.kind == kind::ARRAY && (c.key == b"firstBatch" || c.key == b"nextBatch") {
                    Some((kind::ARRAY, cut_array(body, c.value_start, keep)?))
                } else if c.key == b"id" {
                    Some((0x12, 0i64.to_le_bytes().to_vec()))
                } else {
                    None
                })
            })?;
            Ok(Some((kind::DOCUMENT, cursor)))
        } else if e.key == b"values" && e.kind == kind::ARRAY {
            Ok(Some((kind::ARRAY, cut_array(body, e.value_start, keep)?)))
        } else {
            Ok(None)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, Document};

    fn reply(n: i32, id: i64) -> Vec<u8> {
        let docs: Vec<Document> = (0..n).map(|i| doc! { "_id": i, "s": "x".repeat(i as usize) }).collect();
        doc! { "cursor": { "firstBatch": docs, "id": id, "ns": "app.users" }, "ok": 1.0 }.to_vec().unwrap()
    }

    #[test]
    fn batches() {
        let b = batch(&reply(3, 77)).unwrap().unwrap();
        assert_eq!(b, Batch { len: 3, cursor_id: Some(77), ns: Some("app.users".into()) });
        let d = doc! { "cursor": { "nextBatch": [], "id": 5i32 }, "ok": 1 }.to_vec().unwrap();
        assert_eq!(batch(&d).unwrap().unwrap(), Batch { len: 0, cursor_id: Some(5), ns: None });
        let d = doc! { "values": ["a", "b"], "ok": 1 }.to_vec().unwrap();
        assert_eq!(batch(&d).unwrap().unwrap().len, 2);
        assert_eq!(batch(&doc! { "n": 1, "ok": 1 }.to_vec().unwrap()).unwrap(), None);
        assert!(batch(b"\x05\x00").is_err());
    }

    #[test]
    fn cuts() {
        for (n, keep) in [(3, 2), (3, 0), (3, 3), (3, 9), (0, 1)] {
            let out = cut(&reply(n, 77), keep).unwrap();
            crate::mongodb::bsonwalk::validate(&out, 16).unwrap();
            let d = Document::from_reader(&out[..]).unwrap();
            let c = d.get_document("cursor").unwrap();
            let batch = c.get_array("firstBatch").unwrap();
            assert_eq!(batch.len() as u64, (n as u64).min(keep));
            for (i, x) in batch.iter().enumerate() {
                assert_eq!(x.as_document().unwrap().get_i32("_id").unwrap(), i as i32);
            }
            assert_eq!(c.get_i64("id").unwrap(), 0);
            assert_eq!(c.get_str("ns").unwrap(), "app.users");
            assert_eq!(d.get_f64("ok").unwrap(), 1.0);
        }
        let v = doc! { "values": ["a", "b", "c"], "ok": 1 }.to_vec().unwrap();
        let d = Document::from_reader(&cut(&v, 1).unwrap()[..]).unwrap();
        assert_eq!(d, doc! { "values": ["a"], "ok": 1 });
    }
}
