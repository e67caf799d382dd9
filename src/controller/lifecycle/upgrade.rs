//! Upgrade test installations (`spec.upgradeFrom`): run the old version until
//! it is ready (and seeded, when test data was asked for), then roll to
//! `spec.version`. The stage is kept in the `Upgraded` condition, so it
//! survives controller restarts.

use crate::api::{TestInstallation, conditions};

pub const REASON_RUNNING_PREVIOUS: &str = "RunningPreviousVersion";
pub const REASON_UPGRADING: &str = "Upgrading";
pub const REASON_UPGRADED: &str = "Upgraded";
pub const REASON_FAILED: &str = "UpgradeFailed";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpgradeStage {
    /// No upgrade test.
    None,
    /// Running `from` until it is ready.
    RunningFrom { from: String, to: String },
    /// `from` was ready; rolling to `to`.
    RollingTo { from: String, to: String },
    /// Upgraded; from now on the installation is like any other.
    Done { from: String, to: String },
}

/// The stage an installation is in, from its spec and its `Upgraded`
/// condition.
pub fn stage(installation: &TestInstallation, from: Option<&str>, to: &str) -> UpgradeStage {
    let Some(from) = from else {
        return UpgradeStage::None;
    };
    let (from, to) = (from.to_string(), to.to_string());
    match installation.condition(conditions::UPGRADED) {
        Some(c) if c.status == "True" => UpgradeStage::Done { from, to },
        Some(c) if c.reason == REASON_UPGRADING || c.reason == REASON_FAILED => {
            UpgradeStage::RollingTo { from, to }
        }
        _ => UpgradeStage::RunningFrom { from, to },
    }
}

impl UpgradeStage {
    /// The version the app runs in this stage.
    pub fn app_version<'a>(&'a self, version: &'a str) -> &'a str {
        match self {
            UpgradeStage::RunningFrom { from, .. } => from,
            _ => version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn with_upgraded(status: &str, reason: &str) -> TestInstallation {
        let mut ti = TestInstallation::new("u", Default::default());
        ti.status = Some(crate::api::TestInstallationStatus {
            conditions: vec![Condition {
                type_: "Upgraded".into(),
                status: status.into(),
                reason: reason.into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time("2026-01-01T00:00:00Z".parse().unwrap()),
            }],
            ..Default::default()
        });
        ti
    }

    #[test]
    fn stages_follow_the_upgraded_condition() {
        let fresh = TestInstallation::new("u", Default::default());
        assert_eq!(stage(&fresh, None, "2"), UpgradeStage::None);
        let s = stage(&fresh, Some("1"), "2");
        assert_eq!(s.app_version("2"), "1");
        let s = stage(&with_upgraded("False", REASON_UPGRADING), Some("1"), "2");
        assert!(matches!(s, UpgradeStage::RollingTo { .. }));
        assert_eq!(s.app_version("2"), "2");
        let s = stage(&with_upgraded("True", REASON_UPGRADED), Some("1"), "2");
        assert!(matches!(s, UpgradeStage::Done { .. }));
        let s = stage(
            &with_upgraded("False", REASON_RUNNING_PREVIOUS),
            Some("1"),
            "2",
        );
        assert!(matches!(s, UpgradeStage::RunningFrom { .. }));
    }
}
