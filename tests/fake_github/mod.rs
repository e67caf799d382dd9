//! A local stand-in for the GitHub REST API (axum on 127.0.0.1:0): keeps pull
//! requests, comments, labels, deployments, commit statuses and check runs in
//! memory, answers like GitHub does, checks authentication, records every
//! call, and can be told to rate-limit (429, or 403 secondary limits with or
//! without `Retry-After`), fail N times, fail permanently, or commit a write
//! and lose its answer (502).
//!
//! Check-run and commit-status requests are validated against GitHub's
//! documented fields and limits and refused with 422 like GitHub refuses
//! them (see `check_run_errors`, `status_errors`); the fake can also send
//! the adapter a signed `check_run` webhook (`deliver_check_run`), as
//! GitHub does when someone clicks "Re-run" or a check run's button.
#![allow(dead_code)]

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub status: u16,
    pub at: Instant,
}

#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub repo: String,
    pub number: u64,
    pub body: String,
    pub user: String,
    pub edits: u32,
    /// Every body the comment had, oldest first (the current one last).
    pub history: Vec<String>,
}

impl Comment {
    /// Edits that left the body as it was: a report said again.
    pub fn repeated_edits(&self) -> Vec<&str> {
        self.history
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[1].as_str())
            .collect()
    }
}

/// A check run as the fake keeps it: its current fields (GitHub's shape)
/// and every request that made or changed it, oldest first.
#[derive(Debug, Clone)]
pub struct CheckRun {
    pub id: u64,
    pub repo: String,
    pub value: Value,
    pub requests: Vec<(Method, Value)>,
}

impl CheckRun {
    pub fn status(&self) -> &str {
        self.value["status"].as_str().unwrap_or_default()
    }
    pub fn conclusion(&self) -> Option<&str> {
        self.value["conclusion"].as_str()
    }
    pub fn external_id(&self) -> &str {
        self.value["external_id"].as_str().unwrap_or_default()
    }
    /// The statuses it went through, in order (`completed:success` for the end).
    pub fn states(&self) -> Vec<String> {
        let mut states: Vec<String> = Vec::new();
        for (_, request) in &self.requests {
            let state = match (request["status"].as_str(), request["conclusion"].as_str()) {
                (_, Some(c)) => format!("completed:{c}"),
                (Some(s), None) => s.to_string(),
                (None, None) => continue,
            };
            if states.last() != Some(&state) {
                states.push(state);
            }
        }
        states
    }
}

#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: u64,
    pub repo: String,
    pub request: Value,
    pub statuses: Vec<Value>,
}

