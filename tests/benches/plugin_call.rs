//! Micro-benchmark: one call of the default tradingview rule as a fresh
//! WebAssembly instance (the host's real path: new store, limits,
//! instantiate from the cached `InstancePre`, evaluate, classify, measure
//! the output against its cap, drop; a second line adds rendering the output
//! as the audit row's JSON, which an audited call does after the call)
//! against the same parsing logic compiled natively, measured in the same
//! run. Prints the ratio. Run: `cargo bench -p algobanana-tests --bench plugin_call`
//! (`PLUGIN_CALL_ITERS=N` runs N wasm calls without criterion and prints the mean).
// Timing statistics, not money: floats are fine here.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss)]

// `parse.rs` is written for the `no_std` component, against `alloc`.
extern crate alloc;

use std::hint::black_box;
use std::time::Duration;

use algobanana::app::{App, AppOptions};
use algobanana::domain::ids::PluginName;
use algobanana::plugins::bindings::types as wit;
use algobanana::plugins::invoke::Returned;
use algobanana_tests::HostBuilder;
use criterion::Criterion;

#[path = "../../plugins/rules/tradingview/src/parse.rs"]
#[allow(dead_code)]
mod parse;

const ALERT: &str = r#"{"ticker":"AAPL","action":"buy","quantity":"10","price":"190.35","signalId":"sig-001"}"#;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (dir, _) = HostBuilder::new().write().unwrap();
    let app = rt.block_on(App::open(dir.path(), AppOptions::default())).unwrap();
    let plugin = app.registry.get(&PluginName::new("tradingview").unwrap()).unwrap();
    let alert = wit::Alert {
        id: "0192f6c4-8f3e-7cc0-a1b2-3c4d5e6f7a8b".into(),
        received_at: 0,
        route: "default".into(),
        content_type: "application/json".into(),
        body: ALERT.as_bytes().to_vec(),
    };
    // Sanity: both paths produce one intent.
    let settings = parse::settings("{}").unwrap();
    assert_eq!(
        parse::parse_alert(
            ALERT.as_bytes(),
            &settings,
            &mut None::<&algobanana_plugin_sdk::types::Portfolio>
        )
        .unwrap()
        .len(),
        1
    );
    let ex = rt
        .block_on(app.registry.execute_rule(&plugin, &alert, "{}", None))
        .unwrap();
    assert!(matches!(ex.returned, Returned::Ok(ref v) if v.len() == 1));

    // `PLUGIN_CALL_ITERS=N`: run N wasm calls, print the mean and exit. For
    // short alternating A/B runs (on a shared VM the neighbours move a
    // median by 20 % from one minute to the next, so pairs of runs a few
    // seconds long compare better than two long ones) and for `perf record`
    // or `strace -c` of the calls alone.
    if let Some(n) = std::env::var("PLUGIN_CALL_ITERS")
        .ok()
        .map(|v| match v.trim().parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => {
                panic!("PLUGIN_CALL_ITERS={v:?} is not a count: give a number of calls, e.g. PLUGIN_CALL_ITERS=100000")
            }
        })
    {
        let started = std::time::Instant::now();
        for _ in 0..n {
            black_box(
                rt.block_on(app.registry.execute_rule(&plugin, black_box(&alert), "{}", None))
                    .unwrap(),
            );
        }
        let elapsed = started.elapsed();
        println!(
            "{n} wasm calls in {elapsed:?}: {:.3} µs per call",
            elapsed.as_secs_f64() * 1e6 / f64::from(n)
        );
        return;
    }
    let mut c = Criterion::default()
        .output_directory(&algobanana_tests::criterion_dir())
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    let mut group = c.benchmark_group("tradingview_evaluate");
    group.bench_function("native", |b| {
        b.iter(|| {
            parse::parse_alert(
                black_box(ALERT.as_bytes()),
                &settings,
                &mut None::<&algobanana_plugin_sdk::types::Portfolio>,
            )
            .unwrap()
        })
    });
    group.bench_function("wasm_fresh_instance", |b| {
        b.iter(|| {
            rt.block_on(app.registry.execute_rule(&plugin, black_box(&alert), "{}", None))
                .unwrap()
        })
    });
    // What an audited call adds on the alert path: the output rendered as
    // the JSON of its `plugin.call` row (the call itself only measures it).
    group.bench_function("wasm_fresh_instance_and_audit_json", |b| {
        b.iter(|| {
            let ex = rt
                .block_on(app.registry.execute_rule(&plugin, black_box(&alert), "{}", None))
                .unwrap();
            black_box(ex.output())
        })
    });
    group.finish();
    c.final_summary();

    let median = |name: &str| algobanana_tests::criterion_median_ns("tradingview_evaluate", name);
    if let (Some(native), Some(wasm)) = (median("native"), median("wasm_fresh_instance")) {
        println!();
        println!("| path | median |");
        println!("|---|---|");
        println!("| native parse | {:.3} µs |", native / 1e3);
        println!("| wasm fresh instance + evaluate | {:.3} µs |", wasm / 1e3);
        println!("| ratio wasm / native | {:.1}× |", wasm / native);
        if let Some(rendered) = median("wasm_fresh_instance_and_audit_json") {
            println!("| wasm + the audit row's output JSON | {:.3} µs |", rendered / 1e3);
        }
    }
    drop(dir);
}
