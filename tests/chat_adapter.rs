//! The chat adapter against the real local control plane and the real
//! controller, with local HTTP servers playing Mattermost's and Slack's APIs
//! and recording what they get.
//!
//! One controller runs per test binary (`support::controller_with`). It only
//! reconciles installations whose `ephemera.dev/chat-instance` label is one of
//! this binary's adapter instances; each test's adapter has an instance of its
//! own, so tests never see each other's installations or messages. The
//! controller writes `/status` and the `credentials` Secret; the tests read
//! the expected credentials from that Secret.

mod support;

use std::{
    collections::HashMap,
    io::Write,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use ephemera::{
    adapters::chat::{
        self, FINALIZER, LABEL_INSTANCE,
        auth::slack_signature,
        config::Config,
        messenger::{Platform, Requester},
    },
    api::{
        InstallationProfile, Phase, TestInstallation, conditions, credentials::Credentials, labels,
    },
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{client, server::RunningServer, unique_name, wait_for};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(30);
const COMMAND_TOKEN: &str = "mm-command-token-0123456789";
const OLD_COMMAND_TOKEN: &str = "mm-command-token-previous";
const SIGNING_SECRET: &str = "slack-signing-secret-abcdef";
const BOT_TOKEN: &str = "bot-token-xyz";

// ---------------------------------------------------------------- logs ----

/// Everything the adapter logs in this test binary, to prove no credential
/// is ever in it.
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("debug,hyper=info,hyper_util=info,h2=info,tower=info")
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buffer
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs_text() -> String {
    String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned()
}

// --------------------------------------------------- plane and controller ----

/// Adapter instances of this test binary; each `Setup` takes the next one.
const INSTANCES: usize = 16;
/// Profile every chat-created installation uses unless the command names one.
/// Applied (idempotently) by every test; its content never changes, so test
/// binaries running at the same time share it safely.
const PROFILE: &str = "chat-adapter-tests";
/// How long the controller may take to bring an installation to a phase, or
/// to delete it (namespace included).
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(90);

/// The adapter instances of this test binary: `<unique>-0` … `<unique>-15`.
fn instances() -> &'static [String] {
    static INSTANCE_NAMES: OnceLock<Vec<String>> = OnceLock::new();
    INSTANCE_NAMES.get_or_init(|| {
        let run = unique_name("chat");
        (0..INSTANCES).map(|i| format!("{run}-{i}")).collect()
    })
}

/// The next unused adapter instance of this test binary.
fn next_instance() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let i = NEXT.fetch_add(1, Ordering::Relaxed);
    instances()
        .get(i)
        .unwrap_or_else(|| {
            panic!("more than {INSTANCES} adapters in one test binary; raise INSTANCES")
        })
        .clone()
}

/// The local control plane with the CRDs installed, the real controller
/// running for this binary's adapter instances, and the test profile in
/// place. Every test starts here.
async fn plane() -> Client {
    captured_logs();
    let selector = format!("{LABEL_INSTANCE} in ({})", instances().join(","));
    // Installs the CRDs before it returns; the first call in the binary
    // decides the selector, and every call passes the same one.
    support::controller_with(|config| config.installation_selector = Some(selector));
    let client = client().await;
    let profile: InstallationProfile = serde_json::from_value(json!({
        "apiVersion": "ephemera.dev/v1alpha1",
        "kind": "InstallationProfile",
        "metadata": { "name": PROFILE },
        "spec": {
            "image": "registry.example/team/app",
            "allowedImages": ["missing.invalid/**"],
            "defaultVersion": "9.11.0",
            "containerPort": 8065,
            "healthPath": "/api/v4/system/ping",
            "seed": { "command": ["/bin/sh", "-c", "echo seeding"] },
            "env": [{ "name": "SITE_URL", "value": "{{ url }}" }]
        }
    }))
    .expect("the test profile");
    Api::<InstallationProfile>::all(client.clone())
        .patch(
            PROFILE,
            &PatchParams::apply("ephemera-chat-tests").force(),
            &Patch::Apply(&profile),
        )
        .await
        .unwrap_or_else(|err| panic!("applying InstallationProfile {PROFILE}: {err}"));
    client
}

/// Waits until the installation has `phase`, and returns it.
async fn wait_for_phase(client: &Client, name: &str, phase: Phase) -> TestInstallation {
    let api: Api<TestInstallation> = Api::all(client.clone());
    wait_for(
        &format!("{name} to be {phase}"),
        CONTROLLER_TIMEOUT,
        || async {
            let ti = api.get(name).await.map_err(|e| e.to_string())?;
            if ti.phase() == Some(phase) {
                Ok(ti)
            } else {
                Err(format!("{:#?}", ti.status))
            }
        },
    )
    .await
}

/// The credentials the controller wrote for `ti` (its `credentials` Secret).
async fn credentials_of(client: &Client, ti: &TestInstallation) -> Credentials {
    let reference = ti
        .status
        .as_ref()
        .and_then(|s| s.credentials_secret.clone())
        .unwrap_or_else(|| panic!("no status.credentialsSecret in {:#?}", ti.status));
    let secret = Api::<Secret>::namespaced(client.clone(), &reference.namespace)
        .get(&reference.name)
        .await
        .unwrap_or_else(|err| {
            panic!(
                "reading Secret {}/{}: {err}",
                reference.namespace, reference.name
            )
        });
    let credentials = Credentials::from_secret(&secret).expect("every credential key is set");
    for value in [&credentials.admin_password, &credentials.user_password] {
        assert!(value.len() >= 12, "a generated password is long enough");
    }
    credentials
}

// ------------------------------------------------- fake chat platform ----

#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
    status: u16,
    /// The id the fake gave a new message (Mattermost post id, Slack ts),
    /// also when the answer was lost (commit-then-fail).
    created_id: Option<String>,
    /// The marker the adapter put on a new message.
    key: Option<String>,
    at: Instant,
}

/// How the fake answers the next requests to one path.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Answers this status without doing anything (429 with `Retry-After`
    /// when `retry_after` is set; 403 for Slack-style "secondary" limits).
    Status(StatusCode),
    /// Does the work (a post is stored), then answers 502: the answer is lost.
    CommitThenFail,
    /// A permanent refusal: Slack `{"ok":false,"error":"user_not_found"}`,
    /// Mattermost 403.
    Refuse,
}

#[derive(Default)]
struct FakeState {
    calls: Vec<Call>,
    /// Path → how many more requests get this fault (`u32::MAX`: always).
    faults: HashMap<String, (u32, Fault)>,
    /// Channel → how long posts to it take.
    slow: HashMap<String, Duration>,
    next_id: u32,
}

/// Plays Mattermost's REST API v4 and Slack's Web API on 127.0.0.1.
#[derive(Clone)]
struct FakeChat {
    addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

/// A message as the requester sees it in the end.
#[derive(Debug, Clone)]
struct Message {
    id: String,
    channel: String,
    text: String,
    key: Option<String>,
}

impl FakeChat {
    async fn start() -> Self {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let app = Router::new().fallback(fake_api).with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn fail(&self, path: &str, status: StatusCode, times: u32) {
        self.fault(path, Fault::Status(status), times);
    }

    fn fault(&self, path: &str, fault: Fault, times: u32) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert(path.to_string(), (times, fault));
    }

    fn slow_channel(&self, channel: &str, delay: Duration) {
        self.state
            .lock()
            .unwrap()
            .slow
            .insert(channel.to_string(), delay);
    }

    fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// New messages (posts the fake stored, answered or not), in order.
    fn posts(&self) -> Vec<Message> {
        self.calls()
            .into_iter()
            .filter(|c| c.created_id.is_some())
            .map(|c| Message {
                id: c.created_id.clone().unwrap(),
                channel: c.body["channel_id"]
                    .as_str()
                    .or(c.body["channel"].as_str())
                    .unwrap_or_default()
                    .to_string(),
                text: c.body["message"]
                    .as_str()
                    .or(c.body["text"].as_str())
                    .unwrap_or_default()
                    .to_string(),
                key: c.key.clone(),
            })
            .collect()
    }

    /// Successful edits, in order: (message id, new text).
    fn updates(&self) -> Vec<(String, String)> {
        self.calls()
            .into_iter()
            .filter(|c| c.status == 200)
            .filter_map(|c| {
                if c.method == "PUT"
                    && let Some(id) = c
                        .path
                        .strip_prefix("/api/v4/posts/")
                        .and_then(|p| p.strip_suffix("/patch"))
                {
                    Some((id.to_string(), c.body["message"].as_str()?.to_string()))
                } else if c.path == "/api/chat.update" {
                    Some((
                        c.body["ts"].as_str()?.to_string(),
                        c.body["text"].as_str()?.to_string(),
                    ))
                } else {
                    None
                }
            })
            .collect()
    }

