//! The Helm chart: it lints, renders objects the real API server accepts,
//! installs, and the RBAC it grants is enough for the controller (which then
//! provisions and deletes an installation with nothing more) and no more than
//! the adapters need.

mod support;

use std::time::Duration;

use ephemera::{
    api::{
        InstallationProfile, InstallationProfileSpec, Phase, TestInstallation, TestInstallationSpec,
    },
    controller::{config::ControllerConfig, leader::LeaderElection, metrics::Metrics},
};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Namespace, Secret},
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{DeleteParams, PostParams},
    config::{AuthInfo, KubeConfigOptions, Kubeconfig},
};
use support::{TEST_RUN_LABEL, client, install_crds, kubectl, unique_name, wait_for};

const TIMEOUT: Duration = Duration::from_secs(60);
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/ephemera");

async fn helm(args: &[&str]) -> std::process::Output {
    let helm = concat!(env!("CARGO_MANIFEST_DIR"), "/.cluster/bin/helm");
    tokio::process::Command::new(helm)
        .arg(format!(
            "--kubeconfig={}",
            support::kubeconfig_path().display()
        ))
        .args(args)
        .output()
        .await
        .expect("run helm")
}

fn ok(output: &std::process::Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A client that authenticates as a ServiceAccount of the release.
async fn client_as(namespace: &str, service_account: &str) -> Client {
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
    let kubeconfig = Kubeconfig::read_from(support::kubeconfig_path()).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info = AuthInfo {
        token: Some(secrecy::SecretString::from(token.trim().to_string())),
        ..Default::default()
    };
    Client::try_from(config).unwrap()
}

fn forbidden<T: std::fmt::Debug>(result: kube::Result<T>) -> bool {
    matches!(result, Err(kube::Error::Api(ref s)) if s.code == 403)
}

#[tokio::test]
async fn chart_installs_and_grants_exactly_what_each_component_needs() {
    let admin = client().await;
    install_crds(&admin).await;
    let release = unique_name("rel");
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({ "metadata": { "name": release } }))
                .unwrap(),
        )
        .await
        .unwrap();

    ok(&helm(&["lint", CHART]).await, "helm lint");
    // The deletion-lock policy is cluster-wide and already installed by the
    // tests; the chart's copy is checked by `helm template` below.
    let rendered = ok(
        &helm(&[
            "template",
            &release,
            CHART,
            "-n",
            &release,
            "--set",
            "chat.enabled=true",
            "--set",
            "github.enabled=true",
        ])
        .await,
        "helm template",
    );
    for kind in [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ClusterRole",
        "Deployment",
    ] {
        assert!(
            rendered.contains(&format!("kind: {kind}")),
            "the chart renders no {kind}"
        );
    }
    ok(
        &helm(&[
            "install",
            &release,
            CHART,
            "-n",
            &release,
            "--set",
            "deletionLock.install=false",
            "--set",
            "chat.enabled=true",
            "--set",
            "github.enabled=true",
        ])
        .await,
        "helm install",
    );
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &release);
    // Two controllers (a leader and its standby) by default, one of each
    // adapter.
    for (component, replicas) in [("controller", 2), ("chat", 1), ("github", 1)] {
        let name = format!("{release}-{component}");
        wait_for(&format!("{name} available"), TIMEOUT, || async {
            let d = deployments.get(&name).await.map_err(|e| e.to_string())?;
            match d.status.and_then(|s| s.ready_replicas) {
                Some(n) if n == replicas => Ok(()),
                other => Err(format!("ready replicas {other:?}")),
            }
        })
        .await;
    }
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), &release);
    let budget = budgets
        .get(&format!("{release}-controller"))
        .await
        .expect("the chart installs a PodDisruptionBudget for the controller");
    assert_eq!(
        budget.spec.and_then(|s| s.max_unavailable),
        Some(IntOrString::Int(1))
    );

    // The controller, with only the chart's ServiceAccount, provisions and
    // deletes an installation.
    let as_controller = client_as(&release, &format!("{release}-controller")).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    // It elects itself leader over a Lease in the release namespace, which
    // the chart's Role allows.
    let config = ControllerConfig {
        installation_selector: Some(format!("{TEST_RUN_LABEL}={release}")),
        leader_election: Some(LeaderElection {
            lease_name: format!("{release}-test"),
            namespace: release.clone(),
            lease_duration: "15s".into(),
        }),
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(ephemera::controller::run_with(
        as_controller,
        config,
        listener,
        registry,
        metrics,
        async move {
            let _ = stopped.await;
        },
    ));
    let profile = unique_name("chartprof");
    let spec: InstallationProfileSpec = serde_json::from_value(serde_json::json!({
        "image": "registry.example/app", "defaultVersion": "1.0.0", "filestore": { "type": "minio" }
    }))
    .unwrap();
    Api::<InstallationProfile>::all(admin.clone())
        .create(
            &PostParams::default(),
            &InstallationProfile::new(&profile, spec),
        )
        .await
        .unwrap();
    let name = unique_name("chart");
    let mut ti = TestInstallation::new(
        &name,
        TestInstallationSpec {
            profile: Some(profile),
            ..Default::default()
        },
    );
    ti.labels_mut()
        .insert(TEST_RUN_LABEL.into(), release.clone());
    let installations: Api<TestInstallation> = Api::all(admin.clone());
    installations
        .create(&PostParams::default(), &ti)
        .await
        .unwrap();
    wait_for(
        &format!("{name} Ready under the chart's RBAC"),
        TIMEOUT,
        || async {
            let ti = installations.get(&name).await.map_err(|e| e.to_string())?;
            if ti.phase() == Some(Phase::Ready) {
                Ok(())
            } else {
                Err(format!("{:?}", ti.status))
            }
        },
    )
    .await;

    // An adapter may read the credentials, not the other Secrets, and may
    // not touch the children.
    let installation_ns = format!("ti-{name}");
    let as_chat = client_as(&release, &format!("{release}-chat")).await;
    let secrets: Api<Secret> = Api::namespaced(as_chat.clone(), &installation_ns);
    assert!(
        secrets.get("credentials").await.is_ok(),
        "the chat adapter cannot read the credentials"
    );
    assert!(
        forbidden(secrets.get("app-env").await),
        "the chat adapter can read app-env"
    );
    assert!(forbidden(
        Api::<Deployment>::namespaced(as_chat.clone(), &installation_ns)
            .list(&Default::default())
            .await
    ));
    assert!(
        Api::<TestInstallation>::all(as_chat)
            .list(&Default::default())
            .await
            .is_ok()
    );

    installations
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        &format!("{name} deleted under the chart's RBAC"),
        TIMEOUT,
        || async {
            match installations
                .get_opt(&name)
                .await
                .map_err(|e| e.to_string())?
            {
                None => Ok(()),
                Some(ti) => Err(format!("{:?}", ti.status.and_then(|s| s.message))),
            }
        },
    )
    .await;
    stop.send(()).unwrap();
    controller.await.unwrap().unwrap();

    ok(
        &helm(&["uninstall", &release, "-n", &release]).await,
        "helm uninstall",
    );
    namespaces
        .delete(&release, &DeleteParams::default())
        .await
        .unwrap();
}
