//! A run's result (pure): what its Job and its pod's termination message
//! say, turned into the run's phase, reason, one-sentence message, counts
//! and a bounded, redacted excerpt of the output.

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::Time,
};

use super::job::CONTAINER;
use crate::api::{RunPhase, RunSummary, TerminationReport};

/// The most of a run's output kept in its status (the end of it).
pub const OUTPUT_LIMIT: usize = 2048;
/// What replaces each credential value in a run's output.
pub const REDACTED: &str = "[redacted]";
/// Shorter values are not treated as secrets (they would blank out words).
const MIN_SECRET_LEN: usize = 6;

/// Where a run's Job is.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    /// Created, its pod not running yet.
    Waiting,
    Running,
    Succeeded {
        finished: Option<Time>,
    },
    Failed {
        finished: Option<Time>,
        deadline: bool,
        message: Option<String>,
    },
}

/// The state of a Job from its conditions: only `Complete` and `Failed`
/// are final (they are set once the pod has ended).
pub fn job_state(job: &Job) -> JobState {
    let status = job.status.clone().unwrap_or_default();
    for c in status.conditions.unwrap_or_default() {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" => {
                return JobState::Succeeded {
                    finished: c.last_transition_time,
                };
            }
            "Failed" => {
                return JobState::Failed {
                    finished: c.last_transition_time,
                    deadline: c.reason.as_deref() == Some("DeadlineExceeded"),
                    message: c.message,
                };
            }
            _ => {}
        }
    }
    if status.active.unwrap_or(0) > 0 && status.ready.unwrap_or(0) > 0 {
        JobState::Running
    } else {
        JobState::Waiting
    }
}

/// The run container's exit code and termination message, once it ended.
pub fn terminated(pod: &Pod) -> Option<(i32, Option<String>)> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let t = statuses
        .iter()
        .find(|c| c.name == CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()?;
    Some((t.exit_code, t.message.clone()))
}

/// Why the run container has not started, when Kubernetes says (an image
/// that cannot be pulled, a missing Secret key), as `Reason: message`.
pub fn waiting_reason(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let waiting = statuses
        .iter()
        .find(|c| c.name == CONTAINER)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?;
    let reason = waiting.reason.as_deref()?;
    if reason == "ContainerCreating" || reason == "PodInitializing" {
        return None;
    }
    Some(match waiting.message.as_deref() {
        Some(message) => format!("{reason}: {message}"),
        None => reason.to_string(),
    })
}

/// Reads a termination message: a JSON `TerminationReport`, or any other
/// text as the output alone.
pub fn parse_report(message: &str) -> TerminationReport {
    let trimmed = message.trim();
    if trimmed.starts_with('{')
        && let Ok(report) = serde_json::from_str::<TerminationReport>(trimmed)
    {
        return report;
    }
    TerminationReport {
        summary: None,
        output: Some(message.to_string()),
    }
}

/// Replaces every occurrence of each secret (longest first, so one that
/// contains another is replaced whole).
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&String> = secrets
        .iter()
        .filter(|s| s.len() >= MIN_SECRET_LEN)
        .collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for secret in secrets {
        out = out.replace(secret.as_str(), REDACTED);
    }
    out
}

/// The end of `text`, at most `limit` bytes, cut at a character boundary.
pub fn tail(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let marker = "…";
    let mut start = text.len() - (limit - marker.len());
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("{marker}{}", &text[start..])
}

/// The redacted, bounded excerpt of a report's output; redaction comes
/// first so a cut can never leave half a secret behind.
pub fn excerpt(output: &str, secrets: &[String]) -> Option<String> {
    let text = tail(redact(output, secrets).trim_end(), OUTPUT_LIMIT);
    (!text.is_empty()).then_some(text)
}

/// How a finished run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub phase: RunPhase,
    pub reason: &'static str,
    pub message: String,
    pub summary: Option<RunSummary>,
    pub output: Option<String>,
    pub exit_code: Option<i32>,
}