    fn posts_containing(&self, needle: &str) -> Vec<Message> {
        self.posts()
            .into_iter()
            .filter(|m| m.text.contains(needle))
            .collect()
    }

    /// Waits until at least `n` posts contain `needle`.
    async fn wait_for_posts(&self, needle: &str, n: usize) -> Vec<Message> {
        wait_for(
            &format!("{n} message(s) containing {needle:?}"),
            TIMEOUT,
            || async {
                let found = self.posts_containing(needle);
                if found.len() >= n {
                    Ok(found)
                } else {
                    Err(self.posts())
                }
            },
        )
        .await
    }
}

/// The marker the adapter puts on a message: Mattermost `props`, Slack
/// `metadata`.
fn marker_of(body: &Value) -> Option<String> {
    body["props"]["ephemera_key"]
        .as_str()
        .or(body["metadata"]["event_payload"]["key"].as_str())
        .map(str::to_string)
}

async fn fake_api(
    State(state): State<Arc<Mutex<FakeState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    let path = uri.path().to_string();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = serde_json::from_slice(&raw).unwrap_or_else(|_| {
        // Form-encoded (Slack read methods).
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&raw).unwrap_or_default();
        Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    });
    let slow = {
        let state = state.lock().unwrap();
        let channel = body["channel_id"].as_str().or(body["channel"].as_str());
        match (path.as_str(), channel) {
            ("/api/v4/posts" | "/api/chat.postMessage", Some(channel)) => {
                state.slow.get(channel).copied()
            }
            _ => None,
        }
    };
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    let mut state = state.lock().unwrap();
    let mut call = Call {
        method: method.to_string(),
        path: path.clone(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        content_type,
        body: body.clone(),
        status: 200,
        created_id: None,
        key: None,
        at: Instant::now(),
    };
    let mut fault = None;
    if let Some((left, f)) = state.faults.get_mut(&path)
        && *left > 0
    {
        if *left != u32::MAX {
            *left -= 1;
        }
        fault = Some(*f);
    }
    match fault {
        Some(Fault::Status(status)) => {
            call.status = status.as_u16();
            state.calls.push(call);
            if status == StatusCode::TOO_MANY_REQUESTS {
                return (status, [("retry-after", "1")], "slow down").into_response();
            }
            return (status, "try later").into_response();
        }
        Some(Fault::Refuse) => {
            let slack = path.starts_with("/api/") && !path.starts_with("/api/v4/");
            call.status = if slack { 200 } else { 403 };
            state.calls.push(call);
            return if slack {
                Json(json!({ "ok": false, "error": "user_not_found" })).into_response()
            } else {
                (
                    StatusCode::FORBIDDEN,
                    Json(json!({ "message": "user is deactivated" })),
                )
                    .into_response()
            };
        }
        _ => {}
    }
    state.next_id += 1;
    let n = state.next_id;
    // Stored messages of a channel, newest first: (id, key).
    let stored = |state: &FakeState, channel: &str| -> Vec<(String, Option<String>)> {
        let mut found: Vec<(String, Option<String>)> = state
            .calls
            .iter()
            .filter(|c| c.created_id.is_some())
            .filter(|c| {
                c.body["channel_id"].as_str().or(c.body["channel"].as_str()) == Some(channel)
            })
            .map(|c| (c.created_id.clone().unwrap(), c.key.clone()))
            .collect();
        found.reverse();
        found
    };
    let (status, reply) = match (method.as_str(), path.as_str()) {
        ("GET", "/api/v4/users/me") => (StatusCode::OK, json!({ "id": "bot-user-id" })),
        ("POST", "/api/v4/channels/direct") => (
            StatusCode::CREATED,
            json!({ "id": format!("dm-{}", body[1].as_str().unwrap_or("?")) }),
        ),
        ("GET", p) if p.starts_with("/api/v4/channels/") && p.ends_with("/posts") => {
            let channel = p
                .trim_start_matches("/api/v4/channels/")
                .trim_end_matches("/posts");
            let found = stored(&state, channel);
            let order: Vec<&String> = found.iter().map(|(id, _)| id).collect();
            let posts: serde_json::Map<String, Value> = found
                .iter()
                .map(|(id, key)| {
                    (
                        id.clone(),
                        json!({ "id": id, "channel_id": channel, "props": { "ephemera_key": key } }),
                    )
                })
                .collect();
            (StatusCode::OK, json!({ "order": order, "posts": posts }))
        }
        ("POST", "/api/v4/posts") => {
            let id = format!("post-{n}");
            call.created_id = Some(id.clone());
            call.key = marker_of(&body);
            (
                StatusCode::CREATED,
                json!({ "id": id, "channel_id": body["channel_id"] }),
            )
        }
        ("PUT", p) if p.starts_with("/api/v4/posts/") && p.ends_with("/patch") => {
            (StatusCode::OK, json!({ "id": "patched" }))
        }
        ("POST", "/api/conversations.open") => (
            StatusCode::OK,
            json!({ "ok": true, "channel": { "id": format!("D-{}", body["users"].as_str().unwrap_or("?")) } }),
        ),
        ("POST", "/api/conversations.history") => {
            let channel = body["channel"].as_str().unwrap_or_default();
            let messages: Vec<Value> = stored(&state, channel)
                .into_iter()
                .map(|(ts, key)| {
                    json!({
                        "ts": ts,
                        "metadata": { "event_type": "ephemera_notice", "event_payload": { "key": key } },
                    })
                })
                .collect();
            (StatusCode::OK, json!({ "ok": true, "messages": messages }))
        }
        ("POST", "/api/chat.postMessage") => {
            let ts = format!("1700000000.{n:06}");
            call.created_id = Some(ts.clone());
            call.key = marker_of(&body);
            (
                StatusCode::OK,
                json!({ "ok": true, "channel": body["channel"], "ts": ts }),
            )
        }
        ("POST", "/api/chat.update") => (
            StatusCode::OK,
            json!({ "ok": true, "channel": body["channel"], "ts": body["ts"] }),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            json!({ "error": "no such endpoint" }),
        ),
    };
    if matches!(fault, Some(Fault::CommitThenFail)) {
        call.status = 502;
        state.calls.push(call);
        return (StatusCode::BAD_GATEWAY, "bad gateway").into_response();
    }
    call.status = status.as_u16();
    state.calls.push(call);
    (status, Json(reply)).into_response()
}

// ------------------------------------------------------------- adapter ----

/// The adapter's settings for one test: its own instance (so parallel tests
/// never see each other's installations) and secrets in files.
struct Setup {
    instance: String,
    fake: FakeChat,
    dir: PathBuf,
    max_per_user: usize,
    admins: Vec<String>,
    expiry_warning: &'static str,
    give_up_after: &'static str,
    /// Set once `cleanup` ran; until then, a panicking test's installations
    /// are removed when the `Setup` is dropped.
    cleaned: bool,
}

impl Setup {
    async fn new() -> Self {
        Self::with_instance(next_instance()).await
    }

    /// An adapter instance no controller reconciles: the test writes the
    /// installations' status itself, so it runs in milliseconds.
    async fn unmanaged() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self::with_instance(format!("{}-u{n}", unique_name("chat"))).await
    }

