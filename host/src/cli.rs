//! The command line: `init`, `serve`, `kill-switch`, `audit …`, `vault …`,
//! `secret …`, `token …` and `api` (any admin API call). `main.rs` only
//! parses arguments and calls [`run`], so tests drive the same code.

pub mod admin;
pub mod client;
pub mod vault;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::app::{App, AppOptions};
use crate::audit::export::{self, Format as ExportFormat};
use crate::audit::prune::PruneRequest;
use crate::audit::query::{self, Filter};
use crate::audit::verify::{self, Options as VerifyOptions};
use crate::audit::writer::AuditOptions;
use crate::audit::{AUDIT_DB, AuditLog};
use crate::config::DEFAULT_LISTEN;
use crate::setup;

/// Where data lives when `--data-dir` is not given.
pub const DEFAULT_DATA_DIR: &str = "algobanana-data";

/// algobanana: alerts in, sandboxed WebAssembly rules and brokers, audited orders out.
#[derive(Debug, Parser)]
#[command(name = "algobanana", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a data dir: config, databases and a default route
    /// (tradingview rule → paper broker) with a fresh hook token, shown once.
    Init {
        /// The data dir to create.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Address written into the config.
        #[arg(long, default_value = DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Print `{"hook_path": …, "hook_token": …}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the host. Initialises the data dir first when it has no config.
    Serve {
        /// The data dir.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Address to listen on (port 0 picks a free port); defaults to the
        /// config's `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// How to open the vault.
        #[command(flatten)]
        unlock: vault::UnlockArgs,
    },
    /// Throw, release or show the kill switch. Takes effect at once, also
    /// while the server runs; every change is audited.
    KillSwitch {
        /// `on` (no orders), `reduce-only` (only orders that reduce a
        /// position), `off`, or `status`.
        #[arg(value_parser = ["on", "off", "reduce-only", "status"])]
        to: String,
        /// The data dir.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        /// How to open the vault (it holds the audit signing key).
        #[command(flatten)]
        unlock: vault::UnlockArgs,
    },
    /// Plugin authoring and installation: `new`, `test`, `install`.
    Plugin {
        /// The plugin subcommand.
        #[command(subcommand)]
        command: crate::author::PluginCommand,
    },
    /// Read the audit log.
    Audit {
        /// The audit subcommand.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The encrypted credential vault.
    Vault {
        /// The vault subcommand.
        #[command(subcommand)]
        command: vault::VaultCommand,
    },
    /// Secrets in the vault: set, list, delete (never read back).
    Secret {
        /// The secret subcommand.
        #[command(subcommand)]
        command: vault::SecretCommand,
    },
    /// Admin API tokens: create (shown once), list, revoke.
    Token {
        /// The token subcommand.
        #[command(subcommand)]
        command: admin::TokenCommand,
    },
    /// Users (Cloud mode), through the running server.
    User {
        /// The user subcommand.
        #[command(subcommand)]
        command: admin::UserCommand,
    },
    /// Call any admin API endpoint on a running server, e.g.
    /// `algobanana api get /v1/orders` (token in ALGOBANANA_TOKEN).
    Api {
        /// get, post, put, patch or delete.
        #[arg(value_parser = ["get", "post", "put", "patch", "delete"])]
        method: String,
        /// The path, e.g. /v1/routes.
        path: String,
        /// A JSON body.
        #[arg(long)]
        data: Option<String>,
        /// The server.
        #[command(flatten)]
        server: client::ServerArgs,
    },
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Search events (oldest first).
    Search(Box<SearchArgs>),
    /// Check the hash chain, checkpoints, keys and anchors; exit 0 intact,
    /// 1 tampered or inconsistent, 2 could not verify.
    Verify(VerifyArgs),
    /// Append checkpoint notes to a file you keep elsewhere, so a rolled-back
    /// or rewritten log is detected (`verify --witness FILE`).
    Witness {
        /// The data dir.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// The witness file (created if missing; notes are only appended).
        #[arg(long)]
        to: PathBuf,
    },
    /// Stream events as JSON lines (verifiable offline) or CSV.
    Export(Box<ExportArgs>),
    /// Archive and remove events before a date, at a signed checkpoint (run
    /// with the server stopped).
    Prune {
        /// The data dir.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Remove events before this time (RFC 3339).
        #[arg(long)]
        before: String,
        /// The archive file to write (must not exist); default
        /// `DATA_DIR/archive/audit-<time>.jsonl`.
        #[arg(long)]
        archive: Option<PathBuf>,
        /// The retention policy to record in the anchor.
        #[arg(long, default_value = "manual")]
        policy: String,
        /// How to open the vault (it holds the audit signing key).
        #[command(flatten)]
        unlock: vault::UnlockArgs,
    },
    /// Replace the audit signing key; the old key endorses the new one (run
    /// with the server stopped).
    RotateKey {
        /// The data dir.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// How to open the vault (it holds the audit signing key).
        #[command(flatten)]
        unlock: vault::UnlockArgs,
    },
}

/// Filters shared by `search` and `export`.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Action, e.g. `plugin.call`; a trailing `*` matches a prefix (`order.*`).
    #[arg(long)]
    pub action: Option<String>,
    /// Actor kind: user, api_token, plugin, webhook_source or system.
    #[arg(long)]
    pub actor_kind: Option<String>,
    /// Actor id, e.g. `tradingview@0.1.0`.
    #[arg(long)]
    pub actor: Option<String>,
    /// Outcome: allow, deny, success, failure, error or trap.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Correlation id: every event of one alert.
    #[arg(long, alias = "alert")]
    pub correlation_id: Option<String>,
    /// Request id.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Events at or after this time (RFC 3339, e.g. 2026-12-04T10:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Events before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Free text (at least 3 characters) anywhere in actor, action, resource or payload.
    #[arg(long)]
    pub text: Option<String>,
    /// At most this many events.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// `audit search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The data dir.
    #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Filters.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `audit export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The data dir.
    #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// `jsonl` (verifiable with `verify --export`) or `csv`.
    #[arg(long, default_value = "jsonl")]
    pub format: String,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Filters.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The data dir.
    #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// A JSON report instead of text.
    #[arg(long)]
    pub json: bool,
    /// A witness file written by `audit witness`.
    #[arg(long)]
    pub witness: Option<PathBuf>,
    /// Verify this JSONL export offline instead of the data dir.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Pin this key id (fingerprint) instead of trusting the log's first key.
    #[arg(long)]
    pub key: Option<String>,
}

