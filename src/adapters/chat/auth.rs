//! Authentication of slash-command requests, done on the raw request before
//! anything is parsed: Mattermost's static command tokens and Slack's signed
//! requests, plus a seen-set of trigger ids against replays.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::Secret;

/// Slack's allowed clock difference for `X-Slack-Request-Timestamp`.
pub const SLACK_WINDOW_SECS: u64 = 300;

/// Why a request was refused. Only logged, never sent back in detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials in the request")]
    Missing,
    #[error("wrong token")]
    WrongToken,
    #[error("bad signature")]
    BadSignature,
    #[error("timestamp outside the allowed window")]
    Stale,
    #[error("trigger id seen before (replay)")]
    Replayed,
}

impl AuthError {
    pub fn metric_label(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::WrongToken => "wrong_token",
            AuthError::BadSignature => "bad_signature",
            AuthError::Stale => "stale",
            AuthError::Replayed => "replayed",
        }
    }
}

/// Checks `Authorization: Token <token>` against every configured token in
/// constant time. Both sides are hashed first so the comparison does not
/// depend on their lengths either.
pub fn check_mattermost_token(
    authorization: Option<&[u8]>,
    tokens: &[Secret],
) -> Result<(), AuthError> {
    let header = authorization.ok_or(AuthError::Missing)?;
    let given = header.strip_prefix(b"Token ").ok_or(AuthError::Missing)?;
    let given = Sha256::digest(given.trim_ascii());
    let mut matched = subtle::Choice::from(0);
    for token in tokens {
        let expected = Sha256::digest(token.expose().as_bytes());
        matched |= expected.as_slice().ct_eq(given.as_slice());
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(AuthError::WrongToken)
    }
}

/// Checks Slack's `v0` signature: `X-Slack-Signature` must be
/// `v0=hex(HMAC-SHA256(secret, "v0:{timestamp}:{body}"))` and the timestamp
/// within five minutes of `now` (unix seconds).
pub fn check_slack_signature(
    secret: &Secret,
    timestamp: Option<&[u8]>,
    signature: Option<&[u8]>,
    body: &[u8],
    now: u64,
) -> Result<(), AuthError> {
    let (timestamp, signature) = match (timestamp, signature) {
        (Some(t), Some(s)) => (t, s),
        _ => return Err(AuthError::Missing),
    };
    let ts: u64 = std::str::from_utf8(timestamp)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(AuthError::Stale)?;
    if now.abs_diff(ts) > SLACK_WINDOW_SECS {
        return Err(AuthError::Stale);
    }
    let hex_sig = signature
        .strip_prefix(b"v0=")
        .ok_or(AuthError::BadSignature)?;
    let sig = hex::decode(hex_sig).map_err(|_| AuthError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"v0:");
    mac.update(timestamp);
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| AuthError::BadSignature)
}

/// The signature Slack would send; used by tests and tools.
pub fn slack_signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Trigger ids seen in the last `window` seconds. Bounded: when full, the
/// oldest entries are forgotten first.
pub struct ReplayGuard {
    window: u64,
    capacity: usize,
    inner: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    at: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
}

impl ReplayGuard {
    pub fn new(window: u64, capacity: usize) -> Self {
        Self {
            window,
            capacity,
            inner: Mutex::new(Seen::default()),
        }
    }

    /// Records `id`; `Err(Replayed)` when it was seen within the window.
    pub fn first_use(&self, id: &str, now: u64) -> Result<(), AuthError> {
        let mut seen = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((at, _)) = seen.order.front() {
            if now.saturating_sub(*at) <= self.window && seen.order.len() < self.capacity {
                break;
            }
            let (_, old) = seen.order.pop_front().expect("front exists");
            seen.at.remove(&old);
        }
        if seen.at.contains_key(id) {
            return Err(AuthError::Replayed);
        }
        seen.at.insert(id.to_string(), now);
        seen.order.push_back((now, id.to_string()));
        Ok(())
    }
}

/// Annotation on an installation: the trigger ids of the commands that
/// changed it, with when (unix seconds), kept for [`DURABLE_WINDOW_SECS`].
/// Written in the same patch as the change, so a replay of a captured
/// request is refused after an adapter restart and by every replica.
pub const ANNOTATION_TRIGGERS: &str = "ephemera.dev/chat-trigger-ids";
/// How long a trigger id is remembered on the installation: twice Slack's
/// window, like the in-process guard.
pub const DURABLE_WINDOW_SECS: u64 = 2 * SLACK_WINDOW_SECS;

/// Whether the annotation value `recorded` names `trigger_id`.
pub fn trigger_recorded(recorded: Option<&str>, trigger_id: &str) -> bool {
    !trigger_id.is_empty()
        && recorded
            .and_then(|r| serde_json::from_str::<HashMap<String, u64>>(r).ok())
            .is_some_and(|ids| ids.contains_key(trigger_id))
}

