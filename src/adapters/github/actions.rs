//! What the worker does with a queued intent: create, patch or delete the
//! PR's TestInstallation, and handle `/testenv` commands. The reporter, not
//! this module, tells the PR about the installation's state.

use std::{collections::BTreeMap, sync::Arc};

use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::{
    FIELD_MANAGER, annotations,
    client::GitHub,
    commands::{self, Command},
    config::{Config, LabelSettings, Repository},
    events::{self, CommentIntent, Desired, Intent, Plan, PullIntent, PullRequest},
    naming,
    runs::{self, Asker, Wanted},
};
use crate::{
    adapters::profile_rules,
    api::{
        InstallationProfile, TestInstallation, TestInstallationSpec, TestRun,
        duration::{format_duration, parse_duration},
        labels,
    },
};

pub struct Ctx {
    pub config: Arc<Config>,
    pub github: Arc<GitHub>,
    pub installations: Api<TestInstallation>,
    pub profiles: Api<InstallationProfile>,
    pub runs: Api<TestRun>,
}

/// Whether the intent is done or must be tried again later.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The installation is still being deleted; try again once it is gone.
    RetryLater,
}

/// Does what the delivery asks. `key` names it across redeliveries (the
/// comment id for commands, else the delivery GUID) and marks the replies it
/// posts, so a retried delivery never answers twice.
pub async fn process(ctx: &Ctx, key: &str, intent: &Intent) -> anyhow::Result<Outcome> {
    match intent {
        Intent::Pull(pull) => {
            if let Some(id) = pull.installation_id {
                ctx.github.note_installation(&pull.repository, id).await;
            }
            reconcile_pull(ctx, key, pull).await
        }
        Intent::Comment(comment) => {
            if let Some(id) = comment.installation_id {
                ctx.github.note_installation(&comment.repository, id).await;
            }
            command(ctx, key, comment).await
        }
        Intent::Rerun(rerun) => {
            if let Some(id) = rerun.installation_id {
                ctx.github.note_installation(&rerun.repository, id).await;
            }
            runs::rerun(ctx, key, &rerun.repository, &rerun.sender, &rerun.run).await
        }
    }
}

/// Settings a `/testenv deploy` adds to the label's.
#[derive(Debug, Default, Clone)]
struct Overrides {
    size: Option<String>,
    test_data: bool,
}

fn repository<'a>(ctx: &'a Ctx, name: &str) -> anyhow::Result<&'a Repository> {
    ctx.config
        .repository(name)
        .ok_or_else(|| anyhow::anyhow!("repository {name} is not in the allowlist"))
}

/// The PR's installation, if it exists and belongs to this PR.
async fn existing(
    ctx: &Ctx,
    name: &str,
    repository: &str,
) -> anyhow::Result<Option<TestInstallation>> {
    let Some(ti) = ctx.installations.get_opt(name).await? else {
        return Ok(None);
    };
    let owner = ti.annotations().get(annotations::REPOSITORY);
    if !owner.is_some_and(|r| r.eq_ignore_ascii_case(repository)) {
        anyhow::bail!(
            "TestInstallation {name} exists but does not belong to {repository} (annotation {} is {owner:?}); not touching it",
            annotations::REPOSITORY
        );
    }
    Ok(Some(ti))
}

