//! The `wshub` binary: turns arguments into a running server, a configuration, a token or a
//! load run, and errors into messages for people.

mod bench;
mod commands;
mod flags;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use wshub_server::config::{load, Loaded};
use wshub_server::lifecycle::Drain;
use wshub_server::Shared;
use wshub_websocket::handshake::{HandshakeConfig, OriginPolicy};
use wshub_websocket::DeflateConfig;

/// Run as Centrifugo runs: `wshub`, `wshub -c config.json` (or `config.json` from the
/// working directory), Centrifugo's flags (`-p`, `--admin.enabled`...); `serve` is the same.
#[derive(Parser)]
#[command(
    name = "wshub",
    version,
    about = "A real-time messaging server (Centrifugo protocol compatible)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// Configuration file (.json, .toml, .yaml); default: config.json in the working
    /// directory when present.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// http_server.port
    #[arg(long)]
    port: Option<u16>,
    /// http_server.address
    #[arg(long)]
    address: Option<String>,
    /// Set any key: --set client.channel_limit=10 (JSON values, or plain strings).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (what `wshub` alone does).
    Serve(ServeArgs),
    /// Print the version.
    Version,
    /// Write a new configuration file with a random API key and HMAC secret (JSON, YAML or
    /// TOML by extension; `-` prints it).
    Genconfig {
        #[arg(long, short, visible_short_alias = 'o', visible_alias = "output", default_value = "config.json")]
        config: PathBuf,
    },
    /// Check a configuration file and say what is wrong with it.
    Checkconfig {
        #[arg(long, short, default_value = "config.json")]
        config: PathBuf,
        /// Unknown keys are warnings only (exit status 0); without it they fail the check.
        #[arg(long)]
        allow_unknown: bool,
    },
    /// Write every key at its default (of --base when given).
    Defaultconfig {
        #[arg(long, short, default_value = "config.json")]
        config: PathBuf,
        #[arg(long, short)]
        base: Option<PathBuf>,
        /// Print instead of writing.
        #[arg(long, short)]
        dry_run: bool,
    },
    /// Print every key as a CENTRIFUGO_ variable with its default (of --base when given).
    Defaultenv {
        #[arg(long, short)]
        base: Option<PathBuf>,
    },
    /// Make an HS256 connection token signed with client.token.hmac_secret_key.
    Gentoken {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// User ID (empty: anonymous).
        #[arg(long, short, default_value = "")]
        user: String,
        /// Lifetime in seconds; -1: no expiration.
        #[arg(long, short, default_value_t = commands::DEFAULT_TOKEN_TTL, allow_negative_numbers = true)]
        ttl: i64,
        /// Print the token only.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Make an HS256 subscription token (client.subscription_token's key when enabled).
    Gensubtoken {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long, short, default_value = "")]
        user: String,
        /// Channel.
        #[arg(long = "channel", short = 's', default_value = "")]
        channel: String,
        #[arg(long, short, default_value_t = commands::DEFAULT_TOKEN_TTL, allow_negative_numbers = true)]
        ttl: i64,
        #[arg(long, short)]
        quiet: bool,
    },
    /// Check a connection token with the configuration's keys and rules.
    Checktoken {
        #[arg(long, short)]
        config: Option<PathBuf>,
        token: String,
    },
    /// Check a subscription token with the configuration's keys and rules.
    Checksubtoken {
        #[arg(long, short)]
        config: Option<PathBuf>,
        token: String,
    },
    /// The echo server of conformance runs: every path upgrades, compression on.
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

/// `log.level` (Centrifugo's names, `none` included) and `log.file` (appended to instead of
/// standard output, as Centrifugo).
fn init_logs(level: &str, json_format: bool, file: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let level = wshub_server::config::log_filter(level).unwrap_or(level);
    let filter = tracing_subscriber::EnvFilter::try_from_env("WSHUB_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    if !file.is_empty() {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .with_context(|| format!("log.file: cannot open {file}"))?;
        let b = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f));
        match json_format {
            true => b.json().init(),
            false => b.init(),
        }
        return Ok(());
    }
    // Colours only for a person at a terminal: escape codes in a file or a journal are noise.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    if json_format {
        b.json().init();
    } else {
        b.init();
    }
    Ok(())
}

/// Binds `addr` (raising the descriptor limit first).
async fn bind(addr: SocketAddr, connection_limit: usize) -> anyhow::Result<tokio::net::TcpListener> {
    match wshub_server::limits::raise_nofile() {
        Ok(n) => tracing::debug!(nofile = n, "file descriptor limit raised to the hard limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
    let listener = wshub_server::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let limit = connection_limit as u64;
    if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        if limit > soft {
            tracing::warn!(limit, nofile = soft, "client.connection_limit exceeds the file descriptor limit");
        }
    }
    Ok(listener)
}

fn env_vars() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("WSHUB_") || k.starts_with("CENTRIFUGO_"))
        .collect()
}

fn load_config(file: Option<&PathBuf>, overrides: &[(String, Value)]) -> anyhow::Result<Loaded> {
    Ok(load(file.map(|p| p.as_path()), env_vars(), overrides)?)
}

