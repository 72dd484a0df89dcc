//! Naive date-times: a topic may declare that date-time strings written without an offset
//! (`"2021-01-01 09:15:29.243860"`, as Python's `str(datetime)` and many loggers write them) are wall-clock
//! times of a given time zone. Such a string is rewritten, before the event is validated, into RFC 3339
//! with that zone's offset at that instant (`"2021-01-01T09:15:29.243860Z"`), so the stored payload,
//! its `format: date-time` check and every query see one unambiguous instant.
//!
//! Declared in the schema: `"x-eventgate": {"naive_time_zone": "UTC"}` for every date-time property of
//! the topic, or `"x-eventgate-naive-time-zone": "Europe/Berlin"` on one property (which wins). Zones are
//! `UTC`, a fixed offset (`+02:00`) or an IANA name from the system's time-zone files. A wall-clock time
//! a daylight-saving change skips is read with the offset before the change, one it repeats with the
//! earlier offset (RFC 5545's rule, jiff's "compatible"). What a rule applies to: properties whose schema
//! says `"format": "date-time"`, found through `properties`, array `items`, local `$ref`s and
//! `allOf`/`anyOf`/`oneOf` branches.
//!
//! Only the shape `YYYY-MM-DD[T| ]HH:MM:SS[.fraction]` without an offset is rewritten (plus a space or a
//! lower-case `t` between date and time of a string that has an offset). Anything else is left for the
//! schema to judge.

use serde_json::Value;

/// How deep the schema is walked for date-time properties.
const MAX_DEPTH: usize = 16;
/// The schema key of a property's own zone.
pub const FIELD_KEY: &str = "x-eventgate-naive-time-zone";

/// A time zone naive date-times are read in.
#[derive(Debug, Clone)]
pub enum Zone {
    /// Offset zero: written `Z`.
    Utc,
    /// A fixed offset in seconds east of UTC (whole minutes).
    Fixed(i32),
    Named(jiff::tz::TimeZone),
}

impl Zone {
    /// `UTC` (or `Z`, `Etc/UTC`), `±HH:MM`, or an IANA time-zone name.
    pub fn parse(name: &str) -> Result<Zone, String> {
        if matches!(name, "UTC" | "Z" | "Etc/UTC") {
            return Ok(Zone::Utc);
        }
        if let Some(seconds) = parse_offset(name.as_bytes()) {
            return Ok(if seconds == 0 {
                Zone::Utc
            } else {
                Zone::Fixed(seconds)
            });
        }
        jiff::tz::TimeZone::get(name)
            .map(Zone::Named)
            .map_err(|e| format!("unknown time zone {name:?} ({e})"))
    }

    /// The offset in seconds of the wall-clock time `parts` in this zone; `None` when the date or time
    /// does not exist on any calendar.
    fn offset_of(&self, parts: &Parts) -> Option<i32> {
        match self {
            Zone::Utc => Some(0),
            Zone::Fixed(seconds) => Some(*seconds),
            Zone::Named(tz) => {
                let dt = jiff::civil::DateTime::new(
                    parts.year,
                    parts.month,
                    parts.day,
                    parts.hour,
                    parts.minute,
                    parts.second,
                    0,
                )
                .ok()?;
                // The offset before a change, for a skipped time and a repeated one alike (the
                // "compatible" choice); the wall-clock digits are kept, so the offset must be the one
                // that makes them the chosen instant.
                let offset = match tz.to_ambiguous_zoned_datetime(dt).offset() {
                    jiff::tz::AmbiguousOffset::Unambiguous { offset } => offset,
                    jiff::tz::AmbiguousOffset::Gap { before, .. }
                    | jiff::tz::AmbiguousOffset::Fold { before, .. } => before,
                };
                Some(offset.seconds())
            }
        }
    }
}

/// One step of a path through an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    /// Every element of an array.
    Items,
}

/// Where naive date-times are read in which zone.
#[derive(Debug, Clone)]
pub struct Rule {
    pub path: Vec<Step>,
    pub zone_name: String,
    zone: Zone,
}

/// The rules of a schema: every date-time property with a zone (its own or `default`). A zone name
/// that is not known, or a property zone on something that is not a date-time string, is an error.
pub fn rules(schema: &Value, default: Option<&str>) -> Result<Vec<Rule>, String> {
    let default = match default {
        Some(name) => Some((
            name.to_owned(),
            Zone::parse(name).map_err(|e| format!("x-eventgate.naive_time_zone: {e}"))?,
        )),
        None => None,
    };
    let mut out: Vec<Rule> = Vec::new();
    walk(
        schema,
        schema,
        &mut Vec::new(),
        default.as_ref(),
        &mut out,
        0,
    )?;
    Ok(out)
}

