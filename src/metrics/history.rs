//! The last 15 minutes of requests, by channel, for the `/status` page: every 10 s the
//! service's own `/metrics` text is read for the request histograms (one source of truth,
//! nothing counted twice), and a ring of 90 samples keeps their cumulative counts. Rates and
//! percentiles come from the differences between samples.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// How often a sample is taken, and how many are kept (15 minutes).
pub const EVERY_SECS: u64 = 10;
const KEPT: usize = 91;

/// Cumulative request counts of one channel: the total and per histogram bucket (upper
/// bound in seconds, count at or below it), in bucket order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    pub total: u64,
    pub buckets: Vec<(f64, u64)>,
}

#[derive(Clone, Debug)]
struct Sample {
    unix_ms: u64,
    channels: BTreeMap<String, Counts>,
}

/// One step of the charts: the request rate and latency percentiles of a channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub unix_ms: u64,
    pub per_second: f64,
    /// Upper bounds of the buckets holding the 50th and 99th percentile, in seconds
    /// (`None` without requests in the step).
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Records the counts found in `metrics_text` (the OpenMetrics or classic encoding).
    pub fn record(&self, unix_ms: u64, metrics_text: &str) {
        let sample = Sample {
            unix_ms,
            channels: parse(metrics_text),
        };
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push_back(sample);
        while samples.len() > KEPT {
            samples.pop_front();
        }
    }

    /// Per channel, one point per step between consecutive samples (oldest first).
    pub fn series(&self) -> BTreeMap<String, Vec<Point>> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        steps(samples.iter())
    }

    /// [`series`](Self::series) and, last, a point for now: from `metrics_text` (the live
    /// counters and histograms, read as the page is asked) against the newest sample at
    /// least [`LIVE_MIN_MS`] older (else the oldest), over at least that long. So the page
    /// shows the requests of its first seconds, before a second sample is taken.
    pub fn series_until(&self, unix_ms: u64, metrics_text: &str) -> BTreeMap<String, Vec<Point>> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let Some(base) = samples
            .iter()
            .rev()
            .find(|s| s.unix_ms + LIVE_MIN_MS <= unix_ms)
            .or(samples.front())
        else {
            return BTreeMap::new();
        };
        let live = Sample {
            unix_ms: unix_ms.max(base.unix_ms + LIVE_MIN_MS),
            channels: parse(metrics_text),
        };
        // The sampled steps up to `base`, then `base` to now.
        let until_base = samples.iter().take_while(|s| s.unix_ms <= base.unix_ms);
        steps(until_base.chain(std::iter::once(&live)))
    }
}

/// The shortest span a live point's rate is taken over (a few requests within milliseconds
/// of a sample are no rate of thousands per second).
pub const LIVE_MIN_MS: u64 = 1_000;

/// One point per step between consecutive samples, per channel.
fn steps<'s>(samples: impl Iterator<Item = &'s Sample>) -> BTreeMap<String, Vec<Point>> {
    let samples: Vec<&Sample> = samples.collect();
    let mut out: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for pair in samples.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let seconds = (b.unix_ms.saturating_sub(a.unix_ms)) as f64 / 1000.0;
        if seconds <= 0.0 {
            continue;
        }
        for (channel, now) in &b.channels {
            let before = a.channels.get(channel).cloned().unwrap_or_default();
            out.entry(channel.clone())
                .or_default()
                .push(step(&before, now, seconds, b.unix_ms));
        }
    }
    out
}

fn step(before: &Counts, now: &Counts, seconds: f64, unix_ms: u64) -> Point {
    let total = now.total.saturating_sub(before.total);
    let delta: Vec<(f64, u64)> = now
        .buckets
        .iter()
        .map(|(le, n)| {
            let was = before
                .buckets
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0, |(_, c)| *c);
            (*le, n.saturating_sub(was))
        })
        .collect();
    let quantile = |q: f64| {
        let wanted = (q * total as f64).ceil().max(1.0) as u64;
        (total > 0)
            .then(|| delta.iter().find(|(_, n)| *n >= wanted).map(|(le, _)| *le))
            .flatten()
    };
    Point {
        unix_ms,
        per_second: total as f64 / seconds,
        p50: quantile(0.5),
        p99: quantile(0.99),
    }
}

