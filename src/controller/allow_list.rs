//! Patterns of a profile's `allowedImages`: which image repositories the
//! creator of an installation may choose. Pure.
//!
//! A pattern is a repository with wildcards: `*` matches any characters
//! within one path segment (no `/`), `**` matches anything, `/` included.
//! `ghcr.io/acme/*` allows `ghcr.io/acme/app` but not
//! `ghcr.io/acme/team/app`; `ghcr.io/acme/**` allows both. An empty list
//! allows the profile's own image only; `**` allows every image.

/// Whether `image` (a repository without tag) matches `pattern`.
pub fn image_matches(pattern: &str, image: &str) -> bool {
    glob(pattern.as_bytes(), image.as_bytes())
}

/// Whether `image` may run under a profile whose own image is
/// `profile_image` and whose allow-list is `patterns`. The profile's image
/// is always allowed; an empty list allows nothing else (secure by
/// default: allowing any image takes an explicit `**`).
pub fn image_allowed(image: &str, profile_image: &str, patterns: &[String]) -> bool {
    image == profile_image || patterns.iter().any(|p| image_matches(p, image))
}

/// Iterative wildcard match that backtracks only to the last single star
/// (within its segment) and then to the last double star, so it runs in
/// O(len(pattern) * len(text)) whatever the input.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // (position after the star in the pattern, end of its match in the text)
    let mut single: Option<(usize, usize)> = None;
    let mut double: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            if pattern.get(p + 1) == Some(&b'*') {
                p += 2;
                double = Some((p, t));
                single = None;
            } else {
                p += 1;
                single = Some((p, t));
            }
        } else if pattern.get(p) == Some(&text[t]) {
            p += 1;
            t += 1;
        } else if let Some((after, matched)) = single.filter(|(_, m)| text[*m] != b'/') {
            single = Some((after, matched + 1));
            p = after;
            t = matched + 1;
        } else if let Some((after, matched)) = double {
            single = None;
            double = Some((after, matched + 1));
            p = after;
            t = matched + 1;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_match_within_a_segment_double_stars_across() {
        let cases = [
            ("ghcr.io/acme/app", "ghcr.io/acme/app", true),
            ("ghcr.io/acme/app", "ghcr.io/acme/app2", false),
            ("ghcr.io/acme/*", "ghcr.io/acme/app", true),
            ("ghcr.io/acme/*", "ghcr.io/acme/team/app", false),
            ("ghcr.io/acme/**", "ghcr.io/acme/team/app", true),
            ("ghcr.io/acme/**", "ghcr.io/acmeevil/app", false),
            ("ghcr.io/*/app", "ghcr.io/acme/app", true),
            ("ghcr.io/*/app", "ghcr.io/a/b/app", false),
            ("**", "docker.io/library/alpine", true),
            ("*.example.com/app", "registry.example.com/app", true),
            ("*.example.com/app", "evil.com/x.example.com/app", false),
            ("ghcr.io/acme/app-*", "ghcr.io/acme/app-", true),
            ("", "x", false),
            ("**/*", "a/b/c", true),
            ("**/x/*", "a/b/x/c", true),
            ("**/x/*", "a/b/x/c/d", false),
            ("a/*/**/z", "a/b/c/d/z", true),
        ];
        for (pattern, image, want) in cases {
            assert_eq!(image_matches(pattern, image), want, "{pattern} vs {image}");
        }
    }

    #[test]
    fn the_profile_image_is_always_allowed_an_empty_list_allows_nothing_else() {
        let list = vec!["ghcr.io/acme/*".to_string()];
        assert!(image_allowed(
            "registry.test/app",
            "registry.test/app",
            &list
        ));
        assert!(!image_allowed(
            "docker.io/library/alpine",
            "registry.test/app",
            &list
        ));
        assert!(!image_allowed(
            "docker.io/library/alpine",
            "registry.test/app",
            &[]
        ));
        assert!(image_allowed("registry.test/app", "registry.test/app", &[]));
        assert!(image_allowed(
            "docker.io/library/alpine",
            "registry.test/app",
            &["**".to_string()]
        ));
    }

    #[test]
    fn long_hostile_patterns_finish_quickly() {
        let pattern = "*a".repeat(100) + "b";
        let text = "a".repeat(5000);
        let start = std::time::Instant::now();
        assert!(!image_matches(&pattern, &text));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }
}
