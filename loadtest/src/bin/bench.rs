//! `bench`: eligd against every peer, in one run, with one client (`scripts/bench.sh` builds
//! release and runs it pinned; see docs/performance.md, "The bench command").
//!
//! Servers, all pinned to core 0 (`--server-cores`): eligd as deployed (keys and the audit
//! log on, `--members` synthetic members), a bare hyper 1 server answering a fixed JSON body
//! as long as eligd's answer (`hello-server`), a private `redis-server` answering `GET` of
//! answer-sized values, and a private PostgreSQL answering a prepared point select of an
//! answer-sized row. This process is the client; run it on core 1 (the script does).
//!
//! Closed loop: `--rounds` rounds; in each, the same client (`loadtest::closed_loop`,
//! `--connections` connections, one request in flight on each) loads every server in turn
//! for `--seconds`. A round's ratios compare runs seconds apart; the budgets take the median
//! of the rounds. CPU per answer comes from the server process's CPU time over its runs.
//! eligd's handler p99 comes from its own histogram (`/metrics`, before and after).
//!
//! Open loop: the realistic mix (`loadtest::mix`) at 700/s against eligd and the bare
//! server, then eligd at rising rates up to the highest that keeps p99 ≤ 2 ms.
//!
//! Prints a budget table and writes every figure as JSON (`--out`). Exits 1 when a budget is
//! missed, 2 on error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use eligd::dates::Day;
use eligd::demo::Generator;
use loadtest::closed_loop::{self, Framing, Outcome};
use loadtest::mix;
use loadtest::open_loop::{self, RunSummary};
use loadtest::server::{add_key, cpu_seconds, pin_tree, Eligd};
use loadtest::Budget;

