//! The lifetime promised to an installation. It is fixed when the
//! installation is first seen with its profile (recorded in `status.ttl`)
//! and moves only when the installation's own `spec.ttl` does: a shorter
//! ttl is always taken, a longer one (an extension) only up to the profile's
//! `ttl.max` at the time of the request. Later edits of the profile's
//! `ttl.default` or `ttl.max` never shorten, lengthen or stall an installation
//! that already has its promise.

use std::time::Duration;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};

use crate::api::{
    ProfileTtl, TestInstallation,
    duration::{format_duration, parse_duration},
};

/// Why the asked ttl is not the one in force.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TtlProblem {
    #[error(
        "ttl {asked} is longer than the maximum {max} allowed by profile {profile:?}; the installation keeps its ttl of {kept}"
    )]
    TooLong {
        asked: String,
        max: String,
        profile: String,
        kept: String,
    },
    #[error("invalid ttl: {0}")]
    Invalid(String),
}

impl TtlProblem {
    pub fn reason(&self) -> &'static str {
        match self {
            TtlProblem::TooLong { .. } => "TtlTooLong",
            TtlProblem::Invalid(_) => "InvalidTtl",
        }
    }
}

/// The ttl of one installation in this pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lifetime {
    /// The ttl in force; `None` while nothing tells it (no `spec.ttl`, no
    /// recorded one and no profile to take the default from).
    pub ttl: Option<Duration>,
    /// What to record in `status.ttl`: the promise, once the profile was
    /// consulted (or an earlier pass recorded one).
    pub recorded: Option<Duration>,
    /// Why the asked ttl was not taken, to be shown as `Stalled`.
    pub problem: Option<TtlProblem>,
}

impl Lifetime {
    /// Creation time plus the ttl in force, saturating at the latest time
    /// a timestamp can hold: a ttl too long to represent means "never", not
    /// "no deadline known" or a wrapped, early one.
    pub fn expires_at(&self, installation: &TestInstallation) -> Option<Time> {
        let created = installation.metadata.creation_timestamp.as_ref()?;
        Some(Time(deadline(created.0, self.ttl?)))
    }

    /// `status.ttl` as written.
    pub fn recorded_text(&self) -> Option<String> {
        self.recorded.map(format_duration)
    }
}

/// `created + ttl`, saturating at `Timestamp::MAX`.
pub fn deadline(created: Timestamp, ttl: Duration) -> Timestamp {
    let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    created
        .checked_add(SignedDuration::from_secs(seconds))
        .unwrap_or(Timestamp::MAX)
}

/// The ttl recorded by an earlier pass: `status.ttl`, or for installations
/// from before it was recorded, `status.expiresAt` minus the creation time.
pub fn recorded(installation: &TestInstallation) -> Option<Duration> {
    let status = installation.status.as_ref()?;
    if let Some(ttl) = status.ttl.as_deref().and_then(|t| parse_duration(t).ok()) {
        return Some(ttl);
    }
    let created: Timestamp = installation.metadata.creation_timestamp.as_ref()?.0;
    let expires: Timestamp = status.expires_at.as_ref()?.0;
    let seconds = created.duration_until(expires).as_secs();
    (seconds > 0).then(|| Duration::from_secs(seconds as u64))
}

