//! Command dispatch: a frame of commands in, replies out through a [`Writer`] that keeps
//! them within the client's queue (the reply budget), and the server API's [`Control`]s.

use bytes::BytesMut;
use wshub_protocol::codec::{decode_commands, encode_reply};

use super::*;
use crate::ratelimit::admit_on_error;

impl Session {
    /// Handles one frame of commands.
    pub async fn handle_frame(&mut self, frame: Bytes, now: Now) -> Output {
        let mut out = Writer::with_limit(self.format, self.node.config.session.queue_max_size);
        if self.state == State::Closed {
            return out.finish();
        }
        let commands = match decode_commands(self.format, frame) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable command");
                return out.disconnect(BAD_REQUEST);
            }
        };
        for cmd in commands {
            if let Err(d) = self.handle_command(cmd, now, &mut out).await {
                if d == SLOW {
                    return out.discard().disconnect(d);
                }
                return out.disconnect(d);
            }
            if out.over_limit() {
                // One frame of commands whose replies outgrow the queue (a batch of history
                // calls, say): what was produced is dropped and the client closed.
                return out.discard().disconnect(SLOW);
            }
        }
        out.finish()
    }

    pub(super) async fn handle_command(&mut self, cmd: Command, now: Now, out: &mut Writer) -> Result<(), Disconnect> {
        let id = cmd.id;
        let is_pong = id == 0 && cmd == Command::default();
        let method = command_method(&cmd);
        let started = std::time::Instant::now();
        metrics::counter!("wshub_commands_total", "method" => method).increment(1);
        if !is_pong && !self.take_command_token(now).await {
            self.refused += 1;
            metrics::counter!("wshub_rate_limit_refusals_total", "kind" => "command").increment(1);
            crate::logging::refusal("command_rate_limit", "over client.command_rate_limit", None);
            if self.refused > REFUSALS_BEFORE_CLOSE {
                return Err(Disconnect::new(dc::TOO_MANY_REQUESTS, "too many requests"));
            }
            if id > 0 {
                let e = Error {
                    code: ec::TOO_MANY_REQUESTS,
                    message: "too many requests".into(),
                    temporary: true,
                };
                out.reply(&Reply {
                    id,
                    error: Some(e),
                    ..Default::default()
                });
            }
            return Ok(());
        }
        if !is_pong {
            self.refused = 0;
        }
        if self.state == State::Connecting && cmd.connect.is_none() {
            // PROTOCOL.md: "The first command must be connect (otherwise close 3501)".
            return Err(BAD_REQUEST);
        }
        let reply = if let Some(req) = cmd.connect {
            let r = self.connect(req, now, out.remaining()).await;
            let r = match self.handle.encoding().unidirectional {
                true => r.map_err(|f| self.unidirectional_refusal(f)),
                false => r,
            };
            r.map(|r| Reply {
                connect: Some(r),
                ..Default::default()
            })
        } else if let Some(req) = cmd.subscribe {
            self.subscribe(req, now, out.remaining()).await.map(|r| Reply {
                subscribe: Some(r),
                ..Default::default()
            })
        } else if let Some(req) = cmd.unsubscribe {
            self.unsubscribe(&req.channel).await;
            Ok(Reply {
                unsubscribe: Some(UnsubscribeResult {}),
                ..Default::default()
            })
        } else if let Some(req) = cmd.publish {
            self.publish(req).await.map(|r| Reply {
                publish: Some(r),
                ..Default::default()
            })
        } else if let Some(req) = cmd.presence {
            self.presence(&req.channel).await.map(|r| Reply {
                presence: Some(r),
                ..Default::default()
            })
        } else if let Some(req) = cmd.presence_stats {
            self.presence_stats(&req.channel).await.map(|r| Reply {
                presence_stats: Some(r),
                ..Default::default()
            })
        } else if let Some(req) = cmd.history {
            self.history(req).await.map(|r| Reply {
                history: Some(r),
                ..Default::default()
            })
        } else if let Some(req) = cmd.refresh {
            self.refresh(&req.token, now).await.map(|r| Reply {
                refresh: Some(r),
                ..Default::default()
            })
        } else if let Some(req) = cmd.sub_refresh {
            self.sub_refresh(req, now).await.map(|r| Reply {
                sub_refresh: Some(r),
                ..Default::default()
            })
        } else if let Some(req) = cmd.rpc {
            self.rpc(req).await.map(|r| Reply {
                rpc: Some(r),
                ..Default::default()
            })
        } else if cmd.send.is_some() {
            // Asynchronous message to the server: no handler is configured, and `send`
            // has no reply.
            return Ok(());
        } else if cmd.ping.is_some() {
            Ok(Reply {
                ping: Some(PingResult {}),
                ..Default::default()
            })
        } else if id == 0 {
            // The empty command: the client's pong.
            let Some(deadline) = self.timers.clear(Timer::Pong) else {
                // PROTOCOL.md: "A pong with no ping outstanding closes with 3501".
                return Err(BAD_REQUEST);
            };
            // The pong's deadline was set when the ping went out: the round trip follows.
            let pinged = deadline.checked_sub(self.node.config.session.pong_timeout);
            let took = pinged.map(|p| now.mono.saturating_duration_since(p)).unwrap_or_default();
            crate::series::ping_pong(self.handle.transport().name, took);
            return Ok(());
        } else {
            return Err(BAD_REQUEST);
        };
        crate::series::command_duration(method, started.elapsed());
        match reply {
            Ok(mut r) => {
                r.id = id;
                if out.would_overflow(publications_size(&r)) {
                    // Not encoded at all: the reply alone would not fit in the client's queue.
                    return Err(SLOW);
                }
                out.reply(&r);
            }
            Err(Fail::Error(e)) => {
                crate::series::reply_error(method, e.code());
                let r = Reply {
                    id,
                    error: Some(Error {
                        code: e.code(),
                        message: e.message().into_owned(),
                        temporary: e.is_temporary(),
                    }),
                    ..Default::default()
                };
                out.reply(&r);
            }
            Err(Fail::Backend(e)) => {
                crate::series::reply_error(method, e.code);
                out.reply(&Reply {
                    id,
                    error: Some(Error {
                        code: e.code,
                        message: e.message,
                        temporary: e.temporary,
                    }),
                    ..Default::default()
                });
            }
            Err(Fail::Disconnect(d)) => return Err(d),
        }
        Ok(())
    }

    /// Whether `client.command_rate_limit` lets one more command through: per user across
    /// the cluster when so configured (failing open when the limiter cannot answer), per
    /// connection otherwise.
    pub(super) async fn take_command_token(&mut self, now: Now) -> bool {
        let Some(limiter) = self.limiter.as_mut() else { return true };
        let cluster = self.node.config.session.command_rate_limit_scope == RateLimitScope::Cluster;
        match self.node.command_limiter() {
            Some(shared) if cluster && self.state == State::Connected && !self.user.is_empty() => {
                let rate = f64::from(self.node.config.session.command_rate_limit);
                let key = format!("command.{}", self.user);
                admit_on_error("command", shared.try_take(&key, rate, rate).await, now.mono)
            }
            _ => limiter.try_acquire(now.mono),
        }
    }

    /// A request from the server API.
    pub async fn handle_control(&mut self, control: Control, now: Now) -> Output {
        let mut out = Writer::new(self.format);
        if self.state != State::Connected {
            return out.finish();
        }
        match control {
            Control::Disconnect { code, reason } => {
                out.disconnect = Some((code, reason));
            }
            Control::Subscribe { channel } => {
                if self.subs.contains_key(&channel) {
                    return out.finish();
                }
                let Ok(opts) = self.node.options(&channel) else {
                    return out.finish();
                };
                let params = SubParams {
                    recoverable: opts.has_history() && (opts.force_recovery || opts.allow_recovery),
                    positioned: opts.has_history() && opts.force_positioning,
                    server_side: true,
                    join_leave: opts.join_leave && opts.force_push_join_leave,
                    ..Default::default()
                };
                match self.do_subscribe(&channel, &opts, params, now).await {
                    Ok(r) => out.reply(&Reply {
                        push: Some(Push {
                            channel,
                            subscribe: Some(Subscribe {
                                recoverable: r.recoverable,
                                epoch: r.epoch,
                                offset: r.offset,
                                positioned: r.positioned,
                                data: Bytes::new(),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    Err(Fail::Disconnect(d)) => return out.disconnect(d),
                    Err(Fail::Error(e)) => tracing::debug!(%channel, error = %e, "server subscribe failed"),
                    Err(Fail::Backend(e)) => tracing::debug!(%channel, code = e.code, "server subscribe failed"),
                }
            }
            Control::Unsubscribe { channel } => {
                self.server_unsubscribe(channel, UNSUBSCRIBE_SERVER, &mut out).await;
            }
            Control::Resubscribe { channel } => {
                if let Err(d) = self.insufficient_state(&channel, &mut out).await {
                    return out.disconnect(d);
                }
            }
            Control::StreamEnded { channel, stream, failed } => {
                let current = self.subs.get(&channel).and_then(|s| s.stream.as_ref()).map(|s| s.id);
                if current == Some(stream) {
                    let how = if failed { UNSUBSCRIBE_INSUFFICIENT } else { UNSUBSCRIBE_SERVER };
                    self.server_unsubscribe(channel, how, &mut out).await;
                }
            }
            Control::Refresh { expire_at } => {
                self.set_expiry(expire_at, now);
                let ttl = expire_at.map_or(0, |e| crate::deadline::ttl(e, now.unix));
                out.reply(&Reply {
                    push: Some(Push {
                        refresh: Some(Refresh {
                            expires: expire_at.is_some(),
                            ttl,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
        }
        out.finish()
    }
}

/// An unsubscribe the server decided: its code and reason.
pub(super) type ServerUnsubscribe = (u32, &'static str);
pub(super) const UNSUBSCRIBE_SERVER: ServerUnsubscribe = (wshub_protocol::codes::unsubscribe::SERVER, "server unsubscribe");
/// The SDK subscribes again from scratch.
pub(super) const UNSUBSCRIBE_INSUFFICIENT: ServerUnsubscribe =
    (wshub_protocol::codes::unsubscribe::INSUFFICIENT_STATE, "insufficient state");

impl Session {
    /// Unsubscribes `channel`, if subscribed, and tells the client with an unsubscribe push.
    pub(super) async fn server_unsubscribe(&mut self, channel: String, (code, reason): ServerUnsubscribe, out: &mut Writer) {
        if !self.subs.contains_key(&channel) {
            return;
        }
        self.unsubscribe(&channel).await;
        crate::series::server_unsubscribe(code);
        out.reply(&Reply {
            push: Some(Push {
                channel,
                unsubscribe: Some(Unsubscribe {
                    code,
                    reason: reason.into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
}

/// Refused commands in a row after which a client that keeps going is closed with 3013.
const REFUSALS_BEFORE_CLOSE: u32 = 10;

/// Accumulates replies into one frame, up to a size limit (the client's queue).
pub(super) struct Writer {
    pub(super) format: Format,
    pub(super) buf: BytesMut,
    pub(super) disconnect: Option<(u16, String)>,
    pub(super) limit: usize,
}

impl Writer {
    pub(super) fn new(format: Format) -> Self {
        Self::with_limit(format, usize::MAX)
    }

    pub(super) fn with_limit(format: Format, limit: usize) -> Self {
        Writer {
            format,
            buf: BytesMut::new(),
            disconnect: None,
            limit,
        }
    }

    /// Bytes that may still be written before the limit.
    pub(super) fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.buf.len())
    }

    pub(super) fn over_limit(&self) -> bool {
        self.buf.len() > self.limit
    }

    /// Whether `more` bytes on top of what is written would pass the limit.
    pub(super) fn would_overflow(&self, more: usize) -> bool {
        self.buf.len().saturating_add(more) > self.limit
    }

    /// Drops what was written (it will not be sent).
    pub(super) fn discard(mut self) -> Self {
        self.buf = BytesMut::new();
        self
    }

    pub(super) fn reply(&mut self, r: &Reply) {
        if let Err(e) = encode_reply(self.format, r, &mut self.buf) {
            // Data that cannot be expressed in this format (binary data to a JSON client).
            tracing::warn!(error = %e, "reply dropped");
            let fallback = Reply {
                id: r.id,
                error: Some(Error {
                    code: ec::INTERNAL,
                    message: "internal error".into(),
                    temporary: true,
                }),
                ..Default::default()
            };
            let _ = encode_reply(self.format, &fallback, &mut self.buf);
        }
    }

    pub(super) fn disconnect(mut self, d: Disconnect) -> Output {
        self.disconnect = Some((d.0, d.1.to_string()));
        self.finish()
    }

    pub(super) fn finish(self) -> Output {
        Output {
            frame: (!self.buf.is_empty()).then(|| self.buf.freeze()),
            disconnect: self.disconnect,
        }
    }
}

/// The encoded size of the publications a reply carries (history, recovery in subscribe
/// and connect), bounded from above before encoding it.
fn publications_size(r: &Reply) -> usize {
    let history = r.history.iter().map(|h| publications_bound(&h.publications));
    let subscribe = r.subscribe.iter().map(|s| publications_bound(&s.publications));
    let connect = r
        .connect
        .iter()
        .flat_map(|c| &c.subs)
        .filter_map(|e| e.value.as_ref())
        .map(|s| publications_bound(&s.publications));
    history.chain(subscribe).chain(connect).sum()
}

fn command_method(c: &Command) -> &'static str {
    if c.connect.is_some() {
        "connect"
    } else if c.subscribe.is_some() {
        "subscribe"
    } else if c.unsubscribe.is_some() {
        "unsubscribe"
    } else if c.publish.is_some() {
        "publish"
    } else if c.presence.is_some() {
        "presence"
    } else if c.presence_stats.is_some() {
        "presence_stats"
    } else if c.history.is_some() {
        "history"
    } else if c.refresh.is_some() {
        "refresh"
    } else if c.sub_refresh.is_some() {
        "sub_refresh"
    } else if c.rpc.is_some() {
        "rpc"
    } else if c.send.is_some() {
        "send"
    } else if c.ping.is_some() {
        "ping"
    } else {
        "pong"
    }
}
