//! An open-loop HTTP driver: requests are scheduled at a fixed rate whatever the server does,
//! and latency is measured from each request's due time, so a stalled server shows up as
//! latency for every request that had to wait (no coordinated omission).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
pub struct Tally {
    pub ok: u64,
    pub not_found: u64,
    pub other_status: u64,
    pub errors: u64,
}

/// Reads one HTTP/1.1 response (headers and a Content-Length body); returns its status.
pub async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    buf.clear();
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("connection closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..header_end]).map_err(|_| bad("non-UTF-8 headers"))?;
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        })
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| bad("no content-length"))?;
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("connection closed mid-body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

struct Shared {
    requests: Vec<Vec<u8>>,
    next: AtomicU64,
    total: u64,
    start: Instant,
    interval: Duration,
}

async fn worker(
    shared: Arc<Shared>,
    addr: SocketAddr,
    empty: Histogram<u64>,
) -> (Histogram<u64>, Histogram<u64>, Tally) {
    let mut open_loop = empty.clone();
    let mut service = empty;
    let mut tally = Tally::default();
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= shared.total {
            break;
        }
        let due = shared.start + shared.interval.mul_f64(i as f64);
        // The timer wheel has millisecond resolution: sleep to just before the due time,
        // then yield until it, so lateness of the generator is not charged to the server.
        if let Some(coarse) = due.checked_sub(Duration::from_millis(1)) {
            tokio::time::sleep_until(coarse.into()).await;
        }
        while Instant::now() < due {
            tokio::task::yield_now().await;
        }
        let request = &shared.requests[i as usize % shared.requests.len()];
        let sent = Instant::now();
        let result = async {
            if stream.is_none() {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                stream = Some(s);
            }
            let s = stream
                .as_mut()
                .ok_or_else(|| std::io::Error::other("no connection"))?;
            s.write_all(request).await?;
            read_response(s, &mut buf).await
        }
        .await;
        let done = Instant::now();
        match result {
            Ok(status) => {
                match status {
                    200 => tally.ok += 1,
                    404 => tally.not_found += 1,
                    _ => tally.other_status += 1,
                }
                let _ = open_loop.record((done - due).as_micros().max(1) as u64);
                let _ = service.record((done - sent).as_micros().max(1) as u64);
            }
            Err(_) => {
                tally.errors += 1;
                stream = None;
            }
        }
    }
    (open_loop, service, tally)
}

/// Microsecond histograms from 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("constant, valid bounds")
}

/// What an open-loop run measured.
pub struct LoadResult {
    /// From each request's due time to its answer.
    pub open_loop: Histogram<u64>,
    /// From send to answer.
    pub service: Histogram<u64>,
    pub tally: Tally,
    pub total: u64,
    pub elapsed: Duration,
}

/// Sends `rate` requests per second for `duration` over `connections` keep-alive connections,
/// cycling through `requests` (complete HTTP/1.1 requests).
pub async fn run(
    addr: SocketAddr,
    requests: Vec<Vec<u8>>,
    rate: f64,
    duration: Duration,
    connections: usize,
) -> LoadResult {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let shared = Arc::new(Shared {
        requests,
        next: AtomicU64::new(0),
        total,
        start: Instant::now() + Duration::from_millis(200),
        interval: Duration::from_secs_f64(1.0 / rate),
    });
    let handles: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(worker(Arc::clone(&shared), addr, histogram())))
        .collect();
    let (mut open_loop, mut service, mut tally) = (histogram(), histogram(), Tally::default());
    for h in handles {
        if let Ok((o, s, t)) = h.await {
            let _ = open_loop.add(&o);
            let _ = service.add(&s);
            tally.ok += t.ok;
            tally.not_found += t.not_found;
            tally.other_status += t.other_status;
            tally.errors += t.errors;
        }
    }
    LoadResult {
        open_loop,
        service,
        tally,
        total,
        elapsed: shared.start.elapsed(),
    }
}

/// Milliseconds at quantile `q`.
pub fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// `p50 … max` in milliseconds, one line.
pub fn summary(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        ms(h, 0.5),
        ms(h, 0.9),
        ms(h, 0.99),
        ms(h, 0.999),
        h.max() as f64 / 1000.0
    )
}
