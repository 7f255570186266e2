//! Numbers from the API, a pod annotation or a flag, clamped on ingest. Every duration nodeward
//! derives from them lies in `[0, a year]`, so no time arithmetic overflows and no CRI or HTTP
//! timeout is "unrealistically large" (tonic panics on those). Release builds abort on a panic,
//! so a panic caused by a stored object would be a crash loop.

use std::time::Duration;

/// The longest duration nodeward honours from any input: a year (the API sets no bound).
pub const MAX_SECONDS: i64 = 365 * 24 * 3600;

/// `n` seconds, negative as zero, at most [`MAX_SECONDS`].
pub fn seconds(n: i64) -> Duration {
    Duration::from_secs(n.clamp(0, MAX_SECONDS).unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_to_zero_and_a_year() {
        let year = Duration::from_secs(MAX_SECONDS as u64);
        for (n, want) in [
            (i64::MIN, Duration::ZERO),
            (-1, Duration::ZERO),
            (0, Duration::ZERO),
            (17, Duration::from_secs(17)),
            (MAX_SECONDS, year),
            (i64::MAX, year),
        ] {
            assert_eq!(seconds(n), want, "{n}");
        }
        // Anything clamped can be added to now without overflow.
        let _ = std::time::SystemTime::now() + seconds(i64::MAX);
        let _ = std::time::Instant::now() + seconds(i64::MAX);
    }
}
