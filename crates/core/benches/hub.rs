//! The hub's fan-out to 10,000 local subscribers, and the recovery merge; the same fan-out
//! to delta subscribers (a 10 KB JSON document changing by 1 %) and to subscribers with a
//! tags filter, and the bytes each delivery puts on the wire with and without delta.
//!
//! The subscribers stand in for the server's connections: a mutex-guarded queue of shared
//! frames, as the server's connections have (`wshub_server::transport`).

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use parking_lot::Mutex;
use std::collections::HashMap;
use wshub_core::connection::{ConnectionHandle, Control, Encoding, TransportInfo};
use wshub_core::hub::{Hub, SubscriberOptions};
use wshub_core::prepared::PreparedData;
use wshub_protocol::{FilterNode, Format, Publication};

struct Queue {
    id: u64,
    format: Format,
    frames: Mutex<VecDeque<Bytes>>,
}

impl ConnectionHandle for Queue {
    fn id(&self) -> u64 {
        self.id
    }
    fn encoding(&self) -> Encoding {
        Encoding::new(self.format, false)
    }
    fn deliver(&self, push: &PreparedData) {
        // A stand-in for the WebSocket frame: a short header before the payload, built once
        // per push in its framing cache, as the server's WebSocket transport does.
        let frame = push.framed(0, |p| Bytes::from([&[0x81, p.len().min(125) as u8][..], p].concat()));
        self.frames.lock().push_back(frame);
    }
    fn control(&self, _: Control) {}
    fn transport(&self) -> TransportInfo<'_> {
        TransportInfo {
            name: "websocket",
            emulation_session: None,
        }
    }
}

fn hub_with(n: u64, recovering: bool) -> (Hub, Vec<Arc<Queue>>) {
    hub_with_opts(n, recovering, |_| SubscriberOptions::default())
}

fn hub_with_opts(n: u64, recovering: bool, opts: impl Fn(u64) -> SubscriberOptions) -> (Hub, Vec<Arc<Queue>>) {
    let hub = Hub::default();
    let mut qs = Vec::new();
    for id in 0..n {
        let format = if id % 10 == 0 { Format::Protobuf } else { Format::Json };
        let q = Arc::new(Queue {
            id,
            format,
            frames: Mutex::new(VecDeque::with_capacity(4)),
        });
        hub.add_with("chat:room", q.clone(), false, recovering, opts(id));
        qs.push(q);
    }
    (hub, qs)
}

