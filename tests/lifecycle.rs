//! The lifecycle on the real control plane: expiry and extension,
//! hibernation, upgrade tests, test data, the deletion lock and the orphan
//! sweep. Time-dependent tests use short durations and wait on conditions.

mod support;

use std::time::Duration;

use ephemera::api::{
    InstallationProfile, InstallationProfileSpec, Phase, TestInstallation, TestInstallationSpec,
};
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet, StatefulSet},
    batch::v1::Job,
    core::v1::Namespace,
    events::v1::Event,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{TEST_RUN_LABEL, client, controller_with, unique_name, wait_for, wait_until};

const TIMEOUT: Duration = Duration::from_secs(60);

fn controller() -> &'static str {
    controller_with(|config| config.orphan_sweep_interval = "2s".into())
}

async fn profile(client: &Client, extra: serde_json::Value) -> String {
    controller();
    let name = unique_name("lc");
    let mut spec = json!({
        "image": "registry.example/team/app",
        "defaultVersion": "1.0.0",
        "filestore": { "type": "minio" },
        "seed": { "command": ["load-sample-data"], "backoffLimit": 1 }
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
    let run = controller();
    let name = unique_name(prefix);
    let spec: TestInstallationSpec = serde_json::from_value(spec).unwrap();
    let mut ti = TestInstallation::new(&name, spec);
    ti.labels_mut().insert(TEST_RUN_LABEL.into(), run.into());
    Api::<TestInstallation>::all(client.clone())
        .create(&PostParams::default(), &ti)
        .await
        .unwrap_or_else(|err| panic!("creating {name}: {err}"));
    name
}

fn condition_is(ti: &TestInstallation, type_: &str, status: &str) -> bool {
    ti.condition(type_).is_some_and(|c| c.status == status)
}

async fn gone(client: &Client, name: &str, timeout: Duration) {
    let api: Api<TestInstallation> = Api::all(client.clone());
    wait_for(&format!("{name} to be deleted"), timeout, || async {
        match api.get_opt(name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(ti) => Err(format!("{:?}", ti.status.and_then(|s| s.message))),
        }
    })
    .await
}

async fn delete(client: &Client, name: &str) {
    let _ = Api::<TestInstallation>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn installations_expire_at_their_ttl_unless_extended() {
    let client = client().await;
    let p = profile(&client, json!({})).await;
    // The extended one is created first, so its original deadline passes
    // before the other one's.
    let extended = create(&client, "ext", json!({ "profile": p, "ttl": "20s" })).await;
    let expiring = create(&client, "exp", json!({ "profile": p, "ttl": "20s" })).await;
    for name in [&extended, &expiring] {
        let ti = wait_until(&client, name, "Ready", |ti| {
            ti.phase() == Some(Phase::Ready)
        })
        .await;
        let expires = ti.status.unwrap().expires_at.unwrap().0;
        let created = ti.metadata.creation_timestamp.unwrap().0;
        assert_eq!(created.duration_until(expires).as_secs(), 20);
    }
    let api: Api<TestInstallation> = Api::all(client.clone());
    api.patch(
        &extended,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "ttl": "1h" } })),
    )
    .await
    .unwrap();
    wait_until(
        &client,
        &extended,
        "expiresAt moved out by the new ttl",
        |ti| {
            let s = ti.status.clone().unwrap_or_default();
            match (s.expires_at, ti.metadata.creation_timestamp.clone()) {
                (Some(e), Some(c)) => c.0.duration_until(e.0).as_secs() == 3600,
                _ => false,
            }
        },
    )
    .await;

    gone(&client, &expiring, Duration::from_secs(60)).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(
        namespaces
            .get_opt(&format!("ti-{expiring}"))
            .await
            .unwrap()
            .is_none()
    );
    let still_there = api.get(&extended).await.unwrap();
    assert_eq!(
        still_there.phase(),
        Some(Phase::Ready),
        "the extended installation must live on"
    );
    let events = Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Expired")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(expiring.as_str())),
        "no Expired event for {expiring}"
    );
    delete(&client, &extended).await;
}

