//! `index-budget`: measures the index budgets and exits 1 when one is missed, 0 when every
//! one is met.
//!
//! The lookup budget is relative: lookup + evaluate at most 1.0× a bare `hashbrown` get
//! measured the same way in the same run (each lookup depending on the last, as a request
//! sees it). The absolute 150 ns first asked for is printed but not enforced: one random
//! access to memory costs 560–640 ns on the 2-vCPU VM this runs on (docs/performance.md).
//!
//! 1. Builds a snapshot of N synthetic members through the streaming CLI pipeline
//!    (`eligd demo-data | eligd snapshot build --from-jsonl -`), timing it.
//! 2. Warms the page cache as a previous run would (`eligd snapshot inspect`), starts
//!    `eligd serve --snapshot` and times spawn → `/readyz` 200, then reads the process's
//!    resident memory.
//! 3. In this process, maps the same snapshot and measures lookup + evaluate on random IDs
//!    against a bare `hashbrown` get over the same keys (interleaved batches, same run).
//! 4. Applies one million upserts into the overlay on one thread.
//!
//! Usage: `cargo run --release -p loadtest --bin index-budget -- [--members N] [--eligd PATH]
//! [--work-dir DIR] [--reuse-snapshot yes]`. Build eligd first (`cargo build --release`).
//! With `--work-dir`, the snapshot stays there; `--reuse-snapshot yes` then skips building it
//! again (the build is not a budget).

// The budgets, as docs/performance.md ("Index budgets, restated") states them; tests/it/docs.rs
// checks that the two agree.
/// Spawn → `/readyz` 200, warm page cache, up to 10 M members.
const LOAD_SECONDS_UP_TO_10M: f64 = 1.0;
/// The same above 10 M members (45 M).
const LOAD_SECONDS_ABOVE_10M: f64 = 2.0;
/// Lookup + evaluate over a bare `hashbrown` get, chained, same keys, same run.
const LOOKUP_RATIO: f64 = 1.0;

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use eligd::dates::Day;
use eligd::index::{snapshot, Change, Index, Row};
use eligd::inquiry;
use eligd::national_id::NationalId;
use loadtest::{median, Budget, Xorshift};

struct Args {
    members: u64,
    eligd: PathBuf,
    work_dir: Option<PathBuf>,
    /// Use the snapshot a previous run left in `--work-dir` (45 M take minutes to build).
    reuse: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        members: 10_000_000,
        eligd: PathBuf::from(loadtest::ELIGD),
        work_dir: None,
        reuse: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--members" => {
                args.members = value()?.parse().map_err(|e| format!("--members: {e}"))?
            }
            "--eligd" => args.eligd = PathBuf::from(value()?),
            "--work-dir" => args.work_dir = Some(PathBuf::from(value()?)),
            "--reuse-snapshot" => args.reuse = value()? == "yes",
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !args.eligd.exists() {
        return Err(format!(
            "{} not found: run `cargo build --release` first or pass --eligd",
            args.eligd.display()
        ));
    }
    Ok(args)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("index-budget: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, String> {
    let args = parse_args()?;
    let n = args.members;
    let temp = tempfile_dir(&args)?;
    let snap = temp.join(format!("budget-{n}.snap"));
    let mut budget = Budget::default();
    println!("index-budget: {n} members, work dir {}", temp.display());

    let started = Instant::now();
    if args.reuse && args.work_dir.is_some() && snap.is_file() {
        println!("reusing {}", snap.display());
    } else {
        build_snapshot(&args.eligd, n, &snap)?;
    }
    let build_seconds = started.elapsed().as_secs_f64();
    let size = std::fs::metadata(&snap).map_err(|e| e.to_string())?.len();
    println!(
        "snapshot built in {build_seconds:.1} s: {size} bytes ({:.1} bytes/member)",
        size as f64 / n as f64
    );

    warm_page_cache(&args.eligd, &snap)?;
    let (ready_seconds, rss) = serve_until_ready(&args.eligd, &snap)?;
    let load_limit = if n <= 10_000_000 {
        LOAD_SECONDS_UP_TO_10M
    } else {
        LOAD_SECONDS_ABOVE_10M
    };
    budget.at_most(
        &format!("snapshot load to ready, {n} members, warm cache"),
        ready_seconds,
        load_limit,
        "s",
    );
    // As an operator would warm it: the file read once with `cat`, small pages cached.
    cat_file(&snap)?;
    let (cat_seconds, _) = serve_until_ready(&args.eligd, &snap)?;
    budget.at_most(
        &format!("snapshot load to ready, {n} members, after `cat` of the file"),
        cat_seconds,
        load_limit,
        "s",
    );
    budget.at_most(
        "resident memory once serving",
        rss as f64 / n as f64,
        80.0,
        "B/member",
    );
    println!(
        "serve: ready in {ready_seconds:.3} s, VmRSS {} MiB",
        rss >> 20
    );

    let (lookup_ns, bare_ns) = lookup_latency(&snap)?;
    budget.at_most(
        "lookup + evaluate / bare hashbrown get, chained, same keys, same run",
        lookup_ns / bare_ns,
        LOOKUP_RATIO,
        "×",
    );
    println!(
        "lookup + evaluate median {lookup_ns:.1} ns, bare hashbrown get median {bare_ns:.1} ns \
         (the first target, 150 ns absolute, is not enforced: see the module documentation)"
    );

    let rate = apply_rate(&snap)?;
    budget.at_least("overlay apply, one core", rate, 500_000.0, "events/s");

    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    println!("\n{}", budget.report());
    Ok(budget.all_passed())
}

