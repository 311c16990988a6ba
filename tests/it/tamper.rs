//! The tamper sweep: a log of a few thousand events, edited directly in
//! the SQLite file with the triggers dropped, must be caught by
//! `audit verify` with the right class and the right first bad sequence
//! number. Also: exports verified offline, prune, key rotation and the
//! witness file.

use std::path::{Path, PathBuf};

use algobanana::audit::chain::{self, Hash};
use algobanana::audit::checkpoint::{Body, Kind, signed_note};
use algobanana::audit::export::{self, Format};
use algobanana::audit::keys::AuditKey;
use algobanana::audit::prune::PruneRequest;
use algobanana::audit::query::{self, Filter, RawRow};
use algobanana::audit::verify::{self, Options, Report};
use algobanana::audit::writer::{AuditOptions, MAX_BATCH};
use algobanana::audit::{ActorKind, AuditEvent, AuditLog, Context, Outcome, action};
use rusqlite::{Connection, params};

/// Events in the first session; the second session adds as many again.
const HALF: u64 = 1500;
/// Checkpoint cadence for the fixture (production: 1,000).
const EVERY: u64 = 400;

struct Base {
    dir: tempfile::TempDir,
    /// The database after both sessions.
    db: PathBuf,
    /// A copy taken after the first session (for the rollback case).
    older: PathBuf,
    /// Every checkpoint note of the final log.
    witness: Vec<String>,
    /// `(id, upto_seq)` of every checkpoint.
    checkpoints: Vec<(i64, i64)>,
    /// The pinned key id.
    key_id: String,
    /// Total events.
    size: u64,
}

fn options() -> AuditOptions {
    AuditOptions {
        checkpoint_events: EVERY,
        ..AuditOptions::default()
    }
}

fn event(i: u64) -> AuditEvent {
    let kinds = [
        ActorKind::WebhookSource,
        ActorKind::Plugin,
        ActorKind::ApiToken,
        ActorKind::User,
    ];
    let actions = [
        action::ALERT_RECEIVED,
        action::PLUGIN_CALL,
        action::ORDER_INTENT,
        action::CONFIG_CHANGED,
    ];
    let outcomes = [Outcome::Success, Outcome::Allow, Outcome::Deny, Outcome::Failure];
    let k = usize::try_from(i % 4).unwrap();
    let context = Context {
        request_id: Some(format!("req-{i:06}")),
        correlation_id: Some(format!("alert-{:06}", i / 3)),
        session_id: Some(format!("session-{}", i % 7)),
        source_ip: Some(std::net::IpAddr::from([203, 0, 113, u8::try_from(i % 250).unwrap()])),
        user_agent: Some("Go-http-client/1.1".into()),
    };
    AuditEvent::new(kinds[k], format!("actor-{}", i % 11), actions[k], outcomes[k])
        .resource(format!("route/r{}", i % 5))
        .context(&context)
        .payload(serde_json::json!({ "i": i, "symbol": "AAPL", "qty": "1.5", "note": "naïve ünïcode" }))
}

async fn fill(log: &AuditLog, range: std::ops::Range<u64>) -> anyhow::Result<()> {
    let mut receipts = Vec::new();
    for i in range {
        receipts.push(log.append(event(i)).await?);
    }
    for r in receipts {
        r.committed().await?;
    }
    Ok(())
}

/// Two sessions of the writer (so the log holds start, periodic and stop
/// checkpoints), with a copy of the file between them.
async fn base() -> anyhow::Result<Base> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("audit.db");
    let log = AuditLog::open(&db, options())?;
    fill(&log, 0..HALF).await?;
    log.close();
    let older = dir.path().join("older.db");
    copy_db(&db, &older)?;
    let log = AuditLog::open(&db, options())?;
    fill(&log, HALF..2 * HALF).await?;
    log.close();

    let conn = query::open_read_only(&db)?;
    let material = verify::material_from_db(&conn)?;
    let witness = material.checkpoints.iter().map(|c| c.note.clone()).collect();
    let checkpoints = material.checkpoints.iter().map(|c| (c.id, c.upto_seq)).collect();
    let size: u64 = conn.query_row("SELECT count(*) FROM audit_event", [], |r| r.get(0))?;
    let base = Base {
        db,
        older,
        witness,
        checkpoints,
        key_id: material.keys[0].0.clone(),
        size,
        dir,
    };
    let report = check(&base.db, &base.witness)?;
    assert!(report.intact(), "the untouched log verifies: {:#?}", report.findings);
    assert_eq!(report.events, size);
    // Two starts, two stops, and periodic ones. The writer signs after the
    // first committed batch that brings the unsigned count to EVERY, and a
    // batch holds up to MAX_BATCH events (how many depends on how fast the
    // writer drains the queue), so one comes at least every
    // EVERY + MAX_BATCH - 1 events.
    let most_apart = EVERY + MAX_BATCH as u64 - 1;
    assert!(report.checkpoints >= 2 * (HALF / most_apart + 2), "{report:#?}");
    assert_eq!(report.unsigned_tail, 0, "a clean stop signs everything");
    Ok(base)
}

