//! The slash-command endpoints: authenticate the raw request, parse the
//! command, check who may do it, create or patch the TestInstallation and
//! answer at once (ephemeral), never waiting for the installation itself.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    ANNOTATION_CHANNEL, ANNOTATION_COMMAND, ANNOTATION_PLATFORM, ANNOTATION_TEAM_ID,
    ANNOTATION_USER_ID, ANNOTATION_USER_NAME, FIELD_MANAGER, FINALIZER, LABEL_INSTANCE,
    SOURCE_CHAT,
    auth::{self, AuthError, ReplayGuard},
    command::{self, Command, CreateArgs},
    config::{Config, Secrets},
    messages,
    messenger::{Messenger, Platform, Requester},
    metrics::Metrics,
};
use crate::{
    adapters::profile_rules,
    api::{
        DatabaseSpec, EnvVar, FilestoreSpec, InstallationProfile, TestInstallation,
        TestInstallationSpec,
        duration::{format_duration, parse_duration},
        labels,
    },
};

/// The answer must reach Slack within 3 s; the cluster gets this long.
const CLUSTER_DEADLINE: Duration = Duration::from_millis(2500);

/// The fields of a slash-command request (Mattermost and Slack send the same
/// names) that are used.
#[derive(Debug, Clone, Deserialize)]
pub struct CommandRequest {
    #[serde(default)]
    pub team_id: String,
    #[serde(default)]
    pub channel_name: String,
    pub user_id: String,
    #[serde(default)]
    pub user_name: String,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub trigger_id: String,
}

/// The immediate answer; always ephemeral, so only the caller sees it.
#[derive(Debug, Serialize)]
struct CommandResponse {
    response_type: &'static str,
    text: String,
}

