//! `audit verify`: re-derives the hash chain from genesis (or from the last
//! signed prune anchor), checks every checkpoint's signature, chain and
//! head, follows key rotations from the pinned key, and compares against a
//! witness file. Works on the live database or offline on a JSONL export.
//! The verifier is the security boundary: it trusts nothing it reads
//! without recomputing it.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use super::chain::{self, Hash};
use super::checkpoint::{Body, Kind, parse_signed_note};
use super::keys;
use super::query::RawRow;

/// Heartbeats come every 15 minutes; 30 s of slack.
pub const HEARTBEAT_LIMIT: Duration = Duration::from_secs(15 * 60 + 30);

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `TAMPERED`, `GAP`, `CHAIN BREAK`, `CHECKPOINT SIGNATURE`, `CHECKPOINT HEAD`,
    /// `CHECKPOINT CHAIN BREAK`, `UNKNOWN KEY`, `HEARTBEAT GAP`, `ROLLBACK`,
    /// `FORK`, `ANCHOR`, `CORRUPTION` or `MALFORMED`.
    pub class: &'static str,
    /// The first offending sequence number, when there is one.
    pub seq: Option<u64>,
    /// The checkpoint concerned, when there is one.
    pub checkpoint: Option<i64>,
    /// What is wrong.
    pub message: String,
}

/// A stored checkpoint, as read from the database or an export.
#[derive(Debug, Clone)]
pub struct CheckpointRec {
    /// Its id.
    pub id: i64,
    /// The last covered sequence number (-1 for an empty log).
    pub upto_seq: i64,
    /// The signed note (body, key line and signature).
    pub note: String,
}

/// A prune anchor.
#[derive(Debug, Clone)]
pub struct AnchorRec {
    /// Its id.
    pub id: i64,
    /// First pruned sequence number.
    pub pruned_from: i64,
    /// Last pruned sequence number.
    pub pruned_through: i64,
    /// The chain head at the cut.
    pub head: Hash,
    /// The checkpoint at the cut.
    pub checkpoint_id: i64,
    /// SHA-256 of the archive file.
    pub archive_sha256: String,
    /// The retention policy text.
    pub policy: String,
    /// When.
    pub ts_ns: i64,
    /// Signing key.
    pub key_id: String,
    /// Signature over [`anchor_text`].
    pub signature: Vec<u8>,
}

/// The signed text of an anchor.
pub fn anchor_text(install_id: &str, a: &AnchorRec) -> String {
    format!(
        "algobanana/{install_id}/anchor\n{} {}\n{}\n{}\n{}\n{}\n{}\n",
        a.pruned_from,
        a.pruned_through,
        base64::engine::general_purpose::STANDARD.encode(a.head),
        a.checkpoint_id,
        a.archive_sha256,
        a.policy,
        a.ts_ns
    )
}

/// Everything but the events.
#[derive(Debug, Clone, Default)]
pub struct Material {
    /// The installation.
    pub install_id: String,
    /// Last pruned sequence number (-1 when never pruned).
    pub prune_through: i64,
    /// Public keys by id, oldest first; the first is pinned unless the
    /// caller pins another.
    pub keys: Vec<(String, [u8; 32])>,
    /// Anchors, oldest first.
    pub anchors: Vec<AnchorRec>,
    /// Checkpoints in id order.
    pub checkpoints: Vec<CheckpointRec>,
    /// Returns true if and only if the events are the whole log (not a filtered export).
    pub complete: bool,
}

/// Options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pin this key id instead of the first key in the log.
    pub pinned_key: Option<String>,
    /// Largest allowed gap between checkpoints while running.
    pub heartbeat_limit: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            pinned_key: None,
            heartbeat_limit: HEARTBEAT_LIMIT,
        }
    }
}

