//! Publishes Kubernetes Events (`events.k8s.io/v1`) like kube's
//! `kube::runtime::events::Recorder`, with a compact memory of what it
//! published.
//!
//! A publish with the same key as one less than six minutes earlier is folded
//! into the first Event's `series` (count 2, 3, …) instead of making a new
//! Event. kube's recorder keeps every Event object it published for that
//! window (about 1.5 KB each, for Events that mostly never repeat); this one
//! keeps per key only what the series patch needs: the Event's name and
//! namespace, the series count and when it was last observed, under a 64-bit
//! hash of the key.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex, MutexGuard},
};

use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event as K8sEvent, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};

pub use kube::runtime::events::{Event, EventType, Reporter};

/// How long after its last observation a published Event can still be
/// continued as a series (kube's recorder uses the same window).
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// Namespace of the Events about cluster-scoped objects.
const CLUSTER_SCOPED_EVENTS_NAMESPACE: &str = "default";

/// A 64-bit hash of what makes two publishes the same Event: type, action,
/// reason, reporting controller and instance, the regarding object and the
/// related object (the fields of kube's `EventKey`). The note is not part of
/// it, as in kube: a repeat with another note continues the series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventKey(u64);

/// What the series patch of a repeat needs to know about a published Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The Event's name.
    pub name: Box<str>,
    /// The Event's namespace.
    pub namespace: Box<str>,
    /// How often it was observed: 1 for an Event without a series.
    pub count: i32,
    /// When it was last observed: its `eventTime`, or its series'
    /// `lastObservedTime`.
    pub last_observed: Timestamp,
}

/// Pure: the key of publishing `ev` about `regarding` as `reporter`.
///
/// Every field of the object references is hashed, since kube's key compares
/// whole references; the hash function is fixed, so keys are the same in
/// every process.
pub fn event_key(ev: &Event, reporter: &Reporter, regarding: &ObjectReference) -> EventKey {
    let mut hasher = DefaultHasher::new();
    ev.type_.hash(&mut hasher);
    ev.action.hash(&mut hasher);
    ev.reason.hash(&mut hasher);
    reporter.controller.hash(&mut hasher);
    reporter.instance.hash(&mut hasher);
    hash_reference(regarding, &mut hasher);
    match &ev.secondary {
        Some(related) => {
            1u8.hash(&mut hasher);
            hash_reference(related, &mut hasher);
        }
        None => 0u8.hash(&mut hasher),
    }
    EventKey(hasher.finish())
}

fn hash_reference(reference: &ObjectReference, hasher: &mut impl Hasher) {
    let ObjectReference {
        api_version,
        field_path,
        kind,
        name,
        namespace,
        resource_version,
        uid,
    } = reference;
    for field in [
        api_version,
        field_path,
        kind,
        name,
        namespace,
        resource_version,
        uid,
    ] {
        field.hash(hasher);
    }
}

/// Pure: the state of a published Event after one more observation at `now`.
pub fn next_series(previous: &Published, now: Timestamp) -> Published {
    Published {
        count: previous.count.saturating_add(1),
        last_observed: now,
        ..previous.clone()
    }
}

/// Pure: whether `published` can still be continued as a series at `now`.
pub fn is_current(published: &Published, now: Timestamp) -> bool {
    published.last_observed + SERIES_WINDOW > now
}

/// Pure: drops the entries that can no longer be continued at `now`.
pub fn expire(published: &mut HashMap<EventKey, Published>, now: Timestamp) {
    published.retain(|_, entry| is_current(entry, now));
}

/// Pure: the namespace of the Events about `reference`.
pub fn events_namespace(reference: &ObjectReference) -> &str {
    reference
        .namespace
        .as_deref()
        .unwrap_or(CLUSTER_SCOPED_EVENTS_NAMESPACE)
}

