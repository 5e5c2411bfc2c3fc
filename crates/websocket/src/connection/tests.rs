use super::*;
use crate::deflate::DeflateConfig;
use crate::frame::OpCode;
use proptest::prelude::*;

const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

/// A client frame as a peer would send it (masked).
fn client_frame(fin: bool, rsv1: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | op];
    let len = payload.len();
    if len < 126 {
        v.push(0x80 | len as u8);
    } else if len <= 65535 {
        v.push(0x80 | 126);
        v.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        v.push(0x80 | 127);
        v.extend_from_slice(&(len as u64).to_be_bytes());
    }
    v.extend_from_slice(&KEY);
    let start = v.len();
    v.extend_from_slice(payload);
    apply_mask(&mut v[start..], KEY, 0);
    v
}

fn server() -> Connection {
    Connection::new(Config::server(1 << 20, None))
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn output(c: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    let mut slices = [IoSlice::new(&[]); 64];
    let n = c.transmit_slices(&mut slices);
    for s in &slices[..n] {
        out.extend_from_slice(s);
    }
    let len = out.len();
    c.advance_transmit(len);
    out
}

/// Parses unmasked server output into (opcode, payload) pairs.
fn server_frames(mut b: &[u8]) -> Vec<(OpCode, bool, Vec<u8>)> {
    let mut v = Vec::new();
    while !b.is_empty() {
        let (h, used) = parse_header(b).unwrap().unwrap();
        assert!(h.mask.is_none());
        let end = used + h.payload_len as usize;
        v.push((h.opcode, h.rsv1, b[used..end].to_vec()));
        b = &b[end..];
    }
    v
}

fn close_code_of(c: &mut Connection) -> u16 {
    let _ = events(c);
    let frames = server_frames(&output(c));
    let (op, _, p) = frames.last().unwrap();
    assert_eq!(*op, OpCode::Close);
    u16::from_be_bytes([p[0], p[1]])
}

#[test]
fn text_message_in_one_read() {
    let mut c = server();
    c.handle_read(&client_frame(true, false, 1, b"hello"));
    assert_eq!(
        events(&mut c),
        vec![Event::Message {
            kind: MessageKind::Text,
            data: Bytes::from_static(b"hello")
        }]
    );
}

#[test]
fn byte_by_byte_and_fragments() {
    let mut c = server();
    let mut wire = client_frame(false, false, 1, "καλη".as_bytes());
    wire.extend(client_frame(true, false, 9, b"ping!")); // control between fragments
    wire.extend(client_frame(true, false, 0, "μέρα".as_bytes()));
    for b in &wire {
        c.handle_read(std::slice::from_ref(b));
    }
    let ev = events(&mut c);
    assert_eq!(ev[0], Event::Ping(Bytes::from_static(b"ping!")));
    assert_eq!(
        ev[1],
        Event::Message {
            kind: MessageKind::Text,
            data: Bytes::from("καλημέρα".as_bytes())
        }
    );
    assert_eq!(server_frames(&output(&mut c)), vec![(OpCode::Pong, false, b"ping!".to_vec())]);
}

#[test]
fn protocol_errors_close_with_1002() {
    let cases: Vec<Vec<u8>> = vec![
        {
            let mut f = client_frame(true, false, 1, b"x");
            f[1] &= 0x7f;
            f.truncate(2);
            f.push(b'x');
            f
        }, // unmasked
        client_frame(true, true, 1, b"x"), // rsv1 without deflate
        {
            let mut f = client_frame(true, false, 1, b"x");
            f[0] |= 0x20;
            f
        }, // rsv2
        client_frame(true, false, 3, b""), // reserved opcode
        client_frame(true, false, 0, b"x"), // continuation with nothing open
        {
            let mut f = client_frame(false, false, 1, b"a");
            f.extend(client_frame(true, false, 1, b"b"));
            f
        }, // new message mid-fragment
        client_frame(false, false, 9, b""), // fragmented ping
        client_frame(true, false, 9, &[0u8; 126]), // long ping
        client_frame(true, false, 8, &[0x03]), // 1-byte close
        client_frame(true, false, 8, &999u16.to_be_bytes()), // bad close code
        client_frame(true, false, 8, &1005u16.to_be_bytes()),
    ];
    for (i, wire) in cases.iter().enumerate() {
        let mut c = server();
        c.handle_read(wire);
        assert!(matches!(events(&mut c).last(), Some(Event::Failed(_))), "case {i}");
        assert_eq!(close_code_of(&mut c), 1002, "case {i}");
        assert!(c.is_done());
    }
}

#[test]
fn invalid_utf8_fails_fast_with_1007() {
    let mut c = server();
    // The frame claims 100 bytes; the first 4 already hold an invalid sequence.
    let mut wire = client_frame(true, false, 1, &[b'a', 0xff, b'b', b'c']);
    wire[1] = 0x80 | 100;
    c.handle_read(&wire);
    assert_eq!(close_code_of(&mut c), 1007);
    // Across fragments: a sequence split over two frames, invalid once joined.
    let mut c = server();
    c.handle_read(&client_frame(false, false, 1, &[0xF4]));
    assert!(events(&mut c).is_empty());
    c.handle_read(&client_frame(true, false, 0, &[0x90, 0x80, 0x80]));
    assert_eq!(close_code_of(&mut c), 1007);
    // Bad UTF-8 in a close reason.
    let mut c = server();
    c.handle_read(&client_frame(true, false, 8, &[0x03, 0xe8, 0xff]));
    assert_eq!(close_code_of(&mut c), 1007);
}

#[test]
fn too_big_is_1009_before_the_payload_arrives() {
    let mut c = Connection::new(Config::server(1000, None));
    let wire = client_frame(true, false, 2, &[0u8; 1001]);
    c.handle_read(&wire[..8]); // header only
    assert_eq!(close_code_of(&mut c), 1009);
    let mut c = Connection::new(Config::server(1000, None));
    c.handle_read(&client_frame(false, false, 2, &[0u8; 600]));
    c.handle_read(&client_frame(true, false, 0, &[0u8; 600]));
    assert_eq!(close_code_of(&mut c), 1009);
}

#[test]
fn close_handshake_from_peer() {
    let mut c = server();
    let mut p = 1000u16.to_be_bytes().to_vec();
    p.extend_from_slice(b"bye");
    c.handle_read(&client_frame(true, false, 8, &p));
    assert_eq!(
        events(&mut c),
        vec![Event::Closed {
            code: CloseCode::NORMAL,
            reason: "bye".into()
        }]
    );
    assert_eq!(close_code_of(&mut c), 1000);
    assert_eq!(c.state(), State::Closed);
    assert!(c.is_done());
    // Nothing is read or sent after.
    c.handle_read(&client_frame(true, false, 1, b"late"));
    assert!(events(&mut c).is_empty());
    assert!(!c.send(MessageKind::Text, Bytes::from_static(b"x")));
}

#[test]
fn close_handshake_from_us() {
    let mut c = server();
    c.close(CloseCode(3001), "shutdown");
    assert_eq!(c.state(), State::CloseSent);
    let out = server_frames(&output(&mut c));
    assert_eq!(out[0].2[..2], 3001u16.to_be_bytes());
    assert_eq!(&out[0].2[2..], b"shutdown");
    c.handle_read(&client_frame(true, false, 1, b"discarded"));
    c.handle_read(&client_frame(true, false, 8, &3001u16.to_be_bytes()));
    assert_eq!(
        events(&mut c),
        vec![Event::Closed {
            code: CloseCode(3001),
            reason: String::new()
        }]
    );
    assert!(output(&mut c).is_empty(), "no second close frame");
    assert!(c.is_done());
}

#[test]
fn eof_is_abnormal() {
    let mut c = server();
    c.handle_eof();
    assert_eq!(
        events(&mut c),
        vec![Event::Closed {
            code: CloseCode::ABNORMAL,
            reason: String::new()
        }]
    );
}

#[test]
fn idle_connection_holds_no_buffers() {
    let mut c = server();
    c.handle_read(&client_frame(true, false, 1, &[b'a'; 3000]));
    assert!(c.send(MessageKind::Text, Bytes::from(vec![b'b'; 3000])));
    let _ = events(&mut c);
    let _ = output(&mut c);
    assert_eq!(c.tx.capacity(), 0);
    assert_eq!(c.events.capacity(), 0);
    assert_eq!(c.control.capacity(), 0);
    assert!(c.message.is_none() && c.frame.is_none());
}

fn deflate_server() -> Connection {
    let (p, _) = crate::deflate::negotiate(["permessage-deflate"], DeflateConfig { level: 6, min_size: 0 }).unwrap();
    Connection::new(Config::server(1 << 20, Some(p)))
}

#[test]
fn compressed_messages_both_ways() {
    let mut c = deflate_server();
    // RFC 7692 7.2.3.1 "Hello", then the same message in two fragments (7.2.3.2 style).
    c.handle_read(&client_frame(true, true, 1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]));
    c.handle_read(&client_frame(false, true, 1, &[0xf2, 0x48, 0xcd]));
    c.handle_read(&client_frame(true, false, 0, &[0xc9, 0xc9, 0x07, 0x00]));
    let ev = events(&mut c);
    assert_eq!(ev.len(), 2);
    for e in ev {
        assert_eq!(
            e,
            Event::Message {
                kind: MessageKind::Text,
                data: Bytes::from_static(b"Hello")
            }
        );
    }
    let text = "abc".repeat(1000);
    c.send(MessageKind::Text, Bytes::from(text.clone()));
    let frames = server_frames(&output(&mut c));
    assert!(frames[0].1, "rsv1 set");
    assert!(frames[0].2.len() < 100);
    assert_eq!(Inflater::new().inflate(&frames[0].2, 1 << 20).unwrap(), text.as_bytes());
}

