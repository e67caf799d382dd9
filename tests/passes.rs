//! How many reconcile passes an installation costs, counted by the
//! controller's own `reconciles` metric: one to Ready (it applies; what the
//! workloads show as they roll out is recorded by status refreshes), none
//! while nothing changes, and few to delete (the namespace's watch, not a
//! timer, says when it is gone).

mod support;

use std::time::{Duration, Instant};

use ephemera::{
    api::{InstallationProfile, InstallationProfileSpec, Phase, TestInstallation},
    controller::config::ControllerConfig,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{
    TEST_RUN_LABEL, chart::RunningController, client, install_crds, unique_name, wait_for,
    wait_until,
};

/// Passes to delete: the namespace is deleted, then the finalizer removed
/// when the namespace's watch says it is gone.
const PASSES_TO_DELETE: u64 = 3;
const IDLE: Duration = Duration::from_secs(15);

/// A controller that reconciles only this test's installations, and what
/// removes them when the test ends.
struct Run {
    client: kube::Client,
    name: String,
    controller: RunningController,
    _cleanup: support::RemoveOnDrop,
}

impl Run {
    async fn start(prefix: &str) -> Self {
        let client = client().await;
        install_crds(&client).await;
        let name = unique_name(prefix);
        let selector = format!("{TEST_RUN_LABEL}={name}");
        let cleanup = support::RemoveOnDrop {
            selector: selector.clone(),
            profile: name.clone(),
        };
        let config = ControllerConfig {
            installation_selector: Some(selector),
            ..Default::default()
        };
        let controller = RunningController::start_with(client.clone(), config).await;
        Self {
            client,
            name,
            controller,
            _cleanup: cleanup,
        }
    }

    fn passes(&self) -> u64 {
        self.controller.metrics.reconciles.get()
    }

    fn refreshes(&self) -> u64 {
        self.controller.metrics.refreshes.get()
    }

    /// Creates the profile named as the run.
    async fn create_profile(&self, spec: serde_json::Value) {
        let spec: InstallationProfileSpec = serde_json::from_value(spec).unwrap();
        Api::<InstallationProfile>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &InstallationProfile::new(&self.name, spec),
            )
            .await
            .unwrap();
    }

    /// Creates `<run>-<suffix>` of the profile named as the run; returns
    /// its name.
    async fn create_installation(&self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.name);
        let mut ti = TestInstallation::new(
            &name,
            serde_json::from_value(json!({ "profile": self.name })).unwrap(),
        );
        ti.labels_mut()
            .insert(TEST_RUN_LABEL.into(), self.name.clone());
        self.installations()
            .create(&PostParams::default(), &ti)
            .await
            .unwrap();
        name
    }

    /// Deletes `name` and waits until it is gone.
    async fn delete(&self, name: &str) {
        let api = self.installations();
        api.delete(name, &DeleteParams::default()).await.unwrap();
        wait_for(
            "the installation to be gone",
            Duration::from_secs(120),
            || async {
                match api.get_opt(name).await {
                    Ok(None) => Ok(()),
                    other => Err(format!("{:?}", other.map(|ti| ti.map(|ti| ti.status)))),
                }
            },
        )
        .await;
    }

    fn installations(&self) -> Api<TestInstallation> {
        Api::all(self.client.clone())
    }
}

