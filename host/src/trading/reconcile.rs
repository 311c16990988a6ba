//! Periodic reconciliation: every `trading.reconcile_interval_s`, and at
//! start when orders were working at the last stop (orders without a known
//! outcome are looked up before that, `pipeline::reconcile_unresolved`),
//! the host asks each route's broker for its open orders and positions. Orders the host thinks are
//! working but the broker no longer lists are looked up by client order id
//! and their state updated; orders the broker lists that the host never
//! sent are drift. Each sweep is an audit event with the positions it saw;
//! each drift is an `order.drift` event, and the first sight of each such
//! order is notified and acted on per `[trading] on_drift` (by default the
//! kill switch goes reduce-only). What it learns after an alert was
//! answered is notified like the alert's own result: a working order that
//! filled (or filled further) is a fill, one the broker rejected later a
//! rejection (`crate::trading::notify::of_reconciled`). Reconciliation
//! never places or cancels anything.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;

use crate::app::App;
use crate::audit::{ActorKind, AuditEvent, Context, Outcome, action};
use crate::config::DriftPolicy;
use crate::pipeline::{PipelineError, reconcile_one};
use crate::plugins::convert;
use crate::plugins::invoke::{BrokerCall, BrokerReply, Returned};
use crate::trading::orders::OrderState;
use crate::trading::risk::KillSwitch;

/// What one sweep found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sweep {
    /// Accounts asked.
    pub accounts: usize,
    /// Working orders whose state was refreshed from the broker.
    pub refreshed: usize,
    /// Open orders at a broker that the host never sent.
    pub unknown_at_broker: Vec<String>,
    /// Those of them seen for the first time (acted on per
    /// `[trading] on_drift`).
    pub new_at_broker: Vec<String>,
    /// Accounts whose broker could not answer.
    pub unreachable: Vec<String>,
}

/// One sweep over every route's broker account.
///
/// # Errors
/// [`PipelineError`] when the audit or the store fails.
pub async fn sweep(app: &Arc<App>) -> Result<Sweep, PipelineError> {
    let mut out = Sweep::default();
    let mut seen = BTreeSet::new();
    let ctx = Context::default();
    // The working orders, whatever the history's size, read beside the
    // alerts' connection and off the async workers (a scan of the orders
    // table); the broker's open orders are looked up one by one below.
    let orders = app.orders.clone();
    let working = tokio::task::spawn_blocking(move || orders.working())
        .await
        .map_err(|e| {
            PipelineError::from(crate::store::StoreError {
                path: std::path::PathBuf::from("state.db"),
                message: format!("reading the working orders stopped: {e}"),
            })
        })??;
    let mut accounts = Vec::new();
    for (n, r) in &app.config.routes {
        for a in &r.accounts {
            accounts.push((n, a));
        }
    }
    for (route_name, acct) in accounts {
        let settings = acct.settings.to_string();
        if !seen.insert((acct.broker.to_string(), settings.clone())) {
            continue;
        }
        let Some(broker) = app.registry.get(&acct.broker) else {
            continue;
        };
        out.accounts += 1;
        let account = format!("{}:{route_name}/{}", acct.broker, acct.name);
        let open = app
            .registry
            .call_broker(
                &broker,
                BrokerCall::OpenOrders {
                    settings: settings.clone(),
                },
                &app.audit,
                &ctx,
            )
            .await?;
        let Returned::Ok(BrokerReply::Acks(open)) = open.returned else {
            out.unreachable.push(account);
            continue;
        };
        let positions = app
            .registry
            .call_broker(
                &broker,
                BrokerCall::Positions {
                    settings: settings.clone(),
                },
                &app.audit,
                &ctx,
            )
            .await?;
        let positions = match positions.returned {
            Returned::Ok(BrokerReply::Positions(ps)) => ps.iter().map(convert::position_json).collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        let open_ids: BTreeSet<&str> = open.iter().map(|a| a.client_order_id.as_str()).collect();
        for o in working
            .iter()
            .filter(|o| o.broker == acct.broker.as_str() && o.route == route_name.as_str() && o.account == acct.name)
        {
            if o.state == OrderState::Intent || !open_ids.contains(o.client_order_id.as_str()) {
                // An order its alert is placing now is that alert's to
                // settle; one another lookup has is that lookup's.
                let Some(_claim) = app.orders.claim(o.id) else {
                    continue;
                };
                let found =
                    reconcile_one(app, &broker, &settings, o.id, &o.client_order_id, o.created_at_ns, &ctx).await?;
                let story = Context {
                    correlation_id: Some(o.alert_id.clone()),
                    ..Context::default()
                };
                crate::trading::notify::reconciled(app, o, &found, &story);
                out.refreshed += 1;
            }
        }
        for a in &open {
            if !app.orders.was_sent(&a.client_order_id)? {
                out.unknown_at_broker.push(a.client_order_id.clone());
                let first = app.state.with_tx(|c| {
                    c.execute(
                        "INSERT OR IGNORE INTO drift_seen(account, client_order_id, broker_order_id, first_seen_ns)
                         VALUES (?1, ?2, ?3, ?4)",
                        rusqlite::params![account, a.client_order_id, a.broker_order_id, crate::audit::now_ns()],
                    )
                })? == 1;
                if first {
                    out.new_at_broker.push(format!("{} at {account}", a.client_order_id));
                    crate::trading::notify::drift(
                        app,
                        route_name.as_str(),
                        &account,
                        &a.client_order_id,
                        &a.broker_order_id,
                    );
                }
                drop(
                    app.audit
                        .append(
                            AuditEvent::new(ActorKind::System, "reconcile", action::ORDER_DRIFT, Outcome::Failure)
                                .resource(format!("order:{}", a.client_order_id))
                                .payload(json!({
                                    "account": account, "client_order_id": a.client_order_id,
                                    "broker_order_id": a.broker_order_id,
                                    "drift": "the broker has a working order this host never sent",
                                    "first_seen": first,
                                })),
                        )
                        .await?,
                );
            }
        }
        app.audit
            .record(
                AuditEvent::new(
                    ActorKind::System,
                    "reconcile",
                    action::RECONCILE_SWEEP,
                    Outcome::Success,
                )
                .resource(format!("account:{account}"))
                .payload(json!({ "open_orders": open.len(), "positions": positions })),
            )
            .await?;
    }
    on_drift(app, &out.new_at_broker, &ctx).await;
    Ok(out)
}

/// Applies `[trading] on_drift` to the orders seen at a broker for the
/// first time: the kill switch goes `reduce_only` (the default) or `on`,
/// never looser than it is, audited and notified like any change.
async fn on_drift(app: &Arc<App>, new: &[String], ctx: &Context) {
    let to = match app.config.trading.on_drift {
        DriftPolicy::Report => return,
        DriftPolicy::ReduceOnly => KillSwitch::ReduceOnly,
        DriftPolicy::Stop => KillSwitch::On,
    };
    if new.is_empty() {
        return;
    }
    const LISTED: usize = 5;
    let listed = new.iter().take(LISTED).cloned().collect::<Vec<_>>().join(", ");
    let more = new.len().saturating_sub(LISTED);
    let reason = format!(
        "trading.on_drift = {}: a broker lists {} working order{} this host never sent ({listed}{}); review them at the broker, then release the switch with `algobanana kill-switch off` or the admin API",
        app.config.trading.on_drift.as_str(),
        new.len(),
        if new.len() == 1 { "" } else { "s" },
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        },
    );
    match crate::trading::kill::escalate(&app.state, &app.audit, to, ActorKind::System, "reconcile", ctx, &reason).await
    {
        Ok((from, true)) => {
            tracing::warn!(kill_switch = to.as_str(), "{reason}");
            crate::trading::notify::kill_switch(app, from, to, "reconciliation", "", &reason, ctx);
        }
        Ok((_, false)) => {}
        Err(e) => tracing::error!(error = %e, "drift: the kill switch could not be thrown ({reason})"),
    }
}

