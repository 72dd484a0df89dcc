//! `GET /token`: where a client obtains a token, as EventGate users expect. eventgate does not issue
//! tokens (the identity provider does); it sends the client to the configured provider
//! (`auth.token_provider_url`) with a 303 See Other, or answers 404 with a hint when none is configured.

use actix_web::{web, HttpResponse};

use crate::error::{ApiError, ErrorKind};

/// The token provider of `GET /token`, registered as app data by [`super::start_server`].
#[derive(Debug, Clone, Default)]
pub struct TokenProvider(pub Option<String>);

/// Adds `GET /token` to an API's routes.
pub fn configure_token(cfg: &mut web::ServiceConfig) {
    cfg.route("/token", web::get().to(token));
}

#[utoipa::path(
    get,
    path = "/token",
    tag = "documentation",
    summary = "Where to obtain a token",
    description = "A redirect to the identity provider configured as `auth.token_provider_url`: \
        eventgate issues no tokens.",
    responses(
        (status = 303, description = "Go to the token provider.",
         headers(("Location" = String, description = "The token provider's URL."))),
        (status = 404, response = super::openapi::NotFound),
    ),
)]
pub(super) async fn token(
    provider: Option<web::Data<TokenProvider>>,
) -> Result<HttpResponse, ApiError> {
    match provider.as_ref().and_then(|p| p.0.as_deref()) {
        Some(url) => Ok(HttpResponse::SeeOther()
            .insert_header((actix_web::http::header::LOCATION, url))
            .finish()),
        None => Err(ApiError::new(
            ErrorKind::NotFound,
            "this gateway issues no tokens and has no token provider configured \
             (auth.token_provider_url): get a bearer token from your identity provider, or in \
             development `make token SUB=<user>` or `eventgate token`",
        )
        .with_field("token")),
    }
}
