//! Expiry: an installation is deleted at `status.expiresAt`, unless it is
//! locked against deletion. The controller requeues exactly at the deadline.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No deadline known yet.
    Unknown,
    /// Look again after this long.
    In(Duration),
    /// The deadline has passed: delete it.
    Due,
    /// The deadline has passed but `deletionLocked` keeps it.
    DueButLocked,
}

pub fn decide(expires_at: Option<Timestamp>, locked: bool, now: Timestamp) -> Expiry {
    let Some(expires_at) = expires_at else {
        return Expiry::Unknown;
    };
    if now >= expires_at {
        return if locked {
            Expiry::DueButLocked
        } else {
            Expiry::Due
        };
    }
    let left = now.duration_until(expires_at);
    // Round up so the next pass is never a hair early; saturate for
    // deadlines at the end of time.
    let millis = u64::try_from(left.as_millis().max(0)).unwrap_or(u64::MAX);
    Expiry::In(Duration::from_millis(millis.saturating_add(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn deadline_decisions() {
        let now = t("2026-11-22T10:00:00Z");
        assert_eq!(decide(None, false, now), Expiry::Unknown);
        assert_eq!(
            decide(Some(t("2026-11-22T10:00:30Z")), false, now),
            Expiry::In(Duration::from_millis(30_001))
        );
        assert_eq!(
            decide(Some(t("2026-11-22T09:59:59Z")), false, now),
            Expiry::Due
        );
        assert_eq!(decide(Some(now), true, now), Expiry::DueButLocked);
    }

    #[test]
    fn deadlines_at_the_ends_of_time_neither_panic_nor_wrap() {
        let now = t("2026-11-22T10:00:00Z");
        let Expiry::In(left) = decide(Some(Timestamp::MAX), false, now) else {
            panic!("a deadline at the end of time is in the future");
        };
        assert!(left > Duration::from_secs(7_900 * 365 * 86_400), "{left:?}");
        assert_eq!(decide(Some(Timestamp::MIN), false, now), Expiry::Due);
        assert_eq!(
            decide(Some(Timestamp::MAX), false, Timestamp::MIN),
            decide(Some(Timestamp::MAX), false, Timestamp::MIN)
        );
        assert!(matches!(
            decide(Some(Timestamp::MAX), false, Timestamp::MIN),
            Expiry::In(_)
        ));
    }
}
