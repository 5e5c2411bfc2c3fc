//! The session's calls to the backend proxies ([`crate::proxy`]): building each request
//! from the session's state and turning each answer into what the session does next.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::*;
use crate::proxy::{self, Answer, Caller, Endpoint, Override, SubOptions};

/// What a session keeps for its proxies: boxed in the session, since most have none.
#[derive(Debug, Default)]
pub(super) struct ProxyConn {
    /// The client's upgrade request headers that some proxy forwards (lower-case names).
    pub headers: Vec<(String, String)>,
    /// `meta` from the connect proxy, sent back with `include_connection_meta`.
    pub meta: Option<Box<RawValue>>,
    /// The connect request's `headers` that some proxy's `emulated_headers` names
    /// (lower-case names), for every proxy call of the connection.
    pub emulated: Vec<(String, String)>,
}

/// A proxy that gave no usable answer: internal, temporary (the SDK retries).
fn internal() -> Fail {
    err(ec::INTERNAL, "internal error")
}

fn answer<R>(a: Answer<R>) -> Result<Option<R>, Fail> {
    match a {
        Answer::Result(r) => Ok(r),
        Answer::Error(e) => Err(Fail::Backend(e)),
        Answer::Disconnect(d) => {
            // A close code a WebSocket may carry from an application: 3000-4999. Anything
            // else from a backend is its mistake: 3004 (internal error, reconnect).
            let code = u16::try_from(d.code).ok().filter(|c| (3000..=4999).contains(c));
            if code.is_none() {
                tracing::warn!(code = d.code, "proxy disconnect code outside 3000..4999");
            }
            Err(Fail::Disconnect(Disconnect(
                code.unwrap_or(dc::INTERNAL_ERROR),
                Cow::Owned(d.reason),
            )))
        }
    }
}

fn bytes_field(raw: &Option<Box<RawValue>>, b64: &str, what: &str) -> Result<Bytes, Fail> {
    match proxy::raw_or_b64(raw, b64) {
        Ok(b) => Ok(b.unwrap_or_default()),
        Err(_) => {
            tracing::warn!(field = what, "proxy result with bad base64");
            Err(internal())
        }
    }
}

/// The fields of a subscribe request (the subscribe proxy's, the subscribe stream's).
fn subscribe_fields(ep: &Endpoint, req: &SubscribeRequest) -> Map<String, Value> {
    let mut f = Map::new();
    f.insert("channel".into(), req.channel.clone().into());
    if !req.token.is_empty() {
        f.insert("token".into(), req.token.clone().into());
    }
    proxy::put_data(&mut f, ep, &req.data);
    f
}

/// What a subscribe answer's result grants.
fn granted(r: proxy::SubscribeResultBody) -> Result<ProxySubscribe, Fail> {
    Ok(ProxySubscribe {
        chan_info: bytes_field(&r.info, &r.b64info, "b64info")?,
        data: bytes_field(&r.data, &r.b64data, "b64data")?,
        expire_at: expiry(r.expire_at),
        override_: r.override_,
    })
}

/// Unix seconds of a result's `expire_at` (0 or negative: none).
fn expiry(expire_at: i64) -> Option<u64> {
    u64::try_from(expire_at).ok().filter(|&e| e > 0)
}

/// Credentials and extras from the connect proxy.
pub(super) struct ProxyConnect {
    pub claims: crate::token::ConnectClaims,
    pub data: Bytes,
    /// Per-channel options of the result's `subs`.
    pub subs: BTreeMap<String, SubOptions>,
}

/// What a subscribe proxy granted.
pub(super) struct ProxySubscribe {
    pub chan_info: Bytes,
    pub data: Bytes,
    pub expire_at: Option<u64>,
    pub override_: Option<Override>,
}

impl Session {
    /// The client's upgrade request headers (the glue passes those that a configured proxy
    /// forwards: see [`crate::proxy::Endpoints::forwarded_headers`]).
    pub fn set_request_headers(&mut self, headers: Vec<(String, String)>) {
        if !headers.is_empty() {
            self.proxy.get_or_insert_with(Default::default).headers = headers;
        }
    }

