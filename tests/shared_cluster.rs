//! What makes the controller safe in a shared cluster, on the real control
//! plane: generated credentials survive hand-deleted Secrets, an API error
//! that retrying cannot fix is told (Stalled with the server's own words and
//! a Warning Event), and a change of an immutable field is carried out by
//! recreating the part instead of wedging the installation.

mod support;

use std::{collections::BTreeMap, time::Duration};

use ephemera::api::{
    InstallationProfile, InstallationProfileSpec, Phase, TestInstallation, labels,
};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
        apps::v1::StatefulSet,
        core::v1::{PersistentVolume, PersistentVolumeClaim, Secret},
        events::v1::Event,
    },
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{
    TEST_RUN_LABEL, client, controller_for_this_binary, unique_name, wait_for, wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(60);

async fn profile(client: &Client, extra: serde_json::Value) -> String {
    controller_for_this_binary();
    let name = unique_name("sc");
    let mut spec = json!({
        "image": "registry.example/team/app",
        "defaultVersion": "1.0.0",
        "filestore": { "type": "minio" }
    });
    if let (Some(base), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    let spec: InstallationProfileSpec = serde_json::from_value(spec).unwrap();
    Api::<InstallationProfile>::all(client.clone())
        .create(
            &PostParams::default(),
            &InstallationProfile::new(&name, spec),
        )
        .await
        .unwrap();
    name
}

async fn create(client: &Client, prefix: &str, spec: serde_json::Value) -> String {
    let run = controller_for_this_binary();
    let name = unique_name(prefix);
    let mut ti = TestInstallation::new(&name, serde_json::from_value(spec).unwrap());
    ti.labels_mut().insert(TEST_RUN_LABEL.into(), run.into());
    Api::<TestInstallation>::all(client.clone())
        .create(&PostParams::default(), &ti)
        .await
        .unwrap_or_else(|err| panic!("creating {name}: {err}"));
    name
}

fn settled_ready(ti: &TestInstallation) -> bool {
    ti.phase() == Some(Phase::Ready)
        && ti.status.as_ref().and_then(|s| s.observed_generation) == ti.metadata.generation
}

async fn delete(client: &Client, name: &str) {
    let _ = Api::<TestInstallation>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

async fn events_about(client: &Client, name: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect()
}

type Values = BTreeMap<String, ByteString>;

async fn secret_values(secrets: &Api<Secret>, name: &str) -> Option<(String, Values)> {
    let secret = secrets.get_opt(name).await.unwrap()?;
    Some((secret.uid().unwrap(), secret.data.unwrap_or_default()))
}

#[tokio::test]
async fn hand_deleted_generated_secrets_come_back_with_the_same_passwords() {
    let client = client().await;
    let p = profile(&client, json!({})).await;
    let name = create(&client, "creds", json!({ "profile": p })).await;
    wait_until(&client, &name, "Ready", settled_ready).await;
    let ns = format!("ti-{name}");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let generated = ["credentials", "database", "filestore", "ephemera-generated"];
    let mut before = BTreeMap::new();
    for secret in generated {
        let (_, values) = secret_values(&secrets, secret)
            .await
            .unwrap_or_else(|| panic!("no Secret {secret}"));
        before.insert(secret, values);
    }
    for secret in generated {
        let (old_uid, _) = secret_values(&secrets, secret).await.unwrap();
        let deleted = std::time::Instant::now();
        secrets
            .delete(secret, &DeleteParams::default())
            .await
            .unwrap();
        let values = wait_for(
            &format!("Secret {secret} to come back"),
            Duration::from_secs(10),
            || async {
                match secret_values(&secrets, secret).await {
                    Some((uid, values)) if uid != old_uid => Ok(values),
                    _ => Err("not back yet"),
                }
            },
        )
        .await;
        println!("Secret {secret} was back after {:?}", deleted.elapsed());
        assert_eq!(
            values, before[secret],
            "Secret {secret} came back with other values"
        );
    }
    // Not silently: each restored Secret in use is announced.
    for secret in ["credentials", "database", "filestore"] {
        let events = events_about(&client, &name, "CredentialsRestored").await;
        assert!(
            events.iter().any(|e| e
                .note
                .as_deref()
                .unwrap_or_default()
                .contains(&format!("/{secret} was missing"))),
            "no CredentialsRestored event for {secret}: {events:?}"
        );
    }
    let ti = wait_until(&client, &name, "Ready again", settled_ready).await;
    assert_eq!(ti.phase(), Some(Phase::Ready));

    // Both copies gone: reported lost, never replaced by new passwords.
    // Both at once (both carry component=credentials), so no pass can
    // restore one from the other in between.
    secrets
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app.kubernetes.io/component=credentials"),
        )
        .await
        .unwrap();
    let ti = wait_until(&client, &name, "Stalled CredentialsLost", |ti| {
        ti.condition("Stalled")
            .is_some_and(|c| c.status == "True" && c.reason == "CredentialsLost")
    })
    .await;
    let message = ti.status.unwrap().message.unwrap();
    assert!(
        message.contains("credentials") && message.contains("create it again"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        secrets.get_opt("credentials").await.unwrap().is_none(),
        "lost credentials were replaced by new ones"
    );
    assert!(
        !events_about(&client, &name, "CredentialsLost")
            .await
            .is_empty()
    );
    delete(&client, &name).await;
}

#[tokio::test]
async fn an_admission_denial_stalls_the_installation_with_the_servers_message() {
    let client = client().await;
    let p = profile(&client, json!({ "filestore": { "type": "local" } })).await;
    let name = unique_name("denied");
    let policy_name = unique_name("deny-app-svc");
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": { "name": policy_name },
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": { "resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["services"]
            }] },
            "validations": [{
                "expression": "object.metadata.name != 'app'",
                "message": "test policy: no app Service in this namespace"
            }]
        }
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": { "name": policy_name },
        "spec": {
            "policyName": policy_name,
            "validationActions": ["Deny"],
            "matchResources": { "namespaceSelector": { "matchLabels": {
                "ephemera.dev/installation": name
            } } }
        }
    }))
    .unwrap();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // Policies take effect once the API server has loaded them.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let run = controller_for_this_binary();
    let mut ti = TestInstallation::new(
        &name,
        serde_json::from_value(json!({ "profile": p })).unwrap(),
    );
    ti.labels_mut().insert(TEST_RUN_LABEL.into(), run.into());
    let api: Api<TestInstallation> = Api::all(client.clone());
    api.create(&PostParams::default(), &ti).await.unwrap();
    let ti = wait_until(&client, &name, "Stalled by the denial", |ti| {
        ti.condition("Stalled").is_some_and(|c| c.status == "True")
    })
    .await;
    let stalled = ti.condition("Stalled").unwrap();
    assert_eq!(ti.phase(), Some(Phase::Failed));
    assert!(
        stalled.message.contains(&format!("Service ti-{name}/app"))
            && stalled
                .message
                .contains("test policy: no app Service in this namespace"),
        "{stalled:?}"
    );
    assert_eq!(ti.condition("Reconciling").unwrap().status, "False");
    let events = events_about(&client, &name, &stalled.reason).await;
    assert!(
        events.iter().any(|e| e.type_.as_deref() == Some("Warning")),
        "no Warning event: {events:?}"
    );

    // Lift the policy and ask for a pass, as a person who fixed the cause
    // would (otherwise the controller looks again a minute after the stall):
    // it goes on to Ready.
    bindings
        .delete(&policy_name, &DeleteParams::default())
        .await
        .unwrap();
    policies
        .delete(&policy_name, &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "annotations": {
            labels::RECONCILE_REQUESTED_AT: Timestamp::now().to_string()
        } } })),
    )
    .await
    .unwrap();
    wait_until(
        &client,
        &name,
        "Ready after the policy is gone",
        settled_ready,
    )
    .await;
    delete(&client, &name).await;
}

