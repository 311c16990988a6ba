//! Author tools (issue 8), through the code `main` runs: `plugin new`
//! projects in Rust, JavaScript and Python build with their pinned
//! toolchains and pass their own sample test; `plugin test` reports
//! resource use against every limit and fails on traps and mismatches;
//! `plugin install` precompiles, and the server then loads the cached
//! native code without compiling again.

use std::path::{Path, PathBuf};
use std::process::Command;

use algobanana::cli::{Cli, run};
use algobanana_tests::plugins::{
    HUGE_OUTPUT, JS_NODE_MODULES, LOG_FLOOD, LOOP_FOREVER, MEMORY_HOG, PY_TOOLCHAIN_PYTHON, TRADINGVIEW_JS,
    WASM_TARGET_DIR,
};
use clap::Parser;
use serde_json::Value;

async fn cli(args: &[&str]) -> anyhow::Result<(u8, String)> {
    let cli = Cli::try_parse_from(std::iter::once("algobanana").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    let code = run(cli, &mut out).await?;
    Ok((code, String::from_utf8(out)?))
}

/// `plugin test --json` on `plugin` with one alert per line of `alerts`.
async fn plugin_test_json(plugin: &str, extra: &[&str], alerts: &[&str]) -> anyhow::Result<(u8, Vec<Value>)> {
    let dir = tempfile::tempdir()?;
    let mut args = vec!["plugin", "test", plugin, "--json"];
    let mut paths = Vec::new();
    for (i, a) in alerts.iter().enumerate() {
        let p = dir.path().join(format!("alert{i}.txt"));
        std::fs::write(&p, a)?;
        paths.push(p.display().to_string());
    }
    for p in &paths {
        args.extend(["--alert", p.as_str()]);
    }
    args.extend_from_slice(extra);
    let (code, out) = cli(&args).await?;
    let lines = out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    Ok((code, lines))
}

/// Runs `cmd`, failing with its output when it does not succeed.
fn ok(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The project's sample test: its alerts against its expected outputs.
async fn sample_test(project: &Path, wasm: &Path) -> anyhow::Result<String> {
    let alerts = project.join("alerts");
    let (code, out) = cli(&[
        "plugin",
        "test",
        wasm.to_str().unwrap(),
        "--alert",
        alerts.join("buy.txt").to_str().unwrap(),
        "--alert",
        alerts.join("bad.txt").to_str().unwrap(),
        "--expect",
        alerts.join("expected.json").to_str().unwrap(),
    ])
    .await?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("matches the expected output").count(), 2, "{out}");
    Ok(out)
}

async fn new_project(lang: &str, name: &str, root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join(name);
    let sdk = algobanana_tests::repo_path("plugin-sdk");
    let (code, out) = cli(&[
        "plugin",
        "new",
        "--lang",
        lang,
        name,
        "--dir",
        dir.to_str().unwrap(),
        "--sdk",
        sdk.to_str().unwrap(),
    ])
    .await?;
    assert_eq!(code, 0);
    assert!(out.contains("created"), "{out}");
    Ok(dir)
}

#[tokio::test]
async fn plugin_new_rust_builds_and_passes_its_sample_test() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let project = new_project("rust", "demo-rs", root.path()).await?;
    let target = PathBuf::from(WASM_TARGET_DIR);
    // Its own unit tests, natively (a target dir kept between runs).
    ok(
        cargo(&project)
            .arg("test")
            .env("CARGO_TARGET_DIR", target.with_file_name("scaffold-native")),
        "cargo test in the new Rust project",
    )?;
    // The component, sharing the plugins' target dir (same profile, so the
    // SDK and its dependencies are reused). A component left by an earlier
    // run must not stand in for this build.
    let wasm = target.join("wasm32-wasip2/release/demo_rs.wasm");
    let _ = std::fs::remove_file(&wasm);
    ok(
        cargo(&project)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .env("CARGO_TARGET_DIR", &target),
        "cargo build --target wasm32-wasip2 in the new Rust project",
    )?;
    let out = sample_test(&project, &wasm).await?;
    assert!(
        out.contains("(demo-rs@0.1.0, sha256:"),
        "the SDK's manifest is embedded: {out}"
    );

    // --expect fails when the output differs.
    let expected = project.join("alerts/expected.json");
    let text = std::fs::read_to_string(&expected)?.replace("\"10\"", "\"11\"");
    std::fs::write(&expected, text)?;
    let (code, out) = cli(&[
        "plugin",
        "test",
        wasm.to_str().unwrap(),
        "--alert",
        project.join("alerts/buy.txt").to_str().unwrap(),
        "--alert",
        project.join("alerts/bad.txt").to_str().unwrap(),
        "--expect",
        expected.to_str().unwrap(),
    ])
    .await?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("MISMATCH: expected"), "{out}");
    Ok(())
}

