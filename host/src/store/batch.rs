//! Write batches: the state database's writes share one open transaction.
//!
//! Every alert made five small `state.db` transactions (its row, its
//! order, the paper broker's kv, the broker's answer, its finish), and
//! each commit costs file locks and a WAL frame per touched page, the same
//! hot pages over and over: a third of an alert's time on the state
//! database's connection (docs/performance.md, session 14), and each read
//! outside a transaction takes and drops two file locks. The one
//! connection now keeps a transaction open: a read opens a read-only one
//! (`BEGIN DEFERRED`), the first write one that holds the write lock
//! (`BEGIN IMMEDIATE`, ending a read-only one first), later reads and
//! writes join it (each write in a savepoint of its own, so one that fails
//! undoes only itself), and it commits when
//!
//! - an alert finishes: `pipeline::finish` commits before the answer, so
//!   everything an answered alert changed (its rows, its plugins' kv, its
//!   order's state) is committed when the sender hears of it, as before;
//! - an operator's decision is made ([`super::StateDb::durable`] commits
//!   the batch, then its own transaction, synced);
//! - the batch is [`MAX_AGE`] old (this module's thread: writes outside an
//!   alert, such as a notifier's kv or a reconciliation sweep);
//! - the last handle on the database is dropped.
//!
//! Every statement on the connection sees the open batch, so the host
//! reads its own writes. Another process's commit (the command line's
//! kill switch) is seen when the batch ends, at most [`MAX_AGE`] later;
//! its writes wait for a write batch's commit through their busy timeout.
//! A unit test models a host at full load (alert after alert, 200 µs of
//! each outside `state.db`): the other process's slowest write waited
//! 4–20 ms. A host that wrote with no pause at all could starve it past
//! its 5 s busy timeout, since SQLite's busy handler retries at intervals
//! and does not queue; an alert's plugin calls and audit syncs are that
//! pause.
//!
//! What a crash can take: the writes of alerts not yet answered and of the
//! last [`MAX_AGE`]. Their alert and order rows come back from the audit
//! log at the next start (`crate::recovery`); the broker is asked what
//! became of their orders; their plugins' kv writes are lost, as a power
//! loss could already lose them (docs/plugins.md).

use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::Duration;

use rusqlite::Connection;

/// The longest a batch stays open without an alert finishing.
pub const MAX_AGE: Duration = Duration::from_millis(5);

#[derive(Debug, Default)]
struct Signal {
    stop: bool,
    /// A batch was opened and has not been seen committed.
    open: bool,
    /// The thread waits for a batch to open (not for an open one's age):
    /// only then does an opening wake it.
    idle: bool,
    /// The open batch holds the write lock.
    writes: bool,
    /// Batches committed.
    commits: u64,
    /// Times an opening woke the thread.
    wakes: u64,
}

type Shared = Arc<(Mutex<Signal>, Condvar)>;

