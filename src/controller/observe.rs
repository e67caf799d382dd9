//! What exists of an installation right now: the state of its workloads,
//! Jobs, Ingress and pods, reduced to plain data by pure functions (the
//! controller's stores feed them: `Caches::observe`).

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    batch::v1::Job,
    core::v1::{Namespace, Pod},
};
use kube::ResourceExt;

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
    /// Pods that exist at all (0 once scaled down).
    pub current_pods: i32,
    pub image: Option<String>,
    /// Whether the rollout is done, as kstatus judges it.
    pub rollout: Rollout,
}

/// A workload's rollout, by the rules of kstatus (`sigs.k8s.io/cli-utils`):
/// done only when the workload controller saw the latest spec, every pod
/// runs the latest template, no old pod is left and enough are available.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Rollout {
    Current,
    /// Still rolling; why, in kstatus' words ("Updated: 1/2").
    #[default]
    InProgress,
    /// It will not finish by itself: the reason (`ProgressDeadlineExceeded`)
    /// and the workload controller's message.
    Failed {
        reason: String,
        message: String,
    },
}

impl WorkloadState {
    pub fn rolled_out(&self) -> bool {
        self.rollout == Rollout::Current
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

    /// The part of the observation the status is computed from. A
    /// workload's pod count matters only while it is scaled to zero
    /// (hibernation waits for its pods to go); a pod appearing under a
    /// running workload changes nothing the status shows, so it must not
    /// cost a pass.
    pub fn as_the_status_sees_it(&self) -> Observed {
        let workload = |w: &Option<WorkloadState>| {
            w.clone().map(|w| WorkloadState {
                current_pods: if w.desired == 0 { w.current_pods } else { 0 },
                ..w
            })
        };
        Observed {
            app: workload(&self.app),
            database: workload(&self.database),
            filestore: workload(&self.filestore),
            ..self.clone()
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

fn first_image(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> Option<String> {
    template
        .spec
        .as_ref()
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
}

/// kstatus' rules for a Deployment.
pub fn deployment_state(d: &Deployment) -> WorkloadState {
    let spec = d.spec.as_ref();
    let status = d.status.clone().unwrap_or_default();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let replicas = status.replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let conditions = status.conditions.unwrap_or_default();
    let condition = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
    let deadline_exceeded = condition("Progressing")
        .filter(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    let has_deadline = spec.and_then(|s| s.progress_deadline_seconds).is_some();
    let progressing_done = !has_deadline
        || condition("Progressing").is_some_and(|c| {
            c.status == "True" && c.reason.as_deref() == Some("NewReplicaSetAvailable")
        });
    let is_available = condition("Available").is_some_and(|c| c.status == "True");
    let observed_latest =
        status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let rollout = if let Some(c) = deadline_exceeded {
        Rollout::Failed {
            reason: "ProgressDeadlineExceeded".into(),
            message: c.message.clone().unwrap_or_default(),
        }
    } else if observed_latest
        && desired <= replicas
        && desired <= updated
        && replicas <= desired
        && updated <= available
        && desired <= ready
        && progressing_done
        && is_available
    {
        Rollout::Current
    } else {
        Rollout::InProgress
    };
    WorkloadState {
        desired,
        ready,
        current_pods: replicas,
        image: spec.and_then(|s| first_image(&s.template)),
        rollout,
    }
}

/// kstatus' rules for a StatefulSet.
pub fn stateful_set_state(s: &StatefulSet) -> WorkloadState {
    let spec = s.spec.as_ref();
    let status = s.status.clone().unwrap_or_default();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let replicas = status.replicas;
    let ready = status.ready_replicas.unwrap_or(0);
    let current = status.current_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    let rolling = strategy
        .and_then(|u| u.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    let partition = strategy
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition);
    let observed_latest =
        status.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(0);
    let counts_ok = desired <= replicas && desired <= ready && replicas <= desired;
    let revision_ok = match partition {
        _ if !rolling => true,
        Some(partition) => updated >= desired - partition,
        None => desired <= current && status.current_revision == status.update_revision,
    };
    WorkloadState {
        desired,
        ready,
        current_pods: replicas,
        image: spec.and_then(|s| first_image(&s.template)),
        rollout: if observed_latest && counts_ok && revision_ok {
            Rollout::Current
        } else {
            Rollout::InProgress
        },
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

/// What a pass reads of a pod: how it failed, and what in it needs a person.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodState {
    /// Its `labels::COMPONENT` label.
    pub component: String,
    pub failure: Option<String>,
    pub problems: Vec<PodProblem>,
}

pub fn pod_state(pod: &Pod) -> PodState {
    PodState {
        component: pod
            .labels()
            .get(labels::COMPONENT)
            .cloned()
            .unwrap_or_default(),
        failure: pod_failure(pod),
        problems: pod_problems(pod),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_of_a_running_workload_do_not_change_what_the_status_sees() {
        let with_pods = |desired, current_pods| Observed {
            app: Some(WorkloadState {
                desired,
                current_pods,
                ..Default::default()
            }),
            ..Observed::nothing(NamespaceState::Ours)
        };
        assert_eq!(
            with_pods(1, 0).as_the_status_sees_it(),
            with_pods(1, 1).as_the_status_sees_it(),
        );
        // Scaled to zero, the pods still there are what hibernation waits on.
        assert_ne!(
            with_pods(0, 1).as_the_status_sees_it(),
            with_pods(0, 0).as_the_status_sees_it(),
        );
    }
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

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "app", "generation": generation },
            "spec": { "replicas": 1, "selector": {}, "template": {}, "progressDeadlineSeconds": 600 },
            "status": status
        }))
        .unwrap()
    }

    fn done() -> serde_json::Value {
        json!({
            "observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
            "availableReplicas": 1,
            "conditions": [
                { "type": "Available", "status": "True" },
                { "type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable" }
            ]
        })
    }

    #[test]
    fn a_deployment_is_rolled_out_only_as_kstatus_counts_it() {
        assert!(deployment_state(&deployment(2, done())).rolled_out());
        // The controller has not seen the latest spec.
        assert!(!deployment_state(&deployment(3, done())).rolled_out());
        // The old pod is ready, the new one is not: two pods, one updated.
        let mut rolling = done();
        rolling["replicas"] = json!(2);
        rolling["conditions"][1]["reason"] = json!("ReplicaSetUpdated");
        assert!(!deployment_state(&deployment(2, rolling)).rolled_out());
        // Updated but not available.
        let mut unavailable = done();
        unavailable["availableReplicas"] = json!(0);
        assert!(!deployment_state(&deployment(2, unavailable)).rolled_out());
    }

    #[test]
    fn a_deployment_past_its_progress_deadline_has_failed() {
        let mut stuck = done();
        stuck["conditions"][1] = json!({
            "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet \"app-1\" has timed out progressing."
        });
        let state = deployment_state(&deployment(2, stuck));
        assert_eq!(
            state.rollout,
            Rollout::Failed {
                reason: "ProgressDeadlineExceeded".into(),
                message: "ReplicaSet \"app-1\" has timed out progressing.".into()
            }
        );
    }

    #[test]
    fn a_stateful_set_is_rolled_out_when_every_pod_runs_the_update_revision() {
        let sts = |current_revision: &str| -> StatefulSet {
            serde_json::from_value(json!({
                "metadata": { "name": "database", "generation": 1 },
                "spec": { "replicas": 1, "selector": {}, "template": {}, "serviceName": "database",
                          "updateStrategy": { "type": "RollingUpdate" } },
                "status": { "observedGeneration": 1, "replicas": 1, "readyReplicas": 1,
                            "currentReplicas": 1, "updatedReplicas": 1,
                            "currentRevision": current_revision, "updateRevision": "database-2" }
            }))
            .unwrap()
        };
        assert!(stateful_set_state(&sts("database-2")).rolled_out());
        assert!(!stateful_set_state(&sts("database-1")).rolled_out());
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
