//! What the Secrets store keeps of a Secret's data: the values of the
//! Secrets holding generated passwords (a pass reads them to keep the
//! passwords when a Secret is rewritten, a run to hide them in its output),
//! nothing of the others. Kept as one boxed slice: a `BTreeMap` of even one
//! entry takes over half a kilobyte, and there are four such Secrets to an
//! installation.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::ResourceExt;

use super::build::{database, filestore, secrets::GENERATED_SECRET};
use crate::api::credentials;

/// The Secrets whose values a pass reads.
pub const GENERATED_SECRETS: [&str; 4] = [
    GENERATED_SECRET,
    credentials::SECRET_NAME,
    database::NAME,
    filestore::NAME,
];

/// A key and its value.
type Value = (Box<str>, Box<[u8]>);

#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretValues(Box<[Value]>);

impl SecretValues {
    /// The values of `secret` if it is one of `GENERATED_SECRETS`.
    pub fn of(secret: &Secret) -> Self {
        if !GENERATED_SECRETS.contains(&secret.name_any().as_str()) {
            return Self::default();
        }
        let values = secret.data.iter().flatten();
        Self(
            values
                .map(|(key, value)| (key.as_str().into(), value.0.as_slice().into()))
                .collect(),
        )
    }

    /// The values as a Secret's `data`; `None` when none are kept.
    pub fn to_data(&self) -> Option<BTreeMap<String, ByteString>> {
        if self.0.is_empty() {
            return None;
        }
        Some(
            self.0
                .iter()
                .map(|(key, value)| (key.to_string(), ByteString(value.to_vec())))
                .collect(),
        )
    }
}

/// Keys only: values never reach a log.
impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.0.iter().map(|(key, _)| key))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.name = Some(name.into());
        secret.data = Some(BTreeMap::from([
            ("password".to_string(), ByteString(b"s3cret".to_vec())),
            ("user".to_string(), ByteString(b"app".to_vec())),
        ]));
        secret
    }

    #[test]
    fn only_generated_secrets_keep_their_values() {
        let kept = SecretValues::of(&secret(database::NAME));
        assert_eq!(kept.to_data(), secret(database::NAME).data);
        let dropped = SecretValues::of(&secret("app-env"));
        assert_eq!(dropped.to_data(), None);
    }

    #[test]
    fn values_never_show_in_debug_output() {
        let shown = format!("{:?}", SecretValues::of(&secret(GENERATED_SECRET)));
        assert!(
            shown.contains("password") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
