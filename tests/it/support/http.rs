//! A small HTTP/1.1 client for the tests: one request per connection (`connection: close`),
//! read whole. A reply that is not HTTP (empty: the peer closed; cut short) is an error
//! naming the address, the request and what came back, never a panic on a slice.

use std::io::{Read, Write};
use std::net::TcpStream;

/// An HTTP answer read whole.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// The status code of a reply's first line (`HTTP/1.1 200 OK`), or what is wrong with it.
fn status_line(reply: &str) -> Result<u16, String> {
    let first = reply.lines().next().unwrap_or("");
    if reply.is_empty() {
        return Err("empty reply (the connection was closed without an answer)".into());
    }
    first
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP reply: {:?}", truncated(reply)))
}

fn truncated(s: &str) -> String {
    s.chars().take(200).collect()
}

/// One request on its own connection, with headers and a body; `Err` says why no HTTP
/// answer came back.
pub(crate) fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Answer, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("cannot connect: {e}"))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .map_err(|e| format!("cannot read the reply: {e}"))?;
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = status_line(&out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// One request on its own connection, with headers and a body; panics with the address,
/// the request and the reason when no HTTP answer comes back.
#[track_caller]
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    try_http(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"))
}

/// `GET path`: the status and the body; `Err` says why no HTTP answer came back.
pub(crate) fn try_http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("cannot connect: {e}"))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .map_err(|e| format!("cannot read the reply: {e}"))?;
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = status_line(&out)?;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    Ok((status, body))
}

/// `GET path`: the status and the body; panics with the address, the path and the reason
/// when no HTTP answer comes back (an empty reply, a refused connection).
#[track_caller]
pub(crate) fn http_get(addr: &str, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

#[test]
fn an_empty_or_foreign_reply_is_an_error_that_says_so() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        for reply in [&b""[..], b"SSH-2.0-OpenSSH\r\n"] {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                request.extend_from_slice(&buf[..n]);
            }
            s.write_all(reply).unwrap();
        }
    });
    let e = try_http_get(&addr, "/readyz").unwrap_err();
    assert!(e.contains("empty reply"), "{e}");
    let e = try_http(&addr, "GET", "/", &[], b"").err().unwrap();
    assert!(
        e.contains("not an HTTP reply") && e.contains("SSH-2.0"),
        "{e}"
    );
    server.join().unwrap();
    let e = try_http_get(&addr, "/readyz").unwrap_err();
    assert!(e.contains("cannot connect"), "{e}");
}
