//! Calling a plugin: a fresh, bounded [`Store`] per call from the cached
//! `InstancePre`, the call under its deadline, memory cap and optional fuel,
//! then classification (ok / guest error / trap / limit) and one
//! `plugin.call` audit event with everything the call did. The store is
//! dropped after every call, trap or not.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::types as wit;
use super::convert;
use super::limiter::TotalLimiter;
use super::manifest::PortfolioMode;
use super::registry::{LoadedPlugin, Pre, Registry};
use super::state::{CallAudit, PluginState};
use crate::audit::{ActorKind, AuditError, AuditEvent, AuditLog, Context, Outcome, Receipt, action};
use crate::capabilities::broker_view::BrokerView;
use crate::capabilities::http::HttpState;
use crate::capabilities::kv::{KvQuotas, KvState, KvSummary};
use crate::capabilities::log::{LogLine, LogState};
use crate::capabilities::secrets::SecretsState;

/// Extra wall-clock time past the deadline before the host abandons a call
/// stuck in a host function (epochs do not interrupt host code).
pub const HOST_GRACE: Duration = Duration::from_millis(50);

/// The wall-clock limit of a call whose guest budget is `budget`: room for
/// waiting behind other calls on a busy host, and for host calls (outbound
/// HTTP has its own timeouts inside the budget).
pub fn wall_guard(budget: Duration) -> Duration {
    budget.saturating_mul(4) + Duration::from_secs(1) + HOST_GRACE
}

/// Which pool of call slots a call waits in. Each pool has
/// [`engine::MAX_CONCURRENT_CALLS`](super::engine::MAX_CONCURRENT_CALLS)
/// slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Every call but the ones below.
    Top,
    /// A broker call that a running rule call waits for (`broker-view`).
    /// The waiting rule holds a `Top` slot: if these came from the same
    /// pool, rules that filled it would wait for each other's broker calls
    /// until their deadlines. Broker calls never wait for other calls, so
    /// their own pool cannot fill up the same way.
    Nested,
}

/// Where a call takes its slot, and how much longer than its own
/// [`wall_guard`] it may wait for other plugins' calls (`broker-view`,
/// bounded by those calls' own limits).
#[derive(Debug, Clone, Copy)]
struct Guard {
    slot: Slot,
    host_wait: Duration,
}

impl Guard {
    /// A top-level call that waits for no other plugin.
    const TOP: Self = Self {
        slot: Slot::Top,
        host_wait: Duration::ZERO,
    };
}

/// Why a call did not return normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrapCause {
    /// The deadline passed (epoch interrupt or the wall-clock guard).
    Deadline {
        /// The configured deadline.
        limit_ms: u128,
    },
    /// The fuel ran out.
    OutOfFuel {
        /// The configured fuel.
        limit: u64,
    },
    /// The memory cap was reached.
    Memory {
        /// The configured cap in bytes.
        limit: usize,
        /// What the plugin asked for in total.
        requested: usize,
    },
    /// The wasm stack overflowed.
    StackOverflow,
    /// The guest panicked or hit `unreachable`.
    Unreachable,
    /// The output was larger than allowed.
    OutputTooLarge {
        /// The cap.
        limit: usize,
        /// What the plugin returned.
        actual: usize,
    },
    /// A rule returned more intents than allowed.
    TooManyIntents {
        /// The cap.
        limit: usize,
        /// What the rule returned.
        actual: usize,
    },
    /// Any other trap or host failure.
    Other(String),
}

