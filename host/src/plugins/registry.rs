//! Loading plugins: read the component (built-in or file), hash it, compile
//! it once per digest into the on-disk cache, refuse any import the host
//! does not provide, and keep one `InstancePre` per plugin for cheap fresh
//! instances.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings::{broker::BrokerPre, notifier::NotifierPre, rule::RulePre};
use super::engine::{self, EngineSettings};
use super::state::PluginState;
use super::{bindings, builtin};
use crate::capabilities::http::{Resolver, SystemResolver};
use crate::capabilities::secrets::{ConfigSecrets, SecretStore};
use crate::config::{Config, Grant, Limits, PluginConfig, PluginSource, World};
use crate::domain::ids::PluginName;
use crate::store::StateDb;

/// 256 MiB: above the largest real component (Python, about 18 MB) with a
/// wide margin; a bigger file is refused before it is read into memory.
pub const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// Host interfaces every plugin may import, by name without version. The
/// version must be semver-compatible with [`super::WIT_VERSION`] (0.1.x).
const BASE_INTERFACES: &[&str] = &[
    "algobanana:plugin/log",
    "algobanana:plugin/clock",
    "algobanana:plugin/types",
];

/// The route account's portfolio: part of the rule world only, and not a
/// grant (a rule sees only its own route's account).
const BROKER_VIEW: &str = "algobanana:plugin/broker-view";

/// The interfaces `world` and `grant` add to the base set.
fn granted_interfaces(world: World, grant: &Grant) -> Vec<&'static str> {
    let mut v = BASE_INTERFACES.to_vec();
    if world == World::Rule {
        v.push(BROKER_VIEW);
    }
    if grant.kv {
        v.push("algobanana:plugin/kv");
    }
    if !grant.secrets.is_empty() {
        v.push("algobanana:plugin/secrets");
    }
    if !grant.http.is_empty() {
        v.push("algobanana:plugin/http");
    }
    v
}

/// What to add to the grant for `interface`, for the refusal message.
fn grant_hint(interface: &str) -> Option<&'static str> {
    Some(match interface {
        "algobanana:plugin/kv" => "kv = true",
        "algobanana:plugin/http" => "http = [\"https://host\"]",
        "algobanana:plugin/secrets" => "secrets = [\"name\"] (with [secrets.name])",
        _ => return None,
    })
}

/// Baseline WASI packages, linked against a deny-all context.
const WASI_PACKAGES: &[&str] = &[
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/",
    "wasi:filesystem/",
    "wasi:sockets/",
];

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The component file could not be read.
    #[error("plugin `{plugin}`: cannot read {path}: {message}; check `source` in [plugins.{plugin}]")]
    Read {
        /// The plugin.
        plugin: String,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The bytes are not a valid component.
    #[error(
        "plugin `{plugin}` is not a valid WebAssembly component ({message}); rebuild it for wasm32-wasip2 or reinstall it"
    )]
    Invalid {
        /// The plugin.
        plugin: String,
        /// What wasmtime said.
        message: String,
    },
    /// The component imports something the host does not provide.
    #[error("plugin `{plugin}` was refused at load: it imports {}, which algobanana does not provide; plugins may import only algobanana:plugin/{{log,clock,kv,secrets,http}}@0.1 (rules also broker-view@0.1) and baseline WASI (io, clocks, random, cli, filesystem, sockets — all empty)", .imports.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", "))]
    Imports {
        /// The plugin.
        plugin: String,
        /// Every offending import.
        imports: Vec<String>,
    },
    /// The component imports a host interface its grant does not include.
    #[error("plugin `{plugin}` was refused at load: it imports {}, which its grant does not include; review the plugin, then add {} to [plugins.{plugin}.grant]", .imports.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", "), .hints.join(" and "))]
    NotGranted {
        /// The plugin.
        plugin: String,
        /// Every import not granted.
        imports: Vec<String>,
        /// What to add to the grant.
        hints: Vec<String>,
    },
    /// The grant was approved for another digest and this one needs more.
    #[error(
        "plugin `{plugin}` changed: its digest is {actual}, but its grant was approved for {approved}, and {why}; review the new component, then set digest = \"{actual}\" in [plugins.{plugin}.grant]"
    )]
    DigestChanged {
        /// The plugin.
        plugin: String,
        /// The digest in the grant.
        approved: String,
        /// The component's digest.
        actual: String,
        /// What the new component requests beyond the grant.
        why: String,
    },
    /// The embedded manifest is malformed or contradicts the config.
    #[error("plugin `{plugin}`: {message}")]
    Manifest {
        /// The plugin.
        plugin: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The component does not implement the configured world.
    #[error(
        "plugin `{plugin}` does not implement the `{world}` world ({message}); check `world` in [plugins.{plugin}]"
    )]
    World {
        /// The plugin.
        plugin: String,
        /// The configured world.
        world: &'static str,
        /// What wasmtime said.
        message: String,
    },
    /// The precompiled cache could not be written or read.
    #[error("plugin `{plugin}`: precompiled cache {path}: {message}")]
    Cache {
        /// The plugin.
        plugin: String,
        /// The cache file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The engine could not be built.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
}

