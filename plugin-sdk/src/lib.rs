//! Rust SDK for algobanana plugins: WebAssembly components that turn alerts
//! into orders (`rule` world) or place orders at a broker (`broker` world).
//!
//! A plugin is a `cdylib` crate built for `wasm32-wasip2`; the compiler emits a
//! component directly. This crate gives it:
//!
//! - the bindings for the WIT contract in `wit/` (package
//!   `algobanana:plugin@0.1.0`), in [`rule`] and [`broker`], with the shared
//!   data types re-exported from [`types`];
//! - exact conversions between the WIT [`types::Decimal`] and
//!   [`rust_decimal::Decimal`] (money never passes through a float), in
//!   [`money`];
//! - small wrappers over the host capabilities: [`log`], [`clock`] and [`kv`],
//!   and, for rules, the route account's portfolio on request ([`broker_view`]);
//! - the export macros [`export_rule!`] and [`export_broker!`];
//! - [`no_std_runtime!`], for plugins built without `std`, whose components
//!   import no WASI at all and are cheaper to instantiate.
//!
//! # A complete rule plugin
//!
//! ```no_run
//! use algobanana_plugin_sdk::types::{Alert, OrderIntent, OrderType, Portfolio, RuleError, Side, TimeInForce};
//! use algobanana_plugin_sdk::{money, export_rule, rule::Guest};
//!
//! struct BuyOne;
//!
//! impl Guest for BuyOne {
//!     fn evaluate(alert: Alert, _config: String, _portfolio: Option<Portfolio>) -> Result<Vec<OrderIntent>, RuleError> {
//!         let symbol = String::from_utf8(alert.body)
//!             .map_err(|_| RuleError::InvalidAlert("expected a UTF-8 symbol such as AAPL".into()))?;
//!         Ok(vec![OrderIntent {
//!             symbol: symbol.trim().to_owned(),
//!             side: Side::Buy,
//!             quantity: money::to_wit(money::Decimal::ONE).expect("1 fits"),
//!             order_type: OrderType::Market,
//!             time_in_force: TimeInForce::Day,
//!             client_order_id: None,
//!             reduce_only: false,
//!             reference_price: None,
//!             take_profit: None,
//!             stop_loss: None,
//!         }])
//!     }
//! }
//!
//! export_rule!(BuyOne);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and install the
//! `.wasm` file from `target/wasm32-wasip2/release/`.
//!
//! `algobanana plugin new --lang rust NAME` writes such a project, with a
//! manifest ([`manifest!`]), unit tests and sample alerts;
//! `algobanana plugin test FILE.wasm --alert ALERT` runs the component in the
//! host's sandbox and reports its use of every limit. The authoring guide,
//! `docs/plugins.md`, explains the contract, the capabilities and the limits,
//! with the same rule in JavaScript and Python.
//!
//! # Testing the logic natively
//!
//! The bindings compile for the host target too, so a rule's logic can be
//! unit-tested with `cargo test` as long as the test does not call a host
//! import ([`log`], [`clock`], [`kv`]): those exist only inside the host.
//!
//! ```
//! use algobanana_plugin_sdk::money;
//! use algobanana_plugin_sdk::types::{OrderType, Side};
//!
//! fn side(word: &str) -> Option<Side> {
//!     match word {
//!         "buy" => Some(Side::Buy),
//!         "sell" => Some(Side::Sell),
//!         _ => None,
//!     }
//! }
//!
//! assert_eq!(side("buy"), Some(Side::Buy));
//! assert_eq!(OrderType::Market, OrderType::Market);
//! let q = money::parse_wit("0.25").unwrap();
//! assert_eq!((q.mantissa, q.scale), (25, 2));
//! ```
#![deny(missing_docs)]
// The SDK itself needs only `core` and `alloc`, so it serves both kinds of
// plugin: ordinary `std` crates, and `no_std` crates that call
// [`no_std_runtime!`] (no WASI imports at all; see that macro).
#![no_std]

