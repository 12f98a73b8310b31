//! Tag + length framing for Postgres regular messages: split whole messages off a buffer, no copy.

use super::PgProtoError;
use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Default cap on one message (tag excluded). Postgres itself caps most messages at 1 GiB; a proxy
/// that buffers a message before forwarding it must be stricter.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;

/// One whole message: tag byte, 4-byte length, body. `raw` holds all of it, ready to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The complete message bytes as received.
    pub raw: Bytes,
}

impl Frame {
    /// The message type byte.
    pub fn tag(&self) -> u8 {
        self.raw[0]
    }
    /// The message body (after tag and length).
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }
}

/// Length of the first complete message in `buf`, or `None` when more bytes are needed.
///
/// Checks the announced length against `max` as soon as the header is present, so an oversized
/// message is refused before it is buffered.
#[inline]
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, PgProtoError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len < 4 {
        return Err(PgProtoError::InvalidLength(len as i64));
    }
    if len > max {
        return Err(PgProtoError::MessageTooLarge { len, max });
    }
    let total = len + 1;
    Ok((buf.len() >= total).then_some(total))
}

/// Split the first complete message off `buf` (zero copy), if there is one.
#[inline]
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, PgProtoError> {
    match frame_len(buf, max)? {
        Some(n) => Ok(Some(Frame { raw: buf.split_to(n).freeze() })),
        None => Ok(None),
    }
}

/// tokio-util codec for regular (post-startup) messages in either direction.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max: usize,
}

impl FrameCodec {
    /// A codec refusing messages longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { max }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(MAX_MESSAGE_LEN)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        split_frame(src, self.max).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        dst.extend_from_slice(&item.raw);
        Ok(())
    }
}

/// Read a big-endian i32 from a body cursor.
pub(crate) fn get_i32(buf: &mut &[u8], what: &'static str) -> Result<i32, PgProtoError> {
    if buf.len() < 4 {
        return Err(PgProtoError::Truncated(what));
    }
    Ok(buf.get_i32())
}

/// Read a big-endian i16 from a body cursor.
pub(crate) fn get_i16(buf: &mut &[u8], what: &'static str) -> Result<i16, PgProtoError> {
    if buf.len() < 2 {
        return Err(PgProtoError::Truncated(what));
    }
    Ok(buf.get_i16())
}

/// Read a NUL-terminated string from a body cursor.
pub(crate) fn get_cstr<'a>(buf: &mut &'a [u8], what: &'static str) -> Result<&'a str, PgProtoError> {
    let bytes = get_cbytes(buf, what)?;
    std::str::from_utf8(bytes).map_err(|_| PgProtoError::InvalidUtf8(what))
}

/// Read NUL-terminated bytes from a body cursor.
pub(crate) fn get_cbytes<'a>(buf: &mut &'a [u8], what: &'static str) -> Result<&'a [u8], PgProtoError> {
    let pos = buf.iter().position(|&b| b == 0).ok_or(PgProtoError::Truncated(what))?;
    let s = &buf[..pos];
    *buf = &buf[pos + 1..];
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_whole_messages_only() {
        // ReadyForQuery 'I' followed by half a CommandComplete.
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05IC\0\0\0\x0dSELE"[..]);
        let f = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(&f.raw[..], b"Z\0\0\0\x05I");
        assert_eq!(f.tag(), b'Z');
        assert_eq!(f.body(), b"I");
        assert!(split_frame(&mut buf, 1024).unwrap().is_none());
        assert_eq!(buf.len(), 9);
    }

    #[test]
    fn refuses_oversized_before_buffering() {
        let buf = BytesMut::from(&b"Q\x10\0\0\0"[..]);
        assert_eq!(frame_len(&buf, 1024), Err(PgProtoError::MessageTooLarge { len: 0x1000_0000, max: 1024 }));
    }

    #[test]
    fn refuses_short_length() {
        let buf = BytesMut::from(&b"Q\0\0\0\x03"[..]);
        assert_eq!(frame_len(&buf, 1024), Err(PgProtoError::InvalidLength(3)));
    }

    proptest! {
        #[test]
        fn framing_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(f)) = split_frame(&mut buf, 128) {
                prop_assert!(f.raw.len() >= 5);
            }
        }

        #[test]
        fn concatenated_frames_round_trip(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let mut buf = BytesMut::new();
            for b in &bodies {
                buf.extend_from_slice(b"d");
                buf.extend_from_slice(&((b.len() + 4) as u32).to_be_bytes());
                buf.extend_from_slice(b);
            }
            let mut out = Vec::new();
            while let Some(f) = split_frame(&mut buf, 1024).unwrap() {
                out.push(f.body().to_vec());
            }
            prop_assert_eq!(out, bodies);
            prop_assert!(buf.is_empty());
        }
    }
}
