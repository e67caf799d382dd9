//! Capacity: at most `maxInstallations` installations in the cluster and at
//! most `maxPerRequester` per `ephemera.dev/requester`. Installations over a
//! limit wait in `Pending` with reason `QuotaExceeded`, oldest first, and
//! start by themselves when capacity frees up. Nothing is dropped.

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;

use crate::api::labels;

/// What capacity needs to know about one installation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    pub requester: Option<String>,
    pub created: Option<Timestamp>,
    /// Already started (holds capacity until deleted).
    pub admitted: bool,
    pub deleting: bool,
}

impl Slot {
    pub fn of(installation: &crate::api::TestInstallation, admitted: bool) -> Self {
        use kube::ResourceExt;
        Self {
            name: installation.name_any(),
            requester: installation.labels().get(labels::REQUESTER).cloned(),
            created: installation
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0),
            admitted,
            deleting: installation.metadata.deletion_timestamp.is_some(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Waits; the message says which limit and the place in the queue.
    Queued {
        message: String,
    },
}

/// Decides whether `name` may start now. Already admitted installations keep
/// their place; waiting ones are admitted oldest first (then by name) while
/// both limits allow.
pub fn admit(
    name: &str,
    slots: &[Slot],
    max_total: Option<u32>,
    max_per_requester: Option<u32>,
) -> Admission {
    let Some(me) = slots.iter().find(|s| s.name == name) else {
        return Admission::Admitted;
    };
    if me.admitted || (max_total.is_none() && max_per_requester.is_none()) {
        return Admission::Admitted;
    }
    // Deleting installations still hold their capacity until they are gone.
    let mut running: Vec<&Slot> = slots.iter().filter(|s| s.admitted).collect();
    let mut queue: Vec<&Slot> = slots
        .iter()
        .filter(|s| !s.admitted && !s.deleting)
        .collect();
    queue.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));

    // Walk the queue in order, admitting as the limits allow; the first
    // limit that stops `me` is the one reported.
    let mut ahead_total = 0usize;
    let mut ahead_same_requester = 0usize;
    let mut admitted_now: BTreeSet<&str> = BTreeSet::new();
    for slot in &queue {
        let total_ok = max_total.is_none_or(|max| (running.len() as u32) < max);
        let requester_ok = match (&slot.requester, max_per_requester) {
            (Some(r), Some(max)) => {
                (running
                    .iter()
                    .filter(|s| s.requester.as_ref() == Some(r))
                    .count() as u32)
                    < max
            }
            _ => true,
        };
        if slot.name == name {
            if total_ok && requester_ok {
                return Admission::Admitted;
            }
            let message = if !total_ok {
                format!(
                    "waiting for capacity: the cluster-wide limit of {} installations is reached; {} in the queue",
                    max_total.unwrap_or_default(),
                    ordinal(ahead_total + 1)
                )
            } else {
                format!(
                    "waiting for capacity: requester {} already has the maximum of {} installations; {} in their queue",
                    slot.requester.as_deref().unwrap_or_default(),
                    max_per_requester.unwrap_or_default(),
                    ordinal(ahead_same_requester + 1)
                )
            };
            return Admission::Queued { message };
        }
        if total_ok && requester_ok {
            running.push(slot);
            admitted_now.insert(&slot.name);
        } else {
            ahead_total += 1;
            if slot.requester.is_some() && slot.requester == me.requester {
                ahead_same_requester += 1;
            }
        }
    }
    Admission::Admitted
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, r) if r != 11 => "st",
        (2, r) if r != 12 => "nd",
        (3, r) if r != 13 => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(name: &str, requester: &str, minute: u32, admitted: bool) -> Slot {
        Slot {
            name: name.into(),
            requester: (!requester.is_empty()).then(|| requester.to_string()),
            created: Some(format!("2026-11-22T10:{minute:02}:00Z").parse().unwrap()),
            admitted,
            deleting: false,
        }
    }

    #[test]
    fn no_limits_admits_everything() {
        let slots = [slot("a", "", 0, false)];
        assert_eq!(admit("a", &slots, None, None), Admission::Admitted);
    }

    #[test]
    fn cluster_limit_queues_the_newest_with_its_place() {
        let slots = [
            slot("a", "", 0, true),
            slot("b", "", 1, true),
            slot("c", "", 2, false),
            slot("d", "", 3, false),
        ];
        let Admission::Queued { message } = admit("d", &slots, Some(2), None) else {
            panic!("d was admitted over the limit");
        };
        assert_eq!(
            message,
            "waiting for capacity: the cluster-wide limit of 2 installations is reached; 2nd in the queue"
        );
        // One finishes: the oldest waiting one starts, not the newest.
        let freed = [
            slot("a", "", 0, true),
            slot("c", "", 2, false),
            slot("d", "", 3, false),
        ];
        assert_eq!(admit("c", &freed, Some(2), None), Admission::Admitted);
        assert!(matches!(
            admit("d", &freed, Some(2), None),
            Admission::Queued { .. }
        ));
    }

    #[test]
    fn requester_limit_only_holds_back_that_requester() {
        let slots = [
            slot("a", "alice", 0, true),
            slot("b", "alice", 1, false),
            slot("c", "bob", 2, false),
        ];
        let Admission::Queued { message } = admit("b", &slots, None, Some(1)) else {
            panic!("b was admitted over alice's limit");
        };
        assert!(
            message.contains("requester alice already has the maximum of 1"),
            "{message}"
        );
        assert_eq!(admit("c", &slots, None, Some(1)), Admission::Admitted);
    }

    #[test]
    fn admitted_installations_keep_their_place() {
        let slots = [slot("a", "", 0, true), slot("b", "", 1, true)];
        assert_eq!(admit("b", &slots, Some(1), None), Admission::Admitted);
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal(1), "1st");
        assert_eq!(ordinal(12), "12th");
        assert_eq!(ordinal(23), "23rd");
    }
}
