//! The Helm chart: its values schema refuses typos and wrong types, it lints,
//! renders objects the real API server accepts, installs and upgrades with
//! installations present, and the RBAC it grants is enough for the controller
//! (which then provisions and deletes an installation with nothing more) and
//! no more than the adapters need.

mod support;

use std::time::Duration;

use ephemera::{
    api::{
        InstallationProfile, InstallationProfileSpec, Phase, TestInstallation, TestInstallationSpec,
    },
    controller::{config::ControllerConfig, leader::LeaderElection},
};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Namespace, Secret},
        policy::v1::PodDisruptionBudget,
        rbac::v1::RoleBinding,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, PostParams},
};
use support::{
    TEST_RUN_LABEL,
    chart::{CHART, RunningController, client_as, failed, helm, kubectl_with_input, ok},
    client, install_crds, kubectl, unique_name, wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(60);

fn forbidden<T: std::fmt::Debug>(result: kube::Result<T>) -> bool {
    matches!(result, Err(kube::Error::Api(ref s)) if s.code == 403)
}

async fn create_namespace(admin: &Client, name: &str) {
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({ "metadata": { "name": name } })).unwrap(),
        )
        .await
        .unwrap();
}

async fn delete_namespace(admin: &Client, name: &str) {
    Api::<Namespace>::all(admin.clone())
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn values_schema_refuses_a_typo_and_a_wrong_type_with_a_clear_message() {
    let typo = helm(&[
        "template",
        "rel",
        CHART,
        "--set",
        "contoller.config.baseDomain=preview.example.com",
    ])
    .await;
    let message = failed(&typo, "helm template with a misspelt key");
    assert!(
        message.contains("contoller") && message.contains("not allowed"),
        "the error does not name the misspelt key: {message}"
    );

    let wrong_type = helm(&[
        "template",
        "rel",
        CHART,
        "--set",
        "controller.config.concurrency=many",
    ])
    .await;
    let message = failed(&wrong_type, "helm template with a string for an integer");
    assert!(
        message.contains("concurrency") && message.contains("integer"),
        "the error does not say which value has the wrong type: {message}"
    );

    let wrong_enum = helm(&[
        "template",
        "rel",
        CHART,
        "--set",
        "image.pullPolicy=Sometimes",
    ])
    .await;
    let message = failed(&wrong_enum, "helm template with an unknown pull policy");
    assert!(
        message.contains("pullPolicy") && message.contains("IfNotPresent"),
        "the error does not list the allowed pull policies: {message}"
    );

    // The defaults, and every section switched on, pass.
    ok(&helm(&["lint", CHART, "--strict"]).await, "helm lint");
    ok(
        &helm(&[
            "lint",
            CHART,
            "--strict",
            "--set",
            "chat.enabled=true",
            "--set",
            "github.enabled=true",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "crds.applyOnStart=false",
        ])
        .await,
        "helm lint with every component",
    );
}

#[tokio::test]
async fn rendered_chart_is_accepted_by_the_api_server() {
    let admin = client().await;
    install_crds(&admin).await;
    let release = unique_name("dry");
    create_namespace(&admin, &release).await;
    let rendered = ok(
        &helm(&[
            "template",
            &release,
            CHART,
            "-n",
            &release,
            "--include-crds",
            "--set",
            "chat.enabled=true",
            "--set",
            "github.enabled=true",
        ])
        .await,
        "helm template",
    );
    for kind in [
        "CustomResourceDefinition",
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
    let applied = ok(
        &kubectl_with_input(
            &[
                "apply",
                "--dry-run=server",
                "--server-side",
                "--force-conflicts",
                "-n",
                &release,
                "-f",
                "-",
            ],
            &rendered,
        )
        .await,
        "kubectl apply --dry-run=server of the rendered chart",
    );
    assert!(
        applied.contains("deployment.apps/") && applied.contains("(server dry run)"),
        "kubectl did not dry-run the Deployments: {applied}"
    );
    delete_namespace(&admin, &release).await;
}

async fn wait_deployments_available(admin: &Client, release: &str, components: &[(&str, i32)]) {
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), release);
    for &(component, replicas) in components {
        let name = format!("{release}-{component}");
        wait_for(&format!("{name} available"), TIMEOUT, || async {
            let d = deployments.get(&name).await.map_err(|e| e.to_string())?;
            let status = d.status.unwrap_or_default();
            let generation = d.metadata.generation;
            match (status.ready_replicas, status.updated_replicas) {
                (Some(ready), Some(updated))
                    if ready == replicas
                        && updated == replicas
                        && status.observed_generation == generation =>
                {
                    Ok(())
                }
                other => Err(format!("ready/updated replicas {other:?}")),
            }
        })
        .await;
    }
}

