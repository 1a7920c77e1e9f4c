//! `limits-memory`: the memory the rate limiters hold under a spray. One million distinct
//! phone numbers hit the per-phone limiter (USSD/SMS) as fast as one thread can send them,
//! then one million requests carry unknown client keys. Measured as the growth of this
//! process's resident memory. Budgets: the phone limiter holds at most
//! `--max-phone-mb` (150) MB, and unknown keys hold nothing (at most `--max-key-mb`, 1 MB, of
//! noise).
//!
//! Usage: `limits-memory [--phones 1000000] [--keys 1000000] [--max-phone-mb 150]
//! [--max-key-mb 1]`. Exits 1 when a budget is missed, 2 on error.

use std::process::ExitCode;

use eligd::auth::keyfile::KeyFile;
use eligd::auth::Keys;
use eligd::limits::CallerLimits;
use loadtest::Budget;

fn resident_bytes() -> Result<f64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS in /proc/self/status")?;
    Ok(kb * 1024.0)
}

fn main() -> ExitCode {
    let (mut phones, mut keys, mut max_phone_mb, mut max_key_mb) =
        (1_000_000u64, 1_000_000u64, 150.0, 1.0);
    let parsed = loadtest::parse_flags(|flag, value| {
        let num = || loadtest::number(flag, value);
        match flag {
            "--phones" => phones = num()? as u64,
            "--keys" => keys = num()? as u64,
            "--max-phone-mb" => max_phone_mb = num()?,
            "--max-key-mb" => max_key_mb = num()?,
            _ => return Ok(false),
        }
        Ok(true)
    });
    let run = || -> Result<Budget, String> {
        parsed?;
        let limits = CallerLimits::per_minute(10);
        let before = resident_bytes()?;
        let mut refused = 0u64;
        for n in 0..phones {
            let phone = format!("09{:09}", n);
            if limits.take(Some(&phone)).is_err() {
                refused += 1;
            }
        }
        let after_phones = resident_bytes()?;
        let tracked = limits.tracked();
        let phone_mb = (after_phones - before) / 1e6;
        println!(
            "{phones} distinct phone numbers: {tracked} states held, {refused} refused, resident +{phone_mb:.1} MB ({:.0} bytes per state held)",
            (after_phones - before) / tracked.max(1) as f64
        );

        let metrics = eligd::metrics::Metrics::new();
        let known = Keys::from_file(&KeyFile::new(), None, &metrics);
        let before = resident_bytes()?;
        let mut accepted = 0u64;
        for n in 0..keys {
            let header = format!("Bearer eligd_{:08}_{:022}", n % 100_000_000, n);
            if known.authenticate(Some(header.as_bytes()), 0).is_ok() {
                accepted += 1;
            }
        }
        let key_mb = (resident_bytes()? - before) / 1e6;
        println!(
            "{keys} requests with unknown keys: {accepted} accepted, resident +{key_mb:.2} MB"
        );

        let mut budget = Budget::default();
        budget.at_most(
            "phone limiter after a spray of distinct numbers",
            phone_mb,
            max_phone_mb,
            "MB",
        );
        budget.at_most("memory held for unknown keys", key_mb, max_key_mb, "MB");
        Ok(budget)
    };
    match run() {
        Ok(budget) => budget.exit_code(),
        Err(e) => {
            eprintln!("limits-memory: error: {e}");
            ExitCode::from(2)
        }
    }
}
