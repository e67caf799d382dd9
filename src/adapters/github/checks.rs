//! Pure: a TestRun → the check run (GitHub App) or the commit status (token)
//! that shows its result on the PR's head commit.
//!
//! Every text is bounded to what GitHub accepts (check-run `summary` and
//! `text` at most 65,535 characters, action `label` and `identifier` at most
//! 20, action `description` at most 40, commit-status `description` at most
//! 140), so GitHub never refuses a report for its size.

use kube::ResourceExt;
use serde_json::{Value, json};

use crate::api::{RunPhase, RunTarget, TestRun, labels};

/// GitHub's limit for a check run's `output.summary` and `output.text`.
pub const OUTPUT_LIMIT: usize = 65_535;
/// Limits of a check run's `actions[]` (the buttons).
pub const ACTION_LABEL_LIMIT: usize = 20;
pub const ACTION_DESCRIPTION_LIMIT: usize = 40;
pub const ACTION_IDENTIFIER_LIMIT: usize = 20;
/// GitHub keeps at most 140 characters of a commit status's description.
pub const STATUS_DESCRIPTION_LIMIT: usize = 140;
/// The identifier of the re-run button (`check_run.requested_action`).
pub const RERUN_ACTION: &str = "rerun";

/// The check-run name and commit-status context of a run: `ephemera/e2e`
/// for the suite `e2e`, `ephemera/action/NAME` for an action.
pub fn check_name(run: &TestRun) -> String {
    match run.target() {
        RunTarget::Test(suite) => format!("ephemera/{suite}"),
        RunTarget::Action(action) => format!("ephemera/action/{action}"),
    }
}

/// Where a check run is, as GitHub names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckState {
    Queued,
    InProgress,
    Completed(Conclusion),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conclusion {
    Success,
    Failure,
    Cancelled,
    TimedOut,
}

impl Conclusion {
    pub fn as_str(self) -> &'static str {
        match self {
            Conclusion::Success => "success",
            Conclusion::Failure => "failure",
            Conclusion::Cancelled => "cancelled",
            Conclusion::TimedOut => "timed_out",
        }
    }
}

impl CheckState {
    /// The run's state; `deleted`: the run is gone before it finished (with
    /// its installation, or by hand), which ends its check as cancelled.
    pub fn of(run: &TestRun, deleted: bool) -> Self {
        let status = run.status.as_ref();
        match run.phase() {
            Some(RunPhase::Succeeded) => CheckState::Completed(Conclusion::Success),
            Some(RunPhase::Failed)
                if status.and_then(|s| s.reason.as_deref()) == Some("Timeout") =>
            {
                CheckState::Completed(Conclusion::TimedOut)
            }
            Some(RunPhase::Failed) => CheckState::Completed(Conclusion::Failure),
            Some(RunPhase::Cancelled) => CheckState::Completed(Conclusion::Cancelled),
            _ if deleted => CheckState::Completed(Conclusion::Cancelled),
            Some(RunPhase::Running) => CheckState::InProgress,
            Some(RunPhase::Pending) | None => CheckState::Queued,
        }
    }

    /// The memory key: `queued`, `in_progress`, `completed:success`, ...
    pub fn key(self) -> String {
        match self {
            CheckState::Queued => "queued".into(),
            CheckState::InProgress => "in_progress".into(),
            CheckState::Completed(c) => format!("completed:{}", c.as_str()),
        }
    }

    pub fn status(self) -> &'static str {
        match self {
            CheckState::Queued => "queued",
            CheckState::InProgress => "in_progress",
            CheckState::Completed(_) => "completed",
        }
    }

    /// The commit-status state (`pending`, `success`, `failure`, `error`).
    pub fn commit_state(self) -> &'static str {
        match self {
            CheckState::Queued | CheckState::InProgress => "pending",
            CheckState::Completed(Conclusion::Success) => "success",
            CheckState::Completed(Conclusion::Failure | Conclusion::TimedOut) => "failure",
            CheckState::Completed(Conclusion::Cancelled) => "error",
        }
    }
}

/// One line: the controller's sentence, or what is happening.
pub fn title(run: &TestRun, state: CheckState) -> String {
    let what = what(run);
    let message = run.status.as_ref().and_then(|s| s.message.clone());
    let text = match (state, message) {
        (CheckState::Completed(_), Some(message)) => message,
        (CheckState::Completed(Conclusion::Cancelled), None) => format!("{what} was cancelled"),
        (CheckState::Completed(c), None) => format!("{what}: {}", c.as_str()),
        (CheckState::InProgress, _) => format!("{what} is running"),
        (CheckState::Queued, _) => format!("{what} is queued"),
    };
    one_line(&text, 200)
}

fn what(run: &TestRun) -> String {
    match run.target() {
        RunTarget::Test(suite) => format!("suite {suite}"),
        RunTarget::Action(action) => format!("action {action}"),
    }
}

