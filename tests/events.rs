//! The Event recorder against the real API server: a repeat within the
//! series window continues the first Event's series; a repeat after that
//! Event was deleted makes a new Event (and continues that one next); another
//! reason is another Event.

mod support;

use ephemera::events::{Event, EventType, Recorder, Reporter};
use k8s_openapi::api::{core::v1::ConfigMap, events::v1::Event as K8sEvent};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use support::{TestNamespace, client, unique_name};

fn event(reason: &str) -> Event {
    Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(format!("{reason} happened")),
        action: "Test".into(),
        secondary: None,
    }
}

/// The Events in the namespace with this reason.
async fn events_with_reason(events: &Api<K8sEvent>, reason: &str) -> Vec<K8sEvent> {
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

/// The one Event with this reason, and its series count (1 without a series).
async fn the_event(events: &Api<K8sEvent>, reason: &str) -> (K8sEvent, i32) {
    let mut found = events_with_reason(events, reason).await;
    assert_eq!(
        found.len(),
        1,
        "expected one {reason} Event, found {found:#?}"
    );
    let event = found.remove(0);
    let count = event.series.as_ref().map_or(1, |s| s.count);
    (event, count)
}

#[tokio::test]
async fn repeats_fold_into_a_series_and_a_deleted_event_is_made_again() {
    let client = client().await;
    let namespace = TestNamespace::create(&client, "events").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace.name);
    let mut regarded = ConfigMap::default();
    regarded.metadata.name = Some("regarded".into());
    let regarded = config_maps
        .create(&PostParams::default(), &regarded)
        .await
        .unwrap();
    let reference = regarded.object_ref(&());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "ephemera-events-test".into(),
            instance: Some(unique_name("recorder")),
        },
    );
    let events: Api<K8sEvent> = Api::namespaced(client.clone(), &namespace.name);

    // Published twice: one Event, its series at 2.
    recorder.publish(&event("First"), &reference).await.unwrap();
    let (first, count) = the_event(&events, "First").await;
    assert_eq!(count, 1, "{first:#?}");
    assert_eq!(first.regarding.as_ref(), Some(&reference));
    assert_eq!(
        first.reporting_controller.as_deref(),
        Some("ephemera-events-test")
    );
    assert_eq!(first.note.as_deref(), Some("First happened"));
    recorder.publish(&event("First"), &reference).await.unwrap();
    let (repeated, count) = the_event(&events, "First").await;
    assert_eq!(repeated.name_any(), first.name_any());
    assert_eq!(count, 2, "{repeated:#?}");

    // Deleted, then published again: the series patch answers 404, and a new
    // Event is made and remembered (the next repeat continues it).
    events
        .delete(&first.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    recorder.publish(&event("First"), &reference).await.unwrap();
    let (remade, count) = the_event(&events, "First").await;
    assert_ne!(remade.name_any(), first.name_any());
    assert_eq!(count, 1, "{remade:#?}");
    recorder.publish(&event("First"), &reference).await.unwrap();
    let (remade_repeated, count) = the_event(&events, "First").await;
    assert_eq!(remade_repeated.name_any(), remade.name_any());
    assert_eq!(count, 2, "{remade_repeated:#?}");

    // Another reason: a separate Event; the first one is left as it was.
    recorder
        .publish(&event("Second"), &reference)
        .await
        .unwrap();
    let (second, count) = the_event(&events, "Second").await;
    assert_ne!(second.name_any(), remade.name_any());
    assert_eq!(count, 1, "{second:#?}");
    assert_eq!(the_event(&events, "First").await.1, 2);

    namespace.delete().await;
}
