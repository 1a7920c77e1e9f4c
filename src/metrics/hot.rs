//! The metrics every request writes, built so that no two cores write the same cache line.
//!
//! `prometheus-client`'s `Counter` is one atomic every request adds to, its `Histogram` takes
//! a write lock per observation, and a labelled `Family` takes a read lock and hashes the
//! label strings on every lookup: each is a line every core writes, moved between caches on
//! every request. Here a counter or a histogram is [`SHARDS`] cache-line-padded slots, and a
//! thread always writes the slot of its own shard (threads take shard numbers in turn); a
//! scrape sums the slots. Each thread also keeps its own table of the handles it has used
//! ([`HandleCache`]), keyed by the addresses of the `&'static str` labels, so a request finds
//! its series without a lock or a string hash. The registry still encodes them through
//! `Family`, so `/metrics` reads exactly as before.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Slots per metric: more than the cores a replica is given, so threads rarely share one.
pub const SHARDS: usize = 16;

/// One slot on a cache line of its own (128 bytes: adjacent-line prefetch pairs lines).
#[derive(Default, Debug)]
#[repr(align(128))]
struct Slot(AtomicU64);

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// This thread's shard (also what the audit queue shards by).
#[inline]
pub(crate) fn shard() -> usize {
    SHARD.with(|s| *s)
}

/// A monotonic counter, one slot per shard.
#[derive(Clone, Debug, Default)]
pub struct ShardedCounter(Arc<[Slot; SHARDS]>);

impl ShardedCounter {
    #[inline]
    pub fn inc(&self) {
        self.0[shard()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A shard's part of a histogram: the count in each bucket (the last is +Inf) and the sum
/// of the observations in nanoseconds (a whole number, so one atomic add).
#[derive(Debug)]
#[repr(align(128))]
struct HistogramShard {
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// A histogram of durations in seconds with fixed bucket bounds, one part per shard.
#[derive(Clone, Debug)]
pub struct ShardedHistogram {
    bounds: Arc<[f64]>,
    shards: Arc<[HistogramShard]>,
}

impl ShardedHistogram {
    pub fn new(bounds: &[f64]) -> ShardedHistogram {
        let shards = (0..SHARDS)
            .map(|_| HistogramShard {
                buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_nanos: AtomicU64::new(0),
            })
            .collect();
        ShardedHistogram {
            bounds: bounds.into(),
            shards,
        }
    }

    #[inline]
    pub fn observe(&self, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(self.bounds.len());
        let part = &self.shards[shard()];
        part.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        part.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Sum in seconds, count, and the per-bucket counts (not cumulative; the last bound is
    /// `f64::MAX`, encoded as `+Inf`).
    pub fn get(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .map(|b| (b, 0))
            .collect();
        let mut sum_nanos = 0u64;
        for part in self.shards.iter() {
            for (total, n) in buckets.iter_mut().zip(part.buckets.iter()) {
                total.1 += n.load(Ordering::Relaxed);
            }
            sum_nanos = sum_nanos.wrapping_add(part.sum_nanos.load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|b| b.1).sum();
        (sum_nanos as f64 / 1e9, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.get();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Labels made of `&'static str`s, identified by their addresses (the same text at two
/// addresses only costs a second entry that resolves to the same series).
pub type LabelKey = [usize; 4];

/// The address of a static label, as a cache key.
#[inline]
pub fn label(s: &'static str) -> usize {
    s.as_ptr() as usize ^ (s.len() << 48)
}

/// A thread's handles to the series it has written, found by label addresses. A few dozen
/// series per thread: a linear scan of a short array beats hashing.
pub struct HandleCache<H: Clone> {
    entries: RefCell<Vec<(LabelKey, H)>>,
}

impl<H: Clone> HandleCache<H> {
    pub const fn new() -> HandleCache<H> {
        HandleCache {
            entries: RefCell::new(Vec::new()),
        }
    }

    /// Calls `with` on the handle for `key`, made by `make` (a family lookup) the first
    /// time. The handle is lent, not cloned: a clone would take a reference on the series,
    /// a count every core's requests would write.
    #[inline]
    pub fn with(&self, key: LabelKey, make: impl FnOnce() -> H, with: impl FnOnce(&H)) {
        if let Ok(entries) = self.entries.try_borrow() {
            if let Some((_, h)) = entries.iter().find(|(k, _)| *k == key) {
                return with(h);
            }
        }
        let handle = make();
        with(&handle);
        if let Ok(mut entries) = self.entries.try_borrow_mut() {
            entries.push((key, handle));
        }
    }
}

impl<H: Clone> Default for HandleCache<H> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::registry::Registry;
    use std::time::Duration;

    #[test]
    fn counts_from_many_threads_add_up() {
        let c = ShardedCounter::default();
        std::thread::scope(|s| {
            for _ in 0..40 {
                s.spawn(|| (0..1000).for_each(|_| c.inc()));
            }
        });
        assert_eq!(c.get(), 40_000);
    }

    #[test]
    fn histograms_encode_as_prometheus_client_does() {
        let bounds = [25e-6, 1e-3];
        let ours = ShardedHistogram::new(&bounds);
        let theirs = prometheus_client::metrics::histogram::Histogram::new(bounds);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let ours = &ours;
                let theirs = &theirs;
                s.spawn(move || {
                    for micros in [1, 25, 26, 999, 1000, 5000] {
                        let d = Duration::from_micros(micros * (t + 1));
                        ours.observe(d);
                        theirs.observe(d.as_secs_f64());
                    }
                });
            }
        });
        let encode = |h: &dyn Fn(&mut Registry)| {
            let mut r = Registry::default();
            h(&mut r);
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
            out
        };
        let a = encode(&|r| r.register("d", "h", ours.clone()));
        let b = encode(&|r| r.register("d", "h", theirs.clone()));
        // Sums differ only in float rounding; compare the rest line by line.
        let strip = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.starts_with("d_sum"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(strip(&a), strip(&b));
        let (sum, count, _) = ours.get();
        assert_eq!(count, 24);
        assert!((sum - 0.07051).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn a_family_of_sharded_counters_and_its_handle_cache() {
        #[derive(
            Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet,
        )]
        struct L {
            outcome: &'static str,
        }
        let family = Family::<L, ShardedCounter>::default();
        let cache = HandleCache::<ShardedCounter>::new();
        for outcome in ["ok", "not_found", "ok", "ok"] {
            cache.with(
                [1, label(outcome), 0, 0],
                || family.get_or_create(&L { outcome }).clone(),
                ShardedCounter::inc,
            );
        }
        assert_eq!(family.get_or_create(&L { outcome: "ok" }).get(), 3);
        assert_eq!(
            family
                .get_or_create(&L {
                    outcome: "not_found"
                })
                .get(),
            1
        );
    }
}
