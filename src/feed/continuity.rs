//! Does the stream still hold every entry after our position? Asked before every batch is
//! applied, so a trimmed, deleted or replaced stream is noticed before the index silently
//! misses a change.
//!
//! Redis 7 tells us enough (XINFO STREAM): `entries-added` minus `length` is how many
//! entries were ever removed (trimmed or XDEL), `max-deleted-entry-id` the newest one XDEL
//! removed (trimming does not move it), `last-generated-id` the newest ever added. With our
//! position `p` (the last entry applied):
//! - `p` is still there and nothing after it was XDEL'd → complete;
//! - `p` is gone, entries came after it and the stream's head has moved past it →
//!   **trimmed**: what lay between is unreadable;
//! - the key is gone → **deleted**;
//! - the stream ends before `p` → **behind**: Redis came back from an older copy or failed
//!   over to a replica that lacked entries. Not a gap yet: the relay writes back what it
//!   still holds, with the same IDs, or starts a new epoch (then a reset). The feed waits.
//! - `p` is not in the stream, entries came after it, and the stream never lost an entry →
//!   the key was recreated, or entries were lost and others written since → **reset**.
//!
//! An entry removed between our read and the check shows as a gap too; that only happens
//! when we are at the retention edge already, and a needless resync is the safe mistake.
//!
//! Before all that, the stream must be the one our position belongs to: its epoch
//! (`<stream>:epoch`, see [`crate::index::StreamEpoch`]) must be the one recorded with our
//! position. A Redis that restarted empty or from an older copy can hold our position, or be
//! empty where we start from `0-0`, and still lack entries we never read; the relay gives the
//! stream a new epoch when that happens, so it shows here as a **reset**.

use crate::index::{FeedPosition, StreamEpoch};

/// What XINFO STREAM says about the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub length: u64,
    /// Entries ever added, including those since removed.
    pub entries_added: u64,
    pub first_entry: Option<FeedPosition>,
    pub last_generated: FeedPosition,
    pub max_deleted: FeedPosition,
}

/// Why the stream cannot take us from our position to its end.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Gap {
    #[error("the stream key no longer exists (our position is {position})")]
    Deleted { position: FeedPosition },
    #[error("entries after our position {position} were removed (trimmed or deleted; the stream now starts at {first})", first = DisplayFirst(*first_entry))]
    Trimmed {
        position: FeedPosition,
        first_entry: Option<FeedPosition>,
    },
    #[error("{removed} entries were removed from the stream and the snapshot records no position to replay from")]
    NoPosition { removed: u64 },
    #[error(
        "the stream does not hold our position {position} (recreated, or a failover lost entries; its newest entry is {last_generated})"
    )]
    Reset {
        position: FeedPosition,
        last_generated: FeedPosition,
    },
    #[error(
        "the stream ends at {last_generated}, before our position {position}: Redis came back from an older copy or failed over to a replica that lacked entries; waiting for the relay to write them back"
    )]
    Behind {
        position: FeedPosition,
        last_generated: FeedPosition,
    },
    #[error("the stream is not the one our position belongs to: its epoch is {found}, ours {ours} (Redis lost entries or was replaced)", found = DisplayEpoch(*found))]
    Epoch {
        ours: StreamEpoch,
        found: Option<StreamEpoch>,
    },
}

/// An epoch, or that the stream has none.
struct DisplayEpoch(Option<StreamEpoch>);

impl std::fmt::Display for DisplayEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(e) => write!(f, "{e}"),
            None => f.write_str("missing"),
        }
    }
}

/// Checks that the stream is the one our position belongs to. With no epoch of our own
/// (a snapshot that recorded none), any stream is taken as ours.
pub fn check_epoch(ours: Option<StreamEpoch>, found: Option<StreamEpoch>) -> Result<(), Gap> {
    match ours {
        Some(ours) if found != Some(ours) => Err(Gap::Epoch { ours, found }),
        _ => Ok(()),
    }
}

/// The stream's first entry, or that it is empty.
struct DisplayFirst(Option<FeedPosition>);

impl std::fmt::Display for DisplayFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(p) => write!(f, "{p}"),
            None => f.write_str("nothing (it is empty)"),
        }
    }
}

impl Gap {
    /// A closed label for `eligd_feed_gaps_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Gap::Deleted { .. } => "deleted",
            Gap::Trimmed { .. } | Gap::NoPosition { .. } => "trimmed",
            Gap::Reset { .. } | Gap::Epoch { .. } => "reset",
            Gap::Behind { .. } => "behind",
        }
    }

    /// Not (yet) a gap: the stream, still of our epoch, ends before our position. The relay
    /// writes the missing entries back with their own IDs when it still holds them, and
    /// starts a new epoch (a real gap) when it does not, so the feed waits, not resyncs.
    pub fn is_behind(&self) -> bool {
        matches!(self, Gap::Behind { .. })
    }
}

