//! At start, bringing `state.db` level with the audit log.
//!
//! `state.db` commits at `synchronous = NORMAL`: after a power loss or an
//! OS crash its last commits (those since its WAL was last synced, tens of
//! milliseconds under load) may roll back, while the audit log, at `FULL`,
//! keeps every event it acknowledged. An alert acknowledged with a 202
//! would then never resume, and an order sent to a broker would have no
//! row: the dedupe check could not find it, reconciliation would not ask
//! about it, and a rerun of its alert would send it again. What the audit
//! log can rebuild is restored here, before reconciliation and resumption:
//!
//! - an `alert.received` without its alert row: the row again, `received`
//!   (it resumes), or finished with the result of its `alert.processed`
//!   when that is in the log too. An alert row left `received` whose
//!   `alert.processed` is in the log is finished the same way, and an
//!   alert finished here gets its notifications queued (they were lost
//!   with its finish; `crate::trading::notify`);
//! - an allowed `order.intent` without its order row: the row again, in
//!   state `unknown`. Reconciliation then asks the broker by client order
//!   id, and a rerun of its alert finds it and sends nothing;
//! - an `order.rejected` (refused by the rails) without its row: the row,
//!   rejected.
//!
//! Plugin kv writes are not rebuilt: they are the plugin's own state (the
//! paper broker's book rolls back with them, and reconciliation then finds
//! the paper order never placed).
//!
//! What a crash takes, besides a power loss: `state.db`'s writes are
//! batched (`crate::store::batch`), and a batch commits when an alert
//! finishes or 5 ms after it opened, so a crash takes the writes of the
//! alerts not yet answered, which this restores the same way.
//!
//! Where to look: `state.db` loses a suffix of its writes (the open batch,
//! and after a power loss the commits since the WAL's last sync), so every
//! lost row was written after every row that survived. Each row's time is
//! taken just before it is written, so a lost row is newer than the newest
//! survivor, less the time between a row's clock read and its write
//! ([`MARGIN_NS`] covers that many times over, and a wall clock stepped
//! back by less). With no rows at all, the file's own creation time (kept
//! durably) is the floor: a `state.db` that was deleted and made again
//! does not replay the audit log's older alerts. Nor does one whose alerts
//! a retention run removed (`StateDb::alerts_pruned_before_ns`).
//!
//! Defense in depth: an event is used only if it matches its own entry
//! hash; one that does not is reported and skipped (`algobanana audit
//! verify` says more).

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::audit::query::{self, RawRow};
use crate::audit::{ActorKind, AuditError, AuditEvent, Outcome, action, chain};
use crate::store::StoreError;

/// How far before the newest surviving row the audit log is read.
pub const MARGIN_NS: i64 = 60_000_000_000;

/// Ids listed in the `state.recovered` event, at most (the counts are
/// always complete).
const LISTED: usize = 1_000;

/// Why the state could not be compared with the audit log.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The audit log could not be read.
    #[error(transparent)]
    Read(#[from] query::QueryError),
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The recovery could not be audited.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// What was restored.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Recovered {
    /// Audit events from this time on (UTC ns) were compared.
    pub from_ns: i64,
    /// Alert rows restored, still to run.
    pub alerts: Vec<String>,
    /// Alert rows restored or found unfinished, finished from the log.
    pub finished: Vec<String>,
    /// Order rows restored (client order ids).
    pub orders: Vec<String>,
    /// Events not used, and why.
    pub skipped: Vec<String>,
    /// Notifications queued again for the alerts finished from the log.
    pub notifications: usize,
}

impl Recovered {
    /// Whether nothing was restored or skipped.
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty() && self.finished.is_empty() && self.orders.is_empty() && self.skipped.is_empty()
    }
}

/// An alert as its `alert.received` event tells it.
struct Received {
    id: String,
    route: String,
    ts_ns: i64,
    request_id: String,
    content_type: String,
    body: Vec<u8>,
}

/// An order row as its `order.intent` or `order.rejected` event tells it.
struct OrderEvent {
    coid: String,
    alert_id: String,
    route: String,
    account: String,
    broker: String,
    fingerprint: String,
    intent: String,
    /// `None`: sent (state `unknown` now); `Some(reason)`: refused.
    refused: Option<String>,
    ts_ns: i64,
}

