//! Subscriptions: subscribe (permissions, proxy, delta and tags filter), recovery from
//! history, unsubscribe and release, subscription token refresh.

use super::*;
use crate::subscription::{stream, SubscriptionType};

/// What an authorized subscribe was granted.
pub(super) struct Granted {
    /// The namespace's options, with a token's or proxy's override applied.
    pub(super) opts: ChannelOptions,
    pub(super) chan_info: Bytes,
    /// The token's or proxy's `data`, for the reply.
    pub(super) proxy_data: Bytes,
    /// Unix seconds.
    pub(super) expires: Option<u64>,
    pub(super) server_refresh: bool,
    /// The subscribe stream proxy's stream, for the subscription once it is made.
    pub(super) stream: Option<proxy::stream::ProxyStream>,
}

impl Session {
    pub(super) async fn subscribe(&mut self, req: SubscribeRequest, now: Now, budget: usize) -> Result<SubscribeResult, Fail> {
        let opts = self.node.options(&req.channel)?;
        if self.subs.contains_key(&req.channel) {
            return Err(err(ec::ALREADY_SUBSCRIBED, "already subscribed"));
        }
        // Centrifugo's answer to a type the namespace does not serve is 103: a silent stream
        // instead would look subscribed and receive nothing it expects.
        if SubscriptionType::from_wire(req.r#type) != Some(opts.subscription_type) {
            tracing::debug!(channel = %req.channel, r#type = req.r#type, "subscription type not allowed for namespace");
            return Err(err(ec::PERMISSION_DENIED, "permission denied"));
        }
        match opts.subscription_type {
            SubscriptionType::Stream => {}
            t if t.is_map() => return self.map_subscribe(req, now).await,
            _ => {
                if !req.delta.is_empty() && req.delta != crate::delta::FOSSIL {
                    return Err(Fail::Disconnect(BAD_REQUEST));
                }
                return self.shared_poll_subscribe(req, now).await;
            }
        }
        drop(opts);
        self.check_filter(&req)?;
        if !req.delta.is_empty() && req.delta != crate::delta::FOSSIL {
            // As Centrifugo: an unknown delta type is a bad request that closes (3501).
            return Err(Fail::Disconnect(BAD_REQUEST));
        }
        let Granted {
            opts,
            chan_info,
            proxy_data,
            expires,
            server_refresh,
            stream,
        } = self.authorize(&req, now).await?;
        // As Centrifugo: a client that may read the channel's history may also ask for
        // recovery or positioning, whatever `allow_recovery` and `allow_positioning` say. A
        // subscribe stream's publications are the backend's, with no place in the channel's
        // history: neither recovery nor positioning for it, as Centrifugo.
        let history = self.history_access_when_subscribed(&opts);
        let own_stream = stream.is_none();
        let recoverable =
            own_stream && opts.has_history() && (opts.force_recovery || (req.recoverable && (opts.allow_recovery || history)));
        let positioned =
            own_stream && opts.has_history() && (opts.force_positioning || (req.positioned && (opts.allow_positioning || history)));
        let cache = opts.cache_recovery();
        // `auto_cache_recover`: in cache mode a subscribe recovers unasked, from the position
        // the request carries (none: offset 0).
        let recover = req.recover || (cache && opts.auto_cache_recover);
        let since = (recoverable && recover).then(|| StreamPosition {
            offset: req.offset,
            epoch: req.epoch.clone(),
        });
        let join_leave = opts.join_leave && (req.join_leave || opts.force_push_join_leave);
        let expires_mono = self.sub_deadline(expires, server_refresh, now);
        let params = SubParams {
            recoverable,
            positioned,
            cache,
            server_side: false,
            since,
            join_leave,
            chan_info,
            expires: expires_mono,
            strict_recovery: req.flag & 2 != 0,
            reply_budget: Some(budget),
            delta: !req.delta.is_empty() && opts.allows_delta(&req.delta),
            filter: req.tf,
        };
        let mut r = self.do_subscribe(&req.channel, &opts, params, now).await?;
        r.data = proxy_data;
        if let Some(s) = self.subs.get_mut(&req.channel) {
            s.server_refresh = server_refresh;
            s.stream = stream;
        }
        if let (Some(e), false) = (expires, server_refresh) {
            r.expires = true;
            r.ttl = crate::deadline::ttl(e, now.unix);
        }
        Ok(r)
    }

    /// Centrifugo's `hasAccessToHistory` for the subscriber this client is about to be.
    fn history_access_when_subscribed(&self, o: &ChannelOptions) -> bool {
        ((o.allow_history_for_client || o.allow_history_for_subscriber) && (!self.user.is_empty() || o.allow_history_for_anonymous))
            || self.node.config.session.insecure
    }

    /// A tags filter where the namespace allows one: Centrifugo answers both a filter the
    /// namespace does not allow and a malformed one with 107.
    pub(super) fn check_filter(&self, req: &SubscribeRequest) -> Result<(), Fail> {
        let Some(tf) = &req.tf else { return Ok(()) };
        if !self.node.options(&req.channel)?.allow_tags_filter {
            return Err(err(ec::BAD_REQUEST, "bad request: tags filter not allowed"));
        }
        if let Err(e) = crate::filter::validate(tf) {
            tracing::debug!(channel = %req.channel, error = %e, "invalid tags filter");
            return Err(err(ec::BAD_REQUEST, "bad request: invalid tags filter"));
        }
        Ok(())
    }

    /// Whether this client may subscribe to the channel: a subscription token, the
    /// subscribe proxy, or the namespace's permissions. What it grants comes back.
    pub(super) async fn authorize(&mut self, req: &SubscribeRequest, now: Now) -> Result<Granted, Fail> {
        let mut opts = ChannelOptions::clone(&*self.node.options(&req.channel)?);
        let mut chan_info = Bytes::new();
        let mut expires = None;
        let mut proxy_data = Bytes::new();
        let mut server_refresh = false;
        let live = self.node.live();
        let chans = &live.channel;
        let user_limited = opts.allow_user_limited_channels && channel::user_limited_allows(chans, &req.channel, &self.user).is_some();
        let subscribe_proxy = self.node.proxies.for_channel(ProxyKind::Subscribe, &opts).cloned();
        let stream_proxy = self.node.proxies.for_channel(ProxyKind::SubscribeStream, &opts).cloned();
        let mut stream = None;
        if req.token.is_empty() && channel::is_private(chans, &req.channel) {
            // `channel.private_prefix`: a token or nothing, whatever the namespace allows
            // (and before any proxy is asked), as Centrifugo.
            tracing::warn!(channel = %req.channel, client = %self.client, user = %self.user, "attempt to subscribe on private channel without token");
            return Err(err(ec::PERMISSION_DENIED, "permission denied"));
        }
        if !req.token.is_empty() {
            let claims = self.check_sub_token(&req.channel, &req.token, now).await?;
            if claims.expire_at.is_some_and(|e| e <= now.unix) {
                return Err(err(ec::EXPIRED, "expired"));
            }
            if let Some(o) = &claims.override_ {
                opts = o.apply(&opts);
            }
            chan_info = claims.info;
            proxy_data = claims.data;
            expires = claims.expire_at;
        } else if let (Some(ep), false) = (subscribe_proxy, user_limited) {
            let p = self.subscribe_via_proxy(&ep, req).await?;
            if let Some(o) = &p.override_ {
                opts = o.apply(&opts);
            }
            chan_info = p.chan_info;
            proxy_data = p.data;
            expires = p.expire_at;
            server_refresh = expires.is_some() && self.node.proxies.for_channel(ProxyKind::SubRefresh, &opts).is_some();
        } else if let (Some(ep), false) = (stream_proxy, user_limited) {
            let bidirectional = opts.subscribe_stream_proxy_bidirectional;
            let (p, s) = self.subscribe_via_stream(&ep, req, bidirectional).await?;
            if let Some(o) = &p.override_ {
                opts = o.apply(&opts);
            }
            chan_info = p.chan_info;
            proxy_data = p.data;
            expires = p.expire_at;
            stream = Some(s);
        } else {
            let allowed = match channel::user_limited_allows(chans, &req.channel, &self.user) {
                Some(true) if opts.allow_user_limited_channels => true,
                _ => {
                    (opts.allow_subscribe_for_client && (!self.user.is_empty() || opts.allow_subscribe_for_anonymous))
                        || self.node.config.session.insecure
                }
            };
            if !allowed {
                return Err(err(ec::PERMISSION_DENIED, "permission denied"));
            }
        }
        Ok(Granted {
            opts,
            chan_info,
            proxy_data,
            expires,
            server_refresh,
            stream,
        })
    }

    /// When a subscription granted until Unix time `expires` closes (monotonic): a
    /// client-side subscription outlives its token by `client.expired_sub_close_delay`
    /// (time to send `sub_refresh`); the sub refresh proxy is asked at the expiry itself.
    pub(super) fn sub_deadline(&self, expires: Option<u64>, server_refresh: bool, now: Now) -> Option<Instant> {
        let grace = match server_refresh {
            true => Duration::ZERO,
            false => self.node.config.session.expired_sub_close_delay,
        };
        expires.map(|e| mono_at(now, e) + grace)
    }

    /// Subscribes with the recovery scheme of PROTOCOL.md: the hub buffers live
    /// publications while history is read, then merges by offset.
    pub(super) async fn do_subscribe(&mut self, ch: &str, opts: &ChannelOptions, p: SubParams, now: Now) -> Result<SubscribeResult, Fail> {
        // Every way in (client subscribe, token channels, server API) counts against
        // `client.channel_limit` here.
        if self.subs.len() >= self.node.config.session.channel_limit {
            return Err(err(ec::LIMIT_EXCEEDED, "limit exceeded"));
        }
        let node = self.node.clone();
        let conn_id = self.handle.id();
        let sub_opts = crate::hub::SubscriberOptions {
            delta: p.delta,
            filter: p.filter.clone(),
            keyed: false,
        };
        let positioned = p.recoverable || p.positioned;
        node.hub.add_with(ch, self.handle.clone(), p.join_leave, positioned, sub_opts);
        // Asked by every subscriber, not only the channel's first on this node: a second
        // one must not be answered while the first's subscription is still being set up,
        // or fails.
        crate::series::action(crate::series::Action::BrokerSubscribe);
        if let Err(e) = node.broker.subscribe(ch).await {
            // The last one out tells the broker: a subscription kept for a reconnect would
            // otherwise outlive every subscriber.
            if node.hub.remove(ch, conn_id) {
                crate::series::action(crate::series::Action::BrokerUnsubscribe);
                let _ = node.broker.unsubscribe(ch).await;
            }
            return Err(ApiError::from(e).into());
        }
        let mut result = SubscribeResult {
            delta: p.delta,
            ..Default::default()
        };
        if positioned {
            self.stream_catch_up(ch, opts, &p, &mut result).await?;
        }
        let tracked = positioned.then(|| {
            Box::new(Tracked {
                epoch: result.epoch.clone(),
                offset: node.hub.position(ch, conn_id).unwrap_or(result.offset),
                seen_at: now.mono,
            })
        });
        let SubParams {
            chan_info,
            expires,
            server_side,
            ..
        } = p;
        let info = self.client_info(chan_info.clone());
        if opts.presence {
            crate::series::action(crate::series::Action::AddPresence);
            if let Err(e) = node.presence.add_presence(ch, &self.client, info.clone()).await {
                tracing::warn!(channel = %ch, error = %e, "presence not added");
            }
        }
        if opts.join_leave {
            crate::series::broker_message_sent("join");
            let _ = node.broker.publish_join(ch, info).await;
        }
        crate::series::subscription_accepted();
        self.subs.insert(
            ch.to_string(),
            Sub {
                chan_info,
                expires,
                presence: opts.presence,
                join_leave: opts.join_leave,
                server_refresh: false,
                map: false,
                shared_poll: None,
                tracked,
                server_side,
                stream: None,
            },
        );
        Ok(result)
    }

    /// A positioned subscriber's stream position and recovery, then its switch to live in
    /// the hub. On failure it has left the hub (a subscriber left recovering would buffer
    /// every publication for as long as the node runs).
    async fn stream_catch_up(&mut self, ch: &str, opts: &ChannelOptions, p: &SubParams, result: &mut SubscribeResult) -> Result<(), Fail> {
        let node = self.node.clone();
        let limits = stream::Limits {
            max_publications: node.config.session.recovery_max_publication_limit,
            reply_budget: p.reply_budget,
            meta_ttl: node.history_meta_ttl(opts),
        };
        let read = match (&p.since, p.cache) {
            (Some(since), true) => stream::catch_up_cache(&*node.broker, ch, since.clone(), p.filter.as_ref(), limits).await,
            (since, _) => stream::catch_up(&*node.broker, ch, since.clone(), limits).await,
        };
        let c = match read {
            Ok(c) => c,
            Err(e) => {
                self.release(ch, opts, false).await;
                return Err(ApiError::from(e).into());
            }
        };
        if c.was_recovering {
            crate::series::recover(c.recovered, c.publications.len());
            // Centrifugo refuses an unrecovered subscribe (flag 2) in stream mode only: in
            // cache mode the client wants the latest state, not continuity.
            if !c.recovered && p.strict_recovery && !p.cache {
                self.release(ch, opts, false).await;
                return Err(err(ec::UNRECOVERABLE_POSITION, "unrecoverable position"));
            }
        }
        let (publications, delta_base) = stream::for_subscriber(c.publications, p.filter.as_ref(), result.delta, self.format);
        result.recoverable = p.recoverable;
        result.positioned = true;
        result.was_recovering = c.was_recovering;
        result.recovered = c.recovered;
        result.epoch = c.epoch;
        result.offset = c.offset;
        result.publications = publications;
        if let Err(gap) = node.hub.finish_recovery_with_base(ch, self.handle.id(), c.top, delta_base) {
            tracing::debug!(channel = %ch, %gap, "recovery gap");
            self.release(ch, opts, false).await;
            return Err(Fail::Disconnect(Disconnect::new(dc::INSUFFICIENT_STATE, "insufficient state")));
        }
        Ok(())
    }

    /// Leaves a channel's hub entry, presence and, when `leave`, pushes a leave.
    pub(super) async fn release(&mut self, ch: &str, opts: &ChannelOptions, leave: bool) {
        let node = self.node.clone();
        let sub = self.subs.remove(ch);
        let (presence, join_leave) = sub
            .as_ref()
            .map_or((opts.presence, opts.join_leave), |s| (s.presence, s.join_leave));
        let map = sub.as_ref().is_some_and(|s| s.map);
        if sub.as_ref().is_some_and(|s| s.shared_poll.is_some()) {
            self.shared_poll_leave(ch, std::time::Instant::now()).await;
            return;
        }
        if map && leave {
            self.map_presence(ch, opts, false).await;
        }
        let chan_info = sub.map(|s| s.chan_info).unwrap_or_default();
        if node.hub.remove(ch, self.handle.id()) {
            crate::series::action(crate::series::Action::BrokerUnsubscribe);
            // A map channel's writes come through the map broker, not the stream broker.
            let _ = match opts.subscription_type.is_map() {
                true => node.map_broker.unsubscribe(ch).await,
                false => node.broker.unsubscribe(ch).await,
            };
        }
        if leave {
            if presence {
                crate::series::action(crate::series::Action::RemovePresence);
                let _ = node.presence.remove_presence(ch, &self.client).await;
            }
            if join_leave {
                crate::series::broker_message_sent("leave");
                let _ = node.broker.publish_leave(ch, self.client_info(chan_info)).await;
            }
        }
    }

    pub(super) async fn unsubscribe(&mut self, ch: &str) {
        self.map_pending.remove(ch);
        if !self.subs.contains_key(ch) {
            return;
        }
        let opts = self.node.options(ch).map(|o| ChannelOptions::clone(&o)).unwrap_or_default();
        self.release(ch, &opts, true).await;
    }

    /// A subscription token for `channel`: verified with the subscription keys, and bound
    /// to this channel, user and (when it says so) client. A mismatch closes with 3500, as
    /// Centrifugo: the token was made for someone or something else.
    async fn check_sub_token(&self, channel: &str, token: &str, now: Now) -> Result<crate::token::SubscribeClaims, Fail> {
        let node = self.node.clone();
        let live = node.live();
        let verifier = live.subscription_verifier();
        node.prepare_token(verifier, token).await;
        let claims = verifier
            .verify_subscribe(token, now.unix)
            .map_err(|e| self.sub_token_fail(e, channel))?;
        let mismatch = if claims.channel != channel {
            Some("token channel mismatch")
        } else if claims.user != self.user {
            Some("token user mismatch")
        } else if !claims.client.is_empty() && claims.client != *self.client {
            Some("token client mismatch")
        } else {
            None
        };
        if let Some(why) = mismatch {
            self.log_refused("subscription", why, channel);
            return Err(Fail::Disconnect(INVALID_TOKEN));
        }
        Ok(claims)
    }

    pub(super) async fn sub_refresh(&mut self, req: SubRefreshRequest, now: Now) -> Result<SubRefreshResult, Fail> {
        if !self.subs.contains_key(&req.channel) {
            return Err(err(ec::BAD_REQUEST, "not subscribed"));
        }
        if req.r#type != 0 {
            return self.shared_poll_refresh(req, now).await;
        }
        if req.token.is_empty() {
            return Err(err(ec::BAD_REQUEST, "subscription refresh token required"));
        }
        let claims = match self.check_sub_token(&req.channel, &req.token, now).await {
            Ok(c) => c,
            // centrifugal/centrifuge#627 (Centrifugo 6.9.6): an expired token on sub_refresh
            // closes with 3006, a reconnect code; the resubscribe with that token then gets
            // 109 and the SDK fetches a fresh one. (Before, the reply said "ok" and the
            // subscription never expired.)
            Err(Fail::Error(ApiError::TokenExpired)) => {
                return Err(Fail::Disconnect(Disconnect::new(dc::SUBSCRIPTION_EXPIRED, "subscription expired")))
            }
            // Invalid on refresh is 3500 (on subscribe it is 103).
            Err(Fail::Error(ApiError::PermissionDenied)) => return Err(Fail::Disconnect(INVALID_TOKEN)),
            Err(e) => return Err(e),
        };
        if claims.expire_at.is_some_and(|e| e <= now.unix) {
            return Err(Fail::Disconnect(Disconnect::new(dc::SUBSCRIPTION_EXPIRED, "subscription expired")));
        }
        let grace = self.node.config.session.expired_sub_close_delay;
        if let Some(s) = self.subs.get_mut(&req.channel) {
            s.expires = claims.expire_at.map(|e| mono_at(now, e) + grace);
        }
        Ok(SubRefreshResult {
            expires: claims.expire_at.is_some(),
            ttl: claims.expire_at.map_or(0, |e| crate::deadline::ttl(e, now.unix)),
            ..Default::default()
        })
    }
}
