//! Builds the `plugins/` workspace into WebAssembly components
//! (wasm32-wasip2). Shared by `host/build.rs` (the embedded first-party
//! plugins) and `tests/build.rs` (every plugin, hostile fixtures included)
//! through `#[path]`.
//!
//! The nested cargo gets its own target dir and none of the outer build's
//! flags or wrappers, as wasmtime's test-programs and Spin's test-components
//! do.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The WebAssembly target plugins are built for; `rust-toolchain.toml`
/// installs it.
pub const TARGET: &str = "wasm32-wasip2";

/// Environment the outer cargo sets that must not leak into the nested build.
const SCRUB: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_PKG_NAME",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "TARGET",
    "HOST",
    "OUT_DIR",
];

/// The repository root (the parent of the crate running this build script).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("crates live one level below the root")
        .to_owned()
}

/// Tells cargo to rerun when plugin sources, the SDK or the WIT change.
pub fn rerun_if_changed(root: &Path) {
    for p in [
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
        "plugins/rules",
        "plugins/brokers",
        "plugins/notifiers",
        "plugins/fixtures",
        "plugin-sdk",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-changed=../rust-toolchain.toml");
}

/// Makes sure the standard library for [`TARGET`] is installed.
///
/// rustup installs the targets `rust-toolchain.toml` lists only when it
/// installs the toolchain itself; a machine that already had 1.95 gets no
/// wasm target. So look in the sysroot and, when the target is missing, ask
/// rustup to add it (one small download from the Rust distribution server).
fn ensure_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(sysroot) = &sysroot
        && sysroot.join("lib/rustlib").join(TARGET).join("lib").is_dir()
    {
        return;
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", TARGET]);
    if let Some(toolchain) = std::env::var_os("RUSTUP_TOOLCHAIN") {
        cmd.arg("--toolchain").arg(toolchain);
    }
    match cmd.output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => println!(
            "cargo:warning=`rustup target add {TARGET}` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => println!("cargo:warning=cannot run rustup to add {TARGET}: {e}"),
    }
}

/// Builds `packages` (all workspace members when empty) in release mode and
/// returns the directory holding the `.wasm` files.
///
/// # Panics
/// When the build fails: the build script must stop with cargo's output.
pub fn build(root: &Path, packages: &[&str]) -> PathBuf {
    // Keyed by the checkout, so two checkouts sharing one CARGO_TARGET_DIR
    // (git worktrees) never overwrite each other's components.
    let checkout = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        root.hash(&mut h);
        format!("{:016x}", h.finish())
    };
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => root.join("target"),
    }
    .join("wasm-plugins")
    .join(checkout);
    ensure_target();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root.join("plugins"))
        .arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(root.join("plugins/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir);
    if packages.is_empty() {
        cmd.arg("--workspace");
    }
    for p in packages {
        cmd.arg("-p").arg(p);
    }
    for k in SCRUB {
        if *k != "CARGO_TARGET_DIR" {
            cmd.env_remove(k);
        }
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build plugins: {e}"));
    if !output.status.success() {
        panic!(
            "building plugins for {TARGET} failed (is the target installed? rust-toolchain.toml lists it, `rustup target add {TARGET}` adds it by hand):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    target_dir.join(TARGET).join("release")
}
