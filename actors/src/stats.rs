//! Per-actor counters and the structured `tracing` line each actor logs every
//! `metrics.log_interval`. Owns the numbers only; the counters of observable things (published,
//! deleted, retries, ...) are bumped by [`crate::events`], never by hand, so they always equal
//! what the log reports.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counters one actor updates and anyone may read. Relaxed atomics: these are statistics.
#[derive(Debug, Default)]
pub struct ActorStats {
    pub actor: String,
    pub msgs_in: AtomicU64,
    pub msgs_out: AtomicU64,
    pub errors: AtomicU64,
    pub queue_depth: AtomicI64,
    busy_us: AtomicU64,
    /// Upload slots: bytes sent and files staged; snapshot copier: bytes and files copied.
    pub bytes: AtomicU64,
    pub files: AtomicU64,
    /// Linker: files made visible ([`crate::events::FilePublished`]); deletes are not counted.
    pub published: AtomicU64,
    /// Linker: files removed from the remote ([`crate::events::DeletedFromRemote`]).
    pub deleted: AtomicU64,
    /// Retries scheduled, of remote operations and ledger writes alike
    /// ([`crate::events::RetryScheduled`]).
    pub retries: AtomicU64,
    /// Snapshot copier: copies taken.
    pub snapshots: AtomicU64,
    /// Stability checker: paths not uploaded (links, special files, refused, unreadable).
    pub skipped: AtomicU64,
    /// Stability checker: times a file was found held open by a writer.
    pub waiting_for_writer: AtomicU64,
    /// Watcher: full walks of the drop folder finished.
    pub scans: AtomicU64,
}

impl ActorStats {
    pub fn new(actor: impl Into<String>) -> Arc<Self> {
        Arc::new(ActorStats {
            actor: actor.into(),
            ..Default::default()
        })
    }

    pub fn received(&self, n: usize) {
        self.msgs_in.fetch_add(n as u64, Relaxed);
    }

    pub fn sent(&self, n: usize) {
        self.msgs_out.fetch_add(n as u64, Relaxed);
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth.store(depth as i64, Relaxed);
    }

    pub fn add_busy(&self, d: Duration) {
        self.busy_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// Adds the time since `start` to the busy time.
    pub fn busy_since(&self, start: Instant) {
        self.add_busy(start.elapsed());
    }

    pub fn busy(&self) -> Duration {
        Duration::from_micros(self.busy_us.load(Relaxed))
    }

    /// One structured line; `kind` is "metrics" for the periodic line and "summary" on exit.
    pub fn log(&self, kind: &'static str) {
        tracing::info!(
            target: "dropslot::metrics",
            kind,
            actor = %self.actor,
            msgs_in = self.msgs_in.load(Relaxed),
            msgs_out = self.msgs_out.load(Relaxed),
            queue_depth = self.queue_depth.load(Relaxed),
            errors = self.errors.load(Relaxed),
            busy_ms = self.busy().as_millis() as u64,
            bytes = self.bytes.load(Relaxed),
            files = self.files.load(Relaxed),
            published = self.published.load(Relaxed),
            deleted = self.deleted.load(Relaxed),
            retries = self.retries.load(Relaxed),
            snapshots = self.snapshots.load(Relaxed),
            skipped = self.skipped.load(Relaxed),
            waiting_for_writer = self.waiting_for_writer.load(Relaxed),
            scans = self.scans.load(Relaxed),
            "{kind}"
        );
    }
}