/// The Markdown summary: what ran where, counts, duration, links.
pub fn summary(run: &TestRun, state: CheckState) -> String {
    let status = run.status.clone().unwrap_or_default();
    let mut out = String::from("| | |\n|---|---|\n");
    let row = |out: &mut String, k: &str, v: &str| {
        out.push_str(&format!("| {k} | {} |\n", cell(v)));
    };
    row(&mut out, "Run", &run.name_any());
    row(&mut out, "Installation", &run.spec.installation);
    match run.target() {
        RunTarget::Test(suite) => row(&mut out, "Suite", suite),
        RunTarget::Action(action) => row(&mut out, "Action", action),
    }
    for (name, value) in &run.spec.parameters {
        row(&mut out, &format!("Parameter `{}`", cell(name)), value);
    }
    let phase = status.phase.map_or("Pending", RunPhase::as_str);
    row(&mut out, "Phase", phase);
    if let Some(reason) = &status.reason {
        row(&mut out, "Reason", reason);
    }
    if let Some(counts) = status.summary {
        row(
            &mut out,
            "Tests",
            &format!(
                "{} passed, {} failed, {} skipped",
                counts.passed, counts.failed, counts.skipped
            ),
        );
    }
    if let (Some(start), Some(end)) = (&status.started_at, &status.finished_at) {
        let secs = end.0.as_second() - start.0.as_second();
        row(&mut out, "Duration", &format!("{}s", secs.max(0)));
    }
    if let Some(exit) = status.exit_code {
        row(&mut out, "Exit code", &exit.to_string());
    }
    if let Some(newer) = &status.superseded_by {
        row(&mut out, "Superseded by", newer);
    }
    if let Some(pr) = run.annotations().get(labels::PR_URL) {
        row(&mut out, "Pull request", pr);
    }
    if matches!(state, CheckState::Completed(_)) {
        out.push_str("\nUse **Re-run** above, or comment `/e2e-test` on the pull request, to run it again.\n");
    }
    bounded(&out, OUTPUT_LIMIT)
}

/// The redacted output excerpt the controller stored, in a code block,
/// bounded to GitHub's limit (the end is kept: that is where failures are).
pub fn text(run: &TestRun) -> Option<String> {
    let output = run.status.as_ref()?.output.as_deref()?;
    if output.is_empty() {
        return None;
    }
    // No fence inside can close ours.
    let output = output.replace("```", "'''");
    let frame = "```text\n\n```\n".chars().count();
    let body = tail(&output, OUTPUT_LIMIT - frame - 1);
    Some(format!("```text\n{body}\n```\n"))
}

/// The body of the check run's create (or update) request.
pub fn check_run_body(run: &TestRun, sha: &str, state: CheckState) -> Value {
    let mut body = json!({
        "name": check_name(run),
        "head_sha": sha,
        "external_id": run.name_any(),
        "status": state.status(),
        "output": {
            "title": title(run, state),
            "summary": summary(run, state),
        },
    });
    if let Some(text) = text(run) {
        body["output"]["text"] = json!(text);
    }
    let status = run.status.as_ref();
    if let Some(started) = status.and_then(|s| s.started_at.as_ref()) {
        body["started_at"] = json!(started.0.to_string());
    }
    if let CheckState::Completed(conclusion) = state {
        body["conclusion"] = json!(conclusion.as_str());
        if let Some(finished) = status.and_then(|s| s.finished_at.as_ref()) {
            body["completed_at"] = json!(finished.0.to_string());
        }
        body["actions"] = json!([{
            "label": "Re-run",
            "description": bounded(&format!("Run {} again", what(run)), ACTION_DESCRIPTION_LIMIT),
            "identifier": RERUN_ACTION,
        }]);
    }
    body
}

/// The commit status's description: one line, at most 140 characters.
pub fn status_description(run: &TestRun, state: CheckState) -> String {
    one_line(&title(run, state), STATUS_DESCRIPTION_LIMIT)
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    bounded(flat.trim(), max)
}

