//! End-to-end load on loopback: the full algobanana pipeline (webhook
//! token check, audit with group commit, tradingview rule, paper broker)
//! against a bare hyper server that reads the body and answers 200 with a
//! small JSON body, measured alternately in the same run.
//!
//! 1. Saturation, closed loop: `LOAD_CONNECTIONS` keep-alive connections
//!    send back to back for `LOAD_SECONDS`, two alternating rounds. Prints
//!    alerts/s, p50/p99/p99.9 and the ratio to the baseline.
//! 2. Fixed rates, open loop: 10 %, 50 % and 90 % of algobanana's
//!    saturation, both servers at the same rate. Request i is due at
//!    i / rate and its latency counts from then, so a request that waits
//!    for a busy connection counts its wait (no coordinated omission).
//!    Each algobanana run is on a new host and measured after
//!    `LOAD_WARMUP` seconds (default 1) at the same rate: the steady state
//!    at that rate, not the saturation rounds' leftover search indexing nor
//!    a new host's start-up.
//! 3. Burst, on a new host: 10× the saturation rate for 5 s. Prints what
//!    was acknowledged and what was refused (503 beyond
//!    `server.max_pending_alerts`), then waits for the backlog and checks
//!    every acknowledged alert was processed.
//!
//! Resident memory (the whole process: servers and load generator) idle
//! and at its peak, and the disk traffic per alert (`/proc/self/io`).
//! Run: `cargo bench -p algobanana-tests --bench load` (env LOAD_SECONDS,
//! LOAD_CONNECTIONS to change the defaults; LOAD_ONLY=algobanana skips the
//! baseline, for profiling; LOAD_RATE=N runs only algobanana at N alerts/s
//! after the warm-up and prints where the requests over the p99 were, for
//! finding stalls, each window with the CPU time the hypervisor stole in
//! it: `steal` of `/proc/stat`; a stall with time stolen is the machine's;
//! LOAD_WARMUP=S sets the warm-up, 0 for none; LOAD_WORKERS=N gives the
//! servers' runtime N workers instead of 2). `LOAD_RATE` also prints
//! where the alerts' time went, stage by stage, read from the audit log's
//! event times (median, and the slowest 1 %), and per alert and thread the
//! CPU time and the time spent waiting for a core (`schedstat` of each
//! thread; the load generator's is `load-client`); LOAD_KEEP=1 keeps the
//! host's data directory for more of that and prints where it is.
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

/// `server.max_pending_alerts` in this bench.
const BURST_QUEUE: usize = 128;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One keep-alive HTTP/1 connection to `addr`.
async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// The next alert of connection `conn`, posted to `path`.
fn request(path: &str, conn: u64) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post(path)
        .header("host", "bench")
        .header("content-type", "application/json")
        .body(Full::new(alert(conn, next_id())))
        .unwrap()
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
    /// Fixed-rate runs: (due time from the start, latency) per request.
    timeline: Vec<(Duration, Duration)>,
}

