//! Per-user rate limits: one token bucket (GCRA, the `governor` crate) per user and kind of request.
//!
//! A user may send `per_second` requests per second on average and `burst` at once; beyond that the
//! request is refused with 429 `rate_limit` and `Retry-After` before any work is done for it. Limits are
//! kept in memory per service instance: with N instances behind a load balancer a user gets up to N
//! times the configured rate, which is what a per-instance limit is for (protecting the instance).
//!
//! The key is the authenticated user (the token's `sub`), checked after authentication: anonymous
//! requests cost one signature check each and are refused with 401.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::config::RateLimitConfig;
use crate::error::{ApiError, ErrorKind};

/// Above this many tracked users, buckets that are full again are dropped (they hold no information).
const HOUSEKEEPING_USERS: usize = 10_000;

/// One kind of request (writes or queries), one bucket per user.
pub struct UserRateLimiter<C: Clock = DefaultClock> {
    limiter: RateLimiter<String, DefaultKeyedStateStore<String>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    per_second: u32,
    what: &'static str,
}

impl UserRateLimiter<DefaultClock> {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32, what: &'static str) -> Option<UserRateLimiter> {
        UserRateLimiter::with_clock(per_second, burst, what, DefaultClock::default())
    }
}

impl<C: Clock + Clone> UserRateLimiter<C> {
    pub fn with_clock(
        per_second: u32,
        burst: u32,
        what: &'static str,
        clock: C,
    ) -> Option<UserRateLimiter<C>> {
        let rate = NonZeroU32::new(per_second)?;
        // A burst below the rate would make the rate unreachable within a second.
        let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
        let quota = Quota::per_second(rate).allow_burst(burst);
        Some(UserRateLimiter {
            limiter: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone()),
            clock,
            per_second,
            what,
        })
    }

    /// Takes one token from `user`'s bucket, or refuses with 429. The wait is at most `1/per_second`
    /// seconds, so the `Retry-After: 1` that every 429 carries is always enough.
    pub fn check(&self, user: &str) -> Result<(), ApiError> {
        if self.limiter.len() > HOUSEKEEPING_USERS {
            self.limiter.retain_recent();
        }
        match self.limiter.check_key(&user.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait: Duration = not_until.wait_time_from(self.clock.now());
                Err(ApiError::new(
                    ErrorKind::RateLimit,
                    format!(
                        "user {user:?} sends {} faster than {} per second; retry in {} ms",
                        self.what,
                        self.per_second,
                        wait.as_millis().max(1)
                    ),
                ))
            }
        }
    }
}

/// The limits of one service: writes (ingest-api) and queries (stats-api).
pub struct RateLimits {
    writes: Option<UserRateLimiter>,
    queries: Option<UserRateLimiter>,
}

impl RateLimits {
    pub fn from_config(config: &RateLimitConfig) -> RateLimits {
        RateLimits {
            writes: UserRateLimiter::new(config.writes_per_second, config.writes_burst, "writes"),
            queries: UserRateLimiter::new(
                config.queries_per_second,
                config.queries_burst,
                "queries",
            ),
        }
    }

    pub fn check_write(&self, user: &str) -> Result<(), ApiError> {
        self.writes.as_ref().map_or(Ok(()), |l| l.check(user))
    }

    pub fn check_query(&self, user: &str) -> Result<(), ApiError> {
        self.queries.as_ref().map_or(Ok(()), |l| l.check(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn each_user_has_a_bucket_that_refills() {
        let clock = FakeRelativeClock::default();
        let limiter = UserRateLimiter::with_clock(2, 3, "writes", clock.clone()).unwrap();
        for _ in 0..3 {
            limiter.check("alice").unwrap();
        }
        let refused = limiter.check("alice").unwrap_err();
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.kind().retry_after_secs(), Some(1));
        assert!(
            refused.summary().contains("retry in 500 ms"),
            "{}",
            refused.summary()
        );
        // Another user is not affected.
        limiter.check("bob").unwrap();
        // Half a second later one token is back, and only one.
        clock.advance(Duration::from_millis(500));
        limiter.check("alice").unwrap();
        assert!(limiter.check("alice").is_err());
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limits = RateLimits::from_config(&RateLimitConfig {
            writes_per_second: 0,
            writes_burst: 0,
            queries_per_second: 1,
            queries_burst: 1,
        });
        for _ in 0..1000 {
            limits.check_write("alice").unwrap();
        }
        limits.check_query("alice").unwrap();
        assert_eq!(limits.check_query("alice").unwrap_err().status(), 429);
    }
}
