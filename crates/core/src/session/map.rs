//! Map subscriptions (`crate::subscription::map`): the phases of a subscribe, each its own
//! request, and client map writes.
//!
//! The first state page (or a recovering stream request) is authorized and reserves a
//! [`MapPending`] for the channel; later pages ride on it without asking again, until
//! the switch to live turns it into a subscription. Reservations older than the
//! namespace's `subscribe_catch_up_timeout` close the client (3008), as Centrifugo.

use super::subscribe::Granted;
use super::*;
use crate::engine::EngineError;
use crate::subscription::map::broker::StateQuery;
use crate::subscription::map::ops::MapPublish;
use crate::subscription::map::state::KeyMode;
use crate::subscription::map::ClientKey;
use crate::subscription::Phase;

/// A map subscribe between its first request and live.
#[derive(Debug)]
pub(super) struct MapPending {
    started: Instant,
    /// Of the first state page, frozen: later pages answer with it, and entries written
    /// after it come through the stream instead.
    frozen: Option<StreamPosition>,
    /// The stream top when stream paging began.
    stream_start: Option<u64>,
    filter: Option<FilterNode>,
    chan_info: Bytes,
    proxy_data: Bytes,
    expires: Option<u64>,
    server_refresh: bool,
}

/// The reply of a map subscribe (type 1 whatever the map kind).
fn map_result(phase: Phase, position: &StreamPosition) -> SubscribeResult {
    SubscribeResult {
        r#type: 1,
        phase: phase.wire(),
        epoch: position.epoch.clone(),
        offset: position.offset,
        ..Default::default()
    }
}

fn keep(filter: &Option<FilterNode>, pubs: &mut Vec<Publication>) {
    if let Some(f) = filter {
        pubs.retain(|p| crate::filter::matches(f, &p.tags));
    }
}

impl Session {
    pub(super) async fn map_subscribe(&mut self, req: SubscribeRequest, now: Now) -> Result<SubscribeResult, Fail> {
        let Some(phase) = Phase::from_wire(req.phase) else {
            self.map_pending.remove(&req.channel);
            return Err(err(ec::BAD_REQUEST, "bad request: invalid phase"));
        };
        let opts = ChannelOptions::clone(&*self.node.options(&req.channel)?);
        if !req.delta.is_empty() && req.delta != crate::delta::FOSSIL {
            // As for streams: an unknown delta type is a bad request that closes (3501).
            return Err(Fail::Disconnect(BAD_REQUEST));
        }
        let continuing = !req.cursor.is_empty() || (phase != Phase::State && self.map_pending.contains_key(&req.channel));
        if continuing {
            let Some(p) = self.map_pending.get(&req.channel) else {
                // A cursor without the first page's authorization.
                return Err(err(ec::PERMISSION_DENIED, "permission denied"));
            };
            if now.mono >= p.started + opts.map.catch_up_timeout() {
                tracing::info!(channel = %req.channel, client = %self.client, "map subscribe catch-up timeout");
                self.map_pending.remove(&req.channel);
                return Err(Fail::Disconnect(SLOW));
            }
        } else {
            if self.map_pending.contains_key(&req.channel) {
                return Err(err(ec::ALREADY_SUBSCRIBED, "already subscribed"));
            }
            if phase != Phase::State && !req.recover {
                // Only a recovering client may skip the state.
                return Err(err(ec::PERMISSION_DENIED, "permission denied"));
            }
            self.check_filter(&req)?;
            let g: Granted = self.authorize(&req, now).await?;
            self.map_pending.insert(
                req.channel.clone(),
                MapPending {
                    started: now.mono,
                    frozen: None,
                    stream_start: None,
                    filter: req.tf.clone(),
                    chan_info: g.chan_info,
                    proxy_data: g.proxy_data,
                    expires: g.expires,
                    server_refresh: g.server_refresh,
                },
            );
        }
        let r = match phase {
            Phase::State => self.map_state_page(&req, &opts, now).await,
            Phase::Stream => self.map_stream_page(&req, &opts, now).await,
            Phase::Live => {
                let since = StreamPosition {
                    offset: req.offset,
                    epoch: req.epoch.clone(),
                };
                self.map_to_live(&req, &opts, since, Vec::new(), true, now).await
            }
        };
        if r.is_err() {
            self.map_pending.remove(&req.channel);
        }
        r
    }

