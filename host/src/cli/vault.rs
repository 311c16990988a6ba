//! `vault` and `secret` commands. Values are read from standard input,
//! never from arguments (which other users can see in `ps`), and are never
//! printed. Against the data dir the change is audited in the audit log;
//! with `--server` it goes through the admin API (which audits it).

use std::io::{IsTerminal as _, Read as _, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;

use super::DEFAULT_DATA_DIR;
use super::client::ServerArgs;
use crate::audit::writer::AuditOptions;
use crate::audit::{AUDIT_DB, ActorKind, AuditEvent, AuditLog, Outcome, action};
use crate::vault::{DEFAULT_KEY_FILE, KdfParams, Unlock, Vault, unlock};

/// How to unlock the vault.
#[derive(Debug, Clone, Args)]
pub struct UnlockArgs {
    /// A key file that opens the vault (default: `DATA_DIR/keys/vault.key`
    /// when it exists).
    #[arg(long, env = "ALGOBANANA_VAULT_KEY_FILE")]
    pub vault_key_file: Option<PathBuf>,
    /// A file holding the vault passphrase (or set
    /// ALGOBANANA_VAULT_PASSPHRASE; asked for on a terminal otherwise).
    #[arg(long, env = "ALGOBANANA_VAULT_PASSPHRASE_FILE")]
    pub vault_passphrase_file: Option<PathBuf>,
}

impl UnlockArgs {
    /// The unlock sources for `data_dir`.
    ///
    /// # Errors
    /// An unreadable passphrase file.
    pub fn unlock(&self, data_dir: &Path) -> anyhow::Result<Unlock> {
        let key_file = self.vault_key_file.clone().or_else(|| {
            let k = data_dir.join(DEFAULT_KEY_FILE);
            k.exists().then_some(k)
        });
        let mut u = Unlock::from_sources(
            std::env::var("ALGOBANANA_VAULT_PASSPHRASE").ok(),
            self.vault_passphrase_file.as_deref(),
            key_file.as_deref(),
        )?;
        if u.is_empty() && std::io::stdin().is_terminal() {
            let p = rpassword::prompt_password("vault passphrase: ").context("cannot read the passphrase")?;
            u = u.with_passphrase(p.into_bytes());
        }
        Ok(u)
    }

    /// Opens the vault in `data_dir` when there is one.
    ///
    /// # Errors
    /// A vault that does not open (the message says why and what to do).
    pub fn open(&self, data_dir: &Path) -> anyhow::Result<Option<Arc<Vault>>> {
        let path = Vault::path_in(data_dir);
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Vault::open(&path, &self.unlock(data_dir)?)?)))
    }
}

/// New unlock sources, for `init`, `rekey` and `rotate`.
#[derive(Debug, Args)]
pub struct NewUnlockArgs {
    /// Protect the vault with a passphrase (from
    /// ALGOBANANA_VAULT_NEW_PASSPHRASE, --new-passphrase-file, or asked for
    /// twice on a terminal).
    #[arg(long)]
    pub passphrase: bool,
    /// A file holding the new passphrase.
    #[arg(long, env = "ALGOBANANA_VAULT_NEW_PASSPHRASE_FILE")]
    pub new_passphrase_file: Option<PathBuf>,
    /// Open the vault with this key file (created when missing; keep it on
    /// separate media).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Argon2id memory for the passphrase slot, in MiB (minimum 19).
    #[arg(long, default_value_t = 64)]
    pub kdf_memory_mib: u32,
}

impl NewUnlockArgs {
    fn kdf(&self) -> KdfParams {
        KdfParams {
            m_kib: self.kdf_memory_mib.saturating_mul(1024),
            ..KdfParams::default()
        }
    }

