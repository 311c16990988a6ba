//! The data of one plugin call's [`wasmtime::Store`]: a deny-all WASI
//! context, the memory limiter and each capability's per-call state. Built
//! fresh for every call and dropped after it.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limiter::TotalLimiter;
use crate::audit::{ActorKind, AuditEvent, AuditLog, Context, Outcome, action};
use crate::capabilities::CapabilityError;
use crate::capabilities::broker_view::BrokerView;
use crate::capabilities::http::HttpState;
use crate::capabilities::kv::KvState;
use crate::capabilities::log::LogState;
use crate::capabilities::secrets::SecretsState;

/// The audit context of one call: capability events are child rows of the
/// call's `plugin.call` row, linked by `call_id`.
#[derive(Debug, Clone)]
pub struct CallAudit {
    /// The log.
    pub log: AuditLog,
    /// The request context.
    pub ctx: Context,
    /// `name@version`.
    pub actor: String,
    /// `sha256:…` of the component.
    pub digest: String,
    /// The id the `plugin.call` row will carry.
    pub call_id: String,
}

/// Store data for one plugin call.
#[allow(missing_debug_implementations)]
pub struct PluginState {
    /// Built on the first WASI call: a component without WASI imports (the
    /// first-party Rust plugins are `no_std`) never pays for its random
    /// source and tables. What it grants is the same either way.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    /// Caps the sum of all memories and tables.
    pub limiter: TotalLimiter,
    /// `log` capability state.
    pub log: LogState,
    /// `kv` capability state.
    pub kv: KvState,
    /// `secrets` capability state.
    pub secrets: SecretsState,
    /// `http` capability state.
    pub http: HttpState,
    /// Where capability events go; `None` for unaudited runs (`plugin
    /// test`, benchmarks), in which capabilities that act on the world
    /// (`http`, `secrets`) are refused.
    pub audit: Option<CallAudit>,
    /// Capability events of this call (denials included), for the
    /// `plugin.call` row's summary.
    pub capability_events: Vec<serde_json::Value>,
    /// Denial events, appended when the call ends (a refusal acts on
    /// nothing, so it need not wait for a commit mid-call).
    pub denials: Vec<AuditEvent>,
    /// `broker-view` state: the route account's portfolio for a rule.
    pub broker_view: BrokerView,
}

impl PluginState {
    /// Fresh state for one call.
    pub fn new(
        limiter: TotalLimiter,
        log: LogState,
        kv: KvState,
        secrets: SecretsState,
        http: HttpState,
        audit: Option<CallAudit>,
    ) -> Self {
        Self {
            wasi: None,
            table: ResourceTable::new(),
            limiter,
            log,
            kv,
            secrets,
            http,
            audit,
            capability_events: Vec::new(),
            denials: Vec::new(),
            broker_view: BrokerView::default(),
        }
    }

    /// The audit actor id (`name@version`).
    pub fn actor(&self) -> String {
        self.audit
            .as_ref()
            .map_or_else(|| self.log.plugin.clone(), |a| a.actor.clone())
    }

    /// Appends a capability event (with `call_id`, plugin digest and the
    /// request context) and waits for its commit: the caller acts only
    /// after this returns `Ok`.
    ///
    /// # Errors
    /// `unavailable` when the call is unaudited or the audit log refused
    /// the event (the action must then not happen).
    pub async fn record(&mut self, event: AuditEvent) -> Result<(), CapabilityError> {
        let Some(audit) = &self.audit else {
            return Err(CapabilityError::Unavailable(
                "this capability acts on the world and is available only in audited calls".into(),
            ));
        };
        let mut event = event.context(&audit.ctx);
        if let serde_json::Value::Object(m) = &mut event.payload {
            m.insert("call_id".into(), audit.call_id.clone().into());
            m.insert("digest".into(), audit.digest.clone().into());
        }
        self.capability_events.push(serde_json::json!({
            "action": event.action, "outcome": event.outcome.as_str(), "resource": event.resource,
        }));
        audit
            .log
            .record(event)
            .await
            .map(drop)
            .map_err(|e| CapabilityError::Unavailable(format!("the audit log refused the event: {e}")))
    }

    /// Records a denial (`capability.denied`); it is appended when the call
    /// ends, before the call's own row (a refusal acts on nothing, so it
    /// need not hold the call up for a commit).
    pub fn deny(&mut self, operation: &str, reason: &str, detail: serde_json::Value) {
        self.capability_events.push(serde_json::json!({
            "action": action::CAPABILITY_DENIED, "operation": operation, "reason": reason,
        }));
        let Some(audit) = &self.audit else { return };
        let mut payload = serde_json::json!({
            "operation": operation, "reason": reason, "call_id": audit.call_id, "digest": audit.digest,
        });
        if let (serde_json::Value::Object(m), serde_json::Value::Object(d)) = (&mut payload, detail) {
            m.extend(d);
        }
        let event = AuditEvent::new(
            ActorKind::Plugin,
            audit.actor.clone(),
            action::CAPABILITY_DENIED,
            Outcome::Deny,
        )
        .resource(format!("capability:{operation}"))
        .context(&audit.ctx)
        .payload(payload);
        // Appended when the call ends, before its `plugin.call` row.
        self.denials.push(event);
    }
}

/// The WASI context every plugin gets: nothing. No preopened directories,
/// no environment variables, no arguments, stdin closed, stdout and stderr
/// discarded, no TCP or UDP sockets and no name lookup. Clocks and random
/// stay real (a plugin learns nothing from them it could not compute).
/// Baseline WASI is linked at all only because guests import it whether or
/// not they use it (a Rust plugin built with `std` imports `wasi:cli` for
/// its panic path; Python imports all of WASI). First-party plugins are
/// `no_std` and import none, so for them this is never built.
pub fn deny_all_wasi() -> WasiCtx {
    let mut b = WasiCtx::builder();
    b.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
    b.build()
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(deny_all_wasi),
            table: &mut self.table,
        }
    }
}