extern crate alloc;

pub mod money;

/// Makes a `#![no_std]` plugin crate a complete component: a heap (wasi-libc's
/// `malloc`, which imports nothing), a panic handler that traps, and the
/// `cabi_realloc` export through which the host passes arguments.
///
/// A Rust plugin built with `std` imports 13 WASI interfaces it never calls:
/// `std`'s panic message and `RUST_BACKTRACE` lookup reach `wasi:cli`
/// (environment, exit, the standard streams and terminals) and `wasi:io`.
/// The host links them to a deny-all context, but every fresh instance still
/// builds their lowerings and two extra core instances that route them, which
/// was almost half of instantiating the default rule (6.8 → 3.8 µs,
/// `docs/performance.md`, session 11). Without `std` the component imports
/// only what the plugin uses of `algobanana:plugin`.
///
/// What the plugin gives up: `std` itself (use `alloc::{string::String,
/// vec::Vec, format, …}`, `alloc::collections::BTreeMap`, and `core`), and
/// dependencies that need `std`; `serde`, `serde_json` (feature `alloc`) and
/// `rust_decimal` work without it. A panic traps exactly as with `std` and
/// `panic = "abort"`: the host records `trap:unreachable`. In one cargo
/// build, features are shared: if any crate in it turns on `std` for a
/// dependency the plugin shares, the build fails with a duplicate
/// `panic_impl`; build such plugins separately, or keep their dependencies
/// free of `std`.
///
/// ```ignore
/// #![cfg_attr(not(test), no_std)]
/// extern crate alloc;
///
/// use alloc::{string::String, vec::Vec};
/// use algobanana_plugin_sdk::types::{Alert, OrderIntent, Portfolio, RuleError};
///
/// struct Nothing;
///
/// impl algobanana_plugin_sdk::rule::Guest for Nothing {
///     fn evaluate(_: Alert, _: String, _: Option<Portfolio>) -> Result<Vec<OrderIntent>, RuleError> {
///         Ok(Vec::new())
///     }
/// }
///
/// algobanana_plugin_sdk::export_rule!(Nothing);
/// algobanana_plugin_sdk::no_std_runtime!();
/// ```
#[macro_export]
macro_rules! no_std_runtime {
    () => {
        #[cfg(target_arch = "wasm32")]
        #[global_allocator]
        static __ALGOBANANA_ALLOCATOR: $crate::__rt::LibcMalloc = $crate::__rt::LibcMalloc;

        #[cfg(all(target_arch = "wasm32", not(test)))]
        #[panic_handler]
        fn __algobanana_panic(_: &::core::panic::PanicInfo<'_>) -> ! {
            ::core::arch::wasm32::unreachable()
        }

        /// The canonical ABI's allocator export (`std` provides it on wasip2).
        ///
        /// # Safety
        /// Called by the host only, with the canonical ABI's arguments.
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn cabi_realloc(old: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
            // SAFETY: forwarded unchanged from the canonical ABI.
            unsafe { $crate::__rt::cabi_realloc(old, old_len, align, new_len) }
        }
    };
}

/// What [`no_std_runtime!`] expands to call. Not a public API.
#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
pub mod __rt {
    use core::alloc::{GlobalAlloc, Layout};

    // wasi-libc's dlmalloc: it starts from the free space the linker left in
    // the initial memory (`__heap_base` to `__heap_end`) and grows memory
    // only past it, so a call that fits never runs `memory.grow`. (The
    // `dlmalloc` crate grows memory for its first allocation, which made each
    // call of the default rule about 9 µs slower.) The string functions
    // (`memcmp`, `memcpy`, …) that the compiler emits come from the same
    // library; none of it imports anything.
    #[link(name = "c")]
    unsafe extern "C" {
        fn malloc(size: usize) -> *mut u8;
        fn free(ptr: *mut u8);
        fn realloc(ptr: *mut u8, size: usize) -> *mut u8;
        fn aligned_alloc(align: usize, size: usize) -> *mut u8;
    }

