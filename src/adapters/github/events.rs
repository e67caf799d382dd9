//! Pure: webhook payloads → what the adapter intends to do, and a pull
//! request's current state → the installation it should have.
//!
//! Pull-request events are not replayed one by one: every one of them only
//! triggers a reconcile of that PR from its current state (open or closed,
//! labels, head SHA). Quick label flapping therefore converges to the final
//! label state, and a redelivered or replayed event changes nothing.

use serde::Deserialize;

use super::{
    commands::{self, Command, CommandError},
    config::{Config, LabelSettings, Repository},
};

#[derive(Debug, Clone, Deserialize)]
pub struct Repo {
    pub full_name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub login: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Label {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Branch {
    pub sha: String,
    /// Null when the fork was deleted.
    #[serde(default)]
    pub repo: Option<Repo>,
}

/// The fields of a pull request the adapter uses (webhook and REST shapes).
#[derive(Debug, Clone, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    pub state: String,
    pub html_url: String,
    pub head: Branch,
    pub base: Branch,
    #[serde(default)]
    pub labels: Vec<Label>,
    pub user: User,
}

impl PullRequest {
    pub fn is_open(&self) -> bool {
        self.state == "open"
    }

    /// From another repository (or from a deleted one).
    pub fn is_fork(&self) -> bool {
        match (&self.head.repo, &self.base.repo) {
            (Some(head), Some(base)) => !head.full_name.eq_ignore_ascii_case(&base.full_name),
            _ => true,
        }
    }

