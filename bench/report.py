"""Summarises one bench/run.sh run: medians over rounds, app/peer ratios, CPU per request.

Usage:
  report.py RESULTS_DIR DOCS_DIR      reads RESULTS_DIR/records.jsonl (one JSON object per
      measurement), machine.json and multiconn.txt; writes RESULTS_DIR/summary.json and tables.md
      and prints the tables. With DOCS=1 in the environment it also rewrites the generated blocks
      of DOCS_DIR/BENCHMARKS.md and writes DOCS_DIR/benchmark-results.json and benchmark.png.
  report.py --summary SUMMARY_JSON DOCS_DIR   rewrites the generated blocks of
      DOCS_DIR/BENCHMARKS.md from a summary written before (e.g. after changing this script).

The generated blocks sit between `<!-- BEGIN generated:NAME -->` and `<!-- END generated:NAME -->`
lines; everything outside them is left as written. Every block is rewritten, so the page shows one
run: a block whose part did not run says so.
"""
import json
import os
import re
import statistics
import sys
from collections import defaultdict

PEERS = {"mem": ["nbdkit-mem", "qemu-mem", "nbdsrv-mem"], "disk": ["nbdkit-file", "qemu-file", "nbdsrv-file"]}
NULL = "nbdkit-null"
# The five workloads of issue 16's acceptance criteria.
ACCEPTANCE = ["randread-4k-qd32", "randwrite-4k-qd32", "randread-4k-4conn", "read-1m-qd8", "write-1m-qd8"]
ACCEPTANCE_NAMES = {
    "randread-4k-qd32": "4 KiB random read, depth 32",
    "randwrite-4k-qd32": "4 KiB random write, depth 32",
    "randread-4k-4conn": "4 KiB random read, 4 connections x 8",
    "read-1m-qd8": "1 MiB read, depth 8",
    "write-1m-qd8": "1 MiB write, depth 8",
}
# The container part's app instance, reported as `app`.
CONTAINER_APP = "app-1cpu"
SLOWDISK_APPS = {
    "app-elio-default": "app, event-loop-io unset (default)",
    "app-elio-true": "app, event-loop-io=true",
    "app-elio-false": "app, event-loop-io=false",
}
MAIN_ORDER = ["randread-4k-qd1", "randread-4k-qd32", "randwrite-4k-qd1", "randwrite-4k-qd32", "randread-4k-4conn",
              "read-1m-qd8", "write-1m-qd8", "nbdcopy-write-1conn", "nbdcopy-write-4conn", "nbdcopy-read-1conn",
              "nbdcopy-read-4conn"]
BLOCKS = ["machine", "acceptance", "container", "slowdisk", "main", "placement", "flush", "metrics", "start"]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def medians(rows):
    """(export, workload) -> server -> {bw_bytes, iops, p99_us, cpu_us_per_op, rounds} medians."""
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


def order(w):
    return MAIN_ORDER.index(w) if w in MAIN_ORDER else len(MAIN_ORDER)


def compare(rows, key=order):
    """Ratios of the app against its peers and the null ceiling, per export and workload."""
    table = {}
    by_key = medians(rows)
    for (export, workload), servers in sorted(by_key.items(), key=lambda kv: (kv[0][0], key(kv[0][1]))):
        app = servers.get("app", {}).get("bw_bytes")
        peers = {p: servers[p]["bw_bytes"] for p in PEERS[export] if p in servers and servers[p]["bw_bytes"]}
        best = max(peers, key=peers.get) if peers else None
        null = servers.get(NULL, {}).get("bw_bytes")
        if export == "disk" and null is None:
            null = by_key.get(("mem", workload), {}).get(NULL, {}).get("bw_bytes")
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


