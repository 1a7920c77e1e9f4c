//! All integration tests in one binary (one link, shared helpers).

mod cli;
mod docs;
mod http_api;
mod http_bad_input;
mod startup;
mod support;
