//! Test suites and actions from pull requests, end to end on the local API
//! server: `/e2e-test`, `/e2e-cancel` and `/testenv run` comments become
//! TestRuns, and each run's result goes back to the PR as a check run (the
//! adapter as a GitHub App) or a commit status (a token), recorded by the
//! local stand-in for GitHub, which refuses requests GitHub would refuse.
//!
//! Most tests write the installation's and the runs' status themselves, as
//! the controller would, so every state the reporter sees is one the test
//! chose. One test (`the_real_controller_runs_the_suite_and_the_check_run_shows_its_report`)
//! runs the real controller for its repository only: installation → Ready,
//! run → Job on the fake node → result → check run.

mod fake_github;
mod support;

use std::{path::PathBuf, sync::OnceLock, time::Duration};

use ephemera::{
    adapters::github::{self, Config, annotations, checks, naming, run_reporter, signature},
    api::{InstallationProfile, TestInstallation, TestRun, labels},
};
use fake_github::{AuthMode, FakeGitHub, Fault};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{client, server::RunningServer, unique_name, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);
const SECRET: &str = "webhook secret for run tests";
const TOKEN: &str = "ghp_run_tests_token";
const BOT: &str = "ephemera-runs[bot]";
const LABEL: &str = "Setup Test Server";
const APP_ID: &str = "Iv1.runtests";
/// The profile of the test repositories (applied by every test; the same
/// content each time).
const PROFILE: &str = "github-run-tests";

// ---------------------------------------------------------------- plane

/// The repository whose installations and runs the real controller of this
/// binary reconciles; every other repository's status is written by hand.
const CONTROLLED: &str = "real";

async fn plane() -> Client {
    // Installs the CRDs before it returns; the first call decides the selector.
    let selector = format!(
        "{}={}",
        annotations::REPOSITORY,
        naming::repository_label(&repo(CONTROLLED))
    );
    support::controller_with(|config| config.installation_selector = Some(selector));
    let kube = client().await;
    let profile: InstallationProfile = serde_json::from_value(json!({
        "apiVersion": "ephemera.dev/v1alpha1",
        "kind": "InstallationProfile",
        "metadata": { "name": PROFILE },
        "spec": {
            "image": "registry.example/team/app",
            "defaultVersion": "1.0.0",
            "allowedImages": ["registry.test/*"],
            "tests": [
                { "name": "e2e", "image": "run.invalid/pass", "startableBy": "anyone",
                  "command": ["/e2e", "--url", "{{ url }}"],
                  "env": [{ "name": "EPHEMERA_FAKE_REPORT",
                            "value": "{\"summary\":{\"passed\":12,\"failed\":0,\"skipped\":1},\"output\":\"ok 1 login\\nok 2 post a message\\n12 passed, 0 failed, 1 skipped\"}" }] },
                { "name": "smoke", "image": "run.invalid/pass", "startableBy": "requester" }
            ],
            "actions": [
                { "name": "list-users", "image": "run.invalid/pass", "readOnly": true,
                  "startableBy": "anyone",
                  "parameters": [
                      { "name": "limit", "type": "integer", "minimum": 1, "maximum": 100, "default": "10" },
                      { "name": "team", "type": "string", "pattern": "[a-z]+" }
                  ] }
            ]
        }
    }))
    .expect("the test profile");
    Api::<InstallationProfile>::all(kube.clone())
        .patch(
            PROFILE,
            &PatchParams::apply("github-run-tests").force(),
            &Patch::Apply(&profile),
        )
        .await
        .expect("applying the test profile");
    kube
}

fn repo(prefix: &str) -> String {
    static RUN: OnceLock<String> = OnceLock::new();
    format!("acme/{prefix}-{}", RUN.get_or_init(|| unique_name("r")))
}

fn sha(seed: char) -> String {
    std::iter::repeat_n(seed, 40).collect()
}

