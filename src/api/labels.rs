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
/// On a TestRun's Job and pod: the name of the TestRun.
pub const RUN: &str = "ephemera.dev/run";

/// Where the request came from: `github`, `chat`, `gitops` or `kubectl`.
pub const SOURCE: &str = "ephemera.dev/source";
/// A new value (any: a timestamp by convention) runs a reconcile pass at
/// once, for a person who fixed what stalled an installation (as Flux's
/// `reconcile.fluxcd.io/requestedAt`). Other annotations never run one.
pub const RECONCILE_REQUESTED_AT: &str = "ephemera.dev/reconcile-requested-at";
/// Annotations set by the GitHub adapter.
pub const PR_URL: &str = "ephemera.dev/pr-url";
pub const HEAD_SHA: &str = "ephemera.dev/head-sha";

/// Turns any text into a valid label value: characters other than
/// `[A-Za-z0-9_.-]` become `_`, the ends are alphanumeric, and a value longer
/// than 63 characters is cut and given a short hash of the whole text, so
/// two long texts that share a beginning stay apart.
pub fn label_value(raw: &str) -> String {
    use sha2::{Digest, Sha256};
    const MAX: usize = 63;
    let mapped: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.len() <= MAX {
        return trimmed.to_string();
    }
    let hash = hex::encode(&Sha256::digest(raw.as_bytes())[..4]);
    let head =
        trimmed[..MAX - hash.len() - 1].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{head}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_valid_and_long_ones_stay_distinct() {
        assert_eq!(label_value("slack.T0001.U/02 x"), "slack.T0001.U_02_x");
        assert_eq!(label_value("-x-"), "x");
        assert_eq!(label_value("github.some-user"), "github.some-user");
        let a = label_value(&format!("{}a", "x".repeat(80)));
        let b = label_value(&format!("{}b", "x".repeat(80)));
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.ends_with(|c: char| c.is_ascii_alphanumeric()));
    }
}
