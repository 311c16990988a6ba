//! Broken configs and plugins: every error names the file, the key and what
//! to do. Config snapshots live in `tests/ui/NAME.toml` next to the exact
//! expected message in `NAME.err`; set `BLESS=1` to rewrite them after an
//! intended change.

use std::path::Path;

use algobanana_tests::plugins::{PANICS, TRADINGVIEW};
use algobanana_tests::{HostBuilder, repo_path};

#[test]
fn config_snapshots() {
    let dir = repo_path("tests/ui");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries.iter().filter(|p| p.extension().is_some_and(|e| e == "toml")) {
        let text = std::fs::read_to_string(path).unwrap();
        let shown = Path::new("/data/algobanana.toml");
        let actual = match algobanana::config::parse(&text, shown) {
            Ok(_) => "ok\n".to_owned(),
            Err(e) => format!("{e}\n"),
        };
        let expected_path = path.with_extension("err");
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(&expected_path, &actual).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        assert_eq!(actual, expected, "{} (run with BLESS=1 to update)", path.display());
        checked += 1;
    }
    assert!(checked >= 5, "snapshots found: {checked}");
}

#[tokio::test]
async fn a_corrupt_plugin_file_is_refused_at_start_with_a_clear_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("corrupt.wasm");
    std::fs::write(&bad, b"\0asm\x0d\0\x01\0this is not a component")?;
    let err = HostBuilder::new()
        .plugin("corrupt", bad.to_str().unwrap(), "rule")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("plugin `corrupt` is not a valid WebAssembly component"),
        "{err}"
    );
    assert!(err.contains("rebuild it for wasm32-wasip2"), "{err}");

    let missing = dir.path().join("missing.wasm");
    let err = HostBuilder::new()
        .plugin("gone", missing.to_str().unwrap(), "rule")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("plugin `gone`: cannot read"), "{err}");
    assert!(err.contains("check `source` in [plugins.gone]"), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_plugin_of_the_wrong_world_is_refused_naming_the_world() -> anyhow::Result<()> {
    // A plugin with a manifest: the manifest names its world.
    let err = HostBuilder::new()
        .plugin("not-a-broker", TRADINGVIEW, "broker")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("plugin `not-a-broker`: its manifest says world `rule` but [plugins.not-a-broker] says `broker`; set world = \"rule\""),
        "{err}"
    );
    // Without a manifest, the component's exports decide.
    let err = HostBuilder::new()
        .plugin("not-a-broker", PANICS, "broker")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("plugin `not-a-broker` does not implement the `broker` world"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_tampered_precompiled_cache_file_is_recompiled_not_run() -> anyhow::Result<()> {
    let (dir, tokens) = HostBuilder::new().write()?;
    let host = algobanana_tests::TestHost::start_in(dir, tokens, Default::default()).await?;
    let (dir, tokens) = host.stop().await;
    let cache = dir.path().join("cache");
    let mut files: Vec<_> = std::fs::read_dir(&cache)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "one .cwasm per plugin: {files:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&files[0])?.permissions().mode() & 0o777, 0o600);
    }
    // Flip bytes in the middle of a compiled file: it must not be loaded.
    let mut bytes = std::fs::read(&files[0])?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&files[0], &bytes)?;
    let host = algobanana_tests::TestHost::start_in(dir, tokens, Default::default()).await?;
    let reply = host.alert("default", "text/plain", "buy 1 AAPL at 1").await?;
    assert_eq!(reply.status, 200);
    assert_ne!(std::fs::read(&files[0])?, bytes, "the tampered file was replaced");
    Ok(())
}
