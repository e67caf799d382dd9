//! Mattermost: the slash command's request and answer, and the REST API v4
//! calls the bot makes for direct messages.

use serde::Deserialize;
use serde_json::json;
use tokio::sync::OnceCell;

use super::{
    config::Secret,
    http::{self, ApiError, Repeat},
    messenger::MessageRef,
};

/// The bot's REST client.
pub struct MattermostApi {
    base: String,
    token: Secret,
    http: reqwest::Client,
    bot_id: OnceCell<String>,
}

#[derive(Deserialize)]
struct WithId {
    id: String,
}

/// The post property that carries a message's key.
const MARKER_PROP: &str = "ephemera_key";

#[derive(Deserialize)]
struct PostList {
    #[serde(default)]
    posts: std::collections::HashMap<String, Post>,
}

#[derive(Deserialize)]
struct Post {
    id: String,
    #[serde(default)]
    props: serde_json::Map<String, serde_json::Value>,
}

impl MattermostApi {
    pub fn new(site_url: &str, token: Secret) -> Self {
        Self {
            base: format!("{}/api/v4", site_url.trim_end_matches('/')),
            token,
            http: http::client(),
            bot_id: OnceCell::new(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose())
    }

    async fn id_from(what: &'static str, response: reqwest::Response) -> Result<String, ApiError> {
        response
            .json::<WithId>()
            .await
            .map(|w| w.id)
            .map_err(|source| ApiError::Transport { what, source })
    }

    async fn bot_id(&self) -> Result<&str, ApiError> {
        self.bot_id
            .get_or_try_init(|| async {
                let what = "mattermost users/me";
                let response = http::send(what, Repeat::Idempotent, || {
                    self.request(reqwest::Method::GET, "/users/me")
                })
                .await?;
                Self::id_from(what, response).await
            })
            .await
            .map(String::as_str)
    }

    /// The direct-message channel between the bot and `user_id`.
    pub async fn open_dm(&self, user_id: &str) -> Result<String, ApiError> {
        let bot = self.bot_id().await?.to_string();
        let what = "mattermost channels/direct";
        let body = json!([bot, user_id]);
        let response = http::send(what, Repeat::Idempotent, || {
            self.request(reqwest::Method::POST, "/channels/direct")
                .json(&body)
        })
        .await?;
        Self::id_from(what, response).await
    }

    pub async fn post(&self, channel: &str, text: &str, key: &str) -> Result<MessageRef, ApiError> {
        self.post_in(channel, None, text, key).await
    }

    /// Posts `text` as a reply in the thread of `root` (`root_id`).
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
        root_id: Option<&str>,
        text: &str,
        key: &str,
    ) -> Result<MessageRef, ApiError> {
        let what = "mattermost posts";
        let mut body = json!({
            "channel_id": channel,
            "message": text,
            "props": { MARKER_PROP: key },
        });
        if let Some(root_id) = root_id {
            body["root_id"] = json!(root_id);
        }
        let response = http::send(what, Repeat::Once, || {
            self.request(reqwest::Method::POST, "/posts").json(&body)
        })
        .await?;
        Ok(MessageRef {
            channel: channel.to_string(),
            id: Self::id_from(what, response).await?,
        })
    }

    /// The post carrying `key` among the channel's last 200.
    pub async fn find(&self, channel: &str, key: &str) -> Result<Option<MessageRef>, ApiError> {
        let what = "mattermost channel posts";
        let path = format!("/channels/{channel}/posts?per_page=200");
        let response = http::send(what, Repeat::Idempotent, || {
            self.request(reqwest::Method::GET, &path)
        })
        .await?;
        let list: PostList = response
            .json()
            .await
            .map_err(|source| ApiError::Transport { what, source })?;
        Ok(list
            .posts
            .into_values()
            .find(|post| post.props.get(MARKER_PROP).and_then(|v| v.as_str()) == Some(key))
            .map(|post| MessageRef {
                channel: channel.to_string(),
                id: post.id,
            }))
    }

    /// The id of the user called `username`, `None` when there is none.
    pub async fn user_id_by_name(&self, username: &str) -> Result<Option<String>, ApiError> {
        let what = "mattermost users/username";
        let path = format!("/users/username/{username}");
        match http::send(what, Repeat::Idempotent, || {
            self.request(reqwest::Method::GET, &path)
        })
        .await
        {
            Ok(response) => Self::id_from(what, response).await.map(Some),
            Err(ApiError::Status { status, .. }) if status == reqwest::StatusCode::NOT_FOUND => {
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    pub async fn update(&self, message: &MessageRef, text: &str) -> Result<(), ApiError> {
        let body = json!({ "message": text });
        let path = format!("/posts/{}/patch", message.id);
        http::send("mattermost posts patch", Repeat::Idempotent, || {
            self.request(reqwest::Method::PUT, &path).json(&body)
        })
        .await?;
        Ok(())
    }
}