#[tokio::test]
async fn hibernation_scales_everything_to_zero_and_wakes_again() {
    let client = client().await;
    let p = profile(&client, json!({})).await;
    let name = create(&client, "hib", json!({ "profile": p })).await;
    wait_until(&client, &name, "Ready", |ti| {
        ti.phase() == Some(Phase::Ready)
    })
    .await;
    let api: Api<TestInstallation> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "hibernate": true } })),
    )
    .await
    .unwrap();
    let ti = wait_until(&client, &name, "Hibernated and settled", |ti| {
        ti.phase() == Some(Phase::Hibernated) && condition_is(ti, "Reconciling", "False")
    })
    .await;
    assert_eq!(ti.condition("Ready").unwrap().reason, "Hibernated");
    assert!(
        ti.status.unwrap().expires_at.is_some(),
        "hibernated installations still expire"
    );
    let ns = format!("ti-{name}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for d in ["app", "filestore"] {
        let status = deployments.get(d).await.unwrap().status.unwrap();
        assert_eq!(status.replicas.unwrap_or(0), 0, "{d} still has pods");
    }
    let db = Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .get("database")
        .await
        .unwrap();
    assert_eq!(db.spec.unwrap().replicas, Some(0));
    assert_eq!(db.status.unwrap().replicas, 0);
    // The data is kept: the database's Secret and password are untouched.
    assert!(
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
            .get("database")
            .await
            .is_ok()
    );

    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "hibernate": false } })),
    )
    .await
    .unwrap();
    wait_until(&client, &name, "Ready again", |ti| {
        ti.phase() == Some(Phase::Ready)
    })
    .await;
    delete(&client, &name).await;
}

#[tokio::test]
async fn upgrade_tests_run_the_old_version_first_and_end_on_the_new_one() {
    let client = client().await;
    let p = profile(&client, json!({})).await;
    let name = create(
        &client,
        "upg",
        json!({ "profile": p, "upgradeFrom": "1.0.0", "version": "2.0.0", "testData": true }),
    )
    .await;
    let ti = wait_until(&client, &name, "Ready and upgraded", |ti| {
        ti.phase() == Some(Phase::Ready) && condition_is(ti, "Upgraded", "True")
    })
    .await;
    assert_eq!(
        ti.condition("Upgraded").unwrap().message,
        "upgraded from 1.0.0 to 2.0.0"
    );
    assert_eq!(ti.status.clone().unwrap().version.as_deref(), Some("2.0.0"));
    assert!(condition_is(&ti, "DataSeeded", "True"));

    // The Deployment's history shows the old version ran first.
    let sets = Api::<ReplicaSet>::namespaced(client.clone(), &format!("ti-{name}"))
        .list(&ListParams::default().labels("app.kubernetes.io/component=app"))
        .await
        .unwrap();
    let images: Vec<String> = sets
        .items
        .iter()
        .filter_map(|rs| {
            rs.spec
                .as_ref()?
                .template
                .as_ref()?
                .spec
                .as_ref()?
                .containers[0]
                .image
                .clone()
        })
        .collect();
    assert!(
        images.contains(&"registry.example/team/app:1.0.0".to_string()),
        "{images:?}"
    );
    assert!(
        images.contains(&"registry.example/team/app:2.0.0".to_string()),
        "{images:?}"
    );
    // And the phase went through Upgrading.
    let events = Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Upgrading")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str()))
    );
    delete(&client, &name).await;
}

#[tokio::test]
async fn test_data_is_loaded_once_and_not_again_on_a_new_version() {
    let client = client().await;
    let p = profile(&client, json!({})).await;
    let name = create(&client, "seed", json!({ "profile": p, "testData": true })).await;
    wait_until(&client, &name, "Ready and seeded", |ti| {
        ti.phase() == Some(Phase::Ready) && condition_is(ti, "DataSeeded", "True")
    })
    .await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &format!("ti-{name}"));
    wait_for(
        "the finished seed Job to be cleaned up",
        TIMEOUT,
        || async {
            match jobs.get_opt("seed").await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".to_string()),
            }
        },
    )
    .await;
    let api: Api<TestInstallation> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "version": "1.1.0" } })),
    )
    .await
    .unwrap();
    let ti = wait_until(&client, &name, "Ready on 1.1.0", |ti| {
        ti.phase() == Some(Phase::Ready)
            && ti.status.as_ref().and_then(|s| s.version.as_deref()) == Some("1.1.0")
    })
    .await;
    assert!(condition_is(&ti, "DataSeeded", "True"));
    assert!(
        jobs.get_opt("seed").await.unwrap().is_none(),
        "a new version seeded again"
    );
    delete(&client, &name).await;
}

