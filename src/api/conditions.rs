//! Condition types and reasons of `TestInstallation.status.conditions`.
//! `Ready`, `Reconciling` and `Stalled` follow kstatus: `Ready` is True when
//! the installation is what its spec asks for (phase Ready, or Hibernated
//! with everything scaled to zero), `Stalled` is True in phase Failed. The
//! others report one part of the installation each. docs/gitops.md describes
//! them for users.

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const DATABASE_READY: &str = "DatabaseReady";
pub const FILESTORE_READY: &str = "FilestoreReady";
pub const APP_READY: &str = "AppReady";
pub const INGRESS_READY: &str = "IngressReady";
pub const DATA_SEEDED: &str = "DataSeeded";
pub const UPGRADED: &str = "Upgraded";
