//! Reading the audit log back: filtered search over a read-only connection
//! (WAL lets it run while the writer commits).

use std::path::Path;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

/// Filters for [`search`]; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Events at or after this time (UTC ns).
    pub since_ns: Option<i64>,
    /// Events before this time (UTC ns).
    pub until_ns: Option<i64>,
    /// Actor kind (`plugin`, `webhook_source`, …).
    pub actor_kind: Option<String>,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Action; a trailing `*` matches a prefix (`plugin.*`).
    pub action: Option<String>,
    /// Outcome.
    pub outcome: Option<String>,
    /// Correlation id (alert id).
    pub correlation_id: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Free text (substring of three or more characters, via FTS5 trigram).
    pub text: Option<String>,
    /// Only events with a sequence number above this.
    pub after_seq: Option<u64>,
    /// Only events with a sequence number at or below this.
    pub through_seq: Option<u64>,
    /// At most this many events (oldest first).
    pub limit: Option<usize>,
}

/// One stored event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditRecord {
    /// Sequence number.
    pub seq: u64,
    /// UTC nanoseconds.
    pub ts_ns: i64,
    /// RFC 3339 time.
    pub ts: String,
    /// Actor kind.
    pub actor_kind: String,
    /// Actor id.
    pub actor_id: String,
    /// Action.
    pub action: String,
    /// Resource.
    pub resource: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// Request id.
    pub request_id: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Session id.
    pub session_id: Option<String>,
    /// Source IP.
    pub source_ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// The payload.
    pub payload: serde_json::Value,
    /// Hex of the previous event's hash.
    pub prev_hash: String,
    /// Hex of this event's hash.
    pub entry_hash: String,
}

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The database could not be opened or read.
    #[error("cannot read the audit database {path}: {message}")]
    Database {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The free-text query was too short.
    #[error("free-text search needs at least 3 characters, got `{0}`")]
    TextTooShort(String),
}

/// Opens `path` read-only.
///
/// # Errors
/// [`QueryError::Database`].
pub fn open_read_only(path: &Path) -> Result<Connection, QueryError> {
    let err = |e: rusqlite::Error| QueryError::Database {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if !path.exists() {
        return Err(QueryError::Database {
            path: path.display().to_string(),
            message: "no such file; is --data-dir right? `algobanana init` creates it".into(),
        });
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
    Ok(conn)
}

/// Searches the audit database at `path`.
///
/// # Errors
/// [`QueryError`].
pub fn search(path: &Path, filter: &Filter) -> Result<Vec<AuditRecord>, QueryError> {
    if let Some(t) = &filter.text {
        check_text(t)?;
    }
    let conn = open_read_only(path)?;
    search_conn(&conn, filter).map_err(|e| QueryError::Database {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The columns every reader selects, in `row_parts` order.
pub const COLUMNS: &str = "seq, ts_ns, actor_kind, actor_id, action, resource, outcome, request_id, correlation_id,
                session_id, source_ip, user_agent, payload, prev_hash, entry_hash";

/// The first sequence number a reader may see is the one after this:
/// rows at or below it are pruned, deleted or waiting to be.
pub const LIVE: &str = "(SELECT prune_through FROM audit_control WHERE id = 1)";

/// `SELECT COLUMNS FROM audit_event WHERE <filter> ORDER BY seq [LIMIT]`
/// and its arguments.
pub fn select(conn: &Connection, f: &Filter) -> (String, Vec<SqlValue>) {
    // Rows through `prune_through` are pruned even while the writer has
    // not deleted them yet (see `prune`): no reader sees them.
    let mut sql = format!("SELECT {COLUMNS} FROM audit_event WHERE seq > {LIVE}");
    let mut args: Vec<SqlValue> = Vec::new();
    let mut eq = |sql: &mut String, col: &str, v: &Option<String>| {
        if let Some(v) = v {
            sql.push_str(&format!(" AND {col} = ?"));
            args.push(SqlValue::Text(v.clone()));
        }
    };
    eq(&mut sql, "actor_kind", &f.actor_kind);
    eq(&mut sql, "actor_id", &f.actor_id);
    eq(&mut sql, "outcome", &f.outcome);
    eq(&mut sql, "correlation_id", &f.correlation_id);
    eq(&mut sql, "request_id", &f.request_id);
    if let Some(a) = &f.action {
        match a.strip_suffix('*') {
            Some(prefix) => {
                sql.push_str(" AND substr(action, 1, ?) = ?");
                args.push(SqlValue::Integer(i64::try_from(prefix.len()).unwrap_or(0)));
                args.push(SqlValue::Text(prefix.to_owned()));
            }
            None => {
                sql.push_str(" AND action = ?");
                args.push(SqlValue::Text(a.clone()));
            }
        }
    }
    if let Some(t) = f.since_ns {
        sql.push_str(" AND ts_ns >= ?");
        args.push(SqlValue::Integer(t));
    }
    if let Some(t) = f.until_ns {
        sql.push_str(" AND ts_ns < ?");
        args.push(SqlValue::Integer(t));
    }
    if let Some(s) = f.after_seq {
        sql.push_str(" AND seq > ?");
        args.push(SqlValue::Integer(i64::try_from(s).unwrap_or(i64::MAX)));
    }
    if let Some(s) = f.through_seq {
        sql.push_str(" AND seq <= ?");
        args.push(SqlValue::Integer(i64::try_from(s).unwrap_or(i64::MAX)));
    }
    if let Some(text) = &f.text {
        // Indexed rows: a quoted FTS5 string, which the trigram tokenizer
        // matches as a case-insensitive substring. Rows the idle indexer has
        // not reached yet: the same match by LIKE.
        let through: i64 = conn
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM audit_meta WHERE key = 'fts_indexed_through'",
                [],
                |r| r.get(0),
            )
            .unwrap_or(-1);
        let like = format!(
            "%{}%",
            text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
        );
        sql.push_str(
            " AND (seq IN (SELECT rowid FROM audit_fts WHERE audit_fts MATCH ?) OR (seq > ? AND (actor_id LIKE ? ESCAPE '\\'
               OR action LIKE ? ESCAPE '\\' OR coalesce(resource, '') LIKE ? ESCAPE '\\' OR payload LIKE ? ESCAPE '\\')))",
        );
        args.push(SqlValue::Text(format!("\"{}\"", text.replace('"', "\"\""))));
        args.push(SqlValue::Integer(through));
        for _ in 0..4 {
            args.push(SqlValue::Text(like.clone()));
        }
    }
    sql.push_str(" ORDER BY seq");
    if let Some(n) = f.limit {
        sql.push_str(" LIMIT ?");
        args.push(SqlValue::Integer(i64::try_from(n).unwrap_or(i64::MAX)));
    }
    (sql, args)
}

fn search_conn(conn: &Connection, f: &Filter) -> Result<Vec<AuditRecord>, rusqlite::Error> {
    let (sql, args) = select(conn, f);
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
        let payload: String = r.get(12)?;
        let ts_ns: i64 = r.get(1)?;
        Ok(AuditRecord {
            seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
            ts_ns,
            ts: super::format_ts(ts_ns),
            actor_kind: r.get(2)?,
            actor_id: r.get(3)?,
            action: r.get(4)?,
            resource: r.get(5)?,
            outcome: r.get(6)?,
            request_id: r.get(7)?,
            correlation_id: r.get(8)?,
            session_id: r.get(9)?,
            source_ip: r.get(10)?,
            user_agent: r.get(11)?,
            payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
            prev_hash: hex::encode(r.get::<_, Vec<u8>>(13)?),
            entry_hash: hex::encode(r.get::<_, Vec<u8>>(14)?),
        })
    })?;
    rows.collect()
}

