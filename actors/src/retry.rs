//! The retry policy shared by the upload slots and the directory linker: exponential backoff
//! with jitter, bounded by a number of attempts. Owns only the schedule; deciding whether an
//! error is worth retrying belongs to [`crate::remote::RemoteError`].

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Total attempts, the first one included.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The delays to wait between attempts: `max_attempts - 1` of them.
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        self.schedule().with_jitter().build()
    }

    /// The least time all the delays take together: jitter only ever adds to a delay. A file
    /// that ran out of attempts was failing for at least this long.
    pub fn least_total(&self) -> Duration {
        self.schedule().build().sum()
    }

    fn schedule(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
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
    }
}
