//! The GitHub REST calls the adapter makes, authenticated as a GitHub App
//! (JWT → installation token, cached and refreshed before it expires) or
//! with a token, honouring rate limits (`Retry-After`, `x-ratelimit-reset`)
//! and retrying server errors with backoff.

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::{
    config::{Auth, Secret},
    events::PullRequest,
    metrics::Metrics,
};

const ATTEMPTS: u32 = 5;
/// Refresh installation tokens this long before GitHub expires them.
const TOKEN_MARGIN: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("GitHub answered {status} to {method} {path}: {message}")]
    Status {
        status: StatusCode,
        method: Method,
        path: String,
        message: String,
    },
    #[error("GitHub rate limit on {method} {path}: retry in {wait:?} is longer than allowed")]
    RateLimited {
        method: Method,
        path: String,
        wait: Duration,
    },
    #[error("cannot reach GitHub for {method} {path}: {source}")]
    Network {
        method: Method,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GitHub App authentication failed: {0}")]
    Auth(String),
}

impl GitHubError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            GitHubError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

enum Credentials {
    Token(Secret),
    App {
        app_id: String,
        key: Box<EncodingKey>,
        tokens: Mutex<HashMap<u64, (Secret, Instant)>>,
        installations: Mutex<HashMap<String, u64>>,
    },
}

pub struct GitHub {
    http: reqwest::Client,
    base: reqwest::Url,
    credentials: Credentials,
    metrics: Metrics,
    /// The longest rate-limit wait the client sits out before giving up.
    max_wait: Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IssueComment {
    pub id: u64,
    #[serde(default)]
    pub body: Option<String>,
    pub user: super::events::User,
}

#[derive(Debug, Clone, Deserialize)]
struct Deployment {
    id: u64,
    #[serde(rename = "ref")]
    git_ref: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    iat: u64,
    exp: u64,
    iss: &'a str,
}

impl GitHub {
    pub fn new(api_base_url: &str, auth: &Auth, metrics: Metrics) -> anyhow::Result<Self> {
        let base = reqwest::Url::parse(api_base_url)?;
        let credentials = match auth {
            Auth::Token(token) => Credentials::Token(token.clone()),
            Auth::App {
                app_id,
                private_key,
            } => Credentials::App {
                app_id: app_id.clone(),
                key: Box::new(EncodingKey::from_rsa_pem(private_key.expose().as_bytes())?),
                tokens: Mutex::default(),
                installations: Mutex::default(),
            },
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("ephemera/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            base,
            credentials,
            metrics,
            max_wait: Duration::from_secs(15 * 60),
        })
    }

    /// Remembers the App installation of a repository (every webhook names it).
    pub async fn note_installation(&self, repository: &str, id: u64) {
        if let Credentials::App { installations, .. } = &self.credentials {
            installations
                .lock()
                .await
                .insert(repository.to_ascii_lowercase(), id);
        }
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> reqwest::Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("the API base URL is http(s)")
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    fn jwt(&self) -> Result<String, GitHubError> {
        let Credentials::App { app_id, key, .. } = &self.credentials else {
            return Err(GitHubError::Auth("not configured as an App".into()));
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // GitHub allows at most ten minutes; iat is backdated against clock skew.
        let claims = Claims {
            iat: now.saturating_sub(60),
            exp: now + 9 * 60,
            iss: app_id,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, key)
            .map_err(|err| GitHubError::Auth(format!("cannot sign the App JWT: {err}")))
    }

    /// The bearer token for calls about `repository`.
    async fn token(&self, repository: Option<&str>) -> Result<Secret, GitHubError> {
        let (tokens, installations) = match &self.credentials {
            Credentials::Token(token) => return Ok(token.clone()),
            Credentials::App {
                tokens,
                installations,
                ..
            } => (tokens, installations),
        };
        let repository = repository
            .ok_or_else(|| GitHubError::Auth("an App call needs a repository".into()))?
            .to_ascii_lowercase();
        let known = installations.lock().await.get(&repository).copied();
        let id = match known {
            Some(id) => id,
            None => {
                let (owner, repo) = repository.split_once('/').unwrap_or(("", &repository));
                let jwt = Secret::new(self.jwt()?);
                let found = self
                    .send(
                        &jwt,
                        Method::GET,
                        &["repos", owner, repo, "installation"],
                        &[],
                        None,
                    )
                    .await?;
                let id = found
                    .get("id")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| GitHubError::Auth("installation has no id".into()))?;
                installations.lock().await.insert(repository.clone(), id);
                id
            }
        };
        let mut tokens = tokens.lock().await;
        if let Some((token, refresh_at)) = tokens.get(&id)
            && Instant::now() < *refresh_at
        {
            return Ok(token.clone());
        }
        let jwt = Secret::new(self.jwt()?);
        let id_text = id.to_string();
        let answer = self
            .send(
                &jwt,
                Method::POST,
                &["app", "installations", &id_text, "access_tokens"],
                &[],
                None,
            )
            .await?;
        let token = answer
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| GitHubError::Auth("no token in the access_tokens answer".into()))?;
        let lifetime = answer
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(|text| text.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|at| {
                let secs = at.as_second() - k8s_openapi::jiff::Timestamp::now().as_second();
                Duration::from_secs(secs.max(0) as u64)
            })
            .unwrap_or(Duration::from_secs(3600));
        let refresh_at = Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN);
        let token = Secret::new(token.to_string());
        tokens.insert(id, (token.clone(), refresh_at));
        Ok(token)
    }

