//! A power loss that rolls `state.db` back (its commits are `NORMAL`)
//! while the audit log (`FULL`) keeps what it acknowledged: the host
//! restores the lost alert and order rows from the log at start, resumes
//! what was unfinished, asks the broker about what was sent, and sends
//! nothing twice.
//!
//! The loss is made the way it happens: `state.db` is put back to a copy
//! taken earlier (a consistent prefix of its commits, which is what a WAL
//! that lost its unsynced tail leaves), while `audit.db` keeps everything.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use algobanana::audit::query::Filter;
use algobanana::trading::orders::OrderState;
use algobanana_tests::alpaca::{FakeAlpaca, KEY_ID, SECRET_KEY};
use algobanana_tests::plugins::ALPACA;
use algobanana_tests::{HostBuilder, TestHost, eventually};
use serde_json::{Value, json};

/// A consistent copy of `state.db` as it is now.
fn snapshot(dir: &Path) -> anyhow::Result<tempfile::TempDir> {
    let keep = tempfile::tempdir()?;
    let conn = rusqlite::Connection::open(dir.join("state.db"))?;
    conn.execute("VACUUM INTO ?1", [keep.path().join("state.db").to_str().unwrap()])?;
    Ok(keep)
}

/// `state.db` back to `snap`: every commit after it is lost.
fn roll_back(dir: &Path, snap: &Path) -> anyhow::Result<()> {
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    std::fs::copy(snap.join("state.db"), dir.join("state.db"))?;
    Ok(())
}

/// Sends a JSON alert to `route` and returns the answer.
async fn send_json(host: &TestHost, route: &str, body: &str) -> anyhow::Result<Value> {
    Ok(host.alert(route, "application/json", body).await?.json())
}

/// A buy on the default route (the paper broker), filled.
async fn buy_one(host: &TestHost) -> anyhow::Result<Value> {
    let reply = host.alert("default", "text/plain", "buy 1 AMD at 150").await?.json();
    assert_eq!(reply["orders"][0]["outcome"], "filled", "{reply}");
    Ok(reply)
}

fn recovered(host: &TestHost) -> anyhow::Result<Vec<Value>> {
    Ok(host
        .audit(&Filter {
            action: Some("state.recovered".into()),
            ..Filter::default()
        })?
        .into_iter()
        .map(|e| {
            let mut p = e.payload;
            p["outcome"] = json!(e.outcome);
            p
        })
        .collect())
}

fn place_calls(host: &TestHost) -> usize {
    host.audit(&Filter {
        action: Some("plugin.call".into()),
        ..Filter::default()
    })
    .unwrap()
    .iter()
    .filter(|e| e.payload["export"] == "place-order")
    .count()
}

#[tokio::test]
async fn an_interrupted_alert_whose_rows_a_power_loss_undid_resumes_and_sends_nothing_twice() -> anyhow::Result<()> {
    let fake = FakeAlpaca::start().await;
    let host = HostBuilder::new()
        .plugin("alpaca", ALPACA, "broker")
        .grant(&format!(
            "http = [{:?}]\nallow_loopback = true\nsecrets = [\"alpaca_key_id\", \"alpaca_secret_key\"]\n",
            fake.origin()
        ))
        .route("alpaca", "tradingview", "alpaca")
        .broker_settings(json!({ "base_url": fake.origin() }))
        .toml(&format!(
            "[secrets.alpaca_key_id]\nvalue = {KEY_ID:?}\n[secrets.alpaca_secret_key]\nvalue = {SECRET_KEY:?}\n[trading]\nresponse_budget_ms = 50\n"
        ))
        .start()
        .await?;
    let (dir, tokens) = host.stop().await;
    let before = snapshot(dir.path())?;
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;

    // Alpaca records the order, then answers only after 1.5 s: the alert
    // is acknowledged with a 202, its order is at the broker, and the host
    // stops before it hears back.
    fake.state
        .slow_accept_ms
        .store(1_500, std::sync::atomic::Ordering::SeqCst);
    let reply = host
        .alert(
            "alpaca",
            "application/json",
            r#"{"ticker":"AAPL","action":"buy","quantity":"3","price":"190.35","signalId":"sig-lost"}"#,
        )
        .await?;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.body));
    let alert_id = reply.json()["alert_id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(10), || (fake.posts() == 1).then_some(())).await?;
    let app = Arc::downgrade(&host.app);
    let (dir, tokens) = host.stop().await;
    // The pipeline's task ends when it finds the audit log closed.
    eventually(Duration::from_secs(10), || app.upgrade().is_none().then_some(())).await?;
    fake.state.slow_accept_ms.store(0, std::sync::atomic::Ordering::SeqCst);

    // The power loss: state.db loses the alert and its order; the audit
    // log has the alert's intake and its order intent.
    roll_back(dir.path(), before.path())?;
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;

    let r = recovered(&host)?;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["alerts"], json!([alert_id]), "{r:?}");
    assert_eq!(r[0]["orders"], json!(["sig-lost"]), "{r:?}");
    assert_eq!(r[0]["outcome"], "success");
    // Asked, not resent: Alpaca still has one order, and the host's row
    // has what Alpaca says of it.
    assert_eq!(fake.posts(), 1, "the order was not sent again");
    let orders = host.app.orders.of_alert(&alert_id)?;
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0].state, OrderState::Filled, "{orders:?}");
    // The alert ran again to its end and found its order.
    let (status, result) = host.app.state.alert_status(&alert_id)?.unwrap();
    assert_eq!(status, "processed");
    let result: Value = serde_json::from_str(&result.unwrap())?;
    assert_eq!(result["orders"][0]["outcome"], "duplicate", "{result}");
    assert_eq!(result["orders"][0]["client_order_id"], "sig-lost");

    // The same signal again: still one order.
    let again = send_json(
        &host,
        "alpaca",
        r#"{"ticker":"AAPL","action":"buy","quantity":"3","price":"190.35","signalId":"sig-lost"}"#,
    )
    .await?;
    assert_eq!(again["orders"][0]["outcome"], "duplicate", "{again}");
    assert_eq!(fake.posts(), 1);

    // Nothing is left to restore at the next start.
    let (dir, tokens) = host.stop().await;
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    assert_eq!(recovered(&host)?.len(), 1);
    assert_eq!(fake.posts(), 1);
    Ok(())
}

