//! The cloud-bot verbs that change what runs: `update`, `restart`, `share`
//! and `unshare`. Each is one merge patch of the installation's spec (with
//! the request's trigger id, like every other change from chat); the
//! controller does the rest.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::json;

use super::{
    ANNOTATION_SHARED_NAMES,
    command::{Person, UpdateArgs},
    handler::{Answer, Ctx, Outcome, belongs_to},
    messenger::{Messenger, Platform, Requester},
};
use crate::{
    adapters::profile_rules,
    api::{EnvVar, InstallationProfile, TestInstallation},
    controller::allow_list::image_allowed,
};

/// The names shown for the people an installation is shared with, by their
/// requester id (the `ephemera.dev/chat-shared-names` annotation).
pub fn shared_names(ti: &TestInstallation) -> BTreeMap<String, String> {
    ti.annotations()
        .get(ANNOTATION_SHARED_NAMES)
        .and_then(|raw| serde_json::from_str(raw).ok())
        .unwrap_or_default()
}

/// `env` with `changes` set: an existing variable of the same name is
/// replaced in place, a new one appended.
pub fn merged_env(env: &[EnvVar], changes: &[(String, String)]) -> Vec<EnvVar> {
    let mut merged = env.to_vec();
    for (name, value) in changes {
        let var = EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            value_from: None,
        };
        match merged.iter_mut().find(|e| &e.name == name) {
            Some(existing) => *existing = var,
            None => merged.push(var),
        }
    }
    merged
}

/// Why a person cannot be resolved to a requester id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// Slack sends ids only for escaped mentions.
    NeedsMention,
    NoSuchUser,
    /// The platform could not be asked.
    Unreachable(String),
}