async fn load(addr: SocketAddr, path: String, connections: u64, seconds: u64) -> Run {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await;
            let (mut lat, mut errors) = (Vec::new(), 0);
            while Instant::now() < deadline {
                let req = request(&path, c);
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
        timeline: Vec::new(),
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

/// Open loop at `rate` requests/s for `seconds` over `connections`
/// connections (request i on connection i mod connections). Returns the
/// run and the count of answers per status.
async fn fixed_rate(
    addr: SocketAddr,
    path: String,
    rate: f64,
    seconds: u64,
    connections: u64,
) -> (Run, std::collections::BTreeMap<u16, usize>) {
    let total = (rate * seconds as f64) as u64;
    let started = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await;
            let (mut lat, mut statuses) = (Vec::<(Duration, Duration)>::new(), std::collections::BTreeMap::new());
            let mut i = c;
            while i < total {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                // The timer wakes up to about a millisecond late; that is the
                // load generator's, not the server's. Later than 2 ms means
                // the connection was busy: then the wait counts.
                let woke = Instant::now();
                let from = if woke.duration_since(due) > Duration::from_millis(2) {
                    due
                } else {
                    woke
                };
                let req = request(&path, c);
                let Ok(resp) = sender.send_request(req).await else {
                    *statuses.entry(0).or_insert(0) += 1;
                    break;
                };
                let status = resp.status().as_u16();
                let _ = resp.into_body().collect().await;
                *statuses.entry(status).or_insert(0) += 1;
                if (200..300).contains(&status) {
                    lat.push((due.duration_since(started), from.elapsed()));
                }
                i += connections;
            }
            (lat, statuses)
        }));
    }
    let mut run = Run {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        timeline: Vec::new(),
    };
    let mut statuses = std::collections::BTreeMap::new();
    for t in tasks {
        let (lat, st) = t.await.unwrap();
        run.requests += lat.len();
        run.latencies.extend(lat.iter().map(|l| l.1));
        run.timeline.extend(lat);
        for (k, v) in st {
            *statuses.entry(k).or_insert(0) += v;
        }
    }
    run.errors = statuses
        .iter()
        .filter(|(k, _)| !(200..300).contains(*k))
        .map(|(_, v)| v)
        .sum();
    run.elapsed = started.elapsed();
    run.latencies.sort();
    (run, statuses)
}

/// Sends `seconds` at `rate` to `addr` and drops the results: the warm-up
/// before a fixed-rate measurement (nothing when `seconds` is 0).
fn warm_up(client: &tokio::runtime::Runtime, addr: SocketAddr, path: &str, rate: f64, seconds: u64) {
    if seconds > 0 {
        client.block_on(fixed_rate(addr, path.to_owned(), rate, seconds, 64));
    }
}

fn rss_mib(field: &str) -> f64 {
    algobanana_tests::proc_status_kib(field) as f64 / 1024.0
}

/// Bytes this process has caused to be written to storage so far
/// (`write_bytes` of `/proc/self/io`: SQLite's WAL frames and checkpoints,
/// counted when the pages are dirtied). The host runs in this process and
/// the load generator writes nothing, so a difference over a run divided by
/// its alerts is the disk traffic one alert costs. `None` where the kernel
/// does not keep I/O accounting.
fn written_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/self/io")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until the process has written nothing for half a second (at most
/// 20 s): after a run the host still checkpoints and indexes the audit log
/// for search in its idle time (both start 20 ms after the last write, far
/// inside the half second; a longer idle timer there would need a longer
/// quiet window here). Settling first counts those writes with
/// the run that caused them and keeps them out of the next measurement.
/// The flag is false when the host was still writing after 20 s.
fn settle() -> Option<(u64, bool)> {
    let mut last = written_bytes()?;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(500));
        let now = written_bytes()?;
        if now == last {
            return Some((now, true));
        }
        last = now;
    }
    Some((last, false))
}

/// "N audit commits per alert" since `before` (`AuditLog::commits`): each
/// is one transaction and one fsync of the audit log, so fewer per alert
/// means the writer groups more.
fn commits_per_alert(host: &algobanana_tests::TestHost, before: u64, alerts: usize) -> String {
    format!(
        "{:.2} audit commits per alert",
        host.app.audit.commits().saturating_sub(before) as f64 / alerts.max(1) as f64
    )
}

/// "N KB per alert" over a run that began at `before` (after the host has
/// settled), or a note that it cannot be told here.
fn per_alert(before: Option<u64>, alerts: usize) -> String {
    match (before, settle()) {
        (Some(b), Some((a, quiet))) if alerts > 0 => format!(
            "{:.0} KB written per alert{}",
            (a.saturating_sub(b)) as f64 / alerts as f64 / 1e3,
            if quiet {
                ""
            } else {
                " (so far: the host was still writing 20 s after the run)"
            }
        ),
        _ => "disk writes not accounted on this system".to_owned(),
    }
}

fn cpus() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