pub struct AppState {
    pub client: Client,
    pub config: Arc<Config>,
    pub secrets: Secrets,
    pub replay: ReplayGuard,
    pub metrics: Arc<Metrics>,
    /// The bots' API clients, to look people up (`share`).
    pub messengers: HashMap<Platform, Arc<Messenger>>,
    /// One lock per requester: creates of one person run one at a time in
    /// this process, so the per-person limit is counted exactly.
    pub create_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl AppState {
    fn create_lock(&self, requester: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.create_locks.lock().unwrap_or_else(|p| p.into_inner());
        // Forget locks nobody holds or waits for, so the map stays small.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(requester.to_string()).or_default().clone()
    }
}

pub fn routes(state: Arc<AppState>) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/mattermost/command", post(mattermost_command))
        .route("/slack/command", post(slack_command))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn refuse(state: &AppState, platform: Platform, err: AuthError) -> Response {
    tracing::warn!(platform = platform.as_str(), reason = %err, "refused an unauthenticated request");
    state
        .metrics
        .command(platform.as_str(), "unknown", "unauthenticated");
    (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response()
}

async fn mattermost_command(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let platform = Platform::Mattermost;
    let (Some(config), Some(secrets)) = (&state.config.mattermost, &state.secrets.mattermost)
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if let Err(err) = auth::check_mattermost_token(authorization, &secrets.command_tokens) {
        return refuse(&state, platform, err);
    }
    let Ok(request) = serde_urlencoded::from_bytes::<CommandRequest>(&body) else {
        return (StatusCode::BAD_REQUEST, "malformed command request\n").into_response();
    };
    // Mattermost has no timestamp or signature; a trigger id is minted per
    // call, so a repeated one is a replay.
    if !request.trigger_id.is_empty()
        && let Err(err) = state.replay.first_use(&request.trigger_id, unix_now())
    {
        return refuse(&state, platform, err);
    }
    if !config.allowed_teams.is_empty() && !config.allowed_teams.contains(&request.team_id) {
        return forbidden(&state, platform);
    }
    answer(&state, platform, request).await
}

async fn slack_command(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let platform = Platform::Slack;
    let (Some(config), Some(secrets)) = (&state.config.slack, &state.secrets.slack) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if auth::is_ssl_check(&body) {
        return StatusCode::OK.into_response();
    }
    let timestamp = headers
        .get("x-slack-request-timestamp")
        .map(|v| v.as_bytes());
    let signature = headers.get("x-slack-signature").map(|v| v.as_bytes());
    if let Err(err) = auth::check_slack_signature(
        &secrets.signing_secret,
        timestamp,
        signature,
        &body,
        unix_now(),
    ) {
        return refuse(&state, platform, err);
    }
    let Ok(request) = serde_urlencoded::from_bytes::<CommandRequest>(&body) else {
        return (StatusCode::BAD_REQUEST, "malformed command request\n").into_response();
    };
    // The signature proves origin, not freshness within the window.
    let replay_key = if request.trigger_id.is_empty() {
        signature.map(|s| String::from_utf8_lossy(s).into_owned())
    } else {
        Some(request.trigger_id.clone())
    };
    if let Some(key) = replay_key
        && let Err(err) = state.replay.first_use(&key, unix_now())
    {
        return refuse(&state, platform, err);
    }
    if !config.allowed_teams.is_empty() && !config.allowed_teams.contains(&request.team_id) {
        return forbidden(&state, platform);
    }
    answer(&state, platform, request).await
}

fn forbidden(state: &AppState, platform: Platform) -> Response {
    state
        .metrics
        .command(platform.as_str(), "unknown", "refused");
    (
        StatusCode::FORBIDDEN,
        "this workspace may not use this command\n",
    )
        .into_response()
}

async fn answer(state: &AppState, platform: Platform, request: CommandRequest) -> Response {
    let requester = Requester {
        platform,
        team_id: request.team_id.clone(),
        user_id: request.user_id.clone(),
        user_name: request.user_name.clone(),
    };
    let trigger = if request.command.starts_with('/') {
        request.command.clone()
    } else {
        "/testenv".to_string()
    };
    let (verb, outcome, text) = match command::parse(&request.text) {
        Err(err) => (
            err.usage.map(|v| v.as_str()).unwrap_or("unknown"),
            Outcome::Invalid,
            messages::parse_error(&err, &trigger),
        ),
        Ok(command) => {
            let verb = command.verb().as_str();
            let ctx = Ctx {
                state,
                requester: &requester,
                trigger: &trigger,
                trigger_id: &request.trigger_id,
                channel: &request.channel_name,
            };
            let (outcome, text) =
                match tokio::time::timeout(CLUSTER_DEADLINE, ctx.execute(command)).await {
                    Ok(result) => result,
                    Err(_) => (
                        Outcome::Error,
                        "The cluster is slow to answer; check again in a moment with \
                         `status` or `list`."
                            .to_string(),
                    ),
                };
            (verb, outcome, text)
        }
    };
    tracing::info!(
        platform = platform.as_str(),
        user = %requester.label_value(),
        command = verb,
        outcome = outcome.as_str(),
        "handled a slash command"
    );
    state
        .metrics
        .command(platform.as_str(), verb, outcome.as_str());
    if outcome == Outcome::Replayed {
        return (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
    }
    Json(CommandResponse {
        response_type: "ephemeral",
        text,
    })
    .into_response()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Ok,
    Invalid,
    Refused,
    Error,
    /// The command's trigger id is recorded on the installation already.
    Replayed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Invalid => "invalid",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
            Outcome::Replayed => "unauthenticated",
        }
    }
}

pub(super) type Answer = (Outcome, String);

pub(super) struct Ctx<'a> {
    pub(super) state: &'a AppState,
    pub(super) requester: &'a Requester,
    pub(super) trigger: &'a str,
    /// The request's `trigger_id`, recorded on what the command changes.
    pub(super) trigger_id: &'a str,
    pub(super) channel: &'a str,
}