struct Args {
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

struct Budgets {
    hello: f64,
    redis: f64,
    postgres: f64,
    handler_p99_us: f64,
    open_loop_p99: f64,
    p99_target_ms: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        eligd: PathBuf::from("target/release/eligd"),
        hello: PathBuf::from("target/release/hello-server"),
        members: 1_000_000,
        connections: 64,
        seconds: 5.0,
        rounds: 3,
        server_cores: "0".into(),
        out: PathBuf::from("target/bench/bench.json"),
        open_loop_seconds: 15.0,
        skip_open_loop: false,
        budgets: Budgets {
            hello: 0.9,
            redis: 1.2,
            postgres: 3.0,
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

/// Distinct synthetic members to ask about, the same for every round.
const KEYS: usize = 10_000;

/// A server the closed loop measures.
struct Peer {
    name: &'static str,
    addr: SocketAddr,
    /// Whose CPU time is the server's (eligd and the bare server: one process each).
    pid: Option<u32>,
    connect: closed_loop::Connect,
    requests: Arc<Vec<Vec<u8>>>,
    framing: Framing,
    /// Its connections, opened on the first run and kept.
    streams: Vec<tokio::net::TcpStream>,
}

/// One closed-loop run of a peer: its answers and the CPU its process used.
struct Run {
    outcome: Outcome,
    cpu: Option<f64>,
}

async fn closed(args: &Args, peer: &mut Peer) -> Result<Run, String> {
    if peer.streams.is_empty() {
        peer.streams = closed_loop::connect_all(peer.addr, &peer.connect, args.connections)
            .await
            .map_err(|e| format!("{}: {e}", peer.name))?;
    }
    let before = peer.pid.map(cpu_seconds).transpose()?;
    let warmup = Duration::from_millis(500);
    let (outcome, streams) = closed_loop::run(
        std::mem::take(&mut peer.streams),
        Arc::clone(&peer.requests),
        peer.framing,
        warmup,
        Duration::from_secs_f64(args.seconds),
    )
    .await
    .map_err(|e| format!("{}: {e}", peer.name))?;
    peer.streams = streams;
    let after = peer.pid.map(cpu_seconds).transpose()?;
    if outcome.errors > 0 {
        return Err(format!(
            "{}: {} answers were errors in a closed-loop run",
            peer.name, outcome.errors
        ));
    }
    // CPU time includes the warm-up; scale it to the counted part.
    let total = warmup.as_secs_f64() + args.seconds;
    let cpu = before
        .zip(after)
        .map(|(b, a)| (a - b) * args.seconds / total);
    Ok(Run { outcome, cpu })
}

struct Started {
    _dir: tempfile::TempDir,
    eligd: Eligd,
    key: String,
    hello: Killed,
    hello_addr: SocketAddr,
    _redis: testkit::RedisServer,
    redis_addr: SocketAddr,
    _postgres: testkit::PgServer,
    postgres_addr: SocketAddr,
    body_bytes: usize,
}

/// A child process killed when dropped (on every path out, errors included).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The IDs asked about: members of eligd's synthetic population (same seed), spread over it.
fn member_ids(members: u64) -> Vec<String> {
    let stride = (members as usize / KEYS).max(1);
    Generator::new(members, 1, Day::today())
        .step_by(stride)
        .take(KEYS)
        .map(|m| m.national_id.to_string())
        .collect()
}

fn http_get(path: &str, key: Option<&str>) -> Vec<u8> {
    let auth = key
        .map(|k| format!("authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nhost: eligd\r\n{auth}\r\n").into_bytes()
}

/// One answer from eligd, to size the others' answers like it.
async fn answer_bytes(addr: SocketAddr, path: &str, key: &str) -> Result<usize, String> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(&http_get(path, Some(key)))
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let ok = closed_loop::read_answer(&mut stream, &mut buf, Framing::Http)
        .await
        .map_err(|e| e.to_string())?;
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
    if !ok {
        return Err(format!(
            "eligd refused the sample lookup: {}",
            String::from_utf8_lossy(&buf)
        ));
    }
    Ok(buf.len() - head)
}

async fn start(args: &Args) -> Result<Started, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let keys = dir.path().join("keys.json");
    let key = add_key(&args.eligd, &keys)?;
    let audit = dir.path().join("audit.log");
    let path = |p: &std::path::Path| p.to_str().map(str::to_string).ok_or("temp path");
    let eligd = Eligd::start(
        &args.eligd,
        args.members,
        &args.server_cores,
        &["--api-keys", &path(&keys)?, "--audit-log", &path(&audit)?],
    )?;
    let eligd_addr: SocketAddr = eligd.addr.parse().map_err(|e| format!("{e}"))?;
    let sample = format!("/v1/members/{}/eligibility", eligd.member);
    let body_bytes = answer_bytes(eligd_addr, &sample, &key).await?;

    let hello_addr = loopback(testkit::free_port());
    let hello = Killed(
        Command::new("taskset")
            .args(["-c", &args.server_cores])
            .arg(&args.hello)
            .arg(hello_addr.to_string())
            .arg(body_bytes.to_string())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run hello-server: {e}"))?,
    );

    let redis = testkit::RedisServer::start_ephemeral();
    pin_tree(
        redis.process_id().ok_or("redis has no pid")?,
        &args.server_cores,
    )?;
    let value = "x".repeat(body_bytes);
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1_000) {
        let mut mset = vec!["MSET".to_string()];
        for i in chunk {
            mset.push(format!("member:{i}"));
            mset.push(value.clone());
        }
        let refs: Vec<&str> = mset.iter().map(String::as_str).collect();
        let _: String = redis.cmd(&refs);
    }

    let postgres =
        testkit::PgServer::start_with(&format!("max_connections = {}", args.connections + 20));
    postgres.execute(&format!(
        "CREATE TABLE members (id int8 PRIMARY KEY, body text NOT NULL);
         INSERT INTO members SELECT i, repeat('x', {body_bytes}) FROM generate_series(0, {}) i;",
        KEYS - 1
    ));
    postgres.execute("VACUUM ANALYZE members");
    pin_tree(
        postgres.postmaster_pid().ok_or("no postmaster.pid")?,
        &args.server_cores,
    )?;
    wait_for(hello_addr).await?;
    Ok(Started {
        _dir: dir,
        redis_addr: loopback(redis.port()),
        _redis: redis,
        postgres_addr: loopback(postgres.port()),
        _postgres: postgres,
        eligd,
        key,
        hello,
        hello_addr,
        body_bytes,
    })
}

async fn wait_for(addr: SocketAddr) -> Result<(), String> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("nothing listens on {addr}"))
}

