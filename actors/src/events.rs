//! Internal events, after Vector's habit: one type per thing an operator can observe, whose
//! [`emit`](InternalEvent::emit) both writes the one `tracing` line about it and bumps the counter
//! [`ActorStats`] keeps for it. The periodic metrics lines, the end-of-run summary and any metrics
//! endpoint read those counters, so the numbers they show are the number of log lines, by
//! construction. Owns the wording of these lines and what each counts; it does not decide when
//! something happened (the actors do).
//!
//! Some wording is relied on by tests and by operators' log searches ("upload failed",
//! "publishing failed", "failed, retrying", "is the state disk full?", "cannot take a snapshot",
//! "waiting for it to close", "scan finished", "deleted from the remote"): change it knowingly.

use std::fmt::Display;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::stats::ActorStats;

/// Something observable: logged once and counted once, by the same call.
pub trait InternalEvent {
    fn emit(self, stats: &ActorStats);
}

/// The linker made a file visible on the remote. Logged at debug level: one line per file would
/// be most of the log of a busy drop folder, and the counter says how many.
pub struct FilePublished<'a> {
    pub path: &'a Path,
    pub remote_ref: &'a str,
}

impl InternalEvent for FilePublished<'_> {
    fn emit(self, stats: &ActorStats) {
        tracing::debug!(path = %self.path.display(), remote_ref = self.remote_ref, "published");
        stats.published.fetch_add(1, Relaxed);
        stats.sent(1);
    }
}

/// The linker removed a file from the remote (`remote.on_delete = "delete"`).
pub struct DeletedFromRemote<'a> {
    pub path: &'a Path,
}

impl InternalEvent for DeletedFromRemote<'_> {
    fn emit(self, stats: &ActorStats) {
        tracing::info!(path = %self.path.display(), "deleted from the remote");
        stats.deleted.fetch_add(1, Relaxed);
        stats.sent(1);
    }
}

/// Which step of getting a file to the remote gave up on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailedStep {
    /// Reading and staging the content (an upload slot).
    Upload,
    /// Making staged content visible (the linker).
    Publish,
    /// Removing a published file (the linker).
    Delete,
    /// Taking a coherent private copy (the snapshot copier).
    Snapshot,
}

/// A file could not be uploaded, published, deleted or copied, and its retries (if it had any)
/// ran out: the ledger records it as failed. One error line naming the path.
pub struct UploadFailed<'a> {
    pub step: FailedStep,
    pub path: &'a Path,
    pub attempts: u32,
    pub error: &'a dyn Display,
}

impl InternalEvent for UploadFailed<'_> {
    fn emit(self, stats: &ActorStats) {
        let (path, attempts, error) = (self.path.display(), self.attempts, self.error);
        match self.step {
            FailedStep::Upload => tracing::error!(path = %path, attempts, "upload failed: {error}"),
            FailedStep::Publish => {
                tracing::error!(path = %path, attempts, "publishing failed: {error}")
            }
            FailedStep::Delete => {
                tracing::error!(path = %path, attempts, "deleting from the remote failed: {error}")
            }
            FailedStep::Snapshot => {
                tracing::error!(path = %path, attempts, "cannot snapshot file: {error}")
            }
        }
        stats.error();
    }
}

/// How loudly a retry is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cadence {
    /// Every retry is a warning: bounded retries of remote operations (a handful per file).
    Each,
    /// Retries that go on until they work (a ledger write, a snapshot that keeps being torn): the
    /// first and every tenth are warnings, the rest debug lines, so an outage of the state disk
    /// is reported without a line per write per second.
    Sparse,
    /// Expected waits (a writer still holds the file): debug lines only.
    Quiet,
}

/// Something failed and will be tried again after `delay`. Every retry of the pipeline goes
/// through [`crate::retry`] and is reported by this one event, so the `retries` counter of each
/// actor is the number of retries it made.
pub struct RetryScheduled<'a> {
    /// What failed, as the start of the line: "upload failed", "publishing failed", ...
    pub what: &'a str,
    /// The file concerned (for a batch, its first file); empty for the remote as a whole.
    pub path: &'a Path,
    /// The attempt that just failed, counting from 1.
    pub attempt: u32,
    pub delay: Duration,
    pub error: &'a dyn Display,
    pub cadence: Cadence,
}

impl InternalEvent for RetryScheduled<'_> {
    fn emit(self, stats: &ActorStats) {
        stats.retries.fetch_add(1, Relaxed);
        let loud = match self.cadence {
            Cadence::Each => true,
            Cadence::Sparse => self.attempt == 1 || self.attempt % 10 == 0,
            Cadence::Quiet => false,
        };
        let (path, attempt, delay, what, error) = (
            self.path.display(),
            self.attempt,
            self.delay,
            self.what,
            self.error,
        );
        match (loud, self.path.as_os_str().is_empty()) {
            (true, false) => {
                tracing::warn!(path = %path, attempt, "{what}, retrying in {delay:?}: {error}")
            }
            (true, true) => tracing::warn!(attempt, "{what}, retrying in {delay:?}: {error}"),
            (false, false) => {
                tracing::debug!(path = %path, attempt, "{what}, retrying in {delay:?}: {error}")
            }
            (false, true) => tracing::debug!(attempt, "{what}, retrying in {delay:?}: {error}"),
        }
    }
}

