//! The servers `bench` compares, started and pinned, and the closed-loop rounds over them.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use eligd::dates::Day;
use eligd::demo::Generator;
use loadtest::closed_loop::{self, Framing, Outcome};
use loadtest::server::{add_key, pin_tree, tree_cpu_seconds, Eligd};

use super::Args;

/// Distinct synthetic members to ask about, the same for every round.
const KEYS: usize = 10_000;

/// A server the closed loop measures.
struct Peer {
    name: &'static str,
    addr: SocketAddr,
    /// The server's process (PostgreSQL's postmaster): its CPU time and its descendants' is
    /// the server's.
    pid: u32,
    connect: closed_loop::Connect,
    requests: Arc<Vec<Vec<u8>>>,
    framing: Framing,
    /// Its connections, opened on the first run and kept.
    streams: Vec<tokio::net::TcpStream>,
}

/// One closed-loop run of a peer: its answers and the CPU its processes used.
struct Run {
    outcome: Outcome,
    cpu: f64,
}

/// One round: each peer in turn has the server core to itself while the client loads it
/// closed-loop for `--seconds` (after a warm-up). Loading them side by side was tried: the
/// scheduler gives PostgreSQL's 64 backends 64 shares of the core against one for each
/// single-threaded server, so the shares, and the CPU figures, say little.
async fn one_by_one(args: &Args, peers: &mut [Peer]) -> Result<Vec<Run>, String> {
    let warmup = Duration::from_millis(500);
    let seconds = Duration::from_secs_f64(args.seconds);
    // CPU time includes the warm-up; scale it to the counted part.
    let scale = args.seconds / (warmup.as_secs_f64() + args.seconds);
    let mut runs = Vec::with_capacity(peers.len());
    for peer in peers.iter_mut() {
        if peer.streams.is_empty() {
            peer.streams = closed_loop::connect_all(peer.addr, &peer.connect, args.connections)
                .await
                .map_err(|e| format!("{}: {e}", peer.name))?;
        }
        let before = tree_cpu_seconds(peer.pid)?;
        let streams = std::mem::take(&mut peer.streams);
        let (requests, framing) = (Arc::clone(&peer.requests), peer.framing);
        let (outcome, streams) = closed_loop::run(streams, requests, framing, warmup, seconds)
            .await
            .map_err(|e| format!("{}: {e}", peer.name))?;
        peer.streams = streams;
        let cpu = (tree_cpu_seconds(peer.pid)? - before) * scale;
        if outcome.errors > 0 {
            return Err(format!(
                "{}: {} answers were errors in a closed-loop run",
                peer.name, outcome.errors
            ));
        }
        runs.push(Run { outcome, cpu });
    }
    Ok(runs)
}

pub(crate) struct Started {
    _dir: tempfile::TempDir,
    pub(crate) eligd: Eligd,
    /// The same build with neither keys nor an audit log.
    pub(crate) eligd_plain: Eligd,
    pub(crate) key: String,
    pub(crate) hello: Killed,
    pub(crate) hello_addr: SocketAddr,
    redis: testkit::RedisServer,
    pub(crate) redis_addr: SocketAddr,
    postgres: testkit::PgServer,
    pub(crate) postgres_addr: SocketAddr,
    pub(crate) body_bytes: usize,
}

/// A child process killed when dropped (on every path out, errors included).
pub(crate) struct Killed(pub(crate) Child);

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

