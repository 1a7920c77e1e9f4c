//! `access-budget`: what client keys, rate limits and the audit log cost. The same build
//! serves the same synthetic population twice, once with none of them and once with all of
//! them (`--api-keys` with a key whose bucket never empties, `--audit-log`), each pinned to
//! core 0, and `wrk` (pinned to core 1) measures closed-loop throughput of one lookup route
//! against each in turn, `--rounds` times. Budget: the median with everything on is at least
//! `--ratio` (0.9) of the median with it off, measured in this one run.
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

/// Closed-loop requests per second of one `wrk` run, refusing a run with errors.
fn wrk(args: &Args, server: &Server, key: &str) -> Result<f64, String> {
    let url = format!(
        "http://{}/v1/members/{}/eligibility",
        server.addr, server.member
    );
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds))
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .arg(&url)
        .output()
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(format!("wrk saw errors:\n{text}"));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's output:\n{text}"))
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
    let (mut without, mut with) = (Vec::new(), Vec::new());
    // Warm both up, then alternate so drift on the machine hits both alike.
    wrk(
        &Args {
            seconds: 2,
            ..args_copy(&args)
        },
        &off,
        &key,
    )?;
    wrk(
        &Args {
            seconds: 2,
            ..args_copy(&args)
        },
        &on,
        &key,
    )?;
    let mut ratios = Vec::new();
    for round in 1..=args.rounds {
        let a = wrk(&args, &off, &key)?;
        let b = wrk(&args, &on, &key)?;
        println!(
            "round {round}: off {a:.0} req/s, on (keys, limits, audit) {b:.0} req/s, ratio {:.3}",
            b / a
        );
        without.push(a);
        with.push(b);
        ratios.push(b / a);
    }
    let (a, b) = (loadtest::median(&mut without), loadtest::median(&mut with));
    let lines = std::fs::read_to_string(&audit)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    println!("medians: off {a:.0} req/s, on {b:.0} req/s; audit lines written {lines}");
    drop((off, on));
    kill_under_load(&args, &keys, &key, dir.path())?;
    // Each round's pair is measured back to back, so its ratio is what drift on the machine
    // disturbs least: the budget takes the median of the rounds' ratios.
    let mut budget = Budget::default();
    budget.at_least(
        "throughput with keys, limits and audit / without (median of rounds)",
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