/// Pure: a new Event publishing `ev` about `reference` at `now`, named
/// `<reference name or controller>.<nanoseconds since the epoch, in hex>`.
pub fn new_event(
    ev: &Event,
    reporter: &Reporter,
    reference: &ObjectReference,
    now: Timestamp,
) -> K8sEvent {
    let name_prefix = reference.name.as_deref().unwrap_or(&reporter.controller);
    K8sEvent {
        metadata: ObjectMeta {
            name: Some(format!("{name_prefix}.{:x}", now.as_nanosecond())),
            namespace: Some(events_namespace(reference).to_string()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        type_: Some(event_type_name(ev.type_).to_string()),
        regarding: Some(reference.clone()),
        related: ev.secondary.clone(),
        note: ev.note.clone(),
        action: Some(ev.action.clone()),
        reason: Some(ev.reason.clone()),
        ..Default::default()
    }
}

fn event_type_name(type_: EventType) -> &'static str {
    match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// Pure: the merge patch that records `published`'s series.
pub fn series_patch(published: &Published) -> serde_json::Value {
    serde_json::json!({
        "series": EventSeries {
            count: published.count,
            last_observed_time: MicroTime(published.last_observed),
        }
    })
}

/// Publishes Events, folding repeats into series; a drop-in replacement for
/// `kube::runtime::events::Recorder`. Clones share one memory of what was
/// published.
///
/// Needs `create` and `patch` on `events` in `events.k8s.io`.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    published: Arc<Mutex<HashMap<EventKey, Published>>>,
}

impl Recorder {
    /// A recorder publishing as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            published: Arc::default(),
        }
    }

    /// Publishes `ev` about `reference`, in the reference's namespace (or
    /// `default` for a cluster-scoped object): a new Event, or the next step
    /// of the series of the same Event published less than six minutes ago.
    /// When that Event was deleted meanwhile, a new one is made.
    ///
    /// Two concurrent publishes of one key may both make an Event (as with
    /// kube's recorder): the memory is not held across the API call, so that
    /// publishes of other keys never wait for it.
    pub async fn publish(&self, ev: &Event, reference: &ObjectReference) -> kube::Result<()> {
        let now = Timestamp::now();
        let key = event_key(ev, &self.reporter, reference);
        let previous = {
            let mut published = self.published();
            expire(&mut published, now);
            published.get(&key).cloned()
        };
        let current = match previous {
            Some(previous) => {
                let repeat = next_series(&previous, now);
                match self.patch_series(&repeat).await {
                    Ok(()) => repeat,
                    Err(kube::Error::Api(status)) if status.is_not_found() => {
                        self.create(ev, reference, now).await?
                    }
                    Err(err) => return Err(err),
                }
            }
            None => self.create(ev, reference, now).await?,
        };
        self.published().insert(key, current);
        Ok(())
    }

    async fn create(
        &self,
        ev: &Event,
        reference: &ObjectReference,
        now: Timestamp,
    ) -> kube::Result<Published> {
        let event = new_event(ev, &self.reporter, reference, now);
        let namespace = events_namespace(reference);
        Api::<K8sEvent>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await?;
        Ok(Published {
            name: event.metadata.name.unwrap_or_default().into(),
            namespace: namespace.into(),
            count: 1,
            last_observed: now,
        })
    }

    async fn patch_series(&self, repeat: &Published) -> kube::Result<()> {
        Api::<K8sEvent>::namespaced(self.client.clone(), &repeat.namespace)
            .patch(
                &repeat.name,
                &PatchParams::default(),
                &Patch::Merge(series_patch(repeat)),
            )
            .await?;
        Ok(())
    }

    fn published(&self) -> MutexGuard<'_, HashMap<EventKey, Published>> {
        self.published.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reporter() -> Reporter {
        Reporter {
            controller: "ephemera-controller".into(),
            instance: Some("pod-1".into()),
        }
    }

    fn event() -> Event {
        Event {
            type_: EventType::Normal,
            reason: "Ready".into(),
            note: Some("every part is ready".into()),
            action: "ProvisioningToReady".into(),
            secondary: None,
        }
    }

    fn regarding() -> ObjectReference {
        ObjectReference {
            api_version: Some("ephemera.dev/v1alpha1".into()),
            kind: Some("TestInstallation".into()),
            name: Some("shop".into()),
            uid: Some("0d9c-uid".into()),
            ..Default::default()
        }
    }

    fn secret() -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            namespace: Some("ti-shop".into()),
            name: Some("credentials".into()),
            ..Default::default()
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn published(count: i32, last_observed: Timestamp) -> Published {
        Published {
            name: "shop.17f".into(),
            namespace: "default".into(),
            count,
            last_observed,
        }
    }

    #[test]
    fn the_same_fields_make_the_same_key_whatever_the_note() {
        let key = event_key(&event(), &reporter(), &regarding());
        assert_eq!(key, event_key(&event(), &reporter(), &regarding()));
        let other_note = Event {
            note: Some("another note".into()),
            ..event()
        };
        assert_eq!(key, event_key(&other_note, &reporter(), &regarding()));
        let no_note = Event {
            note: None,
            ..event()
        };
        assert_eq!(key, event_key(&no_note, &reporter(), &regarding()));
    }

    #[test]
    fn every_key_field_makes_another_key() {
        let key = event_key(&event(), &reporter(), &regarding());
        let events = [
            Event {
                type_: EventType::Warning,
                ..event()
            },
            Event {
                action: "Create".into(),
                ..event()
            },
            Event {
                reason: "Pending".into(),
                ..event()
            },
            Event {
                secondary: Some(secret()),
                ..event()
            },
        ];
        for (i, other) in events.iter().enumerate() {
            assert_ne!(
                key,
                event_key(other, &reporter(), &regarding()),
                "event {i}"
            );
        }
        let reporters = [
            Reporter {
                controller: "ephemera-chat".into(),
                ..reporter()
            },
            Reporter {
                instance: None,
                ..reporter()
            },
            Reporter {
                instance: Some("pod-2".into()),
                ..reporter()
            },
        ];
        for other in &reporters {
            assert_ne!(key, event_key(&event(), other, &regarding()), "{other:?}");
        }
        let references = [
            ObjectReference {
                api_version: Some("ephemera.dev/v1beta1".into()),
                ..regarding()
            },
            ObjectReference {
                field_path: Some("spec".into()),
                ..regarding()
            },
            ObjectReference {
                kind: Some("TestRun".into()),
                ..regarding()
            },
            ObjectReference {
                name: Some("blog".into()),
                ..regarding()
            },
            ObjectReference {
                namespace: Some("ti-shop".into()),
                ..regarding()
            },
            ObjectReference {
                resource_version: Some("42".into()),
                ..regarding()
            },
            ObjectReference {
                uid: Some("another-uid".into()),
                ..regarding()
            },
        ];
        for other in &references {
            assert_ne!(key, event_key(&event(), &reporter(), other), "{other:?}");
        }
    }

    #[test]
    fn the_related_object_is_part_of_the_key() {
        let with = |related: ObjectReference| Event {
            secondary: Some(related),
            ..event()
        };
        let key = event_key(&with(secret()), &reporter(), &regarding());
        assert_eq!(key, event_key(&with(secret()), &reporter(), &regarding()));
        let other_secret = ObjectReference {
            name: Some("ephemera-generated".into()),
            ..secret()
        };
        assert_ne!(
            key,
            event_key(&with(other_secret), &reporter(), &regarding())
        );
        // Regarding and related are not interchangeable.
        assert_ne!(
            event_key(&with(regarding()), &reporter(), &secret()),
            event_key(&with(secret()), &reporter(), &regarding())
        );
    }

    #[test]
    fn a_repeat_counts_up_from_two_and_keeps_the_event() {
        let first = published(1, at(0));
        let second = next_series(&first, at(10));
        assert_eq!(
            second,
            Published {
                count: 2,
                last_observed: at(10),
                ..first.clone()
            }
        );
        let third = next_series(&second, at(20));
        assert_eq!((third.count, third.last_observed), (3, at(20)));
        assert_eq!((&*third.name, &*third.namespace), ("shop.17f", "default"));
    }

    #[test]
    fn entries_expire_six_minutes_after_their_last_observation() {
        let entry = published(1, at(0));
        assert!(is_current(&entry, at(359)));
        assert!(!is_current(&entry, at(360)));
        assert!(!is_current(&entry, at(3600)));
        // A series lives on from its last observation.
        let repeated = next_series(&entry, at(300));
        assert!(is_current(&repeated, at(659)));
        assert!(!is_current(&repeated, at(660)));
    }

    #[test]
    fn expire_drops_only_the_old_entries() {
        let mut entries = HashMap::from([
            (EventKey(1), published(1, at(0))),
            (EventKey(2), published(3, at(100))),
            (EventKey(3), published(1, at(400))),
        ]);
        expire(&mut entries, at(459));
        let mut left: Vec<_> = entries.keys().copied().collect();
        left.sort_by_key(|k| k.0);
        assert_eq!(left, [EventKey(2), EventKey(3)]);
        expire(&mut entries, at(10_000));
        assert!(entries.is_empty());
    }

    #[test]
    fn a_new_event_carries_what_kube_s_recorder_puts_in_it() {
        let now = at(0);
        let reference = ObjectReference {
            namespace: Some("ti-shop".into()),
            ..regarding()
        };
        let ev = Event {
            secondary: Some(secret()),
            ..event()
        };
        let made = new_event(&ev, &reporter(), &reference, now);
        let expected_name = format!("shop.{:x}", now.as_nanosecond());
        assert_eq!(made.metadata.name.as_deref(), Some(expected_name.as_str()));
        assert_eq!(made.metadata.namespace.as_deref(), Some("ti-shop"));
        assert_eq!(made.event_time, Some(MicroTime(now)));
        assert_eq!(
            made.reporting_controller.as_deref(),
            Some("ephemera-controller")
        );
        assert_eq!(made.reporting_instance.as_deref(), Some("pod-1"));
        assert_eq!(made.type_.as_deref(), Some("Normal"));
        assert_eq!(made.regarding, Some(reference));
        assert_eq!(made.related, Some(secret()));
        assert_eq!(made.note.as_deref(), Some("every part is ready"));
        assert_eq!(made.action.as_deref(), Some("ProvisioningToReady"));
        assert_eq!(made.reason.as_deref(), Some("Ready"));
        assert_eq!(made.series, None);
    }

    #[test]
    fn a_new_event_about_a_nameless_cluster_scoped_object_falls_back() {
        let reference = ObjectReference {
            name: None,
            ..regarding()
        };
        let reporter = Reporter {
            instance: None,
            ..reporter()
        };
        let warning = Event {
            type_: EventType::Warning,
            ..event()
        };
        let made = new_event(&warning, &reporter, &reference, at(0));
        let name = made.metadata.name.unwrap();
        assert!(name.starts_with("ephemera-controller."), "{name}");
        assert_eq!(made.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            made.reporting_instance.as_deref(),
            Some("ephemera-controller")
        );
        assert_eq!(made.type_.as_deref(), Some("Warning"));
    }

    #[test]
    fn the_series_patch_sets_count_and_last_observed_time() {
        let patch = series_patch(&published(2, at(0)));
        assert_eq!(
            patch,
            serde_json::json!({
                "series": { "count": 2, "lastObservedTime": "2023-11-14T22:13:20.000000Z" }
            })
        );
    }
}
