//! The connect command (token or connect proxy, server-side subscriptions) and the
//! connection token refresh.

use super::*;

impl Session {
    pub(super) async fn connect(&mut self, req: ConnectRequest, now: Now, mut budget: usize) -> Result<ConnectResult, Fail> {
        if self.state != State::Connecting {
            return Err(Fail::Disconnect(BAD_REQUEST));
        }
        let node = self.node.clone();
        let cfg = &node.config.session;
        self.client = Arc::from(node.new_client_id());
        self.keep_emulated_headers(&req.headers);
        let mut proxied: Option<proxied::ProxyConnect> = None;
        let mut from_token = false;
        let mut claims = if !req.token.is_empty() {
            let live = node.live();
            node.prepare_token(&live.verifier, &req.token).await;
            match live.verifier.verify_connect(&req.token, now.unix) {
                Ok(c) if c.user.is_empty() && cfg.disallow_anonymous_connection_tokens => {
                    // As Centrifugo: 3507, logged at debug only.
                    tracing::debug!("anonymous connection tokens disallowed");
                    return Err(Fail::Disconnect(PERMISSION_DENIED));
                }
                Ok(c) if c.expire_at.is_some_and(|e| e <= now.unix) => {
                    // `expire_at` already past (with a valid `exp`): Centrifugo's 110.
                    return Err(err(ec::EXPIRED, "expired"));
                }
                Ok(c) => {
                    from_token = true;
                    c
                }
                Err(e) => return Err(self.token_fail(e, "connection")),
            }
        } else {
            let by_proxy = match node.proxies.connect.as_ref() {
                Some(ep) => self.connect_via_proxy(ep, &req).await?,
                None => None,
            };
            match by_proxy {
                Some(p) => proxied.insert(p).claims.clone(),
                // `client.user_id_http_header`: an authenticating gateway in front said who
                // this is. (Centrifugo lets anonymous access override it; a known user is
                // kept here.)
                None => match self.header_user() {
                    Some(user) => crate::token::ConnectClaims {
                        user,
                        ..Default::default()
                    },
                    None if cfg.allow_anonymous_connect_without_token || cfg.insecure => Default::default(),
                    // Centrifugo: a connect proxy that answers no result gives no credentials.
                    None if node.proxies.connect.is_some() => return Err(Fail::Disconnect(BAD_REQUEST)),
                    None => return Err(Fail::Disconnect(INVALID_TOKEN)),
                },
            }
        };
        if cfg.insecure {
            claims.expire_at = None;
        }
        let personal = (cfg.personal_channel.enabled && !claims.user.is_empty())
            .then(|| cfg.personal_channel.channel(&claims.user, &node.live().channel));
        if let Some(p) = &personal {
            if node.options(p).is_err() {
                return Err(err(ec::UNKNOWN_CHANNEL, "unknown personal channel namespace"));
            }
            if !claims.channels.contains(p) {
                claims.channels.push(p.clone());
            }
        }
        if claims.channels.len() > cfg.channel_limit {
            // Server-side subscriptions count against `client.channel_limit` like the
            // client's own: refused before anything is registered.
            return Err(err(ec::LIMIT_EXCEEDED, "limit exceeded: token channels over client.channel_limit"));
        }
        if cfg.user_connection_limit > 0 && !claims.user.is_empty() && self.node.user_connections(&claims.user) >= cfg.user_connection_limit
        {
            return Err(Fail::Disconnect(Disconnect::new(dc::CONNECTION_LIMIT, "connection limit")));
        }
        if personal.is_some() && cfg.personal_channel.single_connection {
            // One connection per user: the user's others on this node are closed at once,
            // those on other nodes through the cluster (sparing this one, registered below).
            node.disconnect_user(&claims.user, "", &[], dc::CONNECTION_LIMIT, "connection limit");
            node.disconnect_user_everywhere(&claims.user, &self.client, dc::CONNECTION_LIMIT, "connection limit");
        }
        let ping = cfg.ping_interval;
        self.user = claims.user;
        self.conn_info = claims.info;
        self.state = State::Connected;
        self.timers.clear(Timer::Stale);
        // The first ping at a random point in [ping / 2, ping]: connections opened
        // together do not all ping at once.
        self.timers.set(Timer::Ping, now.mono + node.first_ping_delay(ping));
        // The same spread for the presence refresh (Centrifugo's first one too).
        self.timers
            .set(Timer::Presence, now.mono + node.first_ping_delay(cfg.presence_update_interval));
        self.node.register(&self.user, self.client.clone(), self.handle.clone());
        let mut result = ConnectResult {
            client: self.client.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ping: ping.as_secs() as u32,
            pong: !self.handle.encoding().unidirectional,
            ..Default::default()
        };
        if cfg.connect_include_server_time {
            result.time = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        }
        if let Some(session) = self.handle.transport().emulation_session {
            result.session = session.to_string();
            result.node = self.node.uid().to_string();
        }
        if let Some(exp) = claims.expire_at {
            self.set_expiry(Some(exp), now);
            // With a refresh proxy the server refreshes; the client is not told of expiry.
            if node.proxies.refresh.is_none() {
                result.expires = true;
                result.ttl = crate::deadline::ttl(exp, now.unix);
            }
        }
        let mut sub_opts = match proxied {
            Some(p) => {
                result.data = p.data;
                p.subs
            }
            None if from_token => std::mem::take(&mut claims.subs),
            None => Default::default(),
        };
        if let Some(meta) = claims.meta.take() {
            self.proxy.get_or_insert_with(Default::default).meta = Some(meta);
        }
        // Server-side subscriptions from the token, with recovery as the client asks.
        for ch in claims.channels {
            let Ok(mut opts) = self.node.options(&ch).map(|o| ChannelOptions::clone(&o)) else {
                tracing::debug!(channel = %ch, "server-side subscription to an unknown namespace skipped");
                continue;
            };
            let extra = sub_opts.remove(&ch);
            if let Some(o) = extra.as_ref().and_then(|e| e.override_.as_ref()) {
                opts = o.apply(&opts);
            }
            let (chan_info, sub_data) = match &extra {
                Some(e) => (
                    proxy::raw_or_b64(&e.info, &e.b64info).ok().flatten().unwrap_or_default(),
                    proxy::raw_or_b64(&e.data, &e.b64data).ok().flatten().unwrap_or_default(),
                ),
                None => Default::default(),
            };
            let since = req.subs.get(&ch).filter(|s| s.recover).map(|s| StreamPosition {
                offset: s.offset,
                epoch: s.epoch.clone(),
            });
            let recoverable = opts.has_history() && (opts.force_recovery || opts.allow_recovery);
            let cache = opts.cache_recovery();
            // `auto_cache_recover`: the latest publication unasked (a unidirectional client
            // cannot ask), as Centrifugo.
            let since = since.or_else(|| {
                (cache && opts.auto_cache_recover).then(|| StreamPosition {
                    offset: 0,
                    epoch: String::new(),
                })
            });
            // Server-side subscriptions negotiate delta through the connect's `subs`, as in
            // Centrifugo.
            let delta = req
                .subs
                .get(&ch)
                .is_some_and(|s| !s.delta.is_empty() && opts.allows_delta(&s.delta));
            let params = SubParams {
                recoverable,
                positioned: opts.has_history() && opts.force_positioning,
                cache,
                server_side: true,
                since: since.filter(|_| recoverable),
                reply_budget: Some(budget),
                chan_info,
                // As Centrifugo: server-side subscriptions get join/leave pushes when the
                // namespace forces them.
                join_leave: opts.join_leave && opts.force_push_join_leave,
                delta,
                ..Default::default()
            };
            match self.do_subscribe(&ch, &opts, params, now).await {
                Ok(mut r) => {
                    r.data = sub_data;
                    budget = budget.saturating_sub(publications_bound(&r.publications));
                    result.subs.push(SubscribeResultEntry { key: ch, value: Some(r) })
                }
                Err(Fail::Disconnect(d)) => return Err(Fail::Disconnect(d)),
                Err(Fail::Error(e)) => tracing::debug!(channel = %ch, error = %e, "server-side subscription failed"),
                Err(Fail::Backend(e)) => tracing::debug!(channel = %ch, code = e.code, "server-side subscription failed"),
            }
        }
        Ok(result)
    }

    pub(super) async fn refresh(&mut self, token: &str, now: Now) -> Result<RefreshResult, Fail> {
        let node = self.node.clone();
        let live = node.live();
        node.prepare_token(&live.verifier, token).await;
        let claims = match live.verifier.verify_connect(token, now.unix) {
            Ok(c) => c,
            Err(e) => return Err(self.token_fail(e, "connection")),
        };
        if claims.user != self.user {
            return Err(self.token_fail(TokenError::Invalid("refresh token for another user".into()), "connection"));
        }
        if claims.expire_at.is_some_and(|e| e <= now.unix) {
            return Err(err(ec::EXPIRED, "expired"));
        }
        if let Some(meta) = claims.meta {
            self.proxy.get_or_insert_with(Default::default).meta = Some(meta);
        }
        self.set_expiry(claims.expire_at, now);
        Ok(RefreshResult {
            client: self.client.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            expires: claims.expire_at.is_some(),
            ttl: claims.expire_at.map_or(0, |e| crate::deadline::ttl(e, now.unix)),
        })
    }
}
