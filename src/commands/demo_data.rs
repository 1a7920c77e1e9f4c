//! `eligd demo-data`: write the synthetic population as JSON Lines, streaming.

use std::fs::File;
use std::io::{BufWriter, Write};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;

use crate::cli::DemoDataArgs;
use crate::dates::Day;
use crate::demo::{Generator, MAX_DEMO_MEMBERS};
use crate::progress::{Reading, Reporter};

pub fn run(args: &DemoDataArgs) -> anyhow::Result<()> {
    if args.members > MAX_DEMO_MEMBERS {
        anyhow::bail!(
            "--members {} is more than the generator's {MAX_DEMO_MEMBERS}",
            args.members
        );
    }
    let today = match &args.today {
        Some(d) => Day::parse_iso(d).map_err(|e| anyhow::anyhow!("--today {d:?}: {e}"))?,
        None => Day::today(),
    };
    let sink: Box<dyn Write> = match &args.out {
        Some(path) if path.as_os_str() != "-" => Box::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        ),
        _ => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, sink);
    let written = Arc::new(AtomicU64::new(0));
    let reporter = Reporter::start("demo-data", {
        let (written, total) = (Arc::clone(&written), args.members);
        move || Reading {
            stage: "writing",
            done: written.load(Ordering::Relaxed),
            total: Some(total),
            unit: "members",
        }
    });
    for (i, member) in Generator::new(args.members, args.seed, today).enumerate() {
        if i % 4096 == 0 {
            written.store(i as u64, Ordering::Relaxed);
        }
        out.write_all(member.to_json().as_bytes())
            .context("writing the population failed")?;
        out.write_all(b"\n")
            .context("writing the population failed")?;
    }
    out.flush().context("writing the population failed")?;
    reporter.finish();
    Ok(())
}
