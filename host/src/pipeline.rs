//! One alert's journey: record it, run the route's rule, validate each
//! intent, audit it *before* the broker sees it, place it with the route's
//! broker, and answer with every order's outcome. Every step is an audit
//! event correlated by the alert id.

use serde::Serialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::audit::{ActorKind, AuditError, AuditEvent, Context, Outcome, Receipt, action};
use crate::config::RouteConfig;
use crate::domain::ids::{AlertId, ClientOrderId, RouteName};
use crate::domain::order::{OrderAck, OrderIntent, OrderStatus};
use crate::plugins::bindings::types as wit;
use crate::plugins::invoke::{BrokerCall, BrokerReply, Returned};
use crate::plugins::{CallError, convert};

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
    /// Failed: the broker plugin trapped, or its answer was ambiguous.
    Error,
}

/// One order's result in the response.
#[derive(Debug, Clone, Serialize)]
pub struct OrderResult {
    /// Position in the rule's output.
    pub index: usize,
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
}

impl From<CallError> for PipelineError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Audit(a) => Self::Audit(a),
            CallError::WrongWorld(p, w) => Self::MissingPlugin(w.to_owned(), p),
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

/// Runs the route for one alert.
///
/// # Errors
/// [`PipelineError`] when the alert could not be recorded or processed at
/// all; plugin failures are part of the report, not errors.
pub async fn process(app: &App, route: &RouteConfig, incoming: IncomingAlert) -> Result<AlertReport, PipelineError> {
    let alert_id = AlertId::generate();
    let received_at = crate::audit::now_ns();
    let mut ctx = incoming.context.clone();
    ctx.correlation_id = Some(alert_id.to_string());
    let request_id = ctx.request_id.clone().unwrap_or_default();
    let route_name = incoming.route.clone();

    app.state.insert_alert(
        &alert_id.to_string(),
        route_name.as_str(),
        received_at,
        &request_id,
        &incoming.content_type,
        &incoming.body,
    )?;
    app.audit
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

    let rule = app
        .registry
        .get(&route.rule)
        .ok_or_else(|| PipelineError::MissingPlugin(route_name.to_string(), route.rule.to_string()))?;
    let broker = app
        .registry
        .get(&route.broker)
        .ok_or_else(|| PipelineError::MissingPlugin(route_name.to_string(), route.broker.to_string()))?;

    let alert = wit::Alert {
        id: alert_id.to_string(),
        received_at: u64::try_from(received_at).unwrap_or(0),
        route: route_name.to_string(),
        content_type: incoming.content_type.clone(),
        body: incoming.body,
    };
    let rule_config = route.rule_config.to_string();
    let called = app
        .registry
        .call_rule(&rule, &alert, &rule_config, None, &app.audit, &ctx)
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
            let settings = route.broker_settings.to_string();
            for (index, raw) in intents.iter().enumerate() {
                let (result, receipt) =
                    place(app, &route_name, &alert_id, index, raw, &broker, &settings, &ctx).await?;
                last = receipt;
                report.orders.push(result);
            }
        }
    }

    let outcome = match report.status {
        AlertStatus::Processed => Outcome::Success,
        AlertStatus::RuleError => Outcome::Failure,
        AlertStatus::PluginFailed => Outcome::Error,
    };
    let summary = serde_json::to_value(&report).unwrap_or(Value::Null);
    // Awaiting the last receipt means every event of this alert is committed:
    // the writer commits in queue order.
    drop(last);
    app.audit
        .record(
            AuditEvent::new(ActorKind::System, "pipeline", action::ALERT_PROCESSED, outcome)
                .resource(format!("route:{route_name}"))
                .context(&ctx)
                .payload(summary.clone()),
        )
        .await?;
    app.state.finish_alert(
        &alert_id.to_string(),
        report.status == AlertStatus::Processed,
        &summary.to_string(),
    )?;
    Ok(report)
}

/// Validates one intent, audits it, and places it with the broker.
#[allow(clippy::too_many_arguments)]
async fn place(
    app: &App,
    route: &RouteName,
    alert_id: &AlertId,
    index: usize,
    raw: &wit::OrderIntent,
    broker: &crate::plugins::LoadedPlugin,
    settings: &str,
    ctx: &Context,
) -> Result<(OrderResult, Receipt), PipelineError> {
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
                client_order_id: None,
                intent: None,
                outcome: OrderOutcome::Rejected,
                reason: Some(reason),
                ack: None,
            };
            return Ok((result, receipt));
        }
    };
    let coid = intent
        .requested_client_order_id
        .clone()
        .unwrap_or_else(|| ClientOrderId::derive(route, alert_id, index));

    // Audit before act: the intent is durably recorded before any broker call.
    app.audit
        .record(
            AuditEvent::new(ActorKind::System, "pipeline", action::ORDER_INTENT, Outcome::Allow)
                .resource(format!("order:{coid}"))
                .context(ctx)
                .payload(json!({ "index": index, "client_order_id": coid, "intent": intent, "broker": broker.name })),
        )
        .await?;

    // Infallible for an intent that came from WIT and passed validation.
    let order = convert::intent_to_wit(&intent, &coid).unwrap_or_else(|_| raw.clone());
    let op = BrokerCall::PlaceOrder {
        settings: settings.to_owned(),
        client_order_id: coid.to_string(),
        order,
    };
    let called = app.registry.call_broker(broker, op, &app.audit, ctx).await?;
    let mut result = OrderResult {
        index,
        client_order_id: Some(coid),
        intent: Some(intent),
        outcome: OrderOutcome::Error,
        reason: None,
        ack: None,
    };
    match called.returned {
        Returned::Ok(BrokerReply::Ack(a)) => match convert::ack(&a) {
            Ok(ack) => {
                result.outcome = match ack.status {
                    OrderStatus::Filled => OrderOutcome::Filled,
                    OrderStatus::PartiallyFilled => OrderOutcome::PartiallyFilled,
                    OrderStatus::Pending | OrderStatus::Accepted => OrderOutcome::Accepted,
                    OrderStatus::Canceled | OrderStatus::Expired => OrderOutcome::Canceled,
                    OrderStatus::Rejected => OrderOutcome::Rejected,
                };
                result.reason = ack.message.clone().filter(|_| result.outcome == OrderOutcome::Rejected);
                result.ack = Some(ack);
            }
            Err(e) => result.reason = Some(format!("broker `{}` answered with an invalid number: {e}", broker.name)),
        },
        Returned::Ok(other) => {
            result.reason = Some(format!("broker `{}` answered place-order with {other:?}", broker.name))
        }
        Returned::GuestError(e) => {
            let (kind, message) = convert::broker_error(&e);
            result.outcome = match e {
                wit::BrokerError::Ambiguous(_) | wit::BrokerError::Internal(_) | wit::BrokerError::InvalidConfig(_) => {
                    OrderOutcome::Error
                }
                _ => OrderOutcome::Rejected,
            };
            result.reason = Some(format!("broker `{}` {kind}: {message}", broker.name));
        }
        Returned::Trap(cause) => result.reason = Some(cause.describe(broker.name.as_str())),
    }
    Ok((result, called.receipt))
}