fn publication(offset: u64) -> Publication {
    Publication {
        data: Bytes::from_static(br#"{"text":"the quick brown fox jumps over the lazy dog 100 bytes of payload...."}"#),
        offset,
        ..Default::default()
    }
}

/// A JSON document of about 10 KB; each version changes about 1 % of its bytes (numbers
/// of 5 digits spread over it, 23 of them).
fn document(version: u64) -> Bytes {
    let mut out = String::from("{\"rows\":[");
    for i in 0..230u64 {
        if i > 0 {
            out.push(',');
        }
        let value = if i % 10 == 0 {
            10_000 + (version * 7919 + i) % 90_000
        } else {
            10_000 + i * 31
        };
        out.push_str(&format!("{{\"id\":{i},\"name\":\"item-{i:04}\",\"value\":{value}}}"));
    }
    out.push_str("]}");
    Bytes::from(out)
}

fn doc_publication(offset: u64, tag: &str) -> Publication {
    Publication {
        data: document(offset),
        offset,
        delta: true, // published with delta (API `delta: true` or `delta_publish`)
        tags: HashMap::from([("kind".to_string(), tag.to_string())]),
        ..Default::default()
    }
}

fn delta_opts(_: u64) -> SubscriberOptions {
    SubscriberOptions {
        delta: true,
        ..Default::default()
    }
}

fn filter_opts(_: u64) -> SubscriberOptions {
    SubscriberOptions {
        delta: false,
        keyed: false,
        filter: Some(FilterNode {
            op: "and".into(),
            nodes: vec![
                FilterNode {
                    key: "kind".into(),
                    cmp: "in".into(),
                    vals: vec!["a".into(), "b".into()],
                    ..Default::default()
                },
                FilterNode {
                    key: "price".into(),
                    cmp: "nex".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
    }
}

/// Prints the bytes one delivery puts on the wire (the WebSocket frame) per format, with
/// and without delta, for the 10 KB document changing by 1 %.
fn print_bytes_per_delivery() {
    for format in [Format::Json, Format::Protobuf] {
        let hub = Hub::default();
        let plain = Arc::new(Queue {
            id: 1,
            format,
            frames: Mutex::new(VecDeque::new()),
        });
        let delta = Arc::new(Queue {
            id: 2,
            format,
            frames: Mutex::new(VecDeque::new()),
        });
        hub.add("chat:room", plain.clone(), false, false);
        hub.add_with("chat:room", delta.clone(), false, false, delta_opts(0));
        for o in 1..=11 {
            hub.broadcast_publication("chat:room", &doc_publication(o, "a"));
        }
        let avg = |q: &Queue| {
            let f = q.frames.lock();
            f.iter().skip(1).map(Bytes::len).sum::<usize>() / (f.len() - 1)
        };
        eprintln!(
            "bytes per delivery, {format:?}, {} B document changing by 1 %: without delta {} B, with delta {} B (first publication whole: {} B)",
            document(1).len(),
            avg(&plain),
            avg(&delta),
            delta.frames.lock()[0].len()
        );
    }
}

fn fanout(c: &mut Criterion) {
    print_bytes_per_delivery();
    let mut g = c.benchmark_group("hub");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("fanout_10k_subscribers", |b| {
        b.iter_batched(
            || hub_with(10_000, false),
            |(hub, qs)| {
                hub.broadcast_publication("chat:room", &publication(1));
                black_box(qs)
            },
            BatchSize::LargeInput,
        )
    });
    // Subscribers with a stream position (recoverable channels): each delivery also checks
    // that the offset follows the last one sent.
    g.bench_function("fanout_10k_positioned_subscribers", |b| {
        b.iter_batched(
            || {
                let (hub, qs) = hub_with(10_000, true);
                for q in &qs {
                    let _ = hub.finish_recovery("chat:room", q.id, 0);
                }
                (hub, qs)
            },
            |(hub, qs)| {
                hub.broadcast_publication("chat:room", &publication(1));
                black_box(qs)
            },
            BatchSize::LargeInput,
        )
    });
    // The 10 KB document to plain and to delta subscribers: the delta is computed once per
    // publication, then one shared frame per format.
    for (name, opts) in [
        (
            "fanout_10k_subscribers_10kb_doc",
            (|_| SubscriberOptions::default()) as fn(u64) -> SubscriberOptions,
        ),
        ("fanout_10k_delta_subscribers_10kb_doc", delta_opts),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let (hub, qs) = hub_with_opts(10_000, false, opts);
                    hub.broadcast_publication("chat:room", &doc_publication(1, "a"));
                    (hub, qs)
                },
                |(hub, qs)| {
                    hub.broadcast_publication("chat:room", &doc_publication(2, "a"));
                    black_box(qs)
                },
                BatchSize::LargeInput,
            )
        });
    }
    // A tags filter (`kind in [a, b] and not exists price`) on every subscriber, evaluated
    // per delivery: one publication that passes, one that is dropped.
    for (name, tag) in [
        ("fanout_10k_filtered_subscribers_pass", "a"),
        ("fanout_10k_filtered_subscribers_drop", "z"),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || hub_with_opts(10_000, false, filter_opts),
                |(hub, qs)| {
                    let mut p = publication(1);
                    p.tags = HashMap::from([("kind".to_string(), tag.to_string())]);
                    hub.broadcast_publication("chat:room", &p);
                    black_box(qs)
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
    let mut g = c.benchmark_group("delta");
    let (a, b) = (document(1), document(2));
    g.bench_function("fossil_create_10kb_1pct", |bench| {
        bench.iter(|| wshub_protocol::fossil::create(black_box(&a), black_box(&b)))
    });
    let d = wshub_protocol::fossil::create(&a, &b);
    g.bench_function("fossil_apply_10kb_1pct", |bench| {
        bench.iter(|| wshub_protocol::fossil::apply(black_box(&a), black_box(&d), usize::MAX))
    });
    g.finish();
    let mut g = c.benchmark_group("recovery");
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("merge_1000_buffered", |b| {
        b.iter_batched(
            || {
                let (hub, qs) = hub_with(1, true);
                for o in 1..=1_000 {
                    hub.broadcast_publication("chat:room", &publication(o));
                }
                (hub, qs)
            },
            |(hub, qs)| {
                hub.finish_recovery("chat:room", 0, 500).map_err(|e| e.expected).unwrap_or_default();
                black_box(qs)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
