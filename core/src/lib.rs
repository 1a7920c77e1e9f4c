//! eligd's core: what an eligibility answer is made of, without any of the service around it.
//!
//! - [`national_id`]: the 10-digit national ID (code melli), parsed from any digits people
//!   type, and its check digit.
//! - [`dates`] and [`jalali`]: calendar days in Tehran, the clock, and the Solar Hijri
//!   calendar people read.
//! - [`member`]: a member's record as the records database describes it, and its packed form.
//! - [`eligibility`]: the rules that turn a record and a day into an outcome.
//! - [`index`]: the in-memory index of every member (a memory-mapped rkyv snapshot plus an
//!   overlay of changes), its snapshot files and their directory, and compaction.
//! - [`sizing`]: the memory a replica and a build need, per member.
//! - [`import`] (JSON Lines records into an index), [`demo`] (the deterministic synthetic
//!   population), [`redact`] (error texts without national IDs).
//!
//! It has no async runtime, no HTTP, no Redis or PostgreSQL client: the server crate (`eligd`)
//! builds on it, and the compiler keeps that layering (docs/architecture.md, "Crates").
#![deny(unsafe_code)]

pub mod dates;
pub mod demo;
pub mod eligibility;
pub mod import;
pub mod index;
pub mod jalali;
pub mod member;
pub mod national_id;
pub mod redact;
pub mod sizing;
