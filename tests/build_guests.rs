//! Builds the JavaScript and Python plugins (`plugins/{rules,fixtures}-js/*`
//! and `plugins/{rules,fixtures}-py/*`) into WebAssembly components for the
//! test suite, with the toolchains pinned in `plugins/toolchain/`:
//!
//! - JavaScript: `@bytecodealliance/componentize-js`, pinned by
//!   `plugins/toolchain/js/package-lock.json`, installed with `npm ci`;
//! - Python: `componentize-py`, pinned with hashes by
//!   `plugins/toolchain/python/requirements.txt`, installed into a venv.
//!
//! Both are installed under `<target>/guest-toolchains/` the first time and
//! reused while their pin files are unchanged. A component is rebuilt only
//! when its sources, the WIT or the toolchain change (a hash of all inputs
//! sits next to it). A missing `node`, `npm` or `python3`, or a failed
//! install, stops the build with what to install: these plugins are tested
//! like every other, so they are never skipped.
//!
//! Each plugin directory holds its source (`rule.js` or `app.py`) and a
//! `plugin.toml` manifest, which is appended to the component as the
//! `algobanana-manifest` custom section the host reads (the Rust SDK's
//! `manifest!` macro writes the same section).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A guest language and its plugin directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// componentize-js.
    Js,
    /// componentize-py.
    Python,
}

impl Lang {
    /// The suffix of the plugin directories (`rules-js`, `fixtures-py`).
    fn suffix(self) -> &'static str {
        match self {
            Self::Js => "js",
            Self::Python => "py",
        }
    }

    /// The entry point every plugin directory has.
    fn entry(self) -> &'static str {
        match self {
            Self::Js => "rule.js",
            Self::Python => "app.py",
        }
    }
}

/// One built guest plugin.
#[derive(Debug, Clone)]
pub struct Guest {
    /// The directory name (`tradingview-js`).
    pub name: String,
    /// The built component.
    pub wasm: PathBuf,
}

/// Every JS and Python plugin directory, sorted by name.
pub fn plugin_dirs(root: &Path, lang: Lang) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for kind in ["rules", "fixtures"] {
        let dir = root.join("plugins").join(format!("{kind}-{}", lang.suffix()));
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.filter_map(Result::ok) {
            if e.path().join(lang.entry()).exists() {
                out.push(e.path());
            }
        }
    }
    out.sort_by_key(|p| p.file_name().map(ToOwned::to_owned));
    out
}

/// Tells cargo to rerun when guest sources or pins change.
pub fn rerun_if_changed(root: &Path) {
    for p in [
        "plugins/rules-js",
        "plugins/fixtures-js",
        "plugins/rules-py",
        "plugins/fixtures-py",
        "plugins/toolchain",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
}

/// The directory toolchains are installed into.
pub fn toolchain_dir() -> PathBuf {
    target_dir().join("guest-toolchains")
}

/// The `node_modules` of the installed JavaScript toolchain.
pub fn js_node_modules() -> PathBuf {
    toolchain_dir().join("js/node_modules")
}

/// The Python of the venv holding the installed componentize-py.
pub fn python_exe() -> PathBuf {
    let venv = toolchain_dir().join("python/venv");
    if cfg!(windows) {
        venv.join("Scripts/python.exe")
    } else {
        venv.join("bin/python")
    }
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let manifest =
                PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
            manifest
                .parent()
                .expect("crates live one level below the root")
                .join("target")
        }
    }
}

/// Builds every guest plugin of `lang`; returns them sorted by name.
///
/// # Panics
/// When the toolchain is missing or cannot be installed, or a build fails:
/// the message says what to install or fix.
pub fn build(root: &Path, lang: Lang) -> Vec<Guest> {
    let dirs = plugin_dirs(root, lang);
    if dirs.is_empty() {
        return Vec::new();
    }
    // Keyed by the checkout like the Rust plugins (`build_plugins.rs`), so
    // worktrees sharing one CARGO_TARGET_DIR never overwrite each other's
    // components. The toolchains are shared: they are the same pins.
    let checkout = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        root.hash(&mut h);
        format!("{:016x}", h.finish())
    };
    let out_dir = target_dir().join("wasm-plugins").join(checkout).join("guests");
    std::fs::create_dir_all(&out_dir).unwrap_or_else(|e| panic!("create {}: {e}", out_dir.display()));
    let tool = match lang {
        Lang::Js => install_js(root),
        Lang::Python => install_python(root),
    };
    let wit = root.join("wit");
    dirs.iter()
        .map(|dir| {
            let name = dir
                .file_name()
                .expect("a plugin dir has a name")
                .to_string_lossy()
                .into_owned();
            let wasm = out_dir.join(format!("{}.wasm", name.replace('-', "_")));
            let stamp = wasm.with_extension("inputs");
            let inputs = inputs_hash(&[dir, &wit, &tool.pin]);
            let fresh = wasm.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == inputs);
            if !fresh {
                compile(lang, &tool, dir, &wit, &wasm);
                let manifest = std::fs::read_to_string(dir.join("plugin.toml")).unwrap_or_else(|e| {
                    panic!(
                        "{}: every guest plugin needs a plugin.toml manifest: {e}",
                        dir.display()
                    )
                });
                append_manifest(&wasm, &manifest);
                std::fs::write(&stamp, inputs).unwrap_or_else(|e| panic!("write {}: {e}", stamp.display()));
            }
            Guest { name, wasm }
        })
        .collect()
}

/// An installed toolchain: how to run it, and the pin file it came from.
struct Tool {
    program: PathBuf,
    prefix_args: Vec<PathBuf>,
    pin: PathBuf,
}

