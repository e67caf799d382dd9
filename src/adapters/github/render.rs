//! Pure: what a TestInstallation means for the people on its pull request,
//! and the text of the sticky comment. Never credentials: at most the name of
//! the Secret that holds them.

use kube::ResourceExt;

use super::annotations;
use crate::api::{Phase, TestInstallation, labels};

/// Hidden marker that identifies the adapter's sticky comment on a PR.
pub const MARKER: &str = "<!-- ephemera:github-sticky -->";

/// Where an installation is, as far as GitHub is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Being created or rolled to a new spec.
    Deploying,
    Ready,
    Failed,
    Hibernated,
    /// Deleted or being deleted.
    Removed,
}

impl Stage {
    /// The GitHub deployment status state.
    pub fn deployment_state(self) -> &'static str {
        match self {
            Stage::Deploying => "in_progress",
            Stage::Ready => "success",
            Stage::Failed => "failure",
            Stage::Hibernated | Stage::Removed => "inactive",
        }
    }

    /// The commit status state, if this stage sets one.
    pub fn commit_state(self) -> Option<&'static str> {
        match self {
            Stage::Deploying => Some("pending"),
            Stage::Ready => Some("success"),
            Stage::Failed => Some("failure"),
            Stage::Hibernated | Stage::Removed => None,
        }
    }
}

/// Everything the PR is told about one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub name: String,
    pub stage: Stage,
    /// The phase as people read it (`Provisioning`, `Ready`, `Removed`, …).
    pub phase: String,
    pub url: Option<String>,
    pub version: Option<String>,
    pub sha: Option<String>,
    pub expires_at: Option<String>,
    pub reason: Option<String>,
    /// `namespace/name` of the Secret with the logins.
    pub credentials: Option<String>,
    /// A fork's newer head that nobody approved yet.
    pub unapproved_head: Option<String>,
    /// The profile's links (logs, dashboards), as `(name, url)`.
    pub links: Vec<(String, String)>,
}

impl Report {
    pub fn of(ti: &TestInstallation, deleted: bool) -> Self {
        let status = ti.status.clone().unwrap_or_default();
        let generation = ti.metadata.generation.unwrap_or(0);
        let current = status.observed_generation.is_some_and(|g| g >= generation);
        let removing = deleted || ti.metadata.deletion_timestamp.is_some();
        let (stage, phase) = if removing {
            (Stage::Removed, "Removed".to_string())
        } else {
            match (current, status.phase) {
                (true, Some(Phase::Ready)) => (Stage::Ready, "Ready".into()),
                (true, Some(Phase::Failed)) => (Stage::Failed, "Failed".into()),
                (true, Some(Phase::Hibernated)) => (Stage::Hibernated, "Hibernated".into()),
                (true, Some(Phase::Terminating)) => (Stage::Removed, "Removed".into()),
                (true, Some(phase)) => (Stage::Deploying, phase.to_string()),
                (false, None) => (Stage::Deploying, "Pending".into()),
                (false, Some(_)) => (Stage::Deploying, "Updating".into()),
                (true, None) => (Stage::Deploying, "Pending".into()),
            }
        };
        let annotations = ti.annotations();
        let sha = annotations.get(labels::HEAD_SHA).cloned();
        let approved = annotations.get(annotations::APPROVED_SHA);
        let unapproved_head = match (annotations.get(annotations::LATEST_HEAD), approved) {
            (Some(head), Some(approved)) if head != approved => Some(head.clone()),
            _ => None,
        };
        let version = match stage {
            Stage::Ready | Stage::Hibernated => status.version.clone(),
            _ => None,
        }
        .or_else(|| ti.spec.version.clone());
        let reason = match stage {
            Stage::Failed => Some(
                status
                    .message
                    .clone()
                    .unwrap_or_else(|| "the controller reported a failure".into()),
            ),
            _ => None,
        };
        Report {
            name: ti.name_any(),
            stage,
            phase,
            url: (stage != Stage::Removed).then_some(status.url).flatten(),
            version,
            sha,
            expires_at: (stage != Stage::Removed)
                .then(|| {
                    status
                        .expires_at
                        .map(|t| t.0.strftime("%Y-%m-%d %H:%M UTC").to_string())
                })
                .flatten(),
            reason,
            credentials: status
                .credentials_secret
                .filter(|_| stage != Stage::Removed)
                .map(|c| format!("{}/{}", c.namespace, c.name)),
            unapproved_head,
            links: if stage == Stage::Removed {
                Vec::new()
            } else {
                status
                    .links
                    .iter()
                    .map(|l| (l.name.clone(), l.url.clone()))
                    .collect()
            },
        }
    }