#[tokio::test]
async fn finished_alerts_are_restored_as_finished_and_an_edited_event_is_not_used() -> anyhow::Result<()> {
    // The paper broker's book rolls back with state.db: its "no such
    // order" is final at once, no grace needed.
    let host = HostBuilder::new()
        .toml("[trading]\nnot_found_grace_s = 0\n")
        .start()
        .await?;
    let (dir, tokens) = host.stop().await;
    let before = snapshot(dir.path())?;
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    let first = send_json(
        &host,
        "default",
        r#"{"ticker":"MSFT","action":"buy","quantity":"2","price":"410","signalId":"sig-a"}"#,
    )
    .await?;
    assert_eq!(first["orders"][0]["outcome"], "filled", "{first}");
    let second = buy_one(&host).await?;
    let (first_id, second_id) = (
        first["alert_id"].as_str().unwrap().to_owned(),
        second["alert_id"].as_str().unwrap().to_owned(),
    );
    let (dir, tokens) = host.stop().await;
    roll_back(dir.path(), before.path())?;
    // Someone also edits the second alert's intake in the audit log (past
    // its append-only trigger): its row is not restored from that event.
    {
        let conn = rusqlite::Connection::open(dir.path().join("audit.db"))?;
        conn.execute_batch("DROP TRIGGER audit_no_update;")?;
        let n = conn.execute(
            "UPDATE audit_event SET payload = replace(payload, 'buy 1 AMD', 'buy 900 AMD')
             WHERE action = 'alert.received' AND correlation_id = ?1",
            [&second_id],
        )?;
        assert_eq!(n, 1);
    }
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    let r = recovered(&host)?;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["finished"], json!([first_id]), "{r:?}");
    assert_eq!(r[0]["alerts"], json!([]), "nothing to resume: {r:?}");
    assert_eq!(r[0]["outcome"], "failure", "one event was skipped: {r:?}");
    let skipped = r[0]["skipped"][0].as_str().unwrap();
    assert!(
        skipped.contains("alert.received") && skipped.contains("does not match its entry hash"),
        "{skipped}"
    );
    // The first alert is finished with its recorded result, and is not run
    // again; its order is back and was asked of the paper broker, whose
    // book the power loss rolled back with state.db: never placed there.
    let (status, result) = host.app.state.alert_status(&first_id)?.unwrap();
    assert_eq!(status, "processed");
    assert_eq!(
        serde_json::from_str::<Value>(&result.unwrap())?["orders"][0]["outcome"],
        "filled"
    );
    assert_eq!(host.app.state.alert_status(&second_id)?, None);
    let orders = host.orders()?;
    let coids: Vec<&str> = orders.iter().map(|o| o.client_order_id.as_str()).collect();
    assert!(coids.contains(&"sig-a"), "{coids:?}");
    assert!(orders.iter().all(|o| o.state == OrderState::Rejected), "{orders:?}");
    assert!(
        orders[0].reason.as_deref().unwrap_or_default().contains("never placed"),
        "{orders:?}"
    );
    assert_eq!(place_calls(&host), 2, "the two alerts' own calls, nothing resent");
    // The restored order still blocks a repeat of its signal.
    let again = send_json(
        &host,
        "default",
        r#"{"ticker":"MSFT","action":"buy","quantity":"2","price":"410","signalId":"sig-a"}"#,
    )
    .await?;
    assert_eq!(again["orders"][0]["outcome"], "duplicate", "{again}");
    Ok(())
}

