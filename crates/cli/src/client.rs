//! The HTTP side: one client with the token, the two services' URLs, and the reading of their answers.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Response, Url};
use serde_json::Value;

use crate::config::Settings;
use crate::error::{describe_transport, ApiError, Failure};

pub const INGEST: &str = "the ingest-api";
pub const STATS: &str = "the stats-api";

pub struct Api {
    http: reqwest::Client,
    pub settings: Settings,
}

impl Api {
    pub fn new(settings: Settings) -> Result<Api, Failure> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("eventgate-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Api { http, settings })
    }

    /// `base` with `segments` appended as path segments (each percent-encoded as needed), keeping a
    /// prefix path the base may have (`https://gw.example.com/eventgate/`).
    pub fn url(base: &Url, segments: &[&str]) -> Url {
        let mut url = base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    pub fn ingest(&self, segments: &[&str]) -> Url {
        Api::url(&self.settings.ingest_url, segments)
    }

    pub fn stats(&self, segments: &[&str]) -> Url {
        Api::url(&self.settings.stats_url, segments)
    }

    pub fn get(&self, url: Url) -> reqwest::RequestBuilder {
        self.http.get(url).bearer_auth(&self.settings.token)
    }

    pub fn post(&self, url: Url) -> reqwest::RequestBuilder {
        self.http.post(url).bearer_auth(&self.settings.token)
    }

    /// Sends `request`; a transport failure becomes [`Failure::Unreachable`] naming the service.
    pub async fn send(
        &self,
        service: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Response, Failure> {
        let request = request
            .build()
            .map_err(|e| Failure::Usage(format!("cannot build the request: {e}")))?;
        let url = request.url().clone();
        self.http
            .execute(request)
            .await
            .map_err(|e| Failure::Unreachable(describe_transport(service, url.as_str(), &e)))
    }

    /// A GET whose success is JSON; anything else is the failure `what` ends with.
    pub async fn get_json(
        &self,
        service: &str,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(Value, HeaderMap), Failure> {
        let response = self.send(service, request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| {
            Failure::Unreachable(format!("{service} broke off its answer to {what}: {e}"))
        })?;
        if !status.is_success() {
            return Err(error_of(status.as_u16(), &headers, &body).into_failure(service, what));
        }
        let value = serde_json::from_slice(&body).map_err(|e| {
            Failure::Unreachable(format!(
                "{service} answered {what} with something not JSON: {e}"
            ))
        })?;
        Ok((value, headers))
    }
}

/// An error answer's envelope, request id and `Retry-After`.
pub fn error_of(status: u16, headers: &HeaderMap, body: &[u8]) -> ApiError {
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    ApiError::from_parts(status, body, request_id, retry_after(headers))
}

/// `Retry-After` as seconds or as an HTTP date; capped at 10 minutes so a wrong header cannot park
/// the CLI for a day.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(Duration::from_secs(600)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn urls_keep_a_prefix_and_encode_segments() {
        let base = Url::parse("https://gw.example.com/eventgate/").expect("url");
        assert_eq!(
            Api::url(&base, &["topics", "audit.logs"]).as_str(),
            "https://gw.example.com/eventgate/topics/audit.logs"
        );
        let base = Url::parse("http://127.0.0.1:8081").expect("url");
        assert_eq!(
            Api::url(&base, &["stats", "a/b c"]).as_str(),
            "http://127.0.0.1:8081/stats/a%2Fb%20c"
        );
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("99999"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(600)));
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&soon).expect("header"));
        let wait = retry_after(&headers).expect("date");
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }
}
