//! The running host: configuration, audit log, state, plugins and the HTTP
//! server, opened from a data dir.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::audit::writer::AuditOptions;
use crate::audit::{ActorKind, AuditError, AuditEvent, AuditLog, Outcome, action};
use crate::config::{self, Config, ConfigError, RouteConfig};
use crate::domain::ids::RouteName;
use crate::plugins::{PluginError, Registry};
use crate::store::{STATE_DB, StateDb, StoreError};

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The audit log could not be opened or written.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The state database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A plugin could not be loaded.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The vault could not be opened, or lacks a secret the config names.
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
    /// `state.db` could not be compared with the audit log, or restored
    /// from it: the host does not start, since resuming alerts without the
    /// orders they sent could send those twice.
    #[error(
        "cannot bring state.db level with the audit log: {0}; fix that and start again (no alert was resumed and no order sent)"
    )]
    Recovery(#[from] crate::recovery::RecoveryError),
    /// HTTPS is required and not configured, or its files are wrong.
    #[error("{0}")]
    Tls(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}; pick a free port with --listen 127.0.0.1:PORT")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Per-hook sliding rate windows and the webhook signatures seen within
/// their window (replay protection). In memory: a restart forgets them, and
/// the signature window (300 s) bounds what a replay after a restart could
/// do; the dedupe window refuses the same alert again anyway.
#[derive(Debug, Default)]
pub struct HookLimits {
    windows: std::sync::Mutex<HashMap<String, std::collections::VecDeque<std::time::Instant>>>,
    seen: std::sync::Mutex<HashMap<Vec<u8>, i64>>,
}

impl HookLimits {
    /// Counts one alert on `route`; false when the last minute already had
    /// `per_minute`.
    pub fn allow(&self, route: &str, per_minute: u32) -> bool {
        let now = std::time::Instant::now();
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let q = w.entry(route.to_owned()).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= std::time::Duration::from_secs(60))
        {
            q.pop_front();
        }
        if q.len() >= per_minute as usize {
            return false;
        }
        q.push_back(now);
        true
    }

    /// Records a signature until `expires_s`; false if it was seen before.
    pub fn first_use(&self, signature: &[u8], expires_s: i64) -> bool {
        let now_s = crate::audit::now_ns() / 1_000_000_000;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, exp| *exp >= now_s);
        seen.insert(signature.to_vec(), expires_s).is_none()
    }
}

/// What one run of [`App::apply_retention`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// The audit prune, when there was a signed checkpoint to cut at.
    pub audit: Option<crate::audit::prune::PruneReport>,
    /// Finished alerts removed from `state.db`.
    pub alerts_removed: usize,
}

/// Options that tests and tools set; production uses the defaults.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// Audit log options (e.g. a page cap that simulates a full disk).
    pub audit: AuditOptions,
    /// The resolver for plugins' outbound HTTP (tests map names to local
    /// addresses); the system resolver when `None`.
    pub resolver: Option<std::sync::Arc<dyn crate::capabilities::http::Resolver>>,
    /// The unlocked vault. When `None` and `DATA_DIR/vault.abv` exists, it
    /// is opened with the key file `DATA_DIR/keys/vault.key` if present;
    /// otherwise start is refused as locked.
    pub vault: Option<std::sync::Arc<crate::vault::Vault>>,
    /// The window of `[[notifications]] max_per_minute` (`None`: a minute;
    /// tests shorten it).
    pub notify_window: Option<std::time::Duration>,
}