/// Opens, commits and times out the batch of one connection. Dropping it
/// stops its thread and commits what is open.
pub struct Batcher {
    signal: Shared,
    conn: Arc<Mutex<Connection>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Where a failed commit on the thread is reported (the state
    /// database's halt flag).
    on_error: Arc<dyn Fn(rusqlite::Error) + Send + Sync>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("signal", &self.signal)
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Batches the writes of `conn`; `on_error` hears of a commit that
    /// failed on the timer's thread.
    pub fn start(conn: Arc<Mutex<Connection>>, on_error: Arc<dyn Fn(rusqlite::Error) + Send + Sync>) -> Self {
        let signal: Shared = Arc::default();
        let (shared, weak, report) = (signal.clone(), Arc::downgrade(&conn), on_error.clone());
        let thread = std::thread::Builder::new()
            .name("state-batch".into())
            .spawn(move || run(&weak, &shared, &*report))
            .map_err(|e| tracing::warn!(error = %e, "cannot start the state batch timer; alerts still commit as they finish"))
            .ok();
        Self {
            signal,
            conn,
            thread,
            on_error,
        }
    }

    /// Makes sure a batch is open on `conn` (held locked by the caller)
    /// for reading: a read-only one (`BEGIN DEFERRED`, no write lock) if
    /// none is.
    ///
    /// # Errors
    /// `BEGIN`'s error.
    pub fn begin_read(&self, conn: &Connection) -> rusqlite::Result<()> {
        if !conn.is_autocommit() {
            return Ok(());
        }
        conn.execute_batch("BEGIN DEFERRED")?;
        self.opened(false);
        Ok(())
    }

    /// Makes sure a batch that holds the write lock is open on `conn`
    /// (held locked by the caller). A read-only batch is ended first: its
    /// snapshot may predate another process's commit, and SQLite refuses to
    /// upgrade such a snapshot to a writer.
    ///
    /// # Errors
    /// `BEGIN`'s error (a database busy past the busy timeout).
    pub fn begin_write(&self, conn: &Connection) -> rusqlite::Result<()> {
        if !conn.is_autocommit() {
            if self.signal.0.lock().unwrap_or_else(PoisonError::into_inner).writes {
                return Ok(());
            }
            commit(conn, &self.signal)?;
        }
        conn.execute_batch("BEGIN IMMEDIATE")?;
        self.opened(true);
        Ok(())
    }

    fn opened(&self, writes: bool) {
        let (state, cv) = &*self.signal;
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        s.writes = writes;
        s.open = true;
        // While the thread sits out an age it looks at `open` when that
        // ends; waking it for every batch opened meanwhile cost two thread
        // switches per alert (docs/performance.md, session 16).
        if s.idle {
            s.idle = false;
            s.wakes += 1;
            cv.notify_one();
        }
    }

    /// Commits the open batch of `conn` (held locked by the caller), if
    /// there is one.
    ///
    /// # Errors
    /// `COMMIT`'s error; SQLite has then rolled the batch back.
    pub fn commit(&self, conn: &Connection) -> rusqlite::Result<()> {
        commit(conn, &self.signal)
    }

    /// Batches committed so far.
    pub fn commits(&self) -> u64 {
        self.signal.0.lock().unwrap_or_else(PoisonError::into_inner).commits
    }
}

fn commit(conn: &Connection, signal: &(Mutex<Signal>, Condvar)) -> rusqlite::Result<()> {
    let r = if conn.is_autocommit() {
        Ok(())
    } else {
        conn.execute_batch("COMMIT")
    };
    let mut s = signal.0.lock().unwrap_or_else(PoisonError::into_inner);
    if r.is_ok() && s.writes {
        s.commits += 1;
    }
    // Committed, rolled back by the failure, or never open: the timer has
    // nothing to wait for until the next `begin_*`.
    s.open = !conn.is_autocommit();
    s.writes &= s.open;
    r
}

impl Drop for Batcher {
    fn drop(&mut self) {
        super::wal::stop_thread(&self.signal, self.thread.take(), |s| s.stop = true);
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = commit(&conn, &self.signal) {
            (self.on_error)(e);
        }
    }
}

fn run(
    conn: &Weak<Mutex<Connection>>,
    signal: &(Mutex<Signal>, Condvar),
    on_error: &(dyn Fn(rusqlite::Error) + Send + Sync),
) {
    let (state, cv) = signal;
    // Idle until a batch opens, then its most age.
    loop {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        while !s.stop && !s.open {
            // Idle again at every sleep: a batch that opened and was
            // committed before this thread ran leaves nothing to do, and
            // the next opening must wake it again.
            s.idle = true;
            s = cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.idle = false;
        let (s, _) = cv
            .wait_timeout_while(s, MAX_AGE, |s| !s.stop)
            .unwrap_or_else(PoisonError::into_inner);
        if s.stop {
            return;
        }
        drop(s);
        let Some(conn) = conn.upgrade() else { return };
        let c = conn.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = commit(&c, signal) {
            on_error(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_opened_while_one_ages_do_not_wake_the_timer() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Arc::new(Mutex::new(Connection::open(dir.path().join("t.db")).unwrap()));
        conn.lock()
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t(x INTEGER);")
            .unwrap();
        let batcher = Batcher::start(conn.clone(), Arc::new(|e| panic!("timer commit failed: {e}")));
        let wakes = || batcher.signal.0.lock().unwrap().wakes;
        // Let the thread reach its idle wait.
        std::thread::sleep(MAX_AGE * 4);
        let t = std::time::Instant::now();
        for i in 0..300 {
            let c = conn.lock().unwrap();
            batcher.begin_write(&c).unwrap();
            c.execute("INSERT INTO t(x) VALUES (?1)", [i]).unwrap();
            batcher.commit(&c).unwrap();
        }
        let elapsed = t.elapsed();
        let most = u64::try_from(elapsed.as_micros() / MAX_AGE.as_micros()).unwrap() + 2;
        assert!(
            wakes() <= most,
            "{} wake-ups for 300 batches in {elapsed:?}: at most one per age",
            wakes()
        );
        // A batch left open after that is still committed by the timer.
        {
            let c = conn.lock().unwrap();
            batcher.begin_write(&c).unwrap();
            c.execute("INSERT INTO t(x) VALUES (300)", []).unwrap();
        }
        let other = Connection::open(dir.path().join("t.db")).unwrap();
        let seen = || {
            other
                .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .unwrap()
        };
        let t = std::time::Instant::now();
        while seen() < 301 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(seen(), 301, "the timer committed the last batch");
        drop(batcher);
    }

    #[test]
    fn a_batch_committed_before_the_timer_ran_leaves_it_ready_for_the_next() {
        // An opening wakes the idle thread; the batch is committed before
        // the thread runs, so it finds nothing open and sleeps again. It
        // must sleep as idle, or no later opening wakes it and a batch
        // left open is never committed.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Arc::new(Mutex::new(Connection::open(&path).unwrap()));
        conn.lock()
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t(x INTEGER);")
            .unwrap();
        let batcher = Batcher::start(conn.clone(), Arc::new(|e| panic!("timer commit failed: {e}")));
        let other = Connection::open(&path).unwrap();
        let seen = || {
            other
                .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .unwrap()
        };
        for round in 0..40 {
            std::thread::sleep(MAX_AGE * 2);
            {
                let c = conn.lock().unwrap();
                batcher.begin_write(&c).unwrap();
                batcher.commit(&c).unwrap();
            }
            std::thread::sleep(MAX_AGE * 2);
            {
                let c = conn.lock().unwrap();
                batcher.begin_write(&c).unwrap();
                c.execute("INSERT INTO t(x) VALUES (?1)", [round]).unwrap();
            }
            let t = std::time::Instant::now();
            while seen() <= round && t.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(
                seen(),
                round + 1,
                "round {round}: the timer committed the batch left open"
            );
        }
    }
}
