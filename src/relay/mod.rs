//! `eligd relay`: moves committed changes from PostgreSQL's outbox (deploy/postgres/schema.sql)
//! to the Redis stream as native change events, so a paid premium reaches every replica a
//! moment after its transaction commits.
//!
//! A batch is read in outbox order, XADDed in one pipelined round trip, and only then removed
//! from the outbox: a crash in between re-sends the batch, which versions make harmless
//! (at-least-once). A `LISTEN eligd_outbox` notification wakes it; it also looks every
//! `--poll-interval-ms`. One relay per database moves rows (an advisory lock); others stand
//! by. Any failure of PostgreSQL or Redis ends the session, and a new one starts with a capped
//! backoff. Trimming keeps `--retain-hours` of entries by ID age.

pub mod epoch;
pub mod metrics;
mod ops;
pub mod outbox;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use self::metrics::{ComponentLabels, RelayMetrics};
use crate::cli::RelayArgs;
use crate::feed::stream::{StreamError, StreamReader};
use crate::index::{FeedPosition, StreamEpoch};
use crate::shutdown::{stopped, Backoff};

pub use ops::serve_ops;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("PostgreSQL: {}", outbox::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis: {0}")]
    Stream(#[from] StreamError),
}

impl RelayError {
    fn component(&self) -> &'static str {
        match self {
            RelayError::Postgres(_) => "postgres",
            RelayError::Redis(_) | RelayError::Stream(_) => "redis",
        }
    }
}

/// What `/readyz` reports: active and healthy, or why not.
pub struct RelayStatus {
    active: AtomicBool,
    reason: Mutex<String>,
}

impl Default for RelayStatus {
    fn default() -> Self {
        RelayStatus {
            active: AtomicBool::new(false),
            reason: Mutex::new("starting".into()),
        }
    }
}

impl RelayStatus {
    fn set(&self, active: bool, reason: &str) {
        self.active.store(active, Ordering::Relaxed);
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_string();
    }

    /// `Ok` while this relay moves rows; else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.active.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(self
                .reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone())
        }
    }
}

const STANDBY_RETRY: Duration = Duration::from_secs(2);
const BACKLOG_EVERY: Duration = Duration::from_secs(2);
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Relays until `stop` is set.
pub async fn run(
    args: RelayArgs,
    redis: redis::Client,
    metrics: Arc<RelayMetrics>,
    status: Arc<RelayStatus>,
    stop: watch::Receiver<bool>,
) {
    let mut retry = Backoff::new();
    loop {
        let result = tokio::select! {
            r = session(&args, &redis, &metrics, &status, &mut retry) => r,
            _ = stopped(stop.clone()) => return,
        };
        let Err(e) = result else { return };
        metrics.active.set(0);
        metrics
            .errors
            .get_or_create(&ComponentLabels {
                component: e.component(),
            })
            .inc();
        status.set(false, &format!("reconnecting after an error: {e}"));
        let wait = retry.next_wait();
        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "relay: session ended; reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(stop.clone()) => return,
        }
    }
}

/// One connection to each side, holding the relay lock, moving rows until an error.
async fn session(
    args: &RelayArgs,
    redis: &redis::Client,
    metrics: &RelayMetrics,
    status: &RelayStatus,
    retry: &mut Backoff,
) -> Result<(), RelayError> {
    let (pg, mut notified) = outbox::connect(&args.postgres_url).await?;
    while !outbox::try_lock(&pg).await? {
        status.set(false, "standing by: another relay holds the relay lock");
        metrics.active.set(0);
        tokio::time::sleep(STANDBY_RETRY).await;
    }
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    let mut conn = redis
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("PING").query_async::<()>(&mut conn).await?;
    let epoch = settle_epoch(args, &pg, redis, metrics).await?;
    status.set(true, "");
    metrics.active.set(1);
    tracing::info!(stream = %args.stream, "relay: active; moving the outbox to the stream");
    let (mut last_backlog, mut last_trim) = (None::<Instant>, None::<Instant>);
    loop {
        while relay_batch(args, &pg, &mut conn, metrics, epoch).await? == args.batch as usize {}
        retry.reset();
        if last_backlog.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
            // Also while idle: a Redis that restarted (and may have lost what we wrote) ends
            // the session within seconds, and the next one checks the stream's epoch.
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
            let (rows, oldest) = outbox::backlog(&pg).await?;
            metrics.backlog_rows.set(rows);
            metrics.oldest_pending_seconds.set(oldest);
            last_backlog = Some(Instant::now());
        }
        if args.retain_hours > 0 && last_trim.is_none_or(|t| t.elapsed() >= TRIM_EVERY) {
            trim(args, &mut conn, metrics).await?;
            last_trim = Some(Instant::now());
        }
        tokio::select! {
            n = notified.recv() => if n.is_none() {
                // The notification task ended with the connection; the next query reports why.
                pg.simple_query("SELECT 1").await?;
            },
            _ = tokio::time::sleep(Duration::from_millis(args.poll_interval_ms)) => {}
        }
    }
}