/// The pre-instantiated component of one plugin.
#[derive(Clone)]
pub enum Pre {
    /// A rule.
    Rule(RulePre<PluginState>),
    /// A broker.
    Broker(BrokerPre<PluginState>),
    /// A notifier.
    Notifier(NotifierPre<PluginState>),
}

impl std::fmt::Debug for Pre {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Rule(_) => "Pre::Rule",
            Self::Broker(_) => "Pre::Broker",
            Self::Notifier(_) => "Pre::Notifier",
        })
    }
}

/// A plugin ready to be called.
#[derive(Debug)]
pub struct LoadedPlugin {
    /// Its configured name.
    pub name: PluginName,
    /// Its version.
    pub version: String,
    /// `sha256:` and the hex digest of the component.
    pub digest: String,
    /// Its world.
    pub world: World,
    /// Per-call limits.
    pub limits: Limits,
    /// Returns true if and only if it imports `kv`; calls to such a plugin
    /// are serialised so two calls never race on its namespace.
    pub uses_kv: bool,
    /// Serialises calls of a kv-using plugin.
    pub(crate) serial: Option<tokio::sync::Mutex<()>>,
    /// What the operator granted.
    pub grant: Arc<Grant>,
    /// The granted secret names.
    pub(crate) secret_names: Arc<[String]>,
    /// The embedded manifest, when the component has one.
    pub manifest: Option<super::manifest::Manifest>,
    /// The digest the grant was approved for, when it was carried over to
    /// this (different) component because it requests nothing more.
    pub grant_carried_from: Option<String>,
    /// The pre-instantiated component.
    pub(crate) pre: Pre,
}

impl LoadedPlugin {
    /// `name@version`, the audit actor id.
    pub fn actor_id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// When a rule gets the route account's portfolio: its manifest's
    /// `portfolio`, else before every call.
    pub fn portfolio_mode(&self) -> super::manifest::PortfolioMode {
        self.manifest.as_ref().map(|m| m.portfolio).unwrap_or_default()
    }
}

/// Every loaded plugin, the engine and what a call needs.
#[derive(Debug)]
pub struct Registry {
    pub(crate) engine: Engine,
    /// Ticks the engine's epoch while calls run (see [`engine::Ticker`]).
    pub(crate) ticker: Arc<engine::Ticker>,
    pub(crate) db: StateDb,
    pub(crate) fuel: bool,
    pub(crate) calls: Arc<tokio::sync::Semaphore>,
    /// Slots for broker calls that rule calls wait for (`broker-view`);
    /// the engine's pool has room for both.
    pub(crate) nested_calls: Arc<tokio::sync::Semaphore>,
    pub(crate) secrets: Arc<dyn SecretStore>,
    pub(crate) resolver: Arc<dyn Resolver>,
    plugins: HashMap<PluginName, Arc<LoadedPlugin>>,
    /// Plugins an admin disabled: every call is refused (and audited).
    disabled: std::sync::RwLock<std::collections::HashSet<PluginName>>,
}

