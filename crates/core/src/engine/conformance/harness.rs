//! What every case stands on: a recording node, a fresh cluster, bounded waits, and the
//! publications and options the cases share.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Event {
    Publication(Box<Publication>),
    Join(ClientInfo),
    Leave(ClientInfo),
    Reset,
}

/// A node's side, as the hub would be: what the engine delivered, and which channels the
/// node has subscribers of.
#[derive(Default)]
pub(super) struct Recorder {
    pub(super) events: Mutex<Vec<(String, Event)>>,
    pub(super) control: Mutex<Vec<Vec<u8>>>,
    pub(super) subscribed: Mutex<HashSet<String>>,
}

impl Recorder {
    pub(super) fn push(&self, channel: &str, e: Event) {
        self.events.lock().unwrap().push((channel.to_string(), e));
    }
}

impl BrokerHandler for Recorder {
    fn handle_publication(&self, channel: &str, publication: &Publication) {
        self.push(channel, Event::Publication(Box::new(publication.clone())));
    }
    fn handle_join(&self, channel: &str, info: &ClientInfo) {
        self.push(channel, Event::Join(info.clone()));
    }
    fn handle_leave(&self, channel: &str, info: &ClientInfo) {
        self.push(channel, Event::Leave(info.clone()));
    }
    fn handle_reset(&self, channel: &str) {
        self.push(channel, Event::Reset);
    }
    fn has_subscribers(&self, channel: &str) -> bool {
        self.subscribed.lock().unwrap().contains(channel)
    }
}

impl ControlHandler for Recorder {
    fn handle_control(&self, data: &[u8]) {
        self.control.lock().unwrap().push(data.to_vec());
    }
}

pub(super) struct Node<E> {
    pub(super) engine: E,
    pub(super) rec: Arc<Recorder>,
}

impl<E: Broker + NodeControl> Node<E> {
    /// As the hub does: the node has a subscriber, then tells the engine.
    pub(super) async fn subscribe(&self, channel: &str) {
        self.rec.subscribed.lock().unwrap().insert(channel.to_string());
        self.engine.subscribe(channel).await.unwrap();
    }

    /// As the hub does: the last subscriber is gone, then the engine is told.
    pub(super) async fn unsubscribe(&self, channel: &str) {
        self.rec.subscribed.lock().unwrap().remove(channel);
        self.engine.unsubscribe(channel).await.unwrap();
    }

    pub(super) fn events(&self, channel: &str) -> Vec<Event> {
        let events = self.rec.events.lock().unwrap();
        events.iter().filter(|(c, _)| c == channel).map(|(_, e)| e.clone()).collect()
    }

    pub(super) fn publications(&self, channel: &str) -> Vec<Publication> {
        self.events(channel)
            .into_iter()
            .filter_map(|e| match e {
                Event::Publication(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    pub(super) fn control(&self) -> Vec<Vec<u8>> {
        self.rec.control.lock().unwrap().clone()
    }

    /// [`at`] as this broker delivers it: at offset 0 when it keeps no history.
    pub(super) fn at(&self, offset: u64, data: &str) -> Publication {
        at(if self.engine.keeps_history() { offset } else { 0 }, data)
    }
}

/// A fresh cluster of every node the factory can make, handlers set.
pub(super) async fn cluster<F: BrokerFactory>(f: &F) -> Vec<Node<F::Broker>> {
    let n = if f.is_single_node() { 1 } else { 2 };
    let engines = f.brokers(n).await;
    assert_eq!(engines.len(), n, "the factory made another number of nodes");
    engines
        .into_iter()
        .map(|engine| {
            let rec = Arc::new(Recorder::default());
            engine.set_handler(rec.clone());
            engine.set_control_handler(rec.clone());
            Node { engine, rec }
        })
        .collect()
}

/// Says on stderr which part of a case did not run, and why.
pub(super) fn skipped(case: &str, part: &str, why: &str) {
    eprintln!("engine conformance: {case}: {part} skipped: {why}");
}

pub(super) const ONE_NODE: &str = "the engine is a cluster of one";
pub(super) const NO_HISTORY: &str = "the broker keeps no history";

/// A fresh [`cluster`] for a case that needs history; none (said on stderr) when the broker
/// keeps none.
pub(super) async fn cluster_with_history<F: BrokerFactory>(f: &F, case: &str) -> Option<Vec<Node<F::Broker>>> {
    let nodes = cluster(f).await;
    if nodes[0].engine.keeps_history() {
        Some(nodes)
    } else {
        skipped(case, "all", NO_HISTORY);
        None
    }
}
pub(super) const HANDS_OVER_ALL: &str = "the engine hands every channel to its node";

/// Polls `probe` until it answers, at most [`LIMIT`].
pub(super) async fn eventually<F, T, Fut>(f: &F, what: &str, mut probe: impl FnMut() -> Fut) -> T
where
    F: BrokerFactory,
    Fut: Future<Output = Option<T>>,
{
    let mut waited = Duration::ZERO;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(waited < LIMIT, "waited {LIMIT:?} for {what}");
        f.sleep(STEP).await;
        waited += STEP;
    }
}

pub(super) async fn wait_until<F: BrokerFactory>(f: &F, what: &str, mut done: impl FnMut() -> bool) {
    eventually(f, what, || std::future::ready(done().then_some(()))).await
}

/// Waits until `node` has `n` publications of `channel`; returns them.
pub(super) async fn wait_publications<F: BrokerFactory>(f: &F, node: &Node<F::Broker>, channel: &str, n: usize) -> Vec<Publication> {
    let what = format!("{n} publications of {channel}");
    wait_until(f, &what, || node.publications(channel).len() >= n).await;
    node.publications(channel)
}

pub(super) fn client(client: &str, user: &str) -> ClientInfo {
    ClientInfo {
        user: user.into(),
        client: client.into(),
        conn_info: Bytes::from(format!("{{\"conn\":\"{client}\"}}")),
        chan_info: Bytes::from_static(b"{\"role\":\"reader\"}"),
    }
}

/// A publication with every field an engine must carry set.
pub(super) fn publication(data: &str) -> Publication {
    Publication {
        data: Bytes::copy_from_slice(data.as_bytes()),
        info: Some(client("publisher", "u0")),
        tags: HashMap::from([("n".to_string(), data.to_string())]),
        time: 1_700_000_000_123,
        ..Default::default()
    }
}

/// `publication(data)` as delivered and kept: at `offset`.
pub(super) fn at(offset: u64, data: &str) -> Publication {
    Publication {
        offset,
        ..publication(data)
    }
}

pub(super) fn kept(history_size: usize) -> PublishOptions {
    PublishOptions {
        history_size,
        history_ttl: Duration::from_secs(300),
        ..Default::default()
    }
}

pub(super) const ALL: HistoryQuery = HistoryQuery::ALL;
