//! Throwing and releasing the kill switch, from the CLI (on the data dir),
//! the admin API (issue 5) and an authenticated webhook action. The state
//! lives in `state.db` and survives restarts; every change is audited
//! (`config.changed`, resource `kill_switch`) before it takes effect for the
//! caller.

use serde_json::json;

use super::KILL_SWITCH;
use super::risk::KillSwitch;
use crate::audit::{ActorKind, AuditEvent, AuditLog, Context, Outcome, action};
use crate::store::StateDb;

/// Sets the kill switch to `to`, audited as `actor`.
///
/// # Errors
/// When the change cannot be audited or stored (then it did not happen).
pub async fn set(
    state: &StateDb,
    audit: &AuditLog,
    to: KillSwitch,
    actor_kind: ActorKind,
    actor: &str,
    ctx: &Context,
    reason: &str,
) -> anyhow::Result<KillSwitch> {
    let from = state
        .control(KILL_SWITCH)?
        .and_then(|(v, _, _)| KillSwitch::parse(&v))
        .unwrap_or(KillSwitch::Off);
    audit
        .record(
            AuditEvent::new(actor_kind, actor, action::CONFIG_CHANGED, Outcome::Success)
                .resource("kill_switch")
                .context(ctx)
                .payload(json!({ "kill_switch": { "from": from.as_str(), "to": to.as_str() }, "reason": reason })),
        )
        .await?;
    state.set_control(KILL_SWITCH, to.as_str(), actor)?;
    Ok(from)
}
