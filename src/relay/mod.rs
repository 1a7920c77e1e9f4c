//! `eligd relay`: moves committed changes from PostgreSQL's outbox (deploy/postgres/schema.sql)
//! to the Redis stream as native change events, so a paid premium reaches every replica a
//! moment after its transaction commits.
//!
//! A batch is read in outbox order, XADDed in one pipelined round trip, confirmed on
//! `--wait-replicas` Redis replicas (`WAIT`) when asked, and only then marked relayed: a crash
//! in between re-sends the batch, which versions make harmless (at-least-once). Relayed rows
//! are kept for `--outbox-keep-secs` and until replicated, so a Redis that comes back without
//! them gets them back with their own IDs (see [`epoch`]). A `LISTEN eligd_outbox` notification wakes it; it also looks every
//! `--poll-interval-ms`. One relay per database moves rows (an advisory lock); others stand
//! by. Any failure of PostgreSQL or Redis ends the session, and a new one starts with a capped
//! backoff. Trimming keeps `--retain-hours` of entries by ID age.

pub mod epoch;
pub mod metrics;
mod ops;
pub mod outbox;
mod stream_writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use self::epoch::Decision;
use self::metrics::{ComponentLabels, RelayMetrics};
use crate::cli::RelayArgs;
use crate::feed::native::NativeEvent;
use crate::feed::stream::{StreamError, StreamReader};
use crate::index::{FeedPosition, StreamEpoch};
use crate::pg::PgTarget;
use crate::resp::RedisTarget;
use crate::shutdown::{stopped, Backoff};

pub use ops::serve_ops;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("PostgreSQL: {}", outbox::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("Redis: {0}")]
    Stream(#[from] StreamError),
}