impl TrapCause {
    /// The audit outcome detail: `trap:<kind>` or `limit:<name>`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Deadline { .. } => "trap:deadline",
            Self::OutOfFuel { .. } => "trap:out_of_fuel",
            Self::Memory { .. } => "limit:memory",
            Self::StackOverflow => "trap:stack_overflow",
            Self::Unreachable => "trap:unreachable",
            Self::OutputTooLarge { .. } => "limit:max_output_bytes",
            Self::TooManyIntents { .. } => "limit:max_intents",
            Self::Other(_) => "trap:other",
        }
    }

    /// A sentence for operators and HTTP responses, naming the limit.
    pub fn describe(&self, plugin: &str) -> String {
        match self {
            Self::Deadline { limit_ms } => format!(
                "plugin `{plugin}` was stopped at its deadline of {limit_ms} ms; fix the plugin or raise `deadline_ms` in [plugins.{plugin}.limits]"
            ),
            Self::OutOfFuel { limit } => {
                format!(
                    "plugin `{plugin}` ran out of fuel ({limit}); fix the plugin or raise `fuel` in [plugins.{plugin}.limits]"
                )
            }
            Self::Memory { limit, requested } => format!(
                "plugin `{plugin}` was stopped at its memory cap of {limit} bytes (it asked for {requested}); fix the plugin or raise `memory_mib` in [plugins.{plugin}.limits]"
            ),
            Self::StackOverflow => format!("plugin `{plugin}` overflowed its stack (deep recursion)"),
            Self::Unreachable => format!("plugin `{plugin}` crashed (panic or unreachable code)"),
            Self::OutputTooLarge { limit, actual } => format!(
                "plugin `{plugin}` returned {actual} bytes, above its output cap of {limit}; raise `max_output_bytes` in [plugins.{plugin}.limits] if that is expected"
            ),
            Self::TooManyIntents { limit, actual } => format!(
                "plugin `{plugin}` returned {actual} order intents, above the cap of {limit}; raise `max_intents` in [plugins.{plugin}.limits] if that is expected"
            ),
            Self::Other(m) => format!("plugin `{plugin}` failed: {m}"),
        }
    }
}

/// A call that could not be made or recorded at all.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin does not implement the export's world.
    #[error("plugin `{0}` is not a {1} plugin")]
    WrongWorld(String, &'static str),
    /// An admin disabled the plugin.
    #[error("plugin `{0}` is disabled by an admin; nothing was called (enable it with POST /v1/plugins/{0}/enable)")]
    Disabled(String),
    /// The call's audit event could not be queued.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// What a call returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Returned<T, E> {
    /// The export returned `ok`.
    Ok(T),
    /// The export returned its WIT error.
    GuestError(E),
    /// It trapped or hit a limit.
    Trap(TrapCause),
}

/// A finished call and the receipt of its audit event.
#[derive(Debug)]
pub struct Called<T, E> {
    /// What it returned.
    pub returned: Returned<T, E>,
    /// Resolves when the `plugin.call` event is committed.
    pub receipt: Receipt,
    /// The audit call id (child events carry it).
    pub call_id: String,
    /// How long the call took.
    pub duration: Duration,
}

/// What one call did besides returning: resource use against each limit.
#[derive(Debug, Default, Clone)]
pub struct CallStats {
    /// Wall-clock time of the call, instantiation included.
    pub duration: Duration,
    /// Fuel consumed, when fuel metering is on.
    pub fuel_consumed: Option<u64>,
    /// The largest total of linear memory the store held.
    pub memory_peak: usize,
    /// Kept log lines.
    pub log: Vec<LogLine>,
    /// Log lines dropped past the budget.
    pub log_dropped: u32,
    /// Bytes of the serialised output.
    pub output_bytes: usize,
    /// What the call did with its kv namespace.
    pub kv: KvSummary,
    /// Capability uses and denials (each also its own audit row).
    pub capabilities: Vec<Value>,
    /// Outbound requests made.
    pub http_requests: u32,
    /// Capability denials to append before the call's row.
    pub denials: Vec<AuditEvent>,
}

/// A call run in the sandbox but not audited (see [`Registry::execute_rule`]).
#[derive(Debug)]
pub struct Execution<T, E> {
    /// What it returned.
    pub returned: Returned<T, E>,
    /// Its resource use.
    pub stats: CallStats,
    /// What the export returned when the call became a trap only because
    /// the host could not save its kv writes: kept for the audit row, so
    /// the record shows what the plugin answered; never acted on.
    pub unsaved: Option<T>,
}

