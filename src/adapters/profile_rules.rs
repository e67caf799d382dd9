//! What an InstallationProfile decides about a request, checked by the
//! adapters before they answer, so a person hears at once that a size does
//! not exist or a lifetime is too long, instead of "Creating…" followed by a
//! failed installation. The controller checks the same rules again.

use std::time::Duration;

use crate::{
    api::{
        InstallationProfile,
        duration::{format_duration, parse_duration},
    },
    controller::plan::builtin_size,
};

/// The profile an installation without `spec.profile` uses (the controller's
/// rule).
pub const DEFAULT_PROFILE: &str = "default";

/// The longest lifetime the profile allows (`ttl.max`, default 7 days).
pub fn max_ttl(profile: &InstallationProfile) -> Duration {
    parse_duration(&profile.spec.ttl.max).unwrap_or(Duration::from_secs(7 * 86_400))
}

/// Why a create request does not fit its profile; the text is shown as is.
pub fn check_create(
    profile: &InstallationProfile,
    size: Option<&str>,
    ttl: Option<&str>,
    test_data: bool,
) -> Result<(), String> {
    let name = profile.metadata.name.as_deref().unwrap_or(DEFAULT_PROFILE);
    let p = &profile.spec;
    if let Some(size) = size
        && !p.sizes.contains_key(size)
        && builtin_size(size).is_none()
    {
        let mut available: Vec<&str> = p.sizes.keys().map(String::as_str).collect();
        for builtin in ["miniSingleton", "miniHA"] {
            if !available.contains(&builtin) {
                available.push(builtin);
            }
        }
        return Err(format!(
            "size `{size}` is not offered by profile `{name}`; choose one of {}",
            available
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(ttl) = ttl {
        let asked = parse_duration(ttl).map_err(|err| err.to_string())?;
        let max = max_ttl(profile);
        if asked > max {
            return Err(format!(
                "ttl `{ttl}` is longer than the {} that profile `{name}` allows",
                format_duration(max)
            ));
        }
    }
    if test_data && p.seed.is_none() {
        return Err(format!(
            "profile `{name}` has no seed command, so it cannot load test data"
        ));
    }
    Ok(())
}

/// The new `spec.ttl` of an installation `age` old that should live `by`
/// longer from now, never beyond `max`: whole minutes, saturating, so no
/// request (however large) overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension {
    pub ttl: Duration,
    /// The request asked for more than `max` allows.
    pub capped: bool,
}

pub fn extension(age: Duration, by: Duration, max: Duration) -> Extension {
    let wanted = age.as_secs().saturating_add(by.as_secs());
    let wanted = wanted.div_ceil(60).saturating_mul(60);
    let max_secs = max.as_secs();
    Extension {
        ttl: Duration::from_secs(wanted.min(max_secs)),
        capped: wanted > max_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: serde_json::Value) -> InstallationProfile {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ephemera.dev/v1alpha1",
            "kind": "InstallationProfile",
            "metadata": { "name": "app" },
            "spec": json,
        }))
        .unwrap()
    }

    #[test]
    fn sizes_ttl_and_seed_are_checked_against_the_profile() {
        let p = profile(serde_json::json!({
            "image": "registry.example/app", "defaultVersion": "1",
            "sizes": { "large": { "replicas": 3 } },
            "ttl": { "default": "1d", "max": "3d" },
        }));
        assert_eq!(check_create(&p, Some("large"), Some("2d"), false), Ok(()));
        assert_eq!(check_create(&p, Some("miniHA"), None, false), Ok(()));
        let err = check_create(&p, Some("huge"), None, false).unwrap_err();
        assert!(
            err.contains("`huge`") && err.contains("`large`, `miniSingleton`, `miniHA`"),
            "{err}"
        );
        let err = check_create(&p, None, Some("4d"), false).unwrap_err();
        assert!(err.contains("3d"), "{err}");
        let err = check_create(&p, None, None, true).unwrap_err();
        assert!(err.contains("seed"), "{err}");
    }

    #[test]
    fn extensions_are_capped_and_never_overflow() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(
            extension(h(1), h(24), h(168)),
            Extension {
                ttl: h(25),
                capped: false
            }
        );
        assert_eq!(
            extension(Duration::from_secs(61), Duration::from_secs(60), h(1)).ttl,
            Duration::from_secs(180)
        );
        assert_eq!(
            extension(h(1), h(24 * 30), h(168)),
            Extension {
                ttl: h(168),
                capped: true
            }
        );
        assert_eq!(
            extension(Duration::MAX, Duration::MAX, h(168)),
            Extension {
                ttl: h(168),
                capped: true
            }
        );
    }
}
