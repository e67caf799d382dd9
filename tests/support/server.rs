//! One of ephemera's servers (the controller, an adapter) running inside the
//! test process: started on a free port, stopped the way SIGTERM stops it,
//! or killed the way `kill -9` does.

use std::{future::Future, net::SocketAddr, pin::Pin, time::Duration};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use super::wait_for;

/// The future a server is given to learn that it must stop.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// How long a stopped server may take to finish.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct RunningServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningServer {
    /// Spawns `serve` on a listener bound as the binaries bind (a large
    /// accept queue, `http_server::listen`) on a free port of 127.0.0.1.
    pub fn spawn<Fut>(serve: impl FnOnce(TcpListener, Shutdown) -> Fut) -> Self
    where
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let listener = ephemera::http_server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown: Shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(serve(listener, shutdown));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Spawns `serve` and waits until its `/readyz` answers 200.
    pub async fn spawn_ready<Fut>(serve: impl FnOnce(TcpListener, Shutdown) -> Fut) -> Self
    where
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let server = Self::spawn(serve);
        let readyz = server.url("/readyz");
        wait_for("the server to be ready", STOP_TIMEOUT, || async {
            let response = reqwest::get(&readyz).await.map_err(|e| e.to_string())?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(response.status().to_string())
            }
        })
        .await;
        server
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Like SIGTERM: asks the server to stop and waits until it has,
    /// failing the test when it does not stop in time or stops with an
    /// error. `on_timeout` says what the server was doing.
    pub async fn stop_or(mut self, on_timeout: impl FnOnce() -> String) {
        let _ = self.stop.take().expect("stopped once").send(());
        let task = self.task.take().expect("stopped once");
        match tokio::time::timeout(STOP_TIMEOUT, task).await {
            Ok(ended) => ended
                .expect("the server task does not panic")
                .expect("the server stops cleanly"),
            Err(_) => panic!(
                "the server did not stop within {STOP_TIMEOUT:?} of its shutdown signal\n{}",
                on_timeout()
            ),
        }
    }

    /// Like SIGTERM; see `stop_or`.
    pub async fn stop(self) {
        self.stop_or(String::new).await;
    }

    /// Like `kill -9`: the server stops wherever it is, mid-request.
    pub async fn kill(mut self) {
        let task = self.task.take().expect("killed once");
        task.abort();
        let _ = task.await;
    }
}

/// A controller in this process that reconciles only the TestInstallations
/// labelled `ephemera.dev/test-run=<run>`, with its own metrics registry.
pub fn spawn_controller(client: &kube::Client, run: &str) -> RunningServer {
    let config = ephemera::controller::config::ControllerConfig {
        installation_selector: Some(format!("{}={run}", super::TEST_RUN_LABEL)),
        ..Default::default()
    };
    let client = client.clone();
    RunningServer::spawn(move |listener, shutdown| {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = ephemera::controller::metrics::Metrics::register(&mut registry);
        ephemera::controller::run_with(client, config, listener, registry, metrics, shutdown)
    })
}