    /// Short text for a deployment or commit status (GitHub keeps 140 chars).
    pub fn description(&self) -> String {
        let text = match (&self.stage, &self.reason) {
            (Stage::Failed, Some(reason)) => format!("Failed: {reason}"),
            (Stage::Ready, _) => format!("{} is ready", self.name),
            (Stage::Removed, _) => format!("{} was removed", self.name),
            _ => format!("{}: {}", self.name, self.phase),
        };
        truncate(&text, 140)
    }
}

/// The sticky comment's body.
pub fn sticky(report: &Report) -> String {
    let mut out = format!("{MARKER}\n### Test installation `{}`\n\n", report.name);
    out.push_str("| | |\n|---|---|\n");
    out.push_str(&format!("| Phase | **{}** |\n", report.phase));
    if let Some(url) = &report.url {
        out.push_str(&format!("| URL | {} |\n", escape(url)));
    }
    if let Some(version) = &report.version {
        out.push_str(&format!("| Version | `{}` |\n", escape(version)));
    }
    if let Some(sha) = &report.sha {
        out.push_str(&format!("| Commit | {} |\n", escape(sha)));
    }
    if let Some(expires) = &report.expires_at {
        out.push_str(&format!("| Expires | {expires} |\n"));
    }
    if !report.links.is_empty() {
        let links: Vec<String> = report
            .links
            .iter()
            .map(|(name, url)| format!("[{}]({})", escape(name), escape(url)))
            .collect();
        out.push_str(&format!("| Links | {} |\n", links.join(" · ")));
    }
    if let Some(secret) = &report.credentials {
        out.push_str(&format!(
            "| Logins | in the Secret `{}` (ask a cluster admin; never posted here) |\n",
            escape(secret)
        ));
    }
    if let Some(reason) = &report.reason {
        out.push_str(&format!("\n**Why it failed:** {}\n", escape(reason)));
    }
    if let Some(head) = &report.unapproved_head {
        out.push_str(&format!(
            "\nThe newer commit {} from the fork is **not deployed**: someone with write \
             permission must approve it by re-applying the label or commenting `/testenv deploy`.\n",
            escape(head)
        ));
    }
    match report.stage {
        Stage::Removed => out.push_str(
            "\nThe installation was removed. Add the label again or comment `/testenv deploy` for a new one.\n",
        ),
        _ => out.push_str("\nComment `/testenv help` for the commands.\n"),
    }
    out
}

/// The answer to `/testenv status`: the same facts, without the marker (it
/// is a reply, not the sticky comment).
pub fn status_reply(report: &Report) -> String {
    let body = sticky(report);
    body.strip_prefix(MARKER)
        .unwrap_or(&body)
        .trim_start()
        .to_string()
}

