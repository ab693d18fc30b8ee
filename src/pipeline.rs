//! The wiring: the one place where the actors are created and connected, for one watched folder
//! and its remote. Owns start-up order, idle detection (for `run --once`), graceful shutdown and
//! the final summary; the actors own everything else.
//!
//! A daemon with several watched folders starts one `Pipeline` per folder, each with its own
//! remote and ledger; nothing here is global.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::Context as _;
use dropslot_actors::bandwidth::Bandwidth;
use dropslot_actors::debouncer::{DebounceSettings, Debouncer};
use dropslot_actors::ledger::{Ledger, LedgerHandle};
use dropslot_actors::linker::{Linker, LinkerSettings};
use dropslot_actors::messages::{StopWatching, UploadJob};
use dropslot_actors::path_table::{PathTable, Tracker};
use dropslot_actors::remote::Remote;
use dropslot_actors::requeue::{FailureSignals, Requeue, RequeueSettings};
use dropslot_actors::retry::RetryPolicy;
use dropslot_actors::snapshot::{SnapshotArea, SnapshotCopier, SnapshotSettings};
use dropslot_actors::stability::{DeletePolicy, StabilityChecker, StabilitySettings};
use dropslot_actors::stats::ActorStats;
use dropslot_actors::uploader::{SlotDeps, SlotSettings, UploadSlot};
use dropslot_actors::watcher::{ScanProgress, WatchSettings, Watcher};

use crate::config::{OnDelete, Settings};

pub struct Pipeline {
    watcher: Addr<Watcher>,
    /// Kept so the actor lives as long as the pipeline; `None` if `upload.retry_failed_after`
    /// is zero.
    _requeue: Option<Addr<Requeue>>,
    paths: Arc<PathTable>,
    progress: Arc<ScanProgress>,
    upload_queue: async_channel::Sender<UploadJob>,
    stats: Vec<Arc<ActorStats>>,
}

impl Pipeline {
    /// Starts every actor. Must be called inside a running actix `System`.
    pub fn start(
        settings: &Settings,
        remote: Arc<dyn Remote>,
        ledger: Arc<dyn Ledger>,
    ) -> anyhow::Result<Self> {
        let root = crate::config::absolute(&settings.watch.path);
        let log_interval = settings.metrics.log_interval;
        let retry = RetryPolicy {
            initial: settings.upload.retry_initial,
            max: settings.upload.retry_max,
            max_attempts: settings.upload.max_attempts,
        };
        // Every stage records through this layer, so the requeue learns of outages and of their
        // end without any stage knowing about it.
        let signals = Arc::new(FailureSignals::new(ledger, &retry));
        let ledger: Arc<dyn Ledger> = signals.clone();
        let paths = Arc::new(PathTable::new());
        let mut stats = Vec::new();
        // Each actor's stats, and the ledger as that actor uses it (its retries count there).
        let mut new_stats = |name: String| {
            let s = ActorStats::new(name);
            stats.push(s.clone());
            (LedgerHandle::new(ledger.clone(), s.clone()), s)
        };

        // The debouncer's address is needed by every later stage before it can itself start
        // (it needs the stability checker's), so its context is made first.
        let debouncer_ctx = Context::<Debouncer>::new();
        let tracker = Tracker::new(paths.clone(), debouncer_ctx.address().recipient());
        let (upload_tx, upload_rx) = async_channel::unbounded::<UploadJob>();

        let (linker_ledger, linker_stats) = new_stats("linker".into());
        let linker = Linker::new(
            LinkerSettings {
                batch_size: settings.linker.batch_size,
                batch_delay: settings.linker.batch_delay,
                retry: retry.clone(),
                log_interval,
                after_publish: settings.after_publish(),
                root: settings.drop_root(),
            },
            remote.clone(),
            linker_ledger,
            tracker.clone(),
            linker_stats,
        )
        .start();

        let snapshots = Arc::new(
            SnapshotArea::open(settings.snapshot_dir(), settings.snapshot.max_size.as_u64())
                .with_context(|| {
                    format!(
                        "cannot prepare the snapshot area {}",
                        settings.snapshot_dir().display()
                    )
                })?,
        );
        let (snapshot_ledger, snapshot_stats) = new_stats("snapshot".into());
        let snapshot = SnapshotCopier::new(
            SnapshotSettings {
                root: settings.drop_root(),
                retry_delay: Duration::from_millis(100),
                log_interval,
            },
            snapshots.clone(),
            tracker.clone(),
            snapshot_ledger,
            upload_tx.clone(),
            snapshot_stats,
        )
        .start();

        let requeue_remote = remote.clone();
        let deps = Arc::new(SlotDeps {
            remote,
            tracker: tracker.clone(),
            linker: linker.clone(),
            snapshots,
            bandwidth: Bandwidth::per_second(settings.upload.bandwidth_limit.as_u64()),
        });
        for slot in 0..settings.upload.slots {
            let (slot_ledger, slot_stats) = new_stats(format!("slot-{slot}"));
            UploadSlot::new(
                SlotSettings {
                    root: settings.drop_root(),
                    retry: retry.clone(),
                    log_interval,
                },
                deps.clone(),
                upload_rx.clone(),
                slot_ledger,
                slot_stats,
            )
            .start();
        }

        let (stability_ledger, stability_stats) = new_stats("stability".into());
        let stability = StabilityChecker::new(
            StabilitySettings {
                root: settings.drop_root(),
                logs: settings.log_globs().context("stability.logs")?,
                window: settings.stability.window,
                max_wait: settings.stability.max_wait,
                on_delete: match settings.remote.on_delete {
                    OnDelete::Keep => DeletePolicy::Keep,
                    OnDelete::Delete => DeletePolicy::Delete,
                },
                log_interval,
            },
            tracker,
            stability_ledger,
            upload_tx.clone(),
            snapshot,
            linker,
            stability_stats,
        )
        .start();

        let debouncer = debouncer_ctx.run(Debouncer::new(
            DebounceSettings {
                quiet: settings.debounce.quiet,
                max_wait: settings.stability.max_wait,
                log_interval,
            },
            paths.clone(),
            stability,
            new_stats("debouncer".into()).1,
        ));

        let requeue = (!settings.upload.retry_failed_after.is_zero()).then(|| {
            Requeue::new(
                RequeueSettings {
                    after: settings.upload.retry_failed_after,
                    probe: retry.clone(),
                },
                signals,
                requeue_remote,
                debouncer.clone(),
                new_stats("requeue".into()).1,
            )
            .start()
        });

        let (watcher_ledger, watcher_stats) = new_stats("watcher".into());
        let watcher = Watcher::new(
            WatchSettings {
                root,
                drop_root: settings.drop_root(),
                ignore: settings.ignore_rules().context("watch.ignore")?,
                rescan_interval: (!settings.watch.rescan_interval.is_zero())
                    .then_some(settings.watch.rescan_interval),
                poll_interval: (!settings.watch.poll_interval.is_zero())
                    .then_some(settings.watch.poll_interval),
                log_interval,
            },
            watcher_ledger,
            debouncer,
            watcher_stats,
        )
        .context("cannot start the file-system watcher (inotify)")?;
        let progress = watcher.progress();
        let watcher = watcher.start();

        Ok(Pipeline {
            watcher,
            _requeue: requeue,
            paths,
            progress,
            upload_queue: upload_tx,
            stats,
        })
    }

