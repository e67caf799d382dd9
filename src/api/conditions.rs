//! Condition types and reasons of `TestInstallation.status.conditions`.
//! `Ready`, `Reconciling` and `Stalled` follow kstatus; the others report one
//! part of the installation each.

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const DATABASE_READY: &str = "DatabaseReady";
pub const FILESTORE_READY: &str = "FilestoreReady";
pub const APP_READY: &str = "AppReady";
pub const INGRESS_READY: &str = "IngressReady";
pub const DATA_SEEDED: &str = "DataSeeded";
pub const UPGRADED: &str = "Upgraded";