/// Markdown/HTML that the comment must not interpret (messages come from the
/// cluster; a `<!--` in one must not hide the rest of the comment).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' => out.push_str("\\|"),
            '`' => out.push('\''),
            '@' => out.push_str("@\u{200b}"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    truncate(&out, 1000)
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CredentialsSecretRef, TestInstallationSpec, TestInstallationStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ti(generation: i64, status: Option<TestInstallationStatus>) -> TestInstallation {
        let mut ti = TestInstallation::new(
            "webapp-pr-7",
            TestInstallationSpec {
                version: Some("abc1234".into()),
                ..Default::default()
            },
        );
        ti.metadata.generation = Some(generation);
        ti.annotations_mut()
            .insert(labels::HEAD_SHA.into(), "abc1234".repeat(5) + "abcde");
        ti.status = status;
        ti
    }

    fn ready() -> TestInstallationStatus {
        TestInstallationStatus {
            phase: Some(Phase::Ready),
            observed_generation: Some(1),
            url: Some("https://webapp-pr-7.example.test".into()),
            version: Some("abc1234".into()),
            expires_at: Some(Time("2030-01-02T03:04:05Z".parse().unwrap())),
            credentials_secret: Some(CredentialsSecretRef {
                namespace: "ti-webapp-pr-7".into(),
                name: "credentials".into(),
            }),
            links: vec![crate::api::Link {
                name: "logs".into(),
                url: "https://logs.example.test/?ns=ti-webapp-pr-7".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn ready_shows_url_version_expiry_and_only_a_pointer_to_credentials() {
        let report = Report::of(&ti(1, Some(ready())), false);
        assert_eq!(report.stage, Stage::Ready);
        let body = sticky(&report);
        assert!(body.starts_with(MARKER));
        assert!(body.contains("https://webapp-pr-7.example.test"), "{body}");
        assert!(body.contains("`abc1234`"));
        assert!(body.contains("2030-01-02 03:04 UTC"));
        assert!(body.contains("ti-webapp-pr-7/credentials"));
        assert!(
            body.contains("| Links | [logs](https://logs.example.test/?ns=ti-webapp-pr-7) |"),
            "{body}"
        );
        assert_eq!(report.description(), "webapp-pr-7 is ready");
        let reply = status_reply(&report);
        assert!(!reply.contains(MARKER));
        assert!(reply.contains("https://webapp-pr-7.example.test"));
    }

    #[test]
    fn a_status_older_than_the_spec_is_not_ready() {
        let report = Report::of(&ti(2, Some(ready())), false);
        assert_eq!(report.stage, Stage::Deploying);
        assert_eq!(report.phase, "Updating");
        assert_eq!(Report::of(&ti(1, None), false).phase, "Pending");
    }

    #[test]
    fn failures_say_why_escaped() {
        let status = TestInstallationStatus {
            phase: Some(Phase::Failed),
            observed_generation: Some(1),
            message: Some("ImagePullBackOff: <!-- image | gone @here".into()),
            ..Default::default()
        };
        let report = Report::of(&ti(1, Some(status)), false);
        assert_eq!(report.stage, Stage::Failed);
        assert_eq!(report.stage.deployment_state(), "failure");
        let body = sticky(&report);
        assert!(
            body.contains("ImagePullBackOff: &lt;!-- image \\| gone @\u{200b}here"),
            "{body}"
        );
        assert_eq!(body.matches("<!--").count(), 1);
        assert!(report.description().starts_with("Failed: ImagePullBackOff"));
        let long = Report {
            reason: Some("x".repeat(500)),
            ..report
        };
        assert_eq!(long.description().chars().count(), 140);
    }

    #[test]
    fn removal_drops_url_and_is_inactive() {
        let report = Report::of(&ti(1, Some(ready())), true);
        assert_eq!(report.stage, Stage::Removed);
        assert_eq!(report.stage.deployment_state(), "inactive");
        assert_eq!(report.url, None);
        assert!(sticky(&report).contains("was removed"));
    }

    #[test]
    fn unapproved_fork_head_is_announced() {
        let mut t = ti(1, Some(ready()));
        t.annotations_mut()
            .insert(annotations::APPROVED_SHA.into(), "a".repeat(40));
        t.annotations_mut()
            .insert(annotations::LATEST_HEAD.into(), "b".repeat(40));
        let body = sticky(&Report::of(&t, false));
        assert!(body.contains("not deployed"), "{body}");
        assert!(body.contains(&"b".repeat(40)));
    }
}
