//! One alert's journey: record it, run the route's rule, validate each
//! intent, audit it *before* the broker sees it, place it with the route's
//! broker, and answer with every order's outcome. Every step is an audit
//! event correlated by the alert id.

use serde::Serialize;
use serde_json::{Value, json};

use std::sync::Arc;

use crate::app::App;
use crate::audit::{ActorKind, AuditError, AuditEvent, Context, Outcome, Receipt, action};
use crate::capabilities::broker_view::BrokerView;
use crate::config::RouteConfig;
use crate::domain::ids::{AlertId, ClientOrderId, RouteName};
use crate::domain::order::{OrderAck, OrderIntent, OrderStatus};
use crate::plugins::bindings::types as wit;
use crate::plugins::invoke::{BrokerCall, BrokerReply, Returned, Slot};
use crate::plugins::manifest::PortfolioMode;
use crate::plugins::{CallError, convert};
use crate::trading::orders::{NewOrder, OrderState};
use crate::trading::risk::{self, KillSwitch, Rail, Snapshot};

/// How the pipeline ended for an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The rule ran and every intent was handled (each order has its own outcome).
    Processed,
    /// The rule refused the alert (its error says what it expected).
    RuleError,
    /// A plugin trapped or hit a limit.
    PluginFailed,
}

/// What happened to one order intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderOutcome {
    /// Completely filled.
    Filled,
    /// Partly filled.
    PartiallyFilled,
    /// Accepted and working (a resting limit order, say).
    Accepted,
    /// Canceled by the broker (an IOC that could not fill).
    Canceled,
    /// Refused by the host's checks or by the broker.
    Rejected,
    /// Failed: the broker plugin trapped, or its answer was ambiguous and
    /// the broker could not say what became of the order.
    Error,
    /// The same signal was already placed: no second order.
    Duplicate,
}

/// One order's result in the response.
#[derive(Debug, Clone, Serialize)]
pub struct OrderResult {
    /// Position in the rule's output.
    pub index: usize,
    /// The route's account (`main`, or a fan-out account).
    pub account: String,
    /// The id sent to the broker (none when the intent was invalid).
    pub client_order_id: Option<ClientOrderId>,
    /// The validated intent (none when it was invalid).
    pub intent: Option<OrderIntent>,
    /// What happened.
    pub outcome: OrderOutcome,
    /// Why, for rejections and errors.
    pub reason: Option<String>,
    /// The broker's answer, when there was one.
    pub ack: Option<OrderAck>,
}

/// A structured error in the response.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// Machine-readable kind.
    pub kind: String,
    /// What was wrong and what to do.
    pub message: String,
}

/// The response to an alert.
#[derive(Debug, Clone, Serialize)]
pub struct AlertReport {
    /// The alert id (correlation id in the audit log).
    pub alert_id: AlertId,
    /// The request id.
    pub request_id: String,
    /// The route.
    pub route: RouteName,
    /// How it ended.
    pub status: AlertStatus,
    /// One entry per intent the rule returned.
    pub orders: Vec<OrderResult>,
    /// Set when status is not `processed`.
    pub error: Option<ErrorBody>,
}

/// An alert as received over HTTP.
#[derive(Debug)]
pub struct IncomingAlert {
    /// The route it arrived on.
    pub route: RouteName,
    /// The request's `Content-Type`.
    pub content_type: String,
    /// The raw body.
    pub body: Vec<u8>,
    /// Request context (request id, peer, user agent).
    pub context: Context,
}

/// Why the pipeline could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The audit log refused an event: nothing may proceed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The route references a plugin that is not loaded (a host bug).
    #[error("route `{0}` references plugin `{1}`, which is not loaded")]
    MissingPlugin(String, String),
    /// An admin disabled a plugin the alert needs.
    #[error(transparent)]
    PluginDisabled(CallError),
}

impl From<CallError> for PipelineError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Audit(a) => Self::Audit(a),
            CallError::WrongWorld(p, w) => Self::MissingPlugin(w.to_owned(), p),
            e @ CallError::Disabled(_) => Self::PluginDisabled(e),
        }
    }
}

fn body_json(body: &[u8]) -> Value {
    match std::str::from_utf8(body) {
        Ok(t) => json!({ "text": t }),
        Err(_) => {
            use base64::Engine as _;
            json!({ "base64": base64::engine::general_purpose::STANDARD.encode(body) })
        }
    }
}

/// An alert recorded: its row in `state.db`'s open batch and, committed,
/// its `alert.received` in the audit log, from which `crate::recovery`
/// restores the row if a crash took it. From here it is never lost: an
/// unfinished one resumes on restart.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Its id.
    pub alert_id: AlertId,
    /// When it arrived (UTC ns).
    pub received_at: i64,
    /// The request context, with the alert id as correlation id.
    pub ctx: Context,
}

