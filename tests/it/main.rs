//! All integration tests in one binary (one link, shared helpers).

mod cli;
mod docs;
mod feed;
mod feed_faults;
mod http_api;
mod http_bad_input;
mod redis_server;
mod startup;
mod support;