fn parse_set(items: &[String]) -> anyhow::Result<Vec<(String, Value)>> {
    items
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
            Ok((
                k.trim().to_string(),
                serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string())),
            ))
        })
        .collect()
}

fn serve(args: ServeArgs, flag_overrides: Vec<(String, Value)>) -> anyhow::Result<()> {
    let ServeArgs {
        config,
        port,
        address,
        set,
    } = args;
    let config = commands::config_path(config);
    let mut overrides = flag_overrides;
    overrides.extend(parse_set(&set)?);
    if let Some(p) = port {
        overrides.push(("http_server.port".into(), json!(p)));
    }
    if let Some(a) = address {
        overrides.push(("http_server.address".into(), json!(a)));
    }
    let loaded = load_config(config.as_ref(), &overrides)?;
    let c = &loaded.config;
    init_logs(&c.log.level, c.log.format == "json", &c.log.file)?;
    for k in &loaded.unknown_keys {
        tracing::warn!(key = %k, "unknown configuration key ignored");
    }
    for m in &loaded.not_implemented {
        tracing::warn!("{m}");
    }
    let addr = wshub_server::config::listen_addr(c)?;
    let (node, server) = wshub_server::app::build(c)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    {
        let _in_runtime = rt.enter();
        wshub_server::telemetry::init(&c.opentelemetry, node.uid()).map_err(anyhow::Error::msg)?;
    }
    if let Err(e) = rt.block_on(node.broker.check()) {
        match c.broker_backend().0 {
            wshub_server::config::Backend::Redis(r, key) => {
                bail!(
                    "{key}: {e} ({key}.address = {:?})",
                    wshub_server::config::masked_addresses(&r.connection.address)
                )
            }
            wshub_server::config::Backend::Memory => bail!("engine.memory: {e}"),
            wshub_server::config::Backend::Nats(_) => bail!("broker.nats: {e}"),
        }
    }
    let listener = rt.block_on(bind(addr, c.client.connection_limit))?;
    let internal = rt
        .block_on(wshub_server::bind_internal(&server))
        .context("cannot listen on http_server.internal_port")?;
    if let Some(g) = &server.grpc_api {
        g.port
            .bind()
            .with_context(|| format!("cannot listen on grpc_api.port ({})", g.port.addr))?;
    }
    if let Some(u) = &server.uni_grpc {
        u.port
            .bind()
            .with_context(|| format!("cannot listen on uni_grpc.port ({})", u.port.addr))?;
    }
    let _pid_file = wshub_server::lifecycle::PidFile::write(&c.pid_file).with_context(|| format!("pid_file: {}", c.pid_file))?;
    let reload = wshub_server::reload::Reloader::new(config.clone(), overrides, c.clone());
    // Only now, with the port bound: a second instance on the same port fails above instead
    // of announcing an address it does not hold.
    let signals = {
        let _runtime = rt.enter();
        wshub_server::lifecycle::Signals::listen()?
    };
    banner(c, listener.local_addr()?, config.is_none());
    let drain = Drain {
        node,
        timeout: c.shutdown.timeout,
        window: c.shutdown.drain_window,
    };
    // Shared::new inside the runtime, where the server's tasks run.
    let stopped = rt.block_on(async {
        wshub_server::lifecycle::run_until_signal(listener, internal, Shared::new(server), Some(drain), Some(reload), signals).await
    });
    exit_if_interrupted(stopped, _pid_file);
    // The spans not exported yet go (the exports run on the runtime, still there).
    wshub_server::telemetry::shutdown();
    // Tasks still running (connections past the deadline) are not waited for.
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// A second shutdown signal ends the process at once, status 1, without waiting for the
/// drain; the pid file is removed first (exit runs no destructor).
fn exit_if_interrupted(stopped: wshub_server::lifecycle::Stopped, pid_file: Option<wshub_server::lifecycle::PidFile>) {
    if stopped == wshub_server::lifecycle::Stopped::Interrupted {
        drop(pid_file);
        std::process::exit(1);
    }
}

/// What a person starting the server needs to know: where clients and the API are, which
/// origins may connect, what to do next. One JSON line on stderr when `log.format = "json"`.
fn banner(c: &wshub_server::config::Config, local: SocketAddr, no_file: bool) {
    let tls = c.http_server.tls.enabled;
    let host = display_host(local);
    let ws = format!(
        "{}://{host}{}",
        if tls { "wss" } else { "ws" },
        wshub_server::endpoints::websocket_path(c)
    );
    let http = format!("{}://{host}", if tls { "https" } else { "http" });
    if c.log.format == "json" {
        let line = json!({
            "level": "INFO", "message": "wshub listening", "version": env!("CARGO_PKG_VERSION"), "address": local.to_string(),
            "engine": c.engine.r#type, "clients": ws, "api": wshub_server::endpoints::api_url(c, &http),
            "admin": c.admin.enabled.then(|| wshub_server::endpoints::admin_url(c, &http)), "allowed_origins": c.client.allowed_origins,
        });
        eprintln!("{line}");
        return;
    }
    let origins = if c.client.allowed_origins.is_empty() {
        "same host and port only (client.allowed_origins is empty)".to_string()
    } else {
        c.client.allowed_origins.join(", ")
    };
    let broker = match c.broker.enabled {
        true => format!(", broker: {}", c.broker.r#type),
        false => String::new(),
    };
    println!(
        "wshub {} listening on {local} (engine: {}{broker})",
        env!("CARGO_PKG_VERSION"),
        c.engine.r#type
    );
    println!("  clients: {ws}");
    println!("  API:     POST {}", wshub_server::endpoints::api_url(c, &http));
    if c.admin.enabled {
        println!("  admin:   {}", wshub_server::endpoints::admin_url(c, &http));
    }
    println!("  browser pages may connect from: {origins}");
    if no_file {
        println!("  No configuration file: the API refuses every call and clients need a token.");
        println!("  Next: `wshub genconfig -o config.json`, then `wshub serve -c config.json`,");
        println!("        and `wshub gentoken -c config.json -u USER` for a client token.");
    }
}

/// The address a person on this machine would type for `local`.
fn display_host(local: SocketAddr) -> String {
    match local.ip() {
        ip if ip.is_unspecified() => format!("localhost:{}", local.port()),
        _ => local.to_string(),
    }
}

/// Errors are one line for a person ("error: ...: cause"), never a backtrace, whatever
/// `RUST_BACKTRACE` says; the exit status is 1.
fn main() -> std::process::ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let cmd = Cli::command()
        .args(flags::args())
        .mut_subcommand("serve", |s| s.args(flags::args()));
    let matches = cmd.get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let flag_overrides = match matches.subcommand() {
        Some(("serve", m)) => flags::overrides(m),
        _ => flags::overrides(&matches),
    };
    match run(cli, flag_overrides) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The configuration a helper command reads (`-c`, else `config.json` when present).
fn helper_config(config: Option<PathBuf>) -> anyhow::Result<wshub_server::config::Config> {
    Ok(load_config(commands::config_path(config).as_ref(), &[])?.config)
}

fn run(cli: Cli, flag_overrides: Vec<(String, Value)>) -> anyhow::Result<()> {
    let Some(command) = cli.command else {
        return serve(cli.serve, flag_overrides);
    };
    match command {
        Command::Serve(args) => serve(args, flag_overrides),
        Command::Version => {
            commands::version();
            Ok(())
        }
        Command::Genconfig { config } => commands::genconfig(&config),
        Command::Defaultconfig { config, base, dry_run } => commands::defaultconfig(&load_config(base.as_ref(), &[])?, &config, dry_run),
        Command::Defaultenv { base } => commands::defaultenv(&load_config(base.as_ref(), &[])?.config),
        Command::Gentoken { config, user, ttl, quiet } => commands::gentoken(&helper_config(config)?, &user, ttl, quiet),
        Command::Gensubtoken {
            config,
            user,
            channel,
            ttl,
            quiet,
        } => commands::gensubtoken(&helper_config(config)?, &user, &channel, ttl, quiet),
        Command::Checktoken { config, token } => commands::checktoken(&helper_config(config)?, &token),
        Command::Checksubtoken { config, token } => commands::checksubtoken(&helper_config(config)?, &token),
        Command::Checkconfig { config, allow_unknown } => {
            let loaded = load_config(Some(&config), &[])?;
            for k in &loaded.unknown_keys {
                eprintln!("warning: unknown key {k} (misspelt? it is ignored)");
            }
            for m in &loaded.not_implemented {
                eprintln!("warning: {m}");
            }
            if !loaded.unknown_keys.is_empty() && !allow_unknown {
                bail!(
                    "{}: {} unknown key(s); fix them, or pass --allow-unknown to accept them",
                    config.display(),
                    loaded.unknown_keys.len()
                );
            }
            println!("{}: OK", config.display());
            Ok(())
        }
        Command::Echo {
            address,
            port,
            max_message_size,
            no_compression,
        } => {
            init_logs("info", false, "")?;
            let addr: SocketAddr = format!("{address}:{port}").parse().context("invalid address")?;
            let handshake = HandshakeConfig {
                protocols: vec![],
                deflate: (!no_compression).then(DeflateConfig::default),
                origins: OriginPolicy::Any,
            };
            let config = wshub_server::echo::config(
                wshub_server::endpoints::Endpoints::echo(),
                handshake,
                max_message_size,
                Duration::from_secs(10),
            );
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(async {
                let signals = wshub_server::lifecycle::Signals::listen()?;
                let listener = bind(addr, 0).await?;
                tracing::info!(local = %listener.local_addr()?, "listening");
                anyhow::Ok(wshub_server::lifecycle::run_until_signal(listener, None, Shared::new(config), None, None, signals).await)
            })
            .map(|stopped| exit_if_interrupted(stopped, None))?;
            Ok(())
        }
        Command::Bench(cmd) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(bench::run(cmd))
        }
    }
}
