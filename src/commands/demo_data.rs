//! `eligd demo-data`: write the synthetic population as JSON Lines, streaming.

use std::fs::File;
use std::io::{BufWriter, Write};

use anyhow::Context;

use crate::cli::DemoDataArgs;
use crate::dates::Day;
use crate::demo::{Generator, MAX_DEMO_MEMBERS};

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
    for member in Generator::new(args.members, args.seed, today) {
        out.write_all(member.to_json().as_bytes())
            .context("writing the population failed")?;
        out.write_all(b"\n")
            .context("writing the population failed")?;
    }
    out.flush().context("writing the population failed")?;
    Ok(())
}