def acceptance(table):
    """Issue 16's view of a compare() table: per acceptance workload, mem and disk against the
    best peer (and mem against null), with CPU per request."""
    view = {}
    for w in ACCEPTANCE:
        mem, disk = table.get("mem", {}).get(w), table.get("disk", {}).get(w)
        if not mem and not disk:
            continue
        view[w] = {
            "mem_best_peer": mem and mem["best_peer"],
            "mem_vs_best_peer": mem and mem["app_vs_best_peer"],
            "mem_vs_null": mem and mem["app_vs_null"],
            "mem_cpu_vs_best_peer": mem and mem["app_cpu_per_op_vs_best_peer"],
            "disk_best_peer": disk and disk["best_peer"],
            "disk_vs_best_peer": disk and disk["app_vs_best_peer"],
            "disk_cpu_vs_best_peer": disk and disk["app_cpu_per_op_vs_best_peer"],
        }
    return view


def slowdisk(records):
    rows = [r for r in records if r.get("set") == "slowdisk"]
    if not rows:
        return None
    (export, workload), servers = next(iter(medians(rows).items()))
    peers = {p: servers[p]["bw_bytes"] for p in PEERS["disk"] if p in servers and servers[p]["bw_bytes"]}
    best = max(peers, key=peers.get) if peers else None
    b = servers.get(best, {})
    result = {"workload": workload, "servers": servers, "best_peer": best, "vs_best_peer": {}}
    for s, m in servers.items():
        result["vs_best_peer"][s] = {"throughput": ratio(m["bw_bytes"], b.get("bw_bytes")),
                                     "p99": ratio(m["p99_us"], b.get("p99_us")),
                                     "cpu_per_request": ratio(m["cpu_us_per_op"], b.get("cpu_us_per_op"))}
    # Proof that the runs started cold: pages of the file cached right before each run, and after.
    cache = [r for r in records if r.get("set") == "slowdisk-cache"]
    before = [r["pages_before"] for r in cache if isinstance(r.get("pages_before"), int)]
    after = [r["pages_after"] for r in cache if isinstance(r.get("pages_after"), int)]
    result["cache"] = {"pages_total": cache[0]["pages_total"] if cache else None,
                       "max_pages_before": max(before) if before else None,
                       "median_pages_after": median(after) if after else None}
    # Where each app ran its file I/O (from /actuator/nbd/disk): fallbacks to workers during a run,
    # and in how many runs it started and ended on the network threads.
    io = defaultdict(list)
    for r in records:
        if r.get("set") == "slowdisk-fileio":
            io[r["server"]].append(r)
    result["file_io"] = {}
    for server, rs in io.items():
        deltas = [r["fallbacks_after"] - r["fallbacks_before"] for r in rs
                  if isinstance(r.get("fallbacks_after"), int) and isinstance(r.get("fallbacks_before"), int)]
        result["file_io"][server] = {
            "runs": len(rs),
            "fallbacks_per_run": median(deltas) if deltas else None,
            "started_on_network_threads": sum(1 for r in rs if r.get("network_threads_before") == "true"),
            "ended_on_network_threads": sum(1 for r in rs if r.get("network_threads_after") == "true"),
        }
    return result


def summarise(out_dir):
    records = [json.loads(line) for line in open(os.path.join(out_dir, "records.jsonl")) if line.strip()]
    machine = json.load(open(os.path.join(out_dir, "machine.json")))
    multiconn = {}
    if os.path.exists(os.path.join(out_dir, "multiconn.txt")):
        for line in open(os.path.join(out_dir, "multiconn.txt")):
            key, value = line.split()
            multiconn[key] = value

    summary = {"machine": machine, "multiconn": multiconn}
    summary["main"] = compare([r for r in records if r.get("set") in ("main", "copy")])
    summary["placement"] = compare([r for r in records if r.get("set") == "placement"], lambda w: w)
    container_rows = [dict(r, server="app") if r.get("server") == CONTAINER_APP else r
                      for r in records if r.get("set") == "container"]
    summary["container"] = compare(container_rows)
    summary["slowdisk"] = slowdisk(records)

    # Flush scaling (issue 3): app and one peer per export, with group-commit counters.
    flush = {}
    for (export, workload), servers in medians([r for r in records if r.get("set") == "flush"]).items():
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

    summary["metrics"] = {}
    for (export, workload), servers in medians([r for r in records if r.get("set") == "metrics"]).items():
        on, off = servers.get("app", {}).get("bw_bytes"), servers.get("app-nometrics", {}).get("bw_bytes")
        summary["metrics"][workload] = {"on_vs_off": ratio(on, off), "p99_on_us": servers.get("app", {}).get("p99_us"),
                                        "p99_off_us": servers.get("app-nometrics", {}).get("p99_us"),
                                        "cpu_per_request_on_vs_off": ratio(servers.get("app", {}).get("cpu_us_per_op"),
                                                                           servers.get("app-nometrics", {}).get(
                                                                               "cpu_us_per_op"))}
    summary["metrics_note"] = next((r["note"] for r in records if r.get("set") == "metrics-note"), None)
    summary["start"] = {r["server"]: {k: r[k] for k in ("first_request_s", "rss_before", "rss_after")}
                        for r in records if r.get("set") == "start"}
    return summary


