//! WAL checkpoints off the commit path.
//!
//! SQLite's automatic checkpoint runs inside whichever commit crosses
//! `wal_autocheckpoint` pages: that commit then copies the WAL into the
//! database file and syncs it, a stall of several milliseconds for the
//! alert (or the audit batch) that happened to commit. A checkpointer
//! thread with its own connection runs `PASSIVE` checkpoints (never
//! blocking a writer) every [`INTERVAL`] instead, and the automatic
//! checkpoint stays as a safety net at [`SAFETY_NET_PAGES`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;

/// Time between checkpoints.
pub const INTERVAL: Duration = Duration::from_millis(200);

/// `wal_autocheckpoint` for the writing connections: only reached if the
/// checkpointer falls behind (40 MB of WAL at 4 KiB pages).
pub const SAFETY_NET_PAGES: u32 = 10_000;

/// Sets the safety-net automatic checkpoint on a writing connection.
///
/// # Errors
/// The pragma's error.
pub fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "wal_autocheckpoint", SAFETY_NET_PAGES)
}

/// A thread that checkpoints one database every [`INTERVAL`]. Dropping it
/// stops and joins the thread (its connection is closed by then), so a
/// database is never touched after its owner is gone. Failures are logged
/// and retried: the safety net bounds the WAL meanwhile.
#[derive(Debug)]
pub struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing `path`.
    pub fn start(path: PathBuf) -> Self {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || run(&path, &signal))
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot start the WAL checkpointer; SQLite's automatic checkpoint stays in charge");
            })
            .ok();
        Self { stop, thread }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (flag, cv) = &*self.stop;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(path: &Path, stop: &(Mutex<bool>, Condvar)) {
    let (flag, cv) = stop;
    let mut conn: Option<Connection> = None;
    loop {
        let stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
        let (stopped, _) = cv
            .wait_timeout_while(stopped, INTERVAL, |s| !*s)
            .unwrap_or_else(PoisonError::into_inner);
        if *stopped {
            return;
        }
        drop(stopped);
        if conn.is_none() {
            conn = Connection::open(path)
                .and_then(|c| c.busy_timeout(Duration::from_millis(100)).map(|()| c))
                .map_err(|e| tracing::debug!(path = %path.display(), error = %e, "wal checkpointer cannot open"))
                .ok();
        }
        if let Some(c) = &conn
            && let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::debug!(path = %path.display(), error = %e, "wal checkpoint failed; retrying");
            conn = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_beside_a_writer_and_stops_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t(x BLOB);")
            .unwrap();
        configure(&conn).unwrap();
        let checkpointer = Checkpointer::start(path.clone());
        for _ in 0..200 {
            conn.execute("INSERT INTO t VALUES (zeroblob(4000))", []).unwrap();
        }
        // The rows reach the database file without an automatic checkpoint.
        let main_len = || std::fs::metadata(&path).unwrap().len();
        let mut waited = 0;
        while main_len() < 200 * 4000 && waited < 50 {
            std::thread::sleep(INTERVAL);
            waited += 1;
        }
        assert!(main_len() >= 200 * 4000, "checkpointed: {} bytes", main_len());
        drop(checkpointer);
        // Joined: the thread and its connection are gone (a dropped
        // checkpointer does not wait out an interval either).
        let t = std::time::Instant::now();
        drop(Checkpointer::start(path.clone()));
        assert!(t.elapsed() < INTERVAL, "stop is immediate");
    }
}
