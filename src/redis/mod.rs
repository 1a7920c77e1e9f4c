//! The feed's own Redis connection: a minimal RESP2 client for the few commands the feed
//! sends (AUTH, SELECT, XREAD, XRANGE, XINFO).
//!
//! Written by hand because decoding is the catch-up's hot path: redis-rs's general decoder
//! costs about 2 µs per stream entry, close to half of the 5 µs an entry may take for a
//! replay of 200,000 entries/s (docs/decisions/0003-feed-reader.md). Here a reply is first
//! scanned until complete (resumably, so a reply of megabytes arriving in pieces is scanned
//! once), then decoded straight into stream entries. Every command has a deadline; after any
//! error the connection is dropped, never reused.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

mod target;
pub use target::{RedisTarget, TargetError};

use crate::index::FeedPosition;

/// One stream entry as it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub id: FeedPosition,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RespError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis answered with an error: {0}")]
    Server(String),
    #[error("unexpected reply: {0}")]
    Protocol(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("TLS with {address} failed: {reason} (check --redis-ca and that the certificate names the host connected to)")]
    Tls { address: String, reason: String },
    /// AUTH refused, or a command refused for want of it (`NOAUTH`): never the password.
    #[error("{address} refused the credentials: {reply} (check {hint})")]
    Auth {
        address: String,
        reply: String,
        hint: &'static str,
    },
}

fn protocol(what: impl Into<String>) -> RespError {
    RespError::Protocol(what.into())
}

/// A decoded reply (RESP2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Nil,
    Int(i64),
    Simple(Vec<u8>),
    Bulk(Vec<u8>),
    Array(Vec<Frame>),
    Error(String),
}

impl Frame {
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Frame::Simple(b) | Frame::Bulk(b) => Some(b),
            _ => None,
        }
    }
}

/// Replies nest no deeper than this (XINFO STREAM: entry, fields).
const MAX_DEPTH: usize = 8;
/// A single reply may not exceed this (a batch of 10,000 large entries is far below).
const MAX_REPLY: usize = 512 << 20;

/// Finds where a reply ends, across reads: the scan resumes where it stopped.
#[derive(Default)]
struct Scan {
    offset: usize,
    /// Elements still to come in each open array, innermost last.
    open: Vec<i64>,
}

impl Scan {
    /// `Some(len)` once `buf` holds a whole reply of `len` bytes.
    fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, RespError> {
        loop {
            let Some(end) = find_crlf(buf, self.offset) else {
                return Ok(None);
            };
            let line = &buf[self.offset + 1..end];
            let next = end + 2;
            match buf[self.offset] {
                b'+' | b'-' | b':' => self.offset = next,
                b'$' => {
                    let len = int(line)?;
                    let after = if len < 0 {
                        next
                    } else {
                        next + len as usize + 2
                    };
                    if after > buf.len() {
                        return Ok(None);
                    }
                    self.offset = after;
                }
                b'*' => {
                    let len = int(line)?;
                    self.offset = next;
                    if len > 0 {
                        if self.open.len() >= MAX_DEPTH {
                            return Err(protocol("replies nested too deep"));
                        }
                        self.open.push(len);
                        continue;
                    }
                }
                other => return Err(protocol(format!("type byte {other:#04x}"))),
            }
            // One element is complete; so is every array it completes.
            while let Some(left) = self.open.last_mut() {
                *left -= 1;
                if *left > 0 {
                    break;
                }
                self.open.pop();
            }
            if self.open.is_empty() {
                return Ok(Some(self.offset));
            }
        }
    }
}

/// The `\r` ending the line whose type byte is at `from`, once its `\n` has arrived too.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from + 1..)?;
    rest.iter()
        .position(|&b| b == b'\r')
        .map(|i| from + 1 + i)
        .filter(|&i| i + 1 < buf.len())
}

fn int(line: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol("a length or integer is not a number"))
}

