//! `test`, `cancel`, `run` and `actions`: TestRuns started from chat. The
//! suite or action, the person's right to start it and the parameters are
//! checked before anything is created, so bad input is answered at once and
//! leaves nothing behind. The result comes later, by direct message
//! (`run_results`).

use std::collections::BTreeMap;

use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::{
    ANNOTATION_CHANNEL, ANNOTATION_COMMAND, ANNOTATION_PLATFORM, ANNOTATION_TEAM_ID,
    ANNOTATION_USER_ID, ANNOTATION_USER_NAME, FIELD_MANAGER, LABEL_INSTANCE, SOURCE_CHAT, auth,
    handler::{Answer, Ctx, Outcome, cluster_error},
    messages::Flavor,
};
use crate::{
    adapters::{
        profile_rules,
        runs::{self, StartError},
    },
    api::{
        InstallationProfileSpec, ProfileRun, RunTarget, StartableBy, TestInstallation, TestRun,
        labels, run_parameters,
    },
};

impl Ctx<'_> {
    fn runs_api(&self) -> Api<TestRun> {
        Api::all(self.state.client.clone())
    }

    /// The installation a run is asked for, with its profile; refused while
    /// it is being deleted or hibernating.
    async fn run_target(
        &self,
        name: &str,
    ) -> Result<(TestInstallation, String, InstallationProfileSpec), Answer> {
        let ti = self.get(name).await?;
        if ti.metadata.deletion_timestamp.is_some() {
            return Err((
                Outcome::Refused,
                format!("`{name}` is being deleted; nothing was started."),
            ));
        }
        let profile_name = ti
            .spec
            .profile
            .clone()
            .unwrap_or_else(|| profile_rules::DEFAULT_PROFILE.into());
        let profile = match self.profiles().get_opt(&profile_name).await {
            Ok(Some(profile)) => profile.spec,
            Ok(None) => {
                return Err((
                    Outcome::Invalid,
                    format!(
                        "⚠️ The profile `{profile_name}` of `{name}` does not exist any more; nothing was started."
                    ),
                ));
            }
            Err(err) => return Err(cluster_error(&err)),
        };
        Ok((ti, profile_name, profile))
    }

    pub(super) async fn test(&self, name: &str, suite: Option<&str>) -> Answer {
        let (ti, profile_name, profile) = match self.run_target(name).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
        let suite = match runs::find_suite(&profile_name, &profile, suite) {
            Ok(suite) => suite,
            Err(err) => return self.not_started(&err),
        };
        self.start(&ti, suite, RunTarget::Test(&suite.name), &BTreeMap::new())
            .await
    }

    pub(super) async fn run(
        &self,
        name: &str,
        action: &str,
        parameters: Vec<(String, String)>,
    ) -> Answer {
        let (ti, profile_name, profile) = match self.run_target(name).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
        let action = match runs::find_action(&profile_name, &profile, action) {
            Ok(action) => action,
            Err(err) => return self.not_started(&err),
        };
        let given: BTreeMap<String, String> = parameters.into_iter().collect();
        self.start(&ti, action, RunTarget::Action(&action.name), &given)
            .await
    }

    fn not_started(&self, err: &StartError) -> Answer {
        let outcome = match err {
            StartError::NotAllowed { .. } => Outcome::Refused,
            _ => Outcome::Invalid,
        };
        (
            outcome,
            format!("⚠️ {}; nothing was started.", capitalized(&err.to_string())),
        )
    }

    /// Checks who asks and the parameters, then creates the TestRun.
    async fn start(
        &self,
        ti: &TestInstallation,
        run: &ProfileRun,
        target: RunTarget<'_>,
        given: &BTreeMap<String, String>,
    ) -> Answer {
        let me = self.requester.label_value();
        let parameters = match runs::check_start(run, ti, &me, self.is_admin(), given) {
            Ok(parameters) => parameters,
            Err(err) => return self.not_started(&err),
        };
        let name = ti.name_any();
        if self.trigger_already_started(&name).await {
            return (Outcome::Replayed, String::new());
        }
        let now_millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let run_name = runs::run_name(&name, target, now_millis);
        let mut test_run = runs::new_test_run(
            run_name.clone(),
            &name,
            target,
            parameters,
            &me,
            SOURCE_CHAT,
        );
        self.mark(&mut test_run);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        if let Err(err) = self.runs_api().create(&params, &test_run).await {
            return cluster_error(&err);
        }
        let (what, cancel) = match target {
            RunTarget::Test(suite) => (
                format!("suite `{suite}`"),
                format!(" Stop it with `{} cancel {name} {suite}`.", self.trigger),
            ),
            RunTarget::Action(action) => (format!("action `{action}`"), String::new()),
        };
        let read_only = if run.read_only { " (read-only)" } else { "" };
        (
            Outcome::Ok,
            format!(
                "Started {what}{read_only} on `{name}` as run `{run_name}`; \
                 I will send you the result by direct message.{cancel}"
            ),
        )
    }

    /// Who started the run, where, and this request's trigger id.
    fn mark(&self, run: &mut TestRun) {
        let requester = self.requester;
        run.labels_mut()
            .insert(LABEL_INSTANCE.into(), self.state.config.instance.clone());
        let annotations = run.annotations_mut();
        annotations.insert(
            ANNOTATION_PLATFORM.into(),
            requester.platform.as_str().into(),
        );
        annotations.insert(ANNOTATION_USER_ID.into(), requester.user_id.clone());
        annotations.insert(ANNOTATION_USER_NAME.into(), requester.user_name.clone());
        annotations.insert(ANNOTATION_COMMAND.into(), self.trigger.into());
        if !requester.team_id.is_empty() {
            annotations.insert(ANNOTATION_TEAM_ID.into(), requester.team_id.clone());
        }
        if !self.channel.is_empty() {
            annotations.insert(ANNOTATION_CHANNEL.into(), self.channel.into());
        }
        if !self.trigger_id.is_empty() {
            annotations.insert(auth::ANNOTATION_TRIGGERS.into(), self.trigger_id.into());
        }
    }

    /// Whether a run of this installation was already started by this
    /// request's trigger id (a replayed request).
    async fn trigger_already_started(&self, installation: &str) -> bool {
        if self.trigger_id.is_empty() {
            return false;
        }
        let Ok(list) = self.runs_of(installation).await else {
            return false;
        };
        list.iter().any(|run| {
            run.annotations()
                .get(auth::ANNOTATION_TRIGGERS)
                .map(String::as_str)
                == Some(self.trigger_id)
        })
    }

    async fn runs_of(&self, installation: &str) -> Result<Vec<TestRun>, Answer> {
        self.runs_api()
            .list(&ListParams::default().labels(&format!(
                "{}={}",
                labels::INSTALLATION,
                labels::label_value(installation)
            )))
            .await
            .map(|list| list.items)
            .map_err(|err| cluster_error(&err))
    }

    /// Cancels the unfinished runs of `suite` (without one: every unfinished
    /// run) on the installation. The person who started a run, the people
    /// who may manage the installation, and admins may.
    pub(super) async fn cancel(&self, name: &str, suite: Option<&str>) -> Answer {
        let ti = match self.get(name).await {
            Ok(ti) => ti,
            Err(answer) => return answer,
        };
        let runs = match self.runs_of(name).await {
            Ok(runs) => runs,
            Err(answer) => return answer,
        };
        let me = self.requester.label_value();
        let unfinished: Vec<TestRun> = runs
            .into_iter()
            .filter(|run| run.spec.installation == name && !run.spec.cancelled)
            .filter(|run| !run.phase().is_some_and(|p| p.is_finished()))
            .filter(|run| suite.is_none_or(|s| run.spec.test.as_deref() == Some(s)))
            .collect();
        if unfinished.is_empty() {
            let what = suite
                .map(|s| format!("of suite `{s}` "))
                .unwrap_or_default();
            return (
                Outcome::Ok,
                format!("No run {what}is in progress on `{name}`; nothing to cancel."),
            );
        }
        let allowed = self.may_manage(&ti);
        let (mine, others): (Vec<TestRun>, Vec<TestRun>) = unfinished
            .into_iter()
            .partition(|run| allowed || run.labels().get(labels::REQUESTER) == Some(&me));
        if mine.is_empty() {
            return (
                Outcome::Refused,
                format!(
                    "Only the person who started a run, the people who may manage `{name}`, \
                     or an admin may cancel it; nothing was cancelled."
                ),
            );
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let patch = json!({ "spec": { "cancelled": true } });
        let mut cancelled = Vec::new();
        for run in &mine {
            let run_name = run.name_any();
            match self
                .runs_api()
                .patch(&run_name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => cancelled.push(format!("`{run_name}`")),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(err) => return cluster_error(&err),
            }
        }
        let skipped = if others.is_empty() {
            String::new()
        } else {
            format!(
                " {} run(s) started by others were left alone.",
                others.len()
            )
        };
        (
            Outcome::Ok,
            format!(
                "Cancelling {} on `{name}`; the result follows by direct message.{skipped}",
                cancelled.join(", ")
            ),
        )
    }

    pub(super) async fn actions(&self, name: &str) -> Answer {
        let (ti, profile_name, profile) = match self.run_target(name).await {
            Ok(found) => found,
            Err(answer) => return answer,
        };
        (
            Outcome::Ok,
            offer(
                &ti.name_any(),
                &profile_name,
                &profile,
                self.trigger,
                self.requester.platform.flavor(),
            ),
        )
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// What `actions NAME` shows: the suites and actions of the profile, with
/// their parameters, who may start them and whether they are read-only.
pub fn offer(
    installation: &str,
    profile_name: &str,
    profile: &InstallationProfileSpec,
    trigger: &str,
    flavor: Flavor,
) -> String {
    let bold = |t: &str| match flavor {
        Flavor::Mattermost => format!("**{t}**"),
        Flavor::Slack => format!("*{t}*"),
    };
    let mut lines = Vec::new();
    if profile.tests.is_empty() && profile.actions.is_empty() {
        return format!(
            "Profile `{profile_name}` of `{installation}` offers no test suites and no actions."
        );
    }
    if !profile.tests.is_empty() {
        lines.push(format!(
            "{} (`{trigger} test {installation} [SUITE]`; the first is the default):",
            bold("Test suites")
        ));
        for suite in &profile.tests {
            lines.push(entry(suite));
        }
    }
    if !profile.actions.is_empty() {
        lines.push(format!(
            "{} (`{trigger} run {installation} ACTION [--PARAMETER VALUE ...]`):",
            bold("Actions")
        ));
        for action in &profile.actions {
            lines.push(entry(action));
            for parameter in &action.parameters {
                lines.push(format!("    ◦ `{}`", run_parameters::describe(parameter)));
            }
        }
    }
    lines.join("\n")
}

fn entry(run: &ProfileRun) -> String {
    let mut marks = Vec::new();
    if run.read_only {
        marks.push("read-only");
    }
    marks.push(match run.startable_by {
        StartableBy::Requester => "requester, shared people and admins",
        StartableBy::Admins => "admins only",
        StartableBy::Anyone => "anyone",
    });
    let description = run
        .description
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    format!("• `{}` ({}){description}", run.name, marks.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ParameterType, RunParameter};

    #[test]
    fn the_offer_lists_suites_actions_and_parameters() {
        let profile = InstallationProfileSpec {
            tests: vec![ProfileRun {
                name: "e2e".into(),
                description: Some("the end-to-end suite".into()),
                ..Default::default()
            }],
            actions: vec![ProfileRun {
                name: "list-users".into(),
                read_only: true,
                startable_by: StartableBy::Anyone,
                parameters: vec![
                    RunParameter {
                        name: "page".into(),
                        kind: ParameterType::Integer,
                        minimum: Some(1),
                        maximum: Some(100),
                        default: Some("1".into()),
                        description: Some("the page".into()),
                        ..Default::default()
                    },
                    RunParameter {
                        name: "format".into(),
                        kind: ParameterType::Enum,
                        values: vec!["json".into(), "text".into()],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = offer("demo", "mm", &profile, "/testenv", Flavor::Mattermost);
        assert!(
            text.contains("**Test suites** (`/testenv test demo [SUITE]`"),
            "{text}"
        );
        assert!(
            text.contains("• `e2e` (requester, shared people and admins): the end-to-end suite"),
            "{text}"
        );
        assert!(
            text.contains("• `list-users` (read-only, anyone)"),
            "{text}"
        );
        assert!(
            text.contains("◦ `--page <integer 1..100, default 1>: the page`"),
            "{text}"
        );
        assert!(
            text.contains("◦ `--format <json|text, required>`"),
            "{text}"
        );
        assert!(
            offer(
                "demo",
                "mm",
                &InstallationProfileSpec::default(),
                "/t",
                Flavor::Slack
            )
            .contains("offers no test suites and no actions")
        );
    }

    #[test]
    fn errors_start_with_a_capital() {
        assert_eq!(capitalized("only admins"), "Only admins");
        assert_eq!(capitalized(""), "");
    }
}