impl Deployment {
    pub fn git_ref(&self) -> &str {
        self.request["ref"].as_str().unwrap_or_default()
    }
    pub fn states(&self) -> Vec<String> {
        self.statuses
            .iter()
            .map(|s| s["state"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// How the fake misbehaves for matching calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 500 without doing anything.
    ServerError,
    /// Does the work, then answers 502: the answer is lost.
    CommitThenFail,
    /// 403 "secondary rate limit", with `Retry-After: n` when given.
    SecondaryLimit(Option<u64>),
    /// 403 "Forbidden" (a permanent error).
    Forbidden,
    /// 429, with `Retry-After: n` when given.
    TooManyRequests(Option<u64>),
}

/// How the fake authenticates callers.
pub enum AuthMode {
    /// `Authorization: Bearer <token>`.
    Token(String),
    /// A GitHub App: JWTs signed with the key whose public half is given
    /// buy installation tokens.
    App {
        public_key_pem: String,
        app_id: String,
    },
}

#[derive(Default)]
pub struct State {
    pub pulls: HashMap<(String, u64), Value>,
    pub comments: Vec<Comment>,
    pub deployments: Vec<Deployment>,
    pub commit_statuses: Vec<(String, String, Value)>,
    pub check_runs: Vec<CheckRun>,
    /// Requests refused with 422, with GitHub's message.
    pub refused: Vec<(Method, String, String)>,
    pub permissions: HashMap<String, String>,
    pub calls: Vec<Call>,
    /// (method, path suffix, how many more 429s to answer).
    pub throttles: Vec<(Method, String, u32)>,
    /// (method, path suffix, how many more times, what to do).
    pub faults: Vec<(Method, String, u32, Fault)>,
    pub issued_tokens: HashSet<String>,
    pub token_requests: u32,
    pub bot: String,
    next_id: u64,
}

impl State {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

#[derive(Clone)]
pub struct FakeGitHub {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    auth: Arc<AuthMode>,
}

impl FakeGitHub {
    pub async fn start(bot: &str, auth: AuthMode) -> Self {
        let state = Arc::new(Mutex::new(State {
            bot: bot.to_string(),
            next_id: 1000,
            ..Default::default()
        }));
        let auth = Arc::new(auth);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (s, a) = (state.clone(), auth.clone());
        let router = Router::new().fallback(move |method, uri, headers, body| {
            let (s, a) = (s.clone(), a.clone());
            async move { handle(s, a, method, uri, headers, body) }
        });
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { addr, state, auth }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub fn set_pull(&self, repo: &str, pull: Value) {
        let number = pull["number"].as_u64().unwrap();
        self.with(|s| s.pulls.insert((repo.to_string(), number), pull));
    }

    pub fn pull(&self, repo: &str, number: u64) -> Value {
        self.with(|s| s.pulls[&(repo.to_string(), number)].clone())
    }

    pub fn update_pull(&self, repo: &str, number: u64, f: impl FnOnce(&mut Value)) {
        self.with(|s| f(s.pulls.get_mut(&(repo.to_string(), number)).unwrap()));
    }

    pub fn labels(&self, repo: &str, number: u64) -> Vec<String> {
        self.pull(repo, number)["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn set_permission(&self, user: &str, permission: &str) {
        self.with(|s| s.permissions.insert(user.into(), permission.into()));
    }

    pub fn comments(&self, repo: &str, number: u64) -> Vec<Comment> {
        self.with(|s| {
            s.comments
                .iter()
                .filter(|c| c.repo == repo && c.number == number)
                .cloned()
                .collect()
        })
    }

    /// Comments of the adapter that carry the sticky marker.
    pub fn stickies(&self, repo: &str, number: u64) -> Vec<Comment> {
        self.comments(repo, number)
            .into_iter()
            .filter(|c| c.body.contains("<!-- ephemera:github-sticky -->"))
            .collect()
    }

    pub fn deployments(&self, repo: &str) -> Vec<Deployment> {
        self.with(|s| {
            s.deployments
                .iter()
                .filter(|d| d.repo == repo)
                .cloned()
                .collect()
        })
    }

    pub fn calls(&self, method: Method, path_suffix: &str) -> Vec<Call> {
        self.with(|s| {
            s.calls
                .iter()
                .filter(|c| c.method == method && c.path.ends_with(path_suffix))
                .cloned()
                .collect()
        })
    }

    pub fn calls_under(&self, path_prefix: &str) -> Vec<Call> {
        self.with(|s| {
            s.calls
                .iter()
                .filter(|c| c.path.starts_with(path_prefix))
                .cloned()
                .collect()
        })
    }

    pub fn check_runs(&self, repo: &str) -> Vec<CheckRun> {
        self.with(|s| {
            s.check_runs
                .iter()
                .filter(|c| c.repo == repo)
                .cloned()
                .collect()
        })
    }

    /// The commit statuses of `repo`: (sha, request body), oldest first.
    pub fn commit_statuses(&self, repo: &str) -> Vec<(String, Value)> {
        self.with(|s| {
            s.commit_statuses
                .iter()
                .filter(|(r, _, _)| r == repo)
                .map(|(_, sha, body)| (sha.clone(), body.clone()))
                .collect()
        })
    }

    /// The `check_run` webhook GitHub sends when `sender` asks to re-run the
    /// check run `id` (`rerequested`), or clicks its button `identifier`
    /// (`requested_action`).
    pub fn check_run_event(&self, id: u64, identifier: Option<&str>, sender: &str) -> Value {
        let run = self.with(|s| s.check_runs.iter().find(|c| c.id == id).cloned());
        let run = run.unwrap_or_else(|| panic!("no check run {id}"));
        let mut event = json!({
            "action": if identifier.is_some() { "requested_action" } else { "rerequested" },
            "check_run": run.value,
            "repository": { "full_name": run.repo },
            "sender": { "login": sender, "type": "User" },
            "installation": { "id": 4242 }
        });
        if let Some(identifier) = identifier {
            event["requested_action"] = json!({ "identifier": identifier });
        }
        event
    }

    /// Sends `event` to the adapter's webhook at `url` as GitHub does:
    /// signed with `secret`, with a fresh delivery id. Returns the status.
    pub async fn deliver_check_run(&self, url: &str, secret: &str, event: &Value) -> u16 {
        let body = serde_json::to_vec(event).unwrap();
        let delivery = format!("fake-{}", self.with(|s| s.id()));
        let response = reqwest::Client::new()
            .post(url)
            .header("x-github-event", "check_run")
            .header("x-github-delivery", delivery)
            .header(
                "x-hub-signature-256",
                ephemera::adapters::github::signature::sign(secret, &body),
            )
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/fake")
            .body(body)
            .send()
            .await
            .expect("POST to the adapter's webhook");
        response.status().as_u16()
    }

    /// Misbehaves for the next `times` matching calls (`u32::MAX`: always).
    pub fn fault(&self, method: Method, path_suffix: &str, fault: Fault, times: u32) {
        self.with(|s| s.faults.push((method, path_suffix.into(), times, fault)));
    }

    pub fn clear_faults(&self) {
        self.with(|s| s.faults.clear());
    }

    /// Answers the next `times` matching calls with 429 and `Retry-After: 1`.
    pub fn throttle(&self, method: Method, path_suffix: &str, times: u32) {
        self.with(|s| s.throttles.push((method, path_suffix.into(), times)));
    }
}

fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&segment[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn query(uri: &Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| decode(&v.replace('+', " ")))
    })
}

fn json_response(status: StatusCode, value: Value) -> Response {
    (status, axum::Json(value)).into_response()
}

fn not_found() -> Response {
    json_response(StatusCode::NOT_FOUND, json!({ "message": "Not Found" }))
}

fn handle(
    state: Arc<Mutex<State>>,
    auth: Arc<AuthMode>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let mut s = state.lock().unwrap();
    let mut fault = None;
    for f in s.faults.iter_mut() {
        if f.0 == method && path.ends_with(&f.1) && f.2 > 0 {
            if f.2 != u32::MAX {
                f.2 -= 1;
            }
            fault = Some(f.3);
            break;
        }
    }
    let early = match fault {
        Some(Fault::ServerError) => Some(json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "message": "Server Error" }),
        )),
        Some(Fault::Forbidden) => Some(json_response(
            StatusCode::FORBIDDEN,
            json!({ "message": "Resource not accessible by integration" }),
        )),
        Some(Fault::TooManyRequests(retry_after)) => {
            let body = axum::Json(json!({ "message": "API rate limit exceeded" }));
            Some(match retry_after {
                Some(secs) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", secs.to_string())],
                    body,
                )
                    .into_response(),
                None => (StatusCode::TOO_MANY_REQUESTS, body).into_response(),
            })
        }
        Some(Fault::SecondaryLimit(retry_after)) => {
            let body = axum::Json(json!({
                "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
            }));
            Some(match retry_after {
                Some(secs) => (
                    StatusCode::FORBIDDEN,
                    [("retry-after", secs.to_string())],
                    body,
                )
                    .into_response(),
                None => (StatusCode::FORBIDDEN, body).into_response(),
            })
        }
        _ => None,
    };
    let response = match early {
        Some(response) => response,
        None => {
            let response = respond(&mut s, &auth, &method, &uri, &headers, &body);
            if fault == Some(Fault::CommitThenFail) {
                json_response(StatusCode::BAD_GATEWAY, json!({ "message": "Bad Gateway" }))
            } else {
                response
            }
        }
    };
    s.calls.push(Call {
        method,
        path,
        status: response.status().as_u16(),
        at: Instant::now(),
    });
    response
}

