//! `eligd serve`: bind, start answering (`/healthz` at once, inquiries once the index is
//! loaded), load the index from a snapshot or generate the demo population, then run until
//! SIGTERM or SIGINT and drain.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::watch;

use crate::app::AppState;
use crate::cli::ServeArgs;
use crate::dates::Day;
use crate::demo::Generator;
use crate::eligibility::Outcome;
use crate::feed::status::FeedStatus;
use crate::feed::{Feed, FeedConfig};
use crate::index::{snapshot, snapshot_dir, Base, BodyBuilder, Index, Origin};
use crate::inquiry;
use crate::member::Kind;
use crate::shutdown::stopped;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let state = Arc::new(super::access::state(&args)?);
    let listener_config = super::access::listener(&args, &state)?;
    // The URL may hold a password: it is never echoed.
    let feed_client = if args.redis.configured(args.redis_url.as_deref()) {
        Some(args.redis.target(args.redis_url.as_deref())?)
    } else {
        None
    };
    // Known before the index is installed, so readiness waits for the replay from the start.
    let feed_status = feed_client.as_ref().map(|_| {
        let status = Arc::new(FeedStatus::new(
            Duration::from_secs(args.max_staleness),
            FEED_BLOCK,
            Instant::now(),
        ));
        state.set_feed(Arc::clone(&status));
        status
    });
    let listener = crate::http::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "listening");

    // One stop signal for everything: SIGTERM/SIGINT, or a failed load.
    let (stop_tx, stop_rx) = watch::channel(false);
    let signal_tx = stop_tx.clone();
    tokio::spawn(async move {
        termination_signal().await;
        let _ = signal_tx.send(true);
    });
    super::access::reload_on_hangup(Arc::clone(&state), listener_config.tls.clone());
    // A Kubernetes Secret changes the keys file in place, without a signal.
    spawn_keys_watcher(Arc::clone(&state), stop_rx.clone());
    // With --ops-listen, the operations endpoints have a listener of their own and the public
    // one serves only what clients and people reach.
    let ops = match args.ops_listen {
        Some(addr) => {
            let ops_listener = crate::http::bind(addr)
                .with_context(|| format!("cannot listen on {addr} (--ops-listen)"))?;
            tracing::info!(ops_address = %ops_listener.local_addr()?, "operations endpoints listening");
            let config = crate::http::ListenerConfig {
                metrics: crate::http::connection_metrics(&state),
                ..crate::http::ListenerConfig::default()
            };
            Some(tokio::spawn(crate::http::serve_routes(
                ops_listener,
                Arc::clone(&state),
                crate::http::Routes::Ops,
                config,
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };
    let public_routes = match ops {
        Some(_) => crate::http::Routes::Public,
        None => crate::http::Routes::All,
    };
    let server = tokio::spawn(crate::http::serve_routes(
        listener,
        Arc::clone(&state),
        public_routes,
        listener_config,
        stopped(stop_rx.clone()),
    ));

    spawn_status_sampler(Arc::clone(&state), stop_rx.clone());
    tokio::select! {
        loaded = load_index(&args) => match loaded {
            Ok(loaded) => {
                let index = loaded.index;
                state.install_index(Arc::clone(&index), loaded.seconds);
                tracing::info!(members = index.len(), seconds = loaded.seconds, "index loaded; ready");
                if loaded.from_demo {
                    log_demo_samples(&index, &args);
                }
                if let (Some(client), Some(status)) = (feed_client, feed_status) {
                    start_feed(&state, status, client, &args, stop_rx.clone());
                }
                if let Some(dir) = args.snapshot_dir.clone() {
                    if loaded.from_demo {
                        tracing::warn!(dir = %dir.display(), "serving the synthetic population: nothing is written to \
                            --snapshot-dir until a real snapshot is loaded (a resync can bring one)");
                    }
                    spawn_compactor(Arc::clone(&state), dir, &args, stop_rx.clone());
                }
            }
            Err(e) => {
                let _ = stop_tx.send(true);
                let _ = server.await;
                if let Some(ops) = ops {
                    let _ = ops.await;
                }
                super::access::close_audit(&state);
                return Err(e);
            }
        },
        _ = stopped(stop_rx.clone()) => tracing::info!("stopping before the index finished loading"),
    }
    server.await.context("the HTTP server task failed")?;
    if let Some(ops) = ops {
        ops.await.context("the operations server task failed")?;
    }
    // Every answer is out: write the audit records of all of them before exiting.
    super::access::close_audit(&state);
    Ok(())
}

struct Loaded {
    index: Arc<Index>,
    seconds: f64,
    /// The synthetic population: it is never written to `--snapshot-dir`, so it can never
    /// pass for real data after a restart, nor prune real snapshots.
    from_demo: bool,
}

/// Snapshots to try, in order: `--snapshot`, then `--snapshot-dir` newest first (by header,
/// see [`snapshot_dir`]), and the refusals met on the way (files whose header cannot be
/// read or disagrees with their name; an unreadable directory). A missing directory holds
/// none.
fn snapshot_candidates(args: &ServeArgs) -> (Vec<PathBuf>, Vec<String>) {
    let mut candidates: Vec<PathBuf> = args.snapshot.iter().cloned().collect();
    let mut refusals = Vec::new();
    if let Some(dir) = &args.snapshot_dir {
        for stale in snapshot_dir::remove_unfinished_writes(dir) {
            tracing::info!(path = %stale.display(), "removed an unfinished snapshot write");
        }
        match snapshot_dir::list(dir) {
            Ok(listing) => {
                for refused in listing.refused {
                    tracing::warn!(path = %refused.path.display(), reason = %refused.reason, "snapshot refused");
                    refusals.push(format!("{}: {}", refused.path.display(), refused.reason));
                }
                candidates.extend(listing.snapshots.into_iter().map(|s| s.path));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => refusals.push(format!("cannot read --snapshot-dir {}: {e}", dir.display())),
        }
    }
    (candidates, refusals)
}

async fn load_index(args: &ServeArgs) -> anyhow::Result<Loaded> {
    let args = args.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let configured = args.snapshot.is_some() || args.snapshot_dir.is_some();
        let (candidates, mut refusals) = snapshot_candidates(&args);
        for path in &candidates {
            tracing::info!(path = %path.display(), "loading snapshot");
            match snapshot::load(path) {
                Ok((header, base)) => {
                    tracing::info!(members = header.members, position = ?header.position.map(|p| p.to_string()), "snapshot verified");
                    let seconds = started.elapsed().as_secs_f64();
                    let index = Arc::new(Index::from_snapshot(&header, base));
                    return Ok(Loaded { index, seconds, from_demo: false });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot refused; trying the next newest");
                    refusals.push(e.to_string());
                }
            }
        }
        if configured && !args.demo_fallback {
            if refusals.is_empty() {
                let dir = args.snapshot_dir.as_ref().map_or_else(String::new, |d| format!(" in {}", d.display()));
                bail!("no snapshot found{dir} (the directory is missing or empty); build one with `eligd snapshot build`, or pass --demo-fallback");
            }
            bail!("no valid snapshot; refused: {}", refusals.join("; "));
        }
        if configured {
            tracing::warn!(refused = refusals.len(), "no valid snapshot: serving the synthetic demo population (--demo-fallback)");
        }
        tracing::info!(members = args.demo_members, seed = args.demo_seed, "generating the synthetic demo population");
        let base = demo_base(args.demo_members, args.demo_seed, Day::today())?;
        Ok(Loaded {
            index: Arc::new(Index::synthetic(base)),
            seconds: started.elapsed().as_secs_f64(),
            from_demo: true,
        })
    })
    .await
    .context("the index loader stopped unexpectedly")?
}

/// The synthetic population as a base held in memory.
pub fn demo_base(members: u64, seed: u64, today: Day) -> anyhow::Result<Base> {
    let mut builder = BodyBuilder::default();
    for (i, member) in Generator::new(members, seed, today).enumerate() {
        builder.push_member(&member, Origin(i as u64));
    }
    let resolved = builder.resolve(None)?;
    if let Some(r) = resolved.rejected.first() {
        bail!("the demo population is inconsistent: {}", r.reason);
    }
    resolved
        .into_base()
        .map_err(|e| anyhow::anyhow!("the demo population does not validate: {e}"))
}

/// Follows the change feed; not ready until it has replayed from the snapshot's position.
fn start_feed(
    state: &Arc<AppState>,
    status: Arc<FeedStatus>,
    client: crate::redis::RedisTarget,
    args: &ServeArgs,
    stop: watch::Receiver<bool>,
) {
    let config = FeedConfig {
        stream: args.stream.clone(),
        block: FEED_BLOCK,
        batch: FEED_BATCH,
        snapshot_dir: args.snapshot_dir.clone(),
    };
    tracing::info!(stream = %args.stream, "following the change feed; ready once it has caught up");
    let feed = Feed {
        index: state.index_slot(),
        metrics: state.metrics.feed.clone(),
        status,
    };
    tokio::spawn(crate::feed::run(feed, client, config, stop));
}

/// How long one blocking read waits, and how many entries one read takes.
const FEED_BLOCK: Duration = Duration::from_millis(500);
const FEED_BATCH: usize = 10_000;

/// Starts the keys file watcher (`auth::watch`) when `state` has client keys; it stops with `stop`.
fn spawn_keys_watcher(state: Arc<AppState>, stop: watch::Receiver<bool>) {
    if state.keys().is_none() {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(crate::auth::watch::POLL) => {}
                _ = stopped(stop.clone()) => break,
            }
            let state = Arc::clone(&state);
            // A `stat` and, rarely, a read: off the request threads (a stuck network file
            // system must not stall them).
            let checked = tokio::task::spawn_blocking(move || {
                let Some(store) = state.keys() else { return };
                if store.changed_on_disk() {
                    tracing::info!(path = %store.path().display(), "the keys file changed: reloading client keys");
                    state.reload_keys();
                }
            })
            .await;
            if let Err(e) = checked {
                tracing::error!(error = %e, "the keys file watcher stopped unexpectedly");
                break;
            }
        }
    });
}

