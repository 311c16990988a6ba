//! The data of one plugin call's [`wasmtime::Store`]: a deny-all WASI
//! context, the memory limiter and each capability's per-call state. Built
//! fresh for every call and dropped after it.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limiter::TotalLimiter;
use crate::capabilities::kv::KvState;
use crate::capabilities::log::LogState;

/// Store data for one plugin call.
#[allow(missing_debug_implementations)]
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Caps the sum of all memories and tables.
    pub limiter: TotalLimiter,
    /// `log` capability state.
    pub log: LogState,
    /// `kv` capability state.
    pub kv: KvState,
}

impl PluginState {
    /// Fresh state for one call.
    pub fn new(limiter: TotalLimiter, log: LogState, kv: KvState) -> Self {
        Self {
            wasi: deny_all_wasi(),
            table: ResourceTable::new(),
            limiter,
            log,
            kv,
        }
    }
}

/// The WASI context every plugin gets: nothing. No preopened directories,
/// no environment variables, no arguments, stdin closed, stdout and stderr
/// discarded, no TCP or UDP sockets and no name lookup. Clocks and random
/// stay real (a plugin learns nothing from them it could not compute).
/// Baseline WASI is linked at all only because guests import it whether or
/// not they use it (Rust's std panic path imports `wasi:cli`).
pub fn deny_all_wasi() -> WasiCtx {
    let mut b = WasiCtx::builder();
    b.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
    b.build()
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
