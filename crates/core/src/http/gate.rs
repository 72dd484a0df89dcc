//! The gate ([`crate::gate`]) as actix-web extractors: a handler that takes a [`TopicWriter`] or a
//! [`TopicReader`] runs only for a request that passed it, and every failure is answered the same way
//! by every route. The topic is the route's `{topic}` segment; the gate's data is registered by
//! [`super::ApiServer`].

use std::future::{ready, Ready};
use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};

use super::{authorization, record_request_subject};
use crate::error::{ApiError, ErrorKind};
use crate::gate::{Action, Gatekeeping, Passed};

fn pass(request: &HttpRequest, action: Action) -> Result<Passed, ApiError> {
    let gate = request
        .app_data::<web::Data<Gatekeeping>>()
        .ok_or_else(|| {
            tracing::error!("the gate's data is not registered");
            ApiError::new(ErrorKind::Internal, "the request could not be authorised")
        })?;
    let name = request.match_info().get("topic").unwrap_or_default();
    let passed = gate.pass(authorization(request), name, action)?;
    record_request_subject(&passed.principal.user, &passed.topic.name);
    Ok(passed)
}

/// A request allowed to write to the topic of its path.
pub struct TopicWriter(pub Passed);

/// A request allowed to read the topic of its path (under its restrictions).
pub struct TopicReader(pub Passed);

/// A request allowed to ask about its own events on the topic of its path: the caller may write it
/// ([`Action::Status`]). Its restrictions are the write restrictions; answers are about events whose
/// producer is the caller, never anyone else's.
pub struct TopicProducer(pub Passed);

impl FromRequest for TopicWriter {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(pass(request, Action::Write).map(TopicWriter))
    }
}

impl FromRequest for TopicReader {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(pass(request, Action::Read).map(TopicReader))
    }
}

impl FromRequest for TopicProducer {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(pass(request, Action::Status).map(TopicProducer))
    }
}

impl Deref for TopicProducer {
    type Target = Passed;
    fn deref(&self) -> &Passed {
        &self.0
    }
}

impl Deref for TopicWriter {
    type Target = Passed;
    fn deref(&self) -> &Passed {
        &self.0
    }
}

impl Deref for TopicReader {
    type Target = Passed;
    fn deref(&self) -> &Passed {
        &self.0
    }
}