fn copy_db(from: &Path, to: &Path) -> anyhow::Result<()> {
    // The writer is closed: SQLite folded the WAL into the file on close.
    assert!(!from.with_extension("db-wal").exists() || std::fs::metadata(from.with_extension("db-wal"))?.len() == 0);
    std::fs::copy(from, to)?;
    Ok(())
}

fn check(db: &Path, witness: &[String]) -> anyhow::Result<Report> {
    verify::verify_db(db, witness, &Options::default()).map_err(anyhow::Error::msg)
}

impl Base {
    /// A fresh copy of the final log with the guard triggers dropped, as an
    /// attacker with write access to the file would have it.
    fn copy(&self, name: &str) -> anyhow::Result<(PathBuf, Connection)> {
        let path = self.dir.path().join(format!("{name}.db"));
        copy_db(&self.db, &path)?;
        let conn = Connection::open(&path)?;
        conn.execute_batch(
            "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; DROP TRIGGER audit_seq_contiguous;
             DROP TRIGGER audit_checkpoint_no_update; DROP TRIGGER audit_checkpoint_no_delete;
             DROP TRIGGER audit_fts_ad;",
        )?;
        Ok((path, conn))
    }

    /// A copy of the final log with its signing key, in a data dir of its
    /// own, for the writer to open again (prune, rotation).
    fn data_dir(&self) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("audit.db");
        copy_db(&self.db, &db)?;
        std::fs::create_dir_all(dir.path().join("keys"))?;
        std::fs::copy(
            self.dir.path().join("keys/audit-signing.key"),
            dir.path().join("keys/audit-signing.key"),
        )?;
        Ok((dir, db))
    }

    /// The last checkpoint at or before `seq` (what still vouches for it).
    fn last_signed_before(&self, seq: u64) -> i64 {
        self.checkpoints
            .iter()
            .map(|c| c.1)
            .filter(|u| *u < i64::try_from(seq).unwrap())
            .max()
            .unwrap_or(-1)
    }
}

/// Asserts the report's first bad sequence number and that a finding of
/// `class` names it.
#[track_caller]
fn assert_first(report: &Report, case: &str, class: &str, seq: u64) {
    assert!(!report.intact(), "{case}: not detected");
    assert_eq!(
        report.first_bad_seq,
        Some(seq),
        "{case}: first bad seq; findings: {:#?}",
        report.findings
    );
    assert!(
        report.findings.iter().any(|f| f.class == class && f.seq == Some(seq)),
        "{case}: expected {class} at seq {seq}; findings: {:#?}",
        report.findings
    );
}

fn row(conn: &Connection, seq: u64) -> anyhow::Result<RawRow> {
    Ok(conn.query_row(
        &format!("SELECT {} FROM audit_event WHERE seq = ?1", query::COLUMNS),
        [seq],
        RawRow::from_sql,
    )?)
}

fn hash_of(hex_text: &str) -> Hash {
    Hash::try_from(hex::decode(hex_text).unwrap().as_slice()).unwrap()
}

fn insert(conn: &Connection, r: &RawRow) -> anyhow::Result<()> {
    conn.execute(
        &format!(
            "INSERT INTO audit_event({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            query::COLUMNS
        ),
        params![
            i64::try_from(r.seq)?,
            r.ts_ns,
            r.actor_kind,
            r.actor_id,
            r.action,
            r.resource,
            r.outcome,
            r.request_id,
            r.correlation_id,
            r.session_id,
            r.source_ip,
            r.user_agent,
            r.payload,
            hex::decode(&r.prev_hash)?,
            hex::decode(&r.entry_hash)?,
        ],
    )?;
    Ok(())
}

/// Rehashes `seq..` so every row's own hash and link recompute.
fn rehash_from(conn: &Connection, seq: u64) -> anyhow::Result<()> {
    let mut prev = hash_of(&row(conn, seq)?.prev_hash);
    let last: i64 = conn.query_row("SELECT max(seq) FROM audit_event", [], |r| r.get(0))?;
    for s in seq..=u64::try_from(last)? {
        let mut r = row(conn, s)?;
        let h = chain::entry_hash(&r.chain_row(), &prev);
        r.prev_hash = hex::encode(prev);
        conn.execute(
            "UPDATE audit_event SET prev_hash = ?1, entry_hash = ?2 WHERE seq = ?3",
            params![prev.to_vec(), h.to_vec(), i64::try_from(s)?],
        )?;
        prev = h;
    }
    Ok(())
}

const TEXT_COLUMNS: &[&str] = &[
    "actor_kind",
    "actor_id",
    "action",
    "resource",
    "outcome",
    "request_id",
    "correlation_id",
    "session_id",
    "source_ip",
    "user_agent",
    "payload",
];