    /// wasi-libc's `malloc` as the global allocator, the way `std` uses it
    /// on WASI.
    #[derive(Debug)]
    pub struct LibcMalloc;

    /// `malloc`'s own alignment on wasm32.
    const MIN_ALIGN: usize = 16;

    // SAFETY: `malloc`, `aligned_alloc`, `realloc` and `free` meet
    // `GlobalAlloc`'s contract; alignments above what `malloc` guarantees go
    // through `aligned_alloc`, as in `std`'s WASI allocator.
    unsafe impl GlobalAlloc for LibcMalloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: see the impl.
            unsafe {
                if layout.align() <= MIN_ALIGN && layout.align() <= layout.size() {
                    malloc(layout.size())
                } else {
                    aligned_alloc(layout.align(), layout.size())
                }
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
            // SAFETY: `ptr` came from this allocator.
            unsafe { free(ptr) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: `ptr` came from this allocator with `layout`.
            unsafe {
                if layout.align() <= MIN_ALIGN && layout.align() <= new_size {
                    realloc(ptr, new_size)
                } else {
                    let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
                    if !new.is_null() {
                        core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        free(ptr);
                    }
                    new
                }
            }
        }
    }

    /// The canonical ABI's `cabi_realloc`, as wit-bindgen's runtime defines
    /// it for targets whose `std` does not: a trap when memory runs out.
    ///
    /// # Safety
    /// The canonical ABI's contract: `old` came from this function with
    /// `old_len` and `align`.
    pub unsafe fn cabi_realloc(old: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
        use alloc::alloc::{alloc, realloc};
        // SAFETY: the canonical ABI passes a valid power-of-two `align`, and
        // `old`/`old_len` from an earlier call.
        let ptr = unsafe {
            if old_len == 0 {
                if new_len == 0 {
                    return align as *mut u8;
                }
                alloc(Layout::from_size_align_unchecked(new_len, align))
            } else {
                realloc(old, Layout::from_size_align_unchecked(old_len, align), new_len)
            }
        };
        if ptr.is_null() {
            core::arch::wasm32::unreachable();
        }
        ptr
    }
}

/// Bindings for the `rule` world: the [`rule::Guest`] trait a rule implements,
/// and the host interfaces it may import.
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod rule {
    wit_bindgen::generate!({
        path: "../wit",
        world: "algobanana:plugin/rule@0.1.0",
        default_bindings_module: "algobanana_plugin_sdk::rule",
        pub_export_macro: true,
        export_macro_name: "export_rule",
        additional_derives: [PartialEq],
    });
}

/// Bindings for the `broker` world: the [`broker::Guest`] trait a broker
/// adapter implements. Data types and host interfaces are shared with
/// [`rule`].
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod broker {
    wit_bindgen::generate!({
        path: "../wit",
        world: "algobanana:plugin/broker@0.1.0",
        default_bindings_module: "algobanana_plugin_sdk::broker",
        pub_export_macro: true,
        export_macro_name: "export_broker",
        with: {
            "algobanana:plugin/types@0.1.0": crate::rule::algobanana::plugin::types,
            "algobanana:plugin/log@0.1.0": crate::rule::algobanana::plugin::log,
            "algobanana:plugin/clock@0.1.0": crate::rule::algobanana::plugin::clock,
            "algobanana:plugin/kv@0.1.0": crate::rule::algobanana::plugin::kv,
        },
    });
}

