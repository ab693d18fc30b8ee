//! An upload slot. `upload.slots` of them take jobs from one shared queue, so a slow or large
//! file holds up only its own slot. Each job streams the file once, hashing as it goes, into
//! [`Remote::stage`]; then it checks the source did not change during the read (if it did, the
//! staged copy is discarded and the path goes back to the debouncer) and hands the staged upload
//! to the directory linker. Owns retries of transient remote errors; it does not make anything
//! visible on the remote (the linker does).
//!
//! File reads and hashing run in blocking tasks; the actor thread only moves chunks along. At
//! most [`READ_AHEAD`] chunks per slot are in memory, whatever the file size.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;

use crate::bandwidth::Bandwidth;
use crate::confined::{refusal, DropRoot};
use crate::events::{Cadence, FailedStep, InternalEvent, UploadFailed};
use crate::fileinfo::{hash_stream, is_gone, open_regular, ContentHash, FileMeta};
use crate::ledger::LedgerHandle;
use crate::linker::Linker;
use crate::messages::{Publish, UploadJob, UploadSource};
use crate::path_table::Tracker;
use crate::remote::{ContentStream, FileAttributes, Remote, RemoteError, Staged};
use crate::retry::{report, retry, RetryPolicy};
use crate::snapshot::SnapshotArea;
use crate::stats::ActorStats;

/// Chunks read ahead of the remote, per slot.
pub const READ_AHEAD: usize = 4;

#[derive(Clone, Debug)]
pub struct SlotSettings {
    pub root: DropRoot,
    pub retry: RetryPolicy,
    pub log_interval: std::time::Duration,
}

/// What every slot shares.
pub struct SlotDeps {
    pub remote: Arc<dyn Remote>,
    pub tracker: Tracker,
    pub linker: Addr<Linker>,
    pub snapshots: Arc<SnapshotArea>,
    /// `upload.bandwidth_limit`, one bucket for all slots; `None` when unlimited.
    pub bandwidth: Option<Bandwidth>,
}

pub struct UploadSlot {
    settings: Arc<SlotSettings>,
    deps: Arc<SlotDeps>,
    // Boxed because the receiver is not `Unpin` and actors must be.
    queue: Box<async_channel::Receiver<UploadJob>>,
    ledger: LedgerHandle,
    stats: Arc<ActorStats>,
}

impl UploadSlot {
    pub fn new(
        settings: SlotSettings,
        deps: Arc<SlotDeps>,
        queue: async_channel::Receiver<UploadJob>,
        ledger: LedgerHandle,
        stats: Arc<ActorStats>,
    ) -> Self {
        UploadSlot {
            settings: Arc::new(settings),
            deps,
            queue: Box::new(queue),
            ledger,
            stats,
        }
    }
}

impl Actor for UploadSlot {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.add_stream(Box::pin((*self.queue).clone()));
        ctx.run_interval(self.settings.log_interval, |act, _| {
            act.stats.set_queue_depth(act.queue.len());
            act.stats.log("metrics")
        });
    }
}

impl StreamHandler<UploadJob> for UploadSlot {
    fn handle(&mut self, job: UploadJob, ctx: &mut Self::Context) {
        self.stats.received(1);
        let job_run = run_job(
            self.settings.clone(),
            self.deps.clone(),
            self.ledger.clone(),
            self.stats.clone(),
            job,
        );
        // `wait` keeps this slot from taking the next job until this one is done.
        ctx.wait(job_run.into_actor(self));
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // The queue closed: the pipeline is shutting down. Staying alive keeps the metrics timer.
    }
}

/// How a job ended.
enum Outcome {
    /// Staged and handed to the linker, which completes the path.
    Handed,
    /// Same content as already published.
    Unchanged,
    /// The source changed during the read: debounce again.
    SourceChanged,
    /// The source is gone; its removal event takes it from here.
    Vanished,
    Failed {
        error: String,
        attempts: u32,
    },
}

/// How one attempt ended, when it did not fail.
enum Attempt {
    Staged { staged: Staged, sha256: ContentHash },
    SourceChanged,
    Vanished,
}

enum AttemptError {
    /// Reading the local file failed: retrying will not help.
    Source(io::Error),
    Remote(RemoteError),
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Source(e) => write!(f, "cannot read the file: {e}"),
            AttemptError::Remote(e) => write!(f, "{e}"),
        }
    }
}