/// Records an alert before anything else happens to it: its row in the
/// state database, and its `alert.received` event queued to the audit log.
///
/// The returned receipt resolves when that event is committed. The caller
/// need not wait for it before [`run`]: nothing in the pipeline acts on
/// the world before an awaited audit event (`order.intent`, a capability
/// use) and the writer commits in queue order, so the intake is durable
/// before any act and before the `alert.processed` that precedes every
/// answer. Whoever acknowledges the alert without a report (a 202) waits
/// for the receipt first. Overlapping that commit with the first plugin
/// calls takes one fsync off each alert's latency.
///
/// # Errors
/// [`PipelineError`] when it cannot be recorded (nothing was acknowledged).
pub async fn accept(app: &App, incoming: &IncomingAlert) -> Result<(Accepted, Receipt), PipelineError> {
    let alert_id = AlertId::generate();
    let received_at = crate::audit::now_ns();
    let mut ctx = incoming.context.clone();
    ctx.correlation_id = Some(alert_id.to_string());
    let request_id = ctx.request_id.clone().unwrap_or_default();
    let route_name = &incoming.route;
    app.state.insert_alert(
        &alert_id.to_string(),
        route_name.as_str(),
        received_at,
        &request_id,
        &incoming.content_type,
        &incoming.body,
    )?;
    let receipt = app
        .audit
        .append(
            AuditEvent::new(
                ActorKind::WebhookSource,
                route_name.as_str(),
                action::ALERT_RECEIVED,
                Outcome::Success,
            )
            .resource(format!("route:{route_name}"))
            .context(&ctx)
            .payload(json!({
                "route": route_name,
                "content_type": incoming.content_type,
                "body": body_json(&incoming.body),
                "body_bytes": incoming.body.len(),
            })),
        )
        .await?;
    Ok((
        Accepted {
            alert_id,
            received_at,
            ctx,
        },
        receipt,
    ))
}

/// Accepts and runs one alert.
///
/// # Errors
/// [`PipelineError`] when the alert could not be recorded or processed at
/// all; plugin failures are part of the report, not errors.
pub async fn process(
    app: &Arc<App>,
    route: &RouteConfig,
    incoming: IncomingAlert,
) -> Result<AlertReport, PipelineError> {
    let (accepted, intake) = accept(app, &incoming).await?;
    intake.committed().await?;
    run(app, route, accepted, incoming).await
}

/// The payload's own timestamp, when it has one: TradingView's `{{time}}`
/// or `{{timenow}}` (RFC 3339), or epoch seconds or milliseconds, under
/// `time`, `timenow` or `timestamp`.
fn payload_time_ns(body: &[u8]) -> Option<i64> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let t = ["timestamp", "timenow", "time"].iter().find_map(|k| v.get(*k))?;
    match t {
        Value::String(s) => s
            .parse::<jiff::Timestamp>()
            .ok()
            .map(|t| i64::try_from(t.as_nanosecond()).unwrap_or(0)),
        Value::Number(n) => {
            let n = n.as_i64()?;
            // Milliseconds after 2001-09-09, else seconds.
            Some(if n > 1_000_000_000_000 {
                n.saturating_mul(1_000_000)
            } else {
                n.saturating_mul(1_000_000_000)
            })
        }
        _ => None,
    }
}

