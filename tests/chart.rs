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
    controller::{config::ControllerConfig, metrics::Metrics},
};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Secret},
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
    assert!(
        rendered.contains(&format!("name: {release}-controller-fence")),
        "the chart renders no fence policy for the controller"
    );
    assert!(
        !rendered.contains(&format!("- {release}\n")),
        "the release namespace is listed somewhere in the rendered chart (allowedSecretNamespaces?)"
    );
    let refused = helm(&[
        "template",
        &release,
        CHART,
        "-n",
        &release,
        "--set",
        &format!("controller.config.allowedSecretNamespaces={{{release}}}"),
    ])
    .await;
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr)
                .contains("must not contain the release namespace"),
        "the chart rendered with the release namespace as a shared-secrets namespace"
    );
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
    for component in ["controller", "chat", "github"] {
        let name = format!("{release}-{component}");
        wait_for(&format!("{name} available"), TIMEOUT, || async {
            let d = deployments.get(&name).await.map_err(|e| e.to_string())?;
            match d.status.and_then(|s| s.ready_replicas) {
                Some(1) => Ok(()),
                other => Err(format!("ready replicas {other:?}")),
            }
        })
        .await;
    }

    // The controller, with only the chart's ServiceAccount, provisions and
    // deletes an installation.
    let as_controller = client_as(&release, &format!("{release}-controller")).await;
    let as_controller_check = as_controller.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let config = ControllerConfig {
        installation_selector: Some(format!("{TEST_RUN_LABEL}={release}")),
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

    // Each adapter its own role: the GitHub adapter reads no Secret, the
    // chat adapter only `credentials`; nobody but the controller lists them.
    let sa = |component: &str| format!("system:serviceaccount:{release}:{release}-{component}");
    let can_i_table = [
        (
            "chat",
            "get",
            "secrets/credentials",
            installation_ns.as_str(),
            true,
        ),
        ("chat", "list", "secrets", installation_ns.as_str(), false),
        (
            "chat",
            "get",
            "secrets/app-env",
            installation_ns.as_str(),
            false,
        ),
        (
            "chat",
            "get",
            "secrets/ephemera-chat-tokens",
            release.as_str(),
            false,
        ),
        (
            "chat",
            "create",
            "deployments",
            installation_ns.as_str(),
            false,
        ),
        (
            "github",
            "get",
            "secrets/credentials",
            installation_ns.as_str(),
            false,
        ),
        ("github", "get", "secrets/anything", "kube-system", false),
        (
            "github",
            "create",
            "testinstallations.ephemera.dev",
            "",
            true,
        ),
        (
            "controller",
            "delete",
            "testinstallations.ephemera.dev",
            "",
            true,
        ),
    ];
    for (component, verb, resource, namespace, expected) in can_i_table {
        let user = sa(component);
        let mut args = vec!["auth", "can-i", verb, resource, "--as", user.as_str()];
        if !namespace.is_empty() {
            args.extend(["-n", namespace]);
        }
        let out = kubectl(&args).await;
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            answer == "yes",
            expected,
            "kubectl auth can-i {verb} {resource} -n {namespace:?} as {component}: {answer}"
        );
    }

    // RBAC lets the controller write Secrets and delete namespaces anywhere;
    // the chart's fence policy makes the API server refuse it outside
    // ephemera's namespaces. Dry runs, so a missing fence breaks nothing.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let foreign_secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "planted-by-ephemera" }, "stringData": { "k": "v" }
    }))
    .unwrap();
    let fenced = |result: kube::Result<Secret>| match result {
        Err(kube::Error::Api(s)) if s.message.contains("ephemera controller may only") => Ok(()),
        other => Err(format!("{other:?}")),
    };
    let mut refused = 0;
    for namespace in ["kube-system", "default", release.as_str()] {
        let api: Api<Secret> = Api::namespaced(as_controller_check.clone(), namespace);
        wait_for(
            &format!("the fence to refuse a Secret in {namespace}"),
            TIMEOUT,
            || async { fenced(api.create(&dry, &foreign_secret).await) },
        )
        .await;
        refused += 1;
    }
    let namespaces_as_controller: Api<Namespace> = Api::all(as_controller_check.clone());
    let unlabelled: Namespace = serde_json::from_value(
        serde_json::json!({ "metadata": { "name": unique_name("notours") } }),
    )
    .unwrap();
    match namespaces_as_controller.create(&dry, &unlabelled).await {
        Err(kube::Error::Api(s)) if s.message.contains("ephemera controller may only") => {}
        other => panic!("the controller created an unlabelled namespace: {other:?}"),
    }
    let dry_delete = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    match namespaces_as_controller.delete(&release, &dry_delete).await {
        Err(kube::Error::Api(s)) if s.message.contains("ephemera controller may only") => {}
        other => panic!("the controller could delete its release namespace: {other:?}"),
    }
    refused += 2;
    println!("the fence refused {refused} writes outside ephemera's namespaces");

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
