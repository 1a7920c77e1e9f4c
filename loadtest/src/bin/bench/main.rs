//! `bench`: eligd against every peer, in one run, with one client (`scripts/bench.sh` builds
//! release and runs it pinned; see docs/performance.md, "The bench command").
//!
//! Servers, all pinned to core 0 (`--server-cores`): eligd as deployed (keys and the audit
//! log on, `--members` synthetic members), the same build with neither (what keys and the
//! audit log's group commit cost), a bare hyper 1 server answering a fixed JSON body
//! as long as eligd's answer (`hello-server`), a private `redis-server` answering `GET` of
//! answer-sized values, and a private PostgreSQL answering a prepared point select of an
//! answer-sized row. This process is the client; run it on core 1 (the script does).
//!
//! Closed loop: `--rounds` rounds; in each, the same client (`loadtest::closed_loop`,
//! `--connections` connections, one request in flight on each) loads every server in turn
//! for `--seconds`. A round's ratios compare runs seconds apart; the budgets take the median
//! of the rounds. CPU per answer comes from the server process's CPU time over its runs.
//! eligd's handler p99 comes from its own histogram (`/metrics`, before and after) in the
//! build without keys and audit: with the audit log, the histogram includes the wait for
//! the answer's line to be written (group commit), measured by the two audit budgets.
//!
//! Open loop: the realistic mix (`loadtest::mix`) at 700/s against eligd and the bare
//! server, then each at rising rates until p99 passes 2 ms (the highest rate within it is
//! reported).
//!
//! Prints a budget table and writes every figure as JSON (`--out`). Exits 1 when a budget is
//! missed, 2 on error.

mod open;
mod peers;

use std::path::PathBuf;
use std::process::ExitCode;

use loadtest::open_loop::{self, RunSummary};
use loadtest::Budget;

use open::{highest_within, open_rounds, OPEN_LOOP_CONNECTIONS};
use peers::{closed_rounds, start, ELIGD, ELIGD_PLAIN, HELLO, POSTGRES, REDIS};

pub(crate) struct Args {
    eligd: PathBuf,
    hello: PathBuf,
    members: u64,
    connections: usize,
    seconds: f64,
    rounds: usize,
    server_cores: String,
    out: PathBuf,
    open_loop_seconds: f64,
    skip_open_loop: bool,
    budgets: Budgets,
}

