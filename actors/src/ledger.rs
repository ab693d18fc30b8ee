//! The trait for the record of what was uploaded, and [`LedgerHandle`], the one way the actors
//! use it. Owns the questions the pipeline asks, the facts it records and the policy for writing
//! them (off the actor thread, retried until they work); the storage (SQLite) lives in the
//! `dropslot` crate. Every trait call blocks; the handle runs them in blocking tasks.
//!
//! Crash safety comes from the order of calls: `record_intent` before an upload starts,
//! `record_published` only after the remote made the file visible. A crash in between leaves a
//! pending entry, which the start-up scan treats as "not published" and sends again; publishing
//! the same content twice is harmless.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::events::Cadence;
use crate::fileinfo::{ContentHash, FileMeta};
use crate::retry::{report, retry, RetryPolicy};
use crate::stats::ActorStats;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryStatus {
    Pending,
    Published,
    Failed,
}

#[derive(Clone, Debug)]
pub struct LedgerEntry {
    pub status: EntryStatus,
    /// For a published entry: the metadata the file had when its content was read.
    pub meta: FileMeta,
    /// The hash of the last published content.
    pub sha256: Option<ContentHash>,
    pub remote_ref: Option<String>,
    pub uploads: u64,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Published with an after-publish action (delete or move) not yet finished: the file's
    /// disappearance is dropslot's own doing and never becomes a remote delete.
    pub after_publish_pending: bool,
}

impl LedgerEntry {
    /// True if the file with metadata `meta` is exactly what was published.
    pub fn is_published_as(&self, meta: &FileMeta) -> bool {
        self.status == EntryStatus::Published && self.meta == *meta
    }
}

/// A file the linker made visible.
#[derive(Clone, Debug)]
pub struct PublishedFile {
    pub path: PathBuf,
    pub meta: FileMeta,
    pub sha256: ContentHash,
    pub remote_ref: String,
    /// Record, in the same transaction, the intent to delete or archive the local file.
    pub after_publish: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("ledger {path}: {message}")]
pub struct LedgerError {
    pub path: String,
    pub message: String,
}

pub trait Ledger: Send + Sync + 'static {
    fn lookup(&self, path: &Path) -> Result<Option<LedgerEntry>, LedgerError>;

    /// An upload of `path` with metadata `meta` is about to start.
    fn record_intent(&self, path: &Path, meta: &FileMeta) -> Result<(), LedgerError>;

    /// One transaction for a whole batch.
    fn record_published(&self, files: &[PublishedFile]) -> Result<(), LedgerError>;

    /// The file's metadata changed but its content equals what was published.
    fn record_unchanged(&self, path: &Path, meta: &FileMeta) -> Result<(), LedgerError>;

    fn record_failure(&self, path: &Path, error: &str, attempts: u32) -> Result<(), LedgerError>;

    /// The remote copy was deleted.
    fn forget(&self, path: &Path) -> Result<(), LedgerError>;

    /// The file is (or no longer is) held open by a writer that the pipeline waits for.
    fn set_waiting_for_writer(&self, path: &Path, waiting: bool) -> Result<(), LedgerError>;

    /// Calls `f` with every path the ledger knows, for finding files deleted while stopped.
    fn for_each_path(&self, f: &mut dyn FnMut(&Path)) -> Result<(), LedgerError>;

    /// Calls `f` with every path the ledger knows strictly below the directory `dir`: what a
    /// directory that was moved away or removed took with it. Must not read the whole ledger
    /// (it is asked once per such event, and the ledger may hold millions of entries).
    fn for_each_path_under(&self, dir: &Path, f: &mut dyn FnMut(&Path)) -> Result<(), LedgerError>;

    /// Calls `f` with every path whose last upload or delete failed. Must not read the whole
    /// ledger: it is asked every `upload.retry_failed_after`.
    fn for_each_failed(&self, f: &mut dyn FnMut(&Path)) -> Result<(), LedgerError>;

    /// The after-publish action of `path` is over: `removed` forgets the entry (the file left
    /// the drop folder; the remote copy stays), otherwise only the intent is dropped.
    /// `record_intent` and `forget` drop the intent too (a newer version is on its way).
    fn after_publish_done(&self, path: &Path, removed: bool) -> Result<(), LedgerError>;

    /// Calls `f` with every path whose after-publish action was intended and not finished
    /// (a crash came in between), for the start-up to finish them.
    fn for_each_after_publish(&self, f: &mut dyn FnMut(&Path)) -> Result<(), LedgerError>;
}

/// How a ledger write that failed is tried again: soon, then every few seconds, until it works.
const WRITE_RETRY: RetryPolicy =
    RetryPolicy::forever(Duration::from_millis(100), Duration::from_secs(5));