/// Everything a request needs.
#[derive(Debug)]
pub struct App {
    /// The validated config.
    pub config: Config,
    /// The data dir.
    pub data_dir: PathBuf,
    /// The audit log.
    pub audit: AuditLog,
    /// Operational state.
    pub state: StateDb,
    /// Loaded plugins.
    pub registry: Registry,
    /// Orders and their states.
    pub orders: crate::trading::orders::Orders,
    /// Admin API tokens.
    pub tokens: crate::admin::tokens::Tokens,
    /// Per-hook rate windows and seen webhook signatures.
    pub hook_limits: HookLimits,
    /// The short global section of the order path (dedupe, counts,
    /// decision, insert) and of limit changes; see [`crate::trading::locks`].
    pub order_lock: tokio::sync::Mutex<()>,
    /// The intake queue's bound: one permit per alert accepted and not yet
    /// finished (`server.max_pending_alerts`).
    pub intake: Arc<tokio::sync::Semaphore>,
    /// One lock per broker account, taken before `order_lock`.
    pub account_locks: crate::trading::locks::AccountLocks,
    /// Hook tokens (with rotation) and paused routes.
    pub routes: crate::admin::routes::RouteControl,
    /// Admin users.
    pub users: crate::admin::users::Users,
    /// The risk limits in force: the config's, with admin API changes.
    risk: std::sync::RwLock<crate::trading::risk::RiskLimits>,
    /// The unlocked vault, when there is one.
    pub vault: Option<std::sync::Arc<crate::vault::Vault>>,
    /// Refusals of unproven requests, throttled before the audit log
    /// ([`crate::audit::throttle`]).
    pub refusals: crate::audit::throttle::Refusals,
    /// Notifications waiting to be tried again ([`crate::trading::notify`]).
    pub notify_waiting: std::sync::atomic::AtomicUsize,
    /// Each `[[notifications]]` entry's rate window
    /// ([`crate::trading::notify`]).
    pub notify_windows: std::sync::Mutex<std::collections::HashMap<usize, crate::trading::notify::Window>>,
    /// How long a rate window is: a minute.
    pub notify_window: std::time::Duration,
    /// Set when the server stops: background work that waits (a
    /// notification's next attempt) ends its wait and leaves the rest to
    /// the next start.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// What other users of the machine can read of the data dir, found at
    /// open ([`crate::setup::exposure`]): printed by `serve`, recorded in
    /// `system.start`.
    pub exposure: Vec<String>,
}

impl App {
    /// Why the host refuses new alerts, if it does: the audit log or the
    /// state database could not be written. Cleared only by a restart.
    pub fn halted(&self) -> Option<String> {
        self.audit.halted().or_else(|| self.state.halted())
    }

    /// Opens the data dir: config, audit log, state and every plugin.
    ///
    /// # Errors
    /// [`StartError`] naming what failed and what to do.
    pub async fn open(data_dir: &Path, options: AppOptions) -> Result<Arc<Self>, StartError> {
        let config = config::load(&data_dir.join(config::CONFIG_FILE))?;
        let max_pending_alerts = config.server.max_pending_alerts;
        let vault = open_vault(data_dir, options.vault.clone(), &config)?;
        let mut audit_options = options.audit.clone();
        if audit_options.vault.is_none() {
            audit_options.vault.clone_from(&vault);
        }
        let audit = AuditLog::open(&data_dir.join(crate::audit::AUDIT_DB), audit_options)?;
        let state = StateDb::open(&data_dir.join(STATE_DB))?;
        let mut registry = match Registry::load_with(
            &config,
            state.clone(),
            &data_dir.join("cache"),
            options.resolver.clone(),
        ) {
            Ok(r) => r,
            Err(e) => {
                // A refused plugin is audited too, then the host exits with
                // the same message.
                let event = AuditEvent::new(ActorKind::System, "host", action::PLUGIN_LOAD, Outcome::Error)
                    .payload(json!({ "error": e.to_string() }));
                let _ = audit.record(event).await;
                audit.close();
                return Err(e.into());
            }
        };
        registry.load_disabled()?;
        registry.secrets = std::sync::Arc::new(
            crate::capabilities::secrets::ConfigSecrets::new(config.secrets.clone()).with_vault(vault.clone()),
        );
        let routes = crate::admin::routes::RouteControl::load(state.clone(), &config)?;
        let risk = std::sync::RwLock::new(crate::admin::limits::effective(&state, &config.risk)?);
        let users = crate::admin::users::Users::new(state.clone());
        let exposure = crate::setup::exposure(data_dir, &config);
        Ok(Arc::new(Self {
            refusals: crate::audit::throttle::Refusals::default(),
            notify_waiting: std::sync::atomic::AtomicUsize::new(0),
            stopping: tokio::sync::watch::Sender::new(false),
            notify_windows: std::sync::Mutex::default(),
            notify_window: options.notify_window.unwrap_or(std::time::Duration::from_secs(60)),
            exposure,
            config,
            data_dir: data_dir.to_owned(),
            audit,
            orders: crate::trading::orders::Orders::new(state.clone()),
            tokens: crate::admin::tokens::Tokens::new(state.clone()),
            hook_limits: HookLimits::default(),
            order_lock: tokio::sync::Mutex::new(()),
            account_locks: crate::trading::locks::AccountLocks::default(),
            intake: Arc::new(tokio::sync::Semaphore::new(max_pending_alerts)),
            state,
            registry,
            routes,
            users,
            risk,
            vault,
        }))
    }

