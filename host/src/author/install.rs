//! `algobanana plugin install`: copies a component into
//! `DATA_DIR/plugins/NAME.wasm` and precompiles it into the data dir's
//! cache through the server's own registry (same engine settings, same
//! import checks, the `.cwasm`'s hash recorded in `state.db`). The next
//! `serve` then maps the native code instead of compiling: JavaScript and
//! Python components take seconds to compile and milliseconds to load.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::config::{self, CONFIG_FILE, PluginSource};
use crate::domain::ids::PluginName;
use crate::plugins::Registry;
use crate::plugins::registry::MAX_COMPONENT_BYTES;
use crate::store::{STATE_DB, StateDb};

/// What to install.
#[derive(Debug, Clone)]
pub struct Install {
    /// The component.
    pub file: PathBuf,
    /// Its name in the config.
    pub name: String,
    /// `rule`, `broker` or `notifier`.
    pub world: String,
    /// The data dir.
    pub data_dir: PathBuf,
    /// Replace an installed file of the same name.
    pub force: bool,
}

/// Installs and precompiles; prints the config to add.
///
/// # Errors
/// A bad name, an unreadable or oversized file, an existing install without
/// `--force`, or a component the registry refuses (with its reason).
pub fn install(i: &Install, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let name = PluginName::new(i.name.clone()).map_err(|_| {
        anyhow::anyhow!(
            "`{}` is not a valid plugin name; use 1–64 lowercase letters, digits, '-' or '_'",
            i.name
        )
    })?;
    let meta = std::fs::metadata(&i.file).with_context(|| format!("cannot read {}", i.file.display()))?;
    if meta.len() > MAX_COMPONENT_BYTES {
        bail!(
            "{} is {} bytes, above the {MAX_COMPONENT_BYTES}-byte limit for a component",
            i.file.display(),
            meta.len()
        );
    }
    let plugins_dir = i.data_dir.join("plugins");
    let rel = format!("plugins/{name}.wasm");
    let dest = i.data_dir.join(&rel);
    if dest.exists() && !i.force {
        bail!(
            "{} is already installed; pass --force to replace it (its grant must then approve the new digest)",
            dest.display()
        );
    }
    std::fs::create_dir_all(&plugins_dir).with_context(|| format!("cannot create {}", plugins_dir.display()))?;
    let tmp = plugins_dir.join(format!(".{name}.wasm.tmp-{}", std::process::id()));
    std::fs::copy(&i.file, &tmp)
        .with_context(|| format!("cannot copy {} into {}", i.file.display(), plugins_dir.display()))?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("cannot write {}", dest.display()))?;

    // The engine settings (fuel, pool size) come from every plugin of the
    // config, and they key the cache: compile with the config the server
    // will run, this plugin added to it.
    let config_path = i.data_dir.join(CONFIG_FILE);
    let snippet = format!("[plugins.{name}]\nsource = \"{rel}\"\nworld = \"{}\"\n", i.world);
    let mut config = if config_path.exists() {
        config::validate::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?
    } else {
        config::validate::parse("", &config_path).map_err(|e| anyhow::anyhow!("{e}"))?
    };
    let fresh = config::validate::parse(&snippet, &config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut pc = fresh
        .plugins
        .get(&name)
        .cloned()
        .context("the plugin entry did not parse")?;
    let configured = config.plugins.get(&name).cloned();
    if let Some(existing) = &configured {
        // Keep the operator's grant and limits for this name.
        pc.grant = existing.grant.clone();
        pc.limits = existing.limits;
        pc.version.clone_from(&existing.version);
        if existing.source != PluginSource::File(dest.clone()) {
            writeln!(
                out,
                "note: [plugins.{name}] in {} points at another source; set source = \"{rel}\" to use this install",
                config_path.display()
            )?;
        }
    }
    config.plugins.insert(name.clone(), pc);
    let db = StateDb::open(&i.data_dir.join(STATE_DB)).context("cannot open state.db")?;
    let started = Instant::now();
    let registry = Registry::load(&config, db, &i.data_dir.join("cache")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let elapsed = started.elapsed();
    let plugin = registry.get(&name).context("the plugin was not loaded")?;
    writeln!(
        out,
        "installed {} ({}), precompiled into {} in {:.2} s",
        dest.display(),
        plugin.digest,
        i.data_dir.join("cache").display(),
        elapsed.as_secs_f64()
    )?;
    if configured.is_none() {
        writeln!(
            out,
            "add to {} (review what it requests, then pin the digest):\n\n{snippet}[plugins.{name}.grant]\ndigest = \"{}\"",
            config_path.display(),
            plugin.digest
        )?;
    }
    Ok(())
}