/// The ledger as the actors use it: every call off the actor thread (in a blocking task), and
/// one write policy for all of them. A write that fails (a full or read-only state disk) is
/// retried until it works, never dropped: a dropped "published" makes the next start send the
/// file again, a dropped "failed" or "forget" leaves `status` wrong. Meanwhile the caller waits
/// (the slot, the linker's directory, the path's next step), and each retry is reported by
/// [`crate::events::RetryScheduled`] naming the file, on the stats of the actor that asked.
///
/// Reads return their error to the caller, which knows what a missing answer means; code that
/// already runs in a blocking task (a scan, a batch of looks) reads through [`Self::blocking`].
#[derive(Clone)]
pub struct LedgerHandle {
    inner: Arc<dyn Ledger>,
    stats: Arc<ActorStats>,
}

/// Why a write gave up: only when the blocking task itself died (a panic in the ledger).
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("{0}")]
    Ledger(#[from] LedgerError),
    #[error("the ledger task failed: {0}")]
    Task(String),
}

impl LedgerHandle {
    /// `stats` are those of the actor that uses this handle: its ledger retries count there.
    pub fn new(inner: Arc<dyn Ledger>, stats: Arc<ActorStats>) -> Self {
        LedgerHandle { inner, stats }
    }

    /// The ledger itself, for code already running in a blocking task.
    pub fn blocking(&self) -> &Arc<dyn Ledger> {
        &self.inner
    }

    pub async fn lookup(&self, path: &Path) -> Result<Option<LedgerEntry>, LedgerError> {
        let path = path.to_path_buf();
        self.read(move |ledger| ledger.lookup(&path)).await
    }

    /// Every path whose last upload or delete failed.
    pub async fn failed_paths(&self) -> Result<Vec<PathBuf>, LedgerError> {
        self.read(|ledger| {
            let mut paths = Vec::new();
            ledger.for_each_failed(&mut |rel| paths.push(rel.to_path_buf()))?;
            Ok(paths)
        })
        .await
    }

    /// See [`Ledger::record_intent`].
    pub async fn record_intent(&self, path: &Path, meta: FileMeta) {
        let (owned, what) = (
            path.to_path_buf(),
            format!("that the upload of {} starts", path.display()),
        );
        self.write(&what, path, move |ledger| {
            ledger.record_intent(&owned, &meta)
        })
        .await
    }

    /// See [`Ledger::record_unchanged`].
    pub async fn record_unchanged(&self, path: &Path, meta: FileMeta) {
        let (owned, what) = (
            path.to_path_buf(),
            format!("that {} is unchanged", path.display()),
        );
        self.write(&what, path, move |ledger| {
            ledger.record_unchanged(&owned, &meta)
        })
        .await
    }

    /// See [`Ledger::record_failure`].
    pub async fn record_failure(&self, path: &Path, error: &str, attempts: u32) {
        let (owned, error) = (path.to_path_buf(), error.to_string());
        let what = format!("the failure of {}", path.display());
        self.write(&what, path, move |ledger| {
            ledger.record_failure(&owned, &error, attempts)
        })
        .await
    }

    /// See [`Ledger::forget`].
    pub async fn forget(&self, path: &Path) {
        let (owned, what) = (
            path.to_path_buf(),
            format!("that {} is gone", path.display()),
        );
        self.write(&what, path, move |ledger| ledger.forget(&owned))
            .await
    }

    /// See [`Ledger::after_publish_done`].
    pub async fn after_publish_done(&self, path: &Path, removed: bool) {
        let owned = path.to_path_buf();
        let what = format!("the after-publish action on {}", path.display());
        self.write(&what, path, move |ledger| {
            ledger.after_publish_done(&owned, removed)
        })
        .await
    }

    /// See [`Ledger::set_waiting_for_writer`].
    pub async fn set_waiting_for_writer(&self, path: &Path, waiting: bool) {
        let owned = path.to_path_buf();
        let what = format!("whether {} waits for a writer", path.display());
        self.write(&what, path, move |ledger| {
            ledger.set_waiting_for_writer(&owned, waiting)
        })
        .await
    }

