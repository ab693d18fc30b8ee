//! Second chances for files whose retries ran out: after `upload.retry_failed_after`, every failed
//! ledger entry goes back to the debouncer, as if it had just been touched (the stability checker
//! uploads a file that exists, deletes again the remote copy of one whose delete failed, and
//! forgets a failed file that is gone); and as soon as the remote is seen healthy again after an
//! outage, that happens at once. Without this, a 20 s outage strands the files that were in
//! flight until the next full rescan (10 minutes by default).
//!
//! Owns the schedule, the outage signal and the probe. It does not upload, and it does not decide
//! what a failure is: the stages record failures in the ledger as before, and [`FailureSignals`],
//! a thin layer over the ledger, notices them. An outage is files running out of retries while
//! nothing at all could be published; it ends with the next publish, or with the remote's own
//! `check` answering, which is probed meanwhile on the upload retry schedule (a probe is one cheap
//! request, where a round would be every failed file's attempts). Rounds that leave files failed
//! back off (the shared [`RetryPolicy`], from `retry_failed_after` up to ten times it), so a file
//! that can never be sent costs one attempt every few minutes, not a hot loop.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::debouncer::Debouncer;
use crate::events::Cadence;
use crate::fileinfo::FileMeta;
use crate::ledger::{Ledger, LedgerEntry, LedgerError, LedgerHandle, PublishedFile};
use crate::messages::PathsTouched;
use crate::remote::Remote;
use crate::retry::{report, retry, RetryPolicy};
use crate::stats::ActorStats;

/// Paths handed to the debouncer per message, as the watcher does.
const BATCH: usize = 512;

/// The ledger as the pipeline sees it, noticing outages on the way: a file ran out of retries
/// (which only transient errors reach) and nothing at all was published while it was retrying.
/// A file that keeps failing while others are published is that file's trouble, not an outage:
/// it waits for the timer, so it cannot be retried after every publish. The outage ends with the
/// next recorded publish or [`FailureSignals::remote_answers`].
pub struct FailureSignals {
    inner: Arc<dyn Ledger>,
    max_attempts: u32,
    /// The least time a file that ran out of attempts was retrying.
    retry_span: Duration,
    last_published: Mutex<Option<Instant>>,
    /// True during an outage; [`Requeue`] watches it.
    remote_down: watch::Sender<bool>,
}

impl FailureSignals {
    /// `retry` is the policy the upload slots and the linker retry with.
    pub fn new(inner: Arc<dyn Ledger>, retry: &RetryPolicy) -> Self {
        FailureSignals {
            inner,
            max_attempts: retry.max_attempts,
            retry_span: retry.least_total(),
            last_published: Mutex::new(None),
            remote_down: watch::Sender::new(false),
        }
    }

    /// The remote was seen working (a publish, or a probe): ends an outage, if one was on.
    pub fn remote_answers(&self) {
        self.remote_down
            .send_if_modified(|down| std::mem::replace(down, false));
    }

