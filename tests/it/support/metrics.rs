//! Reading `/metrics` and waiting on conditions.

use std::time::{Duration, Instant};

use super::http::{http_get, try_http_get};
use super::process::Served;

/// A series asked for: a metric name and the labels it must carry (a subset of its labels).
struct Selector<'s> {
    name: &'s str,
    labels: Vec<(String, String)>,
}

/// `k="v",k2="v2"` (the text between braces) as pairs; `\"` and `\\` unescaped.
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad labels {text:?}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.unwrap_or_else(|| panic!("unterminated label value in {text:?}"));
        pairs.push((key.trim().trim_start_matches(',').trim().to_string(), value));
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    pairs
}

impl<'s> Selector<'s> {
    fn parse(series: &'s str) -> Selector<'s> {
        match series.split_once('{') {
            Some((name, labels)) => Selector {
                name,
                labels: parse_labels(
                    labels
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("bad series {series:?}")),
                ),
            },
            None => Selector {
                name: series,
                labels: Vec::new(),
            },
        }
    }

    /// The value of a sample line when it is one of the series selected.
    fn value_of(&self, line: &str) -> Option<f64> {
        if line.starts_with('#') {
            return None;
        }
        let rest = line.strip_prefix(self.name)?;
        let (labels, value) = if let Some(inner) = rest.strip_prefix('{') {
            let close = inner.rfind('}')?;
            (parse_labels(&inner[..close]), &inner[close + 1..])
        } else if rest.starts_with(' ') {
            (Vec::new(), rest)
        } else {
            return None; // another metric whose name starts with this one
        };
        if !self.labels.iter().all(|wanted| labels.contains(wanted)) {
            return None;
        }
        let value = value.split_whitespace().next()?;
        Some(
            value
                .parse()
                .unwrap_or_else(|e| panic!("{line:?}: value {value:?}: {e}")),
        )
    }
}

/// The sum of the series in `text` that `series` selects (`name`, or `name{label="value",…}`
/// for the series carrying those labels among theirs); `None` when none does.
pub(crate) fn sum_series(text: &str, series: &str) -> Option<f64> {
    let selector = Selector::parse(series);
    text.lines()
        .filter_map(|l| selector.value_of(l))
        .fold(None, |sum, v| Some(sum.unwrap_or(0.0) + v))
}

/// The value of a series in `/metrics`, summed over its labelled series: `eligd_feed_gaps_total`
/// is the sum of every `kind`, `eligd_feed_events_rejected_total{reason="stale"}` one series.
/// Panics when no series matches (a typo, a missing label, a series not exported yet), so a
/// check like `== 0.0` cannot pass on a series that is not there; see [`metric_if_any`].
#[track_caller]
pub(crate) fn metric(eligd: &Served, series: &str) -> f64 {
    let (status, text) = http_get(&eligd.addr, "/metrics");
    assert_eq!(status, 200, "GET /metrics from {}: {text}", eligd.addr);
    match sum_series(&text, series) {
        Some(sum) => sum,
        None => {
            let name = series.split('{').next().unwrap();
            let family: Vec<&str> = text.lines().filter(|l| l.contains(name)).collect();
            panic!(
                "no series {series} in /metrics of {}; lines naming {name}: {family:#?}",
                eligd.addr
            )
        }
    }
}

/// [`metric`], `None` while no series matches: for a poll waiting on a labelled series that
/// appears at its first count (`eligd_compactions_total{outcome="ok"}`).
pub(crate) fn metric_if_any(eligd: &Served, series: &str) -> Option<f64> {
    let (status, text) = try_http_get(&eligd.addr, "/metrics").ok()?;
    assert_eq!(status, 200, "GET /metrics from {}: {text}", eligd.addr);
    sum_series(&text, series)
}

/// Polls until `check` holds; panics with `what` after `seconds`.
#[track_caller]
pub(crate) fn wait_for(what: &str, seconds: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `GET /readyz`: its status and body.
pub(crate) fn readyz(eligd: &Served) -> (u16, String) {
    http_get(&eligd.addr, "/readyz")
}

/// Polls `/readyz` until it answers 200 (30 s).
#[track_caller]
pub(crate) fn wait_ready(eligd: &Served) {
    wait_for("ready", 30, || readyz(eligd).0 == 200);
}

#[test]
fn series_are_selected_by_name_and_labels_and_summed() {
    let text = "# HELP eligd_feed_gaps_total gaps\n\
        eligd_feed_gaps_total{kind=\"trimmed\"} 1\n\
        eligd_feed_gaps_total{kind=\"deleted\"} 0\n\
        eligd_feed_gaps_total{kind=\"reset\"} 2\n\
        eligd_feed_gaps_total_extra 9\n\
        eligd_requests_total{route=\"/a,b\",outcome=\"ok\"} 3\n\
        eligd_ready 1\n";
    assert_eq!(sum_series(text, "eligd_feed_gaps_total"), Some(3.0));
    assert_eq!(
        sum_series(text, r#"eligd_feed_gaps_total{kind="reset"}"#),
        Some(2.0)
    );
    assert_eq!(sum_series(text, r#"eligd_feed_gaps_total{kind="x"}"#), None);
    assert_eq!(
        sum_series(text, r#"eligd_requests_total{outcome="ok"}"#),
        Some(3.0)
    );
    assert_eq!(sum_series(text, "eligd_ready"), Some(1.0));
    assert_eq!(sum_series(text, "eligd_rea"), None);
    assert_eq!(sum_series(text, "eligd_feed_connected"), None);
}
