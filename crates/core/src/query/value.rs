//! Typed values of the query language: exact decimals, scalars, instants and their parsing.
//!
//! Everything here is defined so that Rust and Postgres agree exactly:
//! - numbers are exact decimals compared like Postgres `numeric` (so `1` equals `1.0`);
//! - text compares byte-wise (UTF-8 order, which is `str`'s `Ord` and Postgres `COLLATE "C"`);
//! - instants are microseconds since the Unix epoch (Postgres `timestamptz` resolution).

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Number, Value};
use time::OffsetDateTime;
use uuid::Uuid;

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

const MICROS_PER_SEC: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;
/// 2000-01-01T00:00:00Z, Postgres' epoch, in microseconds since the Unix epoch.
pub const PG_EPOCH_MICROS: Micros = 946_684_800 * MICROS_PER_SEC;
/// 0001-01-01T00:00:00Z: the earliest instant a client may give.
pub const MIN_CLIENT_MICROS: Micros = -62_135_596_800 * MICROS_PER_SEC;
/// 9999-12-31T23:59:59.999999Z: the latest instant a client may give.
pub const MAX_CLIENT_MICROS: Micros = 253_402_300_800 * MICROS_PER_SEC - 1;

/// An exact decimal number, normalised so that structural equality is numeric equality.
///
/// The value is `±0.d₁d₂…dₙ × 10^exponent` with no leading or trailing zero digit; zero has no digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decimal {
    negative: bool,
    digits: String,
    exponent: i64,
}

/// Exponents beyond this are refused when parsing (Postgres `numeric` itself stops at ±1000 for input).
const MAX_DECIMAL_EXPONENT: i64 = 100_000;

impl Decimal {
    pub fn zero() -> Decimal {
        Decimal {
            negative: false,
            digits: String::new(),
            exponent: 0,
        }
    }

    /// Parses a JSON number (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`; leading zeros are tolerated).
    pub fn parse(text: &str) -> Option<Decimal> {
        let bytes = text.as_bytes();
        let mut i = 0;
        let negative = bytes.first() == Some(&b'-');
        if negative {
            i += 1;
        }
        let int_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let int_digits = &text[int_start..i];
        if int_digits.is_empty() {
            return None;
        }
        let mut frac_digits = "";
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            frac_digits = &text[start..i];
            if frac_digits.is_empty() {
                return None;
            }
        }
        let mut exp: i64 = 0;
        if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
            i += 1;
            let mut exp_negative = false;
            if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
                exp_negative = bytes[i] == b'-';
                i += 1;
            }
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let exp_text = &text[start..i];
            if exp_text.is_empty() || exp_text.len() > 12 {
                return None;
            }
            exp = exp_text.parse().ok()?;
            if exp_negative {
                exp = -exp;
            }
        }
        if i != bytes.len() || exp.abs() > MAX_DECIMAL_EXPONENT {
            return None;
        }
        let all: String = format!("{int_digits}{frac_digits}");
        let point = int_digits.len() as i64 + exp;
        let trimmed_leading = all.trim_start_matches('0');
        let leading_zeros = (all.len() - trimmed_leading.len()) as i64;
        let digits = trimmed_leading.trim_end_matches('0');
        if digits.is_empty() {
            return Some(Decimal::zero());
        }
        Some(Decimal {
            negative,
            digits: digits.to_owned(),
            exponent: point - leading_zeros,
        })
    }

    pub fn from_i64(value: i64) -> Decimal {
        Decimal::from_scaled(value, 0)
    }

    /// `mantissa × 10^-scale`.
    pub fn from_scaled(mantissa: i64, scale: i64) -> Decimal {
        let magnitude = mantissa.unsigned_abs().to_string();
        let point = magnitude.len() as i64 - scale;
        let digits = magnitude.trim_end_matches('0');
        if digits.is_empty() {
            return Decimal::zero();
        }
        Decimal {
            negative: mantissa < 0,
            digits: digits.to_owned(),
            exponent: point,
        }
    }

    /// Milliseconds (as an exact decimal) of an instant in microseconds.
    pub fn millis_from_micros(micros: Micros) -> Decimal {
        Decimal::from_scaled(micros, 3)
    }

    pub fn from_json_number(number: &Number) -> Option<Decimal> {
        Decimal::parse(&number.to_string())
    }

    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Whether the value has no fractional part.
    pub fn is_integer(&self) -> bool {
        self.is_zero() || self.exponent >= self.digits.len() as i64
    }

    /// A JSON number with exactly this value, when `serde_json` can hold one (i64, u64, or an f64 whose
    /// shortest representation is this value).
    pub fn to_json_number(&self) -> Option<Number> {
        let number: Number = serde_json::from_str(&self.to_string()).ok()?;
        (Decimal::from_json_number(&number).as_ref() == Some(self)).then_some(number)
    }
}

