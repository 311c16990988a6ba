//! `algobanana init`: a new data dir with a config, the databases and a
//! default route (tradingview rule → paper broker) whose hook token is
//! printed once and stored only as its SHA-256.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rand::RngCore;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::audit::writer::AuditOptions;
use crate::audit::{ActorKind, AuditEvent, AuditLog, Outcome, action};
use crate::config::{self, CONFIG_FILE};
use crate::store::{STATE_DB, StateDb};

/// Prefix of hook tokens, so secret scanners and people recognise them.
pub const HOOK_TOKEN_PREFIX: &str = "abh_";

/// What `init` created. The token appears here once and nowhere else.
#[derive(Debug, Serialize)]
pub struct InitOutput {
    /// The data dir.
    pub data_dir: PathBuf,
    /// The default route's name.
    pub route: String,
    /// `/v1/hooks/<token>`.
    pub hook_path: String,
    /// The hook token (256 random bits, URL-safe).
    pub hook_token: String,
    /// The first admin API token (`abk_…`), shown once.
    pub admin_token: String,
}

/// Why `init` failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A config already exists.
    #[error(
        "{0} already exists; algobanana will not overwrite an existing setup (use another --data-dir, or remove the directory to start over)"
    )]
    Exists(PathBuf),
    /// A file could not be written.
    #[error("cannot initialise {path}: {message}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// A fresh hook token: the prefix and 32 random bytes in URL-safe base64.
