//! Prometheus metrics of the GitHub adapter.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use reqwest::Method;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    event: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    method: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Default)]
pub struct Metrics {
    webhooks: Family<WebhookLabels, Counter>,
    queue_depth: Gauge,
    api_calls: Family<ApiLabels, Counter>,
    processed: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        crate::allocator::register(registry.sub_registry_with_prefix("ephemera_github"));
        registry.register(
            "ephemera_github_webhooks_received",
            "Webhook deliveries by event and outcome (accepted, duplicate, ignored, unauthorized, invalid, too_large, queue_full)",
            metrics.webhooks.clone(),
        );
        registry.register(
            "ephemera_github_queue_depth",
            "Accepted deliveries waiting to be processed",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "ephemera_github_api_calls",
            "GitHub REST calls by method and outcome (success, client_error, server_error, rate_limited, network_error)",
            metrics.api_calls.clone(),
        );
        registry.register(
            "ephemera_github_intents_processed",
            "Queued pull-request reconciles and comment commands by outcome",
            metrics.processed.clone(),
        );
        metrics
    }

    pub fn webhook(&self, event: &str, outcome: &str) {
        // Event names come from a header; keep the label set bounded.
        let event = match event {
            "pull_request" | "issue_comment" | "ping" => event,
            "" => "none",
            _ => "other",
        };
        self.webhooks
            .get_or_create(&WebhookLabels {
                event: event.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn queue_depth(&self) -> &Gauge {
        &self.queue_depth
    }

    pub fn api_call(&self, method: &Method, outcome: &str) {
        self.api_calls
            .get_or_create(&ApiLabels {
                method: method.as_str().into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn processed(&self, outcome: &str) {
        self.processed
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }
}