    /// Fossil delta asked for and allowed by the namespace.
    fn map_delta(&self, req: &SubscribeRequest, opts: &ChannelOptions) -> bool {
        !req.delta.is_empty() && opts.allows_delta(&req.delta)
    }

    /// State or stream entries for a subscriber that will have delta: JSON strings on JSON.
    fn for_delta(&self, req: &SubscribeRequest, opts: &ChannelOptions, entries: Vec<Publication>) -> Vec<Publication> {
        match self.map_delta(req, opts) {
            true => crate::delta::state_for_delta(entries, self.format),
            false => entries,
        }
    }

    fn pending(&mut self, ch: &str) -> Result<&mut MapPending, Fail> {
        self.map_pending
            .get_mut(ch)
            .ok_or_else(|| err(ec::PERMISSION_DENIED, "permission denied"))
    }

    async fn map_state_page(&mut self, req: &SubscribeRequest, opts: &ChannelOptions, now: Now) -> Result<SubscribeResult, Fail> {
        let ch = &req.channel;
        let limit = opts.map.page_size(req.limit);
        let revision = (req.offset > 0 || !req.epoch.is_empty()).then(|| StreamPosition {
            offset: req.offset,
            epoch: req.epoch.clone(),
        });
        let query = StateQuery {
            cursor: req.cursor.clone(),
            limit,
            key: None,
            revision: revision.clone(),
        };
        let page = self.node.map_broker.read_state(ch, query).await.map_err(ApiError::from)?;
        let pending = self.pending(ch)?;
        if req.cursor.is_empty() {
            pending.frozen = Some(page.position.clone());
        }
        let frozen = match (&pending.frozen, req.cursor.is_empty()) {
            (Some(f), false) => f.clone(),
            _ => page.position.clone(),
        };
        let mut entries = page.entries;
        if let Some(r) = &revision {
            // Written after the client's position: it comes through the stream.
            entries.retain(|p| p.offset <= r.offset);
        }
        keep(&pending.filter, &mut entries);
        let entries = self.for_delta(req, opts, entries);
        if page.cursor.is_empty() {
            let stream = opts.map.mode.has_stream();
            let near = match stream {
                false => true,
                true => {
                    let (_, top) = self.node.map_broker.read_stream(ch, None, 0, false).await.map_err(ApiError::from)?;
                    frozen.offset.saturating_add(limit as u64) >= top.offset
                }
            };
            if near {
                return self.map_to_live(req, opts, frozen, entries, false, now).await;
            }
        }
        let mut r = map_result(Phase::State, &frozen);
        r.cursor = page.cursor;
        r.state = entries;
        Ok(r)
    }

    async fn map_stream_page(&mut self, req: &SubscribeRequest, opts: &ChannelOptions, now: Now) -> Result<SubscribeResult, Fail> {
        let ch = &req.channel;
        if !opts.map.mode.has_stream() {
            return Err(err(ec::BAD_REQUEST, "bad request: no stream"));
        }
        let node = self.node.clone();
        let frozen_epoch = self.pending(ch)?.frozen.as_ref().map(|f| f.epoch.clone());
        if frozen_epoch.is_some_and(|e| !req.epoch.is_empty() && e != req.epoch) {
            return Err(err(ec::UNRECOVERABLE_POSITION, "unrecoverable position"));
        }
        let start = match self.pending(ch)?.stream_start {
            Some(s) => s,
            None => {
                let (_, top) = node.map_broker.read_stream(ch, None, 0, false).await.map_err(ApiError::from)?;
                self.pending(ch)?.stream_start = Some(top.offset);
                top.offset
            }
        };
        let limit = opts.map.page_size(req.limit);
        let since = StreamPosition {
            offset: req.offset,
            epoch: req.epoch.clone(),
        };
        if req.offset.saturating_add(limit as u64) >= start {
            return self.map_to_live(req, opts, since, Vec::new(), true, now).await;
        }
        let (mut pubs, top) = node
            .map_broker
            .read_stream(ch, Some(since), limit as i64, false)
            .await
            .map_err(ApiError::from)?;
        let offset = pubs.last().map_or(req.offset, |p| p.offset);
        keep(&self.pending(ch)?.filter, &mut pubs);
        let pubs = self.for_delta(req, opts, pubs);
        let mut r = map_result(Phase::Stream, &StreamPosition { offset, epoch: top.epoch });
        r.publications = pubs;
        Ok(r)
    }

