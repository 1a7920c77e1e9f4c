//! The relay's side of the stream epoch ([`crate::index::StreamEpoch`]): at the start of every
//! session it checks that Redis still holds everything the relay wrote, and when it does not
//! it starts a new epoch, so that every replica sees a reset and resynchronises from a
//! snapshot instead of carrying on without the lost entries.
//!
//! The relay remembers, in the records database (`eligd_relay_state`, updated in the same
//! statement that removes relayed rows from the outbox), the epoch it writes under and the
//! newest entry it wrote. Redis has lost entries the relay wrote when the epoch key is gone
//! or different, or when the stream's newest ID ever generated is older than the newest the
//! relay wrote: Redis restarted empty, or from an older RDB/AOF copy, or failed over to a
//! replica that had not received them. Those rows are no longer in the outbox, so only a
//! snapshot of the records table can bring them back to a replica.

use crate::feed::stream::{StreamError, StreamReader};
use crate::index::{FeedPosition, StreamEpoch};

/// What the relay remembered from its last session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub epoch: StreamEpoch,
    pub last_written: FeedPosition,
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
pub enum Decision {
    /// Write under this epoch, which Redis already holds.
    Keep(StreamEpoch),
    /// No epoch anywhere yet: create one (unless someone else does first).
    Create,
    /// Redis lost entries the relay wrote: replace the epoch.
    Replace { reason: &'static str },
}

pub fn decide(recorded: Option<Recorded>, found: InRedis) -> Decision {
    match (recorded, found.epoch) {
        (None, None) => Decision::Create,
        (None, Some(epoch)) => Decision::Keep(epoch),
        (Some(r), Some(epoch)) if epoch == r.epoch => {
            if found.last_generated >= r.last_written {
                Decision::Keep(epoch)
            } else {
                Decision::Replace {
                    reason: "the stream ends before the newest entry the relay wrote",
                }
            }
        }
        (Some(_), Some(_)) => Decision::Replace {
            reason: "the stream's epoch is not the one the relay wrote under",
        },
        (Some(_), None) => Decision::Replace {
            reason: "the stream's epoch key is gone",
        },
    }
}

/// Applies the decision against Redis and returns the epoch to write under.
pub async fn settle(
    reader: &mut StreamReader,
    recorded: Option<Recorded>,
) -> Result<(StreamEpoch, Option<&'static str>), StreamError> {
    let probe = reader.probe(None).await?;
    let found = InRedis {
        epoch: probe.epoch,
        last_generated: probe.info.map_or(FeedPosition::START, |i| i.last_generated),
    };
    match decide(recorded, found) {
        Decision::Keep(epoch) => Ok((epoch, None)),
        Decision::Create => Ok((reader.ensure_epoch().await?, None)),
        Decision::Replace { reason } => {
            let fresh = StreamEpoch::random().map_err(|e| StreamError::Reply {
                command: "SET",
                detail: format!("no random source: {e}"),
            })?;
            reader.set_epoch(fresh).await?;
            Ok((fresh, Some(reason)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ms: u64) -> FeedPosition {
        FeedPosition { ms, seq: 0 }
    }

    #[test]
    fn the_epoch_is_kept_only_while_redis_holds_everything_written() {
        let (e0, e1) = (StreamEpoch(10), StreamEpoch(11));
        let recorded = Some(Recorded {
            epoch: e0,
            last_written: p(50),
        });
        let found = |epoch, last| InRedis {
            epoch,
            last_generated: p(last),
        };
        assert_eq!(decide(None, found(None, 0)), Decision::Create);
        assert_eq!(decide(None, found(Some(e1), 7)), Decision::Keep(e1));
        assert_eq!(decide(recorded, found(Some(e0), 50)), Decision::Keep(e0));
        assert_eq!(decide(recorded, found(Some(e0), 90)), Decision::Keep(e0));
        // Restarted from an older copy: the epoch came back, the newest entries did not.
        assert!(matches!(
            decide(recorded, found(Some(e0), 49)),
            Decision::Replace { .. }
        ));
        // Restarted empty.
        assert!(matches!(
            decide(recorded, found(None, 0)),
            Decision::Replace { .. }
        ));
        // Another epoch, whoever set it: the relay cannot tell whether it came before or after
        // what it wrote, so it starts one of its own.
        assert!(matches!(
            decide(recorded, found(Some(e1), 90)),
            Decision::Replace { .. }
        ));
    }
}