/// The `steal` column of `/proc/stat` (CPU time the hypervisor gave to
/// other guests while this VM had work), in ms, or `None` off Linux.
fn steal_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?;
    // cpu user nice system idle iowait irq softirq steal ...; USER_HZ = 100.
    let ticks: u64 = cpu.split_whitespace().nth(8)?.parse().ok()?;
    Some(ticks * 10)
}

/// Per thread name, summed over this process's threads of that name: CPU
/// time, time spent runnable waiting for a core (both ns), and times
/// scheduled in (`/proc/self/task/*/schedstat`). Empty off Linux.
fn schedstat() -> std::collections::BTreeMap<String, [u64; 3]> {
    let mut by_name = std::collections::BTreeMap::<String, [u64; 3]>::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("schedstat")),
        ) else {
            continue;
        };
        let mut fields = stat.split_whitespace().map(|f| f.parse::<u64>().unwrap_or(0));
        let sums = by_name.entry(comm.trim().to_owned()).or_default();
        for sum in sums.iter_mut() {
            *sum += fields.next().unwrap_or(0);
        }
    }
    by_name
}

/// Prints, per alert and thread name, the CPU time and the wait for a core
/// between two [`schedstat`] samples.
fn print_schedstat(
    before: &std::collections::BTreeMap<String, [u64; 3]>,
    after: &std::collections::BTreeMap<String, [u64; 3]>,
    alerts: usize,
) {
    if after.is_empty() || alerts == 0 {
        return;
    }
    println!("per alert, by thread (CPU time; time runnable but waiting for a core; times scheduled in):");
    let n = alerts as u64;
    for (name, [cpu, wait, slices]) in after {
        let [cpu0, wait0, slices0] = before.get(name).copied().unwrap_or_default();
        let (cpu, wait, slices) = (
            cpu - cpu0.min(*cpu),
            wait - wait0.min(*wait),
            slices - slices0.min(*slices),
        );
        if cpu / n < 1_000 {
            continue;
        }
        println!(
            "  {name:<18} CPU {:>6} us  waiting {:>6} us  {:>3}.{:02} slices",
            cpu / n / 1_000,
            wait / n / 1_000,
            slices / n,
            slices * 100 / n % 100
        );
    }
}

/// Samples [`steal_ms`] every 100 ms from `t0`, so slow windows of a
/// fixed-rate run can be told apart: a stall with the CPUs stolen is the
/// machine's, one without is the host's to find.
struct StealSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<std::collections::BTreeMap<u64, u64>>,
}

impl StealSampler {
    fn start(t0: Instant) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut windows = std::collections::BTreeMap::new();
            std::thread::sleep(t0.saturating_duration_since(Instant::now()));
            let mut last = steal_ms();
            let mut w = 0u64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(
                    (t0 + Duration::from_millis(100 * (w + 1))).saturating_duration_since(Instant::now()),
                );
                let now = steal_ms();
                if let (Some(a), Some(b)) = (last, now) {
                    windows.insert(w, b.saturating_sub(a));
                }
                last = now;
                w += 1;
            }
            windows
        });
        Self { stop, thread }
    }

    fn stop(self) -> std::collections::BTreeMap<u64, u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Where the alerts' time went, from the audit log alone: each alert's
