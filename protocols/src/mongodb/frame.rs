//! The 16-byte message header and check-then-split framing of a byte stream into messages.

use super::MongoProtoError as E;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Header length in bytes.
pub const HEADER_LEN: usize = 16;

/// Opcodes dgf understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// Legacy reply (answers OP_QUERY).
    Reply,
    /// Legacy query (only the handshake uses it today).
    Query,
    /// A compressed wrapper around another message.
    Compressed,
    /// The modern message.
    Msg,
}

impl OpCode {
    /// Wire value.
    pub fn code(self) -> i32 {
        match self {
            OpCode::Reply => 1,
            OpCode::Query => 2004,
            OpCode::Compressed => 2012,
            OpCode::Msg => 2013,
        }
    }
    /// From a wire value.
    pub fn from_code(c: i32) -> Result<Self, E> {
        Ok(match c {
            1 => OpCode::Reply,
            2004 => OpCode::Query,
            2012 => OpCode::Compressed,
            2013 => OpCode::Msg,
            other => return Err(E::UnsupportedOpCode(other)),
        })
    }
}

/// The standard message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Total length including the header.
    pub length: i32,
    /// Sender's id for this message.
    pub request_id: i32,
    /// The request this answers (0 for requests).
    pub response_to: i32,
    /// Raw opcode.
    pub op_code: i32,
}

impl Header {
    /// Parse from at least 16 bytes.
    pub fn parse(b: &[u8]) -> Result<Self, E> {
        let mut s = b.get(..HEADER_LEN).ok_or(E::Truncated("header"))?;
        Ok(Header {
            length: s.get_i32_le(),
            request_id: s.get_i32_le(),
            response_to: s.get_i32_le(),
            op_code: s.get_i32_le(),
        })
    }
    /// Append the header.
    pub fn put(&self, out: &mut BytesMut) {
        out.put_i32_le(self.length);
        out.put_i32_le(self.request_id);
        out.put_i32_le(self.response_to);
        out.put_i32_le(self.op_code);
    }
}

/// One framed message: header plus the body bytes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Header.
    pub header: Header,
    /// Body (everything after the header).
    pub body: Bytes,
}

impl Message {
    /// The opcode, if known.
    pub fn op(&self) -> Result<OpCode, E> {
        OpCode::from_code(self.header.op_code)
    }
    /// The whole message as wire bytes.
    pub fn to_bytes(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(HEADER_LEN + self.body.len());
        let h = Header { length: (HEADER_LEN + self.body.len()) as i32, ..self.header };
        h.put(&mut out);
        out.extend_from_slice(&self.body);
        out
    }
}

/// How many bytes the message at the front of `buf` needs in total, once 4 bytes are there.
/// Refuses lengths below the header size or above `max`.
pub fn needed(buf: &[u8], max: usize) -> Result<Option<usize>, E> {
    let Some(l) = buf.get(..4) else { return Ok(None) };
    let len = i32::from_le_bytes([l[0], l[1], l[2], l[3]]);
    if len < HEADER_LEN as i32 {
        return Err(E::InvalidLength(len.into()));
    }
    if len as usize > max {
        return Err(E::MessageTooLarge { len: len as usize, max });
    }
    Ok(Some(len as usize))
}

/// Split one whole message off the front of `buf` if it is complete.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Message>, E> {
    let Some(len) = needed(buf, max)? else { return Ok(None) };
    if buf.len() < len {
        buf.reserve(len - buf.len());
        return Ok(None);
    }
    let mut m = buf.split_to(len);
    let header = Header::parse(&m)?;
    m.advance(HEADER_LEN);
    Ok(Some(Message { header, body: m.freeze() }))
}

/// Append a message with the given opcode and body.
pub fn put_message(out: &mut BytesMut, request_id: i32, response_to: i32, op: OpCode, body: &[u8]) {
    Header { length: (HEADER_LEN + body.len()) as i32, request_id, response_to, op_code: op.code() }.put(out);
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_header() {
        let mut out = BytesMut::new();
        put_message(&mut out, 7, 3, OpCode::Msg, &[1, 2]);
        assert_eq!(&out[..], &[18, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 0xDD, 0x07, 0, 0, 1, 2]);
        let m = split_frame(&mut out, 100).unwrap().unwrap();
        assert_eq!(m.header, Header { length: 18, request_id: 7, response_to: 3, op_code: 2013 });
        assert_eq!(&m.body[..], &[1, 2]);
        assert!(out.is_empty());
    }

    #[test]
    fn partial_and_limits() {
        let mut b = BytesMut::from(&[18u8, 0, 0, 0, 1][..]);
        assert_eq!(split_frame(&mut b, 100).unwrap(), None);
        let mut b = BytesMut::from(&[3u8, 0, 0, 0][..]);
        assert_eq!(split_frame(&mut b, 100), Err(E::InvalidLength(3)));
        let mut b = BytesMut::from(&[0u8, 1, 0, 0][..]);
        assert_eq!(split_frame(&mut b, 100), Err(E::MessageTooLarge { len: 256, max: 100 }));
        let mut b = BytesMut::from(&[0u8, 0, 0, 0x80][..]);
        assert!(matches!(split_frame(&mut b, 100), Err(E::InvalidLength(_))));
    }
}