def fmt(v, spec="{:.2f}"):
    return spec.format(v) if v is not None else "-"


def flush_order(w):
    m = re.search(r"(\d+)conn", w)
    return (w.split("-")[0], int(m.group(1)) if m else 0, w)


def setting(name, value):
    return "`%s` not set (the default)" % name if value in (None, "", "default") else "`%s=%s`" % (name, value)


def not_run(part):
    return ["_Not measured in this run (`bench/run.sh %s`)._" % part]


def machine_block(summary):
    m = summary["machine"]
    ramp = ", %s s ramp" % m["ramp_s"] if m.get("ramp_s") else ""
    settings = m.get("app_settings", {})
    advertised = {}
    for key, value in summary.get("multiconn", {}).items():
        server, export = key.split("/")
        if export in ("mem", "disk") and server != "app-start":
            advertised[server] = advertised.get(server, True) and value == "multi-conn"
    command = "`%s`" % ("ROUNDS=%s RUNTIME=%s bench/run.sh %s" % (m["rounds"], m["runtime_s"], m.get("args", ""))).rstrip()
    run = "Run of %s (%s, parts %s; " % (m["started"], command, m["parts"]) if "started" in m else "Run ("
    lines = [run + "%s rounds of %s s%s): %s vCPUs (%s), %s RAM, Linux %s, %s, %s, %s, %s, %s, %s."
             % (m["rounds"], m["runtime_s"], ramp, m["cpus"], m["cpu"], m["memory"], m["kernel"], m["java"], m["fio"],
                m["libnbd"], m["nbdkit"], m["qemu-nbd"], m["nbd-server"].replace("This is ", "")),
             "Load average when it started: %s." % " ".join(m["loadavg"]),
             "App settings: %s." % ", ".join(setting(k, settings.get(k))
                                             for k in ("nbd.server.busy-poll", "nbd.exports.disk.event-loop-io"))]
    if advertised:
        without = sorted(s for s, v in advertised.items() if not v)
        lines.append("Every server advertised `CAN_MULTI_CONN` (qemu-nbd through `-e 8`)." if not without else
                     "Servers without `CAN_MULTI_CONN`: %s." % ", ".join(without))
    return [" ".join(lines)]


def acceptance_table(view, rounds):
    md = ["| workload | `mem` / best peer | `mem` / null | CPU per request `mem` / best peer "
          "| `disk` / best peer | CPU per request `disk` / best peer |", "|---|---|---|---|---|---|"]
    for w, v in view.items():
        md.append("| %s | **%s** (%s) | %s | %s | **%s** (%s) | %s |" % (
            ACCEPTANCE_NAMES[w], fmt(v["mem_vs_best_peer"]), v["mem_best_peer"] or "-", fmt(v["mem_vs_null"]),
            fmt(v["mem_cpu_vs_best_peer"]), fmt(v["disk_vs_best_peer"]), v["disk_best_peer"] or "-",
            fmt(v["disk_cpu_vs_best_peer"])))
    md.append("")
    md.append("Median of %s rounds. Throughput: >1 = app faster. CPU per request (the server's CPU time over the "
              "requests served): <1 = app cheaper. Best peer = the fastest of nbdkit, qemu-nbd and nbd-server on "
              "that export and workload; null = nbdkit's null plugin." % rounds)
    return md