/// The result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The installation.
    pub install_id: String,
    /// Events read.
    pub events: u64,
    /// Events whose hash recomputed.
    pub events_valid: u64,
    /// First and last sequence numbers read.
    pub range: Option<(u64, u64)>,
    /// Last pruned sequence number.
    pub prune_through: i64,
    /// Checkpoints read.
    pub checkpoints: u64,
    /// Checkpoints with a valid signature from a trusted key.
    pub checkpoints_valid: u64,
    /// The pinned key id.
    pub pinned_key: Option<String>,
    /// Keys endorsed by rotation, in order.
    pub endorsed_keys: Vec<String>,
    /// Events after the last checkpoint (not yet signed).
    pub unsigned_tail: u64,
    /// Largest gap between checkpoints while running, in seconds.
    pub largest_running_gap_s: u64,
    /// Witness notes checked.
    pub witness_notes: u64,
    /// `PRAGMA integrity_check` result, for a database.
    pub sqlite: Option<String>,
    /// The lowest sequence number any finding names: where the log stops
    /// being trustworthy.
    pub first_bad_seq: Option<u64>,
    /// Every problem found.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Returns true if and only if nothing is wrong.
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }

    fn find(&mut self, class: &'static str, seq: Option<u64>, checkpoint: Option<i64>, message: String) {
        if let Some(s) = seq {
            self.first_bad_seq = Some(self.first_bad_seq.map_or(s, |f| f.min(s)));
        }
        self.findings.push(Finding {
            class,
            seq,
            checkpoint,
            message,
        });
    }
}

struct ParsedCp {
    rec: CheckpointRec,
    body: Body,
    trusted: bool,
}

