//! This process's memory as the kernel counts it (`/proc/self/status`): anonymous memory is
//! what a compaction or a build adds beyond the mapped snapshot files, and what a pod's limit
//! cannot reclaim. A sampler thread keeps the peak while some work runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Resident anonymous memory now (`RssAnon`), in bytes; `None` where `/proc` does not say.
pub fn anonymous_bytes() -> Option<u64> {
    status_field(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "RssAnon:",
    )
}

/// A `kB` field of a `/proc/<pid>/status` text, in bytes.
pub fn status_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Samples [`anonymous_bytes`] until finished and keeps the highest.
pub struct PeakSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl PeakSampler {
    pub fn start(every: Duration) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(anonymous_bytes().unwrap_or(0)));
        let (stopped, highest) = (Arc::clone(&stop), Arc::clone(&peak));
        let thread = std::thread::Builder::new()
            .name("memory-peak".into())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    if let Some(now) = anonymous_bytes() {
                        highest.fetch_max(now, Ordering::Relaxed);
                    }
                    std::thread::park_timeout(every);
                }
            })
            .ok();
        PeakSampler { stop, peak, thread }
    }

    /// Stops sampling; the peak seen (`None` where `/proc` does not say).
    pub fn finish(mut self) -> Option<u64> {
        self.halt();
        anonymous_bytes().map(|now| self.peak.load(Ordering::Relaxed).max(now))
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_in_bytes_and_a_peak_covers_an_allocation() {
        let status = "Name:\teligd\nVmHWM:\t  2048 kB\nRssAnon:\t    1024 kB\n";
        assert_eq!(status_field(status, "RssAnon:"), Some(1024 * 1024));
        assert_eq!(status_field(status, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(status_field(status, "Missing:"), None);
        let sampler = PeakSampler::start(Duration::from_millis(5));
        let before = anonymous_bytes().unwrap();
        let big = vec![1u8; 64 << 20];
        std::thread::sleep(Duration::from_millis(50));
        std::hint::black_box(&big);
        drop(big);
        let peak = sampler.finish().unwrap();
        assert!(peak >= before + (60 << 20), "peak {peak}, before {before}");
    }
}
