//! A SQLite VFS shim that writes a commit's WAL frames with one system call.
//!
//! SQLite writes every WAL frame as two `pwrite`s, its 24-byte header and
//! then the page, so a commit of twelve pages makes 24 calls into the
//! kernel before its `fsync`, each landing at an offset that is not
//! page-aligned. Measured on this machine (`docs/performance.md`, session
//! 16): 24 such calls cost 52–58 µs of CPU, the same bytes in one
//! `pwritev` 5 µs, and the audit writer made 59 of them per alert, about
//! two fifths of its CPU time.
//!
//! The shim wraps the default VFS and touches only WAL files: their
//! contiguous writes are gathered in memory and handed to the real file as
//! one write before anything that could observe the file (a read, its
//! size, a truncate, a file control, a sync, a close) and whenever a write
//! does not continue the gathered run. Every other file, and every other
//! method, is the default VFS's own.
//!
//! **Only for connections whose every commit syncs the WAL**
//! (`journal_mode = WAL` with `synchronous = FULL`, which the audit
//! writer uses): SQLite syncs the WAL before it publishes a commit's
//! frames in the WAL index, so the sync is where the gathered frames reach
//! the file, before any other connection can look for them. At
//! `synchronous = NORMAL` a commit publishes frames without calling the
//! VFS in between; another connection would read frames not yet written.
//! It also needs SQLite not to pad commits to a sector boundary (it does
//! so only for files without `SQLITE_IOCAP_POWERSAFE_OVERWRITE`, the unix
//! default): padding writes the tail of its last frame after the sync.
//! [`unpadded`] checks that on an open connection; the audit writer falls
//! back to the default VFS when it is not so.
//! A crash loses at most gathered frames that were never synced, which is
//! what a crash before the sync loses anyway; WAL recovery ignores frames
//! after the last valid commit.

#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The VFS's registered name.
pub const NAME: &CStr = c"algobanana-wal-gather";

/// A run of gathered bytes larger than this is written at once (a prune's
/// big transaction, an index step): memory stays bounded.
const MAX_GATHER: usize = 8 << 20;

/// The most one call to the real `xWrite` may carry: the unix VFS masks
/// a write's size with `0x1ffff` (SQLite itself never writes more than a
/// page at once), so a gathered run goes out in pieces of at most this
/// (124 KiB: thirty frames of 4 KiB pages).
const MAX_WRITE: usize = 124 << 10;

thread_local! {
    /// Writes this thread handed to real WAL files (one per gathered run).
    static WRITES: Cell<u64> = const { Cell::new(0) };
}

/// Writes this thread has handed to real WAL files through the shim, each
/// one gathered run: what the tests count.
pub fn writes() -> u64 {
    WRITES.with(Cell::get)
}

/// Registers the shim (once per process) and returns its name, for
/// [`rusqlite::Connection::open_with_flags_and_vfs`].
///
/// # Errors
/// When SQLite has no default VFS or refuses the registration.
pub fn name() -> Result<&'static CStr, String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED.get_or_init(register).clone().map(|()| NAME)
}

/// Whether SQLite writes `conn`'s WAL commits without sector padding (the
/// main database file has power-safe overwrite), as the shim requires.
pub fn unpadded(conn: &rusqlite::Connection) -> bool {
    // -1 asks for the setting without changing it.
    let mut value: c_int = -1;
    // SAFETY: this op reads and writes an int.
    unsafe { main_file_control(conn, ffi::SQLITE_FCNTL_POWERSAFE_OVERWRITE, &mut value) && value == 1 }
}

/// Whether `conn` was opened through the shim.
pub fn in_use(conn: &rusqlite::Connection) -> bool {
    let mut vfs: *mut ffi::sqlite3_vfs = std::ptr::null_mut();
    // SAFETY: this op writes a VFS pointer; a registered VFS and its name
    // live as long as the process.
    unsafe {
        main_file_control(conn, ffi::SQLITE_FCNTL_VFS_POINTER, &mut vfs)
            && !vfs.is_null()
            && CStr::from_ptr((*vfs).zName) == NAME
    }
}

