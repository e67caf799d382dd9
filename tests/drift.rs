//! Drift is repaired at once: every kind the controller creates is watched,
//! so a child deleted or edited by hand comes back within seconds, not at the
//! periodic resync.

mod support;

use std::time::{Duration, Instant};

use ephemera::api::{
    InstallationProfile, InstallationProfileSpec, Phase, TestInstallation, TestInstallationSpec,
};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{LimitRange, ResourceQuota, Secret, Service},
    networking::v1::{Ingress, NetworkPolicy},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde::de::DeserializeOwned;
use support::{TEST_RUN_LABEL, client, controller_for_this_binary, unique_name, wait_for};

const REPAIRED_WITHIN: Duration = Duration::from_secs(10);

async fn ready_installation(client: &Client) -> (String, String) {
    let run = controller_for_this_binary();
    let profile = unique_name("driftprof");
    let spec: InstallationProfileSpec = serde_json::from_value(serde_json::json!({
        "image": "registry.example/app", "defaultVersion": "1.0.0",
        "env": [{ "name": "DATABASE_URL", "value": "{{ database.url }}" }]
    }))
    .unwrap();
    Api::<InstallationProfile>::all(client.clone())
        .create(
            &PostParams::default(),
            &InstallationProfile::new(&profile, spec),
        )
        .await
        .unwrap();
    let name = unique_name("drift");
    let mut ti = TestInstallation::new(
        &name,
        TestInstallationSpec {
            profile: Some(profile.clone()),
            ..Default::default()
        },
    );
    ti.labels_mut().insert(TEST_RUN_LABEL.into(), run.into());
    let api: Api<TestInstallation> = Api::all(client.clone());
    api.create(&PostParams::default(), &ti).await.unwrap();
    wait_for(
        &format!("{name} Ready"),
        Duration::from_secs(60),
        || async {
            let ti = api.get(&name).await.map_err(|e| e.to_string())?;
            if ti.phase() == Some(Phase::Ready) {
                Ok(())
            } else {
                Err(format!("{:?}", ti.status))
            }
        },
    )
    .await;
    (name, profile)
}

/// Deletes every object of kind `K` of the installation, one after another,
/// and checks that each comes back (a new uid) within the limit. A Secret
/// must come back with the same data: generated passwords are restored from
/// their copy, never generated anew.
async fn each_comes_back<K>(client: &Client, namespace: &str) -> usize
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let selector = "app.kubernetes.io/managed-by=ephemera";
    let objects = api
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items;
    let kind = K::kind(&());
    assert!(!objects.is_empty(), "the installation has no {kind}");
    for object in &objects {
        let name = object.name_any();
        let uid = object.uid().unwrap();
        api.delete(&name, &DeleteParams::background())
            .await
            .unwrap();
        let deleted = Instant::now();
        wait_for(
            &format!("{kind} {namespace}/{name} back after a delete by hand"),
            REPAIRED_WITHIN,
            || async {
                match api.get_opt(&name).await.map_err(|e| e.to_string())? {
                    Some(o) if o.uid().as_deref() != Some(uid.as_str()) => Ok(()),
                    Some(_) => Err("still the old one".to_string()),
                    None => Err("absent".to_string()),
                }
            },
        )
        .await;
        println!("{kind} {name} back after {:?}", deleted.elapsed());
        if kind == "Secret" {
            let back = api.get(&name).await.unwrap();
            let data = |o: &K| serde_json::to_value(o).unwrap()["data"].clone();
            assert!(
                !data(object).is_null(),
                "Secret {namespace}/{name} had no data"
            );
            // The copy's file store keys are generated anew when nothing
            // uses them (this installation has no file store); every other
            // value comes back as it was.
            let in_use = |o: &K| {
                let mut data = data(o);
                if let Some(map) = data.as_object_mut() {
                    map.retain(|key, _| !key.starts_with("filestore"));
                }
                data
            };
            assert!(
                in_use(&back) == in_use(object),
                "Secret {namespace}/{name} came back with other values than before its deletion"
            );
        }
    }
    objects.len()
}

#[tokio::test]
async fn hand_deleted_or_edited_children_come_back_within_seconds() {
    let client = client().await;
    let (name, profile) = ready_installation(&client).await;
    let namespace = format!("ti-{name}");
    let _cleanup = Cleanup(name.clone(), profile.clone());

    let mut kinds = 0;
    kinds += each_comes_back::<Secret>(&client, &namespace).await.min(1);
    kinds += each_comes_back::<Service>(&client, &namespace).await.min(1);
    kinds += each_comes_back::<NetworkPolicy>(&client, &namespace)
        .await
        .min(1);
    kinds += each_comes_back::<ResourceQuota>(&client, &namespace)
        .await
        .min(1);
    kinds += each_comes_back::<LimitRange>(&client, &namespace)
        .await
        .min(1);
    kinds += each_comes_back::<Ingress>(&client, &namespace).await.min(1);
    kinds += each_comes_back::<Deployment>(&client, &namespace)
        .await
        .min(1);
    kinds += each_comes_back::<StatefulSet>(&client, &namespace)
        .await
        .min(1);
    assert_eq!(kinds, 8);

    // Edited by hand: the controller's fields come back.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let scale = serde_json::json!({ "spec": { "replicas": 3 } });
    deployments
        .patch("app", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    wait_for("the app's replicas set back", REPAIRED_WITHIN, || async {
        let d = deployments.get("app").await.map_err(|e| e.to_string())?;
        match d.spec.and_then(|s| s.replicas) {
            Some(1) => Ok(()),
            other => Err(format!("replicas {other:?}")),
        }
    })
    .await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &namespace);
    let quota = quotas
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let quota_name = quota.name_any();
    let hard = quota.spec.clone().and_then(|s| s.hard);
    let loosen = serde_json::json!({ "spec": { "hard": { "pods": "1000" } } });
    quotas
        .patch(&quota_name, &PatchParams::default(), &Patch::Merge(&loosen))
        .await
        .unwrap();
    wait_for("the quota set back", REPAIRED_WITHIN, || async {
        let q = quotas.get(&quota_name).await.map_err(|e| e.to_string())?;
        let now = q.spec.and_then(|s| s.hard);
        if now == hard {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;

    // Still Ready after all that.
    let api: Api<TestInstallation> = Api::all(client.clone());
    wait_for("Ready again", Duration::from_secs(30), || async {
        let ti = api.get(&name).await.map_err(|e| e.to_string())?;
        if ti.phase() == Some(Phase::Ready) {
            Ok(())
        } else {
            Err(format!("{:?}", ti.status))
        }
    })
    .await;
}

struct Cleanup(String, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        support::force_remove_installations(
            vec![format!("{TEST_RUN_LABEL}={}", controller_for_this_binary())],
            vec![self.1.clone()],
        );
        let _ = &self.0;
    }
}
