#!/usr/bin/python3
"""Renders the main panels of the Grafana dashboard from a real Prometheus, as a PNG.

Grafana is not packaged for Debian; this draws the same PromQL through Prometheus's HTTP API
with matplotlib (Debian: python3-matplotlib).

usage: docs/render-monitoring-plot.py http://127.0.0.1:9090 [minutes] [out.png]
"""
import json
import sys
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from datetime import datetime  # noqa: E402

RATE = "[30s]"
PANELS = [
    ("Flush latency p50 / p99 by export", "s", [
        ("histogram_quantile(0.5, sum by (le, export) (rate(nbd_flush_seconds_bucket" + RATE + ")))", "p50 {export}"),
        ("histogram_quantile(0.99, sum by (le, export) (rate(nbd_flush_seconds_bucket" + RATE + ")))", "p99 {export}"),
    ]),
    ("Request rate by op", "requests/s", [
        ("sum by (op) (rate(nbd_requests_seconds_count" + RATE + "))", "{op}"),
    ]),
    ("Throughput", "MiB/s", [
        ("sum by (export, direction) (rate(nbd_bytes_total" + RATE + ")) / 1048576", "{export} {direction}"),
    ]),
    ("Per-connection queue depth (nbd_connection_inflight)", "requests", [
        ("nbd_connection_inflight", "{export} #{connection}"),
    ]),
]


def query_range(base, expr, start, end, step):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{q}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"query failed: {expr}: {body}")
    return body["data"]["result"]


def main():
    base = sys.argv[1].rstrip("/")
    minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 5
    out = sys.argv[3] if len(sys.argv) > 3 else "docs/monitoring-dashboard.png"
    end = time.time()
    start = end - minutes * 60
    step = max(2, int(minutes * 60 / 300))
    fig, axes = plt.subplots(2, 2, figsize=(14, 8), constrained_layout=True)
    for ax, (title, unit, queries) in zip(axes.flat, PANELS):
        for expr, legend in queries:
            for series in query_range(base, expr, start, end, step):
                points = [(datetime.fromtimestamp(float(t)), float(v)) for t, v in series["values"] if v != "NaN"]
                if not points:
                    continue
                xs, ys = zip(*points)
                ax.plot(xs, ys, linewidth=1.2, label=legend.format(**series["metric"]))
        ax.set_title(title)
        ax.set_ylabel(unit)
        if unit == "s":
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("NBD server — rendered from Prometheus (same PromQL as the Grafana dashboard)")
    fig.savefig(out, dpi=90)
    print(out)


if __name__ == "__main__":
    main()
