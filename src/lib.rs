//! eligd answers "is this person covered today, and for what?" for a national social
//! insurance organisation, in microseconds, from an in-memory index of every member
//! (docs/domain.md for the domain, docs/architecture.md for the design).
//!
//! The core (national IDs, dates, members, the eligibility rules, the index and its
//! snapshots) is its own crate, `eligd-core`, re-exported here under the names the server has
//! always used ([`national_id`], [`dates`], [`jalali`], [`member`], [`eligibility`],
//! [`index`], [`import`], [`demo`], [`redact`]).
//!
//! The map, following a request:
//! - [`http`] accepts connections (optional TLS, a bounded set with timeouts) and routes each
//!   request; an inquiry route runs [`channels::driver`] with its channel's codec in
//!   [`channels`] (the JSON API, FHIR R4, USSD, SMS, the public page). The driver hands what
//!   the codec decoded to the [`inquiry`] pipeline: pay and authenticate ([`auth`], [`limits`],
//!   the client's address from [`client_address`]), look up, evaluate, give a [`tracking`]
//!   code, record it in the [`audit`] log, count it ([`metrics`]); the codec then renders the
//!   decision. [`app`] is the state they share, [`index_slot`] the index it serves from.
//! - The page for people is [`web`]; the operators' page is [`status_page`].
//! - The index is filled from a [`index::snapshot`] file, a JSON Lines [`import`], the records
//!   database ([`records`], through [`pg`] and [`tls_client`]), or the synthetic population of
//!   [`demo`]; the change [`feed`] keeps it current from the Redis stream (the [`redis`]
//!   client) that [`relay`] fills from PostgreSQL's outbox.
//! - [`commands`] are the bodies of the CLI subcommands of [`cli`]; [`shutdown`] is the
//!   signal that ends them.
#![deny(unsafe_code)]

// The core crate's modules, under the names the server has always used for them.
pub use eligd_core::{
    dates, demo, eligibility, import, index, jalali, member, national_id, redact, sizing,
};

pub mod app;
pub mod audit;
pub mod auth;
pub mod channels;
pub mod cli;
pub mod client_address;
pub mod commands;
pub mod feed;
pub mod http;
pub mod index_slot;
pub mod inquiry;
pub mod limits;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod pg;
pub mod progress;
pub mod records;
pub mod redis;
pub mod relay;
pub mod secret;
pub mod shutdown;
pub mod status_page;
pub mod tls_client;
pub mod tracking;
pub mod web;
