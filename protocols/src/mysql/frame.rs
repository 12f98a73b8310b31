//! Packet framing: a 4-byte header (3-byte little-endian payload length + sequence id). A
//! logical packet of 16 MiB - 1 bytes or more continues in the next frame; an empty frame ends
//! a payload that is an exact multiple of 16 MiB - 1.

use super::error::MyProtoError;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest payload of one frame.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// One frame as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Sequence id.
    pub seq: u8,
    /// Payload (at most [`MAX_PAYLOAD`] bytes).
    pub payload: Bytes,
}

impl Frame {
    /// Whether the logical packet continues in the next frame.
    pub fn continues(&self) -> bool {
        self.payload.len() == MAX_PAYLOAD
    }
}

/// Split one frame off the front of `buf`, or `Ok(None)` if it is not complete yet.
pub fn split_frame(buf: &mut BytesMut) -> Option<Frame> {
    if buf.len() < 4 {
        return None;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], 0]) as usize;
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return None;
    }
    let seq = buf[3];
    buf.advance(4);
    Some(Frame { seq, payload: buf.split_to(len).freeze() })
}

/// Split one whole logical packet (joining continuation frames) off `buf`. Returns the first
/// sequence id, the last one, and the joined payload. Fails if the payload would exceed `max`
/// (the caller answers with errno 1153 and closes).
pub fn split_packet(buf: &mut BytesMut, max: usize) -> Result<Option<(u8, u8, Bytes)>, MyProtoError> {
    // Walk the headers first without consuming, so a partial packet stays in `buf`.
    let mut at = 0usize;
    let mut total = 0usize;
    loop {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], 0]) as usize;
        total += len;
        if total > max {
            return Err(MyProtoError::PacketTooLarge { len: total, max });
        }
        if buf.len() < at + 4 + len {
            buf.reserve(at + 4 + len - buf.len());
            return Ok(None);
        }
        at += 4 + len;
        if len < MAX_PAYLOAD {
            break;
        }
    }
    let first = buf[3];
    let mut frames = buf.split_to(at);
    let mut last = first;
    if total + 4 == at {
        frames.advance(4);
        return Ok(Some((first, last, frames.freeze())));
    }
    let mut out = BytesMut::with_capacity(total);
    while frames.has_remaining() {
        let len = u32::from_le_bytes([frames[0], frames[1], frames[2], 0]) as usize;
        last = frames[3];
        frames.advance(4);
        out.extend_from_slice(&frames[..len]);
        frames.advance(len);
    }
    Ok(Some((first, last, out.freeze())))
}

/// Append `payload` as one logical packet starting at sequence id `seq`, split into frames of
/// at most [`MAX_PAYLOAD`] bytes. Returns the next sequence id.
pub fn put_packet(dst: &mut BytesMut, mut seq: u8, payload: &[u8]) -> u8 {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PAYLOAD);
        dst.reserve(4 + n);
        dst.put_uint_le(n as u64, 3);
        dst.put_u8(seq);
        dst.put_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_PAYLOAD {
            return seq;
        }
    }
}

/// Append one frame header + payload verbatim (payload must be at most [`MAX_PAYLOAD`]).
pub fn put_frame(dst: &mut BytesMut, seq: u8, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    dst.reserve(4 + payload.len());
    dst.put_uint_le(payload.len() as u64, 3);
    dst.put_u8(seq);
    dst.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_com_ping() {
        let mut b = BytesMut::new();
        assert_eq!(put_packet(&mut b, 0, &[0x0e]), 1);
        assert_eq!(&b[..], &[0x01, 0x00, 0x00, 0x00, 0x0e]);
        let f = split_frame(&mut b).unwrap();
        assert_eq!((f.seq, &f.payload[..]), (0, &[0x0e][..]));
        assert!(b.is_empty());
    }

    #[test]
    fn partial_frames_wait() {
        let mut b = BytesMut::from(&[0x03, 0x00, 0x00, 0x05, b'a'][..]);
        assert_eq!(split_frame(&mut b), None);
        assert_eq!(split_packet(&mut b, 100).unwrap(), None);
        b.extend_from_slice(b"bc");
        let (s, l, p) = split_packet(&mut b, 100).unwrap().unwrap();
        assert_eq!((s, l, &p[..]), (5, 5, &b"abc"[..]));
    }

    #[test]
    fn sixteen_mib_split_and_join() {
        let payload = vec![7u8; MAX_PAYLOAD * 2];
        let mut b = BytesMut::new();
        assert_eq!(put_packet(&mut b, 3, &payload), 6);
        // two full frames + an empty terminator
        assert_eq!(b.len(), payload.len() + 12);
        let (first, last, joined) = split_packet(&mut b, 64 << 20).unwrap().unwrap();
        assert_eq!((first, last), (3, 5));
        assert_eq!(joined.len(), payload.len());
        let mut b = BytesMut::new();
        put_packet(&mut b, 0, &payload);
        assert!(matches!(split_packet(&mut b, 1 << 20), Err(MyProtoError::PacketTooLarge { .. })));
    }

    proptest! {
        #[test]
        fn roundtrip(payload in proptest::collection::vec(any::<u8>(), 0..2000), seq in any::<u8>()) {
            let mut b = BytesMut::new();
            put_packet(&mut b, seq, &payload);
            let (s, _, p) = split_packet(&mut b, 1 << 20).unwrap().unwrap();
            prop_assert_eq!(s, seq);
            prop_assert_eq!(&p[..], &payload[..]);
            prop_assert!(b.is_empty());
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut b = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = split_packet(&mut b, 1 << 16) {}
        }
    }
}
