//! Runs and cloud-bot verbs from chat, against the real local control plane
//! and a stand-in of each chat platform (`support/fake_chat.rs`): `test`,
//! `cancel`, `run` and `actions` create, cancel and describe TestRuns;
//! `update`, `restart`, `share` and `unshare` patch the installation; the
//! result of a finished run reaches the person who started it exactly once
//! by direct message and once in the thread of the installation's progress
//! message, across restarts and lost answers.
//!
//! No controller runs here: each test's adapter has an instance label no
//! controller reconciles, and the test writes the installations' and the
//! runs' status as the controller would (the run controller is tested in
//! its own suite).

#[path = "support/fake_chat.rs"]
mod fake_chat;
mod support;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ephemera::{
    adapters::chat::{
        self, FINALIZER, LABEL_INSTANCE,
        auth::slack_signature,
        config::Config,
        messenger::{Platform, Requester},
    },
    api::{InstallationProfile, TestInstallation, TestRun, labels},
};
use fake_chat::{FakeChat, Fault, Message};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{client, server::RunningServer, unique_name, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);
const COMMAND_TOKEN: &str = "mm-command-token-0123456789";
const SIGNING_SECRET: &str = "slack-signing-secret-abcdef";
const BOT_TOKEN: &str = "bot-token-xyz";
const PROFILE: &str = "chat-runs-tests";

/// The plane with the CRDs and this binary's profile: a suite `e2e` (the
/// default), a suite `smoke`, an action `list-users` with one parameter of
/// each type, an admins-only action, and two links.
async fn plane() -> Client {
    let client = client().await;
    support::install_crds(&client).await;
    let profile: InstallationProfile = serde_json::from_value(json!({
        "apiVersion": "ephemera.dev/v1alpha1",
        "kind": "InstallationProfile",
        "metadata": { "name": PROFILE },
        "spec": {
            "image": "registry.example/team/app",
            "defaultVersion": "9.11.0",
            "tests": [
                { "name": "e2e", "description": "the end-to-end suite", "image": "run.invalid/pass" },
                { "name": "smoke", "image": "run.invalid/hang" }
            ],
            "actions": [
                {
                    "name": "list-users", "description": "users of a team", "readOnly": true,
                    "image": "run.invalid/pass",
                    "args": ["--team", "{{ params.team }}", "--page", "{{ params.page }}"],
                    "parameters": [
                        { "name": "team", "type": "string", "pattern": "[a-z0-9-]{1,32}", "description": "team name" },
                        { "name": "page", "type": "integer", "minimum": 1, "maximum": 100, "default": "1" },
                        { "name": "format", "type": "enum", "values": ["json", "text"], "default": "text" }
                    ]
                },
                { "name": "reindex", "startableBy": "admins", "image": "run.invalid/pass" }
            ],
            "links": [
                { "name": "logs", "url": "https://logs.example/?namespace={{ namespace }}" }
            ]
        }
    }))
    .expect("the test profile");
    Api::<InstallationProfile>::all(client.clone())
        .patch(
            PROFILE,
            &PatchParams::apply("ephemera-chat-runs-tests").force(),
            &Patch::Apply(&profile),
        )
        .await
        .unwrap_or_else(|err| panic!("applying InstallationProfile {PROFILE}: {err}"));
    client
}

// ------------------------------------------------------------- adapter ----

struct Setup {
    instance: String,
    fake: FakeChat,
    dir: PathBuf,
    admins: Vec<String>,
    transcript: Arc<Mutex<Vec<String>>>,
    /// How many of the stand-in's messages are in the transcript.
    recorded: Mutex<usize>,
    cleaned: Mutex<bool>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if !*self.cleaned.lock().unwrap() {
            support::force_remove_installations(
                vec![format!("{LABEL_INSTANCE}={}", self.instance)],
                vec![],
            );
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Setup {
    async fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let instance = format!("{}-{n}", unique_name("runs"));
        let dir = std::env::temp_dir().join(format!("ephemera-chat-{instance}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, value) in [
            ("bot", BOT_TOKEN),
            ("command", COMMAND_TOKEN),
            ("signing", SIGNING_SECRET),
        ] {
            std::fs::write(dir.join(file), format!("{value}\n")).unwrap();
        }
        Self {
            instance,
            fake: FakeChat::start(BOT_TOKEN).await,
            dir,
            admins: vec![],
            transcript: Default::default(),
            recorded: Mutex::new(0),
            cleaned: Mutex::new(false),
        }
    }

    fn config(&self) -> Config {
        let dir = self.dir.display();
        let yaml = format!(
            r#"
instance: {instance}
mattermost:
  url: {url}
  botToken: {{file: {dir}/bot}}
  commandTokens: [{{file: {dir}/command}}]
slack:
  apiUrl: {url}/api
  botToken: {{file: {dir}/bot}}
  signingSecret: {{file: {dir}/signing}}
admins: {admins:?}
defaults: {{profile: {PROFILE}, ttl: 24h}}
"#,
            instance = self.instance,
            url = self.fake.url(),
            admins = self.admins,
        );
        Config::from_yaml(&yaml).expect("test config")
    }

    async fn start(&self, client: &Client) -> Adapter {
        let (client, config) = (client.clone(), self.config());
        let server = RunningServer::spawn_ready(move |listener, shutdown| {
            chat::serve(client, config, listener, shutdown)
        })
        .await;
        Adapter {
            base: server.url(""),
            http: reqwest::Client::new(),
            server,
            transcript: self.transcript.clone(),
        }
    }

    /// Removes this test's installations (finalizers stripped) and runs.
    /// A test that fails before it calls this is cleaned up on `Drop`.
    async fn cleanup(&self, client: &Client) {
        let selector = format!("{LABEL_INSTANCE}={}", self.instance);
        let runs: Api<TestRun> = Api::all(client.clone());
        let _ = runs
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&selector),
            )
            .await;
        support::force_remove_installations(vec![selector], vec![]);
        let _ = std::fs::remove_dir_all(&self.dir);
        *self.cleaned.lock().unwrap() = true;
    }

