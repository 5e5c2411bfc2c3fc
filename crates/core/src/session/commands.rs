//! Channel commands that change no subscription: publish, presence, presence stats,
//! history.

use super::*;

impl Session {
    pub(super) async fn publish(&mut self, req: PublishRequest) -> Result<PublishResult, Fail> {
        if req.r#type != 0 {
            return self.map_publish(req).await;
        }
        let opts = self.node.options(&req.channel)?;
        // Before the proxy and the permissions, as Centrifugo.
        if let Err(why) = channel::check_data(opts.channel_config(), &opts, &req.data) {
            tracing::info!(channel = %req.channel, client = %self.client, reason = why, "publish data validation failed");
            return Err(err(ec::BAD_REQUEST, "bad request"));
        }
        if opts.subscribe_stream_proxy_enabled {
            // Not through the broker: a bidirectional stream takes it, or nothing does.
            return self.publish_to_stream(&req.channel, req.data).await;
        }
        let publish_proxy = self.node.proxies.for_channel(ProxyKind::Publish, &opts).cloned();
        let (data, skip_history) = if let Some(ep) = publish_proxy {
            self.publish_via_proxy(&ep, &req.channel, &req.data).await?
        } else {
            let allowed = (opts.allow_publish_for_client && (!self.user.is_empty() || opts.allow_publish_for_anonymous))
                || (opts.allow_publish_for_subscriber && self.subs.contains_key(&req.channel))
                || self.node.config.session.insecure;
            if !allowed {
                return Err(err(ec::PERMISSION_DENIED, "permission denied"));
            }
            (req.data, false)
        };
        let chan_info = self.subs.get(&req.channel).map(|s| s.chan_info.clone()).unwrap_or_default();
        let info = self.client_info(chan_info);
        self.node
            .clone()
            .publish(&req.channel, data, Some(info), skip_history, HashMap::new())
            .await?;
        Ok(PublishResult {})
    }

    /// Presence and history: granted to clients or subscribers by the namespace, and to
    /// anonymous ones only with `allow_*_for_anonymous` too (Centrifugo's
    /// `hasAccessToPresence`/`hasAccessToHistory`).
    pub(super) fn may_read(&self, ch: &str, for_client: bool, for_subscriber: bool, for_anonymous: bool) -> Result<(), Fail> {
        let granted = for_client || (for_subscriber && self.subs.contains_key(ch));
        if (granted && (!self.user.is_empty() || for_anonymous)) || self.node.config.session.insecure {
            Ok(())
        } else {
            Err(err(ec::PERMISSION_DENIED, "permission denied"))
        }
    }

    /// Presence on in `ch`'s namespace (108 otherwise) and granted to this client.
    fn may_see_presence(&self, ch: &str) -> Result<(), Fail> {
        let opts = self.node.options(ch)?;
        if !opts.presence {
            return Err(err(ec::NOT_AVAILABLE, "not available"));
        }
        self.may_read(
            ch,
            opts.allow_presence_for_client,
            opts.allow_presence_for_subscriber,
            opts.allow_presence_for_anonymous,
        )
    }

    pub(super) async fn presence(&mut self, ch: &str) -> Result<PresenceResult, Fail> {
        self.may_see_presence(ch)?;
        Ok(PresenceResult {
            presence: self.node.clone().presence(ch).await?,
        })
    }

    pub(super) async fn presence_stats(&mut self, ch: &str) -> Result<PresenceStatsResult, Fail> {
        self.may_see_presence(ch)?;
        let (num_clients, num_users) = self.node.clone().presence_stats(ch).await?;
        Ok(PresenceStatsResult { num_clients, num_users })
    }

    pub(super) async fn history(&mut self, req: HistoryRequest) -> Result<HistoryResult, Fail> {
        let opts = self.node.options(&req.channel)?;
        if !opts.has_history() {
            return Err(err(ec::NOT_AVAILABLE, "not available"));
        }
        self.may_read(
            &req.channel,
            opts.allow_history_for_client,
            opts.allow_history_for_subscriber,
            opts.allow_history_for_anonymous,
        )?;
        let query = HistoryQuery {
            since: req.since.map(|s| StreamPosition {
                offset: s.offset,
                epoch: s.epoch,
            }),
            limit: capped_limit(i64::from(req.limit), self.node.config.session.history_max_publication_limit),
            reverse: req.reverse,
            // Node::history fills in the namespace's meta_ttl.
            ..Default::default()
        };
        let h = self.node.clone().history(&req.channel, query).await?;
        Ok(HistoryResult {
            publications: h.publications,
            epoch: h.position.epoch,
            offset: h.position.offset,
        })
    }
}

/// A client's history limit under `client.history_max_publication_limit` (`max`, 0: no
/// cap): a negative limit (everything) or one over the cap becomes the cap.
fn capped_limit(limit: i64, max: usize) -> i64 {
    let Ok(max) = i64::try_from(max) else { return limit };
    if max == 0 || (0..=max).contains(&limit) {
        limit
    } else {
        max
    }
}
