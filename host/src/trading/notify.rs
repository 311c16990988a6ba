//! Notifications after the order path: fills, rejections and errors go to
//! every `[[notifications]]` entry that wants them, through notifier
//! plugins. They run in a task of their own after the alert's result is
//! known, so a slow or failing notifier never delays or blocks an order;
//! each call is an audited `plugin.call` like any other.
//!
//! A notification is queued in `state.db` (`notify_outbox`) before it is
//! sent: one row per notification and entry, written in the same batch as
//! the alert's finish, so the two commit together. The row goes when the
//! notification is delivered, or when it is dropped (refused by the
//! service, given up after its last attempt, its notifier disabled, its
//! entry gone), and every drop is audited as `notification.dropped` with
//! the reason. What is left at a stop or a crash is sent at the next start
//! ([`resume`]), so a fill is not lost because the host restarted while
//! the chat service was down. Delivery is at least once: a crash between
//! a delivery and its row's removal sends it again at the start (the
//! notification names its alert and client order id, so a receiver can
//! tell). An alert whose finish `state.db` lost and the audit log restored
//! (`crate::recovery`) gets its notifications queued then.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::params;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::app::App;
use crate::audit::{ActorKind, AuditEvent, Context, Outcome, action};
use crate::config::NotificationConfig;
use crate::domain::order::OrderAck;
use crate::plugins::bindings::types::{Notification, NotificationKind, NotifyError};
use crate::plugins::invoke::{CallError, Returned, TrapCause};
use crate::store::StoreError;
use crate::trading::orders::{OrderRow, OrderState};

/// The configured name of a kind (`[[notifications]] on`).
pub fn kind_name(k: NotificationKind) -> &'static str {
    match k {
        NotificationKind::Fill => "fill",
        NotificationKind::Rejection => "rejection",
        NotificationKind::Error => "error",
        NotificationKind::KillSwitch => "kill_switch",
    }
}

fn kind_of(name: &str) -> Option<NotificationKind> {
    Some(match name {
        "fill" => NotificationKind::Fill,
        "rejection" => NotificationKind::Rejection,
        "error" => NotificationKind::Error,
        "kill_switch" => NotificationKind::KillSwitch,
        _ => return None,
    })
}

/// A string field, or a number's text (a decimal in either form).
fn plain(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The notifications an alert's result gives rise to, read from the
/// result as it is recorded (`alert.processed`, the alert's row): the same
/// function serves a finished alert and one restored from the audit log.
/// `at` is when the alert finished (UTC ns).
pub fn of_summary(report: &Value, at: u64) -> Vec<Notification> {
    let route = plain(report, "route").unwrap_or_default();
    let alert_id = plain(report, "alert_id").unwrap_or_default();
    let mut out = Vec::new();
    if report.get("status").and_then(Value::as_str) != Some("processed") {
        let error = report.get("error").cloned().unwrap_or(Value::Null);
        let message = plain(&error, "message").unwrap_or_else(|| "failed".to_owned());
        out.push(Notification {
            kind: NotificationKind::Error,
            route: route.clone(),
            alert_id: alert_id.clone(),
            client_order_id: None,
            symbol: None,
            summary: format!("Alert on route {route} failed: {message}"),
            details: json!({ "error": error }).to_string(),
            at,
        });
    }
    out.extend(
        report
            .get("orders")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|o| of_order(&route, &alert_id, o, at)),
    );
    out
}

/// The notification of one order (an entry of a result's `orders`, or
/// what reconciliation learned, in the same shape): fills (a partial one
/// says how much), rejections and errors; `None` for the rest.
fn of_order(route: &str, alert_id: &str, o: &Value, at: u64) -> Option<Notification> {
    let outcome = o.get("outcome").and_then(Value::as_str)?;
    let kind = match outcome {
        "filled" | "partially_filled" => NotificationKind::Fill,
        "rejected" => NotificationKind::Rejection,
        "error" => NotificationKind::Error,
        _ => return None,
    };
    let (symbol, what) = match o.get("intent").filter(|i| i.is_object()) {
        Some(i) => {
            let symbol = plain(i, "symbol").unwrap_or_default();
            let what = format!(
                "{} {} {symbol}",
                plain(i, "side").unwrap_or_default(),
                plain(i, "quantity").unwrap_or_default()
            );
            (Some(symbol), what)
        }
        None => (None, "order".to_owned()),
    };
    let reason = plain(o, "reason");
    let summary = match kind {
        NotificationKind::Fill => {
            let ack = o.get("ack").cloned().unwrap_or(Value::Null);
            let price = plain(&ack, "average_fill_price")
                .map(|p| format!(" @ {p}"))
                .unwrap_or_default();
            match plain(&ack, "filled_quantity").filter(|_| outcome == "partially_filled") {
                Some(filled) => format!("Partially filled {filled} of {what}{price} (route {route})"),
                None => format!("Filled {what}{price} (route {route})"),
            }
        }
        NotificationKind::Rejection => format!(
            "Rejected {what} (route {route}): {}",
            reason.as_deref().unwrap_or("no reason given")
        ),
        _ => format!(
            "Order error {what} (route {route}): {}",
            reason.as_deref().unwrap_or("unknown")
        ),
    };
    Some(Notification {
        kind,
        route: route.to_owned(),
        alert_id: alert_id.to_owned(),
        client_order_id: plain(o, "client_order_id"),
        symbol,
        summary,
        details: o.to_string(),
        at,
    })
}

