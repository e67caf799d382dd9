//! Outbound calls to the chat platforms' APIs: retries on 429 (and, for
//! idempotent calls, 5xx) with backoff, honouring `Retry-After`. A new
//! message is never posted again blind.

use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode, header::RETRY_AFTER};

/// Attempts per call, the first included.
const MAX_ATTEMPTS: u32 = 5;
/// The longest single wait, whatever `Retry-After` asks for.
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        what: &'static str,
        status: StatusCode,
        body: String,
    },
    #[error("{what}: {source}")]
    Transport {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: {message}")]
    Refused { what: &'static str, message: String },
}

/// A client with timeouts suitable for chat APIs.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .user_agent(concat!("ephemera-chat/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a reqwest client with rustls always builds")
}

/// Whether a call may be sent again after an answer that leaves open
/// whether it was carried out (a 5xx, a timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Reads, edits, opening a DM: doing it twice is doing it once.
    Idempotent,
    /// A new message: sent again only when it certainly was not carried out
    /// (429, or no connection); otherwise the caller looks for it first.
    Once,
}

/// Sends the request `make` builds, again after a pause (the shared backoff
/// policy, or `Retry-After`) when the platform answers 429, and for
/// idempotent calls also on 5xx or when it cannot be reached; other answers
/// are returned as they are, non-success ones as [`ApiError::Status`].
pub async fn send(
    what: &'static str,
    repeat: Repeat,
    make: impl Fn() -> RequestBuilder,
) -> Result<Response, ApiError> {
    let mut delays = crate::adapters::backoff::http();
    let mut attempt = 1;
    loop {
        let backoff = delays.next().unwrap_or(MAX_WAIT);
        let wait = match make().send().await {
            Ok(response)
                if response.status() == StatusCode::TOO_MANY_REQUESTS
                    || (repeat == Repeat::Idempotent && retryable(response.status())) =>
            {
                let wait = retry_after(&response).unwrap_or(backoff);
                if attempt >= MAX_ATTEMPTS {
                    return Err(status_error(what, response).await);
                }
                tracing::info!(what, status = %response.status(), ?wait, attempt, "retrying");
                wait
            }
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => return Err(status_error(what, response).await),
            Err(source)
                if (source.is_connect()
                    || (repeat == Repeat::Idempotent && source.is_timeout()))
                    && attempt < MAX_ATTEMPTS =>
            {
                tracing::info!(what, error = %source, ?backoff, attempt, "retrying");
                backoff
            }
            Err(source) => return Err(ApiError::Transport { what, source }),
        };
        tokio::time::sleep(wait.min(MAX_WAIT)).await;
        attempt += 1;
    }
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `Retry-After` in seconds (the HTTP-date form is not used by these APIs).
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

async fn status_error(what: &'static str, response: Response) -> ApiError {
    let status = response.status();
    let mut body = response.text().await.unwrap_or_default();
    if let Some((cut, _)) = body.char_indices().nth(300) {
        body.truncate(cut);
    }
    ApiError::Status { what, status, body }
}
