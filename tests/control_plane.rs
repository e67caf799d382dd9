//! Proves the local control plane is a real Kubernetes: the scheduler and kwok
//! make pods Ready, the garbage collector follows ownerReferences, and the
//! namespace controller finishes deleting namespaces.

mod support;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::Deployment,
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

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter().map(|p| p.name_any()).collect()
}
