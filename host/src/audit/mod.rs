//! The tamper-evident audit store: every alert, plugin call, capability use
//! and admin action becomes an [`AuditEvent`], appended to `audit.db` by one
//! writer thread with group commit ([`writer`]) and linked into a SHA-256
//! hash chain ([`chain`]). [`query`] reads it back.
//!
//! Code that acts on the world (a broker call, a secret use) awaits the
//! append's [`Receipt`] first: if the audit cannot be written, the action
//! does not happen and the host halts new orders (see [`AuditLog::halted`]).

pub mod chain;
pub mod checkpoint;
pub mod export;
pub mod keys;
pub mod prune;
pub mod query;
pub mod schema;
pub mod throttle;
pub mod verify;
pub mod writer;

use std::net::IpAddr;

use serde::Serialize;

pub use writer::{AuditError, AuditLog, Receipt};

/// The audit database's file name inside the data dir.
pub const AUDIT_DB: &str = "audit.db";

/// The action vocabulary. Add to it only deliberately: searches, exports and
/// verifiers depend on these names.
pub mod action {
    /// A webhook alert was authenticated and recorded.
    pub const ALERT_RECEIVED: &str = "alert.received";
    /// A webhook request was refused before it became an alert.
    pub const ALERT_REJECTED: &str = "alert.rejected";
    /// The pipeline finished with an alert (its outcome says how).
    pub const ALERT_PROCESSED: &str = "alert.processed";
    /// One call into a plugin export.
    pub const PLUGIN_CALL: &str = "plugin.call";
    /// A plugin failed to load (corrupt component, missing export, refused import).
    pub const PLUGIN_LOAD: &str = "plugin.load";
    /// A plugin used its key-value store.
    pub const CAPABILITY_KV: &str = "capability.kv";
    /// A plugin was refused a capability.
    pub const CAPABILITY_DENIED: &str = "capability.denied";
    /// An outbound HTTP request made for a plugin (method, URL, status,
    /// bytes, duration).
    pub const CAPABILITY_HTTP: &str = "capability.http";
    /// A secret was used for a plugin (name and purpose, never the value);
    /// committed before the use.
    pub const SECRET_USED: &str = "secret.used";
    /// An order intent about to go to a broker (audit before act).
    pub const ORDER_INTENT: &str = "order.intent";
    /// A repeated signal: no second order.
    pub const ORDER_DUPLICATE: &str = "order.duplicate";
    /// An intent the risk rails refused.
    pub const ORDER_REJECTED: &str = "order.rejected";
    /// The broker was asked about an order by client order id.
    pub const ORDER_RECONCILED: &str = "order.reconciled";
    /// At start, alert and order rows that `state.db` had lost (a power
    /// loss undid its last commits) were restored from this log.
    pub const STATE_RECOVERED: &str = "state.recovered";
    /// A request was refused: no, unknown, expired or revoked token, or a
    /// role that may not.
    pub const AUTH_DENIED: &str = "auth.denied";
    /// An authorized admin API request.
    pub const ADMIN_ACCESS: &str = "admin.access";
    /// An API token was created.
    pub const TOKEN_CREATED: &str = "token.created";
    /// An API token was revoked.
    pub const TOKEN_REVOKED: &str = "token.revoked";
    /// A broker lists an order this host never sent (or the reverse).
    pub const ORDER_DRIFT: &str = "order.drift";
    /// One reconciliation sweep of a broker account (positions seen).
    pub const RECONCILE_SWEEP: &str = "reconcile.sweep";
    /// The risk rails' decision on one intent, naming the rail.
    pub const RISK_DECISION: &str = "risk.decision";
    /// The host started.
    pub const SYSTEM_START: &str = "system.start";
    /// The host stopped cleanly.
    pub const SYSTEM_STOP: &str = "system.stop";
    /// The configuration was created or changed.
    pub const CONFIG_CHANGED: &str = "config.changed";
    /// Old events were archived and removed at a signed checkpoint.
    pub const AUDIT_PRUNED: &str = "audit.pruned";
    /// Finished alerts (bodies and results) removed from `state.db` by the
    /// retention policy.
    pub const ALERTS_PRUNED: &str = "alerts.pruned";
    /// The audit signing key was rotated.
    pub const AUDIT_KEY_ROTATED: &str = "audit.key_rotated";
    /// The vault was created, re-keyed or its data key rotated.
    pub const VAULT_CHANGED: &str = "vault.changed";
    /// A secret was set or replaced in the vault (name only).
    pub const SECRET_SET: &str = "secret.set";
    /// A secret was deleted from the vault.
    pub const SECRET_DELETED: &str = "secret.deleted";
    /// A user was created, changed or disabled.
    pub const USER_CHANGED: &str = "user.changed";
    /// A route was paused or resumed, or its hook token rotated.
    pub const ROUTE_CHANGED: &str = "route.changed";
    /// A risk limit was changed through the admin API.
    pub const LIMITS_CHANGED: &str = "limits.changed";
    /// A notification will not be delivered: its service refused it, it
    /// was given up after its last attempt, or its notifier or its
    /// `[[notifications]]` entry is gone (the payload says which).
    pub const NOTIFICATION_DROPPED: &str = "notification.dropped";
}

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A person.
    User,
    /// An admin API token.
    ApiToken,
    /// A plugin (id: `name@version`).
    Plugin,
    /// A webhook sender (id: the route name).
    WebhookSource,
    /// The host itself.
    System,
}

