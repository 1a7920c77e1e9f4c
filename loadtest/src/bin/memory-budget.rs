//! `memory-budget`: the memory budgets of issue 26, measured on the real binary; exits 1 when
//! one is missed, 0 when every one holds, 2 on an error.
//!
//! 1. **Build**: `eligd snapshot build --from-jsonl` of N synthetic members (written first
//!    with `eligd demo-data`, or reused). Peak resident memory (the kernel's `ru_maxrss` of
//!    the child) ≤ `sizing::work_budget(N)` = 40 B × N + 256 MiB.
//! 2. **Compaction**: `eligd serve` on that snapshot, pinned to core 0, `--compact-overlay 1`,
//!    following a private `redis-server`. While changes arrive (one every 200 ms, so one
//!    compaction follows another), its anonymous memory (`RssAnon`, sampled every 10 ms) peaks
//!    at ≤ `sizing::work_budget(N)`.
//! 3. **Latency meanwhile**: an open-loop lookup load (this process, pinned to core 1) warms
//!    up for 5 s, then runs `--rounds` rounds (3) of a `--seconds` window (10) with no
//!    compaction (once they have settled) and one while compactions run; the median p99 during
//!    ≤ 2 × the median p99 without, measured alternately in the same run.
//!
//! Usage: `memory-budget --members 10000000 [--eligd target/production/eligd]
//! [--work-dir DIR] [--reuse 1] [--lookups-per-s 2000] [--seconds 10] [--rounds 3]`. With `--work-dir`
//! the JSON Lines file stays there and `--reuse 1` skips writing it again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eligd::dates::Day;
use eligd::demo::Generator;
use eligd::sizing;
use loadtest::open_loop::{self, ms};
use loadtest::{probe, Budget};

const STREAM: &str = "eligd:changes";
const SEED: u64 = 1;
const TODAY: &str = "2026-12-01";

