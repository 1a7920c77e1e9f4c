//! One token bucket per client key: `rate` inquiries per second, up to `burst` at once
//! (`keys add --rate`, `--burst` defaulting to the rate). A batch of N national IDs takes N
//! tokens at once. `governor`'s GCRA holds the bucket in one atomic word, so taking from it
//! never locks, and its state snapshot gives what the `RateLimit` headers report.
//!
//! Buckets live as long as their key is configured (a reload keeps the bucket of a key whose
//! rate and burst did not change), so their number is bounded by the keys file: an unknown
//! key is refused before it reaches any bucket. The keys of one rotation (`keys rotate`: the
//! old key during its overlap and its successor) hold the same bucket (`auth::Keys`), so a
//! rotation never doubles a client's rate.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// A key's bucket.
pub struct KeyBucket {
    limiter: Limiter,
    rate: NonZeroU32,
    burst: NonZeroU32,
}

/// What the `RateLimit` headers say after a request: the burst, the tokens left, and the
/// seconds until the bucket is full again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    pub limit: u32,
    pub remaining: u32,
    pub reset_secs: u64,
    /// The bucket's refill rate per second (for `RateLimit-Policy`).
    pub rate: u32,
}

/// The result of taking tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    Allowed(Allowance),
    /// Not now: retry after this many seconds (at least 1).
    Refused {
        allowance: Allowance,
        retry_after_secs: u64,
    },
    /// Never: the request costs more than the bucket holds.
    TooLarge {
        allowance: Allowance,
    },
}

impl KeyBucket {
    /// A full bucket; 0 is read as 1 (the keys file refuses 0 before it gets here).
    pub fn new(rate: u32, burst: u32) -> KeyBucket {
        let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(rate).allow_burst(burst);
        KeyBucket {
            limiter: RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>(),
            rate,
            burst,
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate.get()
    }

    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    fn allowance(&self, remaining: u32) -> Allowance {
        let missing = u64::from(self.burst.get().saturating_sub(remaining));
        Allowance {
            limit: self.burst.get(),
            remaining,
            reset_secs: missing.div_ceil(u64::from(self.rate.get())),
            rate: self.rate.get(),
        }
    }

    /// Takes `cost` tokens (at least 1), all or none.
    pub fn take(&self, cost: u32) -> Taken {
        let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_n(cost) {
            Ok(Ok(snapshot)) => Taken::Allowed(self.allowance(snapshot.remaining_burst_capacity())),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Taken::Refused {
                    allowance: self.allowance(0),
                    retry_after_secs: whole_seconds(wait).max(1),
                }
            }
            Err(_) => Taken::TooLarge {
                allowance: self.allowance(0),
            },
        }
    }
}

fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_refuses_with_a_wait() {
        let bucket = KeyBucket::new(2, 5);
        for left in (0..5).rev() {
            match bucket.take(1) {
                Taken::Allowed(a) => {
                    assert_eq!((a.limit, a.remaining, a.rate), (5, left, 2));
                    assert_eq!(a.reset_secs, u64::from(5 - left).div_ceil(2));
                }
                other => panic!("{other:?}"),
            }
        }
        match bucket.take(1) {
            Taken::Refused {
                retry_after_secs,
                allowance,
            } => {
                assert_eq!(retry_after_secs, 1);
                assert_eq!(allowance.remaining, 0);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_batch_takes_its_size_all_or_nothing() {
        let bucket = KeyBucket::new(1, 10);
        assert!(matches!(bucket.take(7), Taken::Allowed(a) if a.remaining == 3));
        assert!(matches!(bucket.take(4), Taken::Refused { .. }));
        assert!(matches!(bucket.take(3), Taken::Allowed(a) if a.remaining == 0));
        assert!(matches!(bucket.take(11), Taken::TooLarge { .. }));
    }
}