    /// The new sources; `default_key_file` when nothing else is asked for.
    fn unlock(&self, default_key_file: Option<&Path>) -> anyhow::Result<Unlock> {
        let env = std::env::var("ALGOBANANA_VAULT_NEW_PASSPHRASE").ok();
        let wants_pass = self.passphrase || self.new_passphrase_file.is_some() || env.is_some();
        let mut u = Unlock::from_sources(env, self.new_passphrase_file.as_deref(), None)?;
        if wants_pass && !u.has_passphrase() {
            if !std::io::stdin().is_terminal() {
                anyhow::bail!(
                    "--passphrase needs a terminal, ALGOBANANA_VAULT_NEW_PASSPHRASE or --new-passphrase-file"
                );
            }
            let a = rpassword::prompt_password("new vault passphrase: ")?;
            let b = rpassword::prompt_password("repeat it: ")?;
            if a != b {
                anyhow::bail!("the two passphrases differ; nothing was changed");
            }
            if a.chars().count() < 12 {
                anyhow::bail!("use a passphrase of at least 12 characters; nothing was changed");
            }
            u = u.with_passphrase(a.into_bytes());
        }
        let key_file = self.key_file.clone().or_else(|| {
            (!u.has_passphrase())
                .then(|| default_key_file.map(Path::to_owned))
                .flatten()
        });
        if let Some(k) = key_file {
            if !k.exists() {
                unlock::create_key_file(&k)?;
            }
            u = u.with_key_file(k);
        }
        Ok(u)
    }
}

/// `vault` subcommands.
#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Create the vault (`init` already made one opened by
    /// `keys/vault.key`).
    Init {
        /// The data dir.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// How to protect it.
        #[command(flatten)]
        new: NewUnlockArgs,
    },
    /// Show the vault: slots and secret names (never values).
    Status {
        /// The data dir.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// How to open it.
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Replace the passphrase and/or key file (the data key stays; fast).
    /// With neither `--passphrase` nor `--key-file`, the default key file.
    Rekey {
        /// The data dir.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// How to open it now.
        #[command(flatten)]
        unlock: UnlockArgs,
        /// How to protect it from now on.
        #[command(flatten)]
        new: NewUnlockArgs,
    },
    /// A new data key: every record re-encrypted (restart a running host
    /// afterwards).
    Rotate {
        /// The data dir.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// How to open it now.
        #[command(flatten)]
        unlock: UnlockArgs,
        /// How to protect it from now on.
        #[command(flatten)]
        new: NewUnlockArgs,
    },
}

/// `secret` subcommands.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set or replace a secret; the value is read from standard input (one
    /// trailing newline is dropped).
    Set {
        /// The name (as in `[secrets.NAME] vault = true`).
        name: String,
        /// The data dir.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// How to open the vault.
        #[command(flatten)]
        unlock: UnlockArgs,
        /// Go through a running server instead.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List secret names and versions (never values).
    List {
        /// The data dir.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// How to open the vault.
        #[command(flatten)]
        unlock: UnlockArgs,
        /// Go through a running server instead.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a secret.
    Delete {
        /// The name.
        name: String,
        /// The data dir.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// How to open the vault.
        #[command(flatten)]
        unlock: UnlockArgs,
        /// Go through a running server instead.
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Who acts from the command line, for the audit log.
pub(super) fn actor() -> String {
    std::env::var("USER").map_or_else(|_| "cli".to_owned(), |u| format!("cli:{u}"))
}

/// Records `event` in the data dir's audit log (signed with the key in
/// `vault`), which must not be held by a running server: then the change
/// must go through the admin API.
pub(super) async fn audit_in(data_dir: &Path, vault: Option<Arc<Vault>>, event: AuditEvent) -> anyhow::Result<()> {
    let log = AuditLog::open(
        &data_dir.join(AUDIT_DB),
        AuditOptions {
            vault,
            ..AuditOptions::default()
        },
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\nIf the server is running it holds the audit log: make the change through it with --server http://ADDRESS and ALGOBANANA_TOKEN"
        )
    })?;
    let r = log.record(event).await;
    log.close();
    r?;
    Ok(())
}

async fn audit_now(data_dir: &Path, vault: &Arc<Vault>, event: AuditEvent) -> anyhow::Result<()> {
    audit_in(data_dir, Some(vault.clone()), event).await
}

fn require_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    if !data_dir.join(crate::config::CONFIG_FILE).exists() {
        anyhow::bail!(
            "{} is not an algobanana data dir (no {}); pass --data-dir or run `algobanana init`",
            data_dir.display(),
            crate::config::CONFIG_FILE
        );
    }
    Ok(())
}