    async fn forget_token(&self, repository: &str) {
        if let Credentials::App {
            tokens,
            installations,
            ..
        } = &self.credentials
        {
            let id = installations
                .lock()
                .await
                .get(&repository.to_ascii_lowercase())
                .copied();
            if let Some(id) = id {
                tokens.lock().await.remove(&id);
            }
        }
    }

    /// One REST call about `repository` (whose App installation authenticates it).
    pub async fn call(
        &self,
        repository: &str,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, GitHubError> {
        let token = self.token(Some(repository)).await?;
        match self
            .send(&token, method.clone(), segments, query, body)
            .await
        {
            Err(err) if err.status() == Some(StatusCode::UNAUTHORIZED) => {
                // A revoked or expired installation token: fetch a new one once.
                self.forget_token(repository).await;
                let token = self.token(Some(repository)).await?;
                self.send(&token, method, segments, query, body).await
            }
            other => other,
        }
    }

    async fn send(
        &self,
        token: &Secret,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, GitHubError> {
        let url = self.url(segments, query);
        let path = url.path().to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose())
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28");
            if let Some(body) = body {
                request = request.json(body);
            }
            // A POST that may have been committed is never sent again blind:
            // the caller looks for what it made (by marker, ref) first.
            let retry_allowed = method != Method::POST;
            let response = match request.send().await {
                Ok(response) => response,
                Err(source) => {
                    self.metrics.api_call(&method, "network_error");
                    let unsent = source.is_connect();
                    if attempt < ATTEMPTS && (retry_allowed || unsent) {
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                    return Err(GitHubError::Network {
                        method,
                        path,
                        source,
                    });
                }
            };
            let status = response.status();
            if status.is_success() {
                self.metrics.api_call(&method, "success");
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|source| GitHubError::Network {
                        method: method.clone(),
                        path: path.clone(),
                        source,
                    })?;
                if bytes.is_empty() {
                    return Ok(Value::Null);
                }
                return serde_json::from_slice(&bytes).map_err(|err| GitHubError::Status {
                    status,
                    method,
                    path,
                    message: format!("the answer is not JSON: {err}"),
                });
            }
            let headers = response.headers().clone();
            let body = response.text().await.unwrap_or_default();
            // A rate-limited request was not carried out, so it is always
            // safe to send again.
            if let Some(wait) = rate_limit_wait(status, &headers, &body, attempt) {
                self.metrics.api_call(&method, "rate_limited");
                if wait > self.max_wait || attempt >= ATTEMPTS {
                    return Err(GitHubError::RateLimited { method, path, wait });
                }
                tracing::warn!(%method, %path, ?wait, "GitHub rate limit; waiting");
                tokio::time::sleep(wait).await;
                continue;
            }
            if status.is_server_error() {
                self.metrics.api_call(&method, "server_error");
                if attempt < ATTEMPTS && retry_allowed {
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
            } else {
                self.metrics.api_call(&method, "client_error");
            }
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
                .unwrap_or_default();
            return Err(GitHubError::Status {
                status,
                method,
                path,
                message,
            });
        }
    }

    pub async fn get_pull(
        &self,
        repository: &str,
        number: u64,
    ) -> Result<PullRequest, GitHubError> {
        let (owner, repo) = split(repository);
        let n = number.to_string();
        let value = self
            .call(
                repository,
                Method::GET,
                &["repos", owner, repo, "pulls", &n],
                &[],
                None,
            )
            .await?;
        serde_json::from_value(value).map_err(|err| GitHubError::Status {
            status: StatusCode::OK,
            method: Method::GET,
            path: format!("/repos/{repository}/pulls/{number}"),
            message: format!("unexpected pull request shape: {err}"),
        })
    }

    /// The comments of an issue or PR (at most 1,000, oldest first),
    /// following the `Link: rel="next"` pages. An answer that is not a list
    /// of comments is an error, never an empty list (which would make the
    /// caller post a second sticky comment).
    pub async fn list_comments(
        &self,
        repository: &str,
        number: u64,
    ) -> Result<Vec<IssueComment>, GitHubError> {
        let (owner, repo) = split(repository);
        let n = number.to_string();
        let first = self.url(
            &["repos", owner, repo, "issues", &n, "comments"],
            &[("per_page", "100")],
        );
        let mut all = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            let (value, link) = self.get_page(repository, url).await?;
            let batch: Vec<IssueComment> =
                serde_json::from_value(value).map_err(|err| GitHubError::Status {
                    status: StatusCode::OK,
                    method: Method::GET,
                    path: format!("/repos/{repository}/issues/{number}/comments"),
                    message: format!("unexpected comment list: {err}"),
                })?;
            all.extend(batch);
            if pages < 10 {
                next = link
                    .as_deref()
                    .and_then(next_link)
                    .and_then(|u| reqwest::Url::parse(&u).ok())
                    // Only ever follow links to the configured API.
                    .filter(|u| u.origin() == self.base.origin());
            }
        }
        Ok(all)
    }

