//! The real `algobanana` binary's plugin tools: `plugin test` prints each
//! output and the use of every limit and exits 0, 1 on a differing
//! `--expect`, and `plugin new` writes a project. The build-and-run checks
//! of every language are in `tests/it/author.rs`.

use std::process::Command;

fn algobanana(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_algobanana"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn plugin_test_prints_outputs_and_limits_and_checks_expectations() {
    let dir = tempfile::tempdir().unwrap();
    let alert = dir.path().join("buy.txt");
    std::fs::write(&alert, "buy 3 AAPL at 101.25").unwrap();
    let expect = dir.path().join("expected.json");
    std::fs::write(
        &expect,
        r#"[[{"symbol":"AAPL","side":"buy","quantity":"3","order_type":{"type":"market"},"time_in_force":"day","client_order_id":null,"reduce_only":false,"reference_price":"101.25","take_profit":null,"stop_loss":null}]]"#,
    )
    .unwrap();
    let alert = alert.to_str().unwrap();
    let (code, out, err) = algobanana(&[
        "plugin",
        "test",
        "builtin:tradingview",
        "--alert",
        alert,
        "--expect",
        expect.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    for text in [
        "tradingview@0.1.0, sha256:",
        "outcome: ok: 1 order intent(s)",
        "\"reference_price\": \"101.25\"",
        "ms deadline",
        "MiB",
        "fuel    off",
        "intents          1     / 32",
        "B per call",
        "matches the expected output",
    ] {
        assert!(out.contains(text), "{text}: {out}");
    }

    std::fs::write(&expect, "[[]]").unwrap();
    let (code, out, _) = algobanana(&[
        "plugin",
        "test",
        "builtin:tradingview",
        "--alert",
        alert,
        "--expect",
        expect.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("MISMATCH: expected []"), "{out}");

    let (code, _, err) = algobanana(&["plugin", "test", "builtin:paper", "--alert", alert]);
    assert_eq!(code, 1);
    assert!(
        err.contains("builtin:paper is a broker plugin (paper); plugin test runs rule plugins"),
        "{err}"
    );

    let (code, _, err) = algobanana(&["plugin", "test", "builtin:nope", "--alert", alert]);
    assert_eq!(code, 1);
    assert!(err.contains("there is no built-in plugin `nope`"), "{err}");
}

#[test]
fn plugin_new_writes_a_project_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("my-rule");
    let p = project.to_str().unwrap();
    let (code, out, err) = algobanana(&["plugin", "new", "--lang", "python", "my-rule", "--dir", p]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("build.py"), "says what to run next: {out}");
    for f in [
        "app.py",
        "build.py",
        "requirements.txt",
        "plugin.toml",
        "wit/worlds.wit",
        "alerts/expected.json",
    ] {
        assert!(project.join(f).is_file(), "{f}");
    }
    let (code, _, err) = algobanana(&["plugin", "new", "--lang", "js", "my-rule", "--dir", p]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists and is not empty"), "{err}");
    let (code, _, err) = algobanana(&["plugin", "new", "--lang", "rust", "My_Rule"]);
    assert_eq!(code, 1);
    assert!(err.contains("not a valid plugin name"), "{err}");
}