#[test]
fn compressed_bombs_and_garbage() {
    let mut c = Connection::new(Config::server(10_000, deflate_server().deflate));
    let bomb = deflate::compress(&vec![0u8; 1_000_000], 15, 9);
    c.handle_read(&client_frame(true, true, 2, &bomb));
    assert_eq!(close_code_of(&mut c), 1009);
    let mut c = deflate_server();
    c.handle_read(&client_frame(true, true, 2, &[0xff, 0xfe, 0xfd]));
    assert_eq!(close_code_of(&mut c), 1002);
    let mut c = deflate_server();
    c.handle_read(&client_frame(true, true, 1, &deflate::compress(&[0xff, 0xfe], 15, 6)));
    assert_eq!(close_code_of(&mut c), 1007);
    // RSV1 on a continuation or a control frame is an error even with deflate.
    let mut c = deflate_server();
    c.handle_read(&client_frame(false, false, 1, b"a"));
    c.handle_read(&client_frame(true, true, 0, b"b"));
    assert_eq!(close_code_of(&mut c), 1002);
}

#[test]
fn prepared_message_is_shared() {
    let msg = PreparedMessage::new(MessageKind::Text, Bytes::from("x".repeat(500)));
    let mut a = deflate_server();
    let mut b = deflate_server();
    let mut plain = server();
    assert!(a.send_prepared(&msg) && b.send_prepared(&msg) && plain.send_prepared(&msg));
    let (fa, fb) = (a.tx[0].clone(), b.tx[0].clone());
    assert_eq!(fa.as_ptr(), fb.as_ptr(), "the compressed frame is one allocation");
    assert_eq!(plain.tx[0].as_ptr(), msg.frame_for(None).as_ptr());
    let f = server_frames(&output(&mut a));
    assert_eq!(Inflater::new().inflate(&f[0].2, 1 << 20).unwrap(), "x".repeat(500).as_bytes());
}