fn walk(
    root: &Value,
    node: &Value,
    path: &mut Vec<Step>,
    default: Option<&(String, Zone)>,
    out: &mut Vec<Rule>,
    depth: usize,
) -> Result<(), String> {
    let Some(obj) = node.as_object() else {
        return Ok(());
    };
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let own = match obj.get(FIELD_KEY) {
        None => None,
        Some(Value::String(name)) => Some((
            name.clone(),
            Zone::parse(name).map_err(|e| format!("{} at {}: {e}", FIELD_KEY, show(path)))?,
        )),
        Some(_) => return Err(format!("{FIELD_KEY} at {}: must be a string", show(path))),
    };
    let is_date_time = obj.get("format").and_then(Value::as_str) == Some("date-time");
    if own.is_some() && !is_date_time && !obj.contains_key("$ref") {
        return Err(format!(
            "{FIELD_KEY} at {}: only a property with \"format\": \"date-time\" may have one",
            show(path)
        ));
    }
    // A property's own zone is passed on to the `$ref`/`allOf` it is made of.
    let zone = own.as_ref().or(default);
    if is_date_time {
        if let Some((name, zone)) = zone {
            if !out.iter().any(|rule| rule.path == *path) {
                out.push(Rule {
                    path: path.clone(),
                    zone_name: name.clone(),
                    zone: zone.clone(),
                });
            }
        }
    }
    if let Some(target) = obj
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|pointer| {
            if pointer.is_empty() {
                Some(root)
            } else {
                root.pointer(pointer)
            }
        })
    {
        walk(root, target, path, zone, out, depth + 1)?;
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = obj.get(key) {
            for branch in branches {
                walk(root, branch, path, zone, out, depth + 1)?;
            }
        }
    }
    if let Some(Value::Object(properties)) = obj.get("properties") {
        for (name, sub) in properties {
            path.push(Step::Key(name.clone()));
            walk(root, sub, path, default, out, depth + 1)?;
            path.pop();
        }
    }
    if let Some(items @ Value::Object(_)) = obj.get("items") {
        path.push(Step::Items);
        walk(root, items, path, default, out, depth + 1)?;
        path.pop();
    }
    Ok(())
}

fn show(path: &[Step]) -> String {
    if path.is_empty() {
        return "the schema's root".to_owned();
    }
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Step::Items => out.push_str("[]"),
        }
    }
    format!("`{out}`")
}

/// Rewrites, in place, every naive date-time of `payload` that a rule covers; returns how many.
pub fn normalise(rules: &[Rule], payload: &mut Value) -> usize {
    rules
        .iter()
        .map(|rule| apply(&rule.path, &rule.zone, payload))
        .sum()
}

fn apply(path: &[Step], zone: &Zone, value: &mut Value) -> usize {
    match path.split_first() {
        None => match value {
            Value::String(text) => match normalised(text, zone) {
                Some(new) => {
                    *text = new;
                    1
                }
                None => 0,
            },
            _ => 0,
        },
        Some((Step::Key(name), rest)) => {
            match value.as_object_mut().and_then(|o| o.get_mut(name)) {
                Some(child) => apply(rest, zone, child),
                None => 0,
            }
        }
        Some((Step::Items, rest)) => match value {
            Value::Array(items) => items.iter_mut().map(|item| apply(rest, zone, item)).sum(),
            _ => 0,
        },
    }
}

/// The parts of a wall-clock date-time.
struct Parts {
    year: i16,
    month: i8,
    day: i8,
    hour: i8,
    minute: i8,
    second: i8,
}

/// `text` rewritten as RFC 3339 when it is a naive date-time (read in `zone`) or a date-time with an
/// offset and a space or `t` between date and time; `None` when there is nothing to rewrite or it is not
/// a valid date-time (the schema then says why).
pub fn normalised(text: &str, zone: &Zone) -> Option<String> {
    let b = text.as_bytes();
    if b.len() < 19 || b.len() > 64 || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<i32> {
        let part = b.get(range)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, d| n * 10 + i32::from(d - b'0')))
    };
    if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let parts = Parts {
        year: i16::try_from(digits(0..4)?).ok()?,
        month: i8::try_from(digits(5..7)?).ok()?,
        day: i8::try_from(digits(8..10)?).ok()?,
        hour: i8::try_from(digits(11..13)?).ok()?,
        minute: i8::try_from(digits(14..16)?).ok()?,
        second: i8::try_from(digits(17..19)?).ok()?,
    };
    // Date and time must exist (no 24:00, no 61st second, no 30 February).
    jiff::civil::DateTime::new(
        parts.year,
        parts.month,
        parts.day,
        parts.hour,
        parts.minute,
        parts.second,
        0,
    )
    .ok()?;
    let mut end = 19;
    if b.get(end) == Some(&b'.') {
        let start = end + 1;
        end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if end == start || end - start > 9 {
            return None;
        }
    }
    let wall = format!("{}T{}", &text[..10], &text[11..end]);
    let rest = &b[end..];
    if rest.is_empty() {
        let offset = zone.offset_of(&parts)?;
        return Some(format!("{wall}{}", format_offset(offset)));
    }
    // An offset is there already: only a non-RFC 3339 separator is worth rewriting.
    let has_offset =
        matches!(rest, [b'Z' | b'z']) || parse_offset(rest).is_some_and(|s| s.abs() < 24 * 3600);
    (has_offset && b[10] != b'T').then(|| format!("{wall}{}", &text[end..]))
}