    /// Nothing is being scanned and no path has work anywhere in the pipeline.
    pub fn is_idle(&self) -> bool {
        !self.progress.is_scanning() && self.paths.is_empty()
    }

    pub fn drop_folder_missing(&self) -> bool {
        self.progress.root_missing()
    }

    /// Waits until the pipeline is idle, polling.
    pub async fn wait_idle(&self) {
        while !self.is_idle() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops watching, lets uploads already running finish (at most `timeout`), and logs the
    /// summary. What was still waiting is found again by the next start-up scan.
    pub async fn shutdown(self, timeout: Duration) {
        self.watcher.do_send(StopWatching);
        self.paths.drain();
        let deadline = Instant::now() + timeout;
        while self.paths.in_transfer() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let unfinished = self.paths.in_transfer();
        if unfinished > 0 {
            tracing::warn!(
                unfinished,
                "shutdown timeout reached; unfinished uploads will be redone at the next start"
            );
        }
        self.upload_queue.close();
        self.log_summary();
    }

    /// One line for a service manager's status (systemd's STATUS=): files published and failed
    /// in this run, and paths in the pipeline now.
    pub fn status_line(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let published: u64 = self.stats.iter().map(|s| s.published.load(Relaxed)).sum();
        let failed: u64 = self.stats.iter().map(|s| s.errors.load(Relaxed)).sum();
        format!(
            "published {published}, pending {}, uploading {}, failed {failed}",
            self.paths.len(),
            self.paths.in_transfer()
        )
    }

    /// One summary line per actor, then the totals.
    pub fn log_summary(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let (mut uploaded_files, mut uploaded_bytes, mut errors, mut published) = (0, 0, 0, 0);
        let (mut deleted, mut retries) = (0, 0);
        for s in &self.stats {
            s.log("summary");
            errors += s.errors.load(Relaxed);
            deleted += s.deleted.load(Relaxed);
            retries += s.retries.load(Relaxed);
            if s.actor.starts_with("slot-") {
                uploaded_files += s.files.load(Relaxed);
                uploaded_bytes += s.bytes.load(Relaxed);
            }
            // Publishes only: the linker's deletes and its messages out are other numbers.
            published += s.published.load(Relaxed);
        }
        tracing::info!(
            target: "dropslot::metrics",
            kind = "summary",
            actor = "total",
            uploaded_files,
            uploaded_bytes,
            published,
            deleted,
            retries,
            errors,
            "summary"
        );
    }
}
