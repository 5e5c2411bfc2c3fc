//! Codec hot paths: frame parsing (with unmasking), frame encoding, masking, and
//! permessage-deflate compressed once and shared against compressed per connection.

use std::hint::black_box;
use std::io::IoSlice;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use wshub_websocket::deflate::{self, DeflateConfig};
use wshub_websocket::mask::{apply_mask, apply_mask_naive};
use wshub_websocket::{Config, Connection, Event, MessageKind, PreparedMessage};

fn client_frames(payload_len: usize, count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let payload: Vec<u8> = (0..payload_len).map(|i| b'a' + (i % 26) as u8).collect();
    let key = [1, 2, 3, 4];
    for _ in 0..count {
        let mut hdr = [0u8; 14];
        let n = wshub_websocket::frame::encode_header(
            &mut hdr,
            true,
            false,
            wshub_websocket::frame::OpCode::Text,
            Some(key),
            payload_len as u64,
        );
        out.extend_from_slice(&hdr[..n]);
        let start = out.len();
        out.extend_from_slice(&payload);
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for &size in &[16usize, 1024, 65536] {
        let count = (1 << 20) / (size + 6);
        let wire = client_frames(size, count);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(format!("text_{size}B"), |b| {
            b.iter(|| {
                let mut conn = Connection::new(Config::server(1 << 20, None));
                // 16 KiB reads, as the server glue does
                for chunk in wire.chunks(16 * 1024) {
                    conn.handle_read(chunk);
                    while let Some(e) = conn.poll_event() {
                        black_box(&e);
                        debug_assert!(matches!(e, Event::Message { .. }));
                    }
                }
            })
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for &size in &[16usize, 1024, 65536] {
        let payload = Bytes::from(vec![b'x'; size]);
        let count = ((1 << 20) / size).max(1);
        g.throughput(Throughput::Bytes((count * size) as u64));
        g.bench_function(format!("server_{size}B"), |b| {
            b.iter(|| {
                let mut conn = Connection::new(Config::server(1 << 20, None));
                for _ in 0..count {
                    conn.send(MessageKind::Text, payload.clone());
                }
                while conn.has_pending_transmit() {
                    let len: usize = {
                        let mut slices = [IoSlice::new(&[]); 64];
                        let n = conn.transmit_slices(&mut slices);
                        slices[..n].iter().map(|s| s.len()).sum()
                    };
                    conn.advance_transmit(black_box(len));
                }
            })
        });
    }
    g.finish();
}

fn masking(c: &mut Criterion) {
    let mut g = c.benchmark_group("mask");
    let mut buf = vec![0x5au8; 64 * 1024];
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("word_64KiB", |b| b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4], 1)));
    g.bench_function("naive_64KiB", |b| b.iter(|| apply_mask_naive(black_box(&mut buf), [1, 2, 3, 4], 1)));
    g.finish();
}

fn deflate_share(c: &mut Criterion) {
    let mut g = c.benchmark_group("deflate_fanout_1000_conns");
    let payload = Bytes::from(
        r#"{"push":{"channel":"news","pub":{"data":{"text":"the quick brown fox jumps over the lazy dog","n":12345},"offset":42}}}"#
            .repeat(4),
    );
    let (params, _) = deflate::negotiate(["permessage-deflate"], DeflateConfig { level: 1, min_size: 0 }).unwrap_or_else(|| unreachable!());
    let thousand_connections = || {
        (0..1000)
            .map(|_| Connection::new(Config::server(1 << 20, Some(params))))
            .collect::<Vec<_>>()
    };
    g.bench_function("compress_once_share", |b| {
        b.iter_batched(
            thousand_connections,
            |mut conns| {
                let msg = PreparedMessage::new(MessageKind::Text, payload.clone());
                for c in &mut conns {
                    c.send_prepared(&msg);
                }
                conns
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("compress_per_connection", |b| {
        b.iter_batched(
            thousand_connections,
            |mut conns| {
                for c in &mut conns {
                    c.send(MessageKind::Text, payload.clone());
                }
                conns
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, parse, encode, masking, deflate_share);
criterion_main!(benches);