#[tokio::test]
async fn changing_the_database_storage_recreates_the_database() {
    let client = client().await;
    let p = profile(&client, json!({ "filestore": { "type": "local" } })).await;
    let name = create(&client, "storage", json!({ "profile": p })).await;
    wait_until(&client, &name, "Ready", settled_ready).await;
    let ns = format!("ti-{name}");
    // The local plane has no volume provisioner: provide the volume the
    // claim binds to, as a cluster's provisioner would.
    let pv_name = unique_name("pv-storage");
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": { "name": pv_name },
        "spec": {
            "capacity": { "storage": "2Gi" },
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "hostPath": { "path": format!("/tmp/{pv_name}") },
            "claimRef": { "namespace": ns, "name": "data-database-0" }
        }
    }))
    .unwrap();
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    pvs.create(&PostParams::default(), &pv).await.unwrap();

    let api: Api<TestInstallation> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({ "spec": { "database": { "storage": "persistent", "storageSize": "2Gi" } } }),
        ),
    )
    .await
    .unwrap();
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    wait_until(
        &client,
        &name,
        "Ready on a persistent database",
        settled_ready,
    )
    .await;
    let sts = stateful_sets.get("database").await.unwrap();
    let claims = sts.spec.unwrap().volume_claim_templates.unwrap_or_default();
    assert_eq!(
        claims.len(),
        1,
        "the database was not recreated with a claim"
    );
    assert!(!events_about(&client, &name, "Recreating").await.is_empty());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let claim_uid = pvcs.get("data-database-0").await.unwrap().uid();

    // A new size: recreated with it in the template; the claim is kept.
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "database": { "storageSize": "3Gi" } } })),
    )
    .await
    .unwrap();
    wait_until(&client, &name, "Ready with the new size", settled_ready).await;
    let sts = stateful_sets.get("database").await.unwrap();
    let template = &sts.spec.unwrap().volume_claim_templates.unwrap()[0];
    let size = &template
        .spec
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap()["storage"];
    assert_eq!(size.0, "3Gi");
    assert_eq!(pvcs.get("data-database-0").await.unwrap().uid(), claim_uid);

    // Back to ephemeral: recreated again, and the claim is pruned.
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({ "spec": { "database": { "storage": "ephemeral", "storageSize": null } } }),
        ),
    )
    .await
    .unwrap();
    wait_until(
        &client,
        &name,
        "Ready on an ephemeral database",
        settled_ready,
    )
    .await;
    wait_for("the claim to be pruned", TIMEOUT, || async {
        match pvcs
            .get_opt("data-database-0")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(pvc) if pvc.metadata.deletion_timestamp.is_some() => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    let sts = stateful_sets.get("database").await.unwrap();
    assert!(
        sts.spec
            .unwrap()
            .volume_claim_templates
            .unwrap_or_default()
            .is_empty()
    );
    delete(&client, &name).await;
    let _ = pvs.delete(&pv_name, &DeleteParams::default()).await;
}

/// A client acting as `user` (impersonated by the admin), to run the
/// controller's code with fewer rights than the admin has.
async fn client_as(user: &str) -> Client {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let kubeconfig = Kubeconfig::read_from(support::kubeconfig_path()).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
    config.auth_info.impersonate = Some(user.into());
    Client::try_from(config).unwrap()
}

#[tokio::test]
async fn a_kind_the_controller_may_not_list_does_not_fail_the_prune() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
    let client = client().await;
    let ns = support::TestNamespace::create(&client, "prune403").await;
    let user = unique_name("pruner");
    // Every prunable kind but PersistentVolumeClaims.
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": user },
        "rules": [
            { "apiGroups": [""], "resources": ["secrets", "services", "resourcequotas", "limitranges"],
              "verbs": ["list", "delete"] },
            { "apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["list", "delete"] },
            { "apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "delete"] },
            { "apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "networkpolicies"],
              "verbs": ["list", "delete"] },
            { "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"],
              "verbs": ["list", "delete"] }
        ]
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": user, "namespace": ns.name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }]
    }))
    .unwrap();
    let roles: Api<ClusterRole> = Api::all(client.clone());
    roles.create(&PostParams::default(), &role).await.unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // A leftover the prune should still remove.
    let leftover: Secret = serde_json::from_value(json!({
        "metadata": { "name": "leftover", "labels": {
            "ephemera.dev/installation": "x", "app.kubernetes.io/managed-by": "ephemera"
        } }
    }))
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    secrets
        .create(&PostParams::default(), &leftover)
        .await
        .unwrap();
    let limited = client_as(&user).await;
    let pruned = wait_for("RBAC to take effect", TIMEOUT, || async {
        let pruned = ephemera::controller::apply::prune(&limited, &ns.name, "x", &[])
            .await
            .map_err(|e| e.to_string())?;
        // Until the binding is seen every kind is refused (and skipped).
        if pruned.deleted.is_empty() {
            return Err(format!("{pruned:?}"));
        }
        Ok(pruned)
    })
    .await;
    assert_eq!(pruned.deleted, ["Secret/leftover"]);
    assert_eq!(pruned.skipped.len(), 1, "{:?}", pruned.skipped);
    assert!(
        pruned.skipped[0].starts_with("PersistentVolumeClaim: "),
        "{:?}",
        pruned.skipped
    );
    roles.delete(&user, &DeleteParams::default()).await.unwrap();
    ns.delete().await;
}
