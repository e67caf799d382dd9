//! The one type both adapters keep secret values in (tokens, signing
//! secrets, keys): `secrecy`'s string, zeroed when dropped, never shown by
//! `Debug`, and only readable through [`Secret::expose`].

use secrecy::{ExposeSecret, SecretString};

#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(SecretString::from(value))
    }

    /// The value, for the one place that sends or checks it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.expose().as_bytes().ct_eq(other.expose().as_bytes()))
    }
}

impl Eq for Secret {}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2-token".into());
        assert_eq!(secret.expose(), "hunter2-token");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret, Secret::new("hunter2-token".into()));
    }
}