/// What a finished Job means for the run `what` (the suite or action name);
/// `is_test` picks the words; `took` is the run time.
pub fn outcome(
    what: &str,
    is_test: bool,
    state: &JobState,
    container: Option<(i32, Option<String>)>,
    took: Option<std::time::Duration>,
    timeout: &str,
    secrets: &[String],
) -> Option<Outcome> {
    let (exit_code, message) = match container {
        Some((code, message)) => (Some(code), message),
        None => (None, None),
    };
    let report = message.as_deref().map(parse_report).unwrap_or_default();
    let output = report.output.as_deref().and_then(|o| excerpt(o, secrets));
    let took = took
        .map(|d| format!(" in {}", human(d)))
        .unwrap_or_default();
    let counts = report.summary.map(|s| {
        format!(
            "{} passed, {} failed, {} skipped",
            s.passed, s.failed, s.skipped
        )
    });
    let (phase, reason, message) = match state {
        JobState::Waiting | JobState::Running => return None,
        JobState::Succeeded { .. } => {
            let message = match (is_test, &counts) {
                (true, Some(c)) => format!("{what} passed: {c}{took}"),
                (true, None) => format!("{what} passed{took}"),
                (false, _) => format!("{what} succeeded{took}"),
            };
            (RunPhase::Succeeded, "Completed", message)
        }
        JobState::Failed { deadline: true, .. } => (
            RunPhase::Failed,
            "Timeout",
            format!("{what} did not finish within its timeout of {timeout} and was stopped"),
        ),
        JobState::Failed {
            message: job_message,
            ..
        } => {
            let why = match (&counts, exit_code) {
                (Some(c), _) => format!(": {c}"),
                (None, Some(code)) => format!(" with exit code {code}"),
                (None, None) => job_message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default(),
            };
            let reason = if is_test {
                "TestsFailed"
            } else {
                "ActionFailed"
            };
            (
                RunPhase::Failed,
                reason,
                format!("{what} failed{why}{took}"),
            )
        }
    };
    Some(Outcome {
        phase,
        reason,
        message: redact(&message, secrets),
        summary: report.summary,
        output,
        exit_code,
    })
}

/// `42s`, `3m5s`, `1h2m`.
pub fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Vec<String> {
        vec![
            "hunter2-secret".into(),
            "hunter2-secret-longer".into(),
            "ab".into(),
        ]
    }

    #[test]
    fn reports_are_json_or_plain_text() {
        let r = parse_report(r#" {"summary":{"passed":3,"failed":1,"skipped":0},"output":"x"} "#);
        assert_eq!(
            r.summary,
            Some(RunSummary {
                passed: 3,
                failed: 1,
                skipped: 0
            })
        );
        assert_eq!(r.output.as_deref(), Some("x"));
        let r = parse_report("{not json");
        assert_eq!(r.summary, None);
        assert_eq!(r.output.as_deref(), Some("{not json"));
    }

    #[test]
    fn credentials_are_redacted_whole_and_short_values_left_alone() {
        let text = "pw=hunter2-secret-longer and hunter2-secret, ab";
        assert_eq!(redact(text, &secrets()), "pw=[redacted] and [redacted], ab");
    }

    #[test]
    fn excerpts_keep_the_end_within_the_limit_after_redacting() {
        let long = format!("{}END hunter2-secret", "é".repeat(3000));
        let e = excerpt(&long, &secrets()).unwrap();
        assert!(e.len() <= OUTPUT_LIMIT, "{}", e.len());
        assert!(e.ends_with("END [redacted]"), "{e}");
        assert!(e.starts_with('…'));
        // A secret across the cut is redacted before cutting.
        let at_edge = format!("{}hunter2-secret", "x".repeat(OUTPUT_LIMIT - 5));
        assert!(!excerpt(&at_edge, &secrets()).unwrap().contains("secret"));
        assert_eq!(excerpt("  \n", &secrets()), None);
    }

    #[test]
    fn outcomes_say_what_happened_in_one_sentence() {
        let ok = JobState::Succeeded { finished: None };
        let report = r#"{"summary":{"passed":12,"failed":0,"skipped":1}}"#;
        let o = outcome(
            "e2e",
            true,
            &ok,
            Some((0, Some(report.into()))),
            Some(std::time::Duration::from_secs(42)),
            "30m",
            &[],
        )
        .unwrap();
        assert_eq!(
            o.message,
            "e2e passed: 12 passed, 0 failed, 1 skipped in 42s"
        );
        assert_eq!((o.phase, o.reason), (RunPhase::Succeeded, "Completed"));
        let failed = JobState::Failed {
            finished: None,
            deadline: false,
            message: None,
        };
        let o = outcome(
            "sampledata",
            false,
            &failed,
            Some((3, None)),
            None,
            "5m",
            &[],
        )
        .unwrap();
        assert_eq!(o.message, "sampledata failed with exit code 3");
        assert_eq!((o.reason, o.exit_code), ("ActionFailed", Some(3)));
        let timeout = JobState::Failed {
            finished: None,
            deadline: true,
            message: None,
        };
        let o = outcome("e2e", true, &timeout, None, None, "10m", &[]).unwrap();
        assert_eq!(o.reason, "Timeout");
        assert!(o.message.contains("10m"), "{}", o.message);
        assert_eq!(
            outcome("e2e", true, &JobState::Running, None, None, "1m", &[]),
            None
        );
    }
}
