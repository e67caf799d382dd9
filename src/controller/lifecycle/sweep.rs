//! The orphan sweep: namespaces labelled as managed by ephemera whose
//! installation no longer exists are deleted, at start and then every
//! `orphanSweepInterval`, each with a log line and an Event on the namespace.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams},
    runtime::events::{Event, EventType, Recorder},
};

use crate::api::{TestInstallation, labels};

/// Pure: which namespaces are orphans, given the namespaces found and the
/// (name, uid) of every existing installation.
pub fn orphans<'a>(
    namespaces: &'a [Namespace],
    installations: &BTreeSet<(String, String)>,
) -> Vec<&'a Namespace> {
    namespaces
        .iter()
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        .filter(|ns| {
            let Some(name) = ns.labels().get(labels::INSTALLATION) else {
                return false;
            };
            let owner_uid = ns
                .owner_references()
                .iter()
                .find(|r| r.kind == "TestInstallation")
                .map(|r| r.uid.clone());
            match owner_uid {
                // Owned: an orphan when that very installation is gone.
                Some(uid) => !installations.contains(&(name.clone(), uid)),
                // Unowned: an orphan when no installation of that name exists.
                None => !installations.iter().any(|(n, _)| n == name),
            }
        })
        .collect()
}

/// One sweep. Returns the names of the namespaces deleted.
pub async fn sweep(client: &Client, recorder: &Recorder) -> kube::Result<Vec<String>> {
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
    if found.is_empty() {
        return Ok(vec![]);
    }
    // Every installation, not only those this controller selects: another
    // controller's namespace is never an orphan.
    let installations: BTreeSet<(String, String)> = Api::<TestInstallation>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|m| (m.name_any(), m.uid().unwrap_or_default()))
        .collect();
    let mut deleted = vec![];
    for ns in orphans(&found, &installations) {
        let name = ns.name_any();
        let installation = ns
            .labels()
            .get(labels::INSTALLATION)
            .cloned()
            .unwrap_or_default();
        tracing::info!(namespace = %name, %installation, "deleting orphaned namespace: its TestInstallation no longer exists");
        match namespaces.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(err) => return Err(err),
        }
        let event = Event {
            type_: EventType::Normal,
            reason: "OrphanDeleted".into(),
            note: Some(format!(
                "namespace {name} belonged to TestInstallation {installation}, which no longer exists"
            )),
            action: "Sweep".into(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, &ns.object_ref(&())).await {
            tracing::warn!(%err, "publishing the sweep event failed");
        }
        deleted.push(name);
    }
    Ok(deleted)
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
    fn namespaces_without_their_installation_are_orphans() {
        let namespaces = [
            ns("ti-live", "live", Some("u1")),
            ns("ti-gone", "gone", Some("u2")),
            ns("ti-old", "reused", Some("old-uid")),
            ns("ti-hand", "hand", None),
        ];
        let installations = BTreeSet::from([
            ("live".to_string(), "u1".to_string()),
            ("reused".to_string(), "new-uid".to_string()),
        ]);
        let names: Vec<String> = orphans(&namespaces, &installations)
            .iter()
            .map(|n| n.name_any())
            .collect();
        assert_eq!(names, ["ti-gone", "ti-old", "ti-hand"]);
    }
}