/// Runs the route for an accepted alert.
///
/// # Errors
/// [`PipelineError`] when the alert could not be processed at all.
pub async fn run(
    app: &Arc<App>,
    route: &RouteConfig,
    accepted: Accepted,
    incoming: IncomingAlert,
) -> Result<AlertReport, PipelineError> {
    let Accepted {
        alert_id,
        received_at,
        ctx,
    } = accepted;
    let request_id = ctx.request_id.clone().unwrap_or_default();
    let route_name = incoming.route.clone();

    if let (Some(max), Some(sent)) = (app.config.trading.max_signal_age, payload_time_ns(&incoming.body)) {
        let age_ns = received_at.saturating_sub(sent);
        if age_ns > i64::try_from(max.as_nanos()).unwrap_or(i64::MAX) {
            let report = AlertReport {
                alert_id,
                request_id,
                route: route_name.clone(),
                status: AlertStatus::RuleError,
                orders: Vec::new(),
                error: Some(ErrorBody {
                    kind: "stale_signal".into(),
                    message: format!(
                        "the alert's timestamp is {} s old, over trading.max_signal_age_s = {}; no order was placed",
                        age_ns / 1_000_000_000,
                        max.as_secs()
                    ),
                }),
            };
            return finish(app, &route_name, &ctx, report).await;
        }
    }

    let rule = app
        .registry
        .get(&route.rule)
        .ok_or_else(|| PipelineError::MissingPlugin(route_name.to_string(), route.rule.to_string()))?;
    let broker = app
        .registry
        .get(&route.broker)
        .ok_or_else(|| PipelineError::MissingPlugin(route_name.to_string(), route.broker.to_string()))?;

    let body_hash = {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(route_name.as_str().as_bytes());
        h.update([0]);
        h.update(&incoming.body);
        hex::encode(h.finalize())
    };
    let alert = wit::Alert {
        id: alert_id.to_string(),
        received_at: u64::try_from(received_at).unwrap_or(0),
        route: route_name.to_string(),
        content_type: incoming.content_type.clone(),
        body: incoming.body,
    };
    let rule_config = route.rule_config.to_string();
    // The account as the broker sees it, for position-aware actions and
    // sizing; `None` when the broker cannot say (the rule then refuses what
    // needs it). Fetched now, or only if the rule asks for it (its
    // manifest's `portfolio = "on-request"`): two broker calls, and with a
    // live broker two API round trips, that most alerts do not need.
    let settings = route.broker_settings.to_string();
    let view = match rule.portfolio_mode() {
        PortfolioMode::BeforeCall => {
            BrokerView::reported(portfolio_of(app, &broker, &settings, &ctx, Slot::Top).await?)
        }
        PortfolioMode::OnRequest => {
            // Both calls at once, each within the broker's own wall-clock
            // guard; twice that covers a broker whose calls run one at a
            // time (a kv-using one, such as the paper broker).
            let max_wait = crate::plugins::invoke::wall_guard(broker.limits.deadline).saturating_mul(2);
            let (app, broker, ctx) = (Arc::clone(app), Arc::clone(&broker), ctx.clone());
            BrokerView::OnRequest {
                fetch: Box::new(move || {
                    Box::pin(async move {
                        portfolio_of(&app, &broker, &settings, &ctx, Slot::Nested)
                            .await
                            .map_err(|e| e.to_string())
                    })
                }),
                max_wait,
            }
        }
    };
    let called = app
        .registry
        .call_rule(&rule, &alert, &rule_config, view, &app.audit, &ctx)
        .await?;
    let mut last: Receipt = called.receipt;

    let mut report = AlertReport {
        alert_id,
        request_id: request_id.clone(),
        route: route_name.clone(),
        status: AlertStatus::Processed,
        orders: Vec::new(),
        error: None,
    };
    match called.returned {
        Returned::GuestError(e) => {
            let (kind, message) = convert::rule_error(&e);
            report.status = AlertStatus::RuleError;
            report.error = Some(ErrorBody {
                kind: kind.to_owned(),
                message: format!("rule `{}`: {message}", route.rule),
            });
        }
        Returned::Trap(cause) => {
            report.status = AlertStatus::PluginFailed;
            report.error = Some(ErrorBody {
                kind: "plugin_trap".into(),
                message: cause.describe(route.rule.as_str()),
            });
        }
        Returned::Ok(intents) => {
            // Every account of the route, the route's own broker first; each
            // gets every intent, scaled by its size.
            for (account_index, account) in route.accounts.iter().enumerate() {
                let Some(account_broker) = app.registry.get(&account.broker) else {
                    return Err(PipelineError::MissingPlugin(
                        route_name.to_string(),
                        account.broker.to_string(),
                    ));
                };
                let settings = account.settings.to_string();
                let a = AlertCtx {
                    route: &route_name,
                    alert_id: &alert_id,
                    body_hash: &body_hash,
                    settings: &settings,
                    account: &account.name,
                    account_index,
                    ctx: &ctx,
                };
                for (index, raw) in intents.iter().enumerate() {
                    let (result, receipt) = place(app, &a, index, &scaled(raw, account.size), &account_broker).await?;
                    last = receipt;
                    report.orders.push(result);
                }
            }
        }
    }

    // Awaiting alert.processed (in `finish`) commits every event of this
    // alert: the writer commits in queue order.
    drop(last);
    finish(app, &route_name, &ctx, report).await
}

/// Records the end of an alert: `alert.processed` (committed) and the
/// alert's row, then commits the state database's batch.
async fn finish(
    app: &Arc<App>,
    route_name: &RouteName,
    ctx: &Context,
    report: AlertReport,
) -> Result<AlertReport, PipelineError> {
    let outcome = match report.status {
        AlertStatus::Processed => Outcome::Success,
        AlertStatus::RuleError => Outcome::Failure,
        AlertStatus::PluginFailed => Outcome::Error,
    };
    let summary = serde_json::to_value(&report).unwrap_or(Value::Null);
    let processed = AuditEvent::new(ActorKind::System, "pipeline", action::ALERT_PROCESSED, outcome)
        .resource(format!("route:{route_name}"))
        .context(ctx)
        .payload(summary.clone());
    // The notifications' time is the event's: one queued again from the
    // log (`crate::recovery`) is the same notification.
    let finished_at = processed.ts_ns;
    app.audit.record(processed).await?;
    app.state.finish_alert(
        &report.alert_id.to_string(),
        report.status == AlertStatus::Processed,
        &summary.to_string(),
    )?;
    // Everything this alert changed in state.db (its rows, its plugins'
    // kv, its orders' states) is committed before its sender hears of it,
    // with whatever other alerts wrote so far (`crate::store::batch`).
    // Tried: committing while `alert.processed` syncs and writing the row
    // after it; no difference above the noise (docs/performance.md,
    // session 15), and this order keeps the row in the same commit.
    // Its notifications are queued in the same batch (they commit with
    // the alert, or not at all) and sent once it is committed.
    let notifications = if app.config.notifications.is_empty() {
        Vec::new()
    } else {
        let at = u64::try_from(finished_at).unwrap_or(0);
        crate::trading::notify::queue(app, crate::trading::notify::of_summary(&summary, at), ctx)
    };
    app.state.commit()?;
    crate::trading::notify::send(app, notifications);
    Ok(report)
}

