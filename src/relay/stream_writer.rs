//! The Redis side of the relay: appending native events to the stream in one pipelined round
//! trip (with Redis's IDs, or with their own when written back), `WAIT` for replicas, and
//! trimming. Everything goes over the same connection as the epoch checks, through
//! [`crate::resp`], so TLS and Sentinel work here exactly as for the feed.

use std::time::Duration;

use crate::feed::native::NativeEvent;
use crate::feed::stream::{StreamError, StreamReader};
use crate::index::FeedPosition;
use crate::resp::Reply;

/// A pipelined XADD of thousands of events, or a WAIT, may take this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

fn reply_error(command: &'static str, detail: impl Into<String>) -> StreamError {
    StreamError::Reply {
        command,
        detail: detail.into(),
    }
}

/// Appends `events` in order; `ids` are their own IDs (written back), or `None` for new
/// IDs. Returns the ID of each.
pub async fn append(
    reader: &mut StreamReader,
    events: &[(Option<FeedPosition>, &NativeEvent)],
) -> Result<Vec<FeedPosition>, StreamError> {
    let key = reader.key().to_string();
    let ids: Vec<String> = events
        .iter()
        .map(|(id, _)| id.map_or_else(|| "*".to_string(), |p| p.to_string()))
        .collect();
    let commands: Vec<Vec<&[u8]>> = events
        .iter()
        .zip(&ids)
        .map(|((_, event), id)| {
            let mut args: Vec<&[u8]> = vec![b"XADD", key.as_bytes(), id.as_bytes()];
            for (name, value) in &event.fields {
                args.push(name.as_bytes());
                args.push(value.as_bytes());
            }
            args
        })
        .collect();
    let replies = reader
        .connection()
        .pipeline(&commands, WRITE_TIMEOUT)
        .await?;
    replies
        .into_iter()
        .map(|reply| match reply {
            Reply::Error(e) => Err(reply_error("XADD", e)),
            other => other
                .bytes()
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| reply_error("XADD", "the reply is not an entry ID")),
        })
        .collect()
}

/// `WAIT replicas timeout`: how many replicas hold everything written on this connection.
pub async fn wait(
    reader: &mut StreamReader,
    replicas: u64,
    timeout: Duration,
) -> Result<u64, StreamError> {
    let (n, ms) = (replicas.to_string(), timeout.as_millis().to_string());
    let reply = reader
        .connection()
        .command(
            &[b"WAIT", n.as_bytes(), ms.as_bytes()],
            timeout + WRITE_TIMEOUT,
        )
        .await?;
    match reply {
        Reply::Int(acked) => Ok(acked.max(0) as u64),
        _ => Err(reply_error("WAIT", "not an integer")),
    }
}

/// Trims entries older than `min_id` (approximately: whole nodes only).
pub async fn trim(reader: &mut StreamReader, min_id: FeedPosition) -> Result<u64, StreamError> {
    let key = reader.key().to_string();
    let min = min_id.to_string();
    let reply = reader
        .connection()
        .command(
            &[b"XTRIM", key.as_bytes(), b"MINID", b"~", min.as_bytes()],
            WRITE_TIMEOUT,
        )
        .await?;
    match reply {
        Reply::Int(n) => Ok(n.max(0) as u64),
        _ => Err(reply_error("XTRIM", "not an integer")),
    }
}

/// Writes `<stream>:confirmed` = `upto`: a write of the confirming connection's own, after
/// everything up to `upto`, which a `WAIT` on that connection then covers.
pub async fn mark(reader: &mut StreamReader, upto: FeedPosition) -> Result<(), StreamError> {
    let key = format!("{}:confirmed", reader.key());
    let value = upto.to_string();
    reader
        .connection()
        .command(&[b"SET", key.as_bytes(), value.as_bytes()], WRITE_TIMEOUT)
        .await?;
    Ok(())
}

/// A round trip, so a Redis that went away is noticed while idle.
pub async fn ping(reader: &mut StreamReader) -> Result<(), StreamError> {
    reader
        .connection()
        .command(&[b"PING"], crate::resp::COMMAND_TIMEOUT)
        .await?;
    Ok(())
}
