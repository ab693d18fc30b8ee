//! The snapshot copier: takes a private, coherent copy of a file that never settles, so it can
//! be uploaded without tearing. Owns the snapshot area under `state.dir` and its size budget
//! (`snapshot.max_size`); it does not upload (the slots do, then release the copy).
//!
//! A copy is accepted only if the source's metadata is identical before and after copying
//! (a reflink where the file system supports it, a plain copy otherwise, hashed as it goes);
//! otherwise it is thrown away and taken again. A file that does not fit the budget now is retried
//! later; one that can never fit is recorded as failed with the reason, never silently dropped.
//!
//! Unchanged metadata only proves the copy is *a* state of the file, not a finished one: a writer
//! may be pausing between a truncate and its next `write`. So a copy is taken only while no
//! process has the file open for writing ([`writers_known_open`]), however long that takes. The
//! one exception is a log (`stability.logs`) held open while it grows: its bytes up to the last
//! complete line are copied, and only if the version already published is still its beginning
//! (an append-only file's prefix never changes); otherwise it too waits for the close.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::confined::DropRoot;
use crate::events::{
    Cadence, FailedStep, InternalEvent, RetryScheduled, SnapshotTaken, UploadFailed,
};
use crate::fileinfo::{
    hash_file, hash_stream, hash_stream_with_mark, is_gone, writers_known_open, ContentHash,
    FileMeta,
};
use crate::ledger::LedgerHandle;
use crate::messages::{PublishedVersion, TakeSnapshot, UploadJob, UploadSource};
use crate::path_table::{Phase, Tracker};
use crate::retry::{retry_adjusted, Retried, RetryPolicy};
use crate::stats::ActorStats;

/// The snapshot area: a directory and a byte budget shared with the upload slots, which release
/// each copy once its content is staged on the remote.
#[derive(Debug)]
pub struct SnapshotArea {
    dir: PathBuf,
    max_size: u64,
    used: AtomicU64,
    next_id: AtomicU64,
}

