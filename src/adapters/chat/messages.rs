//! Every text the chat adapter shows people, rendered from an installation
//! (pure functions; `now` is passed in).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::command::{ParseError, Verb};
use crate::api::{
    Phase, TestInstallation, conditions, credentials::Credentials, duration::format_duration,
    labels,
};

/// Markup dialect: Mattermost Markdown or Slack mrkdwn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    Mattermost,
    Slack,
}

impl Flavor {
    fn bold(self, text: &str) -> String {
        match self {
            Flavor::Mattermost => format!("**{text}**"),
            Flavor::Slack => format!("*{text}*"),
        }
    }

    fn link(self, url: &str) -> String {
        match self {
            Flavor::Mattermost => url.to_string(),
            Flavor::Slack => format!("<{url}>"),
        }
    }

    fn named_link(self, name: &str, url: &str) -> String {
        match self {
            Flavor::Mattermost => format!("[{}]({url})", name.replace(['[', ']'], "")),
            Flavor::Slack => format!("<{url}|{}>", name.replace(['<', '>', '|'], "")),
        }
    }
}

/// The profile's links of an installation (`status.links`), on one line:
/// `Links: [logs](https://…) · [dashboard](https://…)`; `None` without any.
pub fn links(ti: &TestInstallation, flavor: Flavor) -> Option<String> {
    let links = &ti.status.as_ref()?.links;
    if links.is_empty() {
        return None;
    }
    let rendered: Vec<String> = links
        .iter()
        .map(|l| flavor.named_link(&l.name, &l.url))
        .collect();
    Some(format!("Links: {}", rendered.join(" · ")))
}

/// The people an installation is shared with, as named when it was shared.
pub fn shared_with(ti: &TestInstallation) -> Option<String> {
    if ti.spec.shared_with.is_empty() {
        return None;
    }
    let names = super::manage::shared_names(ti);
    let people: Vec<String> = ti
        .spec
        .shared_with
        .iter()
        .map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone()))
        .collect();
    Some(format!("Shared with: {}", people.join(", ")))
}

fn code(text: &str) -> String {
    format!("`{}`", text.replace('`', "'"))
}

/// When `ts` is, for people: `2026-05-01 14:03 UTC (in 3h20m)`.
pub fn when(ts: Timestamp, now: Timestamp) -> String {
    let clock = ts.strftime("%Y-%m-%d %H:%M UTC").to_string();
    let secs = ts.as_second() - now.as_second();
    let rounded = |s: i64| format_duration(Duration::from_secs(s.unsigned_abs().div_ceil(60) * 60));
    if secs > 0 {
        format!("{clock} (in {})", rounded(secs))
    } else {
        format!("{clock} ({} ago)", rounded(secs))
    }
}

/// The parts of an installation, in the order they usually become ready,
/// with the condition that reports each. Parts that do not apply are left out.
fn parts(ti: &TestInstallation) -> Vec<(&'static str, &'static str)> {
    let mut parts = vec![
        ("database", conditions::DATABASE_READY),
        ("file store", conditions::FILESTORE_READY),
        ("app", conditions::APP_READY),
        ("ingress", conditions::INGRESS_READY),
    ];
    if ti.spec.test_data {
        parts.push(("test data", conditions::DATA_SEEDED));
    }
    if ti.spec.upgrade_from.is_some() {
        parts.push(("upgrade", conditions::UPGRADED));
    }
    parts
}

/// The progress message, edited in place while the installation comes up.
pub fn progress(ti: &TestInstallation, flavor: Flavor) -> String {
    let name = ti.name_any();
    let phase = ti.phase().unwrap_or(Phase::Pending);
    let mut lines = vec![format!("⏳ Setting up {} ({phase})", flavor.bold(&name))];
    let items: Vec<String> = parts(ti)
        .into_iter()
        .map(|(label, type_)| {
            let mark = match ti.condition(type_).map(|c| c.status.as_str()) {
                Some("True") => "✅",
                _ => "⏳",
            };
            format!("{mark} {label}")
        })
        .collect();
    lines.push(items.join(" · "));
    if let Some(message) = ti.status.as_ref().and_then(|s| s.message.as_deref()) {
        lines.push(format!("_{message}_"));
    }
    lines.join("\n")
}