#[tokio::test]
async fn a_flipped_byte_in_any_field_is_tampered_at_that_seq() -> anyhow::Result<()> {
    let base = base().await?;
    // Sampled rows: the first, one on a checkpoint boundary, one in each
    // session, one after the restart and the last.
    let samples = [0, EVERY - 1, 777, HALF, HALF + 1, 2 * HALF - 1];
    for (n, seq) in samples.into_iter().enumerate() {
        let (path, conn) = base.copy(&format!("flip-{n}"))?;
        let columns: Vec<&str> = TEXT_COLUMNS
            .iter()
            .copied()
            .chain(["ts_ns", "prev_hash", "entry_hash"])
            .collect();
        for column in columns {
            let before = row(&conn, seq)?;
            match column {
                "ts_ns" => conn.execute("UPDATE audit_event SET ts_ns = ts_ns + 1 WHERE seq = ?1", [seq])?,
                "prev_hash" | "entry_hash" => {
                    let mut b: Vec<u8> = conn.query_row(
                        &format!("SELECT {column} FROM audit_event WHERE seq = ?1"),
                        [seq],
                        |r| r.get(0),
                    )?;
                    b[17] ^= 0x01;
                    conn.execute(
                        &format!("UPDATE audit_event SET {column} = ?1 WHERE seq = ?2"),
                        params![b, seq],
                    )?
                }
                _ => {
                    // Flip one bit of one byte in the middle, as bit rot or a
                    // hex editor would; the result need not be valid UTF-8.
                    let mut b: Vec<u8> = conn.query_row(
                        &format!("SELECT CAST({column} AS BLOB) FROM audit_event WHERE seq = ?1"),
                        [seq],
                        |r| r.get(0),
                    )?;
                    let mid = b.len() / 2;
                    b[mid] ^= 0x01;
                    conn.execute(
                        &format!("UPDATE audit_event SET {column} = CAST(?1 AS TEXT) WHERE seq = ?2"),
                        params![b, seq],
                    )?
                }
            };
            assert_ne!(row(&conn, seq)?, before, "{column} changed");
            let report = check(&path, &[])?;
            assert_first(&report, &format!("seq {seq} {column}"), "TAMPERED", seq);
            // Put it back for the next column.
            conn.execute("DELETE FROM audit_event WHERE seq = ?1", [seq])?;
            insert(&conn, &before)?;
            assert!(check(&path, &[])?.intact(), "restored seq {seq} after {column}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn deleted_inserted_swapped_and_rehashed_rows_are_found() -> anyhow::Result<()> {
    let base = base().await?;

    // Delete a row: a gap at its seq.
    let (path, conn) = base.copy("delete")?;
    conn.execute("DELETE FROM audit_event WHERE seq = 1234", [])?;
    assert_first(&check(&path, &[])?, "delete", "GAP", 1234);

    // Delete the newest rows: the stop checkpoint covers them.
    let (path, conn) = base.copy("truncate")?;
    conn.execute("DELETE FROM audit_event WHERE seq >= ?1", [base.size - 10])?;
    assert_first(&check(&path, &[])?, "truncate", "GAP", base.size - 10);

    // Insert a forged row in the middle (suffix renumbered), naively hashed.
    let (path, conn) = base.copy("insert")?;
    let at = 2001;
    conn.execute_batch(&format!(
        "UPDATE audit_event SET seq = -seq - 1 WHERE seq >= {at}; UPDATE audit_event SET seq = -seq WHERE seq < 0;"
    ))?;
    let mut forged = row(&conn, at - 1)?;
    forged.seq = at;
    forged.action = "order.intent".into();
    forged.payload = r#"{"forged":true}"#.into();
    insert(&conn, &forged)?;
    assert_first(&check(&path, &[])?, "insert", "TAMPERED", at);

    // The same insert with a correctly computed hash for the forged row:
    // the forged row itself recomputes and links, so the first provably bad
    // row is the one after it (its seq moved, and seq is hashed).
    let (path, conn) = base.copy("insert-hashed")?;
    conn.execute_batch(&format!(
        "UPDATE audit_event SET seq = -seq - 1 WHERE seq >= {at}; UPDATE audit_event SET seq = -seq WHERE seq < 0;"
    ))?;
    let prev = row(&conn, at - 1)?;
    let mut forged = prev.clone();
    forged.seq = at;
    forged.payload = r#"{"forged":true}"#.into();
    forged.prev_hash = prev.entry_hash.clone();
    forged.entry_hash = hex::encode(chain::entry_hash(&forged.chain_row(), &hash_of(&prev.entry_hash)));
    insert(&conn, &forged)?;
    let report = check(&path, &[])?;
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.class == "TAMPERED" && f.seq == Some(at + 1)),
        "{:#?}",
        report.findings
    );
    assert_eq!(report.first_bad_seq, Some(at + 1), "{:#?}", report.findings);

    // Swap two rows' contents (each keeps its seq).
    let (path, conn) = base.copy("swap")?;
    let (a, b) = (row(&conn, 500)?, row(&conn, 2500)?);
    conn.execute("DELETE FROM audit_event WHERE seq IN (500, 2500)", [])?;
    insert(&conn, &RawRow { seq: 500, ..b.clone() })?;
    insert(&conn, &RawRow { seq: 2500, ..a.clone() })?;
    assert_first(&check(&path, &[])?, "swap", "TAMPERED", 500);

    // Rewrite one payload and rehash the whole suffix: every row recomputes
    // and links, so only the signed checkpoint heads can tell, and the
    // first bad seq is the first one after the last checkpoint that still
    // matches.
    for k in [100, 1700, 2 * HALF - 5] {
        let (path, conn) = base.copy(&format!("rehash-{k}"))?;
        conn.execute(
            "UPDATE audit_event SET payload = '{\"i\":0,\"qty\":\"1000\",\"symbol\":\"AAPL\"}' WHERE seq = ?1",
            [k],
        )?;
        rehash_from(&conn, k)?;
        let report = check(&path, &[])?;
        assert!(
            !report
                .findings
                .iter()
                .any(|f| f.class == "TAMPERED" || f.class == "CHAIN BREAK"),
            "rehash-{k}: the chain itself recomputes: {:#?}",
            report.findings
        );
        let first = u64::try_from(base.last_signed_before(k) + 1)?;
        assert!(first <= k);
        assert_first(&report, &format!("rehash-{k}"), "CHECKPOINT HEAD", first);
    }

    // Rows added while the host was stopped and rehashed to link: the next
    // start checkpoint would sign them, but it cannot match the stop.
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("audit.db");
    copy_db(&base.db, &db)?;
    {
        let conn = Connection::open(&db)?;
        let last = row(&conn, base.size - 1)?;
        let mut forged = last.clone();
        forged.seq = base.size;
        forged.payload = r#"{"forged":true}"#.into();
        forged.prev_hash = last.entry_hash.clone();
        forged.entry_hash = hex::encode(chain::entry_hash(&forged.chain_row(), &hash_of(&last.entry_hash)));
        insert(&conn, &forged)?;
    }
    std::fs::create_dir_all(dir.path().join("keys"))?;
    std::fs::copy(
        base.dir.path().join("keys/audit-signing.key"),
        dir.path().join("keys/audit-signing.key"),
    )?;
    AuditLog::open(&db, options())?.close();
    assert_first(&check(&db, &[])?, "offline append", "TAMPERED", base.size);
    Ok(())
}

#[tokio::test]
async fn checkpoint_tampering_rollback_and_corruption_are_found() -> anyhow::Result<()> {
    let base = base().await?;

    // Delete a checkpoint in the middle: the next one no longer chains.
    let (path, conn) = base.copy("delete-checkpoint")?;
    let (victim, _) = base.checkpoints[3];
    conn.execute("DELETE FROM audit_checkpoint WHERE id = ?1", [victim])?;
    let report = check(&path, &[])?;
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.class == "CHECKPOINT CHAIN BREAK" && f.checkpoint == Some(base.checkpoints[4].0)),
        "{:#?}",
        report.findings
    );

    // Change one byte of a signed note: its signature fails.
    let (path, conn) = base.copy("edit-checkpoint")?;
    let (id, _) = base.checkpoints[2];
    conn.execute(
        "UPDATE audit_checkpoint SET note = replace(note, ' periodic ', ' heartbeat ') WHERE id = ?1",
        [id],
    )?;
    let report = check(&path, &[])?;
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.class == "CHECKPOINT SIGNATURE" && f.checkpoint == Some(id)),
        "{:#?}",
        report.findings
    );

    // Forge a checkpoint with another key, over a rewritten log.
    let (path, conn) = base.copy("forge")?;
    let forger = AuditKey::generate();
    let install_id: String = conn.query_row("SELECT value FROM audit_meta WHERE key = 'install_id'", [], |r| {
        r.get(0)
    })?;
    let last = row(&conn, base.size - 1)?;
    let (last_id, prev_sig): (i64, Vec<u8>) = conn.query_row(
        "SELECT id, signature FROM audit_checkpoint ORDER BY id DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let body = Body {
        install_id,
        size: base.size,
        head: hash_of(&last.entry_hash),
        ts_ns: algobanana::audit::now_ns(),
        kind: Kind::Periodic,
        prev_signature: Some(prev_sig),
        rotate: None,
    };
    let sig = forger.sign(body.text().as_bytes()).to_bytes().to_vec();
    conn.execute(
        "INSERT INTO audit_key(key_id, public_key, ts_ns) VALUES (?1, ?2, ?3)",
        params![
            forger.id(),
            forger.public().as_bytes().to_vec(),
            algobanana::audit::now_ns()
        ],
    )?;
    conn.execute(
        "INSERT INTO audit_checkpoint(upto_seq, head_hash, ts_ns, kind, key_id, prev_signature, note, signature)
         VALUES (?1, ?2, ?3, 'periodic', ?4, NULL, ?5, ?6)",
        params![
            i64::try_from(base.size - 1)?,
            body.head.to_vec(),
            body.ts_ns,
            forger.id(),
            body.text(),
            sig
        ],
    )?;
    let report = check(&path, &[])?;
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.class == "UNKNOWN KEY" && f.checkpoint == Some(last_id + 1)),
        "{:#?}",
        report.findings
    );

    // Replace the pinned key itself and re-sign every checkpoint: caught by
    // pinning the real key id (`verify --key`) or by the witness.
    let (path, conn) = base.copy("replace-key")?;
    conn.execute("DELETE FROM audit_key", [])?;
    conn.execute(
        "INSERT INTO audit_key(key_id, public_key, ts_ns) VALUES (?1, ?2, 0)",
        params![forger.id(), forger.public().as_bytes().to_vec()],
    )?;
    let mut prev: Option<Vec<u8>> = None;
    for (id, _) in &base.checkpoints {
        let note: String = conn.query_row("SELECT note FROM audit_checkpoint WHERE id = ?1", [id], |r| r.get(0))?;
        let mut body = Body::parse(&note).unwrap();
        body.prev_signature = prev.clone();
        let sig = forger.sign(body.text().as_bytes()).to_bytes().to_vec();
        conn.execute(
            "UPDATE audit_checkpoint SET key_id = ?1, note = ?2, signature = ?3 WHERE id = ?4",
            params![forger.id(), body.text(), sig, id],
        )?;
        prev = Some(sig);
    }
    assert!(check(&path, &[])?.intact(), "self-consistent without a pin");
    let pinned = verify::verify_db(
        &path,
        &[],
        &Options {
            pinned_key: Some(base.key_id.clone()),
            ..Options::default()
        },
    )
    .map_err(anyhow::Error::msg)?;
    assert!(pinned.findings.iter().any(|f| f.class == "UNKNOWN KEY"), "{pinned:#?}");
    let witnessed = check(&path, &base.witness)?;
    assert!(witnessed.findings.iter().any(|f| f.class == "FORK"), "{witnessed:#?}");

    // Roll the file back to an older copy: only the witness can tell.
    let rolled = base.dir.path().join("rolled.db");
    copy_db(&base.older, &rolled)?;
    assert!(check(&rolled, &[])?.intact(), "an old copy is self-consistent");
    assert_first(&check(&rolled, &base.witness)?, "rollback", "ROLLBACK", HALF);

    // Damage the file below SQLite: integrity_check reports it.
    let damaged = base.dir.path().join("damaged.db");
    copy_db(&base.db, &damaged)?;
    let mut bytes = std::fs::read(&damaged)?;
    let page = 4096;
    let len = bytes.len();
    for b in &mut bytes[len - 3 * page + 100..len - 3 * page + 400] {
        *b = 0x5a;
    }
    std::fs::write(&damaged, bytes)?;
    match verify::verify_db(&damaged, &[], &Options::default()) {
        Ok(report) => assert!(
            report
                .findings
                .iter()
                .any(|f| f.class == "CORRUPTION" || f.class == "TAMPERED"),
            "{:#?}",
            report.findings
        ),
        Err(e) => assert!(e.contains("malformed") || e.contains("corrupt"), "{e}"),
    }
    Ok(())
}