/// Embeds the plugin's manifest in the component, in a custom section named
/// `algobanana-manifest` that the host reads at load (it is covered by the
/// component's digest, so what a plugin requests cannot change without the
/// digest changing). The argument is TOML:
///
/// ```toml
/// name = "alpaca"
/// version = "0.1.0"
/// world = "broker"            # rule | broker | notifier
/// wit = "0.1.0"               # the algobanana:plugin version it targets
/// description = "Alpaca Trading API v2"
/// # portfolio = "on-request"  # rules only: fetch the route account's
/// #                           # portfolio only when the rule calls
/// #                           # broker_view::get_portfolio (default
/// #                           # "before-call": before every evaluate)
///
/// [requests]                  # what the operator is asked to grant
/// kv = true
/// http = ["https://paper-api.alpaca.markets"]
/// secrets = ["alpaca_key_id", "alpaca_secret_key"]
/// ```
///
/// ```no_run
/// algobanana_plugin_sdk::manifest!(r#"
/// name = "buy-one"
/// version = "0.1.0"
/// world = "rule"
/// wit = "0.1.0"
/// description = "Buys one share of whatever the alert names"
/// portfolio = "on-request"
/// "#);
/// ```
#[macro_export]
macro_rules! manifest {
    ($toml:expr) => {
        const _: () = {
            const TEXT: &str = $toml;
            #[used]
            #[unsafe(link_section = "algobanana-manifest")]
            static MANIFEST: [u8; TEXT.len()] = $crate::__manifest_bytes::<{ TEXT.len() }>(TEXT);
        };
    };
}

