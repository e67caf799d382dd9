//! The files in examples/ work as shipped: each is applied to the real API
//! server (renamed so runs never collide) and becomes Ready.

mod support;

use std::time::Duration;

use ephemera::api::{InstallationProfile, Link, Phase, RunPhase, TestInstallation, TestRun};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, PostParams},
};
use support::{TEST_RUN_LABEL, client, controller_for_this_binary, unique_name, wait_for};

const TIMEOUT: Duration = Duration::from_secs(90);

/// The documents of a multi-document YAML text.
fn documents(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("example YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}
use serde::Deserialize;

/// Creates the profiles and installations of `docs` under names with
/// `suffix`, keeping every other field as written. Returns the
/// installations' new names.
async fn apply_renamed(client: &Client, docs: Vec<serde_yaml::Value>, suffix: &str) -> Vec<String> {
    let run = controller_for_this_binary();
    let profile_names: Vec<String> = docs
        .iter()
        .filter(|d| d["kind"] == "InstallationProfile")
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let renamed = |name: &str| format!("{name}-{suffix}");
    let mut installations = vec![];
    for doc in docs {
        match doc["kind"].as_str() {
            Some("InstallationProfile") => {
                let mut p: InstallationProfile = serde_yaml::from_value(doc).unwrap();
                p.metadata.name = Some(renamed(&p.name_any()));
                Api::<InstallationProfile>::all(client.clone())
                    .create(&PostParams::default(), &p)
                    .await
                    .unwrap();
            }
            Some("TestInstallation") => {
                let mut ti: TestInstallation = serde_yaml::from_value(doc).unwrap();
                let name = renamed(&ti.name_any());
                ti.metadata.name = Some(name.clone());
                let profile = ti.spec.profile.clone().unwrap_or_else(|| "default".into());
                if profile_names.contains(&profile) {
                    ti.spec.profile = Some(renamed(&profile));
                }
                ti.labels_mut().insert(TEST_RUN_LABEL.into(), run.into());
                Api::<TestInstallation>::all(client.clone())
                    .create(&PostParams::default(), &ti)
                    .await
                    .unwrap_or_else(|err| panic!("creating {name}: {err}"));
                installations.push(name);
            }
            other => panic!("unexpected kind {other:?} in an example"),
        }
    }
    installations
}

async fn wait_settled(client: &Client, name: &str) -> TestInstallation {
    let api: Api<TestInstallation> = Api::all(client.clone());
    wait_for(
        &format!("{name} to be Ready (or Hibernated)"),
        TIMEOUT,
        || async {
            let ti = api.get(name).await.map_err(|e| e.to_string())?;
            let hibernate = ti.spec.hibernate;
            match ti.phase() {
                Some(Phase::Ready) if !hibernate => Ok(ti),
                Some(Phase::Hibernated)
                    if hibernate
                        && ti
                            .condition("Reconciling")
                            .is_some_and(|c| c.status == "False") =>
                {
                    Ok(ti)
                }
                _ => Err(format!("{:#?}", ti.status)),
            }
        },
    )
    .await
}

/// Runs a suite or action of an example against `installation` and
/// returns the finished run (on the fake node the Job simply completes).
async fn run_to_end(client: &Client, installation: &str, spec: serde_json::Value) -> TestRun {
    let name = unique_name("exrun");
    let mut spec = spec;
    spec["installation"] = installation.into();
    let run = TestRun::new(&name, serde_json::from_value(spec).unwrap());
    let api: Api<TestRun> = Api::all(client.clone());
    api.create(&PostParams::default(), &run).await.unwrap();
    wait_for(&format!("run {name} to finish"), TIMEOUT, || async {
        let run = api.get(&name).await.map_err(|e| e.to_string())?;
        match run.phase() {
            Some(p) if p.is_finished() => Ok(run),
            _ => Err(format!("{:#?}", run.status)),
        }
    })
    .await
}

async fn job_args(client: &Client, run: &TestRun) -> Vec<String> {
    let status = run.status.clone().unwrap();
    let job = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(
        client.clone(),
        status.namespace.as_deref().unwrap(),
    )
    .get(status.job_name.as_deref().unwrap())
    .await
    .unwrap();
    let c = job.spec.unwrap().template.spec.unwrap().containers[0].clone();
    c.command
        .unwrap_or_default()
        .into_iter()
        .chain(c.args.unwrap_or_default())
        .collect()
}

async fn delete_all(client: &Client, names: &[String]) {
    let api: Api<TestInstallation> = Api::all(client.clone());
    for name in names {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
}

fn example(path: &str) -> String {
    std::fs::read_to_string(format!("{}/examples/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[tokio::test]
async fn quickstart_becomes_ready_and_kubectl_shows_the_printer_columns() {
    let client = client().await;
    let suffix = unique_name("qs");
    let names = apply_renamed(&client, documents(&example("quickstart.yaml")), &suffix).await;
    assert_eq!(names.len(), 1);
    let ti = wait_settled(&client, &names[0]).await;
    for part in [
        "DatabaseReady",
        "FilestoreReady",
        "AppReady",
        "IngressReady",
    ] {
        assert_eq!(ti.condition(part).unwrap().status, "True", "{part}");
    }

    let output = support::kubectl(&["get", "ti", &names[0]]).await;
    let table = String::from_utf8_lossy(&output.stdout);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "VERSION", "URL", "EXPIRES", "AGE"],
        "{table}"
    );
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains("Ready") && row.contains("6.9.2") && row.contains("https://"),
        "{row}"
    );

    let url = format!("https://{}.ephemera.localhost", names[0]);
    assert_eq!(
        ti.status.as_ref().unwrap().links,
        vec![Link {
            name: "app".into(),
            url: url.clone()
        }]
    );
    let smoke = run_to_end(&client, &names[0], serde_json::json!({ "test": "smoke" })).await;
    assert_eq!(
        smoke.phase(),
        Some(RunPhase::Succeeded),
        "{:?}",
        smoke.status
    );
    let version = run_to_end(
        &client,
        &names[0],
        serde_json::json!({ "action": "version" }),
    )
    .await;
    assert_eq!(
        version.phase(),
        Some(RunPhase::Succeeded),
        "{:?}",
        version.status
    );
    assert!(version.status.unwrap().read_only);
    delete_all(&client, &names).await;
}

#[tokio::test]
async fn mattermost_example_becomes_ready_with_minio_and_its_env() {
    let client = client().await;
    let suffix = unique_name("mm");
    let names = apply_renamed(&client, documents(&example("mattermost.yaml")), &suffix).await;
    let ti = wait_settled(&client, &names[0]).await;
    assert_eq!(ti.condition("FilestoreReady").unwrap().reason, "Running");
    let ns = ti.status.clone().unwrap().namespace.unwrap();
    let env = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .get("app-env")
        .await
        .unwrap()
        .data
        .unwrap();
    let value = |k: &str| String::from_utf8(env[k].0.clone()).unwrap();
    assert!(value("MM_SQLSETTINGS_DATASOURCE").starts_with("postgres://app:"));
    assert!(
        value("MM_SQLSETTINGS_DATASOURCE")
            .ends_with("/mattermost?sslmode=disable&connect_timeout=10")
    );
    assert_eq!(
        value("MM_SERVICESETTINGS_SITEURL"),
        format!("https://{}.ephemera.localhost", names[0])
    );
    assert_eq!(
        value("MM_FILESETTINGS_AMAZONS3ENDPOINT"),
        format!("filestore.{ns}.svc:9000")
    );

    let list = run_to_end(
        &client,
        &names[0],
        serde_json::json!({ "action": "list-users", "parameters": { "page": "2", "team": "qa-1" } }),
    )
    .await;
    assert_eq!(list.phase(), Some(RunPhase::Succeeded), "{:?}", list.status);
    let args = job_args(&client, &list).await;
    assert_eq!(args[0..2], ["/bin/sh", "-c"]);
    assert_eq!(args[3..], ["list-users", "2", "qa-1"]);
    let all_teams = run_to_end(
        &client,
        &names[0],
        serde_json::json!({ "action": "list-users" }),
    )
    .await;
    assert_eq!(
        job_args(&client, &all_teams).await[3..],
        ["list-users", "0", ""]
    );
    let bad = run_to_end(
        &client,
        &names[0],
        serde_json::json!({ "action": "list-users", "parameters": { "team": "x; reboot" } }),
    )
    .await;
    assert_eq!(
        bad.status.unwrap().reason.as_deref(),
        Some("InvalidParameters")
    );
    for run in [
        serde_json::json!({ "action": "system-status" }),
        serde_json::json!({ "action": "sampledata", "parameters": { "users": "5" } }),
        serde_json::json!({ "test": "e2e" }),
    ] {
        let done = run_to_end(&client, &names[0], run.clone()).await;
        assert_eq!(
            done.phase(),
            Some(RunPhase::Succeeded),
            "{run}: {:?}",
            done.status
        );
    }
    let links = ti.status.unwrap().links;
    assert_eq!(links.len(), 2, "{links:?}");
    assert!(
        links[1].url.ends_with(&format!("var-namespace={ns}")),
        "{links:?}"
    );
    delete_all(&client, &names).await;
}

#[tokio::test]
async fn gitops_directory_applies_as_a_repository_would() {
    let client = client().await;
    let suffix = unique_name("git");
    let root = format!("{}/examples/gitops", env!("CARGO_MANIFEST_DIR"));
    let kustomization: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{root}/kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let mut docs = vec![];
    for resource in kustomization["resources"].as_sequence().unwrap() {
        let path = format!("{root}/{}", resource.as_str().unwrap());
        docs.extend(documents(&std::fs::read_to_string(path).unwrap()));
    }
    let names = apply_renamed(&client, docs, &suffix).await;
    assert_eq!(names.len(), 2);
    for name in &names {
        let ti = wait_settled(&client, name).await;
        assert_eq!(ti.labels()["ephemera.dev/source"], "gitops");
    }
    delete_all(&client, &names).await;
}

#[tokio::test]
async fn ha_example_upgrades_with_two_replicas_and_a_persistent_database() {
    let client = client().await;
    // The local plane has no volume provisioner: provide the volume the
    // database's claim binds to, as a cluster's provisioner would.
    let pv_name = unique_name("pv-ha");
    let pv: k8s_openapi::api::core::v1::PersistentVolume =
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": pv_name },
            "spec": {
                "capacity": { "storage": "5Gi" },
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "hostPath": { "path": format!("/tmp/{pv_name}") }
            }
        }))
        .unwrap();
    let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
    pvs.create(&PostParams::default(), &pv).await.unwrap();

    let suffix = unique_name("ha");
    let mut docs = documents(&example("mattermost.yaml"));
    docs.retain(|d| d["kind"] == "InstallationProfile");
    docs.extend(documents(&example("ha.yaml")));
    let names = apply_renamed(&client, docs, &suffix).await;
    let ti = wait_settled(&client, &names[0]).await;
    assert_eq!(ti.condition("Upgraded").unwrap().status, "True");
    assert_eq!(
        ti.status.clone().unwrap().version.as_deref(),
        Some("10.11.4")
    );
    let ns = ti.status.unwrap().namespace.unwrap();
    let app = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns)
        .get("app")
        .await
        .unwrap();
    assert_eq!(app.status.unwrap().ready_replicas, Some(2));
    let claims =
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(client.clone(), &ns)
            .list(&Default::default())
            .await
            .unwrap();
    assert_eq!(claims.items.len(), 1);
    assert_eq!(
        claims.items[0]
            .spec
            .as_ref()
            .unwrap()
            .volume_name
            .as_deref(),
        Some(pv_name.as_str())
    );
    delete_all(&client, &names).await;
    let _ = pvs.delete(&pv_name, &DeleteParams::default()).await;
}
