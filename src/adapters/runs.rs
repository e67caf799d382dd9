//! What both adapters need to start runs of suites and actions: finding the
//! suite or action in the profile, deciding who may start it, naming and
//! building the TestRun, and saying its result in one line.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;

use crate::api::run_parameters::{self, ParameterError};
use crate::api::{
    InstallationProfileSpec, ProfileRun, RunPhase, RunTarget, StartableBy, TestInstallation,
    TestRun, TestRunSpec, labels,
};

/// Why a suite or action cannot be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("profile {profile} has no test suites")]
    NoSuites { profile: String },
    #[error("profile {profile} has no test suite {name}; it has {}", .known.join(", "))]
    UnknownSuite {
        profile: String,
        name: String,
        known: Vec<String>,
    },
    #[error("profile {profile} has no action {name}; {}", actions_list(known))]
    UnknownAction {
        profile: String,
        name: String,
        known: Vec<String>,
    },
    #[error("{0}")]
    Parameters(#[from] ParameterError),
    #[error("only {} may start {what} on {installation}", who_may(*startable_by))]
    NotAllowed {
        what: String,
        installation: String,
        startable_by: StartableBy,
    },
}

fn actions_list(known: &[String]) -> String {
    if known.is_empty() {
        "it has none".into()
    } else {
        format!("it has {}", known.join(", "))
    }
}

fn who_may(startable_by: StartableBy) -> &'static str {
    match startable_by {
        StartableBy::Requester => {
            "the person who asked for it, people it is shared with, or admins"
        }
        StartableBy::Admins => "admins",
        StartableBy::Anyone => "anyone",
    }
}

/// The suite a run starts: the named one, or the profile's first when none
/// is named.
pub fn find_suite<'a>(
    profile_name: &str,
    profile: &'a InstallationProfileSpec,
    name: Option<&str>,
) -> Result<&'a ProfileRun, StartError> {
    let Some(name) = name else {
        return profile.tests.first().ok_or_else(|| StartError::NoSuites {
            profile: profile_name.into(),
        });
    };
    profile
        .tests
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| StartError::UnknownSuite {
            profile: profile_name.into(),
            name: name.into(),
            known: profile.tests.iter().map(|t| t.name.clone()).collect(),
        })
}

/// The named action of the profile.
pub fn find_action<'a>(
    profile_name: &str,
    profile: &'a InstallationProfileSpec,
    name: &str,
) -> Result<&'a ProfileRun, StartError> {
    profile
        .actions
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| StartError::UnknownAction {
            profile: profile_name.into(),
            name: name.into(),
            known: profile.actions.iter().map(|a| a.name.clone()).collect(),
        })
}

/// Whether `person` (an adapter's requester label value) may start `run`
/// on `installation`.
pub fn may_start(
    run: &ProfileRun,
    installation: &TestInstallation,
    person: &str,
    is_admin: bool,
) -> bool {
    match run.startable_by {
        StartableBy::Anyone => true,
        StartableBy::Admins => is_admin,
        StartableBy::Requester => is_admin || may_manage(installation, person),
    }
}

/// Whether `person` asked for the installation or it is shared with them.
pub fn may_manage(installation: &TestInstallation, person: &str) -> bool {
    use kube::ResourceExt;
    installation
        .labels()
        .get(labels::REQUESTER)
        .map(String::as_str)
        == Some(person)
        || installation.spec.shared_with.iter().any(|p| p == person)
}

