//! Node control and health: control messages reach every node, and a working engine checks out.

use super::harness::*;
use super::*;

/// An engine whose backend answers says so.
pub async fn check_is_ok<F: BrokerFactory>(f: &F) {
    for n in cluster(f).await {
        assert_eq!(n.engine.check().await, Ok(()));
    }
}

/// A control message reaches every node's handler, the sender's included, once each.
///
/// A node hears the cluster once its engine's check has passed: a node is started (and
/// ready) only then, and a message sent to it before is lost (the Redis engine subscribes
/// to the control channel on first use; its check waits for that subscription).
pub async fn control_reaches_every_node_including_the_sender<F: BrokerFactory>(f: &F) {
    let nodes = cluster(f).await;
    for n in &nodes {
        assert_eq!(n.engine.check().await, Ok(()));
    }
    nodes[0].engine.publish_control(b"to all".to_vec()).await.unwrap();
    let (last, from_last) = (&nodes[nodes.len() - 1], b"from the last node".to_vec());
    last.engine.publish_control(from_last.clone()).await.unwrap();
    if nodes.len() == 1 {
        skipped("control_reaches_every_node_including_the_sender", "another node", ONE_NODE);
    }
    for n in &nodes {
        wait_until(f, "two control messages", || n.control().len() >= 2).await;
        assert_eq!(n.control(), [b"to all".to_vec(), from_last.clone()]);
    }
}

#[cfg(test)]
mod memory {
    crate::engine_conformance!(#[test] fn, super::MemoryFactory::default());

    /// The broker half alone, as a broker without presence runs it.
    mod broker_half {
        crate::broker_conformance!(#[test] fn, super::super::MemoryFactory::default());
    }
}
