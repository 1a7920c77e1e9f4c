//! `eligd keys add|list|revoke|rotate`: managing the client keys file. Every change is
//! written atomically; running services see the file change and apply it within seconds (or
//! at once on SIGHUP). A new key is printed once, on
//! standard output, and never stored: only the SHA-256 of its secret is.

use std::io::Write;

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use crate::auth::keyfile::{self, KeyEntry, KeyFile};
use crate::auth::KeyChannel;
#[cfg(test)]
use crate::cli::parse_overlap;
use crate::cli::{
    KeysAddArgs, KeysCommand, KeysFileArg, KeysIdArgs, KeysRotateArgs, MAX_OVERLAP_SECS,
};

pub fn run(command: &KeysCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        KeysCommand::Add(args) => add(args, out),
        KeysCommand::List(args) => list(args, out),
        KeysCommand::Revoke(args) => revoke(args, out),
        KeysCommand::Rotate(args) => rotate(args, out),
    }
}

/// The file, or a new empty one when `create` and it does not exist yet.
fn read(file: &KeysFileArg, create: bool) -> anyhow::Result<KeyFile> {
    if create && !file.keys_file.exists() {
        return Ok(KeyFile::new());
    }
    Ok(KeyFile::read(&file.keys_file)?)
}

/// `YYYY-MM-DD` (through the end of that day in Tehran) or an RFC 3339 instant.
fn parse_expiry(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let next = day
            .succ_opt()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .context("--expires is out of range")?;
        let local = chrono_tz::Asia::Tehran
            .from_local_datetime(&next)
            .earliest()
            .context("--expires is not a day in Tehran")?;
        return Ok(local.with_timezone(&Utc));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            anyhow::anyhow!("--expires must be YYYY-MM-DD or an RFC 3339 time, got {text:?}")
        })
}

fn add(args: &KeysAddArgs, out: &mut impl Write) -> anyhow::Result<()> {
    if !keyfile::valid_client(&args.client) {
        bail!(
            "--client must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-', and not {:?}",
            keyfile::UNAUTHENTICATED
        );
    }
    let channel = KeyChannel::parse(&args.channel).with_context(|| {
        format!(
            "--channel must be one of {}, got {:?}",
            KeyChannel::expected(),
            args.channel
        )
    })?;
    let expires = args.expires.as_deref().map(parse_expiry).transpose()?;
    if expires.is_some_and(|e| e <= Utc::now()) {
        bail!("--expires is in the past");
    }
    let mut file = read(&args.file, true)?;
    let new = keyfile::new_key(&file.keys)?;
    file.keys.push(KeyEntry {
        id: new.id.clone(),
        client: args.client.clone(),
        channel: channel.as_str().to_string(),
        rate: args.rate,
        burst: args.burst.unwrap_or(args.rate),
        secret_sha256: new.secret_sha256,
        created: Utc::now(),
        expires,
        revoked: None,
        replaces: None,
    });
    file.write(&args.file.keys_file)?;
    writeln!(out, "{}", new.key)?;
    crate::logging::notice(&format!(
        "key {} for client {} ({}) added to {}; the key above is shown once and stored only as a hash",
        new.id,
        args.client,
        channel.as_str(),
        args.file.keys_file.display()
    ));
    Ok(())
}

fn state_of(entry: &KeyEntry, now: DateTime<Utc>) -> &'static str {
    if entry.revoked.is_some() {
        "revoked"
    } else if entry.expires.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}