/// A file control on `conn`'s main database whose argument is a `T`
/// (per SQLite's documentation of `op`); true when it answered `SQLITE_OK`.
///
/// # Safety
/// `T` must be the type that SQLite reads or writes for `op`.
unsafe fn main_file_control<T>(conn: &rusqlite::Connection, op: c_int, arg: &mut T) -> bool {
    // SAFETY: the handle is valid for the call; `arg` is a `T` as `op`
    // expects (the caller's contract).
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            op,
            std::ptr::from_mut(arg).cast::<c_void>(),
        )
    };
    rc == ffi::SQLITE_OK
}

/// Our part of an open file, followed in the same allocation by the real
/// file (at [`REAL_OFFSET`]).
#[repr(C)]
struct Gather {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    run: *mut Run,
}

/// The gathered bytes: `bytes` belong at file offset `start`.
struct Run {
    start: i64,
    bytes: Vec<u8>,
}

/// Where the real file sits behind [`Gather`], 16-byte aligned.
const REAL_OFFSET: usize = std::mem::size_of::<Gather>().next_multiple_of(16);

fn register() -> Result<(), String> {
    // SAFETY: sqlite3_vfs_find with a null name returns the default VFS (or
    // null); it initialises SQLite if needed and is thread-safe.
    let real = unsafe { ffi::sqlite3_vfs_find(std::ptr::null()) };
    if real.is_null() {
        return Err("SQLite has no default VFS".into());
    }
    // SAFETY: `real` is a registered VFS, valid for the process's life.
    let real_vfs = unsafe { &*real };
    let size = usize::try_from(real_vfs.szOsFile).map_err(|_| "the default VFS has a negative file size")?;
    let vfs = ffi::sqlite3_vfs {
        szOsFile: c_int::try_from(REAL_OFFSET + size).map_err(|_| "file object too large")?,
        pNext: std::ptr::null_mut(),
        zName: NAME.as_ptr(),
        pAppData: real.cast::<c_void>(),
        xOpen: Some(x_open),
        // Every other method is the default VFS's own. The unix VFS's
        // methods read nothing from the VFS object but `pAppData` and
        // `mxPathname`, which are copied with them.
        ..*real_vfs
    };
    let vfs = Box::leak(Box::new(vfs));
    // SAFETY: `vfs` lives for the rest of the process; 0: not the default.
    let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("SQLite refused to register the WAL VFS (code {rc})"))
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY (whole function): SQLite passes our VFS, whose pAppData is the
    // default VFS, and a zeroed allocation of our szOsFile bytes.
    unsafe {
        let real_vfs = (*vfs).pAppData.cast::<ffi::sqlite3_vfs>();
        let Some(open) = (*real_vfs).xOpen else {
            (*file).pMethods = std::ptr::null();
            return ffi::SQLITE_CANTOPEN;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            // Not a WAL file: the real file fills the allocation from its
            // start and keeps its own methods.
            return open(real_vfs, name, file, flags, out_flags);
        }
        let gather = file.cast::<Gather>();
        let real = file.cast::<u8>().add(REAL_OFFSET).cast::<ffi::sqlite3_file>();
        let rc = open(real_vfs, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // A real file that set its methods wants its xClose even after
            // a failed open; SQLite will not call ours (null methods).
            if !(*real).pMethods.is_null()
                && let Some(close) = (*(*real).pMethods).xClose
            {
                close(real);
            }
            (*gather).base.pMethods = std::ptr::null();
            return rc;
        }
        (*gather).real = real;
        (*gather).run = Box::into_raw(Box::new(Run {
            start: 0,
            bytes: Vec::new(),
        }));
        (*gather).base.pMethods = &raw const METHODS;
        ffi::SQLITE_OK
    }
}