async fn reconcile_pull(ctx: &Ctx, key: &str, intent: &PullIntent) -> anyhow::Result<Outcome> {
    let repo = repository(ctx, &intent.repository)?;
    let number = intent.pull.number;
    // The current state, never the event's snapshot: that is what makes
    // label flapping converge and replays of old deliveries harmless (a
    // replayed `labeled` of a closed PR creates nothing). When GitHub cannot
    // be read, the delivery fails and is retried.
    let pull = ctx
        .github
        .get_pull(&intent.repository, number)
        .await
        .map_err(|err| anyhow::anyhow!("cannot read the pull request: {err}"))?;
    let name = naming::installation_name(&intent.repository, number);
    let current = existing(ctx, &name, &intent.repository).await?;
    let mut approved = current
        .as_ref()
        .and_then(|ti| ti.annotations().get(annotations::APPROVED_SHA).cloned());
    let mut refused_approval = false;
    if pull.is_fork()
        && repo.allow_forks
        && let Some(sha) = intent.approves(&ctx.config)
    {
        if ctx
            .github
            .can_write(&intent.repository, &intent.sender)
            .await?
        {
            approved = Some(sha.to_string());
        } else {
            refused_approval = true;
        }
    }
    let plan = events::plan(&pull, &ctx.config, repo, approved.as_deref());
    tracing::info!(repository = %intent.repository, number, action = %intent.action,
        installation = %name, ?plan, "reconciling pull request");
    match plan {
        Plan::Absent => delete(ctx, current.as_ref()).await.map(|()| Outcome::Done),
        Plan::ForkRefused => {
            delete(ctx, current.as_ref()).await?;
            if intent.action == "labeled" {
                reply(
                    ctx,
                    key,
                    &intent.repository,
                    number,
                    &format!(
                        "Pull requests from forks are not deployed in {}.",
                        intent.repository
                    ),
                )
                .await?;
            }
            Ok(Outcome::Done)
        }
        Plan::AwaitingApproval => {
            if intent.action == "labeled" || refused_approval {
                reply(
                    ctx,
                    key,
                    &intent.repository,
                    number,
                    &format!(
                        "This pull request comes from a fork. Its code is deployed only after someone with \
                         write permission on {} approves the commit by applying the label or commenting \
                         `/testenv deploy`.",
                        intent.repository
                    ),
                )
                .await?;
            }
            Ok(Outcome::Done)
        }
        Plan::Present(desired) => {
            ensure(
                ctx,
                &pull,
                repo,
                &name,
                current,
                &desired,
                &intent.sender,
                None,
            )
            .await
        }
    }
}

/// Creates the installation, or rolls the existing one to the desired commit.
#[allow(clippy::too_many_arguments)]
async fn ensure(
    ctx: &Ctx,
    pull: &PullRequest,
    repo: &Repository,
    name: &str,
    current: Option<TestInstallation>,
    desired: &Desired,
    requester: &str,
    overrides: Option<&Overrides>,
) -> anyhow::Result<Outcome> {
    let image = repo
        .image
        .render(&repo.name, pull.number, &desired.sha)
        .map_err(|err| anyhow::anyhow!("image for {}: {err}", desired.sha))?;
    let mut wanted_annotations = BTreeMap::from([
        (labels::PR_URL.to_string(), pull.html_url.clone()),
        (labels::HEAD_SHA.to_string(), desired.sha.clone()),
        (annotations::LATEST_HEAD.to_string(), pull.head.sha.clone()),
    ]);
    if let Some(approved) = &desired.approved_sha {
        wanted_annotations.insert(annotations::APPROVED_SHA.into(), approved.clone());
    }
    let Some(ti) = current else {
        return create(
            ctx,
            pull,
            repo,
            name,
            &desired.label,
            image,
            wanted_annotations,
            requester,
            overrides,
        )
        .await;
    };
    if ti.metadata.deletion_timestamp.is_some() {
        return Ok(Outcome::RetryLater);
    }
    let mut spec = serde_json::Map::new();
    if image.image.is_some() && ti.spec.image != image.image {
        spec.insert("image".into(), json!(image.image));
    }
    if ti.spec.version.as_deref() != Some(image.version.as_str()) {
        spec.insert("version".into(), json!(image.version));
        if ti.spec.upgrade_from.as_deref() == Some(image.version.as_str()) {
            spec.insert("upgradeFrom".into(), serde_json::Value::Null);
        }
    }
    if let Some(o) = overrides {
        if let Some(size) = &o.size
            && ti.spec.size.as_ref() != Some(size)
        {
            spec.insert("size".into(), json!(size));
        }
        if o.test_data && !ti.spec.test_data {
            spec.insert("testData".into(), json!(true));
        }
    }
    let annotations: serde_json::Map<String, serde_json::Value> = wanted_annotations
        .into_iter()
        .filter(|(k, v)| ti.annotations().get(k) != Some(v))
        .map(|(k, v)| (k, json!(v)))
        .collect();
    if spec.is_empty() && annotations.is_empty() {
        return Ok(Outcome::Done);
    }
    let patch = json!({ "metadata": { "annotations": annotations }, "spec": spec });
    ctx.installations
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await?;
    tracing::info!(installation = name, version = %image.version, "installation updated");
    Ok(Outcome::Done)
}

