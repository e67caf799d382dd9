//! What exists of an installation right now: the state of its workloads,
//! Jobs, Ingress and pods, read from the API server and reduced to plain data
//! (the reduction functions are pure).

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    batch::v1::Job,
    core::v1::{Namespace, Pod},
    networking::v1::Ingress,
};
use kube::{Api, Client, ResourceExt, api::ListParams};

use super::build::{app, database, filestore, ingress, seed};
use crate::api::labels;

/// The installation's namespace as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceState {
    Absent,
    /// Exists and belongs to this installation (same owner uid).
    Ours,
    /// Being deleted (e.g. left by an earlier installation of the same name).
    Terminating,
    /// Exists but belongs to something else; never touched.
    Foreign {
        owner: String,
    },
}

/// Rollout state of a Deployment or StatefulSet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadState {
    pub desired: i32,
    pub ready: i32,
    pub updated: i32,
    /// Pods that exist at all (0 once scaled down).
    pub current_pods: i32,
    /// The workload controller has seen the latest spec.
    pub observed_latest: bool,
    pub image: Option<String>,
}

impl WorkloadState {
    pub fn rolled_out(&self) -> bool {
        self.observed_latest && self.ready >= self.desired && self.updated >= self.desired
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobState {
    pub succeeded: bool,
    pub failed: bool,
    pub active: i32,
    pub failures: i32,
    /// Reason and message of the Failed condition.
    pub reason: Option<String>,
    pub message: Option<String>,
    /// How the last failed attempt's container ended, e.g. "exit code 1
    /// (Error): seed command exited with status 1".
    pub last_failure: Option<String>,
}

/// A container that cannot run, as its pod reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProblem {
    pub component: String,
    pub container: String,
    pub reason: String,
    pub message: String,
    pub image: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub namespace: NamespaceState,
    pub app: Option<WorkloadState>,
    pub database: Option<WorkloadState>,
    pub filestore: Option<WorkloadState>,
    pub bucket_job: Option<JobState>,
    pub seed_job: Option<JobState>,
    pub ingress: bool,
    pub problems: Vec<PodProblem>,
}

impl Observed {
    pub fn nothing(namespace: NamespaceState) -> Self {
        Self {
            namespace,
            app: None,
            database: None,
            filestore: None,
            bucket_job: None,
            seed_job: None,
            ingress: false,
            problems: vec![],
        }
    }
}

/// Waiting reasons that mean a container will not start by itself soon.
const PROBLEM_REASONS: [&str; 6] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

pub fn namespace_state(ns: Option<&Namespace>, owner_uid: &str) -> NamespaceState {
    let Some(ns) = ns else {
        return NamespaceState::Absent;
    };
    if ns.metadata.deletion_timestamp.is_some() {
        return NamespaceState::Terminating;
    }
    let owned = ns.owner_references().iter().any(|r| r.uid == owner_uid);
    if owned {
        NamespaceState::Ours
    } else {
        let owner = ns
            .owner_references()
            .first()
            .map(|r| format!("{} {}", r.kind, r.name))
            .unwrap_or_else(|| "nothing managed by ephemera".into());
        NamespaceState::Foreign { owner }
    }
}

pub fn deployment_state(d: &Deployment) -> WorkloadState {
    let spec = d.spec.as_ref();
    let status = d.status.clone().unwrap_or_default();
    WorkloadState {
        desired: spec.and_then(|s| s.replicas).unwrap_or(1),
        ready: status.ready_replicas.unwrap_or(0),
        updated: status.updated_replicas.unwrap_or(0),
        current_pods: status.replicas.unwrap_or(0),
        observed_latest: status.observed_generation.unwrap_or(0)
            >= d.metadata.generation.unwrap_or(0),
        image: spec
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.clone()),
    }
}

pub fn stateful_set_state(s: &StatefulSet) -> WorkloadState {
    let spec = s.spec.as_ref();
    let status = s.status.clone().unwrap_or_default();
    WorkloadState {
        desired: spec.and_then(|s| s.replicas).unwrap_or(1),
        ready: status.ready_replicas.unwrap_or(0),
        updated: status.updated_replicas.unwrap_or(0),
        current_pods: status.replicas,
        observed_latest: status.observed_generation.unwrap_or(0)
            >= s.metadata.generation.unwrap_or(0),
        image: spec
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.clone()),
    }
}

pub fn job_state(job: &Job) -> JobState {
    let status = job.status.clone().unwrap_or_default();
    let conditions = status.conditions.unwrap_or_default();
    let true_condition = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    let failed = true_condition("Failed");
    JobState {
        succeeded: true_condition("Complete").is_some(),
        failed: failed.is_some(),
        active: status.active.unwrap_or(0),
        failures: status.failed.unwrap_or(0),
        reason: failed.and_then(|c| c.reason.clone()),
        message: failed.and_then(|c| c.message.clone()),
        last_failure: None,
    }
}