/// The real file and its methods.
///
/// # Safety
/// `file` is a [`Gather`] opened by [`x_open`] and not yet closed.
unsafe fn parts<'a>(
    file: *mut ffi::sqlite3_file,
) -> (*mut ffi::sqlite3_file, &'a ffi::sqlite3_io_methods, &'a mut Run) {
    // SAFETY: per the function's contract.
    unsafe {
        let gather = file.cast::<Gather>();
        let real = (*gather).real;
        (real, &*(*real).pMethods, &mut *(*gather).run)
    }
}

/// Hands the gathered run to the real file as one write.
///
/// # Safety
/// As [`parts`].
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per the function's contract.
    unsafe {
        let (real, methods, run) = parts(file);
        if run.bytes.is_empty() {
            return ffi::SQLITE_OK;
        }
        let Some(write) = methods.xWrite else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let mut rc = ffi::SQLITE_OK;
        let mut at = run.start;
        for piece in run.bytes.chunks(MAX_WRITE) {
            // A piece is at most MAX_WRITE bytes: both casts are exact.
            let len = c_int::try_from(piece.len()).unwrap_or(c_int::MAX);
            rc = write(real, piece.as_ptr().cast::<c_void>(), len, at);
            WRITES.with(|w| w.set(w.get() + 1));
            if rc != ffi::SQLITE_OK {
                break;
            }
            at += i64::from(len);
        }
        // Written or failed, the run is done with: a failed write fails the
        // transaction, and SQLite never counts its frames.
        run.bytes.clear();
        rc
    }
}

unsafe extern "C" fn x_write(file: *mut ffi::sqlite3_file, data: *const c_void, amount: c_int, offset: i64) -> c_int {
    // SAFETY: SQLite calls this on a file our x_open set up, with `amount`
    // readable bytes at `data`.
    unsafe {
        let continues = {
            let (_, _, run) = parts(file);
            !run.bytes.is_empty() && i64::try_from(run.bytes.len()).is_ok_and(|n| run.start + n == offset)
        };
        if !continues {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        let (_, _, run) = parts(file);
        if run.bytes.is_empty() {
            run.start = offset;
        }
        let n = usize::try_from(amount).unwrap_or(0);
        run.bytes
            .extend_from_slice(std::slice::from_raw_parts(data.cast::<u8>(), n));
        if run.bytes.len() >= MAX_GATHER {
            return flush(file);
        }
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes each file once; the run was boxed by x_open.
    unsafe {
        let flushed = flush(file);
        let (real, methods, _) = parts(file);
        let closed = methods.xClose.map_or(ffi::SQLITE_OK, |close| close(real));
        let gather = file.cast::<Gather>();
        drop(Box::from_raw((*gather).run));
        (*gather).run = std::ptr::null_mut();
        if flushed == ffi::SQLITE_OK { closed } else { flushed }
    }
}

/// Flushes, then calls the real method.
macro_rules! after_flush {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: SQLite calls this on a file our x_open set up.
            unsafe {
                let rc = flush(file);
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                let (real, methods, _) = parts(file);
                match methods.$method {
                    Some(f) => f(real $(, $arg)*),
                    None => ffi::SQLITE_NOTFOUND,
                }
            }
        }
    };
}