impl fmt::Display for Decimal {
    /// A JSON number (and valid Postgres `numeric` input): plain notation when short, else `digitsEexp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        if self.negative {
            f.write_str("-")?;
        }
        let n = self.digits.len() as i64;
        // value = digits × 10^(exponent - n)
        let shift = self.exponent - n;
        if (0..=30).contains(&shift) {
            write!(f, "{}{}", self.digits, "0".repeat(shift as usize))
        } else if shift < 0 && self.exponent > 0 {
            let (int, frac) = self.digits.split_at(self.exponent as usize);
            write!(f, "{int}.{frac}")
        } else if shift < 0 && self.exponent > -30 {
            write!(
                f,
                "0.{}{}",
                "0".repeat((-self.exponent) as usize),
                self.digits
            )
        } else {
            write!(f, "{}e{}", self.digits, shift)
        }
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        fn sign(d: &Decimal) -> i8 {
            if d.is_zero() {
                0
            } else if d.negative {
                -1
            } else {
                1
            }
        }
        let (a, b) = (sign(self), sign(other));
        if a != b || a == 0 {
            return a.cmp(&b);
        }
        let magnitude = self
            .exponent
            .cmp(&other.exponent)
            .then_with(|| self.digits.cmp(&other.digits));
        if a < 0 {
            magnitude.reverse()
        } else {
            magnitude
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A typed, non-null value: a filter operand or a sort-key value.
///
/// Variants of different kinds never meet (the field type decides the kind); the derived `Ord` orders
/// within a kind the way Postgres does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scalar {
    Uuid(Uuid),
    Text(String),
    Number(Decimal),
    Bool(bool),
    /// Microseconds since the Unix epoch.
    Instant(Micros),
}

/// The value of one sort key for one event; `None` is a missing, `null` or wrong-typed value.
pub type SortValue = Option<Scalar>;

/// Microseconds of an envelope timestamp as Postgres stores it when diesel writes it: diesel truncates
/// sub-microsecond digits toward 2000-01-01 (the Postgres epoch), so this does the same.
pub fn event_micros(timestamp: OffsetDateTime) -> Micros {
    let nanos = timestamp.unix_timestamp_nanos();
    let relative = nanos - i128::from(PG_EPOCH_MICROS) * 1000;
    let micros = relative / 1000 + i128::from(PG_EPOCH_MICROS);
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year 0 = 1 BC), as Postgres computes them.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Postgres regular expression (ARE) matching exactly the strings [`parse_stored_time`] accepts. The SQL
/// side only casts a payload string to `timestamptz` when it matches, so a malformed value can never make
/// a query fail: it is treated as missing, in SQL and in Rust alike.
pub const STORED_TIME_REGEX: &str = concat!(
    "^(",
    "([0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)-",
    "((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)",
    "|([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)-02-29",
    ")",
    "(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-5]):[0-5][0-9]))?$"
);

#[derive(Clone, Copy, PartialEq, Eq)]
enum TimeSyntax {
    /// What a payload date-time string must look like to count as an instant (mirrors Postgres).
    Stored,
    /// What a client may write in a filter.
    Client,
}

