//! Capacity limits on the real control plane: installations over a limit
//! wait in Pending with QuotaExceeded (which limit, which place in the queue)
//! and start by themselves, oldest first, when capacity frees up.

mod support;

use std::time::Duration;

use ephemera::api::{
    InstallationProfile, InstallationProfileSpec, Phase, TestInstallation, TestInstallationSpec,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, PostParams},
};
use support::{TEST_RUN_LABEL, client, controller_with, unique_name, wait_for};

const TIMEOUT: Duration = Duration::from_secs(60);

/// This binary's controller (which also installs the CRDs).
fn controller() -> &'static str {
    controller_with(|config| {
        config.max_installations = Some(3);
        config.max_per_requester = Some(1);
    })
}

async fn create(client: &Client, profile: &str, requester: &str) -> String {
    let run = controller();
    let name = unique_name(requester);
    let mut ti = TestInstallation::new(
        &name,
        TestInstallationSpec {
            profile: Some(profile.into()),
            ..Default::default()
        },
    );
    ti.labels_mut().insert(TEST_RUN_LABEL.into(), run.into());
    ti.labels_mut()
        .insert("ephemera.dev/requester".into(), requester.into());
    Api::<TestInstallation>::all(client.clone())
        .create(&PostParams::default(), &ti)
        .await
        .unwrap();
    // Creation order is the queue order; keep timestamps apart.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    name
}

async fn phase_becomes(client: &Client, name: &str, phase: Phase) -> TestInstallation {
    let api: Api<TestInstallation> = Api::all(client.clone());
    wait_for(&format!("{name} to be {phase}"), TIMEOUT, || async {
        let ti = api.get(name).await.map_err(|e| e.to_string())?;
        if ti.phase() == Some(phase) {
            Ok(ti)
        } else {
            Err(format!("{:?}", ti.status.map(|s| (s.phase, s.message))))
        }
    })
    .await
}

fn message(ti: &TestInstallation) -> String {
    ti.status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn over_the_limits_installations_queue_and_start_oldest_first() {
    let client = client().await;
    controller();
    let profile = unique_name("cap");
    let spec: InstallationProfileSpec = serde_json::from_value(
        serde_json::json!({ "image": "registry.example/app", "defaultVersion": "1" }),
    )
    .unwrap();
    Api::<InstallationProfile>::all(client.clone())
        .create(
            &PostParams::default(),
            &InstallationProfile::new(&profile, spec),
        )
        .await
        .unwrap();
    let api: Api<TestInstallation> = Api::all(client.clone());

    // alice, bob and carol fill the cluster (limit 3); alice's second waits
    // for her own limit (1), dave waits for the cluster.
    let alice1 = create(&client, &profile, "alice").await;
    let alice2 = create(&client, &profile, "alice").await;
    let bob = create(&client, &profile, "bob").await;
    let carol = create(&client, &profile, "carol").await;
    let dave = create(&client, &profile, "dave").await;
    for name in [&alice1, &bob, &carol] {
        phase_becomes(&client, name, Phase::Ready).await;
    }
    let queued = phase_becomes(&client, &alice2, Phase::Pending).await;
    assert_eq!(queued.condition("Ready").unwrap().reason, "QuotaExceeded");
    assert!(
        message(&queued).contains(
            "requester alice already has the maximum of 1 installations; 1st in their queue"
        ),
        "{}",
        message(&queued)
    );
    assert!(
        queued.status.as_ref().unwrap().expires_at.is_some(),
        "queued installations still expire"
    );
    let queued = phase_becomes(&client, &dave, Phase::Pending).await;
    assert!(
        message(&queued)
            .contains("the cluster-wide limit of 3 installations is reached; 2nd in the queue"),
        "{}",
        message(&queued)
    );
    assert!(
        api.get(&dave)
            .await
            .unwrap()
            .status
            .unwrap()
            .namespace
            .is_none(),
        "a queued installation got a namespace"
    );

    // alice's first goes: her second is next in line and starts; dave waits on.
    api.delete(&alice1, &DeleteParams::default()).await.unwrap();
    phase_becomes(&client, &alice2, Phase::Ready).await;
    wait_for("dave to move up to 1st in the queue", TIMEOUT, || async {
        let ti = api.get(&dave).await.map_err(|e| e.to_string())?;
        if ti.phase() == Some(Phase::Pending) && message(&ti).contains("1st in the queue") {
            Ok(())
        } else {
            Err(format!("{:?} {}", ti.phase(), message(&ti)))
        }
    })
    .await;

    // bob goes: dave starts by himself.
    api.delete(&bob, &DeleteParams::default()).await.unwrap();
    phase_becomes(&client, &dave, Phase::Ready).await;

    for name in [&alice2, &carol, &dave] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
}
