//! The controller against the real API server: a TestInstallation becomes a
//! complete installation, its status can be trusted, and bad input is
//! refused with a message a person understands.

mod support;

use std::{collections::BTreeMap, time::Duration};

use ephemera::api::{
    InstallationProfile, InstallationProfileSpec, Phase, ProfileEnvVar, TestInstallation,
    TestInstallationSpec,
};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{LimitRange, Namespace, ResourceQuota, Secret, Service},
    networking::v1::{Ingress, NetworkPolicy},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{TEST_RUN_LABEL, client, controller_for_this_binary, unique_name, wait_for};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

async fn create_profile(client: &Client, name: &str, spec: InstallationProfileSpec) {
    let profiles: Api<InstallationProfile> = Api::all(client.clone());
    profiles
        .create(
            &PostParams::default(),
            &InstallationProfile::new(name, spec),
        )
        .await
        .unwrap_or_else(|err| panic!("creating profile {name}: {err}"));
}

fn app_profile() -> InstallationProfileSpec {
    serde_json::from_value(json!({
        "image": "registry.example/team/app",
        // Tests of pull failures ask for images from here.
        "allowedImages": ["missing.invalid/**"],
        "defaultVersion": "1.0.0",
        "containerPort": 8065,
        "healthPath": "/api/v4/system/ping",
        "env": [
            { "name": "SITE_URL", "value": "{{ url }}" },
            { "name": "DATASOURCE", "value": "{{ database.url }}" }
        ]
    }))
    .unwrap()
}

async fn create_installation(
    client: &Client,
    name: &str,
    spec: TestInstallationSpec,
) -> TestInstallation {
    let run = controller_for_this_binary();
    let mut ti = TestInstallation::new(name, spec);
    ti.labels_mut().insert(TEST_RUN_LABEL.into(), run.into());
    Api::<TestInstallation>::all(client.clone())
        .create(&PostParams::default(), &ti)
        .await
        .unwrap_or_else(|err| panic!("creating TestInstallation {name}: {err}"))
}

async fn wait_for_phase(client: &Client, name: &str, phase: Phase) -> TestInstallation {
    let api: Api<TestInstallation> = Api::all(client.clone());
    wait_for(&format!("{name} to be {phase}"), READY_TIMEOUT, || async {
        let ti = api.get(name).await.map_err(|e| e.to_string())?;
        if ti.phase() == Some(phase) {
            Ok(ti)
        } else {
            Err(format!("{:#?}", ti.status))
        }
    })
    .await
}

fn condition<'a>(
    ti: &'a TestInstallation,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    ti.condition(type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {:#?}", ti.status))
}

