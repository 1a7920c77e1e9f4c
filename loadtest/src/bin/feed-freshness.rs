//! `feed-freshness`: how fast a change reaches the HTTP answer, and how fast a restart
//! replays the stream. It starts its own `redis-server` and `eligd serve` and stops both.
//!
//! 1. Replay: `--replay` native upserts (every member of the synthetic population gets a new
//!    version) are written to the stream before eligd starts; eligd replays them from the
//!    start. The rate is taken from eligd's own metrics, from the first applied entry to the
//!    last (parse + apply, end to end).
//! 2. Freshness: while an open-loop lookup load runs at `--lookups-per-s`, upserts are
//!    XADDed at `--events-per-s` (each due at a fixed time, open-loop too), and a sample of
//!    them is watched over HTTP until the answer carries the new version. The latency runs
//!    from just before the XADD to the answer that shows it.
//!
//! Usage: `feed-freshness --eligd target/production/eligd [--members 1000000]
//! [--replay 1000000] [--events-per-s 2000] [--lookups-per-s 5000] [--duration 20]
//! [--p50-ms 5] [--p99-ms 50] [--replay-per-s 200000]`.
//! Exits 1 when a budget is missed, 2 on error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use eligd::dates::Day;
use eligd::demo::Generator;
use eligd::member::Member;
use loadtest::open_loop::{self, ms, summary};
use loadtest::probe::{self, Watched};
use loadtest::Budget;

const STREAM: &str = "eligd:changes";
/// Every how many events one is watched over HTTP.
const WATCH_EVERY: u64 = 4;

