//! The directory linker: the one actor that makes changes visible on the remote. It publishes
//! staged uploads and deletes removed files, in batches of what arrives together, and never has
//! two requests in flight for the same remote directory (for Tahoe, concurrent writes to one
//! mutable directory lose entries). Only after the remote confirms that it holds each file (see
//! [`Remote::confirm`]) does it record the result in the ledger. It owns batching and
//! per-directory ordering; it does not move file content.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::after_publish::AfterPublish;
use crate::confined::{DropRoot, TakeAway};
use crate::events::{
    Cadence, DeletedFromRemote, FailedStep, FilePublished, InternalEvent, RetryScheduled,
    UploadFailed,
};
use crate::ledger::{LedgerHandle, PublishedFile};
use crate::messages::{Publish, Unpublish};
use crate::path_table::Tracker;
use crate::remote::{PublishItem, Remote, RemoteError, RemoteRef};
use crate::retry::{report, retry, RetryPolicy};
use crate::stats::ActorStats;

#[derive(Clone, Debug)]
pub struct LinkerSettings {
    /// Most changes in one request to one directory.
    pub batch_size: usize,
    /// How long the first change of a batch waits for others to join it.
    pub batch_delay: Duration,
    pub retry: RetryPolicy,
    pub log_interval: Duration,
    /// What happens to a local file once it is published (see [`crate::after_publish`]).
    pub after_publish: AfterPublish,
    pub root: DropRoot,
}

enum Change {
    Publish(Publish),
    Delete(PathBuf),
}

struct Shared {
    settings: LinkerSettings,
    remote: Arc<dyn Remote>,
    ledger: LedgerHandle,
    tracker: Tracker,
    stats: Arc<ActorStats>,
}

pub struct Linker {
    shared: Arc<Shared>,
    /// Changes waiting, per remote directory, in arrival order.
    pending: HashMap<PathBuf, VecDeque<Change>>,
    /// Directories with a request in flight.
    busy: HashSet<PathBuf>,
    flush_armed: bool,
}

impl Linker {
    pub fn new(
        settings: LinkerSettings,
        remote: Arc<dyn Remote>,
        ledger: LedgerHandle,
        tracker: Tracker,
        stats: Arc<ActorStats>,
    ) -> Self {
        Linker {
            shared: Arc::new(Shared {
                settings,
                remote,
                ledger,
                tracker,
                stats,
            }),
            pending: HashMap::new(),
            busy: HashSet::new(),
            flush_armed: false,
        }
    }

    fn enqueue(&mut self, dir: PathBuf, change: Change, ctx: &mut Context<Self>) {
        self.shared.stats.received(1);
        let queue = self.pending.entry(dir.clone()).or_default();
        queue.push_back(change);
        if queue.len() >= self.shared.settings.batch_size {
            self.flush_dir(dir, ctx);
        } else if !self.flush_armed {
            self.flush_armed = true;
            ctx.run_later(self.shared.settings.batch_delay, |act, ctx| {
                act.flush_armed = false;
                let dirs: Vec<PathBuf> = act.pending.keys().cloned().collect();
                for dir in dirs {
                    act.flush_dir(dir, ctx);
                }
            });
        }
        self.update_depth();
    }

    fn update_depth(&self) {
        let depth = self.pending.values().map(VecDeque::len).sum();
        self.shared.stats.set_queue_depth(depth);
    }

    /// Sends the next batch for `dir` unless one is already in flight; when it completes, what
    /// arrived meanwhile goes next.
    fn flush_dir(&mut self, dir: PathBuf, ctx: &mut Context<Self>) {
        if self.busy.contains(&dir) {
            return;
        }
        let Some(queue) = self.pending.get_mut(&dir) else {
            return;
        };
        let take = queue.len().min(self.shared.settings.batch_size);
        let batch: Vec<Change> = queue.drain(..take).collect();
        if queue.is_empty() {
            self.pending.remove(&dir);
        }
        if batch.is_empty() {
            return;
        }
        self.busy.insert(dir.clone());
        self.update_depth();
        let shared = self.shared.clone();
        ctx.spawn(
            apply(shared, batch)
                .into_actor(self)
                .map(move |_, act, ctx| {
                    act.busy.remove(&dir);
                    act.flush_dir(dir, ctx);
                    act.update_depth();
                }),
        );
    }
}

impl Actor for Linker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.shared.settings.log_interval, |act, _| {
            act.shared.stats.log("metrics")
        });
    }
}

