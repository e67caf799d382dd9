//! Knowing when a controller's store has been filled, without asking the
//! store.
//!
//! Two faults of kube-runtime's store readiness, both seen as a controller
//! that never stopped on SIGTERM:
//! - `Store::wait_until_ready` wakes only its last waiter. A controller's
//!   runner waits on it; any other waiter can take that wake-up, and the
//!   runner then holds every reconcile, shutdown included.
//! - A controller stopped before its store was filled waits for the fill
//!   forever: its watch is already gone, so the fill never comes.
//!
//! So the fill is flagged on the watch stream itself (`flag_fill`), other
//! tasks wait on the flag, and a stop that comes before the fill ends the
//! controller's stream at once (`stopped_before_filled`); no reconcile can
//! have started then.

use futures::{Future, Stream, TryStreamExt};
use kube::runtime::watcher;
use tokio::sync::watch;

/// Passes a reflector's events through and turns the returned flag true at
/// the first `InitDone`, which the reflector has applied to the store by
/// then.
pub fn flag_fill<K, E>(
    reflected: impl Stream<Item = Result<watcher::Event<K>, E>>,
) -> (
    impl Stream<Item = Result<watcher::Event<K>, E>>,
    watch::Receiver<bool>,
) {
    let (filled, flag) = watch::channel(false);
    let events = reflected.inspect_ok(move |event| {
        if matches!(event, watcher::Event::InitDone) {
            filled.send_replace(true);
        }
    });
    (events, flag)
}

/// Waits until the store has been filled; false when its watch is gone
/// before that.
pub async fn wait_filled(flag: &mut watch::Receiver<bool>) -> bool {
    flag.wait_for(|filled| *filled).await.is_ok()
}

/// Resolves when `stop` comes before the store was filled; never resolves
/// when the store was filled first (a graceful shutdown then drains the
/// running reconciles).
pub async fn stopped_before_filled(
    stop: impl Future<Output = ()> + Send + 'static,
    flag: watch::Receiver<bool>,
) {
    stop.await;
    let filled = *flag.borrow();
    if filled {
        std::future::pending::<()>().await;
    }
    tracing::debug!("stopped before the store was filled; nothing ran, so nothing to drain");
}
