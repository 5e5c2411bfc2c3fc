//! The hub's fan-out to 10,000 local subscribers, and the recovery merge.
//!
//! The subscribers stand in for the server's connections: a mutex-guarded queue of shared
//! frames, as `wshub_server::client::ConnShared` has.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use parking_lot::Mutex;
use wshub_core::hub::{ConnectionHandle, Control, Hub};
use wshub_protocol::{Format, Publication};
use wshub_websocket::PreparedMessage;

struct Queue {
    id: u64,
    format: Format,
    frames: Mutex<VecDeque<Bytes>>,
}

impl ConnectionHandle for Queue {
    fn id(&self) -> u64 {
        self.id
    }
    fn format(&self) -> Format {
        self.format
    }
    fn deliver(&self, frame: &PreparedMessage) {
        self.frames.lock().push_back(frame.frame_for(None));
    }
    fn control(&self, _: Control) {}
}

fn hub_with(n: u64, recovering: bool) -> (Hub, Vec<Arc<Queue>>) {
    let hub = Hub::default();
    let mut qs = Vec::new();
    for id in 0..n {
        let format = if id % 10 == 0 { Format::Protobuf } else { Format::Json };
        let q = Arc::new(Queue {
            id,
            format,
            frames: Mutex::new(VecDeque::with_capacity(4)),
        });
        hub.add("chat:room", q.clone(), false, recovering);
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

fn fanout(c: &mut Criterion) {
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
