//! Installation names derived from a repository and a pull-request number.
//!
//! The name is the installation's namespace suffix and DNS label, so it must
//! match `^[a-z]([-a-z0-9]*[a-z0-9])?$` and be at most 40 characters (the
//! TestInstallation CEL rule). The same PR always maps to the same name, which
//! is what makes create-or-patch idempotent.

use sha2::{Digest, Sha256};

/// Longest name the TestInstallation API accepts.
pub const MAX_LEN: usize = 40;

/// `<repo>-pr-<number>`, lowercased and cleaned; when that is too long the
/// repository part is truncated and a short hash of `owner/repo#number` keeps
/// names of different long repositories apart.
pub fn installation_name(repository: &str, number: u64) -> String {
    let repo = repository.rsplit('/').next().unwrap_or(repository);
    let mut base = dns_part(repo);
    if base.is_empty() {
        base.push_str("repo");
    }
    if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
        base.insert_str(0, "r-");
    }
    let suffix = format!("-pr-{number}");
    if base.len() + suffix.len() <= MAX_LEN {
        return format!("{base}{suffix}");
    }
    let hash = short_hash(&format!("{}#{number}", repository.to_ascii_lowercase()));
    let room = MAX_LEN - suffix.len() - hash.len() - 1;
    let mut head: String = base.chars().take(room).collect();
    while head.ends_with('-') {
        head.pop();
    }
    format!("{head}-{hash}{suffix}")
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

/// A label value naming a GitHub user: `github.<login>`, restricted to the
/// characters label values allow and to 63 characters.
pub fn requester_label(login: &str) -> String {
    let cleaned: String = login
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut value = format!("github.{cleaned}");
    value.truncate(63);
    while value.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        value.pop();
    }
    value
}

/// `owner.repo` as a label value (at most 63 characters, valid characters).
pub fn repository_label(repository: &str) -> String {
    let mut value: String = repository
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '.'
            }
        })
        .collect();
    if value.len() > 63 {
        let hash = short_hash(repository);
        value.truncate(63 - hash.len() - 1);
        value = format!("{value}-{hash}");
    }
    while value.starts_with(|c: char| !c.is_ascii_alphanumeric()) {
        value.remove(0);
    }
    while value.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        value.pop();
    }
    value
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
    fn short_names_are_readable() {
        assert_eq!(installation_name("acme/webapp", 42), "webapp-pr-42");
        assert_eq!(
            installation_name("mattermost/mattermost", 31337),
            "mattermost-pr-31337"
        );
        assert_eq!(installation_name("Acme/My_App.js", 7), "my-app-js-pr-7");
    }

    #[test]
    fn odd_repository_names_still_give_dns_labels() {
        assert_eq!(installation_name("acme/2048", 1), "r-2048-pr-1");
        assert_eq!(installation_name("acme/---", 1), "repo-pr-1");
        assert_eq!(installation_name("acme/_.x", 1), "x-pr-1");
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
