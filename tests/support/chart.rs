//! Helpers for the tests that install ephemera the way users do (the Helm
//! chart, `deploy/`): helm and kubectl runs, clients that authenticate as a
//! ServiceAccount, and a controller running with nothing but such a client.

use std::process::Output;

use ephemera::controller::{config::ControllerConfig, metrics::Metrics};
use kube::{
    Client, Config,
    config::{AuthInfo, KubeConfigOptions, Kubeconfig},
};

use super::{TEST_RUN_LABEL, kubeconfig_path, kubectl};

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/ephemera");

/// The local control plane's helm (`.cluster/bin/helm`, or `EPHEMERA_HELM`).
pub fn helm_binary() -> String {
    std::env::var("EPHEMERA_HELM")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.cluster/bin/helm").into())
}

/// Runs helm against the local control plane.
pub async fn helm(args: &[&str]) -> Output {
    let helm = helm_binary();
    tokio::process::Command::new(&helm)
        .arg(format!("--kubeconfig={}", kubeconfig_path().display()))
        .args(args)
        .output()
        .await
        .unwrap_or_else(|err| {
            panic!("running {helm} (start the plane with `make cluster-up`): {err}")
        })
}

/// Runs kubectl with `stdin` as its input.
pub async fn kubectl_with_input(args: &[&str], stdin: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let kubectl = std::env::var("EPHEMERA_KUBECTL")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.cluster/bin/kubectl").into());
    let mut child = tokio::process::Command::new(&kubectl)
        .arg(format!("--kubeconfig={}", kubeconfig_path().display()))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("running {kubectl}: {err}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    child.wait_with_output().await.unwrap()
}

/// The output of a command that must have succeeded.
pub fn ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The error output of a command that must have failed.
pub fn failed(output: &Output, what: &str) -> String {
    assert!(
        !output.status.success(),
        "{what} succeeded but should have failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A client that authenticates with a token of `service_account` only.
pub async fn client_as(namespace: &str, service_account: &str) -> Client {
    let token = ok(
        &kubectl(&[
            "create",
            "token",
            service_account,
            "-n",
            namespace,
            "--duration=1h",
        ])
        .await,
        "kubectl create token",
    );
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info = AuthInfo {
        token: Some(secrecy::SecretString::from(token.trim().to_string())),
        ..Default::default()
    };
    Client::try_from(config).unwrap()
}

/// A controller running in this process with `client`, reconciling only the
/// installations labelled `ephemera.dev/test-run=<run>`.
pub struct RunningController {
    /// The controller's metrics, as its /metrics shows them.
    pub metrics: Metrics,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningController {
    pub async fn start(client: Client, run: &str) -> Self {
        let config = ControllerConfig {
            installation_selector: Some(format!("{TEST_RUN_LABEL}={run}")),
            ..Default::default()
        };
        Self::start_with(client, config).await
    }

    /// A controller running in this process with `client` and `config`.
    pub async fn start_with(client: Client, config: ControllerConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ephemera::controller::run_with(
            client,
            config,
            listener,
            registry,
            metrics.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            metrics,
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("controller task")
            .expect("controller ran without error");
    }
}
