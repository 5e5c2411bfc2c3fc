//! Local delivery off the publisher's path.
//!
//! A publication reaches this node's subscribers through the hub: one prepared frame per
//! format, handed to every subscriber's queue. At 10,000 subscribers that loop takes a few
//! milliseconds, and when the engine called it inline (the memory engine does, under its
//! stream lock) the API's answer to the publisher waited for it: measured with
//! `wshub bench fanout` at 20 publications per second, p50 8 ms and p99 125 ms at 10,000
//! subscribers against 0.26 / 0.50 ms at 10 (BENCHMARKS.md, issue #17).
//!
//! So the engine only queues: the broker's events go into one of [`QUEUES`] FIFO queues,
//! chosen by channel, and the server's delivery tasks run them. Order per channel holds
//! because a channel always maps to the same queue and a queue is run by one caller at a
//! time, in order (its `turn` lock is held from taking jobs to finishing them).
//!
//! Bounded: a queue holds at most [`MAX_QUEUED`] jobs. A publisher that finds its queue
//! full runs the queue itself before returning (the old inline behaviour), so that when
//! delivery cannot keep up the publishers slow down instead of memory growing.
//!
//! Without a waker (no runtime: unit tests, benches) every job runs inline, as before.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;
use wshub_protocol::{ClientInfo, Publication};

use crate::hub::Hub;

/// Delivery queues per node: publications of different channels are delivered in
/// parallel across them.
pub const QUEUES: usize = 8;

/// Jobs one queue holds before its publishers deliver themselves.
pub const MAX_QUEUED: usize = 1024;

/// Jobs queued and not yet run, on every queue: 0 means every publication accepted so far
/// has been handed to its local subscribers.
pub const QUEUED_GAUGE: &str = "wshub_delivery_queue_jobs";

enum Event {
    /// Boxed: a publication is much larger than the other events.
    Publication(Box<Publication>),
    Join(ClientInfo),
    Leave(ClientInfo),
    Reset,
}

struct Job {
    channel: String,
    event: Event,
    queued: Instant,
}

#[derive(Default)]
struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    /// Held by whoever runs this queue's jobs, from taking them to finishing them.
    turn: Mutex<()>,
}

/// Called with a queue's index when it goes from empty to not empty.
pub type Waker = Arc<dyn Fn(usize) + Send + Sync>;

pub struct Deliveries {
    hub: Arc<Hub>,
    queues: Vec<Queue>,
    wake: OnceLock<Waker>,
}

/// The hub's shard of a channel, folded onto the queues (the hub has a multiple of
/// [`QUEUES`] shards): one hash of the name serves both.
fn queue_of(channel: &str) -> usize {
    crate::hub::shard_of(channel) % QUEUES
}

const _: () = assert!(crate::hub::SHARDS.is_multiple_of(QUEUES), "each queue takes as many hub shards");