/// How often [`resolve_unknown`] looks for orders to ask about again.
pub const UNKNOWN_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// An order [`resolve_unknown`] asked about and that stayed unknown (its
/// broker could not say) is asked again no sooner than this: a broker that
/// is down for an hour gets one lookup a minute per order, not one every
/// [`UNKNOWN_EVERY`], each an audited call.
pub const UNKNOWN_REASK: std::time::Duration = std::time::Duration::from_secs(60);

/// Asks again about the orders left `unknown` (an unclear placement whose
/// broker did not list the order yet, or could not say): each one whose
/// `[trading] not_found_grace_s` has passed since it was sent, so that the
/// answer is final (found, or never placed), and notified like any
/// reconciliation. Run every [`UNKNOWN_EVERY`] by the server; an order its
/// alert is placing now is left to it. Returns how many it asked about.
///
/// # Errors
/// [`PipelineError`] when the audit or the store fails.
pub async fn resolve_unknown(
    app: &Arc<App>,
    asked: &mut std::collections::HashMap<i64, std::time::Instant>,
) -> Result<usize, PipelineError> {
    let orders = app.orders.clone();
    let unknown = tokio::task::spawn_blocking(move || orders.unknown_aside())
        .await
        .map_err(|e| {
            PipelineError::from(crate::store::StoreError {
                path: std::path::PathBuf::from("state.db"),
                message: format!("reading the unknown orders stopped: {e}"),
            })
        })??;
    let due_before = crate::audit::now_ns()
        .saturating_sub(i64::try_from(app.config.trading.not_found_grace.as_nanos()).unwrap_or(i64::MAX));
    // Orders no longer unknown are forgotten.
    asked.retain(|id, _| unknown.iter().any(|o| o.id == *id));
    let mut n = 0;
    for o in unknown {
        if !o.sent || o.created_at_ns > due_before || asked.get(&o.id).is_some_and(|at| at.elapsed() < UNKNOWN_REASK) {
            continue;
        }
        let Some(_claim) = app.orders.claim(o.id) else {
            continue;
        };
        if crate::pipeline::ask_about(app, &o).await?.is_some() {
            asked.insert(o.id, std::time::Instant::now());
            n += 1;
        }
    }
    Ok(n)
}