fn open_required(data_dir: &Path, unlock: &UnlockArgs) -> anyhow::Result<Arc<Vault>> {
    unlock
        .open(data_dir)?
        .ok_or_else(|| crate::vault::VaultError::Missing(Vault::path_in(data_dir)).into())
}

/// Runs a `vault` command.
///
/// # Errors
/// With a message saying what to do.
pub async fn vault(cmd: VaultCommand, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    match cmd {
        VaultCommand::Init { data_dir, new } => {
            require_data_dir(&data_dir)?;
            let path = Vault::path_in(&data_dir);
            if path.exists() {
                return Err(crate::vault::VaultError::Exists(path).into());
            }
            let u = new.unlock(Some(&data_dir.join(DEFAULT_KEY_FILE)))?;
            let v = Arc::new(Vault::create(&path, &u, new.kdf())?);
            audit_now(
                &data_dir,
                &v,
                AuditEvent::new(ActorKind::User, actor(), action::VAULT_CHANGED, Outcome::Success)
                    .resource("vault")
                    .payload(json!({ "change": "init", "slots": v.slot_kinds() })),
            )
            .await?;
            writeln!(
                out,
                "vault created at {} (opened by: {})",
                path.display(),
                v.slot_kinds().join(", ")
            )?;
            Ok(0)
        }
        VaultCommand::Status { data_dir, unlock } => {
            let v = open_required(&data_dir, &unlock)?;
            writeln!(
                out,
                "vault {}: opened by {}",
                v.path().display(),
                v.slot_kinds().join(", ")
            )?;
            for m in v.list()? {
                writeln!(
                    out,
                    "  {:<40} {:<7} v{} updated {}",
                    m.name,
                    format!("{:?}", m.kind).to_lowercase(),
                    m.version,
                    crate::audit::format_ts(m.updated_at_ns)
                )?;
            }
            Ok(0)
        }
        VaultCommand::Rekey { data_dir, unlock, new } => {
            let v = open_required(&data_dir, &unlock)?;
            let u = new.unlock(Some(&data_dir.join(DEFAULT_KEY_FILE)))?;
            v.rekey(&u, new.kdf())?;
            audit_now(
                &data_dir,
                &v,
                AuditEvent::new(ActorKind::User, actor(), action::VAULT_CHANGED, Outcome::Success)
                    .resource("vault")
                    .payload(json!({ "change": "rekey", "slots": v.slot_kinds() })),
            )
            .await?;
            writeln!(out, "vault re-keyed; it now opens with: {}", v.slot_kinds().join(", "))?;
            if !u.has_key_file() && data_dir.join(DEFAULT_KEY_FILE).exists() {
                writeln!(
                    out,
                    "the old key file {} no longer opens the vault; delete it",
                    data_dir.join(DEFAULT_KEY_FILE).display()
                )?;
            }
            Ok(0)
        }
        VaultCommand::Rotate { data_dir, unlock, new } => {
            let v = open_required(&data_dir, &unlock)?;
            let u = if new.passphrase || new.key_file.is_some() || new.new_passphrase_file.is_some() {
                new.unlock(None)?
            } else {
                unlock.unlock(&data_dir)?
            };
            let v = Arc::new(Arc::into_inner(v).expect("one handle").rotate(&u, new.kdf())?);
            audit_now(
                &data_dir,
                &v,
                AuditEvent::new(ActorKind::User, actor(), action::VAULT_CHANGED, Outcome::Success)
                    .resource("vault")
                    .payload(json!({ "change": "rotate", "slots": v.slot_kinds() })),
            )
            .await?;
            writeln!(
                out,
                "vault data key rotated; every record re-encrypted. Restart a running host."
            )?;
            Ok(0)
        }
    }
}

