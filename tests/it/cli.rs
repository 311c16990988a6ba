//! The command line, through the same code `main` runs.

use algobanana::cli::{Cli, run};
use clap::Parser;

async fn cli(args: &[&str]) -> anyhow::Result<(u8, String)> {
    let cli = Cli::try_parse_from(std::iter::once("algobanana").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    let code = run(cli, &mut out).await?;
    Ok((code, String::from_utf8(out)?))
}

#[tokio::test]
async fn init_prints_the_token_once_as_json_and_refuses_to_overwrite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (code, out) = cli(&["init", "--data-dir", data, "--json"]).await?;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    let token = v["hook_token"].as_str().unwrap();
    assert!(token.starts_with("abh_") && token.len() >= 26, "≥128 bits: {token}");
    assert_eq!(v["hook_path"], format!("/v1/hooks/{token}"));
    let config = std::fs::read_to_string(dir.path().join("data/algobanana.toml"))?;
    assert!(!config.contains(token));
    let err = cli(&["init", "--data-dir", data]).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("will not overwrite an existing setup"),
        "{err:#}"
    );
    Ok(())
}

#[tokio::test]
async fn audit_search_prints_json_lines_and_a_table() -> anyhow::Result<()> {
    let host = algobanana_tests::TestHost::start().await?;
    let body = host.alert("default", "text/plain", "buy 2 AMD at 150").await?.json();
    let alert = body["alert_id"].as_str().unwrap();
    let data = host.path().to_str().unwrap().to_owned();
    let (_, out) = cli(&["audit", "search", "--data-dir", &data, "--json", "--alert", alert]).await?;
    let lines: Vec<serde_json::Value> = out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(
        lines.len(),
        7,
        "received, rule, positions, risk, intent, place-order, processed"
    );
    assert_eq!(lines[1]["action"], "plugin.call");
    assert_eq!(lines[1]["payload"]["output"][0]["symbol"], "AMD");
    let (_, table) = cli(&["audit", "search", "--data-dir", &data, "--action", "order.*"]).await?;
    assert!(table.lines().next().unwrap().contains("ACTION"));
    assert!(table.contains("order.intent"));
    let err = cli(&["audit", "search", "--data-dir", &data, "--since", "yesterday"])
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("RFC 3339"));
    Ok(())
}