impl Registry {
    /// Builds the engine and loads every plugin in `config`, compiling into
    /// `cache_dir` as needed. All plugins are loaded before the first alert.
    ///
    /// # Errors
    /// The first [`PluginError`].
    pub fn load(config: &Config, db: StateDb, cache_dir: &Path) -> Result<Self, PluginError> {
        Self::load_with(config, db, cache_dir, None)
    }

    /// The engine's epoch ticker (asleep while no call runs).
    pub fn ticker(&self) -> &engine::Ticker {
        &self.ticker
    }

    /// [`Registry::load`] with another resolver for outbound HTTP (tests map
    /// names to local addresses with it).
    ///
    /// # Errors
    /// The first [`PluginError`].
    pub fn load_with(
        config: &Config,
        db: StateDb,
        cache_dir: &Path,
        resolver: Option<Arc<dyn Resolver>>,
    ) -> Result<Self, PluginError> {
        let settings = engine_settings(config.plugins.values());
        let (engine, ticker) = engine::build(settings).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let cache = Cache::open(cache_dir, &engine)?;
        let mut plugins = HashMap::new();
        for (name, pc) in &config.plugins {
            let linker = linker(&engine, pc.world, &pc.grant).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
            let loaded = load_one(&engine, &linker, &cache, &db, name, pc)?;
            plugins.insert(name.clone(), Arc::new(loaded));
        }
        Ok(Self {
            engine,
            ticker,
            db,
            fuel: settings.fuel,
            calls: Arc::new(tokio::sync::Semaphore::new(engine::MAX_CONCURRENT_CALLS)),
            nested_calls: Arc::new(tokio::sync::Semaphore::new(engine::MAX_CONCURRENT_CALLS)),
            secrets: Arc::new(ConfigSecrets::new(config.secrets.clone())),
            resolver: resolver.unwrap_or_else(|| Arc::new(SystemResolver)),
            plugins,
            disabled: std::sync::RwLock::default(),
        })
    }

    /// The plugin called `name`.
    pub fn get(&self, name: &PluginName) -> Option<Arc<LoadedPlugin>> {
        self.plugins.get(name).cloned()
    }

    /// Loads which plugins are disabled from `state.db`.
    ///
    /// # Errors
    /// [`crate::store::StoreError`].
    pub fn load_disabled(&self) -> Result<(), crate::store::StoreError> {
        let names: Vec<String> = self.db.with(|c| {
            let mut s = c.prepare("SELECT plugin FROM plugin_state WHERE disabled = 1")?;
            s.query_map([], |r| r.get(0))?.collect()
        })?;
        *self.disabled.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            names.into_iter().filter_map(|n| PluginName::new(n).ok()).collect();
        Ok(())
    }

    /// Whether `name` is disabled.
    pub fn is_disabled(&self, name: &PluginName) -> bool {
        self.disabled
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(name)
    }

