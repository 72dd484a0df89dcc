//! `GET /stats/{topic}/tail`: the topic's new events as Server-Sent Events, as soon as they are stored.
//!
//! The gate and the query language as for `GET /stats/{topic}` (filters, read rules, `fields`); no sort,
//! cursor, page or count (a tail is in commit order, its position is `Last-Event-ID`). Then a stream
//! permit (429 beyond `stats.tail_max_streams_per_user` for the user or `stats.tail_max_streams` for the
//! process) → the position: the signed `Last-Event-ID` of an earlier stream (400 when forged, for
//! another topic, or older than the commit log keeps), else the current snapshot → a task that polls
//! (`db::tail`, one bounded statement per poll) and hands SSE frames to the body through a channel of one
//! piece.
//!
//! Wake-ups: one `LISTEN eventgate_events` connection per process ([`TailHub`]); the writers `NOTIFY`
//! the topic in each batch's transaction, the listener wakes that topic's tails. A read replica does not
//! relay `NOTIFY` (and refuses `LISTEN`), so every tail also polls every `stats.tail_poll_ms`: the
//! fallback that makes the tail work anywhere, at that latency.
//!
//! Frames: each event is `id: <position after it>` + `data: <the event as in query answers>`; a
//! heartbeat (a comment, the current position as `id`, and an `event: freshness` with the topic's
//! freshness) after `stats.tail_heartbeat_ms` without a frame; a client that does not take a piece
//! within `stats.tail_send_timeout_ms` is dropped: the task ends (its batch freed, its permit given
//! back) and the body ends with `event: error` `{"reason":"slow_consumer",…}` once the client reads
//! again. A database failure ends the stream with `event: error` `{"reason":"database",…}`; the client
//! reconnects with `Last-Event-ID` and loses nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use prometheus::{IntGauge, Registry};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use eventgate_core::config::Config;
use eventgate_core::error::{ApiError, ErrorDetail, ErrorKind};
use eventgate_core::http::TopicReader;
use eventgate_core::query::{self, QueryPlan, QueryRequest, Selection};

use crate::db::tail::{self as tail_db, After, TailPosition};
use crate::export::PIECE_BYTES;
use crate::AppState;

/// Events one poll reads at most.
pub const POLL_ROWS: u32 = 500;
/// Bytes one poll writes at most (or `stats.max_page_bytes` when smaller): a tail's buffered memory.
pub const POLL_BYTES: usize = 1024 * 1024;
/// The longest `Last-Event-ID` read.
const MAX_ID_BYTES: usize = 8 * 1024;
/// The channel the writers notify on (`db-writer/src/db/events.rs`).
pub const CHANNEL: &str = "eventgate_events";
/// What an `EventSource` waits before it reconnects.
const RETRY_MS: u64 = 1000;

/// The tail's settings (from `[stats]`, and the writers' commit-log retention).
#[derive(Debug, Clone)]
pub struct TailSettings {
    pub poll: Duration,
    pub heartbeat: Duration,
    pub max_per_user: u32,
    pub max_streams: u32,
    pub send_timeout: Duration,
    /// A position older than this is refused (the commit log behind it may be pruned).
    pub resume_max: Duration,
    pub poll_bytes: usize,
}

impl TailSettings {
    pub fn from_config(config: &Config) -> TailSettings {
        TailSettings {
            poll: Duration::from_millis(config.stats.tail_poll_ms),
            heartbeat: Duration::from_millis(config.stats.tail_heartbeat_ms),
            max_per_user: config.stats.tail_max_streams_per_user.max(1),
            max_streams: config.stats.tail_max_streams.max(1),
            send_timeout: Duration::from_millis(config.stats.tail_send_timeout_ms),
            // A margin for the clocks of the writers and this service.
            resume_max: Duration::from_millis(config.writer.commit_log_retention_ms / 10 * 9),
            poll_bytes: config.stats.max_page_bytes.min(POLL_BYTES),
        }
    }
}

/// What every tail of the process shares: the settings, the wake-ups per topic, the stream permits.
pub struct TailHub {
    pub settings: TailSettings,
    wakers: Mutex<HashMap<String, watch::Sender<u64>>>,
    streams: Mutex<Streams>,
    open: IntGauge,
    listening: IntGauge,
}

