//! `http-load`: an open-loop HTTP load generator for eligd's eligibility endpoint.
//!
//! Requests are scheduled at a fixed rate, whatever the server does: request `i` is due at
//! `start + i / rate`. Latency is measured from that due time, not from when the request was
//! actually sent, so a stalled server shows up as latency for every request that had to wait
//! (no coordinated omission). The IDs are the synthetic population's, generated with the same
//! seed as the server's, so hits are real members; `--miss-ratio` mixes in valid IDs nobody
//! holds. Only loopback addresses are accepted, and every run is bounded in time.
//!
//! Usage: `http-load --addr 127.0.0.1:8080 --rate 5000 --duration 20 [--connections 32]
//! [--members 1000000] [--seed 1] [--miss-ratio 0.1] [--p99-ms 5] [--p50-ms 1]`.
//! Exits 1 when a latency budget given with `--p50-ms`/`--p99-ms` is missed, 2 on error.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eligd::dates::Day;
use eligd::demo::Generator;
use hdrhistogram::Histogram;
use loadtest::{Budget, Xorshift};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    addr: SocketAddr,
    rate: f64,
    duration: Duration,
    connections: usize,
    members: u64,
    seed: u64,
    miss_ratio: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:8080".parse().map_err(|e| format!("{e}"))?,
        rate: 1_000.0,
        duration: Duration::from_secs(10),
        connections: 32,
        members: 1_000_000,
        seed: 1,
        miss_ratio: 0.0,
        p50_ms: None,
        p99_ms: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--addr" => a.addr = value.parse().map_err(|e| format!("--addr: {e}"))?,
            "--rate" => a.rate = num(&value)?,
            "--duration" => a.duration = Duration::from_secs_f64(num(&value)?),
            "--connections" => a.connections = num(&value)? as usize,
            "--members" => a.members = num(&value)? as u64,
            "--seed" => a.seed = num(&value)? as u64,
            "--miss-ratio" => a.miss_ratio = num(&value)?,
            "--p50-ms" => a.p50_ms = Some(num(&value)?),
            "--p99-ms" => a.p99_ms = Some(num(&value)?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !a.addr.ip().is_loopback() {
        return Err("only loopback addresses are load-tested".into());
    }
    if !(a.rate > 0.0 && a.rate <= 200_000.0)
        || a.duration > Duration::from_secs(600)
        || a.connections == 0
    {
        return Err(
            "--rate must be in (0, 200000], --duration at most 600 s, --connections at least 1"
                .into(),
        );
    }
    if !(0.0..=1.0).contains(&a.miss_ratio) {
        return Err("--miss-ratio must be between 0 and 1".into());
    }
    Ok(a)
}

/// The request lines to send: members of the population, and valid IDs nobody holds.
fn requests(args: &Args) -> Vec<Vec<u8>> {
    let today = Day::today();
    let sample = 100_000usize;
    let stride = (args.members as usize / sample).max(1);
    let hits: Vec<String> = Generator::new(args.members, args.seed, today)
        .step_by(stride)
        .take(sample)
        .map(|m| m.national_id.to_string())
        .collect();
    let members: std::collections::HashSet<&str> = hits.iter().map(String::as_str).collect();
    let misses: Vec<String> = Generator::new(20_000, args.seed.wrapping_add(1_000), today)
        .map(|m| m.national_id.to_string())
        .filter(|id| !members.contains(id.as_str()))
        .collect();
    let mut rng = Xorshift(0x5DEE_CE66_D1CE_4E5B);
    (0..sample)
        .map(|i| {
            let miss =
                (rng.next_u64() % 10_000) as f64 / 10_000.0 < args.miss_ratio && !misses.is_empty();
            let id = if miss {
                &misses[i % misses.len()]
            } else {
                &hits[i % hits.len()]
            };
            format!("GET /v1/members/{id}/eligibility HTTP/1.1\r\nhost: eligd\r\n\r\n").into_bytes()
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    ok: u64,
    not_found: u64,
    other_status: u64,
    errors: u64,
}

/// Reads one HTTP/1.1 response (headers and a Content-Length body); returns its status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
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

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("http-load: error: {e}");
            return ExitCode::from(2);
        }
    };
    // One thread: the server under test needs the other core.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("http-load: error: {e}");
            return ExitCode::from(2);
        }
    };
    let requests = requests(&args);
    let total = (args.rate * args.duration.as_secs_f64()).round() as u64;
    let shared = Arc::new(Shared {
        requests,
        next: AtomicU64::new(0),
        total,
        start: Instant::now() + Duration::from_millis(200),
        interval: Duration::from_secs_f64(1.0 / args.rate),
    });
    // Microseconds, 1 µs to 60 s, 3 significant digits.
    let empty = match Histogram::<u64>::new_with_bounds(1, 60_000_000, 3) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("http-load: error: {e}");
            return ExitCode::from(2);
        }
    };
    let results = runtime.block_on(async {
        let handles: Vec<_> = (0..args.connections)
            .map(|_| tokio::spawn(worker(Arc::clone(&shared), args.addr, empty.clone())))
            .collect();
        let mut out = Vec::new();
        for h in handles {
            if let Ok(r) = h.await {
                out.push(r);
            }
        }
        out
    });
    let elapsed = shared.start.elapsed().as_secs_f64();
    let (mut open_loop, mut service, mut tally) = (empty.clone(), empty, Tally::default());
    for (o, s, t) in results {
        let _ = open_loop.add(&o);
        let _ = service.add(&s);
        tally.ok += t.ok;
        tally.not_found += t.not_found;
        tally.other_status += t.other_status;
        tally.errors += t.errors;
    }
    let answered = tally.ok + tally.not_found + tally.other_status;
    println!(
        "http-load: {} requests scheduled at {:.0}/s for {:.0} s over {} connections to {}",
        total,
        args.rate,
        args.duration.as_secs_f64(),
        args.connections,
        args.addr
    );
    println!(
        "answered {answered} ({:.0}/s): 200 {}, 404 {}, other {}, errors {}",
        answered as f64 / elapsed.max(1e-9),
        tally.ok,
        tally.not_found,
        tally.other_status,
        tally.errors
    );
    for (name, h) in [
        ("open-loop latency (from due time)", &open_loop),
        ("service latency (from send)", &service),
    ] {
        println!(
            "{name}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            ms(h, 0.5),
            ms(h, 0.9),
            ms(h, 0.99),
            ms(h, 0.999),
            h.max() as f64 / 1000.0
        );
    }
    let mut budget = Budget::default();
    budget.at_most(
        "errors and unexpected statuses",
        (tally.errors + tally.other_status) as f64,
        0.0,
        "requests",
    );
    if let Some(limit) = args.p50_ms {
        budget.at_most("open-loop p50", ms(&open_loop, 0.5), limit, "ms");
    }
    if let Some(limit) = args.p99_ms {
        budget.at_most("open-loop p99", ms(&open_loop, 0.99), limit, "ms");
    }
    println!("\n{}", budget.report());
    if budget.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
