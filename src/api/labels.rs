//! Label and annotation keys shared by the controller and the adapters.

/// On every child object and namespace: the name of the owning TestInstallation.
pub const INSTALLATION: &str = "ephemera.dev/installation";
/// `app.kubernetes.io/managed-by` value on everything the controller creates.
pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "ephemera";
/// The component within an installation (`app`, `database`, `filestore`, ...).
pub const COMPONENT: &str = "app.kubernetes.io/component";

/// Who asked for an installation (label, so capacity can count per requester).
pub const REQUESTER: &str = "ephemera.dev/requester";
/// Where the request came from: `github`, `chat`, `gitops` or `kubectl`.
pub const SOURCE: &str = "ephemera.dev/source";
/// Annotations set by the GitHub adapter.
pub const PR_URL: &str = "ephemera.dev/pr-url";
pub const HEAD_SHA: &str = "ephemera.dev/head-sha";