fn tempfile_dir(args: &Args) -> Result<PathBuf, String> {
    let dir = match &args.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("eligd-index-budget-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// `eligd demo-data | eligd snapshot build --from-jsonl -`: the JSON streams through a pipe.
fn build_snapshot(eligd: &Path, n: u64, out: &Path) -> Result<(), String> {
    let mut producer = Command::new(eligd)
        .args([
            "demo-data",
            "--members",
            &n.to_string(),
            "--seed",
            "1",
            "--today",
            "2026-11-22",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pipe = producer.stdout.take().ok_or("no pipe")?;
    let status = Command::new(eligd)
        .args([
            "snapshot",
            "build",
            "--strict",
            "--from-jsonl",
            "-",
            "--out",
        ])
        .arg(out)
        .stdin(pipe)
        .status()
        .map_err(|e| e.to_string())?;
    let produced = producer.wait().map_err(|e| e.to_string())?;
    if !status.success() || !produced.success() {
        return Err(format!(
            "building the snapshot failed: demo-data {produced}, snapshot build {status}"
        ));
    }
    Ok(())
}

/// Warms the page cache as a previous run would: `eligd snapshot inspect` maps and verifies
/// the whole file.
fn warm_page_cache(eligd: &Path, path: &Path) -> Result<(), String> {
    let started = Instant::now();
    let out = Command::new(eligd)
        .args(["snapshot", "inspect"])
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "snapshot inspect failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    println!(
        "cold load and full verification (snapshot inspect): {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Reads the whole file through the page cache, as `cat file > /dev/null` does.
fn cat_file(path: &Path) -> Result<(), String> {
    let started = Instant::now();
    let status = Command::new("cat")
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run cat: {e}"))?;
    if !status.success() {
        return Err(format!("cat {} failed", path.display()));
    }
    println!("cat of the file: {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `eligd serve` on the snapshot; returns seconds to `/readyz` 200 and VmRSS in bytes.
fn serve_until_ready(eligd: &Path, snap: &Path) -> Result<(f64, u64), String> {
    let started = Instant::now();
    let mut child = Command::new(eligd)
        .args(["serve", "--listen", "127.0.0.1:0", "--snapshot"])
        .arg(snap)
        .env("RUST_LOG", "info")
        .env("ELIGD_LOG_FORMAT", "text")
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let served = Served(child);
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .ok_or("serve exited before listening")?
            .map_err(|e| e.to_string())?;
        if let Some(rest) = line.split("address=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let deadline = started + Duration::from_secs(600);
    loop {
        if http_status(&addr, "/readyz") == Some(200) {
            break;
        }
        if Instant::now() > deadline {
            return Err("serve did not become ready within 10 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string(format!("/proc/{}/status", served.0.id()))
        .map_err(|e| e.to_string())?;
    let rss_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or("no VmRSS")?;
    for line in status.lines().filter(|l| l.starts_with("Rss")) {
        println!("serve {line}");
    }
    Ok((seconds, rss_kib * 1024))
}

fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.get(9..12)?.parse().ok()
}

fn live_ids(index_path: &Path) -> Result<(Index, Vec<NationalId>), String> {
    let (_, base) = snapshot::load(index_path).map_err(|e| e.to_string())?;
    let ids: Vec<NationalId> = base
        .rows()
        .filter_map(|r| match r {
            Row::Live(m) => Some(m.national_id),
            Row::Tombstone(..) => None,
        })
        .collect();
    Ok((Index::new(base), ids))
}

/// Median per-lookup latency of lookup + evaluate and of a bare hashbrown get over the same
/// random existing IDs, interleaved batch by batch so both share the machine's noise.
///
/// Each lookup's key depends on the previous lookup's result, so lookups cannot overlap:
/// this is the latency one request sees. The overlapped (independent) figures are printed
/// too, for comparison.
fn lookup_latency(snap: &Path) -> Result<(f64, f64), String> {
    let (index, ids) = live_ids(snap)?;
    let mut bare: hashbrown::HashMap<u64, [u8; 32]> = hashbrown::HashMap::with_capacity(ids.len());
    for id in &ids {
        bare.insert(id.as_u64(), [1; 32]);
    }
    let today = Day::parse_iso("2026-11-22").map_err(|e| e.to_string())?;
    let view = index.view();
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    let (batch, rounds) = (1_000usize, 3_000usize);
    let mut samples: [Vec<f64>; 4] = Default::default();
    let mut keys = Vec::with_capacity(batch);
    for _ in 0..rounds {
        keys.clear();
        keys.extend((0..batch).map(|_| ids[(rng.next_u64() % ids.len() as u64) as usize]));
        // Chained: the next key's position depends on this answer.
        let t = Instant::now();
        let mut carry = 0usize;
        for j in 0..batch {
            let k = keys[(j + carry) % batch];
            let outcome =
                inquiry::by_national_id(&view, k, today, None).map(|f| f.decision.outcome);
            carry = usize::from(black_box(outcome).is_none());
        }
        samples[0].push(t.elapsed().as_nanos() as f64 / batch as f64);
        let t = Instant::now();
        let mut carry = 0usize;
        for j in 0..batch {
            let k = keys[(j + carry) % batch];
            carry = black_box(bare.get(&k.as_u64())).map_or(1, |v| usize::from(v[0] == 0));
        }
        samples[1].push(t.elapsed().as_nanos() as f64 / batch as f64);
        // Independent: the CPU may overlap lookups.
        let t = Instant::now();
        for k in &keys {
            black_box(inquiry::by_national_id(&view, *k, today, None).map(|f| f.decision.outcome));
        }
        samples[2].push(t.elapsed().as_nanos() as f64 / batch as f64);
        let t = Instant::now();
        for k in &keys {
            black_box(bare.get(&k.as_u64()));
        }
        samples[3].push(t.elapsed().as_nanos() as f64 / batch as f64);
    }
    let [mut chained, mut bare_chained, mut overlapped, mut bare_overlapped] = samples;
    let (ours, theirs) = (median(&mut chained), median(&mut bare_chained));
    println!(
        "overlapped (throughput, not budgeted): lookup + evaluate {:.1} ns, bare hashbrown get {:.1} ns",
        median(&mut overlapped),
        median(&mut bare_overlapped)
    );
    Ok((ours, theirs))
}

/// Upserts per second into the overlay on one thread (one million changes, prepared first).
fn apply_rate(snap: &Path) -> Result<f64, String> {
    let (index, ids) = live_ids(snap)?;
    let view = index.view();
    let count = ids.len().min(1_000_000);
    let changes: Vec<Change> = ids
        .iter()
        .step_by((ids.len() / count).max(1))
        .take(count)
        .filter_map(|id| view.get(*id).map(|m| m.view().to_member()))
        .map(|mut m| {
            m.version += 1;
            Change::Upsert(m)
        })
        .collect();
    drop(view);
    let n = changes.len();
    let t = Instant::now();
    for change in changes {
        black_box(index.apply(change));
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    println!("overlay apply: {n} upserts at {rate:.0} events/s");
    Ok(rate)
}