    fn lock_last_published(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.last_published
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Ledger for FailureSignals {
    fn lookup(&self, path: &Path) -> Result<Option<LedgerEntry>, LedgerError> {
        self.inner.lookup(path)
    }

    fn record_intent(&self, path: &Path, meta: &FileMeta) -> Result<(), LedgerError> {
        self.inner.record_intent(path, meta)
    }

    fn record_published(&self, files: &[PublishedFile]) -> Result<(), LedgerError> {
        self.inner.record_published(files)?;
        if !files.is_empty() {
            *self.lock_last_published() = Some(Instant::now());
            self.remote_answers();
        }
        Ok(())
    }

    fn record_unchanged(&self, path: &Path, meta: &FileMeta) -> Result<(), LedgerError> {
        self.inner.record_unchanged(path, meta)
    }

    fn record_failure(&self, path: &Path, error: &str, attempts: u32) -> Result<(), LedgerError> {
        self.inner.record_failure(path, error, attempts)?;
        // With a single attempt there is no retry span to tell an outage by.
        let ran_out = attempts >= self.max_attempts && !self.retry_span.is_zero();
        let nothing_published_meanwhile = self
            .lock_last_published()
            .is_none_or(|at| at.elapsed() >= self.retry_span);
        if ran_out && nothing_published_meanwhile {
            self.remote_down
                .send_if_modified(|down| !std::mem::replace(down, true));
        }
        Ok(())
    }

    fn forget(&self, path: &Path) -> Result<(), LedgerError> {
        self.inner.forget(path)
    }

    fn set_waiting_for_writer(&self, path: &Path, waiting: bool) -> Result<(), LedgerError> {
        self.inner.set_waiting_for_writer(path, waiting)
    }

    fn for_each_path(&self, f: &mut dyn FnMut(&Path)) -> Result<(), LedgerError> {
        self.inner.for_each_path(f)
    }

    fn for_each_path_under(&self, dir: &Path, f: &mut dyn FnMut(&Path)) -> Result<(), LedgerError> {
        self.inner.for_each_path_under(dir, f)
    }

    fn after_publish_done(&self, path: &Path, removed: bool) -> Result<(), LedgerError> {
        self.inner.after_publish_done(path, removed)
    }

    fn for_each_after_publish(&self, f: &mut dyn FnMut(&Path)) -> Result<(), LedgerError> {
        self.inner.for_each_after_publish(f)
    }

    fn for_each_failed(&self, f: &mut dyn FnMut(&Path)) -> Result<(), LedgerError> {
        self.inner.for_each_failed(f)
    }
}

#[derive(Clone, Debug)]
pub struct RequeueSettings {
    /// `upload.retry_failed_after`: the first delay, and the delay after a round that found
    /// nothing failed.
    pub after: Duration,
    /// How often to probe the remote during an outage: the upload retry schedule, without its
    /// attempt limit.
    pub probe: RetryPolicy,
}

impl RequeueSettings {
    fn backoff(&self) -> RetryPolicy {
        RetryPolicy {
            initial: self.after,
            max: self.after.saturating_mul(10),
            max_attempts: u32::MAX,
        }
    }

    fn probe_until_it_answers(&self) -> RetryPolicy {
        RetryPolicy::forever(self.probe.initial, self.probe.max)
    }
}

pub struct Requeue {
    settings: RequeueSettings,
    signals: Arc<FailureSignals>,
    ledger: LedgerHandle,
    remote: Arc<dyn Remote>,
    debouncer: Addr<Debouncer>,
    delays: Box<dyn Iterator<Item = Duration>>,
    next_round: Option<SpawnHandle>,
    running: bool,
    /// Asked for while a round ran: one more follows it at once.
    again: bool,
    /// During an outage: the probe running.
    probing: Option<SpawnHandle>,
    stats: Arc<ActorStats>,
}

impl Requeue {
    pub fn new(
        settings: RequeueSettings,
        signals: Arc<FailureSignals>,
        remote: Arc<dyn Remote>,
        debouncer: Addr<Debouncer>,
        stats: Arc<ActorStats>,
    ) -> Self {
        let delays = Box::new(settings.backoff().delays());
        Requeue {
            settings,
            ledger: LedgerHandle::new(signals.clone(), stats.clone()),
            signals,
            remote,
            debouncer,
            delays,
            next_round: None,
            running: false,
            again: false,
            probing: None,
            stats,
        }
    }

    fn reset_backoff(&mut self) {
        self.delays = Box::new(self.settings.backoff().delays());
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.next_round.take() {
            ctx.cancel_future(handle);
        }
        let delay = self.delays.next().unwrap_or(self.settings.after);
        self.next_round = Some(ctx.run_later(delay, |act, ctx| {
            act.next_round = None;
            act.round(ctx);
        }));
    }

    /// Lists the failed entries (off the actor thread) and hands them to the debouncer, waiting
    /// for it to take each batch.
    fn round(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            self.again = true;
            return;
        }
        self.running = true;
        if let Some(handle) = self.next_round.take() {
            ctx.cancel_future(handle);
        }
        let (ledger, debouncer) = (self.ledger.clone(), self.debouncer.clone());
        let work = async move {
            let found = ledger.failed_paths().await.unwrap_or_else(|e| {
                tracing::warn!("{e}");
                Vec::new()
            });
            let count = found.len();
            if count > 0 {
                tracing::info!(
                    files = count,
                    "retrying files whose retries ran out (upload.retry_failed_after)"
                );
            }
            let mut found = found.into_iter().peekable();
            while found.peek().is_some() {
                let batch: Vec<PathBuf> = found.by_ref().take(BATCH).collect();
                if debouncer.send(PathsTouched(batch)).await.is_err() {
                    break; // shutting down
                }
            }
            count
        };
        ctx.spawn(work.into_actor(self).map(|count, act, ctx| {
            act.running = false;
            if count == 0 {
                act.reset_backoff();
            }
            if std::mem::take(&mut act.again) {
                act.round(ctx);
            } else {
                act.schedule(ctx);
            }
        }));
    }

    /// Asks the remote's `check`, after one probe delay and then on the probe schedule, until
    /// it answers; the answer ends the outage. A publish that ends it first cancels the probe.
    fn start_probing(&mut self, ctx: &mut Context<Self>) {
        let (remote, stats) = (self.remote.clone(), self.stats.clone());
        let policy = self.settings.probe_until_it_answers();
        let probe = async move {
            tokio::time::sleep(policy.initial).await;
            retry(
                &policy,
                || remote.check(),
                |_| true,
                report(
                    &stats,
                    "the remote does not answer yet",
                    Path::new(""),
                    Cadence::Quiet,
                ),
            )
            .await
        };
        let handle = ctx.spawn(probe.into_actor(self).map(|done, act, _| {
            act.probing = None;
            if done.result.is_ok() {
                act.signals.remote_answers();
            }
        }));
        self.probing = Some(handle);
    }
}

impl Actor for Requeue {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let outages = futures_util::stream::unfold(
            self.signals.remote_down.subscribe(),
            |mut rx| async move {
                rx.changed().await.ok()?;
                let down = *rx.borrow_and_update();
                Some((down, rx))
            },
        )
        .boxed();
        ctx.add_stream(outages);
        // The start-up scan already reports failed entries; the first round waits a full delay.
        self.schedule(ctx);
    }
}

