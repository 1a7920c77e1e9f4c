//! Reading the stream: plain `XREAD` on the feed's own connection ([`resp`]), and the
//! XINFO/XRANGE probe that the continuity check needs.
//!
//! A blocking read's deadline is its block time plus a margin, so a Redis that stops
//! answering (paused, or a dead network) is noticed within seconds; a general client's short
//! default response timeout would instead fail every blocking read that waits longer.
//!
//! [`resp`]: crate::redis

use std::time::Duration;

use super::continuity::StreamInfo;
use crate::index::{FeedPosition, StreamEpoch};
use crate::redis::{self, Connection, Frame, RawEntry, RedisTarget, RespError, COMMAND_TIMEOUT};

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("redis: {0}")]
    Redis(#[from] RespError),
    #[error("applying a batch stopped unexpectedly: {0}")]
    Apply(String),
    #[error("unexpected reply to {command}: {detail}")]
    Frame {
        command: &'static str,
        detail: String,
    },
}

fn reply_error(command: &'static str, detail: impl Into<String>) -> StreamError {
    StreamError::Frame {
        command,
        detail: detail.into(),
    }
}

/// What the continuity check needs: the stream's epoch and state, and whether our entry is
/// in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// `None` when the epoch key does not exist.
    pub epoch: Option<StreamEpoch>,
    /// `None` when the key does not exist.
    pub info: Option<StreamInfo>,
    pub position_present: bool,
}

pub struct StreamReader {
    connection: Connection,
    key: String,
    epoch_key: String,
}

/// How long past its block time a blocking read may take before Redis counts as gone.
const BLOCK_MARGIN: Duration = Duration::from_secs(2);

impl StreamReader {
    pub async fn connect(target: &RedisTarget, key: &str) -> Result<StreamReader, StreamError> {
        Ok(StreamReader {
            connection: target.connect().await?,
            key: key.to_string(),
            epoch_key: StreamEpoch::key(key),
        })
    }

