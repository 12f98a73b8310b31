//! Fuzz the MongoDB decoders the proxy runs on client messages: framing, OP_MSG (with
//! checksums), OP_QUERY, OP_COMPRESSED, command inspection and the masking splice.
#![no_main]

use bytes::BytesMut;
use dgf_protocols::mongodb::frame::{split_frame, OpCode};
use dgf_protocols::mongodb::{compress, inspect, legacy, splice, OpMsg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(m)) = split_frame(&mut buf, 1 << 16) {
        let m = match m.op() {
            Ok(OpCode::Compressed) => match compress::decompress(&m.header, &m.body, 1 << 16) {
                Ok((inner, _)) => inner,
                Err(_) => continue,
            },
            _ => m,
        };
        match m.op() {
            Ok(OpCode::Msg) => {
                if let Ok(msg) = OpMsg::parse(&m.header, &m.body, Some(32)) {
                    if let Ok(doc) = msg.command() {
                        let _ = inspect::command(doc);
                        let _ = inspect::reply(doc);
                    }
                    let _ = splice::replace_strings(msg.body, &["a", "b"], 32, &mut |s| {
                        Some(splice::Replacement::Str(s.to_uppercase()))
                    });
                }
            }
            Ok(OpCode::Query) => {
                let _ = legacy::OpQuery::parse(&m.body, 32);
            }
            Ok(OpCode::Reply) => {
                let _ = legacy::OpReply::parse(&m.body);
            }
            _ => {}
        }
    }
});