async fn wait_phase(installations: &Api<TestInstallation>, name: &str, phase: Phase, why: &str) {
    wait_for(&format!("{name} {phase} {why}"), TIMEOUT, || async {
        let ti = installations.get(name).await.map_err(|e| e.to_string())?;
        if ti.phase() == Some(phase) {
            Ok(())
        } else {
            Err(format!("{:?}", ti.status))
        }
    })
    .await;
}

fn installation(name: &str, profile: &str, run: &str) -> TestInstallation {
    let mut ti = TestInstallation::new(
        name,
        TestInstallationSpec {
            profile: Some(profile.into()),
            ..Default::default()
        },
    );
    ti.labels_mut().insert(TEST_RUN_LABEL.into(), run.into());
    ti
}

#[tokio::test]
async fn chart_installs_upgrades_and_grants_exactly_what_each_component_needs() {
    let admin = client().await;
    install_crds(&admin).await;
    let release = unique_name("rel");
    create_namespace(&admin, &release).await;

    // The deletion-lock policy is cluster-wide and already installed by the
    // tests; the chart's copy is checked by the dry run above.
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
    // Two controllers (a leader and its standby) by default, one of each
    // adapter.
    wait_deployments_available(
        &admin,
        &release,
        &[("controller", 2), ("chat", 1), ("github", 1)],
    )
    .await;
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
    let as_controller_check = as_controller.clone();
    // The chart tells the controller whom to let read the credentials: the
    // chat adapter, through its credentials-reader ClusterRole.
    let chart_config = Api::<ConfigMap>::namespaced(admin.clone(), &release)
        .get(&release)
        .await
        .unwrap();
    let chart_config: ControllerConfig =
        serde_yaml::from_str(&chart_config.data.unwrap_or_default()["controller.yaml"]).unwrap();
    let reader = chart_config
        .credentials_reader
        .expect("with the chat adapter, the chart configures a credentials reader");
    assert_eq!(reader.service_account, format!("{release}/{release}-chat"));
    assert_eq!(reader.cluster_role, format!("{release}-credentials-reader"));
    // It elects itself leader over a Lease in the release namespace, which
    // the chart's Role allows.
    let config = ControllerConfig {
        installation_selector: Some(format!("{TEST_RUN_LABEL}={release}")),
        leader_election: Some(LeaderElection {
            lease_name: format!("{release}-test"),
            namespace: release.clone(),
            lease_duration: "15s".into(),
        }),
        credentials_reader: Some(reader),
        ..Default::default()
    };
    let controller = RunningController::start_with(as_controller, config.clone()).await;
    let profile = unique_name("chartprof");
    let spec: InstallationProfileSpec = serde_json::from_value(serde_json::json!({
        "image": "registry.example/app", "defaultVersion": "1.0.0", "filestore": { "type": "minio" }
    }))
    .unwrap();
    let profiles: Api<InstallationProfile> = Api::all(admin.clone());
    profiles
        .create(
            &PostParams::default(),
            &InstallationProfile::new(&profile, spec),
        )
        .await
        .unwrap();
    let name = unique_name("chart");
    let installations: Api<TestInstallation> = Api::all(admin.clone());
    installations
        .create(
            &PostParams::default(),
            &installation(&name, &profile, &release),
        )
        .await
        .unwrap();
    wait_phase(
        &installations,
        &name,
        Phase::Ready,
        "under the chart's RBAC",
    )
    .await;

    // The chat adapter may read the credentials, through the RoleBinding the
    // controller made in the installation namespace only; not the other
    // Secrets, nor a `credentials` Secret anywhere else; it may not touch
    // the children.
    let installation_ns = format!("ti-{name}");
    let binding = Api::<RoleBinding>::namespaced(admin.clone(), &installation_ns)
        .get("ephemera-credentials-reader")
        .await
        .expect("the controller binds the chat adapter in the installation namespace");
    assert_eq!(
        binding.role_ref.name,
        format!("{release}-credentials-reader")
    );
    let as_chat = client_as(&release, &format!("{release}-chat")).await;
    let secrets: Api<Secret> = Api::namespaced(as_chat.clone(), &installation_ns);
    assert!(
        secrets.get("credentials").await.is_ok(),
        "the chat adapter cannot read the credentials"
    );
    let planted: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "credentials" }, "stringData": { "adminPassword": "not-yours" }
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), &release)
        .create(&PostParams::default(), &planted)
        .await
        .unwrap();
    assert!(
        forbidden(
            Api::<Secret>::namespaced(as_chat.clone(), &release)
                .get("credentials")
                .await
        ),
        "the chat adapter can read a `credentials` Secret outside installation namespaces"
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
            "get",
            "secrets/credentials",
            release.as_str(),
            false,
        ),
        ("chat", "get", "secrets/credentials", "kube-system", false),
        ("chat", "get", "secrets/credentials", "default", false),
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
            "chat",
            "create",
            "events.events.k8s.io",
            installation_ns.as_str(),
            true,
        ),
        (
            "github",
            "create",
            "events.events.k8s.io",
            installation_ns.as_str(),
            false,
        ),
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
        (
            "controller",
            "bind",
            &format!("clusterroles.rbac.authorization.k8s.io/{release}-credentials-reader"),
            "",
            true,
        ),
        (
            "controller",
            "bind",
            "clusterroles.rbac.authorization.k8s.io/cluster-admin",
            "",
            false,
        ),
        (
            "controller",
            "escalate",
            "clusterroles.rbac.authorization.k8s.io",
            "",
            false,
        ),
    ];
    for (component, verb, resource, namespace, expected) in &can_i_table {
        let (verb, resource, namespace) = (*verb, *resource, *namespace);
        let user = sa(component);
        let mut args = vec!["auth", "can-i", verb, resource, "--as", user.as_str()];
        if !namespace.is_empty() {
            args.extend(["-n", namespace]);
        }
        let out = kubectl(&args).await;
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            answer == "yes",
            *expected,
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
    // Inside its namespaces it may bind the credentials reader only, even a
    // role whose permissions it holds (its own).
    let grab: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "grab" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
            "name": format!("{release}-controller") },
        "subjects": [{ "kind": "ServiceAccount", "name": "default", "namespace": installation_ns }]
    }))
    .unwrap();
    match Api::<RoleBinding>::namespaced(as_controller_check.clone(), &installation_ns)
        .create(&dry, &grab)
        .await
    {
        Err(kube::Error::Api(s)) if s.message.contains("only bind the credentials-reader") => {}
        other => panic!("the controller bound another role: {other:?}"),
    }
    refused += 1;
    // It may create CRDs (RBAC cannot limit create by name), but only its own.
    let foreign_crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "widgets.example.com" },
        "spec": { "group": "example.com", "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
            "versions": [{ "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object" } } }] }
    }))
    .unwrap();
    match Api::<CustomResourceDefinition>::all(as_controller_check.clone())
        .create(&dry, &foreign_crd)
        .await
    {
        Err(kube::Error::Api(s))
            if s.message
                .contains("only create and update the ephemera.dev CRDs") => {}
        other => panic!("the controller created a foreign CRD: {other:?}"),
    }
    refused += 1;
    println!("the fence refused {refused} writes outside ephemera's namespaces or grants");

    // `helm upgrade` with the installation present: new settings roll out,
    // the installation is untouched and stays Ready, and the upgraded
    // release's RBAC still provisions a new one.
    let before = installations.get(&name).await.unwrap();
    let upgraded = ok(
        &helm(&[
            "upgrade",
            &release,
            CHART,
            "-n",
            &release,
            "--reuse-values",
            "--set",
            "github.enabled=false",
            "--set",
            "controller.config.concurrency=2",
        ])
        .await,
        "helm upgrade",
    );
    assert!(upgraded.contains("REVISION: 2"), "{upgraded}");
    wait_deployments_available(&admin, &release, &[("controller", 2), ("chat", 1)]).await;
    let after = installations.get(&name).await.unwrap();
    assert_eq!(after.uid(), before.uid(), "the upgrade replaced {name}");
    assert_eq!(after.spec, before.spec, "the upgrade changed {name}'s spec");
    assert_eq!(after.phase(), Some(Phase::Ready));
    assert!(
        Api::<Deployment>::namespaced(admin.clone(), &release)
            .get_opt(&format!("{release}-github"))
            .await
            .unwrap()
            .is_none(),
        "the disabled GitHub adapter is still deployed"
    );
    controller.stop().await;
    let as_controller = client_as(&release, &format!("{release}-controller")).await;
    let controller = RunningController::start_with(as_controller, config).await;
    let second = unique_name("chart");
    installations
        .create(
            &PostParams::default(),
            &installation(&second, &profile, &release),
        )
        .await
        .unwrap();
    wait_phase(&installations, &second, Phase::Ready, "after the upgrade").await;
    wait_phase(&installations, &name, Phase::Ready, "after the upgrade").await;

    for ti in [&name, &second] {
        installations
            .delete(ti, &DeleteParams::default())
            .await
            .unwrap();
    }
    for ti in [&name, &second] {
        wait_for(
            &format!("{ti} deleted under the chart's RBAC"),
            TIMEOUT,
            || async {
                match installations.get_opt(ti).await.map_err(|e| e.to_string())? {
                    None => Ok(()),
                    Some(ti) => Err(format!("{:?}", ti.status.and_then(|s| s.message))),
                }
            },
        )
        .await;
    }
    controller.stop().await;

    ok(
        &helm(&["uninstall", &release, "-n", &release]).await,
        "helm uninstall",
    );
    profiles
        .delete(&profile, &DeleteParams::default())
        .await
        .unwrap();
    delete_namespace(&admin, &release).await;
}