/// `Z` for zero, else `±HH:MM` (offsets of whole minutes; the few historical zones with seconds in
/// their offset, before 1900, round to the minute as RFC 3339 cannot say more).
fn format_offset(seconds: i32) -> String {
    if seconds == 0 {
        return "Z".to_owned();
    }
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = (seconds.abs() + 30) / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// `±HH:MM` in seconds.
fn parse_offset(b: &[u8]) -> Option<i32> {
    let [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] = b else {
        return None;
    };
    let digit = |c: &u8| c.is_ascii_digit().then(|| i32::from(c - b'0'));
    let hours = digit(h1)? * 10 + digit(h2)?;
    let minutes = digit(m1)? * 10 + digit(m2)?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let seconds = hours * 3600 + minutes * 60;
    Some(if *sign == b'-' { -seconds } else { seconds })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn utc() -> Zone {
        Zone::parse("UTC").expect("UTC")
    }

    #[test]
    fn the_eyes_timestamp_becomes_rfc3339_in_utc() {
        assert_eq!(
            normalised("2021-01-01 09:15:29.243860", &utc()).as_deref(),
            Some("2021-01-01T09:15:29.243860Z")
        );
        assert_eq!(
            normalised("2021-01-01T09:15:29", &utc()).as_deref(),
            Some("2021-01-01T09:15:29Z")
        );
    }

    #[test]
    fn named_zones_give_the_offset_of_that_instant() {
        let berlin = Zone::parse("Europe/Berlin").expect("the system's tz files know Berlin");
        assert_eq!(
            normalised("2021-01-01 09:15:29", &berlin).as_deref(),
            Some("2021-01-01T09:15:29+01:00")
        );
        assert_eq!(
            normalised("2021-07-01 09:15:29", &berlin).as_deref(),
            Some("2021-07-01T09:15:29+02:00")
        );
        // 02:30 does not exist on 2021-03-28 in Berlin: read with the offset before the change.
        assert_eq!(
            normalised("2021-03-28 02:30:00", &berlin).as_deref(),
            Some("2021-03-28T02:30:00+01:00")
        );
        let fixed = Zone::parse("-03:30").expect("an offset");
        assert_eq!(
            normalised("2021-01-01 09:15:29.5", &fixed).as_deref(),
            Some("2021-01-01T09:15:29.5-03:30")
        );
    }

    #[test]
    fn offsets_are_kept_and_only_the_separator_is_fixed() {
        assert_eq!(
            normalised("2021-01-01 09:15:29+02:00", &utc()).as_deref(),
            Some("2021-01-01T09:15:29+02:00")
        );
        assert_eq!(normalised("2021-01-01T09:15:29+02:00", &utc()), None);
        assert_eq!(normalised("2021-01-01T09:15:29Z", &utc()), None);
    }

    #[test]
    fn what_is_not_a_date_time_is_left_to_the_schema() {
        for text in [
            "2021-02-30 09:15:29",
            "2021-01-01 24:00:00",
            "2021-01-01",
            "yesterday",
            "2021-01-01 09:15",
            "2021-01-01 09:15:29.",
            "2021-01-01 09:15:29.1234567890",
            "2021-01-01 09:15:29 UTC",
        ] {
            assert_eq!(normalised(text, &utc()), None, "{text}");
        }
    }

    #[test]
    fn rules_follow_properties_items_and_refs() {
        let schema = json!({
            "$defs": {"when": {"type": "string", "format": "date-time"}},
            "properties": {
                "at": {"type": "string", "format": "date-time"},
                "local": {"type": "string", "format": "date-time", "x-eventgate-naive-time-zone": "Europe/Berlin"},
                "jobs": {"type": "array", "items": {"properties": {"end": {"$ref": "#/$defs/when"}}}},
                "name": {"type": "string"}
            }
        });
        let rules = rules(&schema, Some("UTC")).expect("rules");
        let mut paths: Vec<(String, String)> = rules
            .iter()
            .map(|r| (show(&r.path), r.zone_name.clone()))
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                ("`at`".to_owned(), "UTC".to_owned()),
                ("`jobs[].end`".to_owned(), "UTC".to_owned()),
                ("`local`".to_owned(), "Europe/Berlin".to_owned()),
            ]
        );
        let mut event = json!({
            "at": "2021-01-01 09:15:29.243860",
            "local": "2021-01-01 09:15:29",
            "jobs": [{"end": "2021-01-01 10:00:00"}, {"end": "2021-01-01T10:00:00Z"}, 5],
            "name": "2021-01-01 09:15:29"
        });
        assert_eq!(normalise(&rules, &mut event), 3);
        assert_eq!(
            event,
            json!({
                "at": "2021-01-01T09:15:29.243860Z",
                "local": "2021-01-01T09:15:29+01:00",
                "jobs": [{"end": "2021-01-01T10:00:00Z"}, {"end": "2021-01-01T10:00:00Z"}, 5],
                "name": "2021-01-01 09:15:29"
            })
        );
        // Without a default, only the property with its own zone.
        assert_eq!(rules_of(&schema, None), ["`local`"]);
    }

    fn rules_of(schema: &Value, default: Option<&str>) -> Vec<String> {
        rules(schema, default)
            .expect("rules")
            .iter()
            .map(|r| show(&r.path))
            .collect()
    }

    proptest::proptest! {
        /// Whatever the wall-clock time and zone (daylight-saving gaps and folds included), the rewritten
        /// string is an RFC 3339 date-time the schema's `format` accepts and the query language reads as
        /// the instant jiff's "compatible" choice gives, to the microsecond.
        #[test]
        fn normalised_times_are_the_instant_they_name(
            year in 1900i16..2100,
            month in 1i8..=12,
            day in 1i8..=31,
            hour in 0i8..24,
            minute in 0i8..60,
            second in 0i8..60,
            fraction in proptest::option::of("[0-9]{1,9}"),
            space in proptest::bool::ANY,
            zone in proptest::sample::select(vec![
                "UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "-03:30",
            ]),
        ) {
            let Ok(wall) = jiff::civil::DateTime::new(year, month, day, hour, minute, second, 0) else {
                return Ok(()); // 31 April and the like
            };
            let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
            let text = format!(
                "{year:04}-{month:02}-{day:02}{}{hour:02}:{minute:02}:{second:02}{fraction}",
                if space { ' ' } else { 'T' }
            );
            let normalised = normalised(&text, &Zone::parse(zone).expect("zone")).expect("rewritten");
            let offset = match Zone::parse(zone).expect("zone") {
                Zone::Named(tz) => match tz.to_ambiguous_zoned_datetime(wall).offset() {
                    jiff::tz::AmbiguousOffset::Unambiguous { offset } => offset.seconds(),
                    jiff::tz::AmbiguousOffset::Gap { before, .. }
                    | jiff::tz::AmbiguousOffset::Fold { before, .. } => before.seconds(),
                },
                Zone::Fixed(seconds) => seconds,
                Zone::Utc => 0,
            };
            let local_seconds = jiff::tz::TimeZone::UTC
                .to_zoned_datetime(wall)
                .expect("in range")
                .timestamp()
                .as_second();
            let digits: String = fraction.chars().skip(1).chain(std::iter::repeat('0')).take(9).collect();
            let nanos: i64 = digits.parse().expect("digits");
            let micros = (local_seconds - i64::from((offset + if offset >= 0 { 30 } else { -30 }) / 60 * 60)) * 1_000_000
                + (nanos as f64 / 1000.0).round_ties_even() as i64;
            proptest::prop_assert_eq!(
                crate::query::value::parse_stored_time(&normalised),
                Some(micros),
                "{} → {}", text, normalised
            );
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&json!({"type": "string", "format": "date-time"}))
                .expect("schema");
            proptest::prop_assert!(validator.is_valid(&json!(normalised)), "{}", normalised);
        }
    }

    #[test]
    fn bad_zones_are_refused_at_load() {
        assert!(rules(&json!({}), Some("Mars/Olympus")).is_err());
        let misplaced =
            json!({"properties": {"n": {"type": "integer", "x-eventgate-naive-time-zone": "UTC"}}});
        let err = rules(&misplaced, None).expect_err("not a date-time");
        assert!(err.contains("`n`"), "{err}");
    }
}
