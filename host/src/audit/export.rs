//! `audit export`: stream events (with filters) as JSON lines or CSV. A JSONL
//! export carries everything `audit verify --export` needs to check it
//! offline: the signing keys, anchors, each event exactly as hashed, and
//! the signed checkpoint notes covering the exported range.

use std::io::Write;

use base64::Engine as _;
use rusqlite::Connection;
use serde_json::json;

use super::query::{Filter, RawRow, select};

/// The export format name in the header line.
pub const FORMAT: &str = "algobanana-audit-export-v1";

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line; verifiable offline.
    Jsonl,
    /// A spreadsheet-friendly table; checkpoint notes as `checkpoint` rows.
    Csv,
}

/// What was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Events written.
    pub events: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
}

fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Streams an export of `conn` to `out`.
///
/// # Errors
/// SQLite or I/O errors.
pub fn export(conn: &Connection, filter: &Filter, format: Format, out: &mut dyn Write) -> anyhow::Result<Summary> {
    let install_id: String = conn.query_row("SELECT value FROM audit_meta WHERE key = 'install_id'", [], |r| {
        r.get(0)
    })?;
    let prune_through: i64 =
        conn.query_row("SELECT prune_through FROM audit_control WHERE id = 1", [], |r| r.get(0))?;
    let mut summary = Summary::default();
    let b64 = base64::engine::general_purpose::STANDARD;

    if format == Format::Jsonl {
        writeln!(
            out,
            "{}",
            json!({ "type": "header", "format": FORMAT, "install_id": install_id, "prune_through": prune_through,
                    "exported_at_ns": super::now_ns(), "complete": is_complete(filter) })
        )?;
        let mut keys = conn.prepare(
            "SELECT key_id, public_key, ts_ns, endorsed_by, endorsement FROM audit_key ORDER BY ts_ns, rowid",
        )?;
        let mut rows = keys.query([])?;
        while let Some(r) = rows.next()? {
            let endorsement: Option<Vec<u8>> = r.get(4)?;
            writeln!(
                out,
                "{}",
                json!({ "type": "key", "key_id": r.get::<_, String>(0)?, "public_key": b64.encode(r.get::<_, Vec<u8>>(1)?),
                        "ts_ns": r.get::<_, i64>(2)?, "endorsed_by": r.get::<_, Option<String>>(3)?,
                        "endorsement": endorsement.map(|e| b64.encode(e)) })
            )?;
        }
        let mut anchors = conn.prepare(
            "SELECT id, pruned_from, pruned_through, head_hash_at_prune, checkpoint_id, archive_sha256, policy, ts_ns, key_id, signature
             FROM audit_anchor ORDER BY id",
        )?;
        let mut rows = anchors.query([])?;
        while let Some(r) = rows.next()? {
            writeln!(
                out,
                "{}",
                json!({ "type": "anchor", "id": r.get::<_, i64>(0)?, "pruned_from": r.get::<_, i64>(1)?,
                        "pruned_through": r.get::<_, i64>(2)?, "head_hash_at_prune": hex::encode(r.get::<_, Vec<u8>>(3)?),
                        "checkpoint_id": r.get::<_, i64>(4)?, "archive_sha256": r.get::<_, String>(5)?,
                        "policy": r.get::<_, String>(6)?, "ts_ns": r.get::<_, i64>(7)?, "key_id": r.get::<_, String>(8)?,
                        "signature": b64.encode(r.get::<_, Vec<u8>>(9)?) })
            )?;
        }
    } else {
        writeln!(
            out,
            "record,seq,ts_ns,actor_kind,actor_id,action,resource,outcome,request_id,correlation_id,session_id,source_ip,user_agent,payload,prev_hash,entry_hash"
        )?;
    }

    let (sql, args) = select(conn, filter);
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let (mut min_seq, mut max_seq) = (i64::MAX, -1i64);
    while let Some(r) = rows.next()? {
        let row = RawRow::from_sql(r)?;
        let seq = i64::try_from(row.seq).unwrap_or(i64::MAX);
        min_seq = min_seq.min(seq);
        max_seq = max_seq.max(seq);
        match format {
            Format::Jsonl => {
                let mut v = serde_json::to_value(&row)?;
                v["type"] = json!("event");
                writeln!(out, "{v}")?;
            }
            Format::Csv => {
                let o = |s: &Option<String>| csv_field(s.as_deref().unwrap_or(""));
                writeln!(
                    out,
                    "event,{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    row.seq,
                    row.ts_ns,
                    csv_field(&row.actor_kind),
                    csv_field(&row.actor_id),
                    csv_field(&row.action),
                    o(&row.resource),
                    csv_field(&row.outcome),
                    o(&row.request_id),
                    o(&row.correlation_id),
                    o(&row.session_id),
                    o(&row.source_ip),
                    o(&row.user_agent),
                    csv_field(&row.payload),
                    row.prev_hash,
                    row.entry_hash
                )?;
            }
        }
        summary.events += 1;
    }

    // Checkpoints covering the exported range (all of them for a full export).
    let (lo, hi) = if is_complete(filter) {
        (i64::MIN, i64::MAX)
    } else {
        (min_seq.saturating_sub(1), max_seq.max(min_seq))
    };
    let mut cps = conn.prepare(
        "SELECT id, upto_seq, ts_ns, kind, key_id, note, signature FROM audit_checkpoint WHERE upto_seq >= ?1 - 1 AND upto_seq <= ?2 ORDER BY id",
    )?;
    let mut rows = cps.query(rusqlite::params![lo.max(i64::MIN + 1), hi])?;
    while let Some(r) = rows.next()? {
        let note = super::checkpoint::signed_note(
            &r.get::<_, String>(5)?,
            &r.get::<_, String>(4)?,
            &r.get::<_, Vec<u8>>(6)?,
        );
        match format {
            Format::Jsonl => writeln!(
                out,
                "{}",
                json!({ "type": "checkpoint", "id": r.get::<_, i64>(0)?, "upto_seq": r.get::<_, i64>(1)?,
                        "ts_ns": r.get::<_, i64>(2)?, "kind": r.get::<_, String>(3)?, "note": note })
            )?,
            Format::Csv => writeln!(
                out,
                "checkpoint,{},{},,,{},,,,,,,,{},,",
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                csv_field(&r.get::<_, String>(3)?),
                csv_field(&note)
            )?,
        }
        summary.checkpoints += 1;
    }
    out.flush()?;
    Ok(summary)
}

/// Returns true if and only if `filter` selects every event.
pub fn is_complete(f: &Filter) -> bool {
    f.since_ns.is_none()
        && f.until_ns.is_none()
        && f.actor_kind.is_none()
        && f.actor_id.is_none()
        && f.action.is_none()
        && f.outcome.is_none()
        && f.correlation_id.is_none()
        && f.request_id.is_none()
        && f.text.is_none()
        && f.after_seq.is_none()
        && f.through_seq.is_none()
        && f.limit.is_none()
}
