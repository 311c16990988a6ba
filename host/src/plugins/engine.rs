//! The shared wasmtime [`Engine`]: component model, pooling allocator sized
//! for our concurrency, epoch interruption driven by a 1 ms ticker that
//! sleeps while no call runs, and fuel metering when any plugin asks for it.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// One epoch tick. Deadlines are counted in ticks by the per-store callback.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// After this many ticks in which no call ran or started, the ticker sleeps
/// until the next call starts ([`Ticker::running`]): an idle host would
/// otherwise wake a thousand times a second for nothing. A tenth of a
/// second of ticks first, so that calls arriving more often than that never
/// wait for the ticker to wake.
pub const PARK_AFTER_IDLE_TICKS: u32 = 100;

/// A sleeping ticker still wakes this often to notice that its engine has
/// been dropped, and then ends.
const PARKED_CHECK: Duration = Duration::from_secs(1);

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

/// Builds the engine and starts its epoch ticker. Every guest call must run
/// inside [`Ticker::running`], or the ticker may be asleep while it runs.
///
/// # Errors
/// When wasmtime rejects the configuration (for example, when the machine
/// cannot reserve the pool's virtual memory).
pub fn build(settings: EngineSettings) -> wasmtime::Result<(Engine, Arc<Ticker>)> {
    build_with(settings, PARKED_CHECK)
}

fn build_with(settings: EngineSettings, parked_check: Duration) -> wasmtime::Result<(Engine, Arc<Ticker>)> {
    let mut pool = PoolingAllocationConfig::default();
    // A Rust component instantiates about 3 core instances and 1–2 memories;
    // JS and Python ones more. Sized for MAX_CONCURRENT_CALLS calls at once,
    // plus as many broker calls that rules wait for (`broker-view`, which
    // has a second pool of call slots): instances and stacks, which every
    // call needs one of, have room for both with a margin; the per-instance
    // counts below were already sized with one.
    let calls = u32::try_from(MAX_CONCURRENT_CALLS).unwrap_or(64);
    pool.total_component_instances(calls * 3)
        .total_core_instances(calls * 16)
        .total_memories(calls * 4)
        .total_tables(calls * 16)
        .total_stacks(calls * 3)
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
    let ticker = Arc::new(Ticker::default());
    start_ticker(&engine, ticker.clone(), parked_check);
    Ok((engine, ticker))
}

/// The epoch ticker's state: how many calls run, and whether it sleeps.
#[derive(Debug, Default)]
pub struct Ticker {
    active: AtomicUsize,
    /// Calls started so far: a call shorter than a tick is still seen.
    started: AtomicU64,
    parked: AtomicBool,
    ticks: AtomicU64,
    lock: Mutex<()>,
    wake: Condvar,
}

/// A guest call in progress: the ticker ticks while one exists.
#[derive(Debug)]
pub struct Running<'a>(&'a Ticker);

impl Ticker {
    /// Marks a call as running until the guard drops, waking the ticker if
    /// it sleeps. Costs three atomic operations while the ticker is awake.
    pub fn running(&self) -> Running<'_> {
        self.started.fetch_add(1, Ordering::SeqCst);
        // SeqCst pairs with the ticker's store of `parked` and load of
        // `active`: either this sees `parked` and wakes it, or the ticker
        // sees this call before it sleeps.
        self.active.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            let _held = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.wake.notify_one();
        }
        Running(self)
    }

    /// Epoch increments so far.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Whether the ticker sleeps (no call for [`PARK_AFTER_IDLE_TICKS`]).
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Increments the engine's epoch every [`EPOCH_TICK`] while calls run, and
/// for [`PARK_AFTER_IDLE_TICKS`] after the last one started or ended, until the engine is
/// dropped (the thread holds only a weak reference).
fn start_ticker(engine: &Engine, ticker: Arc<Ticker>, parked_check: Duration) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
        let mut idle = 0u32;
        let mut seen = 0u64;
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            ticker.ticks.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(EPOCH_TICK);
            let started = ticker.started.load(Ordering::SeqCst);
            if ticker.active.load(Ordering::SeqCst) > 0 || started != seen {
                seen = started;
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < PARK_AFTER_IDLE_TICKS {
                continue;
            }
            idle = 0;
            let mut held = ticker.lock.lock().unwrap_or_else(PoisonError::into_inner);
            ticker.parked.store(true, Ordering::SeqCst);
            // A call that started and ended before this thread woke still
            // counts: the ticker wakes for it and stays awake after it.
            while ticker.active.load(Ordering::SeqCst) == 0 && ticker.started.load(Ordering::SeqCst) == seen {
                let (h, waited) = ticker
                    .wake
                    .wait_timeout(held, parked_check)
                    .unwrap_or_else(PoisonError::into_inner);
                held = h;
                if waited.timed_out() && weak.upgrade().is_none() {
                    return;
                }
            }
            ticker.parked.store(false, Ordering::SeqCst);
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Polls `f` for up to 10 s.
    fn within(f: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    #[test]
    fn the_ticker_sleeps_while_no_call_runs_and_ticks_while_one_does() {
        // Asleep, it would check its engine only every ten minutes: only the
        // wake-up in `running` can get it ticking again within the test.
        let (engine, ticker) = build_with(
            EngineSettings {
                fuel: false,
                max_memory_bytes: 1 << 20,
            },
            Duration::from_secs(600),
        )
        .unwrap();
        assert!(within(|| ticker.is_parked()), "idle: it goes to sleep");
        let asleep = ticker.ticks();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(ticker.ticks(), asleep, "no ticks while asleep");

        let call = ticker.running();
        assert!(within(|| ticker.ticks() >= asleep + 20), "a call wakes it");
        assert!(!ticker.is_parked());
        // Longer than the idle allowance: a long call keeps it awake.
        std::thread::sleep(EPOCH_TICK * (PARK_AFTER_IDLE_TICKS + 50));
        assert!(!ticker.is_parked(), "never asleep while a call runs");
        drop(call);
        assert!(within(|| ticker.is_parked()), "asleep again after the call");
        let asleep = ticker.ticks();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(ticker.ticks(), asleep, "and stays asleep");

        // Calls far shorter than a tick, every 20 ms: the gaps never add
        // up to the idle allowance, so it stays awake between them.
        for i in 0..15 {
            drop(ticker.running());
            std::thread::sleep(Duration::from_millis(20));
            if i > 0 {
                assert!(!ticker.is_parked(), "asleep between calls 20 ms apart (call {i})");
            }
        }
        // And asleep once they stop.
        assert!(within(|| ticker.is_parked()));
        let asleep = ticker.ticks();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(ticker.ticks(), asleep, "asleep after the short calls");
        drop(engine);
    }
}