#[allow(clippy::too_many_arguments)]
async fn create(
    ctx: &Ctx,
    pull: &PullRequest,
    repo: &Repository,
    name: &str,
    label: &LabelSettings,
    image: super::config::ImageRef,
    mut annotations_map: BTreeMap<String, String>,
    requester: &str,
    overrides: Option<&Overrides>,
) -> anyhow::Result<Outcome> {
    let upgrade_from = if label.upgrade {
        let profile = repo.profile.as_deref().unwrap_or("default");
        let found = ctx.profiles.get_opt(profile).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "label {:?} upgrades from the default version of profile {profile}, which does not exist",
                label.name
            )
        })?;
        Some(found.spec.default_version).filter(|v| *v != image.version)
    } else {
        None
    };
    let ttl = label
        .ttl
        .clone()
        .unwrap_or_else(|| format_duration(ctx.config.default_ttl));
    let spec = TestInstallationSpec {
        profile: repo.profile.clone(),
        image: image.image,
        version: Some(image.version.clone()),
        upgrade_from,
        size: overrides
            .and_then(|o| o.size.clone())
            .or_else(|| label.size.clone()),
        test_data: label.test_data || overrides.is_some_and(|o| o.test_data),
        ttl: Some(ttl),
        ..Default::default()
    };
    annotations_map.insert(annotations::REPOSITORY.into(), repo.name.clone());
    annotations_map.insert(annotations::PULL_NUMBER.into(), pull.number.to_string());
    annotations_map.insert(annotations::LABEL.into(), label.name.clone());
    let mut ti = TestInstallation::new(name, spec);
    ti.metadata.annotations = Some(annotations_map);
    ti.metadata.labels = Some(BTreeMap::from([
        (labels::SOURCE.to_string(), "github".to_string()),
        (
            labels::REQUESTER.to_string(),
            naming::requester_label(requester),
        ),
        (
            annotations::REPOSITORY.to_string(),
            naming::repository_label(&repo.name),
        ),
        (
            annotations::PULL_NUMBER.to_string(),
            pull.number.to_string(),
        ),
        (
            annotations::INSTANCE.to_string(),
            ctx.config.instance.clone(),
        ),
    ]));
    ti.metadata.finalizers = Some(vec![annotations::FINALIZER.to_string()]);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match ctx.installations.create(&params, &ti).await {
        Ok(_) => {
            tracing::info!(installation = name, version = %image.version, "installation created");
            Ok(Outcome::Done)
        }
        // Created meanwhile (or still terminating): look again later.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Outcome::RetryLater),
        Err(err) => Err(err.into()),
    }
}

