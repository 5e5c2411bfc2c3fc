//! Node control between wshub nodes: control messages travel on `{prefix}.control`,
//! which every node's pub/sub connection subscribes to (its own messages come back to it
//! too), through one shard of the engine.

use std::sync::Arc;

use wshub_core::cluster::{ControlHandler, NodeControl};
use wshub_core::engine::{BoxFuture, EngineError};

use crate::shard::Shard;
use crate::RedisEngine;

/// Control messages travel on `{prefix}.control`, which every node's pub/sub connection
/// subscribes to (its own messages come back to it too).
impl NodeControl for Shard {
    fn set_control_handler(&self, handler: Arc<dyn ControlHandler>) {
        let _ = self.control.set(handler);
    }

    fn publish_control(&self, data: Vec<u8>) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            // The pub/sub connection (which hears the control channel) starts with the node's
            // first announcement at the latest, not at its first subscriber.
            self.pubsub()?;
            let mut c = self.conn().await?;
            redis::cmd(self.publish_command())
                .arg(self.control_channel())
                .arg(data)
                .query_async::<i64>(&mut c)
                .await
                .map_err(|e| self.fail(e))?;
            Ok(())
        })
    }
}

impl NodeControl for RedisEngine {
    fn set_control_handler(&self, handler: Arc<dyn ControlHandler>) {
        self.shards[self.control].set_control_handler(handler);
    }
    fn publish_control(&self, data: Vec<u8>) -> BoxFuture<'_, Result<(), EngineError>> {
        self.shards[self.control].publish_control(data)
    }
}