#[derive(Default)]
struct Streams {
    total: u32,
    per_user: HashMap<String, u32>,
}

/// A stream permit, given back when dropped.
pub struct StreamPermit {
    hub: Arc<TailHub>,
    user: String,
}

impl TailHub {
    /// The hub, its gauges registered; [`TailHub::listen`] starts the listener.
    pub fn new(settings: TailSettings, registry: &Registry) -> Arc<TailHub> {
        let open = IntGauge::new("eventgate_stats_tail_streams", "Live tails open")
            .expect("a valid gauge");
        let listening = IntGauge::new(
            "eventgate_stats_tail_listening",
            "1 while the LISTEN connection for the writers' commit notifications is up (0: the tails poll)",
        )
        .expect("a valid gauge");
        for gauge in [&open, &listening] {
            if let Err(error) = registry.register(Box::new(gauge.clone())) {
                tracing::warn!(%error, "tail gauge not registered");
            }
        }
        Arc::new(TailHub {
            settings,
            wakers: Mutex::default(),
            streams: Mutex::default(),
            open,
            listening,
        })
    }

    /// A permit for one more stream of `user`, or 429.
    pub fn permit(self: &Arc<Self>, user: &str) -> Result<StreamPermit, ApiError> {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let held = streams.per_user.get(user).copied().unwrap_or(0);
        if held >= self.settings.max_per_user {
            return Err(ApiError::new(
                ErrorKind::RateLimit,
                format!(
                    "user {user:?} has {held} live tails open on this instance, at most {} at once \
                     (stats.tail_max_streams_per_user); close one first",
                    self.settings.max_per_user
                ),
            ));
        }
        if streams.total >= self.settings.max_streams {
            return Err(ApiError::new(
                ErrorKind::RateLimit,
                format!(
                    "this instance serves {} live tails, at most {} at once (stats.tail_max_streams); \
                     retry later",
                    streams.total, self.settings.max_streams
                ),
            ));
        }
        streams.total += 1;
        *streams.per_user.entry(user.to_owned()).or_insert(0) += 1;
        self.open.inc();
        Ok(StreamPermit {
            hub: Arc::clone(self),
            user: user.to_owned(),
        })
    }

    /// Wakes when the topic is notified (or every tail is: the listener reconnected).
    fn subscribe(&self, topic: &str) -> watch::Receiver<u64> {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers
            .entry(topic.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn wake(&self, topic: &str) {
        let wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = wakers.get(topic) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn wake_all(&self) {
        let wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        for sender in wakers.values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Starts the process's one `LISTEN` connection: it wakes the tails of each notified topic, and
    /// all of them whenever it (re)connects (notifications may have been missed meanwhile). It stops
    /// when the hub is dropped. Where `LISTEN` fails (a read replica), it retries every minute; the
    /// tails poll meanwhile.
    pub fn listen(self: &Arc<Self>, database_url: String) {
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let outcome = listen_once(&hub, &database_url).await;
                let Some(hub) = hub.upgrade() else { return };
                hub.listening.set(0);
                hub.wake_all();
                match outcome {
                    Ok(()) => backoff = Duration::from_secs(1),
                    Err(error) => {
                        tracing::warn!(%error, retry_in_s = backoff.as_secs(), "tail: no LISTEN connection; tails poll every stats.tail_poll_ms");
                    }
                }
                drop(hub);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        });
    }
}

/// One `LISTEN` connection, until it breaks or the hub is gone.
async fn listen_once(hub: &Weak<TailHub>, database_url: &str) -> Result<(), String> {
    use eventgate_core::db::tls;
    let (config, settings) = tls::parse(database_url).map_err(|e| e.to_string())?;
    let connector = tls::connector(&settings).map_err(|e| e.to_string())?;
    let (client, mut connection) = config.connect(connector).await.map_err(|e| e.to_string())?;
    let (sender, mut notifications) = mpsc::unbounded_channel();
    // The connection's messages must be polled for the notifications to come out.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if sender.send(n.payload().to_owned()).is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(error.to_string()),
            }
        }
        Ok(())
    });
    let listened = client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| format!("LISTEN {CHANNEL}: {e}"));
    if let Err(error) = listened {
        driver.abort();
        return Err(error);
    }
    match hub.upgrade() {
        Some(hub) => {
            hub.listening.set(1);
            hub.wake_all();
        }
        None => return Ok(()),
    }
    tracing::info!("tail: listening for the writers' commits");
    loop {
        // The hub is checked now and then, so a stopped application's listener goes too.
        match tokio::time::timeout(Duration::from_secs(5), notifications.recv()).await {
            Ok(Some(topic)) => match hub.upgrade() {
                Some(hub) => hub.wake(&topic),
                None => break,
            },
            Ok(None) => break,
            Err(_) => {
                if hub.strong_count() == 0 {
                    break;
                }
            }
        }
    }
    driver.abort();
    drop(client);
    if hub.strong_count() == 0 {
        return Ok(());
    }
    Err("the LISTEN connection closed".to_owned())
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut streams = self.hub.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.total = streams.total.saturating_sub(1);
        if let Some(held) = streams.per_user.get_mut(&self.user) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                streams.per_user.remove(&self.user);
            }
        }
        self.hub.open.dec();
    }
}

