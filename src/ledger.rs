//! The ledger in SQLite (`state.dir/ledger.sqlite`): one row per path with the metadata and hash
//! of what was published, the remote reference, counters and the last error. Owns the schema and
//! the queries; when to record what is decided by the pipeline (see the trait's docs in
//! `dropslot_actors::ledger`).
//!
//! Paths are stored as raw bytes, so names that are not UTF-8 round-trip exactly. WAL mode with
//! `synchronous = NORMAL`: a crash may lose the last few records, never corrupt the file, and a
//! lost record only means a harmless re-upload.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use dropslot_actors::fileinfo::{ContentHash, FileMeta};
use dropslot_actors::ledger::{EntryStatus, Ledger, LedgerEntry, LedgerError, PublishedFile};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
    path         BLOB PRIMARY KEY,
    status       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    ctime_ns     INTEGER NOT NULL,
    inode        INTEGER NOT NULL,
    sha256       BLOB,
    remote_ref   TEXT,
    published_at INTEGER,
    uploads      INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
) WITHOUT ROWID;
-- Files held open by a writer that dropslot waits for (kept by the running daemon, for `status`).
CREATE TABLE IF NOT EXISTS waiting_for_writer (
    path  BLOB PRIMARY KEY,
    since INTEGER NOT NULL
) WITHOUT ROWID;
-- After-publish actions (delete or move of the local file) recorded with the publish and not
-- yet finished: a table of its own, so ledgers written before it need no migration.
CREATE TABLE IF NOT EXISTS after_publish (
    path BLOB PRIMARY KEY
) WITHOUT ROWID;
-- Failed entries are looked up every `upload.retry_failed_after`; a partial index keeps that
-- proportional to the failures, not to the ledger.
CREATE INDEX IF NOT EXISTS files_failed ON files(status) WHERE status = 'failed';
";

pub struct SqliteLedger {
    file: PathBuf,
    conn: Mutex<Connection>,
}

/// A ledger entry as `dropslot verify` sees it.
#[derive(Clone, Debug)]
pub struct KnownFile {
    pub path: PathBuf,
    /// Recorded as published (not pending or failed).
    pub published: bool,
    pub size: u64,
    /// The hash of the last published content.
    pub sha256: Option<ContentHash>,
}

/// Counts and failures for `dropslot status`.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub published: u64,
    pub pending: u64,
    pub failed: u64,
    pub failures: Vec<FailureReport>,
    /// Files not published because another process has them open for writing.
    pub waiting_for_writer: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct FailureReport {
    pub path: String,
    pub error: String,
    pub attempts: u32,
}

fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// The key range holding every path strictly below `dir`: from `dir/` up to, not including,
/// `dir0` (`'0'` follows `'/'`). Keys compare as bytes, so this is a search of the primary key.
fn range_under(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let mut low = path_bytes(dir).to_vec();
    let mut high = low.clone();
    low.push(b'/');
    high.push(b'/' + 1);
    (low, high)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl SqliteLedger {
    /// Opens (or creates) the ledger; an unreadable file is an error naming it.
    pub fn open(file: &Path) -> Result<Self, LedgerError> {
        let err = |e: rusqlite::Error| LedgerError {
            path: file.display().to_string(),
            message: match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
                    format!("{e}: the file is damaged; `dropslot rebuild-ledger` sets it aside and builds a new one from the drop folder and the remote")
                }
                _ => e.to_string(),
            },
        };
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| LedgerError {
                path: dir.display().to_string(),
                message: format!("cannot create the state directory: {e}"),
            })?;
        }
        // Switching a new file to WAL takes a lock that the busy timeout does not wait for, so a
        // `status` racing the daemon's first start can be refused: try again for a few seconds.
        let mut tries = 0;
        let conn = loop {
            match Self::connect(file) {
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                        && tries < 50 =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => break other.map_err(err)?,
            }
        };
        // A damaged file may open fine and fail on some later query, mid-run; find out now.
        let verdict: String = conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
            .map_err(err)?;
        if verdict != "ok" {
            return Err(err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(verdict),
            )));
        }
        Ok(SqliteLedger {
            file: file.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    fn connect(file: &Path) -> rusqlite::Result<Connection> {
        let conn = Connection::open(file)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(conn)
    }

    fn error(&self, e: rusqlite::Error) -> LedgerError {
        LedgerError {
            path: self.file.display().to_string(),
            message: e.to_string(),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, LedgerError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let result = f(&mut conn);
        // After some errors (a full disk at COMMIT, notably) SQLite keeps the transaction open;
        // every later write would then land in it, invisible to other readers and lost on exit.
        if result.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        result.map_err(|e| self.error(e))
    }

    /// Paths whose upload started but was never published or failed: interrupted by a crash.
    pub fn pending_paths(&self) -> Result<Vec<PathBuf>, LedgerError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT path FROM files WHERE status = 'pending'")?;
            let paths = stmt
                .query_map([], |r| r.get::<_, Vec<u8>>(0))?
                .map(|p| p.map(|bytes| PathBuf::from(OsStr::from_bytes(&bytes))))
                .collect();
            paths
        })
    }

    pub fn status(&self) -> Result<StatusReport, LedgerError> {
        self.with(|c| {
            let count = |status: &str| -> rusqlite::Result<u64> {
                c.query_row("SELECT count(*) FROM files WHERE status = ?1", [status], |r| r.get::<_, i64>(0))
                    .map(|n| n as u64)
            };
            let (published, pending, failed) = (count("published")?, count("pending")?, count("failed")?);
            let mut stmt = c.prepare(
                "SELECT path, coalesce(last_error, ''), attempts FROM files WHERE status = 'failed' ORDER BY path",
            )?;
            let failures = stmt
                .query_map([], |r| {
                    let path: Vec<u8> = r.get(0)?;
                    Ok(FailureReport {
                        path: Path::new(OsStr::from_bytes(&path)).display().to_string(),
                        error: r.get(1)?,
                        attempts: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut stmt = c.prepare("SELECT path FROM waiting_for_writer ORDER BY path")?;
            let waiting_for_writer = stmt
                .query_map([], |r| {
                    let path: Vec<u8> = r.get(0)?;
                    Ok(Path::new(OsStr::from_bytes(&path)).display().to_string())
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(StatusReport {
                published,
                pending,
                failed,
                failures,
                waiting_for_writer,
            })
        })
    }

    /// Every entry the ledger knows, for `dropslot verify`.
    pub fn entries(&self) -> Result<Vec<KnownFile>, LedgerError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT path, status, size, sha256 FROM files ORDER BY path")?;
            let rows = stmt
                .query_map([], |r| {
                    let path: Vec<u8> = r.get(0)?;
                    let status: String = r.get(1)?;
                    let sha: Option<Vec<u8>> = r.get(3)?;
                    Ok(KnownFile {
                        path: PathBuf::from(OsStr::from_bytes(&path)),
                        published: status == "published",
                        size: r.get::<_, i64>(2)? as u64,
                        sha256: sha.and_then(|s| ContentHash::try_from(s.as_slice()).ok()),
                    })
                })?
                .collect();
            rows
        })
    }

    /// Marks `paths` as failed with `reason`, so the next `run` finds them not published and
    /// uploads them again through the usual pipeline (`dropslot verify --repair`). The hash of
    /// the last publish is dropped: it no longer describes what the remote holds, and keeping it
    /// would let the upload skip a file whose content did not change.
    pub fn mark_for_upload(&self, paths: &[PathBuf], reason: &str) -> Result<(), LedgerError> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE files SET status = 'failed', sha256 = NULL, attempts = 0, last_error = ?2
                     WHERE path = ?1",
                )?;
                for path in paths {
                    stmt.execute(params![path_bytes(path), reason])?;
                }
            }
            tx.commit()
        })
    }

    /// Forgets the files a previous run was waiting for; the new run finds them again.
    pub fn reset_waiting_for_writer(&self) -> Result<(), LedgerError> {
        self.with(|c| c.execute("DELETE FROM waiting_for_writer", []).map(drop))
    }
}