/// The notification of what reconciliation learned about an order after
/// its alert was answered (a working limit order that filled, one the
/// broker rejected later), given what the lookup found (`state`, `ack`)
/// and what it changed (`before`: the state and fill it found, read with
/// its change): a fill when more is filled than before, a rejection when
/// it was not rejected before; `None` otherwise (a cancel or an expiry
/// has no notification kind, and a lookup that changed nothing, such as
/// one that repeats another's answer, tells nothing new).
pub fn of_reconciled(
    o: &OrderRow,
    state: OrderState,
    ack: Option<&OrderAck>,
    detail: &str,
    before: Option<(OrderState, Option<rust_decimal::Decimal>)>,
    at: u64,
) -> Option<Notification> {
    let (was, filled_before) = before?;
    let outcome = match state {
        OrderState::Filled | OrderState::PartiallyFilled => {
            let now = ack.map(|a| a.filled_quantity).unwrap_or_default();
            if now <= filled_before.unwrap_or_default() && was == state {
                return None;
            }
            if state == OrderState::Filled {
                "filled"
            } else {
                "partially_filled"
            }
        }
        OrderState::Rejected if was != OrderState::Rejected => "rejected",
        _ => return None,
    };
    let order = json!({
        "client_order_id": o.client_order_id,
        "account": o.account,
        "intent": serde_json::from_str::<Value>(&o.intent).unwrap_or(Value::Null),
        "outcome": outcome,
        "reason": (outcome == "rejected").then_some(detail),
        "ack": ack,
        "learned_by": "reconciliation",
    });
    of_order(&o.route, &o.alert_id, &order, at)
}

/// Whether `target` wants `n`: its kinds, and its routes. No route filter
/// applies to what concerns the whole host: the kill switch (it stops
/// every route) and what names no route (a halt).
fn wants(target: &NotificationConfig, n: &Notification) -> bool {
    target.on.iter().any(|k| k == kind_name(n.kind))
        && (n.kind == NotificationKind::KillSwitch
            || n.route.is_empty()
            || target.routes.as_ref().is_none_or(|routes| routes.contains(&n.route)))
}

/// A notification as its outbox row keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    kind: String,
    route: String,
    alert_id: String,
    client_order_id: Option<String>,
    symbol: Option<String>,
    summary: String,
    details: String,
    at: u64,
}

impl Stored {
    fn of(n: &Notification) -> Self {
        Self {
            kind: kind_name(n.kind).to_owned(),
            route: n.route.clone(),
            alert_id: n.alert_id.clone(),
            client_order_id: n.client_order_id.clone(),
            symbol: n.symbol.clone(),
            summary: n.summary.clone(),
            details: n.details.clone(),
            at: n.at,
        }
    }

    fn into_notification(self) -> Option<Notification> {
        Some(Notification {
            kind: kind_of(&self.kind)?,
            route: self.route,
            alert_id: self.alert_id,
            client_order_id: self.client_order_id,
            symbol: self.symbol,
            summary: self.summary,
            details: self.details,
            at: self.at,
        })
    }
}

/// One notification for one `[[notifications]]` entry, queued.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Its outbox row (`None`: it could not be stored, and lives in
    /// memory only).
    id: Option<i64>,
    /// The entry's index in `[[notifications]]`.
    target: usize,
    notification: Notification,
    ctx: Context,
    /// Attempts made so far.
    attempts: usize,
    /// A rate window's summary: what it tells, final when the window
    /// ends ([`Window`]), and when that is.
    summary: Option<(Arc<Mutex<Held>>, tokio::time::Instant)>,
}

/// One `[[notifications]]` entry's rate window (`max_per_minute`): the
/// first `max_per_minute` notifications of a window go out one by one; the
/// rest are held and told in one summary when the window ends. The
/// summary is an outbox row like the others, kept up to date as the window
/// holds more, so a stop or a crash before the window's end sends it at
/// the next start. Host-wide notifications (the kill switch, a halt) are
/// never held.
#[derive(Debug)]
pub struct Window {
    start: tokio::time::Instant,
    sent: u32,
    held: Option<Arc<Mutex<Held>>>,
}

/// What a window held back.
#[derive(Debug)]
pub struct Held {
    /// The summary's outbox row.
    row: Option<i64>,
    target: usize,
    limit: u32,
    window: Duration,
    total: u32,
    kinds: std::collections::BTreeMap<&'static str, u32>,
    routes: std::collections::BTreeSet<String>,
    /// The first [`HELD_ALERTS_LISTED`] alerts, without repeats.
    alerts: Vec<String>,
    /// The window ended and its summary was taken: nothing more joins it.
    closed: bool,
}

/// Alert ids a summary lists, at most.
const HELD_ALERTS_LISTED: usize = 20;

impl Held {
    fn add(&mut self, n: &Notification) {
        self.total += 1;
        *self.kinds.entry(kind_name(n.kind)).or_default() += 1;
        self.routes.insert(n.route.clone());
        if !n.alert_id.is_empty() && self.alerts.len() < HELD_ALERTS_LISTED && !self.alerts.contains(&n.alert_id) {
            self.alerts.push(n.alert_id.clone());
        }
    }

