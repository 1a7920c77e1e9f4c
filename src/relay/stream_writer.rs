//! The Redis side of the relay: appending native events to the stream in one script under the
//! fence and the stream checks (with Redis's IDs, or with their own when written back),
//! `WAIT` for replicas, and trimming. Everything goes over the same connection as the epoch checks, through
//! [`crate::redis`], so TLS and Sentinel work here exactly as for the feed.

use std::time::Duration;

use crate::feed::native::NativeEvent;
use crate::feed::stream::{StreamError, StreamReader};
use crate::index::{FeedPosition, StreamEpoch};
use crate::redis::Frame;

/// A pipelined XADD of thousands of events, or a WAIT, may take this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

fn reply_error(command: &'static str, detail: impl Into<String>) -> StreamError {
    StreamError::Frame {
        command,
        detail: detail.into(),
    }
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
        Frame::Int(acked) => Ok(acked.max(0) as u64),
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
        Frame::Int(n) => Ok(n.max(0) as u64),
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
        .command(&[b"PING"], crate::redis::COMMAND_TIMEOUT)
        .await?;
    Ok(())
}

/// What [`append_checked`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// The stream still held what the relay wrote; the events are appended with these IDs.
    Appended(Vec<FeedPosition>),
    /// It did not (Redis came back from an older copy, or empty, without closing the
    /// connection): nothing was written. What Redis held instead (for the log: the epoch
    /// check reads it again).
    Lost(super::epoch::InRedis),
    /// A newer relay holds the role (its fencing token): nothing was written.
    Deposed(i64),
}

/// Checks the fence (`fence.rs`), that the epoch key holds `epoch` and that the stream's
/// newest ID ever generated is at least `last_written`, then appends the events, each with a
/// new ID (`*`) or its own (written back): one script, so nothing (a restart behind a proxy
/// that keeps this connection open, a successor's first write) can come between the checks
/// and the writes. Nothing is written when a check fails. It also raises `<stream>:versions`
/// to the batch's highest version (`versions.rs`).
const APPEND_CHECKED: &str = r#"
local function cmp(x, y)
  if #x ~= #y then return #x < #y and -1 or 1 end
  if x == y then return 0 end
  return x < y and -1 or 1
end
local function at_least(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if not am or not bm then return false end
  local c = cmp(am, bm)
  if c == 0 then c = cmp(as, bs) end
  return c >= 0
end
local epoch = redis.call('GET', KEYS[2])
local last = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
end
if epoch ~= ARGV[1] or not at_least(last, ARGV[2]) then
  return {'lost', epoch or '', last}
end
local raw_top = redis.call('GET', KEYS[4]) or '0'
if not string.match(raw_top, '^%d+$') or #raw_top > 15 then
  return redis.error_reply(KEYS[4] .. ' does not hold a version (up to 15 digits); delete it')
end
if tonumber(ARGV[4]) > tonumber(raw_top) then redis.call('SET', KEYS[4], ARGV[4]) end
local ids = {'ok'}
local i = 5
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  local args = {'XADD', KEYS[1], ARGV[i]}
  for j = 1, n do args[#args + 1] = ARGV[i + 1 + j] end
  ids[#ids + 1] = redis.call(unpack(args))
  i = i + 2 + n
end
return ids
"#;

/// Events (with new IDs, or their own when `Some`), only while the relay holds
/// the role (`token`) and the stream still holds what it wrote under `epoch`, up to
/// `last_written` ([`APPEND_CHECKED`]).
pub async fn append_checked(
    reader: &mut StreamReader,
    token: i64,
    epoch: StreamEpoch,
    last_written: FeedPosition,
    events: &[(Option<FeedPosition>, &NativeEvent)],
    max_version: i64,
) -> Result<Checked, StreamError> {
    let key = reader.key().to_string();
    let (epoch_key, fence_key) = (StreamEpoch::key(&key), super::fence::key(&key));
    let versions_key = super::versions::key(&key);
    let script = format!("{}{APPEND_CHECKED}", super::fence::check(3, 3));
    let (epoch, last, token) = (
        epoch.to_string(),
        last_written.to_string(),
        token.to_string(),
    );
    let max_version = max_version.to_string();
    let heads: Vec<(String, String)> = events
        .iter()
        .map(|(id, e)| {
            (
                id.map_or_else(|| "*".to_string(), |p| p.to_string()),
                (e.fields.len() * 2).to_string(),
            )
        })
        .collect();
    let mut args: Vec<&[u8]> = vec![
        b"EVAL",
        script.as_bytes(),
        b"4",
        key.as_bytes(),
        epoch_key.as_bytes(),
        fence_key.as_bytes(),
        versions_key.as_bytes(),
        epoch.as_bytes(),
        last.as_bytes(),
        token.as_bytes(),
        max_version.as_bytes(),
    ];
    for ((_, event), (id, count)) in events.iter().zip(&heads) {
        args.push(id.as_bytes());
        args.push(count.as_bytes());
        for (name, value) in &event.fields {
            args.push(name.as_bytes());
            args.push(value.as_bytes());
        }
    }
    let reply = reader.connection().command(&args, WRITE_TIMEOUT).await?;
    let Frame::Array(items) = reply else {
        return Err(match reply {
            Frame::Error(e) => reply_error("EVAL", e),
            _ => reply_error("EVAL", "not an array"),
        });
    };
    if let Some(newest) = super::fence::deposed(&items) {
        return Ok(Checked::Deposed(newest));
    }
    let text = |r: &Frame| {
        r.bytes()
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_string)
    };
    let mut items = items.iter();
    match items.next().and_then(text).as_deref() {
        Some("ok") => items
            .map(|r| {
                text(r)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| reply_error("EVAL", "an XADD reply is not an entry ID"))
            })
            .collect::<Result<_, _>>()
            .map(Checked::Appended),
        Some("lost") => {
            let epoch = items.next().and_then(text).unwrap_or_default();
            let last = items.next().and_then(text).and_then(|s| s.parse().ok());
            let last_generated =
                last.ok_or_else(|| reply_error("EVAL", "the stream's last ID is not an entry ID"))?;
            Ok(Checked::Lost(super::epoch::InRedis {
                epoch: epoch.parse().ok(),
                last_generated,
            }))
        }
        _ => Err(reply_error("EVAL", "neither appended nor lost")),
    }
}