impl Ledger for SqliteLedger {
    fn lookup(&self, path: &Path) -> Result<Option<LedgerEntry>, LedgerError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT status, size, mtime_ns, ctime_ns, inode, sha256, remote_ref, uploads, attempts, last_error,
                    EXISTS (SELECT 1 FROM after_publish a WHERE a.path = files.path)
                 FROM files WHERE path = ?1",
            )?
            .query_row([path_bytes(path)], |r| {
                let status: String = r.get(0)?;
                let sha: Option<Vec<u8>> = r.get(5)?;
                Ok(LedgerEntry {
                    status: match status.as_str() {
                        "published" => EntryStatus::Published,
                        "failed" => EntryStatus::Failed,
                        _ => EntryStatus::Pending,
                    },
                    meta: FileMeta {
                        size: r.get::<_, i64>(1)? as u64,
                        mtime_ns: r.get(2)?,
                        ctime_ns: r.get(3)?,
                        inode: r.get::<_, i64>(4)? as u64,
                    },
                    sha256: sha.and_then(|s| ContentHash::try_from(s.as_slice()).ok()),
                    remote_ref: r.get(6)?,
                    uploads: r.get::<_, i64>(7)? as u64,
                    attempts: r.get(8)?,
                    last_error: r.get(9)?,
                    after_publish_pending: r.get(10)?,
                })
            })
            .optional()
        })
    }

    fn record_intent(&self, path: &Path, meta: &FileMeta) -> Result<(), LedgerError> {
        // Keeps the last published hash: it still describes what the remote holds.
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO files (path, status, size, mtime_ns, ctime_ns, inode) VALUES (?1, 'pending', ?2, ?3, ?4, ?5)
                 ON CONFLICT(path) DO UPDATE SET status = 'pending', size = ?2, mtime_ns = ?3, ctime_ns = ?4, inode = ?5",
            )?
            .execute(params![path_bytes(path), meta.size as i64, meta.mtime_ns, meta.ctime_ns, meta.inode as i64])?;
            // A newer version is on its way: the old version's removal no longer applies.
            c.prepare_cached("DELETE FROM after_publish WHERE path = ?1")?
                .execute([path_bytes(path)])
                .map(drop)
        })
    }

    fn record_published(&self, files: &[PublishedFile]) -> Result<(), LedgerError> {
        if files.is_empty() {
            return Ok(());
        }
        let now = now_secs();
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO files (path, status, size, mtime_ns, ctime_ns, inode, sha256, remote_ref, published_at, uploads, attempts, last_error)
                     VALUES (?1, 'published', ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, 0, NULL)
                     ON CONFLICT(path) DO UPDATE SET status = 'published', size = ?2, mtime_ns = ?3, ctime_ns = ?4,
                        inode = ?5, sha256 = ?6, remote_ref = ?7, published_at = ?8, uploads = uploads + 1,
                        attempts = 0, last_error = NULL",
                )?;
                let mut intent =
                    tx.prepare_cached("INSERT OR IGNORE INTO after_publish (path) VALUES (?1)")?;
                for f in files {
                    if f.after_publish {
                        intent.execute([path_bytes(&f.path)])?;
                    }
                    stmt.execute(params![
                        path_bytes(&f.path),
                        f.meta.size as i64,
                        f.meta.mtime_ns,
                        f.meta.ctime_ns,
                        f.meta.inode as i64,
                        &f.sha256[..],
                        f.remote_ref,
                        now
                    ])?;
                }
            }
            tx.commit()
        })
    }

    fn record_unchanged(&self, path: &Path, meta: &FileMeta) -> Result<(), LedgerError> {
        self.with(|c| {
            c.prepare_cached(
                "UPDATE files SET status = 'published', size = ?2, mtime_ns = ?3, ctime_ns = ?4, inode = ?5,
                    attempts = 0, last_error = NULL WHERE path = ?1",
            )?
            .execute(params![path_bytes(path), meta.size as i64, meta.mtime_ns, meta.ctime_ns, meta.inode as i64])
            .map(drop)
        })
    }

    fn record_failure(&self, path: &Path, error: &str, attempts: u32) -> Result<(), LedgerError> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO files (path, status, size, mtime_ns, ctime_ns, inode, attempts, last_error)
                 VALUES (?1, 'failed', 0, 0, 0, 0, ?2, ?3)
                 ON CONFLICT(path) DO UPDATE SET status = 'failed', attempts = attempts + ?2, last_error = ?3",
            )?
            .execute(params![path_bytes(path), attempts, error])
            .map(drop)
        })
    }

    fn forget(&self, path: &Path) -> Result<(), LedgerError> {
        self.with(|c| {
            c.prepare_cached("DELETE FROM files WHERE path = ?1")?
                .execute([path_bytes(path)])?;
            c.prepare_cached("DELETE FROM after_publish WHERE path = ?1")?
                .execute([path_bytes(path)])
                .map(drop)
        })
    }

    fn after_publish_done(&self, path: &Path, removed: bool) -> Result<(), LedgerError> {
        self.with(|c| {
            let tx = c.transaction()?;
            if removed {
                tx.prepare_cached("DELETE FROM files WHERE path = ?1")?
                    .execute([path_bytes(path)])?;
            }
            tx.prepare_cached("DELETE FROM after_publish WHERE path = ?1")?
                .execute([path_bytes(path)])?;
            tx.commit()
        })
    }

    fn for_each_after_publish(&self, f: &mut dyn FnMut(&Path)) -> Result<(), LedgerError> {
        self.for_each_row("SELECT path FROM after_publish", &[], f)
    }

    fn set_waiting_for_writer(&self, path: &Path, waiting: bool) -> Result<(), LedgerError> {
        self.with(|c| {
            if waiting {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO waiting_for_writer (path, since) VALUES (?1, ?2)",
                )?
                .execute(params![path_bytes(path), now_secs()])
            } else {
                c.prepare_cached("DELETE FROM waiting_for_writer WHERE path = ?1")?
                    .execute([path_bytes(path)])
            }
            .map(drop)
        })
    }

    fn for_each_path(&self, f: &mut dyn FnMut(&Path)) -> Result<(), LedgerError> {
        self.for_each_row("SELECT path FROM files", &[], f)
    }

    fn for_each_path_under(&self, dir: &Path, f: &mut dyn FnMut(&Path)) -> Result<(), LedgerError> {
        let (low, high) = range_under(dir);
        self.for_each_row(
            "SELECT path FROM files WHERE path >= ?1 AND path < ?2",
            &[&low, &high],
            f,
        )
    }

    fn for_each_failed(&self, f: &mut dyn FnMut(&Path)) -> Result<(), LedgerError> {
        self.for_each_row("SELECT path FROM files WHERE status = 'failed'", &[], f)
    }
}

