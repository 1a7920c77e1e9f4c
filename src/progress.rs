//! Progress of long work (a build, the demo population, a replica's replay, a compaction),
//! reported on standard error while it runs: a progress bar on a terminal, otherwise a log
//! line every few seconds, each with the count so far, of how many when known, the rate and
//! the time left. The work itself only moves counters; a thread of this module reads them.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where some work stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// What it is doing now ("reading", "writing"…).
    pub stage: &'static str,
    pub done: u64,
    /// How many in all, when known.
    pub total: Option<u64>,
    /// What is counted ("members", "bytes"…).
    pub unit: &'static str,
}

/// How often a log line is written when standard error is not a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// Reports until dropped (or [`Reporter::finish`]ed).
pub struct Reporter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reporter {
    /// Starts reporting `what`, reading its progress with `read`: a bar on a terminal, log
    /// lines every [`LOG_EVERY`] otherwise.
    pub fn start(what: &'static str, read: impl Fn() -> Reading + Send + 'static) -> Reporter {
        let bar = std::io::stderr().is_terminal();
        Reporter::start_with(what, read, bar, LOG_EVERY)
    }

    pub fn start_with(
        what: &'static str,
        read: impl Fn() -> Reading + Send + 'static,
        bar: bool,
        every: Duration,
    ) -> Reporter {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                if bar {
                    draw_bar(what, &read, &stopped)
                } else {
                    log_lines(what, &read, &stopped, every)
                }
            })
            .ok();
        Reporter { stop, thread }
    }

    /// Stops reporting (the bar is cleared).
    pub fn finish(mut self) {
        self.halt();
    }

    /// Stops the thread and waits for it, a second at most: a report stuck writing to a
    /// standard error nobody reads must not keep the work from finishing (the thread is
    /// then left to the process's exit).
    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let deadline = Instant::now() + Duration::from_secs(1);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Rate and time left of one stage, from when it started.
struct Pace {
    stage: &'static str,
    since: Instant,
    from: u64,
    /// When the last reading was taken.
    last: Instant,
}

impl Pace {
    fn new(r: &Reading) -> Pace {
        let now = Instant::now();
        Pace {
            stage: r.stage,
            since: now,
            from: r.done,
            last: now,
        }
    }

    /// Per second, and seconds left when the total is known.
    fn of(&mut self, r: &Reading) -> (f64, Option<f64>) {
        let now = Instant::now();
        if r.stage != self.stage {
            // A stage seen for the first time began after the last reading, from nothing.
            *self = Pace {
                stage: r.stage,
                since: self.last,
                from: 0,
                last: now,
            };
        }
        self.last = now;
        let seconds = self.since.elapsed().as_secs_f64().max(1e-3);
        let rate = r.done.saturating_sub(self.from) as f64 / seconds;
        let left = r
            .total
            .filter(|_| rate > 0.0)
            .map(|t| t.saturating_sub(r.done) as f64 / rate);
        (rate, left)
    }
}

/// One log line's text (also what tests read).
pub fn describe(r: &Reading, rate: f64, left: Option<f64>) -> String {
    let of = r.total.map_or_else(String::new, |t| {
        let percent = if t == 0 {
            100.0
        } else {
            r.done as f64 * 100.0 / t as f64
        };
        format!(" of {t} ({percent:.1} %)")
    });
    let left = left.map_or_else(String::new, |s| format!(", about {s:.0} s left"));
    format!(
        "{}: {} {}{of}, {rate:.0} {}/s{left}",
        r.stage, r.done, r.unit, r.unit
    )
}

fn log_lines(what: &str, read: &dyn Fn() -> Reading, stop: &AtomicBool, every: Duration) {
    let first = read();
    let mut pace = Pace::new(&first);
    loop {
        std::thread::park_timeout(every);
        if stop.load(Ordering::Acquire) {
            return;
        }
        let r = read();
        let (rate, left) = pace.of(&r);
        tracing::info!(
            stage = r.stage,
            done = r.done,
            total = r.total,
            rate_per_second = rate.round(),
            seconds_left = left.map(f64::round),
            "{what}: {}",
            describe(&r, rate, left)
        );
    }
}