impl Handler<Publish> for Linker {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Self::Context) {
        let dir = self.shared.remote.directory_of(&msg.path);
        self.enqueue(dir, Change::Publish(msg), ctx);
    }
}

impl Handler<Unpublish> for Linker {
    type Result = ();

    fn handle(&mut self, msg: Unpublish, ctx: &mut Self::Context) {
        let dir = self.shared.remote.directory_of(&msg.path);
        self.enqueue(dir, Change::Delete(msg.path), ctx);
    }
}

/// Applies a batch for one directory in order: consecutive publishes go in one request.
async fn apply(shared: Arc<Shared>, batch: Vec<Change>) {
    let started = Instant::now();
    let mut run = Vec::new();
    for change in batch {
        match change {
            Change::Publish(p) => run.push(p),
            Change::Delete(path) => {
                publish_run(&shared, std::mem::take(&mut run)).await;
                delete(&shared, path).await;
            }
        }
    }
    publish_run(&shared, run).await;
    shared.stats.busy_since(started);
}

async fn publish_run(shared: &Shared, run: Vec<Publish>) {
    if run.is_empty() {
        return;
    }
    // Each attempt publishes what is still waiting; only transient failures wait for the next.
    let waiting = RefCell::new(run.into_iter().map(|p| (p, 0u32)).collect::<Vec<_>>());
    let published = RefCell::new(Vec::new());
    let failed: RefCell<Vec<(PathBuf, String, u32)>> = RefCell::new(Vec::new());
    let attempt = || async {
        let batch = waiting.take();
        let items: Vec<PublishItem> = batch
            .iter()
            .map(|(p, _)| PublishItem {
                path: p.path.clone(),
                staged: p.staged.clone(),
                size: p.meta.size,
                sha256: p.sha256,
            })
            .collect();
        let results = shared.remote.publish(items.clone()).await;
        let results = confirmed(&*shared.remote, &items, results).await;
        let mut transient = Vec::new();
        for (((p, attempts), result), item) in batch.into_iter().zip(results).zip(&items) {
            let result = match result {
                // A retry that fails may follow an attempt that worked but whose answer was lost
                // (the staged upload is then gone: WebDAV's MOVE says 404, S3's completion
                // NoSuchUpload): only the remote's content can tell, for every kind alike.
                Err(e) if attempts > 0 => {
                    match shared.remote.holds(&p.path, p.meta.size, &p.sha256).await {
                        Ok(true) => Ok(shared.remote.reference_of(item)),
                        _ => Err(e),
                    }
                }
                other => other,
            };
            let attempts = attempts + 1;
            match result {
                Ok(remote_ref) => published.borrow_mut().push(PublishedFile {
                    path: p.path,
                    meta: p.meta,
                    sha256: p.sha256,
                    remote_ref: remote_ref.0,
                    after_publish: shared.settings.after_publish.acts(),
                }),
                Err(e) if e.is_transient() => {
                    transient.push((p.path.clone(), e));
                    waiting.borrow_mut().push((p, attempts));
                }
                Err(e) => {
                    shared.remote.discard(&p.path, p.staged).await;
                    failed.borrow_mut().push((p.path, e.to_string(), attempts));
                }
            }
        }
        if transient.is_empty() {
            Ok(())
        } else {
            Err(transient)
        }
    };
    let retried = retry(
        &shared.settings.retry,
        attempt,
        |_| true,
        |errors: &Vec<(PathBuf, RemoteError)>, attempt, delay| {
            for (path, error) in errors {
                RetryScheduled {
                    what: "publishing failed",
                    path,
                    attempt,
                    delay,
                    error,
                    cadence: Cadence::Each,
                }
                .emit(&shared.stats);
            }
        },
    )
    .await;
    // What still waits ran out of attempts; `waiting` and the errors are in the same order.
    if let Err(errors) = retried.result {
        for ((p, attempts), (_, e)) in waiting.take().into_iter().zip(errors) {
            shared.remote.discard(&p.path, p.staged).await;
            failed.borrow_mut().push((p.path, e.to_string(), attempts));
        }
    }
    let (published, failed) = (published.into_inner(), failed.into_inner());
    for file in &published {
        FilePublished {
            path: &file.path,
            remote_ref: &file.remote_ref,
        }
        .emit(&shared.stats);
    }
    let paths: Vec<PathBuf> = published.iter().map(|f| f.path.clone()).collect();
    for (path, error, attempts) in &failed {
        UploadFailed {
            step: FailedStep::Publish,
            path,
            attempts: *attempts,
            error,
        }
        .emit(&shared.stats);
    }
    let done: Vec<PathBuf> = paths
        .into_iter()
        .chain(failed.iter().map(|(path, ..)| path.clone()))
        .collect();
    // The files are on the remote already: the ledger's write policy waits for a ledger that
    // cannot be written (a full state disk) rather than skipping the record, which would leave
    // them to be sent again at the next start. The directory's next batch waits meanwhile.
    let acting: Vec<(PathBuf, crate::fileinfo::FileMeta)> = published
        .iter()
        .filter(|f| f.after_publish)
        .map(|f| (f.path.clone(), f.meta))
        .collect();
    shared.ledger.record_outcome(published, failed).await;
    // Only now, with the publish and the intent durable, may the local file go; the paths are
    // still marked as linking, so events the removal causes wait until the ledger knows.
    take_away(shared, acting).await;
    for path in done {
        shared.tracker.complete(&path);
    }
}

