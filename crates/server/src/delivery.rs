//! The tasks that hand the broker's events to this node's subscribers: the runtime half of
//! [`wshub_core::delivery`], whose queues know nothing of tokio.

use std::sync::Arc;

use wshub_core::node::Node;

/// Jobs a delivery task runs before it lets other tasks of its thread go (a publication to
/// 10,000 subscribers is a few milliseconds of work).
const DELIVERY_BATCH: usize = 4;

/// Starts the tasks that deliver the broker's events to this node's subscribers
/// ([`wshub_core::delivery`]), one per queue, once per node (later calls do nothing).
/// Must be called inside a runtime.
pub fn start(node: &Arc<Node>) {
    let wake: Arc<Vec<tokio::sync::Notify>> = Arc::new((0..wshub_core::delivery::QUEUES).map(|_| tokio::sync::Notify::new()).collect());
    let w = wake.clone();
    if !node.deliveries.set_waker(Arc::new(move |i| {
        if let Some(n) = w.get(i) {
            n.notify_one()
        }
    })) {
        return;
    }
    for i in 0..wshub_core::delivery::QUEUES {
        // A weak reference: the tasks end with the node's last user instead of keeping it.
        let (deliveries, wake) = (Arc::downgrade(&node.deliveries), wake.clone());
        tokio::spawn(async move {
            loop {
                wake[i].notified().await;
                loop {
                    let Some(d) = deliveries.upgrade() else { return };
                    if !d.run_queue(i, DELIVERY_BATCH) {
                        break;
                    }
                    drop(d);
                    tokio::task::yield_now().await;
                }
            }
        });
    }
    // Map keys past their TTL leave, and their subscribers are told (with the delivery
    // tasks, once per node).
    let Some(every) = node.map_broker.expire_interval() else { return };
    let maps = Arc::downgrade(&node.map_broker);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(m) = maps.upgrade() else { return };
            m.expire().await;
        }
    });
}
