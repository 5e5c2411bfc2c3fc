//! The `wshub` binary: turns arguments into a running server or a load run, and errors into
//! messages for people.

mod bench;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use wshub_server::echo::Echo;
use wshub_server::http::HandlerFactory;
use wshub_server::{ServerConfig, Shared};
use wshub_websocket::handshake::{HandshakeConfig, OriginPolicy};
use wshub_websocket::DeflateConfig;

#[derive(Parser)]
#[command(name = "wshub", version, about = "A real-time messaging server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (for now: WebSocket echo at /connection/websocket, /health, /ready).
    Serve {
        #[arg(long, default_value = "0.0.0.0", env = "WSHUB_HTTP_SERVER_ADDRESS")]
        address: String,
        #[arg(long, default_value_t = 8000, env = "WSHUB_HTTP_SERVER_PORT")]
        port: u16,
        /// Offer permessage-deflate.
        #[arg(long, env = "WSHUB_WEBSOCKET_COMPRESSION")]
        compression: bool,
    },
    /// Run the echo server used by conformance runs: every path upgrades, compression on.
    Echo {
        #[arg(long, default_value = "127.0.0.1")]
        address: String,
        #[arg(long, default_value_t = 9001)]
        port: u16,
        /// Largest message accepted (Autobahn's 9.* cases send up to 16 MiB).
        #[arg(long, default_value_t = 64 << 20)]
        max_message_size: usize,
        #[arg(long)]
        no_compression: bool,
    },
    /// Load generator (loopback only).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WSHUB_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

async fn run_server(addr: SocketAddr, config: ServerConfig, banner: bool) -> anyhow::Result<()> {
    match wshub_server::limits::raise_nofile() {
        Ok(n) => tracing::info!(nofile = n, "file descriptor limit raised to the hard limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
    let listener = wshub_server::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "listening");
    if banner {
        println!("wshub listening on http://{local}");
        println!("  WebSocket: ws://{local}/connection/websocket   health: /health   readiness: /ready");
    }
    let shared = Shared::new(config);
    wshub_server::serve(listener, shared, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

fn echo_factory() -> HandlerFactory {
    Arc::new(|_| Box::new(Echo))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve {
            address,
            port,
            compression,
        } => {
            init_logs();
            let addr: SocketAddr = format!("{address}:{port}")
                .parse()
                .with_context(|| format!("http_server.address: invalid address {address:?}"))?;
            let config = ServerConfig {
                ws_paths: Some(vec!["/connection/websocket".into()]),
                handshake: HandshakeConfig {
                    protocols: vec![],
                    deflate: compression.then(DeflateConfig::default),
                    origins: OriginPolicy::SameHost,
                },
                max_message_size: 65536,
                handshake_timeout: Duration::from_secs(10),
                handler: echo_factory(),
            };
            rt.block_on(run_server(addr, config, true))
        }
        Command::Echo {
            address,
            port,
            max_message_size,
            no_compression,
        } => {
            init_logs();
            let addr: SocketAddr = format!("{address}:{port}").parse().context("invalid address")?;
            let config = ServerConfig {
                ws_paths: None,
                handshake: HandshakeConfig {
                    protocols: vec![],
                    deflate: (!no_compression).then(DeflateConfig::default),
                    origins: OriginPolicy::Any,
                },
                max_message_size,
                handshake_timeout: Duration::from_secs(10),
                handler: echo_factory(),
            };
            rt.block_on(run_server(addr, config, false))
        }
        Command::Bench(cmd) => rt.block_on(bench::run(cmd)),
    }
}