/// Step 2 and 3 of the after-publish action for a batch: one blocking task for the file system,
/// then one ledger write per file.
async fn take_away(shared: &Shared, files: Vec<(PathBuf, crate::fileinfo::FileMeta)>) {
    if files.is_empty() {
        return;
    }
    let (root, action) = (
        shared.settings.root.clone(),
        shared.settings.after_publish.clone(),
    );
    let outcomes = tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .map(|(path, meta)| {
                let outcome = action.take_away(&root, &path, &meta);
                (path, outcome)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (path, outcome) in outcomes {
        // Gone while running: someone else removed it, which is theirs to propagate (a rescan
        // finds it missing once the intent is dropped).
        let removed = match outcome {
            Ok(TakeAway::Done) => {
                tracing::info!(path = %path.display(), action = ?shared.settings.after_publish, "after-publish action done");
                true
            }
            Ok(TakeAway::Changed) => {
                tracing::info!(path = %path.display(), "changed since it was published: kept, and published again");
                false
            }
            Ok(TakeAway::Gone) => false,
            Err(e) => {
                shared.stats.error();
                tracing::warn!(path = %path.display(), "after-publish action failed: {e}; the file is kept");
                false
            }
        };
        shared.ledger.after_publish_done(&path, removed).await;
    }
}

/// The publish results with each success confirmed by the remote. A confirmation that fails
/// turns the success into a transient failure, so the publish is retried and nothing the remote
/// does not hold is recorded.
async fn confirmed(
    remote: &dyn Remote,
    items: &[PublishItem],
    results: Vec<Result<RemoteRef, RemoteError>>,
) -> Vec<Result<RemoteRef, RemoteError>> {
    let succeeded: Vec<PublishItem> = items
        .iter()
        .zip(&results)
        .filter(|(_, result)| result.is_ok())
        .map(|(item, _)| item.clone())
        .collect();
    if succeeded.is_empty() {
        return results;
    }
    let mut confirmations = remote.confirm(&succeeded).await.into_iter();
    results
        .into_iter()
        .map(|result| {
            let remote_ref = result?;
            match confirmations.next() {
                Some(Ok(())) => Ok(remote_ref),
                Some(Err(e)) => Err(RemoteError::transient(e.message)),
                None => Err(RemoteError::transient("the remote gave no confirmation")),
            }
        })
        .collect()
}

async fn delete(shared: &Shared, path: PathBuf) {
    let done = retry(
        &shared.settings.retry,
        || shared.remote.delete(&path),
        RemoteError::is_transient,
        report(
            &shared.stats,
            "deleting from the remote failed",
            &path,
            Cadence::Each,
        ),
    )
    .await;
    let (result, attempts) = (done.result, done.attempts);
    match result {
        Ok(()) => {
            DeletedFromRemote { path: &path }.emit(&shared.stats);
            shared.ledger.forget(&path).await;
        }
        Err(e) => {
            UploadFailed {
                step: FailedStep::Delete,
                path: &path,
                attempts,
                error: &e,
            }
            .emit(&shared.stats);
            // The entry keeps the hash of the remote copy, so the next look at the missing file
            // (a retry round, a rescan) deletes it again instead of forgetting it.
            let error = format!("delete failed: {e}");
            shared.ledger.record_failure(&path, &error, attempts).await;
        }
    }
    shared.tracker.complete(&path);
}
