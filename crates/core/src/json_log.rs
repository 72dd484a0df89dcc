//! JSON log lines without re-parsing. tracing-subscriber's JSON formatter keeps each span's fields as a
//! JSON object string, parses it back into a map for every line it writes, and parses and re-serialises
//! it for every `span.record`: at one line and four records per request that cost ≈ 16 µs of the
//! ingest-api's ≈ 47 µs per single-event request (docs/PERFORMANCE.md). Here a span's fields are kept as
//! the text of JSON object members (`"k":v,"k2":v2`), a record appends to it, and a line splices it in.
//!
//! The lines are the stock formatter's with `flatten_event(true)`, `with_current_span(false)` and
//! `with_span_list(true)`: `timestamp`, `level`, the event's fields, `target`, then `spans` (root first,
//! each `{"name": …, fields…}`) when the event is inside a span. One difference: a span field recorded
//! twice appears twice, and JSON readers keep the last value, which is what the stock formatter keeps.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter: one JSON object per line.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

/// The span field formatter that goes with [`JsonLines`] (`fmt::layer().fmt_fields(SpanFieldsJson)`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SpanFieldsJson;

impl<'writer> FormatFields<'writer> for SpanFieldsJson {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut members = Members::new(&mut writer);
        fields.record(&mut members);
        members.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut members = Members::new(&mut current.fields);
        members.first = first;
        fields.record(&mut members);
        members.result
    }
}

impl<S> FormatEvent<S, SpanFieldsJson> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, SpanFieldsJson>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::with_capacity(32);
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        writer.write_str("{\"timestamp\":")?;
        write_json_str(&mut writer, &timestamp)?;
        writer.write_str(",\"level\":\"")?;
        writer.write_str(event.metadata().level().as_str())?;
        writer.write_char('"')?;
        let mut members = Members::new(&mut writer);
        members.first = false;
        event.record(&mut members);
        members.result?;
        writer.write_str(",\"target\":")?;
        write_json_str(&mut writer, event.metadata().target())?;
        if let Some(scope) = ctx.event_scope() {
            writer.write_str(",\"spans\":[")?;
            for (i, span) in scope.from_root().enumerate() {
                if i > 0 {
                    writer.write_char(',')?;
                }
                writer.write_str("{\"name\":")?;
                write_json_str(&mut writer, span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<SpanFieldsJson>>() {
                    if !fields.fields.is_empty() {
                        writer.write_char(',')?;
                        writer.write_str(&fields.fields)?;
                    }
                }
                writer.write_char('}')?;
            }
            writer.write_char(']')?;
        }
        writer.write_str("}\n")
    }
}

/// Writes fields as JSON object members, each preceded by a comma unless it is the first.
struct Members<'a, W: fmt::Write> {
    out: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<'a, W: fmt::Write> Members<'a, W> {
    fn new(out: &'a mut W) -> Self {
        Members {
            out,
            first: true,
            result: Ok(()),
        }
    }

    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                self.out.write_char(',')?;
            }
            write_json_str(self.out, field.name())?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl<W: fmt::Write> Visit for Members<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| write_json_str(out, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; serde_json writes them as null too.
        self.member(field, |out| {
            if value.is_finite() {
                write!(out, "{value}")
            } else {
                out.write_str("null")
            }
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.member(field, |out| write_json_str(out, &value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| write_json_str(out, &format!("{value:?}")));
    }
}

/// `text` as a JSON string: quotes, backslashes and control characters escaped.
fn write_json_str(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    let mut plain_from = 0;
    for (i, c) in text.char_indices() {
        let escaped = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.write_str(&text[plain_from..i])?;
        if escaped.is_empty() {
            write!(out, "\\u{:04x}", c as u32)?;
        } else {
            out.write_str(escaped)?;
        }
        plain_from = i + c.len_utf8();
    }
    out.write_str(&text[plain_from..])?;
    out.write_char('"')
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Collects the log lines a test's subscriber writes (also used by `http`'s tests).
    #[derive(Clone, Default)]
    pub(crate) struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Lines {
        pub(crate) fn parsed(&self) -> Vec<Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
                .collect()
        }
    }

    /// The same events, spans and records, as the application produces them.
    fn scenario() {
        tracing::info!(count = 3_u64, ratio = 0.5, ok = true, "outside any span");
        let outer = tracing::info_span!(
            "http.request",
            request_id = "r-1",
            http.status_code = tracing::field::Empty,
            enduser.id = tracing::field::Empty,
            weird = tracing::field::Empty,
        );
        let _outer = outer.enter();
        outer.record("enduser.id", "ali\"ce\\");
        outer.record("http.status_code", 202_u64);
        outer.record("weird", "line\nbreak\ttab\u{1}ctl é");
        let inner = tracing::debug_span!("publish", kafka.topic = "audit.logs", n = -4_i64);
        let _inner = inner.enter();
        let error = std::io::Error::other("broker \"down\"");
        tracing::warn!(error = &error as &dyn std::error::Error, nan = f64::NAN, detail = ?vec![1, 2], "inside {}", "two spans");
    }

    fn lines_of(
        layer: impl FnOnce(
            Lines,
        ) -> Box<
            dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync,
        >,
    ) -> Vec<Value> {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(layer(lines.clone()));
        tracing::subscriber::with_default(subscriber, scenario);
        let mut parsed = lines.parsed();
        for line in &mut parsed {
            let timestamp = line
                .as_object_mut()
                .and_then(|o| o.remove("timestamp"))
                .expect("every line has a timestamp");
            assert!(
                time::OffsetDateTime::parse(
                    timestamp.as_str().expect("a string"),
                    &time::format_description::well_known::Rfc3339
                )
                .is_ok(),
                "{timestamp}"
            );
        }
        parsed
    }

    #[test]
    fn lines_are_the_stock_json_formatters_lines() {
        use tracing_subscriber::Layer as _;
        let ours = lines_of(|w| {
            tracing_subscriber::fmt::layer()
                .with_writer(w)
                .fmt_fields(SpanFieldsJson)
                .event_format(JsonLines)
                .boxed()
        });
        let stock = lines_of(|w| {
            tracing_subscriber::fmt::layer()
                .with_writer(w)
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .boxed()
        });
        assert_eq!(ours.len(), 2, "{ours:?}");
        assert_eq!(ours, stock);
        // And what they say, so that both agreeing on nothing would not pass.
        assert_eq!(ours[0]["message"], "outside any span");
        assert_eq!(ours[0]["count"], 3);
        assert!(ours[0].get("spans").is_none());
        assert_eq!(ours[1]["level"], "WARN");
        assert_eq!(ours[1]["message"], "inside two spans");
        assert_eq!(ours[1]["error"], "broker \"down\"");
        assert_eq!(ours[1]["nan"], Value::Null);
        assert_eq!(ours[1]["spans"][0]["name"], "http.request");
        assert_eq!(ours[1]["spans"][0]["enduser.id"], "ali\"ce\\");
        assert_eq!(ours[1]["spans"][0]["http.status_code"], 202);
        assert_eq!(ours[1]["spans"][0]["weird"], "line\nbreak\ttab\u{1}ctl é");
        assert_eq!(ours[1]["spans"][1]["kafka.topic"], "audit.logs");
        assert_eq!(ours[1]["spans"][1]["n"], -4);
    }
}
