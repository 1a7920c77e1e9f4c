//! A relay session's writes to the stream: settling the epoch, writing back what Redis lost,
//! and appending batches, every one of them checked and fenced in Redis (`stream_writer.rs`,
//! `fence.rs`) and cut into scripts of [`SCRIPT_ENTRIES`] so Redis is never held long. Apart
//! from the session loop (`mod.rs`), which decides when to write.

use super::epoch::{self, EpochDecision};
use super::stream_writer::{self, Checked};
use super::{fence, outbox, versions, RelayError, RelaySession, SCRIPT_ENTRIES};
use crate::feed::native::NativeEvent;
use crate::feed::stream::StreamError;
use crate::index::{FeedPosition, StreamEpoch};

impl RelaySession<'_> {
    /// Checks that Redis still holds what the relay wrote ([`epoch`]): writes back what it
    /// lost while the outbox keeps it, or starts a new stream epoch when it does not.
    pub(super) async fn settle_epoch(&mut self) -> Result<(), RelayError> {
        let stream = &self.args.stream;
        let recorded = outbox::recorded(self.pg, stream).await?;
        let found = epoch::in_redis(&mut self.redis).await?;
        self.last_written = FeedPosition::START;
        let owed = std::mem::take(&mut self.table_behind);
        let decision = if owed {
            EpochDecision::Replace {
                reason: "the records database is behind versions the stream carries (failover or restore)",
            }
        } else {
            epoch::decide(recorded, found)
        };
        self.epoch = match decision {
            EpochDecision::Keep(e) => {
                self.last_written = recorded.map_or(FeedPosition::START, |r| r.last_written);
                e
            }
            EpochDecision::Create => self.set_epoch(fresh_epoch()?, true).await?,
            EpochDecision::Restore {
                epoch,
                after,
                set_epoch,
            } => {
                if set_epoch {
                    self.set_epoch(epoch, false).await?;
                }
                self.epoch = epoch;
                self.last_written = after;
                let restored = self.restore(after).await?;
                tracing::warn!(restored, after = %after, epoch = %epoch,
                    "relay: Redis came back without entries the relay had written; wrote them back \
                     from the outbox with their own IDs (replicas waiting on the stream carry on)");
                epoch
            }
            EpochDecision::Replace { reason } => {
                let fresh = self.set_epoch(fresh_epoch()?, false).await?;
                self.metrics.epochs_replaced.inc();
                tracing::error!(reason, new_epoch = %fresh,
                    "relay: Redis lost stream entries the relay no longer keeps; started a new stream epoch. \
                     Every replica reports a reset until it loads a snapshot of the new epoch \
                     (eligd snapshot build --from-postgres … --redis-url … --out <snapshot dir>)");
                fresh
            }
        };
        outbox::record_epoch(self.pg, stream, self.epoch).await?;
        if owed {
            versions::epoch_paid(self.pg, stream).await?;
        }
        Ok(())
    }

    /// Sets the stream's epoch under the fence (only when it has none: `only_if_absent`);
    /// returns the epoch the stream has.
    async fn set_epoch(
        &mut self,
        epoch: StreamEpoch,
        only_if_absent: bool,
    ) -> Result<StreamEpoch, RelayError> {
        match fence::set_epoch(&mut self.redis, self.token, epoch, only_if_absent).await? {
            fence::Fenced::Done(set) => Ok(set),
            fence::Fenced::Deposed(newest) => Err(self.deposed(newest)),
        }
    }

    /// One checked write of `batch` under this session's token, epoch and newest entry.
    async fn write_checked(
        &mut self,
        batch: &[(Option<FeedPosition>, &NativeEvent)],
        max_version: i64,
    ) -> Result<Checked, RelayError> {
        Ok(stream_writer::append_checked(
            &mut self.redis,
            self.token,
            self.epoch,
            self.last_written,
            batch,
            max_version,
        )
        .await?)
    }

    fn deposed(&self, newest: i64) -> RelayError {
        RelayError::Deposed {
            mine: self.token,
            newest,
        }
    }

    /// Writes back every kept entry after `after`, with its own ID, in stream order.
    async fn restore(&mut self, after: FeedPosition) -> Result<u64, RelayError> {
        let kept = outbox::kept_after(self.pg, after).await?;
        let mut restored = 0;
        for chunk in kept.chunks(SCRIPT_ENTRIES) {
            let events: Vec<(FeedPosition, NativeEvent)> = chunk
                .iter()
                .filter_map(|(id, row)| outbox::to_event(row).ok().map(|e| (*id, e)))
                .collect();
            let batch: Vec<(Option<FeedPosition>, &NativeEvent)> =
                events.iter().map(|(id, e)| (Some(*id), e)).collect();
            let top = chunk.iter().map(|(_, row)| row.version).max().unwrap_or(0);
            match self.write_checked(&batch, top).await? {
                Checked::Appended(_) => {}
                Checked::Deposed(newest) => return Err(self.deposed(newest)),
                Checked::Lost(_) => {
                    return Err(StreamError::Frame {
                        command: "EVAL",
                        detail: "the stream changed again while the relay wrote back what it lost"
                            .into(),
                    }
                    .into())
                }
            }
            if let Some((last, _)) = events.last() {
                self.last_written = self.last_written.max(*last);
            }
            restored += batch.len() as u64;
        }
        self.metrics.restored.inc_by(restored);
        if let Some((last, _)) = kept.last() {
            self.wrote(*last);
            self.last_written = self.last_written.max(*last);
        }
        Ok(restored)
    }

    /// Appends new events while the stream still holds what the relay wrote; when it no
    /// longer does, settles the epoch as a new session would (writing back what was lost,
    /// or starting a new epoch), then appends.
    pub(super) async fn append_checked(
        &mut self,
        batch: &[&NativeEvent],
        max_version: i64,
    ) -> Result<Vec<FeedPosition>, RelayError> {
        let batch: Vec<(Option<FeedPosition>, &NativeEvent)> =
            batch.iter().map(|e| (None, *e)).collect();
        let mut ids = Vec::with_capacity(batch.len());
        for (n, chunk) in batch.chunks(SCRIPT_ENTRIES).enumerate() {
            let written = self.append_chunk(chunk, max_version, n == 0).await?;
            if let Some(last) = written.iter().max() {
                // The next chunk's check covers this one.
                self.last_written = self.last_written.max(*last);
            }
            ids.extend(written);
        }
        Ok(ids)
    }

    /// One script's worth of a batch. A loss found before the first chunk is settled and the
    /// chunk sent again; one found later (part of the batch may be lost with it, and none of
    /// it is marked relayed yet) is settled and ends the session, which sends the whole batch
    /// again.
    async fn append_chunk(
        &mut self,
        chunk: &[(Option<FeedPosition>, &NativeEvent)],
        max_version: i64,
        first: bool,
    ) -> Result<Vec<FeedPosition>, RelayError> {
        for _ in 0..2 {
            match self.write_checked(chunk, max_version).await? {
                Checked::Appended(ids) => return Ok(ids),
                Checked::Lost(found) => {
                    self.lost(found).await?;
                    if !first {
                        return Err(StreamError::Frame {
                            command: "EVAL",
                            detail: "the stream lost part of a batch; the batch is sent again"
                                .into(),
                        }
                        .into());
                    }
                }
                Checked::Deposed(newest) => return Err(self.deposed(newest)),
            }
        }
        Err(StreamError::Frame {
            command: "EVAL",
            detail: "the stream changed again while the relay settled its epoch".into(),
        }
        .into())
    }

    /// Redis no longer holds what the relay wrote, though the connection never closed.
    pub(super) async fn lost(&mut self, found: epoch::InRedis) -> Result<(), RelayError> {
        self.metrics.losses_noticed.inc();
        tracing::warn!(
            epoch = %self.epoch,
            last_written = %self.last_written,
            found_epoch = %found.epoch.map_or_else(|| "none".to_string(), |e| e.to_string()),
            found_last = %found.last_generated,
            "relay: the stream no longer holds what the relay wrote (Redis restarted from an older copy \
             or empty, without closing the connection); checking the epoch as a new session would"
        );
        self.settle_epoch().await
    }
}

/// A new random stream epoch.
fn fresh_epoch() -> Result<StreamEpoch, RelayError> {
    StreamEpoch::random().map_err(|e| {
        StreamError::Frame {
            command: "SET",
            detail: format!("no random source: {e}"),
        }
        .into()
    })
}
