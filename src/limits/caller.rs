//! Per-caller rate limits: one allowance per phone number for USSD and SMS, and per client
//! address for the public page and for requests without a valid key (docs/security.md).
//! Anyone can dial, and national IDs are guessable, so a phone that tries IDs one after
//! another is slowed down to a human pace while every other phone is still answered at once;
//! an address asking without a key gets the same treatment.
//!
//! One limiter serves both text channels: a person is one phone number whether they dial or
//! text. It counts inquiries (requests that carry a national ID to look up, and every SMS,
//! since each SMS reply costs a message); USSD menu and prompt screens reveal nothing and are
//! free. The public page and keyless requests each have a limiter of their own, keyed by
//! address (`client_address`).
//!
//! The limiter is `governor`'s keyed GCRA: one small state per phone number seen recently.
//! Memory stays bounded: every [`SWEEP_EVERY`] checks the states that have refilled
//! completely (indistinguishable from a phone never seen) are dropped, so the map holds at
//! most the phones seen within about one refill period. Phone numbers are never logged or
//! used as metric labels; the key is a number derived from the digits, not the text sent.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::national_id::digit_value;

/// The default: 10 inquiries per phone number per minute, in a burst of up to 10.
pub const DEFAULT_PER_MINUTE: u32 = 10;

/// How many checks pass between two sweeps of refilled states.
pub const SWEEP_EVERY: u64 = 4096;

/// At most this many phone numbers hold a state (about 100 MB; docs/security.md).
pub const MAX_TRACKED: usize = 1_000_000;

/// How many checks pass between two looks at the number of states held.
const FULL_CHECK_EVERY: u64 = 256;

/// At most this many digits of a number make its key (E.164 numbers have at most 15).
const MAX_KEY_DIGITS: usize = 37;

/// A phone number reduced to its digits, held as a number with a leading 1 so that leading
/// zeros still count. Requests without a readable number share the key of no digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallerKey(u128);

impl CallerKey {
    /// Normalises what a gateway sends: digits only (in any of the three digit scripts), and
    /// an Iranian mobile number written `+98 912…`, `0098912…`, `98912…`, `0912…` or `912…`
    /// is the same number.
    pub fn from_phone(phone: &str) -> CallerKey {
        let mut digits = [0u8; MAX_KEY_DIGITS + 4];
        let mut n = 0;
        for d in phone.chars().filter_map(digit_value) {
            if n == digits.len() {
                break;
            }
            digits[n] = d;
            n += 1;
        }
        let mut d = &digits[..n];
        if d.starts_with(&[0, 0]) {
            d = &d[2..]; // the international prefix 00
        }
        if d.len() == 12 && d.starts_with(&[9, 8, 9]) {
            d = &d[2..]; // 98 9xx xxx xxxx
        } else if d.len() == 11 && d.starts_with(&[0, 9]) {
            d = &d[1..]; // 09xx xxx xxxx
        }
        let d = &d[..d.len().min(MAX_KEY_DIGITS)];
        CallerKey(d.iter().fold(1u128, |acc, &x| acc * 10 + u128::from(x)))
    }

    /// A client address as a key (the public endpoint's limiter): IPv4 as its IPv6-mapped
    /// form, so one address has one key whichever way it arrived.
    pub fn from_ip(ip: std::net::IpAddr) -> CallerKey {
        let v6 = match ip {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        CallerKey(u128::from(v6))
    }
}

type Limiter<C> =
    RateLimiter<CallerKey, DashMapStateStore<CallerKey>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The per-phone limiter shared by USSD and SMS.
pub struct CallerLimits<C: Clock = DefaultClock> {
    limiter: Limiter<C>,
    per_minute: NonZeroU32,
    checks: AtomicU64,
    full: AtomicBool,
}

impl CallerLimits<DefaultClock> {
    /// `per_minute` inquiries per phone number per minute, in a burst of as many; 0 is read
    /// as 1 (the CLI refuses 0 before it gets here).
    pub fn per_minute(per_minute: u32) -> CallerLimits {
        CallerLimits::with_clock(per_minute, DefaultClock::default())
    }
}

impl Default for CallerLimits<DefaultClock> {
    fn default() -> Self {
        CallerLimits::per_minute(DEFAULT_PER_MINUTE)
    }
}

impl<C: Clock> CallerLimits<C> {
    /// The same with another clock (tests move a fake one instead of waiting a minute).
    pub fn with_clock(per_minute: u32, clock: C) -> CallerLimits<C> {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(per_minute);
        CallerLimits {
            limiter: RateLimiter::dashmap_with_clock(quota, clock),
            per_minute,
            checks: AtomicU64::new(0),
            full: AtomicBool::new(false),
        }
    }

    /// The configured rate.
    pub fn rate_per_minute(&self) -> u32 {
        self.per_minute.get()
    }