/// Reads one element of a complete reply, advancing `at`.
struct Decoder<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Decoder<'a> {
    fn line(&mut self) -> Result<(u8, &'a [u8]), RespError> {
        let end = find_crlf(self.buf, self.at).ok_or_else(|| protocol("truncated"))?;
        let kind = self.buf[self.at];
        let line = &self.buf[self.at + 1..end];
        self.at = end + 2;
        Ok((kind, line))
    }

    fn bulk_after(&mut self, line: &[u8]) -> Result<Option<&'a [u8]>, RespError> {
        let len = int(line)?;
        if len < 0 {
            return Ok(None);
        }
        let start = self.at;
        let end = start + len as usize;
        let data = self
            .buf
            .get(start..end)
            .ok_or_else(|| protocol("truncated"))?;
        self.at = end + 2;
        Ok(Some(data))
    }

    fn reply(&mut self, depth: usize) -> Result<Frame, RespError> {
        let (kind, line) = self.line()?;
        Ok(match kind {
            b'+' => Frame::Simple(line.to_vec()),
            b'-' => Frame::Error(String::from_utf8_lossy(line).into_owned()),
            b':' => Frame::Int(int(line)?),
            b'$' => self
                .bulk_after(line)?
                .map_or(Frame::Nil, |b| Frame::Bulk(b.to_vec())),
            b'*' => {
                let len = int(line)?;
                if len < 0 {
                    return Ok(Frame::Nil);
                }
                if depth >= MAX_DEPTH {
                    return Err(protocol("replies nested too deep"));
                }
                let mut items = Vec::with_capacity((len as usize).min(1024));
                for _ in 0..len {
                    items.push(self.reply(depth + 1)?);
                }
                Frame::Array(items)
            }
            other => return Err(protocol(format!("type byte {other:#04x}"))),
        })
    }

    /// An array header's length; `None` for a nil array.
    fn array(&mut self) -> Result<Option<usize>, RespError> {
        match self.line()? {
            (b'*', line) => Ok(usize::try_from(int(line)?).ok()),
            (b'-', line) => Err(RespError::Server(
                String::from_utf8_lossy(line).into_owned(),
            )),
            _ => Err(protocol("expected an array")),
        }
    }

    fn bulk(&mut self) -> Result<&'a [u8], RespError> {
        match self.line()? {
            (b'$', line) => self.bulk_after(line)?.ok_or_else(|| protocol("nil string")),
            (b'+', line) => Ok(line),
            _ => Err(protocol("expected a string")),
        }
    }

    /// `[[id, [field, value, …]], …]` straight into entries.
    fn entries(&mut self) -> Result<Vec<RawEntry>, RespError> {
        let Some(count) = self.array()? else {
            return Ok(Vec::new());
        };
        let left = self.buf.len().saturating_sub(self.at);
        let mut entries = Vec::with_capacity(count.min(100_000).min(left / 8));
        for _ in 0..count {
            if self.array()? != Some(2) {
                return Err(protocol("an entry is not [id, fields]"));
            }
            let id = std::str::from_utf8(self.bulk()?)
                .ok()
                .and_then(|s| s.parse::<FeedPosition>().ok())
                .ok_or_else(|| protocol("an entry ID is not ms-seq"))?;
            let flat = self.array()?.unwrap_or(0);
            if flat % 2 != 0 {
                return Err(protocol("an odd number of field names and values"));
            }
            // A length read from the wire is no promise: reserve no more than the bytes left
            // could hold (a field pair takes at least 8), so a lying reply cannot make us
            // allocate gigabytes (found by fuzz/fuzz_targets/resp.rs).
            let left = self.buf.len().saturating_sub(self.at);
            let mut fields = Vec::with_capacity((flat / 2).min(left / 8));
            for _ in 0..flat / 2 {
                let name = self.bulk()?.to_vec();
                let value = self.bulk()?.to_vec();
                fields.push((name, value));
            }
            entries.push(RawEntry { id, fields });
        }
        Ok(entries)
    }
}

/// Decodes a complete reply.
pub fn decode(buf: &[u8]) -> Result<Frame, RespError> {
    Decoder { buf, at: 0 }.reply(0)
}

/// Decodes a complete XREAD reply for one stream: nil, or `[[key, entries]]`.
pub fn decode_xread(buf: &[u8]) -> Result<Vec<RawEntry>, RespError> {
    let mut d = Decoder { buf, at: 0 };
    match d.array()? {
        None | Some(0) => Ok(Vec::new()),
        Some(1) => {
            if d.array()? != Some(2) {
                return Err(protocol("a stream is not [key, entries]"));
            }
            d.bulk()?;
            d.entries()
        }
        Some(_) => Err(protocol("entries of more than one stream")),
    }
}

/// Decodes a complete XRANGE reply.
pub fn decode_entries(buf: &[u8]) -> Result<Vec<RawEntry>, RespError> {
    Decoder { buf, at: 0 }.entries()
}

/// Writes a command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// An error that says Redis (or a sentinel) refused the credentials, as [`RespError::Auth`]
/// naming the flags to check; any other error as it is. Redis's replies never quote the
/// password sent.
pub(crate) fn credentials_refused(
    e: RespError,
    host: &str,
    port: u16,
    hint: &'static str,
) -> RespError {
    match e {
        RespError::Server(reply)
            if reply.starts_with("WRONGPASS")
                || reply.starts_with("NOAUTH")
                || reply.starts_with("NOPERM")
                || reply.contains("AUTH") =>
        {
            RespError::Auth {
                address: format!("{host}:{port}"),
                reply,
                hint,
            }
        }
        other => other,
    }
}

