#!/usr/bin/env python3
"""Draw open-loop latency against offered rate as an SVG line chart.

Reads one or more JSON files written by `http-load --json FILE` (or the sweep of
`loadtest::open_loop::sweep_json`):

    {"server": "eligd", "runs": [{"rate": 700, "p50_ms": 0.1, "p99_ms": 1.2,
                                  "p999_ms": 2.0, ...}, ...]}

and writes one chart: x = offered rate (requests/s, log scale), y = latency (ms, log
scale), one line per percentile (p50, p99, p99.9 by default) per server, a dashed
horizontal line at the p99 target (2 ms), a legend and a title. Standard library only.

Example:

    http-load --addr 127.0.0.1:8080 --mix realistic --sweep 300,700,2000,5000 \\
        --duration 15 --label eligd --json eligd.json
    http-load --addr 127.0.0.1:8081 --mix realistic --sweep 300,700,2000,5000 \\
        --duration 15 --label hello-server --json hello.json
    scripts/plot-latency.py eligd.json hello.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from xml.sax.saxutils import escape

PERCENTILES = {
    "p50": ("p50_ms", "p50"),
    "p90": ("p90_ms", "p90"),
    "p99": ("p99_ms", "p99"),
    "p999": ("p999_ms", "p99.9"),
    "max": ("max_ms", "max"),
}
# One colour per server (colour-blind safe, Okabe–Ito), one dash pattern and marker per
# percentile.
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
DASHES = {"p50": "", "p90": "2 3", "p99": "8 4", "p999": "2 2 8 2", "max": "1 3"}
MARKERS = {"p50": "circle", "p90": "diamond", "p99": "square", "p999": "triangle", "max": "cross"}

PLOT_W, PLOT_H = 640, 460
LEFT, TOP, BOTTOM = 80, 64, 72
# Width of one character of the 13 px legend text, roughly (for the legend's room).
CHAR_W = 7.6


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="plot-latency.py",
        description="Draw open-loop latency percentiles against offered rate (log-log) as "
        "an SVG line chart, from the JSON files of `http-load --json`.",
        epilog="Each input holds {\"server\": NAME, \"runs\": [{\"rate\": R, \"p50_ms\": …, "
        "\"p99_ms\": …, \"p999_ms\": …}, …]}; one line per percentile per file.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="JSON",
                   help="sweep results (http-load --json), one per server")
    p.add_argument("--out", type=Path, default=Path("docs/latency-vs-rate.svg"),
                   help="SVG file to write (default: docs/latency-vs-rate.svg)")
    p.add_argument("--title", default="Open-loop latency against offered rate",
                   help="chart title")
    p.add_argument("--subtitle", default=None,
                   help="a second line under the title (default: the input files' servers)")
    p.add_argument("--percentiles", default="p50,p99,p999",
                   help="comma-separated, of " + ", ".join(PERCENTILES) + " (default p50,p99,p999)")
    p.add_argument("--target-ms", type=float, default=2.0,
                   help="the p99 target drawn as a dashed line, ms (default 2; 0: none)")
    args = p.parse_args(argv)
    args.percentiles = [s.strip() for s in args.percentiles.split(",") if s.strip()]
    unknown = [s for s in args.percentiles if s not in PERCENTILES]
    if unknown or not args.percentiles:
        p.error(f"--percentiles: unknown {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(PERCENTILES)}")
    return args


def load(path: Path) -> tuple[str, list[dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"plot-latency.py: {path}: {e}")
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise SystemExit(f"plot-latency.py: {path}: not a sweep (no \"runs\" list)")
    runs = [r for r in data["runs"] if isinstance(r, dict) and _positive(r.get("rate"))]
    if not runs:
        raise SystemExit(f"plot-latency.py: {path}: no runs with a rate")
    return str(data.get("server") or path.stem), sorted(runs, key=lambda r: r["rate"])


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def log_range(values: list[float], pad: float) -> tuple[float, float]:
    """A log10 range covering `values`, padded by `pad` decades either side."""
    lo, hi = math.log10(min(values)), math.log10(max(values))
    if hi - lo < 0.3:
        mid = (lo + hi) / 2
        lo, hi = mid - 0.15, mid + 0.15
    return lo - pad, hi + pad


def ticks(lo: float, hi: float) -> list[float]:
    """Ticks within a log10 range: 1-2-5 per decade, every digit in less than a decade, only
    decades when it is wide."""
    span = hi - lo
    steps = (1,) if span > 4 else (1, 2, 5) if span > 1.2 else range(1, 10)
    out = []
    for e in range(math.floor(lo) - 1, math.ceil(hi) + 1):
        for m in steps:
            v = m * 10.0 ** e
            if lo - 1e-9 <= math.log10(v) <= hi + 1e-9:
                out.append(v)
    return out


def number(v: float) -> str:
    if v >= 1000 and v == int(v):
        return f"{int(v):,}"
    if v >= 1:
        return f"{v:g}"
    return f"{v:.3g}"


def marker(kind: str, x: float, y: float, colour: str) -> str:
    s = 4.0
    if kind == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{s:.1f}" fill="{colour}"/>'
    if kind == "square":
        return (f'<rect x="{x - s:.1f}" y="{y - s:.1f}" width="{2 * s:.1f}" height="{2 * s:.1f}" '
                f'fill="{colour}"/>')
    if kind == "triangle":
        pts = f"{x:.1f},{y - s - 1:.1f} {x - s - 1:.1f},{y + s:.1f} {x + s + 1:.1f},{y + s:.1f}"
        return f'<polygon points="{pts}" fill="{colour}"/>'
    if kind == "diamond":
        pts = f"{x:.1f},{y - s - 1:.1f} {x + s + 1:.1f},{y:.1f} {x:.1f},{y + s + 1:.1f} {x - s - 1:.1f},{y:.1f}"
        return f'<polygon points="{pts}" fill="{colour}"/>'
    return (f'<path d="M{x - s:.1f},{y - s:.1f} L{x + s:.1f},{y + s:.1f} M{x - s:.1f},{y + s:.1f} '
            f'L{x + s:.1f},{y - s:.1f}" stroke="{colour}" stroke-width="2"/>')


def spaced(values: list[float], pos, gap: float) -> list[float]:
    """The values whose positions are at least `gap` from the previous one kept."""
    kept: list[float] = []
    for v in sorted(set(values)):
        if not kept or abs(pos(v) - pos(kept[-1])) >= gap:
            kept.append(v)
    return kept


def render(series: list[tuple[str, list[dict]]], args: argparse.Namespace) -> str:
    rates = [r["rate"] for _, runs in series for r in runs]
    latencies = [r[PERCENTILES[p][0]] for _, runs in series for r in runs
                 for p in args.percentiles if _positive(r.get(PERCENTILES[p][0]))]
    if args.target_ms > 0:
        latencies.append(args.target_ms)
    if not latencies:
        raise SystemExit("plot-latency.py: no latency figures in the inputs")
    x_lo, x_hi = log_range(rates, 0.08)
    y_lo, y_hi = log_range(latencies, 0.12)
    plot_w, plot_h = PLOT_W, PLOT_H
    labels = [f"{name} {PERCENTILES[p][1]}" for name, _ in series for p in args.percentiles]
    legend_w = 42 + CHAR_W * max(len(t) for t in labels + ["p99 target"]) + 24
    width, height = int(LEFT + plot_w + 20 + legend_w), TOP + plot_h + BOTTOM

    def px(rate: float) -> float:
        return LEFT + (math.log10(rate) - x_lo) / (x_hi - x_lo) * plot_w

    def py(ms: float) -> float:
        return TOP + plot_h - (math.log10(ms) - y_lo) / (y_hi - y_lo) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" '
        f'font-size="13">',
        f"<title>{escape(args.title)}</title>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{LEFT}" y="28" font-size="18" font-weight="bold">{escape(args.title)}</text>',
    ]
    subtitle = args.subtitle
    if subtitle is None:
        subtitle = "servers: " + ", ".join(name for name, _ in series) + \
            " — latency from each request's due time (no coordinated omission)"
    if subtitle:
        out.append(f'<text x="{LEFT}" y="48" fill="#444444">{escape(subtitle)}</text>')

    # Grid and ticks.
    out.append('<g stroke="#e3e3e3" stroke-width="1">')
    for v in ticks(x_lo, x_hi):
        out.append(f'<line x1="{px(v):.1f}" y1="{TOP}" x2="{px(v):.1f}" y2="{TOP + plot_h}"/>')
    for v in ticks(y_lo, y_hi):
        out.append(f'<line x1="{LEFT}" y1="{py(v):.1f}" x2="{LEFT + plot_w}" y2="{py(v):.1f}"/>')
    out.append("</g>")
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
               f'stroke="#555555"/>')
    # The rates measured are the x labels (with a tick each).
    x_labels = spaced(rates, px, 48)
    out.append('<g stroke="#555555">')
    for v in x_labels:
        out.append(f'<line x1="{px(v):.1f}" y1="{TOP + plot_h}" x2="{px(v):.1f}" '
                   f'y2="{TOP + plot_h + 5}"/>')
    out.append("</g>")
    out.append('<g fill="#333333">')
    for v in x_labels:
        out.append(f'<text x="{px(v):.1f}" y="{TOP + plot_h + 20}" text-anchor="middle">'
                   f"{number(v)}</text>")
    for v in ticks(y_lo, y_hi):
        out.append(f'<text x="{LEFT - 8}" y="{py(v) + 4:.1f}" text-anchor="end">{number(v)}</text>')
    out.append("</g>")
    out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{height - 24}" text-anchor="middle">'
               "offered rate (requests/s, log scale)</text>")
    out.append(f'<text transform="translate(22 {TOP + plot_h / 2:.1f}) rotate(-90)" '
               'text-anchor="middle">latency (ms, log scale)</text>')

    # The target.
    if args.target_ms > 0:
        y = py(args.target_ms)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" '
                   'stroke="#c00000" stroke-width="1.5" stroke-dasharray="6 4"/>')

    # The lines, clipped to the plot.
    out.append(f'<clipPath id="plot"><rect x="{LEFT}" y="{TOP}" width="{plot_w}" '
               f'height="{plot_h}"/></clipPath>')
    out.append('<g clip-path="url(#plot)">')
    legend = []
    for i, (name, runs) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        for p in args.percentiles:
            field, label = PERCENTILES[p]
            pts = [(px(r["rate"]), py(r[field])) for r in runs if _positive(r.get(field))]
            if not pts:
                continue
            path = " ".join(f"{'M' if j == 0 else 'L'}{x:.1f},{y:.1f}" for j, (x, y) in enumerate(pts))
            dash = f' stroke-dasharray="{DASHES[p]}"' if DASHES[p] else ""
            out.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
            out.extend(marker(MARKERS[p], x, y, colour) for x, y in pts)
            legend.append((f"{name} {label}", colour, p))
    out.append("</g>")
    if args.target_ms > 0:
        # Over the lines, with a white halo.
        out.append(f'<text x="{LEFT + 6}" y="{py(args.target_ms) - 6:.1f}" fill="#c00000" '
                   'stroke="#ffffff" stroke-width="4" stroke-linejoin="round" '
                   f'paint-order="stroke">p99 target {number(args.target_ms)} ms</text>')

    # Legend, right of the plot.
    lx, ly = LEFT + plot_w + 20, TOP + 8
    out.append(f'<text x="{lx}" y="{ly + 4}" font-weight="bold">legend</text>')
    for j, (text, colour, p) in enumerate(legend):
        y = ly + 26 + j * 22
        dash = f' stroke-dasharray="{DASHES[p]}"' if DASHES[p] else ""
        out.append(f'<line x1="{lx}" y1="{y}" x2="{lx + 34}" y2="{y}" stroke="{colour}" '
                   f'stroke-width="2"{dash}/>')
        out.append(marker(MARKERS[p], lx + 17, y, colour))
        out.append(f'<text x="{lx + 42}" y="{y + 4}">{escape(text)}</text>')
    if args.target_ms > 0:
        y = ly + 26 + len(legend) * 22
        out.append(f'<line x1="{lx}" y1="{y}" x2="{lx + 34}" y2="{y}" stroke="#c00000" '
                   'stroke-width="1.5" stroke-dasharray="6 4"/>')
        out.append(f'<text x="{lx + 42}" y="{y + 4}">p99 target</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    series = [load(p) for p in args.inputs]
    # Two files naming the same server: tell them apart by file name.
    names = [name for name, _ in series]
    series = [(f"{name} ({path.stem})" if names.count(name) > 1 else name, runs)
              for (name, runs), path in zip(series, args.inputs)]
    svg = render(series, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(svg, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