/// Verifies `events` (in sequence order) against `material` and, when
/// given, the signed notes of a witness file.
pub fn verify(
    material: &Material,
    events: impl Iterator<Item = Result<RawRow, String>>,
    witness: &[String],
    options: &Options,
) -> Report {
    let mut report = Report {
        install_id: material.install_id.clone(),
        prune_through: material.prune_through,
        ..Report::default()
    };

    // 1. Keys and checkpoints: who may sign, and what they signed.
    let key_map: HashMap<&str, [u8; 32]> = material.keys.iter().map(|(id, k)| (id.as_str(), *k)).collect();
    let pinned = options
        .pinned_key
        .clone()
        .or_else(|| material.keys.first().map(|(id, _)| id.clone()));
    report.pinned_key = pinned.clone();
    let mut trusted: HashMap<String, VerifyingKey> = HashMap::new();
    if let Some(p) = &pinned {
        match key_map.get(p.as_str()).and_then(|k| VerifyingKey::from_bytes(k).ok()) {
            Some(k) => {
                trusted.insert(p.clone(), k);
            }
            None => report.find(
                "UNKNOWN KEY",
                None,
                None,
                format!("the pinned key {p} is not in the log"),
            ),
        }
    }
    let mut parsed: Vec<ParsedCp> = Vec::new();
    let mut prev_sig: Option<Vec<u8>> = None;
    let mut prev_cp: Option<(i64, Kind, u64, bool)> = None;
    for rec in &material.checkpoints {
        report.checkpoints += 1;
        let Some((body_text, key_id, signature)) = parse_signed_note(&rec.note) else {
            report.find(
                "MALFORMED",
                None,
                Some(rec.id),
                format!("CHECKPOINT #{} is not a signed note", rec.id),
            );
            continue;
        };
        let Some(body) = Body::parse(&body_text) else {
            report.find(
                "MALFORMED",
                None,
                Some(rec.id),
                format!("CHECKPOINT #{} body cannot be parsed", rec.id),
            );
            continue;
        };
        if body.install_id != material.install_id || i64::try_from(body.size).unwrap_or(-2) - 1 != rec.upto_seq {
            report.find(
                "MALFORMED",
                None,
                Some(rec.id),
                format!("CHECKPOINT #{} does not match its row (origin or size)", rec.id),
            );
        }
        let signed_ok = match trusted.get(&key_id) {
            None => {
                report.find(
                    "UNKNOWN KEY",
                    None,
                    Some(rec.id),
                    format!("CHECKPOINT #{} is signed by {key_id}, which neither is pinned nor was endorsed by a trusted key", rec.id),
                );
                false
            }
            Some(k) if keys::verify(k, body_text.as_bytes(), &signature) => true,
            Some(_) => {
                report.find(
                    "CHECKPOINT SIGNATURE",
                    None,
                    Some(rec.id),
                    format!("CHECKPOINT #{} signature invalid", rec.id),
                );
                false
            }
        };
        if signed_ok {
            report.checkpoints_valid += 1;
            if let (Kind::Rotation, Some((new_id, new_key))) = (body.kind, &body.rotate)
                && let Ok(k) = VerifyingKey::from_bytes(new_key)
                && keys::key_id(&k) == *new_id
            {
                trusted.insert(new_id.clone(), k);
                report.endorsed_keys.push(new_id.clone());
            }
        }
        if body.prev_signature != prev_sig && !parsed.is_empty() {
            report.find(
                "CHECKPOINT CHAIN BREAK",
                None,
                Some(rec.id),
                format!("CHECKPOINT CHAIN BREAK at #{}: it does not chain to the checkpoint before it (one was removed or replaced)", rec.id),
            );
        }
        // Nothing is written between a clean stop and the next start: the
        // start checkpoint is signed before the writer takes any event. A
        // start that covers more than the stop did signed rows someone
        // added to the file while the host was down.
        if let Some((_, Kind::Stop, prev_size, true)) = prev_cp
            && signed_ok
            && body.kind == Kind::Start
            && body.size != prev_size
        {
            report.find(
                "TAMPERED",
                Some(prev_size.min(body.size)),
                Some(rec.id),
                format!(
                    "TAMPERED: the log held {prev_size} events at the clean stop but {} at the next start (CHECKPOINT #{}): rows were added or removed while algobanana was not running",
                    body.size, rec.id
                ),
            );
        }
        if let Some((prev_ts, prev_kind, _, _)) = prev_cp
            && prev_kind != Kind::Stop
            && body.kind != Kind::Start
        {
            let gap = Duration::from_nanos(u64::try_from(body.ts_ns.saturating_sub(prev_ts)).unwrap_or(0));
            report.largest_running_gap_s = report.largest_running_gap_s.max(gap.as_secs());
            if gap > options.heartbeat_limit {
                report.find(
                    "HEARTBEAT GAP",
                    None,
                    Some(rec.id),
                    format!(
                        "HEARTBEAT GAP {}s while running, before CHECKPOINT #{} (limit {}s)",
                        gap.as_secs(),
                        rec.id,
                        options.heartbeat_limit.as_secs()
                    ),
                );
            }
        }
        prev_cp = Some((body.ts_ns, body.kind, body.size, signed_ok));
        prev_sig = Some(signature);
        parsed.push(ParsedCp {
            rec: rec.clone(),
            body,
            trusted: signed_ok,
        });
    }

    // Witness notes: parsed up front so the event pass records their heads.
    let mut witness_bodies = Vec::new();
    for note in witness {
        report.witness_notes += 1;
        match parse_signed_note(note).and_then(|(text, key, sig)| Body::parse(&text).map(|b| (text, key, sig, b))) {
            Some((text, key, sig, body)) => {
                let valid = trusted
                    .get(&key)
                    .is_some_and(|k| keys::verify(k, text.as_bytes(), &sig));
                if !valid {
                    report.find(
                        "FORK",
                        None,
                        None,
                        format!("a witness note for size {} is not signed by a trusted key", body.size),
                    );
                }
                witness_bodies.push(body);
            }
            None => report.find("MALFORMED", None, None, "a witness note cannot be parsed".into()),
        }
    }

    // 2. Anchors: where the surviving chain starts.
    let (mut expected_seq, mut expected_prev) = (0u64, chain::genesis(&material.install_id));
    if let Some(a) = material.anchors.last() {
        let text = anchor_text(&material.install_id, a);
        let ok = trusted
            .get(&a.key_id)
            .is_some_and(|k| keys::verify(k, text.as_bytes(), &a.signature));
        if !ok {
            report.find(
                "ANCHOR",
                None,
                Some(a.checkpoint_id),
                format!("ANCHOR #{} signature invalid or by an untrusted key", a.id),
            );
        }
        match parsed.iter().find(|c| c.rec.id == a.checkpoint_id) {
            Some(c) if c.rec.upto_seq == a.pruned_through && c.body.head == a.head => {}
            _ => report.find(
                "ANCHOR",
                None,
                Some(a.checkpoint_id),
                format!("ANCHOR #{} does not match its checkpoint", a.id),
            ),
        }
        if a.pruned_through != material.prune_through {
            report.find(
                "ANCHOR",
                None,
                None,
                format!(
                    "ANCHOR #{} ends at {} but the log is pruned through {}",
                    a.id, a.pruned_through, material.prune_through
                ),
            );
        }
        expected_seq = u64::try_from(a.pruned_through + 1).unwrap_or(0);
        expected_prev = a.head;
    }

    // 3. Events: recompute every hash and link.
    let mut wanted: BTreeSet<u64> = parsed
        .iter()
        .filter_map(|c| u64::try_from(c.rec.upto_seq).ok())
        .collect();
    wanted.extend(witness_bodies.iter().filter(|b| b.size > 0).map(|b| b.size - 1));
    let mut heads: HashMap<u64, Hash> = HashMap::new();
    let mut first_event = true;
    let mut last_seq: Option<u64> = None;
    for item in events {
        let row = match item {
            Ok(r) => r,
            Err(e) => {
                report.find(
                    "CORRUPTION",
                    last_seq.map(|s| s + 1),
                    None,
                    format!("cannot read events: {e}"),
                );
                break;
            }
        };
        report.events += 1;
        let (Ok(stored_prev), Ok(stored_hash)) = (decode_hash(&row.prev_hash), decode_hash(&row.entry_hash)) else {
            report.find(
                "TAMPERED",
                Some(row.seq),
                None,
                format!("TAMPERED seq {}: hash columns are not 32 bytes", row.seq),
            );
            continue;
        };
        let contiguous = row.seq == expected_seq;
        if !contiguous && material.complete && row.seq > expected_seq {
            report.find(
                "GAP",
                Some(expected_seq),
                None,
                format!("GAP seq {}–{} missing", expected_seq, row.seq - 1),
            );
        } else if !contiguous && material.complete {
            report.find(
                "GAP",
                Some(row.seq),
                None,
                format!("seq {} is out of order (expected {expected_seq})", row.seq),
            );
        }
        let recomputed = chain::entry_hash(&row.chain_row(), &stored_prev);
        if recomputed != stored_hash {
            report.find(
                "TAMPERED",
                Some(row.seq),
                None,
                format!("TAMPERED seq {}: entry_hash mismatch", row.seq),
            );
        } else {
            report.events_valid += 1;
        }
        let links = contiguous || (first_event && !material.complete && row.seq != 0);
        if contiguous && stored_prev != expected_prev && !(first_event && !material.complete && row.seq != 0) {
            report.find(
                "CHAIN BREAK",
                Some(row.seq),
                None,
                format!(
                    "CHAIN BREAK seq {}: prev_hash ≠ entry_hash({})",
                    row.seq,
                    row.seq.wrapping_sub(1)
                ),
            );
        }
        let _ = links;
        if wanted.contains(&row.seq) {
            heads.insert(row.seq, stored_hash);
        }
        expected_seq = row.seq + 1;
        expected_prev = stored_hash;
        first_event = false;
        report.range = Some((report.range.map_or(row.seq, |r| r.0), row.seq));
        last_seq = Some(row.seq);
    }
    let size = expected_seq;

    // 4. Checkpoint heads against the recomputed chain. A rewritten and
    // rehashed range recomputes cleanly, so only a signed head can expose
    // it; the first bad sequence number is the first one after the last
    // checkpoint whose head still matches.
    let mut by_upto: Vec<&ParsedCp> = parsed.iter().filter(|c| c.trusted).collect();
    by_upto.sort_by_key(|c| c.rec.upto_seq);
    let mut last_good = material.prune_through;
    let event_bad: BTreeSet<u64> = report.findings.iter().filter_map(|f| f.seq).collect();
    let mut truncated: Option<(u64, i64)> = None;
    for c in by_upto {
        let at = c.rec.upto_seq;
        if at < 0 {
            if c.body.head != chain::genesis(&material.install_id) {
                report.find(
                    "CHECKPOINT HEAD",
                    None,
                    Some(c.rec.id),
                    format!("CHECKPOINT #{} head mismatch for the empty log", c.rec.id),
                );
            }
            continue;
        }
        let seq = u64::try_from(at).unwrap_or(0);
        match heads.get(&seq) {
            Some(h) if *h == c.body.head => last_good = last_good.max(at),
            Some(_) => {
                // A row that fails on its own explains the mismatch and is
                // the first provably bad one; otherwise the whole range since
                // the last matching checkpoint is suspect.
                let since = u64::try_from(last_good + 1).unwrap_or(0);
                let from = event_bad.range(since..=seq).next().copied().unwrap_or(since);
                report.find(
                    "CHECKPOINT HEAD",
                    Some(from),
                    Some(c.rec.id),
                    format!(
                        "CHECKPOINT #{} head mismatch at seq {seq}: events in seq {since}–{seq} were changed after they were signed",
                        c.rec.id
                    ),
                );
            }
            None if at <= material.prune_through || !material.complete => {}
            None => {
                if truncated.is_none_or(|(s, _)| s < seq) {
                    truncated = Some((seq, c.rec.id));
                }
            }
        }
    }
    if let Some((seq, id)) = truncated {
        report.find(
            "GAP",
            Some(size),
            Some(id),
            format!(
                "GAP seq {size}–{seq} missing: CHECKPOINT #{id} signed them but the log ends before them (truncated)"
            ),
        );
    }
    if let Some(last) = parsed.iter().rev().find(|c| c.trusted) {
        report.unsigned_tail = size.saturating_sub(last.body.size);
    }

    // 5. Witness: the log must contain everything the witness saw.
    for b in &witness_bodies {
        if b.size > size && material.complete {
            report.find(
                "ROLLBACK",
                Some(size),
                None,
                format!("ROLLBACK: the witness saw {} events but the log has {size}: the log was truncated or restored from an older copy", b.size),
            );
        } else if b.size > 0 {
            match heads.get(&(b.size - 1)) {
                Some(h) if *h == b.head => {}
                Some(_) => report.find(
                    "FORK",
                    Some(b.size - 1),
                    None,
                    format!("FORK: the witness's head at size {} differs from the log's", b.size),
                ),
                None => {}
            }
        }
    }
    report
}

