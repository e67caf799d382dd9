//! The `credentials` Secret in every installation's namespace: the app's
//! generated admin and user logins. Only the controller writes it; adapters
//! read it to send the credentials in a direct message to the requester.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};

/// Name of the Secret in the installation's namespace.
pub const SECRET_NAME: &str = "credentials";

pub const ADMIN_USER: &str = "adminUser";
pub const ADMIN_PASSWORD: &str = "adminPassword";
pub const USER: &str = "user";
pub const USER_PASSWORD: &str = "userPassword";

/// Logins of one installation. `Debug` never shows the passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub admin_user: String,
    pub admin_password: String,
    pub user: String,
    pub user_password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("admin_user", &self.admin_user)
            .field("admin_password", &"<redacted>")
            .field("user", &self.user)
            .field("user_password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Reads the four keys; `None` when any is missing or not UTF-8.
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let get = |key: &str| {
            data.get(key)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
        };
        Some(Self {
            admin_user: get(ADMIN_USER)?,
            admin_password: get(ADMIN_PASSWORD)?,
            user: get(USER)?,
            user_password: get(USER_PASSWORD)?,
        })
    }

    /// The Secret's `data`.
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        [
            (ADMIN_USER, &self.admin_user),
            (ADMIN_PASSWORD, &self.admin_password),
            (USER, &self.user),
            (USER_PASSWORD, &self.user_password),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_passwords() {
        let creds = Credentials {
            admin_user: "admin".into(),
            admin_password: "s3cret-admin".into(),
            user: "user".into(),
            user_password: "s3cret-user".into(),
        };
        let shown = format!("{creds:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("admin"));
    }

    #[test]
    fn round_trips_through_secret_data() {
        let creds = Credentials {
            admin_user: "admin".into(),
            admin_password: "a".into(),
            user: "user".into(),
            user_password: "b".into(),
        };
        let secret = Secret {
            data: Some(creds.to_data()),
            ..Default::default()
        };
        assert_eq!(Credentials::from_secret(&secret), Some(creds));
        assert_eq!(Credentials::from_secret(&Secret::default()), None);
    }
}