impl RelayError {
    fn component(&self) -> &'static str {
        match self {
            RelayError::Postgres(_) => "postgres",
            RelayError::Stream(_) => "redis",
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
/// How often kept rows are pruned (more often when `--outbox-keep-secs` is shorter).
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Relays until `stop` is set.
pub async fn run(
    args: RelayArgs,
    postgres: PgTarget,
    redis: RedisTarget,
    metrics: Arc<RelayMetrics>,
    status: Arc<RelayStatus>,
    stop: watch::Receiver<bool>,
) {
    let mut retry = Backoff::new();
    loop {
        let result = tokio::select! {
            r = session(&args, &postgres, &redis, &metrics, &status, &mut retry) => r,
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

/// One relay session: a connection to each side, the relay lock, and what this connection
/// wrote that a `WAIT` has not yet confirmed.
struct Session<'a> {
    args: &'a RelayArgs,
    pg: tokio_postgres::Client,
    redis: StreamReader,
    metrics: &'a RelayMetrics,
    epoch: StreamEpoch,
    /// Rows marked relayed but not replicated since the last successful WAIT.
    unconfirmed: bool,
}

/// One connection to each side, holding the relay lock, moving rows until an error.
async fn session(
    args: &RelayArgs,
    postgres: &PgTarget,
    redis: &RedisTarget,
    metrics: &RelayMetrics,
    status: &RelayStatus,
    retry: &mut Backoff,
) -> Result<(), RelayError> {
    let (pg, mut notified) = outbox::connect(postgres).await?;
    while !outbox::try_lock(&pg).await? {
        status.set(false, "standing by: another relay holds the relay lock");
        metrics.active.set(0);
        tokio::time::sleep(STANDBY_RETRY).await;
    }
    let reader = StreamReader::connect(redis, &args.stream).await?;
    let mut session = Session {
        args,
        pg,
        redis: reader,
        metrics,
        epoch: StreamEpoch(0),
        unconfirmed: false,
    };
    session.settle_epoch().await?;
    status.set(true, "");
    metrics.active.set(1);
    tracing::info!(stream = %args.stream, tls = redis.is_tls(), "relay: active; moving the outbox to the stream");
    let (mut last_backlog, mut last_trim, mut last_prune) =
        (None::<Instant>, None::<Instant>, None::<Instant>);
    let prune_every = PRUNE_EVERY.min(Duration::from_secs(args.outbox_keep_secs));
    loop {
        while session.relay_batch().await? == args.batch as usize {}
        retry.reset();
        if last_backlog.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
            // Also while idle: a Redis that restarted (and may have lost what we wrote) ends
            // the session within seconds, and the next one checks the stream's epoch.
            session.observe().await?;
            last_backlog = Some(Instant::now());
        }
        if last_prune.is_none_or(|t| t.elapsed() >= prune_every) {
            let pruned = outbox::prune(&session.pg, &args.stream, args.outbox_keep_secs).await?;
            metrics.pruned.inc_by(pruned.max(0) as u64);
            last_prune = Some(Instant::now());
        }
        if args.retain_hours > 0 && last_trim.is_none_or(|t| t.elapsed() >= TRIM_EVERY) {
            let keep_ms = args.retain_hours.saturating_mul(3_600_000);
            let min_ms = crate::app::unix_ms().saturating_sub(keep_ms);
            let min_id = FeedPosition { ms: min_ms, seq: 0 };
            metrics
                .trimmed
                .inc_by(stream_writer::trim(&mut session.redis, min_id).await?);
            last_trim = Some(Instant::now());
        }
        tokio::select! {
            n = notified.recv() => if n.is_none() {
                // The notification task ended with the connection; the next query reports why.
                session.pg.simple_query("SELECT 1").await?;
            },
            _ = tokio::time::sleep(Duration::from_millis(args.poll_interval_ms)) => {}
        }
    }
}

impl Session<'_> {
    /// Checks that Redis still holds what the relay wrote ([`epoch`]): writes back what it
    /// lost while the outbox keeps it, or starts a new stream epoch when it does not.
    async fn settle_epoch(&mut self) -> Result<(), RelayError> {
        let stream = &self.args.stream;
        let recorded = outbox::recorded(&self.pg, stream).await?;
        let found = epoch::in_redis(&mut self.redis).await?;
        self.epoch = match epoch::decide(recorded, found) {
            Decision::Keep(e) => e,
            Decision::Create => self.redis.ensure_epoch().await?,
            Decision::Restore {
                epoch,
                after,
                set_epoch,
            } => {
                if set_epoch {
                    self.redis.set_epoch(epoch).await?;
                }
                self.epoch = epoch;
                let restored = self.restore(after).await?;
                tracing::warn!(restored, after = %after, epoch = %epoch,
                    "relay: Redis came back without entries the relay had written; wrote them back \
                     from the outbox with their own IDs (replicas waiting on the stream carry on)");
                epoch
            }
            Decision::Replace { reason } => {
                let fresh = epoch::replace(&mut self.redis).await?;
                self.metrics.epochs_replaced.inc();
                tracing::error!(reason, new_epoch = %fresh,
                    "relay: Redis lost stream entries the relay no longer keeps; started a new stream epoch. \
                     Every replica reports a reset until it loads a snapshot of the new epoch \
                     (eligd snapshot build --from-postgres … --redis-url … --out <snapshot dir>)");
                fresh
            }
        };
        outbox::record_epoch(&self.pg, stream, self.epoch).await?;
        Ok(())
    }

    /// Writes back every kept entry after `after`, with its own ID, in stream order.
    async fn restore(&mut self, after: FeedPosition) -> Result<u64, RelayError> {
        let kept = outbox::kept_after(&self.pg, after).await?;
        let mut restored = 0;
        for chunk in kept.chunks(self.args.batch as usize) {
            let events: Vec<(FeedPosition, NativeEvent)> = chunk
                .iter()
                .filter_map(|(id, row)| outbox::to_event(row).ok().map(|e| (*id, e)))
                .collect();
            let batch: Vec<(Option<FeedPosition>, &NativeEvent)> =
                events.iter().map(|(id, e)| (Some(*id), e)).collect();
            stream_writer::append(&mut self.redis, &batch).await?;
            restored += batch.len() as u64;
        }
        self.metrics.restored.inc_by(restored);
        self.confirm(restored > 0).await?;
        Ok(restored)
    }

    /// After writes on this connection: `WAIT` for `--wait-replicas` (when asked). Returns
    /// whether the writes are replicated (always, without `--wait-replicas`), and marks every
    /// earlier relayed row replicated once a `WAIT` succeeds.
    async fn confirm(&mut self, wrote: bool) -> Result<bool, RelayError> {
        let wanted = self.args.wait_replicas;
        if wanted == 0 || !wrote {
            return Ok(wanted == 0);
        }
        let started = Instant::now();
        let timeout = Duration::from_millis(self.args.wait_timeout_ms);
        let acked = stream_writer::wait(&mut self.redis, wanted, timeout).await?;
        self.metrics
            .wait_seconds
            .observe(started.elapsed().as_secs_f64());
        if acked < wanted {
            self.metrics.wait_shortfalls.inc();
            tracing::warn!(acked, wanted,
                "relay: fewer Redis replicas than --wait-replicas hold the last batch; its rows stay kept until a later WAIT succeeds");
            self.unconfirmed = true;
            return Ok(false);
        }
        if self.unconfirmed {
            outbox::mark_replicated(&self.pg).await?;
            self.unconfirmed = false;
        }
        Ok(true)
    }

    /// Moves one batch; returns how many rows it took from the outbox.
    async fn relay_batch(&mut self) -> Result<usize, RelayError> {
        let started = Instant::now();
        let rows = outbox::pending(&self.pg, self.args.batch as i64).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            match outbox::to_event(row) {
                Ok(event) => events.push((row.id, event)),
                Err(reason) => {
                    outbox::reject(&self.pg, row.id, &reason).await?;
                    self.metrics.rejected.inc();
                    tracing::warn!(outbox_id = row.id, reason = %reason,
                        "relay: outbox row breaks the record rules; marked rejected and skipped");
                }
            }
        }
        if !events.is_empty() {
            let batch: Vec<(Option<FeedPosition>, &NativeEvent)> =
                events.iter().map(|(_, e)| (None, e)).collect();
            let ids = stream_writer::append(&mut self.redis, &batch).await?;
            let replicated = self.confirm(true).await?;
            let written: Vec<(i64, FeedPosition)> =
                events.iter().map(|(id, _)| *id).zip(ids).collect();
            let last_written = written
                .iter()
                .map(|(_, p)| *p)
                .max()
                .unwrap_or(FeedPosition::START);
            outbox::mark_relayed(
                &self.pg,
                &written,
                replicated,
                &self.args.stream,
                self.epoch,
                last_written,
            )
            .await?;
            self.metrics.relayed.inc_by(written.len() as u64);
        }
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(rows.len())
    }

    /// Refreshes the backlog gauges and the age of the stream's oldest entry.
    async fn observe(&mut self) -> Result<(), RelayError> {
        stream_writer::ping(&mut self.redis).await?;
        let (rows, oldest, kept) = outbox::backlog(&self.pg).await?;
        self.metrics.backlog_rows.set(rows);
        self.metrics.oldest_pending_seconds.set(oldest);
        self.metrics.kept_rows.set(kept);
        let probe = self.redis.probe(None).await?;
        let age = probe.info.and_then(|i| i.first_entry).map_or(0.0, |first| {
            crate::app::unix_ms().saturating_sub(first.unix_ms()) as f64 / 1000.0
        });
        self.metrics.oldest_entry_seconds.set(age);
        Ok(())
    }
}
