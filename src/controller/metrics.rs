//! The controller's Prometheus metrics.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

/// A run's kind (`test` or `action`) and, when finished, its phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub kind: String,
    pub result: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Counter,
    /// Passes that sent at least one child to the API server; the others
    /// only looked, and wrote the status if it changed.
    pub applying_reconciles: Counter,
    /// Status refreshes that recorded what the workloads show without a
    /// pass (see `refresh`).
    pub refreshes: Counter,
    /// Status refreshes whose write failed (a pass took over).
    pub refresh_errors: Counter,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    /// Time a pass that wrote children waited for the stores to show them.
    pub store_wait: Histogram,
    pub installations: Family<PhaseLabels, Gauge>,
    pub time_to_ready: Histogram,
    /// Installations (by uid) already counted in `time_to_ready`: a stale
    /// read of the status must not count one twice.
    ready_counted: Arc<Mutex<HashSet<String>>>,
    /// Labelled namespaces the sweep found without our owner reference.
    pub unowned_namespaces: Gauge,
    /// TestRuns whose Job was created, by kind.
    pub runs_started: Family<RunLabels, Counter>,
    /// TestRuns that ended, by kind and result (phase).
    pub runs_finished: Family<RunLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them under `ephemera_controller_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Counter::default(),
            applying_reconciles: Counter::default(),
            refreshes: Counter::default(),
            refresh_errors: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            store_wait: Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0]),
            installations: Family::default(),
            time_to_ready: Histogram::new([
                1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
            unowned_namespaces: Gauge::default(),
            runs_started: Family::default(),
            runs_finished: Family::default(),
            ready_counted: Arc::default(),
        };
        let r = registry.sub_registry_with_prefix("ephemera_controller");
        crate::allocator::register(r);
        r.register(
            "reconciles",
            "Reconcile passes run",
            metrics.reconciles.clone(),
        );
        r.register(
            "applying_reconciles",
            "Reconcile passes that sent at least one child to the API server",
            metrics.applying_reconciles.clone(),
        );
        r.register(
            "status_refreshes",
            "Status refreshes that recorded what the workloads show without a reconcile pass",
            metrics.refreshes.clone(),
        );
        r.register(
            "status_refresh_errors",
            "Status refreshes that failed; a reconcile pass took over",
            metrics.refresh_errors.clone(),
        );
        r.register(
            "reconcile_errors",
            "Reconcile passes that failed, by error",
            metrics.failures.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time one reconcile pass took",
            metrics.duration.clone(),
        );
        r.register(
            "store_wait_seconds",
            "Time a pass that wrote children waited for the watches to bring its own writes into the stores",
            metrics.store_wait.clone(),
        );
        r.register(
            "installations",
            "TestInstallations by phase",
            metrics.installations.clone(),
        );
        r.register(
            "time_to_ready_seconds",
            "Time from creation of a TestInstallation to its first Ready",
            metrics.time_to_ready.clone(),
        );
        r.register(
            "unowned_namespaces",
            "Namespaces labelled as ephemera's that no TestInstallation owns (never deleted)",
            metrics.unowned_namespaces.clone(),
        );
        r.register(
            "runs_started",
            "TestRuns whose Job was created, by kind (test or action)",
            metrics.runs_started.clone(),
        );
        r.register(
            "runs_finished",
            "TestRuns that ended, by kind and result (Succeeded, Failed, Cancelled)",
            metrics.runs_finished.clone(),
        );
        metrics
    }

    pub fn observe_duration(&self, duration: Duration) {
        self.duration.observe(duration.as_secs_f64());
    }

    /// Counts the installation `uid` in `time_to_ready`, once per process.
    pub fn observe_ready(&self, uid: &str, seconds: f64) {
        let first = self
            .ready_counted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_string());
        if first {
            self.time_to_ready.observe(seconds.max(0.0));
        }
    }

    /// The installation `uid` is gone.
    pub fn forget_ready(&self, uid: &str) {
        self.ready_counted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_installation_counts_once_in_time_to_ready() {
        let metrics = Metrics::register(&mut Registry::default());
        metrics.observe_ready("a", 3.0);
        metrics.observe_ready("a", 4.0);
        metrics.observe_ready("b", 5.0);
        let mut text = String::new();
        let mut registry = Registry::default();
        registry.register("t", "t", metrics.time_to_ready.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("t_count 2"), "{text}");
        assert!(text.contains("t_sum 8.0"), "{text}");
    }
}
