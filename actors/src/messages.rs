//! Every message the actors exchange, in one place, so the protocol can be read at once.
//! See `docs/architecture.md` for the diagram. Paths are relative to the drop folder.
//!
//! Between actors, every queue either applies backpressure (the watcher awaits the debouncer) or
//! holds at most one item per path (everything after the debouncer, enforced by the
//! [`crate::path_table::PathTable`]), so a burst of events cannot grow memory without bound even where
//! `do_send` is used.

use std::path::PathBuf;
use std::time::Instant;

use actix::Message;

use crate::fileinfo::{ContentHash, FileMeta};
use crate::remote::Staged;

/// Watcher → debouncer: these paths may have changed (or appeared, or vanished).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PathsTouched(pub Vec<PathBuf>);

/// Any stage → debouncer: these paths re-entered debouncing in the path table; start their timers.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Redebounce(pub Vec<PathBuf>);

/// Debouncer → stability checker: quiet paths to check.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CheckStability(pub Vec<Candidate>);

#[derive(Debug, Clone)]
pub struct Candidate {
    pub path: PathBuf,
    /// First event of this round; `stability.max_wait` counts from here.
    pub since: Instant,
}

/// What the ledger says was last published for a path. Read once, by the stability checker,
/// and carried along: while a path is in the pipeline nothing else publishes it.
#[derive(Debug, Clone, Copy)]
pub struct PublishedVersion {
    pub size: u64,
    pub sha256: ContentHash,
}

/// Stability checker → snapshot copier: this file never settles; copy it privately.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TakeSnapshot {
    pub path: PathBuf,
    pub published: Option<PublishedVersion>,
    /// The file is a log (`stability.logs`) held open by its writer: copy the prefix written so
    /// far, provided the published version is still its beginning.
    pub append_only: bool,
}

/// Stability checker or snapshot copier → upload slots (through the shared upload queue).
#[derive(Debug)]
pub struct UploadJob {
    pub path: PathBuf,
    /// The path-table version when queued: a newer event makes the job stale.
    pub version: u64,
    /// The source file's metadata when it was found stable (or when the snapshot was taken).
    pub meta: FileMeta,
    pub source: UploadSource,
    /// Lets the slot skip content that is already published without asking the ledger again.
    pub published: Option<PublishedVersion>,
}

#[derive(Debug)]
pub enum UploadSource {
    /// Read the file in the drop folder; it must still have `meta` after the upload.
    Original,
    /// Read this private copy; its content hash is already known.
    Snapshot { file: PathBuf, sha256: ContentHash },
}

/// Upload slot → directory linker: staged content, ready to become visible.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Publish {
    pub path: PathBuf,
    pub staged: Staged,
    pub meta: FileMeta,
    pub sha256: ContentHash,
}

/// Stability checker → directory linker: the file is gone and `on_delete = "delete"`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Unpublish {
    pub path: PathBuf,
}

/// Wiring → watcher: stop watching and scanning (shutdown).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopWatching;