/// The progress message's last state once the installation is Ready.
pub fn progress_done(ti: &TestInstallation, flavor: Flavor) -> String {
    let items: Vec<String> = parts(ti)
        .into_iter()
        .map(|(label, _)| format!("✅ {label}"))
        .collect();
    format!(
        "✅ {} is ready; the details are in the next message.\n{}",
        flavor.bold(&ti.name_any()),
        items.join(" · ")
    )
}

/// The progress message's last state when the installation failed.
pub fn progress_failed(ti: &TestInstallation, flavor: Flavor) -> String {
    format!(
        "❌ Setting up {} failed: {}",
        flavor.bold(&ti.name_any()),
        failure_reason(ti)
    )
}

/// Why an installation failed, from its status.
pub fn failure_reason(ti: &TestInstallation) -> String {
    let status = ti.status.as_ref();
    let stalled = ti
        .condition(conditions::STALLED)
        .filter(|c| c.status == "True")
        .or_else(|| {
            ti.condition(conditions::READY)
                .filter(|c| c.status == "False")
        });
    match (status.and_then(|s| s.message.as_deref()), stalled) {
        (Some(message), Some(c)) if !c.reason.is_empty() && !message.contains(&c.reason) => {
            format!("{message} ({})", c.reason)
        }
        (Some(message), _) => message.to_string(),
        (None, Some(c)) if !c.message.is_empty() => format!("{}: {}", c.reason, c.message),
        (None, Some(c)) => c.reason.clone(),
        (None, None) => "no reason given".into(),
    }
}

/// The one message that carries the credentials, sent only by direct message.
pub fn ready(
    ti: &TestInstallation,
    credentials: &Credentials,
    flavor: Flavor,
    now: Timestamp,
) -> String {
    let status = ti.status.clone().unwrap_or_default();
    let mut lines = vec![format!(
        "🎉 {} is ready: {}",
        flavor.bold(&ti.name_any()),
        status
            .url
            .as_deref()
            .map(|u| flavor.link(u))
            .unwrap_or_else(|| "(no URL yet)".into())
    )];
    if let Some(version) = &status.version {
        lines.push(format!("Version: {}", code(version)));
    }
    lines.push(format!(
        "Admin: {} / {}",
        code(&credentials.admin_user),
        code(&credentials.admin_password)
    ));
    lines.push(format!(
        "User: {} / {}",
        code(&credentials.user),
        code(&credentials.user_password)
    ));
    if let Some(expires) = status.expires_at {
        lines.push(format!("Expires: {}", when(expires.0, now)));
    }
    lines.extend(links(ti, flavor));
    lines.push("These logins are only in this message; keep them to yourself.".into());
    lines.join("\n")
}

pub fn failed(ti: &TestInstallation, flavor: Flavor) -> String {
    format!(
        "❌ {} failed: {}\nDelete it with `{} delete {}`, or fix the cause and it will retry.",
        flavor.bold(&ti.name_any()),
        failure_reason(ti),
        trigger(ti),
        ti.name_any()
    )
}

pub fn expiry_warning(ti: &TestInstallation, flavor: Flavor, now: Timestamp) -> String {
    let expires = ti
        .status
        .as_ref()
        .and_then(|s| s.expires_at.as_ref())
        .map(|t| when(t.0, now))
        .unwrap_or_else(|| "soon".into());
    format!(
        "⌛ {} expires {expires}. Keep it longer with `{} extend {} 24h`.",
        flavor.bold(&ti.name_any()),
        trigger(ti),
        ti.name_any()
    )
}

/// The progress message's last state when deleted before it was ready.
/// Told when an installation went to sleep (`hibernate`).
pub fn hibernated(ti: &TestInstallation, flavor: Flavor) -> String {
    format!(
        "💤 {} is hibernating: it is scaled to zero and keeps its data. `{} wake {}` brings it back.",
        flavor.bold(&ti.name_any()),
        trigger(ti),
        ti.name_any()
    )
}

/// Told when a hibernated installation is Ready again.
pub fn woken(ti: &TestInstallation, flavor: Flavor) -> String {
    let url = ti
        .status
        .as_ref()
        .and_then(|s| s.url.as_deref())
        .map(|u| flavor.link(u))
        .unwrap_or_else(|| "(no URL yet)".into());
    format!(
        "☀️ {} is awake and ready again: {url}\nThe logins are the ones you got before.",
        flavor.bold(&ti.name_any())
    )
}