    async fn with_instance(instance: String) -> Self {
        let dir = std::env::temp_dir().join(format!("ephemera-chat-{instance}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, value) in [
            ("bot", BOT_TOKEN),
            ("command", COMMAND_TOKEN),
            ("command-old", OLD_COMMAND_TOKEN),
            ("signing", SIGNING_SECRET),
        ] {
            std::fs::write(dir.join(file), format!("{value}\n")).unwrap();
        }
        Self {
            instance,
            fake: FakeChat::start().await,
            dir,
            max_per_user: 3,
            admins: vec![],
            expiry_warning: "1h",
            give_up_after: "10m",
            cleaned: false,
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
  commandTokens:
    - {{file: {dir}/command}}
    - {{file: {dir}/command-old}}
  allowedTeams: [team-a]
slack:
  apiUrl: {url}/api
  botToken: {{file: {dir}/bot}}
  signingSecret: {{file: {dir}/signing}}
admins: {admins:?}
maxInstallationsPerUser: {max}
defaults: {{profile: {PROFILE}, ttl: 24h}}
expiryWarning: {warning}
giveUpAfter: {give_up}
"#,
            instance = self.instance,
            url = self.fake.url(),
            admins = self.admins,
            max = self.max_per_user,
            warning = self.expiry_warning,
            give_up = self.give_up_after,
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
        }
    }

    /// Deletes every installation of this test's instance and waits until
    /// they are gone: the controller removes each namespace, and the running
    /// adapter tells the deletion and lets the installation go. Call it while
    /// the adapter runs.
    async fn cleanup(&mut self, client: &Client) {
        let selector = format!("{LABEL_INSTANCE}={}", self.instance);
        support::delete_installations_and_wait(client, &[selector], CONTROLLER_TIMEOUT).await;
        let _ = std::fs::remove_dir_all(&self.dir);
        self.cleaned = true;
    }
}

impl Drop for Setup {
    /// A test that failed before `cleanup` leaves nothing behind either: its
    /// installations lose their finalizers and are deleted, with their
    /// namespaces (nothing else would: no controller reconciles this
    /// instance any more once the test binary ends).
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        support::force_remove_installations(
            vec![
                format!("{LABEL_INSTANCE}={}", self.instance),
                format!("{HOLD_LABEL}={}", self.instance),
            ],
            vec![],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Adapter {
    base: String,
    http: reqwest::Client,
    server: RunningServer,
}

impl Adapter {
    /// Like `kill -9`: the adapter stops wherever it is, mid-request.
    async fn kill(self) {
        self.server.kill().await;
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

/// A chat user on one platform.
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

    fn requester_label(&self) -> String {
        Requester {
            platform: self.platform,
            team_id: self.team.clone(),
            user_id: self.id.clone(),
            user_name: self.name.clone(),
        }
        .label_value()
    }
}

/// An answer from the command endpoint.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    elapsed: Duration,
}

impl Answer {
    fn text(&self) -> &str {
        self.body["text"].as_str().unwrap_or_default()
    }

    fn assert_ephemeral(&self) -> &str {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(self.body["response_type"], "ephemeral", "{self:?}");
        self.text()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn form(user: &User, text: &str, trigger_id: &str) -> String {
    serde_urlencoded::to_string([
        ("token", "ignored-in-favour-of-the-header"),
        ("team_id", user.team.as_str()),
        ("team_domain", "example"),
        ("channel_id", "C1"),
        ("channel_name", "town-square"),
        ("user_id", user.id.as_str()),
        ("user_name", user.name.as_str()),
        ("command", "/testenv"),
        ("text", text),
        ("trigger_id", trigger_id),
        ("response_url", "http://127.0.0.1:9/hooks/unused"),
    ])
    .unwrap()
}

/// How a request is (mis)authenticated.
#[derive(Clone, Copy, Debug)]
enum Auth<'a> {
    Good,
    MattermostToken(Option<&'a str>),
    /// Slack: signed with this secret at `now - age` seconds.
    Slack {
        secret: &'a str,
        age: u64,
    },
    SlackUnsigned,
}

impl Adapter {
    async fn command(&self, user: &User, text: &str) -> Answer {
        self.command_with(user, text, &unique_name("trig"), Auth::Good)
            .await
    }

    async fn command_with(
        &self,
        user: &User,
        text: &str,
        trigger_id: &str,
        auth: Auth<'_>,
    ) -> Answer {
        let body = form(user, text, trigger_id);
        self.send_raw(user.platform, body.into_bytes(), auth).await
    }

    async fn send_raw(&self, platform: Platform, body: Vec<u8>, auth: Auth<'_>) -> Answer {
        let path = match platform {
            Platform::Mattermost => "/mattermost/command",
            Platform::Slack => "/slack/command",
        };
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded");
        match (platform, auth) {
            (Platform::Mattermost, Auth::Good) => {
                request = request.header("authorization", format!("Token {COMMAND_TOKEN}"));
            }
            (_, Auth::MattermostToken(Some(token))) => {
                request = request.header("authorization", format!("Token {token}"));
            }
            (Platform::Slack, Auth::Good) => {
                let ts = unix_now();
                request = request
                    .header("x-slack-request-timestamp", ts.to_string())
                    .header(
                        "x-slack-signature",
                        slack_signature(SIGNING_SECRET, ts, &body),
                    );
            }
            (_, Auth::Slack { secret, age }) => {
                let ts = unix_now() - age;
                request = request
                    .header("x-slack-request-timestamp", ts.to_string())
                    .header("x-slack-signature", slack_signature(secret, ts, &body));
            }
            _ => {}
        }
        let start = Instant::now();
        let response = request
            .body(body)
            .send()
            .await
            .expect("the adapter answers");
        let elapsed = start.elapsed();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            body,
            elapsed,
        }
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

// ------------------------------------------------------------- helpers ----

async fn get(client: &Client, name: &str) -> Option<TestInstallation> {
    Api::<TestInstallation>::all(client.clone())
        .get_opt(name)
        .await
        .unwrap()
}

fn short_name(prefix: &str) -> String {
    // unique_name is PREFIX-<pid>-<n>-<rand>; keep it within 40 characters.
    let name = unique_name(prefix);
    assert!(name.len() <= 40, "{name}");
    name
}

// --------------------------------------------------------------- tests ----

/// Labels the installation that holds another one's namespace with the
/// test's adapter instance, for the clean-up of a failed test.
const HOLD_LABEL: &str = "ephemera.dev/chat-test-hold";

/// Holds `name` in Pending the way the controller really does: its namespace
/// `ti-<name>` already exists and belongs to another TestInstallation (as
/// when an earlier installation of that name is still being deleted). The
/// other installation is labelled for no controller, so nothing touches it.
struct NamespaceHold {
    client: Client,
    blocker: String,
    namespace: String,
}

impl NamespaceHold {
    async fn new(client: &Client, setup: &Setup, name: &str) -> Self {
        let api: Api<TestInstallation> = Api::all(client.clone());
        let blocker = short_name("blocker");
        let mut blocking = TestInstallation::new(&blocker, Default::default());
        blocking
            .labels_mut()
            .insert(HOLD_LABEL.into(), setup.instance.clone());
        let owner = api
            .create(&PostParams::default(), &blocking)
            .await
            .unwrap_or_else(|err| panic!("creating {blocker}: {err}"));
        let namespace = format!("ti-{name}");
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {
                "name": namespace,
                "labels": { "ephemera.dev/test": "true" },
                "ownerReferences": [{
                    "apiVersion": "ephemera.dev/v1alpha1",
                    "kind": "TestInstallation",
                    "name": blocker,
                    "uid": owner.uid().unwrap(),
                }],
            }
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|err| panic!("creating namespace {namespace}: {err}"));
        Self {
            client: client.clone(),
            blocker,
            namespace,
        }
    }

    /// Lets the installation go on: the namespace and its owner are deleted.
    async fn release(self) {
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await
            .unwrap_or_else(|err| panic!("deleting namespace {}: {err}", self.namespace));
        Api::<TestInstallation>::all(self.client.clone())
            .delete(&self.blocker, &DeleteParams::default())
            .await
            .unwrap_or_else(|err| panic!("deleting {}: {err}", self.blocker));
    }
}

/// create → immediate ephemeral answer → progress DM edited in place while
/// the controller holds the installation in Pending → (adapter stopped while
/// the installation becomes Ready) → exactly one DM with the URL and the
/// credentials of the real `credentials` Secret, the progress message ending
/// as ready → another restart tells nothing twice → expiry warnings, one per
/// `expiresAt` → delete tells once and lets the installation go.
async fn lifecycle(platform: Platform) {
    let client = plane().await;
    let mut setup = Setup::new().await;
    // Longer than the installation's lifetime, so each new `expiresAt`
    // (from create, then from `extend`) is warned about at once.
    setup.expiry_warning = "60h";
    let alice = User::new(platform, "alice");
    let name = short_name("demo");
    let hold = NamespaceHold::new(&client, &setup, &name).await;

    let adapter = setup.start(&client).await;
    let answer = adapter
        .command(
            &alice,
            &format!("create {name} --size miniHA --test-data --ttl 48h"),
        )
        .await;
    let text = answer.assert_ephemeral();
    assert!(text.contains(&format!("Creating `{name}`")), "{text}");
    println!("{platform:?} create answered in {:?}", answer.elapsed);
    let create_answer = text.to_string();

    let ti = get(&client, &name).await.expect("the installation exists");
    assert_eq!(ti.labels()[labels::SOURCE], "chat");
    assert_eq!(ti.labels()[labels::REQUESTER], alice.requester_label());
    assert_eq!(ti.labels()[LABEL_INSTANCE], setup.instance);
    assert_eq!(ti.annotations()["ephemera.dev/chat-user-name"], "alice");
    assert!(ti.finalizers().contains(&FINALIZER.to_string()));
    assert_eq!(ti.spec.profile.as_deref(), Some(PROFILE));
    assert_eq!(ti.spec.size.as_deref(), Some("miniHA"));
    assert_eq!(ti.spec.ttl.as_deref(), Some("2d"));
    assert!(ti.spec.test_data);
    let managers: Vec<_> = ti
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&"ephemera-chat".to_string()),
        "{managers:?}"
    );

    // The progress message appears in the DM and follows the controller's
    // status: Pending, waiting for the namespace.
    let progress = setup.fake.wait_for_posts("Setting up", 1).await[0].clone();
    let dm = match platform {
        Platform::Mattermost => format!("dm-{}", alice.id),
        Platform::Slack => format!("D-{}", alice.id),
    };
    assert_eq!(progress.channel, dm);
    wait_for(
        "the progress message to show the wait for the namespace",
        TIMEOUT,
        || async {
            let shown = progress.text.contains("waiting for namespace")
                || setup
                    .fake
                    .updates()
                    .iter()
                    .any(|(id, t)| *id == progress.id && t.contains("waiting for namespace"));
            if shown {
                Ok(())
            } else {
                Err((setup.fake.posts(), setup.fake.updates()))
            }
        },
    )
    .await;
    let held = get(&client, &name).await.unwrap();
    assert_eq!(held.phase(), Some(Phase::Pending), "{:#?}", held.status);
    // `expiresAt` is known while Pending too, and within the warning window:
    // let the adapter warn and remember it before it is stopped.
    wait_for("the expiry warning to be remembered", TIMEOUT, || async {
        let ti = get(&client, &name)
            .await
            .ok_or_else(|| "gone".to_string())?;
        let told = ti
            .annotations()
            .get("ephemera.dev/notified-chat")
            .cloned()
            .unwrap_or_default();
        if told.contains("expiryWarned") {
            Ok(())
        } else {
            Err(told)
        }
    })
    .await;

    // Restart mid-way: the installation becomes Ready while the adapter is down.
    adapter.stop().await;
    hold.release().await;
    let ready_ti = wait_for_phase(&client, &name, Phase::Ready).await;
    let credentials = credentials_of(&client, &ready_ti).await;
    let status = ready_ti.status.clone().unwrap();
    let url = status.url.clone().expect("a Ready installation has a URL");
    assert!(url.contains(&name), "{url}");
    assert!(status.expires_at.is_some(), "{status:#?}");
    let adapter = setup.start(&client).await;

    let ready = setup
        .fake
        .wait_for_posts(&credentials.admin_password, 1)
        .await;
    let ready = &ready[0];
    assert!(ready.text.contains(&url), "{ready:?}");
    assert!(ready.text.contains("is ready"), "{ready:?}");
    assert!(ready.text.contains(&credentials.admin_user), "{ready:?}");
    assert!(ready.text.contains(&credentials.user), "{ready:?}");
    assert!(ready.text.contains(&credentials.user_password));
    assert!(ready.text.contains("9.11.0"), "the version: {ready:?}");
    assert_eq!(ready.channel, dm);
    // The first `expiresAt` is within the warning window: warned at once.
    setup.fake.wait_for_posts("expires", 1).await;
    wait_for("the progress message to end as ready", TIMEOUT, || async {
        let updates = setup.fake.updates();
        match updates.last() {
            Some((id, text)) if *id == progress.id && text.contains("is ready") => Ok(()),
            _ => Err(updates),
        }
    })
    .await;
    let posts = setup.fake.posts();
    assert_eq!(
        posts
            .iter()
            .filter(|m| m.text.contains("Setting up"))
            .count(),
        1,
        "one progress message: {posts:#?}"
    );
    assert!(
        posts
            .iter()
            .filter(|m| m.id != ready.id)
            .all(|m| !m.text.contains(&credentials.admin_password)),
        "the credentials are in one message only: {posts:#?}"
    );
    let updates = setup.fake.updates();
    assert!(
        updates.iter().all(|(id, _)| *id == progress.id),
        "every edit is of the progress message {}: {updates:#?}",
        progress.id
    );
    for (_, text) in &updates {
        assert!(!text.contains(&credentials.admin_password));
        assert!(!text.contains(&credentials.user_password));
    }
    let edits_before = updates.len();

    // The expiry was warned about while Pending, so that warning is no sync
    // point for the ready message: wait until the adapter remembers it.
    wait_for("the ready message to be remembered", TIMEOUT, || async {
        let ti = get(&client, &name)
            .await
            .ok_or_else(|| "gone".to_string())?;
        let told = ti
            .annotations()
            .get("ephemera.dev/notified-chat")
            .cloned()
            .unwrap_or_default();
        if told.contains("\"ready\":true") {
            Ok(())
        } else {
            Err(told)
        }
    })
    .await;

    // Another restart tells nothing again. `extend` gives a new `expiresAt`,
    // and its warning is a sync point: once it arrives, the restarted adapter
    // has handled the installation's current state.
    adapter.stop().await;
    let adapter = setup.start(&client).await;
    let answer = adapter.command(&alice, &format!("extend {name} 54h")).await;
    assert!(
        answer.assert_ephemeral().contains("now lives until"),
        "{answer:?}"
    );
    setup.fake.wait_for_posts("expires", 2).await;
    let extended = get(&client, &name).await.unwrap().status.unwrap();
    assert_ne!(
        extended.expires_at, status.expires_at,
        "the controller moved expiresAt"
    );
    assert_eq!(
        setup
            .fake
            .posts_containing(&credentials.admin_password)
            .len(),
        1
    );
    assert_eq!(setup.fake.posts_containing("Setting up").len(), 1);
    assert_eq!(setup.fake.posts_containing("expires").len(), 2);
    assert_eq!(setup.fake.updates().len(), edits_before);
    for call in setup.fake.calls() {
        assert_eq!(
            call.authorization.as_deref(),
            Some(&*format!("Bearer {BOT_TOKEN}"))
        );
    }

    // Status and list answers never carry credentials.
    let status = adapter.command(&alice, &format!("status {name}")).await;
    let text = status.assert_ephemeral();
    assert!(text.contains("Ready") && text.contains(&url), "{text}");
    let list = adapter.command(&alice, "list").await;
    assert!(list.assert_ephemeral().contains(&name));
    for answer in [&status, &list] {
        assert!(!answer.text().contains(&credentials.admin_password));
        assert!(!answer.text().contains(&credentials.user_password));
    }

    // The installation itself holds no credential (status, annotations).
    let stored = serde_json::to_string(&get(&client, &name).await.unwrap()).unwrap();
    assert!(
        !stored.contains(&credentials.admin_password)
            && !stored.contains(&credentials.user_password)
    );

    // Every generated credential, for the scan at the end; the namespace's
    // Events go with it, so they are read now.
    let generated = support::leaks::generated_values(&client, &format!("ti-{name}")).await;
    let events_before = support::leaks::events_text(&client).await;

    // Delete: told once, the controller removes the namespace, and the
    // adapter's finalizer lets the installation go.
    let answer = adapter.command(&alice, &format!("delete {name}")).await;
    let delete_answer = answer.text().to_string();
    assert!(answer.assert_ephemeral().contains("Deleting"), "{answer:?}");
    setup.fake.wait_for_posts("being deleted", 1).await;
    wait_for("the installation gone", CONTROLLER_TIMEOUT, || async {
        match get(&client, &name).await {
            None => Ok(()),
            Some(ti) => Err(ti.metadata),
        }
    })
    .await;
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt(&format!("ti-{name}"))
            .await
            .unwrap()
            .is_none(),
        "the namespace went first"
    );
    assert_eq!(setup.fake.posts_containing("being deleted").len(), 1);

    // Nothing secret in logs (the adapter's and the controller's: they share
    // this process) or metrics; metrics count what this (third) adapter
    // process did.
    let metrics = adapter.metrics().await;
    let p = platform.as_str();
    for line in [
        format!(
            "ephemera_chat_commands_total{{platform=\"{p}\",command=\"delete\",outcome=\"ok\"}} 1"
        ),
        format!(
            "ephemera_chat_notifications_total{{platform=\"{p}\",kind=\"expiring\",outcome=\"sent\"}} 1"
        ),
        format!(
            "ephemera_chat_notifications_total{{platform=\"{p}\",kind=\"deleted\",outcome=\"sent\"}} 1"
        ),
    ] {
        assert!(metrics.contains(&line), "{line} missing in {metrics}");
    }
    assert!(
        !metrics.contains("kind=\"ready\""),
        "the third process told nothing about Ready: {metrics}"
    );
    let logs = logs_text();
    assert!(
        logs.contains("handled a slash command"),
        "logs are captured"
    );
    // The secrets scan: only the Ready DM to the requester may carry a
    // generated credential; no other post, edit, answer, status, Event, log
    // line or metric.
    let mut texts: Vec<(String, String)> = setup
        .fake
        .posts()
        .into_iter()
        .filter(|m| m.id != ready.id)
        .map(|m| (format!("post {} in {}", m.id, m.channel), m.text))
        .collect();
    texts.extend(
        setup
            .fake
            .updates()
            .into_iter()
            .map(|(id, text)| (format!("edit of {id}"), text)),
    );
    texts.extend([
        ("create answer".to_string(), create_answer),
        ("status answer".into(), status.text().to_string()),
        ("list answer".into(), list.text().to_string()),
        ("delete answer".into(), delete_answer),
        ("installation (spec, status, annotations)".into(), stored),
        ("Events before the deletion".into(), events_before),
        (
            "Events after the deletion".into(),
            support::leaks::events_text(&client).await,
        ),
        ("logs".into(), logs.clone()),
        ("metrics".into(), metrics.clone()),
    ]);
    // The scan finds what is there: the Ready DM does carry credentials.
    assert!(
        !support::leaks::leaks(&generated, &[("ready DM".into(), ready.text.clone())]).is_empty(),
        "the scan would not see a credential"
    );
    let leaked = support::leaks::leaks(&generated, &texts);
    println!(
        "FIGURES secrets scan, chat flow ({platform:?}): {} generated values in {} texts, {} leaks",
        generated.len(),
        texts.len(),
        leaked.len()
    );
    assert!(leaked.is_empty(), "credentials leaked: {leaked:?}");
    let ready_channel_posts = setup.fake.posts_containing(&credentials.admin_password);
    assert!(
        ready_channel_posts.iter().all(|m| m.channel == dm),
        "the credentials went only to the requester's DM"
    );
    for secret in [
        credentials.admin_password.as_str(),
        credentials.user_password.as_str(),
        BOT_TOKEN,
        COMMAND_TOKEN,
        SIGNING_SECRET,
    ] {
        assert!(!logs.contains(secret), "a secret is in the logs");
        assert!(!metrics.contains(secret));
    }
    setup.cleanup(&client).await;
    // Telling the deletion and releasing the finalizer raced the
    // controller's status updates, without a single false warning.
    let warnings: Vec<String> = logs_text()
        .lines()
        .filter(|l| l.contains(&name) && l.contains("WARN") && l.contains("ephemera::adapters"))
        .map(str::to_string)
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    adapter.stop().await;
}

#[tokio::test]
async fn mattermost_create_to_ready_tells_once_across_restarts() {
    lifecycle(Platform::Mattermost).await;
}

#[tokio::test]
async fn slack_create_to_ready_tells_once_across_restarts() {
    lifecycle(Platform::Slack).await;
}

/// Every authentication failure is refused with 401 and creates nothing.
#[tokio::test]
async fn unauthenticated_requests_are_refused_and_change_nothing() {
    let client = plane().await;
    let mut setup = Setup::new().await;
    let adapter = setup.start(&client).await;
    let mm = User::new(Platform::Mattermost, "mallory");
    let slack = User::new(Platform::Slack, "mallory");
    let api: Api<TestInstallation> = Api::all(client.clone());

    let mut attempts: Vec<(&str, Answer, String)> = Vec::new();
    for (what, user, auth) in [
        ("missing token", &mm, Auth::MattermostToken(None)),
        ("wrong token", &mm, Auth::MattermostToken(Some("guess"))),
        (
            "token prefix",
            &mm,
            Auth::MattermostToken(Some(&COMMAND_TOKEN[..10])),
        ),
        ("unsigned", &slack, Auth::SlackUnsigned),
        (
            "bad signature",
            &slack,
            Auth::Slack {
                secret: "not-the-secret",
                age: 0,
            },
        ),
        (
            "stale timestamp",
            &slack,
            Auth::Slack {
                secret: SIGNING_SECRET,
                age: 301,
            },
        ),
    ] {
        let name = short_name("evil");
        let answer = adapter
            .command_with(user, &format!("create {name}"), &unique_name("t"), auth)
            .await;
        attempts.push((what, answer, name));
    }

    // A replayed trigger id: the first use works, the second (correctly
    // signed, within the window) is refused.
    for user in [&mm, &slack] {
        let trigger = unique_name("replay");
        let first = adapter
            .command_with(user, "help", &trigger, Auth::Good)
            .await;
        assert!(first.assert_ephemeral().contains("Commands"), "{first:?}");
        let name = short_name("evil");
        let answer = adapter
            .command_with(user, &format!("create {name}"), &trigger, Auth::Good)
            .await;
        attempts.push(("replayed trigger", answer, name));
    }

    for (what, answer, name) in &attempts {
        assert_eq!(answer.status, 401, "{what}: {answer:?}");
        assert!(
            api.get_opt(name).await.unwrap().is_none(),
            "{what} created {name}"
        );
    }

    // The old token still works (rotation), and a foreign team is refused.
    let old = adapter
        .command_with(
            &mm,
            "help",
            &unique_name("t"),
            Auth::MattermostToken(Some(OLD_COMMAND_TOKEN)),
        )
        .await;
    old.assert_ephemeral();
    let mut outsider = User::new(Platform::Mattermost, "outsider");
    outsider.team = "team-b".into();
    let name = short_name("evil");
    let answer = adapter.command(&outsider, &format!("create {name}")).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(api.get_opt(&name).await.unwrap().is_none());

    // An oversized body is refused before anything else.
    let big = format!("{}&text=help", "x=1&".repeat(20_000));
    let answer = adapter
        .send_raw(Platform::Mattermost, big.into_bytes(), Auth::Good)
        .await;
    assert_eq!(answer.status, 413, "{answer:?}");

    let metrics = adapter.metrics().await;
    assert!(
        metrics.contains(
            "ephemera_chat_commands_total{platform=\"slack\",command=\"unknown\",outcome=\"unauthenticated\"} 4"
        ),
        "{metrics}"
    );
    setup.cleanup(&client).await;
    adapter.stop().await;
}

/// Only the requester or an admin may change or delete; a per-user maximum;
/// a taken name is answered clearly.
async fn ownership_and_quota(platform: Platform) {
    let client = plane().await;
    let mut setup = Setup::new().await;
    let admin = User::new(platform, "admin");
    setup.admins = vec![admin.requester_label()];
    setup.max_per_user = 2;
    let adapter = setup.start(&client).await;
    let alice = User::new(platform, "alice");
    let bob = User::new(platform, "bob");
    let first = short_name("own");
    let second = short_name("own");

    adapter
        .command(&alice, &format!("create {first}"))
        .await
        .assert_ephemeral();
    for verb in ["delete", "hibernate", "wake", "lock", "unlock"] {
        let answer = adapter.command(&bob, &format!("{verb} {first}")).await;
        let text = answer.assert_ephemeral();
        assert!(
            text.contains("Only the person who created"),
            "{verb}: {text}"
        );
        assert!(text.contains("alice"), "{text}");
    }
    let answer = adapter.command(&bob, &format!("extend {first} 3d")).await;
    assert!(
        answer
            .assert_ephemeral()
            .contains("Only the person who created")
    );
    let ti = get(&client, &first).await.expect("still there");
    assert!(ti.metadata.deletion_timestamp.is_none());
    assert!(!ti.spec.hibernate && !ti.spec.deletion_locked);
    assert_eq!(ti.spec.ttl.as_deref(), Some("1d"));

    // A taken name, for someone else and for the owner.
    let text = adapter.command(&bob, &format!("create {first}")).await;
    assert!(text.assert_ephemeral().contains("is taken"), "{text:?}");
    let text = adapter.command(&alice, &format!("create {first}")).await;
    assert!(
        text.assert_ephemeral()
            .contains("You already have an installation named")
    );

    // The owner can hibernate, wake, lock, extend; a locked one is not deleted.
    let answer = adapter.command(&alice, &format!("hibernate {first}")).await;
    assert!(
        answer.assert_ephemeral().contains("hibernating now"),
        "{answer:?}"
    );
    assert!(get(&client, &first).await.unwrap().spec.hibernate);
    adapter
        .command(&alice, &format!("wake {first}"))
        .await
        .assert_ephemeral();
    assert!(!get(&client, &first).await.unwrap().spec.hibernate);
    let answer = adapter.command(&alice, &format!("extend {first} 3d")).await;
    assert!(
        answer.assert_ephemeral().contains("now lives until"),
        "{answer:?}"
    );
    let ttl = get(&client, &first).await.unwrap().spec.ttl.unwrap();
    assert!(ttl == "3d" || ttl == "3d1m", "ttl is {ttl}");
    let answer = adapter.command(&alice, &format!("extend {first} 1h")).await;
    assert!(
        answer.assert_ephemeral().contains("nothing changed"),
        "{answer:?}"
    );
    adapter
        .command(&alice, &format!("lock {first}"))
        .await
        .assert_ephemeral();
    assert!(get(&client, &first).await.unwrap().spec.deletion_locked);
    let answer = adapter.command(&alice, &format!("delete {first}")).await;
    assert!(
        answer
            .assert_ephemeral()
            .contains("locked against deletion")
    );
    assert!(
        get(&client, &first)
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );

    // An admin may act on anyone's installation.
    let answer = adapter.command(&admin, &format!("unlock {first}")).await;
    assert!(
        answer.assert_ephemeral().contains("may be deleted again"),
        "{answer:?}"
    );
    assert!(!get(&client, &first).await.unwrap().spec.deletion_locked);

    // The per-user maximum.
    adapter
        .command(&alice, &format!("create {second}"))
        .await
        .assert_ephemeral();
    let third = short_name("own");
    let answer = adapter.command(&alice, &format!("create {third}")).await;
    let text = answer.assert_ephemeral();
    assert!(text.contains("You already have 2 installations"), "{text}");
    assert!(get(&client, &third).await.is_none());
    // Bob's quota is his own.
    let bobs = short_name("own");
    adapter
        .command(&bob, &format!("create {bobs}"))
        .await
        .assert_ephemeral();
    assert!(get(&client, &bobs).await.is_some());

    let mine = adapter.command(&alice, "list").await;
    let text = mine.assert_ephemeral();
    assert!(
        text.contains(&first) && text.contains(&second) && !text.contains(&bobs),
        "{text}"
    );
    let all = adapter.command(&alice, "list --all").await;
    assert!(all.assert_ephemeral().contains(&bobs));

    setup.cleanup(&client).await;
    adapter.stop().await;
}

#[tokio::test]
async fn mattermost_ownership_and_quota() {
    ownership_and_quota(Platform::Mattermost).await;
}

#[tokio::test]
async fn slack_ownership_and_quota() {
    ownership_and_quota(Platform::Slack).await;
}

/// Each grammar error gets its own message and the usage line; values the
/// API server refuses are answered with its rule's message. Nothing is created.
async fn bad_input(platform: Platform) {
    let client = plane().await;
    let mut setup = Setup::new().await;
    let adapter = setup.start(&client).await;
    let carol = User::new(platform, "carol");
    let name = short_name("bad");
    let cases = [
        (
            format!("create {name} --colour red"),
            "unknown flag --colour",
        ),
        (format!("create {name} --size"), "--size needs a value"),
        (
            format!("create {name} --ttl forever"),
            "--ttl: duration \"forever\"",
        ),
        (
            format!("create {name} --database oracle"),
            "--database \"oracle\" is not one of postgres, mysql, none",
        ),
        (
            format!("create {name} --env NOEQUALS"),
            "--env entry \"NOEQUALS\" is not KEY=VALUE",
        ),
        (
            "create Bad_Name".to_string(),
            "name \"Bad_Name\" must start with a lowercase letter",
        ),
        (
            format!("create {name} extra"),
            "unexpected argument \"extra\"",
        ),
        (format!("delete {name} --force"), "unknown flag --force"),
        (format!("extend {name}"), "DURATION is missing"),
        ("frobnicate".to_string(), "unknown command \"frobnicate\""),
        (
            format!("create '{name}"),
            "the command has an unclosed quote",
        ),
    ];
    for (text, problem) in &cases {
        let answer = adapter.command(&carol, text).await;
        let reply = answer.assert_ephemeral();
        assert!(reply.contains(problem), "{text}: {reply}");
        assert!(
            reply.contains("Usage: `/testenv") || reply.contains("Commands:"),
            "{text}: {reply}"
        );
    }
    // Refused by the API server's CEL rules and schema, with their message.
    let refused = [
        (
            format!("create {name} --env DB_PASSWORD=hunter2"),
            "this env name looks like a secret",
        ),
        (
            format!("create {name} --version 9.11 --upgrade-from 9.11"),
            "upgradeFrom must differ from version",
        ),
        (
            format!("create {name} --image UPPER/Case"),
            "image must be an image repository without tag or digest",
        ),
    ];
    for (text, problem) in &refused {
        let answer = adapter.command(&carol, text).await;
        let reply = answer.assert_ephemeral();
        assert!(reply.contains(problem), "{text}: {reply}");
        assert!(
            !reply.contains("hunter2"),
            "the refusal repeats no value: {reply}"
        );
    }
    assert!(get(&client, &name).await.is_none());
    let list = adapter.command(&carol, "list").await;
    assert!(
        list.assert_ephemeral()
            .contains("You have no installations")
    );
    setup.cleanup(&client).await;
    adapter.stop().await;
}

#[tokio::test]
async fn mattermost_bad_input_creates_nothing() {
    bad_input(Platform::Mattermost).await;
}

#[tokio::test]
async fn slack_bad_input_creates_nothing() {
    bad_input(Platform::Slack).await;
}

/// A 429 with `Retry-After` is retried after the pause the platform asked
/// for; a failure (the real controller's ImagePullBackOff) is told with its
/// reason and ends the progress message.
async fn throttled_and_failed(platform: Platform) {
    let client = plane().await;
    let mut setup = Setup::new().await;
    let post_path = match platform {
        Platform::Mattermost => "/api/v4/posts",
        Platform::Slack => "/api/chat.postMessage",
    };
    setup.fake.fail(post_path, StatusCode::TOO_MANY_REQUESTS, 1);
    let open_path = match platform {
        Platform::Mattermost => "/api/v4/channels/direct",
        Platform::Slack => "/api/conversations.open",
    };
    setup
        .fake
        .fail(open_path, StatusCode::SERVICE_UNAVAILABLE, 2);
    let adapter = setup.start(&client).await;
    let dave = User::new(platform, "dave");
    let name = short_name("thr");
    // The local plane's fake kubelet cannot pull from missing.invalid.
    adapter
        .command(
            &dave,
            &format!("create {name} --image missing.invalid/team/app"),
        )
        .await
        .assert_ephemeral();
    let progress = setup.fake.wait_for_posts("Setting up", 1).await[0].clone();
    let attempts: Vec<Call> = setup
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.path == post_path)
        .collect();
    let opens: Vec<u16> = setup
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.path == open_path)
        .map(|c| c.status)
        .collect();
    assert_eq!(opens.len(), 3, "two 503s, then success: {opens:?}");
    assert_eq!(&opens[..2], &[503, 503]);
    assert!(attempts.len() >= 2, "{attempts:#?}");
    assert_eq!(attempts[0].status, 429, "{attempts:#?}");
    assert!(attempts[1].status < 300, "{attempts:#?}");
    assert_eq!(
        attempts[1].created_id.as_deref(),
        Some(progress.id.as_str()),
        "the retried post is the progress message: {attempts:#?}"
    );
    let pause = attempts[1].at - attempts[0].at;
    assert!(
        pause >= Duration::from_millis(950),
        "retried after {pause:?}"
    );
    println!("{platform:?}: retried after {pause:?} (Retry-After: 1)");

