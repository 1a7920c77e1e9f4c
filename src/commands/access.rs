//! What `serve` sets up before it listens, from its flags: who may ask (`--api-keys`), what is
//! kept about it (`--audit-log` with `ELIGD_AUDIT_KEY`), and how the listener treats
//! connections (`--tls-cert`/`--tls-key`, `--max-connections`, the timeouts). Every problem
//! is one clear error at start, and SIGHUP re-reads the keys and the certificate.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::app::AppState;
use crate::audit::{AuditCounters, AuditKey, AuditLog, AuditOptions};
use crate::auth::KeyStore;
use crate::cli::ServeArgs;
use crate::http::{connection_metrics, tls::Tls, ListenerConfig};

/// The shared state, with keys and audit log when configured.
pub fn state(args: &ServeArgs) -> anyhow::Result<AppState> {
    if args.api_keys.is_none() && !args.listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {}: without client keys (--api-keys) nobody is authenticated, so the \
             service only listens on a loopback address",
            args.listen
        );
    }
    let mut state = AppState::new(args.node_id)?
        .with_phone_requests_per_minute(args.phone_requests_per_minute)
        .with_public(
            (!args.no_public_page).then(|| args.trusted_proxies.clone()),
            args.public_requests_per_minute,
        )
        .with_address_limits(
            crate::app::Addresses {
                trusted: args.trusted_proxies.clone(),
                ipv6_prefix: args.ipv6_prefix,
            },
            args.unauthenticated_requests_per_minute,
            Some(args.public_requests_per_second).filter(|r| *r > 0),
        );
    if let Some(path) = &args.api_keys {
        let keys = KeyStore::open(path, &state.metrics).context("--api-keys")?;
        tracing::info!(keys = keys.keys().len(), path = %path.display(), "client keys loaded; every inquiry needs one");
        state = state.with_keys(keys);
    }
    if let Some(path) = &args.audit_log {
        let key = AuditKey::from_env().context("--audit-log")?;
        let key_id = key.id();
        if args.audit_keep_bytes < args.audit_max_bytes.saturating_mul(2) {
            bail!(
                "--audit-keep-bytes ({}) must be at least twice --audit-max-bytes ({}): the log \
                 and one rotated file must fit",
                args.audit_keep_bytes,
                args.audit_max_bytes
            );
        }
        let access = &state.metrics.access;
        let counters = AuditCounters {
            written: access.audit_records.clone(),
            write_errors: access.audit_write_errors.clone(),
            refusals: access.audit_refusals.clone(),
            bytes: access.audit_bytes.clone(),
            volume_available: access.audit_volume_available_bytes.clone(),
            volume_size: access.audit_volume_size_bytes.clone(),
            files_removed: access.audit_files_removed.clone(),
        };
        let options = AuditOptions {
            max_bytes: args.audit_max_bytes,
            keep_bytes: args.audit_keep_bytes,
            fsync_every: Duration::from_millis(args.audit_fsync_ms),
            group_readable: args.audit_group_readable,
        };
        let audit = AuditLog::start(path, options, key, counters)
            .with_context(|| format!("--audit-log {}", path.display()))?;
        tracing::info!(path = %path.display(), subject_key = %key_id, "audit log open; every inquiry is recorded");
        state = state.with_audit(audit);
    } else if args.api_keys.is_some() {
        tracing::warn!("client keys without --audit-log: inquiries are not audited");
    }
    Ok(state)
}

/// How the listener treats connections.
pub fn listener(args: &ServeArgs, state: &AppState) -> anyhow::Result<ListenerConfig> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(Tls::open(cert, key)?)),
        _ => None,
    };
    Ok(ListenerConfig {
        tls,
        max_connections: args.max_connections as usize,
        header_read_timeout: Duration::from_secs(args.header_read_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        write_timeout: Duration::from_secs(args.write_timeout),
        metrics: connection_metrics(state),
    })
}

/// Re-reads the keys and the certificate on every SIGHUP.
pub fn reload_on_hangup(state: Arc<AppState>, tls: Option<Arc<Tls>>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; keys and certificate are read at start only");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading client keys and the TLS certificate");
            state.reload_keys();
            if let Some(tls) = &tls {
                match tls.reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded"),
                    Err(e) => {
                        state.metrics.access.tls_reload_failures.inc();
                        tracing::error!(error = %e, "TLS certificate NOT reloaded; the one in force stays");
                    }
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (state, tls);
}

/// Writes every queued audit record before the process exits (after the last answer).
pub fn close_audit(state: &AppState) {
    if let Some(audit) = state.audit() {
        let depth = audit.queue_depth();
        if audit.close(Duration::from_secs(30)) {
            tracing::info!(flushed = depth, "audit log closed; every record written");
        } else {
            // Every answer waited for its record, so what is left here is records whose
            // answers were never sent, and refusal counts.
            tracing::error!(
                left = audit.queue_depth(),
                refusals_left = audit.refusals_pending(),
                "audit log could not be written before the exit; records were lost"
            );
        }
    }
}
