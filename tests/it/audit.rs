//! The audit store: chain, append-only guards, search, and failing closed.

use algobanana::admin::rbac::Role;
use algobanana::app::{AppOptions, Retention};
use algobanana::audit::chain::{self, Row};
use algobanana::audit::query::Filter;
use algobanana::audit::writer::AuditOptions;
use algobanana_tests::{HostBuilder, TestHost};

#[tokio::test]
async fn every_event_is_hash_chained_to_the_previous_one() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    for alert in ["buy 1 AAPL at 10", "{bad", "sell 1 AAPL at 11"] {
        host.alert("default", "text/plain", alert).await?;
    }
    let install_id = host.app.audit.install_id().to_owned();
    let (dir, _) = host.stop().await;
    let events = algobanana::audit::query::search(&dir.path().join("audit.db"), &Filter::default())?;
    assert!(events.len() >= 14, "start, 3 alerts, stop: {}", events.len());
    assert_eq!(events[0].action, "system.start");
    assert_eq!(events.last().unwrap().action, "system.stop");
    let mut prev = chain::genesis(&install_id);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "contiguous");
        assert_eq!(e.prev_hash, hex::encode(prev), "seq {} links to its predecessor", e.seq);
        let payload = serde_json::to_string(&e.payload)?;
        let row = Row {
            seq: e.seq,
            ts_ns: e.ts_ns,
            actor_kind: &e.actor_kind,
            actor_id: &e.actor_id,
            action: &e.action,
            resource: e.resource.as_deref(),
            outcome: &e.outcome,
            request_id: e.request_id.as_deref(),
            correlation_id: e.correlation_id.as_deref(),
            session_id: e.session_id.as_deref(),
            source_ip: e.source_ip.as_deref(),
            user_agent: e.user_agent.as_deref(),
            payload: &payload,
        };
        let hash = chain::entry_hash(&row, &prev);
        assert_eq!(
            e.entry_hash,
            hex::encode(hash),
            "seq {} hash recomputes from its fields",
            e.seq
        );
        prev = hash;
    }
    Ok(())
}

#[tokio::test]
async fn audit_rows_cannot_be_updated_or_deleted() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    host.alert("default", "text/plain", "buy 1 AAPL at 10").await?;
    let conn = rusqlite::Connection::open(host.path().join("audit.db"))?;
    let update = conn
        .execute("UPDATE audit_event SET outcome = 'success' WHERE seq = 1", [])
        .unwrap_err();
    assert!(update.to_string().contains("append-only"), "{update}");
    let delete = conn.execute("DELETE FROM audit_event WHERE seq = 1", []).unwrap_err();
    assert!(delete.to_string().contains("recorded prune"), "{delete}");
    let gap = conn
        .execute(
            "INSERT INTO audit_event(seq, ts_ns, actor_kind, actor_id, action, outcome, payload, prev_hash, entry_hash)
             VALUES (999, 0, 'x', 'x', 'x', 'x', '{}', zeroblob(32), zeroblob(32))",
            [],
        )
        .unwrap_err();
    assert!(gap.to_string().contains("contiguous"), "{gap}");
    Ok(())
}

#[tokio::test]
async fn search_filters_by_action_prefix_outcome_and_free_text() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    host.alert("default", "text/plain", "buy 3 NVDA at 900").await?;
    host.alert("default", "text/plain", "nonsense").await?;
    let plugin_events = host.audit(&Filter {
        action: Some("plugin.*".into()),
        ..Filter::default()
    })?;
    assert_eq!(plugin_events.len(), 4, "rule, positions, place-order; rule");
    let failures = host.audit(&Filter {
        outcome: Some("failure".into()),
        action: Some("plugin.call".into()),
        ..Filter::default()
    })?;
    assert_eq!(failures.len(), 1);
    let nvda = host.audit(&Filter {
        text: Some("NVDA".into()),
        ..Filter::default()
    })?;
    assert!(
        nvda.iter().any(|e| e.action == "order.intent"),
        "free text finds the symbol inside payloads"
    );
    // The second alert's rule asked for no portfolio (its manifest fetches
    // it on request), so NVDA appears only in the first alert's rows.
    assert!(nvda.iter().all(|e| e.correlation_id == nvda[0].correlation_id));
    let short = host
        .audit(&Filter {
            text: Some("NV".into()),
            ..Filter::default()
        })
        .unwrap_err();
    assert!(short.to_string().contains("at least 3 characters"));
    Ok(())
}

