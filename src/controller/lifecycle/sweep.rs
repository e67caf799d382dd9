//! The orphan sweep: a namespace labelled as managed by ephemera is deleted
//! only when an owner reference names a TestInstallation whose UID no longer
//! exists, that is, when it is provably what one of our installations left
//! behind. A labelled namespace without such an owner reference (made by
//! hand, or by another tool) is never deleted: it is reported (log line,
//! Warning Event on the namespace, `ephemera_controller_unowned_namespaces`
//! metric), as
//! reconcile refuses to take it over (`NamespaceConflict`). Runs at start and
//! then every `orphanSweepInterval`.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams},
};

use crate::{
    api::{TestInstallation, labels},
    events::{Event, EventType, Recorder},
};

/// What the sweep makes of one labelled namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Owned by an installation that exists (or is being deleted): leave it.
    Live,
    /// Owned by an installation UID that no longer exists: delete it.
    Orphan { installation: String },
    /// No TestInstallation owner reference: not provably ours; report only.
    Unowned,
}

/// Pure: the verdict on one namespace, given the UIDs of every existing
/// installation.
pub fn verdict(ns: &Namespace, installation_uids: &BTreeSet<String>) -> Verdict {
    let owners: Vec<_> = ns
        .owner_references()
        .iter()
        .filter(|r| r.kind == "TestInstallation" && r.api_version.starts_with("ephemera.dev/"))
        .collect();
    if owners.is_empty() {
        return Verdict::Unowned;
    }
    match owners.iter().find(|r| !installation_uids.contains(&r.uid)) {
        Some(gone) if owners.iter().all(|r| !installation_uids.contains(&r.uid)) => {
            Verdict::Orphan {
                installation: gone.name.clone(),
            }
        }
        _ => Verdict::Live,
    }
}

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Orphans deleted.
    pub deleted: Vec<String>,
    /// Labelled namespaces left alone because nothing proves they are ours.
    pub unowned: Vec<String>,
}

/// One sweep.
pub async fn sweep(client: &Client, recorder: &Recorder) -> kube::Result<SweepReport> {
    let selector = format!(
        "{}={},{}",
        labels::MANAGED_BY_KEY,
        labels::MANAGED_BY_VALUE,
        labels::INSTALLATION
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let found = namespaces
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let mut report = SweepReport::default();
    if found.is_empty() {
        return Ok(report);
    }
    // Every installation, not only those this controller selects: another
    // controller's namespace is never an orphan.
    let uids: BTreeSet<String> = Api::<TestInstallation>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|m| m.uid())
        .collect();
    for ns in found
        .iter()
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
    {
        let name = ns.name_any();
        let (type_, reason, note) = match verdict(ns, &uids) {
            Verdict::Live => continue,
            Verdict::Unowned => {
                tracing::warn!(namespace = %name, "namespace carries ephemera's labels but no TestInstallation owner reference; leaving it alone");
                report.unowned.push(name.clone());
                (
                    EventType::Warning,
                    "UnownedNamespace",
                    format!(
                        "namespace {name} carries ephemera's labels but no TestInstallation owns it; ephemera leaves it alone: delete it or remove the labels"
                    ),
                )
            }
            Verdict::Orphan { installation } => {
                tracing::info!(namespace = %name, %installation, "deleting orphaned namespace: its TestInstallation no longer exists");
                match namespaces.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => continue,
                    Err(err) => return Err(err),
                }
                report.deleted.push(name.clone());
                (
                    EventType::Normal,
                    "OrphanDeleted",
                    format!(
                        "namespace {name} belonged to TestInstallation {installation}, which no longer exists"
                    ),
                )
            }
        };
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Sweep".into(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, &ns.object_ref(&())).await {
            tracing::warn!(%err, "publishing the sweep event failed");
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(name: &str, installation: &str, owner_uid: Option<&str>) -> Namespace {
        let owners: Vec<serde_json::Value> = owner_uid
            .map(|uid| json!({ "apiVersion": "ephemera.dev/v1alpha1", "kind": "TestInstallation", "name": installation, "uid": uid }))
            .into_iter()
            .collect();
        serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { "ephemera.dev/installation": installation }, "ownerReferences": owners }
        }))
        .unwrap()
    }

    #[test]
    fn only_namespaces_owned_by_a_gone_installation_are_orphans() {
        let uids = BTreeSet::from(["u1".to_string(), "new-uid".to_string()]);
        assert_eq!(
            verdict(&ns("ti-live", "live", Some("u1")), &uids),
            Verdict::Live
        );
        assert_eq!(
            verdict(&ns("ti-gone", "gone", Some("u2")), &uids),
            Verdict::Orphan {
                installation: "gone".into()
            }
        );
        // Left by an earlier installation of a name that is in use again.
        assert_eq!(
            verdict(&ns("ti-old", "reused", Some("old-uid")), &uids),
            Verdict::Orphan {
                installation: "reused".into()
            }
        );
        // Labelled by hand: never deleted, whatever its name.
        assert_eq!(
            verdict(&ns("ti-hand", "hand", None), &uids),
            Verdict::Unowned
        );
        assert_eq!(
            verdict(&ns("ti-live2", "live", None), &uids),
            Verdict::Unowned
        );
    }
}