fn verified(row: &RawRow) -> bool {
    let (Ok(prev), Ok(stored)) = (hex::decode(&row.prev_hash), hex::decode(&row.entry_hash)) else {
        return false;
    };
    let Ok(prev) = <[u8; 32]>::try_from(prev.as_slice()) else {
        return false;
    };
    chain::entry_hash(&row.chain_row(), &prev).as_slice() == stored.as_slice()
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn received(row: &RawRow, p: &Value) -> Option<Received> {
    let body = p.get("body")?;
    let body = match (
        body.get("text").and_then(Value::as_str),
        body.get("base64").and_then(Value::as_str),
    ) {
        (Some(t), _) => t.as_bytes().to_vec(),
        (None, Some(b)) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b).ok()?
        }
        (None, None) => return None,
    };
    Some(Received {
        id: row.correlation_id.clone()?,
        route: text(p, "route")?,
        ts_ns: row.ts_ns,
        request_id: row.request_id.clone().unwrap_or_default(),
        content_type: text(p, "content_type")?,
        body,
    })
}

fn order_event(row: &RawRow, p: &Value) -> Option<OrderEvent> {
    let refused = (row.action == action::ORDER_REJECTED).then(|| text(p, "reason").unwrap_or_default());
    Some(OrderEvent {
        coid: text(p, "client_order_id")?,
        alert_id: row.correlation_id.clone()?,
        route: text(p, "route")?,
        account: text(p, "account")?,
        broker: text(p, "broker")?,
        fingerprint: text(p, "fingerprint")?,
        intent: p.get("intent").filter(|i| i.is_object())?.to_string(),
        refused,
        ts_ns: row.ts_ns,
    })
}

/// The time from which audit events are compared with the rows.
fn floor(app: &App) -> Result<i64, StoreError> {
    let created = app.state.created_at_ns()?;
    let newest: Option<i64> = app.state.with(|c| {
        c.query_row(
            "SELECT max(t) FROM (SELECT max(received_at_ns) AS t FROM alert UNION ALL SELECT max(created_at_ns) FROM orders)",
            [],
            |r| r.get(0),
        )
    })?;
    // Alerts a retention run removed stay removed, though the audit log
    // may still hold their `alert.received` (it is cut at a checkpoint).
    let pruned = app.state.alerts_pruned_before_ns()?.unwrap_or(i64::MIN);
    Ok(newest
        .map_or(created, |t| t.saturating_sub(MARGIN_NS).max(created))
        .max(pruned))
}