pub(crate) struct Budgets {
    hello: f64,
    redis: f64,
    postgres: f64,
    audit: f64,
    handler_p99_us: f64,
    open_loop_p99: f64,
    p99_target_ms: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        eligd: PathBuf::from(loadtest::ELIGD),
        hello: PathBuf::from("target/production/hello-server"),
        members: 1_000_000,
        connections: 64,
        seconds: 4.0,
        rounds: 5,
        server_cores: "0".into(),
        out: PathBuf::from("target/bench/bench.json"),
        open_loop_seconds: 15.0,
        skip_open_loop: false,
        budgets: Budgets {
            hello: 0.9,
            redis: 1.2,
            postgres: 3.0,
            audit: 0.9,
            handler_p99_us: 25.0,
            open_loop_p99: 1.25,
            p99_target_ms: 2.0,
        },
    };
    loadtest::parse_flags(|flag, value| {
        let num = || loadtest::number(flag, value);
        let b = &mut a.budgets;
        match flag {
            "--eligd" => a.eligd = PathBuf::from(value),
            "--hello" => a.hello = PathBuf::from(value),
            "--members" => a.members = num()? as u64,
            "--connections" => a.connections = num()? as usize,
            "--seconds" => a.seconds = num()?,
            "--rounds" => a.rounds = num()? as usize,
            "--server-cores" => a.server_cores = value.to_string(),
            "--out" => a.out = PathBuf::from(value),
            "--open-loop-seconds" => a.open_loop_seconds = num()?,
            "--open-loop" => a.skip_open_loop = value == "off",
            "--hello-ratio" => b.hello = num()?,
            "--redis-ratio" => b.redis = num()?,
            "--postgres-ratio" => b.postgres = num()?,
            "--audit-ratio" => b.audit = num()?,
            "--handler-p99-us" => b.handler_p99_us = num()?,
            "--open-loop-p99-ratio" => b.open_loop_p99 = num()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    loadtest::built(&a.eligd)?;
    loadtest::built(&a.hello)?;
    if a.rounds == 0 || a.connections == 0 || a.seconds <= 0.0 {
        return Err("--rounds, --connections and --seconds must be positive".into());
    }
    Ok(a)
}

/// The median over rounds of `peer a / peer b`, each round's pair measured seconds apart.
fn ratio(rates: &[Vec<f64>], a: usize, b: usize) -> f64 {
    let mut ratios: Vec<f64> = rates[a].iter().zip(&rates[b]).map(|(x, y)| x / y).collect();
    loadtest::median(&mut ratios)
}

fn median_of(values: &[Option<f64>]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().flatten().copied().collect();
    (!v.is_empty()).then(|| loadtest::median(&mut v))
}

fn json_number(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map_or("null".into(), |v| format!("{v:.6}"))
}

async fn run(args: Args) -> Result<ExitCode, String> {
    let started = start(&args).await?;
    println!(
        "bench: eligd {} members (keys + audit), answer {} bytes; servers on core(s) {}, {} connections, {} rounds of {} s",
        args.members, started.body_bytes, args.server_cores, args.connections, args.rounds, args.seconds
    );
    let c = closed_rounds(&args, &started).await?;
    let names = ["hello", "eligd", "redis", "postgres", "eligd_plain"];
    let mut budget = Budget::default();
    let (vs_hello, vs_redis, vs_pg, vs_plain) = (
        ratio(&c.rates, ELIGD, HELLO),
        ratio(&c.rates, ELIGD, REDIS),
        ratio(&c.rates, ELIGD, POSTGRES),
        ratio(&c.rates, ELIGD, ELIGD_PLAIN),
    );
    budget.at_least(
        "closed-loop throughput, keys + audit (group commit) / the same build without",
        vs_plain,
        args.budgets.audit,
        "×",
    );
    budget.at_least(
        "closed-loop throughput, eligd / hello-world",
        vs_hello,
        args.budgets.hello,
        "×",
    );
    budget.at_least(
        "closed-loop throughput, eligd / Redis GET",
        vs_redis,
        args.budgets.redis,
        "×",
    );
    budget.at_least(
        "closed-loop throughput, eligd / PostgreSQL point select",
        vs_pg,
        args.budgets.postgres,
        "×",
    );
    let handler_us = c.handler_p99_s.map_or(f64::INFINITY, |s| s * 1e6);
    budget.at_most(
        "eligd handler p99, without keys and audit (upper bound of its histogram bucket)",
        handler_us,
        args.budgets.handler_p99_us,
        "µs",
    );
    let mut json = String::from("{\n");
    json.push_str(&format!(
        "  \"date\": \"{}\",\n  \"members\": {},\n  \"connections\": {},\n  \"seconds\": {},\n  \"rounds\": {},\n  \"answer_bytes\": {},\n  \"closed_loop\": {{\n",
        eligd::dates::rfc3339_utc_ms(eligd::dates::unix_ms()),
        args.members,
        args.connections,
        args.seconds,
        args.rounds,
        started.body_bytes
    ));
    for (i, name) in names.iter().enumerate() {
        let mut rates = c.rates[i].clone();
        json.push_str(&format!(
            "    \"{name}\": {{\"per_second_median\": {:.0}, \"per_second\": [{}], \"cpu_us_per_answer\": {}, \"core_busy\": {}}}{}\n",
            loadtest::median(&mut rates),
            c.rates[i].iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
            json_number(median_of(&c.cpu_us[i])),
            json_number(median_of(&c.busy[i])),
            if i + 1 < names.len() { "," } else { "" }
        ));
    }
    json.push_str(&format!(
        "  }},\n  \"ratios\": {{\"eligd_per_hello\": {vs_hello:.4}, \"eligd_per_redis\": {vs_redis:.4}, \"eligd_per_postgres\": {vs_pg:.4}, \"eligd_per_eligd_plain\": {vs_plain:.4}}},\n  \"handler_p50_seconds_bound\": {},\n  \"handler_p99_seconds_bound\": {},\n",
        json_number(c.handler_p50_s),
        json_number(c.handler_p99_s)
    ));
    if !args.skip_open_loop {
        let o = open_rounds(&args, &started).await?;
        let target = args.budgets.p99_target_ms;
        let (eligd_max, hello_max) = (
            highest_within(&o.eligd_sweep, target),
            highest_within(&o.hello_sweep, target),
        );
        println!(
            "open loop: highest rate with p99 ≤ {target} ms: eligd {eligd_max:.0}/s, hello-world {hello_max:.0}/s"
        );
        budget.at_most(
            "open-loop p99 at 700/s, eligd / hello-world (realistic mix)",
            o.eligd_700.p99_ms / o.hello_700.p99_ms.max(1e-3),
            args.budgets.open_loop_p99,
            "×",
        );
        budget.at_most(
            "open-loop answers with an unexpected status or none, at 700/s",
            (o.eligd_700.unexpected + o.eligd_700.errors) as f64,
            0.0,
            "requests",
        );
        let dir = args.out.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        for (file, label, runs) in [
            (
                "open-loop-eligd.json",
                "eligd (keys + audit)",
                &o.eligd_sweep,
            ),
            (
                "open-loop-hello.json",
                "hello-world (bare hyper 1)",
                &o.hello_sweep,
            ),
        ] {
            std::fs::write(dir.join(file), open_loop::sweep_json(label, runs))
                .map_err(|e| format!("{file}: {e}"))?;
        }
        json.push_str(&format!(
            "  \"open_loop\": {{\"connections\": {OPEN_LOOP_CONNECTIONS}, \"eligd_700\": {}, \"hello_700\": {}, \"eligd_highest_rate_within_p99_target\": {eligd_max:.0}, \"hello_highest_rate_within_p99_target\": {hello_max:.0}, \"p99_target_ms\": {target}, \"eligd_sweep\": [{}], \"hello_sweep\": [{}]}},\n",
            o.eligd_700.to_json(),
            o.hello_700.to_json(),
            o.eligd_sweep.iter().map(RunSummary::to_json).collect::<Vec<_>>().join(", "),
            o.hello_sweep.iter().map(RunSummary::to_json).collect::<Vec<_>>().join(", "),
        ));
    }
    for (i, name) in [
        (ELIGD, "eligd"),
        (ELIGD_PLAIN, "eligd without keys and audit"),
        (HELLO, "hello-world"),
    ] {
        if let Some(us) = median_of(&c.cpu_us[i]) {
            println!("{name}: {us:.2} µs of server CPU per answer (median of rounds)");
        }
    }
    json.push_str(&format!(
        "  \"budgets\": [{}],\n  \"passed\": {}\n}}\n",
        budget
            .checks
            .iter()
            .map(|c| format!(
                "{{\"name\": \"{}\", \"measured\": {}, \"limit\": {}, \"passed\": {}}}",
                c.name,
                json_number(Some(c.measured)),
                c.limit,
                c.passed()
            ))
            .collect::<Vec<_>>()
            .join(", "),
        budget.all_passed()
    ));
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(&args.out, json).map_err(|e| format!("{}: {e}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(budget.exit_code())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: error: {e}");
            return ExitCode::from(2);
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench: error: {e}");
            ExitCode::from(2)
        }
    }
}