struct Args {
    eligd: PathBuf,
    members: u64,
    work_dir: Option<PathBuf>,
    reuse: bool,
    lookups_per_s: f64,
    seconds: f64,
    rounds: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        eligd: PathBuf::from(loadtest::ELIGD),
        members: 10_000_000,
        work_dir: None,
        reuse: false,
        lookups_per_s: 2_000.0,
        seconds: 10.0,
        rounds: 3,
    };
    loadtest::parse_flags(|flag, value| {
        let num = || loadtest::number(flag, value);
        match flag {
            "--eligd" => a.eligd = PathBuf::from(value),
            "--members" => a.members = num()? as u64,
            "--work-dir" => a.work_dir = Some(PathBuf::from(value)),
            "--reuse" => a.reuse = num()? != 0.0,
            "--lookups-per-s" => a.lookups_per_s = num()?,
            "--seconds" => a.seconds = num()?,
            "--rounds" => a.rounds = num()? as usize,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if a.members == 0
        || a.lookups_per_s <= 0.0
        || !(1.0..=600.0).contains(&a.seconds)
        || !(1..=20).contains(&a.rounds)
    {
        return Err(
            "--members and --lookups-per-s must be positive, --seconds 1 to 600, --rounds 1 to 20"
                .into(),
        );
    }
    loadtest::built(&a.eligd)?;
    Ok(a)
}

fn main() -> ExitCode {
    loadtest::budget_main("memory-budget", parse_args(), run)
}

async fn run(args: Args) -> Result<Budget, String> {
    let scratch = match &args.work_dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().map_err(|e| e.to_string())?),
    };
    let work = args
        .work_dir
        .clone()
        .or_else(|| scratch.as_ref().map(|d| d.path().to_path_buf()))
        .ok_or("no work directory")?;
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let mut budget = Budget::default();
    let limit = sizing::work_budget(args.members) as f64 / (1 << 20) as f64;

    let jsonl = work.join(format!("members-{}.jsonl", args.members));
    if !(args.reuse && jsonl.exists()) {
        println!("writing {} members as JSON Lines…", args.members);
        run_child(
            Command::new(&args.eligd)
                .args(["demo-data", "--members", &args.members.to_string()])
                .args([
                    "--seed",
                    &SEED.to_string(),
                    "--today",
                    TODAY,
                    "--out",
                    path(&jsonl)?,
                ]),
        )?;
    }
    let snapshots = work.join(format!("snapshots-{}", args.members));
    let _ = std::fs::remove_dir_all(&snapshots);
    std::fs::create_dir_all(&snapshots).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let peak_build = run_child(Command::new(&args.eligd).args([
        "snapshot",
        "build",
        "--from-jsonl",
        path(&jsonl)?,
        "--out",
        path(&snapshots)?,
    ]))?;
    println!(
        "build: {} members in {:.1} s, peak resident {:.0} MiB",
        args.members,
        started.elapsed().as_secs_f64(),
        mib(peak_build)
    );
    budget.at_most(
        "snapshot build peak resident memory",
        mib(peak_build),
        limit,
        "MiB",
    );
    // The input is not what a replica's node has in its page cache: out of it (gigabytes of
    // JSON Lines would otherwise crowd the snapshot's pages out during the run).
    forget_cached(&jsonl);

    let redis = testkit::RedisServer::start_ephemeral();
    let port = probe::free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = probe::spawn(
        Path::new("taskset"),
        &[
            "-c",
            "0",
            path(&args.eligd)?,
            "serve",
            "--listen",
            &addr.to_string(),
            "--snapshot-dir",
            path(&snapshots)?,
            "--compact-overlay",
            "1",
            "--redis-url",
            &redis.url(),
        ],
    )?;
    probe::wait_for_port(port).await?;
    probe::wait_ready(addr).await?;
    loadtest::server::pin_tree(std::process::id(), "1")?;
    let pid = server.pid();

    let lookups: Vec<Vec<u8>> = Generator::new(args.members.min(5_000_000), SEED, today())
        .step_by(13)
        .take(50_000)
        .map(|m| {
            format!(
                "GET /v1/members/{}/eligibility HTTP/1.1\r\nhost: eligd\r\n\r\n",
                m.national_id
            )
            .into_bytes()
        })
        .collect();
    let duration = Duration::from_secs_f64(args.seconds);
    // Warm up (connections, the snapshot's pages, the allocator), unmeasured.
    let _ = open_loop::run(
        addr,
        lookups.clone(),
        args.lookups_per_s,
        Duration::from_secs(5),
        16,
    )
    .await;
    let compactions = "eligd_compactions_total{outcome=\"ok\"}";
    let before = probe::metric(addr, compactions).await.unwrap_or(0.0);
    let baseline = anonymous(pid).unwrap_or(0);
    let peak = Arc::new(AtomicU64::new(baseline));
    // Rounds of a window without compactions and a window while they run (changes every
    // 200 ms: one compaction after another). The machine is noisy: each condition is judged
    // by its median p99 over the rounds, measured alternately in the same run.
    let (mut outside, mut during) = (Vec::new(), Vec::new());
    let (mut fed, mut faults) = (0, [0u64; 2]);
    for round in 0..args.rounds {
        settle(addr, compactions).await?;
        let f = major_faults(pid).unwrap_or(0);
        let quiet = open_loop::run(addr, lookups.clone(), args.lookups_per_s, duration, 16).await;
        faults[0] += major_faults(pid).unwrap_or(0) - f;
        let stop = Arc::new(AtomicBool::new(false));
        let feeder = {
            let (stop, url, from) = (Arc::clone(&stop), redis.url(), fed);
            std::thread::spawn(move || feed_changes(&url, &stop, from))
        };
        let sampler = {
            let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    if let Some(now) = anonymous(pid) {
                        peak.fetch_max(now, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        // The first compaction has begun once the first change is applied.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let f = major_faults(pid).unwrap_or(0);
        let busy = open_loop::run(addr, lookups.clone(), args.lookups_per_s, duration, 16).await;
        faults[1] += major_faults(pid).unwrap_or(0) - f;
        stop.store(true, Ordering::Release);
        let _ = sampler.join();
        fed += feeder.join().map_err(|_| "the change feeder failed")??;
        println!(
            "round {}: without compactions {}; during {}",
            round + 1,
            open_loop::summary(&quiet.open_loop),
            open_loop::summary(&busy.open_loop)
        );
        budget.at_most(
            &format!("unexpected answers, round {}", round + 1),
            (quiet.tally.unexpected + busy.tally.unexpected) as f64,
            0.0,
            "",
        );
        outside.push(ms(&quiet.open_loop, 0.99));
        during.push(ms(&busy.open_loop, 0.99));
    }
    let done = probe::metric(addr, compactions).await.unwrap_or(0.0) - before;
    let reported = probe::metric(addr, "eligd_compaction_peak_anonymous_bytes")
        .await
        .unwrap_or(0.0);
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "compaction: {done} compactions while {fed} changes arrived; anonymous memory {:.0} MiB before, peak {:.0} MiB (eligd's own metric: {:.0} MiB)",
        mib(baseline),
        mib(peak),
        reported / (1 << 20) as f64
    );
    let (p99_out, p99_in) = (
        loadtest::median(&mut outside),
        loadtest::median(&mut during),
    );
    println!(
        "lookups at {}/s, median p99 of {} rounds: without compactions {p99_out:.3} ms ({} major page faults), during {p99_in:.3} ms ({} major page faults)",
        args.lookups_per_s, args.rounds, faults[0], faults[1]
    );
    budget.at_least(
        "compactions during the windows",
        done,
        args.rounds as f64,
        "",
    );
    budget.at_most("compaction peak anonymous memory", mib(peak), limit, "MiB");
    budget.at_most(
        "lookup p99 during compactions / without (medians)",
        p99_in / p99_out.max(1e-3),
        2.0,
        "×",
    );
    drop(server);
    Ok(budget)
}

fn today() -> Day {
    Day::parse_iso(TODAY).unwrap_or_else(|_| Day::today())
}

fn path(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// A process's resident anonymous memory, in bytes.
fn anonymous(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    eligd::memory::status_field(&status, "RssAnon:")
}

/// Drops a file's pages from the page cache (best effort).
#[allow(unsafe_code)]
fn forget_cached(path: &Path) {
    if let Ok(file) = std::fs::File::open(path) {
        use std::os::fd::AsRawFd;
        // SAFETY: advice on a descriptor this frame owns; the data is on disk.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}

/// A process's major page faults so far (pages read from disk: `/proc/<pid>/stat` field 12).
fn major_faults(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state is field 3, majflt field 12.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(9)?.parse().ok()
}

/// Runs a command to its end; fails unless it succeeds. Returns its peak resident memory in
/// bytes (the kernel's `ru_maxrss`).
#[allow(unsafe_code)]
fn run_child(command: &mut Command) -> Result<u64, String> {
    let child = command
        .env("ELIGD_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: waits for our own child and writes into locals of this frame.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc != pid {
        return Err(format!(
            "waiting for {command:?}: {}",
            std::io::Error::last_os_error()
        ));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!("{command:?} failed (status {status})"));
    }
    Ok(usage.ru_maxrss as u64 * 1024)
}

/// Waits until no compaction runs and none is due: the overlay is empty and the count of
/// compactions stays put for 2 s (at most 300 s).
async fn settle(addr: SocketAddr, compactions: &str) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let overlay = probe::metric(addr, "eligd_index_overlay_entries")
            .await
            .unwrap_or(1.0);
        let count = probe::metric(addr, compactions).await.unwrap_or(0.0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let still = probe::metric(addr, compactions).await.unwrap_or(0.0);
        if overlay == 0.0 && still == count {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(300) {
            return Err("the compactions did not settle within 300 s".into());
        }
    }
}

/// Upserts of members far from the population (numbered on from `from`), one every 200 ms
/// until `stop`; returns how many.
fn feed_changes(url: &str, stop: &AtomicBool, from: u64) -> Result<u64, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut redis = client.get_connection().map_err(|e| e.to_string())?;
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        let id = eligd::national_id::NationalId::from_prefix(700_000_000 + (from + n) as u32)
            .map_err(|e| e.to_string())?;
        let member = format!(
            r#"{{"national_id":"{id}","version":1,"kind":"main","scheme":"mandatory","status":"active","services":["pharmacy"]}}"#
        );
        let id = id.to_string();
        let fields = [
            "op",
            "upsert",
            "national_id",
            &id,
            "version",
            "1",
            "member",
            &member,
        ];
        redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg(&fields[..])
            .query::<String>(&mut redis)
            .map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(n)
}
