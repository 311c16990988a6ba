//! `token` and `user` commands: against the data dir (audited in its audit
//! log; with the server stopped, e.g. to recover from a lost admin token) or
//! through a running server's admin API with `--server`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};

use super::DEFAULT_DATA_DIR;
use super::client::ServerArgs;
use super::vault::UnlockArgs;
use crate::admin::rbac::Role;
use crate::admin::tokens::Tokens;
use crate::admin::users::{self, Users};
use crate::audit::{ActorKind, AuditEvent, Outcome, action};
use crate::store::{STATE_DB, StateDb};

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; it is printed once.
    Create {
        /// Who or what it is for.
        #[arg(long)]
        name: String,
        /// admin, trader, viewer or auditor.
        #[arg(long)]
        role: String,
        /// The user it belongs to (default: admin).
        #[arg(long, default_value = "admin")]
        user: String,
        /// Seconds until it expires.
        #[arg(long)]
        expires_in_s: Option<u64>,
        /// The data dir.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// How to open the vault (it holds the audit signing key).
        #[command(flatten)]
        unlock: UnlockArgs,
        /// Go through a running server instead.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List tokens (never their secrets).
    List {
        /// The data dir.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Go through a running server instead.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke a token, with immediate effect.
    Revoke {
        /// The token id (`abk_<id>_…`).
        id: String,
        /// The data dir.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// How to open the vault (it holds the audit signing key).
        #[command(flatten)]
        unlock: UnlockArgs,
        /// Go through a running server instead.
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `user` subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user (Cloud mode).
    Add {
        /// The name.
        name: String,
        /// admin, trader, viewer or auditor.
        #[arg(long)]
        role: String,
        /// The running server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List users.
    List {
        /// The running server.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Change a user's role, or disable or enable it.
    Set {
        /// The name.
        name: String,
        /// A new role.
        #[arg(long)]
        role: Option<String>,
        /// true disables the user (its tokens stop at once), false enables it.
        #[arg(long)]
        disabled: Option<bool>,
        /// The running server.
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn state(data_dir: &Path) -> anyhow::Result<StateDb> {
    if !data_dir.join(crate::config::CONFIG_FILE).exists() {
        anyhow::bail!(
            "{} is not an algobanana data dir (no {}); pass --data-dir",
            data_dir.display(),
            crate::config::CONFIG_FILE
        );
    }
    Ok(StateDb::open(&data_dir.join(STATE_DB))?)
}

async fn audit(data_dir: &Path, unlock: &UnlockArgs, event: AuditEvent) -> anyhow::Result<()> {
    super::vault::audit_in(data_dir, unlock.open(data_dir)?, event).await
}

fn print_tokens(list: &Value, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    for t in list.as_array().map(Vec::as_slice).unwrap_or_default() {
        let state = if t["revoked_at_ns"].is_i64() {
            "revoked"
        } else if t["expires_at_ns"].as_i64().is_some_and(|e| e <= crate::audit::now_ns()) {
            "expired"
        } else {
            "active"
        };
        writeln!(
            out,
            "{:<28} {:<8} {:<8} {:<12} {}",
            t["id"].as_str().unwrap_or(""),
            t["role"].as_str().unwrap_or(""),
            state,
            t["owner"].as_str().unwrap_or(""),
            t["name"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}

/// Runs a `token` command.
///
/// # Errors
/// With a message saying what to do.
pub async fn token(cmd: TokenCommand, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    match cmd {
        TokenCommand::Create {
            name,
            role,
            user,
            expires_in_s,
            data_dir,
            unlock,
            server,
        } => {
            if let Some(client) = server.client()? {
                let mut body = json!({ "name": name, "role": role, "user": user });
                if let Some(s) = expires_in_s {
                    body["expires_in_s"] = json!(s);
                }
                let r = client.call("POST", "/v1/tokens", Some(body)).await?;
                writeln!(out, "{}", r["token"].as_str().unwrap_or(""))?;
                return Ok(0);
            }
            let role = Role::parse(&role)
                .with_context(|| format!("role `{role}`: expected admin, trader, viewer or auditor"))?;
            let db = state(&data_dir)?;
            let owner = Users::new(db.clone())
                .get(&user)?
                .with_context(|| format!("there is no user `{user}`"))?;
            anyhow::ensure!(
                users::may_hold(owner.role, role),
                "user `{user}` has role {}, which may not hold a {} token",
                owner.role.as_str(),
                role.as_str()
            );
            anyhow::ensure!(
                !name.trim().is_empty() && name.chars().count() <= 64,
                "--name: 1–64 characters"
            );
            let expires = expires_in_s.map(|s| {
                crate::audit::now_ns()
                    .saturating_add(i64::try_from(s).unwrap_or(i64::MAX / 2).saturating_mul(1_000_000_000))
            });
            // The audit event names the token's id, known only once it
            // exists: create it, audit, and revoke it again if the audit
            // fails, so no usable token exists without its audit row.
            let tokens = Tokens::new(db);
            let (secret, info) = tokens.create(&name, &user, role, expires)?;
            let recorded = audit(
                &data_dir,
                &unlock,
                AuditEvent::new(
                    ActorKind::User,
                    super::vault::actor(),
                    action::TOKEN_CREATED,
                    Outcome::Success,
                )
                .resource(format!("token:{}", info.id))
                .payload(json!({ "token": info, "via": "cli" })),
            )
            .await;
            if let Err(e) = recorded {
                tokens.revoke(&info.id)?;
                return Err(e.context("the token was revoked again because its creation could not be audited"));
            }
            writeln!(out, "{secret}")?;
            writeln!(
                std::io::stderr(),
                "token {} (role {}, user {user}) shown only now; store it somewhere safe",
                info.id,
                role.as_str()
            )?;
            Ok(0)
        }
        TokenCommand::List { data_dir, server } => {
            let list = if let Some(client) = server.client()? {
                client.call("GET", "/v1/tokens", None).await?
            } else {
                serde_json::to_value(Tokens::new(state(&data_dir)?).list(None)?)?
            };
            print_tokens(&list, out)?;
            Ok(0)
        }
        TokenCommand::Revoke {
            id,
            data_dir,
            unlock,
            server,
        } => {
            if let Some(client) = server.client()? {
                client.call("DELETE", &format!("/v1/tokens/{id}"), None).await?;
                writeln!(out, "token {id} revoked")?;
                return Ok(0);
            }
            let tokens = Tokens::new(state(&data_dir)?);
            anyhow::ensure!(
                tokens.get(&id)?.is_some(),
                "there is no token `{id}` (`algobanana token list` shows them)"
            );
            audit(
                &data_dir,
                &unlock,
                AuditEvent::new(
                    ActorKind::User,
                    super::vault::actor(),
                    action::TOKEN_REVOKED,
                    Outcome::Success,
                )
                .resource(format!("token:{id}"))
                .payload(json!({ "revoked": id, "via": "cli" })),
            )
            .await?;
            tokens.revoke(&id)?;
            writeln!(out, "token {id} revoked")?;
            Ok(0)
        }
    }
}

/// Runs a `user` command (through the admin API: users are a Cloud mode
/// feature of a running server).
///
/// # Errors
/// With a message saying what to do.
pub async fn user(cmd: UserCommand, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    let need = |s: &ServerArgs| {
        s.client()?.ok_or_else(|| {
            anyhow::anyhow!("`user` works through the running server: pass --server URL (or ALGOBANANA_SERVER)")
        })
    };
    match cmd {
        UserCommand::Add { name, role, server } => {
            let r = need(&server)?
                .call("POST", "/v1/users", Some(json!({ "name": name, "role": role })))
                .await?;
            writeln!(
                out,
                "user {} ({})",
                r["name"].as_str().unwrap_or(""),
                r["role"].as_str().unwrap_or("")
            )?;
        }
        UserCommand::List { server } => {
            let list = need(&server)?.call("GET", "/v1/users", None).await?;
            for u in list.as_array().map(Vec::as_slice).unwrap_or_default() {
                writeln!(
                    out,
                    "{:<24} {:<8} {}",
                    u["name"].as_str().unwrap_or(""),
                    u["role"].as_str().unwrap_or(""),
                    if u["disabled_at_ns"].is_i64() {
                        "disabled"
                    } else {
                        "enabled"
                    }
                )?;
            }
        }
        UserCommand::Set {
            name,
            role,
            disabled,
            server,
        } => {
            let mut body = json!({});
            if let Some(r) = role {
                body["role"] = json!(r);
            }
            if let Some(d) = disabled {
                body["disabled"] = json!(d);
            }
            let r = need(&server)?
                .call("PATCH", &format!("/v1/users/{name}"), Some(body))
                .await?;
            writeln!(out, "{}", serde_json::to_string(&r)?)?;
        }
    }
    Ok(0)
}