pub fn new_hook_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{HOOK_TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Returns true if and only if `dir` has no config yet (missing or empty dir,
/// or a dir without `algobanana.toml`).
pub fn needs_init(dir: &Path) -> bool {
    !dir.join(CONFIG_FILE).exists()
}

fn config_text(token_sha256: &str, listen: SocketAddr) -> String {
    format!(
        r#"# algobanana configuration. Unknown keys are errors.
# Written by `algobanana init`; edit and restart to apply.

[server]
# Loopback only by default (Local mode).
listen = "{listen}"
# Largest accepted alert body.
max_body_bytes = 65536
# Alerts accepted and not yet finished; past this, new ones get 503 with
# Retry-After (nothing acknowledged is dropped).
max_pending_alerts = 1024

# Limits of every plugin call; override per plugin under [plugins.NAME.limits].
[limits]
deadline_ms = 100
memory_mib = 64
# fuel = 0 turns fuel metering off.
fuel = 0
max_output_bytes = 65536
max_intents = 32
log_bytes_per_call = 4096
log_line_bytes = 1024

# The default rule: TradingView / TradersPost-style JSON and plain-text alerts.
[plugins.tradingview]
source = "builtin:tradingview"
world = "rule"

# The default broker: paper trading (no real money moves).
[plugins.paper]
source = "builtin:paper"
world = "broker"

[[routes]]
name = "default"
# SHA-256 of the hook token; the token itself was shown once by `init`.
hook_token_sha256 = "{token_sha256}"
rule = "tradingview"
broker = "paper"

# Settings handed to the rule, e.g. default_quantity = "1" (amounts as
# strings: a float such as 0.5 is refused, it cannot hold money exactly).
[routes.rule_config]

# Settings of the paper account.
[routes.broker_settings]
account_id = "paper"
currency = "USD"
initial_cash = "100000"

# The audit log keeps every event. To archive and remove old ones while
# the host runs (daily, at a signed checkpoint, into DATA_DIR/archive):
# [audit]
# retention_days = 2555
"#
    )
}

/// Creates `dir` (and missing parents) readable by its owner only: the data
/// dir holds the audit log, the orders, the config and the vault. A
/// directory that already exists keeps its mode (it may be shared on
/// purpose); [`exposure`] warns about it at every start.
///
/// # Errors
/// The I/O error.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// What in `dir` other users of this machine can read, one warning each
/// with the command that fixes it: the data dir itself (the audit log,
/// alerts, orders and config are inside), and a config holding secret
/// values. Printed at `serve` and recorded in `system.start`.
pub fn exposure(dir: &Path, config: &config::Config) -> Vec<String> {
    let mut out = Vec::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).ok().map(|m| m.permissions().mode() & 0o777);
        if let Some(m) = mode(dir)
            && m & 0o077 != 0
        {
            out.push(format!(
                "the data dir {} is open to other users of this machine (mode {m:04o}): they can read the audit log, alerts, orders and config; run `chmod 700 {}`",
                dir.display(),
                dir.display()
            ));
        }
        let path = dir.join(CONFIG_FILE);
        let inline = config
            .secrets
            .iter()
            .filter(|(_, (source, _))| matches!(source, config::SecretSource::Value(_)))
            .count();
        if inline > 0
            && let Some(m) = mode(&path)
            && m & 0o077 != 0
        {
            out.push(format!(
                "{} holds {inline} secret value(s) and is readable by other users (mode {m:04o}); run `chmod 600 {}`, or move them into the vault (`algobanana secret set NAME`)",
                path.display(),
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, config);
    out
}

/// Creates a new setup in `dir`.
///
/// # Errors
/// [`InitError::Exists`] when `dir` already holds a config; [`InitError::Io`]
/// when a file cannot be written.
pub async fn init(dir: &Path, listen: SocketAddr) -> Result<InitOutput, InitError> {
    let config_path = dir.join(CONFIG_FILE);
    if config_path.exists() {
        return Err(InitError::Exists(config_path));
    }
    let io = |path: &Path, e: &dyn std::fmt::Display| InitError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    };
    create_private_dir(dir).map_err(|e| io(dir, &e))?;
    let token = new_hook_token();
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let text = config_text(&hash, listen);
    // Validate what we are about to write, so init can never leave a config
    // that serve rejects.
    config::parse(&text, &config_path).map_err(|e| io(&config_path, &e))?;

    let tmp = dir.join(format!(".{CONFIG_FILE}.tmp"));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    // The config can hold secret values (`[secrets.X] value = …`).
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| io(&tmp, &e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io(&tmp, &e))?;
    drop(f);
    // hard_link refuses to replace an existing file, so two concurrent inits
    // cannot both win.
    std::fs::hard_link(&tmp, &config_path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            InitError::Exists(config_path.clone())
        } else {
            io(&config_path, &e)
        }
    })?;
    let _ = std::fs::remove_file(&tmp);

    let state = StateDb::open(&dir.join(STATE_DB)).map_err(|e| io(dir, &e))?;
    let (admin_token, admin_info) = crate::admin::tokens::Tokens::new(state)
        .create("initial admin", "admin", crate::admin::rbac::Role::Admin, None)
        .map_err(|e| io(dir, &e))?;
    // The vault, opened by a key file beside it (Local mode: unattended
    // start, nothing leaves the machine). `vault rekey` adds a passphrase
    // and can drop the key file; the audit signing key is created in it.
    let key_file = dir.join(crate::vault::DEFAULT_KEY_FILE);
    let vault_path = crate::vault::Vault::path_in(dir);
    let vault = if vault_path.exists() {
        None
    } else {
        crate::vault::unlock::create_key_file(&key_file).map_err(|e| io(&key_file, &e))?;
        let unlock = crate::vault::Unlock::none().with_key_file(&key_file);
        Some(std::sync::Arc::new(
            crate::vault::Vault::create(&vault_path, &unlock, crate::vault::KdfParams::default())
                .map_err(|e| io(&vault_path, &e))?,
        ))
    };
    let audit_path = dir.join(crate::audit::AUDIT_DB);
    let audit = AuditLog::open(
        &audit_path,
        AuditOptions {
            vault,
            ..AuditOptions::default()
        },
    )
    .map_err(|e| io(&audit_path, &e))?;
    let event = AuditEvent::new(ActorKind::System, "cli", action::CONFIG_CHANGED, Outcome::Success)
        .resource(format!("config:{}", config_path.display()))
        .payload(json!({ "change": "init", "config_sha256": hex::encode(Sha256::digest(text.as_bytes())), "routes": ["default"] }));
    let recorded = audit.record(event).await;
    let token_event = AuditEvent::new(ActorKind::System, "cli", action::TOKEN_CREATED, Outcome::Success)
        .resource(format!("token:{}", admin_info.id))
        .payload(json!({ "token": admin_info }));
    let recorded = match recorded {
        Ok(_) => audit.record(token_event).await,
        Err(e) => Err(e),
    };
    audit.close();
    recorded.map_err(|e| io(&audit_path, &e))?;

    Ok(InitOutput {
        data_dir: dir.to_owned(),
        route: "default".into(),
        hook_path: config::hook_path(&token),
        hook_token: token,
        admin_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let a = new_hook_token();
        let b = new_hook_token();
        assert_ne!(a, b);
        assert!(a.starts_with(HOOK_TOKEN_PREFIX));
        // 32 bytes = 256 bits = 43 base64 characters.
        assert_eq!(a.len(), HOOK_TOKEN_PREFIX.len() + 43);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    }

    #[tokio::test]
    async fn init_refuses_to_overwrite_and_writes_a_valid_config() {
        let dir = tempfile::tempdir().unwrap();
        let out = init(dir.path(), "127.0.0.1:8700".parse().unwrap()).await.unwrap();
        let text = std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap();
        assert!(!text.contains(&out.hook_token), "the token itself is never stored");
        assert!(text.contains(&hex::encode(Sha256::digest(out.hook_token.as_bytes()))));
        config::load(&dir.path().join(CONFIG_FILE)).unwrap();
        let err = init(dir.path(), "127.0.0.1:8700".parse().unwrap()).await.unwrap_err();
        assert!(err.to_string().contains("will not overwrite"), "{err}");
    }

    /// A new data dir, its keys and cache are the owner's only, and the
    /// config (which can hold secret values) too; a data dir or a config
    /// with secret values that other users can read is named at start, with
    /// the command that fixes it.
    #[cfg(unix)]
    #[tokio::test]
    async fn the_data_dir_is_private_and_exposure_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        init(&dir, "127.0.0.1:8700".parse().unwrap()).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CONFIG_FILE)), 0o600);
        assert_eq!(mode(&dir.join("keys")), 0o700);
        let config_path = dir.join(CONFIG_FILE);
        let config = config::load(&config_path).unwrap();
        assert_eq!(exposure(&dir, &config), Vec::<String>::new());

        let chmod = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        chmod(&dir, 0o755);
        let found = exposure(&dir, &config);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("(mode 0755)"), "{found:?}");
        assert!(
            found[0].contains(&format!("run `chmod 700 {}`", dir.display())),
            "{found:?}"
        );

        // A readable config matters only when it holds secret values.
        chmod(&config_path, 0o644);
        assert_eq!(exposure(&dir, &config).len(), 1);
        let mut text = std::fs::read_to_string(&config_path).unwrap();
        text.push_str("\n[secrets.hook_pass]\nvalue = \"hunter2\"\n");
        std::fs::write(&config_path, text).unwrap();
        let config = config::load(&config_path).unwrap();
        let found = exposure(&dir, &config);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[1].contains("holds 1 secret value(s)"), "{found:?}");
        assert!(found[1].contains("chmod 600"), "{found:?}");
        assert!(!found[1].contains("hunter2"));
        chmod(&dir, 0o700);
        chmod(&config_path, 0o600);
        assert_eq!(exposure(&dir, &config), Vec::<String>::new());
    }
}
