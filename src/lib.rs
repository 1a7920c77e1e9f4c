//! eligd answers "is this person covered today, and for what?" for a national social
//! insurance organisation, in microseconds, from an in-memory index of every member.
//!
//! The map, following a request:
//! - [`http`] reads the request and routes it; [`national_id`] parses the ID from any digit
//!   script; [`index`] finds the member (base built once, overlay of later changes, both
//!   keyed by ID); [`inquiry`] finds the main insured of a dependent and applies the pure
//!   rules of [`eligibility`]; the answer is rendered per channel and carries a code from
//!   [`tracking`]; [`metrics`] counts it.
//! - The index is filled from a [`index::snapshot`] file, a JSON Lines [`import`] of
//!   [`member`] records, or the synthetic population of [`demo`].
//! - [`commands`] are the bodies of the CLI subcommands of [`cli`].
#![deny(unsafe_code)]

pub mod app;
pub mod audit;
pub mod auth;
pub mod channels;
pub mod cli;
pub mod commands;
pub mod dates;
pub mod demo;
pub mod eligibility;
pub mod feed;
pub mod http;
pub mod import;
pub mod index;
pub mod inquiry;
pub mod jalali;
pub mod limits;
pub mod member;
pub mod metrics;
pub mod national_id;
pub mod records;
pub mod redact;
pub mod relay;
pub mod shutdown;
pub mod tracking;
pub mod view;
