//! The command line: `init`, `serve` and `audit search`. `main.rs` only
//! parses arguments and calls [`run`], so tests drive the same code.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::app::{App, AppOptions};
use crate::audit::query::{self, Filter};
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
    },
    /// Read the audit log.
    Audit {
        /// The audit subcommand.
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Search events (oldest first).
    Search(Box<SearchArgs>),
}

/// Filters for `audit search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The data dir.
    #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
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
        Command::Serve { data_dir, listen } => serve(&data_dir, listen, out).await,
        Command::Audit {
            command: AuditCommand::Search(args),
        } => search(*args, out),
    }
}

fn print_init(o: &setup::InitOutput, json: bool, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "hook_path": o.hook_path, "hook_token": o.hook_token, "route": o.route, "data_dir": o.data_dir })
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
    }
    out.flush()?;
    Ok(())
}

async fn serve(data_dir: &Path, listen: Option<SocketAddr>, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    if setup::needs_init(data_dir) {
        let configured = listen.unwrap_or_else(|| {
            DEFAULT_LISTEN
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8700)))
        });
        let o = setup::init(data_dir, configured).await?;
        print_init(&o, false, out)?;
    }
    let app = App::open(data_dir, AppOptions::default()).await?;
    let addr = listen.unwrap_or(app.config.server.listen);
    let server = app.serve(addr).await?;
    writeln!(out, "listening on http://{}", server.addr)?;
    out.flush()?;
    tracing::info!(addr = %server.addr, "serving");
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(0)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn search(args: SearchArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    let filter = Filter {
        since_ns: args.since.as_deref().map(|t| parse_time(t, "--since")).transpose()?,
        until_ns: args.until.as_deref().map(|t| parse_time(t, "--until")).transpose()?,
        actor_kind: args.actor_kind,
        actor_id: args.actor,
        action: args.action,
        outcome: args.outcome,
        correlation_id: args.correlation_id,
        request_id: args.request_id,
        text: args.text,
        after_seq: None,
        limit: args.limit,
    };
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
