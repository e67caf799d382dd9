//! What every reconcile pass shares: the client, the config, the event
//! recorder, the metrics and the per-object error backoff.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use kube::{
    Client,
    runtime::events::{Recorder, Reporter},
};

use super::{config::ControllerConfig, metrics::Metrics};

pub struct Context {
    pub client: Client,
    pub config: ControllerConfig,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Consecutive failures per installation, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, config: ControllerConfig, metrics: Metrics) -> Self {
        let reporter = Reporter {
            controller: "ephemera-controller".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure of `name` and returns how long to wait before the
    /// next try: 1 s, 2 s, 4 s, ... up to 5 minutes.
    pub fn next_backoff(&self, name: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(name.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }

    pub fn reset_backoff(&self, name: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

/// Delay after the `failures`-th consecutive failure.
pub fn backoff_delay(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(9);
    Duration::from_secs(secs.min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff_delay(1), Duration::from_secs(1));
        assert_eq!(backoff_delay(2), Duration::from_secs(2));
        assert_eq!(backoff_delay(5), Duration::from_secs(16));
        assert_eq!(backoff_delay(30), Duration::from_secs(300));
    }
}
