//! Fuzz the server-side decoders the proxy runs on upstream responses.
#![no_main]

use bytes::BytesMut;
use dgf_protocols::postgres::frame::split_frame;
use dgf_protocols::postgres::messages::{self, btag, Authentication, ErrorFields};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(f)) = split_frame(&mut buf, 1 << 16) {
        let body = f.body();
        let _ = match f.tag() {
            btag::AUTH => Authentication::decode(body).map(|_| ()),
            btag::ERROR | btag::NOTICE => ErrorFields::decode(body).map(|_| ()),
            btag::PARAMETER_STATUS => messages::parameter_status(body).map(|_| ()),
            btag::BACKEND_KEY_DATA => messages::backend_key_data(body).map(|_| ()),
            btag::READY_FOR_QUERY => messages::ready_status(body).map(|_| ()),
            _ => messages::field_count(body).map(|_| ()),
        };
    }
});
