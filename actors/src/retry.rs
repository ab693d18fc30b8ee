//! The one retry helper of the pipeline: [`retry`] runs an operation again after a failure, on
//! an exponential schedule with jitter (backon's), until it works, fails in a way not worth
//! retrying, or runs out of attempts, and reports every retry through the caller's `report`
//! (which emits [`crate::events::RetryScheduled`]: see [`report`]). The upload slots, the
//! linker's publishes and deletes, the snapshot copier, the ledger's writes
//! ([`crate::ledger::LedgerHandle`]) and the requeue's outage probe all retry through it.
//!
//! Owns only the schedule and the loop; deciding whether an error is worth retrying belongs to
//! the caller (for remotes, [`crate::remote::RemoteError::is_transient`]).

use std::fmt::Display;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

use crate::events::{Cadence, InternalEvent, RetryScheduled};
use crate::stats::ActorStats;

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Total attempts, the first one included; `u32::MAX` retries until it works.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// A schedule that never gives up: for what must not be dropped (a ledger write) or what
    /// waits for something outside (a writer closing a file, room in the snapshot area).
    pub const fn forever(initial: Duration, max: Duration) -> Self {
        RetryPolicy {
            initial,
            max,
            max_attempts: u32::MAX,
        }
    }

    /// The delays to wait between attempts: `max_attempts - 1` of them.
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        self.schedule().with_jitter().build()
    }

    /// The least time all the delays take together: jitter only ever adds to a delay. A file
    /// that ran out of attempts was failing for at least this long.
    pub fn least_total(&self) -> Duration {
        self.schedule().build().sum()
    }

    /// The delay after the `retry`-th failure (from 1), without jitter: for a caller whose delay
    /// depends on the kind of error (see [`retry_adjusted`]).
    pub fn delay_after(&self, retry: u32) -> Duration {
        RetryPolicy::forever(self.initial, self.max)
            .schedule()
            .build()
            .nth(retry.saturating_sub(1) as usize)
            .unwrap_or(self.max)
    }

    fn schedule(&self) -> ExponentialBuilder {
        let builder = ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max);
        if self.max_attempts == u32::MAX {
            builder.without_max_times()
        } else {
            builder.with_max_times(self.max_attempts.saturating_sub(1) as usize)
        }
    }
}

/// What [`retry`] ended with, and after how many attempts (the first one included).
#[derive(Debug)]
pub struct Retried<T, E> {
    pub result: Result<T, E>,
    pub attempts: u32,
}

/// Runs `op` until it succeeds, fails with an error `retryable` refuses, or `policy`'s attempts
/// run out. Before each retry, `report(error, attempt, delay)` is called with the attempt that
/// failed (from 1); give it [`report`] or a closure that emits [`RetryScheduled`].
pub async fn retry<T, E, Fut>(
    policy: &RetryPolicy,
    op: impl FnMut() -> Fut,
    retryable: impl FnMut(&E) -> bool,
    report: impl FnMut(&E, u32, Duration),
) -> Retried<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    retry_adjusted(policy, op, retryable, |_, _, delay| delay, report).await
}

/// [`retry`], with the delay chosen per error: `delay(error, attempt, scheduled)` returns the
/// delay to wait instead of the `scheduled` one (the snapshot copier waits differently for a
/// writer than for a full snapshot area).
pub async fn retry_adjusted<T, E, Fut>(
    policy: &RetryPolicy,
    mut op: impl FnMut() -> Fut,
    retryable: impl FnMut(&E) -> bool,
    mut delay: impl FnMut(&E, u32, Duration) -> Duration,
    mut report: impl FnMut(&E, u32, Duration),
) -> Retried<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    // Atomic rather than a Cell so that the future stays `Send` when `op`'s is.
    let attempts = AtomicU32::new(0);
    let result = (|| {
        attempts.fetch_add(1, Ordering::Relaxed);
        op()
    })
    .retry(policy.schedule().with_jitter())
    .when(retryable)
    .adjust(|e, scheduled| scheduled.map(|d| delay(e, attempts.load(Ordering::Relaxed), d)))
    .notify(|e, d| report(e, attempts.load(Ordering::Relaxed), d))
    .await;
    Retried {
        result,
        attempts: attempts.into_inner(),
    }
}

