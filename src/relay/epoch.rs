//! The relay's side of the stream epoch ([`crate::index::StreamEpoch`]): at the start of every
//! session it checks that Redis still holds everything the relay wrote, and when it does not
//! it starts a new epoch, so that every replica sees a reset and resynchronises from a
//! snapshot instead of carrying on without the lost entries.
//!
//! The relay remembers, in the records database (`eligd_relay_state`, updated in the same
//! statement that marks rows relayed), the epoch it writes under, the newest entry it wrote,
//! and the newest entry whose kept outbox row it has deleted. Redis has lost entries the
//! relay wrote when the epoch key is gone, or when the stream's newest ID ever generated is
//! older than the newest the relay wrote: Redis restarted empty, or from an older RDB/AOF
//! copy, or failed over to a replica that had not received them. While the outbox still
//! keeps every lost entry (nothing after what Redis holds was pruned), the relay writes them
//! back with their own IDs and the epoch stays: replicas, which wait while the stream is
//! behind them, carry on. Otherwise only a snapshot of the records table can bring the lost
//! changes to a replica, so the relay starts a new epoch and every replica resyncs.

use crate::feed::stream::{StreamError, StreamReader};
use crate::index::{FeedPosition, StreamEpoch};

/// What the relay remembered from its last session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub epoch: StreamEpoch,
    pub last_written: FeedPosition,
    /// The newest entry whose outbox row was deleted: entries after it are all still kept.
    pub pruned_through: FeedPosition,
}

/// What Redis holds now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InRedis {
    pub epoch: Option<StreamEpoch>,
    /// The newest entry ID the stream ever generated (`0-0` when there is no stream).
    pub last_generated: FeedPosition,
}

/// What the session does about the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochDecision {
    /// Write under this epoch, which Redis already holds.
    Keep(StreamEpoch),
    /// No epoch anywhere yet: create one (unless someone else does first).
    Create,
    /// Redis lost entries after `after` (or the epoch key), and the outbox still keeps every
    /// one of them: write them back with their own IDs (and the epoch key when it is gone),
    /// and carry on under `epoch`.
    Restore {
        epoch: StreamEpoch,
        after: FeedPosition,
        set_epoch: bool,
    },
    /// Redis lost entries the relay no longer holds: replace the epoch.
    Replace { reason: &'static str },
}

pub fn decide(recorded: Option<Recorded>, found: InRedis) -> EpochDecision {
    let Some(r) = recorded else {
        return found
            .epoch
            .map_or(EpochDecision::Create, EpochDecision::Keep);
    };
    match found.epoch {
        Some(epoch) if epoch != r.epoch => EpochDecision::Replace {
            reason: "the stream's epoch is not the one the relay wrote under",
        },
        Some(epoch) if found.last_generated >= r.last_written => EpochDecision::Keep(epoch),
        _ if r.pruned_through <= found.last_generated => EpochDecision::Restore {
            epoch: r.epoch,
            after: found.last_generated,
            set_epoch: found.epoch.is_none(),
        },
        Some(_) => EpochDecision::Replace {
            reason: "the stream ends before the newest entry the relay wrote, and the outbox no longer keeps all the entries lost",
        },
        None => EpochDecision::Replace {
            reason: "the stream's epoch key is gone, and the outbox no longer keeps every entry the stream held",
        },
    }
}

/// What Redis holds now, for [`decide`].
pub async fn in_redis(reader: &mut StreamReader) -> Result<InRedis, StreamError> {
    let probe = reader.probe(None).await?;
    Ok(InRedis {
        epoch: probe.epoch,
        last_generated: probe.info.map_or(FeedPosition::START, |i| i.last_generated),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ms: u64) -> FeedPosition {
        FeedPosition { ms, seq: 0 }
    }

    #[test]
    fn the_epoch_is_kept_while_redis_holds_everything_and_restored_while_the_outbox_does() {
        let (e0, e1) = (StreamEpoch(10), StreamEpoch(11));
        let recorded = |pruned| {
            Some(Recorded {
                epoch: e0,
                last_written: p(50),
                pruned_through: p(pruned),
            })
        };
        let found = |epoch, last| InRedis {
            epoch,
            last_generated: p(last),
        };
        assert_eq!(decide(None, found(None, 0)), EpochDecision::Create);
        assert_eq!(decide(None, found(Some(e1), 7)), EpochDecision::Keep(e1));
        assert_eq!(
            decide(recorded(0), found(Some(e0), 50)),
            EpochDecision::Keep(e0)
        );
        assert_eq!(
            decide(recorded(0), found(Some(e0), 90)),
            EpochDecision::Keep(e0)
        );
        // Restarted from an older copy: the epoch came back, the newest entries did not, and
        // the outbox still keeps everything after what came back.
        assert_eq!(
            decide(recorded(40), found(Some(e0), 45)),
            EpochDecision::Restore {
                epoch: e0,
                after: p(45),
                set_epoch: false
            }
        );
        // ... but not when rows after it were already deleted.
        assert!(matches!(
            decide(recorded(46), found(Some(e0), 45)),
            EpochDecision::Replace { .. }
        ));
        // Restarted empty: restored whole while nothing was ever deleted.
        assert_eq!(
            decide(recorded(0), found(None, 0)),
            EpochDecision::Restore {
                epoch: e0,
                after: p(0),
                set_epoch: true
            }
        );
        assert!(matches!(
            decide(recorded(1), found(None, 0)),
            EpochDecision::Replace { .. }
        ));
        // Another epoch, whoever set it: the relay cannot tell whether it came before or after
        // what it wrote, so it starts one of its own.
        assert!(matches!(
            decide(recorded(0), found(Some(e1), 90)),
            EpochDecision::Replace { .. }
        ));
    }
}