#[doc(hidden)]
pub const fn __manifest_bytes<const N: usize>(text: &str) -> [u8; N] {
    let bytes = text.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// Bindings for the `notifier` world: the [`notifier::Guest`] trait a
/// notifier implements. Data types and host interfaces are shared.
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod notifier {
    wit_bindgen::generate!({
        path: "../wit",
        world: "algobanana:plugin/notifier@0.1.0",
        default_bindings_module: "algobanana_plugin_sdk::notifier",
        pub_export_macro: true,
        export_macro_name: "export_notifier",
        with: {
            "algobanana:plugin/types@0.1.0": crate::rule::algobanana::plugin::types,
            "algobanana:plugin/log@0.1.0": crate::rule::algobanana::plugin::log,
            "algobanana:plugin/clock@0.1.0": crate::rule::algobanana::plugin::clock,
            "algobanana:plugin/kv@0.1.0": crate::rule::algobanana::plugin::kv,
            "algobanana:plugin/secrets@0.1.0": crate::broker::algobanana::plugin::secrets,
            "algobanana:plugin/http@0.1.0": crate::broker::algobanana::plugin::http,
        },
    });
}

pub use broker::export_broker;
pub use notifier::export_notifier;
pub use rule::export_rule;

/// Secrets granted to the plugin, as opaque handles: put into outbound
/// headers by the host ([`http`]) or used by the host to sign bytes. The
/// plugin never sees a secret's value. Broker world only.
pub mod secrets {
    pub use crate::broker::algobanana::plugin::secrets::{SecretHandle, SignAlgorithm, open, sign};
}

/// Outbound HTTP, made by the host within the operator's grant. Broker world
/// only.
pub mod http {
    use alloc::borrow::ToOwned;
    use alloc::format;
    use alloc::string::{String, ToString};

    pub use crate::broker::algobanana::plugin::http::{
        Header, HeaderValue, Method, Request, Response, SecretValue, send,
    };

    /// The host's message in a capability error, without the variant name.
    pub fn error_text(e: &crate::types::CapabilityError) -> String {
        use crate::types::CapabilityError as E;
        match e {
            E::Denied(m) | E::QuotaExceeded(m) | E::InvalidArgument(m) | E::Unavailable(m) => m.clone(),
        }
    }

    /// Percent-encodes `s` for a URL path segment or query value (RFC 3986
    /// unreserved characters stay as they are).
    pub fn urlencode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    /// A literal header.
    pub fn header(name: &str, value: &str) -> Header {
        Header {
            name: name.to_owned(),
            value: HeaderValue::Text(value.to_owned()),
        }
    }

    /// A header the host fills from `secret`: `template` with its
    /// `{secret}` slot replaced, after the request passed every check.
    pub fn secret_header(name: &str, secret: crate::secrets::SecretHandle, template: &str) -> Header {
        Header {
            name: name.to_owned(),
            value: HeaderValue::Secret(SecretValue {
                secret,
                template: template.to_owned(),
            }),
        }
    }
}

/// Helpers for notifier plugins: settings, secret handles by setting name,
/// and a JSON POST whose answer is mapped to [`types::NotifyError`]
/// (429 and 5xx are `unavailable`, other non-2xx `rejected`).
pub mod notify {
    use alloc::format;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;

    use serde_json::Value;

    use crate::http::{self, Method, Request};
    use crate::types::{CapabilityError, NotificationKind, NotifyError};

    /// The kind's name: `fill`, `rejection`, `error`, `kill_switch`.
    pub fn kind(k: NotificationKind) -> &'static str {
        match k {
            NotificationKind::Fill => "fill",
            NotificationKind::Rejection => "rejection",
            NotificationKind::Error => "error",
            NotificationKind::KillSwitch => "kill_switch",
        }
    }

    /// The notifier's settings as JSON.
    ///
    /// # Errors
    /// `invalid-config` when they are not JSON.
    pub fn settings(text: &str) -> Result<Value, NotifyError> {
        serde_json::from_str(text).map_err(|e| NotifyError::InvalidConfig(format!("settings are not JSON: {e}")))
    }

    /// A handle to the secret named by setting `key`.
    ///
    /// # Errors
    /// `invalid-config` naming the setting or the secret.
    pub fn secret(settings: &Value, key: &str) -> Result<crate::secrets::SecretHandle, NotifyError> {
        let name = settings[key].as_str().ok_or_else(|| {
            NotifyError::InvalidConfig(format!("settings need `{key}`: the name of a granted secret"))
        })?;
        crate::secrets::open(name).map_err(|e| NotifyError::InvalidConfig(format!("secret `{name}`: {}", message(&e))))
    }

    /// The text of a capability error.
    pub fn message(e: &CapabilityError) -> String {
        crate::http::error_text(e)
    }

    /// POSTs `body` as JSON to `url` (or to a secret URL); returns the
    /// status and the answer's text.
    ///
    /// # Errors
    /// `unavailable` for 429, 5xx and connection failures, `rejected` for
    /// other non-2xx answers.
    pub fn post_json(
        url: String,
        url_secret: Option<http::SecretValue>,
        mut headers: Vec<http::Header>,
        body: &Value,
    ) -> Result<(u16, String), NotifyError> {
        headers.push(http::header("content-type", "application/json"));
        let request = Request {
            method: Method::Post,
            url,
            url_secret,
            headers,
            body: body.to_string().into_bytes(),
        };
        let resp = http::send(&request).map_err(|e| NotifyError::Unavailable(message(&e)))?;
        let text = String::from_utf8_lossy(&resp.body).into_owned();
        if resp.status == 429 || resp.status >= 500 {
            return Err(NotifyError::Unavailable(format!("HTTP {}: {text}", resp.status)));
        }
        if !(200..300).contains(&resp.status) {
            return Err(NotifyError::Rejected(format!("HTTP {}: {text}", resp.status)));
        }
        Ok((resp.status, text))
    }
}

/// The data types of the contract (`algobanana:plugin/types`), shared by
/// every world.
pub mod types {
    pub use crate::rule::algobanana::plugin::types::*;
}

/// Levelled log lines into the host's log (1 KiB a line, 4 KiB a call by
/// default; the host truncates past that and never fails the call). Lines
/// are stored in the call's audit row: never log secrets.
///
/// ```no_run
/// algobanana_plugin_sdk::log::info("sizing from equity");
/// algobanana_plugin_sdk::log::warn(&format!("no price in alert {}", "0192f6c4"));
/// ```
pub mod log {
    use crate::rule::algobanana::plugin::log::{Level, write};