def ratio_table(rows, export, with_cpu):
    """One Markdown table of app/peer ratios per workload (from compare())."""
    peers = PEERS[export]
    md = ["| workload | best peer | app / best peer | " + " | ".join("app / %s" % p for p in peers)
          + " | app / null | p99 app / best peer |" + (" CPU per request app / best peer |" if with_cpu else ""),
          "|---" * (5 + len(peers) + with_cpu) + "|"]
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
    return md


def rounds_of(table):
    return max((s["rounds"] for rows in table.values() for row in rows.values() for s in row["servers"].values()),
               default=0)


def blocks(summary):
    """Block name -> Markdown lines."""
    m = summary["machine"]
    out = {"machine": machine_block(summary)}

    view = acceptance(summary.get("main", {}))
    out["acceptance"] = acceptance_table(view, rounds_of(summary["main"])) if view else not_run("main")

    container = summary.get("container") or {}
    view = acceptance(container)
    if view:
        c = m.get("container", {})
        out["container"] = ["**container-like: 1 CPU, %s** (every server on CPU 1 and fio on CPU 0, with "
                            "`taskset`; the app a second instance launched on that CPU)" % c.get("app_jvm", "-Xmx512m"),
                            ""]
        out["container"] += acceptance_table(view, rounds_of(container))
    else:
        out["container"] = not_run("container")

    sd = summary.get("slowdisk")
    if sd:
        best = sd["best_peer"]
        io = sd.get("file_io", {})
        md = ["| server | throughput / best peer | p99 / best peer | CPU per request / best peer "
              "| file I/O on network threads at start / end of a run | fallbacks to workers per run |",
              "|---|---|---|---|---|---|"]
        for s in list(SLOWDISK_APPS) + PEERS["disk"]:
            if s not in sd["servers"]:
                continue
            v = sd["vs_best_peer"][s]
            name = SLOWDISK_APPS.get(s, s)
            f = io.get(s)
            where = "%d / %d of %d runs" % (f["started_on_network_threads"], f["ended_on_network_threads"],
                                            f["runs"]) if f else "-"
            md.append("| %s | %s | %s | %s | %s | %s |" % (
                name, "**%s**" % fmt(v["throughput"]) if s in SLOWDISK_APPS else fmt(v["throughput"]), fmt(v["p99"]),
                fmt(v["cpu_per_request"]), where, fmt(f["fallbacks_per_run"], "{:g}") if f else "-"))
        cache = sd["cache"]
        md.append("")
        rounds = max(s["rounds"] for s in sd["servers"].values())
        md.append("4 KiB random reads over the whole 1 GiB `disk` file, 4 connections x 8 deep, each run starting "
                  "with the file's pages dropped from the page cache; best peer: %s; median of %s rounds. Pages of "
                  "the file in the page cache (of %s): at most %s right before a run, %s (median) right after one."
                  % (best, rounds, cache["pages_total"], fmt(cache["max_pages_before"], "{}"),
                     fmt(cache["median_pages_after"], "{:.0f}")))
        out["slowdisk"] = md
    else:
        out["slowdisk"] = not_run("slowdisk")

    md = []
    for export, rows in summary["main"].items():
        md += ["**export `%s`** (throughput ratios, median of %s rounds; >1 = app faster)"
               % (export, rounds_of({export: rows})), ""]
        md += ratio_table(rows, export, True) + [""]
    out["main"] = md[:-1] if md else not_run("main copy")

    md = []
    for export, rows in summary["placement"].items():
        md += ["**depth 1, CPUs pinned, export `%s`** (server on CPU 0 or 1, fio on CPU 0; median of %s rounds)"
               % (export, rounds_of({export: rows})), ""]
        md += ratio_table(rows, export, False) + [""]
    out["placement"] = md[:-1] if md else not_run("placement")

    flush = summary["flush"]
    if flush:
        md = ["**connections and flushes** (random 4 KiB writes, 8 in flight per connection; nbdcopy of 1 GiB)", "",
              "| export | workload | app / peer | flush requests | backend syncs |", "|---|---|---|---|---|"]
        for export, rows in sorted(flush.items()):
            for workload, row in sorted(rows.items(), key=lambda kv: flush_order(kv[0])):
                servers = row["servers"]
                app = servers.get("app", {}).get("bw_bytes")
                peer_name = next((p for p in servers if p != "app"), None)
                peer = servers[peer_name]["bw_bytes"] if peer_name else None
                req = median(row["flush_requests"]) if "flush_requests" in row else "-"
                syn = median(row["backend_syncs"]) if "backend_syncs" in row else "-"
                md.append("| %s | %s | %s (%s) | %s | %s |" % (export, workload, fmt(ratio(app, peer)), peer_name, req,
                                                              syn))
        out["flush"] = md
    else:
        out["flush"] = not_run("flush")

    if summary["metrics"]:
        # Summaries of earlier runs have no CPU figure.
        cpu = any(row.get("cpu_per_request_on_vs_off") for row in summary["metrics"].values())
        md = ["**metrics on / off** (%s)" % summary["metrics_note"], "",
              "| workload | throughput on / off |" + (" CPU per request on / off |" if cpu else ""),
              "|---|---|" + ("---|" if cpu else "")]
        for workload, row in summary["metrics"].items():
            md.append("| %s | %s |" % (workload, fmt(row["on_vs_off"]))
                      + (" %s |" % fmt(row.get("cpu_per_request_on_vs_off")) if cpu else ""))
        out["metrics"] = md
    else:
        out["metrics"] = not_run("metrics")

    start = summary["start"]
    if start:
        names = {"app": "app", "nbdkit-mem": "nbdkit memory"}
        servers = [s for s in ("app", "nbdkit-mem") if s in start]
        md = ["| | " + " | ".join(names[s] for s in servers) + " |", "|---" * (len(servers) + 1) + "|",
              "| first READ answered after launch | " + " | ".join("%.2f s" % start[s]["first_request_s"]
                                                                   for s in servers) + " |",
              "| RSS before writing | " + " | ".join("%d MiB" % (start[s]["rss_before"] >> 20) for s in servers) + " |",
              "| RSS after writing 256 MiB into a 16 GiB memory export | " + " | ".join(
                  "%d MiB (+%d MiB)" % (start[s]["rss_after"] >> 20, (start[s]["rss_after"] - start[s]["rss_before"]) >> 20)
                  for s in servers) + " |"]
        out["start"] = md
    else:
        out["start"] = not_run("start")
    return out