impl SnapshotArea {
    /// Creates the area, removing copies a previous run left behind.
    pub fn open(dir: PathBuf, max_size: u64) -> io::Result<Self> {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&dir)?;
        Ok(SnapshotArea {
            dir,
            max_size,
            used: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
        })
    }

    fn reserve(&self, size: u64) -> Result<(), SnapshotError> {
        if size > self.max_size {
            return Err(SnapshotError::NeverFits {
                size,
                max: self.max_size,
            });
        }
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            if used + size > self.max_size {
                return Err(SnapshotError::NoRoomNow);
            }
            match self
                .used
                .compare_exchange(used, used + size, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    /// Deletes a copy and returns its bytes to the budget.
    pub fn release(&self, file: &Path, size: u64) {
        if let Err(e) = std::fs::remove_file(file) {
            tracing::warn!(file = %file.display(), "cannot remove snapshot copy: {e}");
        }
        self.used.fetch_sub(size, Ordering::SeqCst);
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// Copies `rel` into the area, accepting the copy only if the source did not change and
    /// nobody had it open for writing; with `append_only`, a writer may hold it open and keep
    /// appending, and the copy is its prefix up to the last complete line, provided `published`
    /// is still that prefix's beginning.
    fn take(
        &self,
        root: &DropRoot,
        rel: &Path,
        append_only: bool,
        published: Option<PublishedVersion>,
    ) -> Result<(PathBuf, ContentHash, FileMeta), SnapshotError> {
        let (mut file, before) = root.open_file(rel).map_err(SnapshotError::Io)?;
        // Metadata first, then the writer check: a writer that opens after the check and writes
        // before the copy ends changes the metadata, which the final comparison catches.
        let writer_open = writers_known_open(&file);
        if writer_open && !append_only {
            return Err(SnapshotError::WriterOpen);
        }
        if writer_open {
            return self.take_log_prefix(root, rel, file, before, published);
        }
        self.reserve(before.size)?;
        let copy = self.next_copy();
        let copied = copy_hashing(&mut file, before.size, &copy);
        let after_fd = file.metadata().map(|m| FileMeta::from_metadata(&m));
        match (copied, after_fd, root.regular_meta(rel)) {
            (Ok(hash), Ok(fd), Ok(at_path)) if fd == before && at_path == before => {
                carry_attributes(&file, &before, &copy);
                Ok((copy, hash, before))
            }
            (Err(e), ..) => {
                self.release(&copy, before.size);
                Err(SnapshotError::Io(e))
            }
            _ => {
                self.release(&copy, before.size);
                Err(SnapshotError::Changed)
            }
        }
    }

    fn next_copy(&self) -> PathBuf {
        self.dir
            .join(self.next_id.fetch_add(1, Ordering::SeqCst).to_string())
    }

    /// A log being appended to: everything up to its last complete line is final already.
    fn take_log_prefix(
        &self,
        root: &DropRoot,
        rel: &Path,
        mut file: File,
        before: FileMeta,
        published: Option<PublishedVersion>,
    ) -> Result<(PathBuf, ContentHash, FileMeta), SnapshotError> {
        if published.is_some_and(|p| p.size > before.size) {
            return Err(SnapshotError::NotAppendOnly);
        }
        let size = end_of_last_line(&file, before.size).map_err(SnapshotError::Io)?;
        if size == 0 || published.is_some_and(|p| p.size >= size) {
            return Err(SnapshotError::NothingNew);
        }
        self.reserve(size)?;
        let copy = self.next_copy();
        let copied = File::create(&copy).and_then(|mut out| {
            let limited = io::Read::take(&mut file, size);
            hash_stream_with_mark(limited, size, published.map(|p| p.size), |chunk| {
                out.write_all(chunk)
            })
        });
        // Growth is what a log does; a different file, or one that shrank, is not a log.
        let still_growing = |m: &FileMeta| m.inode == before.inode && m.size >= before.size;
        let after_fd = file.metadata().map(|m| FileMeta::from_metadata(&m));
        let verdict = match (copied, after_fd, root.regular_meta(rel)) {
            (Err(e), ..) => Err(SnapshotError::Io(e)),
            (Ok((hash, n, prefix)), Ok(fd), Ok(at_path))
                if n == size && still_growing(&fd) && still_growing(&at_path) =>
            {
                match published {
                    Some(p) if prefix != Some(p.sha256) => Err(SnapshotError::NotAppendOnly),
                    _ => Ok(hash),
                }
            }
            _ => Err(SnapshotError::Changed),
        };
        match verdict {
            Ok(hash) => {
                carry_attributes(&file, &before, &copy);
                Ok((copy, hash, FileMeta { size, ..before }))
            }
            Err(e) => {
                self.release(&copy, size);
                Err(e)
            }
        }
    }
}

/// The copy is what the slot reads, and the remote keeps what the slot reads (mode and mtime,
/// where it can): give it the source's. Best effort: a copy without them is still correct content.
fn carry_attributes(source: &File, before: &FileMeta, copy: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mtime = std::time::UNIX_EPOCH
        + Duration::from_nanos(u64::try_from(before.mtime_ns).unwrap_or_default());
    if let Ok(f) = File::options().write(true).open(copy) {
        let _ = f.set_modified(mtime);
    }
    if let Ok(m) = source.metadata() {
        // Owner-readable whatever the source says: the slot, running as the copy's owner, must
        // still read it.
        let mode = (m.permissions().mode() & 0o777) | 0o400;
        let _ = std::fs::set_permissions(copy, std::fs::Permissions::from_mode(mode));
    }
}

/// Where the last complete line of the first `size` bytes ends (a log's writer may be in the
/// middle of a line); `size` itself when the last 64 KiB hold no line break.
fn end_of_last_line(file: &File, size: u64) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let tail_len = size.min(64 * 1024);
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact_at(&mut tail, size - tail_len)?;
    Ok(match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => size - tail_len + i as u64 + 1,
        None => size,
    })
}

