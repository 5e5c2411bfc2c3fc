use super::*;
use crate::messages::*;
use proptest::prelude::*;

#[test]
fn golden_json_commands() {
    // What centrifuge-js sends: fields in any order, unknown fields, several per frame.
    let frame = Bytes::from_static(
        br#"{"connect":{"token":"t0k","data":{"a":[1,2]},"name":"js","version":"5.7.4"},"id":1}
{"id":2,"subscribe":{"channel":"news","recover":true,"offset":7,"epoch":"xyz","flag":1,"unknown":{"deep":[1]}}}
{}"#,
    );
    let cmds = decode_commands(Format::Json, frame).unwrap();
    assert_eq!(cmds.len(), 3);
    let c = cmds[0].connect.as_ref().unwrap();
    assert_eq!((cmds[0].id, c.token.as_str(), c.name.as_str()), (1, "t0k", "js"));
    assert_eq!(&c.data[..], br#"{"a":[1,2]}"#);
    let s = cmds[1].subscribe.as_ref().unwrap();
    assert_eq!(
        (s.channel.as_str(), s.recover, s.offset, s.epoch.as_str(), s.flag),
        ("news", true, 7, "xyz", 1)
    );
    assert_eq!(cmds[2], Command::default(), "the empty command is the pong");
}

#[test]
fn golden_json_replies() {
    let r = Reply {
        id: 1,
        connect: Some(ConnectResult {
            client: "c1".into(),
            version: "0.1.0".into(),
            ping: 25,
            pong: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        &reply_bytes(Format::Json, &r).unwrap()[..],
        br#"{"id":1,"connect":{"client":"c1","version":"0.1.0","ping":25,"pong":true}}"#
    );
    let p = Push {
        channel: "news".into(),
        r#pub: Some(Publication {
            data: Bytes::from_static(b"{\n \"x\": 1}"),
            offset: 3,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        &push_bytes(Format::Json, p).unwrap()[..],
        br#"{"push":{"channel":"news","pub":{"data":{ "x": 1},"offset":3}}}"#
    );
    // ClientInfo always has user and client, even empty.
    let j = Push {
        channel: "c".into(),
        join: Some(Join {
            info: Some(ClientInfo::default()),
        }),
        ..Default::default()
    };
    assert_eq!(
        &push_bytes(Format::Json, j).unwrap()[..],
        br#"{"push":{"channel":"c","join":{"info":{"user":"","client":""}}}}"#
    );
    // presence_stats and history always carry their counts and positions.
    let r = Reply {
        id: 4,
        presence_stats: Some(PresenceStatsResult::default()),
        ..Default::default()
    };
    assert_eq!(
        &reply_bytes(Format::Json, &r).unwrap()[..],
        br#"{"id":4,"presence_stats":{"num_clients":0,"num_users":0}}"#
    );
    // An empty presence keeps its inner map (centrifuge-js reads `Object.keys` of it).
    let r = Reply {
        id: 2,
        presence: Some(PresenceResult::default()),
        ..Default::default()
    };
    assert_eq!(
        &reply_bytes(Format::Json, &r).unwrap()[..],
        br#"{"id":2,"presence":{"presence":{}}}"#
    );
    let r = Reply {
        id: 5,
        error: Some(Error {
            code: 103,
            message: "permission denied".into(),
            temporary: false,
        }),
        ..Default::default()
    };
    assert_eq!(
        &reply_bytes(Format::Json, &r).unwrap()[..],
        br#"{"id":5,"error":{"code":103,"message":"permission denied"}}"#
    );
    // The ping.
    assert_eq!(&reply_bytes(Format::Json, &Reply::default()).unwrap()[..], b"{}");
    assert_eq!(&reply_bytes(Format::Protobuf, &Reply::default()).unwrap()[..], [0x00]);
}

#[test]
fn golden_protobuf() {
    // Command{id: 1, connect: {name: "js"}}, length-prefixed; then the empty pong.
    let frame = Bytes::from_static(&[0x08, 0x08, 0x01, 0x22, 0x04, 0x22, 0x02, b'j', b's', 0x00]);
    let cmds = decode_commands(Format::Protobuf, frame).unwrap();
    assert_eq!(cmds.len(), 2);
    assert_eq!(cmds[0].id, 1);
    assert_eq!(cmds[0].connect.as_ref().unwrap().name, "js");
    assert_eq!(cmds[1], Command::default());
    // Reply{id: 1, connect: {client: "c"}}.
    let r = Reply {
        id: 1,
        connect: Some(ConnectResult {
            client: "c".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        &reply_bytes(Format::Protobuf, &r).unwrap()[..],
        [0x07, 0x08, 0x01, 0x2a, 0x03, 0x0a, 0x01, b'c']
    );
}

#[test]
fn bad_frames() {
    assert!(matches!(
        decode_commands(Format::Json, Bytes::from_static(b"{not json")),
        Err(DecodeError::Json(_))
    ));
    assert!(matches!(
        decode_commands(Format::Json, Bytes::from_static(b"[1,2]")),
        Err(DecodeError::Json(_))
    ));
    assert!(matches!(
        decode_commands(Format::Json, Bytes::from_static(b"{\"id\":-1}")),
        Err(DecodeError::Json(_))
    ));
    assert_eq!(decode_commands(Format::Json, Bytes::from_static(b"\n")), Err(DecodeError::Empty));
    assert!(matches!(
        decode_commands(Format::Protobuf, Bytes::from_static(&[0x05, 0x08])),
        Err(DecodeError::Protobuf(_))
    ));
    assert!(matches!(
        decode_commands(
            Format::Protobuf,
            Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
        ),
        Err(DecodeError::Protobuf(_))
    ));
    // Data that is not JSON cannot go to a JSON client.
    let p = Push {
        r#pub: Some(Publication {
            data: Bytes::from_static(b"\xff\x00"),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(push_bytes(Format::Json, p.clone()).is_err());
    assert!(push_bytes(Format::Protobuf, p).is_ok());
}

fn json_value() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        Just(Bytes::new()),
        any::<i64>().prop_map(|n| Bytes::from(n.to_string())),
        "[a-z ]{0,12}".prop_map(|s| Bytes::from(serde_json::to_string(&s).unwrap())),
        ("[a-z]{1,5}", any::<bool>()).prop_map(|(k, v)| Bytes::from(format!("{{\"{k}\":{v}}}"))),
    ]
}

prop_compose! {
    fn any_command()(id in any::<u32>(), which in 0..6u8, channel in "[a-z:#0-9]{0,12}", token in "[a-zA-Z0-9.]{0,20}", data in json_value(), offset in any::<u64>(), epoch in "[a-z]{0,6}", limit in any::<i32>(), flag in any::<i64>()) -> Command {
        let mut c = Command { id, ..Default::default() };
        match which {
            0 => c.connect = Some(ConnectRequest { token, data, name: channel, ..Default::default() }),
            1 => c.subscribe = Some(SubscribeRequest { channel, token, recover: offset % 2 == 0, offset, epoch, flag, ..Default::default() }),
            2 => {
                c.publish = Some(PublishRequest {
                    channel,
                    data,
                    ..Default::default()
                })
            }
            3 => c.history = Some(HistoryRequest { channel, limit, since: Some(StreamPosition { offset, epoch }), reverse: true }),
            4 => c.rpc = Some(RpcRequest { data, method: token }),
            _ => {}
        }
        c
    }
}

proptest! {
    #[test]
    fn commands_round_trip(cmds in proptest::collection::vec(any_command(), 1..5), proto in any::<bool>()) {
        let format = if proto { Format::Protobuf } else { Format::Json };
        let frame = encode_commands(format, &cmds);
        prop_assert_eq!(decode_commands(format, frame).unwrap(), cmds);
    }

    #[test]
    fn replies_round_trip(id in any::<u32>(), channel in "[a-z]{0,8}", data in json_value(), offset in any::<u64>(), proto in any::<bool>()) {
        let format = if proto { Format::Protobuf } else { Format::Json };
        let replies = vec![
            Reply { id, subscribe: Some(SubscribeResult { recoverable: true, offset, epoch: channel.clone(), publications: vec![Publication { data: data.clone(), offset, ..Default::default() }], ..Default::default() }), ..Default::default() },
            Reply { push: Some(Push { channel, r#pub: Some(Publication { data, offset, info: Some(ClientInfo { user: "u".into(), client: "c".into(), ..Default::default() }), ..Default::default() }), ..Default::default() }), ..Default::default() },
            Reply::default(),
        ];
        let mut frame = BytesMut::new();
        for r in &replies {
            encode_reply(format, r, &mut frame).unwrap();
        }
        prop_assert_eq!(decode_replies(format, frame.freeze()).unwrap(), replies);
    }

    /// Arbitrary frames, as commands (server) and as replies (client): no panic, and what
    /// decodes is a fixpoint of encode-then-decode (from the first re-encoding: the JSON
    /// encoder drops raw `\r` from embedded data, and Protobuf decoding drops unknown fields).
    #[test]
    fn arbitrary_frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), proto in any::<bool>()) {
        let format = if proto { Format::Protobuf } else { Format::Json };
        let frame = Bytes::from(data);
        if let Ok(cmds) = decode_commands(format, frame.clone()) {
            let again = decode_commands(format, encode_commands(format, &cmds)).unwrap();
            prop_assert_eq!(decode_commands(format, encode_commands(format, &again)).unwrap(), again);
        }
        if let Ok(replies) = decode_replies(format, frame) {
            let encode = |rs: &[Reply]| {
                let mut out = BytesMut::new();
                for r in rs {
                    encode_reply(format, r, &mut out).unwrap();
                }
                out.freeze()
            };
            let again = decode_replies(format, encode(&replies)).unwrap();
            prop_assert_eq!(decode_replies(format, encode(&again)).unwrap(), again);
        }
    }

    /// Frames built from valid commands with arbitrary bytes spliced in: mostly invalid
    /// frames that get past the first bytes, which random bytes alone rarely do in JSON.
    #[test]
    fn corrupted_frames_never_panic(cmds in proptest::collection::vec(any_command(), 1..3), proto in any::<bool>(), at in any::<prop::sample::Index>(), junk in proptest::collection::vec(any::<u8>(), 0..8)) {
        let format = if proto { Format::Protobuf } else { Format::Json };
        let mut frame = encode_commands(format, &cmds).to_vec();
        let at = at.index(frame.len() + 1);
        frame.splice(at..(at + junk.len()).min(frame.len()), junk);
        let _ = decode_commands(format, Bytes::from(frame.clone()));
        let _ = decode_replies(format, Bytes::from(frame));
    }
}

/// Map subscriptions' fields (client.proto: SubscribeRequest 15-19, SubscribeResult 15-18,
/// Publication 11, 12, 14, PublishRequest 3-5), by name in JSON and by number in Protobuf.
#[test]
fn golden_map_fields() {
    let frame = Bytes::from_static(
        br#"{"id":2,"subscribe":{"channel":"m:1","type":1,"phase":2,"cursor":"k","limit":5,"asc":true}}
{"id":3,"publish":{"channel":"m:1","type":1,"key":"a","removed":true}}"#,
    );
    let cmds = decode_commands(Format::Json, frame).unwrap();
    let s = cmds[0].subscribe.as_ref().unwrap();
    assert_eq!((s.r#type, s.phase, s.cursor.as_str(), s.limit, s.asc), (1, 2, "k", 5, true));
    let p = cmds[1].publish.as_ref().unwrap();
    assert_eq!((p.r#type, p.key.as_str(), p.removed), (1, "a", true));
    let result = SubscribeResult {
        r#type: 1,
        phase: 2,
        cursor: "k".into(),
        state: vec![Publication {
            key: "a".into(),
            removed: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let json = serde_json::to_string(&result).unwrap();
    assert_eq!(json, r#"{"type":1,"phase":2,"cursor":"k","state":[{"key":"a","removed":true}]}"#);
    let pb = prost::Message::encode_to_vec(&result);
    assert_eq!(
        pb,
        [0x78, 1, 0x80, 0x01, 2, 0x8a, 0x01, 1, b'k', 0x92, 0x01, 5, 0x5a, 1, b'a', 0x60, 1]
    );
    let epoch = Publication {
        offset: 1,
        epoch: "e".into(),
        ..Default::default()
    };
    assert_eq!(prost::Message::encode_to_vec(&epoch), [0x30, 1, 0x72, 1, b'e']);
    let req = SubscribeRequest {
        phase: 1,
        cursor: "c".into(),
        limit: 3,
        ..Default::default()
    };
    assert_eq!(
        prost::Message::encode_to_vec(&req),
        [0x80, 0x01, 1, 0x8a, 0x01, 1, b'c', 0x90, 0x01, 3]
    );
}