#[tokio::test]
async fn installation_becomes_ready_with_every_part_and_trustworthy_status() {
    let client = client().await;
    controller_for_this_binary();
    let profile = unique_name("prof");
    create_profile(&client, &profile, app_profile()).await;
    let name = unique_name("ready");
    let spec = TestInstallationSpec {
        profile: Some(profile.clone()),
        version: Some("2.0.0".into()),
        ttl: Some("2h".into()),
        ..Default::default()
    };
    create_installation(&client, &name, spec).await;
    let ti = wait_for_phase(&client, &name, Phase::Ready).await;

    let status = ti.status.clone().unwrap();
    let ns = format!("ti-{name}");
    assert_eq!(status.namespace.as_deref(), Some(ns.as_str()));
    assert_eq!(
        status.url.as_deref(),
        Some(format!("https://{name}.ephemera.localhost").as_str())
    );
    assert_eq!(status.version.as_deref(), Some("2.0.0"));
    assert_eq!(status.observed_generation, ti.metadata.generation);
    assert!(status.ready_at.is_some());
    let expected_expiry = ti.metadata.creation_timestamp.clone().unwrap().0
        + k8s_openapi::jiff::SignedDuration::from_hours(2);
    assert_eq!(
        status.expires_at.as_ref().map(|t| t.0),
        Some(expected_expiry)
    );
    let creds = status.credentials_secret.clone().unwrap();
    assert_eq!(
        (creds.namespace.as_str(), creds.name.as_str()),
        (ns.as_str(), "credentials")
    );
    for type_ in [
        "Ready",
        "DatabaseReady",
        "FilestoreReady",
        "AppReady",
        "IngressReady",
    ] {
        assert_eq!(
            condition(&ti, type_).status,
            "True",
            "{type_}: {:#?}",
            condition(&ti, type_)
        );
    }
    assert_eq!(condition(&ti, "Reconciling").status, "False");
    assert_eq!(condition(&ti, "Stalled").status, "False");
    let text = serde_json::to_string(&status).unwrap();

    // The namespace and what is in it.
    let namespace = Api::<Namespace>::all(client.clone())
        .get(&ns)
        .await
        .unwrap();
    let labels = namespace.labels();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "ephemera");
    assert_eq!(labels["ephemera.dev/installation"], name);
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(namespace.owner_references()[0].uid, ti.uid().unwrap());

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let credentials = secrets.get("credentials").await.unwrap();
    let data = credentials.data.clone().unwrap();
    for key in ["adminUser", "adminPassword", "user", "userPassword"] {
        assert!(data.contains_key(key), "credentials lack {key}");
    }
    let admin_password = String::from_utf8(data["adminPassword"].0.clone()).unwrap();
    assert!(admin_password.len() >= 20);
    assert!(
        !text.contains(&admin_password),
        "the status must never hold credentials"
    );

    let env = secrets.get("app-env").await.unwrap().data.unwrap();
    assert_eq!(
        String::from_utf8(env["SITE_URL"].0.clone()).unwrap(),
        format!("https://{name}.ephemera.localhost")
    );
    assert!(
        String::from_utf8(env["DATASOURCE"].0.clone())
            .unwrap()
            .starts_with("postgres://app:")
    );

    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("app")
        .await
        .unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("registry.example/team/app:2.0.0")
    );
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    let db = Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .get("database")
        .await
        .unwrap();
    assert_eq!(db.status.unwrap().ready_replicas, Some(1));
    let svc = Api::<Service>::namespaced(client.clone(), &ns)
        .get("database")
        .await
        .unwrap();
    assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let ingress = Api::<Ingress>::namespaced(client.clone(), &ns)
        .get("app")
        .await
        .unwrap();
    assert_eq!(
        ingress.spec.unwrap().rules.unwrap()[0].host.as_deref(),
        Some(format!("{name}.ephemera.localhost").as_str())
    );
    Api::<ResourceQuota>::namespaced(client.clone(), &ns)
        .get("quota")
        .await
        .unwrap();
    Api::<LimitRange>::namespaced(client.clone(), &ns)
        .get("defaults")
        .await
        .unwrap();
    Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .get("isolate")
        .await
        .unwrap();

    // A spec change rolls the app but never regenerates the credentials.
    let api: Api<TestInstallation> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "version": "2.1.0" } })),
    )
    .await
    .unwrap();
    wait_for("version 2.1.0 to run", READY_TIMEOUT, || async {
        let ti = api.get(&name).await.map_err(|e| e.to_string())?;
        let s = ti.status.clone().unwrap_or_default();
        if s.version.as_deref() == Some("2.1.0") && ti.phase() == Some(Phase::Ready) {
            Ok(())
        } else {
            Err(format!("{s:#?}"))
        }
    })
    .await;
    let again = secrets.get("credentials").await.unwrap().data.unwrap();
    assert_eq!(
        again["adminPassword"], data["adminPassword"],
        "credentials were regenerated"
    );

    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn missing_profile_stalls_until_the_profile_appears() {
    let client = client().await;
    controller_for_this_binary();
    let profile = unique_name("later");
    let name = unique_name("noprof");
    create_installation(
        &client,
        &name,
        TestInstallationSpec {
            profile: Some(profile.clone()),
            ..Default::default()
        },
    )
    .await;
    let api: Api<TestInstallation> = Api::all(client.clone());
    let ti = wait_for("ProfileNotFound", READY_TIMEOUT, || async {
        let ti = api.get(&name).await.map_err(|e| e.to_string())?;
        match ti.condition("Stalled") {
            Some(c) if c.status == "True" && c.reason == "ProfileNotFound" => Ok(ti),
            _ => Err(format!("{:#?}", ti.status)),
        }
    })
    .await;
    assert!(ti.status.unwrap().message.unwrap().contains(&profile));

    // The profile watch brings it to life without any change to the installation.
    create_profile(&client, &profile, app_profile()).await;
    let ti = wait_for_phase(&client, &name, Phase::Ready).await;
    assert_eq!(condition(&ti, "Stalled").status, "False");
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn profile_changes_reach_the_installations_that_use_it() {
    let client = client().await;
    controller_for_this_binary();
    let profile = unique_name("chg");
    create_profile(&client, &profile, app_profile()).await;
    let name = unique_name("follow");
    create_installation(
        &client,
        &name,
        TestInstallationSpec {
            profile: Some(profile.clone()),
            ..Default::default()
        },
    )
    .await;
    wait_for_phase(&client, &name, Phase::Ready).await;
    let profiles: Api<InstallationProfile> = Api::all(client.clone());
    let mut spec = app_profile();
    spec.env.push(ProfileEnvVar {
        name: "FEATURE_FLAG".into(),
        value: Some("on-for-{{ name }}".into()),
        secret_key_ref: None,
    });
    profiles
        .patch(
            &profile,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &format!("ti-{name}"));
    wait_for("the new env to reach app-env", READY_TIMEOUT, || async {
        let data: BTreeMap<_, _> = secrets
            .get("app-env")
            .await
            .map_err(|e| e.to_string())?
            .data
            .unwrap_or_default();
        match data.get("FEATURE_FLAG") {
            Some(v) if v.0 == format!("on-for-{name}").into_bytes() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    Api::<TestInstallation>::all(client.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn image_pull_back_off_is_reported_with_the_image() {
    let client = client().await;
    controller_for_this_binary();
    let profile = unique_name("pull");
    create_profile(&client, &profile, app_profile()).await;
    let name = unique_name("pullfail");
    // The local control plane's fake kubelet cannot pull from missing.invalid.
    create_installation(
        &client,
        &name,
        TestInstallationSpec {
            profile: Some(profile),
            image: Some("missing.invalid/team/app".into()),
            version: Some("abc1234".into()),
            ..Default::default()
        },
    )
    .await;
    let ti = wait_for_phase(&client, &name, Phase::Failed).await;
    let app = condition(&ti, "AppReady");
    assert_eq!(app.reason, "ImagePullBackOff");
    assert!(
        app.message.contains("missing.invalid/team/app:abc1234"),
        "{}",
        app.message
    );
    assert_eq!(condition(&ti, "Ready").status, "False");
    assert_eq!(ti.status.clone().unwrap().version, None);
    Api::<TestInstallation>::all(client.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn deletion_removes_the_namespace_and_a_recreated_name_waits_for_it() {
    let client = client().await;
    controller_for_this_binary();
    let profile = unique_name("del");
    create_profile(&client, &profile, app_profile()).await;
    let name = unique_name("again");
    let spec = TestInstallationSpec {
        profile: Some(profile),
        ..Default::default()
    };
    let first = create_installation(&client, &name, spec.clone()).await;
    wait_for_phase(&client, &name, Phase::Ready).await;
    let api: Api<TestInstallation> = Api::all(client.clone());
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_for("the installation to be gone", READY_TIMEOUT, || async {
        match api.get_opt(&name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(ti) => Err(format!(
                "{:?} {:?}",
                ti.finalizers(),
                ti.status.as_ref().map(|s| &s.message)
            )),
        }
    })
    .await;
    // The finalizer held the installation until its namespace was gone.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(
        namespaces
            .get_opt(&format!("ti-{name}"))
            .await
            .unwrap()
            .is_none()
    );

    let second = create_installation(&client, &name, spec).await;
    assert_ne!(first.uid(), second.uid());
    wait_for_phase(&client, &name, Phase::Ready).await;
    let ns = namespaces.get(&format!("ti-{name}")).await.unwrap();
    assert_eq!(ns.owner_references()[0].uid, second.uid().unwrap());
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn kubectl_wait_for_ready_works_without_custom_scripts() {
    let client = client().await;
    controller_for_this_binary();
    let profile = unique_name("kwait");
    create_profile(&client, &profile, app_profile()).await;
    let name = unique_name("kwait");
    create_installation(
        &client,
        &name,
        TestInstallationSpec {
            profile: Some(profile),
            ..Default::default()
        },
    )
    .await;
    let resource = format!("testinstallation/{name}");
    let output =
        support::kubectl(&["wait", "--for=condition=Ready", "--timeout=60s", &resource]).await;
    assert!(
        output.status.success(),
        "kubectl wait failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Api::<TestInstallation>::all(client.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn size_and_engine_changes_reshape_the_installation() {
    let client = client().await;
    controller_for_this_binary();
    let profile = unique_name("shape");
    create_profile(&client, &profile, app_profile()).await;
    let name = unique_name("shape");
    create_installation(
        &client,
        &name,
        TestInstallationSpec {
            profile: Some(profile.clone()),
            ..Default::default()
        },
    )
    .await;
    wait_for_phase(&client, &name, Phase::Ready).await;
    let ns = format!("ti-{name}");
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
    let small_quota = quotas
        .get("quota")
        .await
        .unwrap()
        .spec
        .unwrap()
        .hard
        .unwrap();

    let api: Api<TestInstallation> = Api::all(client.clone());
    // The engine cannot change under an installation: refused at admission.
    let refused = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "database": { "engine": "mysql" } } })),
        )
        .await
        .expect_err("the API server accepted a change of database.engine");
    assert!(
        refused
            .to_string()
            .contains("database.engine cannot be set, changed or removed after creation"),
        "{refused}"
    );
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "size": "miniHA" } })),
    )
    .await
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    wait_for("2 app replicas, Ready", READY_TIMEOUT, || async {
        let ti = api.get(&name).await.map_err(|e| e.to_string())?;
        let d = deployments.get("app").await.map_err(|e| e.to_string())?;
        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        if ready == 2 && ti.phase() == Some(Phase::Ready) {
            Ok(())
        } else {
            Err(format!("ready={ready} phase={:?}", ti.phase()))
        }
    })
    .await;
    let big_quota = quotas
        .get("quota")
        .await
        .unwrap()
        .spec
        .unwrap()
        .hard
        .unwrap();
    assert_ne!(small_quota["requests.cpu"], big_quota["requests.cpu"]);

    // The profile drops its database (profile edits act on the installations
    // that do not name an engine): the database objects are pruned.
    Api::<InstallationProfile>::all(client.clone())
        .patch(
            &profile,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "database": { "engine": "none" } } })),
        )
        .await
        .unwrap();
    // The profile's env still needs {{ database.url }}: that is said, not guessed.
    wait_for("ProfileTemplateInvalid", READY_TIMEOUT, || async {
        let ti = api.get(&name).await.map_err(|e| e.to_string())?;
        match ti.condition("Stalled") {
            Some(c)
                if c.status == "True"
                    && c.reason == "ProfileTemplateInvalid"
                    && c.message.contains("DATASOURCE") =>
            {
                Ok(())
            }
            _ => Err(format!("{:#?}", ti.status)),
        }
    })
    .await;
    let mut spec = app_profile();
    spec.env.retain(|e| e.name != "DATASOURCE");
    Api::<InstallationProfile>::all(client.clone())
        .patch(
            &profile,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "env": spec.env } })),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "the database objects to be pruned",
        READY_TIMEOUT,
        || async {
            let sts = stateful_sets
                .get_opt("database")
                .await
                .map_err(|e| e.to_string())?;
            let svc = services
                .get_opt("database")
                .await
                .map_err(|e| e.to_string())?;
            let secret = secrets
                .get_opt("database")
                .await
                .map_err(|e| e.to_string())?;
            if sts.is_none() && svc.is_none() && secret.is_none() {
                Ok(())
            } else {
                Err(format!(
                    "sts={} svc={} secret={}",
                    sts.is_some(),
                    svc.is_some(),
                    secret.is_some()
                ))
            }
        },
    )
    .await;
    let ti = wait_for_phase(&client, &name, Phase::Ready).await;
    assert_eq!(condition(&ti, "DatabaseReady").reason, "NotRequired");
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn fixing_a_missing_image_recovers_without_manual_steps() {
    let client = client().await;
    controller_for_this_binary();
    let profile = unique_name("fix");
    create_profile(&client, &profile, app_profile()).await;
    let name = unique_name("fix");
    create_installation(
        &client,
        &name,
        TestInstallationSpec {
            profile: Some(profile),
            image: Some("missing.invalid/team/app".into()),
            ..Default::default()
        },
    )
    .await;
    wait_for_phase(&client, &name, Phase::Failed).await;
    let api: Api<TestInstallation> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({ "spec": { "image": "registry.example/team/app", "version": "1.0.1" } }),
        ),
    )
    .await
    .unwrap();
    let ti = wait_for_phase(&client, &name, Phase::Ready).await;
    assert_eq!(
        ti.status.as_ref().unwrap().version.as_deref(),
        Some("1.0.1")
    );
    assert_eq!(condition(&ti, "AppReady").reason, "Running");
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}
