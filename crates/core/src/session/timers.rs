//! Time: the session's deadlines in one table ([`Timers`]), what each does when it is due
//! ([`Session::handle_timeout`]), token expiry, and the periodic presence refresh with the
//! position check of positioned subscriptions (`client.presence_update_interval`).
//! Subscription token expiries stay with their subscriptions ([`Sub`]); the session's next
//! wake-up is the earliest of both.

use super::*;

/// A session-level deadline. Declaration order is the order in which due ones are
/// handled: a stale or unanswered connection is closed before anything else is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// No connect command in time (state `Connecting`).
    Stale = 0,
    /// The server's ping went unanswered for `client.pong_timeout`.
    Pong,
    /// Connection token expiry: close (after `client.expired_close_delay`) or ask the
    /// refresh proxy.
    Expiry,
    /// The next server ping.
    Ping,
    /// The next presence refresh and position check.
    Presence,
}

const KINDS: [Timer; 5] = [Timer::Stale, Timer::Pong, Timer::Expiry, Timer::Ping, Timer::Presence];

/// The session-level deadlines, one optional [`Instant`] per [`Timer`]. Pure data: it
/// never reads a clock.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timers([Option<Instant>; KINDS.len()]);

impl Timers {
    /// Arms `t` at `at` (replacing any earlier deadline of that kind).
    pub(super) fn set(&mut self, t: Timer, at: Instant) {
        self.0[t as usize] = Some(at);
    }

    /// Disarms `t`, returning the deadline it had.
    pub(super) fn clear(&mut self, t: Timer) -> Option<Instant> {
        self.0[t as usize].take()
    }

    /// Disarms every timer.
    pub(super) fn clear_all(&mut self) {
        *self = Timers::default();
    }

    /// The timers whose deadline is at or before `now`, in handling order.
    pub(super) fn due(&self, now: Instant) -> Due {
        let mut bits = 0u8;
        for (i, at) in self.0.iter().enumerate() {
            if at.is_some_and(|at| at <= now) {
                bits |= 1 << i;
            }
        }
        Due(bits)
    }

    /// The earliest armed deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}

/// The due timers of one [`Timers::due`] call, iterated in handling order (a copy: the
/// table may change while they are handled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Due(u8);

impl Iterator for Due {
    type Item = Timer;

    fn next(&mut self) -> Option<Timer> {
        if self.0 == 0 {
            return None;
        }
        let i = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(KINDS[i])
    }
}

impl Session {
    /// The next moment [`Session::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let subs = self.subs.values().filter_map(|s| s.expires);
        self.timers.next().into_iter().chain(subs).min()
    }

    pub(super) fn set_expiry(&mut self, expire_at: Option<u64>, now: Now) {
        self.expire_at = expire_at;
        // With a refresh proxy the timer is the moment to ask it, not the close.
        let delay = match self.node.proxies.refresh {
            Some(_) => Duration::ZERO,
            None => self.node.config.session.expired_close_delay,
        };
        match expire_at {
            Some(e) => self.timers.set(Timer::Expiry, crate::deadline::later(mono_at(now, e), delay)),
            None => {
                self.timers.clear(Timer::Expiry);
            }
        }
    }

