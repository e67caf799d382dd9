//! Who asked, on which platform, and how to send them a direct message.

use serde::{Deserialize, Serialize};

use crate::api::labels;

use super::{http::ApiError, mattermost::MattermostApi, messages::Flavor, slack::SlackApi};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Mattermost,
    Slack,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Mattermost => "mattermost",
            Platform::Slack => "slack",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "mattermost" => Some(Platform::Mattermost),
            "slack" => Some(Platform::Slack),
            _ => None,
        }
    }

    pub fn flavor(self) -> Flavor {
        match self {
            Platform::Mattermost => Flavor::Mattermost,
            Platform::Slack => Flavor::Slack,
        }
    }
}

/// The person behind a slash command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub platform: Platform,
    pub team_id: String,
    pub user_id: String,
    pub user_name: String,
}

impl Requester {
    /// The `ephemera.dev/requester` label value: `mattermost.<user id>` or
    /// `slack.<team id>.<user id>` (Slack user ids are per workspace),
    /// reduced to what a label value may hold.
    pub fn label_value(&self) -> String {
        let raw = match self.platform {
            Platform::Mattermost => format!("mattermost.{}", self.user_id),
            Platform::Slack => format!("slack.{}.{}", self.team_id, self.user_id),
        };
        label_safe(&raw)
    }
}

/// A valid label value for any text (see [`labels::label_value`]).
pub fn label_safe(raw: &str) -> String {
    labels::label_value(raw)
}

/// A message that can be edited later: its channel and id (Slack: `ts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    pub channel: String,
    pub id: String,
}

/// Sends direct messages on one platform.
pub enum Messenger {
    Mattermost(MattermostApi),
    Slack(SlackApi),
}

impl Messenger {
    pub async fn open_dm(&self, user_id: &str) -> Result<String, ApiError> {
        match self {
            Messenger::Mattermost(api) => api.open_dm(user_id).await,
            Messenger::Slack(api) => api.open_dm(user_id).await,
        }
    }

    /// Posts `text` carrying `key`, an invisible marker (Mattermost post
    /// `props`, Slack message `metadata`) by which [`Messenger::find`] finds
    /// the message again when the answer to this call was lost.
    pub async fn post(&self, channel: &str, text: &str, key: &str) -> Result<MessageRef, ApiError> {
        match self {
            Messenger::Mattermost(api) => api.post(channel, text, key).await,
            Messenger::Slack(api) => api.post(channel, text, key).await,
        }
    }

    /// The bot's message carrying `key` among the channel's recent ones.
    pub async fn find(&self, channel: &str, key: &str) -> Result<Option<MessageRef>, ApiError> {
        match self {
            Messenger::Mattermost(api) => api.find(channel, key).await,
            Messenger::Slack(api) => api.find(channel, key).await,
        }
    }

    /// Posts `text` as a reply in the thread of `root`, carrying `key`.
    pub async fn reply(
        &self,
        root: &MessageRef,
        text: &str,
        key: &str,
    ) -> Result<MessageRef, ApiError> {
        match self {
            Messenger::Mattermost(api) => api.reply(root, text, key).await,
            Messenger::Slack(api) => api.reply(root, text, key).await,
        }
    }

    /// The bot's reply carrying `key` in the thread of `root` (Mattermost
    /// lists replies with the channel's posts; Slack only per thread).
    pub async fn find_reply(
        &self,
        root: &MessageRef,
        key: &str,
    ) -> Result<Option<MessageRef>, ApiError> {
        match self {
            Messenger::Mattermost(api) => api.find(&root.channel, key).await,
            Messenger::Slack(api) => api.find_reply(root, key).await,
        }
    }

    pub async fn update(&self, message: &MessageRef, text: &str) -> Result<(), ApiError> {
        match self {
            Messenger::Mattermost(api) => api.update(message, text).await,
            Messenger::Slack(api) => api.update(message, text).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requester_labels_are_label_safe() {
        let mm = Requester {
            platform: Platform::Mattermost,
            team_id: "t".into(),
            user_id: "8xk3q1tbd3r4pngx1b6tfp6o3e".into(),
            user_name: "alice".into(),
        };
        assert_eq!(mm.label_value(), "mattermost.8xk3q1tbd3r4pngx1b6tfp6o3e");
        let slack = Requester {
            platform: Platform::Slack,
            team_id: "T0001".into(),
            user_id: "U/02 x".into(),
            user_name: "bob".into(),
        };
        assert_eq!(slack.label_value(), "slack.T0001.U_02_x");
        assert!(label_safe(&format!("{}!", "a".repeat(70))).len() <= 63);
        assert_eq!(label_safe("-x-"), "x");
    }
}
