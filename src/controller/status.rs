//! The status, pure: what was decided and observed becomes phase, conditions
//! and message. Conditions keep their `lastTransitionTime` while their status
//! is unchanged, and nothing here changes from one pass to the next unless the
//! installation did, so writing the status never re-triggers a reconcile.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use super::lifecycle::upgrade::{self, UpgradeStage};
use super::observe::{JobState, Observed, PodProblem, Rollout, WorkloadState};
use super::plan::Plan;
use crate::api::{
    CredentialsSecretRef, DatabaseEngine, FilestoreType, Phase, TestInstallation,
    TestInstallationStatus, conditions as c, credentials,
};

/// Where a reconcile pass ended up.
#[derive(Clone, Debug)]
pub enum Situation<'a> {
    /// Cannot go on until the spec, profile or config changes.
    Stalled { reason: &'a str, message: String },
    /// Waiting for something outside the installation (a previous namespace,
    /// free capacity); the pass is retried.
    Waiting { reason: &'a str, message: String },
    /// Objects applied; the rest follows from what they report.
    Applied {
        plan: &'a Plan,
        observed: &'a Observed,
        /// The version the app was asked to run in this pass.
        app_version: &'a str,
        upgrade: &'a UpgradeStage,
    },
    /// Being deleted.
    Terminating { message: String },
    /// A transient API error; the pass is retried with backoff. Only
    /// `Reconciling` changes, the rest stays as it was.
    Retrying { message: String },
}

/// One part's condition, before time stamps are merged in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartCondition {
    pub type_: &'static str,
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

impl PartCondition {
    fn ok(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_,
            ready: true,
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn not_yet(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_,
            ready: false,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

fn problem_condition(type_: &'static str, problem: &PodProblem) -> PartCondition {
    if problem.container.is_empty() {
        // Not about a container: the pod found no node (e.g. a full cluster).
        return PartCondition::not_yet(
            type_,
            &problem.reason,
            format!("{}: {}", problem.reason, problem.message),
        );
    }
    let detail = if problem.message.is_empty() {
        String::new()
    } else {
        format!(" ({})", problem.message)
    };
    PartCondition::not_yet(
        type_,
        &problem.reason,
        format!(
            "{}: container {} cannot run image {}{detail}",
            problem.reason, problem.container, problem.image
        ),
    )
}

fn first_problem<'a>(observed: &'a Observed, component: &str) -> Option<&'a PodProblem> {
    observed.problems.iter().find(|p| p.component == component)
}

fn workload_condition(
    type_: &'static str,
    what: &str,
    component: &str,
    state: Option<&WorkloadState>,
    observed: &Observed,
    hibernate: bool,
) -> PartCondition {
    if let Some(problem) = first_problem(observed, component) {
        return problem_condition(type_, problem);
    }
    match state {
        None => PartCondition::not_yet(type_, "Creating", format!("the {what} is being created")),
        Some(_) if hibernate => {
            PartCondition::not_yet(type_, "Hibernated", format!("the {what} is scaled to zero"))
        }
        Some(WorkloadState {
            rollout: Rollout::Failed { reason, message },
            ..
        }) => PartCondition::not_yet(
            type_,
            reason,
            format!("the {what} rollout failed: {reason}: {message}"),
        ),
        Some(s) if s.rolled_out() => PartCondition::ok(
            type_,
            "Running",
            format!("{}/{} {what} pods ready", s.ready, s.desired),
        ),
        Some(s) => PartCondition::not_yet(
            type_,
            "Starting",
            format!("{}/{} {what} pods ready", s.ready, s.desired),
        ),
    }
}

pub fn database_condition(plan: &Plan, observed: &Observed) -> PartCondition {
    match plan.database.engine {
        DatabaseEngine::None => {
            PartCondition::ok(c::DATABASE_READY, "NotRequired", "no database requested")
        }
        DatabaseEngine::External => {
            PartCondition::ok(c::DATABASE_READY, "External", "uses an external database")
        }
        _ => workload_condition(
            c::DATABASE_READY,
            "database",
            "database",
            observed.database.as_ref(),
            observed,
            plan.hibernate,
        ),
    }
}

pub fn filestore_condition(plan: &Plan, observed: &Observed) -> PartCondition {
    match plan.filestore.kind {
        FilestoreType::None => {
            PartCondition::ok(c::FILESTORE_READY, "NotRequired", "no file store requested")
        }
        FilestoreType::Local => PartCondition::ok(
            c::FILESTORE_READY,
            "Local",
            format!("a volume at {} in the app", plan.filestore.mount_path),
        ),
        FilestoreType::S3 => {
            PartCondition::ok(c::FILESTORE_READY, "External", "uses an external S3 bucket")
        }
        FilestoreType::Minio => {
            let server = workload_condition(
                c::FILESTORE_READY,
                "file store",
                "filestore",
                observed.filestore.as_ref(),
                observed,
                plan.hibernate,
            );
            if !server.ready {
                return server;
            }
            match &observed.bucket_job {
                Some(JobState {
                    succeeded: true, ..
                }) => server,
                Some(JobState {
                    failed: true,
                    message,
                    ..
                }) => PartCondition::not_yet(
                    c::FILESTORE_READY,
                    "BucketCreationFailed",
                    format!(
                        "creating bucket {} failed: {}",
                        plan.filestore.bucket,
                        message.clone().unwrap_or_default()
                    ),
                ),
                _ => PartCondition::not_yet(
                    c::FILESTORE_READY,
                    "CreatingBucket",
                    format!("creating bucket {}", plan.filestore.bucket),
                ),
            }
        }
    }
}

pub fn app_condition(plan: &Plan, observed: &Observed, app_version: &str) -> PartCondition {
    let mut condition = workload_condition(
        c::APP_READY,
        "app",
        "app",
        observed.app.as_ref(),
        observed,
        plan.hibernate,
    );
    if condition.ready {
        condition.message = format!("{} ({})", condition.message, plan.image_ref(app_version));
    }
    condition
}

pub fn ingress_condition(plan: &Plan, observed: &Observed) -> PartCondition {
    if observed.ingress {
        PartCondition::ok(c::INGRESS_READY, "Created", format!("serving {}", plan.url))
    } else {
        PartCondition::not_yet(c::INGRESS_READY, "Creating", "the ingress is being created")
    }
}

/// `DataSeeded`, when test data was asked for.
pub fn seed_condition(
    installation: &TestInstallation,
    plan: &Plan,
    observed: &Observed,
) -> Option<PartCondition> {
    plan.seed.as_ref()?;
    let already = installation
        .condition(c::DATA_SEEDED)
        .is_some_and(|c| c.status == "True");
    Some(match &observed.seed_job {
        _ if already => PartCondition::ok(c::DATA_SEEDED, "Seeded", "test data was loaded"),
        Some(job) if job.succeeded => {
            PartCondition::ok(c::DATA_SEEDED, "Seeded", "test data was loaded")
        }
        Some(job) if job.failed => {
            let mut message = format!(
                "the seed command failed after {} attempt(s)",
                job.failures.max(1)
            );
            if let Some(reason) = &job.reason {
                message.push_str(&format!(" ({reason}"));
                if let Some(m) = &job.message {
                    message.push_str(&format!(": {m}"));
                }
                message.push(')');
            }
            if let Some(last) = &job.last_failure {
                message.push_str(&format!("; last attempt: {last}"));
            }
            PartCondition::not_yet(c::DATA_SEEDED, "SeedFailed", message)
        }
        Some(job) => PartCondition::not_yet(
            c::DATA_SEEDED,
            "Seeding",
            if job.failures > 0 {
                format!(
                    "loading test data (attempt {} failed, retrying)",
                    job.failures
                )
            } else {
                "loading test data".to_string()
            },
        ),
        None => PartCondition::not_yet(
            c::DATA_SEEDED,
            "WaitingForApp",
            "test data is loaded once the app is ready",
        ),
    })
}

/// `Upgraded`, for upgrade tests, given whether the app part is ready and
/// (when asked for) seeded in this pass.
pub fn upgrade_condition(
    stage: &UpgradeStage,
    app: &PartCondition,
    seeded: bool,
) -> Option<PartCondition> {
    Some(match stage {
        UpgradeStage::None => return None,
        UpgradeStage::RunningFrom { from, to } if app.ready && seeded => PartCondition::not_yet(
            c::UPGRADED,
            upgrade::REASON_UPGRADING,
            format!("{from} is ready; upgrading to {to}"),
        ),
        UpgradeStage::RunningFrom { from, to } => PartCondition::not_yet(
            c::UPGRADED,
            upgrade::REASON_RUNNING_PREVIOUS,
            format!("running {from} first; the upgrade to {to} starts once it is ready"),
        ),
        UpgradeStage::RollingTo { from, to } | UpgradeStage::Done { from, to } if app.ready => {
            PartCondition::ok(
                c::UPGRADED,
                upgrade::REASON_UPGRADED,
                format!("upgraded from {from} to {to}"),
            )
        }
        UpgradeStage::RollingTo { to, .. } if !is_progress(&app.reason) => PartCondition::not_yet(
            c::UPGRADED,
            upgrade::REASON_FAILED,
            format!("the upgrade to {to} failed: {}", app.message),
        ),
        UpgradeStage::RollingTo { from, to } => PartCondition::not_yet(
            c::UPGRADED,
            upgrade::REASON_UPGRADING,
            format!("upgrading from {from} to {to}"),
        ),
        UpgradeStage::Done { from, to } => PartCondition::ok(
            c::UPGRADED,
            upgrade::REASON_UPGRADED,
            format!("upgraded from {from} to {to}"),
        ),
    })
}

/// Reasons of parts that are on their way, as opposed to stuck.
fn is_progress(reason: &str) -> bool {
    matches!(
        reason,
        "Creating"
            | "Starting"
            | "Hibernated"
            | "CreatingBucket"
            | "Seeding"
            | "WaitingForApp"
            | upgrade::REASON_RUNNING_PREVIOUS
            | upgrade::REASON_UPGRADING
    )
}

/// Merges a new condition into the existing ones, keeping
/// `lastTransitionTime` when the status did not change.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            let time = if existing.status == new.status {
                existing.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            *existing = Condition {
                last_transition_time: time,
                ..new
            };
        }
        None => conditions.push(new),
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// The whole status for this pass.
pub fn compute(
    installation: &TestInstallation,
    situation: &Situation,
    now: Timestamp,
) -> TestInstallationStatus {
    let previous = installation.status.clone().unwrap_or_default();
    let generation = installation.metadata.generation;
    let now_time = Time(now);
    let mut conditions = previous.conditions.clone();
    let mut status = TestInstallationStatus {
        observed_generation: generation,
        ..previous.clone()
    };
    let mut set = |type_: &str, ok: bool, reason: &str, message: &str| {
        set_condition(
            &mut conditions,
            condition(type_, ok, reason, message, generation, &now_time),
        );
    };

    match situation {
        Situation::Stalled { reason, message } => {
            status.phase = Some(Phase::Failed);
            status.message = Some(message.clone());
            set(c::READY, false, reason, message);
            set(c::STALLED, true, reason, message);
            set(c::RECONCILING, false, reason, message);
        }
        Situation::Waiting { reason, message } => {
            status.phase = Some(Phase::Pending);
            status.message = Some(message.clone());
            set(c::READY, false, reason, message);
            set(c::STALLED, false, reason, message);
            set(c::RECONCILING, true, reason, message);
        }
        Situation::Retrying { message } => {
            set(c::RECONCILING, true, "TransientError", message);
        }
        Situation::Terminating { message } => {
            status.phase = Some(Phase::Terminating);
            status.message = Some(message.clone());
            set(c::READY, false, "Terminating", message);
            set(c::RECONCILING, true, "Terminating", message);
        }
        Situation::Applied {
            plan,
            observed,
            app_version,
            upgrade,
        } => {
            let app = app_condition(plan, observed, app_version);
            let seed = seed_condition(installation, plan, observed);
            let seeded = seed.as_ref().is_none_or(|s| s.ready);
            let upgraded = upgrade_condition(upgrade, &app, seeded);
            let mut parts = vec![
                database_condition(plan, observed),
                filestore_condition(plan, observed),
                app,
                ingress_condition(plan, observed),
            ];
            parts.extend(seed);
            let upgrading = upgraded
                .as_ref()
                .is_some_and(|u| u.reason == upgrade::REASON_UPGRADING);
            parts.extend(upgraded);
            for part in &parts {
                set(part.type_, part.ready, &part.reason, &part.message);
            }
            let waiting: Vec<&PartCondition> = parts.iter().filter(|p| !p.ready).collect();
            let failing = parts.iter().find(|p| !p.ready && !is_progress(&p.reason));
            status.namespace = Some(plan.namespace.clone());
            status.url = Some(plan.url.clone());
            status.links = super::links::render(plan);
            status.credentials_secret = Some(CredentialsSecretRef {
                namespace: plan.namespace.clone(),
                name: credentials::SECRET_NAME.into(),
            });
            if observed
                .app
                .as_ref()
                .is_some_and(|a| a.rolled_out() && !plan.hibernate)
            {
                status.version = Some(app_version.to_string());
            }
            if plan.hibernate {
                let scaled_down = [&observed.app, &observed.database, &observed.filestore]
                    .iter()
                    .all(|w| w.as_ref().is_none_or(|w| w.current_pods == 0));
                let message = if scaled_down {
                    "Hibernated: everything is scaled to zero and the data is kept; set hibernate: false to wake it"
                } else {
                    "Hibernating: scaling everything to zero"
                };
                status.phase = Some(Phase::Hibernated);
                status.message = Some(message.into());
                // Ready means "as the spec asks": True once everything is at
                // zero, so kstatus reads a hibernated installation as Current
                // and `kubectl wait --for=condition=Ready` returns.
                set(c::READY, scaled_down, "Hibernated", message);
                set(c::STALLED, false, "Hibernated", message);
                set(c::RECONCILING, !scaled_down, "Hibernated", message);
            } else if waiting.is_empty() {
                let message = format!("Ready at {}", plan.url);
                status.phase = Some(Phase::Ready);
                status.message = Some(message.clone());
                if status.ready_at.is_none() {
                    status.ready_at = Some(now_time.clone());
                }
                set(c::READY, true, "Ready", &message);
                set(c::STALLED, false, "Ready", &message);
                set(c::RECONCILING, false, "Ready", &message);
            } else if let Some(failing) = failing {
                status.phase = Some(Phase::Failed);
                status.message = Some(failing.message.clone());
                // Stalled, so kstatus (Flux, kpt) reports Failed at once
                // instead of waiting for its timeout; passes go on, and the
                // installation recovers by itself if the part does.
                set(c::READY, false, &failing.reason, &failing.message);
                set(c::STALLED, true, &failing.reason, &failing.message);
                set(c::RECONCILING, false, &failing.reason, &failing.message);
            } else {
                let names: Vec<String> = waiting.iter().map(|p| p.message.clone()).collect();
                let (phase, word) = if upgrading {
                    (Phase::Upgrading, "Upgrading")
                } else {
                    (Phase::Provisioning, "Provisioning")
                };
                let message = format!("{word}: {}", names.join("; "));
                status.phase = Some(phase);
                status.message = Some(message.clone());
                set(c::READY, false, word, &message);
                set(c::STALLED, false, word, &message);
                set(c::RECONCILING, true, word, &message);
            }
        }
    }
    status.conditions = conditions;
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{
        build::test_support::plan_with,
        observe::{NamespaceState, WorkloadState},
        plan::tests::profile,
    };

    fn running(n: i32) -> WorkloadState {
        WorkloadState {
            desired: n,
            ready: n,
            current_pods: n,
            image: None,
            rollout: Rollout::Current,
        }
    }

    fn observed_ready() -> Observed {
        Observed {
            namespace: NamespaceState::Ours,
            app: Some(running(1)),
            database: Some(running(1)),
            filestore: None,
            bucket_job: None,
            seed_job: None,
            ingress: true,
            problems: vec![],
        }
    }

    fn installation() -> TestInstallation {
        let mut ti = TestInstallation::new("demo", Default::default());
        ti.metadata.generation = Some(1);
        ti.metadata.creation_timestamp = Some(Time("2026-11-22T10:00:00Z".parse().unwrap()));
        ti
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn ready_when_every_part_is_ready() {
        let plan = plan_with(Default::default(), profile());
        let observed = observed_ready();
        let situation = Situation::Applied {
            plan: &plan,
            observed: &observed,
            app_version: "1.0.0",
            upgrade: &UpgradeStage::None,
        };
        let status = compute(&installation(), &situation, t("2026-11-22T10:01:00Z"));
        assert_eq!(status.phase, Some(Phase::Ready));
        assert_eq!(
            status.url.as_deref(),
            Some("https://demo.ephemera.localhost")
        );
        assert_eq!(status.version.as_deref(), Some("1.0.0"));
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(status.credentials_secret.unwrap().name, "credentials");
    }

    #[test]
    fn status_is_stable_across_passes() {
        let plan = plan_with(Default::default(), profile());
        let observed = observed_ready();
        let situation = Situation::Applied {
            plan: &plan,
            observed: &observed,
            app_version: "1.0.0",
            upgrade: &UpgradeStage::None,
        };
        let mut ti = installation();
        let first = compute(&ti, &situation, t("2026-11-22T10:01:00Z"));
        ti.status = Some(first.clone());
        let second = compute(&ti, &situation, t("2026-11-22T10:05:00Z"));
        assert_eq!(
            first, second,
            "a second pass with nothing new must not change the status"
        );
    }

    #[test]
    fn image_pull_back_off_names_the_image() {
        let plan = plan_with(Default::default(), profile());
        let mut observed = observed_ready();
        observed.app = Some(WorkloadState {
            ready: 0,
            rollout: Rollout::InProgress,
            ..running(1)
        });
        observed.problems.push(PodProblem {
            component: "app".into(),
            container: "app".into(),
            reason: "ImagePullBackOff".into(),
            message: "Back-off pulling image".into(),
            image: "example.com/app:abc123".into(),
        });
        let situation = Situation::Applied {
            plan: &plan,
            observed: &observed,
            app_version: "abc123",
            upgrade: &UpgradeStage::None,
        };
        let status = compute(&installation(), &situation, t("2026-11-22T10:01:00Z"));
        assert_eq!(status.phase, Some(Phase::Failed));
        let app = status
            .conditions
            .iter()
            .find(|c| c.type_ == "AppReady")
            .unwrap();
        assert_eq!(app.reason, "ImagePullBackOff");
        assert!(
            app.message.contains("example.com/app:abc123"),
            "{}",
            app.message
        );
        assert_eq!(status.version, None);
    }

    #[test]
    fn transition_time_changes_only_with_the_status() {
        let mut conditions = vec![];
        let t1 = Time(t("2026-11-22T10:00:00Z"));
        let t2 = Time(t("2026-11-22T11:00:00Z"));
        set_condition(
            &mut conditions,
            condition("Ready", false, "Provisioning", "a", None, &t1),
        );
        set_condition(
            &mut conditions,
            condition("Ready", false, "Provisioning", "b", None, &t2),
        );
        assert_eq!(conditions[0].last_transition_time, t1);
        assert_eq!(conditions[0].message, "b");
        set_condition(
            &mut conditions,
            condition("Ready", true, "Ready", "c", None, &t2),
        );
        assert_eq!(conditions[0].last_transition_time, t2);
    }

    #[test]
    fn stalled_is_failed_and_not_reconciling() {
        let situation = Situation::Stalled {
            reason: "ProfileNotFound",
            message: "profile \"nope\" does not exist".into(),
        };
        let status = compute(&installation(), &situation, t("2026-11-22T10:01:00Z"));
        assert_eq!(status.phase, Some(Phase::Failed));
        let stalled = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "ProfileNotFound")
        );
    }
}