/// Restores the alert and order rows `state.db` lost, from the audit log;
/// audits what it restored (`state.recovered`). Run at start, before
/// reconciliation and resumption.
///
/// # Errors
/// [`RecoveryError`]: the host must not start then, since resuming
/// alerts without the orders they sent could send those twice.
pub async fn run(app: &App) -> Result<Recovered, RecoveryError> {
    let from_ns = floor(app)?;
    let mut out = Recovered {
        from_ns,
        ..Recovered::default()
    };
    let rows: Vec<RawRow> = {
        let conn = query::open_read_only(app.audit.path())?;
        let read = |e: rusqlite::Error| query::QueryError::Database {
            path: app.audit.path().display().to_string(),
            message: e.to_string(),
        };
        let mut s = conn
            .prepare(&format!(
                "SELECT {} FROM audit_event WHERE seq > {} AND ts_ns >= ?1 AND action IN (?2, ?3, ?4, ?5) ORDER BY seq",
                query::COLUMNS,
                query::LIVE
            ))
            .map_err(read)?;
        s.query_map(
            params![
                from_ns,
                action::ALERT_RECEIVED,
                action::ALERT_PROCESSED,
                action::ORDER_INTENT,
                action::ORDER_REJECTED
            ],
            RawRow::from_sql,
        )
        .and_then(Iterator::collect)
        .map_err(read)?
    };

    let mut alerts = Vec::new();
    let mut finished: HashMap<String, (bool, String, i64)> = HashMap::new();
    let mut orders = Vec::new();
    for row in &rows {
        // An invalid intent from the rule (`order.intent`, deny) got no row.
        if row.action == action::ORDER_INTENT && row.outcome != Outcome::Allow.as_str() {
            continue;
        }
        if !verified(row) {
            out.skipped.push(format!(
                "event {} ({}) does not match its entry hash and was not used; run `algobanana audit verify`",
                row.seq, row.action
            ));
            continue;
        }
        let payload: Value = serde_json::from_str(&row.payload).unwrap_or(Value::Null);
        match row.action.as_str() {
            action::ALERT_RECEIVED => match received(row, &payload) {
                Some(r) => alerts.push(r),
                None => out
                    .skipped
                    .push(format!("event {} (alert.received) lacks the alert's id, route or body", row.seq)),
            },
            action::ALERT_PROCESSED => {
                if let Some(id) = &row.correlation_id {
                    let processed = payload.get("status").and_then(Value::as_str) == Some("processed");
                    finished.insert(id.clone(), (processed, row.payload.clone(), row.ts_ns));
                }
            }
            _ => match order_event(row, &payload) {
                Some(o) => orders.push(o),
                None => out.skipped.push(format!(
                    "event {} ({}) lacks what the order row needs (an event written before order events carried their route, account and fingerprint)",
                    row.seq, row.action
                )),
            },
        }
    }

    let restored = app.state.durable(|tx| {
        let mut restored = Recovered::default();
        for a in &alerts {
            let (status, result) = match finished.get(&a.id) {
                Some((true, r, _)) => ("processed", Some(r.as_str())),
                Some((false, r, _)) => ("failed", Some(r.as_str())),
                None => ("received", None),
            };
            let n = tx.execute(
                "INSERT INTO alert(id, route, received_at_ns, request_id, content_type, body, status, result)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(id) DO NOTHING",
                params![a.id, a.route, a.ts_ns, a.request_id, a.content_type, a.body, status, result],
            )?;
            match (n, result) {
                (1, Some(_)) => restored.finished.push(a.id.clone()),
                (1, None) => restored.alerts.push(a.id.clone()),
                _ => {}
            }
        }
        // Rows that survived while their finish did not (one restored
        // above is not `received` and is left alone).
        for (id, (processed, result, _)) in &finished {
            let status = if *processed { "processed" } else { "failed" };
            let n = tx.execute(
                "UPDATE alert SET status = ?2, result = ?3 WHERE id = ?1 AND status = 'received'",
                params![id, status, result],
            )?;
            if n == 1 {
                restored.finished.push(id.clone());
            }
        }
        for o in &orders {
            let sent = o.refused.is_none();
            let exists = if sent {
                tx.query_row(
                    "SELECT 1 FROM orders WHERE client_order_id = ?1 AND sent = 1",
                    [&o.coid],
                    |_| Ok(()),
                )
            } else {
                tx.query_row(
                    "SELECT 1 FROM orders WHERE client_order_id = ?1 AND alert_id = ?2 AND sent = 0",
                    [&o.coid, &o.alert_id],
                    |_| Ok(()),
                )
            }
            .optional()?
            .is_some();
            if exists {
                continue;
            }
            let (state, reason) = match &o.refused {
                None => (
                    "unknown",
                    "restored from the audit log: state.db had lost this order (a power loss or OS crash); the broker is asked what became of it".to_owned(),
                ),
                Some(r) => ("rejected", r.clone()),
            };
            tx.execute(
                "INSERT INTO orders(client_order_id, fingerprint, alert_id, route, broker, intent, state, sent, reason, created_at_ns, updated_at_ns, account)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11)",
                params![o.coid, o.fingerprint, o.alert_id, o.route, o.broker, o.intent, state, sent, reason, o.ts_ns, o.account],
            )?;
            restored.orders.push(o.coid.clone());
        }
        Ok(restored)
    })?;
    out.alerts = restored.alerts;
    out.finished = restored.finished;
    out.orders = restored.orders;
    // A finish that state.db lost lost its queued notifications with it
    // (they commit in one batch): queued again, sent by
    // `notify::resume` with the rest. One delivered before a power loss
    // undid its commit is sent twice (delivery is at least once).
    for id in &out.finished {
        if let Some((_, result, ts_ns)) = finished.get(id) {
            let report: Value = serde_json::from_str(result).unwrap_or(Value::Null);
            let ctx = crate::audit::Context {
                request_id: text(&report, "request_id"),
                correlation_id: Some(id.clone()),
                ..crate::audit::Context::default()
            };
            let at = u64::try_from(*ts_ns).unwrap_or(0);
            let queued = crate::trading::notify::queue(app, crate::trading::notify::of_summary(&report, at), &ctx);
            out.notifications += queued.len();
        }
    }
    if out.is_empty() {
        return Ok(out);
    }
    tracing::warn!(
        alerts = out.alerts.len(),
        finished = out.finished.len(),
        orders = out.orders.len(),
        skipped = out.skipped.len(),
        "state.db had lost rows that the audit log holds (a power loss or OS crash?); restored them"
    );
    let list = |v: &[String]| v.iter().take(LISTED).cloned().collect::<Vec<_>>();
    app.audit
        .record(
            AuditEvent::new(
                ActorKind::System,
                "host",
                action::STATE_RECOVERED,
                if out.skipped.is_empty() {
                    Outcome::Success
                } else {
                    Outcome::Failure
                },
            )
            .resource("state.db")
            .payload(json!({
                "from_ns": out.from_ns,
                "alerts": list(&out.alerts), "alert_count": out.alerts.len(),
                "finished": list(&out.finished), "finished_count": out.finished.len(),
                "orders": list(&out.orders), "order_count": out.orders.len(),
                "skipped": list(&out.skipped), "skipped_count": out.skipped.len(),
                "notifications_queued": out.notifications,
            })),
        )
        .await?;
    Ok(out)
}