fn list(args: &KeysFileArg, out: &mut impl Write) -> anyhow::Result<()> {
    let file = read(args, false)?;
    let now = Utc::now();
    writeln!(
        out,
        "{:<8}  {:<24}  {:<7}  {:>8}  {:>8}  {:<20}  {:<20}  state",
        "id", "client", "channel", "rate", "burst", "created", "expires"
    )?;
    let time = |t: Option<DateTime<Utc>>| {
        t.map_or_else(
            || "-".to_string(),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
    };
    for k in &file.keys {
        writeln!(
            out,
            "{:<8}  {:<24}  {:<7}  {:>8}  {:>8}  {:<20}  {:<20}  {}",
            k.id,
            k.client,
            k.channel,
            k.rate,
            k.burst,
            time(Some(k.created)),
            time(k.expires),
            state_of(k, now)
        )?;
    }
    Ok(())
}

fn revoke(args: &KeysIdArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut file = read(&args.file, false)?;
    let entry = file.find_mut(&args.id).with_context(|| {
        format!(
            "no key with id {:?} in {}",
            args.id,
            args.file.keys_file.display()
        )
    })?;
    if entry.revoked.is_none() {
        entry.revoked = Some(Utc::now());
    }
    file.write(&args.file.keys_file)?;
    writeln!(
        out,
        "key {} revoked; running services apply it within seconds (they watch the file; SIGHUP applies it at once)",
        args.id
    )?;
    Ok(())
}

/// When the old key of a rotation stops working: `overlap` seconds after `now` (checked; the
/// bound is checked again here, whoever built the arguments).
fn retire_at(now: DateTime<Utc>, overlap: u64) -> anyhow::Result<DateTime<Utc>> {
    if overlap > MAX_OVERLAP_SECS {
        bail!("--overlap is at most {MAX_OVERLAP_SECS} seconds (30 days), got {overlap}");
    }
    i64::try_from(overlap)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .and_then(|d| now.checked_add_signed(d))
        .context("--overlap takes the old key's end out of the calendar")
}

fn rotate(args: &KeysRotateArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut file = read(&args.file, false)?;
    let now = Utc::now();
    let old = file
        .keys
        .iter()
        .find(|k| k.id == args.id)
        .with_context(|| {
            format!(
                "no key with id {:?} in {}",
                args.id,
                args.file.keys_file.display()
            )
        })?
        .clone();
    if state_of(&old, now) != "active" {
        bail!(
            "key {} is {}; only an active key can be rotated",
            old.id,
            state_of(&old, now)
        );
    }
    let retire_at = retire_at(now, args.overlap)?;
    let new = keyfile::new_key(&file.keys)?;
    if let Some(entry) = file.find_mut(&old.id) {
        entry.expires = Some(entry.expires.map_or(retire_at, |e| e.min(retire_at)));
    }
    file.keys.push(KeyEntry {
        id: new.id.clone(),
        secret_sha256: new.secret_sha256,
        created: now,
        revoked: None,
        replaces: Some(old.id.clone()),
        ..old.clone()
    });
    file.write(&args.file.keys_file)?;
    writeln!(out, "{}", new.key)?;
    crate::logging::notice(&format!(
        "key {} replaces {} (client {}); {} keeps working until {} and shares its rate limit; running services apply it within seconds",
        new.id,
        old.id,
        old.client,
        old.id,
        retire_at.format("%Y-%m-%dT%H:%M:%SZ")
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlap_is_bounded_and_never_overflows() {
        assert_eq!(parse_overlap("0"), Ok(0));
        assert_eq!(parse_overlap("86400"), Ok(86_400));
        assert_eq!(
            parse_overlap(&MAX_OVERLAP_SECS.to_string()),
            Ok(MAX_OVERLAP_SECS)
        );
        for bad in [
            "2592001",
            "9000000000000000",
            "99999999999999999",
            &u64::MAX.to_string(),
            "184467440737095516150",
            "-1",
            "1.5",
            "1d",
            "",
        ] {
            let e = parse_overlap(bad).unwrap_err();
            assert!(e.contains("2592000") && e.contains("30 days"), "{bad}: {e}");
        }
        let now = Utc::now();
        assert_eq!(
            retire_at(now, 60).unwrap(),
            now + chrono::Duration::seconds(60)
        );
        assert_eq!(retire_at(now, 0).unwrap(), now);
        for overlap in [MAX_OVERLAP_SECS + 1, 9_000_000_000_000_000, u64::MAX] {
            let e = retire_at(now, overlap).unwrap_err().to_string();
            assert!(e.contains("30 days"), "{e}");
        }
        assert!(retire_at(DateTime::<Utc>::MAX_UTC, 1).is_err());
    }

    #[test]
    fn expiry_days_end_at_midnight_in_tehran() {
        let t = parse_expiry("2027-03-20").unwrap();
        assert_eq!(t.to_rfc3339(), "2027-03-20T20:30:00+00:00");
        assert!(parse_expiry("2027-02-30").is_err());
        assert!(parse_expiry("soon").is_err());
        assert_eq!(
            parse_expiry("2027-01-01T00:00:00Z").unwrap().to_rfc3339(),
            "2027-01-01T00:00:00+00:00"
        );
    }
}