/// At start: alerts that were accepted but not finished (the host stopped
/// mid-pipeline) run again. Orders they already placed are not placed
/// twice: the same alert id derives the same client order ids, and the
/// dedupe check finds them.
///
/// # Errors
/// [`PipelineError`] when the store or the audit fails.
pub async fn resume_unfinished(app: &Arc<App>) -> Result<usize, PipelineError> {
    let mut n = 0;
    for a in app.state.unfinished_alerts()? {
        let (Ok(alert_id), Some((route_name, route))) = (
            AlertId::parse(&a.id),
            app.config.routes.iter().find(|(name, _)| name.as_str() == a.route),
        ) else {
            continue;
        };
        let ctx = Context {
            request_id: Some(a.request_id.clone()),
            correlation_id: Some(a.id.clone()),
            ..Context::default()
        };
        let incoming = IncomingAlert {
            route: route_name.clone(),
            content_type: a.content_type,
            body: a.body,
            context: ctx.clone(),
        };
        let accepted = Accepted {
            alert_id,
            received_at: a.received_at_ns,
            ctx,
        };
        let report = run(app, route, accepted, incoming).await?;
        tracing::info!(alert = %report.alert_id, status = ?report.status, "resumed an alert left unfinished");
        n += 1;
    }
    Ok(n)
}

/// What `process` hands to each intent's placement.
struct AlertCtx<'a> {
    route: &'a RouteName,
    alert_id: &'a AlertId,
    /// SHA-256 of route and body: with the index, what makes two alerts
    /// "the same signal" for the dedupe window.
    body_hash: &'a str,
    settings: &'a str,
    /// The route's account (`main`, or a fan-out account) and its position
    /// in the route's list.
    account: &'a str,
    account_index: usize,
    ctx: &'a Context,
}

/// `raw` with its quantity multiplied by `size` (fan-out sizing).
fn scaled(raw: &wit::OrderIntent, size: rust_decimal::Decimal) -> wit::OrderIntent {
    if size == rust_decimal::Decimal::ONE {
        return raw.clone();
    }
    let mut out = raw.clone();
    if let Ok(q) = crate::domain::money::decimal_from_parts(raw.quantity.mantissa, raw.quantity.scale, "quantity")
        && let Some(v) = q.checked_mul(size)
        && let Ok((mantissa, scale)) = crate::domain::money::decimal_to_parts(v.normalize())
    {
        out.quantity = wit::Decimal { mantissa, scale };
    }
    out
}

fn order_outcome(status: OrderStatus) -> (OrderOutcome, OrderState) {
    match status {
        OrderStatus::Filled => (OrderOutcome::Filled, OrderState::Filled),
        OrderStatus::PartiallyFilled => (OrderOutcome::PartiallyFilled, OrderState::PartiallyFilled),
        OrderStatus::Pending => (OrderOutcome::Accepted, OrderState::Submitted),
        OrderStatus::Accepted => (OrderOutcome::Accepted, OrderState::Accepted),
        OrderStatus::Canceled | OrderStatus::Expired => (OrderOutcome::Canceled, OrderState::Canceled),
        OrderStatus::Rejected => (OrderOutcome::Rejected, OrderState::Rejected),
    }
}

/// The account's positions as the broker reports them, or why it could not
/// say (for the operator: a broker error with its kind and message, or the
/// trap).
async fn positions(
    app: &App,
    broker: &crate::plugins::LoadedPlugin,
    settings: &str,
    ctx: &Context,
    slot: Slot,
) -> Result<Result<Vec<wit::Position>, String>, PipelineError> {
    let called = app
        .registry
        .call_broker_in(
            slot,
            broker,
            BrokerCall::Positions {
                settings: settings.to_owned(),
            },
            &app.audit,
            ctx,
        )
        .await?;
    let name = broker.name.as_str();
    Ok(match called.returned {
        Returned::Ok(BrokerReply::Positions(ps)) => Ok(ps),
        Returned::Ok(other) => Err(format!("broker `{name}` answered positions with {other:?}")),
        Returned::GuestError(e) => {
            let (kind, message) = convert::broker_error(&e);
            Err(format!("broker `{name}` answered positions with {kind}: {message}"))
        }
        Returned::Trap(cause) => Err(cause.describe(name)),
    })
}

/// The route account's positions and balances (`None`: the broker could
/// not say). The two calls run at the same time: with a live broker that
/// is one API round trip of waiting instead of two.
async fn portfolio_of(
    app: &App,
    broker: &crate::plugins::LoadedPlugin,
    settings: &str,
    ctx: &Context,
    slot: Slot,
) -> Result<Option<wit::Portfolio>, PipelineError> {
    let account = app.registry.call_broker_in(
        slot,
        broker,
        BrokerCall::Account {
            settings: settings.to_owned(),
        },
        &app.audit,
        ctx,
    );
    let (positions, account) = tokio::join!(positions(app, broker, settings, ctx, slot), account);
    let (Ok(positions), Returned::Ok(BrokerReply::Account(account))) = (positions?, account?.returned) else {
        return Ok(None);
    };
    Ok(Some(wit::Portfolio { positions, account }))
}