impl<T, E> Execution<T, E> {
    /// Renders the output for an audit row: the returned value, or the
    /// unsaved one when the kv commit turned an `ok` into a trap.
    fn render_with(self, render: impl FnOnce(&Returned<T, E>) -> Value) -> (Returned<T, E>, CallStats, Value) {
        let output = match self.unsaved {
            Some(v) if matches!(self.returned, Returned::Trap(_)) => render(&Returned::Ok(v)),
            _ => render(&self.returned),
        };
        (self.returned, self.stats, output)
    }
}

impl Execution<Vec<wit::OrderIntent>, wit::RuleError> {
    /// The output as the audit row of an audited call would hold it (null
    /// when it trapped, unless only its kv writes failed to save). Built on
    /// demand: the call itself only measures it.
    pub fn output(&self) -> Value {
        match (&self.returned, &self.unsaved) {
            (Returned::Trap(_), Some(intents)) => convert::rule_output_json(Ok(intents)),
            _ => rule_render(&self.returned),
        }
    }
}

/// A call in flight. It may borrow its arguments (`'a`): it is awaited in
/// place, never spawned, so a rule's alert is lowered straight from the
/// caller's copy.
type CallFuture<'a, T> = Pin<Box<dyn Future<Output = (Store<PluginState>, wasmtime::Result<T>)> + Send + 'a>>;

/// A broker export and its arguments.
#[derive(Debug, Clone)]
pub enum BrokerCall {
    /// `place-order`.
    PlaceOrder {
        /// Account settings JSON.
        settings: String,
        /// Host-assigned client order id.
        client_order_id: String,
        /// The order.
        order: wit::OrderIntent,
    },
    /// `cancel-order`.
    CancelOrder {
        /// Account settings JSON.
        settings: String,
        /// Client order id.
        client_order_id: String,
    },
    /// `get-order`.
    GetOrder {
        /// Account settings JSON.
        settings: String,
        /// Client order id.
        client_order_id: String,
    },
    /// `open-orders`.
    OpenOrders {
        /// Account settings JSON.
        settings: String,
    },
    /// `positions`.
    Positions {
        /// Account settings JSON.
        settings: String,
    },
    /// `account`.
    Account {
        /// Account settings JSON.
        settings: String,
    },
}

/// What a broker export returned on success.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerReply {
    /// One order.
    Ack(wit::OrderAck),
    /// Several orders.
    Acks(Vec<wit::OrderAck>),
    /// Positions.
    Positions(Vec<wit::Position>),
    /// Balances.
    Account(wit::Account),
}

impl BrokerCall {
    fn export(&self) -> &'static str {
        match self {
            Self::PlaceOrder { .. } => "place-order",
            Self::CancelOrder { .. } => "cancel-order",
            Self::GetOrder { .. } => "get-order",
            Self::OpenOrders { .. } => "open-orders",
            Self::Positions { .. } => "positions",
            Self::Account { .. } => "account",
        }
    }

    fn input_json(&self) -> Value {
        let settings = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::String(s.to_owned()));
        match self {
            Self::PlaceOrder {
                settings: s,
                client_order_id,
                order,
            } => {
                json!({ "account_settings": settings(s), "client_order_id": client_order_id, "order": convert::intent_json(order) })
            }
            Self::CancelOrder {
                settings: s,
                client_order_id,
            }
            | Self::GetOrder {
                settings: s,
                client_order_id,
            } => {
                json!({ "account_settings": settings(s), "client_order_id": client_order_id })
            }
            Self::OpenOrders { settings: s } | Self::Positions { settings: s } | Self::Account { settings: s } => {
                json!({ "account_settings": settings(s) })
            }
        }
    }
}

fn reply_json(r: &BrokerReply) -> Value {
    match r {
        BrokerReply::Ack(a) => convert::ack_json(a),
        BrokerReply::Acks(v) => Value::Array(v.iter().map(convert::ack_json).collect()),
        BrokerReply::Positions(v) => Value::Array(v.iter().map(convert::position_json).collect()),
        BrokerReply::Account(a) => convert::account_json(a),
    }
}

