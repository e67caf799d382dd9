//! Thin adapters between people and TestInstallations. They only create,
//! patch or delete TestInstallations and watch their status; they never touch
//! the objects an installation is made of.

pub mod backoff;
pub mod chat;
pub mod delivery;
pub mod finalizer;
pub mod github;
pub mod notify;
pub mod profile_rules;
pub mod runs;
pub mod secret;
