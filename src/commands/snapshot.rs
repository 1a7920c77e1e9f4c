//! `eligd snapshot build` and `eligd snapshot inspect`.

use std::fs::File;
use std::io::{BufReader, Write};

use anyhow::Context;

use crate::cli::{SnapshotBuildArgs, SnapshotInspectArgs, SnapshotPositionArgs};
use std::path::Path;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::import::{import_jsonl_into, ImportProgress, ImportReport, KEPT_ERRORS};
use crate::index::{snapshot, BodyBuilder, Resolved, StreamEpoch};
use crate::progress::{Reading, Reporter};
use crate::records;

pub fn build(args: &SnapshotBuildArgs, err: &mut impl Write) -> anyhow::Result<()> {
    if args.if_missing && args.out.is_dir() {
        if let Some(found) = crate::index::snapshot_dir::list(&args.out)
            .ok()
            .and_then(|l| l.snapshots.into_iter().next())
        {
            writeln!(
                err,
                "{} already holds a snapshot ({}); nothing built (--if-missing)",
                args.out.display(),
                found.path.display()
            )?;
            return Ok(());
        }
    }
    // The URL may hold a password: it is never echoed.
    let redis = args
        .redis
        .configured(args.redis_url.as_deref())
        .then(|| args.redis.target(args.redis_url.as_deref()))
        .transpose()?;
    // Rows sort on disk beside the snapshot (the volume sized for snapshots) unless told
    // otherwise; the private directory is removed when the build ends, however it ends.
    let spill = match &args.spill_dir {
        Some(dir) => dir.clone(),
        None if args.out.is_dir() => args.out.clone(),
        None => args
            .out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| std::path::PathBuf::from("."), Path::to_path_buf),
    };
    // What a build or write killed before it could clean up left there (never one running).
    for stale in crate::index::snapshot_dir::remove_unfinished_writes(&spill) {
        writeln!(
            err,
            "removed {}: left by a build or snapshot write that did not finish",
            stale.display()
        )?;
    }
    let builder = BodyBuilder::spilling(&spill)
        .with_context(|| format!("cannot sort in {} (--spill-dir)", spill.display()))?;
    let progress = Arc::new(BuildReading::default());
    let input_bytes = args
        .from_jsonl
        .as_ref()
        .filter(|p| p.as_os_str() != "-")
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.len());
    let reporter = Reporter::start("snapshot build", {
        let progress = Arc::clone(&progress);
        move || build_reading(&progress, input_bytes)
    });
    let (imported, source, position, epoch) = match (&args.from_jsonl, &args.from_postgres) {
        (Some(path), _) => {
            let epoch = jsonl_epoch(args, redis.as_ref())?;
            (
                import_file(path, args.strict, builder, &progress)?,
                path.display().to_string(),
                args.position,
                epoch,
            )
        }
        (None, Some(url)) => {
            // Checked before anything is read; neither the string nor the file is echoed.
            let postgres = crate::pg::PgTarget::parse(url, "--from-postgres")?.with_password(
                crate::secret::Secret::from_flags(
                    None,
                    "--postgres-password-file",
                    args.postgres_password_file.as_deref(),
                )?,
            );
            // Read before the table, so replaying from it misses nothing (records.rs).
            let (position, epoch) = match &redis {
                Some(redis) => {
                    let (position, epoch) = records::stream_position(redis, &args.stream)
                        .context("reading the change stream's position")?;
                    (Some(position), Some(epoch))
                }
                None => {
                    writeln!(err, "warning: no --redis-url: the snapshot records no feed position, so a service loading it replays the stream from its first entry")?;
                    (None, None)
                }
            };
            let (resolved, report, markers) =
                records::import_members(&postgres, args.strict, builder, Some(&progress.import))
                    .context("reading the members table")?;
            let source = format!("the members table (and {markers} delete markers)");
            ((resolved, report), source, position, epoch)
        }
        (None, None) => anyhow::bail!("give --from-jsonl FILE or --from-postgres URL"),
    };
    let (mut resolved, report) = imported;
    progress.rows.store(resolved.rows(), Ordering::Relaxed);
    for e in &report.errors {
        writeln!(err, "skipped {e}")?;
    }
    if report.skipped > report.errors.len() as u64 {
        writeln!(
            err,
            "… and {} more skipped lines (only the first {KEPT_ERRORS} are shown)",
            report.skipped - report.errors.len() as u64
        )?;
    }
    // An empty members table is the start of a deployment (its stream position carries the
    // rest); an empty JSON Lines input is an export that failed or a pipe cut at once.
    if report.imported == 0 && report.skipped == 0 && args.from_jsonl.is_some() && !args.allow_empty
    {
        anyhow::bail!(
            "no member in {} lines of {source}; no snapshot written: a replica would load it, be \
             ready and answer member_not_found to everyone (--allow-empty writes it anyway)",
            report.lines
        );
    }
    if report.imported == 0 && report.skipped > 0 {
        anyhow::bail!(
            "no valid member in {} lines of {source} ({} skipped); no snapshot written",
            report.lines,
            report.skipped
        );
    }
    // Into a directory (a running service's --snapshot-dir, say), under the name its header
    // gives it; else exactly where asked.
    let target = if args.out.is_dir() {
        snapshot::Target::Dir(&args.out)
    } else {
        snapshot::Target::File(&args.out)
    };
    let layout = resolved
        .layout(Some(&progress.build.placed))
        .context("reading the sorted members back")?;
    let (path, header) = snapshot::write_built(target, layout, position, epoch)?;
    drop(resolved);
    reporter.finish();
    let at = match (position, epoch) {
        (None, _) => "no feed position".to_string(),
        (Some(p), None) => format!("feed position {p}"),
        (Some(p), Some(e)) => format!("feed position {p} of stream epoch {e}"),
    };
    writeln!(
        err,
        "wrote {}: {} members from {} lines ({} skipped) of {source}, {at}, {} bytes, verified",
        path.display(),
        header.members,
        report.lines,
        report.skipped,
        header.body_len + snapshot::HEADER_LEN as u64
    )?;
    Ok(())
}

