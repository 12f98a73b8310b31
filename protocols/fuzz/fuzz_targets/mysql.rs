//! Fuzz the MySQL framing and every lazy decoder: packet joining with a size cap, handshake
//! responses, greetings, COM_CHANGE_USER, OK/ERR/column definitions, execute layouts and the
//! result-set tracker in both EOF modes. Nothing may panic.
#![no_main]

use bytes::BytesMut;
use dgf_protocols::mysql::consts::cap;
use dgf_protocols::mysql::frame::split_packet;
use dgf_protocols::mysql::handshake::{parse_auth_switch, parse_change_user, parse_client_hello, ServerGreeting};
use dgf_protocols::mysql::packets::{column_names, execute_layout, ErrPacket, OkPacket, PrepareOk};
use dgf_protocols::mysql::response::{Expect, Tracker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut packets = Vec::new();
    while let Ok(Some((_, _, p))) = split_packet(&mut buf, 1 << 20) {
        packets.push(p);
        if packets.len() > 64 {
            break;
        }
    }
    for p in &packets {
        let _ = parse_client_hello(p);
        let _ = ServerGreeting::parse(p);
        let _ = parse_change_user(p, u32::MAX);
        let _ = parse_auth_switch(p);
        let _ = OkPacket::parse(p, cap::SESSION_TRACK).map(|o| o.schema_change());
        let _ = ErrPacket::parse(p);
        let _ = column_names(p);
        let _ = PrepareOk::parse(p);
        let _ = execute_layout(p, 5);
    }
    for expect in [Expect::ResultSet, Expect::Prepare, Expect::FieldList, Expect::Fetch, Expect::Ok] {
        for client in [0, cap::DEPRECATE_EOF] {
            let mut t = Tracker::new(expect, cap::SESSION_TRACK, client);
            for p in &packets {
                if t.feed(p).is_err() || t.done() {
                    break;
                }
            }
        }
    }
});