pub fn progress_deleted(ti: &TestInstallation, flavor: Flavor) -> String {
    format!(
        "🗑️ {} was deleted before it was ready.",
        flavor.bold(&ti.name_any())
    )
}

pub fn deleted(ti: &TestInstallation, flavor: Flavor) -> String {
    format!(
        "🗑️ {} is being deleted, with all its data.",
        flavor.bold(&ti.name_any())
    )
}

/// The slash command's trigger used to create the installation, for hints.
fn trigger(ti: &TestInstallation) -> String {
    ti.annotations()
        .get(super::ANNOTATION_COMMAND)
        .cloned()
        .unwrap_or_else(|| "/testenv".into())
}

// ---- answers to commands (ephemeral) ----

pub fn help(trigger: &str) -> String {
    let mut lines = vec!["Throw-away test installations. Commands:".to_string()];
    for verb in Verb::ALL {
        lines.push(format!(
            "• `{trigger} {}`: {}",
            verb.synopsis(),
            verb.summary()
        ));
    }
    lines.join("\n")
}

pub fn parse_error(err: &ParseError, trigger: &str) -> String {
    match err.usage {
        Some(verb) => format!("⚠️ {}\nUsage: `{trigger} {}`", err.problem, verb.synopsis()),
        None => format!("⚠️ {}\n{}", err.problem, help(trigger)),
    }
}

pub fn created(name: &str, trigger: &str) -> String {
    format!(
        "Creating `{name}`… I will send you a direct message as it comes up and when it is ready. \
         See progress with `{trigger} status {name}`."
    )
}

pub fn status(ti: &TestInstallation, flavor: Flavor, now: Timestamp) -> String {
    let status = ti.status.clone().unwrap_or_default();
    let mut lines = vec![format!(
        "`{}`: {}",
        ti.name_any(),
        status.phase.map(|p| p.as_str()).unwrap_or("Pending")
    )];
    // The controller's message may name the URL already; show it once.
    match (&status.message, &status.url) {
        (Some(message), Some(url)) if message.contains(url.as_str()) => {
            lines.push(message.clone());
        }
        (message, url) => {
            lines.extend(message.clone());
            lines.extend(url.as_ref().map(|url| format!("URL: {url}")));
        }
    }
    if let Some(version) = status.version.as_ref().or(ti.spec.version.as_ref()) {
        lines.push(format!("Version: {version}"));
    }
    if let Some(expires) = status.expires_at {
        lines.push(format!("Expires: {}", when(expires.0, now)));
    }
    let mut flags = Vec::new();
    if ti.spec.hibernate {
        flags.push("hibernating");
    }
    if ti.spec.deletion_locked {
        flags.push("locked against deletion");
    }
    if ti.metadata.deletion_timestamp.is_some() {
        flags.push("being deleted");
    }
    if !flags.is_empty() {
        lines.push(format!("State: {}", flags.join(", ")));
    }
    if let Some(owner) = ti.annotations().get(super::ANNOTATION_USER_NAME) {
        lines.push(format!("Requested by: {owner}"));
    }
    lines.extend(shared_with(ti));
    lines.extend(links(ti, flavor));
    lines.join("\n")
}