    /// Disables or enables `name`, persisted; returns the previous state.
    ///
    /// # Errors
    /// [`crate::store::StoreError`].
    pub fn set_disabled(&self, name: &PluginName, disabled: bool, by: &str) -> Result<bool, crate::store::StoreError> {
        let mut set = self.disabled.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.db.durable(|c| {
            c.execute(
                "INSERT INTO plugin_state(plugin, disabled, changed_by, changed_at_ns) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(plugin) DO UPDATE SET disabled = excluded.disabled, changed_by = excluded.changed_by, changed_at_ns = excluded.changed_at_ns",
                rusqlite::params![name.as_str(), disabled, by, crate::audit::now_ns()],
            )
            .map(drop)
        })?;
        Ok(if disabled {
            !set.insert(name.clone())
        } else {
            set.remove(name)
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

fn engine_settings<'a>(plugins: impl Iterator<Item = &'a PluginConfig>) -> EngineSettings {
    let mut s = EngineSettings {
        fuel: false,
        max_memory_bytes: Limits::default().memory_bytes,
    };
    for p in plugins {
        s.fuel |= p.limits.fuel.is_some();
        s.max_memory_bytes = s.max_memory_bytes.max(p.limits.memory_bytes);
    }
    s
}

/// One plugin's linker: deny-all baseline WASI, the base host interfaces,
/// and only the capabilities its grant includes. An import of anything
/// else has nothing to link against (and is refused earlier, by name).
fn linker(engine: &Engine, world: World, grant: &Grant) -> wasmtime::Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    bindings::log::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
    bindings::clock::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
    bindings::types::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
    if world == World::Rule {
        bindings::broker_view::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
    }
    if grant.kv {
        bindings::kv::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
    }
    if !grant.secrets.is_empty() {
        bindings::secrets::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
    }
    if !grant.http.is_empty() {
        bindings::http::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
    }
    Ok(linker)
}

fn read_source(name: &PluginName, pc: &PluginConfig) -> Result<std::borrow::Cow<'static, [u8]>, PluginError> {
    match &pc.source {
        PluginSource::Builtin(b) => builtin::find(b)
            .map(|b| std::borrow::Cow::Borrowed(b.wasm))
            .ok_or_else(|| PluginError::Read {
                plugin: name.to_string(),
                path: PathBuf::from(format!("builtin:{b}")),
                message: "no such built-in".into(),
            }),
        PluginSource::File(path) => {
            let err = |message: String| PluginError::Read {
                plugin: name.to_string(),
                path: path.clone(),
                message,
            };
            let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
            if meta.len() > MAX_COMPONENT_BYTES {
                return Err(err(format!(
                    "{} bytes is above the {MAX_COMPONENT_BYTES}-byte limit for a component",
                    meta.len()
                )));
            }
            std::fs::read(path)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| err(e.to_string()))
        }
    }
}

/// Returns true if and only if `version` is semver-compatible with 0.1.x.
fn compatible(version: &str) -> bool {
    version
        .strip_prefix("0.1.")
        .is_some_and(|patch| !patch.is_empty() && patch.chars().all(|c| c.is_ascii_digit()))
}

/// Every algobanana host interface, granted or not.
const ALL_INTERFACES: &[&str] = &[
    "algobanana:plugin/log",
    "algobanana:plugin/clock",
    "algobanana:plugin/types",
    "algobanana:plugin/kv",
    "algobanana:plugin/secrets",
    "algobanana:plugin/http",
    BROKER_VIEW,
];

/// Checks every import against what exists and what `grant` includes;
/// returns whether `kv` is imported.
fn check_imports(
    engine: &Engine,
    component: &Component,
    plugin: &PluginName,
    world: World,
    grant: &Grant,
) -> Result<bool, PluginError> {
    let granted = granted_interfaces(world, grant);
    let mut unknown = Vec::new();
    let mut not_granted = Vec::new();
    let mut hints = Vec::new();
    let mut uses_kv = false;
    for (name, _) in component.component_type().imports(engine) {
        if WASI_PACKAGES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        match name.split_once('@') {
            Some((base, version))
                if ALL_INTERFACES.contains(&base)
                    && compatible(version)
                    && (base != BROKER_VIEW || world == World::Rule) =>
            {
                if granted.contains(&base) {
                    uses_kv |= base == "algobanana:plugin/kv";
                } else {
                    not_granted.push(name.to_owned());
                    hints.extend(grant_hint(base).map(|h| format!("`{h}`")));
                }
            }
            _ => unknown.push(name.to_owned()),
        }
    }
    if !unknown.is_empty() {
        return Err(PluginError::Imports {
            plugin: plugin.to_string(),
            imports: unknown,
        });
    }
    if !not_granted.is_empty() {
        return Err(PluginError::NotGranted {
            plugin: plugin.to_string(),
            imports: not_granted,
            hints,
        });
    }
    Ok(uses_kv)
}

