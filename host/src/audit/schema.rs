//! The audit database schema: an append-only, hash-chained `audit_event`
//! table guarded by triggers, and an FTS5 index for free-text search.
//! The triggers stop application bugs; the hash chain (and, later, signed
//! checkpoints) detect anyone who edits the file directly.

/// Statements run on every audit connection. `synchronous=FULL`: a
/// committed event survives power loss on a device that honours flushes.
pub const PRAGMAS: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
PRAGMA foreign_keys = ON;
PRAGMA busy_timeout = 5000;
PRAGMA trusted_schema = OFF;
PRAGMA secure_delete = ON;
";

/// The schema, created on first open.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_meta(
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS audit_control(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  prune_through INTEGER NOT NULL DEFAULT -1
) STRICT;
INSERT OR IGNORE INTO audit_control(id, prune_through) VALUES (1, -1);

CREATE TABLE IF NOT EXISTS audit_event(
  seq INTEGER PRIMARY KEY,
  ts_ns INTEGER NOT NULL,
  actor_kind TEXT NOT NULL,
  actor_id TEXT NOT NULL,
  action TEXT NOT NULL,
  resource TEXT,
  outcome TEXT NOT NULL,
  request_id TEXT,
  correlation_id TEXT,
  session_id TEXT,
  source_ip TEXT,
  user_agent TEXT,
  payload TEXT NOT NULL,
  prev_hash BLOB NOT NULL CHECK (length(prev_hash) = 32),
  entry_hash BLOB NOT NULL CHECK (length(entry_hash) = 32)
) STRICT;

CREATE INDEX IF NOT EXISTS audit_event_ts ON audit_event(ts_ns);
CREATE INDEX IF NOT EXISTS audit_event_correlation ON audit_event(correlation_id);
CREATE INDEX IF NOT EXISTS audit_event_request ON audit_event(request_id);
CREATE INDEX IF NOT EXISTS audit_event_actor ON audit_event(actor_kind, actor_id);
CREATE INDEX IF NOT EXISTS audit_event_action ON audit_event(action);

CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit_event
  BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit_event
  WHEN old.seq > (SELECT prune_through FROM audit_control WHERE id = 1)
  BEGIN SELECT RAISE(ABORT, 'audit_event rows can only be removed by a recorded prune'); END;
CREATE TRIGGER IF NOT EXISTS audit_seq_contiguous BEFORE INSERT ON audit_event
  WHEN new.seq <> coalesce((SELECT max(seq) FROM audit_event),
                           (SELECT prune_through FROM audit_control WHERE id = 1)) + 1
  BEGIN SELECT RAISE(ABORT, 'audit_event seq must be contiguous'); END;

-- Full-text index over an external content table. It is filled by the
-- writer when it is idle (see writer.rs: indexing a 2 KB payload with the
-- trigram tokenizer costs about 0.4 ms, which would otherwise cap the
-- writer at a few hundred alerts per second). `fts_indexed_through` in
-- audit_meta says how far it has got; searches scan the tail after it.
CREATE VIRTUAL TABLE IF NOT EXISTS audit_fts USING fts5(actor_id, action, resource, payload,
  content='audit_event', content_rowid='seq', tokenize='trigram');
INSERT OR IGNORE INTO audit_meta(key, value) VALUES ('fts_indexed_through', '-1');
-- A prune must bring the index up to date first: FTS5 'delete' needs rows
-- that were indexed.
CREATE TRIGGER IF NOT EXISTS audit_fts_ad AFTER DELETE ON audit_event BEGIN
  INSERT INTO audit_fts(audit_fts, rowid, actor_id, action, resource, payload)
  VALUES ('delete', old.seq, old.actor_id, old.action, old.resource, old.payload); END;

-- Public keys that have signed checkpoints. The first row is the pinned key
-- (trust on first use); later keys carry the rotation checkpoint signature
-- by which an older key endorsed them. `verify` re-derives trust from the
-- checkpoints themselves; this table only records the public halves.
CREATE TABLE IF NOT EXISTS audit_key(
  key_id TEXT PRIMARY KEY,
  public_key BLOB NOT NULL CHECK (length(public_key) = 32),
  ts_ns INTEGER NOT NULL,
  endorsed_by TEXT,
  endorsement BLOB
) STRICT;

-- Signed checkpoints (see checkpoint.rs for the note layout).
CREATE TABLE IF NOT EXISTS audit_checkpoint(
  id INTEGER PRIMARY KEY,
  upto_seq INTEGER NOT NULL,
  head_hash BLOB NOT NULL CHECK (length(head_hash) = 32),
  ts_ns INTEGER NOT NULL,
  kind TEXT NOT NULL,
  key_id TEXT NOT NULL,
  prev_signature BLOB,
  note TEXT NOT NULL,
  signature BLOB NOT NULL
) STRICT;
CREATE TRIGGER IF NOT EXISTS audit_checkpoint_no_update BEFORE UPDATE ON audit_checkpoint
  BEGIN SELECT RAISE(ABORT, 'audit_checkpoint is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoint_no_delete BEFORE DELETE ON audit_checkpoint
  BEGIN SELECT RAISE(ABORT, 'audit_checkpoint rows are never deleted'); END;

-- One row per prune: the signed record of what was removed and where the
-- archive went.
CREATE TABLE IF NOT EXISTS audit_anchor(
  id INTEGER PRIMARY KEY,
  pruned_from INTEGER NOT NULL,
  pruned_through INTEGER NOT NULL,
  head_hash_at_prune BLOB NOT NULL CHECK (length(head_hash_at_prune) = 32),
  checkpoint_id INTEGER NOT NULL REFERENCES audit_checkpoint(id),
  archive_sha256 TEXT NOT NULL,
  policy TEXT NOT NULL,
  ts_ns INTEGER NOT NULL,
  key_id TEXT NOT NULL,
  signature BLOB NOT NULL
) STRICT;
CREATE TRIGGER IF NOT EXISTS audit_anchor_no_update BEFORE UPDATE ON audit_anchor
  BEGIN SELECT RAISE(ABORT, 'audit_anchor is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_anchor_no_delete BEFORE DELETE ON audit_anchor
  BEGIN SELECT RAISE(ABORT, 'audit_anchor rows are never deleted'); END;
";
