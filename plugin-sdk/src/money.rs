//! Exact conversions between the WIT `decimal` record and
//! [`rust_decimal::Decimal`], plus parsing helpers. No float is involved
//! anywhere: `"0.1"` stays `0.1`.

use alloc::borrow::ToOwned;
use alloc::string::{String, ToString};
use core::str::FromStr;

pub use rust_decimal::Decimal;

use crate::types::Decimal as WitDecimal;

/// The largest scale the host accepts (the precision of [`Decimal`]).
pub const MAX_SCALE: u8 = 28;

/// Why a number could not cross the boundary exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoneyError {
    /// The mantissa does not fit the WIT record's `s64`.
    MantissaOverflow(String),
    /// The scale is above [`MAX_SCALE`].
    ScaleTooLarge(u8),
    /// The text is not a plain decimal number.
    NotANumber(String),
}

impl core::fmt::Display for MoneyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::MantissaOverflow(v) => write!(
                f,
                "{v} has too many digits to pass exactly (at most 18 significant digits)"
            ),
            Self::ScaleTooLarge(s) => write!(f, "scale {s} is above the maximum of {MAX_SCALE} decimal places"),
            Self::NotANumber(v) => write!(f, "`{v}` is not a decimal number such as 10, 0.5 or 64250.25"),
        }
    }
}

impl core::error::Error for MoneyError {}

/// Converts a [`Decimal`] into the WIT record, exactly.
///
/// Trailing zeros are removed first, so `1.500` crosses as `{ 15, 1 }`.
///
/// # Errors
/// [`MoneyError::MantissaOverflow`] when the number needs more than 18–19
/// significant digits.
///
/// ```
/// use algobanana_plugin_sdk::money::{to_wit, Decimal};
/// let d = to_wit("190.350".parse::<Decimal>().unwrap()).unwrap();
/// assert_eq!((d.mantissa, d.scale), (19035, 2));
/// ```
pub fn to_wit(value: Decimal) -> Result<WitDecimal, MoneyError> {
    let value = value.normalize();
    let mantissa = i64::try_from(value.mantissa()).map_err(|_| MoneyError::MantissaOverflow(value.to_string()))?;
    // `Decimal::scale` is at most 28, so it always fits a u8.
    let scale = u8::try_from(value.scale()).map_err(|_| MoneyError::ScaleTooLarge(u8::MAX))?;
    Ok(WitDecimal { mantissa, scale })
}

/// Converts the WIT record into a [`Decimal`], exactly.
///
/// # Errors
/// [`MoneyError::ScaleTooLarge`] when `scale` is above [`MAX_SCALE`].
///
/// ```
/// use algobanana_plugin_sdk::{money::from_wit, types::Decimal as WitDecimal};
/// let d = from_wit(WitDecimal { mantissa: -5, scale: 1 }).unwrap();
/// assert_eq!(d.to_string(), "-0.5");
/// ```
pub fn from_wit(value: WitDecimal) -> Result<Decimal, MoneyError> {
    if value.scale > MAX_SCALE {
        return Err(MoneyError::ScaleTooLarge(value.scale));
    }
    Decimal::try_from_i128_with_scale(i128::from(value.mantissa), u32::from(value.scale))
        .map_err(|_| MoneyError::ScaleTooLarge(value.scale))
}

/// Parses decimal text (`"10"`, `"0.5"`, `"-3.25"`) without a float.
/// Exponents, `NaN`, infinities, thousands separators and empty text are
/// refused.
///
/// # Errors
/// [`MoneyError::NotANumber`] for anything else;
/// [`MoneyError::MantissaOverflow`] for a plain number with more digits
/// than [`Decimal`] holds.
///
/// ```
/// use algobanana_plugin_sdk::money::parse;
/// assert_eq!(parse("0.1").unwrap().to_string(), "0.1");
/// assert!(parse("1e3").is_err());
/// ```
pub fn parse(text: &str) -> Result<Decimal, MoneyError> {
    let t = text.trim();
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    let plain = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|&c| c == '.').count() <= 1
        && digits.chars().any(|c| c.is_ascii_digit());
    if !plain {
        return Err(MoneyError::NotANumber(text.to_owned()));
    }
    // A plain number that `Decimal` cannot hold has too many digits: say
    // so, rather than that it is not a number.
    Decimal::from_str(t).map_err(|_| MoneyError::MantissaOverflow(t.to_owned()))
}

/// Parses decimal text straight into the WIT record.
///
/// # Errors
/// As [`parse`] and [`to_wit`].
pub fn parse_wit(text: &str) -> Result<WitDecimal, MoneyError> {
    to_wit(parse(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly() {
        for text in [
            "0",
            "0.1",
            "-0.5",
            "190.35",
            "64250",
            "0.00000001",
            "922337203685477580.7",
        ] {
            let d = parse(text).unwrap();
            let back = from_wit(to_wit(d).unwrap()).unwrap();
            assert_eq!(back, d, "{text}");
            assert_eq!(back.normalize().to_string(), d.normalize().to_string());
        }
    }

    #[test]
    fn rejects_scale_above_28_and_oversized_mantissa() {
        assert_eq!(
            from_wit(WitDecimal { mantissa: 1, scale: 29 }),
            Err(MoneyError::ScaleTooLarge(29))
        );
        assert!(matches!(to_wit(Decimal::MAX), Err(MoneyError::MantissaOverflow(_))));
    }

    #[test]
    fn parse_refuses_non_plain_numbers() {
        for bad in ["", "-", ".", "1e3", "NaN", "inf", "1,000", "1.2.3", "abc", "0x10"] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn a_number_too_long_says_so() {
        let long = "99999999999999999999999999999999999";
        let e = parse(long).unwrap_err();
        assert_eq!(e, MoneyError::MantissaOverflow(long.to_owned()));
        assert!(e.to_string().contains("too many digits"), "{e}");
    }
}
