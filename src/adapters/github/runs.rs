//! Test suites and actions started from a pull request: `/e2e-test`,
//! `/e2e-cancel`, `/testenv run`, the check run's re-run button and the
//! label's `runAfterDeploy`. Each creates (or cancels) TestRuns of the PR's
//! installation; the controller runs them and the run reporter tells GitHub.
//!
//! Every run is named from what asked for it (the comment, the webhook
//! delivery, the deployed commit), so a retried or redelivered request finds
//! its run already there instead of starting a second one.

use std::collections::BTreeMap;

use kube::{
    ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    FIELD_MANAGER,
    actions::{Ctx, Outcome, reply},
    annotations,
    client::Permission,
    naming,
};
use crate::{
    adapters::profile_rules,
    api::{
        InstallationProfile, ProfileRun, RunTarget, StartableBy, TestInstallation, TestRun,
        TestRunSpec, labels,
    },
};

/// What a person asked to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// A suite by name, or the profile's first suite.
    Test(Option<String>),
    Action {
        name: String,
        parameters: BTreeMap<String, String>,
    },
}

/// Who is asking, and where.
pub struct Asker<'a> {
    pub repository: &'a str,
    pub number: u64,
    pub login: &'a str,
    pub permission: Permission,
}

/// Why a run cannot start, told to the person who asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "there is no test installation for this pull request yet; add a test-server label or comment `/testenv deploy` first"
    )]
    NoInstallation,
    #[error("profile `{0}` declares no test suites")]
    NoSuites(String),
    #[error("profile `{profile}` has no {kind} `{name}`; it offers {offered}")]
    Unknown {
        profile: String,
        kind: &'static str,
        name: String,
        offered: String,
    },
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    Parameters(String),
}

/// The profile of an installation (the default profile when none is named).
async fn profile_of(ctx: &Ctx, ti: &TestInstallation) -> anyhow::Result<InstallationProfile> {
    let name = ti
        .spec
        .profile
        .clone()
        .unwrap_or_else(|| profile_rules::DEFAULT_PROFILE.into());
    ctx.profiles.get_opt(&name).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "profile {name} of installation {} does not exist",
            ti.name_any()
        )
    })
}