/// What a connection runs over: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Connection {
    stream: Box<dyn Io>,
    buf: Vec<u8>,
}

/// How long a command other than a blocking read may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

impl Connection {
    /// Connects to `host:port` as `target` says (TLS or not) and authenticates.
    async fn open(target: &RedisTarget, host: &str, port: u16) -> Result<Connection, RespError> {
        let tcp = tokio::time::timeout(COMMAND_TIMEOUT, TcpStream::connect((host, port)))
            .await
            .map_err(|_| RespError::Timeout(COMMAND_TIMEOUT))??;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Io> = match &target.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = target::server_name(host)?;
                let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::clone(config));
                let failed = |reason: String| RespError::Tls {
                    address: format!("{host}:{port}"),
                    reason,
                };
                let tls = tokio::time::timeout(COMMAND_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| {
                        failed(format!(
                            "no TLS handshake within {COMMAND_TIMEOUT:?} (is this Redis's TLS port?)"
                        ))
                    })?
                    .map_err(|e| failed(e.to_string()))?;
                Box::new(tls)
            }
        };
        let mut connection = Connection {
            stream,
            buf: Vec::with_capacity(64 * 1024),
        };
        let refused = |e| credentials_refused(e, host, port, target.credentials_hint);
        if let Some(password) = &target.password {
            // A password file is read again for every connection (a rotated Secret).
            let password = password.current();
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &target.username {
                auth.push(user.as_bytes());
            }
            auth.push(password.as_bytes());
            connection
                .command(&auth, COMMAND_TIMEOUT)
                .await
                .map_err(refused)?;
        }
        if target.db != 0 {
            let db = target.db.to_string();
            connection
                .command(&[b"SELECT", db.as_bytes()], COMMAND_TIMEOUT)
                .await
                .map_err(refused)?;
        }
        Ok(connection)
    }

    /// Sends `commands` in one write and returns their replies in order (a command's error
    /// is its [`Frame::Error`], not an `Err`).
    pub async fn pipeline(
        &mut self,
        commands: &[Vec<&[u8]>],
        timeout: Duration,
    ) -> Result<Vec<Frame>, RespError> {
        let mut request = Vec::with_capacity(256 * commands.len());
        for args in commands {
            encode(args, &mut request);
        }
        let wanted = commands.len();
        let len = tokio::time::timeout(timeout, async {
            self.stream.write_all(&request).await?;
            self.stream.flush().await?;
            self.buf.clear();
            let mut scan = Scan::default();
            let mut done = 0;
            loop {
                while done < wanted {
                    match scan.advance(&self.buf)? {
                        Some(_) => done += 1,
                        None => break,
                    }
                }
                if done == wanted {
                    return Ok::<usize, RespError>(scan.offset);
                }
                if self.buf.len() > MAX_REPLY {
                    return Err(protocol("reply too large"));
                }
                self.buf.reserve(64 * 1024);
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(RespError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
        })
        .await
        .map_err(|_| RespError::Timeout(timeout))??;
        let mut decoder = Decoder {
            buf: &self.buf[..len],
            at: 0,
        };
        (0..wanted).map(|_| decoder.reply(0)).collect()
    }

    /// Sends a command and returns the bytes of its whole reply (decode with the functions
    /// above). A server error is an `Err`.
    pub async fn raw(&mut self, args: &[&[u8]], timeout: Duration) -> Result<&[u8], RespError> {
        let mut request = Vec::with_capacity(64);
        encode(args, &mut request);
        let len = tokio::time::timeout(timeout, async {
            self.stream.write_all(&request).await?;
            self.stream.flush().await?;
            self.buf.clear();
            let mut scan = Scan::default();
            loop {
                if let Some(len) = scan.advance(&self.buf)? {
                    return Ok::<usize, RespError>(len);
                }
                if self.buf.len() > MAX_REPLY {
                    return Err(protocol("reply too large"));
                }
                self.buf.reserve(256 * 1024);
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(RespError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
        })
        .await
        .map_err(|_| RespError::Timeout(timeout))??;
        let reply = &self.buf[..len];
        if reply.first() == Some(&b'-') {
            let text = String::from_utf8_lossy(&reply[1..len.saturating_sub(2)]).into_owned();
            return Err(RespError::Server(text));
        }
        Ok(reply)
    }

    /// Sends a command and decodes its reply.
    pub async fn command(&mut self, args: &[&[u8]], timeout: Duration) -> Result<Frame, RespError> {
        decode(self.raw(args, timeout).await?)
    }
}

#[cfg(test)]
mod tests;
