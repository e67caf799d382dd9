//! `POST /github/webhook`: authenticate the delivery over its raw body,
//! refuse what is malformed, drop what is queued or handled already, and
//! queue the rest for the worker. GitHub gets its answer at once; nothing
//! queued is dropped silently: a full queue answers 503 so the delivery shows
//! as failed and can be redelivered, and a delivery the worker could not
//! handle (nor answer with a failure reply) is forgotten here, so GitHub's
//! redelivery of it runs again.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    routing::post,
};
use tokio::sync::mpsc;

use super::{
    config::Config,
    events::{self, Intent, Triage},
    metrics::Metrics,
    signature,
};

/// One queued piece of work.
#[derive(Debug, Clone)]
pub struct Job {
    pub delivery: String,
    pub intent: Intent,
    /// How often it was put back because it could not be done yet.
    pub attempt: u32,
    /// How often handling it failed.
    pub failures: u32,
    /// The keys it is known by in the seen-set (delivery GUID, comment id);
    /// the last one names it across redeliveries.
    pub keys: Vec<String>,
}

impl Job {
    /// The name of this piece of work across redeliveries: the comment for
    /// a command, else the delivery.
    pub fn key(&self) -> &str {
        self.keys
            .last()
            .map(String::as_str)
            .unwrap_or(&self.delivery)
    }
}

/// A bounded set of recently seen keys (delivery GUIDs, comment ids).
pub struct Seen {
    keys: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Seen {
    pub fn new(capacity: usize) -> Self {
        Self {
            keys: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Records `key`; false when it was already there.
    pub fn insert(&mut self, key: String) -> bool {
        if self.keys.contains(&key) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.keys.remove(&oldest);
        }
        self.keys.insert(key.clone());
        self.order.push_back(key);
        true
    }

    pub fn remove(&mut self, key: &str) {
        if self.keys.remove(key) {
            self.order.retain(|k| k != key);
        }
    }
}

/// Deliveries queued or handled, shared by the intake and the worker.
pub type SeenSet = Arc<Mutex<Seen>>;

pub fn seen_set() -> SeenSet {
    Arc::new(Mutex::new(Seen::new(10_000)))
}

/// Forgets a job's keys, so a redelivery of it is handled again.
pub fn forget(seen: &SeenSet, job: &Job) {
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    for key in &job.keys {
        seen.remove(key);
    }
}

pub struct Intake {
    config: Arc<Config>,
    queue: mpsc::Sender<Job>,
    seen: SeenSet,
    metrics: Metrics,
}

impl Intake {
    pub fn new(
        config: Arc<Config>,
        queue: mpsc::Sender<Job>,
        seen: SeenSet,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            queue,
            seen,
            metrics,
        })
    }
}

pub fn routes(intake: Arc<Intake>) -> Router {
    let limit = intake.config.max_body_bytes;
    Router::new()
        .route("/github/webhook", post(receive))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(intake)
}

type Answer = (StatusCode, String);

async fn receive(
    State(intake): State<Arc<Intake>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let event = header("x-github-event").unwrap_or_default().to_string();
    let (status, outcome, message) = check(&intake, &headers, &event, body);
    intake.metrics.webhook(&event, outcome);
    if status.is_client_error() || status.is_server_error() {
        tracing::warn!(
            event,
            delivery = header("x-github-delivery").unwrap_or_default(),
            %status,
            reason = message.as_str(),
            "webhook delivery refused"
        );
    } else {
        tracing::debug!(event, outcome, "webhook delivery");
    }
    (status, message)
}

fn check(
    intake: &Intake,
    headers: &HeaderMap,
    event: &str,
    body: Result<Bytes, BytesRejection>,
) -> (StatusCode, &'static str, String) {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "body is larger than the limit of {} bytes",
                    intake.config.max_body_bytes
                ),
            );
        }
        Err(rejection) => return (rejection.status(), "invalid", rejection.body_text()),
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(err) = signature::verify(
        &intake.config.webhook_secrets,
        header("x-hub-signature-256"),
        &body,
    ) {
        return (StatusCode::UNAUTHORIZED, "unauthorized", err.to_string());
    }
    let Some(delivery) = header("x-github-delivery").filter(|d| !d.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            "invalid",
            "X-GitHub-Delivery is missing".into(),
        );
    };
    if event.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "invalid",
            "X-GitHub-Event is missing".into(),
        );
    }
    let json = header(header::CONTENT_TYPE.as_str()).is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|t| t.trim() == "application/json")
    });
    if !json {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid",
            "set the webhook's content type to application/json".into(),
        );
    }
    if event == "ping" {
        return (StatusCode::OK, "accepted", "pong".into());
    }
    let intent = match events::triage(event, &body, &intake.config) {
        Ok(Triage::Act(intent)) => *intent,
        Ok(Triage::Ignore(reason)) => {
            return (
                StatusCode::ACCEPTED,
                "ignored",
                format!("ignored: {reason}"),
            );
        }
        Err(err) => return (StatusCode::BAD_REQUEST, "invalid", err.to_string()),
    };
    // A redelivery keeps its GUID; a replayed comment keeps its comment id.
    let mut keys = vec![format!("delivery:{delivery}")];
    if let Intent::Comment(c) = &intent {
        keys.push(format!(
            "comment:{}:{}",
            c.repository.to_ascii_lowercase(),
            c.comment_id
        ));
    }
    {
        let mut seen = intake.seen.lock().expect("seen-set lock");
        if keys.iter().any(|k| seen.keys.contains(k)) {
            return (
                StatusCode::OK,
                "duplicate",
                "duplicate delivery, already queued or handled".into(),
            );
        }
        for key in &keys {
            seen.insert(key.clone());
        }
    }
    let job = Job {
        delivery: delivery.to_string(),
        intent,
        attempt: 0,
        failures: 0,
        keys: keys.clone(),
    };
    match intake.queue.try_send(job) {
        Ok(()) => {
            intake.metrics.queue_depth().inc();
            (StatusCode::ACCEPTED, "accepted", "queued".into())
        }
        Err(err) => {
            let mut seen = intake.seen.lock().expect("seen-set lock");
            for key in &keys {
                seen.remove(key);
            }
            let message = match err {
                mpsc::error::TrySendError::Full(_) => "queue is full; redeliver later",
                mpsc::error::TrySendError::Closed(_) => "adapter is shutting down; redeliver later",
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                message.into(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_set_is_bounded_and_forgets_the_oldest() {
        let mut seen = Seen::new(2);
        assert!(seen.insert("a".into()));
        assert!(!seen.insert("a".into()));
        assert!(seen.insert("b".into()));
        assert!(seen.insert("c".into()));
        assert!(seen.insert("a".into()), "a was evicted");
        seen.remove("c");
        assert!(seen.insert("c".into()));
    }
}
