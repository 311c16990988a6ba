//! The single audit writer: one OS thread owns the write connection, drains
//! whatever is queued (up to [`MAX_BATCH`]), chains it, commits it in one
//! transaction (group commit) and acknowledges each event with its sequence
//! number. The same thread signs checkpoints (it must see a committed head),
//! rotates the signing key, prunes, and fills the full-text index when idle.
//! If a commit fails, every waiting event gets the error and the log is
//! halted: nothing that depends on the audit may proceed until restart.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::chain::{self, Hash, Row};
use super::checkpoint::{Body, Kind};
use super::keys::{AuditKey, KEY_FILE, KeyStore};
use super::{AuditEvent, schema};

/// Most events committed in one transaction. 256 rows commit in about the
/// time of one fsync, which bounds the ack latency of the batch.
pub const MAX_BATCH: usize = 256;

/// Events waiting for the writer before `append` applies back-pressure.
pub const QUEUE_CAPACITY: usize = 8192;

/// Rows added to the full-text index per idle step: about 0.4 ms each for a
/// 2 KB payload, so an event arriving mid-step waits at most a few ms.
pub const FTS_CHUNK: i64 = 8;

/// The writer indexes only after this long without a new event, so
/// indexing never sits between an alert and its commit under load: one
/// step per quiet period of this length.
pub const FTS_IDLE: Duration = Duration::from_millis(20);

/// After this long without a new event the host is idle, not between two
/// alerts, and the writer indexes step after step with no pause until the
/// backlog is gone or an event arrives (the first event waits for at most
/// the step in progress). A burst's backlog is then indexed at the speed
/// of the disk instead of [`FTS_CHUNK`] rows per [`FTS_IDLE`] (about 400
/// rows a second, so tens of seconds to minutes after a burst during which
/// searches scan the tail). Measured in docs/performance.md, session 10:
/// continuing after every 20 ms pause, with steps sized to 2 ms, took CPU
/// from runs at 50 % and 90 % of saturation and raised their p99.
pub const FTS_CATCH_UP_IDLE: Duration = Duration::from_millis(250);

/// 1 MiB: payloads above this are replaced by a marker with their size and
/// SHA-256, so one huge event cannot stall the writer.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Why an event could not be recorded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The audit log is halted after an earlier write failure.
    #[error(
        "the audit log is halted after a write failure ({0}); no action that must be audited can proceed; fix the cause (a full disk: free space; a data dir that became read-only: make it writable; a failing disk: check it) and restart algobanana"
    )]
    Halted(String),
    /// This write failed.
    #[error(
        "cannot write the audit log: {0}; the host is now halted; fix the cause (a full disk: free space; a data dir that became read-only: make it writable; a failing disk: check it) and restart algobanana"
    )]
    Write(String),
    /// The request was refused; nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// The writer has shut down.
    #[error("the audit writer has shut down")]
    Closed,
    /// The audit database could not be opened.
    #[error("cannot open the audit database {path}: {message}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

type Reply<T> = oneshot::Sender<Result<T, AuditError>>;

/// What the writer thread is asked to do.
pub(crate) enum Msg {
    Event(AuditEvent, Reply<u64>),
    Checkpoint(Reply<i64>),
    Rotate(Reply<String>),
    Prune(
        super::prune::PruneRequest,
        super::prune::Archived,
        Reply<super::prune::PruneReport>,
    ),
    RemovePruned(Reply<u64>),
}

/// Options for opening the audit log. The defaults are the production
/// values; tests shorten the intervals.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Caps the database at this many pages (SQLite `max_page_count`); used
    /// by tests to simulate a full disk.
    pub max_page_count: Option<u64>,
    /// Sign a checkpoint after this many events (default 1,000).
    pub checkpoint_events: u64,
    /// …or this long after the last checkpoint when events are unsigned (60 s).
    pub checkpoint_interval: Duration,
    /// Sign a heartbeat after this long without any checkpoint (15 min).
    pub heartbeat: Duration,
    /// The signing key file (default `DATA_DIR/keys/audit-signing.key`).
    pub key_path: Option<PathBuf>,
    /// The vault: when set, the signing key lives there.
    pub vault: Option<std::sync::Arc<crate::vault::Vault>>,
    /// Whether the writer fills the full-text index and removes pruned
    /// rows when idle (default on). Tests turn it off to hold those states.
    pub idle_work: bool,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            max_page_count: None,
            checkpoint_events: 1000,
            checkpoint_interval: Duration::from_secs(60),
            heartbeat: Duration::from_secs(15 * 60),
            key_path: None,
            vault: None,
            idle_work: true,
        }
    }
}