/// The broker's signed position in `symbol`, or why it is not known.
async fn position_of(
    app: &App,
    broker: &crate::plugins::LoadedPlugin,
    settings: &str,
    symbol: &str,
    ctx: &Context,
) -> Result<Result<rust_decimal::Decimal, String>, PipelineError> {
    let ps = match positions(app, broker, settings, ctx, Slot::Top).await? {
        Ok(ps) => ps,
        Err(why) => return Ok(Err(why)),
    };
    let mut total = rust_decimal::Decimal::ZERO;
    for p in ps.iter().filter(|p| p.symbol.eq_ignore_ascii_case(symbol)) {
        let q =
            crate::domain::money::decimal_from_parts(p.quantity.mantissa, p.quantity.scale, "quantity").map_err(|e| {
                format!(
                    "broker `{}` reported a position in {symbol} that is not a number: {e}",
                    broker.name
                )
            });
        total = match q.map(|q| total.checked_add(q)) {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Ok(Err(format!(
                    "broker `{}` reported positions in {symbol} whose sum overflows",
                    broker.name
                )));
            }
            Err(why) => return Ok(Err(why)),
        };
    }
    Ok(Ok(total))
}

/// Validates one intent, checks the rails, records it and places it with
/// the broker, exactly once.
async fn place(
    app: &App,
    a: &AlertCtx<'_>,
    index: usize,
    raw: &wit::OrderIntent,
    broker: &crate::plugins::LoadedPlugin,
) -> Result<(OrderResult, Receipt), PipelineError> {
    let (route, alert_id, ctx) = (a.route, a.alert_id, a.ctx);
    let intent = match convert::intent(raw) {
        Ok(i) => i,
        Err(e) => {
            let reason = format!("invalid order intent from the rule: {e}");
            let receipt = app
                .audit
                .append(
                    AuditEvent::new(ActorKind::System, "pipeline", action::ORDER_INTENT, Outcome::Deny)
                        .resource(format!("route:{route}"))
                        .context(ctx)
                        .payload(json!({ "index": index, "intent": convert::intent_json(raw), "reason": reason })),
                )
                .await?;
            let result = OrderResult {
                index,
                account: a.account.to_owned(),
                client_order_id: None,
                intent: None,
                outcome: OrderOutcome::Rejected,
                reason: Some(reason),
                ack: None,
            };
            return Ok((result, receipt));
        }
    };
    let coid = match (&intent.requested_client_order_id, a.account_index) {
        (Some(requested), 0) => requested.clone(),
        (Some(requested), _) => requested.for_account(a.account),
        (None, 0) => ClientOrderId::derive(route, alert_id, index),
        (None, _) => ClientOrderId::derive_for_account(route, alert_id, index, a.account),
    };
    let fingerprint = format!("{}:{}:{index}", a.body_hash, a.account);
    let intent_json = serde_json::to_string(&intent).unwrap_or_default();
    let mut result = OrderResult {
        index,
        account: a.account.to_owned(),
        client_order_id: Some(coid.clone()),
        intent: Some(intent.clone()),
        outcome: OrderOutcome::Error,
        reason: None,
        ack: None,
    };

    // The account's lock, then the short global section: see
    // `crate::trading::locks`. Neither is held past the insert.
    let account_lock = app.account_locks.of(broker.name.as_str(), a.account);
    let account_guard = account_lock.lock().await;

    // A kill switch thrown from the command line is audited here, before
    // it decides anything.
    crate::trading::kill::audit_pending(&app.state, &app.audit).await?;
    let limits = app.risk_limits();
    let needs_position = |kill: KillSwitch, limits: &risk::RiskLimits| {
        limits.max_position.is_some() || intent.reduce_only || kill != KillSwitch::Off
    };
    let kill_seen = app.kill_switch()?;
    // The position: the account's orders still in flight (read first, so an
    // order that finishes meanwhile is counted twice rather than not at
    // all), plus what the broker reports.
    // `None`: not read (no rail needs it); `Some(Err(why))`: read, unknown.
    let position = if needs_position(kill_seen, &limits) && kill_seen != KillSwitch::On {
        let pending = app
            .orders
            .in_flight(broker.name.as_str(), a.account, intent.symbol.as_str())?;
        let held = position_of(app, broker, a.settings, intent.symbol.as_str(), ctx).await?;
        Some(match (held, pending) {
            (Ok(h), Some(p)) => h
                .checked_add(p)
                .ok_or_else(|| format!("the position in {} overflows", intent.symbol.as_str())),
            (Err(why), _) => Err(why),
            (Ok(_), None) => Err("an order of this account still in flight cannot be read".to_owned()),
        })
    } else {
        None
    };

    let rails = app.order_lock.lock().await;
    // Exactly once: the same signal id, or the same alert again within the
    // dedupe window, places no second order.
    let window = i64::try_from(app.config.trading.dedupe_window.as_nanos()).unwrap_or(i64::MAX);
    if let Some(existing) = app.orders.duplicate_of(
        coid.as_str(),
        &fingerprint,
        crate::audit::now_ns().saturating_sub(window),
    )? {
        let reason = format!(
            "duplicate of order {} from alert {} (state {}); no second order was sent",
            existing.client_order_id,
            existing.alert_id,
            existing.state.as_str()
        );
        let receipt = app
            .audit
            .append(
                AuditEvent::new(ActorKind::System, "pipeline", action::ORDER_DUPLICATE, Outcome::Deny)
                    .resource(format!("order:{}", existing.client_order_id))
                    .context(ctx)
                    .payload(json!({ "index": index, "client_order_id": existing.client_order_id,
                                     "original_alert": existing.alert_id, "state": existing.state })),
            )
            .await?;
        result.client_order_id = ClientOrderId::new(existing.client_order_id).ok();
        result.outcome = OrderOutcome::Duplicate;
        result.reason = Some(reason);
        return Ok((result, receipt));
    }

    // The rails, on a snapshot of the world. The switch and the limits are
    // read again here: a change since the position was read applies now,
    // and a switch that now needs a position the order did not read leaves
    // it unknown, which fails closed.
    let kill = app.kill_switch()?;
    let limits = app.risk_limits();
    // Why the position is unknown, when it is: the broker's own error
    // goes into a refusal's reason, so the operator sees what to fix.
    let (position, unknown_because) = if kill == KillSwitch::On || !needs_position(kill, &limits) {
        (None, None)
    } else {
        match position {
            Some(Ok(p)) => (Some(p), None),
            Some(Err(why)) => (None, Some(why)),
            None => (None, None),
        }
    };
    let now = crate::audit::now_ns();
    let minute_ago = now.saturating_sub(60_000_000_000);
    let midnight = now - now.rem_euclid(86_400_000_000_000);
    let orders_last_minute = limits
        .max_orders_per_minute
        .map(|max| app.orders.sent_since(minute_ago, max.saturating_add(1)))
        .transpose()?;
    let orders_today = limits
        .max_orders_per_day
        .map(|max| app.orders.sent_since(midnight, max.saturating_add(1)))
        .transpose()?;
    let snapshot = Snapshot {
        kill,
        position,
        orders_last_minute: orders_last_minute.unwrap_or(0),
        orders_today: orders_today.unwrap_or(0),
        realized_today: if limits.max_daily_loss.is_some() {
            app.orders.realized_since(midnight)?
        } else {
            rust_decimal::Decimal::ZERO
        },
        now_ns: now,
    };
    let mut decision = risk::check(&limits, &intent, &snapshot);
    // The rails that needed the position it could not have (with the
    // switch `on`, no position is read, so there is no `why`).
    if let (Some(why), Some(reason)) = (unknown_because, decision.reason.as_mut())
        && matches!(
            decision.rail,
            Some(Rail::MaxPosition | Rail::DailyLoss | Rail::KillSwitch)
        )
    {
        reason.push_str(&format!(" (the position is unknown: {why})"));
    }
    // Queued, not awaited on its own: the `order.intent` (or rejection) event
    // after it is awaited, and the writer commits in queue order, so the
    // decision is durable before anything acts on it.
    let _decided = app
        .audit
        .append(
            AuditEvent::new(
                ActorKind::System,
                "risk",
                action::RISK_DECISION,
                if decision.allowed { Outcome::Allow } else { Outcome::Deny },
            )
            .resource(format!("order:{coid}"))
            .context(ctx)
            .payload(json!({
                "index": index, "client_order_id": coid, "allowed": decision.allowed,
                "rail": decision.rail.map(Rail::key), "reason": decision.reason, "bypassed": decision.bypassed.iter().map(|r| r.key()).collect::<Vec<_>>(),
                "position": snapshot.position.map(|p| p.to_string()), "kill_switch": kill,
                // Counted up to the limit + 1; null when that rail is off.
                "orders_last_minute": orders_last_minute, "orders_today": orders_today,
                "realized_today": snapshot.realized_today.to_string(),
            })),
        )
        .await?;
    let new = NewOrder {
        client_order_id: coid.as_str(),
        fingerprint: &fingerprint,
        alert_id: &alert_id.to_string(),
        route: route.as_str(),
        account: a.account,
        broker: broker.name.as_str(),
        intent: &intent_json,
    };
    if !decision.allowed {
        let reason = decision.reason.unwrap_or_default();
        app.orders.insert(&new, Some(&reason))?;
        drop(rails);
        drop(account_guard);
        result.outcome = OrderOutcome::Rejected;
        result.reason = Some(reason);
        let receipt = app
            .audit
            .append(
                AuditEvent::new(ActorKind::System, "pipeline", action::ORDER_REJECTED, Outcome::Deny)
                    .resource(format!("order:{coid}"))
                    .context(ctx)
                    // With what `crate::recovery` needs to restore the row.
                    .payload(json!({ "index": index, "client_order_id": coid, "rail": decision.rail.map(Rail::key), "reason": result.reason,
                                     "intent": intent, "broker": broker.name, "route": route, "account": a.account, "fingerprint": fingerprint })),
            )
            .await?;
        return Ok((result, receipt));
    }
    // Recorded in state `intent`: every later order's rails count it (the
    // counts here, the position through `in_flight`), so the locks end now.
    let order_id = app.orders.insert(&new, None)?;
    // Until this placement is over, a reconciliation sweep leaves it alone.
    let _placing = app.orders.placing(order_id);
    drop(rails);
    drop(account_guard);

    // Record before act, and audit before act: the order row (above) and the
    // committed `order.intent` event come before the broker call. After a
    // crash from here on, reconciliation asks the broker about this id
    // instead of sending it again.
    app.audit
        .record(
            AuditEvent::new(ActorKind::System, "pipeline", action::ORDER_INTENT, Outcome::Allow)
                .resource(format!("order:{coid}"))
                .context(ctx)
                // With what `crate::recovery` needs to restore the row.
                .payload(
                    json!({ "index": index, "client_order_id": coid, "intent": intent, "broker": broker.name,
                                 "route": route, "account": a.account, "fingerprint": fingerprint }),
                ),
        )
        .await?;

    // Infallible for an intent that came from WIT and passed validation.
    let order = convert::intent_to_wit(&intent, &coid).unwrap_or_else(|_| raw.clone());
    let op = BrokerCall::PlaceOrder {
        settings: a.settings.to_owned(),
        client_order_id: coid.to_string(),
        order,
    };
    let sent_at_ns = crate::audit::now_ns();
    let called = app.registry.call_broker(broker, op, &app.audit, ctx).await?;
    let mut receipt = called.receipt;
    let mut ambiguous = None;
    match called.returned {
        Returned::Ok(BrokerReply::Ack(ack)) => match convert::ack(&ack) {
            Ok(ack) => {
                let (outcome, state) = order_outcome(ack.status);
                result.outcome = outcome;
                result.reason = ack.message.clone().filter(|_| outcome == OrderOutcome::Rejected);
                app.orders.settle(
                    order_id,
                    state,
                    Some(&ack.broker_order_id),
                    result.reason.as_deref(),
                    ack.filled_quantity,
                    ack.average_fill_price,
                )?;
                result.ack = Some(ack);
            }
            Err(e) => ambiguous = Some(format!("broker `{}` answered with an invalid number: {e}", broker.name)),
        },
        Returned::Ok(other) => {
            ambiguous = Some(format!("broker `{}` answered place-order with {other:?}", broker.name));
        }
        Returned::GuestError(e) => {
            let (kind, message) = convert::broker_error(&e);
            let reason = format!("broker `{}` {kind}: {message}", broker.name);
            match e {
                // The broker may or may not have the order: ask, never resend.
                wit::BrokerError::Ambiguous(_)
                | wit::BrokerError::Unavailable(_)
                | wit::BrokerError::Internal(_)
                | wit::BrokerError::Duplicate(_) => ambiguous = Some(reason),
                _ => {
                    result.outcome = OrderOutcome::Rejected;
                    app.orders
                        .transition(order_id, OrderState::Rejected, None, Some(&reason))?;
                    result.reason = Some(reason);
                }
            }
        }
        Returned::Trap(cause) => ambiguous = Some(cause.describe(broker.name.as_str())),
    }
    if let Some(why) = ambiguous {
        app.orders.transition(order_id, OrderState::Unknown, None, Some(&why))?;
        let found = reconcile_one(app, broker, a.settings, order_id, coid.as_str(), sent_at_ns, ctx).await?;
        receipt = found.receipt;
        result.reason = Some(format!("{why}; {}", found.detail));
        result.ack = found.ack;
        result.outcome = match found.state {
            OrderState::Filled => OrderOutcome::Filled,
            OrderState::PartiallyFilled => OrderOutcome::PartiallyFilled,
            OrderState::Accepted | OrderState::Submitted => OrderOutcome::Accepted,
            OrderState::Canceled => OrderOutcome::Canceled,
            OrderState::Rejected => OrderOutcome::Rejected,
            OrderState::Intent | OrderState::Unknown => OrderOutcome::Error,
        };
    }
    Ok((result, receipt))
}