/// Samples the request histograms for `/status` every 10 s (the first one at once).
fn spawn_status_sampler(state: Arc<AppState>, stop: watch::Receiver<bool>) {
    let every = Duration::from_secs(crate::metrics::history::EVERY_SECS);
    tokio::spawn(async move {
        loop {
            state
                .metrics
                .history
                .record(crate::dates::unix_ms(), &state.metrics.encode());
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stopped(stop.clone()) => break,
            }
        }
    });
}

/// Compacts in the background: when the overlay reaches `--compact-overlay` changes, or
/// every `--compact-interval` seconds while it holds any. Always the index serving now (a
/// resync may replace it), never the synthetic population, and never while a feed gap is
/// unrepaired.
fn spawn_compactor(
    state: Arc<AppState>,
    dir: PathBuf,
    args: &ServeArgs,
    stop: watch::Receiver<bool>,
) {
    let interval = Duration::from_secs(args.compact_interval.max(1));
    let (threshold, keep) = (args.compact_overlay.max(1), args.snapshot_keep as usize);
    tokio::spawn(async move {
        let mut last = Instant::now();
        // After a failure (disk full, say), wait before trying again.
        let mut not_before = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stopped(stop.clone()) => break,
            }
            state.metrics.compactor_checks.inc();
            let Some(index) = state
                .index()
                .filter(|i| !i.is_synthetic() && state.snapshots_allowed())
            else {
                continue;
            };
            let pending = index.overlay_len();
            let due = pending >= threshold || (pending > 0 && last.elapsed() >= interval);
            if !due || Instant::now() < not_before {
                continue;
            }
            let dir = dir.clone();
            let guard = Arc::clone(&state);
            let watched = Arc::clone(&index);
            let watch = crate::progress::Reporter::start_with(
                "compaction",
                move || {
                    let p = watched.compaction_progress();
                    let done = p.placed.load(std::sync::atomic::Ordering::Relaxed);
                    let total = p.rows.load(std::sync::atomic::Ordering::Relaxed);
                    if total > 0 && done >= total {
                        // The booklet table, then the check every new snapshot passes.
                        crate::progress::Reading {
                            stage: "verifying",
                            done,
                            total: None,
                            unit: "members",
                        }
                    } else {
                        crate::progress::Reading {
                            stage: "writing",
                            done,
                            total: Some(total),
                            unit: "members",
                        }
                    }
                },
                false,
                crate::progress::LOG_EVERY,
            );
            let peak = crate::memory::PeakSampler::start(Duration::from_millis(50));
            let result = background(move || {
                index.compact_into_guarded(&dir, keep, false, &|| guard.snapshots_allowed())
            })
            .await;
            watch.finish();
            if let Some(bytes) = peak.finish() {
                state
                    .metrics
                    .compaction_peak_anonymous_bytes
                    .set(bytes as i64);
            }
            let outcome = match result {
                Ok(Ok(Some(c))) => {
                    tracing::info!(path = %c.path.display(), members = c.members, overlay_entries = c.overlay_entries,
                        seconds = c.seconds, pruned = c.pruned.len(),
                        peak_anonymous_bytes = state.metrics.compaction_peak_anonymous_bytes.get(),
                        "compacted into a new snapshot");
                    state.metrics.compaction_seconds.set(c.seconds);
                    "ok"
                }
                Ok(Ok(None)) => "skipped",
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "compaction failed; nothing was written, the changes stay in the overlay and are retried");
                    "error"
                }
                Err(e) => {
                    tracing::error!(error = %e, "compaction stopped unexpectedly");
                    "error"
                }
            };
            state
                .metrics
                .compactions
                .get_or_create(&crate::metrics::OutcomeLabels { outcome })
                .inc();
            last = Instant::now();
            if outcome == "error" {
                not_before = Instant::now() + Duration::from_secs(30);
            }
        }
    });
}

