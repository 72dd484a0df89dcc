//! Exact sums of decimals, digit by digit: the reference `sum` (Postgres adds `numeric`s exactly). Only
//! the reference semantics uses it (tests and the `testing` feature).

use std::cmp::Ordering;

use crate::query::value::Decimal;

/// Exact sum of two decimals (the reference `sum`).
pub fn decimal_add(a: &Decimal, b: &Decimal) -> Decimal {
    let (x, y) = (Digits::of(a), Digits::of(b));
    let exponent = x.exponent.min(y.exponent);
    let (xm, ym) = (x.scaled_to(exponent), y.scaled_to(exponent));
    let (negative, magnitude) = if x.negative == y.negative {
        (x.negative, add_magnitudes(&xm, &ym))
    } else {
        match cmp_magnitudes(&xm, &ym) {
            Ordering::Less => (y.negative, sub_magnitudes(&ym, &xm)),
            _ => (x.negative, sub_magnitudes(&xm, &ym)),
        }
    };
    let digits: String = magnitude.iter().map(|d| char::from(b'0' + d)).collect();
    let sign = if negative { "-" } else { "" };
    Decimal::parse(&format!("{sign}{digits}e{exponent}")).unwrap_or_else(Decimal::zero)
}

/// A decimal as sign, base-10 digits (most significant first) and exponent: ±digits × 10^exponent.
struct Digits {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

impl Digits {
    fn of(value: &Decimal) -> Digits {
        let text = value.to_string();
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let (mantissa, shift) = match rest.split_once('e') {
            Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        Digits {
            negative,
            digits,
            exponent: shift - frac.len() as i64,
        }
    }

    fn scaled_to(&self, exponent: i64) -> Vec<u8> {
        let mut digits = self.digits.clone();
        digits.extend(std::iter::repeat_n(0, (self.exponent - exponent) as usize));
        digits
    }
}

fn cmp_magnitudes(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |d: &[u8]| -> Vec<u8> { d.iter().copied().skip_while(|&x| x == 0).collect() };
    let (a, b) = (strip(a), strip(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(&b))
}

fn add_magnitudes(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len().max(b.len()) + 1);
    let (mut i, mut j, mut carry) = (a.len(), b.len(), 0u8);
    while i > 0 || j > 0 || carry > 0 {
        let mut sum = carry;
        if i > 0 {
            i -= 1;
            sum += a[i];
        }
        if j > 0 {
            j -= 1;
            sum += b[j];
        }
        out.push(sum % 10);
        carry = sum / 10;
    }
    out.reverse();
    out
}

/// `a - b` for `a >= b`.
fn sub_magnitudes(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len());
    let (mut i, mut j, mut borrow) = (a.len(), b.len(), 0i8);
    while i > 0 {
        i -= 1;
        let mut d = a[i] as i8 - borrow;
        if j > 0 {
            j -= 1;
            d -= b[j] as i8;
        }
        borrow = i8::from(d < 0);
        out.push((d + 10 * borrow) as u8);
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_sums_are_exact() {
        let d = |s: &str| Decimal::parse(s).expect("decimal");
        let cases = [
            ("1", "2", "3"),
            ("0.1", "0.2", "0.3"),
            ("1e20", "1", "100000000000000000001"),
            ("-1", "0.25", "-0.75"),
            ("0.5", "-0.5", "0"),
            ("1.5e300", "-1.5e300", "0"),
            ("9007199254740993", "9007199254740993", "18014398509481986"),
            ("-0.25", "-1e-7", "-0.2500001"),
        ];
        for (a, b, sum) in cases {
            assert_eq!(decimal_add(&d(a), &d(b)), d(sum), "{a} + {b}");
            assert_eq!(decimal_add(&d(b), &d(a)), d(sum), "{b} + {a}");
        }
    }
}
