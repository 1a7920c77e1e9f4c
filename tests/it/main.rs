//! All integration tests in one binary (one link, shared helpers).

mod access;
mod audit;
mod availability;
mod cli;
mod compose;
mod container;
mod debezium;
mod docs;
mod epochs;
mod feed;
mod feed_faults;
mod fencing;
mod fhir;
mod floods;
mod http_api;
mod http_bad_input;
mod integrity;
mod integrity_records;
mod keys_files;
mod layers;
mod leaks;
mod listener;
mod logs;
mod memory_cap;
mod no_echo;
mod pg_tls;
mod prometheus;
mod public;
mod records;
mod records_failover;
mod records_faults;
mod records_proxy;
mod records_random;
mod records_rules;
mod redis_server;
mod redis_tls;
mod relay_scripts;
mod scale_out;
mod secrets;
mod sentinel;
mod silence;
mod sockets;
mod startup;
mod status_page;
mod support;
mod ussd_sms;
mod web_page;

/// Tests that flood the machine or hold a latency budget take this, so that no two of them
/// run at once on a 2-core machine (one's flood is another's slow answer).
pub(crate) fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}
