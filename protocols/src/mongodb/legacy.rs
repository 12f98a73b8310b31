//! OP_QUERY and OP_REPLY, kept for the legacy handshake (`isMaster` on `admin.$cmd`).

use super::bsonwalk::{doc_len, validate};
use super::frame::{put_message, OpCode};
use super::MongoProtoError as E;
use bytes::{BufMut, BytesMut};

/// A parsed OP_QUERY borrowing from the message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpQuery<'a> {
    /// Flags.
    pub flags: i32,
    /// `db.collection` (`admin.$cmd` for commands).
    pub collection: &'a str,
    /// Documents to skip.
    pub skip: i32,
    /// Documents to return.
    pub limit: i32,
    /// The query (or command) document.
    pub query: &'a [u8],
    /// Optional projection.
    pub fields: Option<&'a [u8]>,
}

impl<'a> OpQuery<'a> {
    /// Parse and validate (nesting capped at `max_depth`).
    pub fn parse(b: &'a [u8], max_depth: usize) -> Result<Self, E> {
        let i32_at = |at: usize| -> Result<i32, E> {
            let s = b.get(at..at + 4).ok_or(E::Truncated("OP_QUERY"))?;
            Ok(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        };
        let flags = i32_at(0)?;
        let nul = b.get(4..).and_then(|r| r.iter().position(|&c| c == 0)).ok_or(E::Truncated("collection name"))?;
        let collection = std::str::from_utf8(&b[4..4 + nul]).map_err(|_| E::Malformed("collection name"))?;
        let mut pos = 4 + nul + 1;
        let skip = i32_at(pos)?;
        let limit = i32_at(pos + 4)?;
        pos += 8;
        let len = doc_len(b, pos)?;
        let query = &b[pos..pos + len];
        validate(query, max_depth)?;
        pos += len;
        let fields = if pos < b.len() {
            let len = doc_len(b, pos)?;
            let f = &b[pos..pos + len];
            validate(f, max_depth)?;
            pos += len;
            Some(f)
        } else {
            None
        };
        if pos != b.len() {
            return Err(E::Malformed("trailing bytes after OP_QUERY"));
        }
        Ok(OpQuery { flags, collection, skip, limit, query, fields })
    }

    /// Append this query as a message.
    pub fn encode(&self, out: &mut BytesMut, request_id: i32) {
        let mut body = BytesMut::new();
        body.put_i32_le(self.flags);
        body.extend_from_slice(self.collection.as_bytes());
        body.put_u8(0);
        body.put_i32_le(self.skip);
        body.put_i32_le(self.limit);
        body.extend_from_slice(self.query);
        if let Some(f) = self.fields {
            body.extend_from_slice(f);
        }
        put_message(out, request_id, 0, OpCode::Query, &body);
    }
}

/// A parsed OP_REPLY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpReply<'a> {
    /// Response flags.
    pub flags: i32,
    /// Cursor id.
    pub cursor_id: i64,
    /// Position of the first document.
    pub starting_from: i32,
    /// Documents.
    pub documents: Vec<&'a [u8]>,
}

impl<'a> OpReply<'a> {
    /// Parse (document boundaries only).
    pub fn parse(b: &'a [u8]) -> Result<Self, E> {
        if b.len() < 20 {
            return Err(E::Truncated("OP_REPLY"));
        }
        let flags = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let cursor_id = i64::from_le_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]]);
        let starting_from = i32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        let n = i32::from_le_bytes([b[16], b[17], b[18], b[19]]);
        let mut pos = 20;
        let mut documents = Vec::new();
        while pos < b.len() {
            let len = doc_len(b, pos)?;
            documents.push(&b[pos..pos + len]);
            pos += len;
        }
        if n < 0 || documents.len() != n as usize {
            return Err(E::Malformed("OP_REPLY numberReturned does not match"));
        }
        Ok(OpReply { flags, cursor_id, starting_from, documents })
    }
}

/// Append an OP_REPLY carrying `docs` in answer to `response_to`.
pub fn put_reply(out: &mut BytesMut, request_id: i32, response_to: i32, docs: &[&[u8]]) {
    let mut body = BytesMut::new();
    body.put_i32_le(0);
    body.put_i64_le(0);
    body.put_i32_le(0);
    body.put_i32_le(docs.len() as i32);
    for d in docs {
        body.extend_from_slice(d);
    }
    put_message(out, request_id, response_to, OpCode::Reply, &body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mongodb::frame::split_frame;
    use bson::doc;

    #[test]
    fn query_round_trip_and_golden_reply() {
        let q = doc! { "isMaster": 1 }.to_vec().unwrap();
        let op = OpQuery { flags: 4, collection: "admin.$cmd", skip: 0, limit: -1, query: &q, fields: None };
        let mut out = BytesMut::new();
        op.encode(&mut out, 5);
        let m = split_frame(&mut out, 1 << 20).unwrap().unwrap();
        assert_eq!(m.header.op_code, 2004);
        assert_eq!(OpQuery::parse(&m.body, 8).unwrap(), op);

        let d = doc! { "ok": 1.0 }.to_vec().unwrap();
        let mut out = BytesMut::new();
        put_reply(&mut out, 6, 5, &[&d]);
        let mut expect = vec![(16 + 20 + d.len()) as u8, 0, 0, 0, 6, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0];
        expect.extend_from_slice(&[0; 16]);
        expect.extend_from_slice(&[1, 0, 0, 0]);
        expect.extend_from_slice(&d);
        assert_eq!(&out[..], &expect[..]);
        let m = split_frame(&mut out, 1 << 20).unwrap().unwrap();
        assert_eq!(OpReply::parse(&m.body).unwrap().documents, vec![&d[..]]);
    }

    #[test]
    fn truncated() {
        assert!(OpQuery::parse(&[0, 0, 0, 0, b'a'], 8).is_err());
        assert!(OpReply::parse(&[0; 19]).is_err());
    }
}
