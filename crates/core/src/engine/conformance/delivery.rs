//! Delivery: publications, joins and leaves reach the nodes that subscribed, in order, and
//! stop after the last unsubscribe.

use super::harness::*;
use super::*;

/// Without history (size 0 or ttl 0) a publication has position `(0, "")`, is delivered to
/// every subscribed node with offset 0, and is not kept.
pub async fn publication_without_history_has_no_position_and_is_delivered<F: BrokerFactory>(f: &F) {
    let nodes = cluster(f).await;
    for n in &nodes {
        n.subscribe("ch").await;
    }
    let not_kept = [
        PublishOptions::default(),
        PublishOptions {
            history_size: 10,
            history_ttl: Duration::ZERO,
            ..Default::default()
        },
        PublishOptions {
            history_size: 0,
            history_ttl: Duration::from_secs(60),
            ..Default::default()
        },
    ];
    for (i, opts) in not_kept.iter().enumerate() {
        let pos = nodes[0].engine.publish("ch", publication(&i.to_string()), opts).await.unwrap();
        assert_eq!(pos, StreamPosition::default(), "{opts:?}");
    }
    for n in &nodes {
        let got = wait_publications(f, n, "ch", 3).await;
        assert_eq!(got, [at(0, "0"), at(0, "1"), at(0, "2")]);
    }
    if !nodes[0].engine.keeps_history() {
        return;
    }
    let h = nodes[0].engine.history("ch", ALL).await.unwrap();
    assert_eq!(h.publications, []);
    assert_eq!(h.position.offset, 0);
}

/// Each subscribed channel's publications arrive in stream order; a channel the node did not
/// subscribe to arrives not at all (engines that deliver only subscribed channels).
pub async fn delivers_each_channel_in_order_only_where_subscribed<F: BrokerFactory>(f: &F) {
    let nodes = cluster(f).await;
    let (publisher, receiver) = (&nodes[0], &nodes[nodes.len() - 1]);
    receiver.subscribe("a").await;
    receiver.subscribe("b").await;
    for i in 1..=50u64 {
        let s = i.to_string();
        publisher.engine.publish("a", publication(&s), &kept(100)).await.unwrap();
        publisher
            .engine
            .publish("b", publication(&s), &PublishOptions::default())
            .await
            .unwrap();
        publisher.engine.publish("c", publication(&s), &kept(100)).await.unwrap();
    }
    // After every publication of `c`.
    publisher.engine.publish("a", publication("51"), &kept(100)).await.unwrap();
    let a = wait_publications(f, receiver, "a", 51).await;
    assert_eq!(a, (1..=51).map(|i| receiver.at(i, &i.to_string())).collect::<Vec<_>>());
    let b = wait_publications(f, receiver, "b", 50).await;
    assert_eq!(b, (1..=50).map(|i| at(0, &i.to_string())).collect::<Vec<_>>());
    if f.delivers_only_subscribed() {
        assert_eq!(receiver.events("c"), [], "a channel without subscribers");
    } else {
        skipped(
            "delivers_each_channel_in_order_only_where_subscribed",
            "no delivery of c",
            HANDS_OVER_ALL,
        );
    }
}

/// Every node subscribed to a channel receives all of it in stream order, whichever node
/// published; a node not subscribed receives none of it.
pub async fn delivers_to_every_subscribed_node<F: BrokerFactory>(f: &F) {
    if f.is_single_node() {
        return skipped("delivers_to_every_subscribed_node", "all", ONE_NODE);
    }
    let nodes = cluster(f).await;
    for n in &nodes {
        n.subscribe("room").await;
    }
    nodes[0].subscribe("solo").await;
    for i in 1..=100u64 {
        let node = &nodes[i as usize % nodes.len()];
        node.engine.publish("room", publication(&i.to_string()), &kept(1000)).await.unwrap();
    }
    for i in 1..=3u64 {
        nodes[1]
            .engine
            .publish("solo", publication(&i.to_string()), &kept(10))
            .await
            .unwrap();
    }
    nodes[1].engine.publish("room", publication("101"), &kept(1000)).await.unwrap();
    for n in &nodes {
        let mut got = wait_publications(f, n, "room", 101).await;
        if !n.engine.keeps_history() {
            // Without a stream, only each publisher's own publications keep their order.
            let number = |p: &Publication| std::str::from_utf8(&p.data).unwrap().parse::<usize>().unwrap();
            for k in 0..nodes.len() {
                let own: Vec<usize> = got.iter().map(number).filter(|i| i % nodes.len() == k).collect();
                assert!(own.windows(2).all(|w| w[0] < w[1]), "node {k}'s publications out of order: {own:?}");
            }
            got.sort_by_key(number);
        }
        assert_eq!(got, (1..=101).map(|i| n.at(i, &i.to_string())).collect::<Vec<_>>());
    }
    let solo = wait_publications(f, &nodes[0], "solo", 3).await;
    assert_eq!(solo, (1..=3).map(|i| nodes[0].at(i, &i.to_string())).collect::<Vec<_>>());
    assert_eq!(nodes[1].events("solo"), [], "the node without subscribers of solo");
}

