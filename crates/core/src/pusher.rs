//! The Pusher Channels (protocol 7) form of a push, so that Pusher connections share the
//! hub's fan-out with Centrifugo ones: a publication is framed once for every Pusher
//! subscriber of a channel, as it is once per Centrifugo encoding.
//!
//! The mapping between the dialects (README, "Pusher / Laravel Echo"):
//!
//! - a Pusher channel `C` of an app with channel prefix `P` is the hub channel `P` + `C`
//!   (an app with the empty prefix shares its channels with Centrifugo clients);
//! - a publication's Pusher event name is its tag [`EVENT_TAG`], [`DEFAULT_EVENT`] when it
//!   has none (a Centrifugo publish without tags);
//! - a Pusher event's `data` string is the publication's data as it is when the string is
//!   JSON (so Centrifugo clients read the JSON), and a JSON string holding it otherwise,
//!   marked with [`STRING_TAG`] so that Pusher subscribers get the original string back;
//! - joins and leaves are `pusher_internal:member_added` / `member_removed`, with the
//!   member's user id and its `user_info` (the join's channel info).

use bytes::Bytes;
use wshub_protocol::{ClientInfo, Publication, Push};

/// The tag that names a publication's Pusher event.
pub const EVENT_TAG: &str = "event";
/// The event name of a publication without [`EVENT_TAG`].
pub const DEFAULT_EVENT: &str = "message";
/// Marks a publication whose data is a JSON string standing for a Pusher `data` that was
/// not JSON.
pub const STRING_TAG: &str = "pusher_string";

/// Who a Pusher push must not reach: the client event's sender (never echoed), the
/// socket an API event excludes, or the member a presence event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The socket id (Pusher's) or client id (Centrifugo's) of the publisher.
    Client(Box<str>),
    /// The user id of a member.
    User(Box<str>),
}

/// A push as Pusher frames it, with `strip` bytes of app prefix cut from its channel.
/// `None`: the push has no Pusher form (a Centrifugo-only push, or data that is not UTF-8).
pub fn encode(push: &Push, strip: usize) -> Option<(Bytes, Option<Skip>)> {
    let channel = push.channel.get(strip..)?;
    if let Some(p) = &push.r#pub {
        return publication(channel, p);
    }
    let (event, info) = match (&push.join, &push.leave) {
        (Some(j), _) => ("pusher_internal:member_added", j.info.as_ref()?),
        (_, Some(l)) => ("pusher_internal:member_removed", l.info.as_ref()?),
        _ => return None,
    };
    let data = member_data(info, push.join.is_some());
    let frame = frame(event, channel, &data, None);
    Some((frame, Some(Skip::User(info.user.as_str().into()))))
}

fn member_data(info: &ClientInfo, with_info: bool) -> String {
    let mut m = serde_json::Map::new();
    m.insert("user_id".into(), info.user.clone().into());
    if with_info && !info.chan_info.is_empty() {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&info.chan_info) {
            m.insert("user_info".into(), v);
        }
    }
    serde_json::Value::Object(m).to_string()
}

fn publication(channel: &str, p: &Publication) -> Option<(Bytes, Option<Skip>)> {
    let event = p.tags.get(EVENT_TAG).map_or(DEFAULT_EVENT, String::as_str);
    let data = pusher_data(p)?;
    let info = p.info.as_ref().filter(|i| !i.client.is_empty());
    // Pusher adds the sender's user id to client events on presence channels.
    let user = info
        .filter(|i| event.starts_with("client-") && channel.starts_with("presence-") && !i.user.is_empty())
        .map(|i| i.user.as_str());
    let skip = info.map(|i| Skip::Client(i.client.as_str().into()));
    Some((frame(event, channel, &data, user), skip))
}

/// The `data` string of a publication for Pusher clients (see the module docs).
pub fn pusher_data(p: &Publication) -> Option<String> {
    if p.tags.get(STRING_TAG).is_some_and(|v| v == "1") {
        if let Ok(s) = serde_json::from_slice::<String>(&p.data) {
            return Some(s);
        }
    }
    std::str::from_utf8(&p.data).ok().map(str::to_string)
}