fn secret_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("ephemera-ghr"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// A GitHub App key pair: (private key file, public key PEM).
fn app_key() -> (PathBuf, String) {
    let key = secret_file("app-key.pem", "");
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
    (key, public)
}

// ---------------------------------------------------------------- adapter

/// The GitHub adapter in this process; `None` while it is stopped.
struct Adapter {
    server: Option<RunningServer>,
}

impl Adapter {
    async fn start(config: Config, kube: Client) -> Self {
        let server = RunningServer::spawn_ready(move |listener, shutdown| {
            github::run(listener, config, kube, shutdown)
        })
        .await;
        Self {
            server: Some(server),
        }
    }

    fn webhook(&self) -> String {
        match &self.server {
            Some(server) => server.url("/github/webhook"),
            None => "http://127.0.0.1:1/github/webhook".into(),
        }
    }

    async fn stop(self) {
        if let Some(server) = self.server {
            server.stop().await;
        }
    }

    /// Stands in for a stopped adapter until the next one starts.
    fn stopped() -> Self {
        Self { server: None }
    }

    async fn deliver(&self, event: &str, payload: &Value) -> StatusCode {
        let body = serde_json::to_vec(payload).unwrap();
        reqwest::Client::new()
            .post(self.webhook())
            .header("x-github-event", event)
            .header("x-github-delivery", unique_name("delivery"))
            .header("x-hub-signature-256", signature::sign(SECRET, &body))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST webhook")
            .status()
    }
}

// ---------------------------------------------------------------- payloads

fn pull(repo: &str, number: u64, head: &str, labels: &[&str]) -> Value {
    json!({
        "url": format!("https://api.github.com/repos/{repo}/pulls/{number}"),
        "html_url": format!("https://github.com/{repo}/pull/{number}"),
        "number": number,
        "state": "open",
        "user": { "login": "author", "type": "User" },
        "labels": labels.iter().map(|l| json!({ "name": l })).collect::<Vec<_>>(),
        "head": { "ref": "feature", "sha": head, "repo": { "full_name": repo } },
        "base": { "ref": "main", "sha": sha('0'), "repo": { "full_name": repo } }
    })
}

fn pull_event(action: &str, pr: &Value, label: Option<&str>, sender: &str) -> Value {
    let repo = pr["base"]["repo"]["full_name"].as_str().unwrap();
    let mut event = json!({
        "action": action,
        "number": pr["number"],
        "pull_request": pr,
        "repository": { "full_name": repo },
        "sender": { "login": sender },
        "installation": { "id": 4242 }
    });
    if let Some(label) = label {
        event["label"] = json!({ "name": label });
    }
    event
}

fn comment_event(repo: &str, number: u64, id: u64, body: &str, user: &str) -> Value {
    json!({
        "action": "created",
        "issue": {
            "number": number,
            "state": "open",
            "pull_request": { "url": format!("https://api.github.com/repos/{repo}/pulls/{number}") }
        },
        "comment": { "id": id, "body": body, "user": { "login": user } },
        "repository": { "full_name": repo },
        "sender": { "login": user },
        "installation": { "id": 4242 }
    })
}

// ---------------------------------------------------------------- setup

enum Auth {
    App,
    Token,
}

struct Env {
    kube: Client,
    gh: FakeGitHub,
    adapter: Adapter,
    /// The adapter's config, to start it again after a stop.
    config: String,
    repo: String,
    installations: Api<TestInstallation>,
    runs: Api<TestRun>,
}

async fn setup(prefix: &str, auth: Auth, labels_yaml: &str) -> Env {
    let kube = plane().await;
    let repo = repo(prefix);
    let (gh, auth_yaml) = match auth {
        Auth::App => {
            let (key, public) = app_key();
            let gh = FakeGitHub::start(
                BOT,
                AuthMode::App {
                    public_key_pem: public,
                    app_id: APP_ID.into(),
                },
            )
            .await;
            let yaml = format!(
                "auth: {{app: {{appId: {APP_ID}, privateKey: {{file: {}}}}}}}",
                key.display()
            );
            (gh, yaml)
        }
        Auth::Token => {
            let gh = FakeGitHub::start(BOT, AuthMode::Token(TOKEN.into())).await;
            let yaml = format!(
                "auth: {{token: {{file: {}}}}}",
                secret_file("token", TOKEN).display()
            );
            (gh, yaml)
        }
    };
    for (user, permission) in [
        ("dev", "write"),
        ("author", "write"),
        ("carol", "write"),
        ("root", "admin"),
        ("reader", "read"),
    ] {
        gh.set_permission(user, permission);
    }
    let config = format!(
        "apiBaseUrl: {url}\n\
         botLogin: '{BOT}'\n\
         instance: '{instance}'\n\
         webhookSecrets: [{{file: {secret}}}]\n\
         {auth_yaml}\n\
         deliveryRetryWait: 1s\n\
         image: 'registry.test/{{repo}}:{{sha7}}'\n\
         repositories: [{{name: {repo}, profile: {PROFILE}}}]\n\
         {labels_yaml}",
        url = gh.url(),
        instance = naming::repository_label(&repo),
        secret = secret_file("secret", SECRET).display(),
    );
    let adapter = Adapter::start(Config::from_yaml(&config).unwrap(), kube.clone()).await;
    Env {
        installations: Api::all(kube.clone()),
        runs: Api::all(kube.clone()),
        kube,
        gh,
        adapter,
        config,
        repo,
    }
}

impl Env {
    /// Labels PR `number` at `head`, waits for its installation and writes
    /// it Ready as the controller would. Returns the installation's name.
    async fn ready_installation(&self, number: u64, head: &str) -> String {
        let pr = pull(&self.repo, number, head, &[LABEL]);
        self.gh.set_pull(&self.repo, pr.clone());
        self.adapter
            .deliver(
                "pull_request",
                &pull_event("labeled", &pr, Some(LABEL), "author"),
            )
            .await;
        let name = naming::installation_name(&self.repo, number);
        self.set_ready(&name, head).await;
        name
    }

    /// Writes the installation Ready for its current generation, once the
    /// adapter has moved it to `head`.
    async fn set_ready(&self, name: &str, head: &str) {
        let ti = wait_for("the installation on the head", TIMEOUT, || async {
            match self.installations.get_opt(name).await {
                Ok(Some(ti))
                    if ti.annotations().get(labels::HEAD_SHA).map(String::as_str) == Some(head) =>
                {
                    Ok(ti)
                }
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let status = json!({ "status": {
            "phase": "Ready",
            "observedGeneration": ti.metadata.generation,
            "url": format!("https://{name}.test.example"),
            "version": ti.spec.version,
        }});
        self.installations
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("writing the installation's status");
    }

    async fn comment(&self, number: u64, id: u64, body: &str, user: &str) {
        let status = self
            .adapter
            .deliver(
                "issue_comment",
                &comment_event(&self.repo, number, id, body, user),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "comment {body:?} queued");
    }

    async fn runs_of(&self, installation: &str) -> Vec<TestRun> {
        let mut runs = self
            .runs
            .list(
                &ListParams::default().labels(&format!("{}={installation}", labels::INSTALLATION)),
            )
            .await
            .unwrap()
            .items;
        runs.sort_by_key(|r| r.metadata.creation_timestamp.clone().map(|t| t.0));
        runs
    }

    /// Waits until the installation has `count` runs and returns them.
    async fn wait_runs(&self, installation: &str, count: usize) -> Vec<TestRun> {
        wait_for(
            &format!("{count} runs of {installation}"),
            TIMEOUT,
            || async {
                let runs = self.runs_of(installation).await;
                if runs.len() == count {
                    Ok(runs)
                } else {
                    Err(runs.iter().map(|r| r.name_any()).collect::<Vec<_>>())
                }
            },
        )
        .await
    }

    /// Writes a run's status as the controller would.
    async fn set_run(&self, name: &str, status: Value) {
        self.runs
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await
            .unwrap_or_else(|err| panic!("writing the status of run {name}: {err}"));
    }

    /// Waits until the one check run reporting `run` went through `states`
    /// and is at the last of them. A state the reporter never saw (the run
    /// moved on before its first report) may be missing, but no other state
    /// may appear and the order is kept.
    async fn wait_check(&self, run: &str, states: &[&str]) -> fake_github::CheckRun {
        wait_for(
            &format!("the check run of {run} to be {states:?}"),
            TIMEOUT,
            || async {
                let found: Vec<_> = self
                    .gh
                    .check_runs(&self.repo)
                    .into_iter()
                    .filter(|c| c.external_id() == run)
                    .collect();
                match found.as_slice() {
                    [one]
                        if is_ordered_subset(&one.states(), states)
                            && one.states().last().map(String::as_str)
                                == states.last().copied() =>
                    {
                        Ok(one.clone())
                    }
                    _ => Err(found.iter().map(|c| (c.id, c.states())).collect::<Vec<_>>()),
                }
            },
        )
        .await
    }

    async fn replies_containing(&self, number: u64, text: &str) -> usize {
        self.gh
            .comments(&self.repo, number)
            .iter()
            .filter(|c| c.body.contains(text))
            .count()
    }

    /// Stops the adapter (cleanly: as a deploy's rolling restart does).
    async fn stop_adapter(mut self) -> Self {
        std::mem::replace(&mut self.adapter, Adapter::stopped())
            .stop()
            .await;
        self
    }

    /// Deletes what the test made and stops the adapter.
    async fn finish(self) {
        let selector = format!(
            "{}={}",
            annotations::INSTANCE,
            naming::repository_label(&self.repo)
        );
        let _ = self
            .runs
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&selector),
            )
            .await;
        let _ = self
            .installations
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&selector),
            )
            .await;
        // The adapter reports each teardown and lets go of its finalizer
        // (and the controller deletes the namespace of a controlled one).
        wait_for(
            "the installations to be gone",
            Duration::from_secs(120),
            || async {
                let left = self
                    .installations
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| e.to_string())?;
                left.items
                    .is_empty()
                    .then_some(())
                    .ok_or(left.items.len().to_string())
            },
        )
        .await;
        let refused = self.gh.with(|s| s.refused.clone());
        assert!(refused.is_empty(), "the fake refused requests: {refused:?}");
        self.adapter.stop().await;
        let _ = &self.kube;
    }
}