    /// Records a refusal of a request that proved nothing (see
    /// [`crate::audit::throttle`]): as its own event, or counted into a
    /// summary; a window's summaries are recorded when it ends.
    ///
    /// # Errors
    /// [`AuditError`].
    pub async fn record_refusal(&self, event: AuditEvent, status: u16, reason: &str) -> Result<(), AuditError> {
        for e in self.refusals.admit(event, status, reason).events() {
            self.audit.record(e).await?;
        }
        Ok(())
    }

    /// Records the summaries of the refusals counted so far (the window
    /// ends now). Called every window by the server and at shutdown.
    ///
    /// # Errors
    /// [`AuditError`].
    pub async fn flush_refusals(&self) -> Result<(), AuditError> {
        for e in self.refusals.flush() {
            self.audit.record(e).await?;
        }
        Ok(())
    }

    /// Whether any order is working (read beside the alerts' connection).
    async fn has_working_orders(&self) -> bool {
        let orders = self.orders.clone();
        let one = crate::trading::orders::OrderQuery {
            state: Some(crate::trading::orders::StateFilter::Working),
            limit: Some(1),
            ..Default::default()
        };
        match tokio::task::spawn_blocking(move || orders.list_aside(&one)).await {
            Ok(Ok(w)) => !w.is_empty(),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the working orders; the first reconciliation comes one interval after start");
                false
            }
            Err(_) => false,
        }
    }

    /// One reconciliation sweep, its outcome logged (each step is audited).
    async fn reconcile_sweep(self: &Arc<Self>) {
        match crate::trading::reconcile::sweep(self).await {
            Ok(s) if !s.unknown_at_broker.is_empty() || !s.unreachable.is_empty() => {
                tracing::warn!(sweep = ?s, "reconciliation found drift");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "reconciliation failed"),
        }
    }

    /// Applies `[audit] retention_days` as of `now_ns`: archives and
    /// removes the events older than the policy, up to the last signed
    /// checkpoint before the cut (`audit::prune`), into
    /// `archive_dir/audit-<time>.jsonl`; then removes the finished alerts
    /// received before the cut from `state.db` (their bodies are in the
    /// `alert.received` events, and a policy that removed them there only
    /// would keep them here). Nothing when the policy is off. The server
    /// runs it a minute after start and then once a day.
    ///
    /// # Errors
    /// [`AuditError`]: the archive could not be written (nothing was
    /// removed), or the log failed; or `state.db` failed while removing
    /// alerts (those removed stay removed, the rest wait for the next run).
    pub async fn apply_retention(&self, now_ns: i64) -> Result<Retention, AuditError> {
        let Some(days) = self.config.audit.retention_days else {
            return Ok(Retention::default());
        };
        let before_ns = now_ns.saturating_sub(i64::from(days).saturating_mul(86_400_000_000_000));
        let dir = self.data_dir.join(&self.config.audit.archive_dir);
        crate::setup::create_private_dir(&dir).map_err(|e| {
            AuditError::Refused(format!(
                "cannot create the audit archive directory {}: {e}; nothing was pruned (fix the directory or audit.archive_dir)",
                dir.display()
            ))
        })?;
        let stamp = jiff::Timestamp::from_nanosecond(i128::from(now_ns))
            .map_or_else(|_| now_ns.to_string(), |t| t.strftime("%Y%m%dT%H%M%S%.fZ").to_string());
        let request = crate::audit::prune::PruneRequest {
            before_ns,
            archive: dir.join(format!("audit-{stamp}.jsonl")),
            policy: format!("retention_days = {days}"),
            actor_kind: ActorKind::System,
            actor: "retention".into(),
        };
        let audit = match self.audit.prune(request).await {
            Ok(r) => Some(r),
            Err(AuditError::Refused(m)) if m == crate::audit::prune::NOTHING_TO_PRUNE => None,
            Err(e) => return Err(e),
        };
        // In small durable transactions, each a short hold on the
        // connection that alerts use.
        const CHUNK: u32 = 256;
        let mut alerts_removed = 0;
        loop {
            let state = self.state.clone();
            let n = tokio::task::spawn_blocking(move || state.prune_alerts(before_ns, CHUNK))
                .await
                .map_err(|e| AuditError::Refused(format!("removing old alerts stopped: {e}")))?
                .map_err(|e| AuditError::Refused(format!("cannot remove old alerts from state.db: {e}")))?;
            alerts_removed += n;
            if n < CHUNK as usize {
                break;
            }
        }
        if alerts_removed > 0 {
            self.audit
                .record(
                    AuditEvent::new(ActorKind::System, "retention", action::ALERTS_PRUNED, Outcome::Success)
                        .resource("state:alerts")
                        .payload(json!({
                            "received_before_ns": before_ns, "removed": alerts_removed,
                            "policy": format!("retention_days = {days}"),
                        })),
                )
                .await?;
        }
        Ok(Retention { audit, alerts_removed })
    }

    /// The kill switch (persisted in `state.db`).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn kill_switch(&self) -> Result<crate::trading::risk::KillSwitch, StoreError> {
        Ok(self
            .state
            .control(crate::trading::KILL_SWITCH)?
            .and_then(|(v, _, _)| crate::trading::risk::KillSwitch::parse(&v))
            .unwrap_or(crate::trading::risk::KillSwitch::Off))
    }

    /// The route whose hook token is `token`. The lookup is by SHA-256 of the
    /// token, so the comparison never touches the secret itself.
    pub fn route_for_token(&self, token: &str) -> Option<(&RouteName, &RouteConfig)> {
        let name = self.routes.lookup(token)?;
        self.config.routes.get_key_value(&name)
    }

    /// The risk limits in force now.
    pub fn risk_limits(&self) -> crate::trading::risk::RiskLimits {
        self.risk
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the limits in force (after an admin API change was stored).
    pub fn set_risk_limits(&self, limits: crate::trading::risk::RiskLimits) {
        *self.risk.write().unwrap_or_else(std::sync::PoisonError::into_inner) = limits;
    }

    /// Records `system.start` with every loaded plugin's digest.
    ///
    /// # Errors
    /// [`AuditError`].
    pub async fn record_start(&self, listen: SocketAddr) -> Result<(), AuditError> {
        let plugins: Vec<_> = self
            .config
            .plugins
            .keys()
            .filter_map(|n| self.registry.get(n))
            .map(|p| {
                json!({
                    "name": p.name, "version": p.version, "digest": p.digest, "world": p.world.as_str(),
                    "uses_kv": p.uses_kv, "manifest": p.manifest, "grant_carried_from": p.grant_carried_from,
                    "grant": {
                        "kv": p.grant.kv, "http": p.grant.http.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "secrets": p.grant.secrets, "allow_loopback": p.grant.allow_loopback,
                        "allow_private": p.grant.allow_private,
                    },
                })
            })
            .collect();
        self.audit
            .record(
                AuditEvent::new(ActorKind::System, "host", action::SYSTEM_START, Outcome::Success).payload(json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "pid": std::process::id(),
                    "listen": listen.to_string(),
                    "install_id": self.audit.install_id(),
                    "plugins": plugins,
                    "routes": self.config.routes.keys().collect::<Vec<_>>(),
                    "exposure": self.exposure,
                })),
            )
            .await
            .map(drop)
    }

    /// Binds `listen` and serves until [`RunningServer::shutdown`].
    ///
    /// # Errors
    /// [`StartError`] when the address cannot be bound or the start cannot
    /// be audited.
    pub async fn serve(self: &Arc<Self>, listen: SocketAddr) -> Result<RunningServer, StartError> {
        let tls = match &self.config.server.tls {
            Some(files) => Some(crate::http::tls::server_config(files).map_err(StartError::Tls)?),
            None if self.config.server.mode == crate::config::Mode::Cloud && !listen.ip().is_loopback() => {
                return Err(StartError::Tls(format!(
                    "Cloud mode needs HTTPS on {listen}, which is not loopback: set server.tls_cert and server.tls_key, or listen on 127.0.0.1 behind a TLS proxy (listed in server.trusted_proxies, so the audit names each client)"
                )));
            }
            None => {
                if !listen.ip().is_loopback() {
                    tracing::warn!(%listen, "serving plain HTTP on a non-loopback address: hook tokens cross the network in clear; put a TLS proxy in front or set server.tls_cert/tls_key");
                }
                None
            }
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Bind { addr: listen, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr: listen, source })?;
        self.record_start(addr).await?;
        crate::recovery::run(self).await?;
        // Before the first new alert: rows that state.db lost and the audit
        // log holds are restored (see `crate::recovery`, above), orders
        // whose outcome the host never heard are looked up by client order
        // id (never resent), then alerts accepted but unfinished run again.
        // Notifications the last run queued and did not deliver; before
        // alerts resume, whose own are queued and sent as they finish.
        match crate::trading::notify::resume(self).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(notifications = n, "sending notifications queued before the last stop"),
            Err(e) => tracing::error!(error = %e, "cannot read the queued notifications; they wait for the next start"),
        }
        match crate::pipeline::reconcile_unresolved(self).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(orders = n, "reconciled orders left without a known outcome"),
            Err(e) => tracing::error!(error = %e, "reconciliation at start failed; the orders stay unknown"),
        }
        match crate::pipeline::resume_unfinished(self).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(alerts = n, "resumed unfinished alerts"),
            Err(e) => tracing::error!(error = %e, "resuming unfinished alerts failed"),
        }
        let reconciler = {
            let app = self.clone();
            let every = self.config.trading.reconcile_interval;
            tokio::spawn(async move {
                // At start, when orders were working at the last stop: their
                // fills while the host was down are seen now, not one
                // interval later (and with `reconcile_interval_s = 0`, not
                // never). Beside the first alerts, like every sweep.
                if app.has_working_orders().await {
                    app.reconcile_sweep().await;
                }
                let Some(every) = every else { return };
                let mut ticker = tokio::time::interval(every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    app.reconcile_sweep().await;
                }
            })
        };
        // Orders left `unknown` (a broker that did not list an order sent
        // moments ago) are asked about again once their grace has passed.
        let unknown_resolver = {
            let app = self.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(crate::trading::reconcile::UNKNOWN_EVERY);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut asked = std::collections::HashMap::new();
                loop {
                    ticker.tick().await;
                    if let Err(e) = crate::trading::reconcile::resolve_unknown(&app, &mut asked).await {
                        tracing::error!(error = %e, "asking about unknown orders failed; asked again shortly");
                    }
                }
            })
        };
        // Summaries of throttled refusals, written soon after their window
        // ends even when no further refusal comes to roll it over.
        let refusal_flusher = {
            let app = self.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(std::time::Duration::from_secs(10));
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    for e in app.refusals.due() {
                        if let Err(e) = app.audit.record(e).await {
                            tracing::error!(error = %e, "cannot audit a summary of refusals");
                        }
                    }
                }
            })
        };
        // A halt (a full disk, a read-only data dir) is told to the
        // operator once, as an `error` notification: `/healthz` says it
        // too, but nobody watches that at 3 a.m. Sent only if the call can
        // be audited, so a halted audit log stays silent (its halt is in
        // the log and on stderr).
        let halt_watch = (!self.config.notifications.is_empty()).then(|| {
            let app = self.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    if let Some(reason) = app.halted() {
                        crate::trading::notify::halted(&app, &reason);
                        return;
                    }
                }
            })
        });
        // `[audit] retention_days`: a minute after start, then daily.
        let retention = self.config.audit.retention_days.map(|_| {
            let app = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                let mut ticker = tokio::time::interval(std::time::Duration::from_secs(86_400));
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    match app.apply_retention(crate::audit::now_ns()).await {
                        Ok(run) => {
                            if let Some(r) = run.audit {
                                tracing::info!(
                                    from = r.pruned_from, through = r.pruned_through, archive = %r.archive.display(),
                                    "audit retention: archived and removed old events"
                                );
                            }
                            if run.alerts_removed > 0 {
                                tracing::info!(alerts = run.alerts_removed, "retention: removed old alerts from state.db");
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "retention failed; what it had not removed waits for the next run");
                            let _ = app
                                .audit
                                .record(
                                    AuditEvent::new(
                                        ActorKind::System,
                                        "retention",
                                        action::AUDIT_PRUNED,
                                        Outcome::Error,
                                    )
                                    .resource("audit")
                                    .payload(json!({ "error": e.to_string() })),
                                )
                                .await;
                        }
                    }
                }
            })
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = crate::http::router(self.clone());
        let app = self.clone();
        let stop = async move {
            let _ = rx.await;
        };
        let make = router.into_make_service_with_connect_info::<SocketAddr>();
        let https = tls.is_some();
        let served: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>> = match tls {
            None => Box::pin(axum::serve(listener, make).with_graceful_shutdown(stop).into_future()),
            Some(config) => {
                use axum::serve::ListenerExt as _;
                let tls_listener = crate::http::tls::TlsListener::new(listener, config)
                    .map_err(|source| StartError::Bind { addr: listen, source })?
                    .tap_io(|_| {});
                Box::pin(
                    axum::serve(tls_listener, make)
                        .with_graceful_shutdown(stop)
                        .into_future(),
                )
            }
        };
        let task = tokio::spawn(async move {
            let served = served.await;
            if let Err(e) = served {
                tracing::error!(error = %e, "server stopped with an error");
            }
            app.stopping.send_replace(true);
            reconciler.abort();
            refusal_flusher.abort();
            unknown_resolver.abort();
            if let Some(w) = halt_watch {
                w.abort();
            }
            if let Some(r) = retention {
                r.abort();
            }
            if let Err(e) = app.flush_refusals().await {
                tracing::error!(error = %e, "cannot audit the last summary of refusals");
            }
            let _ = app
                .audit
                .record(
                    AuditEvent::new(ActorKind::System, "host", action::SYSTEM_STOP, Outcome::Success)
                        .payload(json!({ "pid": std::process::id() })),
                )
                .await;
            app.audit.close();
            // What background work wrote since the last alert finished.
            if let Err(e) = app.state.commit() {
                tracing::error!(error = %e, "state database: the last writes could not be committed");
            }
        });
        Ok(RunningServer {
            addr,
            https,
            shutdown: Some(tx),
            task,
        })
    }
}