    /// The switch to live: the hub buffers the channel's publications while the stream
    /// is read from the client's position, then joins them (as a stream recovery does).
    async fn map_to_live(
        &mut self,
        req: &SubscribeRequest,
        opts: &ChannelOptions,
        since: StreamPosition,
        state: Vec<Publication>,
        recovery: bool,
        now: Now,
    ) -> Result<SubscribeResult, Fail> {
        let ch = req.channel.as_str();
        if self.subs.len() >= self.node.config.session.channel_limit {
            return Err(err(ec::LIMIT_EXCEEDED, "limit exceeded"));
        }
        let node = self.node.clone();
        let positioned = opts.map.mode.has_stream();
        let filter = self.pending(ch)?.filter.clone();
        let delta = self.map_delta(req, opts);
        let sub_opts = crate::hub::SubscriberOptions {
            delta,
            filter: filter.clone(),
            keyed: true,
        };
        node.hub.add_with(ch, self.handle.clone(), false, positioned, sub_opts);
        crate::series::action(crate::series::Action::BrokerSubscribe);
        if let Err(e) = node.map_broker.subscribe(ch).await {
            self.release(ch, opts, false).await;
            return Err(ApiError::from(e).into());
        }
        let mut r = map_result(Phase::Live, &since);
        r.state = state;
        r.delta = delta;
        if positioned {
            let limit = opts.map.live_limit();
            let read = node
                .map_broker
                .read_stream(ch, Some(since.clone()), limit.saturating_add(1) as i64, false)
                .await;
            let (mut pubs, top) = match read {
                Ok((pubs, top)) if pubs.len() <= limit && (since.epoch.is_empty() || since.epoch == top.epoch) => (pubs, top),
                Ok(_) | Err(EngineError::UnrecoverablePosition) => {
                    self.release(ch, opts, false).await;
                    return Err(err(ec::UNRECOVERABLE_POSITION, "unrecoverable position"));
                }
                Err(e) => {
                    self.release(ch, opts, false).await;
                    return Err(ApiError::from(e).into());
                }
            };
            if let Err(gap) = node.hub.finish_recovery(ch, self.handle.id(), top.offset) {
                tracing::debug!(channel = %ch, %gap, "map live switch gap");
                self.release(ch, opts, false).await;
                return Err(Fail::Disconnect(Disconnect::new(dc::INSUFFICIENT_STATE, "insufficient state")));
            }
            keep(&filter, &mut pubs);
            if delta {
                crate::delta::clear_marks(&mut pubs);
                pubs = crate::delta::recovered_keyed(pubs, self.format);
            }
            r.publications = pubs;
            r.epoch = top.epoch;
            r.offset = top.offset;
            r.recoverable = true;
            if recovery && req.recover {
                r.was_recovering = true;
                r.recovered = true;
            }
        }
        let Some(p) = self.map_pending.remove(ch) else {
            return Err(err(ec::PERMISSION_DENIED, "permission denied"));
        };
        if let (Some(e), false) = (p.expires, p.server_refresh) {
            r.expires = true;
            r.ttl = crate::deadline::ttl(e, now.unix);
        }
        r.data = p.proxy_data;
        crate::series::subscription_accepted();
        self.subs.insert(
            ch.to_string(),
            Sub {
                chan_info: p.chan_info,
                expires: self.sub_deadline(p.expires, p.server_refresh, now),
                presence: false,
                join_leave: false,
                server_refresh: p.server_refresh,
                map: true,
                shared_poll: None,
                tracked: None,
                server_side: false,
                stream: None,
            },
        );
        self.map_presence(ch, opts, true).await;
        Ok(r)
    }

