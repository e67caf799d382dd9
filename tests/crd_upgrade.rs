//! CRD upgrades. Helm installs `crds/` once and never upgrades them; the
//! controller started with `--apply-crds` (the chart's default) brings them
//! to its own version. This upgrades a release whose cluster still has the
//! previous CRDs (those of commit ad189ec, kept in tests/fixtures, plus a
//! property the new version dropped) with installations present, and checks
//! that nothing is lost and nothing old is left behind.

mod support;

use std::time::Duration;

use ephemera::api::{
    InstallationProfile, InstallationProfileSpec, Phase, TestInstallation, TestInstallationSpec,
    crd_upgrade::{Outcome, THIS_VERSION, VERSION_ANNOTATION, apply_crds, desired_crds},
};
use k8s_openapi::{
    api::core::v1::{Namespace, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, PostParams},
};
use support::{
    TEST_RUN_LABEL,
    chart::{CHART, RunningController, client_as, helm, ok},
    client, install_crds, unique_name, wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(60);
/// The CRDs as the previous release installed them.
const PREVIOUS_CRDS: &str = include_str!("fixtures/crds-ad189ec.yaml");
/// A property of the previous schema that the current one does not have.
const RETIRED: &str = "retiredField";
const TI_CRD: &str = "testinstallations.ephemera.dev";

fn previous_crds() -> Vec<CustomResourceDefinition> {
    PREVIOUS_CRDS
        .split("---\n")
        .filter(|doc| !doc.trim().is_empty())
        .map(|doc| {
            let mut crd: CustomResourceDefinition = serde_yaml::from_str(doc).unwrap();
            if crd.name_any() == TI_CRD {
                let spec = crd.spec.versions[0]
                    .schema
                    .as_mut()
                    .and_then(|s| s.open_api_v3_schema.as_mut())
                    .and_then(|s| s.properties.as_mut())
                    .and_then(|p| p.get_mut("spec"))
                    .and_then(|s| s.properties.as_mut())
                    .unwrap();
                spec.insert(
                    RETIRED.into(),
                    serde_json::from_value(serde_json::json!({ "type": "string" })).unwrap(),
                );
            }
            crd
        })
        .collect()
}

fn schema_json(crd: &CustomResourceDefinition) -> serde_json::Value {
    serde_json::to_value(&crd.spec.versions).unwrap()
}

fn has_retired_property(crd: &CustomResourceDefinition) -> bool {
    schema_json(crd)[0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        .get(RETIRED)
        .is_some()
}

/// Puts the previous CRDs on the server, as a cluster installed with the
/// previous chart has them (written by Helm: no version annotation), and
/// removes the CRDs that version did not have.
async fn put_previous_crds(admin: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let previous: Vec<String> = previous_crds().iter().map(|c| c.name_any()).collect();
    for added in desired_crds() {
        if !previous.contains(&added.name_any()) {
            let name = added.name_any();
            if api.get_opt(&name).await.unwrap().is_some() {
                api.delete(&name, &Default::default()).await.unwrap();
            }
            wait_for(&format!("{name} deleted"), TIMEOUT, || async {
                match api.get_opt(&name).await.map_err(|e| e.to_string())? {
                    None => Ok(()),
                    Some(_) => Err("still there".to_string()),
                }
            })
            .await;
        }
    }
    for old in previous_crds() {
        let mut current = api.get(&old.name_any()).await.unwrap();
        current.spec = old.spec;
        current.annotations_mut().remove(VERSION_ANNOTATION);
        current.metadata.managed_fields = None;
        api.replace(&current.name_any(), &PostParams::default(), &current)
            .await
            .unwrap();
    }
}

async fn wait_ready(installations: &Api<TestInstallation>, name: &str, why: &str) {
    wait_for(&format!("{name} Ready {why}"), TIMEOUT, || async {
        let ti = installations.get(name).await.map_err(|e| e.to_string())?;
        (ti.phase() == Some(Phase::Ready))
            .then_some(())
            .ok_or_else(|| format!("{:?}", ti.status))
    })
    .await;
}

async fn wait_credentials(admin: &Client, name: &str, why: &str) {
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &format!("ti-{name}"));
    wait_for(&format!("{name}'s credentials {why}"), TIMEOUT, || async {
        secrets
            .get_opt("credentials")
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .ok_or_else(|| "no credentials Secret yet".to_string())
    })
    .await;
}

/// What must survive the upgrade unchanged, per installation.
#[derive(Debug, PartialEq)]
struct Kept {
    uid: Option<String>,
    spec: serde_json::Value,
    namespace_uid: Option<String>,
    credentials: Option<std::collections::BTreeMap<String, k8s_openapi::ByteString>>,
}

async fn kept(admin: &Client, name: &str) -> Kept {
    let ti = Api::<TestInstallation>::all(admin.clone())
        .get(name)
        .await
        .unwrap();
    let ns = format!("ti-{name}");
    Kept {
        uid: ti.uid(),
        spec: serde_json::to_value(&ti.spec).unwrap(),
        namespace_uid: Api::<Namespace>::all(admin.clone())
            .get(&ns)
            .await
            .unwrap()
            .uid(),
        credentials: Api::<Secret>::namespaced(admin.clone(), &ns)
            .get("credentials")
            .await
            .unwrap()
            .data,
    }
}

#[tokio::test]
async fn helm_upgrade_then_controller_start_brings_crds_current_and_loses_nothing() {
    let admin = client().await;
    install_crds(&admin).await;
    put_previous_crds(&admin).await;
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    assert!(has_retired_property(&crds.get(TI_CRD).await.unwrap()));

    let release = unique_name("crdup");
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({ "metadata": { "name": release } }))
                .unwrap(),
        )
        .await
        .unwrap();
    let install_args = [
        "-n",
        release.as_str(),
        "--set",
        "deletionLock.install=false",
    ];
    ok(
        &helm(&[&["install", release.as_str(), CHART][..], &install_args[..]].concat()).await,
        "helm install",
    );

    // Installations made under the previous CRDs, Ready.
    let as_controller = client_as(&release, &format!("{release}-controller")).await;
    let controller = RunningController::start(as_controller.clone(), &release).await;
    let profile = unique_name("crdprof");
    let spec: InstallationProfileSpec = serde_json::from_value(serde_json::json!({
        "image": "registry.example/app", "defaultVersion": "1.0.0",
        "database": { "engine": "postgres" }, "filestore": { "type": "minio" }
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
    let installations: Api<TestInstallation> = Api::all(admin.clone());
    let names: Vec<String> = (0..3).map(|_| unique_name("crdup")).collect();
    for (i, name) in names.iter().enumerate() {
        let mut ti = TestInstallation::new(
            name,
            TestInstallationSpec {
                profile: Some(profile.clone()),
                ttl: Some(format!("{}h", 10 + i)),
                ..Default::default()
            },
        );
        ti.labels_mut()
            .insert(TEST_RUN_LABEL.into(), release.clone());
        installations
            .create(&PostParams::default(), &ti)
            .await
            .unwrap();
    }
    // A controller of this version cannot write its status through the
    // previous schema: server-side apply refuses `status.ttl`, a field the
    // old schema does not declare. That is why it brings the CRDs current at
    // start. Its children are applied all the same, so the credentials exist.
    for name in &names {
        wait_credentials(&admin, name, "under the previous CRDs").await;
    }
    let mut before = Vec::new();
    for name in &names {
        before.push(kept(&admin, name).await);
    }

    // `helm upgrade` alone leaves the previous CRDs in place.
    ok(
        &helm(
            &[
                &["upgrade", release.as_str(), CHART][..],
                &install_args[..],
                &["--set", "controller.config.concurrency=2"][..],
            ]
            .concat(),
        )
        .await,
        "helm upgrade",
    );
    assert!(
        has_retired_property(&crds.get(TI_CRD).await.unwrap()),
        "helm upgrade changed the CRDs after all; this test no longer shows the problem"
    );
    controller.stop().await;

    // A CRD written by a newer ephemera is never downgraded.
    let mut newer = crds.get(TI_CRD).await.unwrap();
    newer
        .annotations_mut()
        .insert(VERSION_ANNOTATION.into(), "99.0.0".into());
    newer.metadata.managed_fields = None;
    let newer = crds
        .replace(TI_CRD, &PostParams::default(), &newer)
        .await
        .unwrap();
    let outcomes = apply_crds(&as_controller).await.unwrap();
    assert!(outcomes.contains(&(
        TI_CRD.to_string(),
        Outcome::NewerKept {
            version: "99.0.0".into()
        }
    )));
    let kept_crd = crds.get(TI_CRD).await.unwrap();
    assert_eq!(kept_crd.resource_version(), newer.resource_version());
    put_previous_crds(&admin).await;

    // A ServiceAccount without the chart's CRD rule is refused, clearly.
    let helmless = client_as(&release, "default").await;
    let refused = apply_crds(&helmless).await.unwrap_err().to_string();
    assert!(
        refused.contains("not allowed to write CRD") && refused.contains("kubectl apply"),
        "{refused}"
    );

    // The new controller starts: its ServiceAccount brings the CRDs to this
    // version, and the dropped property is gone.
    let outcomes = apply_crds(&as_controller).await.unwrap();
    let previous: Vec<String> = previous_crds().iter().map(|c| c.name_any()).collect();
    for crd in desired_crds() {
        let expected = if previous.contains(&crd.name_any()) {
            Outcome::Updated { from_version: None }
        } else {
            Outcome::Created
        };
        assert_eq!(
            outcomes
                .iter()
                .find(|(name, _)| *name == crd.name_any())
                .map(|(_, o)| o),
            Some(&expected),
            "{outcomes:?}"
        );
        let stored = crds.get(&crd.name_any()).await.unwrap();
        assert_eq!(
            schema_json(&stored),
            schema_json(&crd),
            "the stored schema of {} is not the generated one",
            crd.name_any()
        );
        assert_eq!(
            stored
                .annotations()
                .get(VERSION_ANNOTATION)
                .map(String::as_str),
            Some(THIS_VERSION)
        );
    }
    assert!(!has_retired_property(&crds.get(TI_CRD).await.unwrap()));
    let again = apply_crds(&as_controller).await.unwrap();
    assert!(
        again.iter().all(|(_, o)| *o == Outcome::Unchanged),
        "a second start wrote the CRDs again: {again:?}"
    );

    // Nothing lost: same objects, same credentials, same expiry, still Ready,
    // and the controller goes on reconciling them and new ones.
    let controller = RunningController::start(as_controller, &release).await;
    let extra = unique_name("crdup");
    let mut ti = TestInstallation::new(
        &extra,
        TestInstallationSpec {
            profile: Some(profile.clone()),
            ..Default::default()
        },
    );
    ti.labels_mut()
        .insert(TEST_RUN_LABEL.into(), release.clone());
    installations
        .create(&PostParams::default(), &ti)
        .await
        .unwrap();
    wait_ready(&installations, &extra, "under the new CRDs").await;
    for (i, (name, before)) in names.iter().zip(&before).enumerate() {
        wait_ready(&installations, name, "after the CRD upgrade").await;
        assert_eq!(&kept(&admin, name).await, before, "{name} changed");
        // The expiry is the one promised at creation: creation + spec.ttl.
        let ti = installations.get(name).await.unwrap();
        let created = ti.metadata.creation_timestamp.clone().unwrap().0;
        let expires = ti.status.and_then(|s| s.expires_at).unwrap().0;
        assert_eq!(
            expires.as_second() - created.as_second(),
            (10 + i as i64) * 3600,
            "{name}'s expiry is not creation + its ttl"
        );
    }

    support::delete_installations_and_wait(
        &admin,
        &[format!("{TEST_RUN_LABEL}={release}")],
        TIMEOUT,
    )
    .await;
    controller.stop().await;
    ok(
        &helm(&["uninstall", &release, "-n", &release]).await,
        "helm uninstall",
    );
    profiles
        .delete(&profile, &DeleteParams::default())
        .await
        .unwrap();
    Api::<Namespace>::all(admin.clone())
        .delete(&release, &DeleteParams::default())
        .await
        .unwrap();
}
