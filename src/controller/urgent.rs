//! The urgent lane: expiry and deletion run here, beside the controller's
//! queue rather than in it. The queue runs routine passes at `concurrency`
//! in the order they came due, so after a restart (every installation due at
//! once) or with a low concurrency, a deadline or a deletion would wait for
//! everything queued before it. The lane keeps its own timer of expiry
//! deadlines and its own set of installations being deleted, and acts on
//! them at once; a per-installation lock (`Context::exclusive`) keeps it
//! from running beside a routine pass of the same installation.
//!
//! It is woken by the TestInstallation watch (every event, status writes
//! included, so a newly recorded ttl is seen), and by the Namespace watch
//! when a namespace that a deletion waits for is gone. A long safety timer
//! looks again at a deletion that heard nothing.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use futures::{
    StreamExt,
    channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded},
};
use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, core::DeserializeGuard, runtime::reflector::ObjectRef};

use super::{
    context::Context,
    lifecycle::{
        expiry::{self, Expiry},
        ttl,
    },
    plan,
    reconcile::{self, Cleanup},
};
use crate::api::TestInstallation;

type Guarded = DeserializeGuard<TestInstallation>;

/// How often a deletion that heard nothing from its namespace's watch is
/// looked at again.
const DELETION_SAFETY: Duration = Duration::from_secs(300);
/// Lane work running at once (each is one or two API calls).
const PARALLEL: usize = 4;

/// What the lane has to do for an installation, as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// It is being deleted and still holds our finalizer: delete its
    /// namespace, then let it go.
    Delete,
    /// Delete it at this time.
    ExpireAt(Timestamp),
    Nothing,
}

/// What the lane does for `installation`, given the ttl settings of its
/// profile when known (see `ttl::lifetime`: an extension is only taken with
/// the profile at hand, exactly as a routine pass takes it).
pub fn wanted(
    installation: &TestInstallation,
    profile: Option<(&str, &crate::api::ProfileTtl)>,
) -> Wanted {
    if installation.metadata.deletion_timestamp.is_some() {
        let ours = installation
            .finalizers()
            .iter()
            .any(|f| f == reconcile::FINALIZER);
        return if ours {
            Wanted::Delete
        } else {
            Wanted::Nothing
        };
    }
    if installation.spec.deletion_locked {
        // A routine pass reports the expired-but-locked state.
        return Wanted::Nothing;
    }
    match ttl::lifetime(installation, profile).expires_at(installation) {
        Some(at) => Wanted::ExpireAt(at.0),
        None => Wanted::Nothing,
    }
}

/// Handle to wake the lane.
#[derive(Clone)]
pub struct Lane(UnboundedSender<Note>);

enum Note {
    /// The installation changed (or may have): look at it.
    Seen(String),
    /// A namespace changed or went away.
    Namespace(String),
    /// A deletion waits for this namespace to go away.
    Waiting {
        installation: String,
        namespace: String,
    },
    /// Look again at this time.
    Later { installation: String, at: Timestamp },
    /// Nothing is left to do for it.
    Finished(String),
}

/// The lane's receiving end, to hand to `run`.
pub struct Inbox(UnboundedReceiver<Note>, Lane);

pub fn channel() -> (Lane, Inbox) {
    let (tx, rx) = unbounded();
    let lane = Lane(tx);
    (lane.clone(), Inbox(rx, lane))
}

impl Lane {
    /// An installation event (status writes included).
    pub fn installation_seen(&self, name: &str) {
        let _ = self.0.unbounded_send(Note::Seen(name.to_string()));
    }

    /// A namespace event.
    pub fn namespace_seen(&self, name: &str) {
        let _ = self.0.unbounded_send(Note::Namespace(name.to_string()));
    }

    fn send(&self, note: Note) {
        let _ = self.0.unbounded_send(note);
    }
}

/// The lane's timetable: when to look at which installation, and which
/// deletions wait on which namespace.
#[derive(Default)]
struct Timetable {
    due: BTreeSet<(Timestamp, String)>,
    at: HashMap<String, Timestamp>,
    /// Installations whose deletion the lane has taken on.
    deleting: BTreeSet<String>,
    /// namespace → the installation whose deletion waits for it
    waiting_on: HashMap<String, String>,
}

impl Timetable {
    fn schedule(&mut self, name: &str, at: Timestamp) {
        self.unschedule(name);
        self.due.insert((at, name.to_string()));
        self.at.insert(name.to_string(), at);
    }

    fn unschedule(&mut self, name: &str) {
        if let Some(at) = self.at.remove(name) {
            self.due.remove(&(at, name.to_string()));
        }
    }

