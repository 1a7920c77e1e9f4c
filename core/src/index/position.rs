//! Where the index stands in the change feed: a stream entry ID ([`FeedPosition`]) and the
//! identity of the stream it belongs to ([`StreamEpoch`]).
//!
//! A position alone cannot tell two streams apart: a Redis restarted empty, or from an older
//! copy, hands out entry IDs again, and a replica whose position it still holds (or which
//! starts from the stream's beginning) would carry on without the entries that were lost.
//! So the stream carries an epoch (a random 128-bit value in the key `<stream>:epoch`), which
//! is recorded with every position a snapshot or a replica keeps, and which the relay replaces
//! whenever Redis comes back without entries it had written. A position is only meaningful in
//! its own epoch.

/// A position in the change feed (a Redis stream entry ID `ms-seq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedPosition {
    pub ms: u64,
    pub seq: u64,
}

impl FeedPosition {
    /// The position before every entry (`0-0`).
    pub const START: FeedPosition = FeedPosition { ms: 0, seq: 0 };

    /// When the entry was added: the milliseconds part of its ID (Unix time).
    pub fn unix_ms(self) -> u64 {
        self.ms
    }
}

/// A stream entry ID that is not `ms-seq` with two decimal u64 parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a stream entry ID (ms-seq)")]
pub struct BadPosition(pub String);

impl std::str::FromStr for FeedPosition {
    type Err = BadPosition;
    fn from_str(s: &str) -> Result<FeedPosition, BadPosition> {
        let bad = || BadPosition(s.chars().take(45).collect());
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(FeedPosition {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for FeedPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The identity of one life of the change stream (`<stream>:epoch`, 32 hex digits). A new
/// epoch means: positions of the previous one say nothing about this stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamEpoch(pub u128);

impl StreamEpoch {
    /// A fresh random epoch.
    pub fn random() -> Result<StreamEpoch, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(StreamEpoch(u128::from_le_bytes(bytes)))
    }

    /// The key that holds the epoch of `stream`.
    pub fn key(stream: &str) -> String {
        format!("{stream}:epoch")
    }
}

/// A value that is not 32 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a stream epoch (32 hexadecimal digits)")]
pub struct BadEpoch(pub String);

impl std::str::FromStr for StreamEpoch {
    type Err = BadEpoch;
    fn from_str(s: &str) -> Result<StreamEpoch, BadEpoch> {
        let bad = || BadEpoch(s.chars().take(40).collect());
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u128::from_str_radix(s, 16)
            .map(StreamEpoch)
            .map_err(|_| bad())
    }
}

impl std::fmt::Display for StreamEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_epochs_round_trip_and_refuse_garbage() {
        let p: FeedPosition = "1700000000000-7".parse().unwrap();
        assert_eq!(p.to_string(), "1700000000000-7");
        for bad in [
            "",
            "1-",
            "-1",
            "1-2-3",
            "a-1",
            "1 -2",
            "99999999999999999999-0",
        ] {
            assert!(bad.parse::<FeedPosition>().is_err(), "{bad}");
        }
        let e = StreamEpoch::random().unwrap();
        assert_eq!(e.to_string().parse::<StreamEpoch>(), Ok(e));
        assert_ne!(e, StreamEpoch::random().unwrap());
        for bad in ["", "abc", &"g".repeat(32), &"0".repeat(33)] {
            assert!(bad.parse::<StreamEpoch>().is_err(), "{bad}");
        }
        assert_eq!(StreamEpoch::key("eligd:changes"), "eligd:changes:epoch");
    }
}
