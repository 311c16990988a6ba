//! Per-language costs of a rule plugin (issue 8): the tradingview rule in
//! Rust, JavaScript (componentize-js) and Python (componentize-py) on the
//! same alert, each as a fresh instance per call through the host's real
//! path (new store with limits, instantiate from the cached `InstancePre`,
//! evaluate, classify, drop). Then the start-up side: compiling each
//! component against loading it from the precompiled cache through the
//! registry (digest, `.cwasm` hash check, mmap, import checks,
//! `InstancePre`). Prints a table; nothing is asserted.
//! Run: `cargo bench -p algobanana-tests --bench languages`.
// Timing statistics, not money: floats are fine here.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use algobanana::app::{App, AppOptions};
use algobanana::domain::ids::PluginName;
use algobanana::plugins::Registry;
use algobanana::plugins::bindings::types as wit;
use algobanana::plugins::invoke::Returned;
use algobanana::store::{STATE_DB, StateDb};
use algobanana_tests::HostBuilder;
use algobanana_tests::plugins::{TRADINGVIEW_JS, TRADINGVIEW_PY};
use criterion::Criterion;

const ALERT: &str = r#"{"ticker":"AAPL","action":"buy","quantity":"10","price":"190.35","signalId":"sig-001"}"#;

/// (label, plugin name, component source). The Rust rule is the built-in
/// copy, the one the host embeds.
const LANGS: &[(&str, &str, &str)] = &[
    ("rust", "tv-rust", "builtin:tradingview"),
    ("js", "tv-js", TRADINGVIEW_JS),
    ("python", "tv-py", TRADINGVIEW_PY),
];

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut builder = HostBuilder::new();
    for (_, name, path) in LANGS {
        builder = builder.plugin(name, path, "rule");
    }
    let (dir, _) = builder.write().unwrap();

    // Compiles every plugin into the data dir's cache.
    let app = rt.block_on(App::open(dir.path(), AppOptions::default())).unwrap();

    // An empty registry: the engine and its pool, which every load pays.
    let empty = median_load(dir.path(), "");
    let mut startup = Vec::new();
    for (label, name, path) in LANGS {
        let text = format!("[plugins.{name}]\nsource = {path:?}\nworld = \"rule\"\n");
        startup.push((*label, compile_time(path), median_load(dir.path(), &text)));
    }

    let alert = wit::Alert {
        id: "0192f6c4-8f3e-7cc0-a1b2-3c4d5e6f7a8b".into(),
        received_at: 0,
        route: "default".into(),
        content_type: "application/json".into(),
        body: ALERT.as_bytes().to_vec(),
    };
    let mut c = Criterion::default()
        .output_directory(&algobanana_tests::criterion_dir())
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    let mut group = c.benchmark_group("rule_fresh_instance");
    for (label, name, _) in LANGS {
        let plugin = app.registry.get(&PluginName::new(*name).unwrap()).unwrap();
        // Sanity: one intent, the same in every language.
        let ex = rt
            .block_on(app.registry.execute_rule(&plugin, &alert, "{}", None))
            .unwrap();
        assert!(
            matches!(ex.returned, Returned::Ok(ref v) if v.len() == 1),
            "{label}: {:?}",
            ex.returned
        );
        group.bench_function(*label, |b| {
            b.iter(|| {
                rt.block_on(app.registry.execute_rule(&plugin, black_box(&alert), "{}", None))
                    .unwrap()
            })
        });
    }
    group.finish();
    c.final_summary();

    println!();
    println!("| language | fresh instance + evaluate (median) | compile | load from cache (registry, minus engine) |");
    println!("|---|---|---|---|");
    for (label, compile, load) in &startup {
        let median = median_ns(label).map_or("n/a".to_owned(), |ns| format!("{:.1} µs", ns / 1e3));
        println!(
            "| {label} | {median} | {:.0} ms | {:.1} ms |",
            compile.as_secs_f64() * 1e3,
            load.saturating_sub(empty).as_secs_f64() * 1e3
        );
    }
    println!(
        "an empty registry (engine, pool, ticker) takes {:.1} ms",
        empty.as_secs_f64() * 1e3
    );
    drop(app);
    drop(dir);
}

/// `Engine::precompile_component` on the engine the host builds: what the
/// first load of a new component costs.
fn compile_time(source: &str) -> Duration {
    let bytes = match source.strip_prefix("builtin:") {
        Some(name) => algobanana::plugins::builtin::find(name).unwrap().wasm.to_vec(),
        None => std::fs::read(source).unwrap(),
    };
    let engine = algobanana::plugins::engine::build(algobanana::plugins::engine::EngineSettings {
        fuel: false,
        max_memory_bytes: 64 << 20,
    })
    .unwrap()
    .0;
    let started = Instant::now();
    black_box(engine.precompile_component(&bytes).unwrap());
    started.elapsed()
}

/// The median of five registry loads of `config` from a warm cache.
fn median_load(data_dir: &std::path::Path, config: &str) -> Duration {
    let config = algobanana::config::parse(config, &data_dir.join("bench.toml")).unwrap();
    let cache = data_dir.join("cache");
    // Warm: compiles once if this engine configuration is new.
    drop(Registry::load(&config, StateDb::open(&data_dir.join(STATE_DB)).unwrap(), &cache).unwrap());
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let db = StateDb::open(&data_dir.join(STATE_DB)).unwrap();
            let started = Instant::now();
            let r = Registry::load(&config, db, &cache).unwrap();
            let t = started.elapsed();
            drop(r);
            t
        })
        .collect();
    times.sort();
    times[2]
}

fn median_ns(label: &str) -> Option<f64> {
    algobanana_tests::criterion_median_ns("rule_fresh_instance", label)
}
