//! `eligd relay`: moves committed changes from PostgreSQL's outbox (deploy/postgres/schema.sql)
//! to the Redis stream as native change events, so a paid premium reaches every replica a
//! moment after its transaction commits.
//!
//! A batch is read in outbox order, XADDed in checked and fenced scripts (`writes.rs`), and
//! only then marked relayed: a crash in between re-sends the batch, which versions make harmless
//! (at-least-once). Relayed rows are kept for `--outbox-keep-secs` and until a `WAIT`
//! (about once a second) confirmed `--wait-replicas` Redis replicas hold them, so a Redis that
//! comes back without them gets them back with their own IDs (see [`epoch`]).
//!
//! A `LISTEN eligd_outbox` notification wakes it; it also looks every `--poll-interval-ms`. One relay per database moves rows (an advisory lock); others stand
//! by. Any failure of PostgreSQL or Redis ends the session, and a new one starts with a capped
//! backoff. Trimming keeps `--retain-hours` of entries by ID age.

pub mod epoch;
mod fence;
pub mod metrics;
mod ops;
pub mod outbox;
mod stream_writer;
mod versions;
mod writes;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use self::metrics::{ComponentLabels, RelayMetrics};
use crate::feed::native::NativeEvent;
use crate::feed::stream::{StreamError, StreamReader};
use crate::index::{FeedPosition, StreamEpoch};
use crate::pg::PgTarget;
use crate::redis::RedisTarget;
use crate::shutdown::{stopped, Backoff};

pub use ops::serve_ops;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("PostgreSQL: {}", outbox::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("Redis: {0}")]
    Stream(#[from] StreamError),
    #[error(
        "deposed: a newer relay (fencing token {newest}, this one's {mine}) writes the stream"
    )]
    Deposed { mine: i64, newest: i64 },
}

impl RelayError {
    fn component(&self) -> &'static str {
        match self {
            RelayError::Postgres(_) => "postgres",
            RelayError::Stream(_) => "redis",
            RelayError::Deposed { .. } => "fence",
        }
    }
}

/// What `/readyz` reports: whether this relay can serve its role, and which. An active relay
/// moving rows is ready; so is a standby that reaches PostgreSQL (it asks for the relay lock
/// every [`STANDBY_RETRY`]) and Redis (a `PING` as often), since it would take over at once.
/// A relay that can do neither (starting, reconnecting after an error, deposed a moment ago,
/// or a standby that cannot reach Redis) is not.
pub struct RelayStatus {
    state: Mutex<(Role, String)>,
    /// When this relay last heard from its dependencies doing its role (ms since `started`):
    /// an active relay after each batch, a standby after each check. A query that hangs (a
    /// paused or unreachable PostgreSQL answers nothing, and TCP retries for minutes) stops
    /// the beat, and readiness says so after `stale_ms`.
    beat_ms: std::sync::atomic::AtomicU64,
    stale_ms: std::sync::atomic::AtomicU64,
    started: Instant,
}

/// The role a relay can serve now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Holding the lock and moving the outbox to the stream.
    Active,
    /// Another relay holds the lock; this one reaches both sides and would take over.
    Standby,
    /// Neither: the reason says why.
    Unready,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
            Role::Unready => "unready",
        }
    }
}

/// How long without a beat a relay is still ready for its role, beyond its poll interval.
const STALE_AFTER: Duration = Duration::from_secs(10);

impl Default for RelayStatus {
    fn default() -> Self {
        RelayStatus {
            state: Mutex::new((Role::Unready, "starting".into())),
            beat_ms: std::sync::atomic::AtomicU64::new(0),
            stale_ms: std::sync::atomic::AtomicU64::new(STALE_AFTER.as_millis() as u64),
            started: Instant::now(),
        }
    }
}