/// Checks that Redis still holds what the relay wrote, starting a new stream epoch when it
/// does not ([`epoch`]), and returns the epoch this session writes under.
async fn settle_epoch(
    args: &RelayArgs,
    pg: &tokio_postgres::Client,
    redis: &redis::Client,
    metrics: &RelayMetrics,
) -> Result<StreamEpoch, RelayError> {
    let recorded = outbox::recorded(pg, &args.stream).await?;
    let mut reader = StreamReader::connect(redis.get_connection_info(), &args.stream).await?;
    let (epoch, replaced) = epoch::settle(&mut reader, recorded).await?;
    if let Some(reason) = replaced {
        metrics.epochs_replaced.inc();
        tracing::error!(reason, new_epoch = %epoch,
            "relay: Redis lost stream entries the relay had written; started a new stream epoch. \
             Every replica reports a reset until it loads a snapshot of the new epoch \
             (eligd snapshot build --from-postgres … --redis-url … --out <snapshot dir>)");
    }
    outbox::record_epoch(pg, &args.stream, epoch).await?;
    Ok(epoch)
}

/// Moves one batch; returns how many rows it took from the outbox.
async fn relay_batch(
    args: &RelayArgs,
    pg: &tokio_postgres::Client,
    conn: &mut redis::aio::MultiplexedConnection,
    metrics: &RelayMetrics,
    epoch: StreamEpoch,
) -> Result<usize, RelayError> {
    let started = Instant::now();
    let rows = outbox::pending(pg, args.batch as i64).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    let mut relayed = Vec::with_capacity(rows.len());
    for row in &rows {
        match outbox::to_event(row) {
            Ok(event) => {
                let cmd = pipe.cmd("XADD").arg(&args.stream).arg("*");
                for (name, value) in &event.fields {
                    cmd.arg(*name).arg(value);
                }
                relayed.push(row.id);
            }
            Err(reason) => {
                outbox::reject(pg, row.id, &reason).await?;
                metrics.rejected.inc();
                tracing::warn!(outbox_id = row.id, reason = %reason,
                    "relay: outbox row breaks the record rules; marked rejected and skipped");
            }
        }
    }
    if !relayed.is_empty() {
        let ids: Vec<String> = pipe.query_async(conn).await?;
        let last_written = ids
            .iter()
            .filter_map(|id| id.parse::<FeedPosition>().ok())
            .max()
            .unwrap_or(FeedPosition::START);
        outbox::remove(pg, &relayed, &args.stream, epoch, last_written).await?;
        metrics.relayed.inc_by(relayed.len() as u64);
    }
    metrics
        .batch_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(rows.len())
}

/// Trims entries older than `--retain-hours` (approximately: whole nodes only).
async fn trim(
    args: &RelayArgs,
    conn: &mut redis::aio::MultiplexedConnection,
    metrics: &RelayMetrics,
) -> Result<(), RelayError> {
    let keep_ms = args.retain_hours.saturating_mul(3_600_000);
    let min_id = crate::app::unix_ms().saturating_sub(keep_ms);
    let trimmed: u64 = redis::cmd("XTRIM")
        .arg(&args.stream)
        .arg("MINID")
        .arg("~")
        .arg(format!("{min_id}-0"))
        .query_async(conn)
        .await?;
    metrics.trimmed.inc_by(trimmed);
    Ok(())
}
