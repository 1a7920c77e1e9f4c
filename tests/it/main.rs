//! All integration tests in one binary (one link, shared helpers).

mod access;
mod audit;
mod availability;
mod cli;
mod debezium;
mod docs;
mod feed;
mod feed_faults;
mod fhir;
mod http_api;
mod http_bad_input;
mod integrity;
mod integrity_records;
mod leaks;
mod listener;
mod pg_tls;
mod records;
mod records_faults;
mod records_random;
mod records_rules;
mod redis_server;
mod redis_tls;
mod sentinel;
mod startup;
mod support;
mod ussd_sms;
