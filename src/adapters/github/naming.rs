//! Installation names derived from a repository and a pull-request number.
//!
//! The name is the installation's namespace suffix and DNS label, so it must
//! match `^[a-z]([-a-z0-9]*[a-z0-9])?$` and be at most 40 characters (the
//! TestInstallation CEL rule). The same PR always maps to the same name, which
//! is what makes create-or-patch idempotent, and PRs of different
//! repositories never share one.

use sha2::{Digest, Sha256};

/// Longest name the TestInstallation API accepts.
pub const MAX_LEN: usize = 40;

/// `<repo>-<hash>-pr-<number>`: the repository name lowercased and cleaned,
/// a short hash of `owner/repo` (so `org-a/app#5` and `org-b/app#5` never
/// share a name), and the number. When that is too long, the repository
/// part is cut.
pub fn installation_name(repository: &str, number: u64) -> String {
    let repo = repository.rsplit('/').next().unwrap_or(repository);
    let mut base = dns_part(repo);
    if base.is_empty() {
        base.push_str("repo");
    }
    if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
        base.insert_str(0, "r-");
    }
    let suffix = format!(
        "-{}-pr-{number}",
        short_hash(&repository.to_ascii_lowercase())
    );
    let room = MAX_LEN.saturating_sub(suffix.len());
    let mut head: String = base.chars().take(room).collect();
    while head.ends_with('-') {
        head.pop();
    }
    format!("{head}{suffix}")
}

/// Lowercase letters and digits, every other run of characters becomes one
/// `-`, no `-` at either end.
fn dns_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..3])
}

/// A label value naming a GitHub user: `github.<login>`.
pub fn requester_label(login: &str) -> String {
    crate::api::labels::label_value(&format!("github.{login}"))
}

/// `owner.repo` as a label value.
pub fn repository_label(repository: &str) -> String {
    crate::api::labels::label_value(&repository.replace('/', "."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_valid(name: &str) -> bool {
        let bytes = name.as_bytes();
        !name.is_empty()
            && name.len() <= MAX_LEN
            && bytes[0].is_ascii_lowercase()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    }

    fn is_label_value(value: &str) -> bool {
        value.len() <= 63
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    }

    #[test]
    fn short_names_are_readable_and_distinct_across_owners() {
        let a = installation_name("org-a/app", 5);
        let b = installation_name("org-b/app", 5);
        assert!(a.starts_with("app-") && a.ends_with("-pr-5"), "{a}");
        assert_ne!(a, b);
        assert_eq!(a, installation_name("ORG-A/App", 5), "case does not matter");
        assert!(installation_name("Acme/My_App.js", 7).starts_with("my-app-js-"));
    }

    #[test]
    fn odd_repository_names_still_give_dns_labels() {
        assert!(installation_name("acme/2048", 1).starts_with("r-2048-"));
        assert!(installation_name("acme/---", 1).starts_with("repo-"));
        assert!(installation_name("acme/_.x", 1).starts_with("x-"));
    }

    #[test]
    fn long_names_are_truncated_with_a_hash_and_stay_distinct() {
        let a = installation_name(
            "acme/a-very-long-repository-name-for-the-frontend-service",
            123456,
        );
        let b = installation_name(
            "acme/a-very-long-repository-name-for-the-frontend-services",
            123456,
        );
        assert!(is_valid(&a), "{a}");
        assert!(is_valid(&b), "{b}");
        assert_ne!(a, b);
        assert!(a.ends_with("-pr-123456"), "{a}");
        assert!(a.len() >= MAX_LEN - 1, "uses the room it has: {a}");
    }

    #[test]
    fn deterministic_and_always_valid() {
        let long = format!("o/{}", "x".repeat(60));
        let repos = [
            "o/r",
            "O/UPPER",
            "o/with--many___symbols...",
            "o/9lives",
            "o/ünïcödé-repo",
            long.as_str(),
            "o/-leading-dash-",
            "o/a-b-c-d-e-f-g-h-i-j-k-l-m-n-o-p-q-r-s-t-u-v-w-x-y-z",
        ];
        for repo in repos {
            for number in [1, 99, 123_456, u64::MAX] {
                let name = installation_name(repo, number);
                assert!(is_valid(&name), "{repo}#{number} gave {name}");
                assert_eq!(name, installation_name(repo, number));
            }
        }
    }

    #[test]
    fn requester_and_repository_labels_are_label_values() {
        assert_eq!(requester_label("octocat"), "github.octocat");
        assert_eq!(requester_label("ephemera[bot]"), "github.ephemera_bot");
        assert!(is_label_value(&requester_label(&"x".repeat(80))));
        assert_eq!(repository_label("acme/webapp"), "acme.webapp");
        let long = format!("{}/{}", "o".repeat(39), "r".repeat(100));
        assert!(is_label_value(&repository_label(&long)));
        assert_ne!(
            repository_label(&long),
            repository_label(&format!("{long}s"))
        );
    }
}
