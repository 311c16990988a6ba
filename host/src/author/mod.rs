//! Tools for plugin authors and operators: `algobanana plugin new` (a
//! working project in Rust, JavaScript or Python, [`scaffold`]),
//! `algobanana plugin test` (run a rule on alert files in the server's
//! sandbox and report resource use against each limit, [`runner`]) and
//! `algobanana plugin install` (copy a component into the data dir and
//! precompile it, [`install`]).

pub mod install;
pub mod runner;
pub mod scaffold;

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;

use crate::cli::DEFAULT_DATA_DIR;

/// `plugin` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a rule-plugin project that builds and passes its own sample
    /// test: Rust (SDK), JavaScript (componentize-js) or Python
    /// (componentize-py).
    New {
        /// The language.
        #[arg(long, value_enum)]
        lang: scaffold::Lang,
        /// The plugin's name (lowercase letters, digits and '-').
        name: String,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust only: the plugin-sdk directory of an algobanana checkout
        /// (default: the checkout this binary was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Run a rule plugin on alert files in the server's sandbox, with its
    /// limits, and print its output, its log and its resource use against
    /// each limit. Exits 1 when a call traps or an output differs from
    /// --expect.
    Test {
        /// The component (.wasm) or `builtin:NAME`.
        plugin: String,
        /// An alert file (repeatable); `.json` files are sent as
        /// application/json, others as text/plain.
        #[arg(long = "alert", required = true)]
        alerts: Vec<PathBuf>,
        /// The route's rule config, a JSON object.
        #[arg(long, default_value = "{}")]
        config: String,
        /// The content type of every alert, instead of guessing from the
        /// extension.
        #[arg(long)]
        content_type: Option<String>,
        /// A limit as in [plugins.NAME.limits] (repeatable): deadline_ms,
        /// memory_mib, fuel, max_output_bytes, max_intents,
        /// log_bytes_per_call, log_line_bytes.
        #[arg(long = "limit", value_name = "KEY=VALUE")]
        limits: Vec<String>,
        /// A JSON array with the expected output of each alert, in order.
        #[arg(long)]
        expect: Option<PathBuf>,
        /// Keep the precompiled component (and the plugin's kv) in this
        /// directory between runs instead of a scratch one.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// One JSON object per alert instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Copy a component into DATA_DIR/plugins/ and precompile it into the
    /// cache, so the server loads native code at start instead of compiling
    /// (seconds for JavaScript and Python). Prints the config to add.
    Install {
        /// The component (.wasm).
        file: PathBuf,
        /// The plugin's name in the config.
        #[arg(long)]
        name: String,
        /// Its world: rule, broker or notifier.
        #[arg(long, default_value = "rule", value_parser = ["rule", "broker", "notifier"])]
        world: String,
        /// The data dir.
        #[arg(long, env = "ALGOBANANA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Replace an installed component of the same name.
        #[arg(long)]
        force: bool,
    },
}

/// Runs a `plugin` subcommand; returns the exit code.
///
/// # Errors
/// What went wrong and what to do, for the command line to print.
pub async fn run(cmd: PluginCommand, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    match cmd {
        PluginCommand::New { lang, name, dir, sdk } => {
            scaffold::create(&scaffold::NewPlugin { lang, name, dir, sdk }, out)?;
            Ok(0)
        }
        PluginCommand::Test {
            plugin,
            alerts,
            config,
            content_type,
            limits,
            expect,
            data_dir,
            json,
        } => {
            runner::run(
                runner::TestRun {
                    plugin,
                    alerts,
                    config,
                    content_type,
                    limits,
                    expect,
                    data_dir,
                    json,
                },
                out,
            )
            .await
        }
        PluginCommand::Install {
            file,
            name,
            world,
            data_dir,
            force,
        } => {
            install::install(
                &install::Install {
                    file,
                    name,
                    world,
                    data_dir,
                    force,
                },
                out,
            )?;
            Ok(0)
        }
    }
}
