//! Presence: the presence manager half of the suite (whole engines only).

use super::harness::*;
use super::*;

/// Presence: added, replaced by adding again, removed (twice is fine), per channel.
pub async fn presence_add_get_remove<F: EngineFactory>(f: &F) {
    let nodes = cluster(f).await;
    let e = &nodes[0].engine;
    assert_eq!(e.presence("p").await.unwrap(), HashMap::new());
    e.add_presence("p", "c1", client("c1", "u1")).await.unwrap();
    assert_eq!(
        e.presence("p").await.unwrap(),
        HashMap::from([("c1".to_string(), client("c1", "u1"))])
    );
    assert_eq!(e.presence("other").await.unwrap(), HashMap::new());
    let changed = ClientInfo {
        chan_info: Bytes::from_static(b"{\"role\":\"writer\"}"),
        ..client("c1", "u1")
    };
    e.add_presence("p", "c1", changed.clone()).await.unwrap();
    assert_eq!(e.presence("p").await.unwrap(), HashMap::from([("c1".to_string(), changed)]));
    e.remove_presence("p", "c1").await.unwrap();
    assert_eq!(e.presence("p").await.unwrap(), HashMap::new());
    e.remove_presence("p", "c1").await.unwrap();
    e.remove_presence("never-present", "c1").await.unwrap();
    assert_eq!(e.presence("p").await.unwrap(), HashMap::new());
}

/// Presence of two clients of one user and a client of another: each by client id.
pub async fn presence_of_two_clients_and_two_users<F: EngineFactory>(f: &F) {
    let nodes = cluster(f).await;
    let e = &nodes[0].engine;
    for (c, u) in [("c1", "u1"), ("c2", "u1"), ("c3", "u2")] {
        e.add_presence("p", c, client(c, u)).await.unwrap();
    }
    let want = |cs: &[(&str, &str)]| -> HashMap<String, ClientInfo> { cs.iter().map(|&(c, u)| (c.to_string(), client(c, u))).collect() };
    assert_eq!(e.presence("p").await.unwrap(), want(&[("c1", "u1"), ("c2", "u1"), ("c3", "u2")]));
    e.remove_presence("p", "c1").await.unwrap();
    assert_eq!(e.presence("p").await.unwrap(), want(&[("c2", "u1"), ("c3", "u2")]));
    e.remove_presence("p", "c3").await.unwrap();
    assert_eq!(e.presence("p").await.unwrap(), want(&[("c2", "u1")]));
}

/// Presence is the cluster's: added on one node, seen and removed from the other.
pub async fn presence_is_seen_from_the_other_node<F: EngineFactory>(f: &F) {
    if f.is_single_node() {
        return skipped("presence_is_seen_from_the_other_node", "all", ONE_NODE);
    }
    let nodes = cluster(f).await;
    nodes[0].engine.add_presence("p", "c1", client("c1", "u1")).await.unwrap();
    nodes[1].engine.add_presence("p", "c2", client("c2", "u2")).await.unwrap();
    let both = HashMap::from([("c1".to_string(), client("c1", "u1")), ("c2".to_string(), client("c2", "u2"))]);
    for n in &nodes {
        assert_eq!(n.engine.presence("p").await.unwrap(), both);
    }
    nodes[1].engine.remove_presence("p", "c1").await.unwrap();
    for n in &nodes {
        assert_eq!(
            n.engine.presence("p").await.unwrap(),
            HashMap::from([("c2".to_string(), client("c2", "u2"))])
        );
    }
}