/// How a failed pod's first container ended.
pub fn pod_failure(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Failed") {
        return None;
    }
    let terminated = status
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|cs| cs.state.as_ref()?.terminated.clone())?;
    let mut text = format!("exit code {}", terminated.exit_code);
    if let Some(reason) = terminated.reason {
        text.push_str(&format!(" ({reason})"));
    }
    if let Some(message) = terminated.message.filter(|m| !m.is_empty()) {
        text.push_str(&format!(": {message}"));
    }
    Some(text)
}

/// Containers of a pod that wait for a reason that needs a person.
pub fn pod_problems(pod: &Pod) -> Vec<PodProblem> {
    let component = pod
        .labels()
        .get(labels::COMPONENT)
        .cloned()
        .unwrap_or_default();
    let unschedulable = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|conditions| {
            conditions.iter().find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
        })
        .map(|c| PodProblem {
            component: component.clone(),
            container: String::new(),
            reason: "Unschedulable".into(),
            message: c.message.clone().unwrap_or_default(),
            image: String::new(),
        });
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    unschedulable
        .into_iter()
        .chain(statuses.into_iter().filter_map(|cs| {
            let waiting = cs.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.clone()?;
            PROBLEM_REASONS
                .contains(&reason.as_str())
                .then(|| PodProblem {
                    component: component.clone(),
                    container: cs.name.clone(),
                    message: waiting.message.clone().unwrap_or_default(),
                    reason,
                    image: cs.image.clone(),
                })
        }))
        .collect()
}

/// Reads everything the status needs.
pub async fn observe(
    client: &Client,
    namespace: &str,
    owner_uid: &str,
    installation: &str,
) -> kube::Result<Observed> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns_state = namespace_state(namespaces.get_opt(namespace).await?.as_ref(), owner_uid);
    if ns_state != NamespaceState::Ours {
        return Ok(Observed::nothing(ns_state));
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{}={installation}", labels::INSTALLATION);
    let pod_params = ListParams::default().labels(&selector);
    let (app, db, fs, bucket, seed_job, ing, pod_list) = tokio::try_join!(
        deployments.get_opt(app::NAME),
        stateful_sets.get_opt(database::NAME),
        deployments.get_opt(filestore::NAME),
        jobs.get_opt(filestore::BUCKET_JOB),
        jobs.get_opt(seed::NAME),
        ingresses.get_opt(ingress::NAME),
        pods.list(&pod_params),
    )?;
    Ok(Observed {
        namespace: ns_state,
        app: app.as_ref().map(deployment_state),
        database: db.as_ref().map(stateful_set_state),
        filestore: fs.as_ref().map(deployment_state),
        bucket_job: bucket.as_ref().map(job_state),
        seed_job: seed_job.as_ref().map(|job| JobState {
            last_failure: pod_list
                .items
                .iter()
                .rev()
                .filter(|p| {
                    p.labels().get(labels::COMPONENT).map(String::as_str) == Some(seed::NAME)
                })
                .find_map(pod_failure),
            ..job_state(job)
        }),
        ingress: ing.is_some(),
        problems: pod_list.items.iter().flat_map(pod_problems).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn image_pull_back_off_is_a_problem_with_its_image() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "app-1", "labels": { "app.kubernetes.io/component": "app" } },
            "status": { "containerStatuses": [{
                "name": "app", "image": "example.com/app:abc123", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": { "waiting": { "reason": "ImagePullBackOff", "message": "Back-off pulling image" } }
            }, {
                "name": "sidecar", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "waiting": { "reason": "ContainerCreating" } }
            }]}
        }))
        .unwrap();
        let problems = pod_problems(&pod);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].reason, "ImagePullBackOff");
        assert_eq!(problems[0].image, "example.com/app:abc123");
        assert_eq!(problems[0].component, "app");
    }

    #[test]
    fn a_pod_that_finds_no_node_is_a_problem() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "db-0", "labels": { "app.kubernetes.io/component": "database" } },
            "status": { "phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Too many pods."
            }]}
        }))
        .unwrap();
        let problems = pod_problems(&pod);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].reason, "Unschedulable");
        assert!(problems[0].message.contains("Too many pods"));
    }

    #[test]
    fn deployment_rollout_needs_the_latest_generation() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": { "name": "app", "generation": 3 },
            "spec": { "replicas": 2, "selector": {}, "template": {} },
            "status": { "observedGeneration": 2, "readyReplicas": 2, "updatedReplicas": 2, "replicas": 2 }
        }))
        .unwrap();
        let mut state = deployment_state(&d);
        assert!(!state.rolled_out());
        state.observed_latest = true;
        assert!(state.rolled_out());
    }

    #[test]
    fn namespace_of_another_owner_is_foreign() {
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": { "name": "ti-demo", "ownerReferences": [{
                "apiVersion": "ephemera.dev/v1alpha1", "kind": "TestInstallation", "name": "demo", "uid": "old"
            }]}
        }))
        .unwrap();
        assert_eq!(
            namespace_state(Some(&ns), "new"),
            NamespaceState::Foreign {
                owner: "TestInstallation demo".into()
            }
        );
        assert_eq!(namespace_state(Some(&ns), "old"), NamespaceState::Ours);
        assert_eq!(namespace_state(None, "old"), NamespaceState::Absent);
    }
}