impl Ctx<'_> {
    pub(super) async fn update(&self, name: &str, change: UpdateArgs) -> Answer {
        let ti = match self.owned(name).await {
            Ok(ti) => ti,
            Err(answer) => return answer,
        };
        if change.size.is_some() || change.image.is_some() {
            let profile_name = ti
                .spec
                .profile
                .clone()
                .unwrap_or_else(|| profile_rules::DEFAULT_PROFILE.into());
            let profile = match self.profiles().get_opt(&profile_name).await {
                Ok(Some(profile)) => profile,
                Ok(None) => InstallationProfile::new(&profile_name, Default::default()),
                Err(err) => return super::handler::cluster_error(&err),
            };
            if let Err(problem) =
                profile_rules::check_create(&profile, change.size.as_deref(), None, false)
            {
                return (
                    Outcome::Invalid,
                    format!("⚠️ {problem}; nothing was changed."),
                );
            }
            if let Some(image) = &change.image
                && !image_allowed(image, &profile.spec.image, &profile.spec.allowed_images)
            {
                return (
                    Outcome::Invalid,
                    format!(
                        "⚠️ image `{image}` is not allowed by profile `{profile_name}` \
                         (its allowedImages); nothing was changed."
                    ),
                );
            }
        }
        let mut spec = serde_json::Map::new();
        let mut what = Vec::new();
        if let Some(version) = &change.version {
            spec.insert("version".into(), json!(version));
            what.push(format!("version `{version}`"));
        }
        if let Some(image) = &change.image {
            spec.insert("image".into(), json!(image));
            what.push(format!("image `{image}`"));
        }
        if let Some(size) = &change.size {
            spec.insert("size".into(), json!(size));
            what.push(format!("size `{size}`"));
        }
        if !change.env.is_empty() {
            spec.insert("env".into(), json!(merged_env(&ti.spec.env, &change.env)));
            let names: Vec<&str> = change.env.iter().map(|(k, _)| k.as_str()).collect();
            what.push(format!("env {}", names.join(", ")));
        }
        match self.patch_spec(ti, spec.into()).await {
            Ok(()) => (
                Outcome::Ok,
                format!(
                    "Updating `{name}`: {}. The app rolls to it pod by pod.",
                    what.join(", ")
                ),
            ),
            Err((outcome, text)) => (outcome, text.replace("refused this", "refused this update")),
        }
    }

    pub(super) async fn restart(&self, name: &str, now: Timestamp) -> Answer {
        let ti = match self.owned(name).await {
            Ok(ti) => ti,
            Err(answer) => return answer,
        };
        if ti.spec.hibernate {
            return (
                Outcome::Refused,
                format!(
                    "`{name}` is hibernating; `{} wake {name}` brings it back.",
                    self.trigger
                ),
            );
        }
        match self
            .patch_spec(ti, json!({ "restartedAt": now.to_string() }))
            .await
        {
            Ok(()) => (
                Outcome::Ok,
                format!("Restarting `{name}`: its app pods are replaced one by one."),
            ),
            Err(answer) => answer,
        }
    }

    /// Adds (`on`) or removes a person from `spec.sharedWith`; only the
    /// requester and admins may.
    pub(super) async fn share(&self, name: &str, person: &Person, on: bool) -> Answer {
        let ti = match self.get(name).await {
            Ok(ti) => ti,
            Err(answer) => return answer,
        };
        if !self.is_requester(&ti) && !self.is_admin() {
            return (
                Outcome::Refused,
                format!(
                    "Only the person who created `{name}` (or an admin) may share it.{}",
                    belongs_to(&ti)
                ),
            );
        }
        let ti = match self.not_replayed(ti) {
            Ok(ti) => ti,
            Err(answer) => return answer,
        };
        let id = match self.resolve(person).await {
            Ok(id) => id,
            Err(Unresolved::NeedsMention) => {
                return (
                    Outcome::Invalid,
                    format!(
                        "⚠️ Slack sends a person's id only for a mention picked from the list \
                         (the command needs “Escape channels, users, and links” turned on); \
                         `{}` is just text. Nothing was changed.",
                        person.display()
                    ),
                );
            }
            Err(Unresolved::NoSuchUser) => {
                return (
                    Outcome::Invalid,
                    format!(
                        "⚠️ There is no user {}; nothing was changed.",
                        person.display()
                    ),
                );
            }
            Err(Unresolved::Unreachable(why)) => {
                tracing::warn!(error = %why, "cannot look up a user on the chat platform");
                return (
                    Outcome::Error,
                    "The chat platform could not be asked who that is; try again in a moment."
                        .into(),
                );
            }
        };
        let shown = person.display();
        let mut shared = ti.spec.shared_with.clone();
        let mut names = shared_names(&ti);
        if on {
            if ti.labels().get(crate::api::labels::REQUESTER) == Some(&id) {
                return (
                    Outcome::Ok,
                    format!("{shown} created `{name}`; nothing changed."),
                );
            }
            if shared.contains(&id) {
                return (
                    Outcome::Ok,
                    format!("`{name}` is already shared with {shown}; nothing changed."),
                );
            }
            shared.push(id.clone());
            names.insert(id, shown.clone());
        } else {
            if !shared.contains(&id) {
                return (
                    Outcome::Ok,
                    format!("`{name}` is not shared with {shown}; nothing changed."),
                );
            }
            shared.retain(|s| s != &id);
            names.remove(&id);
        }
        let names_value = if names.is_empty() {
            serde_json::Value::Null
        } else {
            json!(serde_json::to_string(&names).unwrap_or_default())
        };
        let shared_value = if shared.is_empty() {
            serde_json::Value::Null
        } else {
            json!(shared)
        };
        match self
            .patch_spec_and_annotations(
                ti,
                json!({ "sharedWith": shared_value }),
                json!({ ANNOTATION_SHARED_NAMES: names_value }),
            )
            .await
        {
            Ok(()) if on => (
                Outcome::Ok,
                format!("{shown} may now manage `{name}` and run its tests and actions like you."),
            ),
            Ok(()) => (
                Outcome::Ok,
                format!("{shown} may no longer manage `{name}`."),
            ),
            Err(answer) => answer,
        }
    }

    /// The requester id (`ephemera.dev/requester` form) of a person named in
    /// a command on this platform.
    async fn resolve(&self, person: &Person) -> Result<String, Unresolved> {
        let platform = self.requester.platform;
        let user_id = match (person, platform) {
            (Person::Id { id, .. }, _) => id.clone(),
            (Person::Name(_), Platform::Slack) => return Err(Unresolved::NeedsMention),
            (Person::Name(name), Platform::Mattermost) => {
                let Some(Messenger::Mattermost(api)) =
                    self.state.messengers.get(&platform).map(|m| m.as_ref())
                else {
                    return Err(Unresolved::Unreachable(
                        "no Mattermost bot is configured".into(),
                    ));
                };
                match api.user_id_by_name(name).await {
                    Ok(Some(id)) => id,
                    Ok(None) => return Err(Unresolved::NoSuchUser),
                    Err(err) => return Err(Unresolved::Unreachable(err.to_string())),
                }
            }
        };
        Ok(Requester {
            platform,
            team_id: self.requester.team_id.clone(),
            user_id,
            user_name: String::new(),
        }
        .label_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EnvVarSource, SecretKeyRef};

    #[test]
    fn env_changes_replace_in_place_and_append() {
        let from_secret = EnvVar {
            name: "DB".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: SecretKeyRef {
                    name: "s".into(),
                    namespace: "n".into(),
                    key: "k".into(),
                },
            }),
        };
        let plain = EnvVar {
            name: "A".into(),
            value: Some("1".into()),
            value_from: None,
        };
        let merged = merged_env(
            &[plain, from_secret.clone()],
            &[("A".into(), "2".into()), ("B".into(), "3".into())],
        );
        let names: Vec<(&str, Option<&str>)> = merged
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(names, [("A", Some("2")), ("DB", None), ("B", Some("3"))]);
        assert_eq!(merged[1], from_secret);
    }

    #[test]
    fn shared_names_ignore_garbage() {
        let mut ti = TestInstallation::new("demo", Default::default());
        assert!(shared_names(&ti).is_empty());
        ti.annotations_mut()
            .insert(ANNOTATION_SHARED_NAMES.into(), "not json".into());
        assert!(shared_names(&ti).is_empty());
        ti.annotations_mut().insert(
            ANNOTATION_SHARED_NAMES.into(),
            r#"{"mattermost.u1":"@alice"}"#.into(),
        );
        assert_eq!(shared_names(&ti)["mattermost.u1"], "@alice");
    }
}