/// Checks everything an adapter can check before creating a run: the
/// person's right to start it and its parameters. Returns the parameters
/// with defaults filled in.
pub fn check_start(
    run: &ProfileRun,
    installation: &TestInstallation,
    person: &str,
    is_admin: bool,
    parameters: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, StartError> {
    use kube::ResourceExt;
    if !may_start(run, installation, person, is_admin) {
        return Err(StartError::NotAllowed {
            what: run.name.clone(),
            installation: installation.name_any(),
            startable_by: run.startable_by,
        });
    }
    Ok(run_parameters::resolve_parameters(
        &run.parameters,
        parameters,
    )?)
}

/// A TestRun's name: the installation, the suite or action, and a suffix
/// from the time in milliseconds, cut to fit a DNS label (the Job carries
/// the same name).
pub fn run_name(installation: &str, target: RunTarget<'_>, now_millis: u64) -> String {
    const MAX: usize = 63;
    let what = match target {
        RunTarget::Test(name) | RunTarget::Action(name) => name,
    };
    let suffix = base36(now_millis);
    let room = MAX.saturating_sub(installation.len() + suffix.len() + 2);
    let what = what[..what.len().min(room)].trim_end_matches('-');
    if what.is_empty() {
        format!("{installation}-{suffix}")
    } else {
        format!("{installation}-{what}-{suffix}")
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("base36 digits are ASCII")
}

/// A new TestRun as an adapter creates it: labelled with the installation,
/// who asked and where from.
pub fn new_test_run(
    name: String,
    installation: &str,
    target: RunTarget<'_>,
    parameters: BTreeMap<String, String>,
    requester_label: &str,
    source: &str,
) -> TestRun {
    let (test, action) = match target {
        RunTarget::Test(name) => (Some(name.to_string()), None),
        RunTarget::Action(name) => (None, Some(name.to_string())),
    };
    TestRun {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(BTreeMap::from([
                (labels::INSTALLATION.to_string(), installation.to_string()),
                (labels::REQUESTER.to_string(), requester_label.to_string()),
                (labels::SOURCE.to_string(), source.to_string()),
            ])),
            ..Default::default()
        },
        spec: TestRunSpec {
            installation: installation.into(),
            test,
            action,
            parameters,
            cancelled: false,
        },
        status: None,
    }
}

/// The run's outcome in one line for people, e.g.
/// `e2e on demo42 succeeded: 12 passed, 0 failed, 1 skipped in 42s`.
pub fn result_line(run: &TestRun) -> String {
    let what = match run.target() {
        RunTarget::Test(name) => name.to_string(),
        RunTarget::Action(name) => format!("action {name}"),
    };
    let status = run.status.clone().unwrap_or_default();
    let outcome = match status.phase {
        Some(RunPhase::Succeeded) => "succeeded",
        Some(RunPhase::Failed) => "failed",
        Some(RunPhase::Cancelled) => "was cancelled",
        Some(RunPhase::Running) => "is running",
        Some(RunPhase::Pending) | None => "is waiting to start",
    };
    match status.message.filter(|m| !m.is_empty()) {
        Some(message) => format!("{what} on {} {outcome}: {message}", run.spec.installation),
        None => format!("{what} on {} {outcome}", run.spec.installation),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{TestInstallationSpec, TestRunStatus};

    fn installation(requester: &str, shared: &[&str]) -> TestInstallation {
        let mut ti = TestInstallation::new(
            "demo42",
            TestInstallationSpec {
                shared_with: shared.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        );
        ti.metadata.labels = Some(BTreeMap::from([(
            labels::REQUESTER.to_string(),
            requester.to_string(),
        )]));
        ti
    }

    fn suite(startable_by: StartableBy) -> ProfileRun {
        ProfileRun {
            name: "e2e".into(),
            startable_by,
            ..Default::default()
        }
    }

    #[test]
    fn who_may_start_follows_the_profile() {
        let ti = installation("chat.alice", &["chat.bob"]);
        let requester = suite(StartableBy::Requester);
        assert!(may_start(&requester, &ti, "chat.alice", false));
        assert!(may_start(&requester, &ti, "chat.bob", false));
        assert!(!may_start(&requester, &ti, "chat.eve", false));
        assert!(may_start(&requester, &ti, "chat.eve", true));
        let admins = suite(StartableBy::Admins);
        assert!(!may_start(&admins, &ti, "chat.alice", false));
        assert!(may_start(&admins, &ti, "chat.eve", true));
        assert!(may_start(
            &suite(StartableBy::Anyone),
            &ti,
            "chat.eve",
            false
        ));

        let refused = check_start(&requester, &ti, "chat.eve", false, &BTreeMap::new());
        assert_eq!(
            refused.unwrap_err().to_string(),
            "only the person who asked for it, people it is shared with, or admins may start e2e on demo42"
        );
    }

    #[test]
    fn suites_and_actions_are_found_by_name_with_the_first_suite_as_default() {
        let profile = InstallationProfileSpec {
            tests: vec![
                suite(StartableBy::Anyone),
                ProfileRun {
                    name: "smoke".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(find_suite("app", &profile, None).unwrap().name, "e2e");
        assert_eq!(
            find_suite("app", &profile, Some("smoke")).unwrap().name,
            "smoke"
        );
        assert_eq!(
            find_suite("app", &profile, Some("load"))
                .unwrap_err()
                .to_string(),
            "profile app has no test suite load; it has e2e, smoke"
        );
        assert_eq!(
            find_action("app", &profile, "users")
                .unwrap_err()
                .to_string(),
            "profile app has no action users; it has none"
        );
        assert!(matches!(
            find_suite("app", &InstallationProfileSpec::default(), None),
            Err(StartError::NoSuites { .. })
        ));
    }

    #[test]
    fn run_names_are_dns_labels_and_differ_by_time() {
        let long_installation = "a".repeat(40);
        let long_action = format!("{}-x", "b".repeat(38));
        for (installation, target) in [
            ("demo42", RunTarget::Test("e2e")),
            (long_installation.as_str(), RunTarget::Action(&long_action)),
        ] {
            let name = run_name(installation, target, 1_764_662_400_123);
            assert!(name.len() <= 63, "{name}");
            assert!(name.starts_with(installation), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.contains("--") && !name.ends_with('-'), "{name}");
        }
        assert_eq!(
            run_name("demo42", RunTarget::Test("e2e"), 35),
            "demo42-e2e-z"
        );
        assert_ne!(
            run_name("demo42", RunTarget::Test("e2e"), 1),
            run_name("demo42", RunTarget::Test("e2e"), 2)
        );
    }

    #[test]
    fn a_new_run_is_labelled_and_the_result_reads_as_a_sentence() {
        let mut run = new_test_run(
            "demo42-e2e-1".into(),
            "demo42",
            RunTarget::Test("e2e"),
            BTreeMap::new(),
            "chat.alice",
            "chat",
        );
        let labels = run.metadata.labels.clone().unwrap();
        assert_eq!(labels[labels::INSTALLATION], "demo42");
        assert_eq!(labels[labels::SOURCE], "chat");
        assert_eq!(run.spec.test.as_deref(), Some("e2e"));
        assert_eq!(result_line(&run), "e2e on demo42 is waiting to start");
        run.status = Some(TestRunStatus {
            phase: Some(RunPhase::Succeeded),
            message: Some("12 passed, 0 failed, 1 skipped in 42s".into()),
            ..Default::default()
        });
        assert_eq!(
            result_line(&run),
            "e2e on demo42 succeeded: 12 passed, 0 failed, 1 skipped in 42s"
        );
    }
}
