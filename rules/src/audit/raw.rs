//! Pre-rendered audit records for hot paths: the caller writes a record's fields from
//! `protocol` through `error` straight into JSON bytes (a session renders its constant part —
//! protocol, route, client, user, roles — once), collects many records in one [`RawBatch`]
//! and hands the batch to the writer in one queue send. The writer adds `time`, `seq`,
//! `instance` in front and `prev_hash`/`hash` behind, so a raw record's line is byte for byte
//! the line [`AuditEvent`](super::AuditEvent) with the same content would give (tested).
//!
//! The caller is responsible for `include_literals`: with it off, it must not render a
//! `statement` field (the writer cannot drop it from rendered bytes).

use super::json;

/// Bytes in front of each record in a [`RawBatch`]: its time (Unix milliseconds, u64) and the
/// length of its fields (u32), little-endian.
const HEADER: usize = 12;

/// Records rendered by the caller, handed to the writer together
/// ([`AuditWriter::record_batch`](super::AuditWriter::record_batch)). One buffer: each record
/// is a small header followed by its fields, so a batch costs one allocation.
#[derive(Debug, Default)]
pub struct RawBatch {
    buf: Vec<u8>,
    n: usize,
}

impl RawBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `bytes` bytes of records (as [`bytes`](Self::bytes) counts).
    pub fn with_capacity(bytes: usize) -> Self {
        Self { buf: Vec::with_capacity(bytes), n: 0 }
    }

    /// Bytes the batch can hold without growing.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Room for at least `bytes` more bytes.
    pub fn reserve(&mut self, bytes: usize) {
        self.buf.reserve(bytes);
    }

    /// Forget every record, keeping the buffer.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.n = 0;
    }

    /// Bytes the batch holds.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Append one record stamped at `millis` (Unix milliseconds) whose fields are `parts`
    /// concatenated: `,"protocol":...` through `,"error":...`, rendered with the `field_*`
    /// functions of this module in [`AuditEvent`](super::AuditEvent)'s field order.
    pub fn push(&mut self, millis: u64, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.buf.reserve(HEADER + len);
        self.buf.extend_from_slice(&millis.to_le_bytes());
        self.buf.extend_from_slice(&(len as u32).to_le_bytes());
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.n += 1;
    }

    /// Append one record stamped at `millis` whose fields `render` writes straight into the
    /// batch (same contract as [`push`](Self::push), without an intermediate buffer).
    pub fn push_with(&mut self, millis: u64, render: impl FnOnce(&mut Vec<u8>)) {
        self.buf.extend_from_slice(&millis.to_le_bytes());
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        render(&mut self.buf);
        let len = (self.buf.len() - at - 4) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.n += 1;
    }

    /// `(millis, fields)` of each record, in order.
    pub(crate) fn records(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let mut rest = &self.buf[..];
        std::iter::from_fn(move || {
            let (head, tail) = rest.split_at_checked(HEADER)?;
            let (millis, len) = head.split_at(8);
            let millis = u64::from_le_bytes(millis.try_into().ok()?);
            let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
            let (fields, tail) = tail.split_at_checked(len)?;
            rest = tail;
            Some((millis, fields))
        })
    }
}

/// `,"name":"value"` (JSON-escaped like serde_json).
pub fn field_str(out: &mut Vec<u8>, name: &str, value: &str) {
    json::key(out, name);
    json::string(out, value);
}

/// `,"name":"value"` with a value in parts (concatenated, then escaped).
pub fn field_str_parts(out: &mut Vec<u8>, name: &str, parts: &[&str]) {
    json::key(out, name);
    json::string_parts(out, parts);
}

/// `,"name":["a","b"]`.
pub fn field_strs<'a>(out: &mut Vec<u8>, name: &str, values: impl IntoIterator<Item = &'a str>) {
    json::key(out, name);
    out.push(b'[');
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::string(out, v);
    }
    out.push(b']');
}

/// `,"name":["a","b"]`, or nothing when there are no values (`roles`, `rules`).
pub fn field_strs_if_any<'a>(out: &mut Vec<u8>, name: &str, values: impl IntoIterator<Item = &'a str>) {
    let at = out.len();
    field_strs(out, name, values);
    if out.ends_with(b"[]") {
        out.truncate(at);
    }
}

/// Start of `,"name":[`; then [`list_item`] per element and [`list_end`].
pub fn list_start(out: &mut Vec<u8>, name: &str) -> usize {
    json::key(out, name);
    out.push(b'[');
    out.len()
}

/// One element (in parts) of a list opened at `start` by [`list_start`].
pub fn list_item(out: &mut Vec<u8>, start: usize, parts: &[&str]) {
    if out.len() > start {
        out.push(b',');
    }
    json::string_parts(out, parts);
}

/// Close a list.
pub fn list_end(out: &mut Vec<u8>) {
    out.push(b']');
}