impl Registry {
    /// Calls a rule's `evaluate` and audits the call.
    ///
    /// # Errors
    /// [`CallError`] when the plugin is not a rule or the audit is halted.
    pub async fn call_rule(
        &self,
        plugin: &LoadedPlugin,
        alert: &wit::Alert,
        config: &str,
        view: BrokerView,
        audit: &AuditLog,
        ctx: &Context,
    ) -> Result<Called<Vec<wit::OrderIntent>, wit::RuleError>, CallError> {
        let Pre::Rule(pre) = &plugin.pre else {
            return Err(CallError::WrongWorld(plugin.name.to_string(), "rule"));
        };
        let input = json!({
            "alert": convert::alert_json(alert),
            "config": serde_json::from_str::<Value>(config).unwrap_or(Value::String(config.to_owned())),
            "portfolio": match &view {
                BrokerView::OnRequest { .. } => Value::String("on-request".into()),
                _ => view.known().map_or(Value::Null, |p| json!({
                    "positions": p.positions.iter().map(convert::position_json).collect::<Vec<_>>(),
                    "account": convert::account_json(&p.account),
                })),
            },
        });
        let host_wait = view.max_wait();
        let call = rule_call(pre, alert, config, view, plugin.portfolio_mode());
        self.run(
            plugin,
            "evaluate",
            input,
            call,
            audit,
            ctx,
            Guard {
                slot: Slot::Top,
                host_wait,
            },
            rule_measure(plugin.limits.max_intents),
            rule_render,
        )
        .await
    }

    /// Runs a rule's `evaluate` in the same sandbox, with the same limits,
    /// as [`Registry::call_rule`], but records nothing: for `plugin test`
    /// and benchmarks. Alerts always go through `call_rule`. `portfolio`
    /// is what `broker-view.get-portfolio` answers (and, for a rule that does
    /// not fetch it on request, `evaluate`'s argument).
    pub async fn execute_rule(
        &self,
        plugin: &LoadedPlugin,
        alert: &wit::Alert,
        config: &str,
        portfolio: Option<&wit::Portfolio>,
    ) -> Result<Execution<Vec<wit::OrderIntent>, wit::RuleError>, CallError> {
        let Pre::Rule(pre) = &plugin.pre else {
            return Err(CallError::WrongWorld(plugin.name.to_string(), "rule"));
        };
        let view = BrokerView::Ready(
            portfolio
                .map(|p| std::sync::Arc::new(p.clone()))
                .ok_or_else(|| "this run has no portfolio (`plugin test` takes one with --portfolio)".to_owned()),
        );
        let call = rule_call(pre, alert, config, view, plugin.portfolio_mode());
        Ok(self
            .execute(plugin, call, rule_measure(plugin.limits.max_intents), None, Guard::TOP)
            .await)
    }

    /// Calls a broker export and audits the call.
    ///
    /// # Errors
    /// [`CallError`] when the plugin is not a broker or the audit is halted.
    pub async fn call_broker(
        &self,
        plugin: &LoadedPlugin,
        op: BrokerCall,
        audit: &AuditLog,
        ctx: &Context,
    ) -> Result<Called<BrokerReply, wit::BrokerError>, CallError> {
        self.call_broker_in(Slot::Top, plugin, op, audit, ctx).await
    }