/// Whether `seen` is `expected` with some entries left out, in order.
fn is_ordered_subset(seen: &[String], expected: &[&str]) -> bool {
    let mut rest = expected.iter();
    seen.iter().all(|s| rest.any(|e| e == s))
}

fn finished(phase: &str, reason: &str, message: &str) -> Value {
    json!({
        "phase": phase,
        "reason": reason,
        "message": message,
        "startedAt": "2026-12-02T08:00:00Z",
        "finishedAt": "2026-12-02T08:00:42Z",
        "summary": { "passed": 12, "failed": 0, "skipped": 1 },
        "output": "ok 1 login\nok 2 post message\nDATABASE_URL=[redacted]\n12 passed, 0 failed, 1 skipped",
        "exitCode": 0
    })
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn e2e_comment_runs_the_suite_and_one_check_run_goes_from_queued_to_success_and_reruns() {
    let env = setup("e2e", Auth::App, "").await;
    let name = env.ready_installation(7, &sha('a')).await;

    env.comment(7, 101, "Looks good.\n/e2e-test", "dev").await;
    let runs = env.wait_runs(&name, 1).await;
    let run = &runs[0];
    assert_eq!(
        run.spec.test.as_deref(),
        Some("e2e"),
        "the profile's first suite"
    );
    assert_eq!(run.labels()[labels::SOURCE], "github");
    assert_eq!(run.labels()[labels::REQUESTER], "github.dev");
    assert_eq!(run.annotations()[labels::HEAD_SHA], sha('a'));
    assert_eq!(
        run.annotations()[labels::PR_URL],
        format!("https://github.com/{}/pull/7", env.repo)
    );
    let run_name = run.name_any();
    env.wait_check(&run_name, &["queued"]).await;

    env.set_run(
        &run_name,
        json!({ "phase": "Running", "startedAt": "2026-12-02T08:00:00Z" }),
    )
    .await;
    env.wait_check(&run_name, &["queued", "in_progress"]).await;
    env.set_run(
        &run_name,
        finished(
            "Succeeded",
            "Completed",
            "e2e passed: 12 passed, 0 failed, 1 skipped in 42s",
        ),
    )
    .await;
    let check = env
        .wait_check(&run_name, &["queued", "in_progress", "completed:success"])
        .await;
    println!(
        "check run as the fake GitHub recorded it:\n{}",
        serde_json::to_string_pretty(&check.value).unwrap()
    );
    let v = &check.value;
    assert_eq!(v["name"], "ephemera/e2e");
    assert_eq!(v["head_sha"], sha('a'));
    assert_eq!(v["conclusion"], "success");
    assert_eq!(
        v["output"]["title"],
        "e2e passed: 12 passed, 0 failed, 1 skipped in 42s"
    );
    let summary = v["output"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("12 passed, 0 failed, 1 skipped"),
        "{summary}"
    );
    assert!(summary.contains("| Duration | 42s |"), "{summary}");
    assert!(
        v["output"]["text"]
            .as_str()
            .unwrap()
            .contains("DATABASE_URL=[redacted]")
    );
    assert_eq!(v["actions"][0]["identifier"], checks::RERUN_ACTION);
    // The id is recorded on the run, so a restart finds it.
    let recorded = wait_for("the check run id on the run", TIMEOUT, || async {
        let r = env.runs.get(&run_name).await.map_err(|e| e.to_string())?;
        r.annotations()
            .get(run_reporter::CHECK_RUN)
            .cloned()
            .ok_or(format!("{:?}", r.annotations()))
    })
    .await;
    assert_eq!(recorded, check.id.to_string());

    // Re-run from GitHub's check page, then with the check run's button.
    let event = env.gh.check_run_event(check.id, None, "dev");
    assert_eq!(
        env.gh
            .deliver_check_run(&env.adapter.webhook(), SECRET, &event)
            .await,
        202
    );
    let runs = env.wait_runs(&name, 2).await;
    let rerun = runs.iter().find(|r| r.name_any() != run_name).unwrap();
    assert_eq!(rerun.spec.test.as_deref(), Some("e2e"));
    assert_eq!(rerun.labels()[labels::REQUESTER], "github.dev");
    env.wait_check(&rerun.name_any(), &["queued"]).await;
    let event = env
        .gh
        .check_run_event(check.id, Some(checks::RERUN_ACTION), "carol");
    assert_eq!(
        env.gh
            .deliver_check_run(&env.adapter.webhook(), SECRET, &event)
            .await,
        202
    );
    let runs = env.wait_runs(&name, 3).await;
    assert_eq!(
        runs.iter()
            .filter(|r| r.labels()[labels::REQUESTER] == "github.carol")
            .count(),
        1
    );
    // A reader's re-run starts nothing.
    let event = env.gh.check_run_event(check.id, None, "reader");
    assert_eq!(
        env.gh
            .deliver_check_run(&env.adapter.webhook(), SECRET, &event)
            .await,
        202
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.runs_of(&name).await.len(), 3);
    env.finish().await;
}

#[tokio::test]
async fn e2e_cancel_cancels_the_unfinished_run_and_its_check_run_ends_cancelled() {
    let env = setup("cancel", Auth::App, "").await;
    let name = env.ready_installation(8, &sha('b')).await;
    env.comment(8, 201, "/e2e-test e2e", "dev").await;
    let run = env.wait_runs(&name, 1).await.remove(0);
    env.set_run(
        &run.name_any(),
        json!({ "phase": "Running", "startedAt": "2026-12-02T08:00:00Z" }),
    )
    .await;
    env.wait_check(&run.name_any(), &["queued", "in_progress"])
        .await;

    env.comment(8, 202, "/e2e-cancel", "dev").await;
    wait_for("the run to be cancelled", TIMEOUT, || async {
        let r = env
            .runs
            .get(&run.name_any())
            .await
            .map_err(|e| e.to_string())?;
        r.spec.cancelled.then_some(()).ok_or("not yet".to_string())
    })
    .await;
    // The controller stops the Job and ends the run.
    env.set_run(
        &run.name_any(),
        json!({ "phase": "Cancelled", "reason": "CancelledByUser", "message": "e2e was cancelled by github.dev",
                "finishedAt": "2026-12-02T08:00:10Z" }),
    )
    .await;
    let check = env
        .wait_check(
            &run.name_any(),
            &["queued", "in_progress", "completed:cancelled"],
        )
        .await;
    assert_eq!(
        check.value["output"]["title"],
        "e2e was cancelled by github.dev"
    );

    // Nothing left to cancel: said so, nothing changed.
    env.comment(8, 203, "/e2e-cancel", "dev").await;
    wait_for("the reply", TIMEOUT, || async {
        match env.replies_containing(8, "nothing was cancelled").await {
            1 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    env.finish().await;
}

#[tokio::test]
async fn refusals_create_nothing_and_are_answered() {
    let env = setup("refuse", Auth::App, "").await;
    let name = env.ready_installation(9, &sha('c')).await;
    // No write access.
    env.comment(9, 301, "/e2e-test", "reader").await;
    // smoke is startable by the requester (the labeller, "author"), not carol.
    env.comment(9, 302, "/e2e-test smoke", "carol").await;
    // Parameter errors, an injection attempt among them.
    env.comment(
        9,
        303,
        "/testenv run list-users --limit '5; rm -rf /' --team core",
        "dev",
    )
    .await;
    env.comment(9, 304, "/testenv run list-users --team 'core$(id)'", "dev")
        .await;
    env.comment(
        9,
        305,
        "/testenv run list-users --shell bash --team core",
        "dev",
    )
    .await;
    env.comment(9, 306, "/e2e-test perf", "dev").await;
    for (text, what) in [
        ("need write permission", "the reader"),
        ("may start smoke", "carol"),
        ("must be a whole number", "the integer"),
        ("must match", "the pattern"),
        ("unknown parameter --shell", "the unknown parameter"),
        ("has no test suite perf", "the unknown suite"),
    ] {
        wait_for(&format!("the reply to {what}"), TIMEOUT, || async {
            match env.replies_containing(9, text).await {
                1 => Ok(()),
                n => Err(n),
            }
        })
        .await;
    }
    assert!(
        env.runs_of(&name).await.is_empty(),
        "refusals create no run"
    );
    assert!(env.gh.check_runs(&env.repo).is_empty());

    // What passes: the requester's smoke, and the action with checked parameters.
    env.comment(9, 307, "/e2e-test smoke", "author").await;
    env.comment(
        9,
        308,
        "/testenv run list-users --team core --limit=5",
        "dev",
    )
    .await;
    let runs = env.wait_runs(&name, 2).await;
    let action = runs.iter().find(|r| r.spec.action.is_some()).unwrap();
    assert_eq!(action.spec.action.as_deref(), Some("list-users"));
    assert_eq!(action.spec.parameters["limit"], "5");
    assert_eq!(action.spec.parameters["team"], "core");
    env.wait_check(&action.name_any(), &["queued"]).await;
    assert_eq!(
        env.gh
            .check_runs(&env.repo)
            .iter()
            .filter(|c| c.value["name"] == "ephemera/action/list-users")
            .count(),
        1
    );
    env.finish().await;
}

#[tokio::test]
async fn with_a_token_the_result_is_a_commit_status() {
    let env = setup("status", Auth::Token, "").await;
    let name = env.ready_installation(10, &sha('d')).await;
    env.comment(10, 401, "/e2e-test", "dev").await;
    let run = env.wait_runs(&name, 1).await.remove(0);
    env.set_run(&run.name_any(), json!({ "phase": "Running" }))
        .await;
    let mut long = finished(
        "Failed",
        "TestsFailed",
        &"e2e failed: 3 tests failed ".repeat(20),
    );
    long["summary"]["failed"] = json!(3);
    env.set_run(&run.name_any(), long).await;
    let statuses = wait_for("the commit statuses", TIMEOUT, || async {
        let s: Vec<(String, Value)> = env
            .gh
            .commit_statuses(&env.repo)
            .into_iter()
            .filter(|(_, b)| b["context"] == "ephemera/e2e")
            .collect();
        let states: Vec<&str> = s
            .iter()
            .map(|(_, b)| b["state"].as_str().unwrap())
            .collect();
        (states.last() == Some(&"failure"))
            .then_some(s.clone())
            .ok_or(states.join(","))
    })
    .await;
    println!(
        "commit statuses as the fake GitHub recorded them:\n{}",
        serde_json::to_string_pretty(&statuses.iter().map(|(_, b)| b).collect::<Vec<_>>()).unwrap()
    );
    assert!(statuses.iter().all(|(sha_, _)| *sha_ == sha('d')));
    let (_, last) = statuses.last().unwrap();
    assert!(last["description"].as_str().unwrap().chars().count() <= 140);
    assert_eq!(
        last["target_url"],
        format!("https://github.com/{}/pull/10", env.repo)
    );
    assert!(
        env.gh.check_runs(&env.repo).is_empty(),
        "no check runs without an App"
    );
    env.finish().await;
}

#[tokio::test]
async fn a_lost_answer_and_a_restart_still_give_exactly_one_check_run() {
    let mut env = setup("lost", Auth::App, "").await;
    let name = env.ready_installation(11, &sha('e')).await;
    // The create is committed, its answer lost; then GitHub throttles.
    env.gh
        .fault(Method::POST, "/check-runs", Fault::CommitThenFail, 1);
    env.gh.fault(
        Method::GET,
        "/check-runs",
        Fault::TooManyRequests(Some(1)),
        1,
    );
    env.comment(11, 501, "/e2e-test", "dev").await;
    let run = env.wait_runs(&name, 1).await.remove(0);
    let run_name = run.name_any();
    env.wait_check(&run_name, &["queued"]).await;
    wait_for("the check run id on the run", TIMEOUT, || async {
        let r = env.runs.get(&run_name).await.map_err(|e| e.to_string())?;
        r.annotations()
            .get(run_reporter::CHECK_RUN)
            .cloned()
            .ok_or("not yet".to_string())
    })
    .await;
    assert_eq!(
        env.gh.calls(Method::POST, "/check-runs").len(),
        1,
        "the lost create is found by name on the commit, never sent again"
    );

    // A restart in the middle: the state changes while the adapter is down.
    env = env.stop_adapter().await;
    let calls_before = env.gh.with(|s| s.calls.len());
    env.set_run(&run_name, finished("Succeeded", "Completed", "e2e passed"))
        .await;
    env.adapter = Adapter::start(Config::from_yaml(&env.config).unwrap(), env.kube.clone()).await;
    let check = env
        .wait_check(&run_name, &["queued", "completed:success"])
        .await;
    assert_eq!(
        env.gh.check_runs(&env.repo).len(),
        1,
        "exactly one check run"
    );
    // Once told, a restart tells nothing again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let patches = env
        .gh
        .calls(Method::PATCH, &format!("/check-runs/{}", check.id))
        .len();
    env = env.stop_adapter().await;
    env.adapter = Adapter::start(Config::from_yaml(&env.config).unwrap(), env.kube.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.gh
            .calls(Method::PATCH, &format!("/check-runs/{}", check.id))
            .len(),
        patches,
        "nothing said twice after a restart"
    );
    assert!(env.gh.with(|s| s.calls.len()) > calls_before);
    env.finish().await;
}

#[tokio::test]
async fn run_after_deploy_runs_the_suite_once_per_deployed_commit() {
    let labels_yaml = format!("labels: [{{name: '{LABEL}', runAfterDeploy: e2e}}]\n");
    let env = setup("auto", Auth::App, &labels_yaml).await;
    let name = env.ready_installation(12, &sha('f')).await;
    let first = env.wait_runs(&name, 1).await.remove(0);
    assert_eq!(first.spec.test.as_deref(), Some("e2e"));
    assert_eq!(first.annotations()[labels::HEAD_SHA], sha('f'));
    // The installation is reported again (the same commit): no second run.
    env.set_ready(&name, &sha('f')).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.runs_of(&name).await.len(), 1);

    // A push: the installation rolls to the new commit, then is ready on it.
    let pr = pull(&env.repo, 12, &sha('9'), &[LABEL]);
    env.gh.set_pull(&env.repo, pr.clone());
    env.adapter
        .deliver(
            "pull_request",
            &pull_event("synchronize", &pr, None, "author"),
        )
        .await;
    env.set_ready(&name, &sha('9')).await;
    let runs = env.wait_runs(&name, 2).await;
    let second = runs
        .iter()
        .find(|r| r.name_any() != first.name_any())
        .unwrap();
    assert_eq!(second.annotations()[labels::HEAD_SHA], sha('9'));
    env.wait_check(&second.name_any(), &["queued"]).await;
    let on_new: Vec<_> = env
        .gh
        .check_runs(&env.repo)
        .into_iter()
        .filter(|c| c.value["head_sha"] == sha('9'))
        .collect();
    assert_eq!(on_new.len(), 1);
    env.finish().await;
}

/// The stand-in refuses what GitHub refuses (no cluster needed).
#[tokio::test]
async fn the_fake_refuses_invalid_check_runs_and_statuses_like_github() {
    let (_, public) = app_key();
    let gh = FakeGitHub::start(
        BOT,
        AuthMode::App {
            public_key_pem: public,
            app_id: APP_ID.into(),
        },
    )
    .await;
    let good = json!({ "name": "ephemera/e2e", "head_sha": sha('a'), "status": "in_progress",
                       "output": { "title": "t", "summary": "s" } });
    assert!(fake_github::check_run_errors(&good, true).is_empty());
    let with = |patch: Value| {
        let mut body = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        fake_github::check_run_errors(&body, true).join("; ")
    };
    for (patch, expected) in [
        (json!({ "name": null }), "name is required"),
        (json!({ "head_sha": "main" }), "not a commit SHA"),
        (json!({ "status": "done" }), "status \"done\""),
        (json!({ "status": "completed" }), "conclusion is required"),
        (json!({ "conclusion": "passed" }), "conclusion \"passed\""),
        (
            json!({ "output": { "title": "t" } }),
            "output.summary is required",
        ),
        (
            json!({ "output": { "title": "t", "summary": "x".repeat(65_536) } }),
            "longer than 65535",
        ),
        (
            json!({ "output": { "title": "t", "summary": "s", "text": "x".repeat(65_536) } }),
            "output.text is longer",
        ),
        (
            json!({ "actions": [{ "label": "Re-run this suite now!", "description": "d", "identifier": "i" }] }),
            "label is longer than 20",
        ),
        (
            json!({ "actions": [{ "label": "l", "description": "d".repeat(41), "identifier": "i" }] }),
            "description is longer than 40",
        ),
        (
            json!({ "actions": [{ "label": "l", "description": "d", "identifier": "i".repeat(21) }] }),
            "identifier is longer than 20",
        ),
        (
            json!({ "actions": [{ "label": "l", "description": "d" }] }),
            "identifier is required",
        ),
        (json!({ "actions": [{}, {}, {}, {}] }), "at most 3 actions"),
    ] {
        let errors = with(patch.clone());
        assert!(errors.contains(expected), "{patch}: {errors}");
    }
    assert!(
        fake_github::check_run_errors(&json!({ "head_sha": sha('a') }), false)
            .join(";")
            .contains("head_sha cannot be changed")
    );
    for (body, expected) in [
        (json!({ "state": "done" }), "state"),
        (
            json!({ "state": "success", "description": "x".repeat(141) }),
            "140",
        ),
        (
            json!({ "state": "success", "target_url": "javascript:alert(1)" }),
            "not a URL",
        ),
    ] {
        let errors = fake_github::status_errors(&body).join("; ");
        assert!(errors.contains(expected), "{body}: {errors}");
    }
    // Over HTTP: a 422 with GitHub's shape, nothing stored.
    let token = gh.with(|s| {
        s.issued_tokens.insert("ghs_direct".into());
        "ghs_direct"
    });
    let response = reqwest::Client::new()
        .post(format!("{}/repos/acme/x/check-runs", gh.url()))
        .bearer_auth(token)
        .json(&json!({ "name": "n", "head_sha": sha('a'), "status": "completed" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Validation Failed");
    assert!(gh.check_runs("acme/x").is_empty());
    assert_eq!(gh.with(|s| s.refused.len()), 1);
    let created = reqwest::Client::new()
        .post(format!("{}/repos/acme/x/check-runs", gh.url()))
        .bearer_auth(token)
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn the_real_controller_runs_the_suite_and_the_check_run_shows_its_report() {
    let env = setup(CONTROLLED, Auth::App, "").await;
    let pr = pull(&env.repo, 13, &sha('1'), &[LABEL]);
    env.gh.set_pull(&env.repo, pr.clone());
    env.adapter
        .deliver(
            "pull_request",
            &pull_event("labeled", &pr, Some(LABEL), "author"),
        )
        .await;
    let name = naming::installation_name(&env.repo, 13);
    wait_for(
        "the controller to make the installation Ready",
        Duration::from_secs(120),
        || async {
            let ti = env
                .installations
                .get_opt(&name)
                .await
                .map_err(|e| e.to_string())?;
            let status = ti
                .as_ref()
                .and_then(|t| t.status.clone())
                .unwrap_or_default();
            (status.phase == Some(ephemera::api::Phase::Ready)
                && status.observed_generation == ti.and_then(|t| t.metadata.generation))
            .then_some(())
            .ok_or(format!("{:?} {:?}", status.phase, status.message))
        },
    )
    .await;

    env.comment(13, 601, "/e2e-test e2e", "dev").await;
    let run = env.wait_runs(&name, 1).await.remove(0);
    let check = wait_for(
        "the check run to complete",
        Duration::from_secs(90),
        || async {
            let found: Vec<_> = env
                .gh
                .check_runs(&env.repo)
                .into_iter()
                .filter(|c| c.external_id() == run.name_any())
                .collect();
            match found.as_slice() {
                [one] if one.status() == "completed" => Ok(one.clone()),
                _ => Err(found.iter().map(|c| c.states()).collect::<Vec<_>>()),
            }
        },
    )
    .await;
    println!(
        "check run of a real run, as the fake GitHub recorded it:\n{}",
        serde_json::to_string_pretty(&check.value).unwrap()
    );
    let finished = env.runs.get(&run.name_any()).await.unwrap();
    let status = finished.status.clone().unwrap_or_default();
    assert_eq!(check.conclusion(), Some("success"), "{status:?}");
    assert_eq!(
        check.value["output"]["title"].as_str(),
        status.message.as_deref()
    );
    let summary = check.value["output"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("12 passed, 0 failed, 1 skipped"),
        "{summary}"
    );
    assert!(
        check.value["output"]["text"]
            .as_str()
            .unwrap()
            .contains("ok 2 post a message"),
        "{}",
        check.value
    );
    let states = check.states();
    assert_eq!(
        states.last().map(String::as_str),
        Some("completed:success"),
        "{states:?}"
    );
    assert_eq!(env.gh.check_runs(&env.repo).len(), 1);
    env.finish().await;
}