    /// The connection, for the relay's own commands (XADD, WAIT, XTRIM).
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.connection
    }

    /// The stream key read.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Up to `count` entries after `after` (from the start when `None`), waiting up to
    /// `block` for the first one when given.
    pub async fn read(
        &mut self,
        after: Option<FeedPosition>,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<RawEntry>, StreamError> {
        let count = count.to_string();
        let from = after.unwrap_or(FeedPosition::START).to_string();
        let block_ms = block.map(|b| (b.as_millis().max(1) as u64).to_string());
        let mut args: Vec<&[u8]> = vec![b"XREAD", b"COUNT", count.as_bytes()];
        if let Some(ms) = &block_ms {
            args.extend([&b"BLOCK"[..], ms.as_bytes()]);
        }
        args.extend([&b"STREAMS"[..], self.key.as_bytes(), from.as_bytes()]);
        let timeout = block.map_or(COMMAND_TIMEOUT, |b| b + BLOCK_MARGIN);
        let reply = self.connection.raw(&args, timeout).await?;
        Ok(redis::decode_xread(reply)?)
    }

    /// The stream's epoch (`None` when the key does not exist).
    pub async fn epoch(&mut self) -> Result<Option<StreamEpoch>, StreamError> {
        let reply = self
            .connection
            .command(&[b"GET", self.epoch_key.as_bytes()], COMMAND_TIMEOUT)
            .await?;
        match reply {
            Frame::Nil => Ok(None),
            other => {
                let text = other.bytes().and_then(|b| std::str::from_utf8(b).ok());
                text.and_then(|t| t.parse().ok()).map(Some).ok_or_else(|| {
                    reply_error(
                        "GET",
                        format!(
                            "{} does not hold a stream epoch (32 hexadecimal digits)",
                            self.epoch_key
                        ),
                    )
                })
            }
        }
    }

    /// The stream's epoch, creating one when there is none yet (`SET NX`: whoever comes
    /// first, every reader then agrees). Snapshot builds and the relay call this; replicas
    /// only read it.
    pub async fn ensure_epoch(&mut self) -> Result<StreamEpoch, StreamError> {
        let fresh = StreamEpoch::random()
            .map_err(|e| reply_error("SET", format!("no random source: {e}")))?
            .to_string();
        self.connection
            .command(
                &[b"SET", self.epoch_key.as_bytes(), fresh.as_bytes(), b"NX"],
                COMMAND_TIMEOUT,
            )
            .await?;
        self.epoch()
            .await?
            .ok_or_else(|| reply_error("GET", "the epoch just set is gone"))
    }

    /// Replaces the stream's epoch (the relay, when Redis lost entries it wrote).
    pub async fn set_epoch(&mut self, epoch: StreamEpoch) -> Result<(), StreamError> {
        let value = epoch.to_string();
        self.connection
            .command(
                &[b"SET", self.epoch_key.as_bytes(), value.as_bytes()],
                COMMAND_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    /// The stream's epoch and state, and whether the entry at `position` is still in it.
    pub async fn probe(&mut self, position: Option<FeedPosition>) -> Result<Probe, StreamError> {
        let epoch = self.epoch().await?;
        let key = self.key.as_bytes();
        let position_present = match position {
            Some(p) => {
                let id = p.to_string();
                let args: [&[u8]; 4] = [b"XRANGE", key, id.as_bytes(), id.as_bytes()];
                let reply = self.connection.raw(&args, COMMAND_TIMEOUT).await?;
                !redis::decode_entries(reply)?.is_empty()
            }
            None => false,
        };
        let info = match self
            .connection
            .command(&[b"XINFO", b"STREAM", key], COMMAND_TIMEOUT)
            .await
        {
            Ok(reply) => Some(parse_xinfo(reply)?),
            Err(RespError::Server(e)) if e.to_ascii_lowercase().contains("no such key") => None,
            Err(e) => return Err(e.into()),
        };
        Ok(Probe {
            epoch,
            info,
            position_present,
        })
    }
}

fn position(reply: &Frame) -> Result<FeedPosition, StreamError> {
    reply
        .bytes()
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| reply_error("XINFO STREAM", "an entry ID is not ms-seq"))
}

/// The fields of XINFO STREAM that the continuity check needs (Redis 7 or newer).
pub fn parse_xinfo(reply: Frame) -> Result<StreamInfo, StreamError> {
    let Frame::Array(items) = reply else {
        return Err(reply_error("XINFO STREAM", "not a list"));
    };
    let (mut length, mut entries_added, mut first_entry) = (None, None, None);
    let (mut last_generated, mut max_deleted) = (None, None);
    for pair in items.chunks(2) {
        let [name, value] = pair else {
            return Err(reply_error("XINFO STREAM", "odd number of items"));
        };
        match (name.bytes(), value) {
            (Some(b"length"), Frame::Int(n)) => length = Some((*n).max(0) as u64),
            (Some(b"entries-added"), Frame::Int(n)) => entries_added = Some((*n).max(0) as u64),
            (Some(b"last-generated-id"), v) => last_generated = Some(position(v)?),
            (Some(b"max-deleted-entry-id"), v) => max_deleted = Some(position(v)?),
            (Some(b"first-entry"), Frame::Array(parts)) => {
                if let Some(id) = parts.first() {
                    first_entry = Some(position(id)?);
                }
            }
            _ => {}
        }
    }
    let missing = |field: &str| {
        reply_error(
            "XINFO STREAM",
            format!("no {field} (Redis 7 or newer is needed to detect gaps)"),
        )
    };
    Ok(StreamInfo {
        length: length.ok_or_else(|| missing("length"))?,
        entries_added: entries_added.ok_or_else(|| missing("entries-added"))?,
        first_entry,
        last_generated: last_generated.ok_or_else(|| missing("last-generated-id"))?,
        max_deleted: max_deleted.ok_or_else(|| missing("max-deleted-entry-id"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn xinfo_fields_are_read_from_a_flat_list() {
        let reply = Frame::Array(vec![
            bulk("length"),
            Frame::Int(2),
            bulk("last-generated-id"),
            bulk("9-1"),
            bulk("max-deleted-entry-id"),
            bulk("3-0"),
            bulk("entries-added"),
            Frame::Int(5),
            bulk("first-entry"),
            Frame::Array(vec![
                bulk("8-0"),
                Frame::Array(vec![bulk("op"), bulk("upsert")]),
            ]),
            bulk("last-entry"),
            Frame::Nil,
        ]);
        let info = parse_xinfo(reply).unwrap();
        assert_eq!(info.length, 2);
        assert_eq!(info.entries_added, 5);
        assert_eq!(info.first_entry, Some(FeedPosition { ms: 8, seq: 0 }));
        assert_eq!(info.last_generated, FeedPosition { ms: 9, seq: 1 });
        assert_eq!(info.max_deleted, FeedPosition { ms: 3, seq: 0 });
    }

    #[test]
    fn xinfo_without_max_deleted_says_redis_7_is_needed() {
        let reply = Frame::Array(vec![
            bulk("length"),
            Frame::Int(0),
            bulk("last-generated-id"),
            bulk("0-0"),
        ]);
        let err = parse_xinfo(reply).unwrap_err().to_string();
        assert!(err.contains("Redis 7"), "{err}");
    }

    #[test]
    fn xinfo_that_is_not_a_list_is_an_error() {
        assert!(parse_xinfo(Frame::Int(1)).is_err());
        assert!(parse_xinfo(Frame::Array(vec![bulk("length")])).is_err());
        let bad_id = Frame::Array(vec![bulk("last-generated-id"), bulk("x")]);
        assert!(parse_xinfo(bad_id).is_err());
    }
}