#[tokio::test]
async fn plugin_new_js_builds_with_the_pinned_toolchain_and_passes_its_sample_test() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let project = new_project("js", "demo-js", root.path()).await?;
    let lock = std::fs::read_to_string(project.join("package-lock.json"))?;
    assert!(
        lock.contains("\"name\": \"demo-js\""),
        "the toolchain's pins under the project's name"
    );
    // The test build installed exactly these pins (`npm ci`); share them
    // instead of a second 400 MB install.
    link_dir(Path::new(JS_NODE_MODULES), &project.join("node_modules"))?;
    ok(
        Command::new("node").arg("build.mjs").current_dir(&project),
        "node build.mjs in the new JavaScript project",
    )?;
    sample_test(&project, &project.join("demo-js.wasm")).await?;
    Ok(())
}

#[tokio::test]
async fn plugin_new_python_builds_with_the_pinned_toolchain_and_passes_its_sample_test() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let project = new_project("python", "demo-py", root.path()).await?;
    ok(
        Command::new(PY_TOOLCHAIN_PYTHON).arg("build.py").current_dir(&project),
        "build.py in the new Python project",
    )?;
    sample_test(&project, &project.join("demo-py.wasm")).await?;
    Ok(())
}

/// A nested cargo in `project`, without the outer cargo's settings.
fn cargo(project: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(project);
    for k in [
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(k);
    }
    cmd
}

#[cfg(unix)]
fn link_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(from, to)
}

#[cfg(windows)]
fn link_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_dir(from, to)
}

