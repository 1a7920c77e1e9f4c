//! `degraded-budget`: issue 12's budgets, measured against real servers this command starts
//! (private Redis, sentinels, PostgreSQL, the release `eligd`), and stopped on exit.
//!
//! - `redis-down`: three replicas follow one stream; Redis is killed for `--outage` seconds
//!   (default 60) while lookups run open-loop on every replica and `/readyz` is polled every
//!   100 ms. Budget: 0 failed lookups, 0 unready observations.
//! - `failover`: PostgreSQL → relay → Redis primary + replica + three sentinels → a
//!   replica bootstrapped from a snapshot of the table. Commits run at `--commits-per-s`
//!   (default 500) for `--duration` seconds; 10 s in, the primary is killed. The failover
//!   window runs from the kill until the relay is active again. Budgets: 0 committed changes
//!   lost (every commit's version in the final answer), commit → visible p99 outside the
//!   window ≤ `--p99-ms` (default 100).
//! - `tls`: one Redis with a plain and a TLS port; a replica on each. Replay of `--entries`
//!   entries (default 200,000) timed on each, then changes XADDed at `--commits-per-s` and
//!   watched on both. Budget: TLS freshness p99 ≤ `--tls-ratio` (default 1.5) × plain.
//!
//! - `scale-out`: three replicas follow one stream; changes XADDed at `--commits-per-s`.
//!   Budget: on every replica, XADD → visible p99 ≤ `--p99-ms`, none unseen.
//!
//! Usage: `degraded-budget [--eligd target/production/eligd] [--scenario all|redis-down|failover|tls|scale-out]
//! [--outage 60] [--duration 30] [--commits-per-s 500] [--p99-ms 100] [--tls-ratio 1.5]
//! [--entries 200000]`. Exits 1 when a budget is missed, 2 on error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eligd::dates::Day;
use eligd::demo::Generator;
use eligd::feed::native::NativeEvent;
use eligd::member::{Kind, Member};
use loadtest::open_loop::{self, ms, summary};
use loadtest::probe::{self, Process, Watched};
use loadtest::records::{drained, pg_client, seed, SCHEMA};
use loadtest::Budget;
use testkit::{PgServer, RedisServer, Sentinel};

