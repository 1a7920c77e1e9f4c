//! The servers a budget command starts and measures: eligd pinned to cores (with or without
//! keys and the audit log), a client key, a process's CPU time, and pinning a process tree
//! that something else started (Redis, PostgreSQL) to cores.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The audit key the budget commands give eligd (`ELIGD_AUDIT_KEY`); a test value.
pub const AUDIT_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// A running eligd: its address and a synthetic active main insured to ask about.
pub struct Eligd {
    pub child: Child,
    pub addr: String,
    pub member: String,
}

impl Drop for Eligd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Eligd {
    /// `eligd serve` on a free loopback port with `members` synthetic members, pinned to
    /// `cores` (a `taskset -c` list); ready once the population is indexed.
    pub fn start(eligd: &Path, members: u64, cores: &str, extra: &[&str]) -> Result<Eligd, String> {
        let members = members.to_string();
        let mut child = Command::new("taskset")
            .args(["-c", cores])
            .arg(eligd)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--demo-members",
                &members,
            ])
            .args(extra)
            .env("ELIGD_AUDIT_KEY", AUDIT_KEY)
            .env("RUST_LOG", "info")
            // Read for its address and samples: text, also when run outside cargo.
            .env("ELIGD_LOG_FORMAT", "text")
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run taskset/eligd: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let (mut addr, mut member, mut ready) = (None, None, false);
        while member.is_none() || !ready {
            let line = lines
                .next()
                .ok_or("eligd exited before it was ready")?
                .map_err(|e| e.to_string())?;
            if let Some(rest) = line.split("address=").nth(1) {
                addr = rest.split_whitespace().next().map(str::to_string);
            }
            if line.contains("synthetic sample: active main insured") {
                member = line
                    .split("demo_national_id=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .map(str::to_string);
            }
            ready |= line.contains("index loaded");
        }
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Ok(Eligd {
            child,
            addr: addr.ok_or("no address logged")?,
            member: member.ok_or("no sample logged")?,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Adds a key that may use every channel and whose bucket never empties; returns the key.
pub fn add_key(eligd: &Path, keys: &Path) -> Result<String, String> {
    let out = Command::new(eligd)
        .args(["keys", "add", "--keys-file"])
        .arg(keys)
        .args(["--client", "load", "--channel", "any", "--rate", "1000000"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// CPU seconds a process has used (user + system, all its threads; not its children).
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, String> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| "bad /proc stat".to_string())
    };
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the name.
    let hz = 100.0; // USER_HZ on Linux
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// The parent of a process, from `/proc`.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `pid` and all its descendants (as `/proc` lists them now).
fn tree(pid: u32) -> Result<Vec<u32>, String> {
    let mut tree = vec![pid];
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut grew = true;
    while grew {
        grew = false;
        for &p in &all {
            if !tree.contains(&p) && parent(p).is_some_and(|pp| tree.contains(&pp)) {
                tree.push(p);
                grew = true;
            }
        }
    }
    Ok(tree)
}

/// CPU seconds `pid` and its live descendants have used (PostgreSQL: the postmaster and its
/// backends; a process that ended since is not counted, so keep connections open).
pub fn tree_cpu_seconds(pid: u32) -> Result<f64, String> {
    let mut total = 0.0;
    for p in tree(pid)? {
        // A descendant may end between listing and reading: skip it.
        if let Ok(cpu) = cpu_seconds(p) {
            total += cpu;
        }
    }
    Ok(total)
}

/// Pins `pid`, all its threads and all its descendants to `cores` (`taskset -a -p -c`);
/// processes it forks later inherit the pin.
pub fn pin_tree(pid: u32, cores: &str) -> Result<(), String> {
    let tree = tree(pid)?;
    for p in tree {
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", cores, &p.to_string()])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run taskset: {e}"))?;
        if !status.success() {
            return Err(format!("taskset could not pin process {p}"));
        }
    }
    Ok(())
}