def update_doc(path, generated):
    """Replaces the content of every generated block of the Markdown file at path."""
    text = open(path).read()
    missing = []
    for name in BLOCKS:
        pattern = re.compile(r"(<!-- BEGIN generated:%s -->\n).*?(<!-- END generated:%s -->)" % (name, name), re.S)
        if not pattern.search(text):
            missing.append(name)
            continue
        body = "\n".join(generated[name]) + "\n"
        text = pattern.sub(lambda m: m.group(1) + "\n" + body + "\n" + m.group(2), text)
    with open(path, "w") as f:
        f.write(text)
    if missing:
        print("no generated block in %s for: %s" % (path, ", ".join(missing)))


def print_absolute(summary):
    """The medians behind the ratios, for a look at the run itself."""
    sets = [("main", summary["main"]), ("container", summary.get("container") or {}),
            ("placement", summary["placement"])]
    if summary.get("slowdisk"):
        sets.append(("slowdisk", {"disk": {summary["slowdisk"]["workload"]: summary["slowdisk"]}}))
    for name, table in sets:
        for export, rows in table.items():
            print()
            print("%s, export %s: MB/s, p99 us, server CPU us per request (medians)" % (name, export))
            for workload, row in rows.items():
                cells = ["%s %.0f/%s/%s" % (s, (v["bw_bytes"] or 0) / 1e6, fmt(v["p99_us"], "{:.0f}"),
                                            fmt(v["cpu_us_per_op"], "{:.1f}"))
                         for s, v in sorted(row["servers"].items())]
                print("  %-24s %s" % (workload, "  ".join(cells)))