#[tokio::test]
async fn an_installation_costs_few_passes_and_none_while_idle() {
    let run = Run::start("passes").await;
    // An app with a database and a filestore: three rollouts and a Job.
    run.create_profile(json!({
        "image": "registry.example/team/app", "defaultVersion": "1.0.0",
        "filestore": { "type": "minio" },
        "env": [{ "name": "DATABASE_URL", "value": "{{ database.url }}" }]
    }))
    .await;
    let (before, refreshes_before) = (run.passes(), run.refreshes());
    let name = run.create_installation("app").await;
    wait_until(&run.client, &name, "Ready", |ti| {
        ti.phase() == Some(Phase::Ready)
    })
    .await;
    let to_ready = run.passes() - before;
    let refreshes = run.refreshes() - refreshes_before;

    tokio::time::sleep(IDLE).await;
    let idle = run.passes() - before - to_ready;

    let deleting = Instant::now();
    let at_delete = run.passes();
    run.delete(&name).await;
    let to_delete = run.passes() - at_delete;
    eprintln!(
        "passes: {to_ready} to Ready ({refreshes} status refreshes), {idle} in {IDLE:?} idle, {to_delete} to delete (in {:?})",
        deleting.elapsed()
    );
    assert_eq!(to_ready, 1, "passes to Ready: the one that applies");
    assert!(
        refreshes >= 1,
        "Ready was recorded by a status refresh, not a pass"
    );
    assert_eq!(idle, 0, "passes while nothing changed");
    assert!(
        (1..=PASSES_TO_DELETE).contains(&to_delete),
        "{to_delete} passes to delete"
    );
    run.controller.stop().await;
}

/// The pass that adds the finalizer must not wake itself: the patch comes
/// back as a finalizer change, which the predicate lets through so that a
/// finalizer someone removed is put back. An installation whose profile
/// does not exist is Stalled by its first pass and must cost no second one;
/// a finalizer removed by someone else still runs a pass that puts it back.
#[tokio::test]
async fn adding_the_finalizer_does_not_cost_a_second_pass() {
    let run = Run::start("finalizer-echo").await;
    // The profile is never created.
    let before = run.passes();
    let name = run.create_installation("stalled").await;
    let has_finalizer = |ti: &TestInstallation| !ti.finalizers().is_empty();
    wait_until(&run.client, &name, "Stalled on the missing profile", |ti| {
        has_finalizer(ti)
            && ti
                .status
                .as_ref()
                .and_then(|s| s.message.as_deref())
                .is_some_and(|m| m.contains("does not exist"))
    })
    .await;
    // Longer than the controller's debounce and a watch round trip.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let first = run.passes() - before;

    let removed = json!([
        { "op": "test", "path": "/metadata/finalizers/0", "value": ephemera::controller::reconcile::FINALIZER },
        { "op": "remove", "path": "/metadata/finalizers/0" }
    ]);
    run.installations()
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(removed).unwrap()),
        )
        .await
        .unwrap();
    wait_until(&run.client, &name, "the finalizer back", has_finalizer).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after_removal = run.passes() - before - first;
    eprintln!("passes: {first} to stall, {after_removal} after the finalizer was removed");
    assert_eq!(first, 1, "passes for an installation that stalls at once");
    assert_eq!(after_removal, 1, "passes to put a removed finalizer back");

    run.delete(&name).await;
    run.controller.stop().await;
}

/// A pass that applies looks at the stores again once they show what it
/// applied, so its own writes coming back (the namespace, the workloads
/// appearing) must not wake it once more. With every workload never
/// becoming ready nothing else changes: one pass in all.
#[tokio::test]
async fn an_applying_pass_is_not_woken_by_its_own_writes() {
    let run = Run::start("own-echo").await;
    // The fake kubelet never makes containers of a never-ready tag ready.
    run.create_profile(json!({
        "image": "registry.example/team/app", "defaultVersion": "never-ready",
        "database": { "version": "never-ready" }
    }))
    .await;
    let before = run.passes();
    let name = run.create_installation("app").await;
    wait_until(
        &run.client,
        &name,
        "Provisioning with its children applied",
        |ti| {
            ti.phase() == Some(Phase::Provisioning)
                && ti
                    .status
                    .as_ref()
                    .is_some_and(|s| s.credentials_secret.is_some())
        },
    )
    .await;
    // Longer than the debounce; the pods start meanwhile, never ready.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let status = run.installations().get(&name).await.unwrap().status;
    let spent = run.passes() - before;
    eprintln!("passes: {spent} for an installation that never becomes ready");
    assert_ne!(
        status.as_ref().and_then(|s| s.phase),
        Some(Phase::Ready),
        "{status:?}"
    );
    assert_eq!(spent, 1, "passes after the apply, with nothing changing");
    run.controller.stop().await;
}