fn parse_time(text: &str, flag: &str) -> anyhow::Result<i64> {
    let ts: jiff::Timestamp = text
        .parse()
        .with_context(|| format!("{flag} `{text}` is not an RFC 3339 time; expected e.g. 2026-12-04T10:00:00Z"))?;
    i64::try_from(ts.as_nanosecond()).with_context(|| format!("{flag} `{text}` is out of range"))
}

/// Runs a parsed command, writing results to `out`; returns the exit code.
///
/// # Errors
/// Anything that stops the command, with a message saying what to do.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    match cli.command {
        Command::Init { data_dir, listen, json } => {
            let o = setup::init(&data_dir, listen).await?;
            print_init(&o, json, out)?;
            Ok(0)
        }
        Command::Serve {
            data_dir,
            listen,
            unlock,
        } => serve(&data_dir, listen, &unlock, out).await,
        Command::Audit { command } => audit(command, out).await,
        Command::KillSwitch {
            to,
            data_dir,
            reason,
            unlock,
        } => kill_switch(&data_dir, &to, &reason, &unlock, out).await,
        Command::Vault { command } => vault::vault(command, out).await,
        Command::Secret { command } => vault::secret(command, out).await,
        Command::Token { command } => admin::token(command, out).await,
        Command::User { command } => admin::user(command, out).await,
        Command::Api {
            method,
            path,
            data,
            server,
        } => {
            let client = server
                .client()?
                .ok_or_else(|| anyhow::anyhow!("`api` needs --server URL (or ALGOBANANA_SERVER)"))?;
            let body = data
                .map(|d| serde_json::from_str(&d).context("--data is not JSON"))
                .transpose()?;
            // Streamed: `api get /v1/audit/export` can be larger than memory.
            let status = client.stream(&method.to_ascii_uppercase(), &path, body, out).await?;
            Ok(if status.is_success() { 0 } else { 1 })
        }
        Command::Plugin { command } => crate::author::run(command, out).await,
    }
}

