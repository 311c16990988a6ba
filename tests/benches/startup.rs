//! Cold start to ready with 20 plugins, from the precompiled cache and
//! without it, and resident memory once ready. Twenty distinct components
//! (different digests, so twenty compilations and twenty cache entries):
//! the built-in tradingview rule and paper broker, plus 18 copies of the
//! rule that differ in a custom section. "Ready" is `App::open` returning:
//! config, state and audit databases, vault, every plugin loaded with its
//! `InstancePre`, resume and reconciliation done; binding the socket is
//! what is left. Baseline in the same run: the same start with only the
//! two built-ins; the difference over 18 plugins is the per-plugin cost.
//! Run: `cargo bench -p algobanana-tests --bench startup`.
// Timing statistics, not money: floats are fine here.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use algobanana::app::{App, AppOptions};
use algobanana_tests::HostBuilder;
use algobanana_tests::custom_section::custom_section;
use algobanana_tests::plugins::TRADINGVIEW;

const PLUGINS: usize = 20;

/// `component` with a custom section appended: a different digest, the
/// same code (encoded as the test build appends the manifest section).
fn variant(component: &[u8], n: usize) -> Vec<u8> {
    let mut out = component.to_vec();
    out.extend(custom_section("algobanana-bench", format!("copy {n}").as_bytes()));
    out
}

fn open(rt: &tokio::runtime::Runtime, dir: &Path) -> Duration {
    let started = Instant::now();
    let app = rt.block_on(App::open(dir, AppOptions::default())).unwrap();
    let t = started.elapsed();
    app.audit.close();
    drop(app);
    t
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sources = tempfile::tempdir().unwrap();
    let original = std::fs::read(TRADINGVIEW).unwrap();
    let mut builder = HostBuilder::new();
    let copies = PLUGINS - 2;
    for n in 0..copies {
        let path: PathBuf = sources.path().join(format!("rule{n}.wasm"));
        std::fs::write(&path, variant(&original, n)).unwrap();
        builder = builder.plugin(&format!("rule{n}"), path.to_str().unwrap(), "rule");
    }
    let (dir, _) = builder.write().unwrap();
    let (base_dir, _) = HostBuilder::new().write().unwrap();

    // Without the cache: every component compiled at start.
    let cold = open(&rt, dir.path());
    // From the cache (what every later start pays), median of five.
    let warm = median((0..5).map(|_| open(&rt, dir.path())).collect());
    let base_cold = open(&rt, base_dir.path());
    let base_warm = median((0..5).map(|_| open(&rt, base_dir.path())).collect());

    // Resident memory of a ready host with the 20 plugins.
    let before = algobanana_tests::proc_status_kib("VmRSS:");
    let app = rt.block_on(App::open(dir.path(), AppOptions::default())).unwrap();
    let ready = algobanana_tests::proc_status_kib("VmRSS:");
    app.audit.close();
    drop(app);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let per_plugin = (ms(warm) - ms(base_warm)) / copies as f64;
    println!();
    println!("| start | {PLUGINS} plugins | 2 plugins (baseline) | per extra plugin |");
    println!("|---|---|---|---|");
    println!(
        "| without the cache (compile) | {:.0} ms | {:.0} ms | {:.1} ms |",
        ms(cold),
        ms(base_cold),
        (ms(cold) - ms(base_cold)) / copies as f64
    );
    println!(
        "| from the precompiled cache | {:.1} ms | {:.1} ms | {per_plugin:.2} ms |",
        ms(warm),
        ms(base_warm)
    );
    println!();
    println!(
        "resident memory: {:.1} MiB for the whole process once ready ({:.1} MiB before the open)",
        ready as f64 / 1024.0,
        before as f64 / 1024.0
    );
    println!("targets (issue 9): cached start ≤ 100 ms with 20 plugins; RSS idle ≤ 64 MiB");
}