async fn delete(ctx: &Ctx, current: Option<&TestInstallation>) -> anyhow::Result<()> {
    let Some(ti) = current else { return Ok(()) };
    if ti.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let name = ti.name_any();
    match ctx
        .installations
        .delete(&name, &DeleteParams::background())
        .await
    {
        Ok(_) => {
            tracing::info!(installation = %name, "installation deleted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// The hidden marker of the reply to the delivery `key`.
fn reply_marker(key: &str) -> String {
    format!("<!-- ephemera-reply:{key} -->")
}

/// Posts the answer to the delivery `key`, once: a reply already there (its
/// answer was lost, or an earlier attempt of this delivery failed after
/// posting it) is not posted again. Failures are the delivery's failures.
pub async fn reply(
    ctx: &Ctx,
    key: &str,
    repository: &str,
    number: u64,
    text: &str,
) -> anyhow::Result<()> {
    let marker = reply_marker(key);
    let comments = ctx.github.list_comments(repository, number).await?;
    let posted = comments.iter().any(|c| {
        c.user.login.eq_ignore_ascii_case(&ctx.config.bot_login)
            && c.body.as_deref().is_some_and(|b| b.contains(&marker))
    });
    if !posted {
        ctx.github
            .create_comment(repository, number, &format!("{text}\n\n{marker}"))
            .await?;
    }
    Ok(())
}

async fn command(ctx: &Ctx, key: &str, c: &CommentIntent) -> anyhow::Result<Outcome> {
    let repo = repository(ctx, &c.repository)?;
    let who = format!("@{}", c.author);
    let permission = ctx.github.permission(&c.repository, &c.author).await?;
    if permission < super::client::Permission::Write {
        tracing::info!(repository = %c.repository, number = c.number, author = %c.author,
            "command refused: no write permission");
        reply(
            ctx,
            key,
            &c.repository,
            c.number,
            &format!(
                "{who}: `/testenv` commands need write permission on {}. Ask a maintainer to run it.",
                c.repository
            ),
        )
        .await?;
        return Ok(Outcome::Done);
    }
    let command = match &c.command {
        Ok(command) => command,
        Err(err) => {
            reply(
                ctx,
                key,
                &c.repository,
                c.number,
                &format!("{who}: {err}.\n\n{}", commands::help_text()),
            )
            .await?;
            return Ok(Outcome::Done);
        }
    };
    tracing::info!(repository = %c.repository, number = c.number, author = %c.author,
        command = command.name(), "running command");
    let name = naming::installation_name(&c.repository, c.number);
    let asker = Asker {
        repository: &c.repository,
        number: c.number,
        login: &c.author,
        permission,
    };
    match command {
        Command::Test { suite } => {
            let current = existing(ctx, &name, &c.repository).await?;
            runs::start(ctx, key, &asker, current, &Wanted::Test(suite.clone())).await
        }
        Command::Run { action, parameters } => {
            let current = existing(ctx, &name, &c.repository).await?;
            let wanted = Wanted::Action {
                name: action.clone(),
                parameters: parameters.clone(),
            };
            runs::start(ctx, key, &asker, current, &wanted).await
        }
        Command::Cancel { suite } => {
            let current = existing(ctx, &name, &c.repository).await?;
            runs::cancel(ctx, key, &asker, current, suite.as_deref()).await
        }
        Command::Help => {
            reply(ctx, key, &c.repository, c.number, &commands::help_text()).await?;
            Ok(Outcome::Done)
        }
        Command::Status => {
            let text = match existing(ctx, &name, &c.repository).await? {
                Some(ti) => {
                    let report = super::render::Report::of(&ti, false);
                    super::render::status_reply(&report)
                }
                None => format!(
                    "There is no test installation for this pull request. {}",
                    deploy_hint()
                ),
            };
            reply(ctx, key, &c.repository, c.number, &format!("{who}: {text}")).await?;
            Ok(Outcome::Done)
        }
        Command::Deploy { size, test_data } => {
            if let Some(size) = size
                && !ctx.config.sizes.contains(size)
            {
                reply(
                    ctx,
                    key,
                    &c.repository,
                    c.number,
                    &format!(
                        "{who}: size `{size}` is not offered; choose one of {}.",
                        ctx.config
                            .sizes
                            .iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .await?;
                return Ok(Outcome::Done);
            }
            let pull = ctx.github.get_pull(&c.repository, c.number).await?;
            if !pull.is_open() {
                reply(
                    ctx,
                    key,
                    &c.repository,
                    c.number,
                    &format!("{who}: the pull request is closed; nothing was deployed."),
                )
                .await?;
                return Ok(Outcome::Done);
            }
            if pull.is_fork() && !repo.allow_forks {
                reply(
                    ctx,
                    key,
                    &c.repository,
                    c.number,
                    &format!(
                        "{who}: pull requests from forks are not deployed in {}.",
                        c.repository
                    ),
                )
                .await?;
                return Ok(Outcome::Done);
            }
            let label = ctx
                .config
                .active_label(pull.label_names())
                .unwrap_or(&ctx.config.labels[0])
                .clone();
            let desired = Desired {
                label: label.clone(),
                sha: pull.head.sha.clone(),
                // A writer's command approves the fork's current head.
                approved_sha: pull.is_fork().then(|| pull.head.sha.clone()),
                head_unapproved: false,
            };
            let overrides = Overrides {
                size: size.clone(),
                test_data: *test_data,
            };
            let current = existing(ctx, &name, &c.repository).await?;
            let outcome = ensure(
                ctx,
                &pull,
                repo,
                &name,
                current,
                &desired,
                &c.author,
                Some(&overrides),
            )
            .await?;
            if outcome == Outcome::Done && !pull.label_names().any(|l| l == label.name) {
                // The label stays the visible state of the PR.
                ctx.github
                    .add_label(&c.repository, c.number, &label.name)
                    .await?;
            }
            Ok(outcome)
        }
        Command::Destroy => {
            let current = existing(ctx, &name, &c.repository).await?;
            delete(ctx, current.as_ref()).await?;
            let present: Vec<String> = match ctx.github.get_pull(&c.repository, c.number).await {
                Ok(pull) => pull.label_names().map(String::from).collect(),
                Err(_) => ctx.config.labels.iter().map(|l| l.name.clone()).collect(),
            };
            for label in &ctx.config.labels {
                if present.contains(&label.name) {
                    ctx.github
                        .remove_label(&c.repository, c.number, &label.name)
                        .await?;
                }
            }
            if current.is_none() {
                reply(
                    ctx,
                    key,
                    &c.repository,
                    c.number,
                    &format!("{who}: there was no test installation to destroy."),
                )
                .await?;
            }
            Ok(Outcome::Done)
        }
        Command::Extend(by) => {
            let Some(ti) = existing(ctx, &name, &c.repository).await? else {
                reply(
                    ctx,
                    key,
                    &c.repository,
                    c.number,
                    &format!(
                        "{who}: there is no test installation to extend. {}",
                        deploy_hint()
                    ),
                )
                .await?;
                return Ok(Outcome::Done);
            };
            let current = ti
                .spec
                .ttl
                .as_deref()
                .and_then(|t| parse_duration(t).ok())
                .unwrap_or(ctx.config.default_ttl);
            let profile_name = ti
                .spec
                .profile
                .clone()
                .unwrap_or_else(|| profile_rules::DEFAULT_PROFILE.into());
            let max = match ctx.profiles.get_opt(&profile_name).await? {
                Some(profile) => profile_rules::max_ttl(&profile),
                None => profile_rules::max_ttl(&InstallationProfile::new(
                    &profile_name,
                    Default::default(),
                )),
            };
            let extension = profile_rules::extension(current, *by, max);
            let ttl = format_duration(extension.ttl);
            let text = if extension.ttl <= current {
                format!(
                    "{who}: the installation already lives {} from its creation, the most profile `{profile_name}` allows ({}); nothing changed.",
                    format_duration(current),
                    format_duration(max)
                )
            } else {
                let patch = json!({ "spec": { "ttl": ttl } });
                ctx.installations
                    .patch(
                        &name,
                        &PatchParams::apply(FIELD_MANAGER),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                if extension.capped {
                    format!(
                        "{who}: extended to the most profile `{profile_name}` allows: the installation now lives {ttl} from its creation."
                    )
                } else {
                    format!(
                        "{who}: extended by {}; the installation now lives {ttl} from its creation.",
                        format_duration(*by)
                    )
                }
            };
            reply(ctx, key, &c.repository, c.number, &text).await?;
            Ok(Outcome::Done)
        }
    }
}

fn deploy_hint() -> &'static str {
    "Add a test-server label or comment `/testenv deploy` to create one."
}