fn authorized(s: &State, auth: &AuthMode, headers: &HeaderMap, jwt_endpoint: bool) -> bool {
    let Some(bearer) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    match auth {
        AuthMode::Token(token) => !jwt_endpoint && bearer == token,
        AuthMode::App {
            public_key_pem,
            app_id,
        } => {
            if jwt_endpoint {
                let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_key_pem.as_bytes())
                    .expect("public key");
                let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
                validation.set_issuer(&[app_id]);
                validation.set_required_spec_claims(&["exp", "iat", "iss"]);
                match jsonwebtoken::decode::<Value>(bearer, &key, &validation) {
                    Ok(data) => {
                        let iat = data.claims["iat"].as_u64().unwrap_or(0);
                        let exp = data.claims["exp"].as_u64().unwrap_or(0);
                        exp > iat && exp - iat <= 600
                    }
                    Err(_) => false,
                }
            } else {
                s.issued_tokens.contains(bearer)
            }
        }
    }
}

fn respond(
    s: &mut State,
    auth: &AuthMode,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let path = uri.path();
    for throttle in s.throttles.iter_mut() {
        if throttle.0 == *method && path.ends_with(&throttle.1) && throttle.2 > 0 {
            throttle.2 -= 1;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                axum::Json(json!({ "message": "You have exceeded a secondary rate limit" })),
            )
                .into_response();
        }
    }
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let jwt_endpoint = matches!(
        seg.as_slice(),
        ["app", ..] | ["repos", _, _, "installation"]
    );
    if !authorized(s, auth, headers, jwt_endpoint) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({ "message": "Bad credentials" }),
        );
    }
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let bot = s.bot.clone();
    match (method.as_str(), seg.as_slice()) {
        ("POST", ["app", "installations", _id, "access_tokens"]) => {
            s.token_requests += 1;
            let token = format!("ghs_fake_{}", s.token_requests);
            s.issued_tokens.insert(token.clone());
            let expires = std::time::SystemTime::now() + Duration::from_secs(3600);
            let expires: k8s_openapi::jiff::Timestamp = expires.try_into().unwrap();
            json_response(
                StatusCode::CREATED,
                json!({ "token": token, "expires_at": expires.to_string() }),
            )
        }
        ("GET", ["repos", _, _, "installation"]) => {
            json_response(StatusCode::OK, json!({ "id": 4242 }))
        }
        ("GET", ["repos", o, r, "pulls", n]) => {
            let key = (format!("{o}/{r}"), n.parse().unwrap_or(0));
            match s.pulls.get(&key) {
                Some(pull) => json_response(StatusCode::OK, pull.clone()),
                None => not_found(),
            }
        }
        ("GET", ["repositories", _, "issues", n, "comments"]) => {
            // GitHub's page links name the repository by id.
            let full = query(uri, "repo").unwrap_or_default();
            let (o, r) = full.split_once('/').unwrap_or(("", ""));
            let (o, r) = (o.to_string(), r.to_string());
            let path = format!("/repos/{o}/{r}/issues/{n}/comments");
            let uri: Uri = format!("{path}?{}", uri.query().unwrap_or_default())
                .parse()
                .unwrap();
            respond(s, auth, method, &uri, headers, &Bytes::new())
        }
        ("GET", ["repos", o, r, "issues", n, "comments"]) => {
            let repo = format!("{o}/{r}");
            let number: u64 = n.parse().unwrap_or(0);
            let per_page: usize = query(uri, "per_page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(30);
            let page: usize = query(uri, "page").and_then(|p| p.parse().ok()).unwrap_or(1);
            let all: Vec<&Comment> = s
                .comments
                .iter()
                .filter(|c| c.repo == repo && c.number == number)
                .collect();
            let list: Vec<Value> = all
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|c| json!({ "id": c.id, "body": c.body, "user": { "login": c.user } }))
                .collect();
            let mut response = json_response(StatusCode::OK, json!(list));
            if all.len() > page * per_page {
                // Like GitHub: the next page by a link, not by counting.
                let host = headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("127.0.0.1");
                let link = format!(
                    "<http://{host}/repositories/1/issues/{number}/comments?repo={o}%2F{r}&per_page={per_page}&page={}>; rel=\"next\"",
                    page + 1
                );
                response.headers_mut().insert("link", link.parse().unwrap());
            }
            response
        }
        ("POST", ["repos", o, r, "issues", n, "comments"]) => {
            let id = s.id();
            let text = body["body"].as_str().unwrap_or_default().to_string();
            let comment = Comment {
                id,
                repo: format!("{o}/{r}"),
                number: n.parse().unwrap_or(0),
                body: text.clone(),
                user: bot,
                edits: 0,
                history: vec![text],
            };
            s.comments.push(comment.clone());
            json_response(
                StatusCode::CREATED,
                json!({ "id": id, "body": comment.body, "user": { "login": comment.user } }),
            )
        }
        ("PATCH", ["repos", o, r, "issues", "comments", id]) => {
            let repo = format!("{o}/{r}");
            let id: u64 = id.parse().unwrap_or(0);
            match s.comments.iter_mut().find(|c| c.id == id && c.repo == repo) {
                Some(c) => {
                    c.body = body["body"].as_str().unwrap_or_default().to_string();
                    c.edits += 1;
                    c.history.push(c.body.clone());
                    json_response(StatusCode::OK, json!({ "id": id, "body": c.body }))
                }
                None => not_found(),
            }
        }
        ("POST", ["repos", o, r, "issues", n, "labels"]) => {
            let key = (format!("{o}/{r}"), n.parse().unwrap_or(0));
            let Some(pull) = s.pulls.get_mut(&key) else {
                return not_found();
            };
            let labels = pull["labels"].as_array_mut().unwrap();
            for name in body["labels"].as_array().cloned().unwrap_or_default() {
                if !labels.iter().any(|l| l["name"] == name) {
                    labels.push(json!({ "name": name }));
                }
            }
            json_response(StatusCode::OK, json!(labels))
        }
        ("DELETE", ["repos", o, r, "issues", n, "labels", name]) => {
            let key = (format!("{o}/{r}"), n.parse().unwrap_or(0));
            let Some(pull) = s.pulls.get_mut(&key) else {
                return not_found();
            };
            let labels = pull["labels"].as_array_mut().unwrap();
            let before = labels.len();
            labels.retain(|l| l["name"] != *name);
            if labels.len() == before {
                return json_response(
                    StatusCode::NOT_FOUND,
                    json!({ "message": "Label does not exist" }),
                );
            }
            json_response(StatusCode::OK, json!(labels))
        }
        ("GET", ["repos", _, _, "collaborators", user, "permission"]) => {
            let permission = s
                .permissions
                .get(*user)
                .cloned()
                .unwrap_or_else(|| "none".into());
            let role = permission.clone();
            let permission = match permission.as_str() {
                "maintain" => "write".to_string(),
                "triage" => "read".to_string(),
                other => other.to_string(),
            };
            json_response(
                StatusCode::OK,
                json!({ "permission": permission, "role_name": role, "user": { "login": user } }),
            )
        }
        ("GET", ["repos", o, r, "deployments"]) => {
            let repo = format!("{o}/{r}");
            let environment = query(uri, "environment");
            let mut list: Vec<Value> = s
                .deployments
                .iter()
                .filter(|d| d.repo == repo)
                .filter(|d| {
                    environment
                        .as_deref()
                        .is_none_or(|e| d.request["environment"] == e)
                })
                .map(|d| {
                    json!({ "id": d.id, "ref": d.request["ref"], "environment": d.request["environment"] })
                })
                .collect();
            list.reverse();
            json_response(StatusCode::OK, json!(list))
        }
        ("POST", ["repos", o, r, "deployments"]) => {
            let id = s.id();
            s.deployments.push(Deployment {
                id,
                repo: format!("{o}/{r}"),
                request: body.clone(),
                statuses: Vec::new(),
            });
            json_response(StatusCode::CREATED, json!({ "id": id, "ref": body["ref"] }))
        }
        ("GET", ["repos", o, r, "deployments", id, "statuses"]) => {
            let repo = format!("{o}/{r}");
            let id: u64 = id.parse().unwrap_or(0);
            match s.deployments.iter().find(|d| d.id == id && d.repo == repo) {
                Some(d) => {
                    let mut list = d.statuses.clone();
                    list.reverse();
                    json_response(StatusCode::OK, json!(list))
                }
                None => not_found(),
            }
        }
        ("POST", ["repos", o, r, "deployments", id, "statuses"]) => {
            let repo = format!("{o}/{r}");
            let id: u64 = id.parse().unwrap_or(0);
            match s
                .deployments
                .iter_mut()
                .find(|d| d.id == id && d.repo == repo)
            {
                Some(d) => {
                    d.statuses.push(body.clone());
                    json_response(StatusCode::CREATED, body)
                }
                None => not_found(),
            }
        }
        ("POST", ["repos", o, r, "statuses", sha]) => {
            let errors = status_errors(&body);
            if !errors.is_empty() {
                return unprocessable(s, method, path, errors);
            }
            s.commit_statuses
                .push((format!("{o}/{r}"), sha.to_string(), body.clone()));
            json_response(StatusCode::CREATED, body)
        }
        ("POST", ["repos", o, r, "check-runs"]) => {
            if !matches!(auth, AuthMode::App { .. }) {
                // Only GitHub Apps may write check runs.
                return json_response(
                    StatusCode::FORBIDDEN,
                    json!({ "message": "You must authenticate via a GitHub App." }),
                );
            }
            let errors = check_run_errors(&body, true);
            if !errors.is_empty() {
                return unprocessable(s, method, path, errors);
            }
            let id = s.id();
            let mut value = json!({
                "id": id,
                "head_sha": body["head_sha"],
                "name": body["name"],
                "external_id": body.get("external_id").cloned().unwrap_or(json!("")),
                "status": "queued",
                "conclusion": null,
                "started_at": null,
                "completed_at": null,
                "output": { "title": null, "summary": null, "text": null },
                "actions": [],
                "html_url": format!("https://github.com/{o}/{r}/runs/{id}"),
                "app": { "slug": "ephemera-test" },
                "pull_requests": []
            });
            merge_check_run(&mut value, &body);
            s.check_runs.push(CheckRun {
                id,
                repo: format!("{o}/{r}"),
                value: value.clone(),
                requests: vec![(Method::POST, body.clone())],
            });
            json_response(StatusCode::CREATED, value)
        }
        ("PATCH", ["repos", o, r, "check-runs", id]) => {
            if !matches!(auth, AuthMode::App { .. }) {
                return json_response(
                    StatusCode::FORBIDDEN,
                    json!({ "message": "You must authenticate via a GitHub App." }),
                );
            }
            let errors = check_run_errors(&body, false);
            if !errors.is_empty() {
                return unprocessable(s, method, path, errors);
            }
            let repo = format!("{o}/{r}");
            let id: u64 = id.parse().unwrap_or(0);
            match s
                .check_runs
                .iter_mut()
                .find(|c| c.id == id && c.repo == repo)
            {
                Some(run) => {
                    merge_check_run(&mut run.value, &body);
                    run.requests.push((Method::PATCH, body.clone()));
                    json_response(StatusCode::OK, run.value.clone())
                }
                None => not_found(),
            }
        }
        ("GET", ["repos", o, r, "check-runs", id]) => {
            let repo = format!("{o}/{r}");
            let id: u64 = id.parse().unwrap_or(0);
            match s.check_runs.iter().find(|c| c.id == id && c.repo == repo) {
                Some(run) => json_response(StatusCode::OK, run.value.clone()),
                None => not_found(),
            }
        }
        ("GET", ["repos", o, r, "commits", git_ref, "check-runs"]) => {
            let repo = format!("{o}/{r}");
            let name = query(uri, "check_name");
            let all = query(uri, "filter").as_deref() == Some("all");
            let mut list: Vec<Value> = Vec::new();
            // Newest first, like GitHub; `latest` keeps one per name.
            for run in s.check_runs.iter().rev() {
                if run.repo != repo || run.value["head_sha"] != *git_ref {
                    continue;
                }
                if name.as_deref().is_some_and(|n| run.value["name"] != n) {
                    continue;
                }
                if !all && list.iter().any(|v| v["name"] == run.value["name"]) {
                    continue;
                }
                list.push(run.value.clone());
            }
            json_response(
                StatusCode::OK,
                json!({ "total_count": list.len(), "check_runs": list }),
            )
        }
        _ => not_found(),
    }
}