/// `eligd_request_duration_seconds_{bucket,count}` summed by channel, inquiry routes only
/// (not /healthz, /readyz, /metrics, /status).
pub fn parse(text: &str) -> BTreeMap<String, Counts> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for line in text.lines() {
        let (kind, rest) =
            if let Some(r) = line.strip_prefix("eligd_request_duration_seconds_bucket{") {
                ("bucket", r)
            } else if let Some(r) = line.strip_prefix("eligd_request_duration_seconds_count{") {
                ("count", r)
            } else {
                continue;
            };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|kv| {
                kv.strip_prefix(name)?
                    .strip_prefix("=\"")?
                    .strip_suffix('"')
            })
        };
        let (Some(route), Some(channel)) = (label("route"), label("channel")) else {
            continue;
        };
        if ["/healthz", "/readyz", "/metrics", "/status"].contains(&route) {
            continue;
        }
        let Ok(n) = value.trim().parse::<f64>() else {
            continue;
        };
        let counts = out.entry(channel.to_string()).or_default();
        match kind {
            "count" => counts.total += n as u64,
            _ => {
                let le = match label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => match v.parse() {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                match counts.buckets.iter_mut().find(|(l, _)| *l == le) {
                    Some((_, c)) => *c += n as u64,
                    None => counts.buckets.push((le, n as u64)),
                }
            }
        }
    }
    for counts in out.values_mut() {
        counts.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str =
        "eligd_request_duration_seconds_bucket{le=\"0.001\",route=\"/ussd\",channel=\"ussd\"} 8\n\
        eligd_request_duration_seconds_bucket{le=\"0.01\",route=\"/ussd\",channel=\"ussd\"} 10\n\
        eligd_request_duration_seconds_bucket{le=\"+Inf\",route=\"/ussd\",channel=\"ussd\"} 10\n\
        eligd_request_duration_seconds_count{route=\"/ussd\",channel=\"ussd\"} 10\n\
        eligd_request_duration_seconds_count{route=\"/metrics\",channel=\"http\"} 99\n";

    #[test]
    fn rates_and_percentiles_come_from_the_difference_between_samples() {
        let h = History::default();
        h.record(0, A);
        let b = A.replace("} 8\n", "} 88\n").replace("} 10\n", "} 100\n");
        h.record(10_000, &b);
        let series = h.series();
        assert!(
            !series.contains_key("http"),
            "operations routes are left out"
        );
        let points = &series["ussd"];
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].per_second, 9.0);
        assert_eq!(points[0].p50, Some(0.001), "80 of 90 within 1 ms");
        assert_eq!(points[0].p99, Some(0.01));
    }

    #[test]
    fn no_requests_no_percentiles_and_junk_is_ignored() {
        let h = History::default();
        h.record(0, A);
        h.record(10_000, &format!("{A}garbage{{\nnot a metric\n"));
        let p = &h.series()["ussd"][0];
        assert_eq!((p.per_second, p.p50, p.p99), (0.0, None, None));
    }

    #[test]
    fn the_live_point_counts_from_the_last_sample_and_never_over_less_than_a_second() {
        let h = History::default();
        assert!(
            h.series_until(5_000, A).is_empty(),
            "no sample: nothing to count from"
        );
        h.record(0, "");
        // 10 requests in the first 400 ms: one point, over a second, before a second sample.
        let live = h.series_until(400, A);
        assert_eq!(live["ussd"].len(), 1);
        assert_eq!(live["ussd"][0].per_second, 10.0);
        assert_eq!(live["ussd"][0].p50, Some(0.001));
        // 5 s in: over 5 s.
        assert_eq!(h.series_until(5_000, A)["ussd"][0].per_second, 2.0);
        assert!(h.series().is_empty(), "the samples are as they were");
        // Sampled at 10 s; at 10.5 s the live point counts from 0 again (10.5 s), after the
        // sampled step.
        h.record(10_000, A);
        let b = A.replace("} 8\n", "} 18\n").replace("} 10\n", "} 31\n");
        let series = h.series_until(10_500, &b);
        assert_eq!(
            series["ussd"].len(),
            1,
            "the step from 0 is replaced by the live one"
        );
        assert_eq!(series["ussd"][0].per_second, 31.0 / 10.5);
        // At 12 s: the sampled step, then 21 more over 2 s.
        let series = h.series_until(12_000, &b);
        let rates: Vec<f64> = series["ussd"].iter().map(|p| p.per_second).collect();
        assert_eq!(rates, [1.0, 10.5]);
    }
}