/// At most `max` characters, marked with `…` when cut.
fn bounded(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The last `max` characters, marked with `…` when cut.
fn tail(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let mut out = String::from("…");
    out.extend(text.chars().skip(count - (max - 1)));
    out
}

/// A table cell that cannot break the table or mention anyone.
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '@' => out.push_str("@\u{200b}"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    bounded(&out, 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RunSummary, TestRunSpec, TestRunStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn run(phase: Option<RunPhase>, reason: Option<&str>) -> TestRun {
        let mut run = TestRun::new(
            "web-pr-7-e2e-1a2b3",
            TestRunSpec {
                installation: "web-pr-7".into(),
                test: Some("e2e".into()),
                ..Default::default()
            },
        );
        run.status = Some(TestRunStatus {
            phase,
            reason: reason.map(String::from),
            message: Some("e2e passed: 12 passed, 0 failed, 1 skipped in 42s".into()),
            summary: Some(RunSummary {
                passed: 12,
                failed: 0,
                skipped: 1,
            }),
            started_at: Some(Time("2026-12-02T08:00:00Z".parse().unwrap())),
            finished_at: Some(Time("2026-12-02T08:00:42Z".parse().unwrap())),
            output: Some("ok 12 tests\npassword=[redacted]\n```\n".into()),
            ..Default::default()
        });
        run
    }

    #[test]
    fn phases_map_to_check_states_and_commit_states() {
        let state = |phase, reason| CheckState::of(&run(phase, reason), false);
        assert_eq!(state(None, None), CheckState::Queued);
        assert_eq!(state(Some(RunPhase::Running), None), CheckState::InProgress);
        assert_eq!(
            state(Some(RunPhase::Succeeded), Some("Completed")),
            CheckState::Completed(Conclusion::Success)
        );
        assert_eq!(
            state(Some(RunPhase::Failed), Some("Timeout")),
            CheckState::Completed(Conclusion::TimedOut)
        );
        assert_eq!(
            state(Some(RunPhase::Failed), Some("TestsFailed")),
            CheckState::Completed(Conclusion::Failure)
        );
        assert_eq!(
            state(Some(RunPhase::Cancelled), Some("CancelledByUser")),
            CheckState::Completed(Conclusion::Cancelled)
        );
        assert_eq!(
            CheckState::of(&run(Some(RunPhase::Running), None), true),
            CheckState::Completed(Conclusion::Cancelled),
            "a run deleted before it ended is cancelled"
        );
        assert_eq!(CheckState::InProgress.commit_state(), "pending");
        assert_eq!(
            CheckState::Completed(Conclusion::TimedOut).commit_state(),
            "failure"
        );
        assert_eq!(
            CheckState::Completed(Conclusion::Cancelled).commit_state(),
            "error"
        );
    }

    #[test]
    fn completed_check_run_has_conclusion_output_and_a_rerun_button_within_limits() {
        let r = run(Some(RunPhase::Succeeded), Some("Completed"));
        let state = CheckState::of(&r, false);
        let body = check_run_body(&r, &"a".repeat(40), state);
        assert_eq!(body["name"], "ephemera/e2e");
        assert_eq!(body["status"], "completed");
        assert_eq!(body["conclusion"], "success");
        assert_eq!(body["external_id"], "web-pr-7-e2e-1a2b3");
        assert_eq!(
            body["output"]["title"],
            "e2e passed: 12 passed, 0 failed, 1 skipped in 42s"
        );
        let summary = body["output"]["summary"].as_str().unwrap();
        assert!(
            summary.contains("12 passed, 0 failed, 1 skipped"),
            "{summary}"
        );
        assert!(summary.contains("| Duration | 42s |"), "{summary}");
        let text = body["output"]["text"].as_str().unwrap();
        assert!(text.starts_with("```text\n") && text.ends_with("\n```\n"));
        assert_eq!(text.matches("```").count(), 2, "{text}");
        let action = &body["actions"][0];
        assert!(action["label"].as_str().unwrap().chars().count() <= ACTION_LABEL_LIMIT);
        assert!(
            action["description"].as_str().unwrap().chars().count() <= ACTION_DESCRIPTION_LIMIT
        );
        assert!(action["identifier"].as_str().unwrap().chars().count() <= ACTION_IDENTIFIER_LIMIT);
        assert_eq!(body["completed_at"], "2026-12-02T08:00:42Z");
    }

    #[test]
    fn running_check_run_has_no_conclusion_nor_button() {
        let r = run(Some(RunPhase::Running), None);
        let body = check_run_body(&r, &"a".repeat(40), CheckState::of(&r, false));
        assert_eq!(body["status"], "in_progress");
        assert!(body.get("conclusion").is_none());
        assert!(body.get("actions").is_none());
        assert_eq!(body["output"]["title"], "suite e2e is running");
    }

    #[test]
    fn huge_output_is_cut_from_the_front_to_github_limits() {
        let mut r = run(Some(RunPhase::Failed), Some("TestsFailed"));
        let long = format!("{}THE END", "x".repeat(200_000));
        r.status.as_mut().unwrap().output = Some(long);
        r.status.as_mut().unwrap().message = Some("m\n".repeat(1000));
        let body = check_run_body(&r, "s", CheckState::of(&r, false));
        let text = body["output"]["text"].as_str().unwrap();
        assert!(text.chars().count() <= OUTPUT_LIMIT, "{}", text.len());
        assert!(text.contains("THE END"));
        let description = status_description(&r, CheckState::of(&r, false));
        assert!(description.chars().count() <= STATUS_DESCRIPTION_LIMIT);
        assert!(!description.contains('\n'));
    }

    #[test]
    fn names_tell_suites_from_actions() {
        let mut r = run(None, None);
        assert_eq!(check_name(&r), "ephemera/e2e");
        r.spec.test = None;
        r.spec.action = Some("list-users".into());
        assert_eq!(check_name(&r), "ephemera/action/list-users");
    }
}