/// 422 like GitHub's "Validation Failed"; the refusal is recorded.
fn unprocessable(s: &mut State, method: &Method, path: &str, errors: Vec<String>) -> Response {
    let message = errors.join("; ");
    s.refused
        .push((method.clone(), path.to_string(), message.clone()));
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({
            "message": "Validation Failed",
            "errors": errors.iter().map(|e| json!({ "code": "invalid", "message": e })).collect::<Vec<_>>(),
            "documentation_url": "https://docs.github.com/rest",
            "status": "422"
        }),
    )
}

const CHECK_STATUSES: [&str; 3] = ["queued", "in_progress", "completed"];
const CONCLUSIONS: [&str; 8] = [
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "stale",
    "timed_out",
];
/// `output.summary` and `output.text` (characters).
const OUTPUT_LIMIT: usize = 65_535;

fn chars(value: &Value) -> usize {
    value.as_str().map_or(0, |s| s.chars().count())
}

/// What GitHub refuses in a check-run create (`create`) or update request:
/// `name` and `head_sha` required on create; `status` and `conclusion` from
/// their enums; a conclusion required with `status: completed` or
/// `completed_at`; `output` needs `title` and `summary`, `summary` and
/// `text` at most 65,535 characters; at most 3 `actions`, each with `label`
/// (≤ 20), `description` (≤ 40) and `identifier` (≤ 20).
pub fn check_run_errors(body: &Value, create: bool) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(object) = body.as_object() else {
        return vec!["the body is not a JSON object".into()];
    };
    let is_string = |key: &str| object.get(key).is_none_or(Value::is_string);
    for key in [
        "name",
        "head_sha",
        "status",
        "conclusion",
        "external_id",
        "details_url",
        "started_at",
        "completed_at",
    ] {
        if !is_string(key) {
            errors.push(format!("{key} must be a string"));
        }
    }
    if create {
        if chars(&body["name"]) == 0 {
            errors.push("name is required".into());
        }
        let sha = body["head_sha"].as_str().unwrap_or_default();
        if sha.len() != 40 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            errors.push(format!("head_sha {sha:?} is not a commit SHA"));
        }
    } else if object.contains_key("head_sha") {
        errors.push("head_sha cannot be changed by an update".into());
    }
    let status = body["status"].as_str();
    if let Some(status) = status
        && !CHECK_STATUSES.contains(&status)
    {
        errors.push(format!(
            "status {status:?} is not one of {CHECK_STATUSES:?}"
        ));
    }
    let conclusion = body["conclusion"].as_str();
    if let Some(conclusion) = conclusion
        && !CONCLUSIONS.contains(&conclusion)
    {
        errors.push(format!(
            "conclusion {conclusion:?} is not one of {CONCLUSIONS:?}"
        ));
    }
    if (status == Some("completed") || object.contains_key("completed_at")) && conclusion.is_none()
    {
        errors.push(
            "conclusion is required when status is completed or completed_at is given".into(),
        );
    }
    if let Some(output) = object.get("output") {
        if !output.is_object() {
            errors.push("output must be an object".into());
        }
        for key in ["title", "summary"] {
            if !output[key].is_string() {
                errors.push(format!("output.{key} is required"));
            }
        }
        for key in ["summary", "text"] {
            if !output[key].is_null() && !output[key].is_string() {
                errors.push(format!("output.{key} must be a string"));
            }
            if chars(&output[key]) > OUTPUT_LIMIT {
                errors.push(format!(
                    "output.{key} is longer than {OUTPUT_LIMIT} characters"
                ));
            }
        }
    }
    if let Some(actions) = object.get("actions") {
        match actions.as_array() {
            None => errors.push("actions must be an array".into()),
            Some(list) => {
                if list.len() > 3 {
                    errors.push("at most 3 actions".into());
                }
                for (i, action) in list.iter().enumerate() {
                    for (key, max) in [("label", 20), ("description", 40), ("identifier", 20)] {
                        match action[key].as_str() {
                            None => errors.push(format!("actions[{i}].{key} is required")),
                            Some("") => errors.push(format!("actions[{i}].{key} is empty")),
                            Some(text) if text.chars().count() > max => errors.push(format!(
                                "actions[{i}].{key} is longer than {max} characters"
                            )),
                            Some(_) => {}
                        }
                    }
                }
            }
        }
    }
    errors
}

