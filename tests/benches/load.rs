//! End-to-end load on loopback: the full algobanana pipeline (webhook
//! token check, audit with group commit, tradingview rule, paper broker)
//! against a bare hyper server that reads the body and answers 200 with a
//! small JSON body, measured alternately in the same run. Closed loop:
//! `CONNECTIONS` keep-alive connections send back to back for `SECONDS`.
//! Prints alerts/s, p50/p99/p99.9 latency and the ratio to the baseline.
//! Run: `cargo bench -p algobanana-tests --bench load` (env LOAD_SECONDS,
//! LOAD_CONNECTIONS to change the defaults; LOAD_ONLY=algobanana skips the
//! baseline, for profiling).
// Timing statistics, not money: floats are fine here.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use algobanana_tests::HostBuilder;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;

/// Each request carries a distinct signal id, so every alert is a new
/// order (the same body twice would be a duplicate and skip the broker).
fn alert(conn: u64, n: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"ticker":"AAPL","action":"buy","quantity":"1","price":"190.35","signalId":"b{conn}-{n}"}}"#
    ))
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A process-wide sequence: ids stay distinct across rounds.
fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The baseline: hyper, read the body, answer a small JSON body.
async fn baseline() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"{\"status\":\"ok\"}",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

struct Run {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn load(addr: SocketAddr, path: String, connections: u64, seconds: u64) -> Run {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let (mut lat, mut errors) = (Vec::new(), 0);
            while Instant::now() < deadline {
                let req = hyper::Request::post(&path)
                    .header("host", "bench")
                    .header("content-type", "application/json")
                    .body(Full::new(alert(c, next_id())))
                    .unwrap();
                let t = Instant::now();
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        if ok {
                            lat.push(t.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut run = Run {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (lat, errors) = t.await.unwrap();
        run.requests += lat.len();
        run.errors += errors;
        run.latencies.extend(lat);
    }
    run.elapsed = started.elapsed();
    run.latencies.sort();
    run
}

fn pct(l: &[Duration], p: f64) -> f64 {
    if l.is_empty() {
        return 0.0;
    }
    let i = ((l.len() as f64 - 1.0) * p).round() as usize;
    l[i].as_secs_f64() * 1e3
}

fn main() {
    let seconds = env_or("LOAD_SECONDS", 5);
    let connections = env_or("LOAD_CONNECTIONS", 16);
    // The servers get their own runtime (2 workers, as `algobanana serve`
    // would on this machine); the load generator runs on another.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let base_addr = servers.block_on(baseline());
    let host = servers
        .block_on(
            HostBuilder::new()
                .broker_settings(serde_json::json!({"initial_cash": "1000000000000"}))
                // Rails that would refuse a benchmark's volume are off here;
                // every check still runs (position lookup, counts, audit).
                .toml("[risk]\nmax_orders_per_minute = 0\nmax_orders_per_day = 0\nmax_position = 0\n[trading]\nreconcile_interval_s = 0\n")
                .start(),
        )
        .unwrap();
    let hook = host.hook("default");

    println!("load: {connections} connections, {seconds} s per run, alternating, 2 rounds");
    let mut rows = Vec::new();
    for round in 0..2 {
        let only = std::env::var("LOAD_ONLY").ok();
        for (name, addr, path) in [
            ("bare hyper", base_addr, "/".to_owned()),
            ("algobanana", host.addr, hook.clone()),
        ] {
            if only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            let run = client.block_on(load(addr, path, connections, seconds));
            let rps = run.requests as f64 / run.elapsed.as_secs_f64();
            println!(
                "round {round} {name:<11} {rps:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  errors {}",
                pct(&run.latencies, 0.5),
                pct(&run.latencies, 0.99),
                pct(&run.latencies, 0.999),
                run.errors
            );
            rows.push((name, rps, run));
        }
    }
    let best = |n: &str| rows.iter().filter(|r| r.0 == n).map(|r| r.1).fold(0.0, f64::max);
    let (b, a) = (best("bare hyper"), best("algobanana"));
    println!();
    println!("| target | best req/s | ratio to bare hyper |");
    println!("|---|---|---|");
    println!("| bare hyper | {b:.0} | 1.00 |");
    println!("| algobanana full pipeline | {a:.0} | {:.2} |", a / b);
    servers.block_on(host.stop());
}
