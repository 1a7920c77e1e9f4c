//! An open-loop HTTP driver: requests are scheduled at a fixed rate whatever the server does,
//! and latency is measured from each request's due time, so a stalled server shows up as
//! latency for every request that had to wait (no coordinated omission).
//!
//! [`run`] counts 200 and 404 as expected (single lookups); [`run_expecting`] takes the
//! caller's idea of an expected status (the realistic mix, `crate::mix`, also expects 400).
//! [`sweep`] runs a list of rates in turn and summarises each as a [`RunSummary`], which
//! [`sweep_json`] writes as JSON (the format `scripts/plot-latency.py` reads).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Which answers count as expected, by status.
pub type Expected = fn(u16) -> bool;

/// What a single-lookup load expects: 200 (a member) and 404 (nobody holds the ID).
pub fn lookup_statuses(status: u16) -> bool {
    status == 200 || status == 404
}

/// The answers of a run, by status.
#[derive(Default, Clone, Debug)]
pub struct Tally {
    pub ok: u64,
    pub not_found: u64,
    /// Answers neither 200 nor 404 (expected or not).
    pub other_status: u64,
    /// Answers whose status the run's [`Expected`] refuses.
    pub unexpected: u64,
    /// Requests that got no answer (connect, write or read failed; the connection is dropped).
    pub errors: u64,
    /// Every answer, by status.
    pub statuses: BTreeMap<u16, u64>,
}

impl Tally {
    /// Requests answered, whatever the status.
    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    fn count(&mut self, status: u16, expected: Expected) {
        match status {
            200 => self.ok += 1,
            404 => self.not_found += 1,
            _ => self.other_status += 1,
        }
        if !expected(status) {
            self.unexpected += 1;
        }
        *self.statuses.entry(status).or_default() += 1;
    }

    fn add(&mut self, other: &Tally) {
        self.ok += other.ok;
        self.not_found += other.not_found;
        self.other_status += other.other_status;
        self.unexpected += other.unexpected;
        self.errors += other.errors;
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_default() += n;
        }
    }

    /// `200 n, 404 n, …` in status order.
    pub fn by_status(&self) -> String {
        let parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, n)| format!("{status} {n}"))
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Reads one HTTP/1.1 response (headers and a Content-Length body, framed as
/// [`crate::closed_loop`] frames it); returns its status.
pub async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    crate::closed_loop::read_answer(stream, buf, crate::closed_loop::Framing::Http).await?;
    std::str::from_utf8(buf.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no status"))
}

struct Shared {
    requests: Arc<Vec<Vec<u8>>>,
    /// Request `i` of the run is `requests[(first + i) % len]`.
    first: u64,
    expected: Expected,
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
        let request =
            &shared.requests[((shared.first + i) % shared.requests.len() as u64) as usize];
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
                tally.count(status, shared.expected);
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
/// cycling through `requests` (complete HTTP/1.1 requests); 200 and 404 are expected.
pub async fn run(
    addr: SocketAddr,
    requests: Vec<Vec<u8>>,
    rate: f64,
    duration: Duration,
    connections: usize,
) -> LoadResult {
    run_expecting(addr, requests, rate, duration, connections, lookup_statuses).await
}

/// [`run`], counting the answers whose status `expected` refuses in [`Tally::unexpected`].
pub async fn run_expecting(
    addr: SocketAddr,
    requests: Vec<Vec<u8>>,
    rate: f64,
    duration: Duration,
    connections: usize,
    expected: Expected,
) -> LoadResult {
    let requests = Arc::new(requests);
    run_from(addr, requests, 0, rate, duration, connections, expected).await
}

async fn run_from(
    addr: SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    first: u64,
    rate: f64,
    duration: Duration,
    connections: usize,
    expected: Expected,
) -> LoadResult {
    let total = if requests.is_empty() {
        0
    } else {
        (rate * duration.as_secs_f64()).round() as u64
    };
    let shared = Arc::new(Shared {
        requests,
        first,
        expected,
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
        match h.await {
            Ok((o, s, t)) => {
                let _ = open_loop.add(&o);
                let _ = service.add(&s);
                tally.add(&t);
            }
            // Its counts are lost with it; the requests it took are counted below.
            Err(e) => eprintln!("open loop: a worker failed: {e}"),
        }
    }
    count_unanswered(&mut tally, total);
    LoadResult {
        open_loop,
        service,
        tally,
        total,
        elapsed: shared.start.elapsed(),
    }
}

/// Every one of the `total` requests is answered or an error: those neither counted (taken by
/// a worker that panicked, say) are errors, so a run never reports fewer errors than requests
/// left unanswered.
fn count_unanswered(tally: &mut Tally, total: u64) {
    let accounted = tally.answered() + tally.errors;
    tally.errors += total.saturating_sub(accounted);
}

#[test]
fn requests_a_failed_worker_took_are_errors() {
    let mut tally = Tally::default();
    tally.count(200, |_| true);
    tally.count(404, |_| true);
    tally.errors = 1;
    count_unanswered(&mut tally, 10);
    assert_eq!((tally.answered(), tally.errors), (2, 8));
    count_unanswered(&mut tally, 10);
    assert_eq!(tally.errors, 8, "nothing counted twice");
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

/// One rate of a sweep: what was sent and answered, and the open-loop latency (from each
/// request's due time) in milliseconds.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// Offered rate, requests per second.
    pub rate: f64,
    /// Requests scheduled (rate × duration).
    pub scheduled: u64,
    /// Requests answered, whatever the status.
    pub answered: u64,
    /// Answers with a status the run did not expect.
    pub unexpected: u64,
    /// Requests with no answer.
    pub errors: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
}

impl RunSummary {
    /// The summary of a run at `rate`.
    pub fn of(rate: f64, result: &LoadResult) -> RunSummary {
        let h = &result.open_loop;
        RunSummary {
            rate,
            scheduled: result.total,
            answered: result.tally.answered(),
            unexpected: result.tally.unexpected,
            errors: result.tally.errors,
            p50_ms: ms(h, 0.5),
            p90_ms: ms(h, 0.9),
            p99_ms: ms(h, 0.99),
            p999_ms: ms(h, 0.999),
            max_ms: h.max() as f64 / 1000.0,
            statuses: result.tally.statuses.clone(),
        }
    }

    /// One line: `700/s: answered 2100 of 2100 (200 …), unexpected 0, errors 0; p50 … max`.
    pub fn line(&self) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        format!(
            "{}/s: answered {} of {} ({}), unexpected {}, errors {}; p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            json_number(self.rate),
            self.answered,
            self.scheduled,
            statuses.join(", "),
            self.unexpected,
            self.errors,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms
        )
    }

    /// A JSON object: `rate`, `scheduled`, `answered`, `unexpected`, `errors`, `p50_ms`,
    /// `p90_ms`, `p99_ms`, `p999_ms`, `max_ms`, and `statuses` (`{"200": n, …}`).
    pub fn to_json(&self) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("\"{s}\": {n}"))
            .collect();
        format!(
            "{{\"rate\": {}, \"scheduled\": {}, \"answered\": {}, \"unexpected\": {}, \"errors\": {}, \"p50_ms\": {}, \"p90_ms\": {}, \"p99_ms\": {}, \"p999_ms\": {}, \"max_ms\": {}, \"statuses\": {{{}}}}}",
            json_number(self.rate),
            self.scheduled,
            self.answered,
            self.unexpected,
            self.errors,
            json_number(self.p50_ms),
            json_number(self.p90_ms),
            json_number(self.p99_ms),
            json_number(self.p999_ms),
            json_number(self.max_ms),
            statuses.join(", ")
        )
    }
}

