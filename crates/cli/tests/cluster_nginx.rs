//! Three wshub nodes on one `redis-server`, behind Debian's nginx running
//! `deploy/nginx.conf`, with Rust SDK clients connected through nginx and a backend
//! publishing 200 publications a second through nginx's `/api/publish`:
//! - a node killed with SIGKILL: its clients reconnect through nginx to the others and
//!   recover; every client has every acknowledged publication once, in order;
//! - a rolling restart (SIGTERM one node at a time, each back and ready before the next):
//!   the same, and the drains spread the reconnections;
//! - the cluster-wide API through nginx (`info`, `channels`, `disconnect` across nodes) and
//!   the `leave` pushed by the survivors for a dead node's clients.
//!
//! Every publication is numbered and counted at every client. The tests take turns (one
//! cluster at a time) so that the timings of one do not disturb another's.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::watch::{count, quick_reconnects, watch, Count, Watched};
use common::{api, event_within, serial, wait_until, Nginx, Node, LIMIT};
use serde_json::json;
use wshub_client::{CallError, Client, ClientConfig, ClientEvent};
use wshub_testkit::publisher::Publisher;

const SECRET: &str = "cluster-test";
const CLIENTS: usize = 30;
const CHANNEL: &str = "chat:load";
/// Publications per second.
const RATE: u64 = 200;

/// A redis-server, three nodes on it and nginx in front of them.
struct Cluster {
    // Fields drop in order: nginx, then the nodes, then Redis.
    nginx: Nginx,
    nodes: Vec<Node>,
    _redis: wshub_testkit::redis::RedisServer,
    dir: std::path::PathBuf,
}

impl Cluster {
    async fn start(name: &str) -> Cluster {
        Self::start_with(name, json!({})).await
    }

