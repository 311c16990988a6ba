//! Builds the first-party plugins from `plugins/` source and places them in
//! `OUT_DIR/plugins/` for `include_bytes!` (see `src/plugins/builtin.rs`).

#[path = "build_plugins.rs"]
mod build_plugins;

fn main() {
    let root = build_plugins::repo_root();
    build_plugins::rerun_if_changed(&root);
    let packages = [
        "tradingview",
        "paper",
        "alpaca",
        "binance",
        "notify-webhook",
        "notify-discord",
        "notify-slack",
        "notify-telegram",
    ];
    let release = build_plugins::build(&root, &packages);
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("plugins");
    std::fs::create_dir_all(&out).expect("create OUT_DIR/plugins");
    for name in packages {
        let file = format!("{}.wasm", name.replace('-', "_"));
        let from = release.join(&file);
        std::fs::copy(&from, out.join(&file)).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}