/// What [`reconcile_one`] learned about an order.
#[derive(Debug)]
pub struct Reconciled {
    /// Its state now.
    pub state: OrderState,
    /// What the broker said, for operators.
    pub detail: String,
    /// The broker's answer, when it had the order.
    pub ack: Option<OrderAck>,
    /// The order's state and fill before this lookup changed them (read
    /// with the change); `None` when it changed nothing.
    pub before: Option<(OrderState, Option<rust_decimal::Decimal>)>,
    /// Resolves when `order.reconciled` is committed.
    pub receipt: Receipt,
}

/// Asks the broker about one order by client order id and records what it
/// says. Never places anything. A broker that has no such order is taken
/// at its word only `[trading] not_found_grace_s` (30 s) after the order
/// was sent (`sent_at_ns`): brokers can take a moment to list an order
/// they were sent moments ago (Binance answers -2013 for an order its
/// matching engine has not finished with), and an order booked as never
/// placed that then fills is a position the host does not know of. Until
/// then it stays `unknown` and is asked again
/// (`crate::trading::reconcile::resolve_unknown`).
///
/// # Errors
/// [`PipelineError`] when the audit or the store fails.
pub async fn reconcile_one(
    app: &App,
    broker: &crate::plugins::LoadedPlugin,
    settings: &str,
    order_id: i64,
    coid: &str,
    sent_at_ns: i64,
    ctx: &Context,
) -> Result<Reconciled, PipelineError> {
    let called = app
        .registry
        .call_broker(
            broker,
            BrokerCall::GetOrder {
                settings: settings.to_owned(),
                client_order_id: coid.to_owned(),
            },
            &app.audit,
            ctx,
        )
        .await?;
    let mut before = None;
    let (state, detail, found) = match called.returned {
        Returned::Ok(BrokerReply::Ack(ack)) => match convert::ack(&ack) {
            Ok(ack) => {
                let (_, state) = order_outcome(ack.status);
                before = Some(app.orders.settle_seen(
                    order_id,
                    state,
                    Some(&ack.broker_order_id),
                    None,
                    ack.filled_quantity,
                    ack.average_fill_price,
                )?);
                (state, format!("the broker reports the order as {}", state.as_str()), Some(ack))
            }
            Err(_) => (
                OrderState::Unknown,
                "the broker's answer could not be read; the state stays unknown".to_owned(),
                None,
            ),
        },
        Returned::GuestError(wit::BrokerError::NotFound(_))
            if crate::audit::now_ns().saturating_sub(sent_at_ns)
                < i64::try_from(app.config.trading.not_found_grace.as_nanos()).unwrap_or(i64::MAX) =>
        {
            (
                OrderState::Unknown,
                format!(
                    "the broker does not list it yet; it is asked again until {} s after it was sent, then counted as never placed if still missing; it was not resent",
                    app.config.trading.not_found_grace.as_secs()
                ),
                None,
            )
        }
        Returned::GuestError(wit::BrokerError::NotFound(_)) => {
            let why = "the broker has no order with this id, so it was never placed; it was not resent";
            before = Some((
                app.orders.transition(order_id, OrderState::Rejected, None, Some(why))?,
                None,
            ));
            (OrderState::Rejected, why.to_owned(), None)
        }
        _ => (
            OrderState::Unknown,
            "the broker could not say whether it has the order; the state stays unknown and reconciliation will ask again".to_owned(),
            None,
        ),
    };
    let receipt = app
        .audit
        .append(
            AuditEvent::new(
                ActorKind::System,
                "reconcile",
                action::ORDER_RECONCILED,
                Outcome::Success,
            )
            .resource(format!("order:{coid}"))
            .context(ctx)
            .payload(json!({ "client_order_id": coid, "state": state, "detail": detail })),
        )
        .await?;
    Ok(Reconciled {
        state,
        detail,
        ack: found,
        before,
        receipt,
    })
}