fn peers(args: &Args, s: &Started) -> Result<Vec<Peer>, String> {
    let ids = member_ids(args.members);
    let eligd_addr: SocketAddr = s.eligd.addr.parse().map_err(|e| format!("{e}"))?;
    let eligd_requests: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| http_get(&format!("/v1/members/{id}/eligibility"), Some(&s.key)))
        .collect();
    let hello_requests: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| http_get(&format!("/v1/members/{id}/eligibility"), Some(&s.key)))
        .collect();
    Ok(vec![
        Peer {
            name: "hello-world (bare hyper 1)",
            addr: s.hello_addr,
            pid: Some(s.hello.0.id()),
            connect: closed_loop::tcp(),
            requests: Arc::new(hello_requests),
            framing: Framing::Http,
            streams: Vec::new(),
        },
        Peer {
            name: "eligd (keys + audit)",
            addr: eligd_addr,
            pid: Some(s.eligd.pid()),
            connect: closed_loop::tcp(),
            requests: Arc::new(eligd_requests),
            framing: Framing::Http,
            streams: Vec::new(),
        },
        Peer {
            name: "Redis GET",
            addr: s.redis_addr,
            pid: None,
            connect: closed_loop::tcp(),
            requests: Arc::new(
                (0..KEYS)
                    .map(|i| closed_loop::resp_get(&format!("member:{i}")))
                    .collect(),
            ),
            framing: Framing::RespBulk,
            streams: Vec::new(),
        },
        Peer {
            name: "PostgreSQL prepared point select",
            addr: s.postgres_addr,
            pid: None,
            connect: closed_loop::postgres(
                "postgres",
                "eligd",
                "SELECT body FROM members WHERE id = $1",
            ),
            requests: Arc::new((0..KEYS as i64).map(closed_loop::pg_execute).collect()),
            framing: Framing::Postgres,
            streams: Vec::new(),
        },
    ])
}

/// GET of `path` from eligd: the body.
async fn get_body(addr: SocketAddr, path: &str) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(&http_get(path, None))
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    closed_loop::read_answer(&mut stream, &mut buf, Framing::Http)
        .await
        .map_err(|e| e.to_string())?;
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
    Ok(String::from_utf8_lossy(&buf[head..]).into_owned())
}

/// The cumulative bucket counts of the member route's handler histogram: `(le, count)`.
fn handler_buckets(metrics: &str) -> Vec<(f64, f64)> {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("eligd_request_duration_seconds_bucket{")
                && l.contains(r#"route="/v1/members/{national_id}/eligibility""#)
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect()
}

/// The upper bound of the bucket holding quantile `q` of what was observed between two
/// scrapes (a histogram says no more precisely than its buckets).
fn quantile_bound(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, n)| {
            let was = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, n - was)
        })
        .collect();
    let total = delta.iter().map(|d| d.1).fold(0.0, f64::max);
    if total <= 0.0 {
        return None;
    }
    delta.iter().find(|d| d.1 >= q * total).map(|d| d.0)
}

