//! Fuzz the client-side decoders: startup packets, then regular frontend messages and the
//! field parsers the proxy runs on them. Nothing may panic or allocate past the caps.
#![no_main]

use bytes::BytesMut;
use dgf_protocols::postgres::frame::split_frame;
use dgf_protocols::postgres::messages::{self, tag, Bind, Parse, Target};
use dgf_protocols::postgres::startup::parse_startup;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let _ = parse_startup(&mut buf);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(f)) = split_frame(&mut buf, 1 << 16) {
        let body = f.body();
        let _ = match f.tag() {
            tag::QUERY => messages::query_text(body).map(|_| ()),
            tag::PARSE => Parse::decode(body).and_then(|p| p.query().map(|_| ())),
            tag::BIND => Bind::decode(body).map(|_| ()),
            tag::DESCRIBE | tag::CLOSE => Target::decode(body).map(|_| ()),
            tag::PASSWORD => messages::sasl_initial_response(body).map(|_| ()).or_else(|_| messages::password(body).map(|_| ())),
            _ => Ok(()),
        };
    }
});