/// A handle to the audit log; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    halted: Arc<Mutex<Option<String>>>,
    commits: Arc<AtomicU64>,
    removal_steps: Arc<AtomicU64>,
    /// Prunes run one at a time: each archives from where the last one cut.
    pruning: tokio::sync::Mutex<()>,
    thread: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
    install_id: String,
}

/// Resolves when the event is durably committed.
#[derive(Debug)]
pub struct Receipt(oneshot::Receiver<Result<u64, AuditError>>);

impl Receipt {
    /// Waits for the commit; returns the event's sequence number.
    ///
    /// # Errors
    /// [`AuditError`] when the event could not be committed.
    pub async fn committed(self) -> Result<u64, AuditError> {
        self.0.await.unwrap_or(Err(AuditError::Closed))
    }
}

/// Opens a connection to the audit database with the audit pragmas and
/// schema.
pub(crate) fn open_connection(path: &Path, max_page_count: Option<u64>) -> Result<Connection, AuditError> {
    let err = |e: rusqlite::Error| AuditError::Open {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.execute_batch(schema::PRAGMAS).map_err(err)?;
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(err)?;
    conn.execute_batch(schema::SCHEMA).map_err(err)?;
    if let Some(pages) = max_page_count {
        conn.pragma_update(None, "max_page_count", pages).map_err(err)?;
    }
    crate::store::wal::configure(&conn).map_err(err)?;
    Ok(conn)
}

/// The last checkpoint: what the next one chains to.
#[derive(Debug, Clone)]
pub(crate) struct LastCheckpoint {
    pub(crate) signature: Vec<u8>,
    pub(crate) at: Instant,
}

impl AuditLog {
    /// Opens (creating if needed) the audit database at `path`, takes the
    /// data dir's writer lock, loads (or creates) the signing key, signs a
    /// `start` checkpoint and starts the writer thread.
    ///
    /// # Errors
    /// [`AuditError::Open`] naming the file and what to do.
    pub fn open(path: &Path, options: AuditOptions) -> Result<Self, AuditError> {
        let open_err = |message: String| AuditError::Open {
            path: path.to_owned(),
            message,
        };
        let lock = take_lock(path)?;
        let conn = open_connection(path, options.max_page_count)?;
        let err = |e: rusqlite::Error| open_err(e.to_string());
        let install_id: String = match conn
            .query_row("SELECT value FROM audit_meta WHERE key = 'install_id'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(err)?
        {
            Some(id) => id,
            None => {
                let id = uuid::Uuid::now_v7().to_string();
                conn.execute("INSERT INTO audit_meta(key, value) VALUES ('install_id', ?1)", [&id])
                    .map_err(err)?;
                id
            }
        };
        let key_path = options
            .key_path
            .clone()
            .unwrap_or_else(|| path.parent().unwrap_or(Path::new(".")).join(KEY_FILE));
        let key_store = match &options.vault {
            Some(vault) => KeyStore::Vault {
                vault: vault.clone(),
                file: key_path,
            },
            None => {
                let vault_file = crate::vault::Vault::path_in(path.parent().unwrap_or(Path::new(".")));
                if !key_path.exists() && vault_file.exists() && options.key_path.is_none() {
                    return Err(open_err(format!(
                        "the audit signing key is in the vault {}, which is locked: unlock it with --vault-key-file, ALGOBANANA_VAULT_PASSPHRASE or ALGOBANANA_VAULT_PASSPHRASE_FILE",
                        vault_file.display()
                    )));
                }
                KeyStore::File(key_path)
            }
        };
        let key = key_store.load_or_create().map_err(|e| open_err(e.to_string()))?;
        register_key(&conn, &key, &key_store.describe()).map_err(open_err)?;

        let head: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT seq, entry_hash FROM audit_event ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(err)?;
        let (next_seq, prev) = match head {
            Some((seq, hash)) => {
                let hash = Hash::try_from(hash.as_slice())
                    .map_err(|_| open_err(format!("entry_hash of seq {seq} is not 32 bytes")))?;
                (u64::try_from(seq).unwrap_or(0) + 1, hash)
            }
            None => {
                // After a prune of everything, the head is the anchor's.
                let anchor: Option<(i64, Vec<u8>)> = conn
                    .query_row(
                        "SELECT pruned_through, head_hash_at_prune FROM audit_anchor ORDER BY id DESC LIMIT 1",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(err)?;
                match anchor {
                    Some((through, hash)) => (
                        u64::try_from(through).unwrap_or(0) + 1,
                        Hash::try_from(hash.as_slice()).map_err(|_| open_err("anchor head is not 32 bytes".into()))?,
                    ),
                    None => (0, chain::genesis(&install_id)),
                }
            }
        };
        let last_checkpoint: Option<Vec<u8>> = conn
            .query_row(
                "SELECT signature FROM audit_checkpoint ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        let indexed_through: i64 = conn
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM audit_meta WHERE key = 'fts_indexed_through'",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;

        let prune_through: i64 = conn
            .query_row("SELECT prune_through FROM audit_control WHERE id = 1", [], |r| r.get(0))
            .map_err(err)?;
        // Rows a prune recorded but has not removed yet (the host stopped
        // first): removed in idle steps as if the prune had just happened.
        let delete_from: Option<i64> = conn
            .query_row(
                "SELECT min(seq) FROM audit_event WHERE seq <= ?1",
                [prune_through],
                |r| r.get(0),
            )
            .map_err(err)?;

        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let halted = Arc::new(Mutex::new(None));
        let commits = Arc::new(AtomicU64::new(0));
        let removal_steps = Arc::new(AtomicU64::new(0));
        let mut writer = Writer {
            conn,
            rx,
            commits: commits.clone(),
            next_seq,
            prev,
            halted: halted.clone(),
            indexed_through,
            fts_failed: false,
            prune_through,
            delete_from,
            removal_steps: removal_steps.clone(),
            last_delete: Instant::now(),
            last_event: Instant::now(),
            catching_up: false,
            key,
            key_store,
            install_id: install_id.clone(),
            last_checkpoint: last_checkpoint.map(|signature| LastCheckpoint {
                signature,
                at: Instant::now(),
            }),
            unsigned: 0,
            options,
            _lock: lock,
        };
        writer
            .checkpoint(Kind::Start, None)
            .map_err(|e| open_err(format!("cannot sign the start checkpoint: {e}")))?;
        // WAL checkpoints beside the writer for as long as it runs; stopped
        // and joined before the writer thread ends.
        let checkpointer = crate::store::wal::Checkpointer::start(path.to_owned());
        checkpointer.watch(&writer.conn);
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                writer.run();
                drop(checkpointer);
            })
            .map_err(|e| open_err(format!("cannot start writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                tx: Mutex::new(Some(tx)),
                halted,
                commits,
                removal_steps,
                pruning: tokio::sync::Mutex::new(()),
                thread: Mutex::new(Some(thread)),
                path: path.to_owned(),
                install_id,
            }),
        })
    }

    fn sender(&self) -> Result<mpsc::Sender<Msg>, AuditError> {
        self.inner
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(AuditError::Closed)
    }

    /// Queues `event`; the returned [`Receipt`] resolves when it is committed.
    /// Events commit in the order they were queued, so awaiting one receipt
    /// means every earlier event is committed too.
    ///
    /// # Errors
    /// [`AuditError::Halted`] or [`AuditError::Closed`] at once.
    pub async fn append(&self, event: AuditEvent) -> Result<Receipt, AuditError> {
        if let Some(reason) = self.halted() {
            return Err(AuditError::Halted(reason));
        }
        let (reply, receipt) = oneshot::channel();
        self.sender()?
            .send(Msg::Event(event, reply))
            .await
            .map_err(|_| AuditError::Closed)?;
        Ok(Receipt(receipt))
    }

    /// Appends `event` and waits for its commit.
    ///
    /// # Errors
    /// [`AuditError`] when it could not be committed.
    pub async fn record(&self, event: AuditEvent) -> Result<u64, AuditError> {
        self.append(event).await?.committed().await
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Msg) -> Result<T, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.sender()?.send(make(reply)).await.map_err(|_| AuditError::Closed)?;
        rx.await.unwrap_or(Err(AuditError::Closed))
    }

    /// Signs a checkpoint over everything committed so far; returns its id.
    ///
    /// # Errors
    /// [`AuditError`].
    pub async fn checkpoint_now(&self) -> Result<i64, AuditError> {
        self.ask(Msg::Checkpoint).await
    }

    /// Replaces the signing key: a rotation checkpoint signed by the old key
    /// endorses the new one, and the key file is replaced. Returns the new
    /// key id.
    ///
    /// # Errors
    /// [`AuditError`].
    pub async fn rotate_key(&self) -> Result<String, AuditError> {
        self.ask(Msg::Rotate).await
    }

    /// Prunes events before a time (see [`super::prune`]): archives them
    /// off the writer thread, then records the cut. Readers stop seeing the
    /// pruned rows at once; the writer deletes them in its idle steps.
    ///
    /// # Errors
    /// [`AuditError`] when the prune is refused or fails; nothing is removed then.
    pub async fn prune(&self, request: super::prune::PruneRequest) -> Result<super::prune::PruneReport, AuditError> {
        if let Some(reason) = self.halted() {
            return Err(AuditError::Halted(reason));
        }
        let _one = self.inner.pruning.lock().await;
        let db = self.inner.path.clone();
        let req = request.clone();
        let archived = tokio::task::spawn_blocking(move || super::prune::archive(&db, &req))
            .await
            .map_err(|e| AuditError::Refused(format!("the prune's archive task failed: {e}; nothing was pruned")))??;
        self.ask(|r| Msg::Prune(request, archived, r)).await
    }

    /// Deletes every row that a prune has recorded but the writer has not
    /// removed yet, in transactions of [`super::prune::DRAIN_CHUNK`] rows,
    /// indexing first what the full-text index has not reached (its delete
    /// needs indexed rows). Returns how many rows it deleted. For `audit
    /// prune` at the command line, where no alert waits for the writer.
    ///
    /// # Errors
    /// [`AuditError`].
    pub async fn remove_pruned(&self) -> Result<u64, AuditError> {
        self.ask(Msg::RemovePruned).await
    }

    /// Transactions that deleted pruned rows since the log was opened.
    pub fn removal_steps(&self) -> u64 {
        self.inner.removal_steps.load(Ordering::Relaxed)
    }

    /// Why the log is halted, if it is.
    pub fn halted(&self) -> Option<String> {
        self.inner.halted.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Batches of events committed since the log was opened, each one
    /// transaction and one fsync: the load bench prints them per alert.
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// This installation's id (part of the chain's genesis).
    pub fn install_id(&self) -> &str {
        &self.inner.install_id
    }

    /// Stops accepting events, commits what is queued, signs a `stop`
    /// checkpoint and joins the writer.
    pub fn close(&self) {
        drop(self.inner.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = self.inner.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// One writer per data dir: a second process would fork the chain.
fn take_lock(db: &Path) -> Result<File, AuditError> {
    let lock_path = db.with_extension("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| AuditError::Open {
            path: lock_path.clone(),
            message: e.to_string(),
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(AuditError::Open {
            path: db.to_owned(),
            message: "another algobanana process is writing this audit log; stop it first (commands that write the log, such as prune and rotate-key, run with the server stopped)".into(),
        }),
    }
}

fn register_key(conn: &Connection, key: &AuditKey, key_path: &str) -> Result<(), String> {
    let known: Vec<String> = conn
        .prepare("SELECT key_id FROM audit_key ORDER BY ts_ns")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| e.to_string())?;
    if known.is_empty() {
        conn.execute(
            "INSERT INTO audit_key(key_id, public_key, ts_ns) VALUES (?1, ?2, ?3)",
            params![key.id(), key.public().as_bytes().as_slice(), super::now_ns()],
        )
        .map_err(|e| e.to_string())?;
        return Ok(());
    }
    if known.iter().any(|k| k == key.id()) {
        return Ok(());
    }
    Err(format!(
        "the signing key in {} (id {}) is not a key this log trusts ({}); restore the key file from your backup, or the log's checkpoints cannot be continued",
        key_path,
        key.id(),
        known.join(", ")
    ))
}

pub(crate) struct Writer {
    pub(crate) conn: Connection,
    rx: mpsc::Receiver<Msg>,
    /// Event batches committed (see [`AuditLog::commits`]).
    commits: Arc<AtomicU64>,
    pub(crate) next_seq: u64,
    pub(crate) prev: Hash,
    halted: Arc<Mutex<Option<String>>>,
    /// The last sequence number in the full-text index.
    pub(crate) indexed_through: i64,
    /// Indexing failed: no more steps until the next start (searches scan).
    fts_failed: bool,
    /// Events through this one are pruned (gone for every reader).
    pub(crate) prune_through: i64,
    /// The lowest pruned row still in the table, while there is one.
    delete_from: Option<i64>,
    /// Transactions that deleted pruned rows (see [`AuditLog::removal_steps`]).
    removal_steps: Arc<AtomicU64>,
    /// When the last of them ran (see [`super::prune::DELETE_UNDER_LOAD`]).
    last_delete: Instant,
    /// When the last event arrived (see [`FTS_CATCH_UP_IDLE`]).
    last_event: Instant,
    /// The last timed wake-up was an index step taken after
    /// [`FTS_CATCH_UP_IDLE`] without events: the next step follows at once.
    catching_up: bool,
    pub(crate) key: AuditKey,
    key_store: KeyStore,
    pub(crate) install_id: String,
    pub(crate) last_checkpoint: Option<LastCheckpoint>,
    /// Committed events not yet covered by a checkpoint.
    unsigned: u64,
    options: AuditOptions,
    _lock: File,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Fail closed: nothing that must be audited proceeds, and health says why.
            *self.halted.lock().unwrap_or_else(|p| p.into_inner()) = Some("the audit writer crashed".into());
        }
    }
}

/// An event with its canonical payload and string columns, ready to hash.
struct Prepared {
    event: AuditEvent,
    payload: String,
    source_ip: Option<String>,
}

impl Writer {
    pub(crate) fn halt(&self, reason: &str) {
        tracing::error!(error = %reason, "audit write failed; halting");
        *self.halted.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_owned());
    }

    fn is_halted(&self) -> Option<String> {
        self.halted.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How long to wait for the next message before doing timed work.
    fn next_wake(&self) -> Duration {
        let since = self.last_checkpoint.as_ref().map_or(Duration::ZERO, |c| c.at.elapsed());
        let mut wake = self.options.heartbeat.saturating_sub(since);
        if self.unsigned > 0 {
            wake = wake.min(self.options.checkpoint_interval.saturating_sub(since));
        }
        if self.options.idle_work && (self.fts_backlog() || self.delete_ready()) {
            // A zero timeout still takes an event that is already waiting:
            // the receive is polled before the timer.
            wake = wake.min(if self.catching_up { Duration::ZERO } else { FTS_IDLE });
        }
        wake
    }

    fn fts_backlog(&self) -> bool {
        !self.fts_failed && i64::try_from(self.next_seq).unwrap_or(i64::MAX) - 1 > self.indexed_through
    }

    /// Pruned rows that can be deleted now. A row leaves the full-text
    /// index in the same delete (a trigger), which needs it indexed; rows
    /// past the index wait for [`Writer::index_step`].
    fn delete_ready(&self) -> bool {
        self.delete_from
            .is_some_and(|low| low <= self.prune_through.min(self.indexed_through))
    }

    /// A prune through `through` was committed: its rows are now deleted
    /// in idle steps.
    pub(crate) fn pruned(&mut self, through: i64) {
        self.delete_from = self.delete_from.or(Some(self.prune_through + 1));
        self.prune_through = through;
    }

    /// Deletes up to `max_rows` pruned rows, oldest first, in one
    /// transaction. Returns true if and only if it deleted anything.
    pub(crate) fn delete_step(&mut self, max_rows: i64) -> bool {
        if !self.delete_ready() {
            return false;
        }
        let Some(low) = self.delete_from else { return false };
        let upto = self
            .prune_through
            .min(self.indexed_through)
            .min(low.saturating_add(max_rows.max(1) - 1));
        let mut step = || -> Result<(), rusqlite::Error> {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute(
                "DELETE FROM audit_event WHERE seq >= ?1 AND seq <= ?2",
                params![low, upto],
            )?;
            tx.commit()
        };
        let result = step();
        self.last_delete = Instant::now();
        match result {
            Ok(()) => {
                self.removal_steps.fetch_add(1, Ordering::Relaxed);
                self.delete_from = (upto < self.prune_through).then_some(upto + 1);
                true
            }
            Err(e) => {
                // The rows are already pruned for every reader; only their
                // space is not reclaimed. Stop trying until the next start.
                tracing::warn!(error = %e, "cannot delete pruned audit rows; they stay unreadable and are retried at the next start");
                self.delete_from = None;
                false
            }
        }
    }

    /// Deletes every pruned row now (see [`AuditLog::remove_pruned`]).
    fn remove_pruned(&mut self) -> u64 {
        let mut removed = 0u64;
        while let Some(low) = self.delete_from {
            if self.delete_step(super::prune::DRAIN_CHUNK) {
                let next = self.delete_from.unwrap_or(self.prune_through + 1);
                removed += u64::try_from(next - low).unwrap_or(0);
            } else if !self.index_step() {
                break;
            }
        }
        removed
    }

    /// Timed work: periodic checkpoints, heartbeats, idle indexing.
    fn on_timer(&mut self) {
        if self.is_halted().is_some() {
            // A halted log does no timed work; without this a catch-up in
            // progress would keep the wake-up at zero and spin.
            self.catching_up = false;
            return;
        }
        let since = self.last_checkpoint.as_ref().map_or(Duration::MAX, |c| c.at.elapsed());
        let result = if self.unsigned > 0 && since >= self.options.checkpoint_interval {
            self.checkpoint(Kind::Periodic, None).map(drop)
        } else if since >= self.options.heartbeat {
            self.checkpoint(Kind::Heartbeat, None).map(drop)
        } else {
            let worked = self.options.idle_work && (self.delete_step(super::prune::DELETE_CHUNK) || self.index_step());
            self.catching_up = worked && self.last_event.elapsed() >= FTS_CATCH_UP_IDLE;
            Ok(())
        };
        if let Err(e) = result {
            self.halt(&format!("cannot sign a checkpoint: {e}"));
        }
    }

    fn run(mut self) {
        // A tiny runtime of its own, only for receiving with a timeout.
        let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(rt) => rt,
            Err(e) => {
                self.halt(&format!("cannot start the audit writer's timer: {e}"));
                return;
            }
        };
        let mut carried: Option<Msg> = None;
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let msg = match carried.take() {
                Some(m) => m,
                None => {
                    let wake = self.next_wake();
                    match rt.block_on(async { tokio::time::timeout(wake, self.rx.recv()).await }) {
                        Ok(Some(m)) => {
                            self.catching_up = false;
                            self.last_event = Instant::now();
                            m
                        }
                        Ok(None) => break,
                        Err(_timer) => {
                            self.on_timer();
                            continue;
                        }
                    }
                }
            };
            match msg {
                Msg::Event(event, reply) => {
                    batch.push((event, reply));
                    while batch.len() < MAX_BATCH {
                        match self.rx.try_recv() {
                            Ok(Msg::Event(e, r)) => batch.push((e, r)),
                            Ok(other) => {
                                carried = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit_batch(&mut batch);
                    // Idle steps never come under steady load; pruned rows
                    // still leave, a chunk at a time, when no event waits.
                    if self.options.idle_work
                        && self.delete_from.is_some()
                        && self.rx.is_empty()
                        && self.last_delete.elapsed() >= super::prune::DELETE_UNDER_LOAD
                    {
                        self.delete_step(super::prune::DELETE_CHUNK);
                    }
                }
                Msg::Checkpoint(reply) => {
                    let r = self.guarded(|w| w.checkpoint(Kind::Periodic, None));
                    let _ = reply.send(r);
                }
                Msg::Rotate(reply) => {
                    let r = self.guarded(Writer::rotate);
                    let _ = reply.send(r);
                }
                Msg::Prune(request, archived, reply) => {
                    let r = match self.is_halted() {
                        Some(reason) => {
                            // Nothing was pruned, so the archive is not one.
                            let _ = std::fs::remove_file(&request.archive);
                            Err(AuditError::Halted(reason))
                        }
                        None => super::prune::commit(&mut self, &request, &archived),
                    };
                    let _ = reply.send(r);
                }
                Msg::RemovePruned(reply) => {
                    let r = match self.is_halted() {
                        Some(reason) => Err(AuditError::Halted(reason)),
                        None => Ok(self.remove_pruned()),
                    };
                    let _ = reply.send(r);
                }
            }
        }
        // The full-text index is not finished here: after a burst that could
        // hold shutdown for many seconds. The next start resumes from
        // `fts_indexed_through`, and searches scan the tail.
        if self.is_halted().is_none()
            && let Err(e) = self.checkpoint(Kind::Stop, None)
        {
            tracing::error!(error = %e, "cannot sign the stop checkpoint");
        }
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);");
    }

    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, rusqlite::Error>) -> Result<T, AuditError> {
        if let Some(reason) = self.is_halted() {
            return Err(AuditError::Halted(reason));
        }
        f(self).map_err(|e| {
            let reason = e.to_string();
            self.halt(&reason);
            AuditError::Write(reason)
        })
    }

    fn commit_batch(&mut self, batch: &mut Vec<(AuditEvent, Reply<u64>)>) {
        if let Some(reason) = self.is_halted() {
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(AuditError::Halted(reason.clone())));
            }
            return;
        }
        let (events, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let n = events.len() as u64;
        match self.commit(events) {
            Ok(first_seq) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                for (i, reply) in replies.into_iter().enumerate() {
                    let _ = reply.send(Ok(first_seq + i as u64));
                }
                self.unsigned += n;
                if self.unsigned >= self.options.checkpoint_events
                    && let Err(e) = self.checkpoint(Kind::Periodic, None)
                {
                    self.halt(&format!("cannot sign a checkpoint: {e}"));
                }
            }
            Err(e) => {
                let reason = e.to_string();
                self.halt(&reason);
                for reply in replies {
                    let _ = reply.send(Err(AuditError::Write(reason.clone())));
                }
            }
        }
    }

    /// Signs and stores a checkpoint over the committed head; returns its id.
    pub(crate) fn checkpoint(&mut self, kind: Kind, rotate: Option<&AuditKey>) -> Result<i64, rusqlite::Error> {
        let body = Body {
            install_id: self.install_id.clone(),
            size: self.next_seq,
            head: self.prev,
            ts_ns: super::now_ns(),
            kind,
            prev_signature: self.last_checkpoint.as_ref().map(|c| c.signature.clone()),
            rotate: rotate.map(|k| (k.id().to_owned(), *k.public().as_bytes())),
        };
        let text = body.text();
        let signature = self.key.sign(text.as_bytes()).to_bytes().to_vec();
        self.conn.execute(
            "INSERT INTO audit_checkpoint(upto_seq, head_hash, ts_ns, kind, key_id, prev_signature, note, signature)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                i64::try_from(self.next_seq).unwrap_or(i64::MAX) - 1,
                &body.head[..],
                body.ts_ns,
                kind.as_str(),
                self.key.id(),
                body.prev_signature,
                text,
                signature,
            ],
        )?;
        let id = self.conn.last_insert_rowid();
        self.last_checkpoint = Some(LastCheckpoint {
            signature,
            at: Instant::now(),
        });
        self.unsigned = 0;
        Ok(id)
    }

    /// A new key, endorsed by a rotation checkpoint signed with the old one.
    fn rotate(&mut self) -> Result<String, rusqlite::Error> {
        let new = AuditKey::generate();
        self.checkpoint(Kind::Rotation, Some(&new))?;
        let endorsement = self.last_checkpoint.as_ref().map(|c| c.signature.clone());
        self.conn.execute(
            "INSERT INTO audit_key(key_id, public_key, ts_ns, endorsed_by, endorsement) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                new.id(),
                new.public().as_bytes().as_slice(),
                super::now_ns(),
                self.key.id(),
                endorsement
            ],
        )?;
        // The old private key is replaced: checkpoints it signed stay
        // verifiable with its public half, kept in audit_key.
        self.key_store
            .replace(&new)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
        let id = new.id().to_owned();
        let old = self.key.id().to_owned();
        self.key = new;
        self.append_internal(
            AuditEvent::new(
                super::ActorKind::System,
                "audit",
                super::action::AUDIT_KEY_ROTATED,
                super::Outcome::Success,
            )
            .resource("audit")
            .payload(serde_json::json!({ "old_key": old, "new_key": id })),
        )?;
        // The first checkpoint under the new key.
        self.checkpoint(Kind::Periodic, None)?;
        Ok(id)
    }

    /// Chains and commits `events`; returns the first one's sequence number.
    fn commit(&mut self, events: Vec<AuditEvent>) -> Result<u64, rusqlite::Error> {
        let prepared: Vec<Prepared> = events
            .into_iter()
            .map(|event| {
                let mut payload = serde_json::to_string(&event.payload).unwrap_or_else(|_| "{}".into());
                if payload.len() > MAX_PAYLOAD_BYTES {
                    payload = serde_json::json!({
                        "truncated": true,
                        "bytes": payload.len(),
                        "sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(payload.as_bytes())),
                    })
                    .to_string();
                }
                let source_ip = event.context.source_ip.map(|ip| ip.to_string());
                Prepared {
                    event,
                    payload,
                    source_ip,
                }
            })
            .collect();

        let first = self.next_seq;
        let mut prev = self.prev;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO audit_event(seq, ts_ns, actor_kind, actor_id, action, resource, outcome, request_id,
                   correlation_id, session_id, source_ip, user_agent, payload, prev_hash, entry_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?;
            for (i, p) in prepared.iter().enumerate() {
                let e = &p.event;
                let row = Row {
                    seq: first + i as u64,
                    ts_ns: e.ts_ns,
                    actor_kind: e.actor_kind.as_str(),
                    actor_id: &e.actor_id,
                    action: e.action,
                    resource: e.resource.as_deref(),
                    outcome: e.outcome.as_str(),
                    request_id: e.context.request_id.as_deref(),
                    correlation_id: e.context.correlation_id.as_deref(),
                    session_id: e.context.session_id.as_deref(),
                    source_ip: p.source_ip.as_deref(),
                    user_agent: e.context.user_agent.as_deref(),
                    payload: &p.payload,
                };
                let hash = chain::entry_hash(&row, &prev);
                stmt.execute(params![
                    i64::try_from(row.seq).unwrap_or(i64::MAX),
                    row.ts_ns,
                    row.actor_kind,
                    row.actor_id,
                    row.action,
                    row.resource,
                    row.outcome,
                    row.request_id,
                    row.correlation_id,
                    row.session_id,
                    row.source_ip,
                    row.user_agent,
                    row.payload,
                    &prev[..],
                    &hash[..],
                ])?;
                prev = hash;
            }
        }
        tx.commit()?;
        self.next_seq = first + prepared.len() as u64;
        self.prev = prev;
        Ok(first)
    }

    /// Adds up to [`FTS_CHUNK`] committed events to the full-text index.
    /// Returns true if and only if it indexed anything (so there may be more).
    pub(crate) fn index_step(&mut self) -> bool {
        if self.fts_failed {
            return false;
        }
        let through = self.indexed_through;
        let mut step = || -> Result<Option<i64>, rusqlite::Error> {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let last: Option<i64> = tx.query_row(
                "SELECT max(seq) FROM (SELECT seq FROM audit_event WHERE seq > ?1 ORDER BY seq LIMIT ?2)",
                params![through, FTS_CHUNK],
                |r| r.get(0),
            )?;
            let Some(last) = last else { return Ok(None) };
            tx.execute(
                "INSERT INTO audit_fts(rowid, actor_id, action, resource, payload)
                 SELECT seq, actor_id, action, resource, payload FROM audit_event WHERE seq > ?1 AND seq <= ?2",
                params![through, last],
            )?;
            tx.execute(
                "UPDATE audit_meta SET value = ?1 WHERE key = 'fts_indexed_through'",
                [last.to_string()],
            )?;
            tx.commit()?;
            Ok(Some(last))
        };
        match step() {
            Ok(Some(last)) => {
                self.indexed_through = last;
                true
            }
            Ok(None) => false,
            Err(e) => {
                // The index is derived data: a failure here never blocks the
                // log itself; searches fall back to scanning the tail. Stop
                // trying until the next start.
                tracing::warn!(error = %e, "cannot update the audit full-text index");
                self.fts_failed = true;
                false
            }
        }
    }

    /// Commits one event from inside the writer thread (prune, rotation).
    pub(crate) fn append_internal(&mut self, event: AuditEvent) -> Result<u64, rusqlite::Error> {
        let seq = self.commit(vec![event])?;
        self.unsigned += 1;
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{ActorKind, Outcome, action};

    fn event(n: usize) -> AuditEvent {
        AuditEvent::new(ActorKind::System, "test", action::CONFIG_CHANGED, Outcome::Success)
            .payload(serde_json::json!({ "n": n }))
    }

    #[tokio::test]
    async fn commits_counts_transactions_not_events() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("audit.db"), AuditOptions::default()).unwrap();
        let start = log.commits();
        for n in 0..3 {
            log.record(event(n)).await.unwrap();
        }
        assert_eq!(log.commits(), start + 3, "each awaited event was its own commit");

        // Queued faster than one fsync: the writer groups them.
        let mut receipts = Vec::new();
        for n in 0..200 {
            receipts.push(log.append(event(n)).await.unwrap());
        }
        for r in receipts {
            r.committed().await.unwrap();
        }
        let grouped = log.commits() - start - 3;
        assert!((1..200).contains(&grouped), "{grouped} commits for 200 queued events");
        log.close();
    }
}
