//! Encoding a publication push once per format, and decoding typical commands.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use wshub_protocol::codec::{decode_commands, push_bytes};
use wshub_protocol::{Format, Publication, Push};

fn bench(c: &mut Criterion) {
    let data = Bytes::from_static(br#"{"text":"the quick brown fox jumps over the lazy dog","user":"alice","n":12345}"#);
    for (name, format) in [("json", Format::Json), ("protobuf", Format::Protobuf)] {
        c.bench_function(&format!("encode_push_{name}"), |b| {
            b.iter(|| {
                let p = Push {
                    channel: "chat:room1".into(),
                    r#pub: Some(Publication {
                        data: data.clone(),
                        offset: 42,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                black_box(push_bytes(format, p))
            })
        });
    }
    let json = Bytes::from_static(br#"{"id":7,"publish":{"channel":"chat:room1","data":{"text":"hello there","n":1}}}"#);
    c.bench_function("decode_publish_json", |b| {
        b.iter(|| black_box(decode_commands(Format::Json, json.clone())))
    });
    let proto = wshub_protocol::codec::encode_commands(Format::Protobuf, &decode_commands(Format::Json, json.clone()).unwrap_or_default());
    c.bench_function("decode_publish_protobuf", |b| {
        b.iter(|| black_box(decode_commands(Format::Protobuf, proto.clone())))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