/// The fields of a create or update request applied to a stored check run
/// (a conclusion completes it, as on GitHub).
fn merge_check_run(value: &mut Value, body: &Value) {
    for (key, field) in body.as_object().into_iter().flatten() {
        if key == "output" {
            for (k, v) in field.as_object().into_iter().flatten() {
                value["output"][k] = v.clone();
            }
        } else {
            value[key] = field.clone();
        }
    }
    if !body["conclusion"].is_null() {
        value["status"] = json!("completed");
    }
}

/// What GitHub refuses in a commit status: `state` outside its enum, a
/// `description` over 140 characters, a `target_url` that is not a URL.
pub fn status_errors(body: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    const STATES: [&str; 4] = ["error", "failure", "pending", "success"];
    match body["state"].as_str() {
        Some(state) if STATES.contains(&state) => {}
        other => errors.push(format!("state {other:?} is not one of {STATES:?}")),
    }
    if !body["description"].is_null() && !body["description"].is_string() {
        errors.push("description must be a string".into());
    }
    if chars(&body["description"]) > 140 {
        errors.push("description is longer than 140 characters".into());
    }
    if let Some(url) = body.get("target_url").filter(|u| !u.is_null()) {
        let ok = url
            .as_str()
            .is_some_and(|u| u.starts_with("https://") || u.starts_with("http://"));
        if !ok {
            errors.push(format!("target_url {url} is not a URL"));
        }
    }
    if !body["context"].is_null() && !body["context"].is_string() {
        errors.push("context must be a string".into());
    }
    errors
}
