//! Money as exact integers. The unit is the pico-dollar (1e-12 USD): fine enough that every
//! per-token price with up to 6 decimals per million tokens ($0.000001/Mtok) and every per-unit
//! price with up to 12 decimals is a whole number of units, so a request's cost is a sum of
//! integer products and never rounds. Amounts are `i64` (up to about $9.2 million per value);
//! sums that could exceed it (report totals) are `i128`. No float is ever accumulated: floats
//! appear only when a config number is read (`from_config`) and when a total is exposed to
//! Prometheus, which only has floats. Pure; imports nothing of the gateway's.

use std::fmt;

/// Units per US dollar.
pub const UNITS_PER_USD: i64 = 1_000_000_000_000;

/// An exact amount of USD, in pico-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Money(pub i64);

impl Money {
    /// Zero dollars.
    pub const ZERO: Money = Money(0);

    /// `self + other`, saturating (a single amount never comes near the bound).
    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    /// `self × n`, saturating.
    pub fn times(self, n: u64) -> Money {
        Money(clamp(i128::from(self.0) * i128::from(n)))
    }

    /// The amount as a USD decimal string with no trailing zeros (`"0.00125"`, `"3"`): exact.
    pub fn usd(self) -> String {
        usd_string(i128::from(self.0))
    }

    /// The nearest `f64` number of dollars (for Prometheus and JSON numbers only).
    pub fn as_usd_f64(self) -> f64 {
        self.0 as f64 / UNITS_PER_USD as f64
    }

    /// Reads a price from the config. YAML gives an `f64`; its shortest round-trip decimal is the
    /// decimal the operator wrote (for up to 15 significant digits), and that decimal is converted
    /// exactly. `scale` says how many units one of the written number stands for (e.g. a price
    /// per million tokens gives units per token, so its scale is `UNITS_PER_USD / 1_000_000`).
    /// Refuses negative and non-finite numbers, and numbers finer than one unit after scaling.
    pub fn from_config(value: f64, scale: i64) -> Result<i64, String> {
        if !value.is_finite() || value < 0.0 {
            return Err("must be a finite number >= 0".into());
        }
        let text = format!("{value}");
        let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
        let frac = frac.trim_end_matches('0');
        let digits = scale.to_string().len() as u32 - 1; // scale is a power of ten
        if frac.len() as u32 > digits || 10i64.pow(digits) != scale {
            return Err(format!("has more than {digits} decimals (the smallest step is 1e-{digits})"));
        }
        let parse =
            |s: &str| if s.is_empty() { Ok(0) } else { s.parse::<i64>().map_err(|_| "is too large".to_string()) };
        let whole_units = parse(whole)?.checked_mul(scale).ok_or("is too large")?;
        let frac_units = parse(frac)?.checked_mul(10i64.pow(digits - frac.len() as u32)).ok_or("is too large")?;
        whole_units.checked_add(frac_units).ok_or_else(|| "is too large".into())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.usd())
    }
}

/// An `i128` amount of units as a USD decimal string (exact, no trailing zeros).
pub fn usd_string(units: i128) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    let per = UNITS_PER_USD as u128;
    let (whole, frac) = (abs / per, abs % per);
    if frac == 0 {
        return format!("{sign}{whole}");
    }
    let frac = format!("{frac:012}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

/// Parses a USD decimal string exactly (`"0.00125"`); `None` when it is not one or is finer than a unit.
pub fn parse_usd(text: &str) -> Option<i128> {
    let (neg, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 12
    {
        return None;
    }
    let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let frac_units: i128 = if frac.is_empty() { 0 } else { format!("{frac:0<12}").parse().ok()? };
    let v = whole.checked_mul(i128::from(UNITS_PER_USD))?.checked_add(frac_units)?;
    Some(if neg { -v } else { v })
}

fn clamp(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Clamps an `i128` sum back to one amount.
pub fn from_i128(v: i128) -> Money {
    Money(clamp(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PER_MTOK: i64 = UNITS_PER_USD / 1_000_000;

    #[test]
    fn config_prices_convert_exactly() {
        assert_eq!(Money::from_config(1.25, PER_MTOK), Ok(1_250_000));
        assert_eq!(Money::from_config(0.1, PER_MTOK), Ok(100_000));
        assert_eq!(Money::from_config(0.01875, PER_MTOK), Ok(18_750));
        assert_eq!(Money::from_config(0.000001, PER_MTOK), Ok(1));
        assert_eq!(Money::from_config(15.0, PER_MTOK), Ok(15_000_000));
        assert_eq!(Money::from_config(0.04, UNITS_PER_USD), Ok(40_000_000_000));
        assert_eq!(Money::from_config(0.0, UNITS_PER_USD), Ok(0));
        assert_eq!(Money::from_config(0.000000000001, UNITS_PER_USD), Ok(1));
    }

    #[test]
    fn config_prices_finer_than_a_unit_or_negative_are_refused() {
        assert!(Money::from_config(0.0000001, PER_MTOK).is_err());
        assert!(Money::from_config(0.0000000000001, UNITS_PER_USD).is_err());
        assert!(Money::from_config(-1.0, PER_MTOK).is_err());
        assert!(Money::from_config(f64::NAN, PER_MTOK).is_err());
        assert!(Money::from_config(f64::INFINITY, PER_MTOK).is_err());
        assert!(Money::from_config(1e30, PER_MTOK).is_err());
    }

    #[test]
    fn decimal_strings_round_trip() {
        for s in ["0", "3", "0.00125", "1234.000000000001", "-0.5", "9223372.036854775807"] {
            let units = parse_usd(s).expect(s);
            assert_eq!(usd_string(units), s);
        }
        assert_eq!(Money(1_250_000).usd(), "0.00000125");
        assert_eq!(parse_usd("0.0000000000001"), None);
        assert_eq!(parse_usd("1e-3"), None);
        assert_eq!(parse_usd(""), None);
    }

    #[test]
    fn products_saturate_instead_of_wrapping() {
        assert_eq!(Money(i64::MAX).times(2), Money(i64::MAX));
        assert_eq!(Money(3).times(4), Money(12));
    }
}
