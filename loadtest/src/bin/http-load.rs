//! `http-load`: an open-loop HTTP load generator for eligd.
//!
//! Requests are scheduled at a fixed rate, whatever the server does: request `i` is due at
//! `start + i / rate`. Latency is measured from that due time, not from when the request was
//! actually sent, so a stalled server shows up as latency for every request that had to wait
//! (no coordinated omission). Only loopback addresses are accepted, and every run is bounded in
//! time.
//!
//! Two request sets (`--mix`):
//! - `lookups` (the default): `GET /v1/members/{id}/eligibility` of members of the synthetic
//!   population, generated with the same `--members` and `--seed` as the server's, so hits are
//!   real members; `--miss-ratio` mixes in valid IDs nobody holds. 200 and 404 are expected.
//! - `realistic`: `loadtest::mix` — single lookups, booklets, batches of 10, whole USSD
//!   sessions and FHIR requests, with `--invalid-or-unknown` (default 0.1) of the inquiries
//!   naming nobody. 200, 400 and 404 are expected.
//!
//! Every other status is counted as unexpected. `--api-key` sends `Authorization: Bearer KEY`
//! on every request (for a server with `--api-keys`; the realistic mix needs a key of channel
//! `any`). `--sweep 300,700,5000` runs each rate for `--duration` in turn (1 s apart, each
//! continuing through the request list where the previous stopped) and prints one line per
//! rate instead of `--rate`'s report; `--json FILE` writes the runs as
//! `{"server": LABEL, "runs": [{"rate": …, "answered": …, "unexpected": …, "errors": …,
//! "p50_ms": …, "p90_ms": …, "p99_ms": …, "p999_ms": …, "max_ms": …}, …]}` (with `--label`,
//! default `eligd`), which `scripts/plot-latency.py` draws.
//!
//! Exits 1 when a request went unanswered or got an unexpected status, or when a latency
//! budget given with `--p50-ms`/`--p99-ms` is missed (at any rate of a sweep); 2 on error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use eligd::dates::Day;
use eligd::demo::Generator;
use loadtest::mix::{self, MixOptions};
use loadtest::open_loop::{self, summary, Expected, RunSummary};
use loadtest::{Budget, Xorshift};

const USAGE: &str = "\
usage: http-load [--addr 127.0.0.1:8080] [--rate 1000 | --sweep R1,R2,...] [--duration 10]
                 [--connections 32] [--mix lookups|realistic] [--members 1000000] [--seed 1]
                 [--miss-ratio 0] [--invalid-or-unknown 0.1] [--api-key KEY]
                 [--json FILE] [--label eligd] [--p50-ms MS] [--p99-ms MS]

  --addr ADDR              the server (loopback only)
  --rate R                 requests per second (default 1000)
  --sweep R1,R2,...        run each rate for --duration in turn, one line per rate
  --duration S             seconds per rate (default 10, at most 600)
  --connections N          keep-alive connections (default 32)
  --mix lookups            GET /v1/members/{id}/eligibility only (default; 200, 404 expected)
  --mix realistic          the realistic mix of loadtest::mix (200, 400, 404 expected)
  --members N, --seed S    the server's synthetic population (--demo-members, --demo-seed)
  --miss-ratio F           lookups: share of valid IDs nobody holds (default 0)
  --invalid-or-unknown F   realistic: share of inquiries naming nobody (default 0.1)
  --api-key KEY            send Authorization: Bearer KEY on every request
  --json FILE              write the runs as JSON (for scripts/plot-latency.py)
  --label NAME             the JSON's \"server\" field (default eligd)
  --p50-ms MS, --p99-ms MS open-loop latency budgets (exit 1 when missed)

Exits 0 when every request got an expected answer within the budgets, 1 otherwise, 2 on error.";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mix {
    Lookups,
    Realistic,
}