    /// Logs `message` at debug level.
    pub fn debug(message: &str) {
        write(Level::Debug, message);
    }
    /// Logs `message` at info level.
    pub fn info(message: &str) {
        write(Level::Info, message);
    }
    /// Logs `message` at warn level.
    pub fn warn(message: &str) {
        write(Level::Warn, message);
    }
    /// Logs `message` at error level.
    pub fn error(message: &str) {
        write(Level::Error, message);
    }
}

/// Wall-clock time from the host.
///
/// ```no_run
/// let now = algobanana_plugin_sdk::clock::now_ns();
/// let seconds = now / 1_000_000_000;
/// # let _ = seconds;
/// ```
pub mod clock {
    /// Nanoseconds since the Unix epoch, UTC.
    pub fn now_ns() -> u64 {
        crate::rule::algobanana::plugin::clock::now()
    }
}

/// The route account's positions and balances, for a rule that needs them
/// on some alerts only (closing or reversing a position, sizing from
/// equity). Rule world only.
///
/// With `portfolio = "on-request"` in its manifest, a rule gets none as
/// `evaluate`'s `portfolio` argument, and the host asks the route's broker
/// (two audited calls; two API round trips with a live broker) only when
/// the rule calls [`broker_view::get_portfolio`](get_portfolio), once per
/// `evaluate` however often it is called. Without it, the host fetches the
/// portfolio before every call and this returns the same.
///
/// ```no_run
/// use algobanana_plugin_sdk::broker_view;
/// # fn main() -> Result<(), algobanana_plugin_sdk::types::CapabilityError> {
/// let portfolio = broker_view::get_portfolio()?;
/// let held = portfolio.positions.iter().filter(|p| p.symbol == "AAPL").count();
/// # let _ = held;
/// # Ok(())
/// # }
/// ```
pub mod broker_view {
    /// The route account's portfolio: `unavailable` (with the reason) when
    /// the broker could not report it within its own limits. The wait does
    /// not count against the rule's deadline.
    pub use crate::rule::algobanana::plugin::broker_view::get_portfolio;
}

/// The plugin's private, persistent key-value namespace, with JSON helpers.
///
/// Writes are committed only when the export returns `ok`; an error, a trap
/// or a deadline discards them. Granted by default (`kv = false` in the
/// grant turns it off; a plugin importing it is then refused at load).
///
/// ```no_run
/// use algobanana_plugin_sdk::kv;
/// # fn main() -> Result<(), algobanana_plugin_sdk::types::CapabilityError> {
/// // Count the alerts this plugin has seen, across calls.
/// let seen: u64 = kv::get_json("seen")?.unwrap_or(0);
/// kv::set_json("seen", &(seen + 1))?;
/// # Ok(())
/// # }
/// ```
pub mod kv {
    use alloc::format;

    pub use crate::rule::algobanana::plugin::kv::{delete, get, list_keys, set};
    use crate::types::CapabilityError;

    /// Reads `key` and decodes it as JSON; none when the key is missing.
    ///
    /// # Errors
    /// The host's [`CapabilityError`], or `InvalidArgument` when the stored
    /// bytes are not the JSON of `T`.
    pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, CapabilityError> {
        match get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                CapabilityError::InvalidArgument(format!("value under `{key}` is not the expected JSON: {e}"))
            }),
        }
    }

    /// Encodes `value` as JSON and stores it under `key`.
    ///
    /// # Errors
    /// The host's [`CapabilityError`] (for example `QuotaExceeded`).
    pub fn set_json<T: serde::Serialize>(key: &str, value: &T) -> Result<(), CapabilityError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| CapabilityError::InvalidArgument(format!("cannot encode value for `{key}`: {e}")))?;
        set(key, &bytes)
    }
}
