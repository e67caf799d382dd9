//! The controller's Prometheus metrics.

use std::time::Duration;

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
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub installations: Family<PhaseLabels, Gauge>,
    pub time_to_ready: Histogram,
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
            failures: Family::default(),
            duration: Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            installations: Family::default(),
            time_to_ready: Histogram::new([
                1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
            unowned_namespaces: Gauge::default(),
            runs_started: Family::default(),
            runs_finished: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("ephemera_controller");
        r.register(
            "reconciles",
            "Reconcile passes run",
            metrics.reconciles.clone(),
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
}