/// One stored event exactly as stored: the payload as its canonical text
/// and the hashes as bytes. Verification and export use this, never the
/// parsed form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RawRow {
    /// Sequence number.
    pub seq: u64,
    /// UTC nanoseconds.
    pub ts_ns: i64,
    /// Actor kind.
    pub actor_kind: String,
    /// Actor id.
    pub actor_id: String,
    /// Action.
    pub action: String,
    /// Resource.
    pub resource: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// Request id.
    pub request_id: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Session id.
    pub session_id: Option<String>,
    /// Source IP.
    pub source_ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// The canonical JSON payload, as stored and hashed.
    pub payload: String,
    /// Hex of the previous event's hash.
    pub prev_hash: String,
    /// Hex of this event's hash.
    pub entry_hash: String,
}

impl RawRow {
    /// Reads a row selected with [`COLUMNS`].
    ///
    /// # Errors
    /// SQLite errors (including a column of the wrong type in a damaged file).
    pub fn from_sql(r: &rusqlite::Row<'_>) -> Result<Self, rusqlite::Error> {
        // Text is read as bytes and converted lossily: a byte flipped into
        // invalid UTF-8 must surface as a hash mismatch on that row, not as
        // an unreadable log.
        let opt = |i: usize| -> Result<Option<String>, rusqlite::Error> {
            match r.get_ref(i)? {
                rusqlite::types::ValueRef::Null => Ok(None),
                rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                    Ok(Some(String::from_utf8_lossy(b).into_owned()))
                }
                rusqlite::types::ValueRef::Integer(n) => Ok(Some(n.to_string())),
                rusqlite::types::ValueRef::Real(_) => Ok(Some("<real>".to_owned())),
            }
        };
        let req = |i: usize| opt(i).map(Option::unwrap_or_default);
        let blob = |i: usize| -> Result<String, rusqlite::Error> {
            Ok(match r.get_ref(i)? {
                rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => hex::encode(b),
                _ => String::new(),
            })
        };
        Ok(Self {
            seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(u64::MAX),
            ts_ns: r.get(1)?,
            actor_kind: req(2)?,
            actor_id: req(3)?,
            action: req(4)?,
            resource: opt(5)?,
            outcome: req(6)?,
            request_id: opt(7)?,
            correlation_id: opt(8)?,
            session_id: opt(9)?,
            source_ip: opt(10)?,
            user_agent: opt(11)?,
            payload: req(12)?,
            prev_hash: blob(13)?,
            entry_hash: blob(14)?,
        })
    }

    /// The chain's view of this row.
    pub fn chain_row(&self) -> super::chain::Row<'_> {
        super::chain::Row {
            seq: self.seq,
            ts_ns: self.ts_ns,
            actor_kind: &self.actor_kind,
            actor_id: &self.actor_id,
            action: &self.action,
            resource: self.resource.as_deref(),
            outcome: &self.outcome,
            request_id: self.request_id.as_deref(),
            correlation_id: self.correlation_id.as_deref(),
            session_id: self.session_id.as_deref(),
            source_ip: self.source_ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            payload: &self.payload,
        }
    }
}

