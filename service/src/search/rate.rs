//! Request rates per identity: one GCRA limiter (`governor`) for queries
//! and one for writes (ingest and delete requests), keyed by identity.
//! Anonymous queries are not limited here (they carry no identity).

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use lattice_protocol::IdentityId;

use super::{SearchResult, SearchServiceError};

/// What a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RateKind {
    Query,
    Write,
}

pub(crate) struct RateLimits {
    queries: DefaultKeyedRateLimiter<IdentityId>,
    writes: DefaultKeyedRateLimiter<IdentityId>,
    queries_per_minute: u32,
    writes_per_minute: u32,
}

impl RateLimits {
    pub(super) fn new(queries_per_minute: u32, writes_per_minute: u32) -> Self {
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n.max(1)).expect("at least one"));
        Self {
            queries: RateLimiter::keyed(quota(queries_per_minute)),
            writes: RateLimiter::keyed(quota(writes_per_minute)),
            queries_per_minute,
            writes_per_minute,
        }
    }

    /// Counts one request of `identity`; 429 with the wait when over the rate.
    pub(crate) fn check(&self, kind: RateKind, identity: IdentityId) -> SearchResult<()> {
        let (limiter, per_minute, what) = match kind {
            RateKind::Query => (&self.queries, self.queries_per_minute, "queries"),
            RateKind::Write => (
                &self.writes,
                self.writes_per_minute,
                "ingest and delete requests",
            ),
        };
        match limiter.check_key(&identity) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(SearchServiceError::RateLimited {
                    message: format!(
                        "too many search {what}: at most {per_minute} a minute per identity; retry in {retry_after_secs} s"
                    ),
                    retry_after_secs: retry_after_secs.max(1),
                })
            }
        }
    }

    /// Forgets identities that have been idle long enough to be at full quota.
    pub(super) fn forget_idle(&self) {
        self.queries.retain_recent();
        self.writes.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_identity_has_its_own_quota() {
        let limits = RateLimits::new(2, 1);
        let (a, b) = (IdentityId::new(), IdentityId::new());
        assert!(limits.check(RateKind::Query, a).is_ok());
        assert!(limits.check(RateKind::Query, a).is_ok());
        let err = limits.check(RateKind::Query, a).unwrap_err();
        match err {
            SearchServiceError::RateLimited {
                retry_after_secs, ..
            } => assert!((1..=60).contains(&retry_after_secs)),
            other => panic!("{other:?}"),
        }
        assert!(limits.check(RateKind::Query, b).is_ok(), "b has its own");
        assert!(limits.check(RateKind::Write, a).is_ok(), "writes apart");
        assert!(limits.check(RateKind::Write, a).is_err());
    }
}
