//! Prometheus metrics of the chat adapter.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub platform: &'static str,
    pub command: &'static str,
    /// `ok`, `invalid` (bad input), `refused` (not allowed, quota, taken),
    /// `error` (the cluster failed) or `unauthenticated`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub platform: &'static str,
    /// `progress`, `ready`, `failed`, `expiring`, `deleted`.
    pub kind: &'static str,
    /// `sent`, `failed`, `recovered` (found posted after a crash or a lost
    /// answer, not posted again) or `given_up` (undeliverable past the
    /// bound; the installation was let go).
    pub outcome: &'static str,
}

#[derive(Default)]
pub struct Metrics {
    pub commands: Family<CommandLabels, Counter>,
    pub notifications: Family<NotificationLabels, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> std::sync::Arc<Self> {
        let metrics = Self::default();
        crate::allocator::register(registry.sub_registry_with_prefix("ephemera_chat"));
        registry.register(
            "ephemera_chat_commands",
            "Slash commands handled, by platform, command and outcome",
            metrics.commands.clone(),
        );
        registry.register(
            "ephemera_chat_notifications",
            "Direct messages sent or failed, by platform and kind",
            metrics.notifications.clone(),
        );
        std::sync::Arc::new(metrics)
    }

    pub fn command(&self, platform: &'static str, command: &'static str, outcome: &'static str) {
        self.commands
            .get_or_create(&CommandLabels {
                platform,
                command,
                outcome,
            })
            .inc();
    }

    pub fn notification(&self, platform: &'static str, kind: &'static str, sent: bool) {
        self.notification_outcome(platform, kind, if sent { "sent" } else { "failed" });
    }

    pub fn notification_outcome(
        &self,
        platform: &'static str,
        kind: &'static str,
        outcome: &'static str,
    ) {
        self.notifications
            .get_or_create(&NotificationLabels {
                platform,
                kind,
                outcome,
            })
            .inc();
    }
}