/// A number as JSON: integers without a fraction, others as Rust prints them (shortest
/// round trip), `null` when not finite.
fn json_number(x: f64) -> String {
    if !x.is_finite() {
        "null".into()
    } else if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `{"server": "<server>", "runs": [<RunSummary::to_json>, …]}` and a newline.
pub fn sweep_json(server: &str, runs: &[RunSummary]) -> String {
    let runs: Vec<String> = runs
        .iter()
        .map(|r| format!("    {}", r.to_json()))
        .collect();
    format!(
        "{{\"server\": {}, \"runs\": [\n{}\n]}}\n",
        json_string(server),
        runs.join(",\n")
    )
}

/// The pause between two rates of a sweep, for the server to settle.
pub const SWEEP_PAUSE: Duration = Duration::from_secs(1);

/// Runs each of `rates` (requests per second, in order) for `duration`, [`SWEEP_PAUSE`]
/// apart, with [`run_expecting`]; each rate continues through `requests` where the previous
/// one stopped (so a sweep does not replay the start of the list at every rate).
pub async fn sweep(
    addr: SocketAddr,
    requests: Vec<Vec<u8>>,
    rates: &[f64],
    duration: Duration,
    connections: usize,
    expected: Expected,
) -> Vec<RunSummary> {
    let requests = Arc::new(requests);
    let mut first = 0;
    let mut runs = Vec::with_capacity(rates.len());
    for (i, &rate) in rates.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(SWEEP_PAUSE).await;
        }
        let result = run_from(
            addr,
            Arc::clone(&requests),
            first,
            rate,
            duration,
            connections,
            expected,
        )
        .await;
        first += result.total;
        runs.push(RunSummary::of(rate, &result));
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_is_written_as_json() {
        let mut statuses = BTreeMap::new();
        statuses.insert(200, 9);
        statuses.insert(400, 1);
        let run = RunSummary {
            rate: 700.0,
            scheduled: 10,
            answered: 10,
            unexpected: 0,
            errors: 0,
            p50_ms: 0.125,
            p90_ms: 0.5,
            p99_ms: 1.0,
            p999_ms: 2.25,
            max_ms: 3.0,
            statuses,
        };
        assert_eq!(
            sweep_json("eligd \"main\"", &[run.clone(), RunSummary { rate: 1500.5, ..run }]),
            "{\"server\": \"eligd \\\"main\\\"\", \"runs\": [\n    \
             {\"rate\": 700, \"scheduled\": 10, \"answered\": 10, \"unexpected\": 0, \"errors\": 0, \
             \"p50_ms\": 0.125, \"p90_ms\": 0.5, \"p99_ms\": 1, \"p999_ms\": 2.25, \"max_ms\": 3, \
             \"statuses\": {\"200\": 9, \"400\": 1}},\n    \
             {\"rate\": 1500.5, \"scheduled\": 10, \"answered\": 10, \"unexpected\": 0, \"errors\": 0, \
             \"p50_ms\": 0.125, \"p90_ms\": 0.5, \"p99_ms\": 1, \"p999_ms\": 2.25, \"max_ms\": 3, \
             \"statuses\": {\"200\": 9, \"400\": 1}}\n]}\n"
        );
    }

    #[test]
    fn the_tally_counts_what_the_caller_does_not_expect() {
        let mut t = Tally::default();
        for s in [200, 404, 400, 429, 200] {
            t.count(s, crate::mix::expected_status);
        }
        assert_eq!(
            (t.ok, t.not_found, t.other_status, t.unexpected),
            (2, 1, 2, 1)
        );
        assert_eq!(t.answered(), 5);
        assert_eq!(t.by_status(), "200 2, 400 1, 404 1, 429 1");
        let mut u = Tally::default();
        u.count(400, lookup_statuses);
        assert_eq!(u.unexpected, 1);
    }
}
