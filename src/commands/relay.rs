//! `eligd relay`: check the settings, open the operations port, and relay until SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::cli::RelayArgs;
use crate::pg::PgTarget;
use crate::relay::metrics::RelayMetrics;
use crate::relay::{self, RelayConfig, RelayStatus};

pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    // Neither URL is ever echoed: both may hold a password.
    let postgres = PgTarget::parse(&args.postgres_url, "--postgres-url")?.with_password(
        crate::secret::Secret::from_flags(
            None,
            "--postgres-password-file",
            args.postgres_password_file.as_deref(),
        )?,
    );
    let redis = args.redis.target(args.redis_url.as_deref())?;
    let min_retain = 2 * args.compact_interval;
    if args.retain_hours > 0 && args.retain_hours.saturating_mul(3600) < min_retain {
        anyhow::bail!(
            "--retain-hours {} keeps less than two compaction intervals ({} s with --compact-interval {}): \
             a replica restarting from its newest snapshot could find its position trimmed away",
            args.retain_hours,
            min_retain,
            args.compact_interval
        );
    }
    let listener = crate::http::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "relay: operations endpoints listening");
    let metrics = Arc::new(RelayMetrics::new());
    let status = Arc::new(RelayStatus::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        super::serve::termination_signal().await;
        let _ = stop_tx.send(true);
    });
    let ops = tokio::spawn(relay::serve_ops(
        listener,
        Arc::clone(&metrics),
        Arc::clone(&status),
        crate::shutdown::stopped(stop_rx.clone()),
    ));
    let config = RelayConfig {
        stream: args.stream,
        batch: args.batch,
        poll_interval_ms: args.poll_interval_ms,
        retain_hours: args.retain_hours,
        wait_replicas: args.wait_replicas,
        wait_timeout_ms: args.wait_timeout_ms,
        outbox_keep_secs: args.outbox_keep_secs,
    };
    relay::run(config, postgres, redis, metrics, status, stop_rx).await;
    tracing::info!("relay: stopped");
    ops.await.context("the operations server failed")?;
    Ok(())
}