/// A Pusher `data` string as publication data and its tags (see the module docs).
pub fn publication_data(data: &str) -> (Bytes, Option<(&'static str, &'static str)>) {
    if serde_json::from_str::<serde::de::IgnoredAny>(data).is_ok() {
        (Bytes::copy_from_slice(data.as_bytes()), None)
    } else {
        let quoted = serde_json::Value::String(data.to_string()).to_string();
        (Bytes::from(quoted), Some((STRING_TAG, "1")))
    }
}

/// One Pusher message: `{"event":…,"channel":…,"data":"…"[,"user_id":…]}`.
pub fn frame(event: &str, channel: &str, data: &str, user_id: Option<&str>) -> Bytes {
    #[derive(serde::Serialize)]
    struct Frame<'a> {
        event: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        channel: &'a str,
        data: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<&'a str>,
    }
    let f = Frame {
        event,
        channel,
        data,
        user_id,
    };
    // Serialising strings into a vector cannot fail.
    Bytes::from(serde_json::to_vec(&f).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;
    use wshub_protocol::Join;

    fn push(channel: &str, data: &[u8], tags: &[(&str, &str)], client: &str) -> Push {
        Push {
            channel: channel.into(),
            r#pub: Some(Publication {
                data: Bytes::copy_from_slice(data),
                tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>(),
                info: (!client.is_empty()).then(|| ClientInfo {
                    user: "u1".into(),
                    client: client.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn json(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn a_centrifugo_publication_is_a_message_event_with_its_json_as_the_data_string() {
        let (b, skip) = encode(&push("news", br#"{"n":1}"#, &[], ""), 0).unwrap();
        let v = json(&b);
        assert_eq!(v["event"], DEFAULT_EVENT);
        assert_eq!(v["channel"], "news");
        assert_eq!(v["data"], r#"{"n":1}"#);
        assert_eq!(skip, None);
    }

    #[test]
    fn the_event_tag_names_the_event_and_the_app_prefix_is_cut() {
        let (b, _) = encode(&push("app2.news", b"1", &[(EVENT_TAG, "Sent")], ""), 5).unwrap();
        let v = json(&b);
        assert_eq!(v["event"], "Sent");
        assert_eq!(v["channel"], "news");
    }

    #[test]
    fn non_json_data_round_trips_as_the_same_string() {
        let (data, tag) = publication_data("hello \"x\"");
        let tags: Vec<_> = tag.into_iter().collect();
        let (b, _) = encode(&push("c", &data, &tags, ""), 0).unwrap();
        assert_eq!(json(&b)["data"], "hello \"x\"");
        let (data, tag) = publication_data(r#"{"a":[1,2]}"#);
        assert_eq!(&data[..], br#"{"a":[1,2]}"#);
        assert_eq!(tag, None);
    }

    #[test]
    fn client_events_skip_their_sender_and_carry_the_user_on_presence_channels() {
        let (b, skip) = encode(&push("presence-r", b"{}", &[(EVENT_TAG, "client-typing")], "1.2"), 0).unwrap();
        assert_eq!(json(&b)["user_id"], "u1");
        assert_eq!(skip, Some(Skip::Client("1.2".into())));
        let (b, _) = encode(&push("private-r", b"{}", &[(EVENT_TAG, "client-typing")], "1.2"), 0).unwrap();
        assert!(json(&b).get("user_id").is_none());
    }

    #[test]
    fn joins_are_member_added_with_the_user_info_and_skip_the_member() {
        let p = Push {
            channel: "presence-r".into(),
            join: Some(Join {
                info: Some(ClientInfo {
                    user: "7".into(),
                    client: "1.2".into(),
                    chan_info: Bytes::from_static(br#"{"name":"Ann"}"#),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let (b, skip) = encode(&p, 0).unwrap();
        let v = json(&b);
        assert_eq!(v["event"], "pusher_internal:member_added");
        let data: serde_json::Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["user_id"], "7");
        assert_eq!(data["user_info"]["name"], "Ann");
        assert_eq!(skip, Some(Skip::User("7".into())));
    }
}
