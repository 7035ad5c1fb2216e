"""Summarises one bench/run.sh run: medians over rounds, project/peer ratios, p99 latencies.

Usage: report.py RESULTS_DIR DOCS_DIR. Reads RESULTS_DIR/records.jsonl (one JSON object per
measurement) and machine.json; writes RESULTS_DIR/summary.json, prints tables, and when the
environment has DOCS=1 writes DOCS_DIR/benchmark-results.json and DOCS_DIR/benchmark.png.
"""
import json
import os
import re
import statistics
import sys
from collections import defaultdict

out_dir, docs_dir = sys.argv[1], sys.argv[2]
records = [json.loads(line) for line in open(os.path.join(out_dir, "records.jsonl")) if line.strip()]
machine = json.load(open(os.path.join(out_dir, "machine.json")))
multiconn = {}
if os.path.exists(os.path.join(out_dir, "multiconn.txt")):
    for line in open(os.path.join(out_dir, "multiconn.txt")):
        key, value = line.split()
        multiconn[key] = value

PEERS = {"mem": ["nbdkit-mem", "qemu-mem", "nbdsrv-mem"], "disk": ["nbdkit-file", "qemu-file", "nbdsrv-file"]}
NULL = "nbdkit-null"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def medians(rows):
    """(export, workload) -> server -> {bw_bytes, iops, p99_us, rounds} medians."""
    groups = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[(r["export"], r["workload"])][r["server"]].append(r)
    result = {}
    for key, by_server in groups.items():
        result[key] = {}
        for server, rs in by_server.items():
            result[key][server] = {
                "bw_bytes": median([r.get("bw_bytes") for r in rs]),
                "iops": median([r.get("iops") for r in rs]),
                "p99_us": median([r.get("p99_us") for r in rs]),
                "cpu_us_per_op": median([r.get("cpu_us_per_op") for r in rs]),
                "rounds": len(rs),
            }
    return result


def compare(rows, order):
    """Ratios of the app against its peers and the null ceiling, per export and workload."""
    table = {}
    for (export, workload), servers in sorted(medians(rows).items(), key=lambda kv: (kv[0][0], order(kv[0][1]))):
        app = servers.get("app", {}).get("bw_bytes")
        peers = {p: servers[p]["bw_bytes"] for p in PEERS[export] if p in servers and servers[p]["bw_bytes"]}
        best = max(peers, key=peers.get) if peers else None
        null = servers.get(NULL, {}).get("bw_bytes")
        if export == "disk" and null is None:
            null = medians(rows).get(("mem", workload), {}).get(NULL, {}).get("bw_bytes")
        table.setdefault(export, {})[workload] = {
            "servers": servers,
            "best_peer": best,
            "app_vs_best_peer": ratio(app, peers.get(best)) if best else None,
            "app_vs_peer": {p: ratio(app, v) for p, v in peers.items()},
            "app_vs_null": ratio(app, null),
            # Server CPU time per request, app / best peer: below 1 = the app spends less.
            "app_cpu_per_op_vs_best_peer": ratio(servers.get("app", {}).get("cpu_us_per_op"),
                                                 servers.get(best, {}).get("cpu_us_per_op")) if best else None,
        }
    return table


main_order = ["randread-4k-qd1", "randread-4k-qd32", "randwrite-4k-qd1", "randwrite-4k-qd32", "randread-4k-4conn",
              "read-1m-qd8", "write-1m-qd8", "nbdcopy-write-1conn", "nbdcopy-write-4conn", "nbdcopy-read-1conn",
              "nbdcopy-read-4conn"]


def order(w):
    return main_order.index(w) if w in main_order else len(main_order)


summary = {"machine": machine, "multiconn": multiconn}
summary["main"] = compare([r for r in records if r.get("set") in ("main", "copy")], order)
summary["placement"] = compare([r for r in records if r.get("set") == "placement"], lambda w: w)

# Flush scaling (issue 3): app and one peer per export, with group-commit counters.
flush_rows = [r for r in records if r.get("set") == "flush"]
flush = {}
for (export, workload), servers in medians(flush_rows).items():
    flush.setdefault(export, {})[workload] = {"servers": servers}
for r in records:
    if r.get("set") != "flush-counts":
        continue
    entry = flush.get(r["export"], {}).get(r["workload"])
    if entry is None:
        continue
    try:
        b = [int(x) for x in str(r["before"]).split()]
        a = [int(x) for x in str(r["after"]).split()]
        entry.setdefault("flush_requests", []).append(a[0] - b[0])
        entry.setdefault("backend_syncs", []).append(a[1] - b[1])
    except (ValueError, IndexError):
        entry["counters"] = "not available from /actuator/nbd"
summary["flush"] = flush

