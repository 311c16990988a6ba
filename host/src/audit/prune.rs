//! `audit prune --before DATE`: removes old events only at a signed
//! checkpoint, after archiving them (JSONL with their checkpoints and keys,
//! verifiable offline) and recording a signed anchor with the archive's
//! SHA-256. The first surviving event still links to the pruned head, which
//! the anchor and its checkpoint pin, so `verify` passes afterwards. The
//! prune itself is an `audit.pruned` event.
//!
//! A prune never holds the audit writer for longer than a commit, so alerts
//! do not wait for it however much it removes:
//!
//! 1. the cut is found and the archive written on a read-only connection,
//!    on a blocking thread (the rows it reads are immutable: nothing but a
//!    recorded prune may remove them, and prunes run one at a time);
//! 2. the writer commits the anchor and `prune_through` in one short
//!    transaction, and appends the `audit.pruned` event. From then on the
//!    pruned rows are gone for every reader: searches, exports, `verify`
//!    and recovery read only `seq > prune_through`;
//! 3. the writer deletes the rows in chunks of [`DELETE_CHUNK`] when it is
//!    idle, as it fills the full-text index (a chunk costs about what an
//!    index step does: each row leaves the trigram index too), and under
//!    steady load one chunk per [`DELETE_UNDER_LOAD`]. A restart resumes
//!    where it stopped; `audit prune` at the command line removes
//!    everything before it returns ([`super::AuditLog::remove_pruned`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::chain::Hash;
use super::query::Filter;
use super::verify::{AnchorRec, anchor_text};
use super::writer::{AuditError, Writer};
use super::{ActorKind, AuditEvent, Outcome, action};

/// Rows deleted per step of the writer. A row's delete also removes it from
/// the trigram index, which costs about what indexing it did. Measured with
/// 250-byte payloads (docs/performance.md, "Audit append"): a step of 8
/// rows takes p50 0.7 ms, p90 1.1 ms, but p99 16 ms when FTS5 merges its
/// segments, which a write sets off now and then; 32 rows took p50 1.2,
/// p90 3.6 and p99 30 ms. An event that arrives during a step waits for it.
pub const DELETE_CHUNK: i64 = 8;

/// Under load, when the writer is never idle, it still deletes one chunk
/// after a commit at most this often: under a millisecond of its time per
/// tenth of a second, most of the time, and 80 rows a second of progress
/// (idle time goes faster, chunk after chunk).
pub const DELETE_UNDER_LOAD: std::time::Duration = std::time::Duration::from_millis(100);

/// Rows deleted per transaction by [`super::AuditLog::remove_pruned`],
/// where nothing else waits for the writer.
pub const DRAIN_CHUNK: i64 = 4096;

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

/// Syncs the archive every [`SYNC_EVERY`] bytes. Left to the end, a large
/// archive's dirty pages (up to a tenth of memory before the kernel starts
/// writing them back) would be flushed in one go, and the audit writer's
/// own syncs, which every alert awaits, would queue behind that flush.
struct Syncing {
    file: std::fs::File,
    unsynced: usize,
}

/// See [`Syncing`].
const SYNC_EVERY: usize = 8 << 20;