/// A reflink costs no space or time where the file system can share blocks; elsewhere the copy
/// is made from the already open file, hashing on the way. Both work on the descriptor, so the
/// copy is of the file that was checked, whatever the path points to now.
fn copy_hashing(file: &mut File, size: u64, copy: &Path) -> io::Result<ContentHash> {
    let mut out = File::create(copy)?;
    if rustix::fs::ioctl_ficlone(&out, &*file).is_ok() {
        return hash_file(copy).map(|(hash, _)| hash);
    }
    let (hash, _) = hash_stream(file, size, |chunk| out.write_all(chunk))?;
    Ok(hash)
}

#[derive(Debug, thiserror::Error)]
enum SnapshotError {
    #[error("the file changed while it was copied")]
    Changed,
    #[error("the file is open for writing")]
    WriterOpen,
    #[error("the log's published beginning changed: not append-only")]
    NotAppendOnly,
    #[error("nothing new since the last complete line published")]
    NothingNew,
    #[error("the snapshot area is full for now")]
    NoRoomNow,
    #[error(
        "the file keeps changing and its size ({size} bytes) exceeds snapshot.max_size ({max} bytes), so no coherent copy can be taken"
    )]
    NeverFits { size: u64, max: u64 },
    #[error("{0}")]
    Io(io::Error),
}

/// How soon a file open for writing is looked at again: quickly at first (most writers close
/// within milliseconds), then every second for as long as the writer keeps it open.
const WRITER_RECHECK: RetryPolicy =
    RetryPolicy::forever(Duration::from_millis(20), Duration::from_secs(1));
/// How soon a state disk that was full is tried again.
const DISK_FULL_RECHECK: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct SnapshotSettings {
    pub root: DropRoot,
    /// First delay before taking a copy again (torn, or no room in the area); doubles up to a
    /// few seconds.
    pub retry_delay: Duration,
    pub log_interval: Duration,
}

pub struct SnapshotCopier {
    settings: SnapshotSettings,
    area: Arc<SnapshotArea>,
    tracker: Tracker,
    ledger: LedgerHandle,
    upload_queue: async_channel::Sender<UploadJob>,
    stats: Arc<ActorStats>,
}

/// A copy accepted: its file, content hash and the metadata it stands for.
type Taken = (PathBuf, ContentHash, FileMeta);

impl SnapshotCopier {
    pub fn new(
        settings: SnapshotSettings,
        area: Arc<SnapshotArea>,
        tracker: Tracker,
        ledger: LedgerHandle,
        upload_queue: async_channel::Sender<UploadJob>,
        stats: Arc<ActorStats>,
    ) -> Self {
        SnapshotCopier {
            settings,
            area,
            tracker,
            ledger,
            upload_queue,
            stats,
        }
    }

