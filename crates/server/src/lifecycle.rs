//! The server's life (DESIGN.md, "Shutdown and drain"): serve until a shutdown signal, then
//! drain while the listener keeps answering HTTP, and stop listening only when the drain is
//! over.
//!
//! During the drain `/ready` is 503 and new WebSocket upgrades are refused with 503 (so that
//! load balancers and Consul read it and send clients elsewhere), `/health` stays 200 and the
//! API keeps answering; connected clients are closed with 3001 in randomised batches
//! ([`crate::drain`]). The `wshub` binary only parses arguments and calls
//! [`run_until_signal`]; tests call [`run`] with a shutdown future of their own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;
use wshub_core::node::Node;

use crate::state::Shared;

/// What a node's drain needs (`shutdown.*`).
#[derive(Clone)]
pub struct Drain {
    pub node: Arc<Node>,
    /// `shutdown.timeout`: the drain ends before it, done or not.
    pub timeout: Duration,
    /// `shutdown.drain_window`: closes are spread over it; zero: half of `timeout`.
    pub window: Duration,
}

/// Leave this share of `shutdown.timeout` for the last closes and the exit itself.
const DEADLINE_SHARE: f64 = 0.9;

/// How often the engine is asked whether it answers (for `/ready`).
const ENGINE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Serves `listener` (and `internal`, the internal port's listener of
/// [`crate::listener::bind_internal`]) until `shutdown` completes, then drains (when a node
/// runs) with the listeners still answering, and returns once they have stopped listening.
/// Returns the WebSocket connections still open at the end.
pub async fn run(
    listener: TcpListener,
    internal: Option<TcpListener>,
    shared: Arc<Shared>,
    drain: Option<Drain>,
    shutdown: impl Future<Output = ()>,
) -> usize {
    if let Some(api) = &shared.config.api {
        // Once: `Shared::new` starts them too when called inside a runtime.
        api.start_tasks();
    }
    let watch = drain.as_ref().map(|d| tokio::spawn(watch_engine(d.node.clone(), shared.clone())));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    log_listener(&listener, &shared.config.endpoints);
    let accept = tokio::spawn(crate::listener::serve(listener, shared.clone(), async {
        let _ = stopped.await;
    }));
    let (stop_internal, stopped_internal) = tokio::sync::oneshot::channel::<()>();
    let internal_accept = match (internal, &shared.config.internal) {
        (Some(l), Some(i)) => {
            log_listener(&l, &i.endpoints);
            let (endpoints, tls) = (Arc::new(i.endpoints.clone()), i.tls.clone());
            Some(tokio::spawn(crate::listener::serve_endpoints(
                l,
                shared.clone(),
                endpoints,
                tls,
                false,
                async {
                    let _ = stopped_internal.await;
                },
            )))
        }
        (Some(_), None) => {
            tracing::warn!("an internal listener without internal endpoints: not served");
            None
        }
        _ => None,
    };
    let (stop_grpc, stopped_grpc) = tokio::sync::watch::channel(false);
    let grpc_stopped = || {
        let mut rx = stopped_grpc.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut grpc_accepts = Vec::new();
    if let Some(g) = &shared.config.grpc_api {
        match g.port.listener().await {
            Ok(l) => {
                tracing::info!("serving GRPC API service on {}", g.port.addr);
                let serve = crate::grpc::api::serve(l, shared.clone(), g.clone(), grpc_stopped());
                grpc_accepts.push(tokio::spawn(serve));
            }
            Err(e) => tracing::error!(error = %e, addr = %g.port.addr, "grpc_api: cannot listen"),
        }
    }
    if let Some(u) = &shared.config.uni_grpc {
        match u.port.listener().await {
            Ok(l) => {
                tracing::info!("serving unidirectional GRPC on {}", u.port.addr);
                let serve = crate::grpc::uni::serve(l, shared.clone(), u.clone(), grpc_stopped());
                grpc_accepts.push(tokio::spawn(serve));
            }
            Err(e) => tracing::error!(error = %e, addr = %u.port.addr, "uni_grpc: cannot listen"),
        }
    }
    shutdown.await;
    let started = Instant::now();
    tracing::info!("shutdown: not ready, draining");
    shared.start_drain().await;
    let left = match drain {
        Some(d) => {
            let deadline = started + d.timeout.mul_f64(DEADLINE_SHARE);
            let window = if d.window.is_zero() { d.timeout / 2 } else { d.window };
            crate::drain::drain(&shared, &d.node, window, deadline).await
        }
        None => shared.connections(),
    };
    if let Some(w) = watch {
        w.abort();
    }
    if let Some(api) = &shared.config.api {
        // The other nodes drop this one now rather than after three silent periods.
        api.cluster.leave().await;
    }
    let _ = stop.send(());
    let _ = stop_internal.send(());
    let _ = stop_grpc.send(true);
    for g in grpc_accepts {
        let _ = g.await;
    }
    if let Err(e) = accept.await {
        tracing::error!(error = %e, "accept loop failed");
    }
    if let Some(Err(e)) = match internal_accept {
        Some(a) => Some(a.await),
        None => None,
    } {
        tracing::error!(error = %e, "internal accept loop failed");
    }
    if left > 0 {
        tracing::warn!(left, "shutdown timeout: stopping with connections still open");
    }
    tracing::info!("stopped");
    left
}

/// Says which endpoints a listener serves, as Centrifugo's "serving … endpoints on …".
fn log_listener(listener: &TcpListener, endpoints: &crate::endpoints::Endpoints) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("serving {} endpoints on {addr}", endpoints.names());
    }
}

