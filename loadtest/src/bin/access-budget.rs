//! `access-budget`: what client keys, rate limits and the audit log cost. The same build
//! serves the same synthetic population twice, once with none of them and once with all of
//! them (`--api-keys` with a key whose bucket never empties, `--audit-log`), both pinned to
//! core 0, and two closed-loop `wrk` clients (pinned to core 1) load both **at the same
//! time**, `--rounds` times. Whatever else the machine does in a round (a noisy neighbour, a
//! kernel thread) then hits both servers alike; measured one after the other, the ratio of a
//! round swung from 0.80 to 1.03 on this machine.
//!
//! For each server the round measures the answers and the CPU time the server used
//! (`/proc/<pid>/stat`, all its threads, the audit writer included). A server that had the
//! core to itself would answer `answers / cpu seconds` per second closed-loop; the budget is
//! the ratio of those for on and off, the median of the rounds: at least `--ratio` (0.9).
//! The raw throughput ratio of the shared core is printed beside it.
//!
//! Usage: `access-budget [--eligd target/production/eligd] [--members 100000] [--seconds 10]
//! [--rounds 3] [--connections 32] [--ratio 0.9]`. Needs `wrk` and `taskset`.
//! Exits 1 when the budget is missed, 2 on error.

use std::path::{Path, PathBuf};

use loadtest::server::{add_key, cpu_seconds, Eligd as Server};
use std::process::{Child, Command, ExitCode, Stdio};

use loadtest::Budget;

struct Args {
    eligd: PathBuf,
    members: u64,
    seconds: u64,
    rounds: usize,
    connections: u64,
    ratio: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        eligd: PathBuf::from(loadtest::ELIGD),
        members: 100_000,
        seconds: 10,
        rounds: 3,
        connections: 32,
        ratio: 0.9,
    };
    loadtest::parse_flags(|flag, value| {
        let num = || loadtest::number(flag, value);
        match flag {
            "--eligd" => a.eligd = PathBuf::from(value),
            "--members" => a.members = num()? as u64,
            "--seconds" => a.seconds = num()? as u64,
            "--rounds" => a.rounds = num()? as usize,
            "--connections" => a.connections = num()? as u64,
            "--ratio" => a.ratio = num()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    loadtest::built(&a.eligd)?;
    Ok(a)
}

fn start(args: &Args, extra: &[&str]) -> Result<Server, String> {
    Server::start(&args.eligd, args.members, "0", extra)
}

/// A closed-loop `wrk` run against `server`, started in the background.
fn spawn_wrk(args: &Args, server: &Server, key: &str) -> Result<Child, String> {
    let url = format!(
        "http://{}/v1/members/{}/eligibility",
        server.addr, server.member
    );
    Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds))
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .arg(&url)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run wrk: {e}"))
}

/// The requests `wrk` completed, refusing a run with errors.
fn wrk_requests(run: Child) -> Result<f64, String> {
    let out = run.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(format!("wrk saw errors:\n{text}"));
    }
    text.lines()
        .find_map(|l| l.trim().split_once(" requests in"))
        .and_then(|(n, _)| n.trim().parse().ok())
        .ok_or_else(|| format!("no request count in wrk's output:\n{text}"))
}

/// One round: both servers loaded at once. Returns (answers, cpu seconds) for each.
fn round(args: &Args, off: &Server, on: &Server, key: &str) -> Result<[(f64, f64); 2], String> {
    let cpu = |s: &Server| cpu_seconds(s.child.id());
    let (off_cpu, on_cpu) = (cpu(off)?, cpu(on)?);
    let (a, b) = (spawn_wrk(args, off, key)?, spawn_wrk(args, on, key)?);
    let (a, b) = (wrk_requests(a)?, wrk_requests(b)?);
    Ok([(a, cpu(off)? - off_cpu), (b, cpu(on)? - on_cpu)])
}

fn run(args: Args) -> Result<Budget, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let keys = dir.path().join("keys.json");
    let key = add_key(&args.eligd, &keys)?;
    let audit = dir.path().join("audit.log");
    let off = start(&args, &[])?;
    let on = start(
        &args,
        &[
            "--api-keys",
            keys.to_str().ok_or("temp path")?,
            "--audit-log",
            audit.to_str().ok_or("temp path")?,
        ],
    )?;
    // Warm both up, then measure them side by side.
    round(
        &Args {
            seconds: 2,
            ..args_copy(&args)
        },
        &off,
        &on,
        &key,
    )?;
    let (mut ratios, mut raw) = (Vec::new(), Vec::new());
    for n in 1..=args.rounds {
        let [(a, a_cpu), (b, b_cpu)] = round(&args, &off, &on, &key)?;
        let secs = args.seconds as f64;
        let (a_full, b_full) = (a / a_cpu.max(0.01), b / b_cpu.max(0.01));
        println!(
            "round {n}: off {:.0} req/s on {a_cpu:.2} CPU s ({a_full:.0} per CPU s), on (keys, limits, audit) {:.0} req/s on {b_cpu:.2} CPU s ({b_full:.0} per CPU s); ratio {:.3}, raw {:.3}",
            a / secs,
            b / secs,
            b_full / a_full,
            b / a
        );
        ratios.push(b_full / a_full);
        raw.push(b / a);
    }
    let lines = std::fs::read_to_string(&audit)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    println!(
        "median raw throughput ratio on the shared core {:.3}; audit lines written {lines}",
        loadtest::median(&mut raw)
    );
    drop((off, on));
    kill_under_load(&args, &keys, &key, dir.path())?;
    let mut budget = Budget::default();
    budget.at_least(
        "closed-loop answers per server CPU second, keys + limits + audit / without (median of rounds)",
        loadtest::median(&mut ratios),
        args.ratio,
        "×",
    );
    Ok(budget)
}

/// What a `kill -9` under full load loses: answers that went out whose audit record never
/// reached the file (records still in the queue, or in the writer's hands).
fn kill_under_load(args: &Args, keys: &Path, key: &str, dir: &Path) -> Result<(), String> {
    let audit = dir.join("killed.log");
    let mut server = start(
        args,
        &[
            "--api-keys",
            keys.to_str().ok_or("temp path")?,
            "--audit-log",
            audit.to_str().ok_or("temp path")?,
        ],
    )?;
    let url = format!(
        "http://{}/v1/members/{}/eligibility",
        server.addr, server.member
    );
    let load = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{}", args.connections))
        .args(["-d6s", "-H", &format!("Authorization: Bearer {key}"), &url])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    std::thread::sleep(std::time::Duration::from_secs(3));
    let _ = server.child.kill();
    let _ = server.child.wait();
    let out = load.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let answered: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in"))
        .and_then(|(n, _)| n.trim().parse().ok())
        .ok_or_else(|| format!("no request count in wrk's output:\n{text}"))?;
    let written = std::fs::read_to_string(&audit).map_err(|e| e.to_string())?;
    let whole = written.is_empty() || written.ends_with('\n');
    let lines = written.lines().count() as u64;
    let lost = answered.saturating_sub(lines);
    println!(
        "kill -9 after 3 s of full load: {answered} answers, {lines} audit lines, {lost} lost ({:.4} %), last line whole: {whole}",
        lost as f64 * 100.0 / answered.max(1) as f64
    );
    Ok(())
}

fn args_copy(a: &Args) -> Args {
    Args {
        eligd: a.eligd.clone(),
        ..*a
    }
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(budget) => budget.exit_code(),
        Err(e) => {
            eprintln!("access-budget: error: {e}");
            ExitCode::from(2)
        }
    }
}
