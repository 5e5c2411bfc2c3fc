//! History: the stream's offsets and epoch, queries, size and time limits, removal, and the
//! idempotent publish that rests on the stream.

use super::harness::*;
use super::*;

/// Publications with history are numbered 1, 2, 3… per channel under one epoch, whichever
/// node publishes; the epoch is the one a history read gave before the first publication.
pub async fn history_offsets_count_from_one_under_one_epoch<F: BrokerFactory>(f: &F) {
    let Some(nodes) = cluster_with_history(f, "history_offsets_count_from_one_under_one_epoch").await else {
        return;
    };
    let empty = nodes[0].engine.history("ch", ALL).await.unwrap();
    assert_eq!(empty.publications, []);
    assert_eq!(empty.position.offset, 0);
    assert!(
        !empty.position.epoch.is_empty(),
        "a stream has an epoch before its first publication"
    );
    let epoch = empty.position.epoch;
    for i in 1..=6u64 {
        let node = &nodes[i as usize % nodes.len()];
        let pos = node.engine.publish("ch", publication(&i.to_string()), &kept(10)).await.unwrap();
        assert_eq!(
            pos,
            StreamPosition {
                offset: i,
                epoch: epoch.clone()
            }
        );
    }
    for node in &nodes {
        let h = node.engine.history("ch", ALL).await.unwrap();
        assert_eq!(h.publications, (1..=6).map(|i| at(i, &i.to_string())).collect::<Vec<_>>());
        assert_eq!(
            h.position,
            StreamPosition {
                offset: 6,
                epoch: epoch.clone()
            }
        );
    }
    // Streams are per channel.
    let other = nodes[0].engine.publish("other", publication("x"), &kept(10)).await.unwrap();
    assert_eq!(other.offset, 1);
    assert!(!other.epoch.is_empty());
}

/// `since` (offset and epoch), `limit` (-1 all, 0 position only, n at most n) and `reverse`,
/// read from every node; a `since` with another epoch is [`EngineError::UnrecoverablePosition`].
pub async fn history_queries<F: BrokerFactory>(f: &F) {
    let Some(nodes) = cluster_with_history(f, "history_queries").await else {
        return;
    };
    for i in 1..=5u64 {
        let node = &nodes[i as usize % nodes.len()];
        node.engine.publish("ch", publication(&i.to_string()), &kept(10)).await.unwrap();
    }
    let epoch = nodes[0].engine.history("ch", ALL).await.unwrap().position.epoch;
    let since = |offset| {
        Some(StreamPosition {
            offset,
            epoch: epoch.clone(),
        })
    };
    let cases: [(Option<StreamPosition>, i64, bool, &[u64]); 14] = [
        (None, -1, false, &[1, 2, 3, 4, 5]),
        (None, 0, false, &[]),
        (None, 2, false, &[1, 2]),
        (None, 9, false, &[1, 2, 3, 4, 5]),
        (None, -1, true, &[5, 4, 3, 2, 1]),
        (None, 2, true, &[5, 4]),
        (None, 0, true, &[]),
        (since(0), -1, false, &[1, 2, 3, 4, 5]),
        (since(2), -1, false, &[3, 4, 5]),
        (since(2), 2, false, &[3, 4]),
        (since(2), 0, false, &[]),
        (since(2), -1, true, &[5, 4, 3]),
        (since(2), 1, true, &[5]),
        (since(5), -1, false, &[]),
    ];
    for node in &nodes {
        for (since, limit, reverse, want) in &cases {
            let q = HistoryQuery {
                since: since.clone(),
                limit: *limit,
                reverse: *reverse,
                ..Default::default()
            };
            let h = node.engine.history("ch", q.clone()).await.unwrap();
            let want: Vec<Publication> = want.iter().map(|&o| at(o, &o.to_string())).collect();
            assert_eq!(h.publications, want, "{q:?}");
            assert_eq!(
                h.position,
                StreamPosition {
                    offset: 5,
                    epoch: epoch.clone()
                },
                "{q:?}"
            );
        }
        for limit in [-1, 0, 2] {
            let wrong = HistoryQuery {
                since: Some(StreamPosition {
                    offset: 1,
                    epoch: format!("not-{epoch}"),
                }),
                limit,
                reverse: false,
                ..Default::default()
            };
            assert_eq!(node.engine.history("ch", wrong).await, Err(EngineError::UnrecoverablePosition));
        }
    }
}

/// A stream keeps its newest `history_size` publications; the position is the top.
pub async fn history_size_keeps_the_newest<F: BrokerFactory>(f: &F) {
    let Some(nodes) = cluster_with_history(f, "history_size_keeps_the_newest").await else {
        return;
    };
    for i in 1..=7u64 {
        let node = &nodes[i as usize % nodes.len()];
        node.engine.publish("ch", publication(&i.to_string()), &kept(3)).await.unwrap();
    }
    for node in &nodes {
        let h = node.engine.history("ch", ALL).await.unwrap();
        assert_eq!(h.publications, [at(5, "5"), at(6, "6"), at(7, "7")]);
        assert_eq!(h.position.offset, 7);
    }
    // The size given with the latest publication applies.
    nodes[0].engine.publish("ch", publication("8"), &kept(1)).await.unwrap();
    for node in &nodes {
        assert_eq!(node.engine.history("ch", ALL).await.unwrap().publications, [at(8, "8")]);
    }
}