    /// [`Registry::call_broker`] with its call slot taken from `slot`'s
    /// pool: [`Slot::Nested`] for a call that a running rule call waits for
    /// (`broker-view`).
    ///
    /// # Errors
    /// As [`Registry::call_broker`].
    pub async fn call_broker_in(
        &self,
        slot: Slot,
        plugin: &LoadedPlugin,
        op: BrokerCall,
        audit: &AuditLog,
        ctx: &Context,
    ) -> Result<Called<BrokerReply, wit::BrokerError>, CallError> {
        let Pre::Broker(pre) = &plugin.pre else {
            return Err(CallError::WrongWorld(plugin.name.to_string(), "broker"));
        };
        let export = op.export();
        let input = op.input_json();
        let pre = pre.clone();
        let call = move |mut store: Store<PluginState>| -> CallFuture<'static, Result<BrokerReply, wit::BrokerError>> {
            Box::pin(async move {
                let result = async {
                    let b = pre.instantiate_prechecked(&mut store).await?;
                    Ok(match op {
                        BrokerCall::PlaceOrder {
                            settings,
                            client_order_id,
                            order,
                        } => b
                            .call_place_order(&mut store, &settings, &client_order_id, &order)
                            .await?
                            .map(BrokerReply::Ack),
                        BrokerCall::CancelOrder {
                            settings,
                            client_order_id,
                        } => b
                            .call_cancel_order(&mut store, &settings, &client_order_id)
                            .await?
                            .map(BrokerReply::Ack),
                        BrokerCall::GetOrder {
                            settings,
                            client_order_id,
                        } => b
                            .call_get_order(&mut store, &settings, &client_order_id)
                            .await?
                            .map(BrokerReply::Ack),
                        BrokerCall::OpenOrders { settings } => {
                            b.call_open_orders(&mut store, &settings).await?.map(BrokerReply::Acks)
                        }
                        BrokerCall::Positions { settings } => b
                            .call_positions(&mut store, &settings)
                            .await?
                            .map(BrokerReply::Positions),
                        BrokerCall::Account { settings } => {
                            b.call_account(&mut store, &settings).await?.map(BrokerReply::Account)
                        }
                    })
                }
                .await;
                (store, result)
            })
        };
        self.run(
            plugin,
            export,
            input,
            call,
            audit,
            ctx,
            Guard {
                slot,
                host_wait: Duration::ZERO,
            },
            // A broker reply is a few fields, so it is simply rendered twice
            // (measured here, kept for the row below); only the rule's output,
            // on every alert, has a serialiser of its own (`RuleOutputJson`).
            |r| Ok(json_len(&broker_json(r.as_ref()))),
            |returned| match returned {
                Returned::Ok(reply) => broker_json(Ok(reply)),
                Returned::GuestError(e) => broker_json(Err(e)),
                Returned::Trap(_) => Value::Null,
            },
        )
        .await
    }

    /// Calls a notifier's `notify` and audits the call.
    ///
    /// # Errors
    /// [`CallError`] when the plugin is not a notifier or the audit is halted.
    pub async fn call_notifier(
        &self,
        plugin: &LoadedPlugin,
        notification: wit::Notification,
        settings: String,
        audit: &AuditLog,
        ctx: &Context,
    ) -> Result<Called<(), wit::NotifyError>, CallError> {
        let Pre::Notifier(pre) = &plugin.pre else {
            return Err(CallError::WrongWorld(plugin.name.to_string(), "notifier"));
        };
        let input = json!({
            "kind": format!("{:?}", notification.kind).to_lowercase(),
            "route": notification.route,
            "alert_id": notification.alert_id,
            "client_order_id": notification.client_order_id,
            "summary": notification.summary,
        });
        let pre = pre.clone();
        let call = move |mut store: Store<PluginState>| -> CallFuture<'static, Result<(), wit::NotifyError>> {
            Box::pin(async move {
                let result = async {
                    let n = pre.instantiate_prechecked(&mut store).await?;
                    n.call_notify(&mut store, &notification, &settings).await
                }
                .await;
                (store, result)
            })
        };
        self.run(
            plugin,
            "notify",
            input,
            call,
            audit,
            ctx,
            Guard::TOP,
            |r| Ok(json_len(&notify_json(r.as_ref()))),
            |returned| match returned {
                Returned::Ok(()) => notify_json(Ok(&())),
                Returned::GuestError(e) => notify_json(Err(e)),
                Returned::Trap(_) => Value::Null,
            },
        )
        .await
    }

    /// The sandboxed call: a fresh store with the plugin's limits, the
    /// call, classification, and the kv commit on `ok`. Records nothing.
    /// `measure` checks the result against the world's own limits and
    /// returns the length of its JSON, which is held to `max_output_bytes`.
    async fn execute<'a, T, E>(
        &self,
        plugin: &LoadedPlugin,
        call: impl FnOnce(Store<PluginState>) -> CallFuture<'a, Result<T, E>>,
        measure: impl FnOnce(&Result<T, E>) -> Result<usize, TrapCause>,
        audit: Option<CallAudit>,
        guard: Guard,
    ) -> Execution<T, E> {
        let _permit = match guard.slot {
            Slot::Top => self.calls.acquire().await.ok(),
            Slot::Nested => self.nested_calls.acquire().await.ok(),
        };
        let _serial = match &plugin.serial {
            Some(m) => Some(m.lock().await),
            None => None,
        };
        // The epoch ticker runs while any call does; a sleeping one is woken
        // here, before the guest starts.
        let _running = self.ticker.running();
        let limits = plugin.limits;
        let name = plugin.name.to_string();
        let state = PluginState::new(
            TotalLimiter::new(limits.memory_bytes),
            LogState::new(name.clone(), limits.log_bytes_per_call, limits.log_line_bytes),
            KvState::new(
                name.clone(),
                self.db.clone(),
                KvQuotas {
                    max_keys: plugin.grant.kv_max_keys,
                    max_total_bytes: plugin.grant.kv_max_bytes,
                    ..KvQuotas::default()
                },
            ),
            SecretsState::new(plugin.secret_names.clone(), self.secrets.clone()),
            HttpState::new(
                plugin.grant.clone(),
                self.resolver.clone(),
                Instant::now() + limits.deadline,
            ),
            audit,
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let fuel = self.fuel.then(|| limits.fuel.unwrap_or(u64::MAX));
        if let Some(f) = fuel {
            // Fuel is on for the engine; errors only when it is off.
            let _ = store.set_fuel(f);
        }
        let started = Instant::now();
        let budget = limits.deadline;
        // Yield to the async runtime every tick so a spinning guest never
        // starves other alerts, and interrupt once the guest has *run* for
        // its budget. The callback fires once per epoch tick the guest is
        // running for (a suspended guest sees no ticks), so counting calls
        // measures its own time: a call that waits behind other alerts on a
        // busy host is not cut off for time it never ran. The wall-clock
        // guard below bounds everything else.
        let budget_ticks = u64::try_from(budget.as_millis() / super::engine::EPOCH_TICK.as_millis().max(1))
            .unwrap_or(u64::MAX)
            .max(1);
        let mut ticks = 0u64;
        store.epoch_deadline_callback(move |_| {
            ticks += 1;
            Ok(if ticks >= budget_ticks {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store.set_epoch_deadline(1);

        let finished = tokio::time::timeout(wall_guard(budget) + guard.host_wait, call(store)).await;
        let mut stats = CallStats {
            duration: started.elapsed(),
            ..CallStats::default()
        };
        let returned: Returned<T, E>;
        let mut unsaved = None;
        match finished {
            Err(_elapsed) => {
                returned = Returned::Trap(TrapCause::Deadline {
                    limit_ms: budget.as_millis(),
                });
            }
            Ok((mut store, result)) => {
                if let Some(f) = fuel {
                    stats.fuel_consumed = store.get_fuel().ok().map(|left| f.saturating_sub(left));
                }
                let data = store.data_mut();
                stats.memory_peak = data.limiter.peak();
                stats.log = std::mem::take(&mut data.log.lines);
                stats.log_dropped = data.log.dropped;
                stats.kv = data.kv.summary.clone();
                stats.capabilities = std::mem::take(&mut data.capability_events);
                stats.http_requests = data.http.requests();
                stats.denials = std::mem::take(&mut data.denials);
                returned = match result {
                    Err(e) => Returned::Trap(classify(&e, data, budget, limits.fuel)),
                    Ok(r) => match measure(&r) {
                        Err(cause) => Returned::Trap(cause),
                        Ok(size) => {
                            stats.output_bytes = size;
                            if size > limits.max_output_bytes {
                                Returned::Trap(TrapCause::OutputTooLarge {
                                    limit: limits.max_output_bytes,
                                    actual: size,
                                })
                            } else {
                                match r {
                                    // Writes persist only when the export returns `ok`.
                                    Ok(v) => match data.kv.commit() {
                                        Ok(()) => Returned::Ok(v),
                                        Err(e) => {
                                            tracing::error!(error = %e, plugin = %name, "kv commit failed");
                                            unsaved = Some(v);
                                            Returned::Trap(TrapCause::Other(format!(
                                                "the host could not save the plugin's kv writes, so none were kept: {e}; check that the data directory's disk has space and `state.db` is writable"
                                            )))
                                        }
                                    },
                                    Err(e) => Returned::GuestError(e),
                                }
                            }
                        }
                    },
                };
                // The store (and the instance, poisoned or not) ends here.
                drop(store);
            }
        }

        Execution {
            returned,
            stats,
            unsaved,
        }
    }

    /// [`Registry::execute`], then one `plugin.call` audit event.
    #[allow(clippy::too_many_arguments)]
    async fn run<'a, T, E>(
        &self,
        plugin: &LoadedPlugin,
        export: &'static str,
        input: Value,
        call: impl FnOnce(Store<PluginState>) -> CallFuture<'a, Result<T, E>>,
        audit: &AuditLog,
        ctx: &Context,
        guard: Guard,
        measure: impl FnOnce(&Result<T, E>) -> Result<usize, TrapCause>,
        render: impl FnOnce(&Returned<T, E>) -> Value,
    ) -> Result<Called<T, E>, CallError> {
        if self.is_disabled(&plugin.name) {
            audit
                .record(
                    AuditEvent::new(ActorKind::Plugin, plugin.actor_id(), action::PLUGIN_CALL, Outcome::Deny)
                        .resource(format!("plugin:{}", plugin.name))
                        .context(ctx)
                        .payload(json!({ "export": export, "refused": "plugin disabled", "digest": plugin.digest })),
                )
                .await?;
            return Err(CallError::Disabled(plugin.name.to_string()));
        }
        let call_id = uuid::Uuid::now_v7().to_string();
        let execution = self
            .execute(
                plugin,
                call,
                measure,
                Some(CallAudit {
                    log: audit.clone(),
                    ctx: ctx.clone(),
                    actor: plugin.actor_id(),
                    digest: plugin.digest.clone(),
                    call_id: call_id.clone(),
                }),
                guard,
            )
            .await;
        let (returned, mut stats, output) = execution.render_with(render);
        let limits = plugin.limits;
        let name = plugin.name.to_string();
        for denial in std::mem::take(&mut stats.denials) {
            drop(audit.append(denial).await?);
        }
        let (outcome, detail, error) = match &returned {
            Returned::Ok(_) => (Outcome::Success, "ok", None),
            Returned::GuestError(_) => (Outcome::Failure, "guest_error", None),
            Returned::Trap(cause) => (Outcome::Trap, cause.code(), Some(cause.describe(&name))),
        };
        let kv_committed = matches!(returned, Returned::Ok(_)) && !stats.kv.keys_changed.is_empty();
        let event = AuditEvent::new(ActorKind::Plugin, plugin.actor_id(), action::PLUGIN_CALL, outcome)
            .resource(format!("plugin:{name}"))
            .context(ctx)
            .payload(json!({
                "call_id": call_id,
                "plugin": name,
                "version": plugin.version,
                "digest": plugin.digest,
                "wit": super::WIT_VERSION,
                "world": plugin.world.as_str(),
                "export": export,
                "input": input,
                "output": output,
                "outcome": detail,
                "error": error,
                "duration_us": u64::try_from(stats.duration.as_micros()).unwrap_or(u64::MAX),
                "fuel_consumed": stats.fuel_consumed,
                "memory_peak_bytes": stats.memory_peak,
                "limits": {
                    "deadline_ms": u64::try_from(limits.deadline.as_millis()).unwrap_or(u64::MAX),
                    "memory_bytes": limits.memory_bytes,
                    "fuel": limits.fuel,
                    "max_output_bytes": limits.max_output_bytes,
                },
                "log": stats.log,
                "log_dropped": stats.log_dropped,
                "capabilities": stats.capabilities,
                "http_requests": stats.http_requests,
                "kv": { "reads": stats.kv.reads, "writes": stats.kv.writes, "keys_changed": stats.kv.keys_changed,
                        "refused": stats.kv.refused, "committed": kv_committed },
            }));
        let receipt = audit.append(event).await?;
        Ok(Called {
            returned,
            receipt,
            call_id,
            duration: stats.duration,
        })
    }
}

type RuleResult = Result<Vec<wit::OrderIntent>, wit::RuleError>;

/// A rule's `evaluate`, with `view` behind `broker-view.get-portfolio`. The
/// `portfolio` argument is what `view` already knows, and always `None`
/// for a rule that fetches it on request.
fn rule_call<'a>(
    pre: &'a super::bindings::rule::RulePre<PluginState>,
    alert: &'a wit::Alert,
    config: &'a str,
    view: BrokerView,
    mode: PortfolioMode,
) -> impl FnOnce(Store<PluginState>) -> CallFuture<'a, RuleResult> + use<'a> {
    move |mut store: Store<PluginState>| -> CallFuture<'a, RuleResult> {
        Box::pin(async move {
            // The argument shares the view's copy.
            let portfolio = match mode {
                PortfolioMode::BeforeCall => view.known().cloned(),
                PortfolioMode::OnRequest => None,
            };
            store.data_mut().broker_view = view;
            let result = async {
                let rule = pre.instantiate_prechecked(&mut store).await?;
                rule.call_evaluate(&mut store, alert, config, portfolio.as_deref())
                    .await
            }
            .await;
            (store, result)
        })
    }
}

/// A rule's limit on intents, then the length of its output, measured
/// without building it (`convert::RuleOutputJson`).
fn rule_measure(max_intents: usize) -> impl FnOnce(&RuleResult) -> Result<usize, TrapCause> {
    move |r| match r {
        Ok(intents) if intents.len() > max_intents => Err(TrapCause::TooManyIntents {
            limit: max_intents,
            actual: intents.len(),
        }),
        _ => Ok(json_len(&convert::RuleOutputJson(r.as_ref().map(Vec::as_slice)))),
    }
}

/// A rule call's `output` for its audit row: null when it trapped.
fn rule_render(returned: &Returned<Vec<wit::OrderIntent>, wit::RuleError>) -> Value {
    match returned {
        Returned::Ok(intents) => convert::rule_output_json(Ok(intents)),
        Returned::GuestError(e) => convert::rule_output_json(Err(e)),
        Returned::Trap(_) => Value::Null,
    }
}

/// A broker call's `output`: the reply, or `{"error": {"kind", "message"}}`.
fn broker_json(r: Result<&BrokerReply, &wit::BrokerError>) -> Value {
    match r {
        Ok(reply) => reply_json(reply),
        Err(e) => {
            let (kind, message) = convert::broker_error(e);
            json!({ "error": { "kind": kind, "message": message } })
        }
    }
}

/// A notifier call's `output`.
fn notify_json(r: Result<&(), &wit::NotifyError>) -> Value {
    match r {
        Ok(()) => json!({ "sent": true }),
        Err(e) => json!({ "error": format!("{e:?}") }),
    }
}

/// The length of `v` serialised as compact JSON, without building the string.
fn json_len(v: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` to an infallible writer cannot fail.
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

/// Classifies a failed call, most specific first: the memory limiter's
/// flag (a failed grow is not a `Trap` value), then the trap code.
fn classify(e: &wasmtime::Error, state: &PluginState, deadline: Duration, fuel: Option<u64>) -> TrapCause {
    if let Some(hit) = state.limiter.hit() {
        return TrapCause::Memory {
            limit: hit.limit,
            requested: hit.requested,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => TrapCause::Deadline {
            limit_ms: deadline.as_millis(),
        },
        Some(Trap::OutOfFuel) => TrapCause::OutOfFuel {
            limit: fuel.unwrap_or(0),
        },
        Some(Trap::StackOverflow) => TrapCause::StackOverflow,
        Some(Trap::UnreachableCodeReached) => TrapCause::Unreachable,
        Some(other) => TrapCause::Other(other.to_string()),
        None => TrapCause::Other(format!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_len_is_the_serialised_length() {
        for v in [
            json!(null),
            json!([]),
            json!({"symbol": "AAPL", "quantity": "10", "note": "é \" \\ \n"}),
            json!([{"a": [1, 2, {"b": null}]}, "x"]),
        ] {
            assert_eq!(json_len(&v), v.to_string().len(), "{v}");
        }
    }
}