#[test]
fn client_role_masks_and_reads_unmasked() {
    let mut cl = Connection::new(Config {
        role: Role::Client,
        max_message_size: 1 << 20,
        deflate: None,
    });
    cl.send(MessageKind::Binary, Bytes::from_static(b"abc"));
    let mut sv = server();
    let wire = output(&mut cl);
    assert_ne!(wire[1] & 0x80, 0);
    sv.handle_read(&wire);
    assert_eq!(
        events(&mut sv),
        vec![Event::Message {
            kind: MessageKind::Binary,
            data: Bytes::from_static(b"abc")
        }]
    );
    sv.send(MessageKind::Text, Bytes::from_static(b"back"));
    cl.handle_read(&output(&mut sv));
    assert_eq!(
        events(&mut cl),
        vec![Event::Message {
            kind: MessageKind::Text,
            data: Bytes::from_static(b"back")
        }]
    );
    // Answers to messages read before an error leave before the close frame.
    let mut sv = server();
    let mut wire = client_frame(true, false, 1, b"first");
    wire.extend(client_frame(true, false, 9, b"p"));
    wire.extend(client_frame(true, false, 3, b""));
    sv.handle_read(&wire);
    while let Some(e) = sv.poll_event() {
        if let Event::Message { kind, data } = e {
            sv.send(kind, data);
        }
    }
    let ops: Vec<OpCode> = server_frames(&output(&mut sv)).into_iter().map(|f| f.0).collect();
    assert_eq!(ops, vec![OpCode::Text, OpCode::Pong, OpCode::Close]);
    // A masked frame from a server is refused.
    cl.handle_read(&client_frame(true, false, 1, b"x"));
    assert!(matches!(events(&mut cl)[..], [Event::Failed(ProtocolError::MaskedServerFrame)]));
}

