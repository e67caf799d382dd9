//! The GitHub adapter end to end: webhooks in, TestInstallations on the real
//! local API server, the real controller bringing them to Ready (or Failed)
//! and tearing them down, reports out to a local stand-in for the GitHub API.
//!
//! One controller runs per test binary (`support::controller_with`). It only
//! reconciles installations whose `ephemera.dev/github-repository` label (set
//! by the adapter) names one of this binary's repositories: each test has
//! repositories of its own (`repo`), so tests never see each other's
//! installations, and other test binaries never see them either.

mod fake_github;
mod support;

use std::{
    path::PathBuf,
    sync::OnceLock,
    time::{Duration, Instant},
};

use ephemera::{
    adapters::{
        github::{self, Config, annotations, naming, reporter::Told, signature},
        notify,
    },
    api::{InstallationProfile, Phase, TestInstallation, labels},
};
use fake_github::{AuthMode, FakeGitHub, Fault};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{client, server::RunningServer, unique_name, wait_for};

/// How long the adapter may take to act on a delivery or a change.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long the controller may take to bring an installation to a phase, or
/// to delete it (its namespace first).
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(90);
const SECRET: &str = "webhook secret for tests";
const TOKEN: &str = "ghp_test_token_never_in_comments";
const BOT: &str = "ephemera-test[bot]";
const LABEL: &str = "Setup Test Server";
/// The profile of the configured repositories. Created (idempotently) by
/// every test; its content never changes, so test runs share it safely.
const PROFILE: &str = "github-adapter-tests";
/// Image template of repositories whose installations fail: the fake
/// kubelet reports ImagePullBackOff for images from `missing.invalid`.
const MISSING_IMAGE: &str = "missing.invalid/{repo}:{sha7}";

// ---------------------------------------------------------------- cluster

/// The repositories of this binary, by prefix: `acme/<prefix>-<run>`. A test
/// uses only repositories listed here, since the controller's selector is
/// made of them when the binary's first test starts.
const REPOSITORIES: &[&str] = &[
    "life", "flap", "auth", "dup", "cmd", "nofork", "fork", "rate", "restart", "app", "queue",
    "labels", "lost", "fail", "redo", "replay",
];

/// Repositories of installations no controller reconciles: the test writes
/// their status itself.
const UNMANAGED: &str = "kills";

/// The repository `acme/<prefix>-<run>` of this test binary.
fn repo(prefix: &str) -> String {
    static RUN: OnceLock<String> = OnceLock::new();
    assert!(
        REPOSITORIES.contains(&prefix) || prefix == UNMANAGED,
        "repository prefix {prefix} is not in REPOSITORIES, so no controller would reconcile it"
    );
    format!("acme/{prefix}-{}", RUN.get_or_init(|| unique_name("g")))
}

/// The local control plane with the CRDs and the deletion-lock policy
/// installed, the real controller running for this binary's repositories,
/// and the test profile in place. Every test starts here.
async fn plane() -> Client {
    let selector = format!(
        "{} in ({})",
        annotations::REPOSITORY,
        REPOSITORIES
            .iter()
            .map(|prefix| naming::repository_label(&repo(prefix)))
            .collect::<Vec<_>>()
            .join(",")
    );
    // Installs the CRDs and the policy before it returns; the first call in
    // the binary decides the selector, and every call passes the same one.
    support::controller_with(|config| config.installation_selector = Some(selector));
    let kube = client().await;
    let profile: InstallationProfile = serde_json::from_value(json!({
        "apiVersion": "ephemera.dev/v1alpha1",
        "kind": "InstallationProfile",
        "metadata": { "name": PROFILE },
        "spec": {
            "image": "registry.example/team/app",
            "allowedImages": ["registry.test/**", "missing.invalid/**"],
            "defaultVersion": "1.0.0",
            "seed": { "command": ["/bin/sh", "-c", "echo seeding"] }
        }
    }))
    .expect("the test profile");
    // Applied, so a changed test profile replaces the one an older run left.
    Api::<InstallationProfile>::all(kube.clone())
        .patch(
            PROFILE,
            &kube::api::PatchParams::apply("ephemera-github-tests").force(),
            &kube::api::Patch::Apply(&profile),
        )
        .await
        .unwrap_or_else(|err| panic!("applying InstallationProfile {PROFILE}: {err}"));
    kube
}

/// Waits until the controller reports `phase` for the installation's
/// current generation, and returns it.
async fn wait_phase(api: &Api<TestInstallation>, name: &str, phase: Phase) -> TestInstallation {
    wait_for(
        &format!("the controller to report {name} {phase}"),
        CONTROLLER_TIMEOUT,
        || async {
            let ti = api.get(name).await.map_err(|e| e.to_string())?;
            let status = ti.status.clone().unwrap_or_default();
            if ti.phase() == Some(phase) && status.observed_generation == ti.metadata.generation {
                Ok(ti)
            } else {
                Err(format!(
                    "generation {:?}: {status:#?}",
                    ti.metadata.generation
                ))
            }
        },
    )
    .await
}

/// What the adapter recorded on the installation (its memory annotation).
fn told(ti: &TestInstallation) -> Told {
    notify::recalled(ti, github::ADAPTER).unwrap_or_default()
}

/// Deletes a test's installations when it ends, and waits until the
/// controller and the adapter are done with them: `clean` at the end of a
/// test, or, when a test fails before that, `Drop` (which forces them out).
struct Leftovers {
    kube: Client,
    selectors: Vec<String>,
    /// InstallationProfiles the test created, deleted after the installations.
    profiles: Vec<String>,
    cleaned: bool,
}

impl Leftovers {
    fn of(kube: &Client, repos: &[&str]) -> Self {
        Self {
            kube: kube.clone(),
            selectors: repos
                .iter()
                .map(|r| {
                    format!(
                        "{}={}",
                        annotations::REPOSITORY,
                        naming::repository_label(r)
                    )
                })
                .collect(),
            profiles: Vec::new(),
            cleaned: false,
        }
    }

    /// Deletes the installations and waits until they and their namespaces
    /// are gone. Call it while the adapter runs: it reports each teardown and
    /// releases its finalizer; the controller deletes each namespace.
    async fn clean(mut self) {
        support::delete_installations_and_wait(&self.kube, &self.selectors, CONTROLLER_TIMEOUT)
            .await;
        let profiles: Api<InstallationProfile> = Api::all(self.kube.clone());
        for profile in &self.profiles {
            profiles
                .delete(profile, &DeleteParams::default())
                .await
                .unwrap_or_else(|err| panic!("deleting InstallationProfile {profile}: {err}"));
        }
        self.cleaned = true;
    }
}

impl Drop for Leftovers {
    /// A test that failed before `clean` leaves nothing behind either: its
    /// installations lose their finalizers and are deleted, with their
    /// namespaces (no controller reconciles them once the binary ends).
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        support::force_remove_installations(self.selectors.clone(), self.profiles.clone());
    }
}

// ---------------------------------------------------------------- adapter

struct Adapter {
    server: RunningServer,
}

impl Adapter {
    async fn start(config: Config, kube: Client) -> Self {
        let server = RunningServer::spawn_ready(move |listener, shutdown| {
            github::run(listener, config, kube, shutdown)
        })
        .await;
        Self { server }
    }

    async fn stop(self) {
        self.server.stop().await;
    }

    /// Like `kill -9`: stops wherever it is, mid-request.
    async fn kill(self) {
        self.server.kill().await;
    }

    async fn post(&self, headers: &[(&str, String)], body: Vec<u8>) -> (StatusCode, String) {
        let mut request = reqwest::Client::new()
            .post(format!("http://{}/github/webhook", self.server.addr))
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        let response = request.send().await.expect("POST webhook");
        let status = response.status();
        (status, response.text().await.unwrap_or_default())
    }

    /// Delivers `payload` as GitHub would: signed, with a fresh delivery id.
    async fn deliver(&self, event: &str, payload: &Value) -> (StatusCode, String) {
        self.deliver_as(event, payload, &unique_name("delivery"))
            .await
    }