    /// Takes one inquiry from this phone's allowance: `true` when it may be answered,
    /// `false` when the phone must wait. `None` (no number sent) shares one allowance.
    pub fn check(&self, phone: Option<&str>) -> bool {
        self.take(phone).is_ok()
    }

    /// [`CallerLimits::check`], saying how many seconds to wait when refused. When
    /// [`MAX_TRACKED`] numbers hold a state even after a sweep (a spray of distinct numbers
    /// faster than any client key allows), every number waits until the sweep frees room.
    pub fn take(&self, phone: Option<&str>) -> Result<(), u64> {
        self.take_key(CallerKey::from_phone(phone.unwrap_or("")))
    }

    /// [`CallerLimits::take`] for a key already made (a phone's, or a client address's for
    /// the public endpoint, which has a limiter of its own).
    pub fn take_key(&self, key: CallerKey) -> Result<(), u64> {
        let n = self.checks.fetch_add(1, Ordering::Relaxed);
        if n % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        if n.is_multiple_of(FULL_CHECK_EVERY) {
            let mut full = self.limiter.len() >= MAX_TRACKED;
            if full {
                self.sweep();
                full = self.limiter.len() >= MAX_TRACKED;
            }
            self.full.store(full, Ordering::Relaxed);
        }
        if self.full.load(Ordering::Relaxed) {
            return Err(60 / u64::from(self.per_minute.get()).max(1));
        }
        self.limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Drops the states of phones whose allowance has refilled completely.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// How many phone numbers have a state held now.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    #[test]
    fn iranian_mobile_numbers_in_every_spelling_are_one_key() {
        let key = CallerKey::from_phone("9121234567");
        for spelling in [
            "+989121234567",
            "+98 912 123 4567",
            "00989121234567",
            "989121234567",
            "09121234567",
            "0912-123-4567",
            "۰۹۱۲۱۲۳۴۵۶۷",
            "٠٩١٢١٢٣٤٥٦٧",
        ] {
            assert_eq!(CallerKey::from_phone(spelling), key, "{spelling}");
        }
        assert_ne!(CallerKey::from_phone("09121234568"), key);
        // Leading zeros of other numbers still count.
        assert_ne!(CallerKey::from_phone("0123"), CallerKey::from_phone("123"));
        // No digits at all: the shared key.
        assert_eq!(CallerKey::from_phone(""), CallerKey::from_phone("abc"));
        // Absurdly long numbers do not overflow.
        let _ = CallerKey::from_phone(&"9".repeat(10_000));
    }

    #[test]
    fn a_phone_gets_its_burst_then_waits_while_others_are_answered() {
        let clock = FakeRelativeClock::default();
        let limits = CallerLimits::with_clock(10, clock.clone());
        for i in 0..10 {
            assert!(limits.check(Some("09121234567")), "inquiry {i}");
        }
        assert!(!limits.check(Some("+989121234567")));
        assert!(limits.check(Some("09351234567")));
        // One inquiry back every six seconds.
        clock.advance(Duration::from_secs(6));
        assert!(limits.check(Some("09121234567")));
        assert!(!limits.check(Some("09121234567")));
        clock.advance(Duration::from_secs(60));
        for _ in 0..10 {
            assert!(limits.check(Some("09121234567")));
        }
    }

    #[test]
    fn the_rate_is_configurable_and_never_zero() {
        let clock = FakeRelativeClock::default();
        let limits = CallerLimits::with_clock(2, clock.clone());
        assert_eq!(limits.rate_per_minute(), 2);
        assert!(limits.check(None));
        assert!(limits.check(None));
        assert!(!limits.check(None));
        let limits = CallerLimits::with_clock(0, clock);
        assert_eq!(limits.rate_per_minute(), 1);
        assert!(limits.check(Some("1")));
        assert!(!limits.check(Some("1")));
        assert_eq!(
            CallerLimits::default().rate_per_minute(),
            DEFAULT_PER_MINUTE
        );
    }

    #[test]
    fn memory_is_bounded_by_the_phones_seen_within_a_minute() {
        let clock = FakeRelativeClock::default();
        let limits = CallerLimits::with_clock(10, clock.clone());
        let n = SWEEP_EVERY * 3;
        for i in 0..n {
            limits.check(Some(&format!("0912{i:07}")));
        }
        // Within the minute a sweep keeps them: each still owes part of its allowance.
        assert!(limits.tracked() as u64 >= n - SWEEP_EVERY);
        clock.advance(Duration::from_secs(61));
        // The next sweep (every SWEEP_EVERY checks) drops every refilled state.
        for _ in 0..SWEEP_EVERY {
            limits.check(Some("09120000000"));
        }
        assert!(limits.tracked() <= 2, "{} states held", limits.tracked());
    }
}
