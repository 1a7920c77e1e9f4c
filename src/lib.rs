//! eligd answers "is this person covered today, and for what?" for a national social
//! insurance organisation, in microseconds, from an in-memory index of every member
//! (docs/domain.md for the domain, docs/architecture.md for the design).
//!
//! The map, following a request:
//! - [`http`] accepts connections (optional TLS, a bounded set with timeouts) and routes each
//!   request to its channel in [`channels`]: the JSON API, FHIR R4, USSD, SMS. A channel
//!   decodes the request and hands it to the [`inquiry`] pipeline: authenticate the client
//!   key ([`auth`]), rate limit ([`limits`]), parse ([`national_id`]), look up ([`index`]),
//!   evaluate ([`eligibility`]), give a [`tracking`] code, record it in the [`audit`] log,
//!   count it ([`metrics`]); the channel then renders the decision. [`app`] is the state they
//!   share.
//! - The index is filled from a [`index::snapshot`] file, a JSON Lines [`import`] of
//!   [`member`] records, the records database ([`records`]), or the synthetic population of
//!   [`demo`]; the change [`feed`] keeps it current from the Redis stream that [`relay`]
//!   fills from PostgreSQL's outbox.
//! - [`commands`] are the bodies of the CLI subcommands of [`cli`].
#![deny(unsafe_code)]

// The core crate's modules, under the names the server has always used for them.
pub use eligd_core::{
    dates, demo, eligibility, import, index, jalali, member, national_id, redact,
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
pub mod metrics;
pub mod pg;
pub mod records;
pub mod redis;
pub mod relay;
pub mod shutdown;
pub mod status_page;
pub mod tls_client;
pub mod tracking;
pub mod web;