fn load_one(
    engine: &Engine,
    linker: &Linker<PluginState>,
    cache: &Cache,
    db: &StateDb,
    name: &PluginName,
    pc: &PluginConfig,
) -> Result<LoadedPlugin, PluginError> {
    let bytes = read_source(name, pc)?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let manifest = super::manifest::read(&bytes).map_err(|message| PluginError::Manifest {
        plugin: name.to_string(),
        message: format!("{message}; fix the component's `algobanana-manifest` section (the SDK's manifest! macro)"),
    })?;
    if let Some(m) = &manifest {
        if m.world != pc.world.as_str() {
            return Err(PluginError::Manifest {
                plugin: name.to_string(),
                message: format!(
                    "its manifest says world `{}` but [plugins.{name}] says `{}`; set world = \"{}\"",
                    m.world,
                    pc.world.as_str(),
                    m.world
                ),
            });
        }
        if m.portfolio != super::manifest::PortfolioMode::BeforeCall && pc.world != World::Rule {
            return Err(PluginError::Manifest {
                plugin: name.to_string(),
                message: "its manifest sets `portfolio`, which only rules have; remove it".into(),
            });
        }
        if !compatible(&m.wit) {
            return Err(PluginError::Manifest {
                plugin: name.to_string(),
                message: format!(
                    "it targets algobanana:plugin@{}, and this host provides {}; rebuild it against the host's WIT",
                    m.wit,
                    super::WIT_VERSION
                ),
            });
        }
    }
    let actual = format!("sha256:{digest}");
    let mut grant_carried_from = None;
    if let Some(approved) = &pc.grant.digest
        && *approved != actual
    {
        let why = match &manifest {
            None => Some("it has no manifest saying what it requests".to_owned()),
            Some(m) => {
                let more = m.requests.beyond(&pc.grant);
                (!more.is_empty()).then(|| format!("it requests more: {}", more.join(", ")))
            }
        };
        if let Some(why) = why {
            return Err(PluginError::DigestChanged {
                plugin: name.to_string(),
                approved: approved.clone(),
                actual,
                why,
            });
        }
        tracing::warn!(plugin = %name, approved = %approved, actual = %actual, "plugin changed; it requests nothing beyond its grant, which is carried over");
        grant_carried_from = Some(approved.clone());
    }
    let component = cache.component(engine, db, name, &digest, &bytes)?;
    let uses_kv = check_imports(engine, &component, name, pc.world, &pc.grant)?;
    let world_err = |e: wasmtime::Error| PluginError::World {
        plugin: name.to_string(),
        world: pc.world.as_str(),
        message: format!("{e:#}"),
    };
    let instance_pre = linker.instantiate_pre(&component).map_err(world_err)?;
    // `…Pre::new` type-checks every export of the world once, here; the
    // calls instantiate with `instantiate_prechecked`, which relies on this
    // check instead of repeating it per instance (bindings.rs).
    let pre = match pc.world {
        World::Rule => Pre::Rule(RulePre::new(instance_pre).map_err(world_err)?),
        World::Broker => Pre::Broker(BrokerPre::new(instance_pre).map_err(world_err)?),
        World::Notifier => Pre::Notifier(NotifierPre::new(instance_pre).map_err(world_err)?),
    };
    Ok(LoadedPlugin {
        name: name.clone(),
        version: pc.version.clone(),
        digest: format!("sha256:{digest}"),
        world: pc.world,
        limits: pc.limits,
        uses_kv,
        serial: uses_kv.then(|| tokio::sync::Mutex::new(())),
        grant: Arc::new(pc.grant.clone()),
        secret_names: pc.grant.secrets.clone().into(),
        manifest,
        grant_carried_from,
        pre,
    })
}