    /// The summary as it stands: of the most severe kind it holds, on its
    /// one route (or none, when it spans several).
    fn notification(&self, at: u64) -> Notification {
        let kind = if self.kinds.contains_key("error") {
            NotificationKind::Error
        } else if self.kinds.contains_key("rejection") {
            NotificationKind::Rejection
        } else {
            NotificationKind::Fill
        };
        let counts: Vec<String> = self
            .kinds
            .iter()
            .map(|(k, n)| format!("{n} {k}{}", if *n == 1 { "" } else { "s" }))
            .collect();
        let route = match self.routes.len() {
            1 => self.routes.iter().next().cloned().unwrap_or_default(),
            _ => String::new(),
        };
        Notification {
            kind,
            route,
            alert_id: String::new(),
            client_order_id: None,
            symbol: None,
            summary: format!(
                "{} more notification{} within {} s, not sent one by one (notifications[{}] sends at most {} a minute): {}; the audit log and GET /v1/orders have each",
                self.total,
                if self.total == 1 { "" } else { "s" },
                self.window.as_secs(),
                self.target,
                self.limit,
                counts.join(", ")
            ),
            details: json!({
                "held": self.total, "kinds": self.kinds, "routes": self.routes,
                "alert_ids": self.alerts, "max_per_minute": self.limit,
            })
            .to_string(),
            at,
        }
    }
}

/// Waits before each retry of a notification the service could not take
/// (`unavailable`: unreachable, 5xx, 429; or the notifier's deadline):
/// the WIT contract says the host may try again later, and a fill a trader
/// never hears of because the chat service hiccuped once is a lost fill.
/// Five attempts over about two and a half minutes, each an audited
/// `plugin.call`; then it is dropped (`notification.dropped`). A restart
/// in between gives it one attempt at the start and the rest of this
/// schedule after it.
pub const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
];

/// Notifications waiting to be tried again, at most, per host
/// ([`App::notify_waiting`]): a service that is down during a busy hour
/// cannot pile up retries without bound (past this, a failed notification
/// is dropped, and the drop is audited).
pub const MAX_WAITING: usize = 1_000;