    /// Takes copies until one is coherent, the path leaves the snapshotting phase (`Ok(None)`),
    /// or an error that waiting cannot cure. Runs beside the actor, which goes on taking other
    /// files meanwhile; each copy is taken in a blocking task.
    fn take_until_coherent(
        &self,
        msg: &TakeSnapshot,
    ) -> impl std::future::Future<Output = Retried<Option<Taken>, SnapshotError>> + 'static {
        let (area, tracker, stats) = (self.area.clone(), self.tracker.clone(), self.stats.clone());
        let root = self.settings.root.clone();
        let copy_retry = RetryPolicy::forever(self.settings.retry_delay, Duration::from_secs(5));
        let (path, published) = (msg.path.clone(), msg.published);
        let append_only = AtomicBool::new(msg.append_only);
        async move {
            let attempt = || async {
                if tracker.paths.phase(&path) != Some(Phase::Snapshotting) {
                    return Ok(None); // superseded or drained meanwhile
                }
                let (area, root, rel, stats) =
                    (area.clone(), root.clone(), path.clone(), stats.clone());
                let as_log = append_only.load(Ordering::Relaxed);
                let taken = tokio::task::spawn_blocking(move || {
                    let started = Instant::now();
                    let result = area.take(&root, &rel, as_log, published);
                    stats.busy_since(started);
                    result
                })
                .await
                .unwrap_or_else(|e| Err(SnapshotError::Io(io::Error::other(e))));
                match taken {
                    Ok(taken) => Ok(Some(taken)),
                    // Not behaving like a log: like any other file, it waits for its writer to
                    // close it.
                    Err(SnapshotError::NotAppendOnly) => {
                        tracing::info!(path = %path.display(), "the log's published beginning changed while it was held open; waiting for its writer to close it");
                        append_only.store(false, Ordering::Relaxed);
                        Err(SnapshotError::NotAppendOnly)
                    }
                    Err(e) => Err(e),
                }
            };
            retry_adjusted(
                &copy_retry,
                attempt,
                SnapshotError::is_worth_waiting_for,
                |e, attempt, scheduled| match e {
                    SnapshotError::WriterOpen => WRITER_RECHECK.delay_after(attempt),
                    SnapshotError::NotAppendOnly => WRITER_RECHECK.initial,
                    SnapshotError::Io(_) => DISK_FULL_RECHECK,
                    _ => scheduled,
                },
                |e, attempt, delay| {
                    let (what, cadence) = match e {
                        SnapshotError::WriterOpen | SnapshotError::NotAppendOnly => {
                            ("no snapshot yet", Cadence::Quiet)
                        }
                        SnapshotError::Io(_) => (
                            "cannot take a snapshot (the state disk is full)",
                            Cadence::Sparse,
                        ),
                        // A file that keeps changing: said every tenth time only.
                        _ if attempt % 10 == 0 => ("still no coherent snapshot", Cadence::Each),
                        _ => ("still no coherent snapshot", Cadence::Quiet),
                    };
                    RetryScheduled {
                        what,
                        path: &path,
                        attempt,
                        delay,
                        error: e,
                        cadence,
                    }
                    .emit(&stats)
                },
            )
            .await
        }
    }

    fn finished(&mut self, msg: TakeSnapshot, done: Retried<Option<Taken>, SnapshotError>) {
        let path = &msg.path;
        match done.result {
            Ok(None) => {}
            Ok(Some((file, sha256, meta))) => {
                let job_version =
                    self.tracker
                        .paths
                        .queue_for_upload(path, Phase::Snapshotting, true);
                match job_version {
                    Some(version) => {
                        SnapshotTaken {
                            path,
                            size: meta.size,
                        }
                        .emit(&self.stats);
                        let job = UploadJob {
                            path: msg.path,
                            version,
                            meta,
                            source: UploadSource::Snapshot { file, sha256 },
                            published: msg.published,
                        };
                        if let Err(e) = self.upload_queue.try_send(job) {
                            let job = e.into_inner();
                            if let UploadSource::Snapshot { file, .. } = &job.source {
                                self.area.release(file, meta.size);
                            }
                        }
                    }
                    None => self.area.release(&file, meta.size),
                }
            }
            // Only a partial line since the last publish: the next append or the close brings
            // the path back.
            Err(SnapshotError::NothingNew) => self.tracker.complete(path),
            Err(SnapshotError::Io(e)) if is_gone(&e) => self.tracker.complete(path),
            Err(e) => {
                let error = e.to_string();
                UploadFailed {
                    step: FailedStep::Snapshot,
                    path,
                    attempts: done.attempts,
                    error: &error,
                }
                .emit(&self.stats);
                let (ledger, tracker) = (self.ledger.clone(), self.tracker.clone());
                let (path, attempts) = (msg.path, done.attempts);
                actix::spawn(async move {
                    ledger.record_failure(&path, &error, attempts).await;
                    tracker.complete(&path);
                });
            }
        }
    }
}