/// Decides the lifetime from the installation's `spec.ttl`, what was
/// recorded, and the profile's ttl settings (`None` when the profile is not
/// known in this pass: then no new promise is made and no extension taken).
pub fn lifetime(installation: &TestInstallation, profile: Option<(&str, &ProfileTtl)>) -> Lifetime {
    let recorded = recorded(installation);
    let (asked, invalid) = match installation.spec.ttl.as_deref().map(parse_duration) {
        None => (None, None),
        Some(Ok(asked)) => (Some(asked), None),
        Some(Err(err)) => (None, Some(TtlProblem::Invalid(err.to_string()))),
    };
    let limits = profile.map(|(name, ttl)| {
        let parse = |field: &str, text: &str| {
            parse_duration(text)
                .map_err(|err| TtlProblem::Invalid(format!("profile {name:?} ttl.{field}: {err}")))
        };
        (
            name.to_string(),
            parse("default", &ttl.default),
            parse("max", &ttl.max),
        )
    });
    let settled = |ttl: Duration| Lifetime {
        ttl: Some(ttl),
        recorded: Some(ttl),
        problem: invalid.clone(),
    };
    let refused = |kept: Duration, max: Duration, profile: &str| Lifetime {
        ttl: Some(kept),
        recorded: Some(kept),
        problem: Some(TtlProblem::TooLong {
            asked: installation.spec.ttl.clone().unwrap_or_default(),
            max: format_duration(max),
            profile: profile.to_string(),
            kept: format_duration(kept),
        }),
    };
    match (recorded, asked, limits) {
        // The promise stands until spec.ttl asks for another.
        (Some(kept), None, _) => settled(kept),
        (Some(kept), Some(asked), _) if asked <= kept => settled(asked),
        // An extension, checked against today's maximum.
        (Some(kept), Some(asked), Some((profile, _, max))) => match max {
            Ok(max) if asked <= max => settled(asked),
            Ok(max) => refused(kept, max, &profile),
            Err(problem) => Lifetime {
                problem: Some(problem),
                ..settled(kept)
            },
        },
        (Some(kept), Some(_), None) => settled(kept),
        // Admission: the promise is made now.
        (None, asked, Some((profile, default, max))) => match (asked, default, max) {
            (Some(asked), _, Ok(max)) if asked <= max => settled(asked),
            (Some(_), _, Ok(max)) => refused(max, max, &profile),
            (None, Ok(default), Ok(max)) => settled(default.min(max)),
            (asked, default, max) => Lifetime {
                ttl: asked,
                recorded: None,
                problem: default.err().or(max.err()).or(invalid.clone()),
            },
        },
        // No profile yet: the asked ttl still bounds the installation's life.
        (None, asked, None) => Lifetime {
            ttl: asked,
            recorded: None,
            problem: invalid.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{TestInstallationSpec, TestInstallationStatus};

    const HOUR: u64 = 3600;

    fn ti(spec_ttl: Option<&str>, recorded: Option<&str>) -> TestInstallation {
        let mut ti = TestInstallation::new(
            "demo",
            TestInstallationSpec {
                ttl: spec_ttl.map(String::from),
                ..Default::default()
            },
        );
        ti.metadata.creation_timestamp = Some(Time("2026-11-22T10:00:00Z".parse().unwrap()));
        ti.status = recorded.map(|r| TestInstallationStatus {
            ttl: Some(r.into()),
            ..Default::default()
        });
        ti
    }

    fn profile(default: &str, max: &str) -> ProfileTtl {
        ProfileTtl {
            default: default.into(),
            max: max.into(),
        }
    }

    fn hours(h: u64) -> Option<Duration> {
        Some(Duration::from_secs(h * HOUR))
    }

    #[test]
    fn extreme_ttls_saturate_instead_of_wrapping_or_vanishing() {
        let created: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        for ttl in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            Duration::from_secs(i64::MAX as u64),
            Duration::from_secs(213_503_982_334_601 * 86_400),
        ] {
            assert_eq!(deadline(created, ttl), Timestamp::MAX, "{ttl:?}");
        }
        assert_eq!(
            deadline(Timestamp::MAX, Duration::from_secs(1)),
            Timestamp::MAX
        );
        assert_eq!(
            deadline(Timestamp::MIN, Duration::from_secs(60)),
            Timestamp::MIN
                .checked_add(SignedDuration::from_secs(60))
                .unwrap()
        );
        // Through the installation: a huge spec.ttl without a profile still
        // gives a deadline, the latest one, never none or an early one.
        let l = lifetime(&ti(Some("213503982334601d"), None), None);
        let at = l.expires_at(&ti(None, None)).unwrap();
        assert_eq!(at.0, Timestamp::MAX);
        // u64::MAX seconds exactly (the chat overflow of issue 11): the
        // latest deadline; one more second is refused as too long.
        let l = lifetime(&ti(Some("213503982334601d25215s"), None), None);
        assert_eq!(l.ttl, Some(Duration::from_secs(u64::MAX)));
        assert_eq!(l.expires_at(&ti(None, None)).unwrap().0, Timestamp::MAX);
        let l = lifetime(&ti(Some("213503982334601d25216s"), None), None);
        assert!(matches!(l.problem, Some(TtlProblem::Invalid(_))), "{l:?}");
        let l = lifetime(&ti(Some("99999999999999999999999d"), None), None);
        assert_eq!(l.ttl, None);
        assert!(matches!(l.problem, Some(TtlProblem::Invalid(_))), "{l:?}");
    }

    #[test]
    fn admission_takes_the_asked_ttl_or_the_default_within_the_maximum() {
        let p = profile("48h", "7d");
        let l = lifetime(&ti(None, None), Some(("p", &p)));
        assert_eq!((l.ttl, l.recorded, l.problem), (hours(48), hours(48), None));
        let l = lifetime(&ti(Some("3d"), None), Some(("p", &p)));
        assert_eq!((l.ttl, l.recorded), (hours(72), hours(72)));
        let l = lifetime(&ti(None, None), Some(("p", &profile("9d", "7d"))));
        assert_eq!(l.ttl, hours(168));
    }

    #[test]
    fn a_too_long_ttl_at_admission_still_expires_at_the_maximum() {
        let p = profile("48h", "7d");
        let l = lifetime(&ti(Some("8d"), None), Some(("p", &p)));
        assert_eq!(l.ttl, hours(168));
        assert_eq!(l.problem.as_ref().unwrap().reason(), "TtlTooLong");
        assert!(l.problem.unwrap().to_string().contains("maximum 7d"));
    }

    #[test]
    fn profile_edits_do_not_move_a_recorded_promise() {
        let lowered = profile("5s", "10s");
        let l = lifetime(&ti(None, Some("2d")), Some(("p", &lowered)));
        assert_eq!((l.ttl, l.problem), (hours(48), None));
        // Its own unchanged spec.ttl above the new maximum is no request.
        let l = lifetime(&ti(Some("3d"), Some("3d")), Some(("p", &lowered)));
        assert_eq!((l.ttl, l.problem), (hours(72), None));
    }

    #[test]
    fn extensions_are_checked_against_the_current_maximum() {
        let p = profile("48h", "7d");
        let l = lifetime(&ti(Some("5d"), Some("2d")), Some(("p", &p)));
        assert_eq!(
            (l.ttl, l.recorded, l.problem),
            (hours(120), hours(120), None)
        );
        let l = lifetime(&ti(Some("8d"), Some("2d")), Some(("p", &p)));
        assert_eq!(l.ttl, hours(48), "a refused extension keeps the promise");
        assert!(
            l.problem
                .unwrap()
                .to_string()
                .contains("keeps its ttl of 2d")
        );
        // Without the profile an extension waits, the promise holds.
        let l = lifetime(&ti(Some("8d"), Some("2d")), None);
        assert_eq!((l.ttl, l.problem), (hours(48), None));
    }

    #[test]
    fn shortening_is_always_taken() {
        let l = lifetime(&ti(Some("15s"), Some("2d")), None);
        assert_eq!(l.ttl, Some(Duration::from_secs(15)));
    }

    #[test]
    fn without_a_profile_the_asked_ttl_still_counts() {
        let l = lifetime(&ti(Some("15s"), None), None);
        assert_eq!((l.ttl, l.recorded), (Some(Duration::from_secs(15)), None));
        assert_eq!(
            l.expires_at(&ti(None, None)),
            Some(Time("2026-11-22T10:00:15Z".parse().unwrap()))
        );
        assert_eq!(lifetime(&ti(None, None), None).ttl, None);
    }

    #[test]
    fn installations_from_before_status_ttl_keep_their_deadline() {
        let mut old = ti(None, None);
        old.status = Some(TestInstallationStatus {
            expires_at: Some(Time("2026-11-24T10:00:00Z".parse().unwrap())),
            ..Default::default()
        });
        let l = lifetime(&old, Some(("p", &profile("5s", "10s"))));
        assert_eq!(l.ttl, hours(48));
    }
}
