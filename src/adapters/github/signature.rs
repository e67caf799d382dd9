//! `X-Hub-Signature-256`: `sha256=` + hex HMAC-SHA256 of the raw body, keyed
//! with the webhook secret. Several secrets may be active at once so a secret
//! can be rotated without refusing deliveries.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::config::Secret;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Hub-Signature-256 is missing")]
    Missing,
    #[error("X-Hub-Signature-256 is not of the form sha256=<64 hex digits>")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body with any configured webhook secret")]
    Mismatch,
}

/// Checks `header` against `body` with each secret; the comparison is
/// constant-time (`verify_slice`).
pub fn verify(secrets: &[Secret], header: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    if expected.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    for secret in secrets {
        let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(body);
        if mac.verify_slice(&expected).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// The header value GitHub would send for `body` (used by tests and tools).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn secrets(values: &[&str]) -> Vec<Secret> {
        values.iter().map(|v| Secret::new(v.to_string())).collect()
    }

    #[test]
    fn githubs_documented_test_vector() {
        assert_eq!(sign("It's a Secret to Everybody", b"Hello, World!"), VECTOR);
        let s = secrets(&["It's a Secret to Everybody"]);
        assert_eq!(verify(&s, Some(VECTOR), b"Hello, World!"), Ok(()));
    }

    #[test]
    fn any_active_secret_is_accepted_for_rotation() {
        let s = secrets(&["new secret", "It's a Secret to Everybody"]);
        assert_eq!(verify(&s, Some(VECTOR), b"Hello, World!"), Ok(()));
    }

    #[test]
    fn refuses_missing_malformed_and_forged() {
        let s = secrets(&["It's a Secret to Everybody"]);
        assert_eq!(
            verify(&s, None, b"Hello, World!"),
            Err(SignatureError::Missing)
        );
        for bad in ["", "sha1=abc", "sha256=zz", "sha256=abcd", &VECTOR[..70]] {
            assert_eq!(
                verify(&s, Some(bad), b"Hello, World!"),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            verify(&s, Some(VECTOR), b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
        let other = secrets(&["another secret"]);
        assert_eq!(
            verify(&other, Some(VECTOR), b"Hello, World!"),
            Err(SignatureError::Mismatch)
        );
    }
}
