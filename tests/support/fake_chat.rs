//! A stand-in for Mattermost's REST API v4 and Slack's Web API on
//! 127.0.0.1 that records every call, with threads as the real ones keep
//! them: a Mattermost channel's posts include replies (`root_id`), Slack's
//! `conversations.history` leaves replies (`thread_ts`) out and only
//! `conversations.replies` shows them. It fails like the real ones when
//! told to: a status (429 with `Retry-After`), a stored post whose answer
//! is lost (502), a permanent refusal; a wrong bot token is refused (401 /
//! `invalid_auth`), a reply to a post that does not exist too.
//!
//! Included by `tests/chat_runs.rs` with `#[path]`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub status: u16,
    /// The id the fake gave a new message (Mattermost post id, Slack ts),
    /// also when the answer was lost.
    pub created_id: Option<String>,
}

/// How the fake answers the next requests to one path.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    Status(StatusCode),
    /// Stores the post, then answers 502: the answer is lost.
    CommitThenFail,
}

#[derive(Default)]
struct FakeState {
    calls: Vec<Call>,
    faults: HashMap<String, (u32, Fault)>,
    /// Mattermost user names → ids.
    users: HashMap<String, String>,
    /// Channel → how long posts to it take.
    slow: HashMap<String, std::time::Duration>,
    next_id: u32,
}

/// A message as stored by the fake.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub channel: String,
    pub text: String,
    pub key: Option<String>,
    /// The thread's root (Mattermost `root_id`, Slack `thread_ts`).
    pub root: Option<String>,
}

#[derive(Clone)]
pub struct FakeChat {
    addr: SocketAddr,
    token: String,
    state: Arc<Mutex<FakeState>>,
}

