//! `eligd snapshot build` and `eligd snapshot inspect`.

use std::fs::File;
use std::io::{BufReader, Write};

use anyhow::Context;

use crate::cli::{SnapshotBuildArgs, SnapshotInspectArgs};
use crate::import::{import_jsonl, KEPT_ERRORS};
use crate::index::snapshot;

pub fn build(args: &SnapshotBuildArgs, err: &mut impl Write) -> anyhow::Result<()> {
    let imported = if args.from_jsonl.as_os_str() == "-" {
        import_jsonl(&mut std::io::stdin().lock(), args.strict)
    } else {
        let file = File::open(&args.from_jsonl)
            .with_context(|| format!("cannot open {}", args.from_jsonl.display()))?;
        import_jsonl(&mut BufReader::with_capacity(1 << 20, file), args.strict)
    };
    let (body, report) =
        imported.with_context(|| format!("importing {}", args.from_jsonl.display()))?;
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
            "no valid member in {} lines of {} ({} skipped); no snapshot written",
            report.lines,
            args.from_jsonl.display(),
            report.skipped
        );
    }
    let header = snapshot::write(&args.out, &body, args.position)?;
    writeln!(
        err,
        "wrote {}: {} members from {} lines ({} skipped), {} bytes",
        args.out.display(),
        header.members,
        report.lines,
        report.skipped,
        header.body_len + snapshot::HEADER_LEN as u64
    )?;
    Ok(())
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