fn decode_hash(h: &str) -> Result<Hash, ()> {
    hex::decode(h)
        .ok()
        .and_then(|v| Hash::try_from(v.as_slice()).ok())
        .ok_or(())
}

/// Reads the material of a live database.
///
/// # Errors
/// SQLite errors.
pub fn material_from_db(conn: &rusqlite::Connection) -> Result<Material, rusqlite::Error> {
    let install_id = conn.query_row("SELECT value FROM audit_meta WHERE key = 'install_id'", [], |r| {
        r.get(0)
    })?;
    let prune_through = conn.query_row("SELECT prune_through FROM audit_control WHERE id = 1", [], |r| r.get(0))?;
    let mut keys = Vec::new();
    let mut s = conn.prepare("SELECT key_id, public_key FROM audit_key ORDER BY ts_ns, rowid")?;
    let mut rows = s.query([])?;
    while let Some(r) = rows.next()? {
        let k: Vec<u8> = r.get(1)?;
        if let Ok(k) = <[u8; 32]>::try_from(k.as_slice()) {
            keys.push((r.get(0)?, k));
        }
    }
    let mut checkpoints = Vec::new();
    let mut s = conn.prepare("SELECT id, upto_seq, key_id, note, signature FROM audit_checkpoint ORDER BY id")?;
    let mut rows = s.query([])?;
    while let Some(r) = rows.next()? {
        let note = super::checkpoint::signed_note(
            &r.get::<_, String>(3)?,
            &r.get::<_, String>(2)?,
            &r.get::<_, Vec<u8>>(4)?,
        );
        checkpoints.push(CheckpointRec {
            id: r.get(0)?,
            upto_seq: r.get(1)?,
            note,
        });
    }
    let mut anchors = Vec::new();
    let mut s = conn.prepare(
        "SELECT id, pruned_from, pruned_through, head_hash_at_prune, checkpoint_id, archive_sha256, policy, ts_ns, key_id, signature
         FROM audit_anchor ORDER BY id",
    )?;
    let mut rows = s.query([])?;
    while let Some(r) = rows.next()? {
        let head: Vec<u8> = r.get(3)?;
        anchors.push(AnchorRec {
            id: r.get(0)?,
            pruned_from: r.get(1)?,
            pruned_through: r.get(2)?,
            head: Hash::try_from(head.as_slice()).unwrap_or([0; 32]),
            checkpoint_id: r.get(4)?,
            archive_sha256: r.get(5)?,
            policy: r.get(6)?,
            ts_ns: r.get(7)?,
            key_id: r.get(8)?,
            signature: r.get(9)?,
        });
    }
    Ok(Material {
        install_id,
        prune_through,
        keys,
        anchors,
        checkpoints,
        complete: true,
    })
}

