//! `audit prune --before DATE`: removes old events only at a signed
//! checkpoint, after archiving them (JSONL with their checkpoints and keys,
//! verifiable offline) and recording a signed anchor with the archive's
//! SHA-256. The first surviving event still links to the pruned head, which
//! the anchor and its checkpoint pin, so `verify` passes afterwards. The
//! prune itself is an `audit.pruned` event.

use std::io::Write;
use std::path::PathBuf;

use rusqlite::{OptionalExtension, params};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::chain::Hash;
use super::query::Filter;
use super::verify::{AnchorRec, anchor_text};
use super::writer::{AuditError, Writer};
use super::{ActorKind, AuditEvent, Outcome, action};

/// What to prune.
#[derive(Debug, Clone)]
pub struct PruneRequest {
    /// Remove events before this time (UTC ns), up to the last checkpoint before it.
    pub before_ns: i64,
    /// Where to write the archive (must not exist).
    pub archive: PathBuf,
    /// The retention policy, recorded in the anchor.
    pub policy: String,
    /// Who asked: the audit actor (a person at the command line, or the
    /// host's retention policy).
    pub actor_kind: ActorKind,
    /// Its id.
    pub actor: String,
}

/// The refusal when no signed checkpoint lies before the date: nothing to
/// cut at, nothing changed (the retention task treats it as nothing to do).
pub const NOTHING_TO_PRUNE: &str = "there is no signed checkpoint before that date to cut at; nothing was pruned (checkpoints are signed every 1,000 events or 60 s)";

/// Writes through to a file and hashes what it writes.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hash.update(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What was pruned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    /// First removed sequence number.
    pub pruned_from: i64,
    /// Last removed sequence number.
    pub pruned_through: i64,
    /// The archive file.
    pub archive: PathBuf,
    /// SHA-256 of the archive.
    pub archive_sha256: String,
    /// The checkpoint at the cut.
    pub checkpoint_id: i64,
}

fn refuse(message: String) -> AuditError {
    AuditError::Refused(message)
}

/// Runs in the writer thread.
pub(crate) fn run(w: &mut Writer, req: &PruneRequest) -> Result<PruneReport, AuditError> {
    let sql = |e: rusqlite::Error| AuditError::Write(e.to_string());
    // The FTS delete trigger needs every pruned row indexed.
    while w.index_step() {}
    let prune_through: i64 = w
        .conn
        .query_row("SELECT prune_through FROM audit_control WHERE id = 1", [], |r| r.get(0))
        .map_err(sql)?;
    let cut: Option<(i64, i64, Vec<u8>)> = w
        .conn
        .query_row(
            "SELECT c.id, c.upto_seq, c.head_hash FROM audit_checkpoint c JOIN audit_event e ON e.seq = c.upto_seq
             WHERE e.ts_ns < ?1 AND c.upto_seq > ?2 ORDER BY c.upto_seq DESC, c.id DESC LIMIT 1",
            params![req.before_ns, prune_through],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(sql)?;
    let Some((checkpoint_id, through, head)) = cut else {
        return Err(refuse(NOTHING_TO_PRUNE.into()));
    };
    let head = Hash::try_from(head.as_slice()).map_err(|_| refuse("checkpoint head is not 32 bytes".into()))?;
    let from = prune_through + 1;

    // 1. Archive [from..through] with its checkpoints, verifiable offline.
    let io = |e: std::io::Error| refuse(format!("cannot write the archive {}: {e}", req.archive.display()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&req.archive)
        .map_err(io)?;
    let filter = Filter {
        after_seq: u64::try_from(from - 1).ok(),
        through_seq: u64::try_from(through).ok(),
        ..Filter::default()
    };
    // Streamed to the file and hashed on the way, not held in memory (a
    // first prune under a retention policy can cover years of events).
    let mut out = Hashing {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        hash: Sha256::new(),
    };
    let written = super::export::export(&w.conn, &filter, super::export::Format::Jsonl, &mut out)
        .map_err(|e| refuse(format!("{e:#}")))
        .and_then(|_| out.flush().map_err(io));
    if let Err(e) = written {
        // A partial archive is not an archive.
        drop(out);
        let _ = std::fs::remove_file(&req.archive);
        return Err(e);
    }
    let Hashing { inner, hash } = out;
    inner
        .into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    let archive_sha256 = hex::encode(hash.finalize());

    // 2. Anchor, cut and delete in one transaction.
    let mut anchor = AnchorRec {
        id: 0,
        pruned_from: from,
        pruned_through: through,
        head,
        checkpoint_id,
        archive_sha256: archive_sha256.clone(),
        policy: req.policy.clone(),
        ts_ns: super::now_ns(),
        key_id: w.key.id().to_owned(),
        signature: Vec::new(),
    };
    anchor.signature = w
        .key
        .sign(anchor_text(&w.install_id, &anchor).as_bytes())
        .to_bytes()
        .to_vec();
    let tx = w
        .conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql)?;
    tx.execute(
        "INSERT INTO audit_anchor(pruned_from, pruned_through, head_hash_at_prune, checkpoint_id, archive_sha256, policy, ts_ns, key_id, signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![from, through, &head[..], checkpoint_id, archive_sha256, req.policy, anchor.ts_ns, anchor.key_id, anchor.signature],
    )
    .map_err(sql)?;
    tx.execute("UPDATE audit_control SET prune_through = ?1 WHERE id = 1", [through])
        .map_err(sql)?;
    tx.execute("DELETE FROM audit_event WHERE seq <= ?1", [through])
        .map_err(sql)?;
    tx.commit().map_err(sql)?;

    // 3. The prune is itself an event on the live chain.
    let event = AuditEvent::new(
        req.actor_kind,
        req.actor.clone(),
        action::AUDIT_PRUNED,
        Outcome::Success,
    )
    .resource("audit")
    .payload(json!({
        "pruned_from": from, "pruned_through": through, "checkpoint_id": checkpoint_id,
        "archive": req.archive.display().to_string(), "archive_sha256": archive_sha256, "policy": req.policy,
    }));
    w.append_internal(event).map_err(sql)?;
    Ok(PruneReport {
        pruned_from: from,
        pruned_through: through,
        archive: req.archive.clone(),
        archive_sha256,
        checkpoint_id,
    })
}