/// The epoch recorded with a JSON Lines build's `--position`. A position means something only
/// in the epoch it was read in, which is the one `--epoch` names (printed with the position by
/// `eligd snapshot position`): the epoch current at build time may be a newer one, started
/// after the position was noted, and a replica would then take over the new stream from a
/// position of the old one, silently without the entries lost in between.
fn jsonl_epoch(
    args: &SnapshotBuildArgs,
    redis: Option<&crate::redis::RedisTarget>,
) -> anyhow::Result<Option<StreamEpoch>> {
    let (position, epoch) = match (args.position, args.epoch) {
        (None, None) if redis.is_some() => anyhow::bail!(
            "--redis-url with --from-jsonl checks the stream epoch of --position: give --position and --epoch too"
        ),
        (None, None) => return Ok(None),
        (None, Some(_)) => anyhow::bail!(
            "--epoch names the stream epoch of --position: give --position too"
        ),
        (Some(position), None) => anyhow::bail!(
            "--position {position} needs --epoch: the stream epoch that position belongs to, read \
             with it before the export started (`eligd snapshot position` prints both); the stream's \
             current epoch may be a newer one"
        ),
        (Some(position), Some(epoch)) => (position, epoch),
    };
    if let Some(redis) = redis {
        let current = records::current_epoch(redis, &args.stream)
            .context("reading the change stream's epoch")?;
        if current != Some(epoch) {
            let now = current.map_or_else(|| "missing".to_string(), |e| e.to_string());
            anyhow::bail!(
                "the stream's epoch is now {now}, not --epoch {epoch}: it started a new epoch after \
                 position {position} was noted, so every replica would refuse this snapshot; note the \
                 position again (`eligd snapshot position`) and export again"
            );
        }
    }
    Ok(Some(epoch))
}