impl SqliteLedger {
    /// Runs a query whose first column is a path and calls `f` with each.
    fn for_each_row(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
        f: &mut dyn FnMut(&Path),
    ) -> Result<(), LedgerError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(sql)?;
            let mut rows = stmt.query(params)?;
            while let Some(row) = rows.next()? {
                let bytes: Vec<u8> = row.get(0)?;
                f(Path::new(OsStr::from_bytes(&bytes)));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_marked_for_upload_are_failed_with_the_reason_and_no_hash() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open(&dir.path().join("l.sqlite")).unwrap();
        let meta = FileMeta {
            size: 5,
            mtime_ns: 1,
            ctime_ns: 2,
            inode: 3,
        };
        let published = |name: &str| PublishedFile {
            path: PathBuf::from(name),
            meta,
            sha256: [1; 32],
            remote_ref: name.into(),
            after_publish: false,
        };
        ledger
            .record_published(&[published("a"), published("b")])
            .unwrap();
        ledger
            .mark_for_upload(&[PathBuf::from("a")], "lost by the remote")
            .unwrap();
        let a = ledger.lookup(Path::new("a")).unwrap().unwrap();
        assert_eq!(a.status, EntryStatus::Failed);
        assert_eq!(a.sha256, None);
        assert_eq!(a.last_error.as_deref(), Some("lost by the remote"));
        assert!(!a.is_published_as(&meta));
        let entries = ledger.entries().unwrap();
        let summary: Vec<_> = entries
            .iter()
            .map(|e| {
                (
                    e.path.to_str().unwrap(),
                    e.published,
                    e.size,
                    e.sha256.is_some(),
                )
            })
            .collect();
        assert_eq!(summary, [("a", false, 5, false), ("b", true, 5, true)]);
        assert_eq!(ledger.status().unwrap().failed, 1);
    }