fn read_value() -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    if std::io::stdin().is_terminal() {
        let v = rpassword::prompt_password("value (not shown): ")?;
        buf.extend_from_slice(v.as_bytes());
    } else {
        std::io::stdin()
            .take(64 * 1024 + 2)
            .read_to_end(&mut buf)
            .context("cannot read the value from standard input")?;
    }
    while buf.last() == Some(&b'\n') || buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(buf)
}

/// Runs a `secret` command.
///
/// # Errors
/// With a message saying what to do.
pub async fn secret(cmd: SecretCommand, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    match cmd {
        SecretCommand::Set {
            name,
            data_dir,
            unlock,
            server,
        } => {
            let value = read_value()?;
            Vault::check(&name, &value)?;
            if let Some(client) = server.client()? {
                let text = std::str::from_utf8(&value).context(
                    "through the admin API a value must be UTF-8 text; set binary values against the data dir",
                )?;
                let r = client
                    .call("PUT", &format!("/v1/secrets/{name}"), Some(json!({ "value": text })))
                    .await?;
                writeln!(
                    out,
                    "secret `{name}` {} (version {})",
                    r["outcome"].as_str().unwrap_or("set"),
                    r["version"]
                )?;
                return Ok(0);
            }
            require_data_dir(&data_dir)?;
            let v = open_required(&data_dir, &unlock)?;
            // Audit first: a change that cannot be audited is not made.
            audit_now(
                &data_dir,
                &v,
                AuditEvent::new(ActorKind::User, actor(), action::SECRET_SET, Outcome::Success)
                    .resource(format!("secret:{name}"))
                    .payload(json!({ "secret": name, "via": "cli" })),
            )
            .await?;
            let (outcome, version) = v.set(&name, &value)?;
            writeln!(
                out,
                "secret `{name}` {} (version {version})",
                serde_json::to_value(outcome)?.as_str().unwrap_or("")
            )?;
            Ok(0)
        }
        SecretCommand::List {
            data_dir,
            unlock,
            server,
        } => {
            let list = if let Some(client) = server.client()? {
                client.call("GET", "/v1/secrets", None).await?
            } else {
                require_data_dir(&data_dir)?;
                let v = open_required(&data_dir, &unlock)?;
                serde_json::to_value(
                    v.list()?
                        .into_iter()
                        .filter(|m| m.kind == crate::vault::RecordKind::Secret)
                        .collect::<Vec<_>>(),
                )?
            };
            for m in list.as_array().map(Vec::as_slice).unwrap_or_default() {
                writeln!(
                    out,
                    "{:<40} v{}  updated {}",
                    m["name"].as_str().unwrap_or(""),
                    m["version"],
                    m["updated_at_ns"]
                        .as_i64()
                        .map(crate::audit::format_ts)
                        .unwrap_or_default()
                )?;
            }
            Ok(0)
        }
        SecretCommand::Delete {
            name,
            data_dir,
            unlock,
            server,
        } => {
            if let Some(client) = server.client()? {
                client.call("DELETE", &format!("/v1/secrets/{name}"), None).await?;
                writeln!(out, "secret `{name}` deleted")?;
                return Ok(0);
            }
            require_data_dir(&data_dir)?;
            let v = open_required(&data_dir, &unlock)?;
            if !v.contains(&name)? {
                anyhow::bail!("there is no secret `{name}` in the vault (`algobanana secret list` shows the names)");
            }
            audit_now(
                &data_dir,
                &v,
                AuditEvent::new(ActorKind::User, actor(), action::SECRET_DELETED, Outcome::Success)
                    .resource(format!("secret:{name}"))
                    .payload(json!({ "secret": name, "via": "cli" })),
            )
            .await?;
            v.delete(&name)?;
            writeln!(out, "secret `{name}` deleted")?;
            Ok(0)
        }
    }
}