impl Ctx<'_> {
    pub(super) fn api(&self) -> Api<TestInstallation> {
        Api::all(self.state.client.clone())
    }

    async fn execute(&self, command: Command) -> Answer {
        let now = Timestamp::now();
        match command {
            Command::Help => (Outcome::Ok, messages::help(self.trigger)),
            Command::Create(args) => self.create(args).await,
            Command::List { all } => self.list(all, now).await,
            Command::Status { name } => match self.get(&name).await {
                Ok(ti) => (
                    Outcome::Ok,
                    messages::status(&ti, self.requester.platform.flavor(), now),
                ),
                Err(answer) => answer,
            },
            Command::Extend { name, by } => self.extend(&name, by, now).await,
            Command::Hibernate { name } => {
                self.set_flag(
                    &name,
                    "hibernate",
                    true,
                    "is hibernating now; `wake` brings it back",
                )
                .await
            }
            Command::Wake { name } => {
                self.set_flag(&name, "hibernate", false, "is waking up")
                    .await
            }
            Command::Lock { name } => {
                self.set_flag(
                    &name,
                    "deletionLocked",
                    true,
                    "is locked against deletion and expiry",
                )
                .await
            }
            Command::Unlock { name } => {
                self.set_flag(&name, "deletionLocked", false, "may be deleted again")
                    .await
            }
            Command::Delete { name } => self.delete(&name).await,
            Command::Update { name, change } => self.update(&name, change).await,
            Command::Restart { name } => self.restart(&name, now).await,
            Command::Share { name, person } => self.share(&name, &person, true).await,
            Command::Unshare { name, person } => self.share(&name, &person, false).await,
            Command::Test { name, suite } => self.test(&name, suite.as_deref()).await,
            Command::Cancel { name, suite } => self.cancel(&name, suite.as_deref()).await,
            Command::Run {
                name,
                action,
                parameters,
            } => self.run(&name, &action, parameters).await,
            Command::Actions { name } => self.actions(&name).await,
        }
    }

    pub(super) async fn get(&self, name: &str) -> Result<TestInstallation, Answer> {
        match self.api().get_opt(name).await {
            Ok(Some(ti)) => Ok(ti),
            Ok(None) => Err((
                Outcome::Refused,
                format!("There is no installation named `{name}`."),
            )),
            Err(err) => Err(cluster_error(&err)),
        }
    }

    pub(super) fn is_admin(&self) -> bool {
        self.state
            .config
            .admins
            .contains(&self.requester.label_value())
    }

    /// The installation, if the requester may change it (its requester, the
    /// people it is shared with, admins) and this request's trigger id has
    /// not changed it before (a replay).
    pub(super) async fn owned(&self, name: &str) -> Result<TestInstallation, Answer> {
        let ti = self.get(name).await?;
        if !self.may_manage(&ti) {
            return Err((
                Outcome::Refused,
                format!(
                    "Only the person who created `{name}`, the people it is shared with, or an admin may change or delete it.{}",
                    belongs_to(&ti)
                ),
            ));
        }
        self.not_replayed(ti)
    }

    /// Whether the requester is the installation's requester.
    pub(super) fn is_requester(&self, ti: &TestInstallation) -> bool {
        ti.labels().get(labels::REQUESTER) == Some(&self.requester.label_value())
    }

    /// The requester, the people it is shared with, and admins.
    pub(super) fn may_manage(&self, ti: &TestInstallation) -> bool {
        let me = self.requester.label_value();
        self.is_requester(ti) || ti.spec.shared_with.contains(&me) || self.is_admin()
    }

    /// `ti`, unless this request's trigger id is recorded on it already.
    pub(super) fn not_replayed(&self, ti: TestInstallation) -> Result<TestInstallation, Answer> {
        let name = ti.name_any();
        if auth::trigger_recorded(
            ti.annotations()
                .get(auth::ANNOTATION_TRIGGERS)
                .map(String::as_str),
            self.trigger_id,
        ) {
            tracing::warn!(
                installation = %name,
                "refused a replayed command (trigger id recorded on the installation)"
            );
            return Err((Outcome::Replayed, String::new()));
        }
        Ok(ti)
    }

    pub(super) fn profiles(&self) -> Api<InstallationProfile> {
        Api::all(self.state.client.clone())
    }

    /// The profile an installation uses, or the answer that it does not exist.
    pub(super) async fn profile(&self, name: Option<&str>) -> Result<InstallationProfile, Answer> {
        let name = name.unwrap_or(profile_rules::DEFAULT_PROFILE);
        match self.profiles().get_opt(name).await {
            Ok(Some(profile)) => Ok(profile),
            Ok(None) => Err((
                Outcome::Invalid,
                format!("⚠️ There is no profile `{name}`; nothing was created."),
            )),
            Err(err) => Err(cluster_error(&err)),
        }
    }

    /// The requester's installations that are not being deleted, oldest
    /// first (ties by name), as every replica orders them.
    async fn mine(&self) -> Result<Vec<TestInstallation>, Answer> {
        let me = self.requester.label_value();
        let list = self
            .api()
            .list(&ListParams::default().labels(&format!("{}={me}", labels::REQUESTER)))
            .await
            .map_err(|err| cluster_error(&err))?;
        let mut mine: Vec<TestInstallation> = list
            .items
            .into_iter()
            .filter(|ti| ti.metadata.deletion_timestamp.is_none())
            .collect();
        mine.sort_by_key(|ti| {
            (
                ti.metadata.creation_timestamp.as_ref().map(|t| t.0),
                ti.name_any(),
            )
        });
        Ok(mine)
    }

    fn over_limit(&self, mine: &[String]) -> Answer {
        let max = self.state.config.max_installations_per_user;
        (
            Outcome::Refused,
            format!(
                "You already have {} installations ({}), the most one person may have is {max}. \
                 Delete one with `{} delete NAME` first.",
                mine.len(),
                mine.join(", "),
                self.trigger
            ),
        )
    }

    /// Creates the installation. The profile's rules (size, ttl, test data)
    /// are checked first, so a bad request is answered at once. The limit per
    /// person is exact: this process creates one person's installations one
    /// at a time, and after creating it counts again; an installation that
    /// another replica's concurrent create pushed over the limit (the newest
    /// by creation time, then name, loses) is deleted at once and refused.
    async fn create(&self, args: CreateArgs) -> Answer {
        let defaults = &self.state.config.defaults;
        let profile = match self
            .profile(args.profile.as_deref().or(defaults.profile.as_deref()))
            .await
        {
            Ok(profile) => profile,
            Err(answer) => return answer,
        };
        let ttl = args.ttl.as_deref().or(defaults.ttl.as_deref());
        if let Err(problem) =
            profile_rules::check_create(&profile, args.size.as_deref(), ttl, args.test_data)
        {
            return (
                Outcome::Invalid,
                format!("⚠️ {problem}; nothing was created."),
            );
        }
        let api = self.api();
        let me = self.requester.label_value();
        let lock = self.state.create_lock(&me);
        let _one_at_a_time = lock.lock().await;
        let max = self.state.config.max_installations_per_user;
        let mine = match self.mine().await {
            Ok(mine) => mine.iter().map(|ti| ti.name_any()).collect::<Vec<_>>(),
            Err(answer) => return answer,
        };
        if mine.len() >= max {
            return self.over_limit(&mine);
        }
        let name = args.name.clone();
        let ti = self.build(args);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.create(&params, &ti).await {
            Ok(created) => self.keep_within_limit(created).await,
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let yours = match api.get_opt(&name).await {
                    Ok(Some(existing)) => existing.labels().get(labels::REQUESTER) == Some(&me),
                    _ => false,
                };
                let text = if yours {
                    format!(
                        "You already have an installation named `{name}`; see `{} status {name}`.",
                        self.trigger
                    )
                } else {
                    format!("The name `{name}` is taken; pick another one.")
                };
                (Outcome::Refused, text)
            }
            Err(err) => cluster_error(&err),
        }
    }

    /// Counts again after a create: when concurrent creates (on other
    /// replicas) put the person over the limit, the installations ranked
    /// beyond it delete themselves, so exactly the limit remains.
    async fn keep_within_limit(&self, created: TestInstallation) -> Answer {
        let name = created.name_any();
        let max = self.state.config.max_installations_per_user;
        let mine = match self.mine().await {
            Ok(mine) => mine,
            // Created; the count could not be checked again.
            Err(_) => return (Outcome::Ok, messages::created(&name, self.trigger)),
        };
        let rank = mine.iter().position(|ti| ti.uid() == created.uid());
        if rank.is_none_or(|rank| rank < max) {
            return (Outcome::Ok, messages::created(&name, self.trigger));
        }
        tracing::info!(installation = %name, "a concurrent create went over the limit; withdrawing this one");
        let params = DeleteParams {
            preconditions: created.uid().map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        let _ = self.api().delete(&name, &params).await;
        let others: Vec<String> = mine.iter().take(max).map(|ti| ti.name_any()).collect();
        self.over_limit(&others)
    }

    fn build(&self, args: CreateArgs) -> TestInstallation {
        let defaults = &self.state.config.defaults;
        let requester = self.requester;
        let labels = BTreeMap::from([
            (labels::REQUESTER.to_string(), requester.label_value()),
            (labels::SOURCE.to_string(), SOURCE_CHAT.to_string()),
            (
                LABEL_INSTANCE.to_string(),
                self.state.config.instance.clone(),
            ),
        ]);
        let mut annotations = BTreeMap::from([
            (
                ANNOTATION_PLATFORM.to_string(),
                requester.platform.as_str().to_string(),
            ),
            (ANNOTATION_USER_ID.to_string(), requester.user_id.clone()),
            (
                ANNOTATION_USER_NAME.to_string(),
                requester.user_name.clone(),
            ),
            (ANNOTATION_COMMAND.to_string(), self.trigger.to_string()),
        ]);
        if !requester.team_id.is_empty() {
            annotations.insert(ANNOTATION_TEAM_ID.into(), requester.team_id.clone());
        }
        if !self.channel.is_empty() {
            annotations.insert(ANNOTATION_CHANNEL.into(), self.channel.to_string());
        }
        if !self.trigger_id.is_empty() {
            annotations.insert(
                auth::ANNOTATION_TRIGGERS.into(),
                auth::record_trigger(None, self.trigger_id, unix_now()),
            );
        }
        let spec = TestInstallationSpec {
            profile: args.profile.or_else(|| defaults.profile.clone()),
            image: args.image,
            version: args.version,
            upgrade_from: args.upgrade_from,
            size: args.size,
            database: args.database.map(|engine| DatabaseSpec {
                engine: Some(engine),
                ..Default::default()
            }),
            filestore: args.filestore.map(|kind| FilestoreSpec {
                kind: Some(kind),
                ..Default::default()
            }),
            test_data: args.test_data,
            env: args
                .env
                .into_iter()
                .map(|(name, value)| EnvVar {
                    name,
                    value: Some(value),
                    value_from: None,
                })
                .collect(),
            ttl: args.ttl.or_else(|| defaults.ttl.clone()),
            ..Default::default()
        };
        TestInstallation {
            metadata: ObjectMeta {
                name: Some(args.name),
                labels: Some(labels),
                annotations: Some(annotations),
                finalizers: Some(vec![FINALIZER.to_string()]),
                ..Default::default()
            },
            spec,
            status: None,
        }
    }

    /// Everyone's installations (`all`), or the requester's own and those
    /// shared with them.
    async fn list(&self, all: bool, now: Timestamp) -> Answer {
        let me = self.requester.label_value();
        match self.api().list(&ListParams::default()).await {
            Ok(list) => {
                let mut items: Vec<TestInstallation> = list
                    .items
                    .into_iter()
                    .filter(|ti| {
                        all || ti.labels().get(labels::REQUESTER) == Some(&me)
                            || ti.spec.shared_with.contains(&me)
                    })
                    .collect();
                items.sort_by_key(|ti| ti.name_any());
                (
                    Outcome::Ok,
                    messages::list(&items, all, self.requester.platform.flavor(), now),
                )
            }
            Err(err) => cluster_error(&err),
        }
    }

    /// Merge-patches `spec` of `ti` and records the request's trigger id on
    /// it in the same write (the resourceVersion makes the write fail rather
    /// than lose a trigger id another replica recorded meanwhile; then it is
    /// read and checked again).
    pub(super) async fn patch_spec(
        &self,
        ti: TestInstallation,
        spec: serde_json::Value,
    ) -> Result<(), Answer> {
        self.patch_spec_and_annotations(ti, spec, json!({})).await
    }

    /// [`Self::patch_spec`] that also merges `annotations` (null removes).
    pub(super) async fn patch_spec_and_annotations(
        &self,
        ti: TestInstallation,
        spec: serde_json::Value,
        annotations: serde_json::Value,
    ) -> Result<(), Answer> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let name = ti.name_any();
        let mut ti = ti;
        for _ in 0..5 {
            let triggers = auth::record_trigger(
                ti.annotations()
                    .get(auth::ANNOTATION_TRIGGERS)
                    .map(String::as_str),
                self.trigger_id,
                unix_now(),
            );
            let mut all_annotations = annotations.clone();
            if let Some(map) = all_annotations.as_object_mut() {
                map.insert(auth::ANNOTATION_TRIGGERS.into(), json!(triggers));
            }
            let patch = json!({
                "metadata": {
                    "resourceVersion": ti.resource_version(),
                    "annotations": all_annotations,
                },
                "spec": spec,
            });
            match self
                .api()
                .patch(&name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    ti = self.owned(&name).await?;
                }
                Err(err) => return Err(cluster_error(&err)),
            }
        }
        Err((
            Outcome::Error,
            format!("`{name}` keeps changing; try again in a moment."),
        ))
    }

    /// Sets or clears a boolean spec field (cleared fields are removed, as
    /// the type leaves `false` out).
    async fn set_flag(&self, name: &str, field: &str, on: bool, done: &str) -> Answer {
        let ti = match self.owned(name).await {
            Ok(ti) => ti,
            Err(answer) => return answer,
        };
        let current = match field {
            "hibernate" => ti.spec.hibernate,
            _ => ti.spec.deletion_locked,
        };
        if current == on {
            let state = match (field, on) {
                ("hibernate", true) => "is already hibernating",
                ("hibernate", false) => "is not hibernating",
                (_, true) => "is already locked",
                (_, false) => "is not locked",
            };
            return (Outcome::Ok, format!("`{name}` {state}; nothing changed."));
        }
        let value = if on { json!(true) } else { json!(null) };
        match self.patch_spec(ti, json!({ field: value })).await {
            Ok(()) => (Outcome::Ok, format!("`{name}` {done}.")),
            Err(answer) => answer,
        }
    }

    /// Extending keeps the installation until `by` from now: the ttl becomes
    /// the age plus `by`, rounded up to whole minutes, at most the profile's
    /// `ttl.max` (the answer says so). It never shortens.
    async fn extend(&self, name: &str, by: Duration, now: Timestamp) -> Answer {
        let ti = match self.owned(name).await {
            Ok(ti) => ti,
            Err(answer) => return answer,
        };
        let profile_name = ti
            .spec
            .profile
            .clone()
            .unwrap_or_else(|| profile_rules::DEFAULT_PROFILE.into());
        let max = match self.profiles().get_opt(&profile_name).await {
            Ok(Some(profile)) => profile_rules::max_ttl(&profile),
            Ok(None) => {
                profile_rules::max_ttl(&InstallationProfile::new(&profile_name, Default::default()))
            }
            Err(err) => return cluster_error(&err),
        };
        let created = ti
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(now);
        let age = Duration::from_secs((now.as_second() - created.as_second()).max(0) as u64);
        let extension = profile_rules::extension(age, by, max);
        let until_of = |ttl: Duration| {
            i64::try_from(ttl.as_secs())
                .ok()
                .and_then(|secs| created.as_second().checked_add(secs))
                .and_then(|secs| Timestamp::from_second(secs).ok())
                .unwrap_or(now)
        };
        let cap_note = if extension.capped {
            format!(
                " That is the most profile `{profile_name}` allows: {} from creation.",
                format_duration(max)
            )
        } else {
            String::new()
        };
        let current = ti.spec.ttl.as_deref().and_then(|t| parse_duration(t).ok());
        if let Some(current) = current
            && current >= extension.ttl
        {
            return (
                Outcome::Ok,
                format!(
                    "`{name}` already lives until {}; nothing changed.{cap_note}",
                    messages::when(until_of(current), now)
                ),
            );
        }
        match self
            .patch_spec(ti, json!({ "ttl": format_duration(extension.ttl) }))
            .await
        {
            Ok(()) => (
                Outcome::Ok,
                format!(
                    "`{name}` now lives until {}.{cap_note}",
                    messages::when(until_of(extension.ttl), now)
                ),
            ),
            Err(answer) => answer,
        }
    }

    async fn delete(&self, name: &str) -> Answer {
        let ti = match self.owned(name).await {
            Ok(ti) => ti,
            Err(answer) => return answer,
        };
        if ti.metadata.deletion_timestamp.is_some() {
            return (Outcome::Ok, format!("`{name}` is already being deleted."));
        }
        if ti.spec.deletion_locked {
            return (
                Outcome::Refused,
                format!(
                    "`{name}` is locked against deletion; `{} unlock {name}` first.",
                    self.trigger
                ),
            );
        }
        let params = DeleteParams {
            preconditions: ti.metadata.uid.clone().map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.api().delete(name, &params).await {
            Ok(_) => (
                Outcome::Ok,
                format!("Deleting `{name}`; I will tell you when it is gone."),
            ),
            Err(err) => cluster_error(&err),
        }
    }
}