    /// Keeps the connect request's `headers` (headers emulation) that some proxy forwards.
    pub(super) fn keep_emulated_headers(&mut self, headers: &HashMap<String, String>) {
        if headers.is_empty() {
            return;
        }
        let endpoints = self.node.proxies.all();
        let kept: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .filter(|(k, _)| endpoints.iter().any(|e| e.forward_emulated.contains(k)))
            .collect();
        if !kept.is_empty() {
            self.proxy.get_or_insert_with(Default::default).emulated = kept;
        }
    }

    /// The user `client.user_id_http_header` names, when set and sent.
    pub(super) fn header_user(&self) -> Option<String> {
        let name = &self.node.config.session.user_id_http_header;
        if name.is_empty() {
            return None;
        }
        let headers = &self.proxy.as_deref()?.headers;
        headers
            .iter()
            .find(|(k, v)| k.eq_ignore_ascii_case(name) && !v.is_empty())
            .map(|(_, v)| v.clone())
    }

    /// Who calls, as every proxy request tells.
    fn caller(&self) -> Caller<'_> {
        let pc = self.proxy.as_deref();
        Caller {
            client: &self.client,
            user: &self.user,
            transport: self.handle.transport().name,
            protocol: match self.format {
                Format::Json => "json",
                Format::Protobuf => "protobuf",
            },
            headers: pc.map_or(&[], |p| p.headers.as_slice()),
            emulated: pc.map_or(&[], |p| p.emulated.as_slice()),
            meta: pc.and_then(|p| p.meta.as_deref()),
        }
    }

    fn transport_for(&self, ep: &Endpoint) -> Result<Arc<dyn proxy::ProxyTransport>, Fail> {
        self.node.proxy_transport().cloned().ok_or_else(|| {
            tracing::warn!(kind = ep.kind.as_str(), "proxy configured but no transport installed");
            internal()
        })
    }

    async fn proxy_call<R: DeserializeOwned>(&self, ep: &Endpoint, fields: Map<String, Value>) -> Result<Option<R>, Fail> {
        let t = self.transport_for(ep)?;
        match proxy::call::<R>(t.as_ref(), ep, &self.caller(), fields).await {
            Ok(a) => answer(a),
            Err(_) => Err(internal()),
        }
    }

    /// `connect` without a token, through the connect proxy.
    pub(super) async fn connect_via_proxy(&mut self, ep: &Endpoint, req: &ConnectRequest) -> Result<Option<ProxyConnect>, Fail> {
        let mut f = Map::new();
        proxy::put_data(&mut f, ep, &req.data);
        if !req.name.is_empty() {
            f.insert("name".into(), req.name.clone().into());
        }
        if !req.version.is_empty() {
            f.insert("version".into(), req.version.clone().into());
        }
        if !req.subs.is_empty() {
            let mut chans: Vec<&String> = req.subs.keys().collect();
            chans.sort();
            f.insert("channels".into(), chans.into_iter().cloned().collect::<Vec<_>>().into());
        }
        let Some(r) = self.proxy_call::<proxy::ConnectResultBody>(ep, f).await? else {
            return Ok(None);
        };
        let info = bytes_field(&r.info, &r.b64info, "b64info")?;
        let data = bytes_field(&r.data, &r.b64data, "b64data")?;
        let mut channels = r.channels;
        for k in r.subs.keys() {
            if !channels.contains(k) {
                channels.push(k.clone());
            }
        }
        if let Some(m) = r.meta {
            self.proxy.get_or_insert_with(Default::default).meta = Some(m);
        }
        Ok(Some(ProxyConnect {
            claims: crate::token::ConnectClaims {
                user: r.user,
                expire_at: expiry(r.expire_at),
                info,
                channels,
                ..Default::default()
            },
            data,
            subs: r.subs,
        }))
    }

    /// At token expiry with a refresh proxy: asks the backend. `Err`: close the connection.
    pub(super) async fn refresh_via_proxy(&mut self, ep: &Endpoint, now: Now) -> Result<(), Disconnect> {
        let expired = Disconnect::new(dc::EXPIRED, "connection expired");
        match self.proxy_call::<proxy::RefreshResultBody>(ep, Map::new()).await {
            Ok(Some(r)) if !r.expired => {
                if let Ok(info) = bytes_field(&r.info, &r.b64info, "b64info") {
                    if !info.is_empty() {
                        self.conn_info = info;
                    }
                }
                if let Some(m) = r.meta {
                    self.proxy.get_or_insert_with(Default::default).meta = Some(m);
                }
                self.set_expiry(expiry(r.expire_at), now);
                Ok(())
            }
            Ok(_) => Err(expired),
            Err(Fail::Disconnect(d)) => Err(d),
            Err(Fail::Backend(_)) => Err(expired),
            Err(Fail::Error(_)) => {
                // No answer: one more minute, then ask again (as Centrifugo does).
                self.set_expiry(Some(now.unix + RETRY_AFTER_FAILURE), now);
                Ok(())
            }
        }
    }

    /// `subscribe` without a token in a namespace with `subscribe_proxy_enabled`.
    pub(super) async fn subscribe_via_proxy(&mut self, ep: &Endpoint, req: &SubscribeRequest) -> Result<ProxySubscribe, Fail> {
        let r = self.proxy_call::<proxy::SubscribeResultBody>(ep, subscribe_fields(ep, req)).await?;
        granted(r.unwrap_or_default())
    }

    /// `subscribe` without a token in a namespace with `subscribe_stream_proxy_enabled`: the
    /// stream's first message answers as the subscribe proxy does.
    pub(super) async fn subscribe_via_stream(
        &mut self,
        ep: &Endpoint,
        req: &SubscribeRequest,
        bidirectional: bool,
    ) -> Result<(ProxySubscribe, proxy::stream::ProxyStream), Fail> {
        let t = self.transport_for(ep)?;
        let fields = subscribe_fields(ep, req);
        let opened = proxy::stream::open(
            t.as_ref(),
            ep,
            &self.caller(),
            fields,
            bidirectional,
            self.handle.clone(),
            &req.channel,
        )
        .await;
        let (a, stream) = opened.map_err(|_| internal())?;
        // On a refusal the stream is dropped here, which cancels it.
        let r = answer(a)?;
        Ok((granted(r.unwrap_or_default())?, stream))
    }

    /// A client publication in a namespace with `subscribe_stream_proxy_enabled`: up the
    /// subscription's bidirectional stream (108 without one, as Centrifugo).
    pub(super) async fn publish_to_stream(&mut self, channel: &str, data: Bytes) -> Result<PublishResult, Fail> {
        let Some(s) = self.subs.get(channel).and_then(|s| s.stream.as_ref()).filter(|s| s.bidirectional) else {
            return Err(err(ec::NOT_AVAILABLE, "not available"));
        };
        match s.handle.publish(data).await {
            Ok(()) => Ok(PublishResult {}),
            Err(e) => {
                tracing::info!(channel, client = %self.client, error = %e, "publication to the subscribe stream failed");
                Err(internal())
            }
        }
    }

    /// A client publication through the publish proxy: the data to publish (the backend's
    /// when it replaced it) and whether to skip history.
    pub(super) async fn publish_via_proxy(&mut self, ep: &Endpoint, channel: &str, data: &Bytes) -> Result<(Bytes, bool), Fail> {
        let mut f = Map::new();
        f.insert("channel".into(), channel.into());
        proxy::put_data(&mut f, ep, data);
        let r = self.proxy_call::<proxy::PublishResultBody>(ep, f).await?.unwrap_or_default();
        let replaced = bytes_field(&r.data, &r.b64data, "b64data")?;
        let data = if replaced.is_empty() { data.clone() } else { replaced };
        Ok((data, r.skip_history))
    }

    /// A client's map write or removal asked of its proxy: the backend's error or disconnect
    /// is the client's; its result may change the key, data, tags and write options.
    pub(super) async fn map_write_via_proxy(&mut self, ep: &Endpoint, req: PublishRequest) -> Result<PublishResult, Fail> {
        use crate::subscription::map::ops::MapPublish;
        use crate::subscription::map::state::KeyMode;
        let mut f = Map::new();
        f.insert("channel".into(), req.channel.clone().into());
        f.insert("key".into(), req.key.clone().into());
        let node = self.node.clone();
        let or = |given: String, client: &str| if given.is_empty() { client.to_string() } else { given };
        if req.removed {
            let r = self.proxy_call::<proxy::MapRemoveResultBody>(ep, f).await?.unwrap_or_default();
            let idempotency_key = (!r.idempotency_key.is_empty()).then_some(r.idempotency_key);
            node.map_remove(&req.channel, &or(r.key, &req.key), idempotency_key, r.tags).await?;
            return Ok(PublishResult {});
        }
        proxy::put_data(&mut f, ep, &req.data);
        let r = self.proxy_call::<proxy::MapPublishResultBody>(ep, f).await?.unwrap_or_default();
        let replaced = bytes_field(&r.data, &r.b64data, "b64data")?;
        let key_mode = match r.key_mode.as_str() {
            "" => KeyMode::Any,
            "if_new" => KeyMode::IfNew,
            "if_exists" => KeyMode::IfExists,
            other => {
                tracing::warn!(key_mode = other, "map publish proxy result with an unknown key_mode");
                return Err(internal());
            }
        };
        let chan_info = self.subs.get(&req.channel).map(|s| s.chan_info.clone()).unwrap_or_default();
        let w = MapPublish {
            key: or(r.key, &req.key),
            data: if replaced.is_empty() { req.data } else { replaced },
            info: Some(self.client_info(chan_info)),
            tags: r.tags,
            idempotency_key: (!r.idempotency_key.is_empty()).then_some(r.idempotency_key),
            key_mode,
            delta: r.delta,
            version: r.version,
            version_epoch: r.version_epoch,
        };
        node.map_publish(&req.channel, w).await?;
        Ok(PublishResult {})
    }

    /// A subscription's expiry with a sub refresh proxy: `Ok(false)` when it expired.
    pub(super) async fn sub_refresh_via_proxy(&mut self, ep: &Endpoint, channel: &str, now: Now) -> Result<bool, Disconnect> {
        let mut f = Map::new();
        f.insert("channel".into(), channel.into());
        let (expires, info) = match self.proxy_call::<proxy::SubRefreshResultBody>(ep, f).await {
            Ok(Some(r)) if !r.expired => (expiry(r.expire_at), bytes_field(&r.info, &r.b64info, "b64info").ok()),
            Ok(_) | Err(Fail::Backend(_)) => return Ok(false),
            Err(Fail::Disconnect(d)) => return Err(d),
            Err(Fail::Error(_)) => (Some(now.unix + RETRY_AFTER_FAILURE), None),
        };
        if let Some(s) = self.subs.get_mut(channel) {
            s.expires = expires.map(|e| mono_at(now, e));
            if let Some(i) = info.filter(|i| !i.is_empty()) {
                s.chan_info = i;
            }
        }
        Ok(true)
    }

    /// The `rpc` command: routed by method namespace to an RPC proxy.
    pub(super) async fn rpc(&mut self, req: RpcRequest) -> Result<RpcResult, Fail> {
        let ping = &self.node.config.proxy.rpc.ping;
        if ping.enabled && req.method == ping.method {
            return Ok(RpcResult::default());
        }
        if !self.node.proxies.has_rpc() {
            // No RPC handler is configured: 108, as Centrifugo answers without an RPC proxy.
            return Err(err(ec::NOT_AVAILABLE, "not available"));
        }
        let ep = match self.node.proxies.for_rpc(&req.method) {
            Ok(ep) => ep.clone(),
            Err(code) if code == ec::METHOD_NOT_FOUND => return Err(err(code, "method not found")),
            Err(code) => return Err(err(code, "not available")),
        };
        let mut f = Map::new();
        f.insert("method".into(), req.method.into());
        proxy::put_data(&mut f, &ep, &req.data);
        let r = self.proxy_call::<proxy::RpcResultBody>(&ep, f).await?.unwrap_or_default();
        Ok(RpcResult {
            data: bytes_field(&r.data, &r.b64data, "b64data")?,
        })
    }
}

/// Seconds a connection or subscription lives on when its refresh proxy does not answer.
const RETRY_AFTER_FAILURE: u64 = 60;