    let ti = wait_for_phase(&client, &name, Phase::Failed).await;
    let app = ti
        .condition(conditions::APP_READY)
        .unwrap_or_else(|| panic!("no AppReady in {:#?}", ti.status))
        .clone();
    assert_eq!(app.reason, "ImagePullBackOff", "{app:#?}");
    let failed = setup.fake.wait_for_posts("failed", 1).await;
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(
        failed[0].text.contains("missing.invalid/team/app:9.11.0"),
        "the image is named: {failed:?}"
    );
    assert!(failed[0].text.contains("ImagePullBackOff"), "{failed:?}");
    assert_eq!(failed[0].channel, progress.channel);
    wait_for(
        "the progress message to show the failure",
        TIMEOUT,
        || async {
            let updates = setup.fake.updates();
            if updates
                .iter()
                .any(|(id, text)| *id == progress.id && text.contains("failed"))
            {
                Ok(())
            } else {
                Err(updates)
            }
        },
    )
    .await;
    let updates = setup.fake.updates();
    assert!(
        updates.iter().all(|(id, _)| *id == progress.id),
        "every edit is of the progress message: {updates:#?}"
    );
    setup.cleanup(&client).await;
    // Told once about the failure, once about the deletion.
    assert_eq!(setup.fake.posts_containing("failed").len(), 1);
    assert_eq!(setup.fake.posts_containing("being deleted").len(), 1);
    adapter.stop().await;
}

