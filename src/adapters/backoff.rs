//! The one backoff policy of the adapters (from `backon`): exponential with
//! jitter, for retrying a delivery to a person or a pull request, and for
//! re-watching installations after the API server went away.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Delays between attempts to tell the same thing again: 1 s doubling to
/// 5 minutes, with jitter, without end.
pub fn delivery() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Delays between HTTP attempts of one call to a platform: 500 ms doubling
/// to a minute.
pub fn http() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
}

/// The installation watch's backoff: 200 ms doubling to 2 s (at most 4 s
/// with jitter), and back to the start after every successful event. The
/// watcher's default waits up to 30 s and forgets its errors only after two
/// quiet minutes, so a restarted API server would be noticed late; with this
/// one it is noticed within seconds (a 5 s cap measured 10 s from the API
/// answering again to a new installation acted on, this one about 4 s).
pub struct WatchBackoff {
    inner: ExponentialBackoff,
}

impl WatchBackoff {
    fn fresh() -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(2))
            .with_jitter()
            .without_max_times()
            .build()
    }
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            inner: Self::fresh(),
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.inner.next()
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.inner = Self::fresh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    #[test]
    fn the_watch_backoff_stays_short_and_starts_over_after_a_success() {
        let mut backoff = WatchBackoff::default();
        let waits: Vec<Duration> = backoff.by_ref().take(12).collect();
        assert!(
            waits.iter().all(|w| *w <= Duration::from_secs(4)),
            "{waits:?}"
        );
        backoff.reset();
        assert!(backoff.next().unwrap() < Duration::from_millis(500));
    }

    #[test]
    fn delivery_delays_grow_and_are_capped() {
        let waits: Vec<Duration> = delivery().take(20).collect();
        assert!(waits[0] < Duration::from_secs(3), "{waits:?}");
        assert!(
            waits.iter().all(|w| *w <= Duration::from_secs(600)),
            "{waits:?}"
        );
        assert!(waits[19] >= Duration::from_secs(300), "{waits:?}");
    }
}