#[tokio::test]
async fn an_export_verifies_offline_and_an_edited_export_does_not() -> anyhow::Result<()> {
    let base = base().await?;
    let conn = query::open_read_only(&base.db)?;
    let file = base.dir.path().join("export.jsonl");
    let mut out = std::fs::File::create(&file)?;
    let summary = export::export(&conn, &Filter::default(), Format::Jsonl, &mut out)?;
    drop(out);
    assert_eq!(summary.events, base.size);
    assert_eq!(summary.checkpoints, u64::try_from(base.checkpoints.len())?);
    let report = verify::verify_export(&file, &base.witness, &Options::default()).map_err(anyhow::Error::msg)?;
    assert!(report.intact(), "{:#?}", report.findings);
    assert_eq!(report.events, base.size);

    // A filtered export (one correlation id) still verifies each row's hash.
    let filtered = base.dir.path().join("filtered.jsonl");
    let mut out = std::fs::File::create(&filtered)?;
    let f = Filter {
        correlation_id: Some("alert-000100".into()),
        ..Filter::default()
    };
    assert_eq!(export::export(&conn, &f, Format::Jsonl, &mut out)?.events, 3);
    drop(out);
    let report = verify::verify_export(&filtered, &[], &Options::default()).map_err(anyhow::Error::msg)?;
    assert!(report.intact(), "{:#?}", report.findings);

    // Edit one event in the export: the offline verifier finds it.
    let text = std::fs::read_to_string(&file)?;
    let edited: Vec<String> = text
        .lines()
        .map(|l| {
            if l.contains("\"seq\":321,") {
                l.replace("\"qty\\\":\\\"1.5\\\"", "\"qty\\\":\\\"15\\\"")
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert_ne!(edited.join("\n"), text.trim_end(), "the edit applied");
    std::fs::write(&file, edited.join("\n"))?;
    let report = verify::verify_export(&file, &[], &Options::default()).map_err(anyhow::Error::msg)?;
    assert_first(&report, "edited export", "TAMPERED", 321);

    // Not an export at all: could not verify (exit 2), with a clear reason.
    std::fs::write(&file, "hello\n")?;
    let err = verify::verify_export(&file, &[], &Options::default()).unwrap_err();
    assert!(err.contains("not JSON"), "{err}");

    // CSV carries the checkpoint notes too.
    let mut csv = Vec::new();
    export::export(&conn, &Filter::default(), Format::Csv, &mut csv)?;
    let csv = String::from_utf8(csv)?;
    assert_eq!(
        csv.lines().filter(|l| l.starts_with("checkpoint,")).count(),
        base.checkpoints.len(),
        "{}",
        &csv[..400]
    );
    Ok(())
}

#[tokio::test]
async fn prune_archives_anchors_and_still_verifies() -> anyhow::Result<()> {
    let base = base().await?;
    let (dir, db) = base.data_dir()?;
    let cut_ts: i64 = {
        let conn = query::open_read_only(&db)?;
        conn.query_row("SELECT ts_ns FROM audit_event WHERE seq = 1000", [], |r| r.get(0))?
    };

    let log = AuditLog::open(&db, options())?;
    let archive = dir.path().join("archive.jsonl");
    let report = log
        .prune(PruneRequest {
            before_ns: cut_ts,
            archive: archive.clone(),
            policy: "keep 7 years".into(),
            actor_kind: algobanana::audit::ActorKind::User,
            actor: "ops".into(),
        })
        .await?;
    // The cut is the last checkpoint before the date.
    assert_eq!(report.pruned_from, 0);
    assert_eq!(report.pruned_through, base.last_signed_before(1000));
    fill(&log, 10_000..10_010).await?;
    log.close();

    let after = check(&db, &[])?;
    assert!(after.intact(), "{:#?}", after.findings);
    assert_eq!(after.prune_through, report.pruned_through);
    assert_eq!(after.range.unwrap().0, u64::try_from(report.pruned_through + 1)?);
    // The witness from before the prune still agrees with what is left.
    assert!(check(&db, &base.witness)?.intact());
    let pruned = query::search(&db, &Filter::default())?;
    assert!(pruned.iter().any(|e| e.action == "audit.pruned"));

    // The archive verifies offline and its hash is the anchored one.
    let archived = verify::verify_export(&archive, &[], &Options::default()).map_err(anyhow::Error::msg)?;
    assert!(archived.intact(), "{:#?}", archived.findings);
    assert_eq!(archived.events, u64::try_from(report.pruned_through + 1)?);
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(std::fs::read(&archive)?));
    assert_eq!(digest, report.archive_sha256);

    // Pruning before any checkpoint is refused and changes nothing.
    let log = AuditLog::open(&db, options())?;
    let err = log
        .prune(PruneRequest {
            before_ns: 1,
            archive: dir.path().join("never.jsonl"),
            policy: "x".into(),
            actor_kind: algobanana::audit::ActorKind::User,
            actor: "ops".into(),
        })
        .await
        .unwrap_err();
    log.close();
    assert!(
        err.to_string().contains("no signed checkpoint before that date"),
        "{err}"
    );
    assert!(!dir.path().join("never.jsonl").exists());

    // Deleting the anchor's rows out of policy is an anchor mismatch.
    let conn = Connection::open(&db)?;
    conn.execute_batch("DROP TRIGGER audit_anchor_no_delete; DELETE FROM audit_anchor;")?;
    let report = check(&db, &[])?;
    assert!(!report.intact(), "removing the anchor is noticed");
    Ok(())
}

/// Rows still in the file at or below the prune's cut.
fn rows_through(db: &Path, through: i64) -> anyhow::Result<i64> {
    let conn = query::open_read_only(db)?;
    Ok(
        conn.query_row("SELECT count(*) FROM audit_event WHERE seq <= ?1", [through], |r| {
            r.get(0)
        })?,
    )
}

/// The full-text index agrees with its content table: the rows the writer
/// has not indexed yet are indexed here, then FTS5 compares the two. A
/// deleted row left in the index, or a delete of a row never indexed,
/// fails it.
fn fts_intact(db: &Path) -> anyhow::Result<()> {
    let conn = Connection::open(db)?;
    conn.execute(
        "INSERT INTO audit_fts(rowid, actor_id, action, resource, payload)
         SELECT seq, actor_id, action, resource, payload FROM audit_event
         WHERE seq > (SELECT CAST(value AS INTEGER) FROM audit_meta WHERE key = 'fts_indexed_through')",
        [],
    )?;
    conn.execute(
        "INSERT INTO audit_fts(audit_fts, rank) VALUES ('integrity-check', 1)",
        [],
    )?;
    Ok(())
}

fn prune_request(before_ns: i64, archive: PathBuf) -> PruneRequest {
    PruneRequest {
        before_ns,
        archive,
        policy: "keep 7 years".into(),
        actor_kind: algobanana::audit::ActorKind::User,
        actor: "ops".into(),
    }
}

/// A prune holds the writer for one short commit: the rows are gone for
/// every reader as soon as it returns, and the writer deletes them later
/// in idle steps of `DELETE_CHUNK` rows (here: at the next start, since
/// the first writer does no idle work). Nothing in between shows them.
#[tokio::test]
async fn pruned_rows_are_hidden_at_once_and_deleted_in_idle_steps() -> anyhow::Result<()> {
    let base = base().await?;
    let (dir, db) = base.data_dir()?;
    let cut_ts: i64 = {
        let conn = query::open_read_only(&db)?;
        conn.query_row("SELECT ts_ns FROM audit_event WHERE seq = 2000", [], |r| r.get(0))?
    };
    let held = AuditOptions {
        idle_work: false,
        ..options()
    };
    let log = AuditLog::open(&db, held.clone())?;
    let report = log.prune(prune_request(cut_ts, dir.path().join("a.jsonl"))).await?;
    let through = report.pruned_through;
    assert_eq!(through, base.last_signed_before(2000));
    fill(&log, 10_000..10_010).await?;
    log.close();

    // Still in the file, and nobody can see them.
    assert_eq!(rows_through(&db, through)?, through + 1);
    let after = check(&db, &base.witness)?;
    assert!(after.intact(), "{:#?}", after.findings);
    assert_eq!(after.range.unwrap().0, u64::try_from(through + 1)?);
    assert_eq!(after.events, base.size + 1 + 10 - u64::try_from(through + 1)?);
    assert!(
        query::search(&db, &Filter::default())?
            .iter()
            .all(|e| e.seq > through as u64)
    );
    let gone = Filter {
        text: Some("\"i\":5,".into()),
        ..Filter::default()
    };
    assert!(query::search(&db, &gone)?.is_empty(), "a pruned row found by text");
    let kept = Filter {
        text: Some(format!("\"i\":{},", base.size - 1)),
        ..Filter::default()
    };
    assert_eq!(
        query::search(&db, &kept)?.len(),
        1,
        "the newest row is still found by text"
    );
    let mut export = Vec::new();
    let conn = query::open_read_only(&db)?;
    let summary = export::export(&conn, &Filter::default(), Format::Jsonl, &mut export)?;
    drop(conn);
    assert_eq!(summary.events, after.events);

    // A second prune cuts from where the first one did, rows waiting or not.
    let log = AuditLog::open(&db, held)?;
    let cut_ts: i64 = {
        let conn = query::open_read_only(&db)?;
        conn.query_row("SELECT ts_ns FROM audit_event WHERE seq = 2600", [], |r| r.get(0))?
    };
    let second = log.prune(prune_request(cut_ts, dir.path().join("b.jsonl"))).await?;
    log.close();
    assert_eq!(second.pruned_from, through + 1);
    let through = second.pruned_through;
    let archived = verify::verify_export(&second.archive, &[], &Options::default()).map_err(anyhow::Error::msg)?;
    assert!(archived.intact(), "{:#?}", archived.findings);
    assert_eq!(
        archived.range,
        Some((u64::try_from(second.pruned_from)?, u64::try_from(through)?))
    );

    // The next writer that idles deletes them, a chunk per step.
    let log = AuditLog::open(&db, options())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while rows_through(&db, through)? > 0 {
        assert!(std::time::Instant::now() < deadline, "pruned rows not deleted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let chunk = algobanana::audit::prune::DELETE_CHUNK;
    let chunks = (through + chunk) / chunk;
    assert!(
        log.removal_steps() >= u64::try_from(chunks)?,
        "{} steps for {} rows",
        log.removal_steps(),
        through + 1
    );
    fill(&log, 10_010..10_020).await?;
    log.close();
    fts_intact(&db)?;
    let last = check(&db, &base.witness)?;
    assert!(last.intact(), "{:#?}", last.findings);
    assert_eq!(last.range.unwrap().0, u64::try_from(through + 1)?);
    Ok(())
}

/// `audit prune` at the command line deletes the rows before it returns
/// (`remove_pruned`), indexing first what the full-text index had not
/// reached: its delete trigger needs indexed rows.
#[tokio::test]
async fn remove_pruned_deletes_everything_now_even_before_the_index() -> anyhow::Result<()> {
    let base = base().await?;
    let (dir, db) = base.data_dir()?;
    // The index starts over: every row is past it.
    {
        let conn = Connection::open(&db)?;
        conn.execute_batch(
            "INSERT INTO audit_fts(audit_fts) VALUES ('delete-all');
             UPDATE audit_meta SET value = '-1' WHERE key = 'fts_indexed_through';",
        )?;
    }
    let cut_ts: i64 = {
        let conn = query::open_read_only(&db)?;
        conn.query_row("SELECT ts_ns FROM audit_event WHERE seq = 1000", [], |r| r.get(0))?
    };
    let log = AuditLog::open(
        &db,
        AuditOptions {
            idle_work: false,
            ..options()
        },
    )?;
    let report = log.prune(prune_request(cut_ts, dir.path().join("a.jsonl"))).await?;
    assert_eq!(rows_through(&db, report.pruned_through)?, report.pruned_through + 1);
    let removed = log.remove_pruned().await?;
    assert_eq!(removed, u64::try_from(report.pruned_through + 1)?);
    assert_eq!(log.remove_pruned().await?, 0, "nothing left");
    log.close();
    assert_eq!(rows_through(&db, report.pruned_through)?, 0);
    fts_intact(&db)?;
    assert!(check(&db, &base.witness)?.intact());
    Ok(())
}

#[tokio::test]
async fn key_rotation_is_endorsed_by_the_old_key() -> anyhow::Result<()> {
    let base = base().await?;
    let (dir, db) = base.data_dir()?;
    let log = AuditLog::open(&db, options())?;
    let new_id = log.rotate_key().await?;
    assert_ne!(new_id, base.key_id);
    fill(&log, 20_000..20_500).await?;
    log.close();

    let report = verify::verify_db(
        &db,
        &base.witness,
        &Options {
            pinned_key: Some(base.key_id.clone()),
            ..Options::default()
        },
    )
    .map_err(anyhow::Error::msg)?;
    assert!(report.intact(), "{:#?}", report.findings);
    assert_eq!(report.endorsed_keys, [new_id]);
    let events = query::search(
        &db,
        &Filter {
            action: Some("audit.key_rotated".into()),
            ..Filter::default()
        },
    )?;
    assert_eq!(events.len(), 1);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("keys/audit-signing.key"))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the signing key is private to its owner");
    }

    // An unrelated key file is refused: the log's checkpoints cannot be
    // continued by a stranger's key.
    std::fs::remove_file(dir.path().join("keys/audit-signing.key"))?;
    AuditKey::generate().save(&dir.path().join("keys/audit-signing.key"))?;
    let err = AuditLog::open(&db, options()).unwrap_err();
    assert!(err.to_string().contains("is not a key this log trusts"), "{err}");
    Ok(())
}

#[tokio::test]
async fn witness_notes_round_trip_through_a_file() -> anyhow::Result<()> {
    let base = base().await?;
    let file = base.dir.path().join("witness.txt");
    let notes: String = base.witness.concat();
    std::fs::write(&file, notes)?;
    let read = verify::read_witness(&file).map_err(anyhow::Error::msg)?;
    assert_eq!(read, base.witness);
    let note = &base.witness[0];
    assert!(note.starts_with("algobanana/"), "{note}");
    assert!(note.contains("\n\n— algobanana-audit-"), "a C2SP signed note: {note}");
    let (body, key_id, signature) = algobanana::audit::checkpoint::parse_signed_note(note).unwrap();
    assert_eq!(key_id, base.key_id);
    assert_eq!(&signed_note(&body, &key_id, &signature), note);
    Ok(())
}

#[tokio::test]
async fn quiet_periods_are_proven_by_heartbeats_and_their_absence_is_found() -> anyhow::Result<()> {
    let limit = Options {
        heartbeat_limit: std::time::Duration::from_millis(600),
        ..Options::default()
    };
    // A writer that signs heartbeats while idle: no gap.
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("audit.db");
    let log = AuditLog::open(
        &db,
        AuditOptions {
            heartbeat: std::time::Duration::from_millis(150),
            ..AuditOptions::default()
        },
    )?;
    fill(&log, 0..3).await?;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    log.close();
    let report = verify::verify_db(&db, &[], &limit).map_err(anyhow::Error::msg)?;
    assert!(report.intact(), "{:#?}", report.findings);
    let heartbeats = verify::material_from_db(&query::open_read_only(&db)?)?
        .checkpoints
        .iter()
        .filter(|c| c.note.contains(" heartbeat "))
        .count();
    assert!(heartbeats >= 3, "heartbeats signed while idle: {heartbeats}");

    // The same quiet second without heartbeats (a writer that was
    // suspended, or checkpoints removed): a heartbeat gap.
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("audit.db");
    let log = AuditLog::open(&db, AuditOptions::default())?;
    fill(&log, 0..3).await?;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    log.close();
    let report = verify::verify_db(&db, &[], &limit).map_err(anyhow::Error::msg)?;
    assert!(
        report.findings.iter().any(|f| f.class == "HEARTBEAT GAP"),
        "{:#?}",
        report.findings
    );
    Ok(())
}