#[tokio::test]
async fn mattermost_retries_429_and_tells_failures() {
    throttled_and_failed(Platform::Mattermost).await;
}

#[tokio::test]
async fn slack_retries_429_and_tells_failures() {
    throttled_and_failed(Platform::Slack).await;
}

/// The adapter refuses to start with an empty secret.
#[tokio::test]
async fn refuses_to_start_with_an_empty_secret() {
    let client = plane().await;
    let mut setup = Setup::new().await;
    std::fs::write(setup.dir.join("signing"), "\n").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = chat::serve(client.clone(), setup.config(), listener, async {})
        .await
        .expect_err("an empty signing secret is refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("slack.signingSecret") && text.contains("empty"),
        "{text}"
    );
    setup.cleanup(&client).await;
}

// ------------------------------------------- faults, kills and limits ----

/// A small seeded random source (the trials are repeatable by seed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn post_path(platform: Platform) -> &'static str {
    match platform {
        Platform::Mattermost => "/api/v4/posts",
        Platform::Slack => "/api/chat.postMessage",
    }
}

fn open_path(platform: Platform) -> &'static str {
    match platform {
        Platform::Mattermost => "/api/v4/channels/direct",
        Platform::Slack => "/api/conversations.open",
    }
}

/// An installation as the command handler makes it, for an unmanaged
/// instance (no controller), so the test sets its status itself.
async fn manual_installation(
    client: &Client,
    setup: &Setup,
    user: &User,
    name: &str,
) -> TestInstallation {
    let ti: TestInstallation = serde_json::from_value(json!({
        "apiVersion": "ephemera.dev/v1alpha1",
        "kind": "TestInstallation",
        "metadata": {
            "name": name,
            "labels": {
                labels::SOURCE: "chat",
                labels::REQUESTER: user.requester_label(),
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
        "spec": { "profile": PROFILE },
    }))
    .unwrap();
    Api::<TestInstallation>::all(client.clone())
        .create(&PostParams::default(), &ti)
        .await
        .unwrap_or_else(|err| panic!("creating {name}: {err}"))
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

/// A `credentials`-shaped Secret in `default` for manual installations.
async fn credentials_secret(client: &Client, name: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": name },
        "stringData": {
            "adminUser": "admin", "adminPassword": "admin-password-123",
            "user": "user", "userPassword": "user-password-123",
        },
    }))
    .unwrap();
    let api = Api::<Secret>::namespaced(client.clone(), "default");
    let _ = api.delete(name, &DeleteParams::default()).await;
    api.create(&PostParams::default(), &secret).await.unwrap();
}

