//! The shared wasmtime [`Engine`]: component model, pooling allocator sized
//! for our concurrency, epoch interruption driven by a 1 ms ticker, and fuel
//! metering when any plugin asks for it.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// One epoch tick. Deadlines are counted in ticks by the per-store callback.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Plugin calls that may run at once. The pool below is sized from it, and
/// callers wait for a slot instead of failing when it is full.
pub const MAX_CONCURRENT_CALLS: usize = 64;

/// 512 KiB of wasm stack: deep enough for real guests; deep recursion traps.
pub const MAX_WASM_STACK: usize = 512 * 1024;

/// Bytes of each memory slot kept resident between calls.
pub const KEEP_RESIDENT: usize = 16 << 20;

/// Engine settings that change compiled code or pool sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSettings {
    /// Meter fuel (engine-wide; plugins without a fuel limit get unlimited fuel).
    pub fuel: bool,
    /// The largest per-plugin memory cap, which sizes each pool slot.
    pub max_memory_bytes: usize,
}

/// Builds the engine and starts its epoch ticker.
///
/// # Errors
/// When wasmtime rejects the configuration (for example, when the machine
/// cannot reserve the pool's virtual memory).
pub fn build(settings: EngineSettings) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    // A Rust component instantiates about 3 core instances and 1–2 memories;
    // JS and Python ones more. Sized for MAX_CONCURRENT_CALLS calls at once.
    let calls = u32::try_from(MAX_CONCURRENT_CALLS).unwrap_or(64);
    pool.total_component_instances(calls * 2)
        .total_core_instances(calls * 16)
        .total_memories(calls * 4)
        .total_tables(calls * 16)
        .total_stacks(calls * 2)
        .max_core_instances_per_component(32)
        .max_memories_per_component(8)
        .max_tables_per_component(32)
        .max_memory_size(settings.max_memory_bytes)
        // Keep the pages a call touched resident and reset only those
        // (PAGEMAP_SCAN, Linux 6.7+; elsewhere the low KEEP_RESIDENT bytes
        // are memset). Re-faulting pages and memsetting a fixed prefix were
        // most of a fresh call (measured in docs/performance.md).
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 * 1024)
        .pagemap_scan(Enabled::Auto)
        // A reset that decommits nothing (PAGEMAP_SCAN reset every dirty
        // page in place, the usual case) returns its slot to the pool at
        // once; the `memory_snoop` test sees the next call reuse it. Resets
        // that do decommit (a guest that wrote more than KEEP_RESIDENT) go
        // back in batches of 16, one `process_madvise` each. Before the
        // 48.0.11 reset was backported (vendor/README.md) every reset queued
        // an empty range; a batch of 1 measured the same then (eight
        // alternating pairs, docs/performance.md).
        .decommit_batch_size(16);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .consume_fuel(settings.fuel)
        .max_wasm_stack(MAX_WASM_STACK)
        .memory_init_cow(true)
        .concurrency_support(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config)?;
    start_ticker(&engine);
    Ok(engine)
}

/// Increments the engine's epoch every [`EPOCH_TICK`] until the engine is
/// dropped (the thread holds only a weak reference).
fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(EPOCH_TICK);
        }
    });
    if let Err(e) = spawned {
        // Without the ticker no deadline fires; the per-call tokio timeout
        // still bounds every call, so this is loud but not fatal.
        tracing::error!(error = %e, "cannot start the epoch ticker; plugin deadlines fall back to the wall-clock timeout");
    }
}

/// A short, stable key for the engine's compatibility (wasmtime version and
/// every setting that changes compiled code), used in cache file names.
pub fn compatibility_key(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}
