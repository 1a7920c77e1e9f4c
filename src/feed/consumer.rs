//! The feed task: connect, read, check continuity, apply, and start again after any Redis
//! failure with a capped backoff. Lookups never wait for it: it only calls
//! [`Index::apply`], which takes no lock that lookups take.
//!
//! The position only moves after a batch is applied, and every read starts from it, so a
//! read lost to a dropped connection is simply read again (versions make repeats harmless).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::config::{Feed, FeedConfig};
use super::continuity::{self, Gap};
use super::event::{self, Event};
use super::metrics::{KindLabels, ReasonLabels};
use super::resync;
use super::status::Phase;
use super::stream::{StreamError, StreamReader};
use crate::index::{Applied, FeedPosition, Index};
use crate::redis::RawEntry;
use crate::redis::RedisTarget;
use crate::shutdown::{stopped, Backoff};

/// How often a gap looks again for a snapshot that covers it.
const RESYNC_RETRY: Duration = Duration::from_secs(2);
/// How often a replica the stream is behind looks again.
const BEHIND_RETRY: Duration = Duration::from_millis(250);
/// Batches above this are applied on a blocking thread, so a catch-up never holds up the
/// request threads.
const INLINE_BATCH: usize = 256;
/// Rejected entries logged per batch; the rest are counted.
const LOGGED_PER_BATCH: usize = 10;

/// Follows the stream until `stop` is set.
pub async fn run(feed: Feed, redis: RedisTarget, config: FeedConfig, stop: watch::Receiver<bool>) {
    let mut consumer = Consumer {
        feed,
        config,
        retry: Backoff::new(),
        replay: Replay::new(),
    };
    loop {
        let connected = tokio::select! {
            c = StreamReader::connect(&redis, &consumer.config.stream) => c,
            _ = stopped(stop.clone()) => return,
        };
        let ended = match connected {
            Ok(mut reader) => {
                consumer.set_connected(true);
                tracing::info!(stream = %consumer.config.stream, "change feed: connected to Redis");
                consumer.follow(&mut reader, stop.clone()).await
            }
            Err(e) => Err(e),
        };
        let Err(e) = ended else { return };
        consumer.set_connected(false);
        let wait = consumer.retry.next_wait();
        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64,
            "change feed: Redis unavailable; lookups go on from the index, retrying");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(stop.clone()) => return,
        }
        consumer.feed.metrics.reconnects.inc();
    }
}

struct Consumer {
    feed: Feed,
    config: FeedConfig,
    retry: Backoff,
    replay: Replay,
}

/// Counts a replay, so the catch-up logs its rate, and reports its progress while a backlog
/// is read (`crate::progress`: entries so far, of the stream's length when the replay starts
/// from its beginning).
struct Replay {
    started: Instant,
    entries: u64,
    done: Arc<std::sync::atomic::AtomicU64>,
    reporter: Option<crate::progress::Reporter>,
}

impl Replay {
    fn new() -> Replay {
        Replay {
            started: Instant::now(),
            entries: 0,
            done: Arc::default(),
            reporter: None,
        }
    }

