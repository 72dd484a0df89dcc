//! Lengths of time the storage settings are written in: how long a topic's events are kept
//! (`"retention": "90d"` in its schema's `x-eventgate`, `storage.retention` for every other) and how much
//! time one partition of the history holds (`storage.partition_span`).
//!
//! Written by hand rather than with jiff's `Span` (which core already links): a span there may be in
//! months or years, whose length depends on the date. A retention here is a fixed number of seconds, so
//! "is this partition expired" has one answer whatever the calendar, and the accepted units are few
//! enough to state in one line: `<n>h`, `<n>d`, `<n>w` (hours, days of 24 h, weeks), or `forever`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const HOUR: u64 = 3600;

/// A whole number of hours, days or weeks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Period {
    seconds: u64,
    /// How it was written, to print it back the same way.
    unit: char,
}

impl Period {
    pub const fn days(days: u64) -> Period {
        Period {
            seconds: days * 24 * HOUR,
            unit: 'd',
        }
    }

    pub fn seconds(self) -> u64 {
        self.seconds
    }

    pub fn duration(self) -> time::Duration {
        time::Duration::seconds(i64::try_from(self.seconds).unwrap_or(i64::MAX))
    }

    /// The start of the period holding `at`, periods tiling time from the Unix epoch (so days start at
    /// midnight UTC): the one rule of where the history's partitions begin, for the maintenance that
    /// creates them and the writer that looks an event up in its neighbour.
    pub fn start_of(self, at: time::OffsetDateTime) -> time::OffsetDateTime {
        let length = i64::try_from(self.seconds).unwrap_or(i64::MAX).max(1);
        let seconds = at.unix_timestamp();
        time::OffsetDateTime::from_unix_timestamp(seconds - seconds.rem_euclid(length))
            .unwrap_or(at)
    }
}

impl FromStr for Period {
    type Err = String;

    fn from_str(text: &str) -> Result<Period, String> {
        let text = text.trim();
        let problem = || {
            format!("{text:?} is not a length of time: write <n>h, <n>d or <n>w (hours, days, weeks), e.g. 90d")
        };
        let unit = text.chars().last().ok_or_else(problem)?;
        let per_unit = match unit {
            'h' => HOUR,
            'd' => 24 * HOUR,
            'w' => 7 * 24 * HOUR,
            _ => return Err(problem()),
        };
        let count: u64 = text[..text.len() - 1].parse().map_err(|_| problem())?;
        if count == 0 {
            return Err(format!("{text:?}: a length of time must be more than zero"));
        }
        let seconds = count.checked_mul(per_unit).ok_or_else(problem)?;
        // Beyond 10,000 years a timestamp stops being one Postgres can add it to.
        if seconds > 10_000 * 365 * 24 * HOUR {
            return Err(format!("{text:?} is longer than 10,000 years"));
        }
        Ok(Period { seconds, unit })
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_unit = match self.unit {
            'h' => HOUR,
            'w' => 7 * 24 * HOUR,
            _ => 24 * HOUR,
        };
        write!(f, "{}{}", self.seconds / per_unit, self.unit)
    }
}

/// How long events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retention {
    /// Nothing is ever removed (the default).
    #[default]
    Forever,
    For(Period),
}

impl Retention {
    /// The longer of two retentions (`Forever` is the longest).
    pub fn max(self, other: Retention) -> Retention {
        match (self, other) {
            (Retention::For(a), Retention::For(b)) => Retention::For(a.max(b)),
            _ => Retention::Forever,
        }
    }

    /// The retention in seconds, `None` for forever.
    pub fn seconds(self) -> Option<u64> {
        match self {
            Retention::Forever => None,
            Retention::For(period) => Some(period.seconds()),
        }
    }
}

impl FromStr for Retention {
    type Err = String;

    fn from_str(text: &str) -> Result<Retention, String> {
        match text.trim() {
            "forever" => Ok(Retention::Forever),
            other => other.parse().map(Retention::For),
        }
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::Forever => f.write_str("forever"),
            Retention::For(period) => period.fmt(f),
        }
    }
}

macro_rules! as_string {
    ($type:ty) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

as_string!(Period);
as_string!(Retention);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_hours_days_or_weeks() {
        assert_eq!("12h".parse::<Period>().map(Period::seconds), Ok(43_200));
        assert_eq!("90d".parse::<Period>().map(Period::seconds), Ok(7_776_000));
        assert_eq!("2w".parse::<Period>().map(Period::seconds), Ok(1_209_600));
        assert_eq!(
            "90d".parse::<Retention>().map(|r| r.to_string()),
            Ok("90d".to_owned())
        );
        assert_eq!("forever".parse::<Retention>(), Ok(Retention::Forever));
        for bad in [
            "",
            "d",
            "90",
            "90m",
            "1y",
            "-1d",
            "0d",
            "1.5d",
            "99999999999999w",
        ] {
            let error = bad.parse::<Retention>().expect_err(bad);
            assert!(error.contains(bad), "{bad}: {error}");
        }
    }

    #[test]
    fn periods_tile_time_from_the_epoch() {
        use time::macros::datetime;
        let six_hours: Period = "6h".parse().expect("6h");
        assert_eq!(
            six_hours.start_of(datetime!(2026-12-03 07:30 UTC)),
            datetime!(2026-12-03 06:00 UTC)
        );
        assert_eq!(
            Period::days(1).start_of(datetime!(1969-12-31 23:00 UTC)),
            datetime!(1969-12-31 00:00 UTC),
            "before 1970 too (rem_euclid, not %)"
        );
        assert_eq!(six_hours.duration(), time::Duration::hours(6));
    }

    #[test]
    fn forever_is_the_longest() {
        let week: Retention = "1w".parse().expect("1w");
        let day: Retention = "1d".parse().expect("1d");
        assert_eq!(week.max(day), week);
        assert_eq!(day.max(Retention::Forever), Retention::Forever);
        assert_eq!(week.seconds(), Some(604_800));
        assert_eq!(Retention::Forever.seconds(), None);
    }
}
