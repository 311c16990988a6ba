//! Throwing and releasing the kill switch: from the CLI (on the data dir,
//! whether or not the server runs), the admin API (issue 5) and an
//! authenticated webhook action (which can only throw it: `on` or
//! `reduce_only`). The state lives in `state.db` and survives restarts, and
//! the running server reads it before every order decision, so a change
//! takes effect at once. Every change is audited (`config.changed`,
//! resource `kill_switch`): in the same process when it can hold the audit
//! log, otherwise by the server before its next order decision.

use serde_json::json;

use super::KILL_SWITCH;
use super::risk::KillSwitch;
use crate::audit::{ActorKind, AuditEvent, AuditLog, Context, Outcome, action};
use crate::store::StateDb;

fn current(state: &StateDb) -> anyhow::Result<KillSwitch> {
    Ok(state
        .control(KILL_SWITCH)?
        .and_then(|(v, _, _)| KillSwitch::parse(&v))
        .unwrap_or(KillSwitch::Off))
}

fn event(
    from: KillSwitch,
    to: KillSwitch,
    actor_kind: ActorKind,
    actor: &str,
    ctx: &Context,
    reason: &str,
) -> AuditEvent {
    AuditEvent::new(actor_kind, actor, action::CONFIG_CHANGED, Outcome::Success)
        .resource("kill_switch")
        .context(ctx)
        .payload(json!({ "kill_switch": { "from": from.as_str(), "to": to.as_str() }, "reason": reason }))
}

/// Sets the kill switch to `to`, audited (committed) first. Returns the
/// previous setting.
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
    let from = current(state)?;
    audit.record(event(from, to, actor_kind, actor, ctx, reason)).await?;
    state.set_control(KILL_SWITCH, to.as_str(), actor, true, reason)?;
    Ok(from)
}

/// Throws the kill switch to `to` unless it is at least as strict
/// already (`on` is stricter than `reduce_only`): for the actors that may
/// throw it and never release it (a webhook, a reconciliation's drift).
/// Returns the setting it found and whether it changed; an attempt that
/// changed nothing is audited too (outcome `deny`, with the reason).
///
/// # Errors
/// When the change cannot be audited or stored (then it did not happen).
pub async fn escalate(
    state: &StateDb,
    audit: &AuditLog,
    to: KillSwitch,
    actor_kind: ActorKind,
    actor: &str,
    ctx: &Context,
    reason: &str,
) -> anyhow::Result<(KillSwitch, bool)> {
    let from = current(state)?;
    if from.strictness() >= to.strictness() {
        let mut e = event(from, to, actor_kind, actor, ctx, reason);
        e.outcome = Outcome::Deny;
        e.payload["kill_switch"]["to"] = json!(from.as_str());
        e.payload["unchanged"] = json!(format!(
            "asked for {}, but it is {} already, at least as strict; only the command line or an admin can loosen it",
            to.as_str(),
            from.as_str()
        ));
        audit.record(e).await?;
        return Ok((from, false));
    }
    Ok((set(state, audit, to, actor_kind, actor, ctx, reason).await?, true))
}

/// Sets the kill switch without the audit log (the server holds it): the
/// change takes effect at once and the server audits it before its next
/// order decision.
///
/// # Errors
/// When it cannot be stored.
pub fn request(state: &StateDb, to: KillSwitch, actor: &str, reason: &str) -> anyhow::Result<KillSwitch> {
    let from = current(state)?;
    state.set_control(KILL_SWITCH, to.as_str(), actor, false, reason)?;
    Ok(from)
}

/// Audits a change made by [`request`], if there is one.
///
/// # Errors
/// When it cannot be read or audited (the caller must not act then).
pub async fn audit_pending(state: &StateDb, audit: &AuditLog) -> Result<(), crate::pipeline::PipelineError> {
    if let Some((value, actor, reason)) = state.unaudited_control(KILL_SWITCH)? {
        let to = KillSwitch::parse(&value).unwrap_or(KillSwitch::On);
        let mut e = event(to, to, ActorKind::User, &actor, &Context::default(), &reason);
        e.payload["kill_switch"]["from"] = json!("unknown (set while the server held the audit log)");
        e.payload["set_at"] = json!("by the command line, recorded by the server");
        audit.record(e).await?;
        state.mark_control_audited(KILL_SWITCH)?;
    }
    Ok(())
}
