//! At most `stats.max_concurrent_per_user` statements per user at once: the request rate limit counts
//! requests, not their cost, and a handful of expensive queries by one analyst would otherwise hold the
//! whole pool while everyone else waits. A request takes a slot before it asks the pool for a
//! connection and gives it back when its answer is ready (an export: when its stream ends); one more is
//! answered 429 `rate_limit` with `Retry-After` at once, without touching the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use eventgate_core::error::{ApiError, ErrorKind};

/// The slots in use, per user.
#[derive(Clone)]
pub struct UserSlots {
    max: u32,
    in_use: Arc<Mutex<HashMap<String, u32>>>,
}

/// A slot held; given back when dropped.
#[must_use = "the slot is given back when this is dropped"]
pub struct Slot {
    user: String,
    in_use: Arc<Mutex<HashMap<String, u32>>>,
}

impl UserSlots {
    pub fn new(max: u32) -> UserSlots {
        UserSlots {
            max: max.max(1),
            in_use: Arc::default(),
        }
    }

    /// One slot for `user`, or 429 when the user holds `max` already.
    pub fn acquire(&self, user: &str) -> Result<Slot, ApiError> {
        // A poisoned lock only means another request panicked while counting: the counts are intact.
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        let held = in_use.entry(user.to_owned()).or_insert(0);
        if *held >= self.max {
            return Err(ApiError::new(
                ErrorKind::RateLimit,
                format!(
                    "user {user:?} has {} statements running on this instance, at most {} at once \
                     (stats.max_concurrent_per_user); retry when one has finished",
                    *held, self.max
                ),
            ));
        }
        *held += 1;
        Ok(Slot {
            user: user.to_owned(),
            in_use: Arc::clone(&self.in_use),
        })
    }

    /// Slots held by `user` now.
    pub fn held(&self, user: &str) -> u32 {
        let in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        in_use.get(user).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = in_use.get_mut(&self.user) {
            *held = held.saturating_sub(1);
            // Users without a running statement take no memory.
            if *held == 0 {
                in_use.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_has_its_own_slots_given_back_on_drop() {
        let slots = UserSlots::new(2);
        let a1 = slots.acquire("alice").expect("first");
        let a2 = slots.acquire("alice").expect("second");
        let refused = slots.acquire("alice").err().expect("third refused");
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.kind().retry_after_secs(), Some(1));
        assert!(
            refused.summary().contains("at most 2"),
            "{}",
            refused.summary()
        );
        let _b = slots.acquire("bob").expect("another user is not affected");
        drop(a1);
        let _a3 = slots.acquire("alice").expect("a slot came back");
        drop(a2);
        assert_eq!(slots.held("alice"), 1);
        drop(_a3);
        assert_eq!(slots.held("alice"), 0);
        assert_eq!(
            slots.in_use.lock().expect("lock").len(),
            1,
            "only bob is tracked"
        );
    }
}
