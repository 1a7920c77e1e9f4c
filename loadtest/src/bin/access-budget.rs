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
//! Usage: `access-budget [--eligd target/release/eligd] [--members 100000] [--seconds 10]
//! [--rounds 3] [--connections 32] [--ratio 0.9]`. Needs `wrk` and `taskset`.
//! Exits 1 when the budget is missed, 2 on error.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};

use loadtest::Budget;

const AUDIT_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

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
        eligd: PathBuf::from("target/release/eligd"),
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

/// A running eligd: its address and a synthetic member to ask about.
struct Server {
    child: Child,
    addr: String,
    member: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &Args, extra: &[&str]) -> Result<Server, String> {
    let members = args.members.to_string();
    let mut child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(&args.eligd)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--demo-members",
            &members,
        ])
        .args(extra)
        .env("ELIGD_AUDIT_KEY", AUDIT_KEY)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run taskset/eligd: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let (mut addr, mut member) = (None, None);
    while member.is_none() {
        let line = lines
            .next()
            .ok_or("eligd exited before it was ready")?
            .map_err(|e| e.to_string())?;
        if let Some(rest) = line.split("address=").nth(1) {
            addr = rest.split_whitespace().next().map(str::to_string);
        }
        if line.contains("synthetic sample: active main insured") {
            member = line
                .split("demo_national_id=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_string);
        }
    }
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Ok(Server {
        child,
        addr: addr.ok_or("no address logged")?,
        member: member.ok_or("no sample logged")?,
    })
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

/// CPU seconds a process has used (user + system, all threads).
fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, String> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| "bad /proc stat".to_string())
    };
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the name.
    let hz = 100.0; // USER_HZ on Linux
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// One round: both servers loaded at once. Returns (answers, cpu seconds) for each.
fn round(args: &Args, off: &Server, on: &Server, key: &str) -> Result<[(f64, f64); 2], String> {
    let cpu = |s: &Server| cpu_seconds(s.child.id());
    let (off_cpu, on_cpu) = (cpu(off)?, cpu(on)?);
    let (a, b) = (spawn_wrk(args, off, key)?, spawn_wrk(args, on, key)?);
    let (a, b) = (wrk_requests(a)?, wrk_requests(b)?);
    Ok([(a, cpu(off)? - off_cpu), (b, cpu(on)? - on_cpu)])
}

fn add_key(eligd: &Path, keys: &Path) -> Result<String, String> {
    let out = Command::new(eligd)
        .args(["keys", "add", "--keys-file"])
        .arg(keys)
        .args(["--client", "load", "--channel", "any", "--rate", "1000000"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
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
