//! Shared poll subscriptions (`crate::subscription::shared_poll`): the subscribe, and the
//! `sub_refresh` frames that track (type 1) and untrack (type 2) keys.
//!
//! A shared poll subscription is no hub subscription: the node's [`SharedPoll`] keeps who
//! tracks which key, and pushes to those connections directly.
//!
//! [`SharedPoll`]: crate::subscription::shared_poll::manager::SharedPoll

use std::collections::HashMap;

use super::subscribe::Granted;
use super::*;
use crate::subscription::shared_poll::signature::{self, SignatureError};
use crate::subscription::SubscriptionType;

/// `SubRefreshRequest.type` values.
const TRACK: i32 = 1;
const UNTRACK: i32 = 2;

impl Session {
    pub(super) async fn shared_poll_subscribe(&mut self, req: SubscribeRequest, now: Now) -> Result<SubscribeResult, Fail> {
        if self.subs.len() >= self.node.config.session.channel_limit {
            return Err(err(ec::LIMIT_EXCEEDED, "limit exceeded"));
        }
        let g: Granted = self.authorize(&req, now).await?;
        if g.expires.is_some_and(|e| e <= now.unix) {
            return Err(err(ec::EXPIRED, "expired"));
        }
        let delta = !req.delta.is_empty() && g.opts.allows_delta(&req.delta);
        let mut r = SubscribeResult {
            r#type: SubscriptionType::SharedPoll.wire(),
            epoch: self.node.shared_poll.epoch(&req.channel, &g.opts.shared_poll),
            delta,
            data: g.proxy_data,
            ..Default::default()
        };
        if let (Some(e), false) = (g.expires, g.server_refresh) {
            r.expires = true;
            r.ttl = crate::deadline::ttl(e, now.unix);
        }
        crate::series::subscription_accepted();
        self.subs.insert(
            req.channel.clone(),
            Sub {
                chan_info: g.chan_info,
                expires: self.sub_deadline(g.expires, g.server_refresh, now),
                presence: false,
                join_leave: false,
                server_refresh: g.server_refresh,
                map: false,
                shared_poll: Some(SharedPollSub { delta }),
                tracked: None,
                server_side: false,
                stream: None,
            },
        );
        Ok(r)
    }

    /// A `sub_refresh` of a shared poll subscription: track or untrack.
    pub(super) async fn shared_poll_refresh(&mut self, req: SubRefreshRequest, now: Now) -> Result<SubRefreshResult, Fail> {
        let Some(sp) = self.subs.get(&req.channel).and_then(|s| s.shared_poll) else {
            return Err(err(ec::PERMISSION_DENIED, "permission denied"));
        };
        match req.r#type {
            TRACK => self.track(req, sp, now).await,
            UNTRACK if !req.untrack.is_empty() => {
                let gone = self
                    .node
                    .shared_poll
                    .untrack(&req.channel, self.handle.id(), &req.untrack, now.mono);
                self.node.shared_poll_unsubscribe(&req.channel, &gone).await;
                Ok(SubRefreshResult::default())
            }
            _ => Err(err(ec::BAD_REQUEST, "bad request")),
        }
    }

    async fn track(&mut self, req: SubRefreshRequest, sp: SharedPollSub, now: Now) -> Result<SubRefreshResult, Fail> {
        let opts = self.node.options(&req.channel)?;
        let opts = opts.shared_poll.clone();
        // Deduplicated over the batches, the last batch's version and expiry winning.
        let mut order: Vec<String> = Vec::new();
        let mut by_key: HashMap<String, (u64, usize)> = HashMap::new();
        for (i, b) in req.track.iter().enumerate() {
            for it in &b.items {
                if by_key.insert(it.key.clone(), (it.version, i)).is_none() {
                    order.push(it.key.clone());
                }
            }
        }
        if order.is_empty() {
            return Err(err(ec::BAD_REQUEST, "bad request"));
        }
        let keys = signature::Keys {
            current: self.node.config.shared_poll.hmac_secret_key.clone(),
            previous: self.node.config.shared_poll.hmac_previous_secret_key.clone(),
            previous_valid_until: self.node.config.shared_poll.hmac_previous_secret_key_valid_until,
        };
        let unix = i64::try_from(now.unix).unwrap_or(i64::MAX);
        let mut expiries = Vec::with_capacity(req.track.len());
        for b in &req.track {
            let batch: Vec<&str> = b.items.iter().map(|i| i.key.as_str()).collect();
            match keys.verify(&b.signature, &req.channel, &self.user, &batch, unix) {
                Ok(exp) => expiries.push(exp),
                Err(SignatureError::Expired) => return Err(err(ec::TOKEN_EXPIRED, "token expired")),
                Err(SignatureError::Invalid) => {
                    tracing::info!(channel = %req.channel, client = %self.client, user = %self.user, "invalid track signature");
                    return Err(err(ec::PERMISSION_DENIED, "permission denied"));
                }
            }
        }
        let items: Vec<(String, u64, i64)> = order
            .into_iter()
            .map(|k| {
                let (version, batch) = by_key.get(&k).copied().unwrap_or_default();
                let exp = expiries.get(batch).copied().unwrap_or_default();
                (k, version, exp)
            })
            .collect();
        let tracked = self
            .node
            .shared_poll
            .track(&req.channel, &opts, &self.handle, sp.delta, &items, &req.untrack, now.mono)
            .map_err(|_| err(ec::LIMIT_EXCEEDED, "limit exceeded"))?;
        if opts.publish_enabled {
            if let Err(e) = self.node.shared_poll_subscribe(&req.channel, &tracked.new_keys).await {
                tracing::warn!(channel = %req.channel, error = %e, "shared poll key subscription failed");
                let keys: Vec<String> = items.into_iter().map(|(k, ..)| k).collect();
                let gone = self.node.shared_poll.untrack(&req.channel, self.handle.id(), &keys, now.mono);
                self.node.shared_poll_unsubscribe(&req.channel, &gone).await;
                return Err(ApiError::from(e).into());
            }
        }
        self.node.shared_poll_unsubscribe(&req.channel, &tracked.gone).await;
        let min_exp = expiries.iter().copied().filter(|e| *e > 0).min();
        Ok(SubRefreshResult {
            expires: min_exp.is_some(),
            ttl: min_exp.map_or(0, |e| crate::deadline::ttl(u64::try_from(e).unwrap_or(0), now.unix)),
            items: Vec::new(),
        })
    }

    /// The connection leaves a shared poll channel: its keys are no longer polled for it.
    pub(super) async fn shared_poll_leave(&mut self, ch: &str, now: std::time::Instant) {
        let gone = self.node.shared_poll.remove_conn(ch, self.handle.id(), now);
        self.node.shared_poll_unsubscribe(ch, &gone).await;
    }
}