    /// One batch of the linker: what was published (one transaction) and what failed, written
    /// together so that a retry writes the whole outcome again.
    pub async fn record_outcome(
        &self,
        published: Vec<PublishedFile>,
        failed: Vec<(PathBuf, String, u32)>,
    ) {
        let Some(first) = published
            .first()
            .map(|f| f.path.clone())
            .or_else(|| failed.first().map(|f| f.0.clone()))
        else {
            return;
        };
        let what = match published.len() + failed.len() {
            1 => format!("the published file {}", first.display()),
            n => format!("{n} published files, the first {}", first.display()),
        };
        self.write(&what, &first, move |ledger| {
            ledger.record_published(&published)?;
            for (path, error, attempts) in &failed {
                ledger.record_failure(path, error, *attempts)?;
            }
            Ok(())
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&dyn Ledger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let ledger = self.inner.clone();
        tokio::task::spawn_blocking(move || op(&*ledger))
            .await
            .unwrap_or_else(|e| {
                Err(LedgerError {
                    path: String::new(),
                    message: format!("the ledger task failed: {e}"),
                })
            })
    }

    /// The write policy: `op` runs in a blocking task until it works. `what` says what is
    /// recorded, naming `path`, for the log.
    async fn write(
        &self,
        what: &str,
        path: &Path,
        op: impl Fn(&dyn Ledger) -> Result<(), LedgerError> + Send + Sync + 'static,
    ) {
        let op = Arc::new(op);
        let attempt = || {
            let (ledger, op) = (self.inner.clone(), op.clone());
            async move {
                match tokio::task::spawn_blocking(move || op(&*ledger)).await {
                    Ok(result) => result.map_err(WriteError::from),
                    Err(e) => Err(WriteError::Task(e.to_string())),
                }
            }
        };
        let failed = format!("cannot record {what} in the ledger (is the state disk full?)");
        let done = retry(
            &WRITE_RETRY,
            attempt,
            |e| matches!(e, WriteError::Ledger(_)),
            report(&self.stats, &failed, path, Cadence::Sparse),
        )
        .await;
        if let Err(e) = done.result {
            self.stats.error();
            tracing::error!(path = %path.display(), "{failed}: {e}");
        }
    }
}

/// The one stand-in for the SQLite ledger (which lives in the `dropslot` crate) in this crate's
/// unit tests.
#[cfg(test)]
pub(crate) mod fake {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    use std::sync::Mutex;

    use super::{Ledger, LedgerEntry, LedgerError, PublishedFile};
    use crate::fileinfo::FileMeta;

    /// Stands in for the SQLite ledger (in the `dropslot` crate): writes fail while `full` is
    /// above zero, like a full state disk, and the failures recorded are kept.
    #[derive(Default)]
    pub(crate) struct FullDisk {
        pub(crate) full: AtomicU32,
        pub(crate) failures: Mutex<Vec<(PathBuf, String, u32)>>,
    }

    impl FullDisk {
        fn write(&self, path: &Path) -> Result<(), LedgerError> {
            match self.full.load(Relaxed) {
                0 => Ok(()),
                n => {
                    self.full.store(n - 1, Relaxed);
                    Err(LedgerError {
                        path: "ledger.sqlite".into(),
                        message: format!("database or disk is full ({})", path.display()),
                    })
                }
            }
        }
    }

    impl Ledger for FullDisk {
        fn lookup(&self, _: &Path) -> Result<Option<LedgerEntry>, LedgerError> {
            Ok(None)
        }
        fn record_intent(&self, path: &Path, _: &FileMeta) -> Result<(), LedgerError> {
            self.write(path)
        }
        fn record_published(&self, files: &[PublishedFile]) -> Result<(), LedgerError> {
            files.iter().try_for_each(|f| self.write(&f.path))
        }
        fn record_unchanged(&self, path: &Path, _: &FileMeta) -> Result<(), LedgerError> {
            self.write(path)
        }
        fn record_failure(
            &self,
            path: &Path,
            error: &str,
            attempts: u32,
        ) -> Result<(), LedgerError> {
            self.write(path)?;
            let failure = (path.to_path_buf(), error.to_string(), attempts);
            self.failures.lock().unwrap().push(failure);
            Ok(())
        }
        fn forget(&self, path: &Path) -> Result<(), LedgerError> {
            self.write(path)
        }
        fn set_waiting_for_writer(&self, path: &Path, _: bool) -> Result<(), LedgerError> {
            self.write(path)
        }
        fn for_each_path(&self, _: &mut dyn FnMut(&Path)) -> Result<(), LedgerError> {
            Ok(())
        }
        fn for_each_path_under(
            &self,
            _: &Path,
            _: &mut dyn FnMut(&Path),
        ) -> Result<(), LedgerError> {
            Ok(())
        }
        fn after_publish_done(&self, path: &Path, _: bool) -> Result<(), LedgerError> {
            self.write(path)
        }
        fn for_each_after_publish(&self, _: &mut dyn FnMut(&Path)) -> Result<(), LedgerError> {
            Ok(())
        }
        fn for_each_failed(&self, f: &mut dyn FnMut(&Path)) -> Result<(), LedgerError> {
            self.failures
                .lock()
                .unwrap()
                .iter()
                .for_each(|(p, ..)| f(p));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::fake::FullDisk;
    use super::*;

    #[tokio::test]
    async fn a_failed_write_is_retried_until_it_works_and_each_retry_is_counted() {
        let disk = Arc::new(FullDisk::default());
        let stats = ActorStats::new("test");
        let ledger = LedgerHandle::new(disk.clone(), stats.clone());
        disk.full.store(3, Relaxed);
        ledger
            .record_failure(Path::new("a.txt"), "upload failed", 5)
            .await;
        assert_eq!(disk.full.load(Relaxed), 0);
        assert_eq!(stats.retries.load(Relaxed), 3);
        assert_eq!(
            ledger.failed_paths().await.unwrap(),
            vec![PathBuf::from("a.txt")],
            "recorded once it worked, not dropped"
        );
        // Nothing to retry when the disk has room.
        ledger.forget(Path::new("a.txt")).await;
        assert_eq!(stats.retries.load(Relaxed), 3);
    }
}