/// An outage began (`true`) or ended (`false`).
impl StreamHandler<bool> for Requeue {
    fn handle(&mut self, down: bool, ctx: &mut Self::Context) {
        if down {
            if self.probing.is_none() {
                tracing::warn!("files ran out of retries while nothing could be published: the remote looks down; probing it until it answers");
                self.start_probing(ctx);
            }
        } else {
            if let Some(probe) = self.probing.take() {
                ctx.cancel_future(probe);
            }
            tracing::info!(
                "the remote answers again; retrying the files whose retries ran out now"
            );
            self.reset_backoff();
            self.round(ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::fake::FullDisk;

    fn published() -> Vec<PublishedFile> {
        vec![PublishedFile {
            path: PathBuf::from("ok.txt"),
            meta: FileMeta {
                size: 1,
                mtime_ns: 1,
                ctime_ns: 1,
                inode: 1,
            },
            sha256: [0; 32],
            remote_ref: String::new(),
            after_publish: false,
        }]
    }

    #[test]
    fn an_outage_is_files_running_out_while_nothing_is_published_and_a_publish_ends_it() {
        let retry = RetryPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(20),
            max_attempts: 3,
        };
        let signals = FailureSignals::new(Arc::new(FullDisk::default()), &retry);
        let mut outages = signals.remote_down.subscribe();
        // The outage signal went up and came down again since the last look.
        let mut signalled = || {
            let changed = outages.has_changed().unwrap();
            outages.mark_unchanged();
            changed
        };

        // Ran out while nothing was published at all: an outage.
        signals.record_failure(Path::new("a"), "down", 3).unwrap();
        assert!(*signals.remote_down.borrow());
        signals.record_published(&published()).unwrap();
        assert!(signalled());

        // Ran out while another file was published moments ago: that file's own trouble.
        signals
            .record_failure(Path::new("b"), "refused", 3)
            .unwrap();
        signals.record_published(&published()).unwrap();
        assert!(!signalled());

        // Not out of attempts (a permanent error on the first try): no outage either.
        std::thread::sleep(Duration::from_millis(60));
        signals.record_failure(Path::new("c"), "denied", 1).unwrap();
        signals.record_published(&published()).unwrap();
        assert!(!signalled());

        // Nothing published for longer than the retry span before running out: an outage.
        std::thread::sleep(Duration::from_millis(60));
        signals.record_failure(Path::new("d"), "down", 3).unwrap();
        signals.record_published(&published()).unwrap();
        assert!(signalled());
    }

    #[test]
    fn backoff_starts_at_the_setting_and_stays_within_ten_times_it() {
        let settings = RequeueSettings {
            after: Duration::from_millis(100),
            probe: RetryPolicy {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(20),
                max_attempts: 5,
            },
        };
        let delays: Vec<_> = settings.backoff().delays().take(20).collect();
        assert_eq!(delays.len(), 20, "rounds never stop");
        assert!(delays[0] >= Duration::from_millis(100));
        // Jitter adds up to one more delay's worth on top of the cap.
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
    }
}