fn compile(lang: Lang, tool: &Tool, dir: &Path, wit: &Path, wasm: &Path) {
    let mut cmd = Command::new(&tool.program);
    cmd.args(&tool.prefix_args).current_dir(dir);
    match lang {
        // Every WASI feature off: the component imports only the rule world.
        Lang::Js => {
            cmd.arg("rule.js")
                .arg("--wit")
                .arg(wit)
                .args([
                    "--world-name",
                    "rule",
                    "-d",
                    "stdio",
                    "random",
                    "clocks",
                    "http",
                    "fetch-event",
                    "-o",
                ])
                .arg(wasm);
        }
        // All of WASI is imported; the host links it against a deny-all
        // context (see docs/plugins.md, "Python and WASI").
        Lang::Python => {
            cmd.arg("-d")
                .arg(wit)
                .args(["-w", "rule", "componentize", "-p", "."])
                .args(["app", "-o"])
                .arg(wasm);
        }
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.program.display()));
    if !output.status.success() {
        panic!(
            "building {} into a component failed:\n{}\n{}",
            dir.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// `npm ci` of the pinned componentize-js into the target dir, once per
/// lock file.
fn install_js(root: &Path) -> Tool {
    let pins = root.join("plugins/toolchain/js");
    let lock = pins.join("package-lock.json");
    let dir = toolchain_dir().join("js");
    let cli = dir.join("node_modules/@bytecodealliance/componentize-js/src/cli.js");
    let stamp = dir.join(".installed");
    let want = inputs_hash(&[&lock, &pins.join("package.json")]);
    let node = require_tool(
        "node",
        "JavaScript plugins (plugins/rules-js) need Node.js 18 or newer with npm",
    );
    if !(cli.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == want)) {
        let npm = require_tool(
            "npm",
            "JavaScript plugins (plugins/rules-js) need npm (it ships with Node.js)",
        );
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(pins.join(f), dir.join(f)).unwrap_or_else(|e| panic!("copy {f}: {e}"));
        }
        run(
            Command::new(npm)
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir),
            "installing componentize-js with `npm ci` (needs the npm registry once)",
        );
        std::fs::write(&stamp, &want).unwrap_or_else(|e| panic!("write {}: {e}", stamp.display()));
    }
    Tool {
        program: node,
        prefix_args: vec![cli],
        pin: lock,
    }
}

/// A venv with the pinned componentize-py in the target dir, once per
/// requirements file.
fn install_python(root: &Path) -> Tool {
    let requirements = root.join("plugins/toolchain/python/requirements.txt");
    let dir = toolchain_dir().join("python");
    let venv = dir.join("venv");
    let bin = if cfg!(windows) {
        venv.join("Scripts")
    } else {
        venv.join("bin")
    };
    let exe = |name: &str| {
        bin.join(if cfg!(windows) {
            format!("{name}.exe")
        } else {
            name.to_owned()
        })
    };
    let stamp = dir.join(".installed");
    let want = inputs_hash(&[&requirements]);
    if !(exe("componentize-py").exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == want)) {
        let python = require_tool(
            if cfg!(windows) { "python" } else { "python3" },
            "Python plugins (plugins/rules-py) need Python 3.9 or newer with the venv module",
        );
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        if !exe("pip").exists() {
            run(
                Command::new(python).args(["-m", "venv"]).arg(&venv),
                "creating a Python venv for componentize-py (on Debian: apt install python3-venv)",
            );
        }
        run(
            Command::new(exe("pip"))
                .args(["install", "--disable-pip-version-check", "--require-hashes", "-r"])
                .arg(&requirements),
            "installing componentize-py with pip (needs PyPI once)",
        );
        std::fs::write(&stamp, &want).unwrap_or_else(|e| panic!("write {}: {e}", stamp.display()));
    }
    Tool {
        program: exe("componentize-py"),
        prefix_args: Vec::new(),
        pin: requirements,
    }
}

/// The path of `name` on `PATH`.
///
/// # Panics
/// When it is not there, saying what needs it.
fn require_tool(name: &str, why: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for candidate in [
            dir.join(name),
            dir.join(format!("{name}.exe")),
            dir.join(format!("{name}.cmd")),
        ] {
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "`{name}` was not found on PATH. {why}: install it and rerun; these plugins are built and tested from source and are never skipped"
    );
}

fn run(cmd: &mut Command, what: &str) {
    let output = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    if !output.status.success() {
        panic!(
            "{what} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A hash of every file under `paths` (names and contents), for staleness.
fn inputs_hash(paths: &[&Path]) -> String {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files);
    }
    files.sort();
    // FNV-1a, 64-bit: enough to notice a change, no dependency.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for f in &files {
        feed(f.to_string_lossy().as_bytes());
        feed(&std::fs::read(f).unwrap_or_default());
    }
    format!("{h:016x} {}", files.len())
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        let Ok(entries) = std::fs::read_dir(p) else { return };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name();
            // Generated or installed trees are not inputs.
            if matches!(
                name.to_str(),
                Some("node_modules" | "__pycache__" | "wit_world" | "target")
            ) {
                continue;
            }
            collect(&e.path(), out);
        }
    } else if p.is_file() {
        out.push(p.to_owned());
    }
}

/// Appends `manifest` to the component at `wasm` as the
/// `algobanana-manifest` custom section (section id 0, then the LEB128
/// size, the LEB128-prefixed name and the bytes). A component may carry
/// custom sections anywhere at its top level.
pub fn append_manifest(wasm: &Path, manifest: &str) {
    let mut bytes = std::fs::read(wasm).unwrap_or_else(|e| panic!("read {}: {e}", wasm.display()));
    bytes.extend(crate::custom_section::custom_section(
        "algobanana-manifest",
        manifest.as_bytes(),
    ));
    std::fs::write(wasm, bytes).unwrap_or_else(|e| panic!("write {}: {e}", wasm.display()));
}