#[tokio::test]
async fn plugin_test_reports_use_against_every_limit() -> anyhow::Result<()> {
    let (code, lines) = plugin_test_json(
        "builtin:tradingview",
        &["--limit", "fuel=5000000", "--limit", "deadline_ms=50"],
        &["buy 10 AAPL at 190.35", "hold 1 AAPL"],
    )
    .await?;
    assert_eq!(code, 0, "a rule error is an answer, not a failure: {lines:?}");
    let ok = &lines[0];
    assert_eq!(ok["outcome"], "ok");
    assert_eq!(ok["output"][0]["symbol"], "AAPL");
    let r = &ok["resources"];
    assert_eq!(r["deadline_ms"], 50);
    assert!(r["time_us"].as_u64().unwrap() > 0);
    assert_eq!(r["memory_cap_bytes"], 64 << 20);
    assert!(r["memory_peak_bytes"].as_u64().unwrap() > 0);
    let fuel = r["fuel_consumed"]
        .as_u64()
        .expect("fuel is metered when a limit is set");
    assert!(fuel > 0 && fuel <= 5_000_000, "{r}");
    assert_eq!(r["fuel_limit"], 5_000_000);
    assert_eq!(r["output_bytes"].as_u64(), Some(ok["output"].to_string().len() as u64));
    assert_eq!((r["intents"].as_u64(), r["max_intents"].as_u64()), (Some(1), Some(32)));
    assert_eq!(
        (r["log_bytes_per_call"].as_u64(), r["log_line_bytes"].as_u64()),
        (Some(4096), Some(1024))
    );
    assert_eq!(lines[1]["outcome"], "rule_error");
    assert_eq!(lines[1]["output"]["error"]["kind"], "invalid_alert");

    // A rule that closes from the account gets it from --portfolio.
    let dir = tempfile::tempdir()?;
    let portfolio = dir.path().join("portfolio.json");
    std::fs::write(
        &portfolio,
        r#"{"positions":[{"symbol":"AAPL","quantity":"5","average_price":190.5}],"account":{"currency":"USD","cash":"1000","equity":"1952.5","buying_power":"1000"}}"#,
    )?;
    let (code, lines) = plugin_test_json(
        "builtin:tradingview",
        &["--portfolio", portfolio.to_str().unwrap()],
        &["exit AAPL"],
    )
    .await?;
    assert_eq!(code, 0, "{lines:?}");
    let close = &lines[0]["output"][0];
    assert_eq!(
        (close["side"].as_str(), close["quantity"].as_str()),
        (Some("sell"), Some("5"))
    );
    assert_eq!(close["reduce_only"], true);

    // Each limit, hit.
    let (code, lines) = plugin_test_json(LOOP_FOREVER, &["--limit", "deadline_ms=20"], &["x"]).await?;
    assert_eq!((code, lines[0]["outcome"].as_str()), (1, Some("trap:deadline")));
    assert!(lines[0]["resources"]["time_us"].as_u64().unwrap() >= 20_000);
    let (code, lines) = plugin_test_json(MEMORY_HOG, &["--limit", "memory_mib=8"], &["x"]).await?;
    assert_eq!((code, lines[0]["outcome"].as_str()), (1, Some("limit:memory")));
    assert!(lines[0]["resources"]["memory_peak_bytes"].as_u64().unwrap() <= 8 << 20);
    let (code, lines) = plugin_test_json(HUGE_OUTPUT, &["--config", r#"{"mode":"big"}"#], &["x"]).await?;
    assert_eq!(
        (code, lines[0]["outcome"].as_str()),
        (1, Some("limit:max_output_bytes"))
    );
    let (code, lines) = plugin_test_json(LOG_FLOOD, &[], &["x"]).await?;
    assert_eq!(code, 0);
    let r = &lines[0]["resources"];
    assert!(r["log_bytes"].as_u64().unwrap() <= 4096 + 16 * r["log_lines"].as_u64().unwrap());
    assert!(r["log_dropped"].as_u64().unwrap() >= 9_990, "{r}");

    // Text output names every limit.
    let dir = tempfile::tempdir()?;
    let alert = dir.path().join("a.json");
    std::fs::write(&alert, r#"{"ticker":"AAPL","action":"buy","quantity":"1"}"#)?;
    let (code, out) = cli(&[
        "plugin",
        "test",
        "builtin:tradingview",
        "--alert",
        alert.to_str().unwrap(),
    ])
    .await?;
    assert_eq!(code, 0, "{out}");
    for line in [
        "(application/json)",
        "ms deadline",
        "MiB",
        "fuel    off",
        "B per call",
        "intents",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    let err = cli(&[
        "plugin",
        "test",
        "/nonexistent.wasm",
        "--alert",
        alert.to_str().unwrap(),
    ])
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("cannot find plugin file"), "{err:#}");
    Ok(())
}

#[tokio::test]
async fn plugin_install_precompiles_and_the_next_start_loads_the_cache() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    cli(&["init", "--data-dir", data_s, "--json"]).await?;
    let (code, out) = cli(&[
        "plugin",
        "install",
        TRADINGVIEW_JS,
        "--name",
        "tv-js",
        "--data-dir",
        data_s,
    ])
    .await?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("precompiled into"), "{out}");
    assert!(
        out.contains("[plugins.tv-js]\nsource = \"plugins/tv-js.wasm\""),
        "{out}"
    );
    let digest = out
        .split("digest = \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a digest to pin")
        .to_owned();
    let cached = cache_files(&data)?;
    assert!(
        cached
            .iter()
            .any(|(name, _)| name.starts_with(digest.trim_start_matches("sha256:"))),
        "{cached:?}"
    );

    // Add the printed config and start: nothing is compiled again.
    let snippet = out.split_once("pin the digest):\n\n").unwrap().1;
    let config = data.join(algobanana::config::CONFIG_FILE);
    let mut text = std::fs::read_to_string(&config)?;
    text.push('\n');
    text.push_str(snippet);
    std::fs::write(&config, text)?;
    let app = algobanana::app::App::open(&data, algobanana::app::AppOptions::default()).await?;
    assert!(
        app.registry
            .get(&algobanana::domain::ids::PluginName::new("tv-js")?)
            .is_some()
    );
    assert_eq!(
        cache_files(&data)?,
        cached,
        "the start reused every precompiled file (a compile rewrites it)"
    );

    let err = cli(&[
        "plugin",
        "install",
        TRADINGVIEW_JS,
        "--name",
        "tv-js",
        "--data-dir",
        data_s,
    ])
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("--force"), "{err:#}");
    Ok(())
}

/// The cache's `.cwasm` files with their modification times.
fn cache_files(data: &Path) -> anyhow::Result<Vec<(String, std::time::SystemTime)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(data.join("cache"))? {
        let e = e?;
        v.push((e.file_name().to_string_lossy().into_owned(), e.metadata()?.modified()?));
    }
    v.sort();
    Ok(v)
}
