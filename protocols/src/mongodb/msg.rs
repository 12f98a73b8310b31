//! OP_MSG: flag bits, the body section (kind 0), document sequences (kind 1) and the optional
//! CRC-32C checksum.

use super::bsonwalk::{doc_len, validate};
use super::frame::{Header, OpCode, HEADER_LEN};
use super::MongoProtoError as E;
use bson::RawDocument;
use bytes::{BufMut, BytesMut};

/// The message ends with a CRC-32C checksum.
pub const CHECKSUM_PRESENT: u32 = 1;
/// The sender will send another message without waiting for a reply.
pub const MORE_TO_COME: u32 = 1 << 1;
/// The client accepts several replies to one request (exhaust).
pub const EXHAUST_ALLOWED: u32 = 1 << 16;
/// Bits 0-15 must be understood by the receiver.
const REQUIRED_MASK: u32 = 0xFFFF;

/// A kind-1 section: an identifier (e.g. `documents`) and its documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence<'a> {
    /// Identifier (the command field the documents belong to).
    pub identifier: &'a str,
    /// Raw documents.
    pub documents: Vec<&'a [u8]>,
}

/// A parsed OP_MSG borrowing from the message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpMsg<'a> {
    /// Flag bits.
    pub flags: u32,
    /// The kind-0 body document (the command or the reply).
    pub body: &'a [u8],
    /// Kind-1 sections.
    pub sequences: Vec<Sequence<'a>>,
    /// Checksum, when present (already verified).
    pub checksum: Option<u32>,
}

fn crc(header: &Header, body_without_checksum: &[u8]) -> u32 {
    let mut h = BytesMut::with_capacity(HEADER_LEN);
    header.put(&mut h);
    crc32c::crc32c_append(crc32c::crc32c(&h), body_without_checksum)
}

impl<'a> OpMsg<'a> {
    /// Parse an OP_MSG body. With `max_depth`, every document is fully validated (structure,
    /// UTF-8, nesting); without, only document boundaries are checked (trusted upstream replies).
    pub fn parse(header: &Header, body: &'a [u8], max_depth: Option<usize>) -> Result<Self, E> {
        if body.len() < 4 {
            return Err(E::Truncated("OP_MSG flags"));
        }
        let flags = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
        let unknown = flags & REQUIRED_MASK & !(CHECKSUM_PRESENT | MORE_TO_COME);
        if unknown != 0 {
            return Err(E::UnknownFlags(unknown));
        }
        let (sections, checksum) = if flags & CHECKSUM_PRESENT != 0 {
            if body.len() < 8 {
                return Err(E::Truncated("OP_MSG checksum"));
            }
            let (rest, c) = body.split_at(body.len() - 4);
            let c = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            if crc(header, rest) != c {
                return Err(E::ChecksumMismatch);
            }
            (&rest[4..], Some(c))
        } else {
            (&body[4..], None)
        };
        let check = |d: &[u8]| match max_depth {
            Some(m) => validate(d, m),
            None => Ok(()),
        };
        let mut pos = 0;
        let mut main = None;
        let mut sequences = Vec::new();
        while pos < sections.len() {
            let kind = sections[pos];
            pos += 1;
            match kind {
                0 => {
                    if main.is_some() {
                        return Err(E::Malformed("more than one body section"));
                    }
                    let len = doc_len(sections, pos)?;
                    let d = &sections[pos..pos + len];
                    check(d)?;
                    main = Some(d);
                    pos += len;
                }
                1 => {
                    let size = sections.get(pos..pos + 4).ok_or(E::Truncated("sequence size"))?;
                    let size = i32::from_le_bytes([size[0], size[1], size[2], size[3]]);
                    if size < 5 || pos + size as usize > sections.len() {
                        return Err(E::InvalidLength(size.into()));
                    }
                    let end = pos + size as usize;
                    let id_start = pos + 4;
                    let nul =
                        sections[id_start..end].iter().position(|&c| c == 0).ok_or(E::Malformed("sequence id"))?;
                    let identifier = std::str::from_utf8(&sections[id_start..id_start + nul])
                        .map_err(|_| E::Malformed("sequence id is not UTF-8"))?;
                    let mut p = id_start + nul + 1;
                    let mut documents = Vec::new();
                    while p < end {
                        let len = doc_len(&sections[..end], p)?;
                        let d = &sections[p..p + len];
                        check(d)?;
                        documents.push(d);
                        p += len;
                    }
                    sequences.push(Sequence { identifier, documents });
                    pos = end;
                }
                _ => return Err(E::Malformed("unknown section kind")),
            }
        }
        let body = main.ok_or(E::Malformed("no body section"))?;
        Ok(OpMsg { flags, body, sequences, checksum })
    }

    /// The body as a `bson` raw document.
    pub fn command(&self) -> Result<&'a RawDocument, E> {
        RawDocument::from_bytes(self.body).map_err(|_| E::Bson("body"))
    }

    /// Append this message (recomputing the checksum when the flag is set).
    pub fn encode(&self, out: &mut BytesMut, request_id: i32, response_to: i32) {
        let seqs: Vec<(&str, &[&[u8]])> = self.sequences.iter().map(|s| (s.identifier, &s.documents[..])).collect();
        put_msg(out, request_id, response_to, self.flags, self.body, &seqs);
    }
}

