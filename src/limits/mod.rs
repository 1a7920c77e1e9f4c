//! Rate limits: a token bucket per client key ([`key`]), and one per caller ([`caller`]: a
//! phone number for USSD and SMS, a client address for the public page and keyless requests).
//! The inquiry pipeline takes from the key's bucket first, then from the caller's; a refusal
//! is answered 429 (or the text channels' polite message), never queued.

pub mod caller;
pub mod key;

pub use caller::{CallerKey, CallerLimits};
pub use key::{Allowance, KeyBucket, Taken};
