//! WAL checkpoints off the commit path, in small steps.
//!
//! SQLite's automatic checkpoint runs inside whichever commit crosses
//! `wal_autocheckpoint` pages: that commit then copies the WAL into the
//! database file and syncs it, a stall of several milliseconds for the
//! alert (or the audit batch) that happened to commit. A checkpointer
//! thread with its own connection runs `PASSIVE` checkpoints (never
//! blocking a writer) instead, and the automatic checkpoint stays as a
//! safety net at [`SAFETY_NET_PAGES`].
//!
//! How often matters more than where: a checkpoint writes every page the
//! WAL gained since the last one and then syncs the database file, and
//! while the disk drains that write, the writers' own WAL syncs wait
//! behind it. Measured at 700 alerts/s (half of saturation), with a fixed
//! period: one checkpoint every 1 s gave a p99 of 38 ms, every 200 ms
//! 12.7 ms, every 20 ms 6.6 ms, the slow requests in bursts at the
//! checkpoints' rhythm; at saturation 20 ms was also slightly faster
//! (1,507–1,616 vs 1,396–1,524 alerts/s). So the checkpointer runs
//! [`MIN_INTERVAL`] after a commit on a watched connection
//! ([`Checkpointer::watch`]) and at most that often: small checkpoints
//! under load, none when idle.
//!
//! Tried and dropped: sizing each checkpoint (a commit count learned from
//! the frames each checkpoint moved, aiming at 1 MiB) instead of timing
//! it. It was worse at half of saturation (p99 8–51 ms against 6–7 ms in
//! alternating runs). At 50 alerts/s the 20 ms rhythm costs a little (p50
//! 3.3 against 3.0 ms with 200 ms): each checkpoint's sync meets the next
//! alert's.
//!
//! Noticed and left: under continuous load the WAL seldom starts over,
//! since a writer only restarts it when its transaction begins with every
//! frame checkpointed, and new frames land while a checkpoint runs. It
//! grows to the safety net, whose checkpoint inside a commit then has
//! little left to copy (the thread did the rest) before the restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;

/// Least time between two checkpoints of one database, and the delay from
/// a commit to its checkpoint.
pub const MIN_INTERVAL: Duration = Duration::from_millis(20);

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

#[derive(Debug, Default)]
struct Signal {
    stop: bool,
    /// A watched connection committed since the last checkpoint.
    dirty: bool,
    /// Checkpoint rounds started so far.
    runs: u64,
}

type Shared = Arc<(Mutex<Signal>, Condvar)>;

/// A thread that checkpoints one database after its commits, at most every
/// [`MIN_INTERVAL`]. Dropping it stops and joins the thread (its
/// connection is closed by then), so a database is never touched after
/// its owner is gone. Failures are logged and retried: the safety net
/// bounds the WAL meanwhile.
#[derive(Debug)]
pub struct Checkpointer {
    signal: Shared,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing `path`. Only commits on connections passed to
    /// [`Checkpointer::watch`] start a checkpoint.
    pub fn start(path: PathBuf) -> Self {
        let signal: Shared = Arc::default();
        let shared = signal.clone();
        let thread = std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || run(&path, &shared))
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot start the WAL checkpointer; SQLite's automatic checkpoint stays in charge");
            })
            .ok();
        Self { signal, thread }
    }

    /// Wakes the checkpointer after commits on `conn` (a commit hook: the
    /// connection keeps it; one uncontended lock per commit, a wake-up only
    /// for the first commit after a checkpoint). Replaces any commit hook
    /// `conn` had.
    pub fn watch(&self, conn: &Connection) {
        let signal = self.signal.clone();
        conn.commit_hook(Some(move || {
            let (state, cv) = &*signal;
            let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
            if !s.dirty {
                s.dirty = true;
                cv.notify_one();
            }
            // false: let the commit proceed.
            false
        }));
    }

    /// Checkpoint rounds started so far (a round whose checkpoint failed,
    /// and was logged, counts too).
    pub fn runs(&self) -> u64 {
        self.signal.0.lock().unwrap_or_else(PoisonError::into_inner).runs
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        stop_thread(&self.signal, self.thread.take(), |s| s.stop = true);
    }
}

