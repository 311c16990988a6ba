//! The plugin runtime: WebAssembly components on wasmtime, one fresh,
//! bounded store per call.
//!
//! - [`engine`]: the shared [`wasmtime::Engine`] (pooling allocator, epoch
//!   deadlines) and its epoch ticker.
//! - [`registry`]: loading components (built-in or from files), the
//!   precompiled cache, import checks, and one `InstancePre` per plugin.
//! - [`invoke`]: calling an export with limits, classifying the outcome and
//!   auditing it.
//! - [`state`] and [`limiter`]: the per-call store data and memory cap.
//! - [`bindings`] and [`convert`]: the generated WIT bindings and the
//!   conversions to host domain types.

pub mod bindings;
pub mod builtin;
pub mod convert;
pub mod engine;
pub mod invoke;
pub mod limiter;
pub mod manifest;
pub mod registry;
pub mod state;

pub use invoke::{CallError, TrapCause};
pub use registry::{LoadedPlugin, PluginError, Registry};

/// The WIT package version this host implements.
pub const WIT_VERSION: &str = "algobanana:plugin@0.1.0";