metrics_rows = [r for r in records if r.get("set") == "metrics"]
summary["metrics"] = {}
for (export, workload), servers in medians(metrics_rows).items():
    on, off = servers.get("app", {}).get("bw_bytes"), servers.get("app-nometrics", {}).get("bw_bytes")
    summary["metrics"][workload] = {"on_vs_off": ratio(on, off), "p99_on_us": servers.get("app", {}).get("p99_us"),
                                    "p99_off_us": servers.get("app-nometrics", {}).get("p99_us")}
summary["metrics_note"] = next((r["note"] for r in records if r.get("set") == "metrics-note"), None)
summary["start"] = {r["server"]: {k: r[k] for k in ("first_request_s", "rss_before", "rss_after")}
                    for r in records if r.get("set") == "start"}

with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)


def fmt(v, spec="{:.2f}"):
    return spec.format(v) if v is not None else "-"


def human(bw):
    if bw is None:
        return "-"
    return "%.0f MB/s" % (bw / 1e6)


print()
print("Machine: %s CPUs (%s), load %s; %s rounds x %s s" % (machine["cpus"], machine["cpu"], " ".join(machine["loadavg"]),
                                                          machine["rounds"], machine["runtime_s"]))
for export, rows in summary["main"].items():
    peers = PEERS[export]
    print()
    print("export %s: app/peer throughput ratios (median of rounds; >1 = app faster); cpu/op = server CPU"
          " per request, app/best peer (<1 = app cheaper)" % export)
    header = "%-22s %-12s %7s " % ("workload", "best peer", "vs best") + " ".join("%11s" % p for p in peers) + \
        " %8s %10s %10s %9s" % ("vs null", "app p99us", "best p99us", "cpu/op")
    print(header)
    for workload, row in rows.items():
        servers = row["servers"]
        best = row["best_peer"]
        print("%-22s %-12s %7s " % (workload, best or "-", fmt(row["app_vs_best_peer"]))
              + " ".join("%11s" % fmt(row["app_vs_peer"].get(p)) for p in peers)
              + " %8s %10s %10s %9s" % (fmt(row["app_vs_null"]), fmt(servers.get("app", {}).get("p99_us"), "{:.0f}"),
                                        fmt(servers.get(best, {}).get("p99_us"), "{:.0f}") if best else "-",
                                        fmt(row["app_cpu_per_op_vs_best_peer"])))

def flush_order(w):
    m = re.search(r"(\d+)conn", w)
    return (w.split("-")[0], int(m.group(1)) if m else 0, w)


if flush:
    print()
    print("connections and flushes (issue 3): throughput, app/peer, flush requests vs backend syncs")
    for export, rows in sorted(flush.items()):
        for workload, row in sorted(rows.items(), key=lambda kv: flush_order(kv[0])):
            servers = row["servers"]
            app = servers.get("app", {}).get("bw_bytes")
            peer = next((servers[p]["bw_bytes"] for p in servers if p != "app"), None)
            counts = ""
            if "flush_requests" in row:
                counts = "flushes %d, syncs %d" % (median(row["flush_requests"]), median(row["backend_syncs"]))
            elif "counters" in row:
                counts = row["counters"]
            print("%-5s %-34s app %10s  app/peer %5s  %s" % (export, workload, human(app), fmt(ratio(app, peer)), counts))

for export, rows in summary["placement"].items():
    print()
    print("depth 1 with pinned CPUs (%s): app / best peer, app / null" % export)
    for workload, row in rows.items():
        print("%-28s %-11s %6s %6s" % (workload, row["best_peer"], fmt(row["app_vs_best_peer"]), fmt(row["app_vs_null"])))

if summary["metrics"]:
    print()
    print("metrics on/off throughput ratio (%s)" % summary["metrics_note"])
    for workload, row in summary["metrics"].items():
        print("%-22s %s" % (workload, fmt(row["on_vs_off"])))

for server, s in summary["start"].items():
    print()
    print("%s: first served request %.2f s after launch; RSS %d MiB -> %d MiB after writing 256 MiB into a 16 GiB "
          "memory export (+%d MiB)" % (server, s["first_request_s"], s["rss_before"] >> 20, s["rss_after"] >> 20,
                                       (s["rss_after"] - s["rss_before"]) >> 20))

# The same tables as Markdown, for docs/BENCHMARKS.md.
md = []