    fn next(&self) -> Option<Timestamp> {
        self.due.first().map(|(at, _)| *at)
    }

    /// Takes the installations due at `now`.
    fn take_due(&mut self, now: Timestamp) -> Vec<String> {
        let mut names = Vec::new();
        while let Some((at, _)) = self.due.first()
            && *at <= now
        {
            let (_, name) = self.due.pop_first().expect("checked");
            self.at.remove(&name);
            names.push(name);
        }
        names
    }

    fn forget(&mut self, name: &str) {
        self.unschedule(name);
        self.deleting.remove(name);
        self.waiting_on.retain(|_, waiting| waiting != name);
    }
}

/// Runs the lane until the task is aborted.
pub async fn run(inbox: Inbox, ctx: Arc<Context>) {
    let Inbox(mut notes, lane) = inbox;
    ctx.caches.wait_until_ready().await;
    let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut table = Timetable::default();
    let get = |name: &str| ctx.installation(name);
    loop {
        let sleep = match table.next() {
            Some(at) => {
                let left = Timestamp::now().duration_until(at);
                Duration::from_millis(left.as_millis().max(0) as u64)
            }
            None => Duration::from_secs(3600),
        };
        let note = tokio::select! {
            note = notes.next() => match note {
                Some(note) => Some(note),
                None => return,
            },
            () = tokio::time::sleep(sleep) => None,
        };
        let mut act: Vec<String> = Vec::new();
        match note {
            None => {}
            Some(Note::Seen(name)) => {
                let Some(guard) = get(&name) else {
                    table.forget(&name);
                    continue;
                };
                let Ok(installation) = &guard.0 else { continue };
                match wanted_now(installation, &ctx) {
                    Wanted::Delete => {
                        // Taken on once; its namespace's watch drives the rest.
                        if table.deleting.insert(name.clone()) {
                            table.unschedule(&name);
                            act.push(name);
                        }
                    }
                    Wanted::ExpireAt(at) => table.schedule(&name, at),
                    Wanted::Nothing => table.forget(&name),
                }
            }
            Some(Note::Namespace(namespace)) => {
                // Only a namespace that is gone (or no longer terminating)
                // moves a deletion on; its status updates while it empties
                // do not.
                let terminating = ctx
                    .caches
                    .namespaces
                    .get(&ObjectRef::new(&namespace))
                    .is_some_and(|ns| ns.metadata.deletion_timestamp.is_some());
                if !terminating && let Some(name) = table.waiting_on.remove(&namespace) {
                    table.unschedule(&name);
                    act.push(name);
                }
            }
            Some(Note::Waiting {
                installation,
                namespace,
            }) if table.deleting.contains(&installation) => {
                let gone_meanwhile = ctx
                    .caches
                    .namespaces
                    .get(&ObjectRef::new(&namespace))
                    .is_none();
                if gone_meanwhile {
                    act.push(installation);
                } else {
                    table.waiting_on.insert(namespace, installation.clone());
                    let safety = Timestamp::now()
                        .checked_add(DELETION_SAFETY)
                        .unwrap_or(Timestamp::MAX);
                    table.schedule(&installation, safety);
                }
            }
            Some(Note::Waiting { .. }) => {}
            Some(Note::Later { installation, at }) => table.schedule(&installation, at),
            Some(Note::Finished(name)) => table.forget(&name),
        }
        act.extend(table.take_due(Timestamp::now()));
        for name in act {
            let Some(guard) = get(&name) else {
                table.forget(&name);
                continue;
            };
            let (ctx, lane, permits) = (ctx.clone(), lane.clone(), permits.clone());
            tokio::spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                act_on(&name, guard, &ctx, &lane).await;
            });
        }
    }
}

/// `wanted` with the installation's profile from the store.
fn wanted_now(installation: &TestInstallation, ctx: &Context) -> Wanted {
    let profile_name = plan::profile_name(installation);
    let profile = ctx.caches.profile(profile_name);
    wanted(
        installation,
        profile.as_ref().map(|p| (profile_name, &p.spec.ttl)),
    )
}