/// The instant of a payload string of a date-time field: `YYYY-MM-DD` (midnight UTC) or
/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)` with a valid date, year 0001–9999, offset at most ±15:59.
/// Fractions are rounded to microseconds as Postgres does (`rint(fraction × 10⁶)`, ties to even).
/// Anything else is not an instant (`None`), and SQL agrees (see [`STORED_TIME_REGEX`]).
pub fn parse_stored_time(text: &str) -> Option<Micros> {
    parse_iso(text, TimeSyntax::Stored)
}

/// A client-given instant in a string: `YYYY-MM-DD` (midnight UTC) or an RFC 3339 date-time with an
/// offset (`T`, `t` or a space between date and time; `Z`/`z` or `±HH:MM`, where a space may stand for
/// `+` as an unencoded `+` in a query string becomes one); sub-microsecond digits are truncated.
pub fn parse_client_time_text(text: &str) -> Option<Micros> {
    parse_iso(text, TimeSyntax::Client)
}

fn parse_iso(text: &str, syntax: TimeSyntax) -> Option<Micros> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.iter().all(u8::is_ascii_digit) {
            Some(
                part.iter()
                    .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')),
            )
        } else {
            None
        }
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let date_micros = days_from_civil(year, month, day) * MICROS_PER_DAY;
    if b.len() == 10 {
        return Some(date_micros);
    }
    let sep_ok = match syntax {
        TimeSyntax::Stored => b[10] == b'T',
        TimeSyntax::Client => matches!(b[10], b'T' | b't' | b' '),
    };
    if !sep_ok || b.len() < 20 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut fraction_micros = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &text[start..i];
        if digits.is_empty() {
            return None;
        }
        fraction_micros = match syntax {
            TimeSyntax::Stored => {
                if digits.len() > 9 {
                    return None;
                }
                // Postgres: fsec = rint(strtod(".digits") * 1000000).
                let fraction: f64 = format!("0.{digits}").parse().ok()?;
                (fraction * 1_000_000.0).round_ties_even() as i64
            }
            TimeSyntax::Client => {
                let mut padded: String = digits.chars().take(6).collect();
                while padded.len() < 6 {
                    padded.push('0');
                }
                padded.parse().ok()?
            }
        };
    }
    let rest = &b[i..];
    let offset_secs = match rest {
        [b'Z'] => 0,
        [b'z'] if syntax == TimeSyntax::Client => 0,
        // A space for `+`: what a `+` in an unencoded query string turns into.
        [sign @ (b'+' | b'-' | b' '), h1, h2, b':', m1, m2]
            if *sign != b' ' || syntax == TimeSyntax::Client =>
        {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let hours = i64::from(h1 - b'0') * 10 + i64::from(h2 - b'0');
            let minutes = i64::from(m1 - b'0') * 10 + i64::from(m2 - b'0');
            let max_hours = if syntax == TimeSyntax::Stored { 15 } else { 23 };
            if hours > max_hours || minutes > 59 {
                return None;
            }
            let secs = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let local =
        date_micros + (hour * 3600 + minute * 60 + second) * MICROS_PER_SEC + fraction_micros;
    Some(local - offset_secs * MICROS_PER_SEC)
}

/// Why a client value is not an instant.
pub const TIME_EXPECTED: &str =
    "expected a date (2025-01-31), a date-time with offset (2025-01-31T10:00:00Z) or epoch milliseconds";

/// A client-given instant: an ISO date or date-time string, or epoch milliseconds (a JSON integer, or a
/// string of digits). Must lie within years 0001–9999.
pub fn parse_client_time(value: &Value) -> Result<Micros, String> {
    let micros = match value {
        Value::Number(n) => match n.as_i64() {
            Some(ms) => ms.checked_mul(1000),
            None => {
                return Err(format!(
                    "{TIME_EXPECTED}; epoch milliseconds must be an integer"
                ))
            }
        },
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
                s.parse::<i64>().ok().and_then(|ms| ms.checked_mul(1000))
            } else {
                match parse_client_time_text(s) {
                    Some(us) => Some(us),
                    None if looks_like_local_time(s) => {
                        return Err(format!(
                            "`{}` has no offset: write `Z` or `+HH:MM` after the time",
                            shorten(s, 64)
                        ))
                    }
                    None => {
                        return Err(format!("{TIME_EXPECTED}; `{}` is not one", shorten(s, 64)))
                    }
                }
            }
        }
        _ => return Err(format!("{TIME_EXPECTED}; got {}", json_kind(value))),
    };
    match micros {
        Some(us) if (MIN_CLIENT_MICROS..=MAX_CLIENT_MICROS).contains(&us) => Ok(us),
        _ => Err("instant out of range (years 0001 to 9999)".to_owned()),
    }
}

fn looks_like_local_time(s: &str) -> bool {
    s.len() <= 64 && parse_client_time_text(&format!("{s}Z")).is_some()
}

/// The JSON kind of a value, for error messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// At most `max` characters of `s`, with `…` when cut; for echoing client text in messages.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

/// Formats an instant as RFC 3339 (UTC, microseconds), for messages and documentation.
pub fn format_micros(micros: Micros) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let in_day = micros.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = in_day / MICROS_PER_SEC;
    let frac = in_day % MICROS_PER_SEC;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// (year, month, day) of days since 1970-01-01, proleptic Gregorian.
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}