fn print_init(o: &setup::InitOutput, json: bool, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "hook_path": o.hook_path, "hook_token": o.hook_token, "admin_token": o.admin_token, "route": o.route, "data_dir": o.data_dir })
        )?;
    } else {
        writeln!(out, "initialised {}", o.data_dir.display())?;
        writeln!(out, "route `{}`: tradingview rule -> paper broker", o.route)?;
        writeln!(out, "hook path: {}", o.hook_path)?;
        writeln!(
            out,
            "hook token (shown only now; store it somewhere safe): {}",
            o.hook_token
        )?;
        writeln!(
            out,
            "admin API token (role admin; shown only now; store it somewhere safe): {}",
            o.admin_token
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Audit options with the data dir's vault (which holds the signing key).
fn audit_options(data_dir: &Path, unlock: &vault::UnlockArgs) -> anyhow::Result<AuditOptions> {
    Ok(AuditOptions {
        vault: unlock.open(data_dir)?,
        ..AuditOptions::default()
    })
}

async fn serve(
    data_dir: &Path,
    listen: Option<SocketAddr>,
    unlock: &vault::UnlockArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<u8> {
    if setup::needs_init(data_dir) {
        let configured = listen.unwrap_or_else(|| {
            DEFAULT_LISTEN
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8700)))
        });
        let o = setup::init(data_dir, configured).await?;
        print_init(&o, false, out)?;
    }
    // Handlers first: a SIGTERM that arrives as soon as we say we are
    // listening must shut down cleanly, not kill the process.
    let stop = shutdown_signal()?;
    let app = App::open(
        data_dir,
        AppOptions {
            vault: unlock.open(data_dir)?,
            ..AppOptions::default()
        },
    )
    .await?;
    for w in &app.exposure {
        eprintln!("warning: {w}");
    }
    let addr = listen.unwrap_or(app.config.server.listen);
    let server = app.serve(addr).await?;
    writeln!(
        out,
        "listening on {}://{}",
        if server.https { "https" } else { "http" },
        server.addr
    )?;
    out.flush()?;
    tracing::info!(addr = %server.addr, "serving");
    stop.await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(0)
}

/// Registers SIGINT and SIGTERM now; the returned future resolves on the
/// first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

fn filter(f: FilterArgs) -> anyhow::Result<Filter> {
    Ok(Filter {
        since_ns: f.since.as_deref().map(|t| parse_time(t, "--since")).transpose()?,
        until_ns: f.until.as_deref().map(|t| parse_time(t, "--until")).transpose()?,
        actor_kind: f.actor_kind,
        actor_id: f.actor,
        action: f.action,
        outcome: f.outcome,
        correlation_id: f.correlation_id,
        request_id: f.request_id,
        text: f.text,
        after_seq: None,
        through_seq: None,
        limit: f.limit,
    })
}

async fn audit(command: AuditCommand, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    match command {
        AuditCommand::Search(args) => search(*args, out),
        AuditCommand::Verify(args) => Ok(verify(args, out)),
        AuditCommand::Witness { data_dir, to } => witness(&data_dir, &to, out),
        AuditCommand::Export(args) => export(*args, out),
        AuditCommand::Prune {
            data_dir,
            before,
            archive,
            policy,
            unlock,
        } => {
            let before_ns = parse_time(&before, "--before")?;
            let archive = match archive {
                Some(a) => a,
                None => {
                    let dir = data_dir.join("archive");
                    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                    dir.join(format!(
                        "audit-{}.jsonl",
                        jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
                    ))
                }
            };
            let log = AuditLog::open(&data_dir.join(AUDIT_DB), audit_options(&data_dir, &unlock)?)?;
            let actor = std::env::var("USER").unwrap_or_else(|_| "cli".into());
            let result = log
                .prune(PruneRequest {
                    before_ns,
                    archive,
                    policy,
                    actor_kind: crate::audit::ActorKind::User,
                    actor,
                })
                .await;
            // No server waits for the writer here: delete the rows now
            // rather than in a running host's idle time.
            let removed = match &result {
                Ok(_) => log.remove_pruned().await.map(Some),
                Err(_) => Ok(None),
            };
            log.close();
            let r = result?;
            writeln!(
                out,
                "pruned seq {}–{} at checkpoint #{}; archive {} (sha256 {})",
                r.pruned_from,
                r.pruned_through,
                r.checkpoint_id,
                r.archive.display(),
                r.archive_sha256
            )?;
            match removed {
                Ok(Some(n)) => writeln!(out, "removed {n} rows from {}", data_dir.join(AUDIT_DB).display())?,
                Ok(None) => {}
                Err(e) => writeln!(
                    out,
                    "the rows are pruned (no search, export or verify sees them) but not yet deleted from the file: {e}; the next start of the host deletes them"
                )?,
            }
            Ok(0)
        }
        AuditCommand::RotateKey { data_dir, unlock } => {
            let log = AuditLog::open(&data_dir.join(AUDIT_DB), audit_options(&data_dir, &unlock)?)?;
            let result = log.rotate_key().await;
            log.close();
            writeln!(out, "new audit signing key {}, endorsed by the previous key", result?)?;
            Ok(0)
        }
    }
}

