//! Per-user rate limits: one token bucket (GCRA, the `governor` crate) per user and kind of request.
//!
//! Writes are counted in **events**, queries in requests: what costs downstream is the events (each one
//! is produced, acknowledged, and becomes a row the writer inserts), not the HTTP requests that carry
//! them, so one producer sending single events and one sending batches of 100 get the same budget. A
//! user may write `per_second` events per second on average and `burst` at once; queries count one each.
//! Beyond that the request is refused with 429 `rate_limit` and `Retry-After`. Limits are kept in memory
//! per service instance: with N instances behind a load balancer a user gets up to N times the configured
//! rate, which is what a per-instance limit is for (protecting the instance).
//!
//! A write is charged in two steps: its first event at the gate, before the body is read (so a user who
//! is over budget costs no body read or parse), and the rest of its events once the body is parsed
//! ([`RateLimits::check_write_rest`]), all or nothing: a batch larger than what is left of the budget is
//! refused whole with 429, never accepted in part.
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
    burst: u32,
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
            burst: burst.get(),
            what,
        })
    }

    /// Takes one token from `user`'s bucket, or refuses with 429. The wait is at most `1/per_second`
    /// seconds, so the `Retry-After: 1` that every 429 carries is always enough.
    pub fn check(&self, user: &str) -> Result<(), ApiError> {
        self.check_n(user, 1)
    }

    /// Takes `n` tokens from `user`'s bucket at once, or none and refuses with 429. The wait is at most
    /// `n/per_second` seconds: `Retry-After: 1` is enough when `n` ≤ `per_second`, which the
    /// configuration ensures for writes (`ratelimit.writes_per_second` ≥ `ingest.max_batch_events`).
    /// `n` above the burst can never pass: refused too, naming the burst.
    pub fn check_n(&self, user: &str, n: u32) -> Result<(), ApiError> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        if self.limiter.len() > HOUSEKEEPING_USERS {
            self.limiter.retain_recent();
        }
        match self.limiter.check_key_n(&user.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait: Duration = not_until.wait_time_from(self.clock.now());
                Err(ApiError::new(
                    ErrorKind::RateLimit,
                    format!(
                        "user {user:?} sends {} faster than {} per second (at most {} at once){}; \
                         retry in {} ms",
                        self.what,
                        self.per_second,
                        self.burst,
                        if n.get() > 1 {
                            format!(", and this request's {n} do not fit in what is left")
                        } else {
                            String::new()
                        },
                        wait.as_millis().max(1)
                    ),
                ))
            }
            Err(_) => Err(ApiError::new(
                ErrorKind::RateLimit,
                format!(
                    "this request holds {n} {}, more than user {user:?} may send at once ({})",
                    self.what, self.burst
                ),
            )),
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
            writes: UserRateLimiter::new(config.writes_per_second, config.writes_burst, "events"),
            queries: UserRateLimiter::new(
                config.queries_per_second,
                config.queries_burst,
                "queries",
            ),
        }
    }

    /// At the gate, before the body is read: the write's first event.
    pub fn check_write(&self, user: &str) -> Result<(), ApiError> {
        self.writes.as_ref().map_or(Ok(()), |l| l.check(user))
    }

    /// Once the body is parsed: the rest of the write's `events` (the gate took the first), all or
    /// none. A single event costs nothing more here.
    pub fn check_write_rest(&self, user: &str, events: usize) -> Result<(), ApiError> {
        let rest = u32::try_from(events.saturating_sub(1)).unwrap_or(u32::MAX);
        self.writes
            .as_ref()
            .map_or(Ok(()), |l| l.check_n(user, rest))
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
    fn writes_count_events_and_a_batch_that_does_not_fit_is_refused_whole() {
        // 1 event per second: nothing refills during the test, so the budget is exactly the burst.
        let limits = RateLimits::from_config(&RateLimitConfig {
            writes_per_second: 1,
            writes_burst: 100,
            queries_per_second: 0,
            queries_burst: 1,
        });
        // A batch of 60: one event at the gate, 59 after parsing. 40 left.
        limits.check_write("alice").unwrap();
        limits.check_write_rest("alice", 60).unwrap();
        // A batch of 50 passes the gate (39 left) but its other 49 do not fit: refused whole.
        limits.check_write("alice").unwrap();
        let refused = limits.check_write_rest("alice", 50).unwrap_err();
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.kind().retry_after_secs(), Some(1));
        assert!(
            refused.summary().contains("this request's 49 do not fit"),
            "{}",
            refused.summary()
        );
        // Nothing of the refused batch was taken: 39 single events still pass, the 40th does not.
        for _ in 0..39 {
            limits.check_write("alice").unwrap();
            limits.check_write_rest("alice", 1).unwrap();
        }
        assert_eq!(limits.check_write("alice").unwrap_err().status(), 429);
        // Other users have budgets of their own.
        limits.check_write("bob").unwrap();
        limits.check_write_rest("bob", 101).unwrap_err();
        limits.check_write_rest("bob", 100).unwrap();
    }

    #[test]
    fn more_events_than_the_burst_are_refused_naming_it() {
        let limiter = UserRateLimiter::new(10, 20, "events").unwrap();
        let refused = limiter.check_n("alice", 21).unwrap_err();
        assert_eq!(refused.status(), 429);
        assert!(
            refused
                .summary()
                .contains("more than user \"alice\" may send at once (20)"),
            "{}",
            refused.summary()
        );
        limiter.check_n("alice", 20).unwrap();
    }

    /// The promise: the shipped limit never answers 429 to one producer sending 2,000 single
    /// events per second, whether it sends them evenly or in clumps (all of a second's events at once).
    #[test]
    fn the_default_write_limit_lets_one_producer_send_2000_single_events_per_second() {
        let defaults = RateLimitConfig::default();
        for clumped in [false, true] {
            let clock = FakeRelativeClock::default();
            let limiter = UserRateLimiter::with_clock(
                defaults.writes_per_second,
                defaults.writes_burst,
                "events",
                clock.clone(),
            )
            .unwrap();
            for _second in 0..30 {
                for _ in 0..2_000 {
                    limiter.check("producer").unwrap();
                    if !clumped {
                        clock.advance(Duration::from_micros(500));
                    }
                }
                if clumped {
                    clock.advance(Duration::from_secs(1));
                }
            }
        }
        // ...and it is a limit: a runaway producer at 5× the rate is held to it.
        let clock = FakeRelativeClock::default();
        let limiter = UserRateLimiter::with_clock(
            defaults.writes_per_second,
            defaults.writes_burst,
            "events",
            clock.clone(),
        )
        .unwrap();
        let mut accepted = 0u32;
        for _ in 0..(10 * 5 * defaults.writes_per_second) {
            if limiter.check("runaway").is_ok() {
                accepted += 1;
            }
            clock.advance(Duration::from_micros(20));
        }
        // Ten seconds: the burst plus ten seconds of the rate (the last token is due as the loop ends).
        let most = defaults.writes_burst + 10 * defaults.writes_per_second;
        assert!((most - 1..=most).contains(&accepted), "{accepted}");
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
            limits.check_write_rest("alice", 1000).unwrap();
        }
        limits.check_query("alice").unwrap();
        assert_eq!(limits.check_query("alice").unwrap_err().status(), 429);
    }
}
