//! Host capabilities offered to plugins. Each has one shape: limits or a
//! grant validated at load, a per-call `XState` inside the store, and an
//! `impl Host` that checks its limits on every call.
//!
//! Security failures are never traps: the guest receives a typed
//! [`CapabilityError`] and the host records the event.

pub mod broker_view;
pub mod clock;
pub mod http;
pub mod kv;
pub mod log;
pub mod secrets;

use crate::plugins::bindings::types;

/// A host-side capability failure, converted into the WIT
/// `capability-error` (or a trap for host bugs) by bindgen's
/// `trappable_error_type`.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    /// The plugin's grant does not allow the call.
    #[error("denied: {0}")]
    Denied(String),
    /// A quota or per-call limit was reached.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// An argument was invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The host could not serve the call right now.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A host bug: the call traps.
    #[error("host error: {0}")]
    Trap(wasmtime::Error),
}

impl types::Host for crate::plugins::state::PluginState {
    fn convert_capability_error(&mut self, err: CapabilityError) -> wasmtime::Result<types::CapabilityError> {
        Ok(match err {
            CapabilityError::Denied(m) => types::CapabilityError::Denied(m),
            CapabilityError::QuotaExceeded(m) => types::CapabilityError::QuotaExceeded(m),
            CapabilityError::InvalidArgument(m) => types::CapabilityError::InvalidArgument(m),
            CapabilityError::Unavailable(m) => types::CapabilityError::Unavailable(m),
            CapabilityError::Trap(e) => return Err(e),
        })
    }
}

/// Lowers a host result for the broker-world imports (`http`, `secrets`),
/// whose bindings share the `types` interface with the rule world and so
/// take the WIT error type directly: a guest error stays a value, a host
/// bug becomes a trap.
///
/// # Errors
/// The trap.
pub fn lower<T>(r: Result<T, CapabilityError>) -> wasmtime::Result<Result<T, types::CapabilityError>> {
    Ok(match r {
        Ok(v) => Ok(v),
        Err(CapabilityError::Denied(m)) => Err(types::CapabilityError::Denied(m)),
        Err(CapabilityError::QuotaExceeded(m)) => Err(types::CapabilityError::QuotaExceeded(m)),
        Err(CapabilityError::InvalidArgument(m)) => Err(types::CapabilityError::InvalidArgument(m)),
        Err(CapabilityError::Unavailable(m)) => Err(types::CapabilityError::Unavailable(m)),
        Err(CapabilityError::Trap(e)) => return Err(e),
    })
}
