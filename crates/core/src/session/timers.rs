//! Time: the session's deadlines, what each does when it is due
//! ([`Session::handle_timeout`]), token expiry and the presence refresh at every ping.

use super::*;

impl Session {
    /// The next moment [`Session::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let subs = self.subs.values().filter_map(|s| s.expires);
        [self.stale_at, self.ping_at, self.pong_deadline, self.expired_close_at]
            .into_iter()
            .flatten()
            .chain(subs)
            .min()
    }

    pub(super) fn set_expiry(&mut self, expire_at: Option<u64>, now: Now) {
        self.expire_at = expire_at;
        // With a refresh proxy the timer is the moment to ask it, not the close.
        let delay = match self.node.proxies.refresh {
            Some(_) => Duration::ZERO,
            None => self.node.config.session.expired_close_delay,
        };
        self.expired_close_at = expire_at.map(|e| mono_at(now, e) + delay);
    }

    /// Timers: stale connection, ping, pong deadline, token expiry, subscription expiry.
    pub async fn handle_timeout(&mut self, now: Now) -> Output {
        let mut out = Writer::new(self.format);
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now.mono);
        if self.state == State::Closed {
            return out.finish();
        }
        if due(self.stale_at) {
            return out.disconnect(Disconnect::new(dc::STALE, "stale"));
        }
        if due(self.pong_deadline) {
            return out.disconnect(Disconnect::new(dc::NO_PONG, "no pong"));
        }
        if due(self.expired_close_at) {
            match self.node.proxies.refresh.clone() {
                Some(ep) => {
                    if let Err(d) = self.refresh_via_proxy(&ep, now).await {
                        return out.disconnect(d);
                    }
                }
                None => return out.disconnect(Disconnect::new(dc::EXPIRED, "connection expired")),
            }
        }
        if due(self.ping_at) {
            // The server's ping is an empty reply; the client answers with an empty command.
            out.reply(&Reply::default());
            if !self.handle.unidirectional() {
                self.pong_deadline = Some(now.mono + self.node.config.session.pong_timeout);
            }
            self.ping_at = Some(now.mono + self.node.config.session.ping_interval);
            self.refresh_presence().await;
        }
        let due_subs: Vec<(String, bool)> = self
            .subs
            .iter()
            .filter(|(_, s)| due(s.expires))
            .map(|(c, s)| (c.clone(), s.server_refresh))
            .collect();
        let mut expired = Vec::new();
        for (ch, server_refresh) in due_subs {
            let ep = match (server_refresh, self.node.options(&ch)) {
                (true, Ok(o)) => self.node.proxies.for_channel(ProxyKind::SubRefresh, o).cloned(),
                _ => None,
            };
            match ep {
                Some(ep) => match self.sub_refresh_via_proxy(&ep, &ch, now).await {
                    Ok(true) => {}
                    Ok(false) => expired.push(ch),
                    Err(d) => return out.disconnect(d),
                },
                None => expired.push(ch),
            }
        }
        for ch in expired {
            self.unsubscribe(&ch).await;
            out.reply(&Reply {
                push: Some(Push {
                    channel: ch,
                    unsubscribe: Some(Unsubscribe {
                        code: 2501,
                        reason: "subscription expired".into(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        out.finish()
    }

    /// Presence entries expire in a shared engine (a node that dies leaves none behind for
    /// long), so each session adds its entries again at every ping.
    pub(super) async fn refresh_presence(&mut self) {
        let node = self.node.clone();
        for (ch, sub) in &self.subs {
            if sub.presence {
                let info = self.client_info(sub.chan_info.clone());
                if let Err(e) = node.presence.add_presence(ch, &self.client, info).await {
                    tracing::debug!(channel = %ch, error = %e, "presence not refreshed");
                }
            }
        }
    }
}
