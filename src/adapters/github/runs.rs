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
    adapters::{
        profile_rules,
        runs::{self as shared, StartError},
    },
    api::{
        InstallationProfile, ProfileRun, RunTarget, StartableBy, TestInstallation, TestRun, labels,
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
    #[error("runs need write permission on {0}")]
    NoWrite(String),
    #[error(transparent)]
    Start(#[from] StartError),
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

/// Pure: the suite or action `wanted` names in `profile`, checked for
/// whether `asker` may start it on `ti`, with its parameters checked and
/// defaulted. `startableBy: requester` on GitHub also lets the PR's author
/// start it (the PR is theirs); admins are the repository's admins.
pub fn check(
    profile: &InstallationProfile,
    ti: &TestInstallation,
    wanted: &Wanted,
    pr_author: Option<&str>,
    asker: &Asker<'_>,
) -> Result<(ProfileRun, BTreeMap<String, String>), Refusal> {
    if asker.permission < Permission::Write {
        return Err(Refusal::NoWrite(asker.repository.to_string()));
    }
    let profile_name = profile.name_any();
    let (declared, given) = match wanted {
        Wanted::Test(name) => (
            shared::find_suite(&profile_name, &profile.spec, name.as_deref())?,
            BTreeMap::new(),
        ),
        Wanted::Action { name, parameters } => (
            shared::find_action(&profile_name, &profile.spec, name)?,
            parameters.clone(),
        ),
    };
    let me = naming::requester_label(asker.login);
    let admin = asker.permission == Permission::Admin;
    let author = declared.startable_by == StartableBy::Requester
        && pr_author.is_some_and(|a| a.eq_ignore_ascii_case(asker.login));
    // The PR's author counts as the requester: check as them.
    let person = if author {
        ti.labels().get(labels::REQUESTER).cloned().unwrap_or(me)
    } else {
        me
    };
    let parameters = shared::check_start(declared, ti, &person, admin, &given)?;
    Ok((declared.clone(), parameters))
}

/// A TestRun name (the shared shape, `<installation>-<target>-<suffix>`)
/// whose suffix comes from what asked for it (`origin`) instead of the
/// clock: a retried or redelivered request names the same run, finds it
/// there and starts nothing new.
pub fn run_name(installation: &str, target: RunTarget<'_>, origin: &str) -> String {
    let digest = Sha256::digest(origin.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    // 48 bits: ten base-36 digits at most.
    let suffix = u64::from_be_bytes(bytes) >> 16;
    shared::run_name(installation, target, suffix)
}

/// The TestRun for `target` on `ti`, labelled and annotated so the run
/// reporter finds the PR and the commit to report on.
pub fn build_run(
    ctx: &Ctx,
    ti: &TestInstallation,
    target: RunTarget<'_>,
    parameters: BTreeMap<String, String>,
    requester: &str,
    origin: &str,
) -> TestRun {
    let installation = ti.name_any();
    let mut run = shared::new_test_run(
        run_name(&installation, target, origin),
        &installation,
        target,
        parameters,
        requester,
        "github",
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
    let tags = run.metadata.labels.get_or_insert_default();
    tags.insert(
        annotations::INSTANCE.to_string(),
        ctx.config.instance.clone(),
    );
    for key in [annotations::REPOSITORY, annotations::PULL_NUMBER] {
        if let Some(value) = ti.labels().get(key) {
            tags.insert(key.to_string(), value.clone());
        }
    }
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
    let author = ctx
        .github
        .get_pull(asker.repository, asker.number)
        .await
        .ok()
        .map(|p| p.user.login);
    let (declared, parameters) = match check(&profile, &ti, wanted, author.as_deref(), asker) {
        Ok(found) => found,
        Err(refusal) => return refuse(refusal).await,
    };
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
        &format!("{}:{key}", asker.repository.to_ascii_lowercase()),
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
        let wanted = Wanted::Test(Some(suite.to_string()));
        if let Err(refusal) = check(&profile, &ti, &wanted, author.as_deref(), asker) {
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
    use crate::api::{InstallationProfileSpec, ParameterType, RunParameter};

    fn declared(name: &str, startable_by: StartableBy) -> ProfileRun {
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
            declared("e2e", StartableBy::Anyone),
            declared("smoke", StartableBy::Requester),
        ];
        let mut users = declared("list-users", StartableBy::Admins);
        users.parameters = vec![RunParameter {
            name: "limit".into(),
            kind: ParameterType::Integer,
            minimum: Some(1),
            maximum: Some(100),
            default: Some("10".into()),
            ..Default::default()
        }];
        p.spec.actions = vec![users];
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

    fn test(name: Option<&str>) -> Wanted {
        Wanted::Test(name.map(String::from))
    }

    #[test]
    fn suites_default_to_the_first_and_unknown_names_are_refused() {
        let (p, ti) = (profile(), installation("alice", &[]));
        let dev = asker("alice", Permission::Write);
        assert_eq!(
            check(&p, &ti, &test(None), None, &dev).unwrap().0.name,
            "e2e"
        );
        let err = check(&p, &ti, &test(Some("perf")), None, &dev).unwrap_err();
        assert_eq!(
            err.to_string(),
            "profile web has no test suite perf; it has e2e, smoke"
        );
    }

    #[test]
    fn startable_by_is_honoured() {
        let (p, ti) = (profile(), installation("alice", &["bob"]));
        let ok = |wanted: &Wanted, author: Option<&str>, a: Asker<'_>| {
            check(&p, &ti, wanted, author, &a).is_ok()
        };
        let smoke = test(Some("smoke"));
        let users = Wanted::Action {
            name: "list-users".into(),
            parameters: BTreeMap::new(),
        };
        // Read access is never enough, whatever the profile says.
        assert!(!ok(&test(None), None, asker("reader", Permission::Read)));
        assert!(ok(&test(None), None, asker("carol", Permission::Write)));
        // requester: the requester, people it is shared with, the PR author, admins.
        assert!(!ok(&smoke, None, asker("carol", Permission::Write)));
        assert!(ok(&smoke, None, asker("alice", Permission::Write)));
        assert!(ok(&smoke, None, asker("bob", Permission::Write)));
        assert!(ok(&smoke, Some("Carol"), asker("carol", Permission::Write)));
        assert!(ok(&smoke, None, asker("root", Permission::Admin)));
        // admins: only admins.
        assert!(!ok(&users, None, asker("alice", Permission::Write)));
        assert!(ok(&users, None, asker("root", Permission::Admin)));
    }

    #[test]
    fn parameters_are_checked_and_defaulted() {
        let (p, ti) = (profile(), installation("alice", &[]));
        let root = asker("root", Permission::Admin);
        let action = |pairs: &[(&str, &str)]| Wanted::Action {
            name: "list-users".into(),
            parameters: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let (_, params) = check(&p, &ti, &action(&[]), None, &root).unwrap();
        assert_eq!(params["limit"], "10");
        for (given, expected) in [
            (("limit", "$(id)"), "must be a whole number"),
            (("limit", "1000"), "between 1 and 100"),
            (("team", "core"), "unknown parameter --team"),
        ] {
            let err = check(&p, &ti, &action(&[given]), None, &root).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn run_names_are_stable_per_origin_and_fit_a_job_name() {
        let e2e = RunTarget::Test("e2e");
        let a = run_name("web-pr-7", e2e, "acme/web:comment:5");
        assert_eq!(a, run_name("web-pr-7", e2e, "acme/web:comment:5"));
        assert_ne!(a, run_name("web-pr-7", e2e, "acme/web:comment:6"));
        assert!(a.starts_with("web-pr-7-e2e-"), "{a}");
        let target = "t".repeat(40);
        let long = run_name(&"i".repeat(40), RunTarget::Action(&target), "x");
        assert!(long.len() <= 63, "{long}");
    }
}