#[tokio::test]
async fn a_full_audit_disk_halts_the_host_and_loses_nothing_acknowledged() -> anyhow::Result<()> {
    // A page cap makes SQLite report "database or disk is full" after a few
    // dozen alerts, exactly as a full disk would.
    let options = AppOptions {
        audit: AuditOptions {
            max_page_count: Some(60),
            ..AuditOptions::default()
        },
        ..AppOptions::default()
    };
    let host = HostBuilder::new().options(options).start().await?;
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for i in 0..500 {
        let reply = host
            .alert("default", "text/plain", &format!("buy 1 AAPL at {}", 100 + i))
            .await?;
        if reply.status == 200 {
            acknowledged.push(reply.json()["alert_id"].as_str().unwrap().to_owned());
        } else {
            refusal = Some(reply);
            break;
        }
    }
    let refusal = refusal.expect("the audit database filled up");
    assert_eq!(refusal.status, 503);
    let body = refusal.json();
    assert_eq!(body["error"]["kind"], "audit_unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("full"), "{message}");
    assert!(message.contains("restart"), "says what to do: {message}");
    assert!(!acknowledged.is_empty());

    let health = host.request("GET", "/healthz", &[], Vec::new()).await?;
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["status"], "halted");
    let next = host.alert("default", "text/plain", "buy 1 AAPL at 1").await?;
    assert_eq!(next.status, 503, "no alert is processed while halted");

    // Every acknowledged alert is in the audit log with its whole story.
    for id in &acknowledged {
        let events = host.audit_of(id)?;
        assert_eq!(events.last().unwrap().action, "alert.processed", "alert {id}");
    }
    Ok(())
}

/// Sets or clears the immutable attribute on every file in `dir` and on
/// `dir` itself. Returns false when the file system or the user cannot
/// (then the test says so loudly instead of pretending).
fn set_immutable(dir: &std::path::Path, on: bool) -> bool {
    let flag = if on { "+i" } else { "-i" };
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        // The WAL index (`-shm`) is a shared memory map, not data: a fault on
        // it is SIGBUS, not an error SQLite could report.
        .filter(|p| p.is_file() && !p.to_string_lossy().ends_with("-shm"))
        .collect();
    paths.push(dir.to_owned());
    paths.iter().all(|p| {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(p)
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[tokio::test]
async fn a_read_only_data_dir_halts_the_host_and_loses_nothing_acknowledged() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let reply = host
            .alert("default", "text/plain", &format!("buy 1 AAPL at {}", 100 + i))
            .await?;
        assert_eq!(reply.status, 200);
        acknowledged.push(reply.json()["alert_id"].as_str().unwrap().to_owned());
    }
    // Root ignores permission bits, so make the files immutable instead
    // (writes through already-open descriptors then fail with EPERM, as on
    // a disk remounted read-only). Without chattr support, use permissions.
    let dir = host.path().to_owned();
    let immutable = set_immutable(&dir, true);
    if !immutable {
        set_immutable(&dir, false);
        eprintln!("chattr +i is not available here; falling back to permission bits (effective only when not root)");
        use std::os::unix::fs::PermissionsExt;
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.is_file() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444))?;
            }
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555))?;
    }
    let refusal = host.alert("default", "text/plain", "buy 1 AAPL at 1").await?;
    let health = host.request("GET", "/healthz", &[], Vec::new()).await?;
    let next = host.alert("default", "text/plain", "buy 1 AAPL at 2").await?;
    if immutable {
        set_immutable(&dir, false);
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.is_file() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
            }
        }
    }
    assert!(
        refusal.status == 503 || refusal.status == 500,
        "a write that cannot be made is refused: {} {}",
        refusal.status,
        String::from_utf8_lossy(&refusal.body)
    );
    let message = refusal.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("read-only"), "names the likely cause: {message}");
    assert!(message.contains("restart"), "says what to do: {message}");
    assert_eq!(health.status, 503, "{}", String::from_utf8_lossy(&health.body));
    assert_eq!(health.json()["status"], "halted");
    assert!(
        health.json()["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "health says why: {}",
        String::from_utf8_lossy(&health.body)
    );
    assert_eq!(next.status, 503, "no alert is processed while halted");

    // Everything acknowledged before the failure is there, whole.
    for id in &acknowledged {
        let events = host.audit_of(id)?;
        assert_eq!(events.last().unwrap().action, "alert.processed", "alert {id}");
    }
    Ok(())
}