/// How long `kill-switch` waits for the state database (see its use).
const KILL_SWITCH_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

async fn kill_switch(
    data_dir: &Path,
    to: &str,
    reason: &str,
    unlock: &vault::UnlockArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<u8> {
    use crate::trading::risk::KillSwitch;
    let state_path = data_dir.join(crate::store::STATE_DB);
    if !data_dir.join(crate::config::CONFIG_FILE).exists() {
        anyhow::bail!(
            "{} is not an algobanana data dir (no {}); pass --data-dir",
            data_dir.display(),
            crate::config::CONFIG_FILE
        );
    }
    // The emergency stop waits out a running host's write batches rather
    // than failing after the usual 5 s: SQLite's busy handler retries, it
    // does not queue, so a host writing without pause could starve it.
    let state = crate::store::StateDb::open_waiting(&state_path, KILL_SWITCH_WAIT)?;
    if to == "status" {
        match state.control(crate::trading::KILL_SWITCH)? {
            None => writeln!(out, "kill switch: off (never set)")?,
            Some((v, actor, at)) => writeln!(
                out,
                "kill switch: {v} (set by {actor} at {})",
                crate::audit::format_ts(at)
            )?,
        }
        return Ok(0);
    }
    let target = KillSwitch::parse(to).ok_or_else(|| anyhow::anyhow!("`{to}`: expected on, off or reduce-only"))?;
    let actor = std::env::var("USER").map_or_else(|_| "cli".to_owned(), |u| format!("cli:{u}"));
    // A vault that does not open still lets the switch be thrown (the
    // server records it); throwing it must never depend on a passphrase.
    let options = audit_options(data_dir, unlock).unwrap_or_default();
    match AuditLog::open(&data_dir.join(AUDIT_DB), options) {
        Ok(log) => {
            let result = crate::trading::kill::set(
                &state,
                &log,
                target,
                crate::audit::ActorKind::User,
                &actor,
                &crate::audit::Context::default(),
                reason,
            )
            .await;
            log.close();
            let from = result?;
            writeln!(out, "kill switch: {} → {} (audited)", from.as_str(), target.as_str())?;
        }
        Err(_) => {
            // The server holds the audit log: the switch still takes effect
            // now, and the server records it before its next order decision.
            let from = crate::trading::kill::request(&state, target, &actor, reason)?;
            writeln!(
                out,
                "kill switch: {} → {} (in effect now; the running server records it in the audit log before its next order)",
                from.as_str(),
                target.as_str()
            )?;
        }
    }
    Ok(0)
}

fn verify(args: VerifyArgs, out: &mut (dyn Write + Send)) -> u8 {
    let options = VerifyOptions {
        pinned_key: args.key,
        ..VerifyOptions::default()
    };
    let witness = match args.witness.as_deref().map(verify::read_witness).transpose() {
        Ok(w) => w.unwrap_or_default(),
        Err(e) => {
            let _ = writeln!(out, "could not verify: {e}");
            return 2;
        }
    };
    let report = match &args.export {
        Some(file) => verify::verify_export(file, &witness, &options),
        None => verify::verify_db(&args.data_dir.join(AUDIT_DB), &witness, &options),
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            if args.json {
                let _ = writeln!(out, "{}", serde_json::json!({ "result": "error", "error": e }));
            } else {
                let _ = writeln!(out, "could not verify: {e}");
            }
            return 2;
        }
    };
    if args.json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        v["result"] = serde_json::json!(if report.intact() { "intact" } else { "tampered" });
        let _ = writeln!(out, "{v}");
    } else {
        let _ = print_report(&report, out);
    }
    if report.intact() { 0 } else { 1 }
}

