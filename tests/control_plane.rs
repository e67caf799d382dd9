//! Proves the local control plane is a real Kubernetes: the scheduler and kwok
//! make pods Ready, the garbage collector follows ownerReferences, and the
//! namespace controller finishes deleting namespaces.

mod support;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::Job,
    core::v1::{ConfigMap, Namespace, Pod},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;
use support::{TestNamespace, client, wait_for};

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn server_reports_kubernetes_1_36() {
    let client = client().await;
    let version = client.apiserver_version().await.expect("GET /version");
    assert_eq!(version.major, "1");
    assert_eq!(version.minor, "36");
    assert!(
        version.git_version.starts_with("v1.36."),
        "server gitVersion is {}, expected v1.36.x",
        version.git_version
    );
}

#[tokio::test]
async fn deployment_with_two_replicas_becomes_ready_on_the_fake_node() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "cp-deploy").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "example.invalid/web:1" }] }
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create Deployment");

    wait_for("2 ready replicas", TIMEOUT, || async {
        let d = deployments.get("web").await.map_err(|e| e.to_string())?;
        let status = d.status.clone().unwrap_or_default();
        match status.ready_replicas {
            Some(2) => Ok(()),
            _ => Err(format!("{status:?}")),
        }
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list pods");
    assert_eq!(list.items.len(), 2, "pods: {:?}", names(&list.items));
    for pod in &list.items {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            spec.node_name.as_deref(),
            Some("kwok-node-0"),
            "pod {} was not scheduled onto the fake node",
            pod.name_any()
        );
        assert_eq!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Running")
        );
    }
    ns.delete().await;
}

#[tokio::test]
async fn garbage_collector_deletes_dependents_of_a_deleted_owner() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "cp-gc").await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let owner = maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "owner" } })).unwrap(),
        )
        .await
        .expect("create owner");
    let dependent: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap",
                "name": "owner", "uid": owner.uid().unwrap()
            }]
        }
    }))
    .unwrap();
    maps.create(&PostParams::default(), &dependent)
        .await
        .expect("create dependent");

    maps.delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    wait_for("the dependent to be garbage-collected", TIMEOUT, || async {
        match maps.get_opt("dependent").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(cm) => Err(format!(
                "still present, deletionTimestamp={:?}",
                cm.metadata.deletion_timestamp
            )),
        }
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn deleting_a_namespace_with_running_pods_completes() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "cp-nsdel").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "busy" },
        "spec": { "containers": [{ "name": "busy", "image": "example.invalid/busy:1" }] }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    wait_for("the pod to run", TIMEOUT, || async {
        let p = pods.get("busy").await.map_err(|e| e.to_string())?;
        match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Running") => Ok(()),
            other => Err(format!("phase {other:?}")),
        }
    })
    .await;

    let name = ns.name.clone();
    ns.delete().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait_for("the namespace to be gone", TIMEOUT, || async {
        match namespaces.get_opt(&name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(ns) => Err(format!("{:?}", ns.status)),
        }
    })
    .await;
}

/// The fake node's contract for run containers (hack/kwok-run-stages.yaml):
/// `run.invalid/pass` exits 0, `run.invalid/fail` exits 1, both with the
/// env var `EPHEMERA_FAKE_REPORT` as termination message, and
/// `run.invalid/hang` runs until its Job's deadline stops it.
#[tokio::test]
async fn run_images_end_as_their_name_says_with_the_fake_report() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "cp-runs").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let report =
        r#"{"summary":{"passed":3,"failed":0,"skipped":1},"output":"ok \"quoted\"\nline two"}"#;
    let job = |name: &str, image: &str, report: Option<&str>, deadline: Option<i64>| -> Job {
        let env = report
            .map(|r| json!([{ "name": "EPHEMERA_FAKE_REPORT", "value": r }]))
            .unwrap_or(json!([]));
        serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": deadline,
                "template": { "spec": {
                    "restartPolicy": "Never",
                    "containers": [{ "name": "run", "image": image, "env": env }]
                } }
            }
        }))
        .unwrap()
    };
    for j in [
        job("pass", "run.invalid/pass", Some(report), None),
        job("pass-silent", "run.invalid/pass:2", None, None),
        job("fail", "run.invalid/fail", Some("2 of 5 failed"), None),
        job("hang", "run.invalid/hang", None, Some(8)),
    ] {
        jobs.create(&PostParams::default(), &j)
            .await
            .expect("create Job");
    }

    // The hanging one runs (until its deadline, when the Job controller
    // stops it).
    wait_for("the hang pod to run", TIMEOUT, || async {
        let list = pods
            .list(&ListParams::default().labels("job-name=hang"))
            .await
            .map_err(|e| e.to_string())?;
        let status = list
            .items
            .first()
            .and_then(|p| p.status.clone())
            .unwrap_or_default();
        let running = status
            .container_statuses
            .as_ref()
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .is_some_and(|s| s.running.is_some());
        (status.phase.as_deref() == Some("Running") && running)
            .then_some(())
            .ok_or(format!("{status:?}"))
    })
    .await;

    let terminated = |job: &'static str| {
        let pods = pods.clone();
        async move {
            wait_for(&format!("the pod of Job {job} to end"), TIMEOUT, || async {
                let list = pods
                    .list(&ListParams::default().labels(&format!("job-name={job}")))
                    .await
                    .map_err(|e| e.to_string())?;
                let pod = list.items.first().ok_or("no pod yet")?;
                let status = pod.status.clone().unwrap_or_default();
                let state = status
                    .container_statuses
                    .as_ref()
                    .and_then(|c| c.first())
                    .and_then(|c| c.state.as_ref())
                    .and_then(|s| s.terminated.clone());
                match (status.phase.as_deref(), state) {
                    (Some("Succeeded" | "Failed"), Some(t)) => {
                        Ok((status.phase.unwrap(), t.exit_code, t.message))
                    }
                    other => Err(format!("{other:?}")),
                }
            })
            .await
        }
    };
    assert_eq!(
        terminated("pass").await,
        ("Succeeded".to_string(), 0, Some(report.to_string()))
    );
    assert_eq!(
        terminated("pass-silent").await,
        ("Succeeded".to_string(), 0, None)
    );
    assert_eq!(
        terminated("fail").await,
        ("Failed".to_string(), 1, Some("2 of 5 failed".to_string()))
    );

    let job_condition = |name: &'static str| {
        let jobs = jobs.clone();
        async move {
            wait_for(&format!("Job {name} to finish"), TIMEOUT, || async {
                let j = jobs.get(name).await.map_err(|e| e.to_string())?;
                let conditions = j.status.and_then(|s| s.conditions).unwrap_or_default();
                conditions
                    .iter()
                    .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
                    .map(|c| (c.type_.clone(), c.reason.clone()))
                    .ok_or(format!("{conditions:?}"))
            })
            .await
        }
    };
    assert_eq!(job_condition("pass").await.0, "Complete");
    assert_eq!(job_condition("fail").await.0, "Failed");
    assert_eq!(
        job_condition("hang").await,
        ("Failed".to_string(), Some("DeadlineExceeded".to_string()))
    );
    ns.delete().await;
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter().map(|p| p.name_any()).collect()
}
