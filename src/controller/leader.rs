//! Leader election over a `coordination.k8s.io` Lease (kube-lease-manager),
//! so that of several controller replicas only one reconciles and writes.
//!
//! A standby waits for the Lease to be free: released by a leader that shut
//! down (seen at once through a watch on the Lease) or expired because the
//! leader died or lost the API server (after the lease duration). A leader
//! that cannot confirm its Lease steps down; the caller then stops the
//! controller and exits, so a restarted process starts again as a standby
//! with empty caches.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, future::BoxFuture};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use serde::Deserialize;
use tokio::sync::watch;

/// `leaderElection` in the controller config. Absent: no election, this
/// process reconciles at once (one replica, or the local plane).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LeaderElection {
    /// Name of the Lease.
    pub lease_name: String,
    /// Namespace of the Lease (the chart sets the release namespace).
    pub namespace: String,
    /// How long a Lease stays valid after the leader last renewed it: the
    /// longest a standby waits when the leader dies without releasing it.
    pub lease_duration: String,
}

impl Default for LeaderElection {
    fn default() -> Self {
        Self {
            lease_name: "ephemera-controller".into(),
            namespace: "ephemera-system".into(),
            lease_duration: "15s".into(),
        }
    }
}

impl LeaderElection {
    /// Lease duration and the renewal margin before it ends, in seconds.
    pub fn timing(&self) -> anyhow::Result<(u64, u64)> {
        let duration = crate::api::duration::parse_duration(&self.lease_duration)
            .map_err(|err| anyhow::anyhow!("leaderElection.leaseDuration: {err}"))?
            .as_secs();
        if duration < 3 {
            anyhow::bail!("leaderElection.leaseDuration must be at least 3s");
        }
        // Renew when a third of the lease is left: two renewals can fail
        // before a standby may take over.
        Ok((duration, (duration / 3).max(1)))
    }
}

/// Who this process is in the Lease: the pod's name in a cluster, else the
/// host and process id.
pub fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        format!("{host}-{}", std::process::id())
    })
}

/// This process holds the Lease; it keeps renewing it until `release` or
/// until it cannot any more (see `lost`).
pub struct Leader {
    manager: Arc<LeaseManager>,
    keeper: tokio::task::JoinHandle<()>,
    lost: watch::Receiver<bool>,
}

impl Leader {
    /// Resolves when the Lease is lost (taken by another replica or not
    /// renewable); never resolves while it is held.
    pub fn lost(&self) -> BoxFuture<'static, ()> {
        let mut lost = self.lost.clone();
        Box::pin(async move {
            let _ = lost.wait_for(|lost| *lost).await;
        })
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Frees the Lease so that a standby takes over at once.
    pub async fn release(self) {
        self.keeper.abort();
        let _ = self.keeper.await;
        match tokio::time::timeout(Duration::from_secs(5), self.manager.release()).await {
            Ok(Ok(())) => tracing::info!("released the leader lease"),
            Ok(Err(err)) => tracing::warn!(%err, "releasing the leader lease failed"),
            Err(_) => tracing::warn!("releasing the leader lease timed out"),
        }
    }
}

/// Waits until this process holds the Lease. `None` when `shutdown`
/// resolves first.
pub async fn acquire(
    client: Client,
    settings: &LeaderElection,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Option<Leader>> {
    let (duration, grace) = settings.timing()?;
    let identity = identity();
    tracing::info!(
        lease = %settings.lease_name,
        namespace = %settings.namespace,
        %identity,
        "waiting to become the leader"
    );
    let elected = async {
        loop {
            let manager = match LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
                .with_namespace(&settings.namespace)
                .with_identity(&identity)
                .with_duration(duration)
                .with_grace(grace)
                .build()
                .await
            {
                Ok(manager) => manager,
                Err(err) => {
                    tracing::warn!(%err, "cannot read the leader lease; trying again");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            // The manager sleeps until the lease it last saw expires; a
            // release by the leader is seen through the watch instead, and
            // a fresh manager then reads the free lease.
            let outcome = tokio::select! {
                result = manager.changed() => Some(result),
                () = released(client.clone(), settings) => None,
            };
            match outcome {
                Some(Ok(true)) => return manager,
                Some(Err(err)) => {
                    tracing::warn!(%err, "leader election failed; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Some(Ok(false)) | None => {}
            }
        }
    };
    let manager = tokio::select! {
        manager = elected => Arc::new(manager),
        () = shutdown => return Ok(None),
    };
    tracing::info!(lease = %settings.lease_name, %identity, "became the leader");
    let (lost_tx, lost) = watch::channel(false);
    let keeper_manager = manager.clone();
    let keeper = tokio::spawn(async move {
        loop {
            match keeper_manager.changed().await {
                Ok(true) => continue,
                Ok(false) => tracing::error!("another replica took the leader lease"),
                Err(err) => tracing::error!(%err, "cannot renew the leader lease"),
            }
            let _ = lost_tx.send(true);
            return;
        }
    });
    Ok(Some(Leader {
        manager,
        keeper,
        lost,
    }))
}

/// Resolves when the Lease is seen without a holder.
async fn released(client: Client, settings: &LeaderElection) {
    let leases: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let config =
        watcher::Config::default().fields(&format!("metadata.name={}", settings.lease_name));
    let mut events = watcher(leases, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        if let Ok(lease) = event
            && lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                .is_none_or(str::is_empty)
        {
            return;
        }
    }
    futures::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_leaves_a_third_of_the_lease() {
        let settings = LeaderElection::default();
        assert_eq!(settings.timing().unwrap(), (15, 5));
        let short = LeaderElection {
            lease_duration: "2s".into(),
            ..Default::default()
        };
        assert!(
            short
                .timing()
                .unwrap_err()
                .to_string()
                .contains("at least 3s")
        );
    }

    #[test]
    fn config_keys_are_checked() {
        let parsed: LeaderElection =
            serde_yaml::from_str("leaseName: x\nnamespace: y\nleaseDuration: 9s").unwrap();
        assert_eq!(parsed.timing().unwrap(), (9, 3));
        assert!(serde_yaml::from_str::<LeaderElection>("leaseDurtion: 9s").is_err());
    }
}