    /// This client's entries in the channel's map presence channels: added (or their TTL
    /// refreshed) when `here`, else the client's own removed (a user's entry stays until
    /// its TTL: the user may have other connections). With `remove_client_on_unsubscribe`,
    /// the client's key leaves the map itself too.
    pub(super) async fn map_presence(&mut self, ch: &str, opts: &ChannelOptions, here: bool) {
        let node = self.node.clone();
        let clients = &opts.map_clients_presence_channel_prefix;
        let users = &opts.map_users_presence_channel_prefix;
        let chan_info = self.subs.get(ch).map(|s| s.chan_info.clone()).unwrap_or_default();
        let result = match here {
            true => {
                let mut r = Ok(());
                if !clients.is_empty() {
                    let w = MapPublish {
                        key: self.client.to_string(),
                        info: Some(self.client_info(chan_info)),
                        key_mode: KeyMode::IfNewOrRefresh,
                        ..Default::default()
                    };
                    r = node.map_publish(&format!("{clients}{ch}"), w).await.map(drop);
                }
                if !users.is_empty() && !self.user.is_empty() {
                    let w = MapPublish {
                        key: self.user.clone(),
                        key_mode: KeyMode::IfNewOrRefresh,
                        ..Default::default()
                    };
                    r = r.and(node.map_publish(&format!("{users}{ch}"), w).await.map(drop));
                }
                r
            }
            false => {
                let mut r = Ok(());
                if !clients.is_empty() {
                    r = node
                        .map_remove(&format!("{clients}{ch}"), &self.client, None, HashMap::new())
                        .await
                        .map(drop);
                }
                if opts.map.remove_client_on_unsubscribe {
                    r = r.and(node.map_remove(ch, &self.client, None, HashMap::new()).await.map(drop));
                }
                r
            }
        };
        if let Err(e) = result {
            tracing::debug!(channel = %ch, error = %e, "map presence not updated");
        }
    }

    /// A client's map write (`publish` with `type: 1`), or removal (`removed: true`).
    pub(super) async fn map_publish(&mut self, req: PublishRequest) -> Result<PublishResult, Fail> {
        let opts = self.node.options(&req.channel)?;
        if !opts.subscription_type.is_map() {
            return Err(err(ec::BAD_REQUEST, "bad request: not a map channel"));
        }
        let kind = match req.removed {
            false => ProxyKind::MapPublish,
            true => ProxyKind::MapRemove,
        };
        if let Some(ep) = self.node.proxies.for_channel(kind, &opts).cloned() {
            // The backend decides, instead of the permissions.
            return self.map_write_via_proxy(&ep, req).await;
        }
        let m = &opts.map;
        let (for_client, for_subscriber, for_anonymous) = match req.removed {
            false => (
                m.allow_publish_for_client,
                m.allow_publish_for_subscriber,
                m.allow_publish_for_anonymous,
            ),
            true => (
                m.allow_remove_for_client,
                m.allow_remove_for_subscriber,
                m.allow_remove_for_anonymous,
            ),
        };
        let user_ok = !self.user.is_empty() || for_anonymous;
        let allowed = (for_client && user_ok)
            || (for_subscriber && self.subs.contains_key(&req.channel) && user_ok)
            || self.node.config.session.insecure;
        if !allowed {
            return Err(err(ec::PERMISSION_DENIED, "permission denied"));
        }
        let key = match m.client_key {
            ClientKey::Given => req.key,
            ClientKey::ClientId => self.client.to_string(),
            ClientKey::UserId if self.user.is_empty() => return Err(err(ec::PERMISSION_DENIED, "permission denied")),
            ClientKey::UserId => self.user.clone(),
        };
        if key.is_empty() {
            return Err(err(ec::BAD_REQUEST, "bad request: key required"));
        }
        let node = self.node.clone();
        if req.removed {
            node.map_remove(&req.channel, &key, None, HashMap::new()).await?;
        } else {
            let chan_info = self.subs.get(&req.channel).map(|s| s.chan_info.clone()).unwrap_or_default();
            let w = MapPublish {
                key,
                data: req.data,
                info: Some(self.client_info(chan_info)),
                ..Default::default()
            };
            node.map_publish(&req.channel, w).await?;
        }
        Ok(PublishResult {})
    }
}