/// Checks that the stream holds every entry after `position`. `info` is `None` when the key
/// does not exist; `position_present` says whether the entry at `position` is in the stream.
/// No position (or `0-0`) means "from the very first entry".
pub fn check(
    position: Option<FeedPosition>,
    info: Option<&StreamInfo>,
    position_present: bool,
) -> Result<(), Gap> {
    let position = position.filter(|p| *p != FeedPosition::START);
    let Some(info) = info else {
        return match position {
            // Nothing was ever written, or we never read anything: nothing is missing yet.
            None => Ok(()),
            Some(position) => Err(Gap::Deleted { position }),
        };
    };
    let removed = info.entries_added.saturating_sub(info.length);
    let Some(p) = position else {
        return if removed == 0 {
            Ok(())
        } else {
            Err(Gap::NoPosition { removed })
        };
    };
    let trimmed = Gap::Trimmed {
        position: p,
        first_entry: info.first_entry,
    };
    if info.max_deleted > p {
        return Err(trimmed);
    }
    if position_present || info.last_generated == p {
        // Our entry is there, or it was the newest and nothing came after it.
        return Ok(());
    }
    if info.last_generated < p {
        return Err(Gap::Behind {
            position: p,
            last_generated: info.last_generated,
        });
    }
    match info.first_entry {
        // Only our own entry was deleted from the middle: everything after it is there.
        Some(first) if first < p && info.max_deleted == p => Ok(()),
        _ if removed > 0 => Err(trimmed),
        _ => Err(Gap::Reset {
            position: p,
            last_generated: info.last_generated,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ms: u64, seq: u64) -> FeedPosition {
        FeedPosition { ms, seq }
    }

    /// A stream holding entries `first..=last` (ms, seq 0) after `removed` were removed.
    fn info(first: u64, last: u64, removed: u64, max_deleted: FeedPosition) -> StreamInfo {
        StreamInfo {
            length: last - first + 1,
            entries_added: last - first + 1 + removed,
            first_entry: Some(p(first, 0)),
            last_generated: p(last, 0),
            max_deleted,
        }
    }

    const NONE_DELETED: FeedPosition = FeedPosition::START;

    #[test]
    fn an_untouched_stream_is_complete_from_any_position_it_holds() {
        let i = info(1, 100, 0, NONE_DELETED);
        assert_eq!(check(Some(p(50, 0)), Some(&i), true), Ok(()));
        assert_eq!(check(None, Some(&i), false), Ok(()));
        assert_eq!(check(Some(FeedPosition::START), Some(&i), false), Ok(()));
        assert_eq!(check(Some(p(100, 0)), Some(&i), true), Ok(()));
    }

    #[test]
    fn trimming_behind_us_is_fine_and_past_us_is_a_gap() {
        let behind = info(40, 100, 39, NONE_DELETED);
        assert_eq!(check(Some(p(50, 0)), Some(&behind), true), Ok(()));
        let past = info(61, 100, 60, NONE_DELETED);
        let gap = check(Some(p(50, 0)), Some(&past), false).unwrap_err();
        assert_eq!(gap.kind(), "trimmed");
        assert!(
            gap.to_string().contains("50-0") && gap.to_string().contains("61-0"),
            "{gap}"
        );
        // Trimmed to nothing after entries followed ours.
        let empty = StreamInfo {
            length: 0,
            entries_added: 100,
            first_entry: None,
            last_generated: p(100, 0),
            max_deleted: NONE_DELETED,
        };
        let gap = check(Some(p(50, 0)), Some(&empty), false).unwrap_err();
        assert!(gap.to_string().contains("empty"), "{gap}");
    }

    #[test]
    fn our_entry_gone_with_nothing_after_it_is_fine() {
        let empty = StreamInfo {
            length: 0,
            entries_added: 50,
            first_entry: None,
            last_generated: p(50, 0),
            max_deleted: NONE_DELETED,
        };
        assert_eq!(check(Some(p(50, 0)), Some(&empty), false), Ok(()));
    }

    #[test]
    fn deleting_only_our_entry_is_fine_and_one_after_it_is_a_gap() {
        let ours = info(1, 100, 1, p(50, 0));
        assert_eq!(check(Some(p(50, 0)), Some(&ours), false), Ok(()));
        let later = info(1, 100, 1, p(70, 0));
        assert_eq!(
            check(Some(p(50, 0)), Some(&later), true)
                .unwrap_err()
                .kind(),
            "trimmed"
        );
    }

    #[test]
    fn no_position_needs_the_whole_history() {
        let i = info(10, 100, 9, NONE_DELETED);
        let gap = check(None, Some(&i), false).unwrap_err();
        assert_eq!(gap, Gap::NoPosition { removed: 9 });
        assert_eq!(gap.kind(), "trimmed");
    }

    #[test]
    fn a_missing_key_is_a_gap_only_when_we_read_from_it() {
        assert_eq!(check(None, None, false), Ok(()));
        assert_eq!(
            check(Some(p(5, 1)), None, false).unwrap_err(),
            Gap::Deleted { position: p(5, 1) }
        );
    }

    #[test]
    fn another_epoch_is_a_reset_and_no_epoch_of_our_own_takes_any() {
        let (a, b) = (StreamEpoch(1), StreamEpoch(2));
        assert_eq!(check_epoch(Some(a), Some(a)), Ok(()));
        assert_eq!(check_epoch(None, Some(b)), Ok(()));
        assert_eq!(check_epoch(None, None), Ok(()));
        let gap = check_epoch(Some(a), Some(b)).unwrap_err();
        assert_eq!(gap.kind(), "reset");
        assert!(gap.to_string().contains(&b.to_string()), "{gap}");
        let gap = check_epoch(Some(a), None).unwrap_err();
        assert!(gap.to_string().contains("missing"), "{gap}");
    }

    #[test]
    fn a_stream_ending_before_us_is_behind_and_one_without_our_entry_after_it_a_reset() {
        let older = info(1, 20, 0, NONE_DELETED);
        let behind = check(Some(p(50, 0)), Some(&older), false).unwrap_err();
        assert!(behind.is_behind(), "{behind}");
        assert_eq!(behind.kind(), "behind");
        let newer = info(60, 90, 0, NONE_DELETED);
        assert_eq!(
            check(Some(p(50, 0)), Some(&newer), false)
                .unwrap_err()
                .kind(),
            "reset"
        );
    }
}