/// Validates a free-text query (FTS5 trigram needs three characters).
///
/// # Errors
/// [`QueryError::TextTooShort`].
pub fn check_text(text: &str) -> Result<(), QueryError> {
    if text.chars().count() < 3 {
        return Err(QueryError::TextTooShort(text.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{ActorKind, AuditEvent, AuditLog, Outcome, action};

    fn event(text: &str) -> AuditEvent {
        AuditEvent::new(ActorKind::System, "test", action::CONFIG_CHANGED, Outcome::Success)
            .payload(serde_json::json!({ "note": text }))
    }

    /// How many events a free-text search for `text` finds.
    fn find(path: &std::path::Path, text: &str) -> usize {
        search(
            path,
            &Filter {
                text: Some(text.into()),
                ..Filter::default()
            },
        )
        .unwrap()
        .len()
    }

    /// Waits (at most `secs`) until the writer has indexed through `seq`
    /// and returns where the index stands.
    async fn indexed_through(path: &std::path::Path, seq: i64, secs: u64) -> i64 {
        let conn = open_read_only(path).unwrap();
        let indexed = || -> i64 {
            conn.query_row(
                "SELECT CAST(value AS INTEGER) FROM audit_meta WHERE key = 'fts_indexed_through'",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while indexed() < seq && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        indexed()
    }

    #[tokio::test]
    async fn free_text_finds_rows_before_and_after_the_idle_indexer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let log = AuditLog::open(&path, Default::default()).unwrap();
        log.record(event("alpha 100% done_x")).await.unwrap();
        log.record(event("beta")).await.unwrap();
        // Whether or not the indexer has run yet, both paths agree.
        assert_eq!(find(&path, "ALPHA"), 1, "case-insensitive");
        assert_eq!(find(&path, "0% d"), 1, "LIKE wildcards in the query are literal");
        assert_eq!(find(&path, "one_"), 1);
        assert_eq!(find(&path, "gamma"), 0);
        // The writer indexes once it has been idle for FTS_IDLE.
        assert_eq!(
            indexed_through(&path, 1, 10).await,
            1,
            "the idle writer indexed both rows"
        );
        log.close();
        assert_eq!(find(&path, "ALPHA"), 1);
        assert_eq!(find(&path, "0% d"), 1);
        assert_eq!(find(&path, "beta"), 1);
    }

    /// A burst's backlog (many index steps) is indexed in full once the
    /// writer is idle, every row once; the last rows are found through the
    /// index, not the tail scan.
    #[tokio::test]
    async fn the_idle_writer_indexes_a_whole_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let log = AuditLog::open(&path, Default::default()).unwrap();
        let n = 50 * crate::audit::writer::FTS_CHUNK + 3;
        let mut receipts = Vec::new();
        for i in 0..n {
            receipts.push(log.append(event(&format!("burst-row-{i:04}"))).await.unwrap());
        }
        let mut last = 0;
        for r in receipts {
            last = i64::try_from(r.committed().await.unwrap()).unwrap();
        }
        assert_eq!(
            indexed_through(&path, last, 60).await,
            last,
            "the whole backlog was indexed"
        );
        let conn = open_read_only(&path).unwrap();
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(
            count("SELECT count(*) FROM audit_fts"),
            count("SELECT count(*) FROM audit_event"),
            "every event indexed exactly once"
        );
        assert_eq!(
            count("SELECT count(*) FROM audit_fts WHERE payload MATCH '\"burst-row-\"'"),
            n
        );
        assert_eq!(find(&path, "burst-row-0000"), 1);
        assert_eq!(find(&path, &format!("burst-row-{:04}", n - 1)), 1);
        log.close();
    }
}
