//! The pause after a failed watch, for the controller's trigger streams.
//!
//! kube-runtime puts every trigger stream of a `Controller` (the
//! TestInstallation watch, each `.watches(...)` and `reconcile_all_on`)
//! behind ONE backoff: an error from any watch pauses all of them. Its
//! default (800 ms doubling to 30 s, up to 100 % jitter, reset only by the
//! next event) turned a kube-apiserver restart into minutes of silence:
//! each of the eight watches fails once or twice when the API server goes
//! away and again with `410 Gone` on re-watch, and every failure doubled a
//! pause that held all the watches, so the first reconcile after the API was
//! back came 7 minutes later.
//!
//! Two cures: per-watch backoffs, with errors kept away from the shared one,
//! were measured at 26-37 s from the API being back to the first reconcile
//! (issue 11), since each watch still backs off on its own up to 30 s and
//! needs kube-runtime's unstable stream API; one short shared backoff,
//! capped at 1 s, recovers in 9-11 s after a kube-apiserver kill, 6 s after
//! an etcd kill and ~1 s after a 20 s freeze (tests/faults.rs, figures in
//! docs/security.md). A shared pause of at most a second costs the other
//! watches nothing noticeable while the API is down (they could not make
//! progress anyway) and keeps the stable builder API. So: one shared
//! backoff, short and bounded, that never gives up.
//!
//! That shared pause still cost a second per failed watch, one after the
//! other: once a killed kube-apiserver is back, each of the fifteen watches
//! fails once more with `410 Gone` as it re-watches, and the shared backoff
//! (at its cap by then) held them all for a second after each, so the first
//! reconcile came about 15 s after the API was back (tests/faults.rs; the
//! controller's log shows one `410` a second). So each watch now pauses
//! alone (`paced`): its errors go to the health checks and the log where it
//! is polled and never reach the controller's shared stream, which only
//! carries events. The shared backoff stays as the last guard.

use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::{WatchStreamExt, utils::Backoff, watcher};

use crate::telemetry::Health;

/// A watch's stream for a controller: after an error it waits a pause of
/// its own (`TriggerBackoff`) before it tries again, and the error is
/// recorded in `health` (readiness) and logged here instead of being passed
/// on. `what` names the watch in the log.
pub fn paced<T>(
    events: impl Stream<Item = Result<T, watcher::Error>> + Send + 'static,
    what: impl Into<String>,
    health: Health,
) -> impl Stream<Item = Result<T, watcher::Error>> + Send + 'static
where
    T: Send + 'static,
{
    let what = what.into();
    events
        .backoff(TriggerBackoff::default())
        .filter_map(move |event| {
            let event = match event {
                Ok(event) => Some(Ok(event)),
                Err(err) => {
                    if health.watch_failed() {
                        tracing::warn!(watch = %what, %err, "a watch failed; it is retried within a second");
                    } else {
                        tracing::debug!(watch = %what, %err, "a watch failed again");
                    }
                    None
                }
            };
            std::future::ready(event)
        })
}

/// Exponential from `FIRST` to `CAP`, with up to 25 % jitter so that
/// replicas do not retry in step; never gives up.
#[derive(Clone, Debug)]
pub struct TriggerBackoff {
    next: Duration,
    seed: u64,
}

/// First pause after an error.
pub const FIRST: Duration = Duration::from_millis(100);
/// Longest pause: the most any watch failure delays the others.
pub const CAP: Duration = Duration::from_secs(1);

impl Default for TriggerBackoff {
    fn default() -> Self {
        Self {
            next: FIRST,
            seed: rand::random(),
        }
    }
}

impl Iterator for TriggerBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = self.next.saturating_mul(2).min(CAP);
        // xorshift: cheap, good enough for spreading retries.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = base.mul_f64((self.seed % 1000) as f64 / 4000.0);
        Some((base + jitter).min(CAP))
    }
}

impl Backoff for TriggerBackoff {
    fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap_never_beyond_and_never_stop() {
        let mut backoff = TriggerBackoff::default();
        let pauses: Vec<Duration> = (&mut backoff).take(1000).collect();
        assert_eq!(pauses.len(), 1000);
        assert!(pauses[0] >= FIRST && pauses[0] <= FIRST.mul_f64(1.25));
        assert!(pauses.iter().all(|p| *p <= CAP));
        assert!(pauses[10..].iter().all(|p| *p >= CAP.mul_f64(0.75)));
        // The pause of a hundred errors in a row adds up to well under two
        // minutes (the old default: up to 50 minutes).
        let sum: Duration = pauses[..100].iter().sum();
        assert!(sum <= Duration::from_secs(100), "{sum:?}");
    }

    /// What a kube-apiserver restart does: every watch fails once (`410
    /// Gone` on re-watch) and then delivers. Each pauses on its own, at the
    /// same time, and the failures only reach the health checks.
    #[tokio::test(start_paused = true)]
    async fn a_failed_watch_pauses_only_itself() {
        const WATCHES: u32 = 15;
        let health = Health::default();
        let watches = (0..WATCHES).map(|i| {
            let events = futures::stream::iter([Err(watcher::Error::NoResourceVersion), Ok(i)]);
            paced(events, format!("watch {i}"), health.clone()).boxed()
        });
        let started = tokio::time::Instant::now();
        let delivered: Vec<u32> = futures::stream::select_all(watches)
            .map(|event| event.expect("errors are not passed on"))
            .collect()
            .await;
        assert_eq!(delivered.len(), WATCHES as usize);
        assert_eq!(health.watch_failures(), u64::from(WATCHES));
        // One first pause (with its jitter), not fifteen in a row.
        let waited = started.elapsed();
        assert!(waited <= FIRST.mul_f64(1.25), "{waited:?}");
    }

    #[test]
    fn reset_starts_short_again() {
        let mut backoff = TriggerBackoff::default();
        for _ in 0..20 {
            backoff.next();
        }
        backoff.reset();
        assert!(backoff.next().unwrap() <= FIRST.mul_f64(1.25));
    }
}
