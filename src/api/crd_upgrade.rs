//! Keeping the cluster's CustomResourceDefinitions current.
//!
//! Helm installs `crds/` once and never upgrades them, so after `helm
//! upgrade` a new controller would meet the old schema: new fields pruned on
//! write, new validation rules missing. With `ephemera controller
//! --apply-crds` the controller writes the CRDs it was built with before it
//! starts. It replaces the whole `spec` (an update, not a merge): a property
//! or rule the new version dropped must go too, and server-side apply would
//! keep fields another manager (Helm) set. It never downgrades: a CRD written
//! by a newer ephemera (annotation `ephemera.dev/crd-version`) is left alone,
//! so an old replica still running during a rollout cannot undo an upgrade.
//!
//! RBAC: `get` and `update` on exactly its CRDs (by `resourceNames`);
//! creating them (when absent) needs `create`, which the chart does not grant
//! because Helm creates them.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client, CustomResourceExt, ResourceExt, api::PostParams};

use super::{InstallationProfile, TestInstallation, TestRun};

/// Field manager of the controller's writes to its CRDs.
pub const FIELD_MANAGER: &str = "ephemera-crds";
/// Version of ephemera that last wrote a CRD.
pub const VERSION_ANNOTATION: &str = "ephemera.dev/crd-version";
/// The version this binary writes.
pub const THIS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What happened to one CRD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated {
        from_version: Option<String>,
    },
    Unchanged,
    /// Written by a newer ephemera; left as it is.
    NewerKept {
        version: String,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Created => write!(f, "created"),
            Outcome::Updated {
                from_version: Some(v),
            } => write!(f, "updated from {v} to {THIS_VERSION}"),
            Outcome::Updated { from_version: None } => {
                write!(
                    f,
                    "updated to {THIS_VERSION} (from an unversioned copy, e.g. Helm's)"
                )
            }
            Outcome::Unchanged => write!(f, "already current"),
            Outcome::NewerKept { version } => {
                write!(f, "left at {version}, newer than this {THIS_VERSION}")
            }
        }
    }
}

/// The CRDs this binary was built with, marked with its version.
pub fn desired_crds() -> Vec<CustomResourceDefinition> {
    [
        TestInstallation::crd(),
        InstallationProfile::crd(),
        TestRun::crd(),
    ]
    .into_iter()
    .map(|mut crd| {
        crd.annotations_mut()
            .insert(VERSION_ANNOTATION.into(), THIS_VERSION.into());
        crd
    })
    .collect()
}

/// Whether a CRD written by `stored` (its annotation; `None` when another
/// tool wrote it) may be replaced by this binary's `ours`. Only a stored
/// version that parses and is newer is kept.
pub fn may_replace(stored: Option<&str>, ours: &str) -> bool {
    match (stored.and_then(parse_version), parse_version(ours)) {
        (Some(stored), Some(ours)) => stored <= ours,
        _ => true,
    }
}

/// `major.minor.patch`, ignoring any pre-release or build suffix.
fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let core = text.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

/// Brings every CRD of ephemera to this binary's version, waiting until each
/// is established. Returns what happened to each, by name.
pub async fn apply_crds(client: &Client) -> anyhow::Result<Vec<(String, Outcome)>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut outcomes = Vec::new();
    for desired in desired_crds() {
        let name = desired.name_any();
        let outcome = apply_one(&api, desired).await?;
        wait_established(&api, &name).await?;
        outcomes.push((name, outcome));
    }
    Ok(outcomes)
}

/// Polls with `get` (the only read the controller's RBAC allows on CRDs)
/// until the API server serves the CRD.
async fn wait_established(api: &Api<CustomResourceDefinition>, name: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let crd = api.get(name).await.map_err(|err| access(name, err))?;
        let established = crd
            .status
            .and_then(|status| status.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("CRD {name} was not established within 60s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn apply_one(
    api: &Api<CustomResourceDefinition>,
    desired: CustomResourceDefinition,
) -> anyhow::Result<Outcome> {
    let name = desired.name_any();
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    // Another writer (a second replica starting) makes the update conflict;
    // read again and retry.
    for _ in 0..5 {
        let Some(current) = api.get_opt(&name).await.map_err(|err| access(&name, err))? else {
            api.create(&params, &desired)
                .await
                .map_err(|err| access(&name, err))?;
            return Ok(Outcome::Created);
        };
        let stored = current.annotations().get(VERSION_ANNOTATION).cloned();
        if !may_replace(stored.as_deref(), THIS_VERSION) {
            return Ok(Outcome::NewerKept {
                version: stored.unwrap_or_default(),
            });
        }
        let mut next = current.clone();
        // Absent managedFields in an update leaves the server's bookkeeping to it.
        next.metadata.managed_fields = None;
        next.spec = desired.spec.clone();
        next.annotations_mut()
            .insert(VERSION_ANNOTATION.into(), THIS_VERSION.into());
        next.labels_mut().extend(desired.labels().clone());
        match api.replace(&name, &params, &next).await {
            // The API server does not write an unchanged object.
            Ok(written) if written.resource_version() == current.resource_version() => {
                return Ok(Outcome::Unchanged);
            }
            Ok(_) => {
                return Ok(Outcome::Updated {
                    from_version: stored,
                });
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(err) => return Err(access(&name, err)),
        }
    }
    anyhow::bail!("CRD {name} kept changing while it was being updated; try again")
}

fn access(name: &str, err: kube::Error) -> anyhow::Error {
    match &err {
        kube::Error::Api(status) if status.code == 403 => anyhow::anyhow!(
            "not allowed to write CRD {name} ({}): grant get/update on it (the chart does with \
             crds.applyOnStart), or apply the CRDs yourself with \
             `ephemera crd | kubectl apply --server-side -f -` and start without --apply-crds",
            status.message
        ),
        _ => anyhow::anyhow!("writing CRD {name}: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_unversioned_older_and_equal_versions() {
        assert!(may_replace(None, "0.2.0"));
        assert!(may_replace(Some("0.1.0"), "0.2.0"));
        assert!(may_replace(Some("0.2.0"), "0.2.0"));
        assert!(may_replace(Some("0.9.9"), "0.10.0"));
        assert!(may_replace(Some("garbage"), "0.2.0"));
    }

    #[test]
    fn never_downgrades_a_newer_version() {
        assert!(!may_replace(Some("0.3.0"), "0.2.0"));
        assert!(!may_replace(Some("1.0.0-rc.1"), "0.9.0"));
        assert!(!may_replace(Some("0.10.0"), "0.9.9"));
    }

    #[test]
    fn desired_crds_carry_this_version() {
        let crds = desired_crds();
        assert_eq!(crds.len(), 3);
        for crd in crds {
            assert_eq!(
                crd.annotations()
                    .get(VERSION_ANNOTATION)
                    .map(String::as_str),
                Some(THIS_VERSION)
            );
        }
    }
}
