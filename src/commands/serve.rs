//! `eligd serve`: bind, start answering (`/healthz` at once, inquiries once the index is
//! loaded), load the index from a snapshot or generate the demo population, then run until
//! SIGTERM or SIGINT and drain.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::AppState;
use crate::cli::ServeArgs;
use crate::dates::Day;
use crate::demo::Generator;
use crate::eligibility::Outcome;
use crate::index::{snapshot, BaseBuilder, Index};
use crate::inquiry;
use crate::member::Kind;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {}: without client keys (--api-keys, not available in this version) the service \
             only listens on a loopback address",
            args.listen
        );
    }
    let state = Arc::new(AppState::new(args.node_id)?);
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "listening");

    // One stop signal for everything: SIGTERM/SIGINT, or a failed load.
    let (stop_tx, stop_rx) = watch::channel(false);
    let signal_tx = stop_tx.clone();
    tokio::spawn(async move {
        termination_signal().await;
        let _ = signal_tx.send(true);
    });
    let server = tokio::spawn(crate::http::serve(
        listener,
        Arc::clone(&state),
        stopped(stop_rx.clone()),
    ));

    tokio::select! {
        loaded = load_index(&args) => match loaded {
            Ok((index, seconds)) => {
                tracing::info!(members = index.len(), seconds, "index loaded; ready");
                if args.snapshot.is_none() {
                    log_demo_samples(&index, &args);
                }
                state.install_index(index, seconds);
            }
            Err(e) => {
                let _ = stop_tx.send(true);
                let _ = server.await;
                return Err(e);
            }
        },
        _ = stopped(stop_rx) => tracing::info!("stopping before the index finished loading"),
    }
    server.await.context("the HTTP server task failed")?;
    Ok(())
}

/// Completes once a stop has been requested.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn load_index(args: &ServeArgs) -> anyhow::Result<(Arc<Index>, f64)> {
    let args = args.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let index = match &args.snapshot {
            Some(path) => {
                tracing::info!(path = %path.display(), "loading snapshot");
                let (header, base) = snapshot::load(path)?;
                tracing::info!(members = header.members, position = ?header.position.map(|p| p.to_string()), "snapshot verified");
                Index::new(base)
            }
            None => {
                tracing::info!(members = args.demo_members, seed = args.demo_seed, "no snapshot given: generating the synthetic demo population");
                let mut builder = BaseBuilder::with_capacity(args.demo_members as usize);
                for member in Generator::new(args.demo_members, args.demo_seed, Day::today()) {
                    builder.insert(member).context("the demo population is inconsistent")?;
                }
                Index::new(builder.build())
            }
        };
        Ok((Arc::new(index), started.elapsed().as_secs_f64()))
    })
    .await
    .context("the index loader stopped unexpectedly")?
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
    for member in Generator::new(args.demo_members.min(100_000), args.demo_seed, today) {
        let Some(found) = inquiry::by_national_id(index, member.national_id, today, None) else {
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

async fn termination_signal() {
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
