//! One closed-loop client for every server `bench` compares: HTTP/1.1 (eligd and the bare
//! hyper server), RESP (Redis `GET`) and the PostgreSQL wire protocol (a prepared point
//! select). The same runtime, the same connection count and the same loop drive all three, so
//! the only difference between two runs is the server: each connection sends one request,
//! reads the whole answer, and sends the next (no pipelining), cycling through its requests.
//!
//! The protocols are written by hand (a few lines each) rather than through client crates,
//! so that the client's own cost per request is as small as a protocol allows and alike for
//! all three: a request is a prepared byte string, an answer is framed and dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How answers are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// HTTP/1.1 with `Content-Length`; the status must be 200.
    Http,
    /// One RESP bulk string (`$N\r\n…\r\n`); a nil or error reply is an error.
    RespBulk,
    /// PostgreSQL backend messages up to `ReadyForQuery`; an `ErrorResponse` is an error.
    Postgres,
}

/// What a closed-loop run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    pub answers: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.answers as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A connection ready for requests: for PostgreSQL, after the start-up exchange and the
/// statement's preparation.
pub type Connect = Arc<
    dyn Fn(
            SocketAddr,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<TcpStream>>>>
        + Send
        + Sync,
>;

fn bad(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_string())
}

/// Reads more bytes into `buf`; a closed connection is an error.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let start = buf.len();
    buf.resize(start + 16 * 1024, 0);
    let n = stream.read(&mut buf[start..]).await?;
    buf.truncate(start + n);
    if n == 0 {
        return Err(bad("connection closed"));
    }
    Ok(())
}

/// Reads one answer; returns whether it was a success. `buf` keeps nothing between answers
/// (no pipelining: the server sends nothing unasked).
pub async fn read_answer(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    framing: Framing,
) -> std::io::Result<bool> {
    buf.clear();
    loop {
        if let Some(ok) = framed(buf, framing)? {
            return Ok(ok);
        }
        fill(stream, buf).await?;
    }
}

/// `Some(success)` once `buf` holds a whole answer.
fn framed(buf: &[u8], framing: Framing) -> std::io::Result<Option<bool>> {
    match framing {
        Framing::Http => {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(None);
            };
            let head = &buf[..end];
            let ok = head.get(9..12) == Some(b"200");
            let length = head
                .split(|&b| b == b'\n')
                .find_map(|line| {
                    let line = std::str::from_utf8(line).ok()?;
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .ok_or_else(|| bad("no content-length"))?;
            Ok((buf.len() >= end + 4 + length).then_some(ok))
        }
        Framing::RespBulk => {
            let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
                return Ok(None);
            };
            match buf.first() {
                Some(b'$') => {
                    let n: i64 = std::str::from_utf8(&buf[1..line_end])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| bad("bad bulk length"))?;
                    if n < 0 {
                        return Ok(Some(false));
                    }
                    Ok((buf.len() >= line_end + 2 + n as usize + 2).then_some(true))
                }
                _ => Ok(Some(false)),
            }
        }
        Framing::Postgres => {
            let mut at = 0;
            let mut ok = true;
            while buf.len() >= at + 5 {
                let tag = buf[at];
                let len = u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]])
                    as usize;
                if buf.len() < at + 1 + len {
                    return Ok(None);
                }
                if tag == b'E' {
                    ok = false;
                }
                at += 1 + len;
                if tag == b'Z' {
                    return Ok(Some(ok));
                }
            }
            Ok(None)
        }
    }
}

/// Opens `n` connections with `connect` (kept across runs: a server is measured answering,
/// not accepting).
pub async fn connect_all(
    addr: SocketAddr,
    connect: &Connect,
    n: usize,
) -> std::io::Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(connect(addr).await?);
    }
    Ok(streams)
}

/// Runs every connection of `streams` closed-loop for `duration` (after `warmup`, not
/// counted), and hands them back. Connection `c` cycles through `requests` starting at `c`.
pub async fn run(
    streams: Vec<TcpStream>,
    requests: Arc<Vec<Vec<u8>>>,
    framing: Framing,
    warmup: Duration,
    duration: Duration,
) -> std::io::Result<(Outcome, Vec<TcpStream>)> {
    let start = Instant::now();
    let counting = start + warmup;
    let deadline = counting + duration;
    let mut tasks = Vec::with_capacity(streams.len());
    for (c, mut stream) in streams.into_iter().enumerate() {
        let requests = Arc::clone(&requests);
        tasks.push(tokio::task::spawn_local(async move {
            let mut buf = Vec::with_capacity(32 * 1024);
            let (mut answers, mut errors) = (0u64, 0u64);
            let mut i = c;
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let request = &requests[i % requests.len()];
                i += 1;
                stream.write_all(request).await?;
                let ok = read_answer(&mut stream, &mut buf, framing).await?;
                if now >= counting {
                    if ok {
                        answers += 1;
                    } else {
                        errors += 1;
                    }
                }
            }
            Ok::<_, std::io::Error>((answers, errors, stream))
        }));
    }
    let mut outcome = Outcome::default();
    let mut streams = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (answers, errors, stream) = task.await.map_err(std::io::Error::other)??;
        outcome.answers += answers;
        outcome.errors += errors;
        streams.push(stream);
    }
    outcome.elapsed = duration;
    Ok((outcome, streams))
}

