//! `algobanana:plugin/clock`: wall-clock time.

use crate::plugins::bindings::clock;
use crate::plugins::state::PluginState;

impl clock::Host for PluginState {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(u64::try_from(crate::audit::now_ns()).unwrap_or(0))
    }
}
