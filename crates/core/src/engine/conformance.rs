//! The behavioural contract of [`Engine`], [`BrokerHandler`] and [`NodeControl`], written once
//! and run against every engine, as centrifuge's `map_broker_shared_test.go`: the memory
//! engine in this crate's tests, the Redis engine against a real `redis-server` in
//! wshub-redis's. An implementation plugs in through an [`EngineFactory`]; the
//! [`engine_conformance!`](crate::engine_conformance) macro stamps out one test per case. A
//! broker without a presence manager of its own runs the broker half alone, through a
//! [`BrokerFactory`] and [`broker_conformance!`](crate::broker_conformance).
//!
//! Compiled for this crate's tests and, for other crates, with the `testing` feature. It needs
//! no runtime: every wait is a bounded loop over [`BrokerFactory::sleep`] (a real sleep, or a
//! fake clock moved forward), failing after [`LIMIT`].
//!
//! Each case asks the factory for a fresh cluster: two nodes sharing one backend, or one node
//! when the factory [is single-node](BrokerFactory::is_single_node). Cases written over "every
//! node" then run on that one; the parts that need a second node say so on stderr and are
//! skipped. That a publication did *not* arrive is shown by a later publication from the same
//! node on another channel arriving: both engines deliver one publisher's publications to a
//! node in the order they were published (memory at once, Redis over one connection each way).
//!
//! # Where the engines legitimately differ
//! - **Nodes.** The memory engine is a cluster of one: delivery to every subscribed node,
//!   presence seen from another node and control messages reaching another node are skipped.
//! - **Deliveries of channels without subscribers.** The memory engine hands every
//!   publication, join and leave to its node, whose hub drops what no one subscribed to
//!   (`subscribe` and `unsubscribe` are no-ops: there are no other nodes to spare the
//!   traffic). The Redis engine delivers only channels the node subscribed to, and stops after
//!   the last unsubscribe. The suite asserts the absence only when
//!   [`BrokerFactory::delivers_only_subscribed`]; deliveries to subscribed channels, in order,
//!   are asserted for both.
//! - **`history_ttl`.** The memory engine drops each publication `history_ttl` after it was
//!   published; the Redis engine drops the whole stream `history_ttl` after the *last*
//!   publication (whole seconds, at least one), as Centrifugo's. The suite asserts the common
//!   part: once `history_ttl` has passed since the last publication the history is empty, and
//!   its position (top offset and epoch) stays, so the next publication continues it.
//! - **Presence expiry.** Redis drops entries not re-added within `presence_ttl` (a dead
//!   node's clients); the memory engine keeps them until removed (its clients cannot outlive
//!   it). Not in the suite: wshub-redis tests it.
//! - **Stream resets** ([`BrokerHandler::handle_reset`]) happen only when a shared backend
//!   loses its data; not in the suite.
//! - **Brokers without history** ([`Broker::keeps_history`] false: NATS) deliver every
//!   publication at offset 0 and keep nothing: the history cases (and idempotency, which
//!   rests on the stream) are skipped, the delivery cases expect offset 0, and only each
//!   publisher's own publications, joins and leaves keep their order.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use wshub_protocol::{ClientInfo, Publication};

use super::*;
use crate::cluster::{ControlHandler, NodeControl};
use crate::memory::{ManualClock, MemoryEngine};

/// The longest any one wait of the suite may take.
pub const LIMIT: Duration = Duration::from_secs(10);
/// How often a wait looks again.
const STEP: Duration = Duration::from_millis(10);

/// Makes the brokers under test: the broker half of the suite (publications, history,
/// joins and leaves, subscriptions, node control), which a broker without a presence manager
/// of its own (NATS, say) runs alone.
pub trait BrokerFactory {
    type Broker: Broker + NodeControl;
    /// Whether a cluster has one node only (the two-node parts of the suite are skipped).
    /// A broker over a shared backend has several: the default.
    fn is_single_node(&self) -> bool {
        false
    }
    /// Whether a node receives only the channels it subscribed to (and nothing after its
    /// last unsubscribe: the default, as a broker over a shared backend does), or everything
    /// published, for its hub to drop (the memory engine).
    fn delivers_only_subscribed(&self) -> bool {
        true
    }
    /// A new cluster: `nodes` brokers sharing one backend, sharing nothing with the clusters
    /// made before. `nodes` is 2 only when the factory is not single-node.
    fn brokers(&self, nodes: usize) -> BoxFuture<'_, Vec<Self::Broker>>;
    /// Lets `d` pass: a real sleep, or a fake clock the brokers read moved forward.
    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()>;
}