    /// Timers: stale connection, ping, pong deadline, token expiry, subscription expiry.
    pub async fn handle_timeout(&mut self, now: Now) -> Output {
        let mut out = Writer::new(self.format);
        if self.state == State::Closed {
            return out.finish();
        }
        for t in self.timers.due(now.mono) {
            match t {
                Timer::Stale => return out.disconnect(Disconnect::new(dc::STALE, "stale")),
                Timer::Pong => return out.disconnect(Disconnect::new(dc::NO_PONG, "no pong")),
                Timer::Expiry => match self.node.proxies.refresh.clone() {
                    Some(ep) => {
                        if let Err(d) = self.refresh_via_proxy(&ep, now).await {
                            return out.disconnect(d);
                        }
                    }
                    None => return out.disconnect(Disconnect::new(dc::EXPIRED, "connection expired")),
                },
                Timer::Ping => {
                    // The server's ping is an empty reply; the client answers with an empty command.
                    out.reply(&Reply::default());
                    if !self.handle.encoding().unidirectional {
                        self.timers.set(Timer::Pong, now.mono + self.node.config.session.pong_timeout);
                    }
                    self.timers.set(Timer::Ping, now.mono + self.node.config.session.ping_interval);
                }
                Timer::Presence => {
                    self.timers
                        .set(Timer::Presence, now.mono + self.node.config.session.presence_update_interval);
                    self.refresh_presence().await;
                    if let Err(d) = self.check_positions(now, &mut out).await {
                        return out.disconnect(d);
                    }
                }
            }
        }
        let due_subs: Vec<(String, bool)> = self
            .subs
            .iter()
            .filter(|(_, s)| s.expires.is_some_and(|t| t <= now.mono))
            .map(|(c, s)| (c.clone(), s.server_refresh))
            .collect();
        let mut expired = Vec::new();
        for (ch, server_refresh) in due_subs {
            let ep = match (server_refresh, self.node.options(&ch)) {
                (true, Ok(o)) => self.node.proxies.for_channel(ProxyKind::SubRefresh, &o).cloned(),
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
            crate::series::server_unsubscribe(2501);
            out.reply(&Reply {
                push: Some(Push {
                    channel: ch,
                    unsubscribe: Some(Unsubscribe {
                        code: wshub_protocol::codes::unsubscribe::EXPIRED,
                        reason: "subscription expired".into(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        out.finish()
    }

    /// Centrifugo's periodic position check: a positioned subscription that received no
    /// publication for `client.channel_position_check_delay` has its position compared with
    /// the stream's top, so that a publication lost between the broker and this node is
    /// noticed even when nothing follows it. A mismatch is insufficient state. An engine
    /// that does not answer is asked again next time, as Centrifugo.
    ///
    /// Centrifugo compares the position it read before asking the broker; here the hub's
    /// position is read again after the answer and a subscriber at or past the top passes,
    /// so that a publication arriving meanwhile is no false alarm.
    pub(super) async fn check_positions(&mut self, now: Now, out: &mut Writer) -> Result<(), Disconnect> {
        let node = self.node.clone();
        let conn = self.handle.id();
        let delay = node.config.session.channel_position_check_delay;
        let mut due = Vec::new();
        for (ch, sub) in self.subs.iter_mut() {
            let Some(t) = sub.tracked.as_deref_mut() else { continue };
            let Some(offset) = node.hub.position(ch, conn) else { continue };
            if offset != t.offset {
                // Publications came: the position is as fresh as they are.
                t.offset = offset;
                t.seen_at = now.mono;
            } else if now.mono.saturating_duration_since(t.seen_at) > delay {
                due.push((ch.clone(), t.epoch.clone()));
            }
        }
        for (ch, epoch) in due {
            let meta_ttl = match node.options(&ch) {
                Ok(o) => node.history_meta_ttl(&o),
                Err(_) => continue,
            };
            let query = HistoryQuery {
                limit: 0,
                meta_ttl,
                ..Default::default()
            };
            let top = match node.broker.history(&ch, query).await {
                Ok(h) => h.position,
                Err(e) => {
                    tracing::debug!(channel = %ch, error = %e, "position check postponed");
                    continue;
                }
            };
            let Some(offset) = node.hub.position(&ch, conn) else { continue };
            if let Some(t) = self.subs.get_mut(&ch).and_then(|s| s.tracked.as_deref_mut()) {
                if top.epoch == epoch && offset >= top.offset {
                    t.offset = offset;
                    t.seen_at = now.mono;
                    continue;
                }
            }
            tracing::debug!(channel = %ch, offset, top = top.offset, "client insufficient state from periodic check");
            self.insufficient_state(&ch, out).await?;
        }
        Ok(())
    }

    /// A subscription whose stream state is lost: a client-side one is unsubscribed with
    /// 2500 (its SDK subscribes again and recovers), a server-side one closes the
    /// connection with 3010 (it reconnects), as Centrifugo.
    pub(super) async fn insufficient_state(&mut self, ch: &str, out: &mut Writer) -> Result<(), Disconnect> {
        let Some(sub) = self.subs.get(ch) else { return Ok(()) };
        if sub.server_side {
            return Err(Disconnect::new(dc::INSUFFICIENT_STATE, "insufficient state"));
        }
        self.server_unsubscribe(ch.to_string(), super::dispatch::UNSUBSCRIBE_INSUFFICIENT, out)
            .await;
        Ok(())
    }

    /// Presence entries expire in a shared engine (a node that dies leaves none behind for
    /// long), so each session adds its entries again every `client.presence_update_interval`.
    pub(super) async fn refresh_presence(&mut self) {
        let node = self.node.clone();
        let maps: Vec<String> = self.subs.iter().filter(|(_, s)| s.map).map(|(c, _)| c.clone()).collect();
        for ch in maps {
            if let Ok(opts) = node.options(&ch) {
                let opts = ChannelOptions::clone(&opts);
                self.map_presence(&ch, &opts, true).await;
            }
        }
        for (ch, sub) in &self.subs {
            if sub.presence {
                let info = self.client_info(sub.chan_info.clone());
                crate::series::action(crate::series::Action::AddPresence);
                if let Err(e) = node.presence.add_presence(ch, &self.client, info).await {
                    tracing::debug!(channel = %ch, error = %e, "presence not refreshed");
                }
            }
        }
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    fn at(base: Instant, secs: u64) -> Instant {
        base + Duration::from_secs(secs)
    }

    #[test]
    fn empty_table_has_nothing_due() {
        let t = Timers::default();
        let now = Instant::now();
        assert_eq!(t.next(), None);
        assert_eq!(t.due(now + Duration::from_secs(1_000_000)).count(), 0);
    }

    #[test]
    fn next_is_the_earliest_armed_deadline() {
        let base = Instant::now();
        let mut t = Timers::default();
        t.set(Timer::Ping, at(base, 25));
        t.set(Timer::Expiry, at(base, 10));
        t.set(Timer::Pong, at(base, 30));
        assert_eq!(t.next(), Some(at(base, 10)));
        assert_eq!(t.clear(Timer::Expiry), Some(at(base, 10)));
        assert_eq!(t.clear(Timer::Expiry), None, "cleared once");
        assert_eq!(t.next(), Some(at(base, 25)));
        t.set(Timer::Ping, at(base, 40));
        assert_eq!(t.next(), Some(at(base, 30)), "set replaces the earlier deadline of its kind");
        t.clear_all();
        assert_eq!(t.next(), None);
    }

    #[test]
    fn due_is_inclusive_and_in_handling_order() {
        let base = Instant::now();
        let mut t = Timers::default();
        t.set(Timer::Ping, at(base, 5));
        t.set(Timer::Expiry, at(base, 5));
        t.set(Timer::Stale, at(base, 7));
        t.set(Timer::Pong, at(base, 3));
        assert_eq!(t.due(at(base, 2)).collect::<Vec<_>>(), vec![]);
        assert_eq!(
            t.due(at(base, 3)).collect::<Vec<_>>(),
            vec![Timer::Pong],
            "a deadline is due at its instant"
        );
        assert_eq!(
            t.due(at(base, 5)).collect::<Vec<_>>(),
            vec![Timer::Pong, Timer::Expiry, Timer::Ping]
        );
        assert_eq!(
            t.due(at(base, 9)).collect::<Vec<_>>(),
            vec![Timer::Stale, Timer::Pong, Timer::Expiry, Timer::Ping],
            "stale and pong close before expiry and ping are handled"
        );
    }

    #[test]
    fn due_is_a_snapshot() {
        let base = Instant::now();
        let mut t = Timers::default();
        t.set(Timer::Ping, at(base, 1));
        let due = t.due(at(base, 1));
        // Handling the ping arms the pong deadline and the next ping; the snapshot taken
        // before is what this round handles.
        t.set(Timer::Pong, at(base, 1));
        t.set(Timer::Ping, at(base, 26));
        assert_eq!(due.collect::<Vec<_>>(), vec![Timer::Ping]);
        assert_eq!(t.due(at(base, 1)).collect::<Vec<_>>(), vec![Timer::Pong]);
    }
}
