//! The trait for the record of what was uploaded. Owns the questions the pipeline asks and the
//! facts it records; the storage (SQLite) lives in the `dropslot` crate. Every call blocks, so
//! actors call it from blocking tasks, never from an actor thread.
//!
//! Crash safety comes from the order of calls: `record_intent` before an upload starts,
//! `record_published` only after the remote made the file visible. A crash in between leaves a
//! pending entry, which the start-up scan treats as "not published" and sends again; publishing
//! the same content twice is harmless.

use std::path::{Path, PathBuf};

use crate::fileinfo::{ContentHash, FileMeta};

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
}
