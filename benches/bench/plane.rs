//! What the rest of the plane is doing while the bench measures: deletions
//! left over from earlier runs, and who wrote the Events of a window.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Event, Namespace},
    jiff::Timestamp,
};
use kube::{Api, Client, api::ListParams};

/// Waits (at most `patience`) until no namespace is terminating, so that
/// the tail of an earlier run's deletions is not counted as this run's
/// work. Says what it waits for every 10 s.
pub async fn wait_until_no_namespace_terminates(client: &Client, patience: Duration) {
    let api: Api<Namespace> = Api::all(client.clone());
    let started = Instant::now();
    let mut said = Instant::now();
    loop {
        let terminating = api
            .list_metadata(&ListParams::default())
            .await
            .map(|list| {
                list.items
                    .iter()
                    .filter(|ns| ns.metadata.deletion_timestamp.is_some())
                    .count()
            })
            .unwrap_or(0);
        if terminating == 0 {
            return;
        }
        if started.elapsed() > patience {
            eprintln!(
                "[bench] {terminating} namespaces still terminating after {:.0} s; measuring anyway",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        if said.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "[bench] waiting for {terminating} terminating namespaces of earlier runs ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Events written (created or counted again) since `since`, by
/// "reporting component: reason".
pub async fn events_since(client: &Client, since: Timestamp) -> BTreeMap<String, f64> {
    let events = Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|list| list.items)
        .unwrap_or_default();
    let mut by_reporter = BTreeMap::new();
    for event in events {
        let last_written = [
            event.metadata.creation_timestamp.as_ref().map(|t| t.0),
            event.last_timestamp.as_ref().map(|t| t.0),
            event.event_time.as_ref().map(|t| t.0),
            event
                .series
                .as_ref()
                .and_then(|s| s.last_observed_time.as_ref())
                .map(|t| t.0),
        ]
        .into_iter()
        .flatten()
        .max();
        if last_written.is_none_or(|at| at < since) {
            continue;
        }
        let reporter = event
            .reporting_component
            .filter(|c| !c.is_empty())
            .or_else(|| event.source.and_then(|s| s.component))
            .unwrap_or_else(|| "unknown".into());
        let key = format!("{reporter}: {}", event.reason.unwrap_or_default());
        *by_reporter.entry(key).or_insert(0.0) += 1.0;
    }
    by_reporter
}
