//! Audit append throughput and append-to-ack latency, against a baseline
//! measured in the same run: plain SQLite with the same pragmas (WAL,
//! `synchronous=FULL`) inserting the same rows in the same batch size from
//! one thread, with no hashing, no triggers and no channel. The ratio is
//! what the audit machinery (hash chain, guards, signed checkpoints, the
//! queue and the receipts) costs over the durable-write floor.
//!
//! Then a retention prune of `AUDIT_PRUNE_EVENTS` (100,000; 0 skips it)
//! indexed events while events arrive at `AUDIT_PRUNE_RATE` (200/s):
//! append-to-ack latency during the prune against the same log before it.
//!
//! Run: `cargo bench -p algobanana-tests --bench audit` (env AUDIT_EVENTS,
//! AUDIT_RATE to change the defaults).
// Timing statistics, not money: floats are fine here.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss)]

use std::time::{Duration, Instant};

use algobanana::audit::writer::{AuditOptions, MAX_BATCH};
use algobanana::audit::{ActorKind, AuditEvent, AuditLog, Context, Outcome, action};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A typical event: a plugin call with its context and a ~300-byte payload.
fn event(i: u64) -> AuditEvent {
    let context = Context {
        request_id: Some(format!("req-{i:012}")),
        correlation_id: Some(format!("01931c5e-7f3a-7c4e-9f1b-{i:012}")),
        session_id: None,
        source_ip: Some(std::net::IpAddr::from([52, 89, 214, 238])),
        user_agent: Some("Go-http-client/1.1".into()),
    };
    AuditEvent::new(
        ActorKind::Plugin,
        "tradingview@0.1.0",
        action::PLUGIN_CALL,
        Outcome::Success,
    )
    .resource("rule:evaluate")
    .context(&context)
    .payload(serde_json::json!({
        "export": "evaluate", "duration_us": 41, "fuel": null, "memory_bytes": 1_179_648,
        "orders": [{"symbol": "AAPL", "side": "buy", "quantity": "10", "order_type": "market",
                    "time_in_force": "day", "client_order_id": format!("ab-{i:016}")}],
        "log_bytes": 0, "output_bytes": 212,
    }))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The floor: the same rows, same pragmas, same batch size, one thread.
fn baseline(n: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("floor.db")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE e(seq INTEGER PRIMARY KEY, ts_ns INTEGER, actor_kind TEXT, actor_id TEXT, action TEXT,
           resource TEXT, outcome TEXT, request_id TEXT, correlation_id TEXT, session_id TEXT, source_ip TEXT,
           user_agent TEXT, payload TEXT, prev_hash BLOB, entry_hash BLOB);",
    )
    .unwrap();
    let rows: Vec<(AuditEvent, String)> = (0..n)
        .map(|i| {
            let e = event(i);
            let p = serde_json::to_string(&e.payload).unwrap();
            (e, p)
        })
        .collect();
    let started = Instant::now();
    let mut conn = conn;
    for (b, chunk) in rows.chunks(MAX_BATCH).enumerate() {
        let tx = conn.transaction().unwrap();
        {
            let mut s = tx
                .prepare_cached("INSERT INTO e VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)")
                .unwrap();
            for (i, (e, p)) in chunk.iter().enumerate() {
                let seq = (b * MAX_BATCH + i) as i64;
                s.execute(rusqlite::params![
                    seq,
                    e.ts_ns,
                    e.actor_kind.as_str(),
                    e.actor_id,
                    e.action,
                    e.resource,
                    e.outcome.as_str(),
                    e.context.request_id,
                    e.context.correlation_id,
                    e.context.session_id,
                    e.context.source_ip.map(|ip| ip.to_string()),
                    e.context.user_agent,
                    p,
                    [0u8; 32].as_slice(),
                    [0u8; 32].as_slice()
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Saturation: `n` events queued as fast as the queue takes them; every
/// receipt awaited.
async fn throughput(n: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&dir.path().join("audit.db"), AuditOptions::default()).unwrap();
    let started = Instant::now();
    let waiter = {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let log = log.clone();
        let producer = tokio::spawn(async move {
            for i in 0..n {
                tx.send(log.append(event(i)).await.unwrap()).unwrap();
            }
        });
        tokio::spawn(async move {
            let mut done = 0u64;
            while let Some(r) = rx.recv().await {
                r.committed().await.unwrap();
                done += 1;
            }
            producer.await.unwrap();
            done
        })
    };
    let done = waiter.await.unwrap();
    let rate = done as f64 / started.elapsed().as_secs_f64();
    log.close();
    rate
}

/// Fixed rate: one event every 1/rate s for `seconds`, each receipt awaited
/// in its own task; returns sorted append-to-ack latencies.
async fn at_rate(rate: u64, seconds: u64) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&dir.path().join("audit.db"), AuditOptions::default()).unwrap();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let total = rate * seconds;
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            log.append(event(i)).await.unwrap().committed().await.unwrap();
            t.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for t in tasks {
        latencies.push(t.await.unwrap());
    }
    log.close();
    latencies.sort();
    latencies
}

/// Append-to-ack latencies of one event every 1/rate s, until `stop` says
/// so, each with when it was sent (from the start), in the order sent.
async fn appends_until(
    log: &AuditLog,
    rate: u64,
    first: u64,
    mut stop: impl FnMut() -> bool,
) -> Vec<(Duration, Duration)> {
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut i = 0u64;
    while !stop() {
        let due = started + interval.mul_f64(i as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let log = log.clone();
        let n = first + i;
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            log.append(event(n)).await.unwrap().committed().await.unwrap();
            (t - started, t.elapsed())
        }));
        i += 1;
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for t in tasks {
        latencies.push(t.await.unwrap());
    }
    latencies
}

fn sorted(latencies: impl Iterator<Item = Duration>) -> Vec<Duration> {
    let mut v: Vec<Duration> = latencies.collect();
    v.sort();
    v
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn read_i64(db: &std::path::Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
        .unwrap()
        .unwrap_or(-1)
}

/// A retention prune of `n` indexed events while events keep arriving at
/// `rate`: append-to-ack latency before the prune (the baseline, same log,
/// same rate) and while it runs, for at most 20 s; then, with no more
/// events, how long the writer's idle steps take to delete what is left.
async fn during_prune(n: u64, rate: u64) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let log = AuditLog::open(&db, AuditOptions::default()).unwrap();
    let mut receipts = Vec::new();
    for i in 0..n {
        receipts.push(log.append(event(i)).await.unwrap());
        if receipts.len() == 4096 {
            for r in receipts.drain(..) {
                r.committed().await.unwrap();
            }
        }
    }
    for r in receipts {
        r.committed().await.unwrap();
    }
    log.checkpoint_now().await.unwrap();
    // A long-running host has its history indexed.
    let indexing = Instant::now();
    let last = i64::try_from(n).unwrap() - 1;
    while read_i64(
        &db,
        "SELECT CAST(value AS INTEGER) FROM audit_meta WHERE key = 'fts_indexed_through'",
    ) < last
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let indexing = indexing.elapsed();
    let before = appends_until(&log, rate, n, {
        let t = Instant::now();
        move || t.elapsed() >= Duration::from_secs(3)
    })
    .await;
    let before = sorted(before.into_iter().map(|(_, l)| l));

    let left = |through: i64| read_i64(&db, &format!("SELECT count(*) FROM audit_event WHERE seq <= {through}"));
    let through = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(-1));
    let started = Instant::now();
    let prune = {
        let (log, through, archive) = (log.clone(), through.clone(), dir.path().join("archive.jsonl"));
        tokio::spawn(async move {
            let report = log
                .prune(algobanana::audit::prune::PruneRequest {
                    before_ns: algobanana::audit::now_ns(),
                    archive,
                    policy: "bench".into(),
                    actor_kind: ActorKind::System,
                    actor: "bench".into(),
                })
                .await
                .unwrap();
            through.store(report.pruned_through, std::sync::atomic::Ordering::SeqCst);
            (report, started.elapsed())
        })
    };
    let during = appends_until(&log, rate, 2 * n, {
        let mut checked = Instant::now();
        move || {
            if started.elapsed() >= Duration::from_secs(20) {
                return true;
            }
            let t = through.load(std::sync::atomic::Ordering::SeqCst);
            // Poll the file at most every 200 ms.
            if t < 0 || checked.elapsed() < Duration::from_millis(200) {
                return false;
            }
            checked = Instant::now();
            left(t) == 0
        }
    })
    .await;
    let (report, returned) = prune.await.unwrap();
    let archiving = sorted(during.iter().filter(|(at, _)| *at < returned).map(|(_, l)| *l));
    let deleting = sorted(during.iter().filter(|(at, _)| *at >= returned).map(|(_, l)| *l));
    let loaded = started.elapsed();
    let after_load = left(report.pruned_through);
    let idle = Instant::now();
    while left(report.pruned_through) > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle = idle.elapsed();
    log.close();
    let total = report.pruned_through + 1;
    println!(
        "prune of {total} indexed events (indexed in {:.1} s) while appending at {rate} events/s: \
         the prune returned after {:.2} s; under load {} rows deleted in {:.1} s; the other {after_load} in {:.1} s of idle time",
        indexing.as_secs_f64(),
        returned.as_secs_f64(),
        total - after_load,
        loaded.as_secs_f64(),
        idle.as_secs_f64()
    );
    println!("| append-to-ack | events | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    let during = sorted(during.into_iter().map(|(_, l)| l));
    for (name, lat) in [
        ("before the prune (baseline)", &before),
        ("during the prune", &during),
        ("… while it archives", &archiving),
        ("… after it returned, rows deleted under load", &deleting),
    ] {
        println!(
            "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
            lat.len(),
            ms(percentile(lat, 0.50)),
            ms(percentile(lat, 0.99)),
            ms(lat.last().copied().unwrap_or_default())
        );
    }
    println!(
        "ratio of max latency, during / before: {:.1}",
        ms(during.last().copied().unwrap_or_default()) / ms(before.last().copied().unwrap_or_default()).max(1e-3)
    );
}

fn main() {
    let n = env_or("AUDIT_EVENTS", 200_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let floor = baseline(n);
    let audit = rt.block_on(throughput(n));
    let floor2 = baseline(n);
    let audit2 = rt.block_on(throughput(n));
    let floor = (floor + floor2) / 2.0;
    let audit = (audit + audit2) / 2.0;
    let rate = env_or("AUDIT_RATE", ((audit * 0.5) as u64).clamp(1000, 50_000));
    let lat = rt.block_on(at_rate(rate, 3));
    println!("audit append, {n} events of ~{} bytes, batch {MAX_BATCH}", {
        let e = event(0);
        serde_json::to_string(&e.payload).unwrap().len()
    });
    println!("| plain SQLite floor | algobanana audit | ratio |");
    println!("|---|---|---|");
    println!("| {:.0} rows/s | {:.0} events/s | {:.2} |", floor, audit, audit / floor);
    println!(
        "append-to-ack at {rate} events/s (3 s): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        percentile(&lat, 0.999).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    let prune_events = env_or("AUDIT_PRUNE_EVENTS", 100_000);
    if prune_events > 0 {
        rt.block_on(during_prune(prune_events, env_or("AUDIT_PRUNE_RATE", 200)));
    }
}
