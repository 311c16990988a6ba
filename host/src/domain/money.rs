//! Exact money: [`Price`] and [`Quantity`] newtypes over
//! [`rust_decimal::Decimal`], and exact conversion from the WIT `decimal`
//! record (a mantissa and a scale; see `wit/types.wit`).

use std::fmt;

use rust_decimal::Decimal;
use serde::{Serialize, Serializer};

/// The largest WIT `decimal` scale the host accepts (Decimal's precision).
pub const MAX_SCALE: u8 = 28;

/// Why a number from a plugin was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The WIT `decimal` had a scale above [`MAX_SCALE`].
    #[error("{field}: scale {scale} is above the maximum of {MAX_SCALE} decimal places")]
    Scale {
        /// Which field.
        field: &'static str,
        /// The scale received.
        scale: u8,
    },
    /// The value must be greater than zero.
    #[error("{field} must be greater than zero, got {value}")]
    NotPositive {
        /// Which field.
        field: &'static str,
        /// The value received.
        value: Decimal,
    },
    /// The value does not fit the WIT record (more than 18 significant digits).
    #[error("{value} has too many significant digits to pass to a plugin exactly")]
    TooManyDigits {
        /// The value.
        value: Decimal,
    },
    /// The value is outside what the field allows.
    #[error("{field} is {value}; expected {expected}")]
    OutOfRange {
        /// Which field.
        field: &'static str,
        /// The value received.
        value: Decimal,
        /// What is allowed.
        expected: &'static str,
    },
}

/// Converts a WIT `decimal` (`mantissa × 10^-scale`) into a [`Decimal`] exactly.
///
/// # Errors
/// [`MoneyError::Scale`] when the scale is above [`MAX_SCALE`].
pub fn decimal_from_parts(mantissa: i64, scale: u8, field: &'static str) -> Result<Decimal, MoneyError> {
    if scale > MAX_SCALE {
        return Err(MoneyError::Scale { field, scale });
    }
    Decimal::try_from_i128_with_scale(i128::from(mantissa), u32::from(scale))
        .map_err(|_| MoneyError::Scale { field, scale })
}

/// Splits a [`Decimal`] into WIT `decimal` parts, normalised (no trailing zeros).
///
/// # Errors
/// [`MoneyError::TooManyDigits`] when the mantissa does not fit an `i64`.
pub fn decimal_to_parts(value: Decimal) -> Result<(i64, u8), MoneyError> {
    let v = value.normalize();
    let mantissa = i64::try_from(v.mantissa()).map_err(|_| MoneyError::TooManyDigits { value })?;
    // Decimal's scale is at most 28 by construction.
    let scale = u8::try_from(v.scale()).map_err(|_| MoneyError::TooManyDigits { value })?;
    Ok((mantissa, scale))
}

macro_rules! positive_decimal {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Decimal);

        impl $name {
            /// Wraps `value`, which must be greater than zero.
            ///
            /// # Errors
            /// [`MoneyError::NotPositive`] otherwise.
            pub fn new_checked(value: Decimal) -> Result<Self, MoneyError> {
                if value > Decimal::ZERO {
                    Ok(Self(value.normalize()))
                } else {
                    Err(MoneyError::NotPositive { field: $field, value })
                }
            }

            /// The exact value.
            pub fn get(self) -> Decimal {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        /// Serialised as a decimal string (`"190.35"`), never a JSON float.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }
    };
}

positive_decimal!(
    /// A price: exact and greater than zero.
    Price,
    "price"
);
positive_decimal!(
    /// An order quantity: exact and greater than zero.
    Quantity,
    "quantity"
);

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn parts_round_trip_exactly() {
        for text in ["0.1", "190.35", "-0.5", "64250", "0.00000001"] {
            let d = Decimal::from_str(text).unwrap();
            let (m, s) = decimal_to_parts(d).unwrap();
            assert_eq!(decimal_from_parts(m, s, "x").unwrap(), d);
        }
    }

    #[test]
    fn scale_above_28_is_refused_with_the_field_name() {
        let err = decimal_from_parts(1, 29, "limit price").unwrap_err();
        assert_eq!(
            err.to_string(),
            "limit price: scale 29 is above the maximum of 28 decimal places"
        );
    }

    #[test]
    fn zero_and_negative_quantities_are_refused() {
        assert!(Quantity::new_checked(Decimal::ZERO).is_err());
        assert!(Quantity::new_checked(Decimal::NEGATIVE_ONE).is_err());
        assert_eq!(
            Quantity::new_checked(Decimal::from_str("1.50").unwrap())
                .unwrap()
                .to_string(),
            "1.5"
        );
    }

    #[test]
    fn serialises_as_exact_strings() {
        let p = Price::new_checked(Decimal::from_str("0.1").unwrap()).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"0.1\"");
    }
}