/// The annotation value with `trigger_id` added at `now` and ids older than
/// the window left out.
pub fn record_trigger(recorded: Option<&str>, trigger_id: &str, now: u64) -> String {
    let mut ids: std::collections::BTreeMap<String, u64> = recorded
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default();
    ids.retain(|_, at| now.saturating_sub(*at) <= DURABLE_WINDOW_SECS);
    if !trigger_id.is_empty() {
        ids.insert(trigger_id.to_string(), now);
    }
    serde_json::to_string(&ids).expect("a map of strings to numbers serializes")
}

/// Slack's `ssl_check=1` request (sent when a command's URL is saved): a
/// form with `ssl_check=1` and no command. It is answered 200 and changes
/// nothing.
pub fn is_ssl_check(body: &[u8]) -> bool {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    pairs.iter().any(|(k, v)| k == "ssl_check" && v == "1")
        && !pairs.iter().any(|(k, _)| k == "command")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        let dir = std::env::temp_dir().join(format!("ephemera-auth-{}-{s}", std::process::id()));
        std::fs::write(&dir, s).unwrap();
        super::super::config::SecretSource::File(dir)
            .read()
            .unwrap()
    }

    #[test]
    fn mattermost_tokens() {
        let tokens = [secret("old-token"), secret("new-token")];
        assert_eq!(
            check_mattermost_token(Some(b"Token new-token"), &tokens),
            Ok(())
        );
        assert_eq!(
            check_mattermost_token(Some(b"Token old-token"), &tokens),
            Ok(())
        );
        assert_eq!(
            check_mattermost_token(Some(b"Token new-toke"), &tokens),
            Err(AuthError::WrongToken)
        );
        assert_eq!(
            check_mattermost_token(Some(b"Bearer new-token"), &tokens),
            Err(AuthError::Missing)
        );
        assert_eq!(
            check_mattermost_token(None, &tokens),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn slack_signatures() {
        let key = secret("8f742231b10e8888abcd99yyyzzz85a5");
        let body = b"token=x&team_id=T1&text=list";
        let now = 1_700_000_000;
        let sig = slack_signature("8f742231b10e8888abcd99yyyzzz85a5", now, body);
        let ts = now.to_string();
        let ok = check_slack_signature(&key, Some(ts.as_bytes()), Some(sig.as_bytes()), body, now);
        assert_eq!(ok, Ok(()));
        // Within the window on either side.
        assert_eq!(
            check_slack_signature(
                &key,
                Some(ts.as_bytes()),
                Some(sig.as_bytes()),
                body,
                now + 300
            ),
            Ok(())
        );
        assert_eq!(
            check_slack_signature(
                &key,
                Some(ts.as_bytes()),
                Some(sig.as_bytes()),
                body,
                now + 301
            ),
            Err(AuthError::Stale)
        );
        let tampered = b"token=x&team_id=T1&text=list+--all";
        assert_eq!(
            check_slack_signature(
                &key,
                Some(ts.as_bytes()),
                Some(sig.as_bytes()),
                tampered,
                now
            ),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            check_slack_signature(&key, Some(ts.as_bytes()), Some(b"v0=zz"), body, now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            check_slack_signature(&key, None, Some(sig.as_bytes()), body, now),
            Err(AuthError::Missing)
        );
        assert_eq!(
            check_slack_signature(&key, Some(b"soon"), Some(sig.as_bytes()), body, now),
            Err(AuthError::Stale)
        );
    }

    #[test]
    fn trigger_ids_on_the_installation_expire_after_the_window() {
        let one = record_trigger(None, "t1", 1000);
        assert!(trigger_recorded(Some(&one), "t1"));
        assert!(!trigger_recorded(Some(&one), "t2"));
        assert!(!trigger_recorded(Some(&one), ""));
        assert!(!trigger_recorded(Some("garbage"), "t1"));
        let two = record_trigger(Some(&one), "t2", 1000 + DURABLE_WINDOW_SECS + 1);
        assert!(trigger_recorded(Some(&two), "t2"));
        assert!(!trigger_recorded(Some(&two), "t1"), "{two}");
    }

    #[test]
    fn ssl_check_is_recognised() {
        assert!(is_ssl_check(b"ssl_check=1&token=abc"));
        assert!(!is_ssl_check(
            b"ssl_check=1&command=%2Ftestenv&text=delete+x"
        ));
        assert!(!is_ssl_check(b"command=%2Ftestenv"));
    }

    #[test]
    fn replay_guard_refuses_repeats_within_the_window_and_stays_bounded() {
        let guard = ReplayGuard::new(600, 3);
        assert_eq!(guard.first_use("a", 1000), Ok(()));
        assert_eq!(guard.first_use("a", 1001), Err(AuthError::Replayed));
        assert_eq!(guard.first_use("b", 1002), Ok(()));
        // Forgotten once outside the window.
        assert_eq!(guard.first_use("a", 1700), Ok(()));
        for id in ["c", "d", "e", "f"] {
            guard.first_use(id, 1701).unwrap();
        }
        assert!(guard.inner.lock().unwrap().at.len() <= 3);
    }
}