fn print_report(r: &verify::Report, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    writeln!(out, "Audit log algobanana/{}/audit", r.install_id)?;
    match r.range {
        Some((a, b)) => writeln!(out, "Range: seq {a}–{b}; pruned through {}", r.prune_through)?,
        None => writeln!(out, "Range: no events; pruned through {}", r.prune_through)?,
    }
    writeln!(out, "Events: {}/{} hashes valid", r.events_valid, r.events)?;
    writeln!(
        out,
        "Checkpoints: {}/{} signatures valid (pinned key {}{})",
        r.checkpoints_valid,
        r.checkpoints,
        r.pinned_key.as_deref().unwrap_or("none"),
        if r.endorsed_keys.is_empty() {
            String::new()
        } else {
            format!("; endorsed {}", r.endorsed_keys.join(", "))
        }
    )?;
    writeln!(
        out,
        "Heartbeats: largest gap while running {}s",
        r.largest_running_gap_s
    )?;
    writeln!(
        out,
        "Unsigned tail: {} events after the last checkpoint",
        r.unsigned_tail
    )?;
    if r.witness_notes > 0 {
        writeln!(out, "Witness: {} notes checked", r.witness_notes)?;
    }
    if let Some(s) = &r.sqlite {
        writeln!(out, "SQLite: integrity_check {s}")?;
    }
    for f in &r.findings {
        writeln!(out, "{}: {}", f.class, f.message)?;
    }
    if let Some(seq) = r.first_bad_seq {
        writeln!(out, "First bad sequence number: {seq}")?;
    }
    writeln!(
        out,
        "RESULT: {}",
        if r.intact() {
            "INTACT"
        } else {
            "TAMPERED OR INCONSISTENT"
        }
    )
}

fn witness(data_dir: &Path, to: &Path, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    let conn = query::open_read_only(&data_dir.join(AUDIT_DB))?;
    let material = verify::material_from_db(&conn)?;
    let existing = if to.exists() {
        verify::read_witness(to).map_err(anyhow::Error::msg)?
    } else {
        Vec::new()
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(to)
        .with_context(|| format!("cannot open {}", to.display()))?;
    let mut added = 0;
    for cp in &material.checkpoints {
        if !existing.contains(&cp.note) {
            file.write_all(cp.note.as_bytes())?;
            added += 1;
        }
    }
    file.sync_all()?;
    writeln!(
        out,
        "appended {added} checkpoint note(s) to {} ({} already there)",
        to.display(),
        existing.len()
    )?;
    Ok(0)
}

fn export(args: ExportArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    let format = match args.format.as_str() {
        "jsonl" => ExportFormat::Jsonl,
        "csv" => ExportFormat::Csv,
        other => anyhow::bail!("--format `{other}` is not supported; expected jsonl or csv"),
    };
    let f = filter(args.filter)?;
    let conn = query::open_read_only(&args.data_dir.join(AUDIT_DB))?;
    let summary = match &args.out {
        Some(path) => {
            let mut file = std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            );
            let s = export::export(&conn, &f, format, &mut file)?;
            file.flush()?;
            s
        }
        None => export::export(&conn, &f, format, out)?,
    };
    if args.out.is_some() {
        writeln!(
            out,
            "exported {} events and {} checkpoints",
            summary.events, summary.checkpoints
        )?;
    }
    Ok(0)
}

fn search(args: SearchArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    let filter = filter(args.filter)?;
    let records = query::search(&args.data_dir.join(crate::audit::AUDIT_DB), &filter)?;
    if args.json {
        for r in &records {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
    } else {
        writeln!(
            out,
            "{:>6}  {:<30}  {:<22}  {:<18}  {:<8}  RESOURCE",
            "SEQ", "TIME", "ACTOR", "ACTION", "OUTCOME"
        )?;
        for r in &records {
            writeln!(
                out,
                "{:>6}  {:<30}  {:<22}  {:<18}  {:<8}  {}",
                r.seq,
                r.ts,
                format!("{}:{}", r.actor_kind, r.actor_id),
                r.action,
                r.outcome,
                r.resource.as_deref().unwrap_or("-")
            )?;
        }
    }
    out.flush()?;
    Ok(0)
}
