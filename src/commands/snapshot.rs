//! `eligd snapshot build` and `eligd snapshot inspect`.

use std::fs::File;
use std::io::{BufReader, Write};

use anyhow::Context;

use crate::cli::{SnapshotBuildArgs, SnapshotInspectArgs, SnapshotPositionArgs};
use std::path::Path;

use crate::import::{import_jsonl, ImportReport, KEPT_ERRORS};
use crate::index::body::Body;
use crate::index::{snapshot, StreamEpoch};
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
    let (imported, source, position, epoch) = match (&args.from_jsonl, &args.from_postgres) {
        (Some(path), _) => {
            let epoch = jsonl_epoch(args, redis.as_ref())?;
            (
                import_file(path, args.strict)?,
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
            let (body, report, markers) = records::import_members(&postgres, args.strict)
                .context("reading the members table")?;
            let source = format!("the members table (and {markers} delete markers)");
            ((body, report), source, position, epoch)
        }
        (None, None) => anyhow::bail!("give --from-jsonl FILE or --from-postgres URL"),
    };
    let (body, report) = imported;
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
    if report.imported == 0 && report.skipped > 0 {
        anyhow::bail!(
            "no valid member in {} lines of {source} ({} skipped); no snapshot written",
            report.lines,
            report.skipped
        );
    }
    // Into a directory (a running service's --snapshot-dir, say), under the name its header
    // gives it; else exactly where asked.
    let (path, header) = if args.out.is_dir() {
        let (path, header, _) = snapshot::write_into(&args.out, &body, position, epoch)?;
        (path, header)
    } else {
        let (header, _) = snapshot::write(&args.out, &body, position, epoch)?;
        (args.out.clone(), header)
    };
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

fn import_file(path: &Path, strict: bool) -> anyhow::Result<(Body, ImportReport)> {
    let imported = if path.as_os_str() == "-" {
        import_jsonl(&mut std::io::stdin().lock(), strict)
    } else {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        import_jsonl(&mut BufReader::with_capacity(1 << 20, file), strict)
    };
    imported.with_context(|| format!("importing {}", path.display()))
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
