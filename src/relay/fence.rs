//! Fencing the relay (issue 23, decision 0008): only the holder of the relay lock writes the
//! stream, even when a deposed relay's write arrives late.
//!
//! The PostgreSQL advisory lock says who *should* write, but a relay that lost its database
//! session does not know it yet, and a write it sent before (held in a stalled network path)
//! may land after its successor's. So every acquisition of the lock draws a **token** from
//! the records database (`eligd_relay_fence`, one more each time), and Redis keeps the newest
//! token it has seen in `<stream>:fence`. Every write of the relay is a script that first
//! compares: an older token is refused (nothing written, the relay steps down), a newer one
//! raises the fence. A new session raises it before anything else ([`claim`]), so from the
//! moment the successor is active, no write of its predecessor lands.

use std::time::Duration;

use crate::feed::stream::{StreamError, StreamReader};
use crate::index::StreamEpoch;
use crate::redis::Frame;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The Redis key holding the newest token seen for `stream`.
pub fn key(stream: &str) -> String {
    format!("{stream}:fence")
}

/// The check every relay script starts with (`KEYS[n]` the fence, `ARGV[m]` the token):
/// returns from the script with `{'fenced', newest}` when the token is older than the fence,
/// raises the fence when it is newer.
pub(crate) fn check(fence_key: usize, token_arg: usize) -> String {
    format!(
        "local raw_fence = redis.call('GET', KEYS[{fence_key}]) or '0'\n\
         if not string.match(raw_fence, '^%d+$') or #raw_fence > 15 then \
         return redis.error_reply(KEYS[{fence_key}] .. ' does not hold a fencing token (up to 15 digits); delete it') end\n\
         local fence = tonumber(raw_fence)\n\
         local token = tonumber(ARGV[{token_arg}])\n\
         if fence > token then return {{'fenced', raw_fence}} end\n\
         if fence < token then redis.call('SET', KEYS[{fence_key}], ARGV[{token_arg}]) end\n"
    )
}

/// What a fenced write found.
#[derive(Debug, PartialEq, Eq)]
pub enum Fenced<T> {
    /// The token is the newest: the write was done.
    Done(T),
    /// A newer relay holds the role (its token): nothing was written.
    Deposed(i64),
}

/// Parses a script's `{'fenced', newest}` reply, if it is one.
pub(crate) fn deposed(items: &[Frame]) -> Option<i64> {
    fn text(r: &Frame) -> Option<&str> {
        r.bytes().and_then(|b| std::str::from_utf8(b).ok())
    }
    match items {
        [first, newest] if text(first) == Some("fenced") => Some(
            text(newest)
                .and_then(|n| n.parse().ok())
                .unwrap_or(i64::MAX),
        ),
        _ => None,
    }
}

/// Raises the fence to `token`, or says which newer token holds it.
pub async fn claim(reader: &mut StreamReader, token: i64) -> Result<Fenced<()>, StreamError> {
    let script = format!("{}return {{'ok'}}", check(1, 1));
    let (fence, token) = (key(reader.key()), token.to_string());
    let reply = reader
        .connection()
        .command(
            &[
                b"EVAL",
                script.as_bytes(),
                b"1",
                fence.as_bytes(),
                token.as_bytes(),
            ],
            TIMEOUT,
        )
        .await?;
    fenced_unit(reply, "EVAL (fence)")
}

/// Sets the stream's epoch (only if it has none with `only_if_absent`) under the fence, and
/// returns the epoch the stream has afterwards.
pub async fn set_epoch(
    reader: &mut StreamReader,
    token: i64,
    epoch: StreamEpoch,
    only_if_absent: bool,
) -> Result<Fenced<StreamEpoch>, StreamError> {
    let script = format!(
        "{}if ARGV[3] == 'nx' then redis.call('SET', KEYS[2], ARGV[2], 'NX') \
         else redis.call('SET', KEYS[2], ARGV[2]) end\n\
         return {{'ok', redis.call('GET', KEYS[2])}}",
        check(1, 1)
    );
    let (fence, epoch_key) = (key(reader.key()), StreamEpoch::key(reader.key()));
    let (token, epoch) = (token.to_string(), epoch.to_string());
    let mode: &[u8] = if only_if_absent { b"nx" } else { b"set" };
    let reply = reader
        .connection()
        .command(
            &[
                b"EVAL",
                script.as_bytes(),
                b"2",
                fence.as_bytes(),
                epoch_key.as_bytes(),
                token.as_bytes(),
                epoch.as_bytes(),
                mode,
            ],
            TIMEOUT,
        )
        .await?;
    let error = |detail: &str| StreamError::Frame {
        command: "EVAL (epoch)",
        detail: detail.into(),
    };
    let Frame::Array(items) = reply else {
        return Err(match reply {
            Frame::Error(e) => error(&e),
            _ => error("not an array"),
        });
    };
    if let Some(newest) = deposed(&items) {
        return Ok(Fenced::Deposed(newest));
    }
    items
        .get(1)
        .and_then(|r| r.bytes())
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .map(Fenced::Done)
        .ok_or_else(|| error("the epoch set is not an epoch"))
}

fn fenced_unit(reply: Frame, command: &'static str) -> Result<Fenced<()>, StreamError> {
    match reply {
        Frame::Array(items) => Ok(deposed(&items).map_or(Fenced::Done(()), Fenced::Deposed)),
        Frame::Error(e) => Err(StreamError::Frame { command, detail: e }),
        _ => Err(StreamError::Frame {
            command,
            detail: "not an array".into(),
        }),
    }
}