#[tokio::test]
async fn a_failing_seed_command_is_reported_with_its_reason() {
    let client = client().await;
    // The fake kubelet makes containers of fail.invalid images exit 1.
    let p = profile(
        &client,
        json!({ "seed": { "command": ["load"], "image": "fail.invalid/seeder:1", "backoffLimit": 1 } }),
    )
    .await;
    let name = create(
        &client,
        "badseed",
        json!({ "profile": p, "testData": true }),
    )
    .await;
    let ti = wait_until(&client, &name, "DataSeeded=False SeedFailed", |ti| {
        ti.condition("DataSeeded")
            .is_some_and(|c| c.reason == "SeedFailed")
    })
    .await;
    let message = &ti.condition("DataSeeded").unwrap().message;
    assert!(message.contains("BackoffLimitExceeded"), "{message}");
    assert!(message.contains("exit code 1"), "{message}");
    assert_eq!(ti.phase(), Some(Phase::Failed));
    assert!(condition_is(&ti, "Ready", "False"));
    delete(&client, &name).await;
}

#[tokio::test]
async fn locked_installations_cannot_be_deleted_or_expire() {
    let client = client().await;
    let p = profile(&client, json!({})).await;
    let name = create(
        &client,
        "lock",
        json!({ "profile": p, "deletionLocked": true, "ttl": "5s" }),
    )
    .await;
    let ti = wait_until(&client, &name, "past its deadline but kept", |ti| {
        ti.status
            .as_ref()
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| m.contains("kept because deletionLocked is true"))
    })
    .await;
    assert!(ti.metadata.deletion_timestamp.is_none());

    let output = support::kubectl(&["delete", "ti", &name, "--wait=false"]).await;
    assert!(
        !output.status.success(),
        "kubectl deleted a locked installation"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "TestInstallation {name} is locked against deletion"
        )),
        "{stderr}"
    );
    let api: Api<TestInstallation> = Api::all(client.clone());
    assert!(api.get_opt(&name).await.unwrap().is_some());

    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "deletionLocked": false, "ttl": "1h" } })),
    )
    .await
    .unwrap();
    let output = support::kubectl(&["delete", "ti", &name, "--wait=false"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    gone(&client, &name, TIMEOUT).await;
}

#[tokio::test]
async fn only_namespaces_our_installations_left_behind_are_swept() {
    let client = client().await;
    controller();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labelled = |name: &str, owner: Option<&str>| -> Namespace {
        let owners: Vec<serde_json::Value> = owner
            .map(|uid| {
                json!({ "apiVersion": "ephemera.dev/v1alpha1", "kind": "TestInstallation",
                        "name": "never-existed", "uid": uid })
            })
            .into_iter()
            .collect();
        serde_json::from_value(json!({
            "metadata": { "name": name, "ownerReferences": owners, "labels": {
                "app.kubernetes.io/managed-by": "ephemera",
                "ephemera.dev/installation": unique_name("never-existed")
            } }
        }))
        .unwrap()
    };
    // Made by hand with ephemera's labels: not provably ours.
    let hand_made = unique_name("ti-hand");
    namespaces
        .create(&PostParams::default(), &labelled(&hand_made, None))
        .await
        .unwrap();
    // Owned by an installation UID that does not exist: an orphan.
    let orphan = unique_name("ti-orphan");
    namespaces
        .create(
            &PostParams::default(),
            &labelled(&orphan, Some("00000000-0000-0000-0000-00000000dead")),
        )
        .await
        .unwrap();
    wait_for("the orphan to be deleted", TIMEOUT, || async {
        match namespaces
            .get_opt(&orphan)
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(ns) if ns.metadata.deletion_timestamp.is_some() => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    let event_about = |events: &[Event], reason: &str, name: &str| {
        events.iter().any(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
    };
    // Reported, with a Warning Event, and never deleted: the sweep runs
    // every 2 s, so by now it has seen the namespace several times.
    wait_for("an UnownedNamespace event", TIMEOUT, || async {
        let events = Api::<Event>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        event_about(&events.items, "UnownedNamespace", &hand_made)
            .then_some(())
            .ok_or_else(|| "no event yet".to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let still = namespaces.get(&hand_made).await.unwrap();
    assert!(
        still.metadata.deletion_timestamp.is_none(),
        "the sweep deleted a namespace it does not own"
    );
    namespaces
        .delete(&hand_made, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn installations_that_never_become_ready_still_expire() {
    let client = client().await;
    let p = profile(&client, json!({})).await;
    // Stalled for an unknown size, for a missing profile, and one locked.
    let unknown_size = create(
        &client,
        "stall",
        json!({ "profile": p, "size": "huge", "ttl": "15s" }),
    )
    .await;
    let no_profile = create(
        &client,
        "noprof",
        json!({ "profile": unique_name("missing"), "ttl": "15s" }),
    )
    .await;
    let locked = create(
        &client,
        "stlock",
        json!({ "profile": p, "size": "huge", "ttl": "5s", "deletionLocked": true }),
    )
    .await;
    for (name, reason) in [
        (&unknown_size, "UnknownSize"),
        (&no_profile, "ProfileNotFound"),
    ] {
        let ti = wait_until(&client, name, reason, |ti| {
            ti.condition("Stalled").is_some_and(|c| c.reason == reason)
        })
        .await;
        assert_eq!(ti.phase(), Some(Phase::Failed));
        let status = ti.status.unwrap();
        let created = ti.metadata.creation_timestamp.unwrap().0;
        let expires = status
            .expires_at
            .expect("a stalled installation has expiresAt")
            .0;
        assert_eq!(created.duration_until(expires).as_secs(), 15, "{name}");
    }
    gone(&client, &unknown_size, Duration::from_secs(45)).await;
    gone(&client, &no_profile, Duration::from_secs(45)).await;

    // The locked one is past its deadline and kept.
    wait_until(&client, &locked, "kept past its deadline", |ti| {
        ti.status
            .as_ref()
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| m.contains("kept because deletionLocked is true"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let api: Api<TestInstallation> = Api::all(client.clone());
    let ti = api.get(&locked).await.unwrap();
    assert!(ti.metadata.deletion_timestamp.is_none());
    api.patch(
        &locked,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "deletionLocked": false } })),
    )
    .await
    .unwrap();
    gone(&client, &locked, TIMEOUT).await;
}

#[tokio::test]
async fn profile_ttl_edits_never_shorten_or_stall_existing_installations() {
    let client = client().await;
    let p = profile(&client, json!({ "ttl": { "default": "48h", "max": "7d" } })).await;
    let by_default = create(&client, "pdef", json!({ "profile": p })).await;
    let by_spec = create(&client, "pspec", json!({ "profile": p, "ttl": "3d" })).await;
    let mut promised = vec![];
    for (name, hours) in [(&by_default, 48), (&by_spec, 72)] {
        let ti = wait_until(&client, name, "Ready", |ti| {
            ti.phase() == Some(Phase::Ready)
        })
        .await;
        let status = ti.status.unwrap();
        let created = ti.metadata.creation_timestamp.unwrap().0;
        let expires = status.expires_at.clone().unwrap();
        assert_eq!(created.duration_until(expires.0).as_secs(), hours * 3600);
        assert_eq!(
            status.ttl.as_deref(),
            Some(if hours == 48 { "2d" } else { "3d" })
        );
        promised.push((name.clone(), expires));
    }

    Api::<InstallationProfile>::all(client.clone())
        .patch(
            &p,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "ttl": { "default": "5s", "max": "10s" } } })),
        )
        .await
        .unwrap();
    // A new installation gets the new default: the edit did reach the
    // controller, which also wakes every installation of the profile.
    let fresh = create(&client, "pnew", json!({ "profile": p })).await;
    let api: Api<TestInstallation> = Api::all(client.clone());
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        for (name, expires) in &promised {
            let ti = api.get_opt(name).await.unwrap().unwrap_or_else(|| {
                panic!("{name} was deleted after the profile's ttl was lowered")
            });
            let status = ti.status.clone().unwrap_or_default();
            assert_eq!(status.expires_at.as_ref(), Some(expires), "{name} moved");
            assert_eq!(
                ti.phase(),
                Some(Phase::Ready),
                "{name}: {:?}",
                status.message
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    gone(&client, &fresh, TIMEOUT).await;

    // An extension is checked against today's maximum: refused, and the
    // promise stays.
    api.patch(
        &by_spec,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "ttl": "4d" } })),
    )
    .await
    .unwrap();
    let ti = wait_until(&client, &by_spec, "the extension refused", |ti| {
        ti.condition("Stalled")
            .is_some_and(|c| c.reason == "TtlTooLong")
    })
    .await;
    assert_eq!(
        ti.status.clone().unwrap().expires_at.as_ref(),
        Some(&promised[1].1)
    );
    assert!(
        ti.condition("Stalled")
            .unwrap()
            .message
            .contains("keeps its ttl of 3d"),
        "{:?}",
        ti.condition("Stalled")
    );
    delete(&client, &by_default).await;
    delete(&client, &by_spec).await;
}

#[tokio::test]
async fn an_upgrade_to_a_version_that_never_becomes_ready_is_never_reported_done() {
    let client = client().await;
    let p = profile(&client, json!({})).await;
    // The fake kubelet runs pods of images tagged never-ready without ever
    // making them ready (hack/kwok-failure-stages.yaml).
    let name = create(
        &client,
        "neverup",
        json!({ "profile": p, "upgradeFrom": "1.0.0", "version": "never-ready" }),
    )
    .await;
    wait_until(&client, &name, "rolling to never-ready", |ti| {
        ti.condition("Upgraded")
            .is_some_and(|c| c.reason == "Upgrading")
    })
    .await;
    let api: Api<TestInstallation> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &format!("ti-{name}"));
    let mut saw_old_pod_serving = false;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let ti = api.get(&name).await.unwrap();
        let status = ti.status.clone().unwrap_or_default();
        assert_ne!(ti.phase(), Some(Phase::Ready), "{:#?}", status);
        assert!(!condition_is(&ti, "Upgraded", "True"), "{:#?}", status);
        assert!(!condition_is(&ti, "Ready", "True"), "{:#?}", status);
        assert_ne!(status.version.as_deref(), Some("never-ready"));
        let app = deployments
            .get("app")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        // The situation that fooled the old check: the old pod is ready,
        // the new one is not.
        if app.replicas == Some(2)
            && app.ready_replicas == Some(1)
            && app.updated_replicas == Some(1)
        {
            saw_old_pod_serving = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        saw_old_pod_serving,
        "the rollout never reached one old ready pod beside one new unready pod"
    );
    let ti = api.get(&name).await.unwrap();
    assert_eq!(ti.phase(), Some(Phase::Upgrading));
    assert_eq!(ti.status.unwrap().version.as_deref(), Some("1.0.0"));

    // Once the Deployment gives up (a short progress deadline, set by hand
    // so the test need not wait the default 10 minutes), the upgrade has
    // failed with that reason, and kstatus tools see Stalled.
    deployments
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "progressDeadlineSeconds": 2 } })),
        )
        .await
        .unwrap();
    let ti = wait_until(&client, &name, "ProgressDeadlineExceeded", |ti| {
        ti.condition("AppReady")
            .is_some_and(|c| c.reason == "ProgressDeadlineExceeded")
    })
    .await;
    assert_eq!(ti.phase(), Some(Phase::Failed));
    assert!(condition_is(&ti, "Stalled", "True"));
    assert_eq!(ti.condition("Upgraded").unwrap().reason, "UpgradeFailed");
    assert_eq!(ti.status.unwrap().version.as_deref(), Some("1.0.0"));
    delete(&client, &name).await;
}
