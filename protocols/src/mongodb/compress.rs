//! OP_COMPRESSED: unwrap to the original message and wrap a message, with noop, snappy, zlib
//! and zstd. Decompression is capped (the announced size must be within the message cap).

use super::frame::{put_message, Header, Message, OpCode};
use super::MongoProtoError as E;
use bytes::{BufMut, Bytes, BytesMut};
use std::io::Read;

/// Compressor ids of the wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressor {
    /// No compression (id 0).
    Noop,
    /// Snappy (id 1).
    Snappy,
    /// zlib (id 2).
    Zlib,
    /// Zstandard (id 3).
    Zstd,
}

impl Compressor {
    /// Wire id.
    pub fn id(self) -> u8 {
        match self {
            Compressor::Noop => 0,
            Compressor::Snappy => 1,
            Compressor::Zlib => 2,
            Compressor::Zstd => 3,
        }
    }
    /// From a wire id.
    pub fn from_id(id: u8) -> Result<Self, E> {
        Ok(match id {
            0 => Compressor::Noop,
            1 => Compressor::Snappy,
            2 => Compressor::Zlib,
            3 => Compressor::Zstd,
            other => return Err(E::Compression(format!("unknown compressor id {other}"))),
        })
    }
    /// The name used in `hello.compression`.
    pub fn name(self) -> &'static str {
        match self {
            Compressor::Noop => "noop",
            Compressor::Snappy => "snappy",
            Compressor::Zlib => "zlib",
            Compressor::Zstd => "zstd",
        }
    }
}

/// Unwrap an OP_COMPRESSED body into the original message (same request ids). The
/// uncompressed size must not exceed `max`.
pub fn decompress(header: &Header, body: &[u8], max: usize) -> Result<(Message, Compressor), E> {
    if body.len() < 9 {
        return Err(E::Truncated("OP_COMPRESSED"));
    }
    let original = i32::from_le_bytes([body[0], body[1], body[2], body[3]]);
    let size = i32::from_le_bytes([body[4], body[5], body[6], body[7]]);
    let comp = Compressor::from_id(body[8])?;
    if original == OpCode::Compressed.code() {
        return Err(E::Malformed("nested OP_COMPRESSED"));
    }
    if size < 0 || size as usize + 16 > max {
        return Err(E::MessageTooLarge { len: size.max(0) as usize + 16, max });
    }
    let size = size as usize;
    let data = &body[9..];
    let cerr = |e: &dyn std::fmt::Display| E::Compression(e.to_string());
    let out = match comp {
        Compressor::Noop => data.to_vec(),
        Compressor::Snappy => {
            let n = snap::raw::decompress_len(data).map_err(|e| cerr(&e))?;
            if n != size {
                return Err(E::Compression("snappy length does not match".into()));
            }
            snap::raw::Decoder::new().decompress_vec(data).map_err(|e| cerr(&e))?
        }
        Compressor::Zlib => {
            let mut v = Vec::with_capacity(size);
            flate2::read::ZlibDecoder::new(data).take(size as u64 + 1).read_to_end(&mut v).map_err(|e| cerr(&e))?;
            v
        }
        Compressor::Zstd => {
            let mut v = Vec::with_capacity(size);
            let dec = zstd::stream::read::Decoder::new(data).map_err(|e| cerr(&e))?;
            dec.take(size as u64 + 1).read_to_end(&mut v).map_err(|e| cerr(&e))?;
            v
        }
    };
    if out.len() != size {
        return Err(E::Compression("uncompressed size does not match".into()));
    }
    let header = Header { length: (16 + size) as i32, op_code: original, ..*header };
    Ok((Message { header, body: Bytes::from(out) }, comp))
}

/// Wrap `msg` in OP_COMPRESSED with `comp`.
pub fn compress(out: &mut BytesMut, msg: &Message, comp: Compressor) -> Result<(), E> {
    let cerr = |e: &dyn std::fmt::Display| E::Compression(e.to_string());
    let data = match comp {
        Compressor::Noop => msg.body.to_vec(),
        Compressor::Snappy => snap::raw::Encoder::new().compress_vec(&msg.body).map_err(|e| cerr(&e))?,
        Compressor::Zlib => {
            use std::io::Write;
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&msg.body).map_err(|e| cerr(&e))?;
            e.finish().map_err(|e| cerr(&e))?
        }
        Compressor::Zstd => zstd::bulk::compress(&msg.body, 1).map_err(|e| cerr(&e))?,
    };
    let mut body = BytesMut::with_capacity(9 + data.len());
    body.put_i32_le(msg.header.op_code);
    body.put_i32_le(msg.body.len() as i32);
    body.put_u8(comp.id());
    body.extend_from_slice(&data);
    put_message(out, msg.header.request_id, msg.header.response_to, OpCode::Compressed, &body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mongodb::frame::split_frame;
    use crate::mongodb::msg::put_msg;
    use bson::doc;

    #[test]
    fn every_compressor_round_trips() {
        let body = doc! { "find": "c", "filter": { "x": "y".repeat(100) }, "$db": "t" }.to_vec().unwrap();
        let mut raw = BytesMut::new();
        put_msg(&mut raw, 11, 0, 0, &body, &[]);
        let original = split_frame(&mut raw.clone(), 1 << 20).unwrap().unwrap();
        for c in [Compressor::Noop, Compressor::Snappy, Compressor::Zlib, Compressor::Zstd] {
            let mut out = BytesMut::new();
            compress(&mut out, &original, c).unwrap();
            let m = split_frame(&mut out, 1 << 20).unwrap().unwrap();
            assert_eq!(m.header.op_code, 2012);
            let (back, got) = decompress(&m.header, &m.body, 1 << 20).unwrap();
            assert_eq!(got, c);
            assert_eq!(back, original);
            assert!(decompress(&m.header, &m.body, 40).is_err(), "cap applies");
        }
    }

    #[test]
    fn lies_are_refused() {
        let h = Header { length: 0, request_id: 0, response_to: 0, op_code: 2012 };
        let mut b = vec![0xDD, 7, 0, 0, 100, 0, 0, 0, 2];
        b.extend_from_slice(&[1, 2, 3]);
        assert!(decompress(&h, &b, 1 << 20).is_err());
        b[8] = 9;
        assert!(decompress(&h, &b, 1 << 20).is_err());
        b[8] = 0;
        assert!(decompress(&h, &b, 1 << 20).is_err(), "noop size mismatch");
    }
}
