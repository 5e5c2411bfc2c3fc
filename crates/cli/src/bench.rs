//! `wshub bench`: a load generator for loopback targets, bounded in count and time.
//!
//! Dialects: `wshub` (the Centrifugo JSON protocol: connect, subscribe, publications from
//! the HTTP API), `pusher` (Pusher Channels protocol 7: subscribe after
//! `pusher:connection_established`, events through Pusher's signed HTTP API, so that wshub's
//! Pusher side and another Pusher server are driven alike) and `raw` (the server broadcasts
//! every text message it receives to every client, as the seed's gorilla hub does), so that
//! wshub and the peer are driven by the same generator. Each publication carries its sequence number and send time, so latency
//! (HdrHistogram) and lost, duplicated or reordered deliveries are measured at the
//! subscribers.

mod client;
mod endpoint;
mod fanout;
mod http;
mod map;
mod process;
mod proto;
mod publish;
mod scenarios;
mod server;
mod shared_poll;

use clap::{Subcommand, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Dialect {
    /// Centrifugo JSON protocol (connect + subscribe; publish through the HTTP API).
    Wshub,
    /// Broadcast-every-text-message (the gorilla hub peer).
    Raw,
    /// Pusher Channels protocol 7 (`ws://…/app/KEY?protocol=7`; events through
    /// `POST /apps/ID/events`, signed with the app's key and secret).
    Pusher,
}

#[derive(clap::Args, Clone)]
pub struct Target {
    /// ws://127.0.0.1:PORT/PATH, or http://127.0.0.1:PORT/connection/http_stream or /connection/sse (loopback only)
    #[arg(long)]
    url: String,
    #[arg(long, value_enum, default_value = "wshub")]
    dialect: Dialect,
    /// Channel to subscribe to (wshub dialect).
    #[arg(long, default_value = "bench")]
    channel: String,
    /// Connection token (wshub dialect); empty: anonymous.
    #[arg(long, default_value = "")]
    token: String,
    /// The Pusher app's id, key and secret (pusher dialect): `ID:KEY:SECRET`.
    #[arg(long, default_value = "bench:bench-key:bench-secret")]
    pusher_app: String,
    /// Server process to read RSS and fd count from (/proc/PID).
    #[arg(long)]
    pid: Option<u32>,
    /// Give up after this many seconds in all.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Open N connections (and connect + subscribe), hold them answering pings, report the
    /// server's memory and its CPU per connection over the hold (hold longer than
    /// `client.ping_interval`, 25 s by default, for the CPU figure to include pings).
    Idle {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Seconds to hold after the last connection opened.
        #[arg(long, default_value_t = 2)]
        hold: u64,
    },
    /// N subscribers, publications at R per second for S seconds: latency and delivery.
    Fanout {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 100)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Publication size in bytes.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// http://127.0.0.1:PORT of the API (wshub and pusher dialects).
        #[arg(long, default_value = "")]
        api: String,
        #[arg(long, default_value = "")]
        api_key: String,
        /// Extra subscribers that never read (slow consumers): the others' latency and
        /// the server's peak RSS show what they cost.
        #[arg(long, default_value_t = 0)]
        stalled: usize,
    },
    /// API publish throughput and latency: N publishers, each on its own kept-alive
    /// connection waiting for each answer, over `channels` channels named `{channel}{i}`
    /// (history or not is the server's configuration of their namespace).
    Publish(publish::PublishRun),
    /// Shared poll (issue 29): starts a server and a backend of its own, N clients track K
    /// keys each of U; the backend's requests and keys per second, the server's memory per
    /// tracked key per connection, and the backend-to-client latency of updates.
    SharedPoll(shared_poll::SharedPollRun),
    /// Map subscriptions (issue 28): starts a server (memory or `--redis` map broker);
    /// memory per key, state loading in pages, publish-to-delivery latency and write
    /// throughput on ephemeral and persistent maps.
    Map(map::MapRun),
    /// Connections per second (upgrade, and connect + subscribe for wshub) for S seconds.
    Handshake {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 5)]
        duration: u64,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// A trivial connect-proxy backend on 127.0.0.1:PORT for `duration` seconds: every POST
    /// is answered `{"result":{"user":"bench"}}` on a kept-alive connection (the figure
    /// measured is the node's proxy overhead, not a backend's).
    ProxyBackend {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 60)]
        duration: u64,
    },
    /// Connect/disconnect cycles; RSS and fds before and after.
    Churn {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10_000)]
        cycles: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Cycles run before the baseline is read: a fresh server's first connections grow
        /// its runtime and allocator pools once (measured: +2.4 MB over the first 10,000,
        /// a few percent more until about 50,000, then flat), which is not what churn is
        /// about.
        #[arg(long, default_value_t = 0)]
        warmup: usize,
    },
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    match cmd {
        BenchCommand::Idle { target, conns, hold } => scenarios::idle(target, conns, hold).await,
        BenchCommand::Fanout {
            target,
            subscribers,
            rate,
            duration,
            size,
            api,
            api_key,
            stalled,
        } => fanout::fanout(target, subscribers, rate, duration, size, api, api_key, stalled).await,
        BenchCommand::Publish(run) => publish::publish(run).await,
        BenchCommand::SharedPoll(run) => shared_poll::shared_poll(run).await,
        BenchCommand::Map(run) => map::map(run).await,
        BenchCommand::Handshake {
            target,
            duration,
            concurrency,
        } => scenarios::handshake(target, duration, concurrency).await,
        BenchCommand::ProxyBackend { port, duration } => scenarios::proxy_backend(port, duration).await,
        BenchCommand::Churn {
            target,
            cycles,
            concurrency,
            warmup,
        } => scenarios::churn(target, cycles, concurrency, warmup).await,
    }
}