    /// With `client` keys added to every node's configuration.
    async fn start_with(name: &str, client: serde_json::Value) -> Cluster {
        let dir = common::temp_dir(name);
        let redis = wshub_testkit::redis::RedisServer::start().await;
        let mut client_cfg = json!({"token": {"hmac_secret_key": SECRET}});
        if let (Some(c), Some(extra)) = (client_cfg.as_object_mut(), client.as_object()) {
            c.extend(extra.clone());
        }
        let config = json!({
            "http_api": {"key": common::API_KEY},
            "client": client_cfg,
            "engine": {"type": "redis", "redis": {"address": redis.url(), "prefix": format!("t{}", common::unique())}},
            "shutdown": {"timeout": "6s", "drain_window": "2s"},
            "channel": {"namespaces": [{
                "name": "chat", "history_size": 10000, "history_ttl": "300s", "force_recovery": true,
                "allow_subscribe_for_client": true
            }, {
                "name": "room", "presence": true, "join_leave": true, "force_push_join_leave": true,
                "allow_subscribe_for_client": true
            }]}
        });
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(Node::start(&dir, &config, common::free_port()).await);
        }
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let nginx = Nginx::start(&dir, &ports).await;
        Cluster {
            nginx,
            nodes,
            _redis: redis,
            dir,
        }
    }

    /// Clients connected to each node, as its `info` says (asked on the node's own port).
    async fn clients_per_node(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for n in &self.nodes {
            let (_, info) = api(n.port, "info", &json!({})).await.unwrap();
            out.push(
                info["result"]["nodes"][0]["num_clients"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{info}")),
            );
        }
        out
    }

    /// nginx's error log lines about the upstream (why a call failed), but for refused
    /// connections (which nginx retried on the next node): those are counted.
    fn upstream_errors(&self) -> Vec<String> {
        let log = self.nginx.error_log();
        let upstream = log.lines().filter(|l| l.contains("upstream"));
        let (refused, other): (Vec<&str>, Vec<&str>) = upstream.partition(|l| l.contains("Connection refused"));
        let mut out = vec![format!("{} connections refused by stopped nodes (retried)", refused.len())];
        out.extend(other.into_iter().map(|l| l.chars().take(300).collect::<String>()));
        out
    }

    /// What went wrong, for an assertion message: the end of every log.
    fn logs(&self) -> String {
        fn tail(s: String) -> String {
            let from = s.len().saturating_sub(4000);
            let from = (from..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
            s[from..].to_string()
        }
        let mut s = format!("nginx error log:\n{}\n", tail(self.nginx.error_log()));
        for n in &self.nodes {
            s.push_str(&format!("node {}:\n{}\n", n.port, tail(n.log())));
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn token(user: &str) -> String {
    wshub_core::token::make_hs256(SECRET, &json!({"sub": user})).unwrap()
}

fn client_config(user: &str) -> ClientConfig {
    quick_reconnects(token(user), Duration::from_secs(1))
}

impl Cluster {
    /// A cluster and `CLIENTS` clients connected through its nginx, each subscribed
    /// (recoverable) to [`CHANNEL`].
    async fn with_clients(name: &str) -> (Cluster, Vec<Watched>) {
        let cluster = Cluster::start(name).await;
        let mut clients = Vec::with_capacity(CLIENTS);
        for i in 0..CLIENTS {
            // One at a time, so that least_conn sees each connection before the next.
            clients.push(watch(&cluster.nginx.url(), client_config(&format!("u{i}")), CHANNEL).await);
        }
        (cluster, clients)
    }
}

#[test]
fn a_node_killed_under_load_loses_nothing() {
    serial(async {
        let started = Instant::now();
        let (mut cluster, clients) = Cluster::with_clients("cluster-kill").await;
        let before = cluster.clients_per_node().await;
        println!("clients per node through nginx (least_conn): {before:?}");
        assert_eq!(before.iter().sum::<u64>(), CLIENTS as u64);
        assert!(before.iter().all(|&n| n > 0), "least_conn put clients on every node: {before:?}");
        let victim = (0..3).max_by_key(|&i| before[i]).unwrap();

        let publisher = Publisher::start(vec![cluster.nginx.port], common::API_KEY, CHANNEL, RATE);
        publisher.run_for(RATE).await;
        let status = cluster.nodes[victim].signal("-KILL").await;
        assert!(!status.success());
        let killed = Instant::now();
        // Its clients (and only they) subscribe again, through nginx, to the others.
        wait_until("the dead node's clients to subscribe again", LIMIT, || {
            clients.iter().filter(|c| c.seen.lock().unwrap().subscribed.len() >= 2).count() as u64 >= before[victim]
        })
        .await;
        println!("{} clients of the killed node back in {:?}", before[victim], killed.elapsed());
        publisher.run_for(RATE).await;
        let (acked, failed) = publisher.stop().await;
        let count = count(&clients, &acked).await;
        println!(
            "SIGKILL under load: {} acknowledged, {} failed calls {:?}, {CLIENTS} clients: {count:?} ({:?} in all)",
            acked.len(),
            failed.len(),
            failed.iter().take(3).collect::<Vec<_>>(),
            started.elapsed()
        );
        let moved: Vec<_> = clients.iter().filter(|c| c.seen.lock().unwrap().subscribed.len() >= 2).collect();
        assert_eq!(moved.len() as u64, before[victim], "only the killed node's clients came back");
        for c in &moved {
            let s = c.seen.lock().unwrap();
            assert_eq!(
                s.subscribed[1..],
                vec![(true, true); s.subscribed.len() - 1],
                "recovered after the kill"
            );
        }
        let after = {
            let mut v = cluster.clients_per_node_alive(victim).await;
            v.insert(victim, 0);
            v
        };
        println!("clients per node after the kill: {after:?}");
        assert_eq!(after.iter().sum::<u64>(), CLIENTS as u64);
        for line in cluster.upstream_errors() {
            println!("nginx: {line}");
        }
        assert!(failed.len() <= 5, "calls failed: {failed:?}\n{}", cluster.logs());
        assert_eq!(count, Count::default(), "{}", cluster.logs());
    });
}

impl Cluster {
    /// [`Cluster::clients_per_node`] without the node at `dead`.
    async fn clients_per_node_alive(&self, dead: usize) -> Vec<u64> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if i != dead {
                let (_, info) = api(n.port, "info", &json!({})).await.unwrap();
                out.push(info["result"]["nodes"][0]["num_clients"].as_u64().unwrap());
            }
        }
        out
    }
}

/// The largest number of instants in any window of `width`.
fn busiest_window(times: &mut [Instant], width: Duration) -> usize {
    times.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= width {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[test]
fn a_rolling_restart_under_load_loses_nothing_and_spreads_reconnects() {
    serial(async {
        let started = Instant::now();
        let (mut cluster, clients) = Cluster::with_clients("cluster-rolling").await;
        let publisher = Publisher::start(vec![cluster.nginx.port], common::API_KEY, CHANNEL, RATE);
        publisher.run_for(RATE / 2).await;
        let mut drained = Vec::new();
        for i in 0..3 {
            let on_node = cluster.clients_per_node().await;
            let connects_before: usize = clients.iter().map(|c| c.seen.lock().unwrap().connected.len()).sum();
            let status = cluster.nodes[i].signal("-TERM").await;
            assert!(status.success(), "node {i} drained and exited 0: {status:?}");
            cluster.nodes[i].restart().await;
            // Every client of the drained node connected and subscribed again before the next.
            wait_until("the drained node's clients to come back", LIMIT, || {
                let (mut connects, mut all_subscribed) = (0, true);
                for c in &clients {
                    let s = c.seen.lock().unwrap();
                    connects += s.connected.len();
                    all_subscribed &= s.subscribed.len() == s.connected.len();
                }
                connects >= connects_before + on_node[i] as usize && all_subscribed
            })
            .await;
            println!("node {i} restarted; clients per node before: {on_node:?}");
            drained.push(on_node[i]);
        }
        publisher.run_for(RATE / 2).await;
        let (acked, failed) = publisher.stop().await;
        let count = count(&clients, &acked).await;
        let mut reconnects: Vec<Instant> = clients
            .iter()
            .flat_map(|c| c.seen.lock().unwrap().connected[1..].to_vec())
            .collect();
        let total = reconnects.len();
        let busiest = busiest_window(&mut reconnects, Duration::from_millis(100));
        println!(
            "rolling restart: {} acknowledged, {} failed calls {:?}, {CLIENTS} clients: {count:?}; \
             {total} reconnects, at most {busiest} in any 100 ms (drained nodes held {drained:?}) ({:?} in all)",
            acked.len(),
            failed.len(),
            failed.iter().take(3).collect::<Vec<_>>(),
            started.elapsed()
        );
        assert_eq!(total as u64, drained.iter().sum::<u64>(), "each drained client reconnected once");
        for c in &clients {
            let s = c.seen.lock().unwrap();
            assert!(s.subscribed[1..].iter().all(|&r| r == (true, true)), "recovered after each drain");
        }
        let smallest = *drained.iter().min().unwrap() as usize;
        assert!(
            busiest < smallest,
            "{busiest} reconnects within 100 ms: the drain did not spread the {smallest} clients of a node"
        );
        for line in cluster.upstream_errors() {
            println!("nginx: {line}");
        }
        assert!(failed.len() <= 5, "calls failed: {failed:?}\n{}", cluster.logs());
        assert_eq!(count, Count::default(), "{}", cluster.logs());
    });
}

/// A client of `port`'s node (or nginx's) for `user`, connected and, given a `channel`,
/// subscribed to it; with its events.
async fn direct_client(port: u16, user: &str, channel: Option<&str>) -> (Client, wshub_client::Events) {
    let (client, mut events) = Client::start(&format!("ws://127.0.0.1:{port}/connection/websocket"), client_config(user)).unwrap();
    if let Some(channel) = channel {
        client.subscribe(channel, false);
    }
    client.connect();
    let done = event_within(&mut events, LIMIT, |e| match channel {
        Some(_) => matches!(e, ClientEvent::Subscribed { .. }),
        None => matches!(e, ClientEvent::Connected { .. }),
    })
    .await;
    assert!(done.is_some(), "{user} on {port}: not connected and subscribed to {channel:?}");
    (client, events)
}

/// Node discovery and the cluster-wide API (issue 12, items 2 to 4): `info` through nginx
/// lists the three nodes; `channels` asked of
/// any node lists a channel whose only subscriber is on another node; a `disconnect` sent
/// to one node closes the user's connection on another with the given code; and a node
/// killed with SIGKILL has its clients' `leave` pushed by the survivors. Every check runs;
/// the failure lists each one missing.
#[test]
fn cluster_api_through_nginx() {
    serial(async {
        let mut cluster = Cluster::start("cluster-api").await;
        let mut missing = Vec::new();
        let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();

        // Nodes announce themselves every few seconds: polled, up to 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        let info = loop {
            let (_, info) = api(cluster.nginx.port, "info", &json!({})).await.unwrap();
            let n = info["result"]["nodes"].as_array().map_or(0, Vec::len);
            if n == 3 || Instant::now() > deadline {
                break info;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if info["result"]["nodes"].as_array().map_or(0, Vec::len) != 3 {
            missing.push(format!("info through nginx does not list 3 nodes: {info}"));
        }

        // The only subscriber of chat:only-on-0 is on node 0; nodes 1 and 2 list it.
        let (only, _only_events) = direct_client(ports[0], "only", Some("chat:only-on-0")).await;
        // Each node surveys the nodes it has heard from: polled until it has heard from node 0.
        for &port in &ports[1..] {
            let deadline = Instant::now() + Duration::from_secs(10);
            let channels = loop {
                let (_, channels) = api(port, "channels", &json!({})).await.unwrap();
                if channels["result"]["channels"]["chat:only-on-0"]["num_clients"] == 1 || Instant::now() > deadline {
                    break channels;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            if channels["result"]["channels"]["chat:only-on-0"]["num_clients"] != 1 {
                missing.push(format!("channels on node {port} misses node 0's chat:only-on-0: {channels}"));
            }
        }

        // zed is on node 2; the disconnect goes to node 0.
        let (zed, mut zed_events) = direct_client(ports[2], "zed", None).await;
        let (_, r) = api(
            ports[0],
            "disconnect",
            &json!({"user": "zed", "disconnect": {"code": 3503, "reason": "banned"}}),
        )
        .await
        .unwrap();
        let closed = event_within(&mut zed_events, Duration::from_secs(5), |e| {
            matches!(e, ClientEvent::Disconnected { .. } | ClientEvent::Connecting { .. })
        })
        .await;
        if !matches!(closed, Some(ClientEvent::Disconnected { code: 3503, .. })) {
            missing.push(format!(
                "disconnect sent to node 0 ({r}) did not close zed on node 2 with 3503: {closed:?}"
            ));
        }

        // ghost is on node 1, which dies; watcher, on node 0, sees ghost leave.
        // Subscribed before ghost joins: a join published earlier is not the watcher's to see.
        let (watcher, mut watcher_events) = direct_client(ports[0], "watcher", Some("room:lobby")).await;
        let (ghost, _ghost_events) = direct_client(ports[1], "ghost", Some("room:lobby")).await;
        event_within(
            &mut watcher_events,
            LIMIT,
            |e| matches!(e, ClientEvent::Join { info, .. } if info.user == "ghost"),
        )
        .await
        .expect("ghost's join reached node 0");
        // No close from the client: its node dies under it (and it retries only that port).
        cluster.nodes[1].signal("-KILL").await;
        let left = event_within(
            &mut watcher_events,
            LIMIT,
            |e| matches!(e, ClientEvent::Leave { info, .. } if info.user == "ghost"),
        )
        .await;
        if left.is_none() {
            missing.push("no leave pushed for ghost within 30 s of its node's SIGKILL".into());
        }
        assert!(missing.is_empty(), "cluster-wide API:\n{}", missing.join("\n"));
        drop((only, zed, watcher, ghost));
    });
}

/// Cluster rate limits (issue 12, item 7): with `client.command_rate_limit_scope =
/// "cluster"`, a user's commands are counted across every node, so a user over the rate gets
/// error 111 whichever node serves each of its connections. Two connections of one user
/// through nginx land on two nodes (`least_conn`); together they send twice the burst.
#[test]
fn cluster_command_rate_through_nginx() {
    serial(async {
        const RATE: u32 = 4;
        let cluster = Cluster::start_with(
            "cluster-rate",
            json!({"command_rate_limit": RATE, "command_rate_limit_scope": "cluster"}),
        )
        .await;
        let mut conns = Vec::new();
        for _ in 0..2 {
            let (c, ev) = direct_client(cluster.nginx.port, "busy", None).await;
            conns.push((c, ev));
        }
        let per_node = cluster.clients_per_node().await;
        assert_eq!(
            per_node.iter().filter(|&&n| n == 1).count(),
            2,
            "one connection on each of two nodes: {per_node:?}"
        );
        // Twice the burst, alternating between the two nodes, as fast as the replies come.
        let (mut served, mut refused) = ([0u32; 2], [0u32; 2]);
        for i in 0..2 * RATE as usize {
            match conns[i % 2].0.rpc("ping", &b"{}"[..]).await {
                Err(CallError::Server { code: 111, .. }) => refused[i % 2] += 1,
                Err(CallError::Server { code: 108, .. }) => served[i % 2] += 1,
                other => panic!("unexpected answer: {other:?}"),
            }
        }
        println!("cluster command rate {RATE}/s: served {served:?}, refused {refused:?}");
        // Per connection, all 8 would be served (4 each, within each one's burst).
        assert!(
            served[0] + served[1] <= RATE + 1,
            "served {served:?}: the budget is per user, across nodes"
        );
        assert!(refused[0] > 0 && refused[1] > 0, "both nodes refuse: {refused:?}");
        // Another user is not affected.
        let (other, _ev) = direct_client(cluster.nginx.port, "calm", None).await;
        assert!(matches!(
            other.rpc("ping", &b"{}"[..]).await,
            Err(CallError::Server { code: 108, .. })
        ));
        drop((conns, other, cluster));
    });
}
