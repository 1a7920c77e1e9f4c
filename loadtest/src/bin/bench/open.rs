//! The open-loop part of `bench`: the realistic mix at 700/s against eligd and the bare
//! server, then each swept over rising rates up to the p99 target.

use std::net::SocketAddr;
use std::time::Duration;

use loadtest::mix;
use loadtest::open_loop::{self, RunSummary};

use super::peers::Started;
use super::Args;

/// The open-loop figures: both servers at 700/s, and each swept over rising rates.
pub(crate) struct OpenLoop {
    pub(crate) eligd_700: RunSummary,
    pub(crate) hello_700: RunSummary,
    pub(crate) eligd_sweep: Vec<RunSummary>,
    pub(crate) hello_sweep: Vec<RunSummary>,
}

/// Rates the sweep offers, in order; it stops after the first whose p99 passes the target.
const SWEEP_RATES: [f64; 9] = [
    700.0, 2_000.0, 5_000.0, 10_000.0, 20_000.0, 30_000.0, 40_000.0, 60_000.0, 80_000.0,
];

/// Each rate of the sweep runs this long.
const SWEEP_SECONDS: f64 = 5.0;

/// One rate against one server.
async fn open_at(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    rate: f64,
    seconds: f64,
    name: &str,
) -> Result<RunSummary, String> {
    let runs = open_loop::sweep(
        addr,
        requests.to_vec(),
        &[rate],
        Duration::from_secs_f64(seconds),
        OPEN_LOOP_CONNECTIONS,
        mix::expected_status,
    )
    .await;
    let run = runs.into_iter().next().ok_or("no run")?;
    println!("open loop, {name}, {}", run.line());
    Ok(run)
}

/// Rates in order until p99 passes `target_ms` (that rate included, to show the knee).
async fn sweep_until(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    target_ms: f64,
    name: &str,
) -> Result<Vec<RunSummary>, String> {
    let mut runs = Vec::new();
    for rate in SWEEP_RATES {
        let run = open_at(addr, requests, rate, SWEEP_SECONDS, name).await?;
        let over = run.p99_ms > target_ms || run.errors > 0;
        runs.push(run);
        if over {
            break;
        }
    }
    Ok(runs)
}

/// Connections of the open-loop generator (as `http-load`'s default).
pub(crate) const OPEN_LOOP_CONNECTIONS: usize = 32;

pub(crate) async fn open_rounds(args: &Args, started: &Started) -> Result<OpenLoop, String> {
    let eligd_addr: SocketAddr = started.eligd.addr.parse().map_err(|e| format!("{e}"))?;
    let requests = mix::realistic(&mix::MixOptions {
        members: args.members,
        api_key: Some(started.key.clone()),
        ..mix::MixOptions::default()
    });
    let seconds = args.open_loop_seconds;
    let hello_700 = open_at(started.hello_addr, &requests, 700.0, seconds, "hello-world").await?;
    let eligd_700 = open_at(eligd_addr, &requests, 700.0, seconds, "eligd").await?;
    let target = args.budgets.p99_target_ms;
    let eligd_sweep = sweep_until(eligd_addr, &requests, target, "eligd").await?;
    let hello_sweep = sweep_until(started.hello_addr, &requests, target, "hello-world").await?;
    Ok(OpenLoop {
        eligd_700,
        hello_700,
        eligd_sweep,
        hello_sweep,
    })
}

/// The highest offered rate whose p99 met `target_ms` (none: 0).
pub(crate) fn highest_within(runs: &[RunSummary], target_ms: f64) -> f64 {
    runs.iter()
        .filter(|r| r.p99_ms <= target_ms && r.errors == 0 && r.unexpected == 0)
        .map(|r| r.rate)
        .fold(0.0, f64::max)
}