    async fn deliver_as(
        &self,
        event: &str,
        payload: &Value,
        delivery: &str,
    ) -> (StatusCode, String) {
        let body = serde_json::to_vec(payload).unwrap();
        let headers = [
            ("x-github-event", event.to_string()),
            ("x-github-delivery", delivery.to_string()),
            ("x-hub-signature-256", signature::sign(SECRET, &body)),
            ("content-type", "application/json".to_string()),
            ("user-agent", "GitHub-Hookshot/test".to_string()),
        ];
        self.post(&headers, body).await
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.server.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn secret_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("ephemera-gh"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn config_yaml(gh: &FakeGitHub, repos: &[(&str, bool)], extra: &str) -> String {
    let secret = secret_file("webhook-secret", &format!("{SECRET}\n"));
    let token = secret_file("token", TOKEN);
    let repositories: Vec<String> = repos
        .iter()
        .map(|(r, forks)| format!("  - {{name: {r}, profile: {PROFILE}, allowForks: {forks}}}"))
        .collect();
    format!(
        "apiBaseUrl: {url}\n\
         botLogin: '{BOT}'\n\
         instance: '{instance}'\n\
         webhookSecrets:\n  - {{file: {rotated}}}\n  - {{file: {secret}}}\n\
         auth: {{token: {{file: {token}}}}}\n\
         maxBodyBytes: 65536\n\
         commitStatus: true\n\
         image: 'registry.test/{{repo}}:{{sha7}}'\n\
         repositories:\n{repos}\n{extra}",
        url = gh.url(),
        rotated = secret_file("old-secret", "the previous secret").display(),
        secret = secret.display(),
        token = token.display(),
        repos = repositories.join("\n"),
        // One adapter instance per repository set, the same across restarts.
        instance = naming::repository_label(repos[0].0),
    )
}

// ---------------------------------------------------------------- payloads

fn sha(seed: char) -> String {
    std::iter::repeat_n(seed, 40).collect()
}

fn pull(repo: &str, number: u64, head: &str, labels: &[&str], fork: bool) -> Value {
    let head_repo = if fork {
        format!("contributor/{}", repo.split('/').nth(1).unwrap())
    } else {
        repo.to_string()
    };
    json!({
        "url": format!("https://api.github.com/repos/{repo}/pulls/{number}"),
        "html_url": format!("https://github.com/{repo}/pull/{number}"),
        "number": number,
        "state": "open",
        "draft": false,
        "title": "Make it faster",
        "user": { "login": "dev", "type": "User" },
        "author_association": "CONTRIBUTOR",
        "labels": labels.iter().map(|l| json!({ "id": 1, "name": l, "color": "ededed" })).collect::<Vec<_>>(),
        "head": { "ref": "feature", "sha": head, "repo": { "full_name": head_repo, "fork": fork } },
        "base": { "ref": "main", "sha": sha('0'), "repo": { "full_name": repo, "fork": false } },
        "merged": false
    })
}

fn pull_event(action: &str, pr: &Value, label: Option<&str>, sender: &str) -> Value {
    let repo = pr["base"]["repo"]["full_name"].as_str().unwrap();
    let mut event = json!({
        "action": action,
        "number": pr["number"],
        "pull_request": pr,
        "repository": { "full_name": repo, "private": false },
        "sender": { "login": sender, "type": "User" },
        "installation": { "id": 4242 }
    });
    if let Some(label) = label {
        event["label"] = json!({ "name": label, "color": "ededed" });
    }
    if action == "synchronize" {
        event["before"] = json!(sha('0'));
        event["after"] = pr["head"]["sha"].clone();
    }
    event
}

fn comment_event(repo: &str, number: u64, id: u64, body: &str, user: &str) -> Value {
    json!({
        "action": "created",
        "issue": {
            "number": number,
            "state": "open",
            "pull_request": { "url": format!("https://api.github.com/repos/{repo}/pulls/{number}") },
            "user": { "login": "dev" }
        },
        "comment": {
            "id": id,
            "body": body,
            "user": { "login": user, "type": if user.ends_with("[bot]") { "Bot" } else { "User" } },
            "author_association": "MEMBER"
        },
        "repository": { "full_name": repo },
        "sender": { "login": user },
        "installation": { "id": 4242 }
    })
}

// ---------------------------------------------------------------- setup

struct Env {
    kube: Client,
    gh: FakeGitHub,
    adapter: Adapter,
    repo: String,
    api: Api<TestInstallation>,
    leftovers: Leftovers,
}

async fn setup(prefix: &str, forks: bool) -> Env {
    setup_with(prefix, forks, "").await
}

/// [`setup`] with more config lines.
async fn setup_with(prefix: &str, forks: bool, extra: &str) -> Env {
    let kube = plane().await;
    let gh = FakeGitHub::start(BOT, AuthMode::Token(TOKEN.into())).await;
    let repo = repo(prefix);
    let config = Config::from_yaml(&config_yaml(&gh, &[(&repo, forks)], extra)).unwrap();
    let adapter = Adapter::start(config, kube.clone()).await;
    Env {
        api: Api::all(kube.clone()),
        leftovers: Leftovers::of(&kube, &[&repo]),
        kube,
        gh,
        adapter,
        repo,
    }
}

impl Env {
    /// Removes what the test created (waiting until it is gone), then stops
    /// the adapter.
    async fn finish(self) {
        self.leftovers.clean().await;
        self.adapter.stop().await;
    }
}

fn name_of(repo: &str, number: u64) -> String {
    github::naming::installation_name(repo, number)
}

/// Waits until the installation exists and passes `check`. The controller's
/// timeout: a new installation of a PR may wait for its predecessor's
/// teardown.
async fn wait_installation(
    api: &Api<TestInstallation>,
    name: &str,
    what: &str,
    check: impl Fn(&TestInstallation) -> bool,
) -> TestInstallation {
    wait_for(what, CONTROLLER_TIMEOUT, || async {
        match api.get_opt(name).await.map_err(|e| e.to_string())? {
            Some(ti) if check(&ti) => Ok(ti),
            other => Err(format!(
                "{:?}",
                other.map(|t| (
                    t.metadata.deletion_timestamp,
                    t.spec,
                    t.metadata.annotations,
                    t.status.and_then(|s| s.phase)
                ))
            )),
        }
    })
    .await
}

async fn wait_gone(api: &Api<TestInstallation>, name: &str) {
    wait_for(
        &format!("{name} to be deleted"),
        CONTROLLER_TIMEOUT,
        || async {
            match api.get_opt(name).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(ti) => Err(format!(
                    "still there: deletionTimestamp={:?} finalizers={:?} phase={:?}",
                    ti.metadata.deletion_timestamp,
                    ti.metadata.finalizers,
                    ti.phase()
                )),
            }
        },
    )
    .await;
    let ns = format!("ti-{name}");
    let namespaces: Api<Namespace> = Api::all(api.clone().into_client());
    assert!(
        namespaces.get_opt(&ns).await.unwrap().is_none(),
        "the controller let {name} go before its namespace {ns}"
    );
}

fn version(ti: &TestInstallation) -> Option<&str> {
    ti.spec.version.as_deref()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn label_push_and_close_drive_one_installation_one_comment_and_deployments() {
    // Logs from here on, for the secrets scan at the end.
    support::leaks::captured_logs();
    let env = setup("life", false).await;
    let (gh, api, repo) = (&env.gh, &env.api, env.repo.as_str());
    let name = name_of(repo, 7);
    let first = sha('a');
    let pr = pull(repo, 7, &first, &[LABEL], false);
    gh.set_pull(repo, pr.clone());

    let (status, _) = env
        .adapter
        .deliver(
            "pull_request",
            &pull_event("labeled", &pr, Some(LABEL), "dev"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let ti = wait_installation(api, &name, "the installation", |_| true).await;
    assert_eq!(version(&ti), Some("aaaaaaa"));
    assert_eq!(
        ti.spec.image.as_deref(),
        Some(&*format!("registry.test/{}", &repo[5..]))
    );
    assert_eq!(ti.spec.profile.as_deref(), Some(PROFILE));
    assert_eq!(ti.spec.ttl.as_deref(), Some("2d"));
    assert_eq!(ti.labels()[labels::SOURCE], "github");
    assert_eq!(ti.labels()[labels::REQUESTER], "github.dev");
    assert_eq!(
        ti.annotations()[labels::PR_URL],
        format!("https://github.com/{repo}/pull/7")
    );
    assert_eq!(ti.annotations()[labels::HEAD_SHA], first);
    assert!(
        ti.finalizers()
            .contains(&"ephemera.dev/github-report".to_string())
    );
    let managers: Vec<_> = ti
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&"ephemera-github".to_string()),
        "{managers:?}"
    );

    // The first report is the creation, before the controller said anything.
    let first_body = wait_for("a sticky comment and a deployment", TIMEOUT, || async {
        let stickies = gh.stickies(repo, 7);
        let deployments = gh.deployments(repo);
        match (stickies.as_slice(), deployments.as_slice()) {
            ([c], [d]) if d.states().first().map(String::as_str) == Some("in_progress") => {
                Ok(c.history[0].clone())
            }
            _ => Err(format!("{stickies:?} {deployments:?}")),
        }
    })
    .await;
    assert!(first_body.contains("**Pending**"), "{first_body}");
    let deployment = &gh.deployments(repo)[0];
    assert_eq!(
        deployment.request["environment"],
        format!("ephemera/{name}")
    );
    assert_eq!(deployment.request["transient_environment"], true);
    assert_eq!(deployment.request["auto_merge"], false);
    assert_eq!(deployment.request["required_contexts"], json!([]));
    assert_eq!(deployment.git_ref(), first);

    // The controller brings it to Ready; the PR gets its URL.
    let ready = wait_phase(api, &name, Phase::Ready).await;
    let status = ready.status.clone().unwrap();
    let url = status.url.clone().expect("a Ready installation has a URL");
    assert_eq!(url, format!("https://{name}.ephemera.localhost"));
    let secret = status
        .credentials_secret
        .clone()
        .expect("a Ready installation names its credentials Secret");
    wait_for("Ready reported with the URL", TIMEOUT, || async {
        let stickies = gh.stickies(repo, 7);
        let deployments = gh.deployments(repo);
        let ok = stickies.len() == 1
            && stickies[0].body.contains(&url)
            && stickies[0].body.contains("**Ready**")
            && deployments.len() == 1
            && deployments[0]
                .statuses
                .last()
                .is_some_and(|s| s["state"] == "success" && s["environment_url"] == url.as_str());
        ok.then_some(())
            .ok_or(format!("{stickies:#?} {deployments:#?}"))
    })
    .await;
    let sticky = &gh.stickies(repo, 7)[0];
    let body = &sticky.body;
    assert!(!body.contains(TOKEN) && !body.contains(SECRET));
    let generated = support::leaks::generated_values(&env.kube, &secret.namespace).await;
    assert!(
        body.contains(&format!("{}/{}", secret.namespace, secret.name)),
        "{body}"
    );
    assert!(body.contains("| Version | `aaaaaaa` |"), "{body}");
    assert!(body.contains("| Expires |"), "{body}");
    // The controller writes status often; each change is told once.
    assert_eq!(gh.deployments(repo)[0].states(), ["in_progress", "success"]);
    assert!(
        sticky.repeated_edits().is_empty(),
        "edits that changed nothing: {:#?}",
        sticky.history
    );
    let statuses = gh.with(|s| s.commit_statuses.clone());
    let states_of = |sha: &str| -> Vec<String> {
        statuses
            .iter()
            .filter(|(_, s, _)| s == sha)
            .map(|(_, _, st)| st["state"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(states_of(&first), ["pending", "success"], "{statuses:?}");
    assert!(
        statuses.iter().any(|(_, sha, s)| *sha == first
            && s["state"] == "success"
            && s["target_url"] == url.as_str()),
        "{statuses:?}"
    );

    // A push rolls the installation; the controller makes the new version
    // Ready; the same comment is edited, a new deployment succeeds.
    let second = sha('b');
    gh.update_pull(repo, 7, |p| p["head"]["sha"] = json!(second));
    let pr = gh.pull(repo, 7);
    env.adapter
        .deliver("pull_request", &pull_event("synchronize", &pr, None, "dev"))
        .await;
    wait_installation(api, &name, "version to follow the push", |ti| {
        version(ti) == Some("bbbbbbb") && ti.annotations()[labels::HEAD_SHA] == second
    })
    .await;
    let rolled = wait_phase(api, &name, Phase::Ready).await;
    assert_eq!(
        rolled.status.as_ref().and_then(|s| s.version.as_deref()),
        Some("bbbbbbb")
    );
    wait_for(
        "the new commit reported in the same comment",
        TIMEOUT,
        || async {
            let stickies = gh.stickies(repo, 7);
            let deployments = gh.deployments(repo);
            let ok = stickies.len() == 1
                && stickies[0].body.contains(&second)
                && stickies[0].body.contains("**Ready**")
                && deployments.iter().any(|d| {
                    d.git_ref() == second
                        && d.statuses.last().is_some_and(|s| {
                            s["state"] == "success" && s["environment_url"] == url.as_str()
                        })
                });
            ok.then_some(())
                .ok_or(format!("{stickies:#?} {deployments:#?}"))
        },
    )
    .await;
    let deployments = gh.deployments(repo);
    assert_eq!(deployments.len(), 2, "{deployments:#?}");
    // The superseded commit's environment is no longer shown as live.
    assert_eq!(
        deployments[0].states(),
        ["in_progress", "success", "inactive"]
    );
    assert_eq!(deployments[1].states(), ["in_progress", "success"]);
    assert_eq!(
        gh.comments(repo, 7).len(),
        1,
        "no comment besides the sticky one"
    );

    let events_before = support::leaks::events_text(&env.kube).await;

    // Closing deletes it: the controller removes the namespace, the adapter
    // reports the teardown and lets it go; the deployment becomes inactive.
    gh.update_pull(repo, 7, |p| p["state"] = json!("closed"));
    let pr = gh.pull(repo, 7);
    env.adapter
        .deliver("pull_request", &pull_event("closed", &pr, None, "dev"))
        .await;
    wait_gone(api, &name).await;
    let deployments = gh.deployments(repo);
    let current = deployments.iter().find(|d| d.git_ref() == second).unwrap();
    assert_eq!(
        current.states(),
        ["in_progress", "success", "inactive"],
        "the teardown is reported before the installation is let go"
    );
    let stickies = gh.stickies(repo, 7);
    assert_eq!(stickies.len(), 1);
    assert!(stickies[0].body.contains("Removed"), "{}", stickies[0].body);
    assert!(!stickies[0].body.contains(&url), "{}", stickies[0].body);

    // Reopening a PR that still carries the label creates it again; the
    // same comment tells its way to Ready.
    gh.update_pull(repo, 7, |p| p["state"] = json!("open"));
    let pr = gh.pull(repo, 7);
    env.adapter
        .deliver("pull_request", &pull_event("reopened", &pr, None, "dev"))
        .await;
    wait_installation(api, &name, "the installation again after reopening", |ti| {
        version(ti) == Some("bbbbbbb") && ti.metadata.deletion_timestamp.is_none()
    })
    .await;
    wait_phase(api, &name, Phase::Ready).await;
    wait_for("the same comment reused up to Ready", TIMEOUT, || async {
        let s = gh.stickies(repo, 7);
        (s.len() == 1 && s[0].body.contains("**Ready**") && s[0].body.contains(&url))
            .then_some(())
            .ok_or(format!("{s:#?}"))
    })
    .await;
    assert_eq!(gh.comments(repo, 7).len(), 1);

    let metrics = env.adapter.metrics().await;
    assert!(
        metrics.contains(
            r#"ephemera_github_webhooks_received_total{event="pull_request",outcome="accepted"} 4"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("ephemera_github_queue_depth 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ephemera_github_api_calls_total{method="POST",outcome="success"}"#),
        "{metrics}"
    );
    let sticky = &gh.stickies(repo, 7)[0];
    assert!(
        sticky.repeated_edits().is_empty(),
        "edits that changed nothing: {:#?}",
        sticky.history
    );

    // The secrets scan: no generated credential in any version of any
    // comment, deployment or its statuses, commit status, the installation,
    // an Event, a log line or a metric (the PR only points to the Secret).
    let installation = serde_json::to_string(&api.get(&name).await.unwrap()).unwrap();
    let mut texts: Vec<(String, String)> = gh
        .comments(repo, 7)
        .into_iter()
        .flat_map(|c| {
            let id = c.id;
            c.history
                .into_iter()
                .chain([c.body])
                .map(move |body| (format!("comment {id}"), body))
        })
        .collect();
    texts.extend(
        gh.deployments(repo)
            .into_iter()
            .map(|d| (format!("deployment {}", d.id), format!("{d:?}"))),
    );
    texts.extend([
        (
            "commit statuses".to_string(),
            format!("{:?}", gh.with(|s| s.commit_statuses.clone())),
        ),
        (
            "installation (spec, status, annotations)".into(),
            installation,
        ),
        ("Events before the close".into(), events_before),
        (
            "Events after".into(),
            support::leaks::events_text(&env.kube).await,
        ),
        ("logs".into(), support::leaks::captured_logs()),
        ("metrics".into(), metrics),
    ]);
    assert!(
        texts
            .iter()
            .any(|(w, t)| w == "logs" && t.contains("ephemera")),
        "logs are captured"
    );
    let leaked = support::leaks::leaks(&generated, &texts);
    println!(
        "FIGURES secrets scan, GitHub flow: {} generated values in {} texts, {} leaks",
        generated.len(),
        texts.len(),
        leaked.len()
    );
    assert!(leaked.is_empty(), "credentials leaked: {leaked:?}");
    env.finish().await;
}

#[tokio::test]
async fn unlabel_deletes_and_label_flapping_converges_to_the_final_state() {
    let env = setup("flap", false).await;
    let (gh, api, repo) = (&env.gh, &env.api, env.repo.as_str());
    let name = name_of(repo, 3);
    let pr = pull(repo, 3, &sha('c'), &[LABEL], false);
    gh.set_pull(repo, pr.clone());
    env.adapter
        .deliver(
            "pull_request",
            &pull_event("labeled", &pr, Some(LABEL), "dev"),
        )
        .await;
    wait_installation(api, &name, "the installation", |_| true).await;

    // unlabeled → deleted, deployment inactive.
    gh.update_pull(repo, 3, |p| p["labels"] = json!([]));
    let unlabeled = gh.pull(repo, 3);
    env.adapter
        .deliver(
            "pull_request",
            &pull_event("unlabeled", &unlabeled, Some(LABEL), "dev"),
        )
        .await;
    wait_gone(api, &name).await;
    wait_for("the deployment inactive", TIMEOUT, || async {
        let d = gh.deployments(repo);
        d.iter()
            .any(|d| d.states().last().map(String::as_str) == Some("inactive"))
            .then_some(())
            .ok_or(format!("{d:#?}"))
    })
    .await;

    // labeled, unlabeled, labeled in quick succession: it ends present.
    let labeled = pull(repo, 3, &sha('c'), &[LABEL], false);
    let pulls_before = gh.calls(Method::GET, "/pulls/3").len();
    for (action, pr) in [
        ("labeled", &labeled),
        ("unlabeled", &unlabeled),
        ("labeled", &labeled),
    ] {
        gh.set_pull(repo, pr.clone());
        let (status, _) = env
            .adapter
            .deliver("pull_request", &pull_event(action, pr, Some(LABEL), "dev"))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    wait_for("all three flaps processed", TIMEOUT, || async {
        let n = gh.calls(Method::GET, "/pulls/3").len() - pulls_before;
        (n >= 3).then_some(()).ok_or(n)
    })
    .await;
    wait_installation(
        api,
        &name,
        "the installation to exist, not terminating",
        |ti| ti.metadata.deletion_timestamp.is_none(),
    )
    .await;

    // labeled, unlabeled in quick succession: it ends absent.
    for (action, pr) in [("labeled", &labeled), ("unlabeled", &unlabeled)] {
        gh.set_pull(repo, pr.clone());
        env.adapter
            .deliver("pull_request", &pull_event(action, pr, Some(LABEL), "dev"))
            .await;
    }
    wait_gone(api, &name).await;
    let stickies = gh.stickies(repo, 3);
    assert_eq!(
        stickies.len(),
        1,
        "one sticky comment per PR: {stickies:#?}"
    );
    env.finish().await;
}

#[tokio::test]
async fn unsigned_forged_oversized_and_malformed_deliveries_change_nothing() {
    let env = setup("auth", false).await;
    let (gh, api, repo) = (&env.gh, &env.api, env.repo.as_str());
    let pr = pull(repo, 9, &sha('d'), &[LABEL], false);
    gh.set_pull(repo, pr.clone());
    let body = serde_json::to_vec(&pull_event("labeled", &pr, Some(LABEL), "dev")).unwrap();
    let base = |sig: Option<String>| {
        let mut h = vec![
            ("x-github-event", "pull_request".to_string()),
            ("x-github-delivery", unique_name("d")),
            ("content-type", "application/json".to_string()),
        ];
        if let Some(sig) = sig {
            h.push(("x-hub-signature-256", sig));
        }
        h
    };

    let (status, text) = env.adapter.post(&base(None), body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert!(text.contains("missing"), "{text}");
    let forged = signature::sign("not the secret", &body);
    let (status, _) = env.adapter.post(&base(Some(forged)), body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A valid signature of another body.
    let (status, _) = env
        .adapter
        .post(&base(Some(signature::sign(SECRET, b"{}"))), body.clone())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let mut huge = pull_event("labeled", &pr, Some(LABEL), "dev");
    huge["pull_request"]["body"] = json!("x".repeat(100_000));
    let huge = serde_json::to_vec(&huge).unwrap();
    let sig = signature::sign(SECRET, &huge);
    let (status, _) = env.adapter.post(&base(Some(sig)), huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let garbage = b"{\"action\": \"labeled\"}".to_vec();
    let sig = signature::sign(SECRET, &garbage);
    let (status, text) = env.adapter.post(&base(Some(sig)), garbage).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("pull_request payload"), "{text}");

    let mut no_delivery = base(Some(signature::sign(SECRET, &body)));
    no_delivery.retain(|(k, _)| *k != "x-github-delivery");
    let (status, _) = env.adapter.post(&no_delivery, body.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let mut form = base(Some(signature::sign(SECRET, &body)));
    form.retain(|(k, _)| *k != "content-type");
    form.push(("content-type", "application/x-www-form-urlencoded".into()));
    let (status, _) = env.adapter.post(&form, body.clone()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Prove the adapter is alive and would act on a good delivery, so the
    // absence above is meaningful.
    let (status, _) = env
        .adapter
        .post(&base(Some(signature::sign(SECRET, &body))), body)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let name = name_of(repo, 9);
    wait_installation(
        api,
        &name,
        "the installation from the good delivery",
        |_| true,
    )
    .await;
    assert_eq!(
        gh.calls(Method::GET, "/pulls/9").len(),
        1,
        "only the good delivery reached the worker"
    );
    let metrics = env.adapter.metrics().await;
    for outcome in ["unauthorized", "too_large", "invalid"] {
        assert!(
            metrics.contains(&format!(
                r#"ephemera_github_webhooks_received_total{{event="pull_request",outcome="{outcome}"}}"#
            )),
            "{outcome}: {metrics}"
        );
    }
    env.finish().await;
}

#[tokio::test]
async fn redelivery_and_replayed_comments_are_handled_once() {
    let env = setup("dup", false).await;
    let (gh, api, repo) = (&env.gh, &env.api, env.repo.as_str());
    gh.set_permission("maintainer", "write");
    let pr = pull(repo, 11, &sha('e'), &[LABEL], false);
    gh.set_pull(repo, pr.clone());
    let event = pull_event("labeled", &pr, Some(LABEL), "dev");
    let (first, _) = env
        .adapter
        .deliver_as("pull_request", &event, "guid-1")
        .await;
    let (second, text) = env
        .adapter
        .deliver_as("pull_request", &event, "guid-1")
        .await;
    assert_eq!(first, StatusCode::ACCEPTED);
    assert_eq!(second, StatusCode::OK);
    assert!(text.contains("duplicate"), "{text}");

    // The same comment, replayed under a new delivery id.
    let status_cmd = comment_event(repo, 11, 777, "/testenv status", "maintainer");
    let (a, _) = env.adapter.deliver("issue_comment", &status_cmd).await;
    let (b, text) = env.adapter.deliver("issue_comment", &status_cmd).await;
    assert_eq!(a, StatusCode::ACCEPTED);
    assert_eq!(b, StatusCode::OK, "{text}");

    let name = name_of(repo, 11);
    wait_installation(api, &name, "the installation", |_| true).await;
    wait_for("the status reply", TIMEOUT, || async {
        let replies: Vec<_> = gh
            .comments(repo, 11)
            .into_iter()
            .filter(|c| c.body.starts_with("@maintainer"))
            .collect();
        (!replies.is_empty()).then_some(()).ok_or(replies.len())
    })
    .await;
    assert_eq!(gh.calls(Method::GET, "/pulls/11").len(), 1);
    let replies = gh
        .comments(repo, 11)
        .into_iter()
        .filter(|c| c.body.starts_with("@maintainer"))
        .count();
    assert_eq!(replies, 1);
    let metrics = env.adapter.metrics().await;
    for event in ["pull_request", "issue_comment"] {
        assert!(
            metrics.contains(&format!(
                r#"ephemera_github_webhooks_received_total{{event="{event}",outcome="duplicate"}} 1"#
            )),
            "{metrics}"
        );
    }
    env.finish().await;
}

#[tokio::test]
async fn comment_commands_check_permission_and_keep_the_label_as_the_state() {
    let env = setup("cmd", false).await;
    let (gh, api, repo) = (&env.gh, &env.api, env.repo.as_str());
    gh.set_permission("visitor", "read");
    gh.set_permission("maintainer", "maintain");
    let name = name_of(repo, 21);
    gh.set_pull(repo, pull(repo, 21, &sha('f'), &[], false));
    let replies_to = |user: &str| {
        gh.comments(repo, 21)
            .into_iter()
            .filter(|c| c.body.starts_with(&format!("@{user}")))
            .collect::<Vec<_>>()
    };

    // A reader is refused, with a reply, after an API permission check.
    env.adapter
        .deliver(
            "issue_comment",
            &comment_event(repo, 21, 1, "/testenv deploy", "visitor"),
        )
        .await;
    wait_for("the refusal", TIMEOUT, || async {
        let r = replies_to("visitor");
        (r.len() == 1 && r[0].body.contains("write permission"))
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await;
    assert_eq!(
        gh.calls(Method::GET, "/collaborators/visitor/permission")
            .len(),
        1
    );
    assert!(api.get_opt(&name).await.unwrap().is_none());
    assert!(gh.labels(repo, 21).is_empty());

    // Commands in code blocks or quotes, and the bot's own, are ignored.
    for (id, body, user) in [
        (2, "```\n/testenv deploy\n```", "maintainer"),
        (3, "> /testenv deploy\nwhat does this do?", "maintainer"),
        (4, "/testenv deploy", BOT),
    ] {
        let (status, text) = env
            .adapter
            .deliver("issue_comment", &comment_event(repo, 21, id, body, user))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert!(text.starts_with("ignored"), "{body}: {text}");
    }

    // A maintainer deploys: installation with the options, label added.
    env.adapter
        .deliver(
            "issue_comment",
            &comment_event(
                repo,
                21,
                5,
                "/testenv deploy --size miniHA --test-data",
                "maintainer",
            ),
        )
        .await;
    let ti = wait_installation(api, &name, "the deployed installation", |_| true).await;
    assert_eq!(ti.spec.size.as_deref(), Some("miniHA"));
    assert!(ti.spec.test_data);
    assert_eq!(ti.labels()[labels::REQUESTER], "github.maintainer");
    wait_for("the label to be added", TIMEOUT, || async {
        let l = gh.labels(repo, 21);
        (l == [LABEL]).then_some(()).ok_or(l)
    })
    .await;
    // GitHub then sends the bot's labeled event; it changes nothing.
    let labeled = gh.pull(repo, 21);
    env.adapter
        .deliver(
            "pull_request",
            &pull_event("labeled", &labeled, Some(LABEL), BOT),
        )
        .await;

    env.adapter
        .deliver(
            "issue_comment",
            &comment_event(repo, 21, 6, "/testenv extend 1d", "maintainer"),
        )
        .await;
    wait_installation(api, &name, "ttl extended", |ti| {
        ti.spec.ttl.as_deref() == Some("3d")
    })
    .await;
    // However much is asked, never beyond the profile's maximum (7d).
    env.adapter
        .deliver(
            "issue_comment",
            &comment_event(repo, 21, 60, "/testenv extend 3650d", "maintainer"),
        )
        .await;
    wait_installation(api, &name, "ttl capped at the profile's max", |ti| {
        ti.spec.ttl.as_deref() == Some("7d")
    })
    .await;
    wait_for("the capped extension answered", TIMEOUT, || async {
        let r = replies_to("maintainer");
        r.iter()
            .any(|c| c.body.contains("the most profile"))
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await;
    let ti = api.get(&name).await.unwrap();
    assert_eq!(
        ti.spec.size.as_deref(),
        Some("miniHA"),
        "the label event kept the size"
    );

    env.adapter
        .deliver(
            "issue_comment",
            &comment_event(repo, 21, 7, "/testenv deploy --size huge", "maintainer"),
        )
        .await;
    wait_for("the bad size answered", TIMEOUT, || async {
        let r = replies_to("maintainer");
        r.iter()
            .any(|c| c.body.contains("`huge` is not offered"))
            .then_some(())
            .ok_or(format!("{r:?}"))
    })
    .await;

    env.adapter
        .deliver(
            "issue_comment",
            &comment_event(repo, 21, 8, "/testenv destroy", "maintainer"),
        )
        .await;
    wait_gone(api, &name).await;
    wait_for("the label to be removed", TIMEOUT, || async {
        let l = gh.labels(repo, 21);
        l.is_empty().then_some(()).ok_or(l)
    })
    .await;
    env.finish().await;
}

#[tokio::test]
async fn forks_are_refused_by_default_and_pushes_wait_for_approval_when_allowed() {
    let kube = plane().await;
    let gh = FakeGitHub::start(BOT, AuthMode::Token(TOKEN.into())).await;
    let closed = repo("nofork");
    let open = repo("fork");
    let leftovers = Leftovers::of(&kube, &[&closed, &open]);
    let config =
        Config::from_yaml(&config_yaml(&gh, &[(&closed, false), (&open, true)], "")).unwrap();
    let adapter = Adapter::start(config, kube.clone()).await;
    let api: Api<TestInstallation> = Api::all(kube.clone());
    gh.set_permission("maintainer", "write");
    gh.set_permission("contributor", "read");

    // Forks off: the label deploys nothing, and says so.
    let pr = pull(&closed, 1, &sha('1'), &[LABEL], true);
    gh.set_pull(&closed, pr.clone());
    adapter
        .deliver(
            "pull_request",
            &pull_event("labeled", &pr, Some(LABEL), "maintainer"),
        )
        .await;
    wait_for("the fork refusal", TIMEOUT, || async {
        let c = gh.comments(&closed, 1);
        c.iter()
            .any(|c| c.body.contains("forks are not deployed"))
            .then_some(())
            .ok_or(format!("{c:?}"))
    })
    .await;
    assert!(api.get_opt(&name_of(&closed, 1)).await.unwrap().is_none());

    // Forks on: a label by a reader approves nothing.
    let name = name_of(&open, 2);
    let approved = sha('2');
    let pr = pull(&open, 2, &approved, &[LABEL], true);
    gh.set_pull(&open, pr.clone());
    adapter
        .deliver(
            "pull_request",
            &pull_event("labeled", &pr, Some(LABEL), "contributor"),
        )
        .await;
    wait_for("the approval request", TIMEOUT, || async {
        let c = gh.comments(&open, 2);
        c.iter()
            .any(|c| c.body.contains("only after someone with write permission"))
            .then_some(())
            .ok_or(format!("{c:?}"))
    })
    .await;
    assert!(api.get_opt(&name).await.unwrap().is_none());

    // A maintainer's label approves the commit it was applied on.
    adapter
        .deliver(
            "pull_request",
            &pull_event("labeled", &pr, Some(LABEL), "maintainer"),
        )
        .await;
    wait_installation(&api, &name, "the approved fork commit deployed", |ti| {
        version(ti) == Some("2222222")
    })
    .await;

    // A later push from the fork is not deployed.
    let pushed = sha('3');
    gh.update_pull(&open, 2, |p| p["head"]["sha"] = json!(pushed));
    let pr = gh.pull(&open, 2);
    adapter
        .deliver(
            "pull_request",
            &pull_event("synchronize", &pr, None, "contributor"),
        )
        .await;
    let ti = wait_installation(&api, &name, "the new head noted", |ti| {
        ti.annotations().get("ephemera.dev/github-latest-head") == Some(&pushed)
    })
    .await;
    assert_eq!(version(&ti), Some("2222222"), "unapproved push deployed");
    assert_eq!(ti.annotations()[labels::HEAD_SHA], approved);
    wait_for(
        "the sticky comment to say the push waits",
        TIMEOUT,
        || async {
            let s = gh.stickies(&open, 2);
            s.iter()
                .any(|c| c.body.contains("not deployed") && c.body.contains(&pushed))
                .then_some(())
                .ok_or(format!("{s:?}"))
        },
    )
    .await;

    // Re-approval by a maintainer's command deploys it.
    adapter
        .deliver(
            "issue_comment",
            &comment_event(&open, 2, 50, "/testenv deploy", "maintainer"),
        )
        .await;
    wait_installation(&api, &name, "the re-approved push deployed", |ti| {
        version(ti) == Some("3333333")
    })
    .await;
    leftovers.clean().await;
    adapter.stop().await;
}

#[tokio::test]
async fn rate_limits_are_waited_out_not_dropped() {
    let env = setup("rate", false).await;
    let (gh, repo) = (&env.gh, env.repo.as_str());
    gh.throttle(Method::POST, "/issues/5/comments", 1);
    let pr = pull(repo, 5, &sha('5'), &[LABEL], false);
    gh.set_pull(repo, pr.clone());
    env.adapter
        .deliver(
            "pull_request",
            &pull_event("labeled", &pr, Some(LABEL), "dev"),
        )
        .await;
    wait_for("the sticky comment despite the 429", TIMEOUT, || async {
        let s = gh.stickies(repo, 5);
        (s.len() == 1).then_some(()).ok_or(s.len())
    })
    .await;
    let posts = gh.calls(Method::POST, "/issues/5/comments");
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(posts[0].status, 429);
    assert_eq!(posts[1].status, 201);
    let waited = posts[1].at - posts[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 not honoured: {waited:?}"
    );
    assert!(
        env.adapter
            .metrics()
            .await
            .contains(r#"ephemera_github_api_calls_total{method="POST",outcome="rate_limited"} 1"#)
    );
    env.finish().await;
}

#[tokio::test]
async fn restarts_neither_repeat_nor_drop_reports() {
    let Env {
        kube,
        gh,
        adapter,
        repo,
        api,
        leftovers,
    } = setup("restart", false).await;
    let gh = &gh;
    let name = name_of(&repo, 4);
    let first = sha('4');
    let pr = pull(&repo, 4, &first, &[LABEL], false);
    gh.set_pull(&repo, pr.clone());
    adapter
        .deliver(
            "pull_request",
            &pull_event("labeled", &pr, Some(LABEL), "dev"),
        )
        .await;
    wait_phase(&api, &name, Phase::Ready).await;
    wait_for("Ready reported", TIMEOUT, || async {
        let d = gh.deployments(&repo);
        (d.len() == 1 && d[0].states().last().map(String::as_str) == Some("success"))
            .then_some(())
            .ok_or(format!("{d:?}"))
    })
    .await;
    // What was told is on the installation, not only in the process.
    wait_installation(&api, &name, "the memory annotation", |ti| {
        told(ti).deployment_state.as_deref() == Some("success")
    })
    .await;
    let config = |image: &str| {
        let yaml = config_yaml(gh, &[(&repo, false)], "").replace(
            "image: 'registry.test/{repo}:{sha7}'",
            &format!("image: '{image}'"),
        );
        Config::from_yaml(&yaml).unwrap()
    };
    let pulls = gh.calls(Method::GET, "/pulls/4").len();
    adapter.stop().await;

    // A restart with nothing new says nothing new (checked below: the
    // restarted adapter reads every installation before the push's events).
    // The restarted adapter deploys images that do not exist.
    let adapter = Adapter::start(config(MISSING_IMAGE), kube.clone()).await;
    let second = sha('6');
    gh.update_pull(&repo, 4, |p| p["head"]["sha"] = json!(second));
    let pr = gh.pull(&repo, 4);
    adapter
        .deliver("pull_request", &pull_event("synchronize", &pr, None, "dev"))
        .await;
    let image = format!("missing.invalid/{}", &repo["acme/".len()..]);
    wait_installation(&api, &name, "the roll to the missing image", |ti| {
        ti.spec.image.as_deref() == Some(image.as_str()) && version(ti) == Some("6666666")
    })
    .await;
    let failed = wait_phase(&api, &name, Phase::Failed).await;
    let image_ref = format!("{image}:6666666");
    let app = failed
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "AppReady"))
        .cloned()
        .expect("an AppReady condition");
    assert_eq!(app.reason, "ImagePullBackOff", "{app:?}");
    assert!(app.message.contains(&image_ref), "{app:?}");
    wait_for("the failure reported", TIMEOUT, || async {
        let d = gh.deployments(&repo);
        let s = gh.stickies(&repo, 4);
        let ok = d.len() == 2
            && d[1].git_ref() == second
            && d[1].states().last().map(String::as_str) == Some("failure")
            && s.len() == 1
            && s[0].body.contains("**Failed**");
        ok.then_some(()).ok_or(format!("{d:#?} {s:#?}"))
    })
    .await;
    let d = gh.deployments(&repo);
    assert_eq!(
        d[0].states(),
        ["in_progress", "success", "inactive"],
        "the restart repeated nothing; the superseded commit went inactive"
    );
    assert_eq!(d[1].states(), ["in_progress", "failure"]);
    let description = d[1].statuses[1]["description"].as_str().unwrap_or_default();
    assert!(
        description.starts_with("Failed: ImagePullBackOff"),
        "{description}"
    );
    let sticky = &gh.stickies(&repo, 4)[0];
    assert!(sticky.body.contains("ImagePullBackOff"), "{}", sticky.body);
    assert!(sticky.body.contains(&image_ref), "{}", sticky.body);
    assert!(
        sticky.repeated_edits().is_empty(),
        "edits that changed nothing: {:#?}",
        sticky.history
    );
    assert_eq!(
        gh.calls(Method::GET, "/pulls/4").len(),
        pulls + 1,
        "only the push read the pull request"
    );
    let statuses = gh.with(|s| s.commit_statuses.clone());
    for (commit, states) in [
        (&first, ["pending", "success"]),
        (&second, ["pending", "failure"]),
    ] {
        let seen: Vec<&str> = statuses
            .iter()
            .filter(|(_, sha, _)| sha == commit)
            .map(|(_, _, s)| s["state"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(seen, states, "commit statuses of {commit}");
    }
    wait_installation(&api, &name, "the failure remembered", |ti| {
        told(ti).deployment_state.as_deref() == Some("failure")
    })
    .await;
    adapter.stop().await;

    // Deleted while the adapter is down: the controller tears it down
    // (namespace first) and lets go; the adapter's finalizer keeps it until
    // the teardown is reported.
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_installation(
        &api,
        &name,
        "the controller's teardown done, only the adapter's finalizer left",
        |ti| {
            ti.metadata.deletion_timestamp.is_some()
                && ti.finalizers() == [annotations::FINALIZER.to_string()]
        },
    )
    .await;
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    assert!(
        namespaces
            .get_opt(&format!("ti-{name}"))
            .await
            .unwrap()
            .is_none()
    );
    let adapter = Adapter::start(config(MISSING_IMAGE), kube.clone()).await;
    wait_gone(&api, &name).await;
    let d = gh.deployments(&repo);
    assert_eq!(d[0].states(), ["in_progress", "success", "inactive"]);
    assert_eq!(d[1].states(), ["in_progress", "failure", "inactive"]);
    let stickies = gh.stickies(&repo, 4);
    assert_eq!(stickies.len(), 1);
    assert!(stickies[0].body.contains("Removed"), "{}", stickies[0].body);
    assert!(
        stickies[0].repeated_edits().is_empty(),
        "edits that changed nothing: {:#?}",
        stickies[0].history
    );
    assert_eq!(gh.comments(&repo, 4).len(), 1);
    leftovers.clean().await;
    adapter.stop().await;
}

#[tokio::test]
async fn app_authentication_uses_cached_installation_tokens() {
    let kube = plane().await;
    let dir = std::env::temp_dir().join(unique_name("ephemera-app-key"));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("app.pem");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    openssl(&[
        "genrsa",
        "-traditional",
        "-out",
        key.to_str().unwrap(),
        "2048",
    ]);
    let public =
        String::from_utf8(openssl(&["rsa", "-in", key.to_str().unwrap(), "-pubout"])).unwrap();
    let gh = FakeGitHub::start(
        BOT,
        AuthMode::App {
            public_key_pem: public,
            app_id: "Iv1.testclientid".into(),
        },
    )
    .await;
    let repo = repo("app");
    let leftovers = Leftovers::of(&kube, &[&repo]);
    let yaml = config_yaml(&gh, &[(&repo, false)], "")
        .lines()
        .map(|l| {
            if l.starts_with("auth:") {
                format!(
                    "auth: {{app: {{appId: Iv1.testclientid, privateKey: {{file: {}}}}}}}",
                    key.display()
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let adapter = Adapter::start(Config::from_yaml(&yaml).unwrap(), kube.clone()).await;
    let api: Api<TestInstallation> = Api::all(kube.clone());
    let pr = pull(&repo, 8, &sha('8'), &[LABEL], false);
    gh.set_pull(&repo, pr.clone());
    adapter
        .deliver(
            "pull_request",
            &pull_event("labeled", &pr, Some(LABEL), "dev"),
        )
        .await;
    let name = name_of(&repo, 8);
    wait_installation(&api, &name, "the installation", |_| true).await;
    wait_for("the report with an installation token", TIMEOUT, || async {
        let d = gh.deployments(&repo);
        (gh.stickies(&repo, 8).len() == 1 && d.len() == 1 && !d[0].statuses.is_empty())
            .then_some(())
            .ok_or(format!("{d:?}"))
    })
    .await;
    let unauthorized = gh.with(|s| s.calls.iter().filter(|c| c.status == 401).count());
    assert_eq!(unauthorized, 0);
    assert_eq!(
        gh.with(|s| s.token_requests),
        1,
        "the installation token is cached"
    );
    assert!(gh.calls_under(&format!("/repos/{repo}")).len() >= 5);
    leftovers.clean().await;
    adapter.stop().await;
}

#[tokio::test]
async fn config_refuses_to_start_with_an_empty_secret() {
    let gh_url = "http://127.0.0.1:9";
    let empty = secret_file("empty", "\n");
    let token = secret_file("token", TOKEN);
    let yaml = format!(
        "apiBaseUrl: {gh_url}\nbotLogin: b\nwebhookSecrets: [{{file: {}}}]\n\
         auth: {{token: {{file: {}}}}}\nrepositories: [{{name: acme/x}}]\n",
        empty.display(),
        token.display()
    );
    let err = Config::from_yaml(&yaml).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
}

#[tokio::test]
async fn a_full_queue_answers_503_and_the_redelivery_is_processed() {
    let kube = plane().await;
    let gh = FakeGitHub::start(BOT, AuthMode::Token(TOKEN.into())).await;
    let repo = repo("queue");
    let leftovers = Leftovers::of(&kube, &[&repo]);
    let config =
        Config::from_yaml(&config_yaml(&gh, &[(&repo, false)], "queueCapacity: 1\n")).unwrap();
    let adapter = Adapter::start(config, kube.clone()).await;
    let api: Api<TestInstallation> = Api::all(kube.clone());
    // The worker is held up by rate limits on the first reconcile.
    gh.throttle(Method::GET, "/pulls/12", 3);
    let pr = pull(&repo, 12, &sha('c'), &[LABEL], false);
    gh.set_pull(&repo, pr.clone());
    let event = pull_event("labeled", &pr, Some(LABEL), "dev");
    let mut refused = None;
    let mut accepted = 0;
    for i in 0..6 {
        let delivery = format!("queue-{i}-{repo}");
        let (status, text) = adapter.deliver_as("pull_request", &event, &delivery).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(text.contains("queue is full"), "{text}");
            refused = Some(delivery);
            break;
        }
        assert_eq!(status, StatusCode::ACCEPTED, "{text}");
        accepted += 1;
    }
    let refused = refused.expect("a delivery was refused with 503 while the queue was full");
    assert!(
        adapter
            .metrics()
            .await
            .contains(r#"event="pull_request",outcome="queue_full"} 1"#)
    );
    // GitHub's redelivery keeps the GUID; it is not mistaken for a duplicate.
    let status = wait_for("the redelivery to be accepted", TIMEOUT, || async {
        let (status, text) = adapter.deliver_as("pull_request", &event, &refused).await;
        (status == StatusCode::ACCEPTED)
            .then_some(status)
            .ok_or(format!("{status} {text}"))
    })
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    accepted += 1;
    let name = name_of(&repo, 12);
    wait_installation(&api, &name, "the installation", |_| true).await;
    // Every accepted delivery is worked off, the redelivery included. Only
    // then is the installation deleted: a queued `labeled` delivery of a PR
    // that still carries the label rightly creates it again once it is gone.
    let processed =
        format!(r#"ephemera_github_intents_processed_total{{outcome="done"}} {accepted}"#);
    wait_for(
        "every accepted delivery to be processed",
        TIMEOUT,
        || async {
            let metrics = adapter.metrics().await;
            metrics.contains(&processed).then_some(()).ok_or_else(|| {
                metrics
                    .lines()
                    .filter(|line| line.starts_with("ephemera_github_intents_processed"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        },
    )
    .await;
    leftovers.clean().await;
    adapter.stop().await;
}

#[tokio::test]
async fn ha_and_upgrade_labels_pick_size_and_the_profiles_default_version() {
    let kube = plane().await;
    let profiles: Api<InstallationProfile> = Api::all(kube.clone());
    let profile = unique_name("prof");
    let body: InstallationProfile = serde_json::from_value(json!({
        "apiVersion": "ephemera.dev/v1alpha1",
        "kind": "InstallationProfile",
        "metadata": { "name": profile },
        "spec": { "image": "registry.test/app", "allowedImages": ["registry.test/**"], "defaultVersion": "9.10.0" }
    }))
    .unwrap();
    profiles
        .create(&Default::default(), &body)
        .await
        .expect("create profile");
    let gh = FakeGitHub::start(BOT, AuthMode::Token(TOKEN.into())).await;
    let repo = repo("labels");
    let mut leftovers = Leftovers::of(&kube, &[&repo]);
    leftovers.profiles.push(profile.clone());
    let yaml = config_yaml(&gh, &[(&repo, false)], "").replace(
        &format!("profile: {PROFILE}"),
        &format!("profile: {profile}"),
    );
    let adapter = Adapter::start(Config::from_yaml(&yaml).unwrap(), kube.clone()).await;
    let api: Api<TestInstallation> = Api::all(kube.clone());

    for (number, label) in [
        (31, "Setup HA Test Server"),
        (32, "Setup Upgrade Test Server"),
    ] {
        let pr = pull(&repo, number, &sha('9'), &[label], false);
        gh.set_pull(&repo, pr.clone());
        adapter
            .deliver(
                "pull_request",
                &pull_event("labeled", &pr, Some(label), "dev"),
            )
            .await;
    }
    let ha = wait_installation(&api, &name_of(&repo, 31), "the HA installation", |_| true).await;
    assert_eq!(ha.spec.size.as_deref(), Some("miniHA"));
    assert_eq!(ha.spec.upgrade_from, None);
    let up = wait_installation(
        &api,
        &name_of(&repo, 32),
        "the upgrade installation",
        |_| true,
    )
    .await;
    assert_eq!(up.spec.upgrade_from.as_deref(), Some("9.10.0"));
    assert_eq!(version(&up), Some("9999999"));
    assert_eq!(up.spec.profile.as_deref(), Some(profile.as_str()));
    leftovers.clean().await;
    assert!(profiles.get_opt(&profile).await.unwrap().is_none());
    adapter.stop().await;
}

// ------------------------------------------------ lost answers, failures

/// GitHub stores the sticky comment, the Deployment and a Deployment status
/// but the answers are lost (502): the adapter looks before it posts again,
/// so the PR still shows one comment, one Deployment and each state once.
#[tokio::test]
async fn a_lost_answer_never_makes_a_second_comment_or_deployment() {
    let env = setup("lost", false).await;
    let (gh, api, repo) = (&env.gh, &env.api, env.repo.as_str());
    // 150 comments of others first: the sticky comment lands on the second
    // page, which the adapter must reach through the `Link` header.
    gh.with(|s| {
        for i in 0..150 {
            s.comments.push(fake_github::Comment {
                id: 1 + i,
                repo: repo.to_string(),
                number: 9,
                body: format!("comment {i}"),
                user: "someone".into(),
                edits: 0,
                history: vec![],
            });
        }
    });
    gh.fault(Method::POST, "/issues/9/comments", Fault::CommitThenFail, 1);
    gh.fault(Method::POST, "/deployments", Fault::CommitThenFail, 1);
    gh.fault(Method::POST, "/statuses", Fault::CommitThenFail, 1);
    let pr = pull(repo, 9, &sha('9'), &[LABEL], false);
    gh.set_pull(repo, pr.clone());
    env.adapter
        .deliver(
            "pull_request",
            &pull_event("labeled", &pr, Some(LABEL), "dev"),
        )
        .await;
    let name = name_of(repo, 9);
    wait_phase(api, &name, Phase::Ready).await;
    wait_for("Ready reported", TIMEOUT, || async {
        let d = gh.deployments(repo);
        (d.len() == 1 && d[0].states().last().map(String::as_str) == Some("success"))
            .then_some(())
            .ok_or(format!("{d:#?}"))
    })
    .await;
    let lost = gh.with(|s| s.calls.iter().filter(|c| c.status == 502).count());
    let stickies = gh.stickies(repo, 9);
    let deployments = gh.deployments(repo);
    println!(
        "{lost} lost answers: {} sticky comment(s), {} deployment(s), states {:?}",
        stickies.len(),
        deployments.len(),
        deployments[0].states()
    );
    assert_eq!(lost, 3);
    assert_eq!(stickies.len(), 1, "{stickies:#?}");
    assert_eq!(gh.comments(repo, 9).len(), 151);
    assert!(
        gh.with(|s| s.calls.iter().any(|c| c.path.starts_with("/repositories/"))),
        "the second page was read by its link"
    );
    assert_eq!(deployments.len(), 1, "{deployments:#?}");
    assert_eq!(deployments[0].states(), ["in_progress", "success"]);
    env.finish().await;
}

/// A command that arrives while GitHub fails (the permission check answers
/// 500 seven times, the reply first meets a secondary rate limit) is
/// answered once GitHub recovers, exactly once.
#[tokio::test]
async fn a_command_during_github_failures_is_answered_once_they_recover() {
    let env = setup_with("fail", false, "deliveryRetryWait: 1s\n").await;
    let (gh, repo) = (&env.gh, env.repo.as_str());
    gh.set_permission("maintainer", "write");
    let pr = pull(repo, 12, &sha('c'), &[], false);
    gh.set_pull(repo, pr);
    gh.fault(Method::GET, "/permission", Fault::ServerError, 7);
    gh.fault(
        Method::POST,
        "/issues/12/comments",
        Fault::SecondaryLimit(Some(1)),
        1,
    );
    let started = Instant::now();
    let (status, _) = env
        .adapter
        .deliver(
            "issue_comment",
            &comment_event(repo, 12, 1201, "/testenv status", "maintainer"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_for(
        "the answer after the failures",
        Duration::from_secs(60),
        || async {
            let r: Vec<_> = gh
                .comments(repo, 12)
                .into_iter()
                .filter(|c| c.body.starts_with("@maintainer"))
                .collect();
            (!r.is_empty()).then_some(()).ok_or(r.len())
        },
    )
    .await;
    println!("answered after {:?} of failures", started.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let replies: Vec<_> = gh
        .comments(repo, 12)
        .into_iter()
        .filter(|c| c.body.starts_with("@maintainer"))
        .collect();
    assert_eq!(replies.len(), 1, "{replies:#?}");
    assert!(
        replies[0].body.contains("no test installation"),
        "{}",
        replies[0].body
    );
    let failures = gh.calls(Method::GET, "/permission");
    assert_eq!(failures.iter().filter(|c| c.status == 500).count(), 7);
    env.finish().await;
}

/// A delivery that could not be handled (nor its failure answered) is not
/// remembered as handled: GitHub's redelivery of it runs again.
#[tokio::test]
async fn a_redelivery_of_a_failed_delivery_is_handled() {
    let env = setup_with(
        "redo",
        false,
        "deliveryAttempts: 2\ndeliveryRetryWait: 1s\n",
    )
    .await;
    let (gh, repo) = (&env.gh, env.repo.as_str());
    gh.set_permission("maintainer", "write");
    gh.set_pull(repo, pull(repo, 13, &sha('d'), &[], false));
    gh.fault(Method::GET, "/permission", Fault::Forbidden, u32::MAX);
    gh.fault(
        Method::POST,
        "/issues/13/comments",
        Fault::ServerError,
        u32::MAX,
    );
    let event = comment_event(repo, 13, 1301, "/testenv status", "maintainer");
    let (status, _) = env
        .adapter
        .deliver_as("issue_comment", &event, "guid-failing")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_for("the delivery to be given up", TIMEOUT, || async {
        let posts = gh.calls(Method::POST, "/issues/13/comments");
        (!posts.is_empty()).then_some(()).ok_or(posts.len())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(gh.comments(repo, 13).is_empty());
    gh.clear_faults();
    let (status, text) = env
        .adapter
        .deliver_as("issue_comment", &event, "guid-failing")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    wait_for("the redelivery answered", TIMEOUT, || async {
        let c = gh.comments(repo, 13);
        (c.len() == 1).then_some(()).ok_or(c.len())
    })
    .await;
    // And now it is handled: a further redelivery is a duplicate.
    let (status, text) = env
        .adapter
        .deliver_as("issue_comment", &event, "guid-failing")
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(gh.comments(repo, 13).len(), 1);
    env.finish().await;
}

/// An old `labeled` delivery replayed after the PR was closed creates
/// nothing: the adapter decides from GitHub's current PR, never from the
/// webhook's copy.
#[tokio::test]
async fn a_replayed_labeled_delivery_of_a_closed_pr_creates_nothing() {
    let env = setup("replay", false).await;
    let (gh, api, repo) = (&env.gh, &env.api, env.repo.as_str());
    let pr = pull(repo, 14, &sha('f'), &[LABEL], false);
    let mut closed = pr.clone();
    closed["state"] = json!("closed");
    gh.set_pull(repo, closed);
    let (status, _) = env
        .adapter
        .deliver(
            "pull_request",
            &pull_event("labeled", &pr, Some(LABEL), "dev"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_for("the delivery to be handled", TIMEOUT, || async {
        let gets = gh.calls(Method::GET, "/pulls/14");
        (!gets.is_empty()).then_some(()).ok_or(0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(api.get_opt(&name_of(repo, 14)).await.unwrap().is_none());
    env.finish().await;
}

#[test]
fn names_of_the_same_repository_under_different_owners_differ() {
    assert_ne!(name_of("org-a/app", 5), name_of("org-b/app", 5));
}

/// Kills (abort, like `kill -9`) or stops (like SIGTERM) the adapter at a
/// random moment of each report — Pending, Ready, removed — while GitHub, at
/// random, stores a comment, Deployment or status but loses the answer.
/// Every PR still shows one sticky comment and one Deployment whose states
/// are each told once, in order.
#[tokio::test]
async fn kills_and_lost_answers_never_repeat_or_drop_a_report() {
    let kube = plane().await;
    let gh = FakeGitHub::start(BOT, AuthMode::Token(TOKEN.into())).await;
    let repo = repo(UNMANAGED);
    let config = || Config::from_yaml(&config_yaml(&gh, &[(&repo, false)], "")).unwrap();
    let leftovers = Leftovers::of(&kube, &[&repo]);
    let api: Api<TestInstallation> = Api::all(kube.clone());
    let mut adapter = Some(Adapter::start(config(), kube.clone()).await);
    let mut seed: u64 = 0x5eed_0003;
    let mut below = |n: u64| {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    };
    let trials = 16;
    let (mut kills, mut stops, mut lost) = (0, 0, 0);
    let started = Instant::now();
    for trial in 0..trials {
        let number = 100 + trial;
        let name = name_of(&repo, number);
        let head = sha('k');
        let ti: TestInstallation = serde_json::from_value(json!({
            "apiVersion": "ephemera.dev/v1alpha1",
            "kind": "TestInstallation",
            "metadata": {
                "name": name,
                "labels": {
                    labels::SOURCE: "github",
                    annotations::REPOSITORY: naming::repository_label(&repo),
                    annotations::PULL_NUMBER: number.to_string(),
                    annotations::INSTANCE: naming::repository_label(&repo),
                },
                "annotations": {
                    annotations::REPOSITORY: repo,
                    annotations::PULL_NUMBER: number.to_string(),
                    labels::HEAD_SHA: head,
                    labels::PR_URL: format!("https://github.com/{repo}/pull/{number}"),
                },
                "finalizers": [annotations::FINALIZER],
            },
            "spec": { "profile": PROFILE, "version": "kkkkkkk" },
        }))
        .unwrap();
        api.create(&PostParams::default(), &ti).await.unwrap();
        let steps = [
            Some(json!({ "phase": "Provisioning", "observedGeneration": 1 })),
            Some(json!({
                "phase": "Ready", "observedGeneration": 1,
                "url": format!("https://{name}.example"), "version": "kkkkkkk",
            })),
            None,
        ];
        for (step, change) in steps.into_iter().enumerate() {
            match change {
                Some(status) => {
                    api.patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "status": status })),
                    )
                    .await
                    .unwrap();
                }
                None => {
                    api.delete(&name, &DeleteParams::default()).await.unwrap();
                }
            }
            if below(10) < 4 {
                lost += 1;
                let target = ["/comments", "/deployments", "/statuses"][below(3) as usize];
                gh.fault(Method::POST, target, Fault::CommitThenFail, 1);
            }
            tokio::time::sleep(Duration::from_millis(below(60))).await;
            match below(3) {
                0 => {
                    kills += 1;
                    adapter.take().unwrap().kill().await;
                }
                1 => {
                    stops += 1;
                    adapter.take().unwrap().stop().await;
                }
                _ => {}
            }
            if adapter.is_none() {
                adapter = Some(Adapter::start(config(), kube.clone()).await);
            }
            let wanted = ["in_progress", "success", "inactive"][step];
            wait_for(
                &format!("trial {trial}: {wanted} reported for PR {number}"),
                TIMEOUT,
                || async {
                    let d: Vec<_> = gh
                        .deployments(&repo)
                        .into_iter()
                        .filter(|d| d.request["environment"] == format!("ephemera/{name}"))
                        .collect();
                    let done = d
                        .iter()
                        .any(|d| d.states().last().map(String::as_str) == Some(wanted));
                    done.then_some(()).ok_or(format!("{d:#?}"))
                },
            )
            .await;
        }
        wait_gone(&api, &name).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut duplicates = 0;
    for trial in 0..trials {
        let number = 100 + trial;
        let name = name_of(&repo, number);
        let stickies = gh.stickies(&repo, number);
        let deployments: Vec<_> = gh
            .deployments(&repo)
            .into_iter()
            .filter(|d| d.request["environment"] == format!("ephemera/{name}"))
            .collect();
        duplicates += stickies.len().saturating_sub(1) + deployments.len().saturating_sub(1);
        assert_eq!(stickies.len(), 1, "PR {number}: {stickies:#?}");
        assert_eq!(deployments.len(), 1, "PR {number}: {deployments:#?}");
        assert_eq!(
            deployments[0].states(),
            ["in_progress", "success", "inactive"],
            "PR {number}"
        );
        assert!(stickies[0].body.contains("Removed"), "{}", stickies[0].body);
    }
    println!(
        "GitHub: {trials} trials with {kills} kills, {stops} stops and {lost} lost answers in {:?}: duplicates: {duplicates}",
        started.elapsed()
    );
    adapter.take().unwrap().stop().await;
    leftovers.clean().await;
}
