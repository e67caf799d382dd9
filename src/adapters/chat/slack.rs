//! Slack: the slash command's request and answer, and the Web API calls the
//! bot makes for direct messages.

use serde_json::{Value, json};

use super::{
    config::Secret,
    http::{self, ApiError, Repeat},
    messenger::MessageRef,
};

/// The metadata event type that carries a message's key.
const MARKER_EVENT: &str = "ephemera_notice";

enum Body {
    Json(Value),
    Form(Vec<(&'static str, String)>),
}

/// The bot's Web API client.
pub struct SlackApi {
    base: String,
    token: Secret,
    http: reqwest::Client,
}

impl SlackApi {
    pub fn new(api_url: &str, token: Secret) -> Self {
        Self {
            base: api_url.trim_end_matches('/').to_string(),
            token,
            http: http::client(),
        }
    }

    /// Calls a Web API method with a JSON body; Slack reports failures as
    /// `{"ok": false, "error": ...}` with HTTP 200.
    async fn call(&self, what: &'static str, method: &str, body: Value) -> Result<Value, ApiError> {
        self.call_with(what, method, Body::Json(body)).await
    }

    async fn call_with(
        &self,
        what: &'static str,
        method: &str,
        body: Body,
    ) -> Result<Value, ApiError> {
        let url = format!("{}/{method}", self.base);
        let repeat = if method == "chat.postMessage" {
            Repeat::Once
        } else {
            Repeat::Idempotent
        };
        let response = http::send(what, repeat, || {
            let request = self.http.post(&url).bearer_auth(self.token.expose());
            match &body {
                // Slack wants the charset named; `json` keeps a type set before.
                Body::Json(body) => request
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/json; charset=utf-8",
                    )
                    .json(body),
                // Read methods take only form-encoded arguments.
                Body::Form(pairs) => request.form(pairs),
            }
        })
        .await?;
        let value: Value = response
            .json()
            .await
            .map_err(|source| ApiError::Transport { what, source })?;
        if value["ok"].as_bool() == Some(true) {
            Ok(value)
        } else {
            Err(ApiError::Refused {
                what,
                message: value["error"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_string(),
            })
        }
    }

    pub async fn open_dm(&self, user_id: &str) -> Result<String, ApiError> {
        let what = "slack conversations.open";
        let value = self
            .call(what, "conversations.open", json!({ "users": user_id }))
            .await?;
        value["channel"]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::Refused {
                what,
                message: "no channel id in the answer".into(),
            })
    }

    pub async fn post(&self, channel: &str, text: &str, key: &str) -> Result<MessageRef, ApiError> {
        self.post_in(channel, None, text, key).await
    }

    /// Posts `text` as a reply in the thread of `root` (`thread_ts`).
    pub async fn reply(
        &self,
        root: &MessageRef,
        text: &str,
        key: &str,
    ) -> Result<MessageRef, ApiError> {
        self.post_in(&root.channel, Some(&root.id), text, key).await
    }

    async fn post_in(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        text: &str,
        key: &str,
    ) -> Result<MessageRef, ApiError> {
        let what = "slack chat.postMessage";
        let mut body = json!({
            "channel": channel,
            "text": text,
            "metadata": { "event_type": MARKER_EVENT, "event_payload": { "key": key } },
        });
        if let Some(ts) = thread_ts {
            body["thread_ts"] = json!(ts);
        }
        let value = self.call(what, "chat.postMessage", body).await?;
        match (value["channel"].as_str(), value["ts"].as_str()) {
            (Some(channel), Some(ts)) => Ok(MessageRef {
                channel: channel.to_string(),
                id: ts.to_string(),
            }),
            _ => Err(ApiError::Refused {
                what,
                message: "no channel or ts in the answer".into(),
            }),
        }
    }

    /// The message carrying `key` among the channel's last 200
    /// (`conversations.history` with metadata; needs the `im:history` scope).
    /// Replies in threads are not among them: see [`Self::find_reply`].
    pub async fn find(&self, channel: &str, key: &str) -> Result<Option<MessageRef>, ApiError> {
        let value = self
            .call_with(
                "slack conversations.history",
                "conversations.history",
                Body::Form(vec![
                    ("channel", channel.to_string()),
                    ("limit", "200".into()),
                    ("include_all_metadata", "true".into()),
                ]),
            )
            .await?;
        Ok(Self::with_key(&value, channel, key))
    }

    /// The reply carrying `key` in the thread of `root`
    /// (`conversations.replies`).
    pub async fn find_reply(
        &self,
        root: &MessageRef,
        key: &str,
    ) -> Result<Option<MessageRef>, ApiError> {
        let value = self
            .call_with(
                "slack conversations.replies",
                "conversations.replies",
                Body::Form(vec![
                    ("channel", root.channel.clone()),
                    ("ts", root.id.clone()),
                    ("limit", "200".into()),
                    ("include_all_metadata", "true".into()),
                ]),
            )
            .await?;
        Ok(Self::with_key(&value, &root.channel, key))
    }

    fn with_key(value: &Value, channel: &str, key: &str) -> Option<MessageRef> {
        let found = value["messages"].as_array().and_then(|messages| {
            messages.iter().find(|m| {
                m["metadata"]["event_type"] == MARKER_EVENT
                    && m["metadata"]["event_payload"]["key"].as_str() == Some(key)
            })
        });
        found.and_then(|m| m["ts"].as_str()).map(|ts| MessageRef {
            channel: channel.to_string(),
            id: ts.to_string(),
        })
    }

    pub async fn update(&self, message: &MessageRef, text: &str) -> Result<(), ApiError> {
        self.call(
            "slack chat.update",
            "chat.update",
            json!({ "channel": message.channel, "ts": message.id, "text": text }),
        )
        .await?;
        Ok(())
    }
}
