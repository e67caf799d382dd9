//! Generated passwords (created once from a CSPRNG and then always read back
//! from their Secrets), values of Secrets an installation references, and the
//! `credentials` Secret.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use rand::RngExt;

use super::{BuildError, BuildInput, meta};
use crate::api::credentials::{self, Credentials};

/// Passwords of one installation. Generated on the first pass, then read back
/// from the `credentials`, `database` and `filestore` Secrets on every later
/// pass, so they never change. `Debug` shows no values.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedSecrets {
    pub credentials: Credentials,
    pub database_password: String,
    pub filestore_access_key: String,
    pub filestore_secret_key: String,
}

impl std::fmt::Debug for GeneratedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GeneratedSecrets { <redacted> }")
    }
}

/// Keys of the `database` Secret.
pub const DATABASE_PASSWORD_KEY: &str = "password";
/// Keys of the `filestore` Secret.
pub const FILESTORE_ACCESS_KEY: &str = "accessKey";
pub const FILESTORE_SECRET_KEY: &str = "secretKey";

impl GeneratedSecrets {
    /// Keeps every value that already exists in the installation's Secrets and
    /// generates the missing ones.
    pub fn reuse_or_generate(
        credentials: Option<&Secret>,
        database: Option<&Secret>,
        filestore: Option<&Secret>,
    ) -> Self {
        let key = |secret: Option<&Secret>, key: &str| {
            secret
                .and_then(|s| s.data.as_ref())
                .and_then(|d| d.get(key))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|v| !v.is_empty())
        };
        Self {
            credentials: credentials
                .and_then(Credentials::from_secret)
                .unwrap_or_else(|| Credentials {
                    admin_user: "admin".into(),
                    admin_password: generate_password(24),
                    user: "user".into(),
                    user_password: generate_password(24),
                }),
            database_password: key(database, DATABASE_PASSWORD_KEY)
                .unwrap_or_else(|| generate_password(32)),
            filestore_access_key: key(filestore, FILESTORE_ACCESS_KEY)
                .unwrap_or_else(|| generate_password(20)),
            filestore_secret_key: key(filestore, FILESTORE_SECRET_KEY)
                .unwrap_or_else(|| generate_password(40)),
        }
    }
}

/// A random password of `len` letters and digits from the thread-local
/// CSPRNG (ChaCha, seeded from the operating system).
pub fn generate_password(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Values of Secrets outside the installation's namespace that it references,
/// by (namespace, name), read by the controller from allowed namespaces only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ExternalSecrets(pub BTreeMap<(String, String), BTreeMap<String, String>>);

impl std::fmt::Debug for ExternalSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.keys().map(|(ns, name)| format!("{ns}/{name}")))
            .finish()
    }
}

impl ExternalSecrets {
    pub fn get(&self, namespace: &str, name: &str, key: &str) -> Result<&str, BuildError> {
        self.0
            .get(&(namespace.to_string(), name.to_string()))
            .and_then(|data| data.get(key))
            .map(String::as_str)
            .ok_or_else(|| BuildError::MissingSecretKey {
                namespace: namespace.into(),
                name: name.into(),
                key: key.into(),
            })
    }

    pub fn all(&self, namespace: &str, name: &str) -> Option<&BTreeMap<String, String>> {
        self.0.get(&(namespace.to_string(), name.to_string()))
    }
}

/// A Secret from string values.
pub fn secret(
    input: &BuildInput,
    name: &str,
    component: &str,
    data: BTreeMap<String, String>,
) -> Secret {
    Secret {
        metadata: meta(input, name, component),
        type_: Some("Opaque".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The `credentials` Secret with the app's admin and user logins.
pub fn credentials(input: &BuildInput) -> Secret {
    Secret {
        metadata: meta(input, credentials::SECRET_NAME, "credentials"),
        type_: Some("Opaque".into()),
        data: Some(input.generated.credentials.to_data()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_random_and_of_the_asked_length() {
        let a = generate_password(24);
        let b = generate_password(24);
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn existing_values_are_kept() {
        let first = GeneratedSecrets::reuse_or_generate(None, None, None);
        let creds = Secret {
            data: Some(first.credentials.to_data()),
            ..Default::default()
        };
        let db = Secret {
            data: Some(BTreeMap::from([(
                DATABASE_PASSWORD_KEY.to_string(),
                ByteString(first.database_password.clone().into_bytes()),
            )])),
            ..Default::default()
        };
        let again = GeneratedSecrets::reuse_or_generate(Some(&creds), Some(&db), None);
        assert_eq!(again.credentials, first.credentials);
        assert_eq!(again.database_password, first.database_password);
        assert_ne!(again.filestore_secret_key, first.filestore_secret_key);
        assert!(!format!("{again:?}").contains(&first.database_password));
    }
}
