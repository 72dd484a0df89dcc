//! Time buckets: their units, time zone names and instants as answers write them; and, for the
//! reference semantics only (tests and the `testing` feature), the truncation of wall-clock time that the
//! SQL's `date_trunc` does, and the zone rules it needs.

#[cfg(any(test, feature = "testing"))]
use crate::query::value::{
    civil_from_days, days_from_civil, Decimal, MAX_CLIENT_MICROS, MIN_CLIENT_MICROS,
    PG_EPOCH_MICROS,
};
use crate::query::value::{format_micros, Micros};

/// The unit of a time bucket; each is a Postgres `date_trunc` field name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeUnit {
    Minute,
    Hour,
    Day,
    /// Weeks start on Monday (ISO 8601).
    Week,
    Month,
    Quarter,
    Year,
}

impl TimeUnit {
    pub const ALL: [TimeUnit; 7] = [
        TimeUnit::Minute,
        TimeUnit::Hour,
        TimeUnit::Day,
        TimeUnit::Week,
        TimeUnit::Month,
        TimeUnit::Quarter,
        TimeUnit::Year,
    ];

    /// The `date_trunc` field name (also the name clients write).
    pub fn as_str(self) -> &'static str {
        match self {
            TimeUnit::Minute => "minute",
            TimeUnit::Hour => "hour",
            TimeUnit::Day => "day",
            TimeUnit::Week => "week",
            TimeUnit::Month => "month",
            TimeUnit::Quarter => "quarter",
            TimeUnit::Year => "year",
        }
    }

    pub fn parse(name: &str) -> Option<TimeUnit> {
        TimeUnit::ALL.into_iter().find(|u| u.as_str() == name)
    }
}

/// The time zone used when a request names none.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// Whether `name` looks like an IANA time zone name (`Europe/Berlin`, `America/Argentina/Buenos_Aires`,
/// `Etc/GMT+5`, `UTC`). Whether the zone exists is checked by the stats-api against the database's own
/// list, which is what interprets it.
pub fn is_time_zone_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'))
        && !name.contains("//")
        && !name.ends_with('/')
}

/// RFC 3339 in UTC, with as many fraction digits as needed (none for whole seconds).
pub fn format_instant(micros: Micros) -> String {
    let text = format_micros(micros);
    // format_micros always writes `.ffffffZ`.
    match text.strip_suffix("Z").and_then(|t| t.rsplit_once('.')) {
        Some((whole, fraction)) => {
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() {
                format!("{whole}Z")
            } else {
                format!("{whole}.{fraction}Z")
            }
        }
        None => text,
    }
}

// From here on: what only the reference semantics needs (`super::reference`).

/// How wall-clock time relates to instants in a time zone; the tz database itself lives outside core
/// (Postgres in production, a tz library in tests). Both functions work in microseconds, with wall-clock
/// times written as if they were UTC instants.
#[cfg(any(test, feature = "testing"))]
pub trait ZoneRules {
    /// The wall-clock time of `instant`.
    fn to_local(&self, instant: Micros) -> Micros;
    /// The instant of a wall-clock time, resolved as Postgres does: in a gap, with the offset in force
    /// before it; in a fold, with the offset in force after it.
    fn instant_of_local(&self, local: Micros) -> Micros;
}

/// UTC: wall-clock time is the instant.
#[cfg(any(test, feature = "testing"))]
pub struct Utc;

#[cfg(any(test, feature = "testing"))]
impl ZoneRules for Utc {
    fn to_local(&self, instant: Micros) -> Micros {
        instant
    }
    fn instant_of_local(&self, local: Micros) -> Micros {
        local
    }
}

#[cfg(any(test, feature = "testing"))]
const MICROS_PER_MINUTE: i64 = 60_000_000;
#[cfg(any(test, feature = "testing"))]
const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;
#[cfg(any(test, feature = "testing"))]
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// Truncates a wall-clock time (microseconds, as if UTC) to the start of its `unit`.
#[cfg(any(test, feature = "testing"))]
pub fn truncate_local(local: Micros, unit: TimeUnit) -> Micros {
    let floor = |step: i64| local.div_euclid(step) * step;
    match unit {
        TimeUnit::Minute => floor(MICROS_PER_MINUTE),
        TimeUnit::Hour => floor(MICROS_PER_HOUR),
        TimeUnit::Day => floor(MICROS_PER_DAY),
        TimeUnit::Week => {
            let days = local.div_euclid(MICROS_PER_DAY);
            // 1970-01-01 was a Thursday: three days after a Monday.
            (days - (days + 3).rem_euclid(7)) * MICROS_PER_DAY
        }
        TimeUnit::Month | TimeUnit::Quarter | TimeUnit::Year => {
            let days = local.div_euclid(MICROS_PER_DAY);
            let (year, month, _) = civil_from_days(days);
            let month = match unit {
                TimeUnit::Month => month,
                TimeUnit::Quarter => (month - 1) / 3 * 3 + 1,
                _ => 1,
            };
            days_from_civil(year, month, 1) * MICROS_PER_DAY
        }
    }
}

