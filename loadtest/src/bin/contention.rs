//! `contention`: what the writes a request makes to state shared by every request cost when
//! two cores make them at once, against one core alone. A request-path operation that
//! serialises the cores gets slower per call when a second core joins (its cache line moves
//! between the cores on every call); one that does not keeps its cost.
//!
//! Each operation runs `--calls` times on one thread pinned to core 0, then on two threads
//! pinned to cores 0 and 1 at once; the table gives nanoseconds per call and the ratio. A
//! plain shared `AtomicU64` is measured too, as the yardstick of a line every call writes.
//!
//! Usage: `contention [--calls N] [--ratio R]` (release build). Exits 1 when a budgeted
//! operation costs more than `--ratio` (default 1.5) times as much per call on two cores as on
//! one, 2 on an error. Not budgeted, and printed for what they are: the yardsticks, one key's
//! rate limit (one bucket per key by design: a key's requests share it, other keys' do not),
//! and the audit queue (its writer thread formats and writes on the same two cores, so two
//! pushing threads lose CPU to it, which is not contention on the queue).

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime};

use eligd::audit::{AuditCounters, AuditKey, AuditLog, AuditRecord};
use eligd::limits::KeyBucket;
use eligd::metrics::hot::ShardedCounter;
use eligd::metrics::Metrics;
use eligd::tracking::TrackingCodes;
use loadtest::Budget;

/// An operation measured: its name, whether it is budgeted, and one call.
type Operation<'a> = (&'static str, bool, Box<dyn Fn(u64) + Sync + 'a>);

#[allow(unsafe_code)]
fn pin(core: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it; sched_setaffinity reads
    // it and affects only the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Nanoseconds per call of `op` on `threads` threads (cores 0..threads) at once.
fn per_call(threads: usize, calls: u64, op: &(dyn Fn(u64) + Sync)) -> f64 {
    let barrier = Barrier::new(threads);
    let elapsed: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|core| {
                let barrier = &barrier;
                s.spawn(move || {
                    pin(core);
                    for i in 0..calls / 10 {
                        op(i);
                    }
                    barrier.wait();
                    let started = Instant::now();
                    for i in 0..calls {
                        op(i);
                    }
                    started.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let longest = elapsed.into_iter().max().unwrap_or_default();
    longest.as_nanos() as f64 / calls as f64
}

fn main() -> ExitCode {
    let mut calls = 2_000_000u64;
    let mut limit = 1.5;
    if let Err(e) = loadtest::parse_flags(|flag, value| {
        match flag {
            "--calls" => calls = loadtest::number(flag, value)? as u64,
            "--ratio" => limit = loadtest::number(flag, value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }) {
        eprintln!("contention: error: {e}");
        return ExitCode::from(2);
    }
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("contention: error: {e}");
            return ExitCode::from(2);
        }
    };
    let audit = match AuditKey::from_hex(&"11".repeat(16))
        .map_err(|e| e.to_string())
        .and_then(|key| {
            AuditLog::start(
                &dir.path().join("audit.log"),
                eligd::audit::AuditOptions::default(),
                key,
                AuditCounters::default(),
            )
            .map_err(|e| e.to_string())
        }) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("contention: error: {e}");
            return ExitCode::from(2);
        }
    };

    let shared = AtomicU64::new(0);
    let sharded = ShardedCounter::default();
    let codes = TrackingCodes::new(1).expect("node 1 is valid");
    let metrics = Metrics::new();
    let bucket = KeyBucket::new(1_000_000_000, 1_000_000_000);
    let arc = Arc::new(0u64);
    let now = SystemTime::now();
    let ops: Vec<Operation> = vec![
        (
            "yardstick: one shared AtomicU64, fetch_add",
            false,
            Box::new(|_| {
                shared.fetch_add(1, Ordering::Relaxed);
            }),
        ),
        (
            "yardstick: one shared Arc, clone and drop",
            false,
            Box::new(|_| drop(black_box(Arc::clone(&arc)))),
        ),
        (
            "sharded counter inc (every request counter)",
            true,
            Box::new(|_| sharded.inc()),
        ),
        (
            "request count and handler time (Metrics::count_request)",
            true,
            Box::new(|_| {
                metrics.count_request(
                    "/v1/members/{national_id}/eligibility",
                    "http",
                    "active",
                    Duration::from_micros(3),
                )
            }),
        ),
        (
            "inquiry count (Metrics::count_inquiry)",
            true,
            Box::new(|_| metrics.count_inquiry("http", "active")),
        ),
        (
            "tracking code (TrackingCodes::next_at)",
            true,
            Box::new(|_| {
                black_box(codes.next_at(now));
            }),
        ),
        (
            "audit record queued (AuditLog::record; its writer thread shares the two cores)",
            false,
            Box::new(|_| {
                let _ = audit.record(AuditRecord {
                    time: now,
                    tracking: codes.next_at(now),
                    client: Some("bench"),
                    channel: "http",
                    route: "/v1/members/{national_id}/eligibility",
                    outcome: "active",
                    status: 200,
                    latency: Duration::from_micros(3),
                    person: None,
                    address: None,
                });
            }),
        ),
        (
            "one key's rate limit (KeyBucket::take; shared by that key's requests by design)",
            false,
            Box::new(|_| {
                black_box(bucket.take(1));
            }),
        ),
    ];
    let mut budget = Budget::default();
    println!(
        "| operation | 1 core, ns/call | 2 cores at once, ns/call | ratio |\n|---|---|---|---|"
    );
    for (name, budgeted, op) in &ops {
        let one = per_call(1, calls, op.as_ref());
        let two = per_call(2, calls, op.as_ref());
        println!("| {name} | {one:.1} | {two:.1} | {:.2}× |", two / one);
        if *budgeted {
            budget.at_most(&format!("{name}, 2 cores / 1"), two / one, limit, "×");
        }
    }
    audit.close(Duration::from_secs(10));
    budget.exit_code()
}