/// ` It belongs to NAME.` when the installation names its requester.
pub(super) fn belongs_to(ti: &TestInstallation) -> String {
    ti.annotations()
        .get(ANNOTATION_USER_NAME)
        .map(|n| format!(" It belongs to {n}."))
        .unwrap_or_default()
}

/// An answer for a failed API call. Validation failures (the CRD's schema and
/// CEL rules) are shown as the API server words them.
pub(super) fn cluster_error(err: &kube::Error) -> Answer {
    match err {
        kube::Error::Api(status) if status.code == 422 || status.code == 400 => {
            let causes: Vec<String> = status
                .details
                .as_ref()
                .map(|d| {
                    d.causes
                        .iter()
                        .map(|c| {
                            let message = strip_invalid_value(&c.message);
                            if c.field.is_empty() {
                                message.to_string()
                            } else {
                                format!("{}: {message}", c.field)
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let detail = if causes.is_empty() {
                status.message.clone()
            } else {
                causes.join("; ")
            };
            (
                Outcome::Invalid,
                format!("⚠️ The cluster refused this: {detail}"),
            )
        }
        kube::Error::Api(status) if status.code == 403 => {
            tracing::error!(error = %err, "the adapter lacks a permission");
            (
                Outcome::Error,
                "The adapter is not allowed to do this in the cluster; ask the platform team."
                    .into(),
            )
        }
        _ => {
            tracing::error!(error = %err, "a Kubernetes API call failed");
            (
                Outcome::Error,
                "The cluster could not be reached; try again in a moment.".into(),
            )
        }
    }
}

/// `Invalid value: "object": env names must be unique` → the rule's message.
fn strip_invalid_value(message: &str) -> &str {
    let Some(rest) = message.strip_prefix("Invalid value: ") else {
        return message;
    };
    // The value is quoted; the message follows the closing quote and ": ".
    if let Some(stripped) = rest.strip_prefix('"')
        && let Some(end) = stripped.find("\": ")
    {
        return &stripped[end + 3..];
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_invalid_value_prefix() {
        assert_eq!(
            strip_invalid_value("Invalid value: \"object\": env names must be unique"),
            "env names must be unique"
        );
        assert_eq!(strip_invalid_value("Required value"), "Required value");
    }
}