pub(crate) fn http_get(path: &str, key: Option<&str>) -> Vec<u8> {
    let auth = key
        .map(|k| format!("authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nhost: eligd\r\n{auth}\r\n").into_bytes()
}

/// One answer from eligd, to size the others' answers like it.
async fn answer_bytes(addr: SocketAddr, path: &str, key: &str) -> Result<usize, String> {
    let (ok, body) = get(addr, path, Some(key)).await?;
    if !ok {
        return Err(format!(
            "eligd refused the sample lookup: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(body.len())
}

pub(crate) async fn start(args: &Args) -> Result<Started, String> {
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
    let eligd_plain = Eligd::start(&args.eligd, args.members, &args.server_cores, &[])?;
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
        redis,
        postgres_addr: loopback(postgres.port()),
        postgres,
        eligd,
        eligd_plain,
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
    let plain_addr: SocketAddr = s.eligd_plain.addr.parse().map_err(|e| format!("{e}"))?;
    let plain_requests: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| http_get(&format!("/v1/members/{id}/eligibility"), None))
        .collect();
    let hello_requests: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| http_get(&format!("/v1/members/{id}/eligibility"), Some(&s.key)))
        .collect();
    Ok(vec![
        Peer {
            name: "hello-world (bare hyper 1)",
            addr: s.hello_addr,
            pid: s.hello.0.id(),
            connect: closed_loop::tcp(),
            requests: Arc::new(hello_requests),
            framing: Framing::Http,
            streams: Vec::new(),
        },
        Peer {
            name: "eligd (keys + audit)",
            addr: eligd_addr,
            pid: s.eligd.pid(),
            connect: closed_loop::tcp(),
            requests: Arc::new(eligd_requests),
            framing: Framing::Http,
            streams: Vec::new(),
        },
        Peer {
            name: "Redis GET",
            addr: s.redis_addr,
            pid: s.redis.process_id().ok_or("redis has no pid")?,
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
            pid: s.postgres.postmaster_pid().ok_or("no postmaster.pid")?,
            connect: closed_loop::postgres(
                "postgres",
                "eligd",
                "SELECT body FROM members WHERE id = $1",
            ),
            requests: Arc::new((0..KEYS as i64).map(closed_loop::pg_execute).collect()),
            framing: Framing::Postgres,
            streams: Vec::new(),
        },
        Peer {
            name: "eligd (no keys, no audit)",
            addr: plain_addr,
            pid: s.eligd_plain.pid(),
            connect: closed_loop::tcp(),
            requests: Arc::new(plain_requests),
            framing: Framing::Http,
            streams: Vec::new(),
        },
    ])
}

/// GET of `path` from eligd: the body.
async fn get_body(addr: SocketAddr, path: &str) -> Result<String, String> {
    let (_, body) = get(addr, path, None).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// One GET on a new connection: whether it was a 200, and the body.
async fn get(addr: SocketAddr, path: &str, key: Option<&str>) -> Result<(bool, Vec<u8>), String> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(&http_get(path, key))
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let ok = closed_loop::read_answer(&mut stream, &mut buf, Framing::Http)
        .await
        .map_err(|e| e.to_string())?;
    let head = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |p| p + 4);
    Ok((ok, buf.split_off(head)))
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

pub(crate) const HELLO: usize = 0;
pub(crate) const ELIGD: usize = 1;
pub(crate) const REDIS: usize = 2;
pub(crate) const POSTGRES: usize = 3;
/// The same build without keys and audit: what keys and the audit log (group commit) cost.
pub(crate) const ELIGD_PLAIN: usize = 4;

/// The closed-loop figures of the rounds.
pub(crate) struct ClosedLoop {
    /// Per peer: throughput per round.
    pub(crate) rates: Vec<Vec<f64>>,
    /// Per peer: µs of server CPU per answer, per round (None when not measured).
    pub(crate) cpu_us: Vec<Vec<Option<f64>>>,
    /// Per peer: share of the server core busy, per round.
    pub(crate) busy: Vec<Vec<Option<f64>>>,
    pub(crate) handler_p99_s: Option<f64>,
    pub(crate) handler_p50_s: Option<f64>,
}

pub(crate) async fn closed_rounds(args: &Args, started: &Started) -> Result<ClosedLoop, String> {
    let mut peers = peers(args, started)?;
    // The handler's own time, from the build without keys and audit: with them, the
    // histogram also holds the wait for the audit line's write (group commit), which the
    // audit budgets measure on their own.
    let eligd_addr: SocketAddr = started
        .eligd_plain
        .addr
        .parse()
        .map_err(|e| format!("{e}"))?;
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
        let runs = one_by_one(args, &mut peers).await?;
        for (i, (peer, run)) in peers.iter().zip(runs).enumerate() {
            let rate = run.outcome.per_second();
            let cpu_us = run.cpu * 1e6 / run.outcome.answers.max(1) as f64;
            line.push_str(&format!(
                " {} {rate:.0}/s ({cpu_us:.2} µs CPU/answer, core {:.0} % busy);",
                peer.name,
                run.cpu / args.seconds * 100.0
            ));
            result.rates[i].push(rate);
            result.cpu_us[i].push(Some(cpu_us));
            result.busy[i].push(Some(run.cpu / args.seconds));
        }
        println!("{line}");
    }
    let after = handler_buckets(&get_body(eligd_addr, "/metrics").await?);
    result.handler_p99_s = quantile_bound(&before, &after, 0.99);
    result.handler_p50_s = quantile_bound(&before, &after, 0.5);
    Ok(result)
}