/// Append an OP_MSG. A checksum is computed when `flags` has [`CHECKSUM_PRESENT`].
pub fn put_msg(
    out: &mut BytesMut,
    request_id: i32,
    response_to: i32,
    flags: u32,
    body: &[u8],
    seqs: &[(&str, &[&[u8]])],
) {
    let start = out.len();
    out.put_bytes(0, HEADER_LEN);
    out.put_u32_le(flags);
    out.put_u8(0);
    out.extend_from_slice(body);
    for (id, docs) in seqs {
        out.put_u8(1);
        let size = 4 + id.len() + 1 + docs.iter().map(|d| d.len()).sum::<usize>();
        out.put_i32_le(size as i32);
        out.extend_from_slice(id.as_bytes());
        out.put_u8(0);
        for d in *docs {
            out.extend_from_slice(d);
        }
    }
    let with_sum = flags & CHECKSUM_PRESENT != 0;
    let len = out.len() - start + if with_sum { 4 } else { 0 };
    let header = Header { length: len as i32, request_id, response_to, op_code: OpCode::Msg.code() };
    let mut h = BytesMut::with_capacity(HEADER_LEN);
    header.put(&mut h);
    out[start..start + HEADER_LEN].copy_from_slice(&h);
    if with_sum {
        let c = crc32c::crc32c(&out[start..]);
        out.put_u32_le(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mongodb::frame::split_frame;
    use bson::doc;
    use proptest::prelude::*;

    #[test]
    fn golden_ping() {
        let body = doc! { "ping": 1, "$db": "admin" }.to_vec().unwrap();
        let mut out = BytesMut::new();
        put_msg(&mut out, 1, 0, 0, &body, &[]);
        let mut expect = vec![];
        expect.extend_from_slice(&((16 + 4 + 1 + body.len()) as i32).to_le_bytes());
        expect.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0xDD, 7, 0, 0, 0, 0, 0, 0, 0]);
        expect.extend_from_slice(&body);
        assert_eq!(&out[..], &expect[..]);
        let m = split_frame(&mut out, 1 << 20).unwrap().unwrap();
        let msg = OpMsg::parse(&m.header, &m.body, Some(10)).unwrap();
        assert_eq!(msg.command().unwrap().get_str("$db").unwrap(), "admin");
    }

    #[test]
    fn checksum_verified() {
        let body = doc! { "insert": "c", "$db": "t" }.to_vec().unwrap();
        let d1 = doc! { "_id": 1 }.to_vec().unwrap();
        let mut out = BytesMut::new();
        put_msg(&mut out, 9, 0, CHECKSUM_PRESENT, &body, &[("documents", &[&d1[..], &d1[..]])]);
        let mut bad = out.clone();
        let m = split_frame(&mut out, 1 << 20).unwrap().unwrap();
        let msg = OpMsg::parse(&m.header, &m.body, Some(10)).unwrap();
        assert_eq!(msg.sequences[0].documents.len(), 2);
        assert_eq!(msg.sequences[0].identifier, "documents");
        let n = bad.len();
        bad[n - 6] ^= 1;
        let m = split_frame(&mut bad, 1 << 20).unwrap().unwrap();
        assert_eq!(OpMsg::parse(&m.header, &m.body, Some(10)), Err(E::ChecksumMismatch));
    }

    #[test]
    fn refuses_unknown_required_flags_and_bad_sections() {
        let body = doc! { "a": 1 }.to_vec().unwrap();
        let mut out = BytesMut::new();
        put_msg(&mut out, 1, 0, 1 << 4, &body, &[]);
        let m = split_frame(&mut out, 1 << 20).unwrap().unwrap();
        assert_eq!(OpMsg::parse(&m.header, &m.body, None), Err(E::UnknownFlags(1 << 4)));
        let h = Header { length: 0, request_id: 0, response_to: 0, op_code: 2013 };
        assert!(OpMsg::parse(&h, &[0, 0, 0, 0], None).is_err());
        assert!(OpMsg::parse(&h, &[0, 0, 0, 0, 9], None).is_err());
        // exhaustAllowed is an optional bit
        let mut out = BytesMut::new();
        put_msg(&mut out, 1, 0, EXHAUST_ALLOWED | MORE_TO_COME, &body, &[]);
        let m = split_frame(&mut out, 1 << 20).unwrap().unwrap();
        assert!(OpMsg::parse(&m.header, &m.body, None).is_ok());
    }

    proptest! {
        #[test]
        fn round_trip(flags in prop::sample::select(vec![0u32, 1, 2, 3, 1 << 16]), n in 0usize..4, key in "[a-z]{1,8}", v in any::<i64>(), rid in any::<i32>()) {
            let body = doc! { key.clone(): v, "$db": "x" }.to_vec().unwrap();
            let d = doc! { "v": v }.to_vec().unwrap();
            let docs: Vec<&[u8]> = (0..n).map(|_| &d[..]).collect();
            let mut out = BytesMut::new();
            put_msg(&mut out, rid, 0, flags, &body, &[("documents", &docs)]);
            let m = split_frame(&mut out, 1 << 20).unwrap().unwrap();
            let msg = OpMsg::parse(&m.header, &m.body, Some(8)).unwrap();
            prop_assert_eq!(msg.flags, flags);
            prop_assert_eq!(msg.sequences[0].documents.len(), n);
            let mut again = BytesMut::new();
            msg.encode(&mut again, rid, 0);
            prop_assert_eq!(&again[..], &m.to_bytes()[..]);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let h = Header { length: 0, request_id: 0, response_to: 0, op_code: 2013 };
            let _ = OpMsg::parse(&h, &data, Some(8));
        }
    }
}
