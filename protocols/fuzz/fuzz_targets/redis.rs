//! Fuzz the RESP request and reply framers and the value decoder with arbitrary bytes.
#![no_main]

use dgf_protocols::redis::{decode, parse_request, reply_len, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let small = Limits { max_bulk: 1 << 16, max_array: 1 << 10, max_depth: 16, max_inline: 1 << 12 };
    let mut args = Vec::new();
    let mut rest = data;
    while let Ok(Some(r)) = parse_request(rest, &small, &mut args) {
        for a in &args {
            assert!(a.end <= r.len);
        }
        if r.len == 0 {
            break;
        }
        rest = &rest[r.len..];
    }
    if let Ok(Some(n)) = reply_len(data, &small) {
        assert!(n <= data.len());
        // The value decoder refuses some framed replies on purpose (streamed RESP3 values,
        // which dgf forwards as bytes and never decodes); everything it accepts must agree.
        if let Ok(decoded) = decode(data, &small) {
            let (_, m) = decoded.expect("a framed reply is complete");
            assert_eq!(n, m);
        }
    }
});
