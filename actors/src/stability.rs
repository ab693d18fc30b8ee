//! The stability checker: decides when a quiet file can be read. It re-stats each file after
//! `stability.window` (size, mtime, ctime, inode); unchanged means stable and the file goes to
//! the upload queue, unless a process still has it open for writing (a writer pausing mid-version
//! looks unchanged). A file held open for writing waits for its writer to close it, however long
//! that takes (an rsync `--inplace` or a download in progress is neither the old nor the new
//! version), except a log (`stability.logs`), which is published from prefix snapshots while it
//! grows; a file still changing after `stability.max_wait` with no writer holding it (many short
//! writes) goes to the snapshot copier. It also recognises what must not be uploaded at all (gone,
//! directories, symbolic links, paths through links, FIFOs, sockets, devices) and files the ledger
//! already has as published.
//!
//! Every `stat` and ledger lookup runs in a blocking task, batched per timer tick, so the actor
//! thread never waits on the disk.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::confined::DropRoot;
use crate::events::{InternalEvent, SkipReason, Skipped, WaitingForWriter};
use crate::fileinfo::{writers_known_open, FileKind, FileMeta};
use crate::globs::PathGlobs;
use crate::ledger::{EntryStatus, LedgerEntry, LedgerHandle};
use crate::linker::Linker;
use crate::messages::{
    CheckStability, PublishedVersion, TakeSnapshot, Unpublish, UploadJob, UploadSource,
};
use crate::path_table::{Phase, Tracker};
use crate::snapshot::SnapshotCopier;
use crate::stats::ActorStats;
use crate::wakeup::Wakeup;

/// What to do on the remote when a published file disappears from the drop folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletePolicy {
    Keep,
    Delete,
}

#[derive(Clone, Debug)]
pub struct StabilitySettings {
    pub root: DropRoot,
    /// Files that only grow by appends (`stability.logs`): published while held open.
    pub logs: PathGlobs,
    pub window: Duration,
    pub max_wait: Duration,
    pub on_delete: DeletePolicy,
    pub log_interval: Duration,
}

/// A file under observation.
#[derive(Debug)]
struct Watched {
    path: PathBuf,
    since: Instant,
    /// The metadata at the previous look; `None` before the first.
    last: Option<FileMeta>,
    /// What the ledger said of this path at the first look.
    ledger_status: Option<EntryStatus>,
    published: Option<PublishedVersion>,
    /// Recorded in the ledger as waiting for its writer to close it.
    waiting_for_writer: bool,
}

pub struct StabilityChecker {
    settings: StabilitySettings,
    tracker: Tracker,
    ledger: LedgerHandle,
    upload_queue: async_channel::Sender<UploadJob>,
    snapshot: Addr<SnapshotCopier>,
    linker: Addr<Linker>,
    waiting: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Files whose window is running, keyed by a sequence number so the heap needs no `Ord` on
    /// metadata.
    watched: std::collections::HashMap<u64, Watched>,
    next_id: u64,
    wakeup: Wakeup,
    stats: Arc<ActorStats>,
}

/// What one look at a file found.
struct Look {
    watched: Watched,
    kind: io::Result<FileKind>,
    entry: Option<LedgerEntry>,
    /// Open for writing somewhere (asked when the file looks unchanged or its `max_wait` is up).
    writer_open: bool,
}

impl StabilityChecker {
    pub fn new(
        settings: StabilitySettings,
        tracker: Tracker,
        ledger: LedgerHandle,
        upload_queue: async_channel::Sender<UploadJob>,
        snapshot: Addr<SnapshotCopier>,
        linker: Addr<Linker>,
        stats: Arc<ActorStats>,
    ) -> Self {
        StabilityChecker {
            settings,
            tracker,
            ledger,
            upload_queue,
            snapshot,
            linker,
            waiting: BinaryHeap::new(),
            watched: Default::default(),
            next_id: 0,
            wakeup: Wakeup::default(),
            stats,
        }
    }