async fn run_job(
    settings: Arc<SlotSettings>,
    deps: Arc<SlotDeps>,
    ledger: LedgerHandle,
    stats: Arc<ActorStats>,
    job: UploadJob,
) {
    let started = Instant::now();
    let path = job.path.clone();
    if deps.tracker.paths.start_upload(&path, job.version) {
        let outcome = upload(&settings, &deps, &ledger, &stats, &job).await;
        match outcome {
            Outcome::Handed => stats.sent(1),
            Outcome::Unchanged | Outcome::Vanished => deps.tracker.complete(&path),
            Outcome::SourceChanged => {
                tracing::info!(path = %path.display(), "file changed while it was read; the upload is discarded and will be redone");
                deps.tracker.restart(&path);
            }
            Outcome::Failed { error, attempts } => {
                UploadFailed {
                    step: FailedStep::Upload,
                    path: &path,
                    attempts,
                    error: &error,
                }
                .emit(&stats);
                ledger.record_failure(&path, &error, attempts).await;
                deps.tracker.complete(&path);
            }
        }
    }
    if let UploadSource::Snapshot { file, .. } = &job.source {
        deps.snapshots.release(file, job.meta.size);
    }
    stats.busy_since(started);
}

async fn upload(
    settings: &SlotSettings,
    deps: &SlotDeps,
    ledger: &LedgerHandle,
    stats: &ActorStats,
    job: &UploadJob,
) -> Outcome {
    let content = match &job.source {
        UploadSource::Original => Content::Original(settings.root.clone(), job.path.clone()),
        UploadSource::Snapshot { file, .. } => Content::Snapshot(file.clone()),
    };
    match already_published(job, &content).await {
        Ok(true) => {
            ledger.record_unchanged(&job.path, job.meta).await;
            return Outcome::Unchanged;
        }
        Ok(false) => {}
        Err(outcome) => return outcome,
    }
    // Crash clean-up needs this record before any byte reaches the remote.
    ledger.record_intent(&job.path, job.meta).await;

    let expected = matches!(job.source, UploadSource::Original).then_some(job.meta);
    let done = retry(
        &settings.retry,
        || upload_once(deps, stats, &job.path, &content, expected),
        |e| matches!(e, AttemptError::Remote(e) if e.is_transient()),
        report(stats, "upload failed", &job.path, Cadence::Each),
    )
    .await;
    match done.result {
        Ok(Attempt::Staged { staged, sha256 }) => {
            let publish = Publish {
                path: job.path.clone(),
                staged: staged.clone(),
                meta: job.meta,
                sha256,
            };
            if deps.linker.send(publish).await.is_err() {
                deps.remote.discard(&job.path, staged).await; // the linker stopped: shutting down
            }
            Outcome::Handed
        }
        Ok(Attempt::SourceChanged) => Outcome::SourceChanged,
        Ok(Attempt::Vanished) => Outcome::Vanished,
        Err(e) => Outcome::Failed {
            error: e.to_string(),
            attempts: done.attempts,
        },
    }
}

/// True if exactly this content is already published under this path (as the ledger said
/// when the path entered the pipeline). Only a file of the published size can be the same, so
/// only those are hashed first.
async fn already_published(job: &UploadJob, content: &Content) -> Result<bool, Outcome> {
    let Some(published) = job.published.filter(|p| p.size == job.meta.size) else {
        return Ok(false);
    };
    let meta = job.meta;
    let content = content.clone();
    let source_hash = match &job.source {
        UploadSource::Snapshot { sha256, .. } => Some(*sha256),
        UploadSource::Original => None,
    };
    let checked = tokio::task::spawn_blocking(move || -> Result<bool, Outcome> {
        let hash = match source_hash {
            Some(hash) => hash,
            None => match content.open().and_then(|(file, now)| {
                hash_stream(file, now.size, |_| Ok(())).map(|(hash, _)| (hash, now))
            }) {
                Ok((hash, now)) if now == meta => hash,
                Ok(_) => return Err(Outcome::SourceChanged),
                Err(e) if is_gone(&e) => return Err(Outcome::Vanished),
                Err(_) => return Ok(false), // the upload attempt reports read errors
            },
        };
        Ok(hash == published.sha256)
    })
    .await;
    checked.unwrap_or(Ok(false))
}

/// Where a job's bytes come from: the drop folder (confined: never through a link) or a private
/// snapshot copy of dropslot's own.
#[derive(Clone)]
enum Content {
    Original(DropRoot, PathBuf),
    Snapshot(PathBuf),
}

impl Content {
    fn open(&self) -> io::Result<(std::fs::File, FileMeta)> {
        match self {
            Content::Original(root, rel) => root.open_file(rel),
            Content::Snapshot(file) => open_regular(file),
        }
    }