    pub fn label_names(&self) -> impl Iterator<Item = &str> + Clone {
        self.labels.iter().map(|l| l.name.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
struct AppInstallation {
    id: u64,
}

#[derive(Debug, Deserialize)]
struct PullRequestEvent {
    action: String,
    pull_request: PullRequest,
    #[serde(default)]
    label: Option<Label>,
    repository: Repo,
    sender: User,
    #[serde(default)]
    installation: Option<AppInstallation>,
}

#[derive(Debug, Deserialize)]
struct Issue {
    number: u64,
    state: String,
    #[serde(default)]
    pull_request: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Comment {
    id: u64,
    #[serde(default)]
    body: Option<String>,
    user: User,
}

#[derive(Debug, Deserialize)]
struct IssueCommentEvent {
    action: String,
    issue: Issue,
    comment: Comment,
    repository: Repo,
    #[serde(default)]
    installation: Option<AppInstallation>,
}

#[derive(Debug, Deserialize)]
struct CheckRun {
    id: u64,
    #[serde(default)]
    external_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RequestedAction {
    identifier: String,
}

#[derive(Debug, Deserialize)]
struct CheckRunEvent {
    action: String,
    check_run: CheckRun,
    #[serde(default)]
    requested_action: Option<RequestedAction>,
    repository: Repo,
    sender: User,
    #[serde(default)]
    installation: Option<AppInstallation>,
}

/// Something to do for one pull request.
#[derive(Debug, Clone)]
pub enum Intent {
    /// Bring the PR's installation in line with the PR's current state.
    Pull(PullIntent),
    /// A `/testenv` command in a new comment.
    Comment(CommentIntent),
    /// Run again what a check run of ours reported (its re-run link or button).
    Rerun(RerunIntent),
}

impl Intent {
    pub fn repository(&self) -> &str {
        match self {
            Intent::Pull(p) => &p.repository,
            Intent::Comment(c) => &c.repository,
            Intent::Rerun(r) => &r.repository,
        }
    }
    /// The PR's number (0 for a re-run: its run knows the PR).
    pub fn number(&self) -> u64 {
        match self {
            Intent::Pull(p) => p.pull.number,
            Intent::Comment(c) => c.number,
            Intent::Rerun(_) => 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RerunIntent {
    pub repository: String,
    pub installation_id: Option<u64>,
    pub check_run_id: u64,
    /// The TestRun the check run reported (its `external_id`).
    pub run: String,
    /// Who clicked.
    pub sender: String,
}

#[derive(Debug, Clone)]
pub struct PullIntent {
    pub repository: String,
    pub installation_id: Option<u64>,
    pub action: String,
    pub sender: String,
    /// The label of a `labeled` / `unlabeled` event.
    pub label: Option<String>,
    /// The PR as the event saw it (used when the API cannot be reached).
    pub pull: PullRequest,
}

impl PullIntent {
    /// A configured label applied by someone other than the bot: for fork
    /// PRs this approves the head SHA it was applied on.
    pub fn approves(&self, config: &Config) -> Option<&str> {
        let label = self.label.as_deref()?;
        (self.action == "labeled"
            && config.label(label).is_some()
            && !self.sender.eq_ignore_ascii_case(&config.bot_login))
        .then_some(self.pull.head.sha.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct CommentIntent {
    pub repository: String,
    pub installation_id: Option<u64>,
    pub number: u64,
    pub comment_id: u64,
    pub author: String,
    pub command: Result<Command, CommandError>,
}

/// The outcome of looking at one delivery.
#[derive(Debug)]
pub enum Triage {
    Ignore(&'static str),
    Act(Box<Intent>),
}

#[derive(Debug, thiserror::Error)]
#[error("the {event} payload is not what GitHub sends: {source}")]
pub struct PayloadError {
    event: String,
    #[source]
    source: serde_json::Error,
}

const PULL_ACTIONS: [&str; 6] = [
    "opened",
    "reopened",
    "synchronize",
    "labeled",
    "unlabeled",
    "closed",
];

/// What a delivery of `event` with `body` asks for.
pub fn triage(event: &str, body: &[u8], config: &Config) -> Result<Triage, PayloadError> {
    let parse_error = |source| PayloadError {
        event: event.to_string(),
        source,
    };
    match event {
        "pull_request" => {
            let e: PullRequestEvent = serde_json::from_slice(body).map_err(parse_error)?;
            if config.repository(&e.repository.full_name).is_none() {
                return Ok(Triage::Ignore("repository is not in the allowlist"));
            }
            if !PULL_ACTIONS.contains(&e.action.as_str()) {
                return Ok(Triage::Ignore("pull_request action not handled"));
            }
            let label = e.label.map(|l| l.name);
            if matches!(e.action.as_str(), "labeled" | "unlabeled")
                && label.as_deref().and_then(|l| config.label(l)).is_none()
            {
                return Ok(Triage::Ignore("label is not configured"));
            }
            Ok(Triage::Act(Box::new(Intent::Pull(PullIntent {
                repository: e.repository.full_name,
                installation_id: e.installation.map(|i| i.id),
                action: e.action,
                sender: e.sender.login,
                label,
                pull: e.pull_request,
            }))))
        }
        "issue_comment" => {
            let e: IssueCommentEvent = serde_json::from_slice(body).map_err(parse_error)?;
            if config.repository(&e.repository.full_name).is_none() {
                return Ok(Triage::Ignore("repository is not in the allowlist"));
            }
            if e.action != "created" {
                return Ok(Triage::Ignore("only new comments are read"));
            }
            if e.issue.pull_request.is_none() {
                return Ok(Triage::Ignore("comment is not on a pull request"));
            }
            if e.issue.state != "open" {
                return Ok(Triage::Ignore("pull request is closed"));
            }
            if e.comment.user.login.eq_ignore_ascii_case(&config.bot_login) {
                return Ok(Triage::Ignore("comment is the adapter's own"));
            }
            let body = e.comment.body.unwrap_or_default();
            if body.contains(super::render::MARKER) {
                return Ok(Triage::Ignore("comment is the adapter's own"));
            }
            let Some(command) = commands::find_command(&body) else {
                return Ok(Triage::Ignore("comment has no command"));
            };
            Ok(Triage::Act(Box::new(Intent::Comment(CommentIntent {
                repository: e.repository.full_name,
                installation_id: e.installation.map(|i| i.id),
                number: e.issue.number,
                comment_id: e.comment.id,
                author: e.comment.user.login,
                command,
            }))))
        }
        "check_run" => {
            let e: CheckRunEvent = serde_json::from_slice(body).map_err(parse_error)?;
            if config.repository(&e.repository.full_name).is_none() {
                return Ok(Triage::Ignore("repository is not in the allowlist"));
            }
            let rerun = match e.action.as_str() {
                "rerequested" => true,
                "requested_action" => e
                    .requested_action
                    .as_ref()
                    .is_some_and(|a| a.identifier == super::checks::RERUN_ACTION),
                _ => false,
            };
            if !rerun {
                return Ok(Triage::Ignore("check_run action not handled"));
            }
            let Some(run) = e.check_run.external_id.filter(|id| !id.is_empty()) else {
                return Ok(Triage::Ignore("check run has no external_id: not ours"));
            };
            Ok(Triage::Act(Box::new(Intent::Rerun(RerunIntent {
                repository: e.repository.full_name,
                installation_id: e.installation.map(|i| i.id),
                check_run_id: e.check_run.id,
                run,
                sender: e.sender.login,
            }))))
        }
        _ => Ok(Triage::Ignore("event not handled")),
    }
}

/// What the PR's installation should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No installation: closed, or no configured label.
    Absent,
    /// A fork PR in a repository that does not deploy forks.
    ForkRefused,
    /// A fork PR whose code nobody with write permission has approved.
    AwaitingApproval,
    Present(Desired),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub label: LabelSettings,
    /// The commit to run.
    pub sha: String,
    /// For forks: the approved commit (the same as `sha`).
    pub approved_sha: Option<String>,
    /// For forks: the head has moved past the approved commit.
    pub head_unapproved: bool,
}

/// The installation `pull` should have. `approved` is the commit approved
/// for a fork PR so far (by this event or an earlier one).
pub fn plan(
    pull: &PullRequest,
    config: &Config,
    repo: &Repository,
    approved: Option<&str>,
) -> Plan {
    if !pull.is_open() {
        return Plan::Absent;
    }
    let Some(label) = config.active_label(pull.label_names()) else {
        return Plan::Absent;
    };
    if !pull.is_fork() {
        return Plan::Present(Desired {
            label: label.clone(),
            sha: pull.head.sha.clone(),
            approved_sha: None,
            head_unapproved: false,
        });
    }
    if !repo.allow_forks {
        return Plan::ForkRefused;
    }
    match approved {
        None => Plan::AwaitingApproval,
        Some(sha) => Plan::Present(Desired {
            label: label.clone(),
            sha: sha.to_string(),
            approved_sha: Some(sha.to_string()),
            head_unapproved: sha != pull.head.sha,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(allow_forks: bool) -> Config {
        let path = std::env::temp_dir().join(format!(
            "ephemera-events-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&path, "s3cret").unwrap();
        Config::from_yaml(&format!(
            "botLogin: ephemera[bot]\nwebhookSecrets: [{{file: {p}}}]\nauth: {{token: {{file: {p}}}}}\n\
             allowForks: {allow_forks}\nrepositories: [{{name: acme/webapp}}]\n",
            p = path.display()
        ))
        .unwrap()
    }

    fn pull(labels: &[&str], fork: bool, state: &str) -> serde_json::Value {
        let head_repo = if fork {
            "mallory/webapp"
        } else {
            "acme/webapp"
        };
        json!({
            "number": 7, "state": state, "html_url": "https://github.com/acme/webapp/pull/7",
            "head": { "sha": "a".repeat(40), "repo": { "full_name": head_repo } },
            "base": { "sha": "b".repeat(40), "repo": { "full_name": "acme/webapp" } },
            "labels": labels.iter().map(|l| json!({ "name": l })).collect::<Vec<_>>(),
            "user": { "login": "dev" }
        })
    }

    fn pull_event(action: &str, label: Option<&str>, sender: &str) -> Vec<u8> {
        let mut e = json!({
            "action": action, "number": 7,
            "pull_request": pull(&["Setup Test Server"], false, "open"),
            "repository": { "full_name": "acme/webapp" },
            "sender": { "login": sender },
            "installation": { "id": 99 }
        });
        if let Some(label) = label {
            e["label"] = json!({ "name": label });
        }
        serde_json::to_vec(&e).unwrap()
    }

    fn comment_event(action: &str, body: &str, user: &str, on_pr: bool) -> Vec<u8> {
        let mut issue = json!({ "number": 7, "state": "open" });
        if on_pr {
            issue["pull_request"] =
                json!({ "url": "https://api.github.com/repos/acme/webapp/pulls/7" });
        }
        serde_json::to_vec(&json!({
            "action": action, "issue": issue,
            "comment": { "id": 5, "body": body, "user": { "login": user } },
            "repository": { "full_name": "acme/webapp" },
            "sender": { "login": user }
        }))
        .unwrap()
    }

    fn pr(value: serde_json::Value) -> PullRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn pull_request_events_become_reconciles() {
        let c = config(false);
        let t = triage(
            "pull_request",
            &pull_event("labeled", Some("Setup Test Server"), "dev"),
            &c,
        )
        .unwrap();
        let Triage::Act(intent) = t else {
            panic!("{t:?}")
        };
        let Intent::Pull(p) = *intent else {
            panic!("{intent:?}")
        };
        assert_eq!(p.installation_id, Some(99));
        assert_eq!(p.approves(&c), Some("a".repeat(40).as_str()));
        for action in ["synchronize", "closed", "reopened", "opened"] {
            let t = triage("pull_request", &pull_event(action, None, "dev"), &c).unwrap();
            assert!(
                matches!(&t, Triage::Act(i) if matches!(**i, Intent::Pull(_))),
                "{t:?}"
            );
        }
    }

    #[test]
    fn irrelevant_deliveries_are_ignored() {
        let c = config(false);
        let ignored = |event: &str, body: Vec<u8>| match triage(event, &body, &c).unwrap() {
            Triage::Ignore(reason) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            ignored("pull_request", pull_event("labeled", Some("bug"), "dev")),
            "label is not configured"
        );
        assert_eq!(
            ignored("pull_request", pull_event("edited", None, "dev")),
            "pull_request action not handled"
        );
        let other_repo = String::from_utf8(pull_event("opened", None, "dev"))
            .unwrap()
            .replace("\"acme/webapp\"}", "\"evil/webapp\"}");
        assert_eq!(
            ignored("pull_request", other_repo.into_bytes()),
            "repository is not in the allowlist"
        );
        assert_eq!(ignored("push", b"{}".to_vec()), "event not handled");
        assert_eq!(
            ignored(
                "issue_comment",
                comment_event("edited", "/testenv deploy", "dev", true)
            ),
            "only new comments are read"
        );
        assert_eq!(
            ignored(
                "issue_comment",
                comment_event("created", "/testenv deploy", "dev", false)
            ),
            "comment is not on a pull request"
        );
        assert_eq!(
            ignored(
                "issue_comment",
                comment_event("created", "/testenv deploy", "ephemera[bot]", true)
            ),
            "comment is the adapter's own"
        );
        assert_eq!(
            ignored(
                "issue_comment",
                comment_event("created", "```\n/testenv deploy\n```", "dev", true)
            ),
            "comment has no command"
        );
    }

    #[test]
    fn comment_commands_are_parsed() {
        let c = config(false);
        let t = triage(
            "issue_comment",
            &comment_event("created", "/testenv deploy --size miniHA", "dev", true),
            &c,
        )
        .unwrap();
        let Triage::Act(intent) = t else {
            panic!("{t:?}")
        };
        let Intent::Comment(ci) = *intent else {
            panic!("{intent:?}")
        };
        assert_eq!(ci.comment_id, 5);
        assert_eq!(ci.author, "dev");
        assert!(matches!(
            ci.command,
            Ok(Command::Deploy {
                size: Some(ref s),
                ..
            }) if s == "miniHA"
        ));
    }

    #[test]
    fn check_run_reruns_become_intents() {
        let c = config(false);
        let event = |action: &str, identifier: Option<&str>, external: &str| {
            let mut e = json!({
                "action": action,
                "check_run": { "id": 77, "name": "ephemera/e2e", "head_sha": "a".repeat(40),
                               "external_id": external, "status": "completed" },
                "repository": { "full_name": "acme/webapp" },
                "sender": { "login": "dev" },
                "installation": { "id": 99 }
            });
            if let Some(id) = identifier {
                e["requested_action"] = json!({ "identifier": id });
            }
            serde_json::to_vec(&e).unwrap()
        };
        for body in [
            event("rerequested", None, "web-pr-7-e2e-1"),
            event("requested_action", Some("rerun"), "web-pr-7-e2e-1"),
        ] {
            let Triage::Act(intent) = triage("check_run", &body, &c).unwrap() else {
                panic!()
            };
            let Intent::Rerun(r) = *intent else { panic!() };
            assert_eq!(r.run, "web-pr-7-e2e-1");
            assert_eq!(r.sender, "dev");
            assert_eq!(r.check_run_id, 77);
        }
        for (body, reason) in [
            (event("created", None, "x"), "check_run action not handled"),
            (
                event("requested_action", Some("other"), "x"),
                "check_run action not handled",
            ),
            (
                event("rerequested", None, ""),
                "check run has no external_id: not ours",
            ),
        ] {
            match triage("check_run", &body, &c).unwrap() {
                Triage::Ignore(r) => assert_eq!(r, reason),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn malformed_payload_is_a_clear_error() {
        let c = config(false);
        let err = triage("pull_request", b"{\"action\":1}", &c).unwrap_err();
        assert!(err.to_string().contains("pull_request payload"), "{err}");
    }

    #[test]
    fn plan_follows_labels_and_state() {
        let c = config(false);
        let repo = c.repository("acme/webapp").unwrap();
        let present = plan(
            &pr(pull(&["bug", "Setup HA Test Server"], false, "open")),
            &c,
            repo,
            None,
        );
        let Plan::Present(d) = present else {
            panic!("{present:?}")
        };
        assert_eq!(d.label.size.as_deref(), Some("miniHA"));
        assert_eq!(d.sha, "a".repeat(40));
        assert_eq!(
            plan(&pr(pull(&["bug"], false, "open")), &c, repo, None),
            Plan::Absent
        );
        assert_eq!(
            plan(
                &pr(pull(&["Setup Test Server"], false, "closed")),
                &c,
                repo,
                None
            ),
            Plan::Absent
        );
    }

    #[test]
    fn forks_need_permission_and_an_approved_sha() {
        let off = config(false);
        let fork = pr(pull(&["Setup Test Server"], true, "open"));
        assert!(fork.is_fork());
        assert_eq!(
            plan(&fork, &off, off.repository("acme/webapp").unwrap(), None),
            Plan::ForkRefused
        );
        let on = config(true);
        let repo = on.repository("acme/webapp").unwrap();
        assert_eq!(plan(&fork, &on, repo, None), Plan::AwaitingApproval);
        let Plan::Present(d) = plan(&fork, &on, repo, Some(&"a".repeat(40))) else {
            panic!()
        };
        assert!(!d.head_unapproved);
        let Plan::Present(d) = plan(&fork, &on, repo, Some(&"c".repeat(40))) else {
            panic!()
        };
        assert_eq!(
            d.sha,
            "c".repeat(40),
            "runs the approved commit, not the head"
        );
        assert!(d.head_unapproved);
        let mut deleted = pull(&["Setup Test Server"], false, "open");
        deleted["head"]["repo"] = serde_json::Value::Null;
        assert!(pr(deleted).is_fork());
    }
}
