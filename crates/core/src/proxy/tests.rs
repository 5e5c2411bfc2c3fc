#![allow(clippy::unwrap_used)]

use super::*;
use crate::config::{NamedProxy, Namespace, RpcNamespace, RpcOptions};

fn cfg() -> NodeConfig {
    let mut c = NodeConfig::default();
    c.channel.proxy.subscribe.endpoint = "http://127.0.0.1:1/sub".into();
    c.channel.namespaces.push(Namespace {
        name: "a".into(),
        options: ChannelOptions {
            subscribe_proxy_enabled: true,
            ..Default::default()
        },
    });
    c.channel.namespaces.push(Namespace {
        name: "b".into(),
        options: ChannelOptions {
            subscribe_proxy_enabled: true,
            subscribe_proxy_name: "other".into(),
            ..Default::default()
        },
    });
    c.proxy.named.push(NamedProxy {
        name: "other".into(),
        proxy: ProxyConfig {
            endpoint: "http://127.0.0.1:2/x".into(),
            ..Default::default()
        },
    });
    c
}

#[test]
fn namespaces_reach_default_and_named_proxies() {
    let c = cfg();
    let e = Endpoints::build(&c).unwrap();
    let a = e.for_channel(ProxyKind::Subscribe, &c.channel.namespaces[0].options).unwrap();
    assert_eq!(a.config.endpoint, "http://127.0.0.1:1/sub");
    let b = e.for_channel(ProxyKind::Subscribe, &c.channel.namespaces[1].options).unwrap();
    assert_eq!(b.config.endpoint, "http://127.0.0.1:2/x");
    assert!(e.for_channel(ProxyKind::Publish, &c.channel.namespaces[0].options).is_none());
    assert_eq!(e.all().len(), 2);
    assert!(!e.has_rpc());
}

#[test]
fn a_missing_proxy_names_the_key() {
    let mut c = cfg();
    c.channel.namespaces[1].options.subscribe_proxy_name = "nope".into();
    let err = Endpoints::build(&c).unwrap_err();
    assert_eq!(err.key, "channel.namespaces[1].subscribe_proxy_name");
    let mut c = cfg();
    c.channel.proxy.subscribe.endpoint = "ftp://x".into();
    assert_eq!(Endpoints::build(&c).unwrap_err().key, "channel.proxy.subscribe.endpoint");
}

#[test]
fn subscribe_streams_take_grpc_endpoints_only() {
    let mut c = NodeConfig::default();
    c.channel.proxy.subscribe_stream.endpoint = "http://127.0.0.1:1/stream".into();
    c.channel.without_namespace.subscribe_stream_proxy_enabled = true;
    let err = Endpoints::build(&c).unwrap_err();
    assert_eq!(err.key, "channel.without_namespace.subscribe_stream_proxy_name");
    assert!(err.message.contains("only grpc://"), "{err}");
    c.channel.proxy.subscribe_stream.endpoint = "grpc://127.0.0.1:1".into();
    let e = Endpoints::build(&c).unwrap();
    let ep = e.for_channel(ProxyKind::SubscribeStream, &c.channel.without_namespace).unwrap();
    assert_eq!(ep.kind.as_str(), "subscribe_stream");
    // With the other channel proxies it is refused, as Centrifugo refuses it.
    c.channel.without_namespace.publish_proxy_enabled = true;
    let err = c.validate().unwrap_err();
    assert_eq!(err.key, "channel.without_namespace.subscribe_stream_proxy_enabled");
}

#[test]
fn rpc_routing_by_namespace() {
    let mut c = NodeConfig::default();
    c.proxy.rpc.proxy.endpoint = "http://127.0.0.1:1/rpc".into();
    c.proxy.rpc.without_namespace.proxy_enabled = true;
    c.proxy.rpc.namespaces.push(RpcNamespace {
        name: "off".into(),
        options: RpcOptions::default(),
    });
    let e = Endpoints::build(&c).unwrap();
    assert!(e.has_rpc());
    assert!(e.for_rpc("getUser").is_ok());
    assert_eq!(e.for_rpc("off:x").unwrap_err(), wshub_protocol::codes::error::NOT_AVAILABLE);
    assert_eq!(e.for_rpc("nope:x").unwrap_err(), wshub_protocol::codes::error::METHOD_NOT_FOUND);
}