def draw(summary, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\nmatplotlib missing (apt-get install python3-matplotlib): %s not drawn" % path)
        return
    colors = {"app": "#2a7ab0", NULL: "#bbbbbb", "nbdkit-mem": "#e39c37", "qemu-mem": "#8cbf4f",
              "nbdsrv-mem": "#c45a5a", "nbdkit-file": "#e39c37", "qemu-file": "#8cbf4f", "nbdsrv-file": "#c45a5a",
              "app-elio-default": "#2a7ab0", "app-elio-true": "#7fb3d5", "app-elio-false": "#1b4f72"}
    rounds = summary["machine"]["rounds"]
    panels = []
    for export in ("mem", "disk"):
        if export in summary["main"]:
            panels.append(("export %s, defaults, 2 CPUs shared (median of %s rounds)" % (export, rounds),
                           summary["main"][export], export))
    container = summary.get("container") or {}
    for export in ("mem", "disk"):
        if export in container:
            panels.append(("container-like: export %s, every server on 1 CPU, app with -Xmx512m" % export,
                           container[export], export))
    sd = summary.get("slowdisk")
    panels_count = len(panels) + (1 if sd else 0)
    if not panels_count:
        return
    fig, axes = plt.subplots(panels_count, 1, figsize=(13, 3.8 * panels_count), squeeze=False)
    for ax, (title, rows, export) in zip(axes[:, 0], panels):
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
        ax.set_ylim(0, ax.get_ylim()[1] * 1.2)  # room for the legend above the bars
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(list(rows), rotation=15, ha="right", fontsize=8)
        ax.set_ylabel("throughput / best peer")
        ax.set_title(title + ", higher is better", fontsize=10)
        ax.legend(fontsize=8, ncol=len(servers))
    if sd:
        ax = axes[-1, 0]
        servers = [s for s in list(SLOWDISK_APPS) + PEERS["disk"] if s in sd["servers"]]
        ys = [sd["vs_best_peer"][s]["throughput"] or 0 for s in servers]
        ax.bar(range(len(servers)), ys, 0.6, color=[colors.get(s) for s in servers])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(servers)))
        ax.set_xticklabels([SLOWDISK_APPS.get(s, s) for s in servers], rotation=10, ha="right", fontsize=8)
        ax.set_ylabel("throughput / best peer")
        ax.set_title("cold page cache: 4 KiB random reads, 4 connections x 8, export disk, higher is better",
                     fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main():
    if sys.argv[1] == "--summary":
        summary = json.load(open(sys.argv[2]))
        docs_dir = sys.argv[3]
        update_doc(os.path.join(docs_dir, "BENCHMARKS.md"), blocks(summary))
        return
    out_dir, docs_dir = sys.argv[1], sys.argv[2]
    summary = summarise(out_dir)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    generated = blocks(summary)
    with open(os.path.join(out_dir, "tables.md"), "w") as f:
        f.write("\n\n".join("\n".join(generated[name]) for name in BLOCKS) + "\n")
    print_absolute(summary)
    for name in BLOCKS:
        print()
        print("## " + name)
        print("\n".join(generated[name]))
    if os.environ.get("DOCS") != "1":
        return
    os.makedirs(docs_dir, exist_ok=True)
    with open(os.path.join(docs_dir, "benchmark-results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    update_doc(os.path.join(docs_dir, "BENCHMARKS.md"), generated)
    draw(summary, os.path.join(docs_dir, "benchmark.png"))
    print("\nwrote %s, the generated blocks of %s and %s" % (os.path.join(docs_dir, "benchmark-results.json"),
                                                             os.path.join(docs_dir, "BENCHMARKS.md"),
                                                             os.path.join(docs_dir, "benchmark.png")))


if __name__ == "__main__":
    main()
