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

/// The Secret that keeps a second copy of every generated value, so a
/// hand-deleted `credentials`, `database` or `filestore` Secret comes back
/// with the same values (and a deleted copy is made again from them).
pub const GENERATED_SECRET: &str = "ephemera-generated";
const DATABASE_PASSWORD_COPY: &str = "databasePassword";
const FILESTORE_ACCESS_COPY: &str = "filestoreAccessKey";
const FILESTORE_SECRET_COPY: &str = "filestoreSecretKey";

/// The installation's Secrets that hold generated values, as read.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoredSecrets<'a> {
    pub generated: Option<&'a Secret>,
    pub credentials: Option<&'a Secret>,
    pub database: Option<&'a Secret>,
    pub filestore: Option<&'a Secret>,
}

/// Where the values came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub secrets: GeneratedSecrets,
    /// Secrets that were missing and are written again with their values.
    pub restored: Vec<&'static str>,
}

/// Generated values that are gone with every copy: named by their Secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the generated passwords of Secret(s) {} are lost: they and their copy in Secret {GENERATED_SECRET} were deleted, and the running database, file store or app may still use the old values. Restore the Secrets from a backup, or delete this installation and create it again",
    .0.join(", ")
)]
pub struct CredentialsLost(pub Vec<&'static str>);

fn value(secret: Option<&Secret>, key: &str) -> Option<String> {
    secret
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|v| !v.is_empty())
}

impl GeneratedSecrets {
    /// Generated values are created once: on the first pass (`created` is
    /// false) the missing ones are generated; afterwards each is taken from
    /// its copy in `ephemera-generated` or from the Secret that uses it, and
    /// a value with no copy left is reported lost instead of replaced.
    /// `database`/`filestore` say whether those Secrets hold generated values
    /// (postgres or mysql; minio).
    pub fn recover(
        stored: StoredSecrets,
        created: bool,
        database: bool,
        filestore: bool,
    ) -> Result<Recovered, CredentialsLost> {
        let copy = stored.generated;
        let mut restored = vec![];
        let mut lost = vec![];
        let credentials = match (
            copy.and_then(Credentials::from_secret),
            stored.credentials.and_then(Credentials::from_secret),
        ) {
            (Some(copied), _) | (None, Some(copied)) => {
                if stored.credentials.is_none() && created {
                    restored.push(credentials::SECRET_NAME);
                }
                copied
            }
            (None, None) => {
                if created {
                    lost.push(credentials::SECRET_NAME);
                }
                Credentials {
                    admin_user: "admin".into(),
                    admin_password: generate_password(24),
                    user: "user".into(),
                    user_password: generate_password(24),
                }
            }
        };
        let mut take = |secret: &'static str,
                        in_use: bool,
                        present: bool,
                        copied: Option<String>,
                        used: Option<String>,
                        generate: &dyn Fn() -> String| {
            if in_use && !present && created {
                restored.push(secret);
            }
            copied
                .or(used)
                .or_else(|| {
                    if created && in_use {
                        lost.push(secret);
                    }
                    None
                })
                .unwrap_or_else(generate)
        };
        let database_password = take(
            "database",
            database,
            stored.database.is_some(),
            value(copy, DATABASE_PASSWORD_COPY),
            value(stored.database.filter(|_| database), DATABASE_PASSWORD_KEY),
            &|| generate_password(32),
        );
        let filestore_access_key = take(
            "filestore",
            filestore,
            stored.filestore.is_some(),
            value(copy, FILESTORE_ACCESS_COPY),
            value(stored.filestore.filter(|_| filestore), FILESTORE_ACCESS_KEY),
            &|| generate_password(20),
        );
        let filestore_secret_key = take(
            "filestore",
            false,
            true,
            value(copy, FILESTORE_SECRET_COPY),
            value(stored.filestore.filter(|_| filestore), FILESTORE_SECRET_KEY),
            &|| generate_password(40),
        );
        if !lost.is_empty() {
            lost.dedup();
            return Err(CredentialsLost(lost));
        }
        Ok(Recovered {
            secrets: Self {
                credentials,
                database_password,
                filestore_access_key,
                filestore_secret_key,
            },
            restored,
        })
    }

    /// Keeps every value that already exists in the installation's Secrets and
    /// generates the missing ones (for tests and first passes).
    pub fn reuse_or_generate(
        credentials: Option<&Secret>,
        database: Option<&Secret>,
        filestore: Option<&Secret>,
    ) -> Self {
        let stored = StoredSecrets {
            generated: None,
            credentials,
            database,
            filestore,
        };
        Self::recover(stored, false, true, true)
            .expect("nothing is lost before anything was created")
            .secrets
    }
}

/// The `ephemera-generated` Secret: a copy of every generated value.
pub fn generated_copy(input: &BuildInput) -> Secret {
    let g = input.generated;
    let mut data = g.credentials.to_data();
    for (key, v) in [
        (DATABASE_PASSWORD_COPY, &g.database_password),
        (FILESTORE_ACCESS_COPY, &g.filestore_access_key),
        (FILESTORE_SECRET_COPY, &g.filestore_secret_key),
    ] {
        data.insert(key.to_string(), ByteString(v.clone().into_bytes()));
    }
    Secret {
        metadata: meta(input, GENERATED_SECRET, "credentials"),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
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

    fn secret_of(data: BTreeMap<String, ByteString>) -> Secret {
        Secret {
            data: Some(data),
            ..Default::default()
        }
    }

    fn copy_of(g: &GeneratedSecrets) -> Secret {
        let (generated, external) = (g.clone(), super::super::ExternalSecrets::default());
        let plan = super::super::test_support::plan_with(
            Default::default(),
            crate::controller::plan::tests::profile(),
        );
        generated_copy(&super::super::test_support::input(
            &plan, &generated, &external,
        ))
    }

    #[test]
    fn a_deleted_secret_is_restored_from_the_copy_with_the_same_values() {
        let first = GeneratedSecrets::reuse_or_generate(None, None, None);
        let copy = copy_of(&first);
        let stored = StoredSecrets {
            generated: Some(&copy),
            ..Default::default()
        };
        let recovered = GeneratedSecrets::recover(stored, true, true, true).unwrap();
        assert_eq!(recovered.secrets, first);
        assert_eq!(recovered.restored, ["credentials", "database", "filestore"]);
    }

    #[test]
    fn a_deleted_copy_is_made_again_from_the_secrets_in_use() {
        let first = GeneratedSecrets::reuse_or_generate(None, None, None);
        let creds = secret_of(first.credentials.to_data());
        let db = secret_of(BTreeMap::from([(
            DATABASE_PASSWORD_KEY.to_string(),
            ByteString(first.database_password.clone().into_bytes()),
        )]));
        let stored = StoredSecrets {
            credentials: Some(&creds),
            database: Some(&db),
            ..Default::default()
        };
        let recovered = GeneratedSecrets::recover(stored, true, true, false).unwrap();
        assert_eq!(recovered.secrets.credentials, first.credentials);
        assert_eq!(recovered.secrets.database_password, first.database_password);
        assert!(recovered.restored.is_empty());
    }

    #[test]
    fn values_with_no_copy_left_are_lost_not_replaced() {
        let err =
            GeneratedSecrets::recover(StoredSecrets::default(), true, true, false).unwrap_err();
        assert_eq!(err.0, ["credentials", "database"]);
        assert!(
            err.to_string()
                .contains("delete this installation and create it again")
        );
        // Before anything was created, missing values are simply generated.
        assert!(GeneratedSecrets::recover(StoredSecrets::default(), false, true, true).is_ok());
    }
}