/// The usual `report` for [`retry`]: one [`RetryScheduled`] for `path`, counted on `stats`.
/// `what` starts the log line ("upload failed").
pub fn report<'a, E: Display>(
    stats: &'a ActorStats,
    what: &'a str,
    path: &'a Path,
    cadence: Cadence,
) -> impl FnMut(&E, u32, Duration) + 'a {
    move |error, attempt, delay| {
        RetryScheduled {
            what,
            path,
            attempt,
            delay,
            error,
            cadence,
        }
        .emit(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_bounded_in_number_and_size() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
            max_attempts: 6,
        };
        let delays: Vec<_> = policy.delays().collect();
        assert_eq!(delays.len(), 5);
        // Jitter adds up to one more delay's worth on top of the capped value.
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(80)));
        assert!(delays[0] >= Duration::from_millis(10));
        // 10 + 20 + 40 + 40 + 40 without jitter (backon multiplies in f32).
        let least = policy.least_total();
        assert!(
            least.abs_diff(Duration::from_millis(150)) < Duration::from_millis(1),
            "{least:?}"
        );
        assert!(delays.iter().sum::<Duration>() >= policy.least_total());
        let near =
            |d: Duration, ms: u64| d.abs_diff(Duration::from_millis(ms)) < Duration::from_millis(1);
        assert!(near(policy.delay_after(1), 10));
        assert!(near(policy.delay_after(3), 40));
        assert!(near(policy.delay_after(30), 40));
    }

    fn quick(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
            max_attempts,
        }
    }

    #[tokio::test]
    async fn retries_what_is_retryable_until_the_attempts_run_out_and_reports_each_retry() {
        let stats = ActorStats::new("test");
        let path = Path::new("a.txt");
        let calls = AtomicU32::new(0);
        let failing = || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>("down")
        };
        let done = retry(
            &quick(4),
            failing,
            |_| true,
            report(&stats, "upload failed", path, Cadence::Each),
        )
        .await;
        assert_eq!((done.attempts, calls.load(Ordering::Relaxed)), (4, 4));
        assert_eq!(stats.retries.load(Ordering::Relaxed), 3);

        // Not retryable: one attempt, no retry reported.
        let done = retry(
            &quick(4),
            || async { Err::<(), _>("denied") },
            |_| false,
            report(&stats, "upload failed", path, Cadence::Each),
        )
        .await;
        assert_eq!(done.attempts, 1);
        assert_eq!(stats.retries.load(Ordering::Relaxed), 3);

        // Works on the third attempt of a schedule that never gives up.
        let left = AtomicU32::new(2);
        let done = retry(
            &RetryPolicy::forever(Duration::from_millis(1), Duration::from_millis(2)),
            || async {
                match left.load(Ordering::Relaxed) {
                    0 => Ok(7),
                    n => {
                        left.store(n - 1, Ordering::Relaxed);
                        Err("busy")
                    }
                }
            },
            |_| true,
            report(&stats, "recording failed", path, Cadence::Sparse),
        )
        .await;
        assert_eq!((done.result, done.attempts), (Ok(7), 3));
    }

    #[tokio::test]
    async fn the_delay_can_depend_on_the_error() {
        let mut seen = Vec::new();
        let done = retry_adjusted(
            &quick(3),
            || async { Err::<(), _>("slow") },
            |_| true,
            |_, attempt, _| Duration::from_millis(attempt as u64),
            |_, attempt, delay| seen.push((attempt, delay)),
        )
        .await;
        assert_eq!(done.attempts, 3);
        assert_eq!(
            seen,
            vec![(1, Duration::from_millis(1)), (2, Duration::from_millis(2))]
        );
    }
}