/// Once `history_ttl` has passed since the last publication the history is empty; the
/// position stays and the next publication continues it. (Memory expires publication by
/// publication, Redis the whole stream: see the module's notes.)
pub async fn history_ttl_empties_the_history_and_keeps_the_position<F: BrokerFactory>(f: &F) {
    let Some(nodes) = cluster_with_history(f, "history_ttl_empties_the_history_and_keeps_the_position").await else {
        return;
    };
    let opts = PublishOptions {
        history_size: 10,
        history_ttl: Duration::from_secs(1),
        ..Default::default()
    };
    let first = nodes[0].engine.publish("ch", publication("1"), &opts).await.unwrap();
    nodes[nodes.len() - 1].engine.publish("ch", publication("2"), &opts).await.unwrap();
    let h = nodes[0].engine.history("ch", ALL).await.unwrap();
    assert_eq!(h.publications, [at(1, "1"), at(2, "2")], "before history_ttl");
    let reader = &nodes[0].engine;
    let expired = eventually(f, "the history to expire", || async move {
        let h = reader.history("ch", ALL).await.unwrap();
        h.publications.is_empty().then_some(h)
    })
    .await;
    assert_eq!(
        expired.position,
        StreamPosition {
            offset: 2,
            epoch: first.epoch.clone()
        }
    );
    let next = nodes[nodes.len() - 1].engine.publish("ch", publication("3"), &opts).await.unwrap();
    assert_eq!(
        next,
        StreamPosition {
            offset: 3,
            epoch: first.epoch
        }
    );
    for node in &nodes {
        assert_eq!(node.engine.history("ch", ALL).await.unwrap().publications, [at(3, "3")]);
    }
}

/// `remove_history` empties the stream but keeps its position (offset and epoch), so that
/// positioned clients are not misled; the next publication continues it.
pub async fn remove_history_keeps_the_position<F: BrokerFactory>(f: &F) {
    let Some(nodes) = cluster_with_history(f, "remove_history_keeps_the_position").await else {
        return;
    };
    let mut epoch = String::new();
    for i in 1..=3 {
        epoch = nodes[0]
            .engine
            .publish("ch", publication(&i.to_string()), &kept(10))
            .await
            .unwrap()
            .epoch;
    }
    nodes[nodes.len() - 1].engine.remove_history("ch").await.unwrap();
    for node in &nodes {
        let h = node.engine.history("ch", ALL).await.unwrap();
        assert_eq!(h.publications, []);
        assert_eq!(
            h.position,
            StreamPosition {
                offset: 3,
                epoch: epoch.clone()
            }
        );
    }
    let next = nodes[0].engine.publish("ch", publication("4"), &kept(10)).await.unwrap();
    assert_eq!(next, StreamPosition { offset: 4, epoch });
    for node in &nodes {
        assert_eq!(node.engine.history("ch", ALL).await.unwrap().publications, [at(4, "4")]);
    }
    nodes[0].engine.remove_history("never-published").await.unwrap();
}

/// A publish with an idempotency key already used in the channel within its window is not
/// published again: the first result comes back, nothing is delivered or stored twice; the
/// same key in another channel, or without a key, publishes.
pub async fn idempotent_publish_is_published_once<F: BrokerFactory>(f: &F) {
    let Some(nodes) = cluster_with_history(f, "idempotent_publish_is_published_once").await else {
        return;
    };
    for n in &nodes {
        n.subscribe("ch").await;
    }
    let once = |key: &str| PublishOptions {
        idempotency_key: Some(key.to_string()),
        idempotent_result_ttl: Duration::from_secs(300),
        ..kept(10)
    };
    let first = nodes[0].engine.publish("ch", publication("a"), &once("k1")).await.unwrap();
    assert_eq!(first.offset, 1);
    // Again, from every node: the first result, not a second publication.
    for n in &nodes {
        let again = n.engine.publish("ch", publication("a"), &once("k1")).await.unwrap();
        assert_eq!(again, first);
    }
    let other_key = nodes[0].engine.publish("ch", publication("b"), &once("k2")).await.unwrap();
    assert_eq!(other_key.offset, 2);
    let other_channel = nodes[0].engine.publish("other", publication("c"), &once("k1")).await.unwrap();
    assert_eq!(other_channel.offset, 1);
    let no_key = nodes[0].engine.publish("ch", publication("d"), &kept(10)).await.unwrap();
    assert_eq!(no_key.offset, 3);
    for n in &nodes {
        let got = wait_publications(f, n, "ch", 3).await;
        assert_eq!(got, [at(1, "a"), at(2, "b"), at(3, "d")]);
    }
    let h = nodes[0].engine.history("ch", ALL).await.unwrap();
    assert_eq!(h.publications, [at(1, "a"), at(2, "b"), at(3, "d")]);
}