/// The precompiled-component cache: `<data-dir>/cache/<digest>-<engine>.cwasm`,
/// written only by this host (mode 0600, atomically) and checked against the
/// SHA-256 recorded in `state.db` before it is loaded. A `.cwasm` is native
/// code, so a file that does not match is deleted and recompiled, never run.
struct Cache {
    dir: cap_std::fs::Dir,
    path: PathBuf,
    engine_key: String,
}

impl Cache {
    fn open(path: &Path, engine: &Engine) -> Result<Self, PluginError> {
        let err = |e: std::io::Error| PluginError::Cache {
            plugin: "*".into(),
            path: path.to_owned(),
            message: e.to_string(),
        };
        crate::setup::create_private_dir(path).map_err(err)?;
        let dir = cap_std::fs::Dir::open_ambient_dir(path, cap_std::ambient_authority()).map_err(err)?;
        Ok(Self {
            dir,
            path: path.to_owned(),
            engine_key: engine::compatibility_key(engine),
        })
    }

    fn component(
        &self,
        engine: &Engine,
        db: &StateDb,
        plugin: &PluginName,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Component, PluginError> {
        let file = format!("{digest}-{}.cwasm", self.engine_key);
        let full = self.path.join(&file);
        let err = |message: String| PluginError::Cache {
            plugin: plugin.to_string(),
            path: full.clone(),
            message,
        };
        let recorded = db
            .compiled_hash(digest, &self.engine_key)
            .map_err(|e| err(e.to_string()))?;
        if let Some(expected) = recorded {
            match self.dir.read(&file) {
                Ok(data) if hex::encode(Sha256::digest(&data)) == expected => {
                    return load_precompiled(engine, &full).map_err(err);
                }
                Ok(_) => {
                    tracing::warn!(plugin = %plugin, file = %full.display(), "precompiled component does not match its recorded hash; recompiling");
                    let _ = self.dir.remove_file(&file);
                }
                Err(_) => {}
            }
        }
        let compiled = engine.precompile_component(bytes).map_err(|e| PluginError::Invalid {
            plugin: plugin.to_string(),
            message: format!("{e:#}"),
        })?;
        self.write_atomic(&file, &compiled).map_err(|e| err(e.to_string()))?;
        db.set_compiled_hash(digest, &self.engine_key, &hex::encode(Sha256::digest(&compiled)))
            .map_err(|e| err(e.to_string()))?;
        load_precompiled(engine, &full).map_err(err)
    }

    fn write_atomic(&self, file: &str, data: &[u8]) -> std::io::Result<()> {
        use cap_std::fs::OpenOptionsExt as _;
        let tmp = format!("{file}.tmp-{}", std::process::id());
        let mut opts = cap_std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true).mode(0o600);
        let mut f = self.dir.open_with(&tmp, &opts)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        self.dir.rename(&tmp, &self.dir, file)?;
        // Make the rename itself durable.
        self.dir.open(".").and_then(|d| d.sync_all()).or(Ok(()))
    }
}

#[allow(unsafe_code)]
fn load_precompiled(engine: &Engine, path: &Path) -> Result<Component, String> {
    // SAFETY: `deserialize_file` runs the file's bytes as native code. The
    // file was written by this host from `precompile_component` and its
    // SHA-256 was checked against the value recorded in state.db when it
    // was written; a `.cwasm` from anywhere else is never loaded.
    unsafe { Component::deserialize_file(engine, path) }.map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_interface_versions_must_be_0_1_x() {
        assert!(compatible("0.1.0"));
        assert!(compatible("0.1.17"));
        assert!(!compatible("0.2.0"));
        assert!(!compatible("0.1.0-rc1"));
        assert!(!compatible("1.0.0"));
    }
}
