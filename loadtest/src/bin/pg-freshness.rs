//! `pg-freshness`: commit in PostgreSQL → visible in eligd's HTTP answer, through the whole
//! reference path. It starts its own PostgreSQL (with deploy/postgres/schema.sql), Redis,
//! `eligd relay` and `eligd serve`, and stops them all.
//!
//! 1. Seeds `--members` synthetic people into the table; the relay moves them to the stream.
//! 2. Bootstraps a replica the documented way: `eligd snapshot build --from-postgres
//!    --redis-url …`, then `eligd serve --snapshot … --redis-url …`.
//! 3. Commits `--commits-per-s` single-row updates (open-loop: each is due at a fixed time, on
//!    `--connections` sessions), while `--lookups-per-s` inquiries run open-loop, and watches
//!    every change over HTTP until the answer carries the new version. Latency runs from the
//!    commit's acknowledgement to that answer.
//!
//! Usage: `pg-freshness [--eligd target/production/eligd] [--members 100000]
//! [--commits-per-s 500] [--lookups-per-s 1000] [--duration 20] [--connections 4]
//! [--p99-ms 100]`. Exits 1 when a budget is missed, 2 on error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eligd::dates::Day;
use eligd::demo::Generator;
use eligd::member::Kind;
use loadtest::open_loop::{self, ms, summary};
use loadtest::probe::{self, Watched};
use loadtest::records::{drained, pg_client, seed, SCHEMA};
use loadtest::Budget;
use testkit::{PgServer, RedisServer};