/// One element of a list opened at `start`, made of `parts` concatenated and written as they
/// are: the caller guarantees that no byte needs JSON escaping (hex digits, fixed ASCII).
pub fn list_item_verbatim(out: &mut Vec<u8>, start: usize, parts: &[&[u8]]) {
    if out.len() > start {
        out.push(b',');
    }
    out.push(b'"');
    for p in parts {
        out.extend_from_slice(p);
    }
    out.push(b'"');
}

/// `,"name":123`, or nothing when unknown.
pub fn field_u64(out: &mut Vec<u8>, name: &str, value: Option<u64>) {
    if let Some(n) = value {
        json::key(out, name);
        json::number(out, n);
    }
}

/// `,"name":"value"`, or nothing when unknown.
pub fn field_opt_str(out: &mut Vec<u8>, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        json::key(out, name);
        json::string(out, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{chain, AuditEvent, GENESIS_HASH};

    /// The fields of `ev` from protocol to error, rendered with this module.
    fn render(ev: &AuditEvent) -> Vec<u8> {
        let mut out = Vec::new();
        field_str(&mut out, "protocol", &ev.protocol);
        field_str(&mut out, "route", &ev.route);
        field_str_parts(&mut out, "client", &[&ev.client[..3], &ev.client[3..]]);
        field_str(&mut out, "user", &ev.user);
        field_strs_if_any(&mut out, "roles", ev.roles.iter().map(String::as_str));
        field_str(&mut out, "database", &ev.database);
        field_str(&mut out, "kind", &ev.kind);
        field_str(&mut out, "fingerprint", &ev.fingerprint);
        if let Some(s) = &ev.statement {
            field_str(&mut out, "statement", s);
        }
        let at = list_start(&mut out, "objects");
        for o in &ev.objects {
            list_item(&mut out, at, &[&o[..1], &o[1..]]);
        }
        list_end(&mut out);
        field_str(&mut out, "decision", &ev.decision);
        field_strs_if_any(&mut out, "rules", ev.rules.iter().map(String::as_str));
        field_u64(&mut out, "rows", ev.rows);
        field_u64(&mut out, "bytes", ev.bytes);
        field_u64(&mut out, "duration_us", ev.duration_us);
        field_opt_str(&mut out, "error", ev.error.as_deref());
        out
    }

    #[test]
    fn raw_line_equals_event_line() {
        let mut ev = AuditEvent {
            time: "2026-11-28T17:00:00.123Z".into(),
            seq: 42,
            instance: "dgf-\"1\"".into(),
            protocol: "redis".into(),
            route: "r".into(),
            client: "127.0.0.1:5000".into(),
            user: "al\nice".into(),
            roles: vec!["a".into(), "b".into()],
            database: "3".into(),
            kind: "read".into(),
            fingerprint: "GET".into(),
            statement: Some("GET k\u{1}".into()),
            objects: vec!["redis:#00ff".into(), "redis:x".into()],
            decision: "allow".into(),
            rules: vec!["r1".into()],
            rows: None,
            bytes: Some(12),
            duration_us: Some(7),
            error: Some("ERR".into()),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        let mut batch = RawBatch::new();
        let fields = render(&ev);
        batch.push(1, &[]);
        batch.push(1_795_885_200_123, &[&fields[..10], &fields[10..]]);
        batch.push_with(9, |out| out.extend_from_slice(&fields));
        batch.push_with(10, |_| {});
        assert_eq!(batch.len(), 4);
        let mut records = batch.records();
        assert_eq!(records.next(), Some((1, &b""[..])));
        let (millis, got) = records.next().unwrap();
        assert_eq!(records.next(), Some((9, &fields[..])));
        assert_eq!(records.next(), Some((10, &b""[..])));
        assert_eq!(records.next(), None);
        assert_eq!(got, &fields[..]);
        let mut line = Vec::new();
        let time = super::super::rfc3339_utc(std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis));
        let mut inst = Vec::new();
        json::string(&mut inst, &ev.instance);
        let mut hash = GENESIS_HASH.to_owned();
        chain::seal_raw(&mut line, &time, ev.seq, &inst, got, true, &mut hash);
        let (want, want_hash) = chain::seal(&mut ev, GENESIS_HASH).unwrap();
        assert_eq!(String::from_utf8_lossy(&line), String::from_utf8_lossy(&want));
        assert_eq!(hash, want_hash);
        // Without prev_hash (every record but a file's first), and with the unknown fields
        // left out.
        ev.prev_hash.clear();
        ev.rows = None;
        ev.error = None;
        ev.rules.clear();
        let fields = render(&ev);
        let mut hash = want_hash.clone();
        chain::seal_raw(&mut line, &time, ev.seq, &inst, &fields, false, &mut hash);
        let (want, next_hash) = chain::seal(&mut ev, &want_hash).unwrap();
        assert_eq!(String::from_utf8_lossy(&line), String::from_utf8_lossy(&want));
        assert_eq!(hash, next_hash);
        let text = String::from_utf8_lossy(&line);
        for gone in ["prev_hash", "null", "rows", "rules"] {
            assert!(!text.contains(gone), "{text}");
        }
    }
}
