//! The change feed: every replica follows the Redis stream of member changes (docs/records.md)
//! and applies them to its index within milliseconds.
//!
//! One task with its own connection reads with plain `XREAD BLOCK` ([`stream`]), checks
//! before applying a batch that the stream still holds everything after our position
//! ([`continuity`]), turns entries into changes ([`event`]) and applies them
//! version-guarded. What readiness and the metrics say about it lives in [`status`]; a gap
//! is repaired from a newer snapshot (`resync.rs`).

mod config;
mod consumer;
pub mod continuity;
pub mod event;
pub mod metrics;
pub mod native;
mod resync;
pub mod status;
pub mod stream;

pub use config::{Feed, FeedConfig};
pub use consumer::run;