impl SnapshotError {
    /// Errors that a later copy may not have: a writer still holds the file, it changed during
    /// the copy, the area or the state disk is full for now.
    fn is_worth_waiting_for(&self) -> bool {
        match self {
            SnapshotError::WriterOpen
            | SnapshotError::NotAppendOnly
            | SnapshotError::Changed
            | SnapshotError::NoRoomNow => true,
            SnapshotError::Io(e) => e.kind() == io::ErrorKind::StorageFull,
            SnapshotError::NothingNew | SnapshotError::NeverFits { .. } => false,
        }
    }
}

impl Actor for SnapshotCopier {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.settings.log_interval, |act, _| {
            act.stats.set_queue_depth(act.area.used() as usize);
            act.stats.log("metrics")
        });
    }
}

impl Handler<TakeSnapshot> for SnapshotCopier {
    type Result = ();

    fn handle(&mut self, msg: TakeSnapshot, ctx: &mut Self::Context) {
        self.stats.received(1);
        let taking = self.take_until_coherent(&msg);
        ctx.spawn(
            taking
                .into_actor(self)
                .map(move |done, act, _| act.finished(msg, done)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_what_never_fits_and_defers_what_does_not_fit_now() {
        let dir = tempfile::tempdir().unwrap();
        let area = SnapshotArea::open(dir.path().join("snap"), 100).unwrap();
        assert!(matches!(
            area.reserve(101),
            Err(SnapshotError::NeverFits { .. })
        ));
        area.reserve(60).unwrap();
        assert!(matches!(area.reserve(60), Err(SnapshotError::NoRoomNow)));
        area.used.fetch_sub(60, Ordering::SeqCst);
        area.reserve(60).unwrap();
    }

    fn drop_folder() -> (tempfile::TempDir, DropRoot, SnapshotArea) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("drop")).unwrap();
        let root = DropRoot::new(dir.path().join("drop"), false);
        let area = SnapshotArea::open(dir.path().join("snap"), 1 << 20).unwrap();
        (dir, root, area)
    }

    #[test]
    fn snapshot_of_a_quiet_file_equals_it() {
        let (_dir, root, area) = drop_folder();
        let src = root.path().join("src");
        std::fs::write(&src, b"hello snapshot").unwrap();
        let (copy, hash, meta) = area.take(&root, Path::new("src"), false, None).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), b"hello snapshot");
        assert_eq!(hash, hash_file(&src).unwrap().0);
        assert_eq!(meta.size, 14);
        assert_eq!(area.used(), 14);
        area.release(&copy, meta.size);
        assert_eq!(area.used(), 0);
        assert!(!copy.exists());
    }

    #[test]
    fn a_file_held_open_is_never_copied_unless_it_is_a_log_and_then_only_whole_lines() {
        let (_dir, root, area) = drop_folder();
        let rel = Path::new("app.log");
        let mut writer = File::create(root.path().join(rel)).unwrap();
        writer.write_all(b"one\ntwo\nthr").unwrap();
        assert!(matches!(
            area.take(&root, rel, false, None),
            Err(SnapshotError::WriterOpen)
        ));
        let (copy, hash, meta) = area.take(&root, rel, true, None).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), b"one\ntwo\n");
        assert_eq!(meta.size, 8);
        area.release(&copy, meta.size);

        // The next prefix is taken only while the published one is still its beginning.
        let published = Some(PublishedVersion {
            size: 8,
            sha256: hash,
        });
        writer.write_all(b"ee\nfour\n").unwrap();
        let (copy, _, meta) = area.take(&root, rel, true, published).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), b"one\ntwo\nthree\nfour\n");
        area.release(&copy, meta.size);
        assert!(matches!(
            area.take(
                &root,
                rel,
                true,
                Some(PublishedVersion {
                    size: 8,
                    sha256: [0; 32]
                })
            ),
            Err(SnapshotError::NotAppendOnly)
        ));
        assert_eq!(area.used(), 0);
        drop(writer);
        let (copy, _, meta) = area.take(&root, rel, false, published).unwrap();
        assert_eq!(meta.size, 19);
        area.release(&copy, meta.size);
    }
}