    fn transcript_line(&self, line: String) {
        self.transcript.lock().unwrap().push(line);
    }
}

struct Adapter {
    base: String,
    http: reqwest::Client,
    server: RunningServer,
    transcript: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone)]
struct User {
    platform: Platform,
    team: String,
    id: String,
    name: String,
}

impl User {
    fn new(platform: Platform, name: &str) -> Self {
        let id = unique_name(name).replace('-', "");
        let team = match platform {
            Platform::Mattermost => "team-a".to_string(),
            Platform::Slack => "T0TEAM".to_string(),
        };
        Self {
            platform,
            team,
            id,
            name: name.to_string(),
        }
    }

    fn label(&self) -> String {
        Requester {
            platform: self.platform,
            team_id: self.team.clone(),
            user_id: self.id.clone(),
            user_name: self.name.clone(),
        }
        .label_value()
    }

    /// How the platform shows a mention of this user in a command's text.
    fn mention(&self) -> String {
        match self.platform {
            Platform::Mattermost => format!("@{}", self.name),
            Platform::Slack => format!("<@{}|{}>", self.id, self.name),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Adapter {
    /// Sends `/testenv TEXT` as `user` and returns the ephemeral answer's
    /// text (and records both in the transcript).
    async fn command(&self, user: &User, text: &str) -> String {
        let (status, answer) = self.send(user, text, &unique_name("trig")).await;
        assert_eq!(status, 200, "for {text:?}");
        let value: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(value["response_type"], "ephemeral", "{value}");
        let answer = value["text"].as_str().unwrap_or_default().to_string();
        let mut transcript = self.transcript.lock().unwrap();
        transcript.push(format!("@{} > /testenv {text}", user.name));
        transcript.push(format!(
            "  (only @{} sees) {}",
            user.name,
            answer.replace('\n', "\n    ")
        ));
        answer
    }

    /// Sends the command with this trigger id; the HTTP status and body.
    async fn send(&self, user: &User, text: &str, trigger_id: &str) -> (u16, String) {
        let body = serde_urlencoded::to_string([
            ("team_id", user.team.as_str()),
            ("channel_name", "town-square"),
            ("user_id", user.id.as_str()),
            ("user_name", user.name.as_str()),
            ("command", "/testenv"),
            ("text", text),
            ("trigger_id", trigger_id),
        ])
        .unwrap();
        let path = match user.platform {
            Platform::Mattermost => "/mattermost/command",
            Platform::Slack => "/slack/command",
        };
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded");
        match user.platform {
            Platform::Mattermost => {
                request = request.header("authorization", format!("Token {COMMAND_TOKEN}"));
            }
            Platform::Slack => {
                let ts = unix_now();
                request = request
                    .header("x-slack-request-timestamp", ts.to_string())
                    .header(
                        "x-slack-signature",
                        slack_signature(SIGNING_SECRET, ts, body.as_bytes()),
                    );
            }
        }
        let response = request
            .body(body)
            .send()
            .await
            .expect("the adapter answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn kill(self) {
        self.server.kill().await;
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

// ------------------------------------------------------------- helpers ----

fn short_name(prefix: &str) -> String {
    let name = unique_name(prefix);
    assert!(name.len() <= 40, "{name}");
    name
}

/// A chat installation of `user`, told by the adapter as it comes up: its
/// progress message is posted (the thread runs report into), then the test
/// makes it Ready, as the controller would, with a link and credentials.
async fn ready_installation(client: &Client, setup: &Setup, user: &User, name: &str) -> Message {
    let ti: TestInstallation = serde_json::from_value(json!({
        "apiVersion": "ephemera.dev/v1alpha1",
        "kind": "TestInstallation",
        "metadata": {
            "name": name,
            "labels": {
                labels::SOURCE: "chat",
                labels::REQUESTER: user.label(),
                LABEL_INSTANCE: setup.instance,
            },
            "annotations": {
                "ephemera.dev/chat-platform": user.platform.as_str(),
                "ephemera.dev/chat-user-id": user.id,
                "ephemera.dev/chat-user-name": user.name,
                "ephemera.dev/chat-command": "/testenv",
            },
            "finalizers": [FINALIZER],
        },
        "spec": { "profile": PROFILE, "env": [{ "name": "KEEP", "value": "me" }] },
    }))
    .unwrap();
    Api::<TestInstallation>::all(client.clone())
        .create(&PostParams::default(), &ti)
        .await
        .unwrap_or_else(|err| panic!("creating {name}: {err}"));
    make_ready(client, setup, name).await
}

/// Waits for the installation's progress message, then makes it Ready as
/// the controller would, with a link and a credentials Secret; returns the
/// progress message.
async fn make_ready(client: &Client, setup: &Setup, name: &str) -> Message {
    let progress = wait_for_posts(
        &setup.fake,
        &format!("Setting up **{name}**"),
        &format!("Setting up *{name}*"),
        1,
    )
    .await;
    let secret_name = format!("creds-{name}");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": secret_name },
        "stringData": {
            "adminUser": "admin", "adminPassword": "admin-password-123",
            "user": "user", "userPassword": "user-password-123",
        },
    }))
    .unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), "default");
    let _ = secrets.delete(&secret_name, &DeleteParams::default()).await;
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    set_status(
        client,
        name,
        json!({
            "phase": "Ready",
            "url": format!("https://{name}.example.test"),
            "namespace": format!("ti-{name}"),
            "credentialsSecret": { "namespace": "default", "name": secret_name },
            "links": [{ "name": "logs", "url": format!("https://logs.example/?namespace=ti-{name}") }],
        }),
    )
    .await;
    progress[0].clone()
}

async fn set_status(client: &Client, name: &str, status: Value) {
    Api::<TestInstallation>::all(client.clone())
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap_or_else(|err| panic!("status of {name}: {err}"));
}

/// Writes a run's status as the run controller does when it ends.
async fn finish_run(client: &Client, run: &str, phase: &str, status: Value) {
    let mut status = status;
    status["phase"] = json!(phase);
    Api::<TestRun>::all(client.clone())
        .patch_status(
            run,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap_or_else(|err| panic!("status of run {run}: {err}"));
}

/// Waits until at least `n` stored messages contain one of the needles
/// (the Mattermost or the Slack rendering).
async fn wait_for_posts(fake: &FakeChat, mattermost: &str, slack: &str, n: usize) -> Vec<Message> {
    wait_for(
        &format!("{n} message(s) containing {mattermost:?}"),
        TIMEOUT,
        || async {
            let found: Vec<Message> = fake
                .posts()
                .into_iter()
                .filter(|m| m.text.contains(mattermost) || m.text.contains(slack))
                .collect();
            if found.len() >= n {
                Ok(found)
            } else {
                Err(fake.posts())
            }
        },
    )
    .await
}

async fn runs_of(client: &Client, installation: &str) -> Vec<TestRun> {
    Api::<TestRun>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{}={installation}", labels::INSTALLATION)))
        .await
        .unwrap()
        .items
}

async fn installation(client: &Client, name: &str) -> TestInstallation {
    Api::<TestInstallation>::all(client.clone())
        .get(name)
        .await
        .unwrap()
}

/// The run's name from a `Started ... as run `NAME`` answer.
fn started_run(answer: &str) -> String {
    let (_, rest) = answer
        .split_once("as run `")
        .unwrap_or_else(|| panic!("not a started run: {answer}"));
    rest.split('`').next().unwrap().to_string()
}

/// Adds the messages the stand-in stored since the last call to the
/// transcript (a progress message is edited in place later; its edits are
/// not repeated here).
fn record_posts(setup: &Setup) {
    let mut recorded = setup.recorded.lock().unwrap();
    let posts = setup.fake.posts();
    for m in posts.iter().skip(*recorded) {
        let place = match &m.root {
            Some(root) => format!("reply in the thread of {root} in {}", m.channel),
            None => format!("direct message {} in {}", m.id, m.channel),
        };
        setup.transcript_line(format!(
            "  [bot, {place}] {}",
            m.text.replace('\n', "\n    ")
        ));
    }
    *recorded = posts.len();
}

// --------------------------------------------------------------- tests ----

/// `test` → a TestRun with the profile's first suite, the right labels and
/// annotations → (the run ends as the controller would end it) → one DM to
/// the person who started it with the line, the counts and the excerpt,
/// and one reply in the progress message's thread → a restart tells
/// nothing again. Prints the transcript.
async fn suite_run(platform: Platform) {
    let client = plane().await;
    let setup = Setup::new().await;
    let alice = User::new(platform, "alice");
    let name = short_name("demo");
    let adapter = setup.start(&client).await;
    let answer = adapter.command(&alice, &format!("create {name}")).await;
    assert!(
        answer.starts_with(&format!("Creating `{name}`")),
        "{answer}"
    );
    let progress = make_ready(&client, &setup, &name).await;
    record_posts(&setup);
    setup.transcript_line(format!(
        "(the test, as the controller: {name} is Ready, with a logs link)"
    ));
    let ready = wait_for_posts(&setup.fake, "is ready:", "is ready:", 1).await;
    assert!(
        ready[0]
            .text
            .contains(&format!("https://logs.example/?namespace=ti-{name}")),
        "the ready DM carries the links: {}",
        ready[0].text
    );
    record_posts(&setup);

    let answer = adapter.command(&alice, &format!("actions {name}")).await;
    assert!(
        answer.contains("`e2e`")
            && answer.contains("--team <text matching [a-z0-9-]{1,32}, required>"),
        "{answer}"
    );
    let answer = adapter.command(&alice, &format!("test {name}")).await;
    let run_name = started_run(&answer);
    let run = Api::<TestRun>::all(client.clone())
        .get(&run_name)
        .await
        .unwrap();
    assert_eq!(run.spec.installation, name);
    assert_eq!(
        run.spec.test.as_deref(),
        Some("e2e"),
        "the profile's first suite"
    );
    assert_eq!(run.spec.action, None);
    assert!(run.spec.parameters.is_empty() && !run.spec.cancelled);
    let run_labels = run.labels();
    assert_eq!(run_labels[labels::SOURCE], "chat");
    assert_eq!(run_labels[labels::REQUESTER], alice.label());
    assert_eq!(run_labels[labels::INSTALLATION], name);
    assert_eq!(run_labels[LABEL_INSTANCE], setup.instance);
    assert_eq!(run.annotations()["ephemera.dev/chat-user-id"], alice.id);

    let status = adapter.command(&alice, &format!("status {name}")).await;
    assert!(
        status.contains("Links: ") && status.contains("logs.example"),
        "{status}"
    );

    setup.transcript_line(format!(
        "(the test, as the run controller: run {run_name} Succeeded with 12 passed, 0 failed, 1 skipped)"
    ));
    finish_run(
        &client,
        &run_name,
        "Succeeded",
        json!({
            "reason": "Completed",
            "message": "e2e passed: 12 passed, 0 failed, 1 skipped in 42s",
            "summary": { "passed": 12, "failed": 0, "skipped": 1 },
            "output": "ok 12 - login works\n1..13\npassword=[redacted]\n",
        }),
    )
    .await;
    wait_for_posts(&setup.fake, "e2e on", "e2e on", 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let results: Vec<Message> = setup
        .fake
        .posts_containing(&format!("e2e on {name} passed"));
    assert_eq!(
        results.len(),
        2,
        "one DM and one thread reply: {results:#?}"
    );
    let dm = results.iter().find(|m| m.root.is_none()).expect("the DM");
    let reply = results
        .iter()
        .find(|m| m.root.is_some())
        .expect("the thread reply");
    assert_eq!(
        reply.root.as_deref(),
        Some(progress.id.as_str()),
        "under the progress message"
    );
    assert_eq!(reply.channel, progress.channel);
    assert!(
        dm.text.contains("Passed: 12 · Failed: 0 · Skipped: 1"),
        "{}",
        dm.text
    );
    assert!(
        dm.text
            .contains("```\nok 12 - login works\n1..13\npassword=[redacted]\n```"),
        "{}",
        dm.text
    );
    assert!(reply.text.contains("started by alice"), "{}", reply.text);
    record_posts(&setup);

    // A restart tells nothing again.
    adapter.stop().await;
    let adapter = setup.start(&client).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        setup.fake.posts_containing(&format!("e2e on {name}")).len(),
        2
    );
    adapter.stop().await;

    let transcript = setup.transcript.lock().unwrap().join("\n");
    println!(
        "---- chat transcript ({}) ----\n{transcript}\n---- end of transcript ----",
        platform.as_str()
    );
    setup.cleanup(&client).await;
}

#[tokio::test]
async fn mattermost_suite_run_result_once_with_transcript() {
    suite_run(Platform::Mattermost).await;
}

#[tokio::test]
async fn slack_suite_run_result_once_with_transcript() {
    suite_run(Platform::Slack).await;
}

/// Who may do what: a non-requester is refused runs and changes; shared,
/// they may run, cancel, update and restart, not share; unshared, refused
/// again. `update`, `restart`, `share`, `unshare` patch the spec; a
/// secret-looking env value is refused and changes nothing.
async fn permissions_and_verbs(platform: Platform) {
    let client = plane().await;
    let mut setup = Setup::new().await;
    let alice = User::new(platform, "alice");
    let bob = User::new(platform, "bob");
    let carol = User::new(platform, "carol");
    setup.fake.add_user("bob", &bob.id);
    setup.admins = vec![carol.label()];
    let name = short_name("perm");
    let adapter = setup.start(&client).await;
    ready_installation(&client, &setup, &alice, &name).await;

    let refused = adapter.command(&bob, &format!("test {name}")).await;
    assert!(
        refused.contains(
            "Only the person who asked for it, people it is shared with, or admins may start e2e"
        ),
        "{refused}"
    );
    assert!(refused.contains("nothing was started"), "{refused}");
    let refused = adapter.command(&bob, &format!("restart {name}")).await;
    assert!(
        refused.starts_with("Only the person who created"),
        "{refused}"
    );
    let refused = adapter
        .command(&bob, &format!("share {name} {}", bob.mention()))
        .await;
    assert!(
        refused.starts_with("Only the person who created"),
        "{refused}"
    );
    assert!(
        runs_of(&client, &name).await.is_empty(),
        "a refused run creates nothing"
    );

    // Slack sends an id only for an escaped mention; plain text is refused.
    if platform == Platform::Slack {
        let answer = adapter.command(&alice, &format!("share {name} @bob")).await;
        assert!(answer.contains("just text"), "{answer}");
    } else {
        let answer = adapter
            .command(&alice, &format!("share {name} @nobody"))
            .await;
        assert!(answer.contains("There is no user @nobody"), "{answer}");
    }
    assert!(
        installation(&client, &name)
            .await
            .spec
            .shared_with
            .is_empty()
    );

    let answer = adapter
        .command(&alice, &format!("share {name} {}", bob.mention()))
        .await;
    assert!(answer.contains("may now manage"), "{answer}");
    let ti = installation(&client, &name).await;
    assert_eq!(ti.spec.shared_with, vec![bob.label()]);
    let answer = adapter
        .command(&alice, &format!("share {name} {}", bob.mention()))
        .await;
    assert!(answer.contains("already shared"), "{answer}");
    let status = adapter.command(&alice, &format!("status {name}")).await;
    assert!(status.contains("Shared with: @bob"), "{status}");
    let list = adapter.command(&bob, "list").await;
    assert!(
        list.contains(&name),
        "shared installations are in bob's list: {list}"
    );

    // Shared: bob runs, cancels, updates and restarts, but may not share.
    let answer = adapter.command(&bob, &format!("test {name} smoke")).await;
    let run_name = started_run(&answer);
    let run = Api::<TestRun>::all(client.clone())
        .get(&run_name)
        .await
        .unwrap();
    assert_eq!(run.spec.test.as_deref(), Some("smoke"));
    assert_eq!(run.labels()[labels::REQUESTER], bob.label());
    let refused = adapter.command(&bob, &format!("run {name} reindex")).await;
    assert!(
        refused.contains("Only admins may start reindex"),
        "{refused}"
    );
    let answer = adapter
        .command(&carol, &format!("run {name} reindex"))
        .await;
    assert!(
        answer.contains("Started action `reindex`"),
        "an admin may: {answer}"
    );
    let refused = adapter.command(&bob, &format!("share {name} @carol")).await;
    assert!(
        refused.starts_with("Only the person who created"),
        "{refused}"
    );

    let dave = User::new(platform, "dave");
    let refused = adapter
        .command(&dave, &format!("cancel {name} smoke"))
        .await;
    assert!(
        refused.starts_with("Only the person who started a run"),
        "{refused}"
    );
    let run = Api::<TestRun>::all(client.clone())
        .get(&run_name)
        .await
        .unwrap();
    assert!(!run.spec.cancelled, "a stranger's cancel changes nothing");
    let answer = adapter.command(&bob, &format!("cancel {name} smoke")).await;
    assert!(answer.contains(&run_name), "{answer}");
    let run = Api::<TestRun>::all(client.clone())
        .get(&run_name)
        .await
        .unwrap();
    assert!(run.spec.cancelled, "cancel sets spec.cancelled");
    // The run controller ends it Cancelled: bob, who started it, is told.
    finish_run(
        &client,
        &run_name,
        "Cancelled",
        json!({ "reason": "CancelledByUser", "message": "cancelled after 3s" }),
    )
    .await;
    let told = format!("smoke on {name} was cancelled");
    let found = wait_for_posts(&setup.fake, &told, &told, 2).await;
    let dm = found.iter().find(|m| m.root.is_none()).expect("a DM");
    assert!(
        dm.channel.contains(&bob.id),
        "the DM goes to bob, who started it: {found:#?}"
    );
    let reply = found
        .iter()
        .find(|m| m.root.is_some())
        .expect("a thread reply");
    assert!(
        reply.channel.contains(&alice.id),
        "the thread is alice's progress message: {found:#?}"
    );
    assert!(reply.text.contains("started by bob"), "{}", reply.text);
    let answer = adapter.command(&bob, &format!("cancel {name} smoke")).await;
    assert!(answer.contains("nothing to cancel"), "{answer}");

    let answer = adapter
        .command(
            &bob,
            &format!("update {name} --version 9.12.0 --env FEATURE=on,KEEP=changed"),
        )
        .await;
    assert!(answer.starts_with("Updating"), "{answer}");
    let ti = installation(&client, &name).await;
    assert_eq!(ti.spec.version.as_deref(), Some("9.12.0"));
    let env: BTreeMap<String, Option<String>> = ti
        .spec
        .env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    assert_eq!(env["KEEP"].as_deref(), Some("changed"));
    assert_eq!(env["FEATURE"].as_deref(), Some("on"));
    let refused = adapter
        .command(&alice, &format!("update {name} --env API_TOKEN=abc"))
        .await;
    assert!(refused.contains("looks like a secret"), "{refused}");
    let refused = adapter
        .command(&alice, &format!("update {name} --size huge"))
        .await;
    assert!(refused.contains("size `huge` is not offered"), "{refused}");
    let refused = adapter
        .command(&alice, &format!("update {name} --image evil.example/miner"))
        .await;
    assert!(
        refused.contains("image `evil.example/miner` is not allowed by profile"),
        "{refused}"
    );
    let unchanged = installation(&client, &name).await;
    assert_eq!(unchanged.spec.image, None);
    assert_eq!(
        unchanged.spec.env, ti.spec.env,
        "a refused update changes nothing"
    );
    assert_eq!(unchanged.spec.size, None);

    let answer = adapter.command(&bob, &format!("restart {name}")).await;
    assert!(answer.starts_with("Restarting"), "{answer}");
    let restarted = installation(&client, &name)
        .await
        .spec
        .restarted_at
        .expect("restartedAt is set");
    assert!(
        restarted.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "{restarted}"
    );

    let answer = adapter
        .command(&alice, &format!("unshare {name} {}", bob.mention()))
        .await;
    assert!(answer.contains("may no longer manage"), "{answer}");
    assert!(
        installation(&client, &name)
            .await
            .spec
            .shared_with
            .is_empty()
    );
    let count = runs_of(&client, &name).await.len();
    let refused = adapter.command(&bob, &format!("test {name}")).await;
    assert!(refused.contains("nothing was started"), "{refused}");
    assert_eq!(runs_of(&client, &name).await.len(), count);
    let refused = adapter.command(&bob, &format!("restart {name}")).await;
    assert!(
        refused.starts_with("Only the person who created"),
        "{refused}"
    );

    adapter.stop().await;
    setup.cleanup(&client).await;
}

#[tokio::test]
async fn mattermost_permissions_share_update_restart() {
    permissions_and_verbs(Platform::Mattermost).await;
}

#[tokio::test]
async fn slack_permissions_share_update_restart() {
    permissions_and_verbs(Platform::Slack).await;
}

/// Every kind of bad parameter, and injection attempts, are answered at
/// once and create nothing; a valid run carries its parameters as typed,
/// with defaults filled in.
async fn parameters(platform: Platform) {
    let client = plane().await;
    let setup = Setup::new().await;
    let alice = User::new(platform, "alice");
    let name = short_name("par");
    let adapter = setup.start(&client).await;
    ready_installation(&client, &setup, &alice, &name).await;

    let cases = [
        (
            "--team qa --page two",
            "parameter --page must be a whole number, not \"two\"",
        ),
        (
            "--team qa --page 0",
            "parameter --page must be between 1 and 100, not 0",
        ),
        (
            "--team qa --page 101",
            "parameter --page must be between 1 and 100, not 101",
        ),
        (
            "--team qa --format xml",
            "parameter --format must be one of json, text, not \"xml\"",
        ),
        ("--team QA", "parameter --team must match [a-z0-9-]{1,32}"),
        ("--page 2", "parameter --team is required"),
        (
            "--team qa --colour red",
            "unknown parameter --colour; this action takes --team, --page, --format",
        ),
        ("--team 'qa; rm -rf /'", "parameter --team must match"),
        ("--team '$(reboot)'", "parameter --team must match"),
        ("--team '`id`'", "parameter --team must match"),
        (
            "--team 'qa\nrm -rf /'",
            "parameter --team may not contain control characters",
        ),
        ("--team qa; rm -rf /", "unexpected argument \"rm\""),
        (
            "--team qa --page '1 && reboot'",
            "parameter --page must be a whole number",
        ),
        (
            "--team qa --format 'json|sh'",
            "parameter --format must be one of json, text",
        ),
    ];
    for (args, problem) in cases {
        let answer = adapter
            .command(&alice, &format!("run {name} list-users {args}"))
            .await;
        // The answer starts the sentence with a capital.
        assert!(
            answer.to_lowercase().contains(&problem.to_lowercase()),
            "for {args:?}: {answer}"
        );
        assert!(answer.starts_with("⚠️"), "for {args:?}: {answer}");
    }
    let answer = adapter
        .command(&alice, &format!("run {name} drop-tables"))
        .await;
    assert!(
        answer.contains("has no action drop-tables; it has list-users, reindex"),
        "{answer}"
    );
    let answer = adapter.command(&alice, &format!("test {name} load")).await;
    assert!(
        answer.contains("has no test suite load; it has e2e, smoke"),
        "{answer}"
    );
    assert!(
        runs_of(&client, &name).await.is_empty(),
        "bad input creates nothing"
    );

    let answer = adapter
        .command(
            &alice,
            &format!("run {name} list-users --team qa-team --format=json"),
        )
        .await;
    assert!(answer.contains("(read-only)"), "{answer}");
    let run = Api::<TestRun>::all(client.clone())
        .get(&started_run(&answer))
        .await
        .unwrap();
    assert_eq!(run.spec.action.as_deref(), Some("list-users"));
    assert_eq!(
        run.spec.parameters,
        BTreeMap::from([
            ("team".to_string(), "qa-team".to_string()),
            ("page".to_string(), "1".to_string()),
            ("format".to_string(), "json".to_string()),
        ])
    );
    assert_eq!(runs_of(&client, &name).await.len(), 1);
    adapter.stop().await;
    setup.cleanup(&client).await;
}

#[tokio::test]
async fn mattermost_parameter_errors_and_injections_create_nothing() {
    parameters(Platform::Mattermost).await;
}

#[tokio::test]
async fn slack_parameter_errors_and_injections_create_nothing() {
    parameters(Platform::Slack).await;
}

/// The adapter is killed after the run was started; the run ends while it
/// is down; after the restart the result arrives exactly once, also when
/// the platform stored the DM and the thread reply but their answers were
/// lost (the adapter finds them by their markers: Slack's replies only
/// through `conversations.replies`).
async fn killed_before_the_result(platform: Platform) {
    let client = plane().await;
    let setup = Setup::new().await;
    let alice = User::new(platform, "alice");
    let name = short_name("kill");
    let adapter = setup.start(&client).await;
    ready_installation(&client, &setup, &alice, &name).await;
    wait_for_posts(&setup.fake, "is ready:", "is ready:", 1).await;
    let first = started_run(&adapter.command(&alice, &format!("test {name} e2e")).await);
    let second = started_run(
        &adapter
            .command(&alice, &format!("run {name} list-users --team qa"))
            .await,
    );
    adapter.kill().await;

    finish_run(
        &client,
        &first,
        "Failed",
        json!({
            "reason": "TestsFailed",
            "message": "e2e failed: 10 passed, 2 failed, 0 skipped in 40s",
            "summary": { "passed": 10, "failed": 2, "skipped": 0 },
            "output": "not ok 11\nnot ok 12\n",
        }),
    )
    .await;
    finish_run(
        &client,
        &second,
        "Succeeded",
        json!({
            "reason": "Completed",
            "message": "list-users: 3 users",
            "output": "alice\nbob\ncarol\n",
        }),
    )
    .await;

    // Every post (two DMs, two thread replies) is stored and its answer lost.
    let post_path = match platform {
        Platform::Mattermost => "/api/v4/posts",
        Platform::Slack => "/api/chat.postMessage",
    };
    setup.fake.fault(post_path, Fault::CommitThenFail, 4);
    // And opening the DM is throttled once (429 with Retry-After).
    let open_path = match platform {
        Platform::Mattermost => "/api/v4/channels/direct",
        Platform::Slack => "/api/conversations.open",
    };
    setup.fake.fault(
        open_path,
        Fault::Status(reqwest::StatusCode::TOO_MANY_REQUESTS),
        1,
    );
    let adapter = setup.start(&client).await;
    let failed = format!("e2e on {name} failed");
    let action = format!("action list-users on {name} succeeded");
    wait_for_posts(&setup.fake, &failed, &failed, 2).await;
    wait_for_posts(&setup.fake, &action, &action, 2).await;
    adapter.kill().await;
    let adapter = setup.start(&client).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for needle in [&failed, &action] {
        let found = setup.fake.posts_containing(needle);
        assert_eq!(
            found.len(),
            2,
            "one DM and one thread reply for {needle}: {found:#?}"
        );
        assert_eq!(
            found.iter().filter(|m| m.root.is_some()).count(),
            1,
            "{found:#?}"
        );
    }
    let calls = setup.fake.calls();
    let lost = calls.iter().filter(|c| c.status == 502).count();
    assert_eq!(lost, 4, "four answers were lost");
    // The lost thread reply was looked for where the platform lists it.
    let looked_up = calls.iter().any(|c| match platform {
        Platform::Mattermost => c.method == "GET" && c.path.ends_with("/posts"),
        Platform::Slack => c.path == "/api/conversations.replies",
    });
    assert!(looked_up, "{calls:#?}");
    for run in [&first, &second] {
        let run = Api::<TestRun>::all(client.clone()).get(run).await.unwrap();
        let memory = &run.annotations()["ephemera.dev/notified-chat"];
        assert!(
            memory.contains("\"result\":true") && memory.contains("\"threaded\":true"),
            "{memory}"
        );
        assert!(!memory.contains("pending"), "{memory}");
    }
    adapter.stop().await;
    setup.cleanup(&client).await;
}

#[tokio::test]
async fn mattermost_killed_adapter_tells_each_result_exactly_once() {
    killed_before_the_result(Platform::Mattermost).await;
}

#[tokio::test]
async fn slack_killed_adapter_tells_each_result_exactly_once() {
    killed_before_the_result(Platform::Slack).await;
}

/// A replayed `test` request (same trigger id), also after a restart that
/// emptied the adapter's memory of trigger ids, starts nothing.
#[tokio::test]
async fn a_replayed_run_request_starts_nothing() {
    let client = plane().await;
    let setup = Setup::new().await;
    let alice = User::new(Platform::Mattermost, "alice");
    let name = short_name("replay");
    let adapter = setup.start(&client).await;
    ready_installation(&client, &setup, &alice, &name).await;
    let trigger = unique_name("trig");
    let text = format!("test {name}");
    let (status, answer) = adapter.send(&alice, &text, &trigger).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("Started suite"), "{answer}");
    let (status, _) = adapter.send(&alice, &text, &trigger).await;
    assert_eq!(status, 401, "the same trigger id again is a replay");
    adapter.stop().await;
    let adapter = setup.start(&client).await;
    let (status, _) = adapter.send(&alice, &text, &trigger).await;
    assert_eq!(
        status, 401,
        "recorded on the run, so refused after a restart too"
    );
    assert_eq!(runs_of(&client, &name).await.len(), 1);
    adapter.stop().await;
    setup.cleanup(&client).await;
}

/// Results are told concurrently: while posts to alice's DM channel hang
/// (a slow platform), bob's result still arrives at once, and alice's
/// arrives once the platform answers.
#[tokio::test]
async fn a_slow_platform_for_one_person_does_not_delay_another() {
    let client = plane().await;
    let setup = Setup::new().await;
    let alice = User::new(Platform::Slack, "alice");
    let bob = User::new(Platform::Slack, "bob");
    let adapter = setup.start(&client).await;
    let mut runs = Vec::new();
    for user in [&alice, &bob] {
        let name = short_name("slow");
        ready_installation(&client, &setup, user, &name).await;
        let run = started_run(&adapter.command(user, &format!("test {name}")).await);
        runs.push((name, run));
    }
    wait_for_posts(&setup.fake, "is ready:", "is ready:", 2).await;
    let slow = Duration::from_secs(8);
    setup.fake.slow_channel(&format!("D-{}", alice.id), slow);
    let begin = std::time::Instant::now();
    for (_, run) in &runs {
        finish_run(
            &client,
            run,
            "Succeeded",
            json!({ "message": "all passed" }),
        )
        .await;
    }
    let bobs = format!("e2e on {} succeeded", runs[1].0);
    wait_for_posts(&setup.fake, &bobs, &bobs, 2).await;
    assert!(
        begin.elapsed() < slow / 2,
        "bob waited {:?} behind alice's slow channel",
        begin.elapsed()
    );
    let alices = format!("e2e on {} succeeded", runs[0].0);
    let found = wait_for_posts(&setup.fake, &alices, &alices, 2).await;
    assert!(
        begin.elapsed() >= slow,
        "alice's result waited for her channel"
    );
    assert_eq!(found.len(), 2);
    adapter.stop().await;
    setup.cleanup(&client).await;
}

/// The whole way with the real controller and run controller: `create` in
/// chat → the controller builds the installation and it becomes Ready (the
/// Ready DM) → `test` → the run's Job ends on the fake node with a report →
/// the person who started it gets the result once by DM and once in the
/// progress thread, with the counts and output the Job reported.
#[tokio::test]
async fn a_suite_run_on_the_real_controller_reaches_the_person_who_started_it() {
    let client = plane().await;
    let controller = support::controller_for_this_binary();
    let profile = unique_name("chat-e2e");
    let spec: InstallationProfile = serde_json::from_value(json!({
        "apiVersion": "ephemera.dev/v1alpha1",
        "kind": "InstallationProfile",
        "metadata": { "name": profile },
        "spec": {
            "image": "registry.example/team/app",
            "defaultVersion": "1.0.0",
            "tests": [{
                "name": "e2e", "image": "run.invalid/pass",
                "env": [{ "name": "EPHEMERA_FAKE_REPORT",
                          "value": "{\"summary\":{\"passed\":5,\"failed\":0,\"skipped\":2},\"output\":\"five passed at {{ url }}\"}" }]
            }]
        }
    }))
    .unwrap();
    let profiles: Api<InstallationProfile> = Api::all(client.clone());
    profiles
        .create(&PostParams::default(), &spec)
        .await
        .unwrap();
    let setup = Setup::new().await;
    let alice = User::new(Platform::Mattermost, "alice");
    let name = short_name("real");
    let adapter = setup.start(&client).await;
    let answer = adapter
        .command(&alice, &format!("create {name} --profile {profile}"))
        .await;
    assert!(
        answer.starts_with(&format!("Creating `{name}`")),
        "{answer}"
    );
    // Hand the installation to this test binary's controller.
    Api::<TestInstallation>::all(client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "labels": { support::TEST_RUN_LABEL: controller } } }),
            ),
        )
        .await
        .unwrap();
    wait_for_posts(&setup.fake, "is ready:", "is ready:", 1).await;

    let answer = adapter.command(&alice, &format!("test {name}")).await;
    let run_name = started_run(&answer);
    wait_for_posts(&setup.fake, "e2e on", "e2e on", 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let results = setup
        .fake
        .posts_containing(&format!("e2e on {name} passed"));
    assert_eq!(
        results.len(),
        2,
        "one DM and one thread reply: {results:#?}"
    );
    let dm = results.iter().find(|m| m.root.is_none()).expect("the DM");
    assert!(
        dm.text.contains("Passed: 5 · Failed: 0 · Skipped: 2"),
        "{}",
        dm.text
    );
    let url = installation(&client, &name)
        .await
        .status
        .and_then(|s| s.url)
        .expect("a Ready installation has a URL");
    assert!(
        dm.text.contains(&format!("five passed at {url}")),
        "the Job's own report, its template filled by the controller: {}",
        dm.text
    );
    let run = Api::<TestRun>::all(client.clone())
        .get(&run_name)
        .await
        .unwrap();
    assert_eq!(
        run.phase().map(|p| p.to_string()).as_deref(),
        Some("Succeeded")
    );

    adapter.stop().await;
    setup.cleanup(&client).await;
    let _ = profiles.delete(&profile, &DeleteParams::default()).await;
}