impl ActorKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::ApiToken => "api_token",
            Self::Plugin => "plugin",
            Self::WebhookSource => "webhook_source",
            Self::System => "system",
        }
    }
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Permitted.
    Allow,
    /// Refused by policy.
    Deny,
    /// Done.
    Success,
    /// Failed in an expected way (a rule error, a broker rejection).
    Failure,
    /// Failed unexpectedly.
    Error,
    /// A plugin trapped (deadline, memory cap, panic).
    Trap,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Error => "error",
            Self::Trap => "trap",
        }
    }
}

/// Request context carried into every event a request causes (stored
/// with a queued notification, so that its later attempts carry it too).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Context {
    /// The request id.
    pub request_id: Option<String>,
    /// The alert id, across the alert's whole story.
    pub correlation_id: Option<String>,
    /// An admin session, where there is one.
    pub session_id: Option<String>,
    /// The peer address.
    pub source_ip: Option<IpAddr>,
    /// The `User-Agent` header, shortened to 256 characters.
    pub user_agent: Option<String>,
}

/// One audit event before it is sequenced and chained.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// When it happened, UTC nanoseconds.
    pub ts_ns: i64,
    /// Who.
    pub actor_kind: ActorKind,
    /// Which one.
    pub actor_id: String,
    /// What (see [`action`]).
    pub action: &'static str,
    /// On what.
    pub resource: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Where and in which request.
    pub context: Context,
    /// Details, as JSON; stored canonically (sorted keys, no whitespace).
    /// Never put a secret in here.
    pub payload: serde_json::Value,
}

impl AuditEvent {
    /// An event happening now.
    pub fn new(actor_kind: ActorKind, actor_id: impl Into<String>, action: &'static str, outcome: Outcome) -> Self {
        Self {
            ts_ns: now_ns(),
            actor_kind,
            actor_id: actor_id.into(),
            action,
            resource: None,
            outcome,
            context: Context::default(),
            payload: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// Sets the resource.
    #[must_use]
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Sets the request context.
    #[must_use]
    pub fn context(mut self, context: &Context) -> Self {
        self.context = context.clone();
        self
    }

    /// Sets the payload.
    #[must_use]
    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.payload = payload;
        self
    }
}

/// UTC nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Formats UTC nanoseconds as RFC 3339 with nanoseconds.
pub fn format_ts(ts_ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ts_ns))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ts_ns.to_string())
}