/// A [`BrokerFactory`] whose brokers are whole engines (presence too): the whole suite.
pub trait EngineFactory: BrokerFactory<Broker: Engine> {}

/// The memory engine under the suite: a cluster of one, whose clock `sleep` moves forward,
/// so that no case really waits.
#[derive(Default)]
pub struct MemoryFactory {
    clock: Arc<ManualClock>,
}

impl EngineFactory for MemoryFactory {}

impl BrokerFactory for MemoryFactory {
    type Broker = MemoryEngine;

    fn is_single_node(&self) -> bool {
        true
    }

    fn delivers_only_subscribed(&self) -> bool {
        false
    }

    fn brokers(&self, nodes: usize) -> BoxFuture<'_, Vec<MemoryEngine>> {
        assert_eq!(nodes, 1, "the memory engine is a cluster of one");
        Box::pin(std::future::ready(vec![MemoryEngine::new(self.clock.clone())]))
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        self.clock.advance(d);
        Box::pin(std::future::ready(()))
    }
}

/// Runs a future on this thread (for the memory engine's tests, which need no runtime).
pub fn block_on<T>(fut: impl Future<Output = T>) -> T {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// One test per case of the broker half of the suite, for the brokers a [`BrokerFactory`]
/// makes; the same forms as [`engine_conformance!`](crate::engine_conformance).
#[macro_export]
macro_rules! broker_conformance {
    (#[$attr:meta] $($sig:ident)+, $factory:expr) => {
        $crate::engine_conformance!(@entry broker #[$attr] $($sig)+, $factory);
    };
}

/// One test per case of the suite (the broker half and the presence half), for the engines
/// a factory makes.
///
/// `#[attr] async fn, factory`: async tests under `attr` (e.g. `#[tokio::test]`), the factory
/// expression evaluated inside each (it may `.await`). `#[attr] fn, factory`: plain tests
/// run with [`block_on`].
///
/// ```ignore
/// wshub_core::engine_conformance!(#[tokio::test] async fn, RedisFactory::start().await);
/// ```
#[macro_export]
macro_rules! engine_conformance {
    (@entry $suite:ident #[$attr:meta] async fn, $factory:expr) => {
        $crate::engine_conformance!(@$suite [async #[$attr]] $factory);
    };
    (@entry $suite:ident #[$attr:meta] fn, $factory:expr) => {
        $crate::engine_conformance!(@$suite [sync #[$attr]] $factory);
    };
    (#[$attr:meta] $($sig:ident)+, $factory:expr) => {
        $crate::engine_conformance!(@entry engine #[$attr] $($sig)+, $factory);
    };
    (@broker $mode:tt $factory:expr) => {
        $crate::engine_conformance!(@each $mode $factory;
            history_offsets_count_from_one_under_one_epoch,
            publication_without_history_has_no_position_and_is_delivered,
            delivers_each_channel_in_order_only_where_subscribed,
            delivers_to_every_subscribed_node,
            stops_delivering_after_the_last_unsubscribe,
            history_queries,
            history_size_keeps_the_newest,
            history_ttl_empties_the_history_and_keeps_the_position,
            remove_history_keeps_the_position,
            join_and_leave_reach_subscribers_in_stream_order,
            idempotent_publish_is_published_once,
            check_is_ok,
            control_reaches_every_node_including_the_sender,
        );
    };
    (@engine $mode:tt $factory:expr) => {
        $crate::engine_conformance!(@broker $mode $factory);
        $crate::engine_conformance!(@each $mode $factory;
            presence_add_get_remove,
            presence_of_two_clients_and_two_users,
            presence_is_seen_from_the_other_node,
        );
    };
    (@each [async #[$attr:meta]] $factory:expr; $($case:ident,)*) => {
        $(
            #[$attr]
            async fn $case() {
                let f = $factory;
                $crate::engine::conformance::$case(&f).await;
            }
        )*
    };
    (@each [sync #[$attr:meta]] $factory:expr; $($case:ident,)*) => {
        $(
            #[$attr]
            fn $case() {
                $crate::engine::conformance::block_on(async {
                    let f = $factory;
                    $crate::engine::conformance::$case(&f).await;
                });
            }
        )*
    };
}

mod control;
mod delivery;
mod harness;
mod history;
mod presence;

pub use control::*;
pub use delivery::*;
pub use history::*;
pub use presence::*;