/// A position as the client holds it: signed for its topic, with when its `prev` snapshot was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    at: TailPosition,
    /// Unix seconds when `at.prev` was taken.
    made: i64,
}

fn purpose(topic: &str) -> String {
    format!("tail:{topic}")
}

impl Position {
    fn encode(&self, key: &query::CursorKey, topic: &str) -> String {
        let (x, t, i) = match self.at.after {
            None => (None, None, None),
            Some(After::Commit(xact)) => (Some(xact), None, None),
            Some(After::Event {
                xact,
                received_at,
                id,
            }) => (Some(xact), Some(received_at), Some(id.to_string())),
        };
        key.sign_json(
            &purpose(topic),
            &json!({"p": self.at.prev, "u": self.at.upto, "x": x, "t": t, "i": i, "m": self.made}),
        )
    }

    fn decode(key: &query::CursorKey, topic: &str, token: &str) -> Result<Position, String> {
        const INVALID: &str =
            "not a position of this topic's tail: pass the `id` of the last event \
             received unchanged, or leave Last-Event-ID out to start from now";
        if token.len() > MAX_ID_BYTES {
            return Err(INVALID.to_owned());
        }
        let value = key
            .verify_json(&purpose(topic), token)
            .map_err(|_| INVALID.to_owned())?;
        let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
        let number = |name: &str| value.get(name).and_then(Value::as_i64);
        let prev = text("p")
            .filter(|p| tail_db::is_snapshot_text(p))
            .ok_or(INVALID)?;
        let upto = text("u");
        if upto
            .as_deref()
            .is_some_and(|u| !tail_db::is_snapshot_text(u))
        {
            return Err(INVALID.to_owned());
        }
        let after = match (number("x"), number("t"), text("i")) {
            (None, _, _) => None,
            (Some(xact), None, None) => Some(After::Commit(xact)),
            (Some(xact), Some(received_at), Some(id)) => Some(After::Event {
                xact,
                received_at,
                id: id.parse().map_err(|_| INVALID.to_owned())?,
            }),
            _ => return Err(INVALID.to_owned()),
        };
        Ok(Position {
            at: TailPosition { prev, upto, after },
            made: number("m").ok_or(INVALID)?,
        })
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A tail has no pages, sort or count: refused by name.
fn refuse_paging(request: &QueryRequest) -> Result<(), ApiError> {
    let given = [
        ("sort", request.sort.is_some()),
        ("cursor", request.cursor.is_some()),
        ("limit", request.limit.is_some()),
        ("page", request.page.is_some()),
        ("page_size", request.page_size.is_some()),
        ("count", request.count.is_some()),
    ];
    let details: Vec<ErrorDetail> = given
        .iter()
        .filter(|(_, present)| *present)
        .map(|(name, _)| {
            ErrorDetail::validation(
                *name,
                "a tail streams new events in the order they are stored: it takes no `sort`, \
                 `cursor`, `limit`, `page`, `page_size` or `count` (resume with Last-Event-ID)",
            )
        })
        .collect();
    if details.is_empty() {
        Ok(())
    } else {
        Err(ApiError::from_details(details))
    }
}

/// One Server-Sent Events frame of a tail, as the document describes the stream: SSE clients (and
/// schemathesis) check each frame against it, not the body as one string. `event` is absent for an
/// event of the topic (`data`: the event as a query returns it), `freshness`, or `error` (the last).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // only described, never built: the frames are written as text
pub struct SseFrame {
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/stats/{topic}/tail",
    tag = "queries",
    summary = "Follow a topic's new events live (Server-Sent Events)",
    description = "Streams each event as soon as it is stored, oldest first, as Server-Sent Events: \
        `id` is the stream's position after the event (send it back as `Last-Event-ID` to resume \
        exactly), `data` the event as in query answers. Filters, read rules and `fields` as in the GET \
        form of queries. Heartbeats (a comment and `event: freshness`) every `stats.tail_heartbeat_ms`; \
        a client too slow to read is dropped with a last `event: error`.",
    params(
        ("topic" = String, Path, description = "The topic's name."),
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event \
            received: the stream resumes right after it. Without it the stream starts now."),
        ("fields" = Option<String>, Query, description = "Comma-separated fields each event keeps."),
        ("filters" = Option<std::collections::HashMap<String, String>>, Query, style = Form, explode,
         description = "Filters: `<field>=value` (equality) or `<field>_<operator>=value` \
            (`_in` and `_between` take comma-separated values); the fields: \
            `GET /stats/{topic}/fields`."),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The stream of new events.", content_type = "text/event-stream",
         body = SseFrame),
        (status = 400, response = eventgate_core::http::openapi::BadRequest),
        (status = 401, response = eventgate_core::http::openapi::Unauthorized),
        (status = 403, response = eventgate_core::http::openapi::Forbidden),
        (status = 404, response = eventgate_core::http::openapi::NotFound),
        (status = 429, response = eventgate_core::http::openapi::TooManyRequests),
        (status = 503, response = eventgate_core::http::openapi::Unavailable),
    ),
)]
pub(crate) async fn tail(
    reader: TopicReader,
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let restrictions = reader.read_filters()?;
    let topic = &*reader.topic;
    let pairs = crate::routes::query_pairs(&request)?;
    let query_request = QueryRequest::from_query_pairs(&pairs, &topic.fields)?;
    refuse_paging(&query_request)?;
    let selection = query_request
        .fields
        .as_deref()
        .map(|names| query::selection(names, &topic.fields, state.limits.max_selected_fields))
        .transpose();
    let plan = query::plan_restricted(
        &topic.name,
        &query_request,
        &topic.fields,
        &state.limits,
        &state.cursor_key,
        &restrictions,
    );
    let (selection, plan) = match (selection, plan) {
        (Ok(selection), Ok(plan)) => (selection, plan),
        (Err(mut a), Err(b)) => {
            a.details.extend(b.details);
            return Err(a);
        }
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let hub = Arc::clone(&state.tail);
    let resume = match request.headers().get("last-event-id") {
        None => None,
        Some(value) => {
            let token = value.to_str().unwrap_or_default().trim();
            let position = Position::decode(&state.cursor_key, &topic.name, token)
                .map_err(|message| ErrorDetail::validation("Last-Event-ID", message))?;
            let age = unix_now().saturating_sub(position.made);
            if u64::try_from(age).unwrap_or(0) > hub.settings.resume_max.as_secs() {
                return Err(ErrorDetail::validation(
                    "Last-Event-ID",
                    format!(
                        "this position is {age} s old; the commit log keeps {} s \
                         (writer.commit_log_retention_ms): events after it may be gone. Start again \
                         without Last-Event-ID (and query the gap)",
                        hub.settings.resume_max.as_secs()
                    ),
                )
                .into());
            }
            Some(position)
        }
    };
    let permit = hub.permit(&reader.principal.user).inspect_err(|_| {
        state.metrics.limit_hit("tail_streams");
    })?;
    let position = match resume {
        Some(position) => position,
        // Starting now: the current snapshot, read before the answer starts (an outage is a 503).
        None => Position {
            at: TailPosition {
                prev: tail_db::snapshot(&state.pool)
                    .await
                    .map_err(|e| state.store_error(e))?,
                upto: None,
                after: None,
            },
            made: unix_now(),
        },
    };
    let freshness = crate::freshness::current(&state, &topic.name).await;
    let (sender, receiver) = mpsc::channel::<Bytes>(1);
    let last_words: Arc<Mutex<Option<Bytes>>> = Arc::default();
    let stream = Tail {
        state: state.clone(),
        topic: topic.name.clone(),
        plan,
        selection,
        position,
        sender,
        last_words: Arc::clone(&last_words),
        last_sent: Instant::now(),
        _permit: permit,
    };
    tokio::spawn(stream.run(hub.subscribe(&topic.name)));
    let body = futures_util::stream::unfold(Some((receiver, last_words)), |held| async move {
        let (mut receiver, last_words) = held?;
        match receiver.recv().await {
            Some(piece) => Some((Ok::<_, std::io::Error>(piece), Some((receiver, last_words)))),
            // The task ended: its last words (why), then the end of the body.
            None => {
                let words = last_words.lock().unwrap_or_else(|e| e.into_inner()).take();
                words.map(|w| (Ok(w), None))
            }
        }
    });
    let mut response = HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        // Proxies (nginx) must not buffer the stream.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body);
    if let Some(freshness) = &freshness {
        freshness.apply(&mut response);
    }
    response.headers_mut().insert(
        HeaderName::from_static("vary"),
        HeaderValue::from_static("Authorization"),
    );
    Ok(response)
}

/// One live tail: the task that polls and hands frames to the body.
struct Tail {
    state: web::Data<AppState>,
    topic: String,
    plan: QueryPlan,
    selection: Option<Selection>,
    position: Position,
    sender: mpsc::Sender<Bytes>,
    /// What the body says after the last piece when the task gave up.
    last_words: Arc<Mutex<Option<Bytes>>>,
    last_sent: Instant,
    /// Held while the task runs: a dropped tail gives its place back at once, even while its client,
    /// stalled, still holds the connection (with at most one piece and the last words buffered).
    _permit: StreamPermit,
}

/// Why a tail ended, as its last `event: error`.
enum End {
    /// The client went away: nothing to say.
    Gone,
    SlowConsumer,
    Database(String),
}

impl Tail {
    async fn run(mut self, mut wake: watch::Receiver<u64>) {
        let settings = self.state.tail.settings.clone();
        let mut opening = format!("retry: {RETRY_MS}\n").into_bytes();
        self.freshness_frame(&mut opening).await;
        let end = 'stream: {
            if !self.send(Bytes::from(opening)).await {
                break 'stream End::SlowConsumer;
            }
            loop {
                // Everything committed since the position, in bounded polls.
                loop {
                    match self.poll_once().await {
                        Ok((body, more)) => {
                            if !body.is_empty() && !self.send(Bytes::from(body)).await {
                                break 'stream End::SlowConsumer;
                            }
                            if !more {
                                break;
                            }
                        }
                        Err(error) => break 'stream End::Database(error),
                    }
                }
                if self.sender.is_closed() {
                    break 'stream End::Gone;
                }
                let heartbeat_at = self.last_sent + settings.heartbeat;
                tokio::select! {
                    changed = wake.changed() => {
                        if changed.is_err() {
                            // The hub is gone (the application stops): poll on the interval.
                            tokio::time::sleep(settings.poll).await;
                        }
                    }
                    _ = tokio::time::sleep(settings.poll) => {}
                    _ = tokio::time::sleep_until(heartbeat_at.into()) => {
                        let mut frame = format!(": heartbeat\nid: {}\n\n", self.id()).into_bytes();
                        self.freshness_frame(&mut frame).await;
                        if !self.send(Bytes::from(frame)).await {
                            break 'stream End::SlowConsumer;
                        }
                    }
                    _ = self.sender.closed() => break 'stream End::Gone,
                }
            }
        };
        let (reason, message) = match end {
            End::Gone => return,
            End::SlowConsumer => {
                if self.sender.is_closed() {
                    return;
                }
                self.state.metrics.limit_hit("tail_slow_consumer");
                tracing::warn!(topic = %self.topic, "tail dropped: the client stopped reading");
                (
                    "slow_consumer",
                    format!(
                        "the client did not read for {} ms (stats.tail_send_timeout_ms); reconnect \
                         with Last-Event-ID to resume",
                        settings.send_timeout.as_millis()
                    ),
                )
            }
            End::Database(error) => {
                tracing::warn!(topic = %self.topic, %error, "tail ended by a database failure");
                (
                    "database",
                    "the event store failed; reconnect with Last-Event-ID to resume".to_owned(),
                )
            }
        };
        let mut words = format!("id: {}\nevent: error\ndata: ", self.id()).into_bytes();
        crate::routes::write_json(&mut words, &json!({"reason": reason, "message": message}));
        words.extend_from_slice(b"\n\n");
        *self.last_words.lock().unwrap_or_else(|e| e.into_inner()) = Some(Bytes::from(words));
        // Dropping the sender ends the body after these words.
    }

    /// The current position as an SSE id.
    fn id(&self) -> String {
        self.position.encode(&self.state.cursor_key, &self.topic)
    }

    /// An `event: freshness` frame, when the topic's freshness can be read.
    async fn freshness_frame(&self, out: &mut Vec<u8>) {
        if let Some(freshness) = crate::freshness::current(&self.state, &self.topic).await {
            out.extend_from_slice(b"event: freshness\ndata: ");
            crate::routes::write_json(out, &freshness.to_json());
            out.extend_from_slice(b"\n\n");
        }
    }

    /// One poll, written as frames; whether more is ready at once.
    async fn poll_once(&mut self) -> Result<(Vec<u8>, bool), String> {
        let settings = &self.state.tail.settings;
        let key = &self.state.cursor_key;
        let topic = self.topic.clone();
        let selection = self.selection.as_ref();
        let made = self.position.made;
        let mut body = Vec::new();
        let polled = tail_db::poll(
            &self.state.pool,
            &self.topic,
            &self.plan,
            &self.position.at,
            tail_db::PollBounds {
                rows: POLL_ROWS,
                bytes: settings.poll_bytes,
            },
            &mut body,
            |out, event, after| {
                let id = Position {
                    at: after.clone(),
                    made,
                }
                .encode(key, &topic);
                out.extend_from_slice(b"id: ");
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(b"\ndata: ");
                event.write_json_as(out, selection);
                out.extend_from_slice(b"\n\n");
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        if polled.cut_by_bytes {
            self.state.metrics.limit_hit("page_bytes");
        }
        let round_done = polled.next.upto.is_none();
        self.position.at = polled.next;
        if round_done {
            self.position.made = unix_now();
        }
        Ok((body, polled.more))
    }

    /// Hands `bytes` to the body in pieces; `false` when the client is gone or did not take a piece
    /// within the send timeout.
    async fn send(&mut self, mut bytes: Bytes) -> bool {
        let timeout = self.state.tail.settings.send_timeout;
        while !bytes.is_empty() {
            let piece = bytes.split_to(bytes.len().min(PIECE_BYTES));
            match tokio::time::timeout(timeout, self.sender.send(piece)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
        self.last_sent = Instant::now();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_signed_and_bound_to_their_topic() {
        let key = query::CursorKey::new(b"a-test-cursor-secret-of-enough-length");
        let position = Position {
            at: TailPosition {
                prev: "740:745:741,743".to_owned(),
                upto: Some("746:746:".to_owned()),
                after: Some(After::Event {
                    xact: 744,
                    received_at: 1_735_689_600_000_001,
                    id: uuid::Uuid::nil(),
                }),
            },
            made: 1_735_689_600,
        };
        let token = position.encode(&key, "audit.logs");
        assert_eq!(
            Position::decode(&key, "audit.logs", &token).expect("valid"),
            position
        );
        assert!(Position::decode(&key, "web.events", &token).is_err());
        assert!(Position::decode(&key, "audit.logs", "garbage").is_err());
        let between = Position {
            at: TailPosition {
                prev: "746:746:".to_owned(),
                upto: None,
                after: None,
            },
            made: 1,
        };
        let token = between.encode(&key, "audit.logs");
        assert_eq!(
            Position::decode(&key, "audit.logs", &token).expect("valid"),
            between
        );
    }
}