/// Expires or deletes one installation, holding its lock, and tells the
/// lane what comes next.
async fn act_on(name: &str, guard: Arc<Guarded>, ctx: &Context, lane: &Lane) {
    let _exclusive = ctx.exclusive(name).await;
    // A routine pass may have moved it on while we waited for the lock: the
    // store (updated before its watch event woke anyone) has the latest.
    let guard = ctx.installation(name).unwrap_or(guard);
    let Ok(installation) = &guard.0 else { return };
    let retry = |err: &dyn std::fmt::Display| {
        let delay = ctx.next_backoff(name);
        tracing::warn!(installation = %name, %err, retry_in = ?delay, "urgent lane: will try again");
        let at = Timestamp::now()
            .checked_add(delay)
            .unwrap_or(Timestamp::MAX);
        lane.send(Note::Later {
            installation: name.to_string(),
            at,
        });
    };
    match wanted_now(installation, ctx) {
        Wanted::Delete => {
            ctx.metrics.reconciles.inc();
            match reconcile::cleanup(installation, ctx).await {
                Ok(Cleanup::WaitingFor(namespace)) => lane.send(Note::Waiting {
                    installation: name.to_string(),
                    namespace,
                }),
                Ok(Cleanup::Done) => lane.send(Note::Finished(name.to_string())),
                Err(err) => retry(&err),
            }
        }
        Wanted::ExpireAt(at) => {
            match expiry::decide(Some(at), false, Timestamp::now()) {
                Expiry::Due => {
                    ctx.metrics.reconciles.inc();
                    // The deletion's own watch event brings it back here.
                    if let Err(err) = reconcile::expire(ctx, installation).await {
                        retry(&err);
                    }
                }
                _ => lane.send(Note::Later {
                    installation: name.to_string(),
                    at,
                }),
            }
        }
        Wanted::Nothing => lane.send(Note::Finished(name.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ProfileTtl, TestInstallationSpec, TestInstallationStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ti(ttl: Option<&str>, recorded: Option<&str>) -> TestInstallation {
        let mut ti = TestInstallation::new(
            "demo",
            TestInstallationSpec {
                ttl: ttl.map(String::from),
                ..Default::default()
            },
        );
        ti.metadata.creation_timestamp = Some(Time("2026-11-22T10:00:00Z".parse().unwrap()));
        ti.status = recorded.map(|r| TestInstallationStatus {
            ttl: Some(r.into()),
            ..Default::default()
        });
        ti
    }

    fn at(s: &str) -> Wanted {
        Wanted::ExpireAt(s.parse().unwrap())
    }

    #[test]
    fn a_deadline_comes_from_the_asked_or_recorded_ttl() {
        assert_eq!(
            wanted(&ti(Some("1h"), None), None),
            at("2026-11-22T11:00:00Z")
        );
        assert_eq!(
            wanted(&ti(None, Some("2h")), None),
            at("2026-11-22T12:00:00Z")
        );
        // Nothing tells the ttl yet: the first routine pass records it.
        assert_eq!(wanted(&ti(None, None), None), Wanted::Nothing);
    }

    #[test]
    fn an_extension_counts_only_with_the_profile_at_hand() {
        let extended = ti(Some("3h"), Some("1h"));
        assert_eq!(wanted(&extended, None), at("2026-11-22T11:00:00Z"));
        let limits = ProfileTtl {
            default: "1h".into(),
            max: "7d".into(),
        };
        assert_eq!(
            wanted(&extended, Some(("p", &limits))),
            at("2026-11-22T13:00:00Z")
        );
    }

    #[test]
    fn locked_installations_never_expire_here() {
        let mut locked = ti(Some("1h"), None);
        locked.spec.deletion_locked = true;
        assert_eq!(wanted(&locked, None), Wanted::Nothing);
    }

    #[test]
    fn a_deletion_is_ours_while_our_finalizer_holds_it() {
        let mut deleting = ti(Some("1h"), None);
        deleting.metadata.deletion_timestamp = Some(Time("2026-11-22T10:30:00Z".parse().unwrap()));
        assert_eq!(wanted(&deleting, None), Wanted::Nothing);
        deleting.metadata.finalizers = Some(vec![reconcile::FINALIZER.into()]);
        assert_eq!(wanted(&deleting, None), Wanted::Delete);
    }

    #[test]
    fn the_timetable_hands_out_what_is_due_in_order_once() {
        let mut table = Timetable::default();
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        table.schedule("late", t("2026-11-22T10:05:00Z"));
        table.schedule("early", t("2026-11-22T10:01:00Z"));
        table.schedule("moved", t("2026-11-22T10:02:00Z"));
        table.schedule("moved", t("2026-11-22T11:00:00Z"));
        assert_eq!(table.next(), Some(t("2026-11-22T10:01:00Z")));
        assert_eq!(
            table.take_due(t("2026-11-22T10:10:00Z")),
            vec!["early".to_string(), "late".to_string()]
        );
        assert!(table.take_due(t("2026-11-22T10:10:00Z")).is_empty());
        table.forget("moved");
        assert_eq!(table.next(), None);
    }
}