/// How [`run_until_signal`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Stopped {
    /// After the drain: the WebSocket connections still open at the end.
    Drained(usize),
    /// A second signal came during the drain: the caller exits at once (status 1). The
    /// library leaves the exit to the binary, which owns the process (and its pid file).
    Interrupted,
}

/// The signals a node answers (SIGINT, SIGTERM, SIGHUP), listened for from the moment this
/// is made: the binary makes it before it prints that it listens, so that a signal sent as
/// soon as the banner is out reaches the node instead of ending the process unannounced.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    /// Needs a Tokio runtime (entered or running).
    pub fn listen() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }
}

/// [`run`] until SIGTERM or SIGINT; a second signal abandons the drain
/// ([`Stopped::Interrupted`]). SIGHUP reloads what `reload` can (a node without one logs
/// that it cannot) and never ends the process.
pub async fn run_until_signal(
    listener: TcpListener,
    internal: Option<TcpListener>,
    shared: Arc<Shared>,
    drain: Option<Drain>,
    reload: Option<crate::reload::Reloader>,
    signals: Signals,
) -> Stopped {
    let Signals {
        mut interrupt,
        mut terminate,
        hangup,
    } = signals;
    let hangups = watch_hangups(shared.clone(), reload, hangup);
    // SIGINT and SIGTERM counted: the first starts the drain, the second ends it.
    let (count_tx, count_rx) = tokio::sync::watch::channel(0u32);
    let counter = tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = interrupt.recv() => {}
                Some(()) = terminate.recv() => {}
                else => break,
            }
            count_tx.send_modify(|n| *n += 1);
        }
    });
    let nth = |n: u32| {
        let mut rx = count_rx.clone();
        async move {
            if rx.wait_for(|c| *c >= n).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let shutdown = {
        let first = nth(1);
        async move {
            first.await;
            eprintln!("shutting down: draining connections (at most shutdown.timeout); press Ctrl-C again to exit at once");
        }
    };
    let stopped = tokio::select! {
        left = run(listener, internal, shared, drain, shutdown) => Stopped::Drained(left),
        () = nth(2) => {
            eprintln!("second signal: exiting now");
            Stopped::Interrupted
        }
    };
    hangups.abort();
    counter.abort();
    stopped
}

/// Handles SIGHUP from now on (its default action would end the process).
fn watch_hangups(shared: Arc<Shared>, reload: Option<crate::reload::Reloader>, mut hup: Signal) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match (&reload, &shared.config.api) {
                (Some(r), Some(api)) => r.reload_and_log(&api.node),
                _ => tracing::info!("SIGHUP: nothing to reload here; still running"),
            }
        }
    })
}

/// `pid_file`: the process id, written at start and removed at exit (on drop: the binary
/// drops it before the second signal's immediate exit too), as Centrifugo.
pub struct PidFile(());

static PID_FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

impl PidFile {
    /// Writes the PID to `path` (nothing for an empty path).
    pub fn write(path: &str) -> std::io::Result<Option<PidFile>> {
        if path.is_empty() {
            return Ok(None);
        }
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        // Mode 0600, as Centrifugo writes it.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        writeln!(f, "{}", std::process::id())?;
        let _ = PID_FILE.set(path.into());
        Ok(Some(PidFile(())))
    }

    fn remove_now() {
        if let Some(p) = PID_FILE.get() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        Self::remove_now()
    }
}

/// Keeps `/ready` in step with the engine: 503 while it does not answer (Redis down).
async fn watch_engine(node: Arc<Node>, shared: Arc<Shared>) {
    let mut ok = true;
    loop {
        tokio::time::sleep(ENGINE_CHECK_INTERVAL).await;
        // The map broker is a second Redis (or set of them) when `map_broker.type` is
        // `redis`: out of reach, map subscriptions and the map API fail as the engine's
        // channels would.
        let both = async {
            let (engine, maps) = tokio::join!(node.broker.check(), node.map_broker.check());
            engine.and(maps.map_err(|e| wshub_core::engine::EngineError::Internal(format!("map broker: {e}"))))
        };
        let checked = tokio::time::timeout(ENGINE_CHECK_INTERVAL, both).await;
        let now_ok = matches!(checked, Ok(Ok(())));
        if now_ok != ok {
            if now_ok {
                tracing::info!("engine answers again: ready");
            } else {
                // The engine's error names what is down (a Redis shard, its pub/sub).
                let why = match checked {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer in time".to_string(),
                };
                tracing::warn!(why, "engine does not answer: not ready");
            }
            ok = now_ok;
            shared.set_engine_ok(ok);
        }
    }
}