    fn count(&mut self, entries: u64) {
        self.entries += entries;
        self.done
            .store(self.entries, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts the progress report of a backlog (once).
    fn report(&mut self, total: Option<u64>) {
        if self.reporter.is_some() {
            return;
        }
        let done = Arc::clone(&self.done);
        self.reporter = Some(crate::progress::Reporter::start(
            "change feed replay",
            move || crate::progress::Reading {
                stage: "replaying",
                done: done.load(std::sync::atomic::Ordering::Relaxed),
                total,
                unit: "entries",
            },
        ));
    }
}

impl Consumer {
    fn set_connected(&self, connected: bool) {
        self.feed.status.set_connected(connected);
        self.feed.metrics.connected.set(i64::from(connected));
    }

    /// Reads until the connection fails (`Err`) or a stop is requested (`Ok`). A batch still
    /// being applied is finished either way, so its position is never lost.
    async fn follow(
        &mut self,
        reader: &mut StreamReader,
        stop: watch::Receiver<bool>,
    ) -> Result<(), StreamError> {
        let mut in_flight = None;
        let result = self.follow_batches(reader, stop, &mut in_flight).await;
        match in_flight.take() {
            Some(batch) => self.finish(batch).await.and(result),
            None => result,
        }
    }

    /// While catching up, the next batch is read while the previous one is applied on a
    /// blocking thread (`in_flight`); batches are still applied one after another, in order.
    async fn follow_batches(
        &mut self,
        reader: &mut StreamReader,
        stop: watch::Receiver<bool>,
        in_flight: &mut Option<InFlight>,
    ) -> Result<(), StreamError> {
        // The first read after (re)connecting does not block: catch up first.
        let mut more_waiting = true;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            if let Phase::Gap { .. } = self.feed.status.phase() {
                if !resync::attempt(&self.feed, &self.config, reader).await? {
                    tokio::select! {
                        _ = tokio::time::sleep(RESYNC_RETRY) => {}
                        _ = stopped(stop.clone()) => return Ok(()),
                    }
                    continue;
                }
                self.replay = Replay::new();
                more_waiting = true;
            }
            let Some(index) = self.feed.index.get() else {
                return Ok(());
            };
            // Entries in hand count as read: continue after them.
            let position = in_flight
                .as_ref()
                .map(|b| b.last)
                .or_else(|| index.position());
            let block = (!more_waiting).then_some(self.config.block);
            if block.is_some() {
                self.feed.status.waiting(Instant::now());
            }
            // Everything written before this instant is in the reply, once it is not full.
            let sent_ms = crate::dates::unix_ms();
            let entries = tokio::select! {
                read = reader.read(position, self.config.batch, block) => read?,
                _ = stopped(stop.clone()) => return Ok(()),
            };
            let received = Instant::now();
            let probe = reader.probe(position).await?;
            // What /readyz said until this answer: a gap found now is shared when it was ready.
            let was_ready = self
                .feed
                .status
                .readiness(Instant::now(), crate::dates::unix_ms())
                .is_ok();
            self.feed.status.answered(Instant::now());
            self.retry.reset();
            if let Some(batch) = in_flight.take() {
                self.finish(batch).await?;
            }
            let complete = continuity::check_epoch(index.epoch(), probe.epoch).and_then(|()| {
                continuity::check(position, probe.info.as_ref(), probe.position_present)
            });
            if let Err(gap) = complete {
                if gap.is_behind() {
                    self.on_behind(&gap);
                    tokio::select! {
                        _ = tokio::time::sleep(BEHIND_RETRY) => {}
                        _ = stopped(stop.clone()) => return Ok(()),
                    }
                } else {
                    self.on_gap(gap, was_ready);
                }
                continue;
            }
            if self.feed.status.is_stream_behind() {
                self.feed.status.set_stream_behind(false);
                self.feed.metrics.stream_behind.set(0);
                tracing::info!("change feed: the stream holds our position again; following");
            }
            if let Some(epoch) = probe.epoch {
                index.adopt_epoch(epoch);
            }
            more_waiting = entries.len() >= self.config.batch;
            self.replay.count(entries.len() as u64);
            if more_waiting && self.feed.status.is_replaying() {
                // A backlog: from the stream's beginning, its length is the whole replay.
                let total = position
                    .is_none()
                    .then(|| probe.info.as_ref().map(|i| i.length))
                    .flatten();
                self.replay.report(total);
            }
            let Some(last) = entries.last().map(|e| e.id) else {
                self.caught_up(&index, received, sent_ms);
                continue;
            };
            if entries.len() <= INLINE_BATCH {
                let tally = apply_batch(&index, &entries);
                self.record(&index, last, tally);
            } else {
                let applying = Arc::clone(&index);
                let batch = InFlight {
                    index: Arc::clone(&index),
                    last,
                    handle: tokio::task::spawn_blocking(move || apply_batch(&applying, &entries)),
                };
                if more_waiting {
                    *in_flight = Some(batch);
                    continue;
                }
                self.finish(batch).await?;
            }
            if !more_waiting {
                self.caught_up(&index, received, sent_ms);
            }
        }
    }

    /// The index holds everything the stream held when the last read was answered, so
    /// everything written before that read was sent (`sent_ms`): the new `data_as_of`.
    fn caught_up(&mut self, index: &Index, received: Instant, sent_ms: u64) {
        index.advance_data_as_of(sent_ms);
        if self.feed.status.caught_up(received) {
            if let Some(reporter) = self.replay.reporter.take() {
                reporter.finish();
            }
            let seconds = self.replay.started.elapsed().as_secs_f64();
            tracing::info!(entries = self.replay.entries, seconds,
                per_second = (self.replay.entries as f64 / seconds.max(1e-9)) as u64,
                position = ?index.position().map(|p| p.to_string()),
                "change feed: caught up; ready");
        }
    }

    /// Waits for a batch applied on a blocking thread and records it.
    async fn finish(&self, batch: InFlight) -> Result<(), StreamError> {
        match batch.handle.await {
            Ok(tally) => {
                self.record(&batch.index, batch.last, tally);
                Ok(())
            }
            // Nothing was noted: reconnecting reads the batch again from the last position.
            Err(e) => Err(StreamError::Apply(e.to_string())),
        }
    }

    /// A gap found while the replica was ready is one every replica shares (see
    /// `status.rs`): it stays ready, answering from its index frozen at the last entry it
    /// trusts. Found while starting up or replaying, it is this replica's own: not ready.
    fn on_gap(&self, gap: Gap, was_ready: bool) {
        self.feed
            .metrics
            .gaps
            .get_or_create(&KindLabels { kind: gap.kind() })
            .inc();
        if was_ready {
            tracing::error!(kind = gap.kind(), reason = %gap,
                "change feed: GAP in the stream, found while ready, so every replica sees it: still ready, answering from the index as of the last entry it trusts (data_as_of frozen) until a snapshot in --snapshot-dir covers the gap");
            self.feed.metrics.gap_degraded.set(1);
        } else if matches!(gap, Gap::Epoch { .. }) {
            tracing::error!(kind = gap.kind(), reason = %gap,
                "change feed: the snapshot position this replica replays from belongs to another stream epoch than the stream's; refused: not ready (its peers still serve) until a snapshot of the stream's epoch is in --snapshot-dir");
        } else {
            tracing::error!(kind = gap.kind(), reason = %gap,
                "change feed: GAP in the stream while catching up; not ready (its peers still serve) until a snapshot that covers it is loaded from --snapshot-dir");
        }
        self.feed.status.gap(gap.to_string(), was_ready);
    }

    /// The stream ends before our position: a fault every replica shares, so the replica
    /// stays ready and waits (logged once per episode).
    fn on_behind(&self, gap: &Gap) {
        if !self.feed.status.is_stream_behind() {
            tracing::warn!(reason = %gap,
                "change feed: the stream is BEHIND this replica; answering from the index and waiting");
            self.feed.status.set_stream_behind(true);
            self.feed.metrics.stream_behind.set(1);
        }
    }

    /// Moves the position past an applied batch and counts what it did.
    fn record(&self, index: &Index, last: FeedPosition, tally: Tally) {
        index.note_position(last);
        self.feed.status.applied(last);
        let metrics = &self.feed.metrics;
        metrics.applied.inc_by(tally.applied);
        for (reason, n) in tally.rejected.iter().filter(|(_, n)| *n > 0) {
            metrics
                .rejected
                .get_or_create(&ReasonLabels { reason })
                .inc_by(*n);
        }
        metrics
            .last_applied_seconds
            .set(last.unix_ms() as f64 / 1000.0);
    }
}

/// A batch being applied on a blocking thread.
struct InFlight {
    index: Arc<Index>,
    last: FeedPosition,
    handle: tokio::task::JoinHandle<Tally>,
}

/// What a batch did, by outcome.
struct Tally {
    applied: u64,
    rejected: Vec<(&'static str, u64)>,
}

impl Tally {
    fn reject(&mut self, reason: &'static str) {
        match self.rejected.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.rejected.push((reason, 1)),
        }
    }
}

fn apply_batch(index: &Index, entries: &[RawEntry]) -> Tally {
    let mut tally = Tally {
        applied: 0,
        rejected: Vec::new(),
    };
    let mut logged = 0;
    for entry in entries {
        match event::parse_entry(&entry.fields) {
            Ok(Event::Change(change)) => match index.apply(change) {
                Applied::Applied => tally.applied += 1,
                Applied::Stale { .. } => tally.reject("stale"),
            },
            Ok(Event::Tombstone) => tally.reject("tombstone"),
            Err(rejection) => {
                tally.reject(rejection.reason());
                if logged < LOGGED_PER_BATCH {
                    // The rejection never carries a national ID; the entry ID locates it.
                    tracing::warn!(entry = %entry.id, reason = rejection.reason(), error = %rejection,
                        "change feed: entry skipped");
                }
                logged += 1;
            }
        }
    }
    if logged > LOGGED_PER_BATCH {
        tracing::warn!(
            more = logged - LOGGED_PER_BATCH,
            "change feed: more entries skipped in this batch"
        );
    }
    tally
}