#[test]
fn vectored_output_keeps_order_across_partial_writes() {
    let mut c = server();
    for i in 0..10u8 {
        c.send(MessageKind::Binary, Bytes::from(vec![i; 1000]));
    }
    let total = c.pending_bytes();
    let mut all = Vec::new();
    while c.has_pending_transmit() {
        let mut slices = [IoSlice::new(&[]); 4];
        let n = c.transmit_slices(&mut slices);
        let mut chunk: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        chunk.truncate(777); // a short write
        c.advance_transmit(chunk.len());
        all.extend(chunk);
    }
    assert_eq!(all.len(), total);
    let frames = server_frames(&all);
    assert_eq!(frames.len(), 10);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.2, vec![i as u8; 1000]);
    }
}

proptest! {
    /// Whatever the split of the input, the same messages come out (encode then decode is
    /// the identity, independent of read boundaries).
    #[test]
    fn round_trip_any_split(msgs in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300), 1usize..4), 1..6), cut in 1usize..50) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for (text, data, frags) in &msgs {
            let (op, data) = if *text { (1, String::from_utf8_lossy(data).into_owned().into_bytes()) } else { (2, data.clone()) };
            let chunk = data.len().div_ceil(*frags).max(1);
            let pieces: Vec<&[u8]> = if data.is_empty() { vec![&[][..]] } else { data.chunks(chunk).collect() };
            for (i, p) in pieces.iter().enumerate() {
                wire.extend(client_frame(i + 1 == pieces.len(), false, if i == 0 { op } else { 0 }, p));
            }
            expected.push(Event::Message { kind: if *text { MessageKind::Text } else { MessageKind::Binary }, data: Bytes::from(data) });
        }
        let mut c = server();
        for piece in wire.chunks(cut) {
            c.handle_read(piece);
        }
        prop_assert_eq!(events(&mut c), expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400), deflate in any::<bool>()) {
        let mut c = if deflate { deflate_server() } else { server() };
        c.handle_read(&data);
        let _ = events(&mut c);
        let _ = output(&mut c);
    }
}

#[test]
fn close_discarding_keeps_only_a_started_frame() {
    let mut c = server();
    for i in 0..5u8 {
        c.send(MessageKind::Binary, Bytes::from(vec![i; 100]));
    }
    c.advance_transmit(50); // half of the first frame is out
    c.close_discarding(CloseCode(3008), "slow");
    let out = output(&mut c);
    // The rest of frame 0 (its last 52 bytes: header was 2), then the close frame.
    assert_eq!(&out[..52], &[0u8; 52][..]);
    let frames = server_frames(&out[52..]);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, OpCode::Close);
    assert_eq!(frames[0].2[..2], 3008u16.to_be_bytes());
}

#[test]
fn take_transmit_is_the_queue_in_order_and_empties_it() {
    let (mut a, mut b) = (server(), server());
    for c in [&mut a, &mut b] {
        c.send(MessageKind::Text, Bytes::from_static(b"one"));
        c.send(MessageKind::Binary, Bytes::from(vec![7u8; 70_000]));
    }
    let taken = b.take_transmit();
    assert_eq!(taken, output(&mut a));
    assert!(!b.has_pending_transmit());
    assert_eq!(b.pending_bytes(), 0);
    assert!(b.take_transmit().is_empty());
}