impl Deliveries {
    pub fn new(hub: Arc<Hub>) -> Self {
        Deliveries {
            hub,
            queues: (0..QUEUES).map(|_| Queue::default()).collect(),
            wake: OnceLock::new(),
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// From now on events are queued and `wake` is told which queue has work. Returns
    /// false (and changes nothing) if a waker was set before.
    pub fn set_waker(&self, wake: Waker) -> bool {
        self.wake.set(wake).is_ok()
    }

    pub fn publication(&self, channel: &str, publication: &Publication) {
        self.push(channel, Event::Publication(Box::new(publication.clone())));
    }

    pub fn join(&self, channel: &str, info: &ClientInfo) {
        self.push(channel, Event::Join(info.clone()));
    }

    pub fn leave(&self, channel: &str, info: &ClientInfo) {
        self.push(channel, Event::Leave(info.clone()));
    }

    pub fn reset(&self, channel: &str) {
        self.push(channel, Event::Reset);
    }

    fn push(&self, channel: &str, event: Event) {
        let Some(wake) = self.wake.get() else {
            return self.run(channel, event, Instant::now());
        };
        let job = Job {
            channel: channel.to_string(),
            event,
            queued: Instant::now(),
        };
        let i = queue_of(channel);
        let q = &self.queues[i];
        let mut jobs = q.jobs.lock();
        if jobs.len() >= MAX_QUEUED {
            drop(jobs);
            metrics::counter!("wshub_delivery_queue_full_total").increment(1);
            // Delivery is behind: run what is queued, then this job, in order. The caller
            // still holds the engine's order for this channel (the memory engine's stream
            // lock, a Redis shard's single reader), so no later job of the channel can be
            // queued before this one runs.
            let _turn = q.turn.lock();
            let pending = std::mem::take(&mut *q.jobs.lock());
            for j in pending {
                self.run_job(j);
                metrics::gauge!(QUEUED_GAUGE).decrement(1.0);
            }
            return self.run_job(job);
        }
        let was_empty = jobs.is_empty();
        jobs.push_back(job);
        drop(jobs);
        metrics::gauge!(QUEUED_GAUGE).increment(1.0);
        if was_empty {
            wake(i);
        }
    }

    /// Runs up to `max` of queue `i`'s jobs in order; true if more are waiting (the caller
    /// yields to other tasks, then calls again).
    pub fn run_queue(&self, i: usize, max: usize) -> bool {
        let Some(q) = self.queues.get(i) else { return false };
        let _turn = q.turn.lock();
        for _ in 0..max {
            let Some(job) = q.jobs.lock().pop_front() else { return false };
            self.run_job(job);
            metrics::gauge!(QUEUED_GAUGE).decrement(1.0);
        }
        !q.jobs.lock().is_empty()
    }

    /// Runs every queued job now (a drain calls it before closing clients: every
    /// publication acknowledged before is delivered first).
    pub fn flush(&self) {
        for i in 0..QUEUES {
            while self.run_queue(i, usize::MAX) {}
        }
    }

    /// Jobs waiting in all queues.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queues.iter().map(|q| q.jobs.lock().len()).sum()
    }

    fn run_job(&self, job: Job) {
        self.run(&job.channel, job.event, job.queued)
    }

    fn run(&self, channel: &str, event: Event, queued: Instant) {
        match event {
            Event::Publication(p) => {
                let started = Instant::now();
                metrics::histogram!("wshub_delivery_queue_seconds").record((started - queued).as_secs_f64());
                let published_at = p.time;
                self.hub.broadcast_owned(channel, *p);
                // Observability only: the time to hand one publication to every local
                // subscriber.
                let took = started.elapsed();
                metrics::histogram!("wshub_fanout_latency_seconds").record(took.as_secs_f64());
                crate::series::broadcast("publication", took, published_at);
                crate::series::publication_received();
            }
            Event::Join(info) => {
                crate::series::broker_message_received("join");
                let started = Instant::now();
                self.hub.broadcast_join_leave(channel, &info, true);
                crate::series::broadcast("join", started.elapsed(), 0);
            }
            Event::Leave(info) => {
                crate::series::broker_message_received("leave");
                let started = Instant::now();
                self.hub.broadcast_join_leave(channel, &info, false);
                crate::series::broadcast("leave", started.elapsed(), 0);
            }
            Event::Reset => self.hub.reset(channel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::testing::Recorder;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use wshub_protocol::Format;

    /// The `s` of each publication the recorder was given.
    fn seen(rec: &Recorder) -> Vec<u64> {
        rec.payloads
            .lock()
            .iter()
            .map(|p| {
                let v: serde_json::Value = serde_json::from_slice(p).unwrap_or_default();
                v["push"]["pub"]["data"]["s"].as_u64().unwrap_or(0)
            })
            .collect()
    }

    fn publication(s: u64) -> Publication {
        Publication {
            data: format!(r#"{{"s":{s}}}"#).into_bytes().into(),
            ..Default::default()
        }
    }

    fn setup() -> (Arc<Deliveries>, Arc<Recorder>) {
        let hub = Arc::new(Hub::default());
        let rec = Recorder::new(Format::Json);
        hub.add("room", rec.clone(), false, false);
        (Arc::new(Deliveries::new(hub)), rec)
    }

    #[test]
    fn without_a_waker_delivery_is_inline() {
        let (d, rec) = setup();
        d.publication("room", &publication(1));
        assert_eq!(seen(&rec), vec![1]);
        assert_eq!(d.queued(), 0);
    }

    #[test]
    fn queued_jobs_wait_for_a_run_and_keep_their_order() {
        let (d, rec) = setup();
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        assert!(d.set_waker(Arc::new(move |_| {
            w.fetch_add(1, Ordering::Relaxed);
        })));
        assert!(!d.set_waker(Arc::new(|_| {})), "a second waker is refused");
        for s in 1..=5 {
            d.publication("room", &publication(s));
        }
        assert!(rec.payloads.lock().is_empty(), "nothing delivered before a run");
        assert_eq!(woken.load(Ordering::Relaxed), 1, "woken once, when the queue stopped being empty");
        let i = queue_of("room");
        assert!(d.run_queue(i, 2), "three more wait");
        assert_eq!(seen(&rec), vec![1, 2]);
        assert!(!d.run_queue(i, 10));
        assert_eq!(seen(&rec), vec![1, 2, 3, 4, 5]);
        d.publication("room", &publication(6));
        assert_eq!(woken.load(Ordering::Relaxed), 2);
        d.flush();
        assert_eq!(seen(&rec), vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn a_full_queue_makes_the_publisher_deliver_in_order() {
        let (d, rec) = setup();
        assert!(d.set_waker(Arc::new(|_| {})));
        let n = MAX_QUEUED as u64;
        for s in 1..=n {
            d.publication("room", &publication(s));
        }
        assert!(rec.payloads.lock().is_empty());
        assert_eq!(d.queued(), MAX_QUEUED);
        d.publication("room", &publication(n + 1));
        let got = seen(&rec);
        assert_eq!(got, (1..=n + 1).collect::<Vec<_>>(), "queued jobs first, then the publisher's own");
        assert_eq!(d.queued(), 0);
    }
}