/// events (one correlation id) in commit order, and the time between one
/// event's creation and the next one's. A `plugin.call` event is created
/// when the call has ended, so its gap holds whatever the alert waited for
/// before the call (an awaited commit, the broker's lock) and the call.
/// Prints the median of every gap over the alerts received from `since_ns`
/// on (the measured run, not its warm-up) with the most common sequence of
/// events, and the mean over the slowest 1 % of them.
fn stages(audit_db: &std::path::Path, since_ns: i64) {
    let conn = match rusqlite::Connection::open_with_flags(audit_db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) {
        Ok(c) => c,
        Err(e) => return println!("no stage breakdown: cannot open {}: {e}", audit_db.display()),
    };
    let rows: Vec<(String, i64, String)> = match conn
        .prepare(
            "SELECT correlation_id, ts_ns, action || coalesce(' ' || json_extract(payload, '$.export'), '')
             FROM audit_event WHERE correlation_id IS NOT NULL ORDER BY seq",
        )
        .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
    {
        Ok(rows) => rows,
        Err(e) => return println!("no stage breakdown: {e}"),
    };
    let mut alerts = std::collections::HashMap::<String, (Vec<String>, Vec<i64>)>::new();
    for (id, ts, label) in rows {
        let a = alerts.entry(id).or_default();
        a.0.push(label);
        a.1.push(ts);
    }
    alerts.retain(|_, (_, ts)| ts.first().is_some_and(|&t| t >= since_ns));
    let mut shapes = std::collections::HashMap::<&[String], usize>::new();
    for (labels, _) in alerts.values() {
        *shapes.entry(labels.as_slice()).or_default() += 1;
    }
    let Some((shape, _)) = shapes.into_iter().max_by_key(|(_, n)| *n) else {
        return;
    };
    let shape = shape.to_vec();
    // (total, gaps) in µs, for the alerts of the common shape.
    let mut timed: Vec<(f64, Vec<f64>)> = alerts
        .values()
        .filter(|(labels, _)| *labels == shape)
        .map(|(_, ts)| {
            let gaps: Vec<f64> = ts.windows(2).map(|w| (w[1] - w[0]) as f64 / 1e3).collect();
            (gaps.iter().sum(), gaps)
        })
        .collect();
    timed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let slow = &timed[timed.len() - (timed.len() / 100).max(1)..];
    let median = |i: Option<usize>| {
        let mut v: Vec<f64> = timed.iter().map(|(t, g)| i.map_or(*t, |i| g[i])).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mean = |i: Option<usize>| slow.iter().map(|(t, g)| i.map_or(*t, |i| g[i])).sum::<f64>() / slow.len() as f64;
    println!(
        "where the time went, from the audit events' times ({} alerts; from each event's creation to the next one's):",
        timed.len()
    );
    println!("| from → to | median µs | slowest 1 %, mean µs |");
    println!("|---|---|---|");
    for (i, pair) in shape.windows(2).enumerate() {
        println!(
            "| {} → {} | {:.0} | {:.0} |",
            pair[0],
            pair[1],
            median(Some(i)),
            mean(Some(i))
        );
    }
    println!("| first → last event | {:.0} | {:.0} |", median(None), mean(None));
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
    // would on this machine; `LOAD_WORKERS` to try others); the load
    // generator runs on another.
    let workers = usize::try_from(env_or("LOAD_WORKERS", 2)).unwrap_or(2);
    if workers == 0 {
        eprintln!(
            "LOAD_WORKERS=0: the servers' runtime needs at least one worker; set LOAD_WORKERS=1 or more, or leave it unset for 2"
        );
        std::process::exit(2);
    }
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("load-client")
        .enable_all()
        .build()
        .unwrap();
    let base_addr = servers.block_on(baseline());
    // Every phase below gets a host of its own, on a new data directory: a
    // fixed-rate run must not start while the host is still indexing the
    // saturation rounds' events for search (tens of seconds of idle-time
    // work), which is the previous phase's cost, not this rate's.
    let start_host = || {
        servers
            .block_on(
                HostBuilder::new()
                    .broker_settings(serde_json::json!({"initial_cash": "1000000000000"}))
                    // Rails that would refuse a benchmark's volume are off here;
                    // every check still runs (position lookup, counts, audit).
                    .toml("[risk]\nmax_orders_per_minute = 0\nmax_orders_per_day = 0\nmax_position = 0\n[trading]\nreconcile_interval_s = 0\n")
                    // A bound the burst's 512 connections can overflow (the
                    // default is 1024).
                    .toml(&format!("[server]\nmax_pending_alerts = {BURST_QUEUE}\n"))
                    .start(),
            )
            .unwrap()
    };
    let host = start_host();
    let hook = host.hook("default");
    let idle_rss = rss_mib("VmRSS:");
    // Fixed-rate runs first send `LOAD_WARMUP` seconds (default 1) at their
    // rate and measure after that, so a new host's start-up (its WAL files
    // growing from nothing, first-touch of the plugin pool) stays out of a
    // steady-state percentile. `LOAD_WARMUP=0` measures from the first request.
    let warmup = env_or("LOAD_WARMUP", 1);

    // Diagnosis: one fixed-rate run against algobanana, with a timeline of
    // where the slow requests were, to tell stalls (clustered) from
    // queueing (spread out).
    if let Some(rate) = std::env::var("LOAD_RATE").ok().map(|r| match r.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => n,
        _ => panic!("LOAD_RATE={r:?} is not a rate: give alerts per second as a positive number, e.g. LOAD_RATE=700"),
    }) {
        warm_up(&client, host.addr, &hook, rate, warmup);
        let before = written_bytes();
        let commits = host.app.audit.commits();
        let measured_from = algobanana::audit::now_ns();
        let steal = StealSampler::start(Instant::now() + Duration::from_millis(50));
        let threads = schedstat();
        let (run, statuses) = client.block_on(fixed_rate(host.addr, hook.clone(), rate, seconds, 64));
        let threads_after = schedstat();
        let steal = steal.stop();
        let commits = commits_per_alert(&host, commits, run.requests);
        println!(
            "{rate:.0}/s for {seconds} s after {warmup} s of warm-up: p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  statuses {statuses:?}  {commits}  {}",
            pct(&run.latencies, 0.5),
            pct(&run.latencies, 0.99),
            pct(&run.latencies, 0.999),
            per_alert(before, run.requests)
        );
        let slow = pct(&run.latencies, 0.99);
        println!(
            "100 ms windows with a request at or over the p99 (start s: count over, max ms; CPU time the \
             hypervisor took from this VM in that window, of {} ms the CPUs had):",
            100 * cpus()
        );
        let mut windows = std::collections::BTreeMap::<u64, (usize, f64)>::new();
        for (due, lat) in &run.timeline {
            let ms = lat.as_secs_f64() * 1e3;
            if ms >= slow {
                let w = windows.entry(due.as_millis() as u64 / 100).or_default();
                w.0 += 1;
                w.1 = w.1.max(ms);
            }
        }
        for (w, (n, max)) in windows {
            let stolen = steal
                .get(&w)
                .map_or_else(|| "?".to_owned(), |ms| format!("{ms} ms stolen"));
            println!("  {:.1}: {n}, {max:.1}; {stolen}", w as f64 / 10.0);
        }
        let total: u64 = steal.values().sum();
        println!("CPU time stolen by the hypervisor during the run: {total} ms in all");
        print_schedstat(&threads, &threads_after, run.requests);
        let (dir, _) = servers.block_on(host.stop());
        stages(&dir.path().join("audit.db"), measured_from);
        if std::env::var_os("LOAD_KEEP").is_some() {
            println!("data directory kept: {}", dir.keep().display());
        }
        return;
    }

    println!("load: {connections} connections, {seconds} s per run, alternating, 2 rounds");
    let mut rows = Vec::new();
    let only = std::env::var("LOAD_ONLY").ok();
    for round in 0..2 {
        for (name, addr, path) in [
            ("bare hyper", base_addr, "/".to_owned()),
            ("algobanana", host.addr, hook.clone()),
        ] {
            if only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            let before = written_bytes();
            let commits = host.app.audit.commits();
            let run = client.block_on(load(addr, path, connections, seconds));
            let rps = run.requests as f64 / run.elapsed.as_secs_f64();
            // Includes what the run left for the host's idle time
            // (`settle`), which also keeps it out of the next round.
            let writes = if name == "algobanana" {
                let commits = commits_per_alert(&host, commits, run.requests);
                format!("  {commits}  {}", per_alert(before, run.requests))
            } else {
                String::new()
            };
            println!(
                "round {round} {name:<11} {rps:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  errors {}{writes}",
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
    println!("| algobanana full pipeline | {a:.0} | {:.3} |", a / b);
    servers.block_on(host.stop());
    if only.is_some() || a == 0.0 {
        return;
    }

    // Fixed rates, both servers at the same rate, each algobanana run on a
    // new host after the warm-up.
    println!();
    println!(
        "fixed rates: {seconds} s each after {warmup} s of warm-up at the same rate; algobanana on a new host each time"
    );
    println!(
        "| rate (share of algobanana's saturation) | algobanana p50 / p99 / p99.9 | bare hyper p50 / p99 / p99.9 | algobanana non-2xx | algobanana disk writes | CPU stolen during the algobanana run |"
    );
    println!("|---|---|---|---|---|---|");
    for share in [0.1, 0.5, 0.9] {
        let rate = a * share;
        let host = start_host();
        let hook = host.hook("default");
        warm_up(&client, host.addr, &hook, rate, warmup);
        let before = written_bytes();
        let commits = host.app.audit.commits();
        let steal = StealSampler::start(Instant::now() + Duration::from_millis(50));
        let (run, _) = client.block_on(fixed_rate(host.addr, hook.clone(), rate, seconds, 64));
        let stolen: u64 = steal.stop().values().sum();
        let commits = commits_per_alert(&host, commits, run.requests);
        let writes = format!("{}, {commits}", per_alert(before, run.requests));
        servers.block_on(host.stop());
        warm_up(&client, base_addr, "/", rate, warmup);
        let (base, _) = client.block_on(fixed_rate(base_addr, "/".to_owned(), rate, seconds, 64));
        println!(
            "| {rate:.0}/s ({:.0} %) | {:.2} / {:.2} / {:.2} ms | {:.2} / {:.2} / {:.2} ms | {} | {writes} | {stolen} ms of {} |",
            share * 100.0,
            pct(&run.latencies, 0.5),
            pct(&run.latencies, 0.99),
            pct(&run.latencies, 0.999),
            pct(&base.latencies, 0.5),
            pct(&base.latencies, 0.99),
            pct(&base.latencies, 0.999),
            run.errors,
            seconds * 1000 * cpus()
        );
    }

    // A burst of 10× the sustained rate for 5 s, on a new host.
    let host = start_host();
    let hook = host.hook("default");
    let processed = |host: &algobanana_tests::TestHost| -> (i64, i64) {
        host.app
            .state
            .with(|c| {
                c.query_row(
                    "SELECT count(*), coalesce(sum(status IN ('processed', 'failed')), 0) FROM alert",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .unwrap()
    };
    let (before_total, before_done) = processed(&host);
    let burst_rate = a * 10.0;
    let started = Instant::now();
    let (run, statuses) = client.block_on(fixed_rate(host.addr, hook.clone(), burst_rate, 5, 512));
    let burst_secs = started.elapsed().as_secs_f64();
    let acknowledged = run.requests as i64;
    // Wait for the backlog: every acknowledged alert must finish.
    let mut waited = 0;
    let (mut total, mut done) = processed(&host);
    while done - before_done < acknowledged && waited < 600 {
        std::thread::sleep(Duration::from_millis(100));
        (total, done) = processed(&host);
        waited += 1;
    }
    println!();
    println!(
        "burst: {burst_rate:.0}/s offered for 5 s over 512 connections, intake bound {BURST_QUEUE} ({:.1} s to send); answers by status {statuses:?}",
        burst_secs
    );
    println!(
        "burst: {acknowledged} acknowledged, {} alerts recorded, {} processed after {:.1} s more; lost: {}",
        total - before_total,
        done - before_done,
        f64::from(waited) / 10.0,
        acknowledged - (done - before_done)
    );
    println!(
        "burst: acknowledged p50 / p99 / p99.9 {:.2} / {:.2} / {:.2} ms",
        pct(&run.latencies, 0.5),
        pct(&run.latencies, 0.99),
        pct(&run.latencies, 0.999)
    );
    println!();
    println!(
        "resident memory (whole process): idle {idle_rss:.1} MiB after start, peak {:.1} MiB under load",
        rss_mib("VmHWM:")
    );
    servers.block_on(host.stop());
}