struct Args {
    addr: SocketAddr,
    rates: Vec<f64>,
    sweep: bool,
    duration: Duration,
    connections: usize,
    mix: Mix,
    members: u64,
    seed: u64,
    miss_ratio: f64,
    invalid_or_unknown: f64,
    api_key: Option<String>,
    json: Option<PathBuf>,
    label: String,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut a = Args {
        addr: "127.0.0.1:8080".parse().map_err(|e| format!("{e}"))?,
        rates: vec![1_000.0],
        sweep: false,
        duration: Duration::from_secs(10),
        connections: 32,
        mix: Mix::Lookups,
        members: 1_000_000,
        seed: 1,
        miss_ratio: 0.0,
        invalid_or_unknown: 0.10,
        api_key: None,
        json: None,
        label: "eligd".into(),
        p50_ms: None,
        p99_ms: None,
    };
    let (mut rate, mut sweep) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--addr" => a.addr = value.parse().map_err(|e| format!("--addr: {e}"))?,
            "--rate" => rate = Some(num(&value)?),
            "--sweep" => {
                sweep = Some(
                    value
                        .split(',')
                        .map(|r| num(r.trim()))
                        .collect::<Result<Vec<f64>, String>>()?,
                )
            }
            "--duration" => a.duration = Duration::from_secs_f64(num(&value)?),
            "--connections" => a.connections = num(&value)? as usize,
            "--mix" => {
                a.mix = match value.as_str() {
                    "lookups" => Mix::Lookups,
                    "realistic" => Mix::Realistic,
                    other => return Err(format!("--mix: {other:?} is not lookups or realistic")),
                }
            }
            "--members" => a.members = num(&value)? as u64,
            "--seed" => a.seed = num(&value)? as u64,
            "--miss-ratio" => a.miss_ratio = num(&value)?,
            "--invalid-or-unknown" => a.invalid_or_unknown = num(&value)?,
            "--api-key" => a.api_key = Some(value),
            "--json" => a.json = Some(PathBuf::from(value)),
            "--label" => a.label = value,
            "--p50-ms" => a.p50_ms = Some(num(&value)?),
            "--p99-ms" => a.p99_ms = Some(num(&value)?),
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    match (rate, sweep) {
        (Some(_), Some(_)) => return Err("give --rate or --sweep, not both".into()),
        (Some(r), None) => a.rates = vec![r],
        (None, Some(rates)) => {
            a.rates = rates;
            a.sweep = true;
        }
        (None, None) => {}
    }
    if !a.addr.ip().is_loopback() {
        return Err("only loopback addresses are load-tested".into());
    }
    if a.rates.is_empty()
        || !a.rates.iter().all(|r| *r > 0.0 && *r <= 200_000.0)
        || a.duration > Duration::from_secs(600)
        || a.connections == 0
    {
        return Err(
            "every rate must be in (0, 200000], --duration at most 600 s, --connections at least 1"
                .into(),
        );
    }
    if !(0.0..=1.0).contains(&a.miss_ratio) || !(0.0..=1.0).contains(&a.invalid_or_unknown) {
        return Err("--miss-ratio and --invalid-or-unknown must be between 0 and 1".into());
    }
    if a.api_key
        .as_deref()
        .is_some_and(|k| k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err("--api-key must be printable ASCII without spaces".into());
    }
    Ok(Some(a))
}

/// The single-lookup requests: members of the population, and valid IDs nobody holds.
fn lookups(args: &Args) -> Vec<Vec<u8>> {
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
    let auth = args
        .api_key
        .as_ref()
        .map(|k| format!("authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
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
            format!("GET /v1/members/{id}/eligibility HTTP/1.1\r\nhost: eligd\r\n{auth}\r\n")
                .into_bytes()
        })
        .collect()
}

fn requests(args: &Args) -> (Vec<Vec<u8>>, Expected) {
    match args.mix {
        Mix::Lookups => (lookups(args), open_loop::lookup_statuses),
        Mix::Realistic => (
            mix::realistic(&MixOptions {
                members: args.members,
                seed: args.seed,
                api_key: args.api_key.clone(),
                invalid_or_unknown: args.invalid_or_unknown,
            }),
            mix::expected_status,
        ),
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("http-load: error: {e}");
            return ExitCode::from(2);
        }
    };
    loadtest::run_on_one_thread("http-load", async {
        let (requests, expected) = requests(&args);
        let runs = if args.sweep {
            println!(
                "http-load: sweep of {} rates, {:.0} s each, over {} connections to {}",
                args.rates.len(),
                args.duration.as_secs_f64(),
                args.connections,
                args.addr
            );
            let runs = open_loop::sweep(
                args.addr,
                requests,
                &args.rates,
                args.duration,
                args.connections,
                expected,
            )
            .await;
            for run in &runs {
                println!("{}", run.line());
            }
            runs
        } else {
            let rate = args.rates[0];
            let result = open_loop::run_expecting(
                args.addr,
                requests,
                rate,
                args.duration,
                args.connections,
                expected,
            )
            .await;
            report(&args, rate, &result);
            vec![RunSummary::of(rate, &result)]
        };
        if let Some(path) = &args.json {
            std::fs::write(path, open_loop::sweep_json(&args.label, &runs))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            println!("wrote {}", path.display());
        }
        Ok(budget(&args, &runs).exit_code())
    })
}

fn report(args: &Args, rate: f64, result: &open_loop::LoadResult) {
    let tally = &result.tally;
    let answered = tally.answered();
    println!(
        "http-load: {} requests scheduled at {:.0}/s for {:.0} s over {} connections to {}",
        result.total,
        rate,
        args.duration.as_secs_f64(),
        args.connections,
        args.addr
    );
    println!(
        "answered {answered} ({:.0}/s): {}; unexpected {}, errors {}",
        answered as f64 / result.elapsed.as_secs_f64().max(1e-9),
        tally.by_status(),
        tally.unexpected,
        tally.errors
    );
    println!(
        "open-loop latency (from due time): {}",
        summary(&result.open_loop)
    );
    println!("service latency (from send): {}", summary(&result.service));
}

fn budget(args: &Args, runs: &[RunSummary]) -> Budget {
    let mut budget = Budget::default();
    budget.at_most(
        "errors and unexpected statuses",
        runs.iter().map(|r| r.errors + r.unexpected).sum::<u64>() as f64,
        0.0,
        "requests",
    );
    for run in runs {
        let at = if args.sweep {
            format!(" at {}/s", run.rate)
        } else {
            String::new()
        };
        if let Some(limit) = args.p50_ms {
            budget.at_most(&format!("open-loop p50{at}"), run.p50_ms, limit, "ms");
        }
        if let Some(limit) = args.p99_ms {
            budget.at_most(&format!("open-loop p99{at}"), run.p99_ms, limit, "ms");
        }
    }
    budget
}