/// A plain TCP connection (HTTP, RESP), Nagle off.
pub fn tcp() -> Connect {
    Arc::new(|addr| {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    })
}

/// The RESP request `GET key`.
pub fn resp_get(key: &str) -> Vec<u8> {
    format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).into_bytes()
}

/// A PostgreSQL connection (trust authentication) with `statement` prepared under the name
/// `s`, its one parameter an `int8`.
pub fn postgres(user: &'static str, database: &'static str, statement: &'static str) -> Connect {
    Arc::new(move |addr| {
        Box::pin(async move {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut startup = Vec::new();
            startup.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
            for (k, v) in [("user", user), ("database", database)] {
                startup.extend_from_slice(k.as_bytes());
                startup.push(0);
                startup.extend_from_slice(v.as_bytes());
                startup.push(0);
            }
            startup.push(0);
            let mut message = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
            message.extend_from_slice(&startup);
            stream.write_all(&message).await?;
            let mut buf = Vec::new();
            if !read_answer(&mut stream, &mut buf, Framing::Postgres).await? {
                return Err(bad("PostgreSQL refused the connection"));
            }
            let mut parse = Vec::new();
            parse.extend_from_slice(b"s\0");
            parse.extend_from_slice(statement.as_bytes());
            parse.push(0);
            parse.extend_from_slice(&1u16.to_be_bytes());
            parse.extend_from_slice(&20u32.to_be_bytes()); // int8
            let mut out = pg_message(b'P', &parse);
            out.extend_from_slice(&pg_message(b'S', &[]));
            stream.write_all(&out).await?;
            if !read_answer(&mut stream, &mut buf, Framing::Postgres).await? {
                return Err(bad("PostgreSQL refused the statement"));
            }
            Ok(stream)
        })
    })
}

fn pg_message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Bind (statement `s`, one text parameter), Execute and Sync: one point select.
pub fn pg_execute(param: i64) -> Vec<u8> {
    let value = param.to_string();
    let mut bind = Vec::new();
    bind.extend_from_slice(b"\0s\0"); // unnamed portal, statement s
    bind.extend_from_slice(&0u16.to_be_bytes()); // parameters in text
    bind.extend_from_slice(&1u16.to_be_bytes());
    bind.extend_from_slice(&(value.len() as u32).to_be_bytes());
    bind.extend_from_slice(value.as_bytes());
    bind.extend_from_slice(&0u16.to_be_bytes()); // results in text
    let mut out = pg_message(b'B', &bind);
    out.extend_from_slice(&pg_message(b'E', b"\0\0\0\0\0"));
    out.extend_from_slice(&pg_message(b'S', &[]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_are_framed_by_content_length() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nabcd";
        assert_eq!(framed(full, Framing::Http).unwrap(), Some(true));
        assert_eq!(
            framed(&full[..full.len() - 1], Framing::Http).unwrap(),
            None
        );
        let refused = b"HTTP/1.1 429 Too Many\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(framed(refused, Framing::Http).unwrap(), Some(false));
        assert!(framed(b"HTTP/1.1 200 OK\r\n\r\n", Framing::Http).is_err());
    }

    #[test]
    fn resp_bulk_strings_and_nils() {
        assert_eq!(
            framed(b"$3\r\nabc\r\n", Framing::RespBulk).unwrap(),
            Some(true)
        );
        assert_eq!(framed(b"$3\r\nab", Framing::RespBulk).unwrap(), None);
        assert_eq!(framed(b"$-1\r\n", Framing::RespBulk).unwrap(), Some(false));
        assert_eq!(
            framed(b"-ERR x\r\n", Framing::RespBulk).unwrap(),
            Some(false)
        );
    }

    #[test]
    fn postgres_answers_end_at_ready_for_query() {
        let mut answer = pg_message(b'2', &[]);
        answer.extend_from_slice(&pg_message(b'D', b"\0\x01\0\0\0\x01x"));
        assert_eq!(framed(&answer, Framing::Postgres).unwrap(), None);
        answer.extend_from_slice(&pg_message(b'Z', b"I"));
        assert_eq!(framed(&answer, Framing::Postgres).unwrap(), Some(true));
        let mut error = pg_message(b'E', b"SERROR\0\0");
        error.extend_from_slice(&pg_message(b'Z', b"I"));
        assert_eq!(framed(&error, Framing::Postgres).unwrap(), Some(false));
    }
}
