//! The upload bandwidth limit (`upload.bandwidth_limit`): one token bucket shared by every upload
//! slot, applied to the chunks a slot hands to [`crate::remote::Remote::stage`], so every remote
//! kind is held to the same rate. It does not limit reads of the drop folder (only what is sent
//! is charged) nor the small requests a remote makes besides the content (listings, publishes).
//!
//! The bucket is governor's GCRA: lock-free, and waiting is an async timer, so a slot held back
//! by the limit keeps no thread busy.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// The shared limit. Clone it into every slot; `None` where no limit is set.
#[derive(Clone)]
pub struct Bandwidth {
    limiter: Arc<DefaultDirectRateLimiter>,
    /// Bytes per cell of the bucket. governor's clock has nanosecond steps, so at high rates one
    /// cell per byte would round the interval between cells to nothing: a cell is as many bytes
    /// as keeps the bucket at most about a million cells per second.
    unit: u64,
    /// The largest number of cells one wait may ask for (the bucket's burst).
    burst: u32,
    replenish: std::time::Duration,
}

impl std::fmt::Debug for Bandwidth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bandwidth({} bytes/s)", self.bytes_per_second())
    }
}

impl Bandwidth {
    /// A bucket refilled at `bytes_per_second`; `None` for 0 (unlimited).
    pub fn per_second(bytes_per_second: u64) -> Option<Bandwidth> {
        let unit = (bytes_per_second >> 20).max(1);
        let cells = u32::try_from(bytes_per_second / unit).ok()?;
        let cells = NonZeroU32::new(cells)?;
        // A tenth of a second of traffic: enough to keep a chunk in one wait at usual rates, and
        // small enough that the initial full bucket does not show in a rate measured over seconds.
        let burst = NonZeroU32::new((cells.get() / 10).max(1)).expect("at least 1");
        let quota = Quota::per_second(cells).allow_burst(burst);
        Some(Bandwidth {
            limiter: Arc::new(RateLimiter::direct(quota)),
            unit,
            burst: burst.get(),
            replenish: quota.replenish_interval(),
        })
    }

    /// The rate the bucket really refills at (the configured one, to governor's nanosecond).
    pub fn bytes_per_second(&self) -> u64 {
        let cell = self.replenish.as_nanos().max(1);
        (1_000_000_000u128 * self.unit as u128 / cell) as u64
    }

    /// Waits until `bytes` may be sent. Shared fairly enough between slots: each waits for its
    /// own chunk, a slice of at most one burst at a time.
    pub async fn take(&self, bytes: usize) {
        let mut cells = (bytes as u64).div_ceil(self.unit);
        while cells > 0 {
            let now = cells.min(self.burst as u64) as u32;
            let n = NonZeroU32::new(now).expect("cells > 0");
            // Cannot fail: `now` is at most the burst.
            let _ = self.limiter.until_n_ready(n).await;
            cells -= now as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn zero_is_unlimited() {
        assert!(Bandwidth::per_second(0).is_none());
    }

    #[test]
    fn rates_from_bytes_to_gigabytes_keep_their_value() {
        for rate in [1000u64, 4 << 20, 20 << 20, 10 << 30] {
            let b = Bandwidth::per_second(rate).unwrap();
            let got = b.bytes_per_second() as f64;
            assert!((got / rate as f64 - 1.0).abs() < 0.01, "{rate}: {got}");
        }
    }

    #[test]
    fn waits_hold_the_rate() {
        let b = Bandwidth::per_second(2 << 20).unwrap();
        let start = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            for _ in 0..8 {
                b.take(256 * 1024).await; // 2 MiB in all, burst 0.1 s
            }
        });
        let secs = start.elapsed().as_secs_f64();
        assert!((0.8..1.2).contains(&secs), "{secs}");
    }
}
