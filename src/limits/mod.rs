//! Rate limits: a token bucket per client key ([`key`]), and one per phone number for USSD
//! and SMS ([`phone`]). The inquiry pipeline takes from the key's bucket first, then from the
//! phone's; a refusal is answered 429 (or the text channels' polite message), never queued.

pub mod key;
pub mod phone;

pub use key::{Allowance, KeyBucket, Taken};
pub use phone::{PhoneKey, PhoneLimits};