/// At start: every order that may have reached a broker without a known
/// outcome (the host stopped between recording it and hearing back) is
/// looked up by client order id. Nothing is resent.
///
/// # Errors
/// [`PipelineError`] when the audit or the store fails.
pub async fn reconcile_unresolved(app: &Arc<App>) -> Result<usize, PipelineError> {
    let mut n = 0;
    for o in app.orders.unresolved()? {
        if o.state == OrderState::Intent && account_of(app, &o).is_some() {
            app.orders.transition(
                o.id,
                OrderState::Unknown,
                None,
                Some("the host stopped before the broker answered"),
            )?;
        }
        if ask_about(app, &o).await?.is_some() {
            n += 1;
        }
    }
    Ok(n)
}

/// The configured account of `o` (its route's, by name) and its loaded
/// broker; `None` when the route, the account or the plugin is gone.
fn account_of<'a>(
    app: &'a App,
    o: &crate::trading::orders::OrderRow,
) -> Option<(&'a crate::config::AccountConfig, Arc<crate::plugins::LoadedPlugin>)> {
    app.config
        .routes
        .iter()
        .find(|(name, _)| name.as_str() == o.route)
        .and_then(|(_, r)| r.accounts.iter().find(|a| a.name == o.account))
        .and_then(|a| app.registry.get(&a.broker).map(|b| (a, b)))
}

/// Asks `o`'s broker about it ([`reconcile_one`], in the story of its
/// alert) and notifies what that changed; `None` (nothing asked) when its
/// account or broker is no longer configured.
///
/// # Errors
/// [`PipelineError`] when the audit or the store fails.
pub async fn ask_about(
    app: &Arc<App>,
    o: &crate::trading::orders::OrderRow,
) -> Result<Option<Reconciled>, PipelineError> {
    let Some((account, broker)) = account_of(app, o) else {
        return Ok(None);
    };
    let ctx = Context {
        correlation_id: Some(o.alert_id.clone()),
        ..Context::default()
    };
    let found = reconcile_one(
        app,
        &broker,
        &account.settings.to_string(),
        o.id,
        &o.client_order_id,
        o.created_at_ns,
        &ctx,
    )
    .await?;
    crate::trading::notify::reconciled(app, o, &found, &ctx);
    Ok(Some(found))
}