#[tokio::test]
async fn a_state_db_made_anew_does_not_replay_the_audit_log() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    buy_one(&host).await?;
    let (dir, tokens) = host.stop().await;
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    assert_eq!(recovered(&host)?, Vec::<Value>::new());
    assert!(host.orders()?.is_empty());
    assert_eq!(place_calls(&host), 1);
    Ok(())
}

#[tokio::test]
async fn operators_decisions_are_synced_when_made() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let before = host.app.state.durable_commits();
    let (token, _) = host
        .app
        .tokens
        .create("ops", "admin", algobanana::admin::rbac::Role::Admin, None)?;
    let bearer = format!("Bearer {token}");
    for state in ["on", "off"] {
        let reply = host
            .request(
                "PUT",
                "/v1/kill-switch",
                &[("authorization", bearer.as_str()), ("content-type", "application/json")],
                format!(r#"{{"state":"{state}","reason":"drill"}}"#).into_bytes(),
            )
            .await?;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    }
    assert_eq!(
        host.app.state.durable_commits(),
        before + 3,
        "the token and both switches"
    );
    // An alert's own rows are not: the audit log rebuilds them.
    buy_one(&host).await?;
    assert_eq!(host.app.state.durable_commits(), before + 3);
    Ok(())
}

#[tokio::test]
async fn an_alert_whose_finish_was_lost_is_finished_from_the_log_not_run_again() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let reply = buy_one(&host).await?;
    let id = reply["alert_id"].as_str().unwrap().to_owned();
    let (dir, tokens) = host.stop().await;
    // The alert's row and its order survived; the finish did not.
    {
        let conn = rusqlite::Connection::open(dir.path().join("state.db"))?;
        conn.execute(
            "UPDATE alert SET status = 'received', result = NULL WHERE id = ?1",
            [&id],
        )?;
    }
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    let r = recovered(&host)?;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["finished"], json!([id]), "{r:?}");
    assert_eq!(r[0]["orders"], json!([]), "{r:?}");
    let (status, result) = host.app.state.alert_status(&id)?.unwrap();
    assert_eq!(status, "processed");
    assert_eq!(
        serde_json::from_str::<Value>(&result.unwrap())?["orders"][0]["outcome"],
        "filled"
    );
    let processed = host
        .audit_of(&id)?
        .into_iter()
        .filter(|e| e.action == "alert.processed")
        .count();
    assert_eq!(processed, 1, "not run again");
    assert_eq!(place_calls(&host), 1);
    Ok(())
}

/// `state.db`'s writes are batched (`host/src/store/batch.rs`), and the
/// batch holding an alert's writes commits before its answer: another
/// connection (another process) sees them as soon as the sender has it.
#[tokio::test]
async fn an_answer_comes_after_what_its_alert_changed_is_committed() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let other = rusqlite::Connection::open(host.path().join("state.db"))?;
    for i in 0..5 {
        let reply = host
            .alert("default", "text/plain", &format!("buy 1 AMD at {}", 150 + i))
            .await?
            .json();
        assert_eq!(reply["orders"][0]["outcome"], "filled", "{reply}");
        let id = reply["alert_id"].as_str().unwrap();
        let status: String = other.query_row("SELECT status FROM alert WHERE id = ?1", [id], |r| r.get(0))?;
        assert_eq!(status, "processed");
        let state: String = other.query_row("SELECT state FROM orders WHERE alert_id = ?1", [id], |r| r.get(0))?;
        assert_eq!(state, "filled");
        let coid = reply["orders"][0]["client_order_id"].as_str().unwrap();
        let booked: i64 = other.query_row(
            "SELECT count(*) FROM plugin_kv WHERE plugin = 'paper' AND instr(key, ?1) > 0",
            [coid],
            |r| r.get(0),
        )?;
        assert_eq!(booked, 1, "the paper broker's record of {coid}");
    }
    Ok(())
}
