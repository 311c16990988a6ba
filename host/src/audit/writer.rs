//! The single audit writer: one OS thread owns the write connection, drains
//! whatever is queued (up to [`MAX_BATCH`]), chains it, commits it in one
//! transaction (group commit) and acknowledges each event with its sequence
//! number. If a commit fails, every waiting event gets the error and the log
//! is halted: nothing that depends on the audit may proceed until restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::chain::{self, Hash, Row};
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
/// indexing never sits between an alert and its commit under load.
pub const FTS_IDLE: std::time::Duration = std::time::Duration::from_millis(20);

/// 1 MiB: payloads above this are replaced by a marker with their size and
/// SHA-256, so one huge event cannot stall the writer.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Why an event could not be recorded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The audit log is halted after an earlier write failure.
    #[error(
        "the audit log is halted after a write failure ({0}); no action that must be audited can proceed; fix the cause (for example free disk space) and restart algobanana"
    )]
    Halted(String),
    /// This write failed.
    #[error(
        "cannot write the audit log: {0}; the host is now halted; fix the cause (for example free disk space) and restart algobanana"
    )]
    Write(String),
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

type Reply = oneshot::Sender<Result<u64, AuditError>>;

/// Options for opening the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditOptions {
    /// Caps the database at this many pages (SQLite `max_page_count`); used
    /// by tests to simulate a full disk.
    pub max_page_count: Option<u64>,
}

/// A handle to the audit log; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: Mutex<Option<mpsc::Sender<(AuditEvent, Reply)>>>,
    halted: Arc<Mutex<Option<String>>>,
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

fn open_connection(path: &Path, options: &AuditOptions) -> Result<Connection, AuditError> {
    let err = |e: rusqlite::Error| AuditError::Open {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.execute_batch(schema::PRAGMAS).map_err(err)?;
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(err)?;
    conn.execute_batch(schema::SCHEMA).map_err(err)?;
    if let Some(pages) = options.max_page_count {
        conn.pragma_update(None, "max_page_count", pages).map_err(err)?;
    }
    Ok(conn)
}

impl AuditLog {
    /// Opens (creating if needed) the audit database at `path` and starts
    /// the writer thread.
    ///
    /// # Errors
    /// [`AuditError::Open`] when the file cannot be opened or its schema created.
    pub fn open(path: &Path, options: AuditOptions) -> Result<Self, AuditError> {
        let conn = open_connection(path, &options)?;
        let err = |e: rusqlite::Error| AuditError::Open {
            path: path.to_owned(),
            message: e.to_string(),
        };
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
                let hash = Hash::try_from(hash.as_slice()).map_err(|_| AuditError::Open {
                    path: path.to_owned(),
                    message: format!("entry_hash of seq {seq} is not 32 bytes"),
                })?;
                (u64::try_from(seq).unwrap_or(0) + 1, hash)
            }
            None => (0, chain::genesis(&install_id)),
        };

        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let halted = Arc::new(Mutex::new(None));
        let indexed_through: i64 = conn
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM audit_meta WHERE key = 'fts_indexed_through'",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        let writer = Writer {
            conn,
            rx,
            next_seq,
            prev,
            halted: halted.clone(),
            indexed_through,
        };
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| AuditError::Open {
                path: path.to_owned(),
                message: format!("cannot start writer thread: {e}"),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                tx: Mutex::new(Some(tx)),
                halted,
                thread: Mutex::new(Some(thread)),
                path: path.to_owned(),
                install_id,
            }),
        })
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
        let tx = self
            .inner
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(AuditError::Closed)?;
        let (reply, receipt) = oneshot::channel();
        tx.send((event, reply)).await.map_err(|_| AuditError::Closed)?;
        Ok(Receipt(receipt))
    }

    /// Appends `event` and waits for its commit.
    ///
    /// # Errors
    /// [`AuditError`] when it could not be committed.
    pub async fn record(&self, event: AuditEvent) -> Result<u64, AuditError> {
        self.append(event).await?.committed().await
    }

    /// Why the log is halted, if it is.
    pub fn halted(&self) -> Option<String> {
        self.inner.halted.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// This installation's id (part of the chain's genesis).
    pub fn install_id(&self) -> &str {
        &self.inner.install_id
    }

    /// Stops accepting events, commits what is queued and joins the writer.
    pub fn close(&self) {
        drop(self.inner.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = self.inner.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<(AuditEvent, Reply)>,
    next_seq: u64,
    prev: Hash,
    halted: Arc<Mutex<Option<String>>>,
    /// The last sequence number in the full-text index.
    indexed_through: i64,
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
    fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // A tiny runtime of its own, only for receiving with a timeout.
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().ok();
        loop {
            let backlog = i64::try_from(self.next_seq).unwrap_or(i64::MAX) - 1 > self.indexed_through;
            let first = match (backlog, &rt) {
                // Index only after FTS_IDLE without an event.
                (true, Some(rt)) => match rt.block_on(async { tokio::time::timeout(FTS_IDLE, self.rx.recv()).await }) {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(_idle) => {
                        self.index_step();
                        continue;
                    }
                },
                _ => match self.rx.blocking_recv() {
                    Some(m) => m,
                    None => break,
                },
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let halted = self.halted.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(reason) = halted {
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(AuditError::Halted(reason.clone())));
                }
                continue;
            }
            let (events, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
            match self.commit(events) {
                Ok(first_seq) => {
                    for (i, reply) in replies.into_iter().enumerate() {
                        let _ = reply.send(Ok(first_seq + i as u64));
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    tracing::error!(error = %reason, "audit write failed; halting");
                    *self.halted.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
                    for reply in replies {
                        let _ = reply.send(Err(AuditError::Write(reason.clone())));
                    }
                }
            }
        }
        while self.index_step() {}
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);");
    }

    /// Adds up to [`FTS_CHUNK`] committed events to the full-text index.
    /// Returns true if and only if it indexed anything (so there may be more).
    fn index_step(&mut self) -> bool {
        let mut step = || -> Result<Option<i64>, rusqlite::Error> {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let through: i64 = tx.query_row(
                "SELECT CAST(value AS INTEGER) FROM audit_meta WHERE key = 'fts_indexed_through'",
                [],
                |r| r.get(0),
            )?;
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
                self.indexed_through = i64::MAX;
                false
            }
        }
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
}