/// `[audit] retention_days`: the running host archives and removes what
/// is older than the policy, at a signed checkpoint, into `archive_dir`;
/// the log still verifies, the archive verifies offline, and the prune is
/// an event of the host's own.
#[tokio::test]
async fn the_retention_policy_archives_and_prunes_while_the_host_runs() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .toml("[audit]\nretention_days = 30\narchive_dir = \"old-audit\"\n")
        .start()
        .await?;
    for n in 1..=3 {
        let reply = host
            .alert("default", "text/plain", &format!("buy {n} AAPL at 100"))
            .await?;
        assert_eq!(reply.status, 200);
    }
    let now = algobanana::audit::now_ns();
    // Nothing is 30 days old yet.
    assert_eq!(host.app.apply_retention(now).await?, Retention::default());
    host.app.audit.checkpoint_now().await?;
    let later = host.alert("default", "text/plain", "buy 4 AAPL at 100").await?.json();
    let later_id = later["alert_id"].as_str().unwrap().to_owned();
    let alerts = |host: &TestHost| -> anyhow::Result<i64> {
        Ok(host
            .app
            .state
            .with(|c| c.query_row("SELECT count(*) FROM alert", [], |r| r.get(0)))?)
    };
    assert_eq!(alerts(&host)?, 4);
    // 31 days on: everything up to the checkpoint goes, the last alert stays.
    let day = 86_400_000_000_000i64;
    let run = host.app.apply_retention(now + 31 * day).await?;
    let report = run.audit.expect("a prune");
    assert_eq!(report.pruned_from, 0);
    assert!(report.archive.starts_with(host.path().join("old-audit")), "{report:?}");
    let archive = algobanana::audit::verify::verify_export(&report.archive, &[], &Default::default())
        .map_err(anyhow::Error::msg)?;
    assert!(archive.intact(), "{:#?}", archive.findings);
    let log =
        algobanana::audit::verify::verify_db(&host.path().join(algobanana::audit::AUDIT_DB), &[], &Default::default())
            .map_err(anyhow::Error::msg)?;
    assert!(log.intact(), "{:#?}", log.findings);
    let left = host.audit(&Filter::default())?;
    assert!(left.iter().all(|e| e.seq > report.pruned_through as u64));
    assert!(!host.audit_of(&later_id)?.is_empty(), "newer than the cut: kept");
    let pruned = left.iter().find(|e| e.action == "audit.pruned").unwrap();
    assert_eq!(
        (pruned.actor_kind.as_str(), pruned.actor_id.as_str()),
        ("system", "retention")
    );
    assert_eq!(pruned.payload["policy"], "retention_days = 30");
    // The alerts themselves (their bodies) leave state.db too, all four
    // received before the cut; the orders stay, and so does the record.
    assert_eq!(run.alerts_removed, 4);
    assert_eq!(alerts(&host)?, 0);
    assert_eq!(host.orders()?.len(), 4);
    let removed = left.iter().find(|e| e.action == "alerts.pruned").unwrap();
    assert_eq!(removed.payload["removed"], 4);
    let (token, _) = host.app.tokens.create("ops", "admin", Role::Admin, None)?;
    let bearer = format!("Bearer {token}");
    let gone = host
        .request(
            "GET",
            &format!("/v1/alerts/{later_id}"),
            &[("authorization", bearer.as_str())],
            Vec::new(),
        )
        .await?;
    assert_eq!(gone.status, 404);
    // Nothing more to cut until the next checkpoint.
    assert_eq!(host.app.apply_retention(now + 31 * day).await?, Retention::default());
    // A restart does not bring them back from the audit log, which still
    // holds the last one's `alert.received`.
    let (dir, tokens) = host.stop().await;
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    assert_eq!(alerts(&host)?, 0);

    // Off by default.
    let plain = TestHost::start().await?;
    assert_eq!(
        plain.app.apply_retention(now + 10_000 * day).await?,
        Retention::default()
    );
    Ok(())
}
