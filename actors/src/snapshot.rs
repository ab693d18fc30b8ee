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
//! process has the file open for writing ([`has_writers`]), checked every 20 ms for about five
//! seconds; a file held open for longer (a log being appended to) is copied anyway, coherently.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::fileinfo::{
    has_writers, hash_file, hash_stream, is_gone, open_regular, ContentHash, FileMeta,
};
use crate::ledger::Ledger;
use crate::mailbox::{Phase, Tracker};
use crate::messages::{TakeSnapshot, UploadJob, UploadSource};
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

    /// Copies `source` into the area, accepting the copy only if the source did not change and,
    /// if `wait_for_writers`, only if nobody had it open for writing when the copy began.
    fn take(
        &self,
        source: &Path,
        wait_for_writers: bool,
    ) -> Result<(PathBuf, ContentHash, FileMeta), SnapshotError> {
        let (mut file, before) = open_regular(source).map_err(SnapshotError::Io)?;
        // Metadata first, then the writer check: a writer that opens after the check and writes
        // before the copy ends changes the metadata, which the final comparison catches.
        if wait_for_writers && has_writers(&file) == Some(true) {
            return Err(SnapshotError::WriterOpen);
        }
        self.reserve(before.size)?;
        let copy = self
            .dir
            .join(self.next_id.fetch_add(1, Ordering::SeqCst).to_string());
        let copied = copy_hashing(source, &mut file, before.size, &copy);
        let after_fd = file.metadata().map(|m| FileMeta::from_metadata(&m));
        let after_path = std::fs::symlink_metadata(source).map(|m| FileMeta::from_metadata(&m));
        match (copied, after_fd, after_path) {
            (Ok(hash), Ok(fd), Ok(at_path)) if fd == before && at_path == before => {
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
}

/// A reflink costs no space or time where the file system can share blocks; elsewhere the copy
/// is made from the already open file, hashing on the way.
fn copy_hashing(source: &Path, file: &mut File, size: u64, copy: &Path) -> io::Result<ContentHash> {
    if reflink_copy::reflink(source, copy).is_ok() {
        return hash_file(copy).map(|(hash, _)| hash);
    }
    let mut out = File::create(copy)?;
    let (hash, _) = hash_stream(file, size, |chunk| out.write_all(chunk))?;
    Ok(hash)
}

#[derive(Debug, thiserror::Error)]
enum SnapshotError {
    #[error("the file changed while it was copied")]
    Changed,
    #[error("the file is open for writing")]
    WriterOpen,
    #[error("the snapshot area is full for now")]
    NoRoomNow,
    #[error(
        "the file keeps changing and its size ({size} bytes) exceeds snapshot.max_size ({max} bytes), so no coherent copy can be taken"
    )]
    NeverFits { size: u64, max: u64 },
    #[error("{0}")]
    Io(io::Error),
}

/// How often, and how many times, a file open for writing is looked at again before it is copied
/// regardless (about five seconds).
const WRITER_RECHECK: Duration = Duration::from_millis(20);
const WRITER_PATIENCE: u32 = 250;

#[derive(Clone, Debug)]
pub struct SnapshotSettings {
    pub root: PathBuf,
    /// First delay before taking a copy again; doubles up to a few seconds.
    pub retry_delay: Duration,
    pub log_interval: Duration,
}

pub struct SnapshotCopier {
    settings: SnapshotSettings,
    area: Arc<SnapshotArea>,
    tracker: Tracker,
    ledger: Arc<dyn Ledger>,
    upload_queue: async_channel::Sender<UploadJob>,
    stats: Arc<ActorStats>,
}

impl SnapshotCopier {
    pub fn new(
        settings: SnapshotSettings,
        area: Arc<SnapshotArea>,
        tracker: Tracker,
        ledger: Arc<dyn Ledger>,
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

    fn retry_later(&self, msg: TakeSnapshot, delay: Duration, ctx: &mut Context<Self>) {
        ctx.notify_later(
            TakeSnapshot {
                attempt: msg.attempt + 1,
                ..msg
            },
            delay,
        );
    }

    fn finished(
        &mut self,
        msg: TakeSnapshot,
        result: Result<(PathBuf, ContentHash, FileMeta), SnapshotError>,
        ctx: &mut Context<Self>,
    ) {
        let path = &msg.path;
        match result {
            Ok((file, sha256, meta)) => {
                let job_version =
                    self.tracker
                        .mailbox
                        .queue_for_upload(path, Phase::Snapshotting, true);
                match job_version {
                    Some(version) => {
                        self.stats.sent(1);
                        self.stats.files.fetch_add(1, Ordering::Relaxed);
                        self.stats.bytes.fetch_add(meta.size, Ordering::Relaxed);
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
            Err(SnapshotError::WriterOpen) => self.retry_later(msg, WRITER_RECHECK, ctx),
            Err(SnapshotError::Changed) | Err(SnapshotError::NoRoomNow) => {
                if msg.attempt > 0 && msg.attempt % 10 == 0 {
                    tracing::warn!(path = %path.display(), attempts = msg.attempt, "still no coherent snapshot; retrying");
                }
                let backoff = (self.settings.retry_delay * 2u32.saturating_pow(msg.attempt.min(6)))
                    .min(Duration::from_secs(5));
                self.retry_later(msg, backoff, ctx);
            }
            Err(SnapshotError::Io(e)) if is_gone(&e) => self.tracker.complete(path),
            // The state disk is full: like a full budget, it may have room later.
            Err(SnapshotError::Io(e)) if e.kind() == io::ErrorKind::StorageFull => {
                if msg.attempt % 10 == 0 {
                    tracing::error!(path = %path.display(), "cannot take a snapshot, retrying: {e} (the state disk is full)");
                }
                let delay = Duration::from_secs(1);
                self.retry_later(msg, delay, ctx);
            }
            Err(e) => {
                self.stats.error();
                let error = e.to_string();
                tracing::error!(path = %path.display(), "cannot snapshot file: {error}");
                let ledger = self.ledger.clone();
                let tracker = self.tracker.clone();
                let path = msg.path;
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = ledger.record_failure(&path, &error, 1) {
                        tracing::error!("{e}");
                    }
                    tracker.complete(&path);
                });
            }
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
        if self.tracker.mailbox.phase(&msg.path) != Some(Phase::Snapshotting) {
            return;
        }
        let area = self.area.clone();
        let source = self.settings.root.join(&msg.path);
        let stats = self.stats.clone();
        let wait_for_writers = msg.attempt < WRITER_PATIENCE;
        let work = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = area.take(&source, wait_for_writers);
            stats.busy_since(started);
            result
        });
        ctx.spawn(work.into_actor(self).map(move |result, act, ctx| {
            let result = result.unwrap_or_else(|e| Err(SnapshotError::Io(io::Error::other(e))));
            act.finished(msg, result, ctx)
        }));
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

    #[test]
    fn snapshot_of_a_quiet_file_equals_it() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"hello snapshot").unwrap();
        let area = SnapshotArea::open(dir.path().join("snap"), 1 << 20).unwrap();
        let (copy, hash, meta) = area.take(&src, true).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), b"hello snapshot");
        assert_eq!(hash, hash_file(&src).unwrap().0);
        assert_eq!(meta.size, 14);
        assert_eq!(area.used(), 14);
        area.release(&copy, meta.size);
        assert_eq!(area.used(), 0);
        assert!(!copy.exists());
    }
}