impl FakeChat {
    pub async fn start(token: &str) -> Self {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let fake = Self {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: token.to_string(),
            state,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Self { addr, ..fake };
        let app = Router::new().fallback(fake_api).with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add_user(&self, name: &str, id: &str) {
        self.state
            .lock()
            .unwrap()
            .users
            .insert(name.into(), id.into());
    }

    pub fn fault(&self, path: &str, fault: Fault, times: u32) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert(path.to_string(), (times, fault));
    }

    /// Makes every post to `channel` take `delay` (a slow platform).
    pub fn slow_channel(&self, channel: &str, delay: std::time::Duration) {
        self.state
            .lock()
            .unwrap()
            .slow
            .insert(channel.into(), delay);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Stored messages, in order.
    pub fn posts(&self) -> Vec<Message> {
        stored(&self.state.lock().unwrap())
    }

    pub fn posts_containing(&self, needle: &str) -> Vec<Message> {
        self.posts()
            .into_iter()
            .filter(|m| m.text.contains(needle))
            .collect()
    }
}

fn message_of(call: &Call) -> Option<Message> {
    let body = &call.body;
    Some(Message {
        id: call.created_id.clone()?,
        channel: body["channel_id"]
            .as_str()
            .or(body["channel"].as_str())
            .unwrap_or_default()
            .to_string(),
        text: body["message"]
            .as_str()
            .or(body["text"].as_str())
            .unwrap_or_default()
            .to_string(),
        key: body["props"]["ephemera_key"]
            .as_str()
            .or(body["metadata"]["event_payload"]["key"].as_str())
            .map(str::to_string),
        root: body["root_id"]
            .as_str()
            .or(body["thread_ts"].as_str())
            .map(str::to_string),
    })
}

fn stored(state: &FakeState) -> Vec<Message> {
    state.calls.iter().filter_map(message_of).collect()
}

fn slack_message(m: &Message) -> Value {
    let mut value = json!({
        "ts": m.id,
        "text": m.text,
        "metadata": { "event_type": "ephemera_notice", "event_payload": { "key": m.key } },
    });
    if let Some(root) = &m.root {
        value["thread_ts"] = json!(root);
    }
    value
}

async fn fake_api(
    State(fake): State<FakeChat>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    let path = uri.path().to_string();
    let body: Value = serde_json::from_slice(&raw).unwrap_or_else(|_| {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&raw).unwrap_or_default();
        Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    });
    let slack = !path.starts_with("/api/v4/");
    let delay = {
        let state = fake.state.lock().unwrap();
        let channel = body["channel_id"].as_str().or(body["channel"].as_str());
        match (path.as_str(), channel) {
            ("/api/v4/posts" | "/api/chat.postMessage", Some(channel)) => {
                state.slow.get(channel).copied()
            }
            _ => None,
        }
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let mut state = fake.state.lock().unwrap();
    let mut call = Call {
        method: method.to_string(),
        path: path.clone(),
        body: body.clone(),
        status: 200,
        created_id: None,
    };
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {}", fake.token).as_str());
    if !authorized {
        call.status = if slack { 200 } else { 401 };
        state.calls.push(call);
        return if slack {
            Json(json!({ "ok": false, "error": "invalid_auth" })).into_response()
        } else {
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "message": "Invalid or expired session" })),
            )
                .into_response()
        };
    }
    let mut fault = None;
    if let Some((left, f)) = state.faults.get_mut(&path)
        && *left > 0
    {
        if *left != u32::MAX {
            *left -= 1;
        }
        fault = Some(*f);
    }
    if let Some(Fault::Status(status)) = fault {
        call.status = status.as_u16();
        state.calls.push(call);
        if status == StatusCode::TOO_MANY_REQUESTS {
            return (status, [("retry-after", "1")], "slow down").into_response();
        }
        return (status, "try later").into_response();
    }
    state.next_id += 1;
    let n = state.next_id;
    let messages = stored(&state);
    let (status, reply) = match (method.as_str(), path.as_str()) {
        ("GET", "/api/v4/users/me") => (StatusCode::OK, json!({ "id": "bot-user-id" })),
        ("GET", p) if p.starts_with("/api/v4/users/username/") => {
            let name = p.trim_start_matches("/api/v4/users/username/");
            match state.users.get(name) {
                Some(id) => (StatusCode::OK, json!({ "id": id, "username": name })),
                None => (
                    StatusCode::NOT_FOUND,
                    json!({ "id": "app.user.missing_account.const", "message": "Unable to find the user." }),
                ),
            }
        }
        ("POST", "/api/v4/channels/direct") => (
            StatusCode::CREATED,
            json!({ "id": format!("dm-{}", body[1].as_str().unwrap_or("?")) }),
        ),
        ("GET", p) if p.starts_with("/api/v4/channels/") && p.ends_with("/posts") => {
            // Replies are among a channel's posts, as in Mattermost.
            let channel = p
                .trim_start_matches("/api/v4/channels/")
                .trim_end_matches("/posts");
            let mut found: Vec<&Message> =
                messages.iter().filter(|m| m.channel == channel).collect();
            found.reverse();
            let order: Vec<&String> = found.iter().map(|m| &m.id).collect();
            let posts: serde_json::Map<String, Value> = found
                .iter()
                .map(|m| {
                    (
                        m.id.clone(),
                        json!({ "id": m.id, "channel_id": channel, "root_id": m.root.clone().unwrap_or_default(),
                                "message": m.text, "props": { "ephemera_key": m.key } }),
                    )
                })
                .collect();
            (StatusCode::OK, json!({ "order": order, "posts": posts }))
        }
        ("POST", "/api/v4/posts") => {
            let root = body["root_id"].as_str().filter(|r| !r.is_empty());
            if let Some(root) = root
                && !messages.iter().any(|m| m.id == root && m.root.is_none())
            {
                (
                    StatusCode::BAD_REQUEST,
                    json!({ "id": "api.post.create_post.root_id.app_error", "message": "Invalid RootId parameter." }),
                )
            } else {
                let id = format!("post-{n}");
                call.created_id = Some(id.clone());
                (
                    StatusCode::CREATED,
                    json!({ "id": id, "channel_id": body["channel_id"] }),
                )
            }
        }
        ("PUT", p) if p.starts_with("/api/v4/posts/") && p.ends_with("/patch") => {
            (StatusCode::OK, json!({ "id": "patched" }))
        }
        ("POST", "/api/conversations.open") => (
            StatusCode::OK,
            json!({ "ok": true, "channel": { "id": format!("D-{}", body["users"].as_str().unwrap_or("?")) } }),
        ),
        ("POST", "/api/conversations.history") => {
            // Thread replies are not in the history, as in Slack.
            let channel = body["channel"].as_str().unwrap_or_default();
            let mut found: Vec<Value> = messages
                .iter()
                .filter(|m| m.channel == channel && m.root.is_none())
                .map(slack_message)
                .collect();
            found.reverse();
            (StatusCode::OK, json!({ "ok": true, "messages": found }))
        }
        ("POST", "/api/conversations.replies") => {
            let channel = body["channel"].as_str().unwrap_or_default();
            let ts = body["ts"].as_str().unwrap_or_default();
            let found: Vec<Value> = messages
                .iter()
                .filter(|m| m.channel == channel && (m.id == ts || m.root.as_deref() == Some(ts)))
                .map(slack_message)
                .collect();
            if found.is_empty() {
                (
                    StatusCode::OK,
                    json!({ "ok": false, "error": "thread_not_found" }),
                )
            } else {
                (StatusCode::OK, json!({ "ok": true, "messages": found }))
            }
        }
        ("POST", "/api/chat.postMessage") => {
            let ts = format!("1700000000.{n:06}");
            call.created_id = Some(ts.clone());
            (
                StatusCode::OK,
                json!({ "ok": true, "channel": body["channel"], "ts": ts }),
            )
        }
        ("POST", "/api/chat.update") => (
            StatusCode::OK,
            json!({ "ok": true, "channel": body["channel"], "ts": body["ts"] }),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            json!({ "error": "no such endpoint" }),
        ),
    };
    if matches!(fault, Some(Fault::CommitThenFail)) {
        call.status = 502;
        state.calls.push(call);
        return (StatusCode::BAD_GATEWAY, "bad gateway").into_response();
    }
    call.status = status.as_u16();
    state.calls.push(call);
    (status, Json(reply)).into_response()
}