/// The open-loop figures: both servers at 700/s, and each swept over rising rates.
struct OpenLoop {
    eligd_700: RunSummary,
    hello_700: RunSummary,
    eligd_sweep: Vec<RunSummary>,
    hello_sweep: Vec<RunSummary>,
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
const OPEN_LOOP_CONNECTIONS: usize = 32;

async fn open_rounds(args: &Args, started: &Started) -> Result<OpenLoop, String> {
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
fn highest_within(runs: &[RunSummary], target_ms: f64) -> f64 {
    runs.iter()
        .filter(|r| r.p99_ms <= target_ms && r.errors == 0 && r.unexpected == 0)
        .map(|r| r.rate)
        .fold(0.0, f64::max)
}

/// The closed-loop figures of the rounds.
struct ClosedLoop {
    /// Per peer: throughput per round.
    rates: Vec<Vec<f64>>,
    /// Per peer: µs of server CPU per answer, per round (None when not measured).
    cpu_us: Vec<Vec<Option<f64>>>,
    /// Per peer: share of the server core busy, per round.
    busy: Vec<Vec<Option<f64>>>,
    handler_p99_s: Option<f64>,
    handler_p50_s: Option<f64>,
}

async fn closed_rounds(args: &Args, started: &Started) -> Result<ClosedLoop, String> {
    let mut peers = peers(args, started)?;
    let eligd_addr: SocketAddr = started.eligd.addr.parse().map_err(|e| format!("{e}"))?;
    let mut result = ClosedLoop {
        rates: vec![Vec::new(); peers.len()],
        cpu_us: vec![Vec::new(); peers.len()],
        busy: vec![Vec::new(); peers.len()],
        handler_p99_s: None,
        handler_p50_s: None,
    };
    let before = handler_buckets(&get_body(eligd_addr, "/metrics").await?);
    for round in 1..=args.rounds {
        let mut line = format!("round {round}:");
        for (i, peer) in peers.iter_mut().enumerate() {
            let run = closed(args, peer).await?;
            let rate = run.outcome.per_second();
            let cpu_us = run
                .cpu
                .map(|cpu| cpu * 1e6 / run.outcome.answers.max(1) as f64);
            let busy = run.cpu.map(|cpu| cpu / args.seconds);
            line.push_str(&format!(" {} {rate:.0}/s", peer.name));
            if let (Some(us), Some(b)) = (cpu_us, busy) {
                line.push_str(&format!(
                    " ({us:.2} µs CPU/answer, core {:.0} % busy)",
                    b * 100.0
                ));
            }
            line.push(';');
            result.rates[i].push(rate);
            result.cpu_us[i].push(cpu_us);
            result.busy[i].push(busy);
        }
        println!("{line}");
    }
    let after = handler_buckets(&get_body(eligd_addr, "/metrics").await?);
    result.handler_p99_s = quantile_bound(&before, &after, 0.99);
    result.handler_p50_s = quantile_bound(&before, &after, 0.5);
    Ok(result)
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

const HELLO: usize = 0;
const ELIGD: usize = 1;
const REDIS: usize = 2;
const POSTGRES: usize = 3;

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
    let names = ["hello", "eligd", "redis", "postgres"];
    let mut budget = Budget::default();
    let (vs_hello, vs_redis, vs_pg) = (
        ratio(&c.rates, ELIGD, HELLO),
        ratio(&c.rates, ELIGD, REDIS),
        ratio(&c.rates, ELIGD, POSTGRES),
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
        "eligd handler p99 (upper bound of its histogram bucket)",
        handler_us,
        args.budgets.handler_p99_us,
        "µs",
    );
    let mut json = String::from("{\n");
    json.push_str(&format!(
        "  \"date\": \"{}\",\n  \"members\": {},\n  \"connections\": {},\n  \"seconds\": {},\n  \"rounds\": {},\n  \"answer_bytes\": {},\n  \"closed_loop\": {{\n",
        eligd::dates::rfc3339_utc_ms(eligd::app::unix_ms()),
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
        "  }},\n  \"ratios\": {{\"eligd_per_hello\": {vs_hello:.4}, \"eligd_per_redis\": {vs_redis:.4}, \"eligd_per_postgres\": {vs_pg:.4}}},\n  \"handler_p50_seconds_bound\": {},\n  \"handler_p99_seconds_bound\": {},\n",
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
    for (i, name) in [(ELIGD, "eligd"), (HELLO, "hello-world")] {
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
