//! Talking to a running eligd from the load tools: wait for its port, GET on a keep-alive
//! connection, read one metric, and watch answers until a change shows (the freshness
//! commands measure from a write to the first answer that carries it).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

use crate::open_loop::{self, read_response};

/// A child process (eligd) killed when dropped.
pub struct Process(Child);

impl Process {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `eligd` with these arguments, its output discarded.
pub fn spawn(eligd: &Path, args: &[&str]) -> Result<Process, String> {
    Command::new(eligd)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Process)
        .map_err(|e| format!("cannot run {}: {e}", eligd.display()))
}

/// A port nothing listens on now.
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Waits until something accepts connections on `port` (at most 60 s).
pub async fn wait_for_port(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("nothing listens on port {port}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One GET on a keep-alive connection; the status and body.
pub async fn get(
    stream: &mut TcpStream,
    path: &str,
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nhost: eligd\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let status = read_response(stream, buf).await?;
    let body = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| String::from_utf8_lossy(&buf[p + 4..]).into_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A metric's value from `/metrics` (0 when absent).
pub async fn metric(addr: SocketAddr, series: &str) -> Result<f64, String> {
    let mut s = connect(addr).await.map_err(|e| e.to_string())?;
    let (_, body) = get(&mut s, "/metrics", &mut Vec::new())
        .await
        .map_err(|e| e.to_string())?;
    Ok(body
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .filter(|r| r.starts_with(' '))
                .and_then(|r| r.trim().parse().ok())
        })
        .unwrap_or(0.0))
}

/// Polls `/readyz` until 200 (at most 120 s).
pub async fn wait_ready(addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut s = connect(addr).await.map_err(|e| e.to_string())?;
        if get(&mut s, "/readyz", &mut Vec::new())
            .await
            .map_err(|e| e.to_string())?
            .0
            == 200
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("eligd did not become ready".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A change to watch for: the member's answer carries `version` once it is visible.
pub struct Watched {
    pub national_id: String,
    pub version: u64,
    /// When the change was made (the clock starts here).
    pub since: Instant,
}

/// What watchers measured.
pub struct Visibility {
    pub latencies: Histogram<u64>,
    pub never_seen: u64,
    /// Each change seen: when it was made, and microseconds until it was visible.
    pub samples: Vec<(Instant, u64)>,
}

impl Visibility {
    fn new() -> Visibility {
        Visibility {
            latencies: open_loop::histogram(),
            never_seen: 0,
            samples: Vec::new(),
        }
    }
}

/// Starts `n` watchers that poll each change's answer until it shows the new version (at
/// most 5 s each). Send changes on the returned channel; drop it and await the handle.
pub fn watchers(
    addr: SocketAddr,
    n: usize,
) -> (
    mpsc::UnboundedSender<Watched>,
    tokio::task::JoinHandle<Visibility>,
) {
    watchers_for(addr, n, Duration::from_secs(5))
}

/// [`watchers`] that wait up to `patience` for each change.
pub fn watchers_for(
    addr: SocketAddr,
    n: usize,
    patience: Duration,
) -> (
    mpsc::UnboundedSender<Watched>,
    tokio::task::JoinHandle<Visibility>,
) {
    let (tx, rx) = mpsc::unbounded_channel::<Watched>();
    let rx = Arc::new(Mutex::new(rx));
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(watch(addr, Arc::clone(&rx), patience)))
        .collect();
    let all = tokio::spawn(async move {
        let mut total = Visibility::new();
        for t in tasks {
            if let Ok(v) = t.await {
                let _ = total.latencies.add(&v.latencies);
                total.never_seen += v.never_seen;
                total.samples.extend(v.samples);
            }
        }
        total
    });
    (tx, all)
}

async fn watch(
    addr: SocketAddr,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Watched>>>,
    patience: Duration,
) -> Visibility {
    let mut out = Visibility::new();
    let mut buf = Vec::with_capacity(4096);
    let mut stream = None;
    loop {
        let next = rx.lock().await.recv().await;
        let Some(w) = next else { break };
        let path = format!("/v1/members/{}/eligibility", w.national_id);
        let wanted = format!("\"data_version\":{}", w.version);
        let deadline = w.since + patience;
        let seen = loop {
            if Instant::now() > deadline {
                break false;
            }
            if stream.is_none() {
                stream = connect(addr).await.ok();
            }
            let Some(s) = stream.as_mut() else { continue };
            match get(s, &path, &mut buf).await {
                Ok((200, body)) if body.contains(&wanted) => break true,
                Ok(_) => {}
                Err(_) => stream = None,
            }
        };
        if seen {
            let micros = w.since.elapsed().as_micros().max(1) as u64;
            let _ = out.latencies.record(micros);
            out.samples.push((w.since, micros));
        } else {
            out.never_seen += 1;
        }
    }
    out
}