/// Verifies the live database at `path` (read-only).
///
/// # Errors
/// When the database cannot be opened or its material read (exit code 2).
pub fn verify_db(path: &Path, witness: &[String], options: &Options) -> Result<Report, String> {
    let conn = super::query::open_read_only(path).map_err(|e| e.to_string())?;
    // One snapshot for the material and the events: a prune or checkpoint
    // committed by the running host between the two reads would otherwise
    // look like a mismatch.
    conn.execute_batch("BEGIN").map_err(|e| e.to_string())?;
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| format!("{e}"))?;
    let material =
        material_from_db(&conn).map_err(|e| format!("cannot read the audit database {}: {e}", path.display()))?;
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {} FROM audit_event WHERE seq > {} ORDER BY seq",
            super::query::COLUMNS,
            super::query::LIVE
        ))
        .map_err(|e| e.to_string())?;
    let rows = stmt.query_map([], RawRow::from_sql).map_err(|e| e.to_string())?;
    let mut report = verify(&material, rows.map(|r| r.map_err(|e| e.to_string())), witness, options);
    if integrity != "ok" {
        report.find(
            "CORRUPTION",
            None,
            None,
            format!("CORRUPTION: SQLite integrity_check: {integrity}"),
        );
    }
    report.sqlite = Some(integrity);
    Ok(report)
}