/// Calls the real method; gathered bytes cannot matter to it.
macro_rules! forward {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*), $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: SQLite calls this on a file our x_open set up.
            unsafe {
                let (real, methods, _) = parts(file);
                match methods.$method {
                    Some(f) => f(real $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

after_flush!(x_read, xRead, (data: *mut c_void, amount: c_int, offset: i64));
after_flush!(x_truncate, xTruncate, (size: i64));
after_flush!(x_sync, xSync, (flags: c_int));
after_flush!(x_file_size, xFileSize, (size: *mut i64));
after_flush!(x_file_control, xFileControl, (op: c_int, arg: *mut c_void));
forward!(x_lock, xLock, (level: c_int), ffi::SQLITE_OK);
forward!(x_unlock, xUnlock, (level: c_int), ffi::SQLITE_OK);
forward!(x_check_reserved_lock, xCheckReservedLock, (out: *mut c_int), ffi::SQLITE_OK);
forward!(x_sector_size, xSectorSize, (), 4096);
forward!(x_device_characteristics, xDeviceCharacteristics, (), 0);

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    use super::*;

    fn open(path: &std::path::Path) -> Connection {
        let c = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), name().unwrap()).unwrap();
        assert!(
            unpadded(&c),
            "this SQLite build pads WAL commits: the shim would not be used"
        );
        c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0;")
            .unwrap();
        c
    }

    /// A new directory with a database opened through the shim.
    fn fresh() -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let conn = open(&path);
        (dir, path, conn)
    }

    fn assert_intact(conn: &Connection) {
        let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(integrity, "ok");
    }

    #[test]
    fn a_commit_is_one_write_and_every_commit_is_visible_to_other_connections() {
        let (_dir, path, w) = fresh();
        w.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT NOT NULL);
             CREATE INDEX t_body ON t(body);",
        )
        .unwrap();
        let other = Connection::open(&path).unwrap();
        let before = writes();
        let mut n = 0i64;
        for round in 0..200 {
            let tx = w.unchecked_transaction().unwrap();
            for _ in 0..(1 + round % 7) {
                n += 1;
                tx.execute(
                    "INSERT INTO t(id, body) VALUES (?1, ?2)",
                    rusqlite::params![n, format!("{n:08}-{}", "x".repeat(600))],
                )
                .unwrap();
            }
            tx.commit().unwrap();
            // Another connection (the default VFS, its own descriptor) sees
            // every committed row, whole.
            let (count, last): (i64, String) = other
                .query_row("SELECT count(*), max(body) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap();
            assert_eq!(count, n);
            assert!(last.starts_with(&format!("{n:08}-")));
            if round % 50 == 49 {
                // A checkpoint, and the WAL starting over after it.
                other.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
            }
        }
        let made = writes() - before;
        assert!(
            made <= 200 * 2,
            "{made} writes for 200 commits: at most the frames and the header of each"
        );
        assert_intact(&other);
    }

    #[test]
    fn a_rolled_back_transaction_leaves_nothing_and_a_large_one_commits_whole() {
        let (_dir, path, w) = fresh();
        // A small cache so that a large transaction spills frames before
        // its commit.
        w.execute_batch("PRAGMA cache_size = 10; CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB NOT NULL);")
            .unwrap();
        {
            let tx = w.unchecked_transaction().unwrap();
            for i in 0..2_000 {
                tx.execute("INSERT INTO t(id, body) VALUES (?1, zeroblob(3000))", [i])
                    .unwrap();
            }
            tx.rollback().unwrap();
        }
        {
            let tx = w.unchecked_transaction().unwrap();
            for i in 0..4_000 {
                tx.execute("INSERT INTO t(id, body) VALUES (?1, randomblob(3000))", [i])
                    .unwrap();
            }
            tx.commit().unwrap();
        }
        drop(w);
        let other = Connection::open(&path).unwrap();
        let count: i64 = other.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(count, 4_000);
        assert_intact(&other);
    }

    #[test]
    fn other_files_keep_the_default_methods() {
        let (dir, _path, w) = fresh();
        w.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
        let before = writes();
        // A rollback journal, not a WAL: nothing goes through the shim.
        let j = Connection::open_with_flags_and_vfs(dir.path().join("j.db"), OpenFlags::default(), name().unwrap())
            .unwrap();
        j.execute_batch("PRAGMA journal_mode = DELETE; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        let n: i64 = j.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            writes(),
            before,
            "the rollback journal and database went straight to the default VFS"
        );
        // The WAL database's commits do go through it.
        w.execute_batch("INSERT INTO t VALUES (2);").unwrap();
        assert!(writes() > before);
    }
}