/// `eligd snapshot position`: the stream's newest entry ID and its epoch (created when there
/// is none yet, as `snapshot build --redis-url` does), read together, as the flags of a
/// `snapshot build --from-jsonl` of an export that starts after this.
pub fn position(args: &SnapshotPositionArgs, out: &mut impl Write) -> anyhow::Result<()> {
    if !args.redis.configured(args.redis_url.as_deref()) {
        anyhow::bail!("give --redis-url (or --redis-sentinels and --redis-master)");
    }
    let redis = args.redis.target(args.redis_url.as_deref())?;
    let (position, epoch) = records::stream_position(&redis, &args.stream)
        .context("reading the change stream's position")?;
    writeln!(out, "--position {position} --epoch {epoch}")?;
    Ok(())
}

fn import_file(
    path: &Path,
    strict: bool,
    builder: BodyBuilder,
    progress: &BuildReading,
) -> anyhow::Result<(Resolved, ImportReport)> {
    let imported = if path.as_os_str() == "-" {
        import_jsonl_into(
            &mut std::io::stdin().lock(),
            strict,
            builder,
            Some(&progress.import),
        )
    } else {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        import_jsonl_into(
            &mut BufReader::with_capacity(1 << 20, file),
            strict,
            builder,
            Some(&progress.import),
        )
    };
    imported.with_context(|| format!("importing {}", path.display()))
}

/// What a build's progress reports read: the import's counters and the rows it resolved to.
#[derive(Default)]
pub struct BuildReading {
    pub import: ImportProgress,
    pub rows: AtomicU64,
}

impl std::ops::Deref for BuildReading {
    type Target = ImportProgress;
    fn deref(&self) -> &ImportProgress {
        &self.import
    }
}

/// Where a build stands: reading the input (bytes of the file when its size is known, else
/// lines), resolving versions and booklets (rows read back of those read), then writing the
/// table (records placed of those that stand).
fn build_reading(p: &BuildReading, input_bytes: Option<u64>) -> Reading {
    let placed = p.build.placed.load(Ordering::Relaxed);
    let resolved = p.build.resolved.load(Ordering::Relaxed);
    let rows = p.rows.load(Ordering::Relaxed);
    let lines = p.lines.load(Ordering::Relaxed);
    if placed > 0 || rows > 0 {
        return Reading {
            stage: "writing",
            done: placed,
            total: Some(rows),
            unit: "members",
        };
    }
    if resolved > 0 {
        return Reading {
            stage: "resolving",
            done: resolved,
            total: Some(lines),
            unit: "rows",
        };
    }
    match input_bytes {
        Some(total) => Reading {
            stage: "reading",
            done: p.bytes.load(Ordering::Relaxed),
            total: Some(total),
            unit: "bytes",
        },
        None => Reading {
            stage: "reading",
            done: lines,
            total: None,
            unit: "lines",
        },
    }
}

pub fn inspect(args: &SnapshotInspectArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let report = snapshot::inspect(&args.path)?;
    let h = &report.header;
    let built = chrono::DateTime::from_timestamp_millis(h.built_at_ms)
        .map_or_else(|| "unknown".into(), |t| t.to_rfc3339());
    writeln!(out, "file:            {}", args.path.display())?;
    writeln!(out, "format version:  {}", h.format_version)?;
    writeln!(out, "format:          {}", h.descriptor)?;
    writeln!(out, "built at:        {built}")?;
    writeln!(
        out,
        "feed position:   {}",
        h.position.map_or_else(
            || "none (replay from the stream's start)".into(),
            |p| p.to_string()
        )
    )?;
    writeln!(
        out,
        "stream epoch:    {}",
        h.epoch
            .map_or_else(|| "none (takes the stream's)".into(), |e| e.to_string())
    )?;
    writeln!(out, "members:         {}", h.members)?;
    writeln!(out, "tombstones:      {}", h.tombstones)?;
    writeln!(out, "body bytes:      {}", h.body_len)?;
    writeln!(
        out,
        "body checksum:   {:016x} (xxh3-64, verified)",
        h.body_checksum
    )?;
    for (kind, n) in &report.by_kind {
        writeln!(out, "kind {:<11} {n}", format!("{kind}:"))?;
    }
    for (status, n) in &report.by_status {
        writeln!(out, "status {:<9} {n}", format!("{status}:"))?;
    }
    writeln!(out, "with booklet:    {}", report.with_booklet)?;
    writeln!(out, "open-ended:      {}", report.open_ended)?;
    Ok(())
}