/// An unsubscribe while the node has subscribers again changes nothing (the engine asks
/// [`BrokerHandler::has_subscribers`] before it stops); after the last unsubscribe nothing
/// more arrives (engines that deliver only subscribed channels); subscribing again resumes.
pub async fn stops_delivering_after_the_last_unsubscribe<F: BrokerFactory>(f: &F) {
    let nodes = cluster(f).await;
    let (publisher, receiver) = (&nodes[0], &nodes[nodes.len() - 1]);
    receiver.subscribe("room").await;
    receiver.subscribe("marker").await;
    publisher.engine.publish("room", publication("1"), &kept(10)).await.unwrap();
    wait_publications(f, receiver, "room", 1).await;

    // A subscriber came back before the engine acted on the unsubscribe.
    receiver.engine.unsubscribe("room").await.unwrap();
    publisher.engine.publish("room", publication("2"), &kept(10)).await.unwrap();
    let (one, two) = (receiver.at(1, "1"), receiver.at(2, "2"));
    assert_eq!(wait_publications(f, receiver, "room", 2).await, [one.clone(), two.clone()]);

    receiver.unsubscribe("room").await;
    publisher.engine.publish("room", publication("3"), &kept(10)).await.unwrap();
    publisher
        .engine
        .publish("marker", publication("m"), &PublishOptions::default())
        .await
        .unwrap();
    wait_publications(f, receiver, "marker", 1).await;
    if f.delivers_only_subscribed() {
        assert_eq!(receiver.publications("room"), [one, two], "after the last unsubscribe");
    } else {
        skipped(
            "stops_delivering_after_the_last_unsubscribe",
            "no delivery after it",
            HANDS_OVER_ALL,
        );
    }

    receiver.subscribe("room").await;
    publisher.engine.publish("room", publication("4"), &kept(10)).await.unwrap();
    wait_until(f, "room #4 after subscribing again", || {
        receiver.publications("room").last() == Some(&receiver.at(4, "4"))
    })
    .await;
}

/// Joins and leaves reach every subscribed node, with the client's info, in stream order
/// with the channel's publications.
pub async fn join_and_leave_reach_subscribers_in_stream_order<F: BrokerFactory>(f: &F) {
    let nodes = cluster(f).await;
    for n in &nodes {
        n.subscribe("room").await;
    }
    let (first, last) = (&nodes[0], &nodes[nodes.len() - 1]);
    first.engine.publish("room", publication("1"), &kept(10)).await.unwrap();
    first.engine.publish_join("room", client("c1", "u1")).await.unwrap();
    first
        .engine
        .publish("room", publication("2"), &PublishOptions::default())
        .await
        .unwrap();
    first.engine.publish_leave("room", client("c1", "u1")).await.unwrap();
    last.engine.publish_join("room", client("c2", "u2")).await.unwrap();
    let want = [
        Event::Publication(Box::new(first.at(1, "1"))),
        Event::Join(client("c1", "u1")),
        Event::Publication(Box::new(at(0, "2"))),
        Event::Leave(client("c1", "u1")),
        Event::Join(client("c2", "u2")),
    ];
    for n in &nodes {
        wait_until(f, "five events of room", || n.events("room").len() >= want.len()).await;
        let mut got = n.events("room");
        if !n.engine.keeps_history() && nodes.len() > 1 {
            // Without a stream, only the first node's events keep their order: the last
            // node's join may come anywhere among them.
            let theirs = Event::Join(client("c2", "u2"));
            assert_eq!(got.iter().filter(|e| **e == theirs).count(), 1, "{got:?}");
            got.retain(|e| *e != theirs);
            got.push(theirs);
        }
        assert_eq!(got, want);
    }
}
