//! Thin adapters between people and TestInstallations. They only create,
//! patch or delete TestInstallations and watch their status; they never touch
//! the objects an installation is made of.

pub mod chat;
pub mod github;
pub mod notify;