def ratio_table(title, export, rows, with_cpu):
    """One Markdown table of app/peer ratios per workload (from compare())."""
    peers = PEERS[export]
    md.append(title)
    md.append("| workload | best peer | app / best peer | " + " | ".join("app / %s" % p for p in peers)
              + " | app / null | p99 app / best peer |" + (" CPU per request app / best peer |" if with_cpu else ""))
    md.append("|---" * (5 + len(peers) + with_cpu) + "|")
    for workload, row in rows.items():
        servers = row["servers"]
        best = row["best_peer"]
        cells = [workload, best or "-", "**%s**" % fmt(row["app_vs_best_peer"])]
        cells += [fmt(row["app_vs_peer"].get(p)) for p in peers]
        cells += [fmt(row["app_vs_null"]),
                  fmt(ratio(servers.get("app", {}).get("p99_us"), servers.get(best, {}).get("p99_us"))) if best else "-"]
        if with_cpu:
            cells.append(fmt(row["app_cpu_per_op_vs_best_peer"]))
        md.append("| " + " | ".join(cells) + " |")


for export, rows in summary["main"].items():
    ratio_table("\n**export `%s`** (throughput ratios, median of %s rounds; >1 = app faster)\n"
                % (export, machine["rounds"]), export, rows, True)
for export, rows in summary["placement"].items():
    rounds = max(s["rounds"] for row in rows.values() for s in row["servers"].values())
    ratio_table("\n**depth 1, CPUs pinned, export `%s`** (server on CPU 0 or 1, fio on CPU 0; median of %s rounds)\n"
                % (export, rounds), export, rows, False)
if flush:
    md.append("\n**connections and flushes** (random 4 KiB writes, 8 in flight per connection; nbdcopy of 1 GiB)\n")
    md.append("| export | workload | app / peer | flush requests | backend syncs |")
    md.append("|---|---|---|---|---|")
    for export, rows in sorted(flush.items()):
        for workload, row in sorted(rows.items(), key=lambda kv: flush_order(kv[0])):
            servers = row["servers"]
            app = servers.get("app", {}).get("bw_bytes")
            peer_name = next((p for p in servers if p != "app"), None)
            peer = servers[peer_name]["bw_bytes"] if peer_name else None
            req = median(row["flush_requests"]) if "flush_requests" in row else "-"
            syn = median(row["backend_syncs"]) if "backend_syncs" in row else "-"
            md.append("| %s | %s | %s (%s) | %s | %s |" % (export, workload, fmt(ratio(app, peer)), peer_name, req, syn))
if summary["metrics"]:
    md.append("\n**metrics on / off** (%s)\n" % summary["metrics_note"])
    md.append("| workload | throughput on / off |")
    md.append("|---|---|")
    for workload, row in summary["metrics"].items():
        md.append("| %s | %s |" % (workload, fmt(row["on_vs_off"])))
with open(os.path.join(out_dir, "tables.md"), "w") as f:
    f.write("\n".join(md) + "\n")

if os.environ.get("DOCS") != "1":
    sys.exit()
os.makedirs(docs_dir, exist_ok=True)
with open(os.path.join(docs_dir, "benchmark-results.json"), "w") as f:
    json.dump(summary, f, indent=1)
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("\nmatplotlib missing (apt-get install python3-matplotlib): docs/benchmark.png not drawn")
    sys.exit()

colors = {"app": "#2a7ab0", NULL: "#bbbbbb", "nbdkit-mem": "#e39c37", "qemu-mem": "#8cbf4f", "nbdsrv-mem": "#c45a5a",
          "nbdkit-file": "#e39c37", "qemu-file": "#8cbf4f", "nbdsrv-file": "#c45a5a"}
exports = [e for e in ("mem", "disk") if e in summary["main"]]
fig, axes = plt.subplots(len(exports), 1, figsize=(13, 4.2 * len(exports)), squeeze=False)
for ax, export in zip(axes[:, 0], exports):
    rows = summary["main"][export]
    servers = ["app"] + PEERS[export] + ([NULL] if export == "mem" else [])
    width = 0.8 / len(servers)
    for i, server in enumerate(servers):
        xs, ys = [], []
        for j, (workload, row) in enumerate(rows.items()):
            best = row["servers"].get(row["best_peer"], {}).get("bw_bytes") if row["best_peer"] else None
            value = row["servers"].get(server, {}).get("bw_bytes")
            if best and value:
                xs.append(j + (i - (len(servers) - 1) / 2) * width)
                ys.append(value / best)
        ax.bar(xs, ys, width, label=server, color=colors.get(server))
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(list(rows), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("throughput / best peer")
    ax.set_title("export %s (median of %s rounds, higher is better)" % (export, machine["rounds"]))
    ax.legend(fontsize=8, ncol=len(servers))
fig.tight_layout()
fig.savefig(os.path.join(docs_dir, "benchmark.png"), dpi=90)
print("\nwrote %s and %s" % (os.path.join(docs_dir, "benchmark-results.json"), os.path.join(docs_dir, "benchmark.png")))
