//! The gate every request about a topic passes, in one order for both APIs:
//! token (401) → the user's rate (429) → the topic exists (404) → the user may write / read it (403).
//! A producer asking what became of its own events ([`Action::Status`]) passes with the right to write,
//! at the query rate: it reads, but only about what it sent.
//! Pure: the APIs reach it through the `http` feature's extractors (`http::gate`).

use std::sync::Arc;

use crate::access::{Restrictions, SharedAccess};
use crate::auth::{JwtVerifier, Principal};
use crate::catalogue::{Catalogue, Topic};
use crate::error::{ApiError, ErrorKind};
use crate::ratelimit::RateLimits;

/// What decides who may do what: the topics, the access rules (swapped whole on SIGHUP), the token keys
/// and the per-user rates.
pub struct Gatekeeping {
    pub catalogue: Catalogue,
    pub access: Arc<SharedAccess>,
    pub verifier: Arc<JwtVerifier>,
    pub rate_limits: RateLimits,
}

/// What a request is about to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Write,
    Read,
    /// The status of the caller's own events (`GET /stats/{topic}/events/{id}/status`): allowed to
    /// whoever may write the topic (a producer's token), counted against the query rate.
    Status,
}

/// A request that passed the gate: who, which topic, under which field restrictions.
pub struct Passed {
    pub principal: Principal,
    pub topic: Arc<Topic>,
    pub restrictions: Restrictions,
}

impl Gatekeeping {
    /// The topic, or the one 404 every route answers for a topic that does not exist.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, ApiError> {
        self.catalogue.shared(name).ok_or_else(|| {
            ApiError::new(
                ErrorKind::NotFound,
                format!("topic {name:?} does not exist"),
            )
            .with_field("topic")
        })
    }

    /// Runs the gate for `action` on the topic called `name`, with the request's `Authorization` header.
    pub fn pass(
        &self,
        authorization: Option<&str>,
        name: &str,
        action: Action,
    ) -> Result<Passed, ApiError> {
        let principal = self.verifier.authenticate(authorization)?;
        match action {
            Action::Write => self.rate_limits.check_write(&principal.user)?,
            Action::Read | Action::Status => self.rate_limits.check_query(&principal.user)?,
        }
        let topic = self.topic(name)?;
        let rules = self.access.rules();
        let restrictions = match action {
            Action::Write | Action::Status => rules.authorize_write(&principal, &topic.name)?,
            Action::Read => rules.authorize_read(&principal, &topic.name)?,
        };
        Ok(Passed {
            principal,
            topic,
            restrictions,
        })
    }
}

impl Passed {
    /// The reader's mandatory filters (empty when unrestricted): queries, aggregates and exports AND
    /// them to whatever the reader asks, so no answer reveals an event the reader may not see.
    pub fn read_filters(&self) -> Result<Vec<crate::query::Filter>, ApiError> {
        self.restrictions
            .read_filters(&self.topic.fields, &self.principal.user, &self.topic.name)
    }

    /// Only unrestricted readers pass: for raw messages (dead letters) no field restriction can filter.
    pub fn require_unrestricted(&self) -> Result<(), ApiError> {
        if self.restrictions.is_unrestricted() {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorKind::Permission,
            format!(
                "user {:?} may read topic {:?} only in part, and dead letters cannot be filtered",
                self.principal.user, self.topic.name
            ),
        )
        .with_field("topic"))
    }
}
