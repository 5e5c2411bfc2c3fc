//! What the server pushes on a subscription: publications (a recoverable stream's position,
//! Fossil deltas decoded to whole data), joins and leaves, and the server's unsubscribe
//! and disconnect.

use std::time::Instant;

use bytes::Bytes;
use wshub_protocol::codes::unsubscribe;
use wshub_protocol::{fossil, Command, Format, Publication, Push, UnsubscribeRequest};

use super::{Action, ClientCore, ClientEvent, SubState};

/// Most bytes a delta may decode to.
const MAX_DELTA_OUTPUT: usize = 64 << 20;

impl ClientCore {
    pub(super) fn publication(&mut self, channel: &str, mut p: Publication) {
        let format = self.cfg.format;
        let came_as_delta = p.delta;
        if let Some(s) = self.subs.get_mut(channel) {
            if s.recoverable && p.offset > 0 {
                match &mut s.position {
                    // Already delivered (a recovered publication that also came live).
                    Some((o, _)) if p.offset <= *o => return,
                    Some((o, _)) => *o = p.offset,
                    None => {}
                }
            }
            if s.delta_negotiated {
                match decode_delta(format, s.delta_base.as_deref(), &p) {
                    Ok(data) => {
                        s.delta_base = Some(data.clone());
                        p.data = data;
                    }
                    Err(message) => {
                        // The base is lost: subscribe again (recovering from the last
                        // offset), which starts a new chain with a whole publication.
                        s.delta_base = None;
                        s.state = SubState::Subscribing;
                        if let Some((o, _)) = &mut s.position {
                            *o = o.saturating_sub(1);
                        }
                        self.events.push_back(ClientEvent::Error {
                            message: format!("{channel}: {message}"),
                        });
                        let id = self.id();
                        self.send(&[Command {
                            id,
                            unsubscribe: Some(UnsubscribeRequest { channel: channel.into() }),
                            ..Default::default()
                        }]);
                        self.send_subscribe(channel);
                        return;
                    }
                }
            }
        }
        self.events.push_back(ClientEvent::Publication {
            channel: channel.into(),
            data: p.data,
            offset: p.offset,
            delta: came_as_delta && self.subs.get(channel).is_some_and(|s| s.delta_negotiated),
        });
    }

    pub(super) fn handle_push(&mut self, p: Push, now: Instant) {
        let channel = p.channel;
        if let Some(publication) = p.r#pub {
            self.publication(&channel, publication);
        } else if let Some(j) = p.join {
            self.events.push_back(ClientEvent::Join {
                channel,
                info: j.info.unwrap_or_default(),
            });
        } else if let Some(l) = p.leave {
            self.events.push_back(ClientEvent::Leave {
                channel,
                info: l.info.unwrap_or_default(),
            });
        } else if let Some(u) = p.unsubscribe {
            if unsubscribe::should_resubscribe(u.code) {
                self.forget_sub_token(&channel);
                if let Some(s) = self.subs.get_mut(&channel) {
                    s.state = SubState::Subscribing;
                }
                self.send_subscribe(&channel);
            } else if self.subs.remove(&channel).is_some() {
                self.events.push_back(ClientEvent::Unsubscribed { channel, code: u.code });
            }
        } else if let Some(d) = p.disconnect {
            self.actions.push_back(Action::CloseTransport);
            let code = d.code.min(u32::from(u16::MAX)) as u16;
            self.handle_close(code, &d.reason, now);
        }
    }
}

/// The whole data of a publication on a delta subscription: JSON carries it (whole or
/// delta) as a JSON string, Protobuf as bytes; a delta applies to the previous data.
fn decode_delta(format: Format, base: Option<&[u8]>, p: &Publication) -> Result<Bytes, String> {
    let raw: Bytes = match format {
        Format::Json => serde_json::from_slice::<String>(&p.data)
            .map_err(|e| format!("delta data is not a JSON string: {e}"))?
            .into(),
        Format::Protobuf => p.data.clone(),
    };
    if !p.delta {
        return Ok(raw);
    }
    let base = base.ok_or("delta without a base")?;
    fossil::apply(base, &raw, MAX_DELTA_OUTPUT)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}
