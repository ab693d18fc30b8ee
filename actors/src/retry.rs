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
        ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build()
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
    }
}
