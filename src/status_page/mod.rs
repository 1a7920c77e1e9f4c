//! `GET /status` (docs/contract.md §5): one small HTML page a person reads at a glance: readiness and
//! its reason, the index, the snapshot, `data_as_of`, the feed, the audit queue, and request
//! rate and latency by channel over the last 15 minutes as inline SVG charts. Self-contained
//! (no external assets, no JavaScript), no personal data. Every figure is the same one
//! `/metrics` exports, read the same way.

use std::fmt::Write;

use crate::app::AppState;
use crate::dates::rfc3339_utc_ms;
use crate::dates::unix_ms;
use crate::metrics::history::Point;

/// The page's HTML.
pub fn page(state: &AppState) -> String {
    let now_ms = unix_ms();
    let mut html = String::with_capacity(16 * 1024);
    html.push_str(HEAD);
    let (ready, reason) = match state.readiness() {
        Ok(_) => ("ready", String::new()),
        Err(reason) => ("not ready", reason),
    };
    let _ = write!(
        html,
        "<h1>eligd <span id=\"ready\" class=\"{}\">{ready}</span></h1>",
        if reason.is_empty() { "ok" } else { "bad" }
    );
    if !reason.is_empty() {
        let _ = write!(html, "<p id=\"ready-reason\">{}</p>", escape(&reason));
    }
    html.push_str("<table>");
    let mut row = |label: &str, id: &str, value: String| {
        let _ = write!(
            html,
            "<tr><th>{label}</th><td id=\"{id}\">{}</td></tr>",
            escape(&value)
        );
    };
    match state.index() {
        Some(index) => {
            row("members in the index", "members", index.len().to_string());
            row(
                "changes since the snapshot (overlay)",
                "overlay",
                index.overlay_len().to_string(),
            );
            let as_of = index.data_as_of_ms();
            row("data as of", "data-as-of", rfc3339_utc_ms(as_of));
            row(
                "data age",
                "data-age",
                format!("{:.1} s", now_ms.saturating_sub(as_of) as f64 / 1000.0),
            );
        }
        None => row("members in the index", "members", "loading".into()),
    }
    row(
        "snapshot load",
        "snapshot-load",
        format!("{:.2} s", state.metrics.snapshot_load_seconds.get()),
    );
    match state.feed() {
        Some(feed) => {
            let lag = feed.lag(std::time::Instant::now(), now_ms);
            let connected = if feed.is_connected() {
                "Redis connected"
            } else {
                "Redis not connected"
            };
            let behind = if feed.is_stream_behind() {
                ", stream behind"
            } else if feed.is_degraded() {
                ", a gap every replica shares: answering from the index as of data_as_of"
            } else {
                ""
            };
            row(
                "feed",
                "feed-state",
                format!("{:?}, {connected}{behind}", feed.phase()),
            );
            row(
                "feed lag",
                "feed-lag",
                format!("{:.1} s", lag.as_secs_f64()),
            );
        }
        None => row("feed", "feed-state", "none (static index)".into()),
    }
    match state.audit() {
        Some(audit) => row(
            "audit queue",
            "audit-queue",
            audit.queue_depth().to_string(),
        ),
        None => row("audit queue", "audit-queue", "no audit log".into()),
    }
    html.push_str("</table><h2>Last 15 minutes, by channel</h2>");
    // The sampled history (one sample every 10 s), and a last point from the live counters.
    let series = state
        .metrics
        .history
        .series_until(now_ms, &state.metrics.encode());
    if series.is_empty() {
        html.push_str("<p id=\"no-inquiries\">No inquiries yet.</p>");
    }
    for (channel, points) in &series {
        let rate: Vec<f64> = points.iter().map(|p| p.per_second).collect();
        let last = points.last();
        let _ = write!(
            html,
            "<section id=\"channel-{channel}\"><h3>{channel}</h3><div class=\"charts\">\
             <figure>{}<figcaption>requests/s, now <b class=\"rate\" id=\"rate-{channel}\">{:.1}</b></figcaption></figure>",
            chart(&rate),
            last.map_or(0.0, |p| p.per_second)
        );
        let p99: Vec<f64> = points
            .iter()
            .map(|p| p.p99.unwrap_or(0.0) * 1000.0)
            .collect();
        let _ = write!(
            html,
            "<figure>{}<figcaption>latency p50 {} / p99 {} (ms, bucket bound)</figcaption></figure></div></section>",
            chart(&p99),
            shown_ms(last.and_then(|p: &Point| p.p50)),
            shown_ms(last.and_then(|p: &Point| p.p99)),
        );
    }
    let _ = write!(
        html,
        "<footer>{} · eligd {} · figures as in /metrics</footer></body></html>",
        rfc3339_utc_ms(now_ms),
        env!("CARGO_PKG_VERSION")
    );
    html
}

