//! The one HTTP server every component uses (controller probes, chat and
//! GitHub adapters), hardened against hostile or broken clients:
//!
//! - a client has `header_read_timeout` to send its request head, so
//!   half-sent requests (slowloris) and idle connections are dropped;
//! - each request (body read and handler together) has `request_timeout`,
//!   after which it is answered 408 and its work dropped, so a slowly
//!   dribbled body cannot hold a connection for ever;
//! - at most `max_connections` connections are open at once; beyond that new
//!   connections are closed at once instead of queueing memory;
//! - [`listen`] asks for an accept queue of `LISTEN_BACKLOG` instead of the
//!   usual 128. With 128, a burst of connections overflows the kernel's
//!   queue: it drops SYNs (connects take a second longer) and, worse, the
//!   last ACK of handshakes the client already counts as done. A client that
//!   then sends nothing (an idle or slowloris connection) is connected in
//!   its own eyes but unknown to this server, which can therefore never time
//!   it out: `tests/security.rs` measured 13-31 of 200 such clients per
//!   adapter never closed, and every other kind closed on time.
//!
//! `axum::serve` has none of these knobs, hence this small accept loop.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::Request,
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::Semaphore,
};

/// The accept queue asked for (the kernel caps it at `net.core.somaxconn`,
/// 4096 by default since Linux 5.4): more than `Limits::max_connections`, so
/// a burst up to the cap and beyond is queued and then served or closed by
/// the accept loop, never dropped unseen by the kernel.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with a `LISTEN_BACKLOG` accept queue (and `SO_REUSEADDR`,
/// like `TcpListener::bind`), with an error that names the address.
pub fn listen(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    let bound = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bound().map_err(|err| anyhow::anyhow!("cannot listen on {addr}: {err}"))
}

/// Limits of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to send a request's head (line and headers).
    pub header_read_timeout: Duration,
    /// Time for reading a request's body and answering it.
    pub request_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// How long graceful shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` with the default `Limits` until `shutdown`
/// resolves, then lets requests in flight finish (bounded).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, router, Limits::default(), shutdown).await
}

/// `serve` with explicit `limits`.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let request_timeout = limits.request_timeout;
    let router = router.layer(middleware::from_fn(move |request: Request, next: Next| {
        bounded(request, next, request_timeout)
    }));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    let mut refused: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(%err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    %peer,
                    refused,
                    max = limits.max_connections,
                    "connection limit reached; closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%peer, %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            "requests still in flight at shutdown were cut off"
        );
    }
    Ok(())
}

async fn bounded(request: Request, next: Next, timeout: Duration) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            format!("request not completed within {}s", timeout.as_secs()),
        )
            .into_response(),
    }
}
