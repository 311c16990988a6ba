//! algobanana: a self-hosted trading-automation host.
//!
//! An alert arrives over HTTP ([`http`]), is recorded in the tamper-evident
//! audit store ([`audit`]) and handed to the route's rule plugin, a sandboxed
//! WebAssembly component ([`plugins`]). The rule's order intents go to the
//! route's broker plugin, and every plugin call and capability use
//! ([`capabilities`]) is audited. [`pipeline`] ties these together; [`app`]
//! owns the running pieces; [`cli`] is the command line, and [`author`]
//! its tools for plugin authors.

/// The global allocator of every binary that links the host: the server,
/// the tests and the benchmarks, so what is measured is what runs. glibc's
/// malloc was about 12 % of the loaded server's CPU; see
/// docs/performance.md. Off with `--no-default-features`.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod admin;
pub mod app;
pub mod audit;
pub mod author;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod pipeline;
pub mod plugins;
pub mod recovery;
pub mod setup;
pub mod store;
pub mod trading;
pub mod vault;

pub use app::{App, RunningServer};