struct Args {
    eligd: PathBuf,
    members: u64,
    commits_per_s: f64,
    lookups_per_s: f64,
    duration: Duration,
    connections: usize,
    p99_ms: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        eligd: PathBuf::from(loadtest::ELIGD),
        members: 100_000,
        commits_per_s: 500.0,
        lookups_per_s: 1_000.0,
        duration: Duration::from_secs(20),
        connections: 4,
        p99_ms: 100.0,
    };
    loadtest::parse_flags(|flag, value| {
        let num = || loadtest::number(flag, value);
        match flag {
            "--eligd" => a.eligd = PathBuf::from(value),
            "--members" => a.members = num()? as u64,
            "--commits-per-s" => a.commits_per_s = num()?,
            "--lookups-per-s" => a.lookups_per_s = num()?,
            "--duration" => a.duration = Duration::from_secs_f64(num()?),
            "--connections" => a.connections = num()? as usize,
            "--p99-ms" => a.p99_ms = num()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if a.members < 1_000 || a.commits_per_s <= 0.0 || a.lookups_per_s < 0.0 || a.connections == 0 {
        return Err("--members at least 1000, positive rates, at least one connection".into());
    }
    if a.duration > Duration::from_secs(600) {
        return Err("--duration at most 600 s".into());
    }
    loadtest::built(&a.eligd)?;
    Ok(a)
}

async fn run(args: Args) -> Result<Budget, String> {
    let pg_server = PgServer::start();
    pg_server.execute(SCHEMA);
    let redis_server = RedisServer::start_ephemeral();
    let (pg_url, redis_url) = (pg_server.url(), redis_server.url());
    let pg = pg_client(&pg_url).await?;

    let started = Instant::now();
    seed(&pg, args.members).await?;
    let relay_port = probe::free_port()?;
    let relay_listen = format!("127.0.0.1:{relay_port}");
    let _relay = probe::spawn(
        &args.eligd,
        &[
            "relay",
            "--postgres-url",
            &pg_url,
            "--redis-url",
            &redis_url,
            "--listen",
            &relay_listen,
        ],
    )?;
    drained(&pg).await?;
    // After a bulk load, as an operator would: the emptied outbox leaves dead rows behind.
    for statement in ["VACUUM ANALYZE member_outbox", "ANALYZE members"] {
        pg.batch_execute(statement)
            .await
            .map_err(|e| format!("{statement}: {e:?}"))?;
    }
    println!(
        "seeded {} members through the outbox and relay in {:.1} s",
        args.members,
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let snap = dir.path().join("records.snap");
    let snap_arg = snap.display().to_string();
    let built = Instant::now();
    let status = Command::new(&args.eligd)
        .args([
            "snapshot",
            "build",
            "--from-postgres",
            &pg_url,
            "--redis-url",
            &redis_url,
        ])
        .args(["--out", &snap_arg])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("snapshot build --from-postgres failed".into());
    }
    println!(
        "snapshot build --from-postgres: {:.2} s",
        built.elapsed().as_secs_f64()
    );

    let http_port = probe::free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], http_port).into();
    let listen = addr.to_string();
    let _eligd = probe::spawn(
        &args.eligd,
        &[
            "serve",
            "--listen",
            &listen,
            "--snapshot",
            &snap_arg,
            "--redis-url",
            &redis_url,
        ],
    )?;
    probe::wait_for_port(http_port).await?;
    probe::wait_ready(addr).await?;

    let mains: Vec<String> = Generator::new(args.members, 1, Day::today())
        .filter(|m| m.kind == Kind::Main)
        .map(|m| m.national_id.to_string())
        .collect();
    let lookups: Vec<Vec<u8>> = mains
        .iter()
        .rev()
        .take(20_000)
        .map(|id| {
            format!("GET /v1/members/{id}/eligibility HTTP/1.1\r\nhost: eligd\r\n\r\n").into_bytes()
        })
        .collect();
    let load = (args.lookups_per_s > 0.0).then(|| {
        tokio::spawn(open_loop::run(
            addr,
            lookups,
            args.lookups_per_s,
            args.duration,
            8,
        ))
    });

    let (tx, visibility) = probe::watchers(addr, 16);
    let total = (args.commits_per_s * args.duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.commits_per_s);
    let start = Instant::now() + Duration::from_millis(200);
    let mains = Arc::new(mains);
    let mut sessions = Vec::new();
    for c in 0..args.connections {
        let (pg, tx, mains) = (pg_client(&pg_url).await?, tx.clone(), Arc::clone(&mains));
        let connections = args.connections;
        sessions.push(tokio::spawn(async move {
            let update = pg
                .prepare("UPDATE members SET coverage_until = coverage_until + 1 WHERE national_id = $1 RETURNING version")
                .await
                .map_err(|e| e.to_string())?;
            let mut late = Duration::ZERO;
            for i in (c..total).step_by(connections) {
                let due = start + interval.mul_f64(i as f64);
                tokio::time::sleep_until(due.into()).await;
                late = late.max(due.elapsed());
                let id = &mains[i % mains.len()];
                let row = pg.query_one(&update, &[id]).await.map_err(|e| e.to_string())?;
                let version: i64 = row.get(0);
                let _ = tx.send(Watched {
                    national_id: id.clone(),
                    version: version as u64,
                    since: Instant::now(),
                });
            }
            Ok::<Duration, String>(late)
        }));
    }
    drop(tx);
    let mut lateness = Duration::ZERO;
    for s in sessions {
        lateness = lateness.max(s.await.map_err(|e| e.to_string())??);
    }
    let seen = visibility.await.map_err(|e| e.to_string())?;
    println!(
        "{total} commits at {:.0}/s on {} sessions (worst commit start {:.1} ms late); commit → visible over HTTP: {}",
        args.commits_per_s,
        args.connections,
        lateness.as_secs_f64() * 1000.0,
        summary(&seen.latencies)
    );
    let mut budget = Budget::default();
    budget.at_most(
        "commit → visible p99",
        ms(&seen.latencies, 0.99),
        args.p99_ms,
        "ms",
    );
    budget.at_most(
        "changes never visible (5 s)",
        seen.never_seen as f64,
        0.0,
        "changes",
    );
    if let Some(load) = load {
        let load = load.await.map_err(|e| e.to_string())?;
        let t = &load.tally;
        println!(
            "lookups at {:.0}/s meanwhile: 200 {}, 404 {}, other {}, errors {}; open-loop {}",
            args.lookups_per_s,
            t.ok,
            t.not_found,
            t.other_status,
            t.errors,
            summary(&load.open_loop)
        );
        budget.at_most(
            "lookup errors",
            (t.errors + t.other_status) as f64,
            0.0,
            "requests",
        );
    }
    Ok(budget)
}

fn main() -> ExitCode {
    loadtest::budget_main("pg-freshness", parse_args(), run)
}
