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
use std::time::Duration;

use eligd::dates::Day;
use eligd::demo::Generator;
use loadtest::open_loop::{self, ms, summary};
use loadtest::{Budget, Xorshift};

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

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("http-load: error: {e}");
            return ExitCode::from(2);
        }
    };
    loadtest::run_on_one_thread("http-load", async {
        let requests = requests(&args);
        let result = open_loop::run(
            args.addr,
            requests,
            args.rate,
            args.duration,
            args.connections,
        )
        .await;
        Ok(report(&args, &result).exit_code())
    })
}

fn report(args: &Args, result: &open_loop::LoadResult) -> Budget {
    let tally = &result.tally;
    let answered = tally.ok + tally.not_found + tally.other_status;
    println!(
        "http-load: {} requests scheduled at {:.0}/s for {:.0} s over {} connections to {}",
        result.total,
        args.rate,
        args.duration.as_secs_f64(),
        args.connections,
        args.addr
    );
    println!(
        "answered {answered} ({:.0}/s): 200 {}, 404 {}, other {}, errors {}",
        answered as f64 / result.elapsed.as_secs_f64().max(1e-9),
        tally.ok,
        tally.not_found,
        tally.other_status,
        tally.errors
    );
    println!(
        "open-loop latency (from due time): {}",
        summary(&result.open_loop)
    );
    println!("service latency (from send): {}", summary(&result.service));
    let mut budget = Budget::default();
    budget.at_most(
        "errors and unexpected statuses",
        (tally.errors + tally.other_status) as f64,
        0.0,
        "requests",
    );
    if let Some(limit) = args.p50_ms {
        budget.at_most("open-loop p50", ms(&result.open_loop, 0.5), limit, "ms");
    }
    if let Some(limit) = args.p99_ms {
        budget.at_most("open-loop p99", ms(&result.open_loop, 0.99), limit, "ms");
    }
    budget
}