/// Tells a background thread to stop (`stop` marks its state) and joins it.
pub(super) fn stop_thread<S>(
    signal: &(Mutex<S>, Condvar),
    thread: Option<std::thread::JoinHandle<()>>,
    stop: impl FnOnce(&mut S),
) {
    let (state, cv) = signal;
    stop(&mut state.lock().unwrap_or_else(PoisonError::into_inner));
    cv.notify_all();
    if let Some(t) = thread {
        let _ = t.join();
    }
}

/// The rhythm of a background thread: idle until `due` (or `stopped`),
/// then `delay` more, gathering what follows (a stop ends that wait too).
/// The state's guard, or `None` once stopped.
pub(super) fn wait_due<'a, S>(
    state: &'a Mutex<S>,
    cv: &Condvar,
    delay: Duration,
    due: impl Fn(&S) -> bool,
    stopped: impl Fn(&S) -> bool,
) -> Option<std::sync::MutexGuard<'a, S>> {
    let s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let s = cv
        .wait_while(s, |s| !stopped(s) && !due(s))
        .unwrap_or_else(PoisonError::into_inner);
    let (s, _) = cv
        .wait_timeout_while(s, delay, |s| !stopped(s))
        .unwrap_or_else(PoisonError::into_inner);
    (!stopped(&s)).then_some(s)
}

fn run(path: &Path, signal: &(Mutex<Signal>, Condvar)) {
    let (state, cv) = signal;
    let mut conn: Option<Connection> = None;
    // Idle until a commit, then the least interval.
    while let Some(mut s) = wait_due(state, cv, MIN_INTERVAL, |s| s.dirty, |s| s.stop) {
        // Commits from here on wake the next round.
        s.dirty = false;
        s.runs += 1;
        drop(s);
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
    use std::time::Instant;

    use super::*;

    /// Long enough for any pending checkpoint to have run.
    const SETTLE: Duration = Duration::from_millis(200);

    #[test]
    fn checkpoints_after_commits_in_small_steps_and_rests_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t(x BLOB);")
            .unwrap();
        configure(&conn).unwrap();
        let checkpointer = Checkpointer::start(path.clone());
        checkpointer.watch(&conn);
        let started = Instant::now();
        for _ in 0..200 {
            conn.execute("INSERT INTO t VALUES (zeroblob(4000))", []).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let written = started.elapsed();
        // The rows reach the database file without an automatic checkpoint.
        let main_len = || std::fs::metadata(&path).unwrap().len();
        while main_len() < 200 * 4000 && started.elapsed() < written + Duration::from_secs(5) {
            std::thread::sleep(MIN_INTERVAL);
        }
        assert!(main_len() >= 200 * 4000, "checkpointed: {} bytes", main_len());
        // Several checkpoints over the 200 commits, never more often than
        // the least interval allows.
        let runs = checkpointer.runs();
        let most = started.elapsed().as_millis() / MIN_INTERVAL.as_millis() + 1;
        assert!(
            runs >= 2 && u128::from(runs) <= most,
            "{runs} checkpoints in {:?}",
            started.elapsed()
        );
        // Idle: no commits, no checkpoints.
        std::thread::sleep(SETTLE + MIN_INTERVAL);
        let settled = checkpointer.runs();
        std::thread::sleep(SETTLE * 2);
        assert_eq!(checkpointer.runs(), settled, "no checkpoint without a commit");
        // One lone commit gets its checkpoint.
        conn.execute("INSERT INTO t VALUES (zeroblob(4000))", []).unwrap();
        let waited = Instant::now();
        while checkpointer.runs() == settled && waited.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(MIN_INTERVAL);
        }
        std::thread::sleep(SETTLE);
        assert_eq!(checkpointer.runs(), settled + 1, "a lone commit gets one checkpoint");
        drop(checkpointer);
        // Joined: the thread and its connection are gone (a dropped
        // checkpointer does not wait out an interval either).
        let t = Instant::now();
        drop(Checkpointer::start(path.clone()));
        assert!(t.elapsed() < MIN_INTERVAL * 5, "stop is immediate");
    }
}