/// A status refresh whose write the API server refuses leaves nothing
/// behind: a pass takes over (with its backoff) and records Ready once the
/// API server takes the write again. The refusal comes from an admission
/// policy that rejects this installation's status reading Ready.
#[tokio::test]
async fn a_refused_refresh_is_taken_over_by_a_pass() {
    let run = Run::start("refresh-refused").await;
    run.create_profile(json!({
        "image": "registry.example/team/app", "defaultVersion": "1.0.0",
        "database": { "engine": "none" }
    }))
    .await;
    let name = format!("{}-app", run.name);
    let refusal = RefuseReady::install(&run.client, &name).await;
    let (before, refreshes_before) = (run.passes(), run.refreshes());
    run.create_installation("app").await;
    let api = run.installations();
    // The app rolls out (the fake kubelet takes a few seconds); its Ready
    // is refused meanwhile.
    wait_for(
        "a pass to retry the refused Ready",
        Duration::from_secs(60),
        || async {
            let ti = api.get(&name).await.map_err(|e| e.to_string())?;
            let retrying = ti
                .status
                .as_ref()
                .and_then(|s| s.message.as_deref())
                .is_some_and(|m| m.contains("refused in this test"));
            let passes = run.passes() - before;
            if retrying || passes >= 3 {
                Ok(())
            } else {
                Err(format!("{passes} passes, status {:?}", ti.status))
            }
        },
    )
    .await;
    let phase = api.get(&name).await.unwrap().phase();
    assert_ne!(phase, Some(Phase::Ready), "the refusal held");
    assert!(
        run.controller.metrics.refresh_errors.get() >= 1,
        "the refused write was a refresh's"
    );
    assert_eq!(
        run.refreshes() - refreshes_before,
        0,
        "no refresh was counted as recorded"
    );
    refusal.remove().await;
    // A refusal is a permanent error: the pass stalls the installation and
    // looks again after a minute.
    wait_for(
        "Ready once the write is taken",
        Duration::from_secs(120),
        || async {
            let ti = api.get(&name).await.map_err(|e| e.to_string())?;
            match ti.phase() {
                Some(Phase::Ready) => Ok(()),
                _ => Err(format!("{:?}", ti.status)),
            }
        },
    )
    .await;
    eprintln!(
        "passes: {} until Ready after a refused refresh",
        run.passes() - before
    );
    run.delete(&name).await;
    run.controller.stop().await;
}

/// An admission policy that refuses status writes of one installation that
/// read Ready.
struct RefuseReady {
    client: kube::Client,
    name: String,
}

impl RefuseReady {
    async fn install(client: &kube::Client, installation: &str) -> Self {
        use k8s_openapi::api::admissionregistration::v1::{
            ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        };
        let name = format!("refuse-ready-{installation}");
        let params = PatchParams::apply("ephemera-tests").force();
        let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": { "name": name },
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": { "resourceRules": [{
                    "apiGroups": ["ephemera.dev"], "apiVersions": ["*"],
                    "operations": ["UPDATE"], "resources": ["testinstallations/status"]
                }]},
                "validations": [{
                    "expression": format!(
                        "object.metadata.name != '{installation}' || !has(object.status) || !has(object.status.phase) || object.status.phase != 'Ready'"
                    ),
                    "message": "Ready refused in this test"
                }]
            }
        }))
        .unwrap();
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": { "name": name },
            "spec": { "policyName": name, "validationActions": ["Deny"] }
        }))
        .unwrap();
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .patch(&name, &params, &Patch::Apply(&policy))
            .await
            .unwrap();
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .patch(&name, &params, &Patch::Apply(&binding))
            .await
            .unwrap();
        // The API server picks policies up from its own watch.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Self {
            client: client.clone(),
            name,
        }
    }

    async fn remove(self) {
        use k8s_openapi::api::admissionregistration::v1::{
            ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        };
        let params = DeleteParams::default();
        Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone())
            .delete(&self.name, &params)
            .await
            .unwrap();
        Api::<ValidatingAdmissionPolicy>::all(self.client.clone())
            .delete(&self.name, &params)
            .await
            .unwrap();
    }
}