impl Write for Syncing {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(data)?;
        self.unsynced += n;
        if self.unsynced >= SYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
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

/// A cut, found and archived; what the writer commits.
#[derive(Debug, Clone)]
pub(crate) struct Archived {
    from: i64,
    through: i64,
    checkpoint_id: i64,
    head: Hash,
    archive_sha256: String,
}

fn refuse(message: String) -> AuditError {
    AuditError::Refused(message)
}

/// Step 1, on a blocking thread: finds the cut and writes the archive,
/// reading `db` on a read-only connection. Nothing in the database changes.
pub(crate) fn archive(db: &Path, req: &PruneRequest) -> Result<Archived, AuditError> {
    let conn = super::query::open_read_only(db).map_err(|e| refuse(e.to_string()))?;
    let sql = |e: rusqlite::Error| {
        refuse(format!(
            "cannot read the audit log to prune it: {e}; nothing was pruned"
        ))
    };
    // One snapshot for the cut and the archive.
    conn.execute_batch("BEGIN").map_err(sql)?;
    let prune_through: i64 = conn
        .query_row("SELECT prune_through FROM audit_control WHERE id = 1", [], |r| r.get(0))
        .map_err(sql)?;
    let cut: Option<(i64, i64, Vec<u8>)> = conn
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

    // The archive: [from..through] with its checkpoints, verifiable offline.
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
        inner: std::io::BufWriter::with_capacity(1 << 20, Syncing { file, unsynced: 0 }),
        hash: Sha256::new(),
    };
    let written = super::export::export(&conn, &filter, super::export::Format::Jsonl, &mut out)
        .map_err(|e| refuse(format!("{e:#}")))
        .and_then(|_| out.flush().map_err(io));
    let synced = written.and_then(|()| {
        let Hashing { inner, hash } = out;
        inner
            .into_inner()
            .map_err(|e| io(e.into_error()))?
            .file
            .sync_all()
            .map_err(io)?;
        Ok(hex::encode(hash.finalize()))
    });
    match synced {
        Ok(archive_sha256) => Ok(Archived {
            from,
            through,
            checkpoint_id,
            head,
            archive_sha256,
        }),
        Err(e) => {
            // A partial archive is not an archive.
            let _ = std::fs::remove_file(&req.archive);
            Err(e)
        }
    }
}

/// Step 2, in the writer thread: the signed anchor and `prune_through` in
/// one transaction, then the `audit.pruned` event. The rows themselves go
/// in the writer's idle steps ([`Writer::delete_step`]).
pub(crate) fn commit(w: &mut Writer, req: &PruneRequest, cut: &Archived) -> Result<PruneReport, AuditError> {
    let sql = |e: rusqlite::Error| AuditError::Write(e.to_string());
    if w.prune_through + 1 != cut.from {
        // Prunes run one at a time (`AuditLog::prune`); this is the guard.
        let _ = std::fs::remove_file(&req.archive);
        return Err(refuse(format!(
            "the log was pruned through seq {} while this prune archived from seq {}; nothing was pruned by it, run it again",
            w.prune_through, cut.from
        )));
    }
    let mut anchor = AnchorRec {
        id: 0,
        pruned_from: cut.from,
        pruned_through: cut.through,
        head: cut.head,
        checkpoint_id: cut.checkpoint_id,
        archive_sha256: cut.archive_sha256.clone(),
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
    let anchored = (|| {
        let tx = w
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO audit_anchor(pruned_from, pruned_through, head_hash_at_prune, checkpoint_id, archive_sha256, policy, ts_ns, key_id, signature)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![cut.from, cut.through, &cut.head[..], cut.checkpoint_id, cut.archive_sha256, req.policy, anchor.ts_ns, anchor.key_id, anchor.signature],
        )?;
        tx.execute(
            "UPDATE audit_control SET prune_through = ?1 WHERE id = 1",
            [cut.through],
        )?;
        tx.commit()
    })();
    if let Err(e) = anchored {
        // Nothing was pruned, so the archive is not one.
        let _ = std::fs::remove_file(&req.archive);
        return Err(sql(e));
    }
    w.pruned(cut.through);

    // The prune is itself an event on the live chain.
    let event = AuditEvent::new(
        req.actor_kind,
        req.actor.clone(),
        action::AUDIT_PRUNED,
        Outcome::Success,
    )
    .resource("audit")
    .payload(json!({
        "pruned_from": cut.from, "pruned_through": cut.through, "checkpoint_id": cut.checkpoint_id,
        "archive": req.archive.display().to_string(), "archive_sha256": cut.archive_sha256, "policy": req.policy,
    }));
    // The prune is done (anchored, and hidden from every reader); failing
    // to record it is a failure of the log like any other: it halts.
    if let Err(e) = w.append_internal(event) {
        let reason = e.to_string();
        w.halt(&reason);
        return Err(AuditError::Write(reason));
    }
    Ok(PruneReport {
        pruned_from: cut.from,
        pruned_through: cut.through,
        archive: req.archive.clone(),
        archive_sha256: cut.archive_sha256.clone(),
        checkpoint_id: cut.checkpoint_id,
    })
}