/// Verifies a JSONL export offline.
///
/// # Errors
/// When the file cannot be read or is not an export (exit code 2).
pub fn verify_export(path: &Path, witness: &[String], options: &Options) -> Result<Report, String> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut material = Material::default();
    let mut events = Vec::new();
    let mut header = false;
    let b64 = base64::engine::general_purpose::STANDARD;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
            format!(
                "{} line {}: not JSON ({e}); verify --export reads JSONL exports",
                path.display(),
                n + 1
            )
        })?;
        match v["type"].as_str() {
            Some("header") => {
                if v["format"] != super::export::FORMAT {
                    return Err(format!("{} is not an {} file", path.display(), super::export::FORMAT));
                }
                header = true;
                material.install_id = v["install_id"].as_str().unwrap_or_default().to_owned();
                material.prune_through = v["prune_through"].as_i64().unwrap_or(-1);
                material.complete = v["complete"].as_bool().unwrap_or(false);
            }
            Some("key") => {
                let k = b64
                    .decode(v["public_key"].as_str().unwrap_or_default())
                    .ok()
                    .and_then(|k| <[u8; 32]>::try_from(k).ok());
                if let (Some(id), Some(k)) = (v["key_id"].as_str(), k) {
                    material.keys.push((id.to_owned(), k));
                }
            }
            Some("anchor") => {
                let head = decode_hash(v["head_hash_at_prune"].as_str().unwrap_or_default()).unwrap_or([0; 32]);
                material.anchors.push(AnchorRec {
                    id: v["id"].as_i64().unwrap_or(0),
                    pruned_from: v["pruned_from"].as_i64().unwrap_or(0),
                    pruned_through: v["pruned_through"].as_i64().unwrap_or(-1),
                    head,
                    checkpoint_id: v["checkpoint_id"].as_i64().unwrap_or(0),
                    archive_sha256: v["archive_sha256"].as_str().unwrap_or_default().to_owned(),
                    policy: v["policy"].as_str().unwrap_or_default().to_owned(),
                    ts_ns: v["ts_ns"].as_i64().unwrap_or(0),
                    key_id: v["key_id"].as_str().unwrap_or_default().to_owned(),
                    signature: b64
                        .decode(v["signature"].as_str().unwrap_or_default())
                        .unwrap_or_default(),
                });
            }
            Some("event") => {
                events.push(serde_json::from_value::<RawRow>(v).map_err(|e| format!("line {}: {e}", n + 1)))
            }
            Some("checkpoint") => material.checkpoints.push(CheckpointRec {
                id: v["id"].as_i64().unwrap_or(0),
                upto_seq: v["upto_seq"].as_i64().unwrap_or(-1),
                note: v["note"].as_str().unwrap_or_default().to_owned(),
            }),
            _ => return Err(format!("{} line {}: unknown record type", path.display(), n + 1)),
        }
    }
    if !header {
        return Err(format!(
            "{} has no export header; verify --export reads files written by `audit export --format jsonl`",
            path.display()
        ));
    }
    events.sort_by_key(|e| e.as_ref().map(|r| r.seq).unwrap_or(0));
    Ok(verify(&material, events.into_iter(), witness, options))
}

/// Reads the signed notes of a witness file (notes are separated by blank
/// lines after their signature line).
///
/// # Errors
/// I/O errors.
pub fn read_witness(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read witness {}: {e}", path.display()))?;
    let mut notes = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        current.push_str(line);
        current.push('\n');
        if line.starts_with("— ") {
            notes.push(std::mem::take(&mut current));
        }
    }
    Ok(notes)
}
