//! Subscriptions: subscribe (permissions, proxy, delta and tags filter), recovery from
//! history, unsubscribe and release, subscription token refresh.

use super::*;
use crate::engine::EngineError;

impl Session {
    pub(super) async fn subscribe(&mut self, req: SubscribeRequest, now: Now, budget: usize) -> Result<SubscribeResult, Fail> {
        let mut opts = ChannelOptions::clone(&*self.node.options(&req.channel)?);
        if self.subs.contains_key(&req.channel) {
            return Err(err(ec::ALREADY_SUBSCRIBED, "already subscribed"));
        }
        if req.r#type != 0 {
            // Map and shared-poll subscriptions need a namespace of that type, and wshub has
            // none yet: Centrifugo's answer to a type the namespace does not have is 103 (a
            // silent stream instead would look subscribed and receive nothing it expects).
            return Err(err(ec::PERMISSION_DENIED, "permission denied"));
        }
        if let Some(tf) = &req.tf {
            // Centrifugo answers both a filter the namespace does not allow and a malformed
            // one with 107.
            if !opts.allow_tags_filter {
                return Err(err(ec::BAD_REQUEST, "bad request: tags filter not allowed"));
            }
            if let Err(e) = crate::filter::validate(tf) {
                tracing::debug!(channel = %req.channel, error = %e, "invalid tags filter");
                return Err(err(ec::BAD_REQUEST, "bad request: invalid tags filter"));
            }
        }
        if !req.delta.is_empty() && req.delta != crate::delta::FOSSIL {
            // As Centrifugo: an unknown delta type is a bad request that closes (3501).
            return Err(Fail::Disconnect(BAD_REQUEST));
        }
        let mut chan_info = Bytes::new();
        let mut expires = None;
        let mut proxy_data = Bytes::new();
        let mut server_refresh = false;
        let live = self.node.live();
        let chans = &live.channel;
        let user_limited = opts.allow_user_limited_channels && channel::user_limited_allows(chans, &req.channel, &self.user).is_some();
        let subscribe_proxy = self.node.proxies.for_channel(ProxyKind::Subscribe, &opts).cloned();
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
            let p = self.subscribe_via_proxy(&ep, &req).await?;
            if let Some(o) = &p.override_ {
                opts = o.apply(&opts);
            }
            chan_info = p.chan_info;
            proxy_data = p.data;
            expires = p.expire_at;
            server_refresh = expires.is_some() && self.node.proxies.for_channel(ProxyKind::SubRefresh, &opts).is_some();
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
        let recoverable = opts.has_history() && (opts.force_recovery || (opts.allow_recovery && req.recoverable));
        let since = (recoverable && req.recover).then(|| StreamPosition {
            offset: req.offset,
            epoch: req.epoch.clone(),
        });
        let join_leave = opts.join_leave && (req.join_leave || opts.force_push_join_leave);
        // A client-side subscription outlives its token by `client.expired_sub_close_delay`
        // (time to send `sub_refresh`); the sub refresh proxy is asked at the expiry itself.
        let grace = match server_refresh {
            true => Duration::ZERO,
            false => self.node.config.session.expired_sub_close_delay,
        };
        let expires_mono = expires.map(|e| mono_at(now, e) + grace);
        let params = SubParams {
            recoverable,
            since,
            join_leave,
            chan_info,
            expires: expires_mono,
            strict_recovery: req.flag & 2 != 0,
            reply_budget: Some(budget),
            delta: !req.delta.is_empty() && opts.allows_delta(&req.delta),
            filter: req.tf,
        };
        let mut r = self.do_subscribe(&req.channel, &opts, params).await?;
        r.data = proxy_data;
        if let Some(s) = self.subs.get_mut(&req.channel) {
            s.server_refresh = server_refresh;
        }
        if let (Some(e), false) = (expires, server_refresh) {
            r.expires = true;
            r.ttl = crate::deadline::ttl(e, now.unix);
        }
        Ok(r)
    }

    /// Subscribes with the recovery scheme of PROTOCOL.md: the hub buffers live
    /// publications while history is read, then merges by offset.
    pub(super) async fn do_subscribe(&mut self, ch: &str, opts: &ChannelOptions, p: SubParams) -> Result<SubscribeResult, Fail> {
        let SubParams {
            recoverable: positioned,
            since,
            join_leave,
            chan_info,
            expires,
            strict_recovery,
            reply_budget,
            delta,
            filter,
        } = p;
        // Every way in (client subscribe, token channels, server API) counts against
        // `client.channel_limit` here.
        if self.subs.len() >= self.node.config.session.channel_limit {
            return Err(err(ec::LIMIT_EXCEEDED, "limit exceeded"));
        }
        let node = self.node.clone();
        let conn_id = self.handle.id();
        let sub_opts = crate::hub::SubscriberOptions {
            delta,
            filter: filter.clone(),
        };
        node.hub.add_with(ch, self.handle.clone(), join_leave, positioned, sub_opts);
        // Asked by every subscriber, not only the channel's first on this node: a second
        // one must not be answered while the first's subscription is still being set up,
        // or fails.
        if let Err(e) = node.broker.subscribe(ch).await {
            // The last one out tells the broker: a subscription kept for a reconnect would
            // otherwise outlive every subscriber.
            if node.hub.remove(ch, conn_id) {
                let _ = node.broker.unsubscribe(ch).await;
            }
            return Err(ApiError::from(e).into());
        }
        let mut result = SubscribeResult {
            delta,
            ..Default::default()
        };
        if positioned {
            result.recoverable = true;
            result.positioned = true;
            // One more than the cap: more than the cap missed means not recovered.
            let cap = node.config.session.recovery_max_publication_limit;
            let query = HistoryQuery {
                since: since.clone(),
                limit: match (&since, cap) {
                    (None, _) => 0,
                    (Some(_), 0) => -1,
                    (Some(_), cap) => i64::try_from(cap).unwrap_or(i64::MAX).saturating_add(1),
                },
                reverse: false,
                meta_ttl: node.history_meta_ttl(opts),
            };
            let history = node.broker.history(ch, query).await;
            let (publications, top) = match (history, &since) {
                (Ok(h), Some(s)) => {
                    result.was_recovering = true;
                    // Recovered: every offset from s.offset+1 to the top is in history.
                    let first_ok = h
                        .publications
                        .first()
                        .map_or(h.position.offset == s.offset, |p| p.offset == s.offset + 1);
                    let contiguous = h.publications.windows(2).all(|w| w[1].offset == w[0].offset + 1);
                    let last_ok = h.publications.last().is_none_or(|p| p.offset == h.position.offset);
                    let within_cap = cap == 0 || h.publications.len() <= cap;
                    let fits = reply_budget.is_none_or(|b| publications_bound(&h.publications) <= b);
                    let recovered = first_ok && contiguous && last_ok && within_cap && fits;
                    result.recovered = recovered;
                    result.epoch = h.position.epoch.clone();
                    if recovered {
                        result.offset = s.offset;
                        (h.publications, h.position)
                    } else {
                        result.offset = h.position.offset;
                        (Vec::new(), h.position)
                    }
                }
                (Ok(h), None) => {
                    result.epoch = h.position.epoch.clone();
                    result.offset = h.position.offset;
                    (Vec::new(), h.position)
                }
                (Err(EngineError::UnrecoverablePosition), Some(_)) => {
                    result.was_recovering = true;
                    let top = match node.broker.history(ch, HistoryQuery::default()).await {
                        Ok(h) => h.position,
                        Err(e) => {
                            // Out of the hub too: a subscriber left recovering would buffer
                            // every publication for as long as the node runs.
                            self.release(ch, opts, false).await;
                            return Err(ApiError::from(e).into());
                        }
                    };
                    result.epoch = top.epoch.clone();
                    result.offset = top.offset;
                    (Vec::new(), top)
                }
                (Err(e), _) => {
                    self.release(ch, opts, false).await;
                    return Err(ApiError::from(e).into());
                }
            };
            if result.was_recovering {
                crate::series::recover(result.recovered, publications.len());
            }
            if result.was_recovering && !result.recovered && strict_recovery {
                self.release(ch, opts, false).await;
                return Err(err(ec::UNRECOVERABLE_POSITION, "unrecoverable position"));
            }
            let mut publications = publications;
            crate::delta::clear_marks(&mut publications);
            if let Some(f) = &filter {
                // The stream position still covers them: the client just never sees them.
                publications.retain(|p| crate::filter::matches(f, &p.tags));
            }
            let delta_base = publications.last().map(|p| (p.offset, p.data.clone())).filter(|_| delta);
            if delta {
                publications = crate::delta::recovered(publications, self.format);
            }
            result.publications = publications;
            if let Err(gap) = node.hub.finish_recovery_with_base(ch, conn_id, top.offset, delta_base) {
                tracing::debug!(channel = %ch, %gap, "recovery gap");
                self.release(ch, opts, false).await;
                return Err(Fail::Disconnect(Disconnect::new(dc::INSUFFICIENT_STATE, "insufficient state")));
            }
        }
        let info = self.client_info(chan_info.clone());
        if opts.presence {
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
            },
        );
        Ok(result)
    }

    /// Leaves a channel's hub entry, presence and, when `leave`, pushes a leave.
    pub(super) async fn release(&mut self, ch: &str, opts: &ChannelOptions, leave: bool) {
        let node = self.node.clone();
        let sub = self.subs.remove(ch);
        let (presence, join_leave) = sub
            .as_ref()
            .map_or((opts.presence, opts.join_leave), |s| (s.presence, s.join_leave));
        let chan_info = sub.map(|s| s.chan_info).unwrap_or_default();
        if node.hub.remove(ch, self.handle.id()) {
            let _ = node.broker.unsubscribe(ch).await;
        }
        if leave {
            if presence {
                let _ = node.presence.remove_presence(ch, &self.client).await;
            }
            if join_leave {
                crate::series::broker_message_sent("leave");
                let _ = node.broker.publish_leave(ch, self.client_info(chan_info)).await;
            }
        }
    }

    pub(super) async fn unsubscribe(&mut self, ch: &str) {
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
        })
    }
}
