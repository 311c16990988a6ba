//! The running host: configuration, audit log, state, plugins and the HTTP
//! server, opened from a data dir.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};

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

/// Options that tests and tools set; production uses the defaults.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// Audit log options (e.g. a page cap that simulates a full disk).
    pub audit: AuditOptions,
    /// The resolver for plugins' outbound HTTP (tests map names to local
    /// addresses); the system resolver when `None`.
    pub resolver: Option<std::sync::Arc<dyn crate::capabilities::http::Resolver>>,
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
    /// Serialises the order path (risk snapshot, record, broker call, state)
    /// so concurrent alerts cannot together exceed a rail.
    pub order_lock: tokio::sync::Mutex<()>,
    routes_by_token: HashMap<[u8; 32], RouteName>,
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
        let audit = AuditLog::open(&data_dir.join(crate::audit::AUDIT_DB), options.audit)?;
        let state = StateDb::open(&data_dir.join(STATE_DB))?;
        let registry = match Registry::load_with(
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
        let routes_by_token = config
            .routes
            .iter()
            .map(|(name, r)| (r.hook_token_sha256, name.clone()))
            .collect();
        Ok(Arc::new(Self {
            config,
            data_dir: data_dir.to_owned(),
            audit,
            orders: crate::trading::orders::Orders::new(state.clone()),
            tokens: crate::admin::tokens::Tokens::new(state.clone()),
            hook_limits: HookLimits::default(),
            order_lock: tokio::sync::Mutex::new(()),
            state,
            registry,
            routes_by_token,
        }))
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
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let name = self.routes_by_token.get(&hash)?;
        self.config.routes.get(name).map(|r| (name, r))
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
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Bind { addr: listen, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr: listen, source })?;
        self.record_start(addr).await?;
        // Before the first new alert: orders whose outcome the host never
        // heard are looked up by client order id (never resent), then alerts
        // accepted but unfinished run again.
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
        let reconciler = self.config.trading.reconcile_interval.map(|every| {
            let app = self.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    match crate::trading::reconcile::sweep(&app).await {
                        Ok(s) if !s.unknown_at_broker.is_empty() || !s.unreachable.is_empty() => {
                            tracing::warn!(sweep = ?s, "reconciliation found drift");
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "reconciliation failed"),
                    }
                }
            })
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = crate::http::router(self.clone());
        let app = self.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "server stopped with an error");
            }
            if let Some(r) = reconciler {
                r.abort();
            }
            let _ = app
                .audit
                .record(
                    AuditEvent::new(ActorKind::System, "host", action::SYSTEM_STOP, Outcome::Success)
                        .payload(json!({ "pid": std::process::id() })),
                )
                .await;
            app.audit.close();
        });
        Ok(RunningServer {
            addr,
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