/// Kills (abort, like `kill -9`) or stops (like SIGTERM) the adapter at a
/// random moment of each step of a notification — progress, Ready,
/// hibernated, woken, deleted — with, at random, a post whose answer is lost
/// (the platform stored it, then answered 502). Every message must arrive
/// exactly once.
async fn kill_trials(platform: Platform, trials: usize, seed: u64) {
    let client = plane().await;
    let mut setup = Setup::unmanaged().await;
    let secret = format!("creds-{}", short_name("kt"));
    credentials_secret(&client, &secret).await;
    let mut rng = Rng(seed);
    let user = User::new(platform, "kim");
    let mut adapter = Some(setup.start(&client).await);
    let api: Api<TestInstallation> = Api::all(client.clone());
    let started = Instant::now();
    let (mut kills, mut stops, mut lost_answers) = (0, 0, 0);
    let mut keys_seen: Vec<String> = Vec::new();
    for trial in 0..trials {
        let name = short_name("kt");
        let uid = manual_installation(&client, &setup, &user, &name)
            .await
            .uid()
            .unwrap();
        let ready = json!({
            "phase": "Ready", "message": "ready", "url": format!("http://{name}.example"),
            "credentialsSecret": { "namespace": "default", "name": secret },
        });
        let steps: Vec<(&str, Option<Value>)> = vec![
            ("progress", None),
            ("ready", Some(ready.clone())),
            (
                "hibernated",
                Some(json!({ "phase": "Hibernated", "message": "asleep" })),
            ),
            ("woken", Some(ready.clone())),
            ("deleted", Some(Value::Null)),
        ];
        for (kind, change) in steps {
            match change {
                None => {}
                Some(Value::Null) => {
                    api.delete(&name, &DeleteParams::default()).await.unwrap();
                }
                Some(status) => set_status(&client, &name, status).await,
            }
            if rng.below(10) < 3 {
                lost_answers += 1;
                setup
                    .fake
                    .fault(post_path(platform), Fault::CommitThenFail, 1);
            }
            tokio::time::sleep(Duration::from_millis(rng.below(40))).await;
            match rng.below(3) {
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
                adapter = Some(setup.start(&client).await);
            }
            let prefix = format!("{uid}/{kind}");
            wait_for(
                &format!("trial {trial}: the {kind} message of {name}"),
                TIMEOUT,
                || async {
                    let n = setup
                        .fake
                        .posts()
                        .iter()
                        .filter(|m| m.key.as_deref().is_some_and(|k| k.starts_with(&prefix)))
                        .count();
                    if n >= 1 {
                        Ok(())
                    } else {
                        Err(setup.fake.posts())
                    }
                },
            )
            .await;
        }
        wait_for(&format!("{name} to be gone"), TIMEOUT, || async {
            match api.get_opt(&name).await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        keys_seen.extend(
            setup
                .fake
                .posts()
                .into_iter()
                .filter_map(|m| m.key)
                .filter(|k| k.starts_with(&uid)),
        );
    }
    // Late copies would come within this pause.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for post in setup.fake.posts() {
        *counts
            .entry(
                post.key
                    .unwrap_or_else(|| format!("unmarked: {}", post.text)),
            )
            .or_default() += 1;
    }
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    let kinds = ["progress", "ready", "hibernated", "woken", "deleted"];
    let lost = trials * kinds.len() - counts.len().min(trials * kinds.len());
    println!(
        "{platform:?}: {trials} trials (seed {seed}) with {kills} kills, {stops} stops and \
         {lost_answers} lost answers in {:?}: {} messages, duplicates: {duplicates}, lost: {lost}",
        started.elapsed(),
        counts.len()
    );
    assert_eq!(duplicates, 0, "{counts:#?}");
    assert_eq!(counts.len(), trials * kinds.len(), "{counts:#?}");
    assert!(keys_seen.len() >= trials * kinds.len());
    adapter.take().unwrap().stop().await;
    setup.cleanup(&client).await;
    let _ = Api::<Secret>::namespaced(client.clone(), "default")
        .delete(&secret, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn mattermost_kills_and_lost_answers_never_repeat_or_drop_a_message() {
    kill_trials(Platform::Mattermost, 12, 0x5eed_0001).await;
}

#[tokio::test]
async fn slack_kills_and_lost_answers_never_repeat_or_drop_a_message() {
    kill_trials(Platform::Slack, 12, 0x5eed_0002).await;
}

/// A credentials DM is never held up by the cosmetic edit of the progress
/// message: the edit fails for good, the Ready DM still arrives.
#[tokio::test]
async fn a_failing_progress_edit_never_blocks_the_credentials() {
    let client = plane().await;
    let mut setup = Setup::unmanaged().await;
    let secret = format!("creds-{}", short_name("ed"));
    credentials_secret(&client, &secret).await;
    setup
        .fake
        .fault("/api/chat.update", Fault::Refuse, u32::MAX);
    let adapter = setup.start(&client).await;
    let user = User::new(Platform::Slack, "lee");
    let name = short_name("ed");
    manual_installation(&client, &setup, &user, &name).await;
    setup.fake.wait_for_posts("Setting up", 1).await;
    set_status(
        &client,
        &name,
        json!({
            "phase": "Ready", "url": "http://x.example",
            "credentialsSecret": { "namespace": "default", "name": secret },
        }),
    )
    .await;
    let ready = setup.fake.wait_for_posts("is ready", 1).await;
    assert!(ready[0].text.contains("admin-password-123"));
    assert!(
        setup
            .fake
            .calls()
            .iter()
            .any(|c| c.path == "/api/chat.update"),
        "the edit was tried"
    );
    setup.cleanup(&client).await;
    adapter.stop().await;
}

/// A requester who can never be told (deactivated: every DM refused) does
/// not hold a deleted installation beyond `giveUpAfter` (plus one attempt):
/// it is given up on, counted, recorded as an Event, and let go.
async fn undeliverable(platform: Platform) {
    let client = plane().await;
    let mut setup = Setup::unmanaged().await;
    setup.give_up_after = "3s";
    setup
        .fake
        .fault(open_path(platform), Fault::Refuse, u32::MAX);
    let adapter = setup.start(&client).await;
    let user = User::new(platform, "gone");
    let name = short_name("ud");
    manual_installation(&client, &setup, &user, &name).await;
    let api: Api<TestInstallation> = Api::all(client.clone());
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    let deleted_at = Instant::now();
    wait_for(&format!("{name} to be let go"), TIMEOUT, || async {
        match api.get_opt(&name).await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let took = deleted_at.elapsed();
    println!("{platform:?}: an undeliverable deletion was let go after {took:?} (bound 3s)");
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(
        took >= Duration::from_secs(2),
        "not before the bound: {took:?}"
    );
    let metrics = adapter.metrics().await;
    assert!(
        metrics.contains(&format!(
            "ephemera_chat_notifications_total{{platform=\"{}\",kind=\"deleted\",outcome=\"given_up\"}} 1",
            platform.as_str()
        )),
        "{metrics}"
    );
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), "default")
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        events.items.iter().any(|e| {
            e.reason.as_deref() == Some("NotificationGivenUp")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
        }),
        "an Event on {name}"
    );
    assert!(setup.fake.posts().is_empty());
    adapter.stop().await;
    setup.cleanup(&client).await;
}

#[tokio::test]
async fn mattermost_an_undeliverable_requester_never_wedges_a_deletion() {
    undeliverable(Platform::Mattermost).await;
}

#[tokio::test]
async fn slack_an_undeliverable_requester_never_wedges_a_deletion() {
    undeliverable(Platform::Slack).await;
}

/// One requester's slow DM channel does not delay another's message.
#[tokio::test]
async fn a_slow_platform_for_one_installation_does_not_delay_another() {
    let client = plane().await;
    let mut setup = Setup::unmanaged().await;
    let slow = User::new(Platform::Mattermost, "slow");
    let quick = User::new(Platform::Mattermost, "quick");
    setup
        .fake
        .slow_channel(&format!("dm-{}", slow.id), Duration::from_secs(8));
    let adapter = setup.start(&client).await;
    manual_installation(&client, &setup, &slow, &short_name("slow")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let quick_name = short_name("quick");
    manual_installation(&client, &setup, &quick, &quick_name).await;
    wait_for("the quick requester's message", TIMEOUT, || async {
        let posts = setup.fake.posts();
        if posts
            .iter()
            .any(|m| m.channel == format!("dm-{}", quick.id))
        {
            Ok(())
        } else {
            Err(posts)
        }
    })
    .await;
    let took = start.elapsed();
    println!("the quick requester was told after {took:?} while the other channel takes 8 s");
    assert!(took < Duration::from_secs(4), "{took:?}");
    setup
        .fake
        .slow_channel(&format!("dm-{}", slow.id), Duration::ZERO);
    setup.cleanup(&client).await;
    adapter.stop().await;
}

/// 8 concurrent creates by one person make exactly the limit (3).
async fn concurrent_creates(platform: Platform) {
    let client = plane().await;
    let mut setup = Setup::unmanaged().await;
    let adapter = setup.start(&client).await;
    let user = User::new(platform, "eager");
    let names: Vec<String> = (0..8).map(|_| short_name("cc")).collect();
    let commands: Vec<String> = names.iter().map(|name| format!("create {name}")).collect();
    let answers =
        futures::future::join_all(commands.iter().map(|text| adapter.command(&user, text))).await;
    let created = answers
        .iter()
        .filter(|a| a.assert_ephemeral().contains("Creating"))
        .count();
    let refused = answers
        .iter()
        .filter(|a| a.text().contains("the most one person may have is 3"))
        .count();
    let list = Api::<TestInstallation>::all(client.clone())
        .list(&kube::api::ListParams::default().labels(&format!(
            "{}={}",
            labels::REQUESTER,
            user.requester_label()
        )))
        .await
        .unwrap();
    let live = list
        .items
        .iter()
        .filter(|ti| ti.metadata.deletion_timestamp.is_none())
        .count();
    println!(
        "{platform:?}: 8 concurrent creates: {created} created, {refused} refused, {live} exist"
    );
    assert_eq!((created, refused, live), (3, 5, 3), "{answers:#?}");
    setup.cleanup(&client).await;
    adapter.stop().await;
}

#[tokio::test]
async fn mattermost_concurrent_creates_make_exactly_the_limit() {
    concurrent_creates(Platform::Mattermost).await;
}

#[tokio::test]
async fn slack_concurrent_creates_make_exactly_the_limit() {
    concurrent_creates(Platform::Slack).await;
}

/// A signed Slack request captured and replayed after the adapter restarted
/// (within Slack's 5 minutes) is refused and changes nothing.
#[tokio::test]
async fn a_replayed_slack_request_is_refused_after_a_restart() {
    let client = plane().await;
    let mut setup = Setup::unmanaged().await;
    let adapter = setup.start(&client).await;
    let user = User::new(Platform::Slack, "replay");
    let name = short_name("rp");
    adapter
        .command(&user, &format!("create {name}"))
        .await
        .assert_ephemeral();
    let body = form(&user, &format!("hibernate {name}"), &unique_name("trig")).into_bytes();
    let ts = unix_now();
    let signature = slack_signature(SIGNING_SECRET, ts, &body);
    let send = |base: String, body: Vec<u8>, signature: String| async move {
        reqwest::Client::new()
            .post(format!("{base}/slack/command"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        send(adapter.base.clone(), body.clone(), signature.clone()).await,
        200
    );
    assert!(get(&client, &name).await.unwrap().spec.hibernate);
    adapter
        .command(&user, &format!("wake {name}"))
        .await
        .assert_ephemeral();
    assert!(!get(&client, &name).await.unwrap().spec.hibernate);
    adapter.stop().await;
    let adapter = setup.start(&client).await;
    assert_eq!(
        send(adapter.base.clone(), body, signature).await,
        401,
        "the replay is refused"
    );
    assert!(
        !get(&client, &name).await.unwrap().spec.hibernate,
        "and changed nothing"
    );
    setup.cleanup(&client).await;
    adapter.stop().await;
}

/// Slack's `ssl_check=1` gets 200; JSON to Slack names its charset; a bad
/// size or a too-long ttl is refused before "Creating…"; `extend` is capped
/// at the profile's maximum (and says so), however large the request.
#[tokio::test]
async fn profile_rules_are_checked_at_once_and_extend_is_capped() {
    let client = plane().await;
    let mut setup = Setup::unmanaged().await;
    let adapter = setup.start(&client).await;
    let check = adapter
        .send_raw(
            Platform::Slack,
            b"ssl_check=1&token=x".to_vec(),
            Auth::SlackUnsigned,
        )
        .await;
    assert_eq!(check.status, 200, "{check:?}");

    let user = User::new(Platform::Slack, "rules");
    let name = short_name("pr");
    let answer = adapter
        .command(&user, &format!("create {name} --size huge"))
        .await;
    let text = answer.assert_ephemeral();
    assert!(text.contains("`huge`") && text.contains("miniHA"), "{text}");
    let answer = adapter
        .command(&user, &format!("create {name} --ttl 30d"))
        .await;
    let text = answer.assert_ephemeral();
    assert!(text.contains("7d"), "{text}");
    assert!(get(&client, &name).await.is_none(), "nothing was created");

    adapter
        .command(&user, &format!("create {name}"))
        .await
        .assert_ephemeral();
    let answer = adapter.command(&user, &format!("extend {name} 30d")).await;
    let text = answer.assert_ephemeral();
    assert!(
        text.contains("most profile") && text.contains("7d"),
        "{text}"
    );
    assert_eq!(
        get(&client, &name).await.unwrap().spec.ttl.as_deref(),
        Some("7d")
    );
    let answer = adapter
        .command(&user, &format!("extend {name} 99999999999999999d"))
        .await;
    let text = answer.assert_ephemeral();
    assert!(text.contains("too long"), "{text}");
    assert_eq!(
        get(&client, &name).await.unwrap().spec.ttl.as_deref(),
        Some("7d")
    );
    setup.fake.wait_for_posts("Setting up", 1).await;
    for call in setup
        .fake
        .calls()
        .iter()
        .filter(|c| c.path == "/api/chat.postMessage")
    {
        assert_eq!(
            call.content_type.as_deref(),
            Some("application/json; charset=utf-8"),
            "{call:?}"
        );
    }
    setup.cleanup(&client).await;
    adapter.stop().await;
}