    #[test]
    fn published_entries_round_trip_with_non_utf8_names() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open(&dir.path().join("l.sqlite")).unwrap();
        let path = PathBuf::from(OsStr::from_bytes(b"dir/caf\xe9"));
        let meta = FileMeta {
            size: 3,
            mtime_ns: 1,
            ctime_ns: 2,
            inode: 4,
        };
        ledger.record_intent(&path, &meta).unwrap();
        assert_eq!(
            ledger.lookup(&path).unwrap().unwrap().status,
            EntryStatus::Pending
        );
        let file = PublishedFile {
            path: path.clone(),
            meta,
            sha256: [7; 32],
            remote_ref: "r".into(),
            after_publish: false,
        };
        ledger
            .record_published(std::slice::from_ref(&file))
            .unwrap();
        ledger.record_published(&[file]).unwrap();
        let entry = ledger.lookup(&path).unwrap().unwrap();
        assert!(entry.is_published_as(&meta));
        assert_eq!(entry.uploads, 2);
        assert_eq!(entry.sha256, Some([7; 32]));
        let mut seen = Vec::new();
        ledger
            .for_each_path(&mut |p| seen.push(p.to_path_buf()))
            .unwrap();
        assert_eq!(seen, vec![path.clone()]);
        ledger.record_failure(&path, "boom", 3).unwrap();
        let report = ledger.status().unwrap();
        assert_eq!((report.published, report.failed), (0, 1));
        assert_eq!(report.failures[0].error, "boom");
        ledger.forget(&path).unwrap();
        assert!(ledger.lookup(&path).unwrap().is_none());
    }

    #[test]
    fn an_after_publish_intent_is_recorded_with_the_publish_and_dropped_by_a_newer_version() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open(&dir.path().join("l.sqlite")).unwrap();
        let meta = FileMeta {
            size: 3,
            mtime_ns: 1,
            ctime_ns: 2,
            inode: 4,
        };
        let published = |name: &str| PublishedFile {
            path: PathBuf::from(name),
            meta,
            sha256: [7; 32],
            remote_ref: "r".into(),
            after_publish: true,
        };
        ledger
            .record_published(&[published("a"), published("b"), published("c")])
            .unwrap();
        let intents = || {
            let mut seen = Vec::new();
            ledger
                .for_each_after_publish(&mut |p| seen.push(p.to_path_buf()))
                .unwrap();
            seen
        };
        assert_eq!(intents().len(), 3);
        assert!(
            ledger
                .lookup(Path::new("a"))
                .unwrap()
                .unwrap()
                .after_publish_pending
        );
        // Done: the entry goes with the intent. Changed: only the intent goes.
        ledger.after_publish_done(Path::new("a"), true).unwrap();
        assert!(ledger.lookup(Path::new("a")).unwrap().is_none());
        ledger.after_publish_done(Path::new("b"), false).unwrap();
        let b = ledger.lookup(Path::new("b")).unwrap().unwrap();
        assert!(b.is_published_as(&meta) && !b.after_publish_pending);
        // A newer version starting its upload drops the old version's intent.
        ledger.record_intent(Path::new("c"), &meta).unwrap();
        assert!(intents().is_empty());
    }

    #[test]
    fn paths_under_a_directory_and_failed_paths_come_from_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open(&dir.path().join("l.sqlite")).unwrap();
        let meta = FileMeta {
            size: 1,
            mtime_ns: 1,
            ctime_ns: 1,
            inode: 1,
        };
        // Neighbours that sort just before, between and after `d/...` must stay out.
        for p in [
            "d", "d/a", "d/sub/b", "d.txt", "d0", "d-x/c", "dd/e", "c/d/f",
        ] {
            ledger.record_intent(Path::new(p), &meta).unwrap();
        }
        ledger
            .record_failure(Path::new("d.txt"), "boom", 5)
            .unwrap();
        let mut under = Vec::new();
        ledger
            .for_each_path_under(Path::new("d"), &mut |p| under.push(p.to_path_buf()))
            .unwrap();
        assert_eq!(under, [PathBuf::from("d/a"), PathBuf::from("d/sub/b")]);
        let mut failed = Vec::new();
        ledger
            .for_each_failed(&mut |p| failed.push(p.to_path_buf()))
            .unwrap();
        assert_eq!(failed, [PathBuf::from("d.txt")]);

        // Neither query may scan the table: the ledger can hold millions of entries.
        let plan = |sql: &str| -> String {
            ledger
                .with(|c| {
                    let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let rows = stmt.query_map([], |r| r.get::<_, String>(3))?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                })
                .unwrap()
                .join("; ")
        };
        let under = plan("SELECT path FROM files WHERE path >= x'642f' AND path < x'6430'");
        assert!(
            under.contains("SEARCH") && under.contains("PRIMARY KEY"),
            "{under}"
        );
        let failed = plan("SELECT path FROM files WHERE status = 'failed'");
        assert!(failed.contains("files_failed"), "{failed}");
    }

    #[test]
    fn garbage_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ledger.sqlite");
        std::fs::write(&file, vec![0x42u8; 8192]).unwrap();
        let err = SqliteLedger::open(&file)
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("ledger.sqlite"), "{err}");
    }
}