impl RelayStatus {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The dependencies answered just now.
    fn beat(&self) {
        self.beat_ms
            .store(self.now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// A relay polling every `poll` is stale after [`STALE_AFTER`] plus two polls.
    fn stale_after(&self, poll: Duration) {
        let ms = (STALE_AFTER + 2 * poll).as_millis() as u64;
        self.stale_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn set_role(&self, role: Role, reason: &str) {
        self.beat();
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = (role, reason.to_string());
    }

    fn set(&self, active: bool, reason: &str) {
        let role = if active { Role::Active } else { Role::Unready };
        self.set_role(role, reason);
    }

    /// Standing by, having just reached PostgreSQL; `redis` says whether Redis answered.
    fn standby(&self, redis: Result<(), String>) {
        match redis {
            Ok(()) => self.set_role(Role::Standby, "another relay holds the relay lock"),
            Err(e) => self.set_role(
                Role::Unready,
                &format!("standing by, but Redis cannot be reached: {e}"),
            ),
        }
    }

    /// The role this relay can serve (with what a standby waits for), or why it can serve
    /// none.
    pub fn readiness(&self) -> Result<(Role, String), String> {
        let (role, reason) = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let silent_ms = self
            .now_ms()
            .saturating_sub(self.beat_ms.load(std::sync::atomic::Ordering::Relaxed));
        let stale_ms = self.stale_ms.load(std::sync::atomic::Ordering::Relaxed);
        match role {
            Role::Unready => Err(reason),
            role if silent_ms > stale_ms => Err(format!(
                "{}, but PostgreSQL or Redis has not answered for {} s",
                role.as_str(),
                silent_ms / 1000
            )),
            role => Ok((role, reason)),
        }
    }
}

const STANDBY_RETRY: Duration = Duration::from_secs(2);
/// Entries per write script: Redis runs nothing else while a script runs, about 6 µs per
/// entry here (1,000 held it 5.8 ms, 10,000 for 64 ms, 100,000 for 0.66 s), so a batch is
/// written in scripts of this many (about 1.5 ms each).
const SCRIPT_ENTRIES: usize = 256;
const BACKLOG_EVERY: Duration = Duration::from_secs(2);
const TRIM_EVERY: Duration = Duration::from_secs(60);
/// How often relayed rows are confirmed on Redis replicas (`WAIT`).
const CONFIRM_EVERY: Duration = Duration::from_secs(1);
/// How often kept rows are pruned (more often when `--outbox-keep-secs` is shorter).
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// What a relay needs to know (`eligd relay`'s flags, checked by `commands::relay`).
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The Redis stream relayed to (`--stream`).
    pub stream: String,
    /// Outbox rows read per batch (`--batch`).
    pub batch: u64,
    /// How long to wait for new rows when the outbox is empty (`--poll-interval-ms`).
    pub poll_interval_ms: u64,
    /// Stream entries and delete markers kept this long (`--retain-hours`; 0: forever).
    pub retain_hours: u64,
    /// Redis replicas that must confirm relayed rows before they are marked (`--wait-replicas`).
    pub wait_replicas: u64,
    /// How long to wait for those replicas (`--wait-timeout-ms`).
    pub wait_timeout_ms: u64,
    /// Relayed rows kept in the outbox this long (`--outbox-keep-secs`).
    pub outbox_keep_secs: u64,
}

/// Relays until `stop` is set.
pub async fn run(
    args: RelayConfig,
    postgres: PgTarget,
    redis: RedisTarget,
    metrics: Arc<RelayMetrics>,
    status: Arc<RelayStatus>,
    stop: watch::Receiver<bool>,
) {
    let mut retry = Backoff::new();
    status.stale_after(Duration::from_millis(args.poll_interval_ms));
    loop {
        let result = tokio::select! {
            r = session(&args, &postgres, &redis, &metrics, &status, &mut retry) => r,
            _ = stopped(stop.clone()) => return,
        };
        let Err(e) = result else { return };
        metrics.active.set(0);
        if let RelayError::Deposed { mine, newest } = e {
            // Not a failure of a dependency: another relay took the lock. Stand by.
            metrics.deposed.inc();
            status.set(false, &format!("standing by: deposed ({e})"));
            tracing::warn!(token = mine, newest,
                "relay: deposed: a newer relay holds the relay lock and wrote the stream; this write was refused and nothing of it landed; standing by");
            tokio::select! {
                _ = tokio::time::sleep(STANDBY_RETRY) => {}
                _ = stopped(stop.clone()) => return,
            }
            continue;
        }
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

/// One relay session: a connection to each side and the relay lock.
struct RelaySession<'a> {
    args: &'a RelayConfig,
    postgres: &'a PgTarget,
    pg: &'a tokio_postgres::Client,
    /// A connection of its own for the rare multi-statement transactions (`versions.rs`):
    /// `pg` is shared with the confirmation task.
    repair: Option<tokio_postgres::Client>,
    redis: StreamReader,
    metrics: &'a RelayMetrics,
    /// This session's fencing token (`fence.rs`): every stream write carries it.
    token: i64,
    /// Pending rows with a version below this are re-versioned, not relayed (`versions.rs`).
    floor: i64,
    /// The table was found behind the stream: the next epoch settlement starts a new epoch.
    table_behind: bool,
    epoch: StreamEpoch,
    /// The newest entry the stream must hold under `epoch`: checked with every batch and
    /// every probe, not only when the session starts (a restart behind a proxy that keeps the
    /// connection open ends no session).
    last_written: FeedPosition,
    /// The newest entry this session wrote, for the confirmation (`WAIT`) beside it.
    written: &'a Mutex<Option<FeedPosition>>,
}

/// A standby's check of Redis: a `PING` on the connection it keeps (made again when lost).
async fn standby_ping(
    kept: &mut Option<StreamReader>,
    redis: &RedisTarget,
    stream: &str,
) -> Result<(), String> {
    if kept.is_none() {
        *kept = Some(
            StreamReader::connect(redis, stream)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let Some(reader) = kept.as_mut() else {
        return Err("no connection".into());
    };
    let pinged = stream_writer::ping(reader).await.map_err(|e| e.to_string());
    if pinged.is_err() {
        *kept = None;
    }
    pinged
}

/// One connection to each side, holding the relay lock, moving rows until an error; with
/// `--wait-replicas`, a second Redis connection confirms what was written ([`confirming`]).
async fn session(
    args: &RelayConfig,
    postgres: &PgTarget,
    redis: &RedisTarget,
    metrics: &RelayMetrics,
    status: &RelayStatus,
    retry: &mut Backoff,
) -> Result<(), RelayError> {
    let (pg, notified) = outbox::connect(postgres).await?;
    // While another relay holds the lock, this one checks that it could take over: PostgreSQL
    // answers each try for the lock, Redis a `PING` on a connection kept for it.
    let mut standby_redis: Option<StreamReader> = None;
    while !outbox::try_lock(&pg).await? {
        metrics.active.set(0);
        status.standby(standby_ping(&mut standby_redis, redis, &args.stream).await);
        tokio::time::sleep(STANDBY_RETRY).await;
    }
    drop(standby_redis);
    let mut token = outbox::draw_token(&pg, &args.stream).await?;
    let mut reader = StreamReader::connect(redis, &args.stream).await?;
    // Raise the fence before anything else: from now on no write of a predecessor lands.
    if let fence::Fenced::Deposed(newest) = fence::claim(&mut reader, token).await? {
        // Redis has seen a newer token than the table holds: the records database failed
        // over or was restored without it. This session holds the lock: go past it.
        tracing::warn!(token, newest, "relay: the stream's fence is ahead of the records database's token (failover or restore); raising the token");
        token = outbox::raise_token(&pg, &args.stream, newest).await?;
        if let fence::Fenced::Deposed(newest) = fence::claim(&mut reader, token).await? {
            return Err(RelayError::Deposed {
                mine: token,
                newest,
            });
        }
    }
    // Versions never go back: a table behind what the stream carries (failover, restore) has
    // its sequence raised past it, and replicas resync from a new epoch.
    let relayed = versions::relayed(&mut reader).await?;
    let table = versions::in_table(&pg, &args.stream).await?;
    let mut floor = table.floor;
    let mut repair = None;
    if table.committed < relayed {
        let (mut client, _) = outbox::connect(postgres).await?;
        floor = versions::raise(&mut client, &args.stream, relayed).await?;
        repair = Some(client);
        metrics.versions_behind.inc();
        tracing::error!(committed = table.committed, relayed, floor,
            "relay: the records database's version sequence is behind versions the stream carries \
             (a failover to a standby that lacked transactions, or a restore from a backup); raised it, \
             re-versioning pending rows drawn below it, and starting a new stream epoch so that replicas \
             resync from a snapshot of the table as it is now");
    }
    let written = Mutex::new(None);
    let table_behind = table.committed < relayed || table.epoch_owed;
    let mut session = RelaySession {
        args,
        postgres,
        pg: &pg,
        repair,
        redis: reader,
        metrics,
        token,
        floor,
        table_behind,
        epoch: StreamEpoch(0),
        last_written: FeedPosition::START,
        written: &written,
    };
    session.settle_epoch().await?;
    status.set(true, "");
    metrics.active.set(1);
    tracing::info!(stream = %args.stream, tls = redis.is_tls(), "relay: active; moving the outbox to the stream");
    tokio::try_join!(
        relaying(&mut session, notified, retry, status),
        confirming(args, redis, &pg, metrics, &written)
    )
    .map(|_| ())
}

/// Moves rows, and looks after the outbox and the stream, until an error.
async fn relaying(
    session: &mut RelaySession<'_>,
    mut notified: tokio::sync::mpsc::UnboundedReceiver<()>,
    retry: &mut Backoff,
    status: &RelayStatus,
) -> Result<(), RelayError> {
    let (args, metrics) = (session.args, session.metrics);
    let (mut last_backlog, mut last_trim, mut last_prune) =
        (None::<Instant>, None::<Instant>, None::<Instant>);
    let prune_every = PRUNE_EVERY.min(Duration::from_secs(args.outbox_keep_secs));
    loop {
        while session.relay_batch().await? == args.batch as usize {}
        status.beat();
        retry.reset();
        if last_backlog.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
            // Also while idle: a Redis that restarted (and may have lost what we wrote) ends
            // the session within seconds, and the next one checks the stream's epoch.
            session.observe().await?;
            last_backlog = Some(Instant::now());
        }
        if last_prune.is_none_or(|t| t.elapsed() >= prune_every) {
            let pruned = outbox::prune(session.pg, &args.stream, args.outbox_keep_secs).await?;
            metrics.pruned.inc_by(pruned.max(0) as u64);
            metrics.kept_rows.set(outbox::kept(session.pg).await?);
            last_prune = Some(Instant::now());
        }
        if args.retain_hours > 0 && last_trim.is_none_or(|t| t.elapsed() >= TRIM_EVERY) {
            metrics.markers_pruned.inc_by(
                outbox::prune_markers(session.pg, args.retain_hours.saturating_mul(3600)).await?,
            );
            let keep_ms = args.retain_hours.saturating_mul(3_600_000);
            let min_ms = crate::dates::unix_ms().saturating_sub(keep_ms);
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

/// With `--wait-replicas`: about once a second, confirms that the replicas hold everything
/// written so far, and marks those rows replicated (only replicated rows are ever pruned).
/// On a connection of its own, so a `WAIT` never delays a change: it writes a marker after
/// reading what was written, and `WAIT` then covers the marker and, replication being
/// ordered, everything before it. A primary without replicas (just after a failover) costs
/// a shortfall a second, counted, and nothing else.
async fn confirming(
    args: &RelayConfig,
    redis: &RedisTarget,
    pg: &tokio_postgres::Client,
    metrics: &RelayMetrics,
    written: &Mutex<Option<FeedPosition>>,
) -> Result<(), RelayError> {
    let wanted = args.wait_replicas;
    if wanted == 0 {
        return std::future::pending().await;
    }
    let mut conn = StreamReader::connect(redis, &args.stream).await?;
    let timeout = Duration::from_millis(args.wait_timeout_ms);
    let mut confirmed = None;
    loop {
        tokio::time::sleep(CONFIRM_EVERY).await;
        let upto = *written.lock().unwrap_or_else(|p| p.into_inner());
        let Some(upto) = upto.filter(|u| Some(*u) != confirmed) else {
            continue;
        };
        // This connection must reach the server that holds what was written (a failover
        // between the two connections would otherwise confirm the wrong one).
        let holds = conn
            .probe(None)
            .await?
            .info
            .is_some_and(|i| i.last_generated >= upto);
        if !holds {
            continue;
        }
        let started = Instant::now();
        stream_writer::mark(&mut conn, upto).await?;
        let acked = stream_writer::wait(&mut conn, wanted, timeout).await?;
        metrics
            .wait_seconds
            .observe(started.elapsed().as_secs_f64());
        if acked < wanted {
            metrics.wait_shortfalls.inc();
            tracing::warn!(acked, wanted,
                "relay: fewer Redis replicas than --wait-replicas hold what was relayed; the rows stay kept until a later WAIT succeeds");
            continue;
        }
        outbox::mark_replicated(pg, upto).await?;
        confirmed = Some(upto);
    }
}

impl RelaySession<'_> {
    /// Entries up to `last` are written: the confirmation may cover them.
    fn wrote(&self, last: FeedPosition) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        *written = (*written).max(Some(last));
    }

    /// Moves one batch; returns how many rows it took from the outbox.
    async fn relay_batch(&mut self) -> Result<usize, RelayError> {
        let started = Instant::now();
        let rows = outbox::pending(self.pg, self.args.batch as i64).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut events = Vec::with_capacity(rows.len());
        let mut top = 0;
        for row in &rows {
            if row.version < self.floor - versions::RESERVED {
                // Drawn before the sequence was raised past what the stream carries: a
                // replica may hold a newer version of this person from before a failover.
                // (Versions from the floor's reserve, below it, are re-versioned deletes:
                // above everything relayed before the raise, they go as they are.)
                if self.repair.is_none() {
                    self.repair = Some(outbox::connect(self.postgres).await?.0);
                }
                if let Some(repair) = self.repair.as_mut() {
                    versions::reversion(repair, &self.args.stream, row).await?;
                }
                self.metrics.reversioned.inc();
                continue;
            }
            top = top.max(row.version);
            match outbox::to_event(row) {
                Ok(event) => events.push((row.id, event)),
                Err(reason) => {
                    outbox::reject(self.pg, row.id, &reason).await?;
                    self.metrics.rejected.inc();
                    tracing::warn!(outbox_id = row.id, reason = %reason,
                        "relay: outbox row breaks the record rules; marked rejected and skipped");
                }
            }
        }
        if !events.is_empty() {
            let batch: Vec<&NativeEvent> = events.iter().map(|(_, e)| e).collect();
            let ids = self.append_checked(&batch, top).await?;
            // Without --wait-replicas a row is safe once written; with it, once confirmed.
            let replicated = self.args.wait_replicas == 0;
            let written: Vec<(i64, FeedPosition)> =
                events.iter().map(|(id, _)| *id).zip(ids).collect();
            let last_written = written
                .iter()
                .map(|(_, p)| *p)
                .max()
                .unwrap_or(FeedPosition::START);
            self.wrote(last_written);
            self.last_written = self.last_written.max(last_written);
            outbox::mark_relayed(
                self.pg,
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

    /// Refreshes the backlog gauges and the age of the stream's oldest entry, and checks that
    /// the stream still holds what the relay wrote.
    async fn observe(&mut self) -> Result<(), RelayError> {
        stream_writer::ping(&mut self.redis).await?;
        let (rows, oldest) = outbox::backlog(self.pg).await?;
        self.metrics.backlog_rows.set(rows);
        self.metrics.oldest_pending_seconds.set(oldest);
        let probe = self.redis.probe(None).await?;
        let found = epoch::InRedis {
            epoch: probe.epoch,
            last_generated: probe
                .info
                .as_ref()
                .map_or(FeedPosition::START, |i| i.last_generated),
        };
        if found.epoch != Some(self.epoch) || found.last_generated < self.last_written {
            return self.lost(found).await;
        }
        let age = probe.info.and_then(|i| i.first_entry).map_or(0.0, |first| {
            crate::dates::unix_ms().saturating_sub(first.unix_ms()) as f64 / 1000.0
        });
        self.metrics.oldest_entry_seconds.set(age);
        Ok(())
    }
}
