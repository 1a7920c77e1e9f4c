//! A compaction of 10 million members completes inside the memory the sizing formula gives a
//! replica of that size (`eligd::sizing::replica_limit`, docs/scaling.md), enforced by the
//! kernel: the real binary runs in a memory cgroup of its own, capped at the formula's value,
//! from before it maps its snapshot. A compaction that needed more would be OOM-killed.
//!
//! The snapshot is built in this process through the same bounded build the CLI uses (the
//! spilling builder, the streamed layout, the windowed check), without the JSON round trip.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eligd::dates::Day;
use eligd::demo::Generator;
use eligd::index::snapshot::{self, Target};
use eligd::index::{BodyBuilder, Origin};
use eligd::sizing;

use crate::feed::{set_epoch, upsert};
use crate::redis_server::RedisServer;
use crate::support::{http_get, metric, metric_if_any, wait_for, Launch};

const MEMBERS: u64 = 10_000_000;

/// A memory cgroup made for one test, removed on drop (cgroup v1 or v2, whichever this
/// machine mounts, under the cgroup this process runs in).
struct Cgroup {
    dir: PathBuf,
    v2: bool,
}

impl Cgroup {
    fn create(limit: u64) -> Result<Cgroup, String> {
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let name = format!("eligd-test-{}", std::process::id());
        // v1: a line `N:memory:/path`; v2: `0::/path`.
        let v1 = own
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()));
        let (dir, v2) = match v1 {
            Some(path) => (
                Path::new("/sys/fs/cgroup/memory")
                    .join(path.trim_start_matches('/'))
                    .join(&name),
                false,
            ),
            None => {
                let path = own
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .ok_or("no cgroup in /proc/self/cgroup")?;
                (
                    Path::new("/sys/fs/cgroup")
                        .join(path.trim_start_matches('/'))
                        .join(&name),
                    true,
                )
            }
        };
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let cgroup = Cgroup { dir, v2 };
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::write(cgroup.dir.join(file), limit.to_string())
            .map_err(|e| format!("{file}: {e}"))?;
        if !v2 {
            // No swap either: the cap is the cap.
            let _ = std::fs::write(
                cgroup.dir.join("memory.memsw.limit_in_bytes"),
                limit.to_string(),
            );
        }
        Ok(cgroup)
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// Processes the kernel's OOM killer ended in this cgroup.
    fn oom_kills(&self) -> u64 {
        let text = if self.v2 {
            self.read("memory.events")
        } else {
            self.read("memory.oom_control")
        };
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The highest charge the cgroup saw (page cache included), when the kernel says.
    fn peak(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        self.read(file).trim().parse().ok()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty by now (the process was killed); a cgroup is removed with rmdir.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn build_snapshot(dir: &Path) {
    let started = Instant::now();
    let mut builder = BodyBuilder::spilling(dir).unwrap();
    let today = Day::parse_iso(crate::support::AS_OF).unwrap();
    for (i, m) in Generator::new(MEMBERS, 26, today).enumerate() {
        builder.push_member(&m, Origin(i as u64 + 1));
    }
    let mut resolved = builder.resolve(None).unwrap();
    assert!(
        resolved.rejected.is_empty(),
        "{:?}",
        resolved.rejected.first()
    );
    let layout = resolved.layout(None).unwrap();
    let (_, header) = snapshot::write_built(Target::Dir(dir), layout, None, None).unwrap();
    assert_eq!(header.members, MEMBERS);
    // Out of the page cache, so the replica reads (and is charged for) every page itself.
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = std::fs::File::open(entry.unwrap().path()).unwrap();
        // SAFETY: advice on a descriptor this frame owns; the data is on disk.
        let rc = unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
                0,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        assert_eq!(rc, 0);
    }
    eprintln!(
        "built {MEMBERS} members in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_compaction_of_ten_million_members_completes_under_the_formulas_memory_cap() {
    // The replica runs with --compact-overlay 1: an overlay of one change.
    let cap = sizing::replica_limit(MEMBERS, 1);
    let cgroup = Cgroup::create(cap).unwrap_or_else(|e| {
        panic!("this test needs a memory cgroup it can create and cap (run as root, with the memory controller): {e}")
    });
    let dir = tempfile::tempdir().unwrap();
    build_snapshot(dir.path());
    let redis = RedisServer::start_ephemeral();
    set_epoch(&redis);
    let dir_arg = dir.path().to_str().unwrap().to_string();
    let eligd = Launch::args(&[
        "serve",
        "--snapshot-dir",
        &dir_arg,
        "--compact-overlay",
        "1",
        "--redis-url",
        &redis.url(),
    ])
    .cgroup(&cgroup.dir)
    .ready();
    let id = crate::feed::person(1);
    upsert(&redis, &id, 3);
    let started = Instant::now();
    wait_for("the compaction", 300, || {
        metric_if_any(&eligd, "eligd_compactions_total{outcome=\"ok\"}").is_some_and(|n| n >= 1.0)
            || metric_if_any(&eligd, "eligd_compactions_total{outcome=\"error\"}")
                .is_some_and(|n| n >= 1.0)
    });
    assert_eq!(
        metric(&eligd, "eligd_compactions_total{outcome=\"ok\"}"),
        1.0,
        "the compaction failed; the log:\n{}",
        eligd.log()
    );
    let took = started.elapsed();
    assert_eq!(
        cgroup.oom_kills(),
        0,
        "the kernel killed a process in the cgroup"
    );
    let (status, body) = http_get(&eligd.addr, &format!("/v1/members/{id}/eligibility"));
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["data_version"], 3, "{body}");
    let peak_anon = metric(&eligd, "eligd_compaction_peak_anonymous_bytes");
    assert!(
        peak_anon <= sizing::work_budget(MEMBERS) as f64,
        "peak anonymous memory {peak_anon} over the budget {}",
        sizing::work_budget(MEMBERS)
    );
    eprintln!(
        "compacted {MEMBERS} members in {:.1} s under a {} MiB cap: cgroup peak {} MiB, peak anonymous {} MiB",
        took.as_secs_f64(),
        sizing::mebibytes(cap),
        cgroup.peak().map_or(0, sizing::mebibytes),
        sizing::mebibytes(peak_anon as u64)
    );
    drop(eligd);
}