/// The snapshot copier took a coherent private copy of a file that never settles.
pub struct SnapshotTaken<'a> {
    pub path: &'a Path,
    pub size: u64,
}

impl InternalEvent for SnapshotTaken<'_> {
    fn emit(self, stats: &ActorStats) {
        tracing::debug!(path = %self.path.display(), size = self.size, "snapshot taken");
        stats.snapshots.fetch_add(1, Relaxed);
        stats.files.fetch_add(1, Relaxed);
        stats.bytes.fetch_add(self.size, Relaxed);
        stats.sent(1);
    }
}

/// Why a path is not uploaded at all.
#[derive(Clone, Copy)]
pub enum SkipReason<'a> {
    /// A symbolic link: links are never followed.
    Link,
    /// A FIFO, socket or device (the text names which).
    Special(&'a str),
    /// Refused by the confined root (a directory on its path is a link, ...): the text says why.
    Refused(&'a dyn Display),
    /// The file could not even be looked at.
    Unreadable(&'a dyn Display),
}

/// The stability checker skipped a path that must not be uploaded.
pub struct Skipped<'a> {
    pub path: &'a Path,
    pub reason: SkipReason<'a>,
}

impl InternalEvent for Skipped<'_> {
    fn emit(self, stats: &ActorStats) {
        let path = self.path.display();
        match self.reason {
            SkipReason::Link => {
                tracing::info!(path = %path, "skipping symbolic link (links are not followed)")
            }
            SkipReason::Special(what) => {
                tracing::warn!(path = %path, "skipping {what}: only regular files are uploaded")
            }
            SkipReason::Refused(why) => tracing::warn!(path = %path, "skipping: {why}"),
            SkipReason::Unreadable(e) => {
                stats.error();
                tracing::warn!(path = %path, "cannot look at file, skipping it: {e}")
            }
        }
        stats.skipped.fetch_add(1, Relaxed);
    }
}

/// A file is held open for writing by another process; it is published once closed.
pub struct WaitingForWriter<'a> {
    pub path: &'a Path,
}

impl InternalEvent for WaitingForWriter<'_> {
    fn emit(self, stats: &ActorStats) {
        tracing::info!(path = %self.path.display(), "open for writing by another process; waiting for it to close the file");
        stats.waiting_for_writer.fetch_add(1, Relaxed);
    }
}

/// A walk of the whole drop folder begins (start-up, `watch.rescan_interval`, lost events, an
/// out-of-watches poll).
pub struct RescanStarted<'a> {
    pub root: &'a Path,
}

impl InternalEvent for RescanStarted<'_> {
    fn emit(self, _stats: &ActorStats) {
        tracing::debug!(root = %self.root.display(), "scan started");
    }
}

/// A walk of the whole drop folder ended.
pub struct RescanFinished<'a> {
    pub root: &'a Path,
    pub files: u64,
    pub dirs: u64,
    pub elapsed: Duration,
}

impl InternalEvent for RescanFinished<'_> {
    fn emit(self, stats: &ActorStats) {
        tracing::info!(
            root = %self.root.display(),
            files = self.files,
            dirs = self.dirs,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "scan finished"
        );
        stats.scans.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_counts_what_it_logs() {
        let stats = ActorStats::new("test");
        let path = Path::new("a/b.txt");
        FilePublished {
            path,
            remote_ref: "r",
        }
        .emit(&stats);
        DeletedFromRemote { path }.emit(&stats);
        for attempt in 1..=3 {
            RetryScheduled {
                what: "upload failed",
                path,
                attempt,
                delay: Duration::from_millis(1),
                error: &"boom",
                cadence: Cadence::Sparse,
            }
            .emit(&stats);
        }
        UploadFailed {
            step: FailedStep::Upload,
            path,
            attempts: 3,
            error: &"boom",
        }
        .emit(&stats);
        Skipped {
            path,
            reason: SkipReason::Link,
        }
        .emit(&stats);
        let c = |n: &std::sync::atomic::AtomicU64| n.load(Relaxed);
        assert_eq!(c(&stats.published), 1, "a delete is not a publish");
        assert_eq!(c(&stats.deleted), 1);
        assert_eq!(c(&stats.retries), 3);
        assert_eq!(c(&stats.errors), 1, "retries are not errors; giving up is");
        assert_eq!(c(&stats.skipped), 1);
        assert_eq!(c(&stats.msgs_out), 2);
    }
}