struct Args {
    eligd: PathBuf,
    scenario: String,
    outage: Duration,
    duration: Duration,
    commits_per_s: f64,
    p99_ms: f64,
    tls_ratio: f64,
    entries: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        eligd: PathBuf::from(loadtest::ELIGD),
        scenario: "all".into(),
        outage: Duration::from_secs(60),
        duration: Duration::from_secs(30),
        commits_per_s: 500.0,
        p99_ms: 100.0,
        tls_ratio: 1.5,
        entries: 200_000,
    };
    loadtest::parse_flags(|flag, value| {
        let num = || loadtest::number(flag, value);
        match flag {
            "--eligd" => a.eligd = PathBuf::from(value),
            "--scenario" => a.scenario = value.to_string(),
            "--outage" => a.outage = Duration::from_secs_f64(num()?),
            "--duration" => a.duration = Duration::from_secs_f64(num()?),
            "--commits-per-s" => a.commits_per_s = num()?,
            "--p99-ms" => a.p99_ms = num()?,
            "--tls-ratio" => a.tls_ratio = num()?,
            "--entries" => a.entries = num()? as u64,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if !["all", "redis-down", "failover", "tls", "scale-out"].contains(&a.scenario.as_str()) {
        return Err("--scenario is all, redis-down, failover, tls or scale-out".into());
    }
    if a.commits_per_s <= 0.0 || a.duration < Duration::from_secs(15) {
        return Err("a positive --commits-per-s and a --duration of at least 15 s".into());
    }
    loadtest::built(&a.eligd)?;
    Ok(a)
}

/// A replica listening on a free port, ready.
async fn replica(eligd: &std::path::Path, args: &[&str]) -> Result<(Process, SocketAddr), String> {
    let port = probe::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut all = vec!["serve", "--listen", &listen];
    all.extend_from_slice(args);
    let process = probe::spawn(eligd, &all)?;
    probe::wait_for_port(port).await?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    probe::wait_ready(addr).await?;
    Ok((process, addr))
}

fn lookups(members: u64, seed: u64) -> Vec<Vec<u8>> {
    Generator::new(members, seed, Day::today())
        .take(20_000)
        .map(|m| {
            format!(
                "GET /v1/members/{}/eligibility HTTP/1.1\r\nhost: eligd\r\n\r\n",
                m.national_id
            )
            .into_bytes()
        })
        .collect()
}

/// Polls `/readyz` on every address every 100 ms until `until`; returns the non-200 count.
async fn unready(addrs: Vec<SocketAddr>, until: Instant) -> u64 {
    let mut bad = 0;
    let mut buf = Vec::new();
    while Instant::now() < until {
        for addr in &addrs {
            let ok = match probe::connect(*addr).await {
                Ok(mut s) => matches!(probe::get(&mut s, "/readyz", &mut buf).await, Ok((200, _))),
                Err(_) => false,
            };
            bad += u64::from(!ok);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bad
}

async fn redis_down(args: &Args, budget: &mut Budget) -> Result<(), String> {
    const MEMBERS: u64 = 100_000;
    let mut redis = RedisServer::start();
    let url = redis.url();
    let members = MEMBERS.to_string();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let flags = [
            "--demo-members",
            &members,
            "--redis-url",
            &url,
            "--max-staleness",
            "5",
        ];
        replicas.push(replica(&args.eligd, &flags).await?);
    }
    let total = Duration::from_secs(5) + args.outage + Duration::from_secs(10);
    let loads: Vec<_> = replicas
        .iter()
        .map(|(_, addr)| tokio::spawn(open_loop::run(*addr, lookups(MEMBERS, 1), 300.0, total, 4)))
        .collect();
    let addrs: Vec<SocketAddr> = replicas.iter().map(|(_, a)| *a).collect();
    let polling = tokio::spawn(unready(addrs.clone(), Instant::now() + total));
    tokio::time::sleep(Duration::from_secs(5)).await;
    redis.kill9();
    tokio::time::sleep(args.outage).await;
    let mut lag = 0.0f64;
    for addr in &addrs {
        lag = lag.max(probe::metric(*addr, "eligd_feed_lag_seconds").await?);
    }
    redis.restart();
    let (mut failed, mut answered) = (0, 0);
    for load in loads {
        let t = load.await.map_err(|e| e.to_string())?.tally;
        failed += t.errors + t.other_status;
        answered += t.ok + t.not_found;
    }
    let unready = polling.await.map_err(|e| e.to_string())?;
    println!(
        "redis-down: Redis killed for {:.0} s under 3 × 300 lookups/s: {answered} answered, {failed} failed; \
         {unready} unready /readyz observations; feed lag before the restart {lag:.1} s",
        args.outage.as_secs_f64()
    );
    budget.at_most("Redis down: failed lookups", failed as f64, 0.0, "requests");
    budget.at_most(
        "Redis down: unready observations",
        unready as f64,
        0.0,
        "probes",
    );
    budget.at_least(
        "Redis down: the lag showed the outage",
        lag,
        args.outage.as_secs_f64() * 0.8,
        "s",
    );
    Ok(())
}

/// Commits single-row updates open-loop on 4 sessions; each change goes to `watch` and to
/// the returned list (for the final loss check).
async fn commit_load(
    pg_url: &str,
    mains: Arc<Vec<String>>,
    rate: f64,
    duration: Duration,
    watch: tokio::sync::mpsc::UnboundedSender<Watched>,
) -> Result<Vec<tokio::task::JoinHandle<Result<Vec<(String, u64)>, String>>>, String> {
    let total = (rate * duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(200);
    let mut sessions = Vec::new();
    for c in 0..4 {
        let (pg, tx, mains) = (pg_client(pg_url).await?, watch.clone(), Arc::clone(&mains));
        sessions.push(tokio::spawn(async move {
            let update = pg
                .prepare("UPDATE members SET coverage_until = coverage_until + 1 WHERE national_id = $1 RETURNING version")
                .await
                .map_err(|e| e.to_string())?;
            let mut done = Vec::new();
            for i in (c..total).step_by(4) {
                tokio::time::sleep_until((start + interval.mul_f64(i as f64)).into()).await;
                let id = &mains[i % mains.len()];
                let row = pg.query_one(&update, &[id]).await.map_err(|e| e.to_string())?;
                let version = row.get::<_, i64>(0) as u64;
                let _ = tx.send(Watched {
                    national_id: id.clone(),
                    version,
                    since: Instant::now(),
                });
                done.push((id.clone(), version));
            }
            Ok(done)
        }));
    }
    Ok(sessions)
}

async fn failover(args: &Args, budget: &mut Budget) -> Result<(), String> {
    const MEMBERS: u64 = 20_000;
    let pg_server = PgServer::start();
    pg_server.execute(SCHEMA);
    let pg_url = pg_server.url();
    let pg = pg_client(&pg_url).await?;
    seed(&pg, MEMBERS).await?;
    let mut primary = RedisServer::start();
    let standby = RedisServer::start_replica_of(&primary);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !standby
        .cmd::<String>(&["INFO", "replication"])
        .contains("master_link_status:up")
    {
        if Instant::now() > deadline {
            return Err("the Redis replica did not sync".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sentinels: Vec<Sentinel> = (0..3)
        .map(|_| Sentinel::start("eligd", &primary, 2))
        .collect();
    let list = sentinels
        .iter()
        .map(Sentinel::address)
        .collect::<Vec<_>>()
        .join(",");
    let relay_port = probe::free_port()?;
    let relay_listen = format!("127.0.0.1:{relay_port}");
    let relay_addr: SocketAddr = ([127, 0, 0, 1], relay_port).into();
    let _relay = probe::spawn(
        &args.eligd,
        &[
            "relay",
            "--postgres-url",
            &pg_url,
            "--redis-sentinels",
            &list,
            "--redis-master",
            "eligd",
            "--wait-replicas",
            "1",
            "--wait-timeout-ms",
            "500",
            "--listen",
            &relay_listen,
        ],
    )?;
    drained(&pg).await?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let snap = dir.path().join("records.snap").display().to_string();
    let status = Command::new(&args.eligd)
        .args([
            "snapshot",
            "build",
            "--from-postgres",
            &pg_url,
            "--redis-url",
            &primary.url(),
        ])
        .args(["--out", &snap])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("snapshot build --from-postgres failed".into());
    }
    let (_eligd, addr) = replica(
        &args.eligd,
        &[
            "--snapshot",
            &snap,
            "--redis-sentinels",
            &list,
            "--redis-master",
            "eligd",
        ],
    )
    .await?;

    let mains: Arc<Vec<String>> = Arc::new(
        Generator::new(MEMBERS, 1, Day::today())
            .filter(|m| m.kind == Kind::Main)
            .map(|m| m.national_id.to_string())
            .collect(),
    );
    let load = tokio::spawn(open_loop::run(
        addr,
        lookups(MEMBERS, 1),
        500.0,
        args.duration,
        4,
    ));
    let (tx, visibility) = probe::watchers_for(addr, 16, Duration::from_secs(60));
    let sessions = commit_load(&pg_url, mains, args.commits_per_s, args.duration, tx).await?;

    tokio::time::sleep(Duration::from_secs(10)).await;
    let killed = Instant::now();
    primary.kill9();
    let mut noticed = false;
    let back = loop {
        let ready = match probe::connect(relay_addr).await {
            Ok(mut s) => matches!(
                probe::get(&mut s, "/readyz", &mut Vec::new()).await,
                Ok((200, _))
            ),
            Err(_) => false,
        };
        noticed |= !ready;
        if noticed && ready {
            break Instant::now();
        }
        if killed.elapsed() > Duration::from_secs(60) {
            return Err("the relay did not write again within 60 s of the kill".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The old primary returns; the sentinels make it a replica, so WAIT is satisfied again.
    primary.restart();
    let mut committed = Vec::new();
    for s in sessions {
        committed.extend(s.await.map_err(|e| e.to_string())??);
    }
    let seen = visibility.await.map_err(|e| e.to_string())?;
    let (mut outside, mut before, mut after) = (
        open_loop::histogram(),
        open_loop::histogram(),
        open_loop::histogram(),
    );
    for (since, micros) in &seen.samples {
        if *since < killed || *since > back {
            let _ = outside.record(*micros);
        }
        let _ = match since {
            s if *s < killed => before.record(*micros),
            s if *s > back => after.record(*micros),
            _ => Ok(()),
        };
    }
    println!("failover: before the kill {}", summary(&before));
    println!("failover: after the window {}", summary(&after));
    println!(
        "failover: relay WAIT shortfalls {}, entries written back {}",
        probe::metric(relay_addr, "eligd_relay_wait_shortfalls_total").await?,
        probe::metric(relay_addr, "eligd_relay_stream_entries_restored_total").await?
    );
    // Every committed change, in the final answer.
    let mut latest = std::collections::HashMap::new();
    for (id, v) in committed.iter() {
        let e = latest.entry(id.clone()).or_insert(0);
        *e = (*e).max(*v);
    }
    let mut lost = 0u64;
    let mut stream = probe::connect(addr).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    for (id, v) in &latest {
        let (_, body) = probe::get(
            &mut stream,
            &format!("/v1/members/{id}/eligibility"),
            &mut buf,
        )
        .await
        .map_err(|e| e.to_string())?;
        let shown = body
            .split("\"data_version\":")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        lost += u64::from(shown < *v);
    }
    let t = load.await.map_err(|e| e.to_string())?.tally;
    let window = back - killed;
    println!(
        "failover: primary killed under {:.0} commits/s; relay writing again after {:.2} s (the window); \
         {} commits, {lost} lost; commit → visible outside the window: {}; all: {}; never seen in 60 s: {}; \
         lookups meanwhile: {} answered, {} failed",
        args.commits_per_s,
        window.as_secs_f64(),
        committed.len(),
        summary(&outside),
        summary(&seen.latencies),
        seen.never_seen,
        t.ok + t.not_found,
        t.errors + t.other_status
    );
    budget.at_most(
        "failover: committed changes lost",
        lost as f64,
        0.0,
        "changes",
    );
    budget.at_most(
        "failover: freshness p99 outside the window",
        ms(&outside, 0.99),
        args.p99_ms,
        "ms",
    );
    budget.at_most(
        "failover: failed lookups",
        (t.errors + t.other_status) as f64,
        0.0,
        "requests",
    );
    Ok(())
}

/// XADDs native upserts of `members` in pipelines of 1,000.
async fn xadd_all(
    conn: &mut redis::aio::MultiplexedConnection,
    members: impl Iterator<Item = Member>,
) -> Result<(), String> {
    let mut pipe = redis::pipe();
    let mut n = 0;
    for m in members {
        let event = NativeEvent::upsert(&m);
        let cmd = pipe.cmd("XADD").arg("eligd:changes").arg("*");
        for (name, value) in &event.fields {
            cmd.arg(*name).arg(value);
        }
        n += 1;
        if n == 1_000 {
            pipe.query_async::<()>(conn)
                .await
                .map_err(|e| e.to_string())?;
            (pipe, n) = (redis::pipe(), 0);
        }
    }
    if n > 0 {
        pipe.query_async::<()>(conn)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// XADDs upserts at `--commits-per-s` for `--duration` and watches each on every replica
/// (clock from the XADD's acknowledgement).
async fn xadd_and_watch(
    conn: &mut redis::aio::MultiplexedConnection,
    addrs: &[SocketAddr],
    args: &Args,
) -> Result<Vec<probe::Visibility>, String> {
    let watchers: Vec<_> = addrs.iter().map(|addr| probe::watchers(*addr, 8)).collect();
    let total = (args.commits_per_s * args.duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.commits_per_s);
    let start = Instant::now();
    for (i, mut m) in Generator::new(args.entries, 1, Day::today())
        .take(total)
        .enumerate()
    {
        tokio::time::sleep_until((start + interval.mul_f64(i as f64)).into()).await;
        m.version = 1_000_000 + i as u64;
        let event = NativeEvent::upsert(&m);
        let mut cmd = redis::cmd("XADD");
        cmd.arg("eligd:changes").arg("*");
        for (name, value) in &event.fields {
            cmd.arg(*name).arg(value);
        }
        cmd.query_async::<String>(conn)
            .await
            .map_err(|e| e.to_string())?;
        let since = Instant::now();
        for (tx, _) in &watchers {
            let _ = tx.send(Watched {
                national_id: m.national_id.to_string(),
                version: m.version,
                since,
            });
        }
    }
    let mut seen = Vec::new();
    for (tx, handle) in watchers {
        drop(tx);
        seen.push(handle.await.map_err(|e| e.to_string())?);
    }
    Ok(seen)
}

/// Three replicas follow one stream: each change visible on all three within `--p99-ms`.
async fn scale_out(args: &Args, budget: &mut Budget) -> Result<(), String> {
    let redis = RedisServer::start_ephemeral();
    let client = redis::Client::open(redis.url()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let url = redis.url();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let flags = [
            "--demo-members",
            "100000",
            "--demo-seed",
            "7",
            "--redis-url",
            &url,
        ];
        replicas.push(replica(&args.eligd, &flags).await?);
    }
    let addrs: Vec<SocketAddr> = replicas.iter().map(|(_, a)| *a).collect();
    let seen = xadd_and_watch(&mut conn, &addrs, args).await?;
    for (i, v) in seen.iter().enumerate() {
        println!(
            "scale-out: replica {i}: XADD → visible {}; never seen {}",
            summary(&v.latencies),
            v.never_seen
        );
        budget.at_most(
            &format!("scale-out: replica {i} freshness p99"),
            ms(&v.latencies, 0.99),
            args.p99_ms,
            "ms",
        );
        budget.at_most(
            &format!("scale-out: replica {i} changes never visible"),
            v.never_seen as f64,
            0.0,
            "changes",
        );
    }
    Ok(())
}

async fn tls(args: &Args, budget: &mut Budget) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let certs = testkit::certs::localhost(dir.path(), "redis");
    let (redis, tls_port) = RedisServer::start_tls(&certs.cert, &certs.key, false);
    let client = redis::Client::open(redis.url()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    xadd_all(&mut conn, Generator::new(args.entries, 1, Day::today())).await?;
    let plain_url = redis.url();
    let tls_url = format!("rediss://localhost:{tls_port}");
    let ca = certs.ca.display().to_string();
    let mut replay = Vec::new();
    let mut replicas = Vec::new();
    let base = ["--demo-members", "1000", "--demo-seed", "7", "--redis-url"];
    for (name, url) in [("plain", plain_url.as_str()), ("TLS", tls_url.as_str())] {
        let mut flags = base.to_vec();
        flags.push(url);
        if name == "TLS" {
            flags.extend(["--redis-ca", ca.as_str()]);
        }
        let started = Instant::now();
        let r = replica(&args.eligd, &flags).await?;
        let rate = args.entries as f64 / started.elapsed().as_secs_f64();
        println!(
            "tls: replay of {} entries over {name}: {rate:.0} entries/s (start to ready)",
            args.entries
        );
        replay.push(rate);
        replicas.push(r);
    }
    let addrs: Vec<SocketAddr> = replicas.iter().map(|(_, a)| *a).collect();
    let seen = xadd_and_watch(&mut conn, &addrs, args).await?;
    let mut p99 = Vec::new();
    for (v, name) in seen.iter().zip(["plain", "TLS"]) {
        println!(
            "tls: XADD → visible over {name}: {}; never seen {}",
            summary(&v.latencies),
            v.never_seen
        );
        // A replica that saw nothing has an empty histogram, whose p99 is 0: the ratio alone
        // would pass. Every change must be seen, on both.
        budget.at_most(
            &format!("tls: changes never visible over {name}"),
            v.never_seen as f64,
            0.0,
            "changes",
        );
        budget.at_least(
            &format!("tls: changes seen over {name}"),
            v.latencies.len() as f64,
            1.0,
            "changes",
        );
        p99.push(ms(&v.latencies, 0.99));
    }
    budget.at_most(
        "TLS freshness p99 / plain p99",
        p99[1] / p99[0].max(0.001),
        args.tls_ratio,
        "x",
    );
    println!(
        "tls: replay rate TLS / plain = {:.2}",
        replay[1] / replay[0].max(1.0)
    );
    Ok(())
}

async fn run(args: Args) -> Result<Budget, String> {
    let mut budget = Budget::default();
    let all = args.scenario == "all";
    if all || args.scenario == "tls" {
        tls(&args, &mut budget).await?;
    }
    if all || args.scenario == "scale-out" {
        scale_out(&args, &mut budget).await?;
    }
    if all || args.scenario == "failover" {
        failover(&args, &mut budget).await?;
    }
    if all || args.scenario == "redis-down" {
        redis_down(&args, &mut budget).await?;
    }
    Ok(budget)
}

fn main() -> ExitCode {
    loadtest::budget_main("degraded-budget", parse_args(), run)
}