    /// What the path holds now, to tell whether the file read is still the one there.
    fn meta_now(&self) -> io::Result<FileMeta> {
        match self {
            Content::Original(root, rel) => root.regular_meta(rel),
            Content::Snapshot(file) => {
                std::fs::symlink_metadata(file).map(|m| FileMeta::from_metadata(&m))
            }
        }
    }
}

/// How the reader says it stopped because the remote side gave up (not a disk error): the
/// remote's own error is then the one to report, permanent or not.
const REMOTE_STOPPED: io::ErrorKind = io::ErrorKind::BrokenPipe;

/// Streams the file once into the remote. `expected` is the metadata the source must keep
/// throughout (none for a snapshot, which nothing else writes).
async fn upload_once(
    deps: &SlotDeps,
    stats: &ActorStats,
    path: &Path,
    content: &Content,
    expected: Option<FileMeta>,
) -> Result<Attempt, AttemptError> {
    let opening = content.clone();
    let opened = tokio::task::spawn_blocking(move || opening.open())
        .await
        .map_err(|e| AttemptError::Source(io::Error::other(e)))?;
    let (file, at_open) = match opened {
        Ok(opened) => opened,
        Err(e) if is_gone(&e) => return Ok(Attempt::Vanished),
        // Replaced by a symbolic link (or a directory on its path was), or by something that is
        // not a regular file: the stability checker looks again and skips it by name.
        Err(e) if refusal(&e).is_some() || e.kind() == io::ErrorKind::InvalidInput => {
            return Ok(Attempt::SourceChanged)
        }
        Err(e) => return Err(AttemptError::Source(e)),
    };
    let expected = expected.unwrap_or(at_open);
    if at_open != expected {
        return Ok(Attempt::SourceChanged);
    }
    // Mode and mtime for the remotes that keep them, from the descriptor that is read.
    let attributes = file
        .metadata()
        .map(|m| FileAttributes::of(&m))
        .unwrap_or_default();

    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(READ_AHEAD);
    let checking = content.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let read = hash_stream(&file, expected.size, |chunk| {
            tx.blocking_send(Ok(Bytes::copy_from_slice(chunk)))
                .map_err(|_| io::Error::new(REMOTE_STOPPED, "the remote stopped reading"))
        });
        if let Err(e) = &read {
            let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
        }
        // Checked right after the last read, on the same thread: what was read is coherent if
        // neither the open file nor the path changed meanwhile.
        let fd = file.metadata().map(|m| FileMeta::from_metadata(&m));
        let at_path = checking.meta_now();
        let unchanged = matches!((fd, at_path), (Ok(a), Ok(b)) if a == expected && b == expected);
        (read, unchanged)
    });
    // The limit is charged as the remote takes each chunk, so it holds for every remote kind.
    let bandwidth = deps.bandwidth.clone();
    let content: ContentStream = Box::pin(futures_util::stream::unfold(
        (rx, bandwidth),
        |(mut rx, bandwidth)| async move {
            let chunk = rx.recv().await?;
            if let (Ok(bytes), Some(limit)) = (&chunk, &bandwidth) {
                limit.take(bytes.len()).await;
            }
            Some((chunk, (rx, bandwidth)))
        },
    ));
    tracing::debug!(path = %path.display(), size = expected.size, "upload started");
    let staged = deps
        .remote
        .stage(path, expected.size, attributes, content)
        .await;
    let (read, unchanged) = reader
        .await
        .map_err(|e| AttemptError::Source(io::Error::other(e)))?;

    let staged = match (staged, read) {
        (Ok(staged), Ok((sha256, total))) => {
            stats.bytes.fetch_add(total, Ordering::Relaxed);
            (staged, sha256, total)
        }
        (Ok(staged), Err(e)) => {
            deps.remote.discard(path, staged).await;
            return Err(AttemptError::Source(e));
        }
        (Err(e), Ok(_)) => return Err(AttemptError::Remote(e)),
        (Err(remote), Err(read)) => {
            return Err(if read.kind() == REMOTE_STOPPED {
                AttemptError::Remote(remote) // the reader only stopped because the remote did
            } else {
                AttemptError::Source(read)
            });
        }
    };
    let (staged, sha256, total) = staged;
    if !unchanged || total != expected.size {
        deps.remote.discard(path, staged).await;
        return Ok(Attempt::SourceChanged);
    }
    stats.files.fetch_add(1, Ordering::Relaxed);
    Ok(Attempt::Staged { staged, sha256 })
}
