//! Notifications after the order path: fills, rejections and errors go to
//! every `[[notifications]]` entry that wants them, through notifier
//! plugins. They run in a task of their own after the alert's result is
//! known, so a slow or failing notifier never delays or blocks an order;
//! each call is an audited `plugin.call` like any other.

use std::sync::Arc;

use serde_json::json;

use crate::app::App;
use crate::audit::Context;
use crate::pipeline::{AlertReport, AlertStatus, OrderOutcome};
use crate::plugins::bindings::types::{Notification, NotificationKind};

fn kind_name(k: NotificationKind) -> &'static str {
    match k {
        NotificationKind::Fill => "fill",
        NotificationKind::Rejection => "rejection",
        NotificationKind::Error => "error",
        NotificationKind::KillSwitch => "kill_switch",
    }
}

/// The notifications one alert's report gives rise to.
pub fn of_report(report: &AlertReport) -> Vec<Notification> {
    let at = u64::try_from(crate::audit::now_ns()).unwrap_or(0);
    let base = |kind, coid: Option<String>, symbol: Option<String>, summary: String, details: serde_json::Value| {
        Notification {
            kind,
            route: report.route.to_string(),
            alert_id: report.alert_id.to_string(),
            client_order_id: coid,
            symbol,
            summary,
            details: details.to_string(),
            at,
        }
    };
    let mut out = Vec::new();
    if report.status != AlertStatus::Processed {
        let message = report.error.as_ref().map_or("failed", |e| e.message.as_str());
        out.push(base(
            NotificationKind::Error,
            None,
            None,
            format!("Alert on route {} failed: {message}", report.route),
            json!({ "error": report.error }),
        ));
    }
    for o in &report.orders {
        let kind = match o.outcome {
            OrderOutcome::Filled | OrderOutcome::PartiallyFilled => NotificationKind::Fill,
            OrderOutcome::Rejected => NotificationKind::Rejection,
            OrderOutcome::Error => NotificationKind::Error,
            OrderOutcome::Accepted | OrderOutcome::Canceled | OrderOutcome::Duplicate => continue,
        };
        let coid = o.client_order_id.as_ref().map(ToString::to_string);
        let (symbol, what) = match &o.intent {
            Some(i) => (
                Some(i.symbol.as_str().to_owned()),
                format!(
                    "{} {} {}",
                    serde_json::to_value(i.side)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    i.quantity,
                    i.symbol.as_str()
                ),
            ),
            None => (None, "order".to_owned()),
        };
        let summary = match kind {
            NotificationKind::Fill => {
                let price = o
                    .ack
                    .as_ref()
                    .and_then(|a| a.average_fill_price)
                    .map(|p| format!(" @ {p}"))
                    .unwrap_or_default();
                format!("Filled {what}{price} (route {})", report.route)
            }
            NotificationKind::Rejection => format!(
                "Rejected {what} (route {}): {}",
                report.route,
                o.reason.as_deref().unwrap_or("no reason given")
            ),
            _ => format!(
                "Order error {what} (route {}): {}",
                report.route,
                o.reason.as_deref().unwrap_or("unknown")
            ),
        };
        out.push(base(
            kind,
            coid,
            symbol,
            summary,
            serde_json::to_value(o).unwrap_or_default(),
        ));
    }
    out
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
    spawn(
        app,
        vec![Notification {
            kind: crate::plugins::bindings::types::NotificationKind::KillSwitch,
            route: route.to_owned(),
            alert_id: String::new(),
            client_order_id: None,
            symbol: None,
            summary: format!("Kill switch {} → {} by {by}: {reason}", from.as_str(), to.as_str()),
            details: serde_json::json!({ "from": from.as_str(), "to": to.as_str(), "by": by, "reason": reason })
                .to_string(),
            at: u64::try_from(crate::audit::now_ns()).unwrap_or(0),
        }],
        ctx.clone(),
    );
}

/// Waits before each retry of a notification the service could not take
/// (`unavailable`: unreachable, 5xx, 429; or the notifier's deadline):
/// the WIT contract says the host may try again later, and a fill a trader
/// never hears of because the chat service hiccuped once is a lost fill.
/// Five attempts over about two and a half minutes, each an audited
/// `plugin.call`; retries live in memory, so a restart drops them (the
/// audit log still has every attempt).
pub const RETRY_DELAYS: [std::time::Duration; 4] = [
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(5),
    std::time::Duration::from_secs(30),
    std::time::Duration::from_secs(120),
];

/// Notifications waiting to be tried again, at most, per host
/// ([`App::notify_waiting`]): a service that is down during a busy hour
/// cannot pile up retries without bound (past this, a failed notification
/// is not retried, and says so in the log).
pub const MAX_WAITING: usize = 1_000;

/// Sends `notifications` in the background.
pub fn spawn(app: &Arc<App>, notifications: Vec<Notification>, ctx: Context) {
    if app.config.notifications.is_empty() || notifications.is_empty() {
        return;
    }
    let app = app.clone();
    tokio::spawn(async move {
        for n in notifications {
            for target in &app.config.notifications {
                if !target.on.iter().any(|k| k == kind_name(n.kind)) {
                    continue;
                }
                // The kill switch stops every route: no route filter applies.
                if let Some(routes) = &target.routes
                    && n.kind != crate::plugins::bindings::types::NotificationKind::KillSwitch
                    && !routes.contains(&n.route)
                {
                    continue;
                }
                let Some(plugin) = app.registry.get(&target.plugin) else {
                    continue;
                };
                let settings = target.settings.to_string();
                if deliver(&app, &plugin, &n, &settings, &ctx).await {
                    continue;
                }
                // Tried again in a task of its own, so that the next
                // notifications are not held up by this one's waits.
                if app.notify_waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= MAX_WAITING {
                    app.notify_waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(notifier = %target.plugin, "notification not retried: {MAX_WAITING} are already waiting");
                    continue;
                }
                let (app, n, ctx) = (app.clone(), n.clone(), ctx.clone());
                tokio::spawn(async move {
                    for delay in RETRY_DELAYS {
                        tokio::time::sleep(delay).await;
                        if deliver(&app, &plugin, &n, &settings, &ctx).await {
                            break;
                        }
                    }
                    app.notify_waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                });
            }
        }
    });
}

/// One attempt: true when it is over (sent, or refused for good), false
/// when the service could not take it and a later attempt may succeed.
async fn deliver(
    app: &App,
    plugin: &crate::plugins::LoadedPlugin,
    n: &Notification,
    settings: &str,
    ctx: &Context,
) -> bool {
    use crate::plugins::bindings::types::NotifyError;
    use crate::plugins::invoke::{Returned, TrapCause};
    match app
        .registry
        .call_notifier(plugin, n.clone(), settings.to_owned(), &app.audit, ctx)
        .await
    {
        Ok(called) => !matches!(
            called.returned,
            Returned::GuestError(NotifyError::Unavailable(_)) | Returned::Trap(TrapCause::Deadline { .. })
        ),
        Err(e) => {
            tracing::warn!(error = %e, notifier = %plugin.name, "notification not sent");
            true
        }
    }
}
