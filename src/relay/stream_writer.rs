//! The Redis side of the relay: appending native events to the stream in one pipelined round
//! trip (with Redis's IDs, or with their own when written back), `WAIT` for replicas, and
//! trimming. Everything goes over the same connection as the epoch checks, through
//! [`crate::resp`], so TLS and Sentinel work here exactly as for the feed.

use std::time::Duration;

use crate::feed::native::NativeEvent;
use crate::feed::stream::{StreamError, StreamReader};
use crate::index::{FeedPosition, StreamEpoch};
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

/// What [`append_checked`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// The stream still held what the relay wrote; the events are appended with these IDs.
    Appended(Vec<FeedPosition>),
    /// It did not (Redis came back from an older copy, or empty, without closing the
    /// connection): nothing was written. What Redis held instead (for the log: the epoch
    /// check reads it again).
    Lost(super::epoch::InRedis),
}

/// Checks that the epoch key holds `epoch` and the stream's newest ID ever generated is at
/// least `last_written`, then appends `events` with new IDs: one script, so nothing (a
/// restart behind a proxy that keeps this connection open) can come between the check and
/// the writes. Nothing is written when the check fails.
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
local ids = {'ok'}
local i = 3
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local args = {'XADD', KEYS[1], '*'}
  for j = 1, n do args[#args + 1] = ARGV[i + j] end
  ids[#ids + 1] = redis.call(unpack(args))
  i = i + 1 + n
end
return ids
"#;

/// [`append`] with new IDs, only while the stream still holds what the relay wrote under
/// `epoch`, up to `last_written` ([`APPEND_CHECKED`]).
pub async fn append_checked(
    reader: &mut StreamReader,
    epoch: StreamEpoch,
    last_written: FeedPosition,
    events: &[&NativeEvent],
) -> Result<Checked, StreamError> {
    let key = reader.key().to_string();
    let epoch_key = StreamEpoch::key(&key);
    let (epoch, last) = (epoch.to_string(), last_written.to_string());
    let counts: Vec<String> = events
        .iter()
        .map(|e| (e.fields.len() * 2).to_string())
        .collect();
    let mut args: Vec<&[u8]> = vec![
        b"EVAL",
        APPEND_CHECKED.as_bytes(),
        b"2",
        key.as_bytes(),
        epoch_key.as_bytes(),
        epoch.as_bytes(),
        last.as_bytes(),
    ];
    for (event, count) in events.iter().zip(&counts) {
        args.push(count.as_bytes());
        for (name, value) in &event.fields {
            args.push(name.as_bytes());
            args.push(value.as_bytes());
        }
    }
    let reply = reader.connection().command(&args, WRITE_TIMEOUT).await?;
    let Reply::Array(items) = reply else {
        return Err(match reply {
            Reply::Error(e) => reply_error("EVAL", e),
            _ => reply_error("EVAL", "not an array"),
        });
    };
    let text = |r: &Reply| {
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
