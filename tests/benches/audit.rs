//! Audit append throughput and append-to-ack latency, against a baseline
//! measured in the same run: plain SQLite with the same pragmas (WAL,
//! `synchronous=FULL`) inserting the same rows in the same batch size from
//! one thread, with no hashing, no triggers and no channel. The ratio is
//! what the audit machinery (hash chain, guards, signed checkpoints, the
//! queue and the receipts) costs over the durable-write floor.
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
}
