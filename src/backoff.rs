//! The one backoff: exponential delays from `backon` (no jitter), either as an iterator for a
//! loop that retries in place, or as the delay after the n-th consecutive failure for state that
//! keeps its own count (a requeue, a relist timer).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Never more doublings than this: past it every delay is the maximum anyway.
const MAX_DOUBLINGS: u32 = 32;

/// `min`, doubling each time, up to `max` (a `min` above `max` is taken as `max`); endless.
pub fn exponential(min: Duration, max: Duration) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(min.min(max))
        .with_max_delay(max)
        .with_factor(2.0)
        .without_max_times()
        .build()
}

/// The delay after the `failures`-th consecutive failure (1 → `min`), as [`exponential`] gives it.
pub fn after(failures: u32, min: Duration, max: Duration) -> Duration {
    let n = failures.clamp(1, MAX_DOUBLINGS) as usize;
    exponential(min, max).nth(n - 1).unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_min_to_max() {
        let ms = Duration::from_millis;
        let got: Vec<Duration> = (1..=7).map(|n| after(n, ms(500), ms(8000))).collect();
        assert_eq!(
            got,
            [
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(8000),
                ms(8000)
            ]
        );
        assert_eq!(after(0, ms(500), ms(8000)), ms(500));
        assert_eq!(after(u32::MAX, ms(500), ms(8000)), ms(8000));
        assert_eq!(after(1, ms(200), ms(100)), ms(100), "min above max");
        let first: Vec<Duration> = exponential(ms(1), ms(200)).take(10).collect();
        assert_eq!(first[..3], [ms(1), ms(2), ms(4)]);
        assert_eq!(first[9], ms(200));
    }
}