    /// Stats a batch of files (and, on a first look, reads their ledger entries) off the actor
    /// thread, then routes each one.
    fn look(&mut self, batch: Vec<Watched>, ctx: &mut Context<Self>) {
        let root = self.settings.root.clone();
        let max_wait = self.settings.max_wait;
        // One blocking task for the whole batch: it reads the ledger directly.
        let ledger = self.ledger.blocking().clone();
        let stats = self.stats.clone();
        let work = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let looks: Vec<Look> = batch
                .into_iter()
                .map(|watched| {
                    let kind = root.probe(&watched.path);
                    let entry = match watched.last {
                        Some(_) => None,
                        None => ledger.lookup(&watched.path).unwrap_or_else(|e| {
                            tracing::warn!(path = %watched.path.display(), "ledger lookup failed: {e}");
                            None
                        }),
                    };
                    let writer_open = match &kind {
                        Ok(FileKind::Regular(meta))
                            if watched.last == Some(*meta)
                                || watched.since.elapsed() >= max_wait =>
                        {
                            root.open_file(&watched.path)
                                .is_ok_and(|(file, _)| writers_known_open(&file))
                        }
                        _ => false,
                    };
                    Look {
                        watched,
                        kind,
                        entry,
                        writer_open,
                    }
                })
                .collect();
            stats.busy_since(started);
            looks
        });
        ctx.spawn(work.into_actor(self).map(|looks, act, ctx| {
            match looks {
                Ok(looks) => looks.into_iter().for_each(|look| act.route(look)),
                Err(e) => tracing::error!("stability check task failed: {e}"),
            }
            act.rearm(ctx);
        }));
    }

    fn route(&mut self, look: Look) {
        let Look {
            mut watched,
            kind,
            entry,
            writer_open,
        } = look;
        if !matches!(kind, Ok(FileKind::Regular(_))) {
            self.waiting_for_writer(&mut watched, false);
        }
        let path = &watched.path;
        match kind {
            Err(e) => {
                Skipped {
                    path,
                    reason: SkipReason::Unreadable(&e),
                }
                .emit(&self.stats);
                self.tracker.complete(path);
            }
            Ok(FileKind::Missing) => {
                // A failed re-upload or delete keeps the hash of the copy the remote still holds:
                // with "delete", that copy goes too (else a failed delete would be forgotten).
                let with_copy = |e: LedgerEntry| match e.sha256 {
                    Some(_) if self.settings.on_delete == DeletePolicy::Delete => {
                        EntryStatus::Published
                    }
                    _ => e.status,
                };
                // Removed by the after-publish action (or about to be): ours, not a delete.
                if entry.as_ref().is_some_and(|e| e.after_publish_pending) {
                    self.tracker.complete(path);
                    return;
                }
                match entry.map(with_copy).or(watched.ledger_status) {
                    Some(EntryStatus::Published)
                        if self.settings.on_delete == DeletePolicy::Delete
                            && self.tracker.paths.advance(
                                path,
                                Phase::Checking,
                                Phase::Linking,
                            ) =>
                    {
                        self.stats.sent(1);
                        self.linker.do_send(Unpublish { path: path.clone() });
                    }
                    // A failed or unfinished file that is gone is no longer a failure to report.
                    Some(EntryStatus::Failed | EntryStatus::Pending) => {
                        let (ledger, tracker, path) =
                            (self.ledger.clone(), self.tracker.clone(), path.clone());
                        actix::spawn(async move {
                            ledger.forget(&path).await;
                            tracker.complete(&path);
                        });
                    }
                    _ => self.tracker.complete(path),
                }
            }
            Ok(FileKind::Directory) => self.tracker.complete(path), // the watcher walks directories
            Ok(FileKind::Symlink) => {
                Skipped {
                    path,
                    reason: SkipReason::Link,
                }
                .emit(&self.stats);
                self.tracker.complete(path);
            }
            Ok(FileKind::Special(what)) => {
                Skipped {
                    path,
                    reason: SkipReason::Special(what),
                }
                .emit(&self.stats);
                self.tracker.complete(path);
            }
            Ok(FileKind::Refused(why)) => {
                Skipped {
                    path,
                    reason: SkipReason::Refused(&why),
                }
                .emit(&self.stats);
                self.tracker.complete(path);
            }
            Ok(FileKind::Regular(meta)) => {
                if entry.as_ref().is_some_and(|e| e.is_published_as(&meta)) {
                    self.tracker.complete(path); // already published exactly like this
                    return;
                }
                let is_log = self.settings.logs.is_match(path);
                let max_wait_over = watched.since.elapsed() >= self.settings.max_wait;
                match watched.last {
                    Some(prev) if prev == meta && !writer_open => {
                        self.waiting_for_writer(&mut watched, false);
                        self.queue_upload(watched.path, meta, watched.published)
                    }
                    Some(_) if writer_open && !(is_log && max_wait_over) => {
                        // Whatever the file holds now may be half of a version: only its close
                        // (or, for a log, the next prefix snapshot) can tell.
                        self.waiting_for_writer(&mut watched, true);
                        watched.last = Some(meta);
                        self.wait_window(watched);
                    }
                    Some(_) if max_wait_over => {
                        if self
                            .tracker
                            .paths
                            .advance(path, Phase::Checking, Phase::Snapshotting)
                        {
                            tracing::info!(path = %path.display(), log = is_log, "file keeps changing; taking a snapshot");
                            self.waiting_for_writer(&mut watched, false);
                            self.stats.sent(1);
                            self.snapshot.do_send(TakeSnapshot {
                                path: watched.path,
                                published: watched.published,
                                append_only: is_log && writer_open,
                            });
                        }
                    }
                    _ => {
                        if let Some(e) = &entry {
                            watched.ledger_status = Some(e.status);
                            watched.published = e
                                .sha256
                                .filter(|_| e.status == EntryStatus::Published)
                                .map(|sha256| PublishedVersion {
                                    size: e.meta.size,
                                    sha256,
                                });
                        }
                        watched.last = Some(meta);
                        self.wait_window(watched);
                    }
                }
            }
        }
    }

    /// Records (once per change) that the file waits for a writer to close it, so `status` can
    /// say why it is not published yet.
    fn waiting_for_writer(&self, watched: &mut Watched, waiting: bool) {
        if watched.waiting_for_writer == waiting {
            return;
        }
        watched.waiting_for_writer = waiting;
        if waiting {
            WaitingForWriter {
                path: &watched.path,
            }
            .emit(&self.stats);
        }
        let (ledger, path) = (self.ledger.clone(), watched.path.clone());
        actix::spawn(async move { ledger.set_waiting_for_writer(&path, waiting).await });
    }

    fn wait_window(&mut self, watched: Watched) {
        let id = self.next_id;
        self.next_id += 1;
        self.waiting
            .push(Reverse((Instant::now() + self.settings.window, id)));
        self.watched.insert(id, watched);
        self.stats.set_queue_depth(self.watched.len());
    }

    fn queue_upload(&mut self, path: PathBuf, meta: FileMeta, published: Option<PublishedVersion>) {
        let Some(version) = self
            .tracker
            .paths
            .queue_for_upload(&path, Phase::Checking, false)
        else {
            return;
        };
        self.stats.sent(1);
        let job = UploadJob {
            path,
            version,
            meta,
            source: UploadSource::Original,
            published,
        };
        if self.upload_queue.try_send(job).is_err() {
            tracing::debug!("upload queue closed; shutting down");
        }
    }

    /// Wakes up for the earliest window to end, if any.
    fn rearm(&mut self, ctx: &mut Context<Self>) {
        if let Some(Reverse((at, _))) = self.waiting.peek() {
            let at = *at;
            self.wakeup.at(at, ctx, Self::tick);
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.wakeup.fired();
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(Reverse((at, id))) = self.waiting.peek().copied() {
            if at > now {
                break;
            }
            self.waiting.pop();
            if let Some(w) = self.watched.remove(&id) {
                due.push(w);
            }
        }
        self.stats.set_queue_depth(self.watched.len());
        if !due.is_empty() {
            self.look(due, ctx);
        }
        self.rearm(ctx);
    }
}

impl Actor for StabilityChecker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.settings.log_interval, |act, _| {
            act.stats.log("metrics")
        });
    }
}

impl Handler<CheckStability> for StabilityChecker {
    type Result = ();

    fn handle(&mut self, msg: CheckStability, ctx: &mut Self::Context) {
        self.stats.received(msg.0.len());
        let batch = msg
            .0
            .into_iter()
            .map(|c| Watched {
                path: c.path,
                since: c.since,
                last: None,
                ledger_status: None,
                published: None,
                waiting_for_writer: false,
            })
            .collect();
        self.look(batch, ctx);
    }
}