/// Pure: the suite or action `wanted` names in `profile`, with the
/// parameters checked against its declaration.
pub fn resolve(
    profile: &InstallationProfile,
    wanted: &Wanted,
) -> Result<(ProfileRun, BTreeMap<String, String>), Refusal> {
    let profile_name = profile.name_any();
    let offered = |runs: &[ProfileRun]| {
        if runs.is_empty() {
            "none".to_string()
        } else {
            runs.iter()
                .map(|r| format!("`{}`", r.name))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    match wanted {
        Wanted::Test(None) => profile
            .spec
            .tests
            .first()
            .cloned()
            .map(|t| (t, BTreeMap::new()))
            .ok_or(Refusal::NoSuites(profile_name)),
        Wanted::Test(Some(name)) => profile
            .spec
            .tests
            .iter()
            .find(|t| t.name == *name)
            .cloned()
            .map(|t| (t, BTreeMap::new()))
            .ok_or_else(|| Refusal::Unknown {
                profile: profile_name.clone(),
                kind: "test suite",
                name: name.clone(),
                offered: offered(&profile.spec.tests),
            }),
        Wanted::Action { name, parameters } => {
            let action = profile
                .spec
                .actions
                .iter()
                .find(|a| a.name == *name)
                .cloned()
                .ok_or_else(|| Refusal::Unknown {
                    profile: profile_name.clone(),
                    kind: "action",
                    name: name.clone(),
                    offered: offered(&profile.spec.actions),
                })?;
            let checked = check_parameters(&action, parameters).map_err(Refusal::Parameters)?;
            Ok((action, checked))
        }
    }
}

/// The parameters as the action declares them: unknown ones refused, each
/// value checked against its type, defaults filled in.
fn check_parameters(
    action: &ProfileRun,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    // Until the shared validation lands: names, required values, enums and
    // integer bounds (the controller checks every value again).
    let mut out = BTreeMap::new();
    for name in given.keys() {
        if !action.parameters.iter().any(|p| p.name == *name) {
            return Err(format!("`{}` has no parameter `{name}`", action.name));
        }
    }
    for declared in &action.parameters {
        let value = match (given.get(&declared.name), &declared.default) {
            (Some(value), _) => value.clone(),
            (None, Some(default)) => default.clone(),
            (None, None) => {
                return Err(format!("parameter `{}` is required", declared.name));
            }
        };
        match declared.kind {
            crate::api::ParameterType::Enum if !declared.values.contains(&value) => {
                return Err(format!(
                    "parameter `{}` must be one of {}",
                    declared.name,
                    declared.values.join(", ")
                ));
            }
            crate::api::ParameterType::Integer => {
                let n: i64 = value
                    .parse()
                    .map_err(|_| format!("parameter `{}` must be a whole number", declared.name))?;
                if declared.minimum.is_some_and(|m| n < m)
                    || declared.maximum.is_some_and(|m| n > m)
                {
                    return Err(format!("parameter `{}` is out of range", declared.name));
                }
            }
            _ => {}
        }
        out.insert(declared.name.clone(), value);
    }
    Ok(out)
}

/// Pure: whether `asker` may start `run` on `ti` (profile `startableBy`):
/// `anyone` = anyone with write access to the repository; `requester` =
/// the installation's requester, the people it is shared with, the PR's
/// author, and repository admins; `admins` = repository admins.
pub fn may_start(
    run: &ProfileRun,
    ti: &TestInstallation,
    pr_author: Option<&str>,
    asker: &Asker<'_>,
) -> Result<(), Refusal> {
    if asker.permission < Permission::Write {
        return Err(Refusal::NotAllowed(format!(
            "runs need write permission on {}",
            asker.repository
        )));
    }
    let admin = asker.permission == Permission::Admin;
    let me = naming::requester_label(asker.login);
    let allowed = match run.startable_by {
        StartableBy::Anyone => true,
        StartableBy::Admins => admin,
        StartableBy::Requester => {
            admin
                || ti.labels().get(labels::REQUESTER) == Some(&me)
                || ti.spec.shared_with.contains(&me)
                || pr_author.is_some_and(|a| a.eq_ignore_ascii_case(asker.login))
        }
    };
    if allowed {
        return Ok(());
    }
    let who = match run.startable_by {
        StartableBy::Admins => "repository admins".to_string(),
        _ => "the person who asked for the installation, the people it is shared with, the pull request's author and repository admins".to_string(),
    };
    Err(Refusal::NotAllowed(format!(
        "`{}` may only be started by {who}",
        run.name
    )))
}

/// A TestRun name from the installation, the suite or action and what asked
/// for it (`origin`): the same origin always gives the same name, at most 63
/// characters (the Job's name limit).
pub fn run_name(installation: &str, target: &str, origin: &str) -> String {
    let hash = hex::encode(&Sha256::digest(origin.as_bytes())[..4]);
    let room = 63 - hash.len() - 2;
    let head: String = format!("{installation}-{target}")
        .chars()
        .take(room)
        .collect();
    format!("{}-{hash}", head.trim_end_matches('-'))
}

/// The TestRun for `target` on `ti`, labelled and annotated so the run
/// reporter finds the PR and commit to report on.
#[allow(clippy::too_many_arguments)]
pub fn build_run(
    ctx: &Ctx,
    ti: &TestInstallation,
    target: RunTarget<'_>,
    parameters: BTreeMap<String, String>,
    requester: &str,
    origin: &str,
) -> TestRun {
    let installation = ti.name_any();
    let (test, action, target_name) = match target {
        RunTarget::Test(t) => (Some(t.to_string()), None, t),
        RunTarget::Action(a) => (None, Some(a.to_string()), a),
    };
    let mut run = TestRun::new(
        &run_name(&installation, target_name, origin),
        TestRunSpec {
            installation: installation.clone(),
            test,
            action,
            parameters,
            cancelled: false,
        },
    );
    let from = ti.annotations();
    let mut notes = BTreeMap::new();
    for key in [
        annotations::REPOSITORY,
        annotations::PULL_NUMBER,
        labels::PR_URL,
        labels::HEAD_SHA,
    ] {
        if let Some(value) = from.get(key) {
            notes.insert(key.to_string(), value.clone());
        }
    }
    run.metadata.annotations = Some(notes);
    let mut tags = BTreeMap::from([
        (labels::SOURCE.to_string(), "github".to_string()),
        (labels::REQUESTER.to_string(), requester.to_string()),
        (labels::INSTALLATION.to_string(), installation),
        (
            annotations::INSTANCE.to_string(),
            ctx.config.instance.clone(),
        ),
    ]);
    for key in [annotations::REPOSITORY, annotations::PULL_NUMBER] {
        if let Some(value) = ti.labels().get(key) {
            tags.insert(key.to_string(), value.clone());
        }
    }
    run.metadata.labels = Some(tags);
    run
}

/// Creates `run`; one that exists already (a retry of the same request)
/// counts as created.
async fn create(ctx: &Ctx, run: &TestRun) -> anyhow::Result<()> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match ctx.runs.create(&params, run).await {
        Ok(_) => {
            tracing::info!(run = %run.name_any(), installation = %run.spec.installation,
                "test run created");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// `/e2e-test` and `/testenv run`: checks, then creates the run. Refusals
/// are answered with a reply and create nothing.
pub async fn start(
    ctx: &Ctx,
    key: &str,
    asker: &Asker<'_>,
    installation: Option<TestInstallation>,
    wanted: &Wanted,
) -> anyhow::Result<Outcome> {
    let refuse = |refusal: Refusal| async move {
        tracing::info!(repository = asker.repository, number = asker.number,
            author = asker.login, %refusal, "run refused");
        reply(
            ctx,
            key,
            asker.repository,
            asker.number,
            &format!("@{}: {refusal}. Nothing was started.", asker.login),
        )
        .await
        .map(|()| Outcome::Done)
    };
    let Some(ti) = installation else {
        return refuse(Refusal::NoInstallation).await;
    };
    if ti.metadata.deletion_timestamp.is_some() {
        return refuse(Refusal::NoInstallation).await;
    }
    let profile = profile_of(ctx, &ti).await?;
    let (declared, parameters) = match resolve(&profile, wanted) {
        Ok(found) => found,
        Err(refusal) => return refuse(refusal).await,
    };
    let author = ctx
        .github
        .get_pull(asker.repository, asker.number)
        .await
        .ok()
        .map(|p| p.user.login);
    if let Err(refusal) = may_start(&declared, &ti, author.as_deref(), asker) {
        return refuse(refusal).await;
    }
    let target = match wanted {
        Wanted::Test(_) => RunTarget::Test(&declared.name),
        Wanted::Action { .. } => RunTarget::Action(&declared.name),
    };
    let run = build_run(
        ctx,
        &ti,
        target,
        parameters,
        &naming::requester_label(asker.login),
        key,
    );
    create(ctx, &run).await?;
    Ok(Outcome::Done)
}

/// `/e2e-cancel [SUITE]`: cancels the installation's unfinished runs of the
/// suite (of every suite without one).
pub async fn cancel(
    ctx: &Ctx,
    key: &str,
    asker: &Asker<'_>,
    installation: Option<TestInstallation>,
    suite: Option<&str>,
) -> anyhow::Result<Outcome> {
    let who = format!("@{}", asker.login);
    let Some(ti) = installation else {
        reply(
            ctx,
            key,
            asker.repository,
            asker.number,
            &format!("{who}: {}. Nothing was cancelled.", Refusal::NoInstallation),
        )
        .await?;
        return Ok(Outcome::Done);
    };
    let name = ti.name_any();
    let selector = format!("{}={name}", labels::INSTALLATION);
    let runs = ctx
        .runs
        .list(&ListParams::default().labels(&selector))
        .await?;
    let unfinished: Vec<&TestRun> = runs
        .items
        .iter()
        .filter(|r| r.spec.installation == name && !r.spec.cancelled)
        .filter(|r| !r.phase().is_some_and(|p| p.is_finished()))
        .filter(|r| match (r.target(), suite) {
            (RunTarget::Test(t), Some(s)) => t == s,
            (RunTarget::Test(_), None) => true,
            (RunTarget::Action(_), _) => false,
        })
        .collect();
    if unfinished.is_empty() {
        let what = suite.map_or("no suite".to_string(), |s| format!("suite `{s}`"));
        let text = match suite {
            Some(_) => {
                format!("{who}: {what} has no unfinished run on `{name}`; nothing was cancelled.")
            }
            None => format!("{who}: no suite is running on `{name}`; nothing was cancelled."),
        };
        reply(ctx, key, asker.repository, asker.number, &text).await?;
        return Ok(Outcome::Done);
    }
    let profile = profile_of(ctx, &ti).await?;
    let author = ctx
        .github
        .get_pull(asker.repository, asker.number)
        .await
        .ok()
        .map(|p| p.user.login);
    for run in unfinished {
        let RunTarget::Test(suite) = run.target() else {
            continue;
        };
        // Cancelling is starting's mirror: who may start a suite may stop it.
        let declared = profile.spec.tests.iter().find(|t| t.name == suite);
        if let Some(declared) = declared
            && let Err(refusal) = may_start(declared, &ti, author.as_deref(), asker)
        {
            reply(
                ctx,
                key,
                asker.repository,
                asker.number,
                &format!("{who}: {refusal}. Nothing was cancelled."),
            )
            .await?;
            return Ok(Outcome::Done);
        }
        let patch = json!({ "spec": { "cancelled": true } });
        ctx.runs
            .patch(
                &run.name_any(),
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Merge(&patch),
            )
            .await?;
        tracing::info!(run = %run.name_any(), by = asker.login, "test run cancelled");
    }
    Ok(Outcome::Done)
}

/// The check run's re-run (`rerequested`, or the `rerun` button): a new run
/// of the same suite or action with the same parameters, started by the
/// person who clicked, if they may.
pub async fn rerun(
    ctx: &Ctx,
    key: &str,
    repository: &str,
    sender: &str,
    previous: &str,
) -> anyhow::Result<Outcome> {
    let Some(old) = ctx.runs.get_opt(previous).await? else {
        tracing::info!(
            run = previous,
            "re-run of a run that no longer exists; ignored"
        );
        return Ok(Outcome::Done);
    };
    let owner = old.annotations().get(annotations::REPOSITORY);
    if !owner.is_some_and(|r| r.eq_ignore_ascii_case(repository)) {
        tracing::warn!(run = previous, %repository, "re-run of a run of another repository; ignored");
        return Ok(Outcome::Done);
    }
    let Some(number) = old
        .annotations()
        .get(annotations::PULL_NUMBER)
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return Ok(Outcome::Done);
    };
    let asker = Asker {
        repository,
        number,
        login: sender,
        permission: ctx.github.permission(repository, sender).await?,
    };
    let installation = ctx.installations.get_opt(&old.spec.installation).await?;
    let wanted = match old.target() {
        RunTarget::Test(t) => Wanted::Test(Some(t.to_string())),
        RunTarget::Action(a) => Wanted::Action {
            name: a.to_string(),
            parameters: old.spec.parameters.clone(),
        },
    };
    start(ctx, key, &asker, installation, &wanted).await
}

/// The label's `runAfterDeploy`: one run of `suite` per deployed commit
/// (named from the commit, so a repeated report starts nothing new).
pub async fn after_deploy(
    ctx: &Ctx,
    ti: &TestInstallation,
    suite: &str,
    sha: &str,
) -> anyhow::Result<()> {
    let requester = ti
        .labels()
        .get(labels::REQUESTER)
        .cloned()
        .unwrap_or_else(|| naming::requester_label(&ctx.config.bot_login));
    let origin = format!("deploy:{}:{sha}:{suite}", ti.uid().unwrap_or_default());
    let run = build_run(
        ctx,
        ti,
        RunTarget::Test(suite),
        BTreeMap::new(),
        &requester,
        &origin,
    );
    create(ctx, &run).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::InstallationProfileSpec;

    fn suite(name: &str, startable_by: StartableBy) -> ProfileRun {
        ProfileRun {
            name: name.into(),
            startable_by,
            ..Default::default()
        }
    }

    fn profile() -> InstallationProfile {
        let spec: InstallationProfileSpec = serde_json::from_value(json!({
            "image": "registry.example/app",
            "defaultVersion": "1",
        }))
        .unwrap();
        let mut p = InstallationProfile::new("web", spec);
        p.spec.tests = vec![
            suite("e2e", StartableBy::Anyone),
            suite("smoke", StartableBy::Requester),
        ];
        p.spec.actions = vec![suite("sampledata", StartableBy::Admins)];
        p
    }

    fn installation(requester: &str, shared: &[&str]) -> TestInstallation {
        let mut ti = TestInstallation::new("web-pr-7", Default::default());
        ti.labels_mut()
            .insert(labels::REQUESTER.into(), naming::requester_label(requester));
        ti.spec.shared_with = shared.iter().map(|s| naming::requester_label(s)).collect();
        ti
    }

    fn asker(login: &str, permission: Permission) -> Asker<'_> {
        Asker {
            repository: "acme/web",
            number: 7,
            login,
            permission,
        }
    }

    #[test]
    fn resolves_suites_and_refuses_unknown_names() {
        let p = profile();
        assert_eq!(resolve(&p, &Wanted::Test(None)).unwrap().0.name, "e2e");
        assert_eq!(
            resolve(&p, &Wanted::Test(Some("smoke".into())))
                .unwrap()
                .0
                .name,
            "smoke"
        );
        let err = resolve(&p, &Wanted::Test(Some("perf".into()))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "profile `web` has no test suite `perf`; it offers `e2e`, `smoke`"
        );
        let mut empty = p.clone();
        empty.spec.tests.clear();
        assert_eq!(
            resolve(&empty, &Wanted::Test(None)).unwrap_err(),
            Refusal::NoSuites("web".into())
        );
    }

    #[test]
    fn startable_by_is_honoured() {
        let p = profile();
        let ti = installation("alice", &["bob"]);
        let (e2e, smoke, sample) = (&p.spec.tests[0], &p.spec.tests[1], &p.spec.actions[0]);
        // Read access is never enough.
        assert!(may_start(e2e, &ti, None, &asker("reader", Permission::Read)).is_err());
        assert!(may_start(e2e, &ti, None, &asker("carol", Permission::Write)).is_ok());
        // requester: the requester, people it is shared with, the PR author, admins.
        assert!(may_start(smoke, &ti, None, &asker("carol", Permission::Write)).is_err());
        assert!(may_start(smoke, &ti, None, &asker("alice", Permission::Write)).is_ok());
        assert!(may_start(smoke, &ti, None, &asker("bob", Permission::Write)).is_ok());
        assert!(
            may_start(
                smoke,
                &ti,
                Some("Carol"),
                &asker("carol", Permission::Write)
            )
            .is_ok()
        );
        assert!(may_start(smoke, &ti, None, &asker("root", Permission::Admin)).is_ok());
        // admins: only admins.
        assert!(may_start(sample, &ti, None, &asker("alice", Permission::Write)).is_err());
        assert!(may_start(sample, &ti, None, &asker("root", Permission::Admin)).is_ok());
    }

    #[test]
    fn run_names_are_stable_per_origin_and_fit_a_job_name() {
        let a = run_name("web-pr-7", "e2e", "comment:acme/web:5");
        assert_eq!(a, run_name("web-pr-7", "e2e", "comment:acme/web:5"));
        assert_ne!(a, run_name("web-pr-7", "e2e", "comment:acme/web:6"));
        assert!(a.starts_with("web-pr-7-e2e-"), "{a}");
        let long = run_name(&"i".repeat(40), &"t".repeat(40), "x");
        assert!(long.len() <= 63, "{long}");
        assert!(!long.contains("--"));
    }
}
