//! Map writes and reads on the node: the server API's map methods, and client writes once
//! the session has checked them. Each refuses a channel whose namespace is not a map
//! (107), as Centrifugo.

use std::collections::HashMap;

use bytes::Bytes;
use wshub_protocol::{ClientInfo, Publication};

use super::broker::{MapUpdate, MapWrite, StateQuery};
use super::state::{KeyMode, StatePage};
use crate::channel;
use crate::engine::StreamPosition;
use crate::node::{ApiError, Node, Options};

/// A map write as the API and clients ask for it.
#[derive(Debug, Clone, Default)]
pub struct MapPublish {
    pub key: String,
    pub data: Bytes,
    pub info: Option<ClientInfo>,
    pub tags: HashMap<String, String>,
    pub idempotency_key: Option<String>,
    pub key_mode: KeyMode,
    /// Published with delta (the namespace's `delta_publish` implies it).
    pub delta: bool,
    /// Per-key ordering (see [`MapWrite::version`]).
    pub version: u64,
    pub version_epoch: String,
}

impl Node {
    /// The options of a map channel; 107 for another kind.
    pub fn map_options(&self, channel: &str) -> Result<Options, ApiError> {
        let opts = self.options(channel)?;
        if !opts.subscription_type.is_map() {
            tracing::debug!(channel, "map method on a channel that is no map");
            return Err(ApiError::bad_request("bad request: not a map channel"));
        }
        Ok(opts)
    }

    pub async fn map_publish(&self, channel: &str, w: MapPublish) -> Result<MapUpdate, ApiError> {
        if w.key.is_empty() {
            return Err(ApiError::bad_request("bad request: key required"));
        }
        let opts = self.map_options(channel)?;
        if !w.data.is_empty() {
            // A map entry may be a key alone (map presence entries are).
            channel::check_data(opts.channel_config(), &opts, &w.data).map_err(ApiError::bad_request)?;
        }
        let write = MapWrite {
            key: w.key,
            publication: Publication {
                data: w.data,
                info: w.info,
                tags: w.tags,
                ..Default::default()
            },
            removed: false,
            delta: w.delta || opts.delta_publish,
            key_mode: w.key_mode,
            idempotency_key: w.idempotency_key,
            version: w.version,
            version_epoch: w.version_epoch,
        };
        crate::series::broker_message_sent("publication");
        Ok(self.map_broker.write(channel, opts.map.retention(), write).await?)
    }

    pub async fn map_remove(
        &self,
        channel: &str,
        key: &str,
        idempotency_key: Option<String>,
        tags: HashMap<String, String>,
    ) -> Result<MapUpdate, ApiError> {
        if key.is_empty() {
            return Err(ApiError::bad_request("bad request: key required"));
        }
        let opts = self.map_options(channel)?;
        let write = MapWrite {
            key: key.to_string(),
            publication: Publication {
                tags,
                ..Default::default()
            },
            removed: true,
            idempotency_key,
            ..Default::default()
        };
        Ok(self.map_broker.write(channel, opts.map.retention(), write).await?)
    }

    pub async fn map_read_state(&self, channel: &str, query: StateQuery) -> Result<StatePage, ApiError> {
        self.map_options(channel)?;
        Ok(self.map_broker.read_state(channel, query).await?)
    }

    pub async fn map_read_stream(
        &self,
        channel: &str,
        since: Option<StreamPosition>,
        limit: i64,
        reverse: bool,
    ) -> Result<(Vec<Publication>, StreamPosition), ApiError> {
        self.map_options(channel)?;
        Ok(self.map_broker.read_stream(channel, since, limit, reverse).await?)
    }

    pub async fn map_stats(&self, channel: &str) -> Result<usize, ApiError> {
        self.map_options(channel)?;
        Ok(self.map_broker.stats(channel).await?)
    }

    pub async fn map_clear(&self, channel: &str) -> Result<(), ApiError> {
        self.map_options(channel)?;
        Ok(self.map_broker.clear(channel).await?)
    }
}