/// A server started by [`App::serve`].
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// Whether it serves HTTPS.
    pub https: bool,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, finishes in-flight requests, records `system.stop`
    /// and closes the audit log.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Waits until the server stops.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Opens the vault for a start: the one given, or `vault.abv` with the
/// default key file; then checks that every `vault = true` secret is set.
fn open_vault(
    data_dir: &Path,
    given: Option<std::sync::Arc<crate::vault::Vault>>,
    config: &Config,
) -> Result<Option<std::sync::Arc<crate::vault::Vault>>, crate::vault::VaultError> {
    use crate::vault::{DEFAULT_KEY_FILE, Unlock, Vault, VaultError};
    let path = Vault::path_in(data_dir);
    let vault = match given {
        Some(v) => Some(v),
        None if path.exists() => {
            let key = data_dir.join(DEFAULT_KEY_FILE);
            let unlock = if key.exists() {
                Unlock::none().with_key_file(key)
            } else {
                Unlock::none()
            };
            Some(std::sync::Arc::new(Vault::open(&path, &unlock)?))
        }
        None => None,
    };
    let wanted: Vec<&String> = config
        .secrets
        .iter()
        .filter(|(_, (src, _))| matches!(src, crate::config::SecretSource::Vault))
        .map(|(n, _)| n)
        .collect();
    for name in wanted {
        let present = match &vault {
            None => false,
            Some(v) => v.contains(name)?,
        };
        if !present {
            return Err(VaultError::Invalid(format!(
                "secrets.{name} says `vault = true`, but {}; set it with `algobanana secret set {name} --data-dir {}` (the value is read from standard input)",
                if vault.is_some() {
                    "the vault has no such secret"
                } else {
                    "there is no vault (create one with `algobanana vault init`)"
                },
                data_dir.display()
            )));
        }
    }
    Ok(vault)
}