fn shown_ms(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) if s.is_finite() => format!("≤ {}", s * 1000.0),
        Some(_) => "> 0.8 s".into(),
        None => "–".into(),
    }
}

/// A 180×40 sparkline of `values` (scaled to their maximum), with the maximum written.
fn chart(values: &[f64]) -> String {
    let max = values.iter().copied().fold(0.0f64, f64::max);
    let (w, h) = (180.0, 40.0);
    let step = if values.len() > 1 {
        w / (values.len() - 1) as f64
    } else {
        0.0
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = if max > 0.0 {
                h - v / max * (h - 2.0)
            } else {
                h
            };
            // One point is now: at the right edge, where the last of many is.
            let x = if values.len() > 1 { i as f64 * step } else { w };
            format!("{x:.1},{y:.1}")
        })
        .collect();
    // The last point (now) is drawn as a dot: a line needs two points, a dot shows one.
    let dot = points.last().map_or(String::new(), |last| {
        let (x, y) = last.split_once(',').unwrap_or(("0", "0"));
        format!("<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\" fill=\"#1f6feb\"/>")
    });
    format!(
        "<svg viewBox=\"-3 -3 {vw} {vh}\" width=\"{vw}\" height=\"{vh}\" role=\"img\" aria-label=\"max {max:.2}\">\
         <polyline fill=\"none\" stroke=\"#1f6feb\" stroke-width=\"1.5\" points=\"{}\"/>{dot}\
         <text x=\"2\" y=\"10\" font-size=\"9\">max {max:.2}</text></svg>",
        points.join(" "),
        // A margin for the dot at the edges.
        vw = w + 6.0,
        vh = h + 6.0,
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const HEAD: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"10\"><title>eligd status</title><style>\
body{font:14px/1.4 system-ui,sans-serif;margin:1rem auto;max-width:52rem;padding:0 1rem;color:#111}\
h1 span{font-size:.8em;padding:.1em .5em;border-radius:.3em;color:#fff}\
.ok{background:#1a7f37}.bad{background:#cf222e}\
table{border-collapse:collapse}th{text-align:left;font-weight:normal;color:#555;padding:.2em 1em .2em 0}\
td{font-variant-numeric:tabular-nums}.charts{display:flex;gap:1rem;flex-wrap:wrap}\
figure{margin:0}svg{background:#f6f8fa}footer{margin-top:2rem;color:#666;font-size:12px}\
</style></head><body>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_scale_to_their_maximum_and_text_is_escaped() {
        let svg = chart(&[0.0, 5.0, 10.0]);
        assert!(svg.contains("0.0,40.0 90.0,21.0 180.0,2.0"), "{svg}");
        assert!(svg.contains("max 10.00"));
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
        assert_eq!(shown_ms(Some(0.0004)), "≤ 0.4");
        assert_eq!(shown_ms(None), "–");
        assert!(
            svg.contains("<circle cx=\"180.0\" cy=\"2.0\""),
            "now, as a dot: {svg}"
        );
    }

    #[test]
    fn a_chart_of_one_point_draws_it() {
        let svg = chart(&[3.0]);
        assert!(svg.contains("points=\"180.0,2.0\""), "{svg}");
        assert!(
            svg.contains("<circle cx=\"180.0\" cy=\"2.0\" r=\"2.5\""),
            "{svg}"
        );
    }
}
