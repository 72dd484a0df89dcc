//! How current an answer is: every stats answer about a topic (query, aggregate, export, tail) carries
//! the topic's watermark — the newest stored event's time and when the writers last stored a batch of
//! it — as the header `Eventgate-Freshness` and, in JSON answers, a member `freshness`.
//!
//! The stats-api cannot see events still waiting in Kafka; what it can tell is how old the newest stored
//! event is (`age_ms`, an upper bound of how far the answer is behind when events keep arriving) and how
//! far behind the writers were at their last batch (`lag_ms`: stored_at − newest_event_at). With the
//! writers stopped, `age_ms` grows; once they catch up it falls back to the producers' own pace.
//!
//! The watermark is one primary-key lookup, cached per topic for at most [`CACHE_FOR`]; the age is
//! computed at answer time. A failed lookup never fails the answer: it is left out (logged).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::HttpResponse;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::db::freshness::Watermark;
use crate::raw_json::rfc3339;
use crate::AppState;

/// The header every answer about a topic carries.
pub const HEADER: &str = "eventgate-freshness";
/// How long a topic's watermark is reused before it is read again.
pub const CACHE_FOR: Duration = Duration::from_secs(1);

/// A topic's freshness at answer time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// `None`: nothing of the topic was stored yet (since the watermark table exists).
    pub watermark: Option<Watermark>,
    /// When it was computed (the stats-api's clock).
    pub now: OffsetDateTime,
}

impl Freshness {
    /// now − newest_event_at, in ms (0 when the clocks disagree the other way).
    pub fn age_ms(&self) -> Option<i64> {
        self.watermark
            .map(|w| millis(self.now - w.newest_event_at).max(0))
    }

    /// stored_at − newest_event_at at the last batch, in ms: how far behind the writers were then.
    pub fn lag_ms(&self) -> Option<i64> {
        self.watermark
            .map(|w| millis(w.stored_at - w.newest_event_at).max(0))
    }

    /// `{"newest_event_at", "stored_at", "age_ms", "lag_ms"}`, nulls when nothing was stored.
    pub fn to_json(&self) -> Value {
        json!({
            "newest_event_at": self.watermark.map(|w| rfc3339(w.newest_event_at)),
            "stored_at": self.watermark.map(|w| rfc3339(w.stored_at)),
            "age_ms": self.age_ms(),
            "lag_ms": self.lag_ms(),
        })
    }

    /// An RFC 8941 dictionary: `newest-event-at="…", stored-at="…", age-ms=…, lag-ms=…`, or `none`
    /// when nothing of the topic was stored yet.
    pub fn header_value(&self) -> String {
        match (self.watermark, self.age_ms(), self.lag_ms()) {
            (Some(w), Some(age), Some(lag)) => format!(
                "newest-event-at=\"{}\", stored-at=\"{}\", age-ms={age}, lag-ms={lag}",
                rfc3339(w.newest_event_at),
                rfc3339(w.stored_at)
            ),
            _ => "none".to_owned(),
        }
    }

    /// Sets the header on an answer.
    pub fn apply(&self, response: &mut HttpResponse) {
        if let Ok(value) = HeaderValue::from_str(&self.header_value()) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(HEADER), value);
        }
    }
}

fn millis(duration: time::Duration) -> i64 {
    i64::try_from(duration.whole_milliseconds()).unwrap_or(i64::MAX)
}

/// The watermarks read recently, per topic (the topics are the catalogue's: the map stays small).
#[derive(Default)]
pub struct FreshnessCache {
    entries: Mutex<HashMap<String, (Instant, Option<Watermark>)>>,
}

impl FreshnessCache {
    fn cached(&self, topic: &str) -> Option<Option<Watermark>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(topic)
            .filter(|(at, _)| at.elapsed() < CACHE_FOR)
            .map(|(_, watermark)| *watermark)
    }

    fn store(&self, topic: &str, watermark: Option<Watermark>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(topic.to_owned(), (Instant::now(), watermark));
    }
}

/// The topic's freshness now, from the cache or one lookup; `None` when the lookup failed.
pub async fn current(state: &AppState, topic: &str) -> Option<Freshness> {
    let watermark = match state.freshness.cached(topic) {
        Some(watermark) => watermark,
        None => match crate::db::freshness::watermark(&state.pool, topic).await {
            Ok(watermark) => {
                state.freshness.store(topic, watermark);
                watermark
            }
            Err(error) => {
                tracing::warn!(topic, %error, "freshness unknown: the watermark was not read");
                return None;
            }
        },
    };
    Some(Freshness {
        watermark,
        now: OffsetDateTime::now_utc(),
    })
}

/// `freshness` as a JSON member's value: the object, or null when it is unknown.
pub fn json_member(freshness: Option<&Freshness>) -> Value {
    freshness.map_or(Value::Null, Freshness::to_json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn header_and_json_say_the_same() {
        let freshness = Freshness {
            watermark: Some(Watermark {
                newest_event_at: datetime!(2025-01-01 00:00:00.5 UTC),
                stored_at: datetime!(2025-01-01 00:00:00.75 UTC),
            }),
            now: datetime!(2025-01-01 00:00:02 UTC),
        };
        assert_eq!(
            freshness.header_value(),
            "newest-event-at=\"2025-01-01T00:00:00.5Z\", stored-at=\"2025-01-01T00:00:00.75Z\", \
             age-ms=1500, lag-ms=250"
        );
        assert_eq!(
            freshness.to_json(),
            json!({"newest_event_at": "2025-01-01T00:00:00.5Z", "stored_at": "2025-01-01T00:00:00.75Z",
                   "age_ms": 1500, "lag_ms": 250})
        );
        let empty = Freshness {
            watermark: None,
            now: datetime!(2025-01-01 00:00:02 UTC),
        };
        assert_eq!(empty.header_value(), "none");
        assert_eq!(empty.to_json()["age_ms"], Value::Null);
    }
}