/// Mattermost renders a table; Slack has none, so one line per installation.
pub fn list(items: &[TestInstallation], all: bool, flavor: Flavor, now: Timestamp) -> String {
    if items.is_empty() {
        return if all {
            "There are no installations.".into()
        } else {
            "You have no installations.".into()
        };
    }
    let mut lines = Vec::new();
    if flavor == Flavor::Mattermost {
        lines.push(if all {
            "| Name | Phase | URL | Expires | Requested by | Shared with | Links |\n|---|---|---|---|---|---|---|"
                .to_string()
        } else {
            "| Name | Phase | URL | Expires | Shared with | Links |\n|---|---|---|---|---|---|".to_string()
        });
    }
    for ti in items {
        let status = ti.status.clone().unwrap_or_default();
        let name = ti.name_any();
        let phase = status.phase.map(|p| p.as_str()).unwrap_or("Pending");
        let url = status.url.unwrap_or_default();
        let expires = status
            .expires_at
            .map(|t| when(t.0, now))
            .unwrap_or_default();
        let owner = all.then(|| {
            ti.annotations()
                .get(super::ANNOTATION_USER_NAME)
                .cloned()
                .or_else(|| ti.labels().get(labels::REQUESTER).cloned())
                .unwrap_or_default()
        });
        let shared = shared_with(ti)
            .map(|s| s.trim_start_matches("Shared with: ").to_string())
            .unwrap_or_default();
        let links = links(ti, flavor)
            .map(|l| l.trim_start_matches("Links: ").to_string())
            .unwrap_or_default();
        lines.push(match flavor {
            Flavor::Mattermost => {
                let mut row = vec![name, phase.to_string(), url, expires];
                row.extend(owner);
                row.push(shared);
                row.push(links);
                format!("| {} |", row.join(" | "))
            }
            Flavor::Slack => {
                let mut parts = vec![format!("• `{name}` {phase}")];
                if !url.is_empty() {
                    parts.push(format!("<{url}>"));
                }
                if !expires.is_empty() {
                    parts.push(format!("expires {expires}"));
                }
                if let Some(owner) = owner {
                    parts.push(format!("by {owner}"));
                }
                if !shared.is_empty() {
                    parts.push(format!("shared with {shared}"));
                }
                if !links.is_empty() {
                    parts.push(links);
                }
                parts.join(" · ")
            }
        });
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CredentialsSecretRef, TestInstallationSpec, TestInstallationStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn cond(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    fn installation() -> TestInstallation {
        let mut ti = TestInstallation::new(
            "demo42",
            TestInstallationSpec {
                test_data: true,
                ..Default::default()
            },
        );
        ti.status = Some(TestInstallationStatus {
            phase: Some(Phase::Provisioning),
            message: Some("Waiting for the app".into()),
            conditions: vec![
                cond(conditions::DATABASE_READY, "True", "Ready"),
                cond(conditions::APP_READY, "False", "Starting"),
            ],
            url: Some("https://demo42.example.test".into()),
            credentials_secret: Some(CredentialsSecretRef {
                namespace: "ti-demo42".into(),
                name: "credentials".into(),
            }),
            expires_at: Some(Time(Timestamp::from_second(1_000_000 + 7200).unwrap())),
            ..Default::default()
        });
        ti
    }

    #[test]
    fn progress_marks_ready_parts() {
        let text = progress(&installation(), Flavor::Mattermost);
        assert!(text.contains("**demo42** (Provisioning)"), "{text}");
        assert!(text.contains("✅ database · ⏳ file store · ⏳ app · ⏳ ingress · ⏳ test data"));
        assert!(text.contains("_Waiting for the app_"));
        let slack = progress(&installation(), Flavor::Slack);
        assert!(slack.contains("*demo42*"), "{slack}");
    }

    #[test]
    fn ready_carries_url_and_credentials() {
        let creds = Credentials {
            admin_user: "admin".into(),
            admin_password: "pa55-admin".into(),
            user: "user".into(),
            user_password: "pa55-user".into(),
        };
        let now = Timestamp::from_second(1_000_000).unwrap();
        let text = ready(&installation(), &creds, Flavor::Slack, now);
        assert!(text.contains("<https://demo42.example.test>"), "{text}");
        assert!(text.contains("`pa55-admin`") && text.contains("`pa55-user`"));
        assert!(text.contains("(in 2h)"), "{text}");
    }

    #[test]
    fn failure_reason_names_the_cause() {
        let mut ti = installation();
        let status = ti.status.as_mut().unwrap();
        status.phase = Some(Phase::Failed);
        status.message = Some("image ghcr.io/x:abc not found".into());
        status
            .conditions
            .push(cond(conditions::STALLED, "True", "ImagePullBackOff"));
        assert_eq!(
            failure_reason(&ti),
            "image ghcr.io/x:abc not found (ImagePullBackOff)"
        );
        ti.status.as_mut().unwrap().message = None;
        assert_eq!(failure_reason(&ti), "ImagePullBackOff");
    }

    #[test]
    fn lists_as_a_table_or_lines() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let items = [installation()];
        let table = list(&items, true, Flavor::Mattermost, now);
        assert!(
            table.starts_with("| Name | Phase | URL | Expires | Requested by |"),
            "{table}"
        );
        assert!(table.contains("| demo42 | Provisioning | https://demo42.example.test |"));
        let lines = list(&items, false, Flavor::Slack, now);
        assert!(
            lines.starts_with("• `demo42` Provisioning · <https://demo42.example.test>"),
            "{lines}"
        );
        assert_eq!(
            list(&[], false, Flavor::Slack, now),
            "You have no installations."
        );
    }

    #[test]
    fn when_is_relative_to_now() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let later = Timestamp::from_second(1_000_000 + 5400 + 10).unwrap();
        assert!(
            when(later, now).ends_with("(in 1h31m)"),
            "{}",
            when(later, now)
        );
        let earlier = Timestamp::from_second(1_000_000 - 60).unwrap();
        assert!(when(earlier, now).ends_with("(1m ago)"));
    }

    #[test]
    fn parse_errors_show_the_usage_line() {
        let err = super::super::command::parse("create demo --colour red").unwrap_err();
        let text = parse_error(&err, "/testenv");
        assert!(
            text.starts_with("⚠️ unknown flag --colour\nUsage: `/testenv create NAME"),
            "{text}"
        );
        let err = super::super::command::parse("explode").unwrap_err();
        assert!(parse_error(&err, "/t").contains("`/t delete NAME`"));
    }

    #[test]
    fn status_list_and_ready_show_links_and_who_it_is_shared_with() {
        let mut ti = installation();
        ti.spec.shared_with = vec!["mattermost.u1".into(), "mattermost.u2".into()];
        ti.annotations_mut().insert(
            super::super::ANNOTATION_SHARED_NAMES.into(),
            r#"{"mattermost.u1":"@alice"}"#.into(),
        );
        ti.status.as_mut().unwrap().links = vec![
            crate::api::run::Link {
                name: "logs".into(),
                url: "https://logs.example/?ns=ti-demo42".into(),
            },
            crate::api::run::Link {
                name: "dash".into(),
                url: "https://dash.example/demo42".into(),
            },
        ];
        let now = Timestamp::from_second(1_000_000).unwrap();
        let text = status(&ti, Flavor::Mattermost, now);
        assert!(
            text.contains("Shared with: @alice, mattermost.u2"),
            "{text}"
        );
        assert!(
            text.contains(
                "Links: [logs](https://logs.example/?ns=ti-demo42) · [dash](https://dash.example/demo42)"
            ),
            "{text}"
        );
        let slack = status(&ti, Flavor::Slack, now);
        assert!(
            slack.contains("<https://logs.example/?ns=ti-demo42|logs>"),
            "{slack}"
        );
        let table = list(std::slice::from_ref(&ti), false, Flavor::Mattermost, now);
        assert!(
            table.contains("| @alice, mattermost.u2 | [logs]("),
            "{table}"
        );
        let lines = list(std::slice::from_ref(&ti), false, Flavor::Slack, now);
        assert!(
            lines.contains("shared with @alice, mattermost.u2 · <https://logs.example"),
            "{lines}"
        );
        let creds = Credentials {
            admin_user: "a".into(),
            admin_password: "b".into(),
            user: "c".into(),
            user_password: "d".into(),
        };
        let ready = ready(&ti, &creds, Flavor::Mattermost, now);
        assert!(ready.contains("Links: [logs]"), "{ready}");
    }

    #[test]
    fn status_shows_the_url_once() {
        let mut ti = TestInstallation::new("demo", Default::default());
        ti.status = Some(crate::api::TestInstallationStatus {
            message: Some("Ready at https://demo.example".into()),
            url: Some("https://demo.example".into()),
            ..Default::default()
        });
        let text = status(&ti, Flavor::Mattermost, Timestamp::now());
        assert_eq!(text.matches("https://demo.example").count(), 1, "{text}");
        ti.status.as_mut().unwrap().message = Some("Provisioning".into());
        let text = status(&ti, Flavor::Mattermost, Timestamp::now());
        assert!(text.contains("URL: https://demo.example"), "{text}");
    }
}