/// Runs `work` on a thread of its own with the idle CPU policy (`SCHED_IDLE`: it runs only
/// when no other thread of the machine wants the CPU, and gives way at once when one wakes),
/// so that on a replica with few cores the request threads always win the CPU from a
/// compaction and lookups keep their latency while it runs (docs/performance.md). Threads it
/// starts (the new snapshot's check) inherit the policy. The thread ends with the work, so the
/// policy goes with it (raising it again would need a privilege).
async fn background<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("compaction".into())
        .spawn(move || {
            lower_priority();
            let _ = done.send(work());
        })
        .map_err(|e| format!("cannot start the compaction thread: {e}"))?;
    result
        .await
        .map_err(|_| "the compaction thread stopped unexpectedly".to_string())
}

/// `SCHED_IDLE` for the calling thread, or nice 19 where that is refused. Best effort.
#[allow(unsafe_code)]
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on this very thread, with a parameter on this frame.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0
            && libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) != 0
        {
            tracing::debug!("could not lower the compaction thread's priority");
        }
    }
}

/// Which members a sample line shows.
type SampleTest = fn(Kind, Outcome) -> bool;

/// Logs one synthetic ID of each interesting kind, so a newcomer has something to ask
/// for. These are generated, not real people's IDs.
fn log_demo_samples(index: &Index, args: &ServeArgs) {
    let today = Day::today();
    let mut wanted: Vec<(&str, SampleTest)> = vec![
        ("active main insured", |k, o| {
            k == Kind::Main && o == Outcome::Active
        }),
        ("active dependent", |k, o| {
            k == Kind::Dependent && o == Outcome::Active
        }),
        ("pensioner", |k, o| {
            k == Kind::Pensioner && o == Outcome::Active
        }),
        ("expired", |_, o| o == Outcome::Expired),
        ("suspended", |_, o| o == Outcome::Suspended),
        ("deceased", |_, o| o == Outcome::Deceased),
        ("dependent of an inactive main insured", |_, o| {
            o == Outcome::MainInsuredInactive
        }),
    ];
    let view = index.view();
    for member in Generator::new(args.demo_members.min(100_000), args.demo_seed, today) {
        let Some(found) = inquiry::by_national_id(&view, member.national_id, today, None) else {
            continue;
        };
        if let Some(pos) = wanted
            .iter()
            .position(|(_, f)| f(member.kind, found.decision.outcome))
        {
            let (label, _) = wanted.remove(pos);
            let booklet = member
                .booklet_no
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into());
            tracing::info!(demo_national_id = %member.national_id, booklet_no = %booklet, "synthetic sample: {label}");
        }
        if wanted.is_empty() {
            break;
        }
    }
}

pub(crate) async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the service");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