/// A queued notification older than this at a start is dropped (audited)
/// rather than sent: after a day down, a burst of stale fills is noise,
/// and the orders' states are in the admin API.
pub const RESUME_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Queues `notifications` for every entry that wants them, in the open
/// batch of `state.db`: called before the batch that finishes the alert
/// commits, so the rows commit with it. Send the result with [`send`]
/// once that commit is done. A failure to store is logged, and the
/// notifications are still sent, from memory.
pub fn queue(app: &App, notifications: Vec<Notification>, ctx: &Context) -> Vec<Queued> {
    let mut out = Vec::new();
    // Summaries that hold one more now: their rows are brought up to date.
    let mut grown: Vec<Arc<Mutex<Held>>> = Vec::new();
    let now = tokio::time::Instant::now();
    {
        let mut windows = app.notify_windows.lock().unwrap_or_else(PoisonError::into_inner);
        for n in notifications {
            for (target, entry) in app.config.notifications.iter().enumerate() {
                if !wants(entry, &n) {
                    continue;
                }
                let one = Queued {
                    id: None,
                    target,
                    notification: n.clone(),
                    ctx: ctx.clone(),
                    attempts: 0,
                    summary: None,
                };
                let host_wide = n.kind == NotificationKind::KillSwitch || n.route.is_empty();
                let Some(limit) = entry.max_per_minute.filter(|_| !host_wide) else {
                    out.push(one);
                    continue;
                };
                let w = windows.entry(target).or_insert(Window {
                    start: now,
                    sent: 0,
                    held: None,
                });
                if now.duration_since(w.start) >= app.notify_window {
                    *w = Window {
                        start: now,
                        sent: 0,
                        held: None,
                    };
                }
                if w.sent < limit {
                    w.sent += 1;
                    out.push(one);
                    continue;
                }
                match &w.held {
                    Some(held) => {
                        let mut h = held.lock().unwrap_or_else(PoisonError::into_inner);
                        if h.closed {
                            // Its summary is on its way: this one goes alone.
                            out.push(one);
                        } else {
                            h.add(&n);
                            drop(h);
                            grown.push(held.clone());
                        }
                    }
                    None => {
                        let mut h = Held {
                            row: None,
                            target,
                            limit,
                            window: app.notify_window,
                            total: 0,
                            kinds: std::collections::BTreeMap::new(),
                            routes: std::collections::BTreeSet::new(),
                            alerts: Vec::new(),
                            closed: false,
                        };
                        h.add(&n);
                        let held = Arc::new(Mutex::new(h));
                        w.held = Some(held.clone());
                        out.push(Queued {
                            ctx: Context::default(),
                            summary: Some((held, w.start + app.notify_window)),
                            ..one
                        });
                    }
                }
            }
        }
    }
    if out.is_empty() && grown.is_empty() {
        return out;
    }
    let now_ns = crate::audit::now_ns();
    let at = u64::try_from(now_ns).unwrap_or(0);
    for q in &mut out {
        if let Some((held, _)) = &q.summary {
            q.notification = held.lock().unwrap_or_else(PoisonError::into_inner).notification(at);
        }
    }
    let stored = app.state.with_tx(|c| {
        let mut insert = c.prepare_cached(
            "INSERT INTO notify_outbox(target, plugin, notification, context, created_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let ids = out
            .iter()
            .map(|q| {
                let plugin = app.config.notifications[q.target].plugin.as_str();
                let n = serde_json::to_string(&Stored::of(&q.notification)).unwrap_or_default();
                let context = serde_json::to_string(&q.ctx).unwrap_or_else(|_| "{}".to_owned());
                insert.execute(params![q.target, plugin, n, context, now_ns])?;
                Ok(c.last_insert_rowid())
            })
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        for held in &grown {
            let h = held.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(row) = h.row {
                let n = serde_json::to_string(&Stored::of(&h.notification(at))).unwrap_or_default();
                c.execute(
                    "UPDATE notify_outbox SET notification = ?2 WHERE id = ?1",
                    params![row, n],
                )?;
            }
        }
        Ok(ids)
    });
    match stored {
        Ok(ids) => {
            for (q, id) in out.iter_mut().zip(ids) {
                q.id = Some(id);
                if let Some((held, _)) = &q.summary {
                    held.lock().unwrap_or_else(PoisonError::into_inner).row = Some(id);
                }
            }
        }
        Err(e) => tracing::error!(
            error = %e,
            "cannot queue notifications in state.db; they are sent now, but a stop before they are delivered loses them"
        ),
    }
    out
}

/// Sends queued notifications in the background, in order.
pub fn send(app: &Arc<App>, queued: Vec<Queued>) {
    if queued.is_empty() {
        return;
    }
    let (summaries, queued): (Vec<Queued>, Vec<Queued>) = queued.into_iter().partition(|q| q.summary.is_some());
    // A window's summary waits for the window's end, in a task of its own.
    for q in summaries {
        tokio::spawn(summary_at_window_end(app.clone(), q));
    }
    let app = app.clone();
    tokio::spawn(async move {
        for q in queued {
            first_attempt(&app, q).await;
        }
    });
}

/// Sends a rate window's summary when the window ends, as it stands then.
async fn summary_at_window_end(app: Arc<App>, mut q: Queued) {
    let Some((held, end)) = q.summary.clone() else { return };
    let mut stopping = app.stopping.subscribe();
    tokio::select! {
        () = tokio::time::sleep_until(end) => {}
        // Left queued, as it stands: the next start sends it.
        _ = stopping.wait_for(|stopped| *stopped) => return,
    }
    let at = u64::try_from(crate::audit::now_ns()).unwrap_or(0);
    {
        let mut h = held.lock().unwrap_or_else(PoisonError::into_inner);
        h.closed = true;
        q.notification = h.notification(at);
    }
    if let Some(id) = q.id {
        let n = serde_json::to_string(&Stored::of(&q.notification)).unwrap_or_default();
        if let Err(e) = app.state.with_tx(|c| {
            c.execute(
                "UPDATE notify_outbox SET notification = ?2 WHERE id = ?1",
                params![id, n],
            )
        }) {
            tracing::warn!(error = %e, "cannot store a notification summary as sent");
        }
    }
    first_attempt(&app, q).await;
}

/// Queues and sends: for notifications that are not part of an alert's
/// finish (the kill switch).
pub fn notify(app: &Arc<App>, notifications: Vec<Notification>, ctx: &Context) {
    if app.config.notifications.is_empty() {
        return;
    }
    send(app, queue(app, notifications, ctx));
}

/// Tells the operator the kill switch changed, whoever changed it (a
/// webhook, the admin API; the command line has no running host to send
/// from, and the server audits its change before its next order).
pub fn kill_switch(
    app: &Arc<App>,
    from: crate::trading::risk::KillSwitch,
    to: crate::trading::risk::KillSwitch,
    by: &str,
    route: &str,
    reason: &str,
    ctx: &Context,
) {
    notify(
        app,
        vec![Notification {
            kind: NotificationKind::KillSwitch,
            route: route.to_owned(),
            alert_id: String::new(),
            client_order_id: None,
            symbol: None,
            summary: format!("Kill switch {} → {} by {by}: {reason}", from.as_str(), to.as_str()),
            details: json!({ "from": from.as_str(), "to": to.as_str(), "by": by, "reason": reason }).to_string(),
            at: u64::try_from(crate::audit::now_ns()).unwrap_or(0),
        }],
        ctx,
    );
}

/// Notifies what reconciliation learned about `o` (see
/// [`of_reconciled`]), queued in the batch that holds the order's new
/// state.
pub fn reconciled(app: &Arc<App>, o: &OrderRow, found: &crate::pipeline::Reconciled, ctx: &Context) {
    if app.config.notifications.is_empty() {
        return;
    }
    let at = u64::try_from(crate::audit::now_ns()).unwrap_or(0);
    if let Some(n) = of_reconciled(o, found.state, found.ack.as_ref(), &found.detail, found.before, at) {
        notify(app, vec![n], ctx);
    }
}

/// Tells the operator, as an `error`, that a broker account lists a
/// working order this host never sent (`order.drift`); the sweep calls it
/// at the order's first sight only.
pub fn drift(app: &Arc<App>, route: &str, account: &str, client_order_id: &str, broker_order_id: &str) {
    if app.config.notifications.is_empty() {
        return;
    }
    notify(
        app,
        vec![Notification {
            kind: NotificationKind::Error,
            route: route.to_owned(),
            alert_id: String::new(),
            client_order_id: Some(client_order_id.to_owned()),
            symbol: None,
            summary: format!(
                "Drift on {account}: the broker lists a working order this host never sent ({client_order_id}); check it at the broker"
            ),
            details: json!({
                "drift": "the broker has a working order this host never sent", "account": account,
                "client_order_id": client_order_id, "broker_order_id": broker_order_id,
            })
            .to_string(),
            at: u64::try_from(crate::audit::now_ns()).unwrap_or(0),
        }],
        &Context::default(),
    );
}

/// Tells the operator, as an `error` for every entry that takes errors,
/// that the host stopped taking alerts and why.
pub fn halted(app: &Arc<App>, reason: &str) {
    notify(
        app,
        vec![Notification {
            kind: NotificationKind::Error,
            route: String::new(),
            alert_id: String::new(),
            client_order_id: None,
            symbol: None,
            summary: format!("algobanana stopped taking alerts: {reason}"),
            details: json!({ "halted": reason }).to_string(),
            at: u64::try_from(crate::audit::now_ns()).unwrap_or(0),
        }],
        &Context::default(),
    );
}

/// One row of the outbox, as read at a start.
struct Row {
    id: i64,
    target: usize,
    plugin: String,
    notification: String,
    context: String,
    attempts: usize,
    created_ns: i64,
}

/// At start: sends what the outbox still holds (the notifications of the
/// last run that were not delivered), dropping, audited, those whose
/// `[[notifications]]` entry no longer wants them and those older than
/// [`RESUME_MAX_AGE`]. Run before alerts resume, whose own notifications
/// are queued and sent as they finish. Returns how many it sends.
///
/// # Errors
/// [`StoreError`] when the outbox cannot be read.
pub async fn resume(app: &Arc<App>) -> Result<usize, StoreError> {
    let rows = app.state.with(|c| {
        let mut s = c.prepare(
            "SELECT id, target, plugin, notification, context, attempts, created_ns FROM notify_outbox ORDER BY id",
        )?;
        s.query_map([], |r| {
            Ok(Row {
                id: r.get(0)?,
                target: usize::try_from(r.get::<_, i64>(1)?).unwrap_or(usize::MAX),
                plugin: r.get(2)?,
                notification: r.get(3)?,
                context: r.get(4)?,
                attempts: usize::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
                created_ns: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<Row>>>()
    })?;
    let now = crate::audit::now_ns();
    let max_age = i64::try_from(RESUME_MAX_AGE.as_nanos()).unwrap_or(i64::MAX);
    let mut queued = Vec::new();
    for row in rows {
        let ctx: Context = serde_json::from_str(&row.context).unwrap_or_default();
        let Some(notification) = serde_json::from_str::<Stored>(&row.notification)
            .ok()
            .and_then(Stored::into_notification)
        else {
            let reason = "its stored form cannot be read (state.db was edited, or written by a newer version)";
            dropped(
                app,
                Some(row.id),
                row.target,
                &row.plugin,
                &ctx,
                row.attempts,
                json!(null),
                reason,
            )
            .await;
            continue;
        };
        let q = Queued {
            id: Some(row.id),
            target: row.target,
            notification,
            ctx,
            attempts: row.attempts,
            summary: None,
        };
        let entry = app.config.notifications.get(row.target);
        if !entry.is_some_and(|e| e.plugin.as_str() == row.plugin && wants(e, &q.notification)) {
            let reason = format!(
                "notifications[{}], which it was queued for, is gone, names another notifier than `{}`, or no longer wants it",
                row.target, row.plugin
            );
            drop_queued(app, &q, &reason).await;
            continue;
        }
        if now.saturating_sub(row.created_ns) > max_age {
            let reason = format!(
                "queued {} h before this start, more than the {} h after which a notification is no longer sent",
                now.saturating_sub(row.created_ns) / 3_600_000_000_000,
                RESUME_MAX_AGE.as_secs() / 3600
            );
            drop_queued(app, &q, &reason).await;
            continue;
        }
        queued.push(q);
    }
    let n = queued.len();
    send(app, queued);
    Ok(n)
}

/// What one attempt leaves to do.
enum Step {
    /// Nothing: delivered, dropped, or left queued for the next start.
    Over,
    /// Try again later; why this attempt failed.
    Again(String),
}

/// The first attempt of a notification (at its alert's finish, or at a
/// start); one the service could not take goes on in a task of its own,
/// so that the next notifications are not held up by its waits.
async fn first_attempt(app: &Arc<App>, mut q: Queued) {
    if *app.stopping.borrow() {
        // Left queued: the next start sends it.
        return;
    }
    let Step::Again(why) = attempt(app, &mut q).await else {
        return;
    };
    if RETRY_DELAYS.get(q.attempts.saturating_sub(1)).is_none() {
        let reason = format!("given up after {} attempts; the last: {why}", q.attempts);
        drop_queued(app, &q, &reason).await;
        return;
    }
    if app.notify_waiting.fetch_add(1, Ordering::Relaxed) >= MAX_WAITING {
        app.notify_waiting.fetch_sub(1, Ordering::Relaxed);
        let reason = format!(
            "not tried again: {MAX_WAITING} notifications are already waiting for another attempt (is the service down?); this attempt: {why}"
        );
        drop_queued(app, &q, &reason).await;
        return;
    }
    tokio::spawn(retry(app.clone(), q, why));
}

/// The later attempts, [`RETRY_DELAYS`] apart; a stop ends the waiting
/// and leaves the notification queued for the next start.
async fn retry(app: Arc<App>, mut q: Queued, mut why: String) {
    let mut stopping = app.stopping.subscribe();
    loop {
        let Some(delay) = RETRY_DELAYS.get(q.attempts.saturating_sub(1)) else {
            let reason = format!("given up after {} attempts; the last: {why}", q.attempts);
            drop_queued(&app, &q, &reason).await;
            break;
        };
        tokio::select! {
            () = tokio::time::sleep(*delay) => {}
            _ = stopping.wait_for(|stopped| *stopped) => break,
        }
        match attempt(&app, &mut q).await {
            Step::Over => break,
            Step::Again(w) => why = w,
        }
    }
    app.notify_waiting.fetch_sub(1, Ordering::Relaxed);
}

/// One attempt, and what it means for the outbox row.
async fn attempt(app: &App, q: &mut Queued) -> Step {
    let Some(entry) = app.config.notifications.get(q.target) else {
        drop_queued(app, q, "its [[notifications]] entry is gone").await;
        return Step::Over;
    };
    let Some(plugin) = app.registry.get(&entry.plugin) else {
        drop_queued(app, q, &format!("notifier `{}` is not loaded", entry.plugin)).await;
        return Step::Over;
    };
    q.attempts += 1;
    let called = app
        .registry
        .call_notifier(
            &plugin,
            q.notification.clone(),
            entry.settings.to_string(),
            &app.audit,
            &q.ctx,
        )
        .await;
    let refused = match called {
        Ok(called) => match called.returned {
            Returned::Ok(()) => {
                remove(app, q);
                return Step::Over;
            }
            Returned::GuestError(NotifyError::Unavailable(m)) => {
                record_attempt(app, q);
                return Step::Again(format!("the service could not take it: {m}"));
            }
            Returned::Trap(cause @ TrapCause::Deadline { .. }) => {
                record_attempt(app, q);
                return Step::Again(cause.describe(plugin.name.as_str()));
            }
            Returned::GuestError(NotifyError::Rejected(m)) => format!("the service refused it: {m}"),
            Returned::GuestError(NotifyError::InvalidConfig(m)) => format!(
                "the notifier says its settings are wrong: {m}; fix `settings` of notifications[{}]",
                q.target
            ),
            Returned::Trap(cause) => cause.describe(plugin.name.as_str()),
        },
        Err(CallError::Audit(e)) => {
            // Not the notification's fault: the log cannot record the
            // call (a stop, a full disk). It stays queued.
            tracing::warn!(error = %e, notifier = %plugin.name, "notification not sent; it stays queued for the next start");
            return Step::Over;
        }
        Err(e) => e.to_string(),
    };
    drop_queued(app, q, &refused).await;
    Step::Over
}

/// Deletes a delivered notification's row (in the open batch).
fn remove(app: &App, q: &Queued) {
    if let Some(id) = q.id
        && let Err(e) = app
            .state
            .with_tx(|c| c.execute("DELETE FROM notify_outbox WHERE id = ?1", [id]))
    {
        tracing::warn!(error = %e, "a delivered notification stays queued; the next start sends it again");
    }
}

/// Counts a failed attempt on the row, so a start continues the schedule.
fn record_attempt(app: &App, q: &Queued) {
    if let Some(id) = q.id {
        let attempts = i64::try_from(q.attempts).unwrap_or(i64::MAX);
        if let Err(e) = app.state.with_tx(|c| {
            c.execute(
                "UPDATE notify_outbox SET attempts = ?2 WHERE id = ?1",
                params![id, attempts],
            )
        }) {
            tracing::warn!(error = %e, "cannot count a notification's attempt");
        }
    }
}

async fn drop_queued(app: &App, q: &Queued, reason: &str) {
    let plugin = app
        .config
        .notifications
        .get(q.target)
        .map_or("", |e| e.plugin.as_str())
        .to_owned();
    let n = &q.notification;
    let what = json!({
        "kind": kind_name(n.kind), "route": n.route, "alert_id": n.alert_id,
        "client_order_id": n.client_order_id, "summary": n.summary,
    });
    dropped(app, q.id, q.target, &plugin, &q.ctx, q.attempts, what, reason).await;
}

/// Audits a notification that will not be delivered, then deletes its
/// row. When the event cannot be recorded, the row stays (the next start
/// decides again, and records it then).
#[allow(clippy::too_many_arguments)]
async fn dropped(
    app: &App,
    id: Option<i64>,
    target: usize,
    plugin: &str,
    ctx: &Context,
    attempts: usize,
    notification: Value,
    reason: &str,
) {
    tracing::warn!(notifier = %plugin, target, reason, "notification dropped");
    let event = AuditEvent::new(
        ActorKind::System,
        "notify",
        action::NOTIFICATION_DROPPED,
        Outcome::Failure,
    )
    .resource(format!("notifications[{target}]"))
    .context(ctx)
    .payload(json!({
        "notifier": plugin, "target": target, "attempts": attempts,
        "notification": notification, "reason": reason,
    }));
    if let Err(e) = app.audit.record(event).await {
        tracing::warn!(error = %e, "cannot audit a dropped notification; it stays queued for the next start");
        return;
    }
    if let Some(id) = id
        && let Err(e) = app
            .state
            .with_tx(|c| c.execute("DELETE FROM notify_outbox WHERE id = ?1", [id]))
    {
        tracing::warn!(error = %e, "cannot remove a dropped notification's row");
    }
}

/// Rows in the outbox now (the open batch included).
///
/// # Errors
/// [`StoreError`].
pub fn queued(app: &App) -> Result<u64, StoreError> {
    app.state
        .with(|c| c.query_row("SELECT count(*) FROM notify_outbox", [], |r| r.get(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Value {
        json!({
            "alert_id": "0190e7a2-0000-7000-8000-000000000001",
            "request_id": "req-1",
            "route": "default",
            "status": "processed",
            "orders": [
                {
                    "index": 0, "account": "main", "client_order_id": "ab-1",
                    "intent": { "symbol": "AAPL", "side": "buy", "quantity": "2" },
                    "outcome": "filled", "reason": null,
                    "ack": { "average_fill_price": "190.35", "status": "filled" }
                },
                {
                    "index": 1, "account": "main", "client_order_id": "ab-2",
                    "intent": { "symbol": "MSFT", "side": "sell", "quantity": "0.5" },
                    "outcome": "rejected", "reason": "max_order_quantity", "ack": null
                },
                {
                    "index": 2, "account": "main", "client_order_id": null, "intent": null,
                    "outcome": "error", "reason": "quantity: not a decimal number", "ack": null
                },
                {
                    "index": 3, "account": "main", "client_order_id": "ab-4",
                    "intent": { "symbol": "TSLA", "side": "buy", "quantity": "1" },
                    "outcome": "accepted", "reason": null, "ack": null
                }
            ],
            "error": null
        })
    }

    #[test]
    fn a_result_gives_one_notification_per_fill_rejection_and_error() {
        let got = of_summary(&report(), 7);
        let summaries: Vec<&str> = got.iter().map(|n| n.summary.as_str()).collect();
        assert_eq!(
            summaries,
            [
                "Filled buy 2 AAPL @ 190.35 (route default)",
                "Rejected sell 0.5 MSFT (route default): max_order_quantity",
                "Order error order (route default): quantity: not a decimal number",
            ]
        );
        assert_eq!(got[0].kind, NotificationKind::Fill);
        assert_eq!(got[0].client_order_id.as_deref(), Some("ab-1"));
        assert_eq!(got[0].symbol.as_deref(), Some("AAPL"));
        assert_eq!(got[0].alert_id, "0190e7a2-0000-7000-8000-000000000001");
        assert_eq!(got[0].at, 7);
        let details: Value = serde_json::from_str(&got[0].details).unwrap();
        assert_eq!(details["ack"]["average_fill_price"], "190.35");
        assert_eq!(got[1].kind, NotificationKind::Rejection);
        assert_eq!(got[2].kind, NotificationKind::Error);
        assert_eq!(got[2].symbol, None);
    }

    #[test]
    fn a_failed_alert_is_an_error_notification() {
        let failed = json!({
            "alert_id": "a", "route": "r", "status": "rule_error", "orders": [],
            "error": { "kind": "rule_error", "message": "no symbol" }
        });
        let got = of_summary(&failed, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, NotificationKind::Error);
        assert_eq!(got[0].summary, "Alert on route r failed: no symbol");
    }

    fn row(state: OrderState, filled: Option<&str>) -> OrderRow {
        OrderRow {
            id: 1,
            client_order_id: "ab-1".into(),
            alert_id: "al-1".into(),
            route: "swing".into(),
            account: "main".into(),
            broker: "alpaca".into(),
            state,
            sent: true,
            intent: r#"{"symbol":"AAPL","side":"buy","quantity":"10"}"#.into(),
            broker_order_id: None,
            reason: None,
            filled_quantity: filled.map(str::to_owned),
            average_fill_price: None,
            created_at_ns: 0,
            updated_at_ns: 0,
        }
    }

    fn ack(status: crate::domain::order::OrderStatus, filled: &str) -> OrderAck {
        OrderAck {
            client_order_id: "ab-1".into(),
            broker_order_id: "b-1".into(),
            status,
            filled_quantity: filled.parse().unwrap(),
            average_fill_price: Some("190.5".parse().unwrap()),
            message: None,
        }
    }

    #[test]
    fn reconciliation_notifies_more_filled_and_a_new_rejection_only() {
        use crate::domain::order::OrderStatus as S;
        let o = row(OrderState::Accepted, None);
        let dec = |s: &str| Some(s.parse::<rust_decimal::Decimal>().unwrap());
        let partial = ack(S::PartiallyFilled, "4");
        let n = of_reconciled(
            &o,
            OrderState::PartiallyFilled,
            Some(&partial),
            "",
            Some((OrderState::Accepted, None)),
            5,
        )
        .unwrap();
        assert_eq!(n.kind, NotificationKind::Fill);
        assert_eq!(n.summary, "Partially filled 4 of buy 10 AAPL @ 190.5 (route swing)");
        assert_eq!(
            (n.alert_id.as_str(), n.client_order_id.as_deref()),
            ("al-1", Some("ab-1"))
        );
        // The same partial fill seen again: nothing new.
        let again = Some((OrderState::PartiallyFilled, dec("4")));
        assert!(of_reconciled(&o, OrderState::PartiallyFilled, Some(&partial), "", again, 5).is_none());
        // Filled further, then completely.
        let more = ack(S::PartiallyFilled, "7");
        assert!(of_reconciled(&o, OrderState::PartiallyFilled, Some(&more), "", again, 5).is_some());
        let full = ack(S::Filled, "10");
        let before = Some((OrderState::PartiallyFilled, dec("7")));
        let n = of_reconciled(&o, OrderState::Filled, Some(&full), "", before, 5).unwrap();
        assert_eq!(n.summary, "Filled buy 10 AAPL @ 190.5 (route swing)");
        // A second lookup that finds it filled already: nothing new, even
        // though the row it read first was older.
        let done = Some((OrderState::Filled, dec("10")));
        assert!(of_reconciled(&o, OrderState::Filled, Some(&full), "", done, 5).is_none());
        // Rejected later: once.
        let n = of_reconciled(
            &o,
            OrderState::Rejected,
            None,
            "never placed",
            Some((OrderState::Unknown, None)),
            5,
        )
        .unwrap();
        assert_eq!(n.kind, NotificationKind::Rejection);
        assert_eq!(n.summary, "Rejected buy 10 AAPL (route swing): never placed");
        assert!(
            of_reconciled(
                &o,
                OrderState::Rejected,
                None,
                "x",
                Some((OrderState::Rejected, None)),
                5
            )
            .is_none()
        );
        // Still working, canceled, unknown, or nothing changed: nothing.
        for state in [OrderState::Accepted, OrderState::Canceled, OrderState::Unknown] {
            assert!(of_reconciled(&o, state, None, "", Some((OrderState::Submitted, None)), 5).is_none());
        }
        assert!(of_reconciled(&o, OrderState::Filled, Some(&full), "", None, 5).is_none());
    }

    #[test]
    fn a_summary_takes_the_most_severe_kind_and_names_a_route_only_if_one() {
        let mut held = Held {
            row: None,
            target: 1,
            limit: 20,
            window: Duration::from_secs(60),
            total: 0,
            kinds: std::collections::BTreeMap::new(),
            routes: std::collections::BTreeSet::new(),
            alerts: Vec::new(),
            closed: false,
        };
        let n = |kind, route: &str, alert: &str| Notification {
            kind,
            route: route.into(),
            alert_id: alert.into(),
            client_order_id: None,
            symbol: None,
            summary: String::new(),
            details: String::new(),
            at: 0,
        };
        held.add(&n(NotificationKind::Fill, "a", "al-1"));
        let one = held.notification(3);
        assert_eq!((one.kind, one.route.as_str()), (NotificationKind::Fill, "a"));
        assert!(
            one.summary.starts_with("1 more notification within 60 s"),
            "{}",
            one.summary
        );
        held.add(&n(NotificationKind::Rejection, "a", "al-1"));
        held.add(&n(NotificationKind::Fill, "b", "al-2"));
        let mixed = held.notification(3);
        assert_eq!((mixed.kind, mixed.route.as_str()), (NotificationKind::Rejection, ""));
        assert!(
            mixed
                .summary
                .ends_with("2 fills, 1 rejection; the audit log and GET /v1/orders have each"),
            "{}",
            mixed.summary
        );
        let details: Value = serde_json::from_str(&mixed.details).unwrap();
        assert_eq!(details["alert_ids"], json!(["al-1", "al-2"]), "each alert once");
        held.add(&n(NotificationKind::Error, "b", "al-3"));
        assert_eq!(held.notification(3).kind, NotificationKind::Error);
    }

    #[test]
    fn the_stored_form_round_trips_every_kind() {
        for kind in [
            NotificationKind::Fill,
            NotificationKind::Rejection,
            NotificationKind::Error,
            NotificationKind::KillSwitch,
        ] {
            let n = Notification {
                kind,
                route: "r".into(),
                alert_id: "a".into(),
                client_order_id: Some("c".into()),
                symbol: None,
                summary: "s".into(),
                details: "{}".into(),
                at: 9,
            };
            let text = serde_json::to_string(&Stored::of(&n)).unwrap();
            let back = serde_json::from_str::<Stored>(&text)
                .unwrap()
                .into_notification()
                .unwrap();
            assert_eq!(back.kind, kind);
            assert_eq!(
                (back.summary, back.at, back.client_order_id),
                (n.summary, 9, n.client_order_id)
            );
        }
    }

    #[test]
    fn an_entry_wants_its_kinds_and_routes_and_every_kill_switch() {
        let entry = NotificationConfig {
            plugin: crate::domain::ids::PluginName::new("n").unwrap(),
            on: vec!["fill".into(), "kill_switch".into()],
            routes: Some(vec!["a".into()]),
            settings: json!({}),
            max_per_minute: None,
        };
        let n = |kind, route: &str| Notification {
            kind,
            route: route.into(),
            alert_id: String::new(),
            client_order_id: None,
            symbol: None,
            summary: String::new(),
            details: String::new(),
            at: 0,
        };
        assert!(wants(&entry, &n(NotificationKind::Fill, "a")));
        assert!(!wants(&entry, &n(NotificationKind::Fill, "b")));
        assert!(!wants(&entry, &n(NotificationKind::Rejection, "a")));
        assert!(wants(&entry, &n(NotificationKind::KillSwitch, "b")));
    }
}
