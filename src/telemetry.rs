//! Logging, Prometheus metrics and the probe endpoints that every component
//! (controller, chat adapter, GitHub adapter) serves: `GET /healthz`,
//! `GET /readyz` and `GET /metrics`.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global tracing subscriber. The filter comes from `RUST_LOG`
/// (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .init(),
    }
}

/// Liveness and readiness of one component, shared with its probe handlers.
///
/// Readiness is the `set_ready` flag and, besides, no watch failed in the
/// last `WATCH_READY_WINDOW`: a process whose watches cannot reach the API
/// server is taken out of service. Liveness (`/healthz`) fails only when
/// watches have kept failing for `WATCH_LIVE_WINDOW` without a pause, so a
/// process stuck for good is restarted, while a short API server outage
/// does not restart everything that watches it.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
    watches: Arc<Mutex<WatchFailures>>,
}

/// Not ready while a watch failed less than this long ago.
pub const WATCH_READY_WINDOW: Duration = Duration::from_secs(10);
/// Not live once watches have failed without a quiet `WATCH_READY_WINDOW`
/// for this long.
pub const WATCH_LIVE_WINDOW: Duration = Duration::from_secs(300);

#[derive(Default)]
struct WatchFailures {
    /// First failure of the current run of failures.
    since: Option<Instant>,
    last: Option<Instant>,
    count: u64,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Records that a watch (or other input stream) failed just now; true
    /// when it is the first failure after a quiet `WATCH_READY_WINDOW` (the
    /// one worth a warning in the log).
    pub fn watch_failed(&self) -> bool {
        let now = Instant::now();
        let mut w = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let quiet_since_last = w
            .last
            .is_none_or(|last| now.duration_since(last) >= WATCH_READY_WINDOW);
        if quiet_since_last {
            w.since = Some(now);
        }
        w.last = Some(now);
        w.count += 1;
        quiet_since_last
    }

    /// Watch failures recorded since start.
    pub fn watch_failures(&self) -> u64 {
        self.watches.lock().unwrap_or_else(|e| e.into_inner()).count
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.watches_quiet(Instant::now())
    }

    /// False once watches have been failing for `WATCH_LIVE_WINDOW`.
    pub fn is_live(&self) -> bool {
        let now = Instant::now();
        if self.watches_quiet(now) {
            return true;
        }
        let w = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        w.since
            .is_none_or(|since| now.duration_since(since) < WATCH_LIVE_WINDOW)
    }

    fn watches_quiet(&self, now: Instant) -> bool {
        let w = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        w.last
            .is_none_or(|last| now.duration_since(last) >= WATCH_READY_WINDOW)
    }
}

#[derive(Clone)]
struct ProbeState {
    health: Health,
    registry: Arc<Registry>,
}

/// The `/healthz`, `/readyz` and `/metrics` routes. Components merge their
/// own routes into this router.
pub fn probe_routes(health: Health, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ProbeState { health, registry })
}

async fn healthz(State(state): State<ProbeState>) -> impl IntoResponse {
    if state.health.is_live() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "watches have been failing for too long",
        )
    }
}

async fn readyz(State(state): State<ProbeState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<ProbeState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// Binds `addr` for `serve` (see `crate::http_server::listen`).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    crate::http_server::listen(addr)
}

/// Serves `router` on `listener` until `shutdown` resolves, with the
/// timeouts and connection cap of `crate::http_server`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving HTTP");
    }
    crate::http_server::serve(listener, router, shutdown).await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}