/// The instant of an epoch-ms value as the SQL computes it (`to_timestamp(ms * 0.001)`): only within
/// years 0001–9999, rounded to the microsecond the way Postgres converts a double.
#[cfg(any(test, feature = "testing"))]
pub fn epoch_ms_instant(ms: &Decimal) -> Option<Micros> {
    let low = Decimal::from_i64(MIN_CLIENT_MICROS / 1000);
    let high = Decimal::from_i64((MAX_CLIENT_MICROS + 1) / 1000);
    if *ms < low || *ms >= high {
        return None;
    }
    // ms × 10⁻³ as an exact decimal string, then the correctly rounded double (as Postgres' numeric →
    // float8), then Postgres' float8 → timestamptz: shift to its epoch, scale, round half to even.
    let text = ms.to_string();
    let seconds_text = match text.split_once('e') {
        Some((mantissa, exponent)) => format!("{mantissa}e{}", exponent.parse::<i64>().ok()? - 3),
        None => format!("{text}e-3"),
    };
    let seconds: f64 = seconds_text.parse().ok()?;
    let shifted = seconds - (PG_EPOCH_MICROS / 1_000_000) as f64;
    let micros = (shifted * 1_000_000.0).round_ties_even();
    Some(micros as i64 + PG_EPOCH_MICROS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zone_names_are_checked_for_shape() {
        for ok in [
            "UTC",
            "Europe/Berlin",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
            "EST5EDT",
        ] {
            assert!(is_time_zone_name(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "Europe//Berlin",
            "Europe/",
            "UTC'",
            "Europe/Berlin; DROP",
            "+05:00",
            "1UTC",
        ] {
            assert!(!is_time_zone_name(bad), "{bad}");
        }
    }

    #[test]
    fn truncation_to_each_unit() {
        // 2025-03-05T13:47:21.5Z, a Wednesday.
        let t = 1_741_182_441_500_000;
        let cases = [
            (TimeUnit::Minute, "2025-03-05T13:47:00Z"),
            (TimeUnit::Hour, "2025-03-05T13:00:00Z"),
            (TimeUnit::Day, "2025-03-05T00:00:00Z"),
            (TimeUnit::Week, "2025-03-03T00:00:00Z"),
            (TimeUnit::Month, "2025-03-01T00:00:00Z"),
            (TimeUnit::Quarter, "2025-01-01T00:00:00Z"),
            (TimeUnit::Year, "2025-01-01T00:00:00Z"),
        ];
        for (unit, want) in cases {
            assert_eq!(format_instant(truncate_local(t, unit)), want, "{unit:?}");
        }
        // Before 1970 and on a Monday itself.
        assert_eq!(
            format_instant(truncate_local(-1, TimeUnit::Week)),
            "1969-12-29T00:00:00Z"
        );
        assert_eq!(
            format_instant(truncate_local(-1, TimeUnit::Quarter)),
            "1969-10-01T00:00:00Z"
        );
        let monday = 1_740_960_000_000_000; // 2025-03-03T00:00:00Z
        assert_eq!(truncate_local(monday, TimeUnit::Week), monday);
    }

    #[test]
    fn epoch_ms_values_become_instants_within_years_1_to_9999() {
        let d = |s: &str| Decimal::parse(s).expect("decimal");
        assert_eq!(
            epoch_ms_instant(&d("1735689600000")),
            Some(1_735_689_600_000_000)
        );
        assert_eq!(
            epoch_ms_instant(&d("1735689600000.5")),
            Some(1_735_689_600_000_500)
        );
        assert_eq!(epoch_ms_instant(&d("-1")), Some(-1000));
        assert_eq!(epoch_ms_instant(&d("1e20")), None);
        assert_eq!(epoch_ms_instant(&d("253402300800000")), None);
        // Far from 1970 a double cannot hold every microsecond: Postgres is off by a few, and so are we.
        assert_eq!(
            epoch_ms_instant(&d("253402300799999")),
            Some(253_402_300_799_999_008)
        );
        assert_eq!(
            epoch_ms_instant(&d("-62135596800000")),
            Some(MIN_CLIENT_MICROS)
        );
        assert_eq!(epoch_ms_instant(&d("-62135596800001")), None);
    }

    #[test]
    fn format_instant_drops_empty_fractions() {
        assert_eq!(format_instant(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_instant(1_500), "1970-01-01T00:00:00.0015Z");
        assert_eq!(format_instant(-1), "1969-12-31T23:59:59.999999Z");
    }
}