    /// One GET of a full URL (a page link), with its `Link` header.
    async fn get_page(
        &self,
        repository: &str,
        url: reqwest::Url,
    ) -> Result<(Value, Option<String>), GitHubError> {
        let token = self.token(Some(repository)).await?;
        let path = url.path().to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .http
                .get(url.clone())
                .bearer_auth(token.expose())
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(source) if attempt < ATTEMPTS => {
                    tracing::debug!(%path, error = %source, "GET failed; retrying");
                    self.metrics.api_call(&Method::GET, "network_error");
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(source) => {
                    return Err(GitHubError::Network {
                        method: Method::GET,
                        path,
                        source,
                    });
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.text().await.unwrap_or_default();
            if status.is_success() {
                self.metrics.api_call(&Method::GET, "success");
                let link = headers
                    .get(reqwest::header::LINK)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                let value = serde_json::from_str(&body).map_err(|err| GitHubError::Status {
                    status,
                    method: Method::GET,
                    path: path.clone(),
                    message: format!("the answer is not JSON: {err}"),
                })?;
                return Ok((value, link));
            }
            if let Some(wait) = rate_limit_wait(status, &headers, &body, attempt) {
                self.metrics.api_call(&Method::GET, "rate_limited");
                if wait > self.max_wait || attempt >= ATTEMPTS {
                    return Err(GitHubError::RateLimited {
                        method: Method::GET,
                        path,
                        wait,
                    });
                }
                tokio::time::sleep(wait).await;
                continue;
            }
            if status.is_server_error() && attempt < ATTEMPTS {
                self.metrics.api_call(&Method::GET, "server_error");
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED {
                self.forget_token(repository).await;
            }
            return Err(GitHubError::Status {
                status,
                method: Method::GET,
                path,
                message: serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
                    .unwrap_or_default(),
            });
        }
    }

    pub async fn create_comment(
        &self,
        repository: &str,
        number: u64,
        body: &str,
    ) -> Result<u64, GitHubError> {
        let (owner, repo) = split(repository);
        let n = number.to_string();
        let value = self
            .call(
                repository,
                Method::POST,
                &["repos", owner, repo, "issues", &n, "comments"],
                &[],
                Some(&json!({ "body": body })),
            )
            .await?;
        Ok(value.get("id").and_then(Value::as_u64).unwrap_or_default())
    }

    pub async fn update_comment(
        &self,
        repository: &str,
        id: u64,
        body: &str,
    ) -> Result<(), GitHubError> {
        let (owner, repo) = split(repository);
        let id = id.to_string();
        self.call(
            repository,
            Method::PATCH,
            &["repos", owner, repo, "issues", "comments", &id],
            &[],
            Some(&json!({ "body": body })),
        )
        .await
        .map(drop)
    }

    pub async fn add_label(
        &self,
        repository: &str,
        number: u64,
        label: &str,
    ) -> Result<(), GitHubError> {
        let (owner, repo) = split(repository);
        let n = number.to_string();
        self.call(
            repository,
            Method::POST,
            &["repos", owner, repo, "issues", &n, "labels"],
            &[],
            Some(&json!({ "labels": [label] })),
        )
        .await
        .map(drop)
    }

    /// Removes a label; one that is not there counts as removed.
    pub async fn remove_label(
        &self,
        repository: &str,
        number: u64,
        label: &str,
    ) -> Result<(), GitHubError> {
        let (owner, repo) = split(repository);
        let n = number.to_string();
        match self
            .call(
                repository,
                Method::DELETE,
                &["repos", owner, repo, "issues", &n, "labels", label],
                &[],
                None,
            )
            .await
        {
            Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Whether `user` may write to the repository (admin, maintain or write).
    pub async fn can_write(&self, repository: &str, user: &str) -> Result<bool, GitHubError> {
        let (owner, repo) = split(repository);
        let value = match self
            .call(
                repository,
                Method::GET,
                &["repos", owner, repo, "collaborators", user, "permission"],
                &[],
                None,
            )
            .await
        {
            Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => return Ok(false),
            other => other?,
        };
        let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
        Ok(matches!(field("permission"), "admin" | "write")
            || matches!(field("role_name"), "admin" | "maintain" | "write"))
    }

    /// The newest deployment of `git_ref` in `environment`, if any.
    pub async fn find_deployment(
        &self,
        repository: &str,
        environment: &str,
        git_ref: &str,
    ) -> Result<Option<u64>, GitHubError> {
        let (owner, repo) = split(repository);
        let value = self
            .call(
                repository,
                Method::GET,
                &["repos", owner, repo, "deployments"],
                &[("environment", environment), ("per_page", "100")],
                None,
            )
            .await?;
        let deployments: Vec<Deployment> =
            serde_json::from_value(value).map_err(|err| GitHubError::Status {
                status: StatusCode::OK,
                method: Method::GET,
                path: format!("/repos/{repository}/deployments"),
                message: format!("unexpected deployment list: {err}"),
            })?;
        Ok(deployments
            .into_iter()
            .filter(|d| d.git_ref == git_ref)
            .map(|d| d.id)
            .max())
    }

    pub async fn create_deployment(
        &self,
        repository: &str,
        git_ref: &str,
        environment: &str,
        description: &str,
        installation: &str,
    ) -> Result<u64, GitHubError> {
        let (owner, repo) = split(repository);
        let value = self
            .call(
                repository,
                Method::POST,
                &["repos", owner, repo, "deployments"],
                &[],
                Some(&json!({
                    "ref": git_ref,
                    "task": "deploy",
                    "environment": environment,
                    "description": description,
                    "transient_environment": true,
                    "production_environment": false,
                    "auto_merge": false,
                    "required_contexts": [],
                    "payload": { "installation": installation },
                })),
            )
            .await?;
        value
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| GitHubError::Status {
                status: StatusCode::ACCEPTED,
                method: Method::POST,
                path: format!("/repos/{repository}/deployments"),
                message: value
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no deployment was created")
                    .to_string(),
            })
    }

    pub async fn create_deployment_status(
        &self,
        repository: &str,
        deployment: u64,
        state: &str,
        environment_url: Option<&str>,
        description: &str,
    ) -> Result<(), GitHubError> {
        let (owner, repo) = split(repository);
        let id = deployment.to_string();
        let mut body = json!({ "state": state, "description": description });
        if let Some(url) = environment_url {
            body["environment_url"] = json!(url);
        }
        self.call(
            repository,
            Method::POST,
            &["repos", owner, repo, "deployments", &id, "statuses"],
            &[],
            Some(&body),
        )
        .await
        .map(drop)
    }

    /// The state of the newest status of a deployment, if it has any.
    pub async fn latest_deployment_state(
        &self,
        repository: &str,
        deployment: u64,
    ) -> Result<Option<String>, GitHubError> {
        let (owner, repo) = split(repository);
        let id = deployment.to_string();
        let value = self
            .call(
                repository,
                Method::GET,
                &["repos", owner, repo, "deployments", &id, "statuses"],
                &[("per_page", "1")],
                None,
            )
            .await?;
        let statuses = value.as_array().ok_or_else(|| GitHubError::Status {
            status: StatusCode::OK,
            method: Method::GET,
            path: format!("/repos/{repository}/deployments/{deployment}/statuses"),
            message: "unexpected status list".into(),
        })?;
        Ok(statuses
            .first()
            .and_then(|s| s.get("state"))
            .and_then(Value::as_str)
            .map(String::from))
    }

    pub async fn create_commit_status(
        &self,
        repository: &str,
        sha: &str,
        state: &str,
        target_url: Option<&str>,
        description: &str,
        context: &str,
    ) -> Result<(), GitHubError> {
        let (owner, repo) = split(repository);
        let mut body = json!({ "state": state, "description": description, "context": context });
        if let Some(url) = target_url {
            body["target_url"] = json!(url);
        }
        self.call(
            repository,
            Method::POST,
            &["repos", owner, repo, "statuses", sha],
            &[],
            Some(&body),
        )
        .await
        .map(drop)
    }
}

fn split(repository: &str) -> (&str, &str) {
    repository.split_once('/').unwrap_or(("", repository))
}

/// The wait before attempt `attempt + 1` (the shared policy).
fn backoff(attempt: u32) -> Duration {
    crate::adapters::backoff::http()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(Duration::from_secs(60))
}

/// How long GitHub asks us to wait, when the answer is a rate limit: 429,
/// or 403 with `Retry-After`, an exhausted `x-ratelimit-remaining`, or a
/// body that names a secondary rate limit (GitHub sends those without
/// headers; its advice is then to wait at least a minute, backing off).
pub fn rate_limit_wait(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    attempt: u32,
) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let retry_after = header("retry-after");
    let exhausted = header("x-ratelimit-remaining") == Some(0);
    let secondary = body.to_ascii_lowercase().contains("rate limit");
    let limited = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN && (retry_after.is_some() || exhausted || secondary));
    if !limited {
        return None;
    }
    if let Some(secs) = retry_after {
        return Some(Duration::from_secs(secs));
    }
    if exhausted && let Some(reset) = header("x-ratelimit-reset") {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        return Some(Duration::from_secs(
            reset.saturating_sub(now).saturating_add(1),
        ));
    }
    Some(Duration::from_secs(
        60 * 2u64.pow(attempt.saturating_sub(1).min(4)),
    ))
}

/// The `rel="next"` target of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        is_next.then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_wins() {
        let h = headers(&[("retry-after", "3".into())]);
        assert_eq!(
            rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &h, "", 1),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &h, "", 1),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn exhausted_quota_waits_for_the_reset() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let h = headers(&[
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", (now + 30).to_string()),
        ]);
        let wait = rate_limit_wait(StatusCode::FORBIDDEN, &h, "", 1).unwrap();
        assert!((29..=32).contains(&wait.as_secs()), "{wait:?}");
    }

    #[test]
    fn secondary_limit_without_headers_backs_off_from_a_minute() {
        let h = HeaderMap::new();
        assert_eq!(
            rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &h, "", 1),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &h, "", 3),
            Some(Duration::from_secs(240))
        );
    }

    #[test]
    fn a_secondary_limit_403_without_headers_waits_a_minute() {
        let body = r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}"#;
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &HeaderMap::new(), body, 1),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &HeaderMap::new(), body, 2),
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn next_page_comes_from_the_link_header() {
        let link = r#"<https://api.github.com/repositories/1/issues/2/comments?per_page=100&page=2>; rel="next", <https://api.github.com/repositories/1/issues/2/comments?per_page=100&page=5>; rel="last""#;
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://api.github.com/repositories/1/issues/2/comments?per_page=100&page=2")
        );
        assert_eq!(
            next_link(r#"<https://x/y?page=1>; rel="prev", <https://x/y?page=1>; rel="first""#),
            None
        );
    }

    #[test]
    fn a_plain_forbidden_is_not_a_rate_limit() {
        let h = headers(&[("x-ratelimit-remaining", "4000".into())]);
        assert_eq!(rate_limit_wait(StatusCode::FORBIDDEN, &h, "", 1), None);
        assert_eq!(rate_limit_wait(StatusCode::NOT_FOUND, &h, "", 1), None);
    }
}