fn draw_bar(what: &str, read: &dyn Fn() -> Reading, stop: &AtomicBool) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix} {msg:10} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let spinner = ProgressStyle::with_template("{prefix} {msg:10} {spinner} {human_pos} {per_sec}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_prefix(what.to_string());
    let mut stage = "";
    while !stop.load(Ordering::Acquire) {
        let r = read();
        if r.stage != stage {
            stage = r.stage;
            bar.reset();
            bar.set_message(format!("{} ({})", r.stage, r.unit));
            match r.total {
                Some(t) => {
                    bar.set_style(style.clone());
                    bar.set_length(t);
                }
                None => bar.set_style(spinner.clone()),
            }
        }
        bar.set_position(r.done);
        std::thread::park_timeout(Duration::from_millis(200));
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_line_says_how_far_of_how_many_how_fast_and_how_long() {
        let r = Reading {
            stage: "writing",
            done: 250,
            total: Some(1000),
            unit: "members",
        };
        assert_eq!(
            describe(&r, 50.0, Some(15.0)),
            "writing: 250 members of 1000 (25.0 %), 50 members/s, about 15 s left"
        );
        let unknown = Reading { total: None, ..r };
        assert_eq!(
            describe(&unknown, 50.0, None),
            "writing: 250 members, 50 members/s"
        );
    }

    #[test]
    fn the_pace_is_measured_per_stage() {
        let mut pace = Pace::new(&Reading {
            stage: "a",
            done: 0,
            total: Some(100),
            unit: "x",
        });
        std::thread::sleep(Duration::from_millis(20));
        let (rate, left) = pace.of(&Reading {
            stage: "a",
            done: 10,
            total: Some(100),
            unit: "x",
        });
        assert!(rate > 0.0 && left.unwrap() > 0.0);
        let (rate, _) = pace.of(&Reading {
            stage: "b",
            done: 10,
            total: None,
            unit: "x",
        });
        assert!(rate > 0.0, "a new stage is paced from the reading before");
        let (rate, _) = pace.of(&Reading {
            stage: "b",
            done: 10,
            total: None,
            unit: "x",
        });
        assert!(rate > 0.0);
    }

    #[test]
    fn a_report_stuck_writing_does_not_hold_the_work_up() {
        // A report that never returns (as a write to a full pipe nobody reads would not).
        let stuck = Arc::new(AtomicBool::new(false));
        let entered = Arc::clone(&stuck);
        let reporter = Reporter::start_with(
            "test",
            move || {
                entered.store(true, Ordering::Release);
                std::thread::sleep(Duration::from_secs(3600));
                Reading {
                    stage: "s",
                    done: 0,
                    total: None,
                    unit: "u",
                }
            },
            false,
            Duration::from_millis(1),
        );
        let started = Instant::now();
        while !stuck.load(Ordering::Acquire) {
            assert!(started.elapsed() < Duration::from_secs(5), "never read");
            std::thread::sleep(Duration::from_millis(1));
        }
        let finishing = Instant::now();
        reporter.finish();
        assert!(
            finishing.elapsed() < Duration::from_secs(3),
            "finish waited for the stuck report"
        );
    }

    #[test]
    fn a_reporter_stops_when_dropped_and_reads_while_running() {
        let reads = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&reads);
        let reporter = Reporter::start_with(
            "test",
            move || {
                counted.fetch_add(1, Ordering::Relaxed);
                Reading {
                    stage: "s",
                    done: 1,
                    total: None,
                    unit: "u",
                }
            },
            false,
            Duration::from_millis(10),
        );
        let started = Instant::now();
        while reads.load(Ordering::Relaxed) < 3 {
            assert!(started.elapsed() < Duration::from_secs(5), "never read");
            std::thread::sleep(Duration::from_millis(5));
        }
        reporter.finish();
        let after = reads.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            reads.load(Ordering::Relaxed),
            after,
            "still reading after finish"
        );
    }
}