struct Args {
    eligd: PathBuf,
    members: u64,
    replay: u64,
    events_per_s: f64,
    lookups_per_s: f64,
    duration: Duration,
    p50_ms: f64,
    p99_ms: f64,
    replay_per_s: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        eligd: PathBuf::from(loadtest::ELIGD),
        members: 1_000_000,
        replay: 1_000_000,
        events_per_s: 2_000.0,
        lookups_per_s: 5_000.0,
        duration: Duration::from_secs(20),
        p50_ms: 5.0,
        p99_ms: 50.0,
        replay_per_s: 200_000.0,
    };
    loadtest::parse_flags(|flag, value| {
        let num = || loadtest::number(flag, value);
        match flag {
            "--eligd" => a.eligd = PathBuf::from(value),
            "--members" => a.members = num()? as u64,
            "--replay" => a.replay = num()? as u64,
            "--events-per-s" => a.events_per_s = num()?,
            "--lookups-per-s" => a.lookups_per_s = num()?,
            "--duration" => a.duration = Duration::from_secs_f64(num()?),
            "--p50-ms" => a.p50_ms = num()?,
            "--p99-ms" => a.p99_ms = num()?,
            "--replay-per-s" => a.replay_per_s = num()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let events = a.events_per_s * a.duration.as_secs_f64();
    if a.members == 0 || a.replay > a.members || events > (a.members - a.replay / 2) as f64 {
        return Err(
            "--replay must be at most --members, and the events of the run must fit the population"
                .into(),
        );
    }
    if !(a.events_per_s > 0.0 && a.lookups_per_s > 0.0) || a.duration > Duration::from_secs(600) {
        return Err("rates must be positive and --duration at most 600 s".into());
    }
    loadtest::built(&a.eligd)?;
    Ok(a)
}

fn upsert_cmd(pipe: &mut redis::Pipeline, member: &Member) {
    pipe.cmd("XADD")
        .arg(STREAM)
        .arg("*")
        .arg("op")
        .arg("upsert")
        .arg("national_id")
        .arg(member.national_id.to_string())
        .arg("version")
        .arg(member.version)
        .arg("member")
        .arg(member.to_json());
}

/// The population with every version raised by `bump`.
fn bumped(args: &Args, bump: u64) -> impl Iterator<Item = Member> {
    Generator::new(args.members, 1, Day::today()).map(move |mut m| {
        m.version += bump;
        m
    })
}

async fn run(args: Args) -> Result<Budget, String> {
    // Nothing persisted: the load tool wants speed, not durability.
    let redis_server = testkit::RedisServer::start_ephemeral();
    let url = redis_server.url();
    let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;

    println!("writing {} entries to replay…", args.replay);
    let mut pipe = redis::pipe();
    for (i, member) in bumped(&args, 1).take(args.replay as usize).enumerate() {
        upsert_cmd(&mut pipe, &member);
        if i % 1000 == 999 {
            pipe.query_async::<()>(&mut redis)
                .await
                .map_err(|e| e.to_string())?;
            pipe = redis::pipe();
        }
    }
    if !args.replay.is_multiple_of(1000) {
        pipe.query_async::<()>(&mut redis)
            .await
            .map_err(|e| e.to_string())?;
    }

    let http_port = probe::free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], http_port).into();
    let (listen, members) = (addr.to_string(), args.members.to_string());
    let _eligd = probe::spawn(
        &args.eligd,
        &[
            "serve",
            "--listen",
            &listen,
            "--redis-url",
            &url,
            "--demo-members",
            &members,
        ],
    )?;
    probe::wait_for_port(http_port).await?;
    let applied = "eligd_feed_events_applied_total";
    let mut first: Option<(Instant, f64)> = None;
    let replay_rate = loop {
        let n = probe::metric(addr, applied).await?;
        let now = Instant::now();
        match first {
            None if n > 0.0 => first = Some((now, n)),
            Some((t0, n0)) if n >= args.replay as f64 => {
                break (n - n0) / (now - t0).as_secs_f64().max(1e-9);
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "replay: {} entries applied at {replay_rate:.0} entries/s (from eligd's metrics)",
        args.replay
    );
    probe::wait_ready(addr).await?;

    // Lookups of members of the population, open-loop, while changes arrive.
    let lookups: Vec<Vec<u8>> = Generator::new(args.members, 1, Day::today())
        .step_by(7)
        .take(50_000)
        .map(|m| {
            format!(
                "GET /v1/members/{}/eligibility HTTP/1.1\r\nhost: eligd\r\n\r\n",
                m.national_id
            )
            .into_bytes()
        })
        .collect();
    let load = tokio::spawn(open_loop::run(
        addr,
        lookups,
        args.lookups_per_s,
        args.duration,
        16,
    ));

    let (tx, visibility) = probe::watchers(addr, 16);
    let total = (args.events_per_s * args.duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / args.events_per_s);
    let start = Instant::now() + Duration::from_millis(200);
    let mut events = bumped(&args, 2).skip(args.replay as usize / 2);
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let Some(member) = events.next() else { break };
        let mut pipe = redis::pipe();
        upsert_cmd(&mut pipe, &member);
        let sent = Instant::now();
        pipe.query_async::<()>(&mut redis)
            .await
            .map_err(|e| e.to_string())?;
        if i % WATCH_EVERY == 0 {
            let _ = tx.send(Watched {
                national_id: member.national_id.to_string(),
                version: member.version,
                since: sent,
            });
        }
    }
    drop(tx);
    let seen = visibility.await.map_err(|e| e.to_string())?;
    let (visible, never_seen) = (seen.latencies, seen.never_seen);
    let load = load.await.map_err(|e| e.to_string())?;

    println!(
        "freshness: {total} upserts at {:.0}/s, {} watched; XADD → visible over HTTP: {}",
        args.events_per_s,
        visible.len() + never_seen,
        summary(&visible)
    );
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
    let mut budget = Budget::default();
    budget.at_most("XADD → visible p50", ms(&visible, 0.5), args.p50_ms, "ms");
    budget.at_most("XADD → visible p99", ms(&visible, 0.99), args.p99_ms, "ms");
    budget.at_most(
        "changes never visible (5 s)",
        never_seen as f64,
        0.0,
        "changes",
    );
    budget.at_least(
        "catch-up replay",
        replay_rate,
        args.replay_per_s,
        "entries/s",
    );
    budget.at_most(
        "lookup errors",
        (t.errors + t.other_status) as f64,
        0.0,
        "requests",
    );
    Ok(budget)
}

fn main() -> ExitCode {
    loadtest::budget_main("feed-freshness", parse_args(), run)
}
