//! Typed, validated identifiers. Each is built once at the edge and cannot
//! hold an invalid value afterwards.

use std::fmt;

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} `{value}` is not valid: {expected}")]
pub struct IdError {
    /// Which identifier.
    pub kind: &'static str,
    /// The text received (shortened to 80 characters).
    pub value: String,
    /// What is expected instead.
    pub expected: &'static str,
}

fn check(
    kind: &'static str,
    value: &str,
    max: usize,
    ok: fn(char) -> bool,
    expected: &'static str,
) -> Result<(), IdError> {
    if value.is_empty() || value.len() > max || !value.chars().all(ok) {
        return Err(IdError {
            kind,
            value: value.chars().take(80).collect(),
            expected,
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr, $ok:expr, $expected:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `value`.
            ///
            /// # Errors
            #[doc = concat!("[`IdError`] unless it is ", $expected, ".")]
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check($kind, &value, $max, $ok, $expected)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

fn name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

fn coid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '/' | '_' | '-')
}

fn request_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

string_id!(
    /// A route's name (the `[[routes]]` entry an alert arrived on).
    RouteName, "route name", 64, name_char, "1–64 lowercase letters, digits, '-' or '_'"
);
string_id!(
    /// A plugin's name as the operator installed it.
    PluginName, "plugin name", 64, name_char, "1–64 lowercase letters, digits, '-' or '_'"
);
string_id!(
    /// The client order id sent to a broker. At most 36 characters of
    /// `[A-Za-z0-9._:/-]`: the intersection of what Alpaca (128) and
    /// Binance (`^[.A-Z:/a-z0-9_-]{1,36}$`) accept, so one id works at both.
    ClientOrderId, "client order id", 36, coid_char, "1–36 letters, digits, '.', ':', '/', '_' or '-'"
);
string_id!(
    /// A request id: the caller's `X-Request-Id` when valid, else a UUIDv7.
    RequestId, "request id", 64, request_char, "1–64 letters, digits, '.', '_' or '-'"
);

impl RequestId {
    /// A fresh UUIDv7 request id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

impl ClientOrderId {
    /// The id of intent `index` of `alert` for a route's extra account
    /// (fan-out): distinct per account, equally deterministic.
    pub fn derive_for_account(route: &RouteName, alert: &AlertId, index: usize, account: &str) -> Self {
        let base = Self::derive(route, alert, index);
        let mut h = Sha256::new();
        h.update(b"algobanana-coid-account-v1\0");
        h.update(base.0.as_bytes());
        h.update([0]);
        h.update(account.as_bytes());
        Self(format!("ab-{}", base32(&h.finalize()[..16])))
    }

    /// The id of a requested (signal) id for a route's extra account.
    pub fn for_account(&self, account: &str) -> Self {
        let suffix = format!("-{account}");
        let keep = 36usize.saturating_sub(suffix.len()).min(self.0.len());
        Self(format!("{}{suffix}", &self.0[..keep]))
    }

    /// The host's deterministic id for the `index`-th intent of an alert:
    /// `ab-` and 26 base32 characters of SHA-256 over the route, the alert id
    /// and the index. The same inputs always give the same id.
    pub fn derive(route: &RouteName, alert: &AlertId, index: usize) -> Self {
        let mut h = Sha256::new();
        h.update(b"algobanana-coid-v1\0");
        for part in [
            route.as_str().as_bytes(),
            alert.to_string().as_bytes(),
            index.to_string().as_bytes(),
        ] {
            h.update(u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            h.update(part);
        }
        let digest = h.finalize();
        Self(format!("ab-{}", base32(&digest[..16])))
    }
}

/// Lowercase RFC 4648 base32 without padding, 26 characters for 16 bytes.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The host's id for one alert: a UUIDv7, so ids sort by arrival. It is the
/// correlation id of every audit event the alert causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlertId(uuid::Uuid);

impl AlertId {
    /// A fresh id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// Parses an id printed by [`fmt::Display`].
    ///
    /// # Errors
    /// [`IdError`] for anything but a UUID.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        uuid::Uuid::parse_str(text).map(Self).map_err(|_| IdError {
            kind: "alert id",
            value: text.chars().take(80).collect(),
            expected: "a UUID such as 0192f6c4-8f3e-7cc0-a1b2-3c4d5e6f7a8b",
        })
    }
}

impl fmt::Display for AlertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for AlertId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_client_order_ids_are_deterministic_and_valid() {
        let route = RouteName::new("default").unwrap();
        let alert = AlertId::generate();
        let a = ClientOrderId::derive(&route, &alert, 0);
        assert_eq!(a, ClientOrderId::derive(&route, &alert, 0));
        assert_ne!(a, ClientOrderId::derive(&route, &alert, 1));
        assert_eq!(a.as_str().len(), 29);
        assert!(ClientOrderId::new(a.as_str()).is_ok());
    }

    #[test]
    fn client_order_ids_follow_the_strictest_broker() {
        assert!(ClientOrderId::new("sig-2024.01:AAPL/1_x").is_ok());
        assert!(ClientOrderId::new("").is_err());
        assert!(ClientOrderId::new("a".repeat(37)).is_err());
        assert!(ClientOrderId::new("has space").is_err());
        let err = ClientOrderId::new("bad id").unwrap_err();
        assert!(err.to_string().contains("1–36 letters"), "{err}");
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
        assert_eq!(base32(b"f"), "my");
    }
}
