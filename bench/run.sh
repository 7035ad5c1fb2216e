#!/usr/bin/env bash
# NBD benchmark: the sample app, run with its defaults, side by side with the NBD servers from
# Debian packages. One command measures everything and updates docs/BENCHMARKS.md and its picture:
#
#   mvn -B package -DskipTests && bench/run.sh     # all parts but profile: about 30 minutes on 2 cores
#   ROUNDS=5 RUNTIME=10 bench/run.sh main copy     # some parts, longer runs
#   BUSY_POLL=50us DISK_EVENT_LOOP_IO=true bench/run.sh main   # the app with those two settings forced
#
# Parts (arguments; default all but profile, in this order whatever the order given):
#   start      start-up time and RSS
#   main       fio workloads on every server, both exports
#   copy       nbdcopy of a 1 GiB image into every server
#   flush      1/2/4/8 connections with and without flushes (app and nbdkit)
#   metrics    the app with NBD metrics on vs off
#   placement  depth-1 workloads with server and fio pinned to the same CPU and to different CPUs
#              (the round trip of depth 1 depends on the scheduler)
#   container  container-like: every server pinned to CPU 1 (taskset -c 1), fio to CPU 0, the app as
#              a second instance launched under taskset with -Xmx512m (so the JVM sizes itself for
#              one CPU) and its 1 GiB memory export filled (export pages live outside the heap);
#              the five acceptance workloads of issue 16 on both exports
#   slowdisk   what file I/O on the network threads does when the page cache does not answer: the
#              disk file's pages are dropped from the page cache before every run (fsync, then
#              posix_fadvise DONTNEED), then 4 KiB random reads on 4 connections, 8 deep each, over
#              the whole file; app instances with nbd.exports.disk.event-loop-io unset, true and
#              false against nbdkit-file, qemu-file and nbdsrv-file
#   profile    JFR recordings of the app under a few workloads, summarised by bench/jfr_top.py into
#              profile-*.txt (a run of profile alone leaves docs alone)
#
# Servers, all on 127.0.0.1 with free ports, started once and kept for the whole run:
#   app          the sample app jar: export `mem` (memory backend) and `disk` (file backend)
#   app-1cpu     container part: the same jar under `taskset -c 1` with -Xmx512m
#   app-elio-*   slowdisk part: the jar with event-loop-io true and false (unset: `app` itself, unless
#                DISK_EVENT_LOOP_IO is set: then one more instance)
#   nbdkit-mem   nbdkit memory plugin, size=1G
#   nbdkit-null  nbdkit null plugin: moves no data, the protocol ceiling
#   nbdkit-file  nbdkit file plugin on the same file as the app's `disk`
#   qemu-mem     qemu-nbd -f raw -t -e 8 on a tmpfs file;  qemu-file: same on the disk file
#   nbdsrv-mem   nbd-server (one process, config written here) on a tmpfs file; nbdsrv-file: disk file
# Every app instance runs with the app's defaults: no tuning property is passed unless BUSY_POLL or
# DISK_EVENT_LOOP_IO say so (machine.json records what was passed, "default" when nothing).
# The disk file lives in a temporary directory under $BENCH_TMPDIR (default /var/tmp: a real
# disk, not tmpfs), the tmpfs files under /dev/shm. Every image is first filled with the same
# 1 GiB of random data, so reads move real data (the app's memory export would otherwise answer
# unwritten ranges with holes).
#
# Method: each part runs ROUNDS rounds; in each round every workload runs once on every server,
# servers in a fresh random order per workload, so slow phases of a shared machine hit all
# servers alike. Reported figures are medians over rounds; CPU per request is the server's CPU
# time (from /proc, children included) over the requests fio completed.
#
# Environment:
#   ROUNDS (3)  RUNTIME (2, seconds per fio run)  RAMP (0, fio ramp seconds; the images are
#   filled and every server warmed up before the first round)
#   COPY_DIRS ("write": nbdcopy into the server; add "read" for server -> null:)
#   FLUSH_ROUNDS (1)  PLACEMENT_ROUNDS (3)  FSYNC_EVERY (32 writes per flush for the "with flushes" runs)
#   BUSY_POLL (empty: nbd.server.busy-poll not passed; e.g. 50us or 0)
#   DISK_EVENT_LOOP_IO (empty: nbd.exports.disk.event-loop-io not passed; true or false). The
#   slowdisk part sets its own three values and ignores this one.
#   CONTAINER_HEAP (512m: -Xmx of the container part's app)
#   JAR (sample-app/target/sample-app-*.jar)  BENCH_TMPDIR (/var/tmp)  RESULTS (bench/results)
#   APP_JAVA_OPTS (extra JVM options, e.g. a JFR recording)  APP_ARGS (extra app arguments)
#   DOCS (1: also rewrite the generated blocks of docs/BENCHMARKS.md, docs/benchmark-results.json
#   and docs/benchmark.png; 0 for trial runs)
#
# Output: tables on stdout, bench/results/<timestamp>/ (raw fio JSON, records.jsonl, summary.json,
# tables.md, server logs, commands.txt with each app instance's command line).
# Needs: java, fio (with the nbd engine), nbdkit, qemu-nbd (qemu-utils), nbd-server, nbdcopy and
# nbdinfo (libnbd-bin), python3-libnbd, curl, taskset; fincore (util-linux) to check that the
# slowdisk runs start cold; python3-matplotlib for the picture.

set -euo pipefail

ROOT=${BENCH_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
ROUNDS=${ROUNDS:-3}
RUNTIME=${RUNTIME:-2}
RAMP=${RAMP:-0}
COPY_DIRS=${COPY_DIRS:-write}
FLUSH_ROUNDS=${FLUSH_ROUNDS:-1}
PLACEMENT_ROUNDS=${PLACEMENT_ROUNDS:-3}
# Tuning properties of the app: empty = not passed, the app's defaults (recorded in machine.json).
DISK_EVENT_LOOP_IO=${DISK_EVENT_LOOP_IO:-}
BUSY_POLL=${BUSY_POLL:-}
CONTAINER_HEAP=${CONTAINER_HEAP:-512m}
FSYNC_EVERY=${FSYNC_EVERY:-32}
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp}
DOCS=${DOCS:-1}
PY=/usr/bin/python3   # Debian's python3: has python3-libnbd and python3-matplotlib
PARTS=("$@")
[ ${#PARTS[@]} -gt 0 ] || PARTS=(start main copy flush metrics placement container slowdisk)
for part in "${PARTS[@]}"; do
	case $part in
	start | main | copy | flush | metrics | placement | container | slowdisk | profile) ;;
	*) echo "unknown part '$part' (see the top of bench/run.sh)" >&2; exit 2 ;;
	esac
done
if [ "${PARTS[*]}" = profile ]; then DOCS=0; fi

JAR=${JAR:-$(ls "$ROOT"/sample-app/target/sample-app-*.jar 2>/dev/null | grep -v -e sources -e original | head -1 || true)}
[ -n "$JAR" ] && [ -f "$JAR" ] || { echo "No sample app jar: run 'mvn -B package -DskipTests' first" >&2; exit 1; }
# spring-boot:repackage keeps an old jar when only a library module changed: say so.
newest_lib=$(ls -t "$ROOT"/nbd-autoconfigure/target/nbd-autoconfigure-*.jar 2>/dev/null | grep -v tests | head -1 || true)
if [ -n "$newest_lib" ] && [ "$newest_lib" -nt "$JAR" ]; then
	echo "warning: $JAR is older than $newest_lib; delete it and run mvn package again to benchmark current code" >&2
fi
for tool in java fio nbdkit qemu-nbd nbd-server nbdcopy nbdinfo curl taskset; do
	command -v "$tool" >/dev/null || { echo "missing $tool (see the Debian packages listed in bench/run.sh)" >&2; exit 1; }
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${RESULTS:-$ROOT/bench/results}/$STAMP
mkdir -p "$OUT/raw"
RECORDS=$OUT/records.jsonl
: > "$RECORDS"
WORK=$(mktemp -d "$BENCH_TMPDIR/nbd-bench.XXXXXX")
SHM=$(mktemp -d /dev/shm/nbd-bench.XXXXXX)
PIDS=()

cleanup() {
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK" "$SHM"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# free_port VAR: sets VAR to a free port never handed out before in this run (the kernel may
# offer the same one twice, e.g. for the app's NBD and HTTP ports). No subshell, so it remembers.
TAKEN_PORTS=" "
free_port() {
	local candidate # not named like a caller's variable: printf -v must reach the caller's
	while :; do
		candidate=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
		case "$TAKEN_PORTS" in *" $candidate "*) ;; *) break ;; esac
	done
	TAKEN_PORTS+="$candidate "
	printf -v "$1" '%s' "$candidate"
}

# Records one measurement as a JSON line: record key=value... (numbers stay numbers).
record() {
	$PY - "$@" >> "$RECORDS" <<'EOF'
import json, sys
rec = {}
for kv in sys.argv[1:]:
    k, v = kv.split("=", 1)
    try:
        rec[k] = int(v)
    except ValueError:
        try:
            rec[k] = float(v)
        except ValueError:
            rec[k] = v
print(json.dumps(rec))
EOF
}

wait_nbd() { # uri [timeout seconds]
	local deadline=$((SECONDS + ${2:-60}))
	until nbdinfo --size "$1" >/dev/null 2>&1; do
		[ $SECONDS -lt $deadline ] || { echo "server at $1 did not come up" >&2; return 1; }
		sleep 0.1
	done
}

declare -A URI     # server/export -> nbd URI
declare -A HTTP    # app instance -> actuator base URL
declare -A APP_PID
declare -A SERVER_PID # server -> pid whose CPU time (with reaped children) is the server's

# start_app name [extra app args...]: one instance of the jar. The caller may set, for this call:
#   APP_LAUNCH  a command prefix, e.g. "taskset -c 1" (the JVM then sizes itself for those CPUs)
#   APP_JVM     extra JVM options, e.g. -Xmx512m
#   APP_ELIO    nbd.exports.disk.event-loop-io for this instance (empty = not passed); when unset,
#               DISK_EVENT_LOOP_IO applies
start_app() {
	local name=$1
	shift
	local port http elio=${APP_ELIO-$DISK_EVENT_LOOP_IO}
	local tuning=()
	[ -z "$elio" ] || tuning+=(--nbd.exports.disk.event-loop-io="$elio")
	[ -z "$BUSY_POLL" ] || tuning+=(--nbd.server.busy-poll="$BUSY_POLL")
	free_port port
	free_port http
	mkdir -p "$WORK/$name"
	# shellcheck disable=SC2206
	local cmd=(${APP_LAUNCH:-} java ${APP_JAVA_OPTS:-} ${APP_JVM:-} -jar "$JAR" --nbd.server.port="$port"
		--server.port="$http" --nbd.exports.disk.path="$WORK/disk.img" ${tuning[@]+"${tuning[@]}"} ${APP_ARGS:-} "$@")
	echo "$name: ${cmd[*]}" >> "$OUT/commands.txt" # what each instance was given
	(cd "$WORK/$name" && exec "${cmd[@]}") > "$OUT/$name.log" 2>&1 &
	PIDS+=($!)
	APP_PID[$name]=$!
	SERVER_PID[$name]=$!
	URI[$name/mem]="nbd://127.0.0.1:$port/mem"
	URI[$name/disk]="nbd://127.0.0.1:$port/disk"
	URI[$name/big]="nbd://127.0.0.1:$port/big"
	HTTP[$name]="http://127.0.0.1:$http"
}

start_peers() {
	local p
	free_port p; nbdkit -f -i 127.0.0.1 -p "$p" memory size=1G > "$OUT/nbdkit-mem.log" 2>&1 &
	PIDS+=($!); SERVER_PID[nbdkit-mem]=$!; URI[nbdkit-mem/mem]="nbd://127.0.0.1:$p/"
	free_port p; nbdkit -f -i 127.0.0.1 -p "$p" null size=1G > "$OUT/nbdkit-null.log" 2>&1 &
	PIDS+=($!); SERVER_PID[nbdkit-null]=$!; URI[nbdkit-null/mem]="nbd://127.0.0.1:$p/"; URI[nbdkit-null/disk]=${URI[nbdkit-null/mem]}
	free_port p; nbdkit -f -i 127.0.0.1 -p "$p" file file="$WORK/disk.img" > "$OUT/nbdkit-file.log" 2>&1 &
	PIDS+=($!); SERVER_PID[nbdkit-file]=$!; URI[nbdkit-file/disk]="nbd://127.0.0.1:$p/"
	truncate -s 1G "$SHM/qemu-mem.img" "$SHM/nbdsrv-mem.img"
	free_port p; qemu-nbd -f raw -t -e 8 -b 127.0.0.1 -p "$p" -x mem "$SHM/qemu-mem.img" > "$OUT/qemu-mem.log" 2>&1 &
	PIDS+=($!); SERVER_PID[qemu-mem]=$!; URI[qemu-mem/mem]="nbd://127.0.0.1:$p/mem"
	free_port p; qemu-nbd -f raw -t -e 8 -b 127.0.0.1 -p "$p" -x disk "$WORK/disk.img" > "$OUT/qemu-file.log" 2>&1 &
	PIDS+=($!); SERVER_PID[qemu-file]=$!; URI[qemu-file/disk]="nbd://127.0.0.1:$p/disk"
	free_port p
	cat > "$WORK/nbd-server.conf" <<EOF
[generic]
	listenaddr = 127.0.0.1
	port = $p
	allowlist = false
[mem]
	exportname = $SHM/nbdsrv-mem.img
	flush = true
	fua = true
[disk]
	exportname = $WORK/disk.img
	flush = true
	fua = true
EOF
	# nbd-server's foreground flag (-d) serves one client only: let it daemonise, keep its pid.
	nbd-server -C "$WORK/nbd-server.conf" -p "$WORK/nbd-server.pid" > "$OUT/nbd-server.log" 2>&1
	local deadline=$((SECONDS + 10))
	until [ -s "$WORK/nbd-server.pid" ]; do
		[ $SECONDS -lt $deadline ] || { echo "nbd-server did not start (see $OUT/nbd-server.log)" >&2; return 1; }
		sleep 0.1
	done
	PIDS+=("$(cat "$WORK/nbd-server.pid")")
	SERVER_PID[nbdsrv-mem]=$(cat "$WORK/nbd-server.pid"); SERVER_PID[nbdsrv-file]=${SERVER_PID[nbdsrv-mem]}
	URI[nbdsrv-mem/mem]="nbd://127.0.0.1:$p/mem"; URI[nbdsrv-file/disk]="nbd://127.0.0.1:$p/disk"
}

MEM_SERVERS=(app nbdkit-mem qemu-mem nbdsrv-mem nbdkit-null)
DISK_SERVERS=(app nbdkit-file qemu-file nbdsrv-file)

# servers_of EXPORT [APP]: sets the array `servers` to the servers measured on that export, with
# APP (an app instance's name) in place of `app`.
servers_of() {
	if [ "$1" = mem ]; then servers=("${MEM_SERVERS[@]}"); else servers=("${DISK_SERVERS[@]}"); fi
	servers[0]=${2:-app}
}

shuffled() { printf '%s\n' "$@" | shuf; }

# CPU time (user+system, including reaped children, e.g. nbd-server's per-connection
# processes) of a server, in clock ticks.
cpu_ticks() { awk '{print $14+$15+$16+$17}' "/proc/${SERVER_PID[$1]}/stat" 2>/dev/null || echo 0; }

# One fio run; records iops, bandwidth, latency and the server's CPU time per request.
# fio_run set export workload server round file args...  (FIO_LABEL: the server's name in the record)
fio_run() {
	local set=$1 export=$2 workload=$3 server=$4 round=$5 file=$6
	shift 6
	local uri=${URI[$server/$export]} cpu0 cpu1
	cpu0=$(cpu_ticks "$server")
	# shellcheck disable=SC2086
	if ! ${FIO_CPU:+taskset -c $FIO_CPU} fio --name="$workload" --ioengine=nbd --uri="$uri" --time_based --runtime="$RUNTIME" \
		--ramp_time="$RAMP" --group_reporting --output-format=json --output="$file" "$@" > /dev/null 2>"$file.err"; then
		log "fio failed: $server $export $workload (see $file.err)"
		return 0
	fi
	cpu1=$(cpu_ticks "$server")
	$PY - "$file" "set=$set" "export=$export" "workload=$workload" "server=${FIO_LABEL:-$server}" "round=$round" \
		"cpu_ticks=$((cpu1 - cpu0))" "runtime=$RUNTIME" "ramp=$RAMP" >> "$RECORDS" <<'EOF'
import json, os, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
rec = dict(kv.split("=", 1) for kv in sys.argv[2:])
rec["round"] = int(rec["round"])
ticks = int(rec.pop("cpu_ticks"))
runtime, ramp = float(rec.pop("runtime")), float(rec.pop("ramp"))
iops = bw = 0.0
p99 = mean = 0.0
for d in ("read", "write"):
    s = job[d]
    if s["total_ios"] > 0:
        iops += s["iops"]
        bw += s["bw_bytes"]
        p99 = max(p99, s["clat_ns"].get("percentile", {}).get("99.000000", 0) / 1000)
        mean = max(mean, s["clat_ns"]["mean"] / 1000)
sync = job.get("sync", {})
ios = job["read"]["total_ios"] + job["write"]["total_ios"]
# The server's CPU also covers fio's ramp time: count its requests at the measured rate.
total = ios * (runtime + ramp) / runtime
rec.update(iops=iops, bw_bytes=bw, p99_us=p99, mean_us=mean, syncs=sync.get("total_ios", 0),
           cpu_us_per_op=ticks / os.sysconf("SC_CLK_TCK") * 1e6 / total if total else None)
print(json.dumps(rec))
EOF
}

# One nbdcopy run: copy_run set export workload server round direction connections [extra nbdcopy args]
copy_run() {
	local set=$1 export=$2 workload=$3 server=$4 round=$5 direction=$6 conns=$7
	shift 7
	local uri=${URI[$server/$export]} t0 t1 rc=0
	t0=$(date +%s%N)
	if [ "$direction" = write ]; then
		nbdcopy -C "$conns" "$@" "$SHM/src.img" "$uri" 2>"$OUT/raw/copy.err" || rc=$?
	else
		nbdcopy -C "$conns" --no-extents "$@" "$uri" null: 2>"$OUT/raw/copy.err" || rc=$?
	fi
	t1=$(date +%s%N)
	if [ $rc -ne 0 ]; then
		log "nbdcopy failed: $server $export $workload"
		return 0
	fi
	record "set=$set" "export=$export" "workload=$workload" "server=$server" "round=$round" \
		"seconds=$(awk "BEGIN{print ($t1-$t0)/1e9}")" "bw_bytes=$(awk "BEGIN{print 1073741824/(($t1-$t0)/1e9)}")"
}

# Flush requests and backend syncs the app counted for an export, from /actuator/nbd, as
# "requests syncs"; "- -" when the endpoint or the fields are not there (yet).
flush_counts() { # app export
	curl -fsS "${HTTP[$1]}/actuator/nbd/$2" 2>/dev/null | $PY -c '
import json, sys
try:
    e = json.load(sys.stdin)
except Exception:
    print("- -"); sys.exit()
if "exports" in e:
    e = e["exports"][0]
print(e.get("flushRequests", "-"), e.get("backendSyncs", "-"))' 2>/dev/null || echo "- -"
}

# Where an app instance's file export runs reads and plain writes, from /actuator/nbd/{export}'s
# fileIo, as "onNetworkThreads fallbacks"; "- -" when the endpoint or the field is not there.
file_io() { # app export
	curl -fsS "${HTTP[$1]}/actuator/nbd/$2" 2>/dev/null | $PY -c '
import json, sys
try:
    f = json.load(sys.stdin).get("fileIo") or {}
except Exception:
    f = {}
print(str(f.get("onNetworkThreads", "-")).lower(), f.get("fallbacks", "-"))' 2>/dev/null || echo "- -"
}

# Workloads of the main part: name and fio arguments.
declare -A FIO_ARGS=(
	[randread-4k-qd1]="--rw=randread --bs=4k --iodepth=1"
	[randread-4k-qd32]="--rw=randread --bs=4k --iodepth=32"
	[randwrite-4k-qd1]="--rw=randwrite --bs=4k --iodepth=1"
	[randwrite-4k-qd32]="--rw=randwrite --bs=4k --iodepth=32"
	[randread-4k-4conn]="--rw=randread --bs=4k --iodepth=8 --numjobs=4"
	[read-1m-qd8]="--rw=read --bs=1m --iodepth=8"
	[write-1m-qd8]="--rw=write --bs=1m --iodepth=8"
)
WORKLOADS=(randread-4k-qd1 randread-4k-qd32 randwrite-4k-qd1 randwrite-4k-qd32 randread-4k-4conn read-1m-qd8 write-1m-qd8)
# The acceptance workloads of issue 16 (the container part runs these).
ACCEPTANCE=(randread-4k-qd32 randwrite-4k-qd32 randread-4k-4conn read-1m-qd8 write-1m-qd8)

has_part() { local p; for p in "${PARTS[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

ALL_CPUS="0-$(($(nproc) - 1))"
# pin CPUS SERVER...: sets the CPU affinity of every thread of those servers (threads and processes
# they start later inherit it).
pin() {
	local cpus=$1 s
	shift
	for s in "$@"; do taskset -a -p -c "$cpus" "${SERVER_PID[$s]}" > /dev/null; done
}

# Pages of FILE in the page cache ("-" without fincore from util-linux).
cached_pages() {
	if command -v fincore > /dev/null; then fincore -n -o PAGES "$1" 2> /dev/null | tr -d ' ' || echo -; else echo -; fi
}

# drop_cache FILE: writes FILE's dirty pages back, then asks the kernel to drop its pages from the
# page cache. Unprivileged, and enough for clean pages of a file nobody maps (no server here maps it).
drop_cache() {
	$PY - "$1" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.fsync(fd)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
os.close(fd)
EOF
}

log "results in $OUT; work files in $WORK and $SHM"
$PY - > "$OUT/machine.json" <<EOF
import json, os, platform, subprocess
def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""
print(json.dumps({
    "cpus": os.cpu_count(),
    "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(),
    "memory": sh("free -h | awk '/Mem:/{print \$2}'"),
    "kernel": platform.release(),
    "java": sh("java -version 2>&1 | head -1"),
    "fio": sh("fio --version"),
    "nbdkit": sh("nbdkit --version"),
    "qemu-nbd": sh("qemu-nbd --version | head -1"),
    "nbd-server": sh("nbd-server -V 2>&1 | head -1"),
    "libnbd": sh("nbdcopy --version | tail -1"),
    "loadavg": open("/proc/loadavg").read().split()[:3],
    "rounds": $ROUNDS, "runtime_s": $RUNTIME, "ramp_s": $RAMP,
    "placement_rounds": $PLACEMENT_ROUNDS, "flush_rounds": $FLUSH_ROUNDS,
    "started": "$(date -u '+%Y-%m-%d %H:%M UTC')",
    "args": "$*", "parts": "${PARTS[*]}",
    # What the app instances were given: "default" = the property was not passed.
    "app_settings": {"nbd.server.busy-poll": "${BUSY_POLL:-default}",
                     "nbd.exports.disk.event-loop-io": "${DISK_EVENT_LOOP_IO:-default}"},
    "container": {"servers": "taskset -c 1", "fio": "taskset -c 0", "app_jvm": "-Xmx$CONTAINER_HEAP"},
    "slowdisk": {"nbd.exports.disk.event-loop-io": {"app-elio-default": "default", "app-elio-true": "true",
                                                    "app-elio-false": "false"}},
}))
EOF

log "generating 1 GiB of random data"
head -c 1G /dev/urandom > "$SHM/src.img"
truncate -s 1G "$WORK/disk.img"

# --- start: time to first served request, RSS after writing 256 MiB into a 16 GiB export ---
if has_part start; then
	log "start-up and memory"
	t0=$(date +%s%N)
	start_app app-start --nbd.exports.big.type=memory --nbd.exports.big.size=16GB
	first=$($PY "$ROOT/bench/first_request.py" "${URI[app-start/big]}" "$t0" 120)
	pid=${APP_PID[app-start]}
	rss0=$(awk '/VmRSS/{print $2*1024}' "/proc/$pid/status")
	fio --name=fill --ioengine=nbd --uri="${URI[app-start/big]}" --rw=write --bs=1m --iodepth=8 --size=256m \
		--offset=4g --output-format=json --output="$OUT/raw/start-fill.json" > /dev/null 2>&1
	sleep 1
	rss1=$(awk '/VmRSS/{print $2*1024}' "/proc/$pid/status")
	record set=start server=app first_request_s="$first" rss_before="$rss0" rss_after="$rss1"
	log "app: first request after ${first}s, RSS $((rss0 >> 20)) MiB -> $((rss1 >> 20)) MiB after writing 256 MiB"
	kill "$pid"; wait "$pid" 2>/dev/null || true
	# nbdkit memory for comparison
	free_port p
	t0=$(date +%s%N)
	nbdkit -f -i 127.0.0.1 -p "$p" memory size=16G > /dev/null 2>&1 &
	npid=$!
	PIDS+=($npid)
	first=$($PY "$ROOT/bench/first_request.py" "nbd://127.0.0.1:$p/" "$t0" 30)
	rss0=$(awk '/VmRSS/{print $2*1024}' "/proc/$npid/status")
	fio --name=fill --ioengine=nbd --uri="nbd://127.0.0.1:$p/" --rw=write --bs=1m --iodepth=8 --size=256m \
		--offset=4g --output-format=json --output="$OUT/raw/start-fill-nbdkit.json" > /dev/null 2>&1
	sleep 1
	rss1=$(awk '/VmRSS/{print $2*1024}' "/proc/$npid/status")
	record set=start server=nbdkit-mem first_request_s="$first" rss_before="$rss0" rss_after="$rss1"
	kill "$npid"; wait "$npid" 2>/dev/null || true
fi

# The container part pins servers to CPU 1 and fio to CPU 0.
CONTAINER=0
if has_part container; then
	if [ "$(nproc)" -ge 2 ]; then CONTAINER=1; else log "container: skipped, needs 2 CPUs"; fi
fi
if has_part main || has_part copy || has_part flush || has_part metrics || has_part placement || [ $CONTAINER = 1 ] \
	|| has_part slowdisk; then
	log "starting servers"
	start_app app
	if [ $CONTAINER = 1 ]; then
		APP_LAUNCH="taskset -c 1" APP_JVM="-Xmx$CONTAINER_HEAP" start_app app-1cpu
	fi
	if has_part slowdisk; then
		# The slowdisk part's instance with event-loop-io unset is `app` itself when that runs with
		# the default (it then has to adapt from the warm runs before), else one more.
		declare -A SLOWDISK=([app-elio-default]=app [app-elio-true]=app-elio-true [app-elio-false]=app-elio-false)
		if [ -n "$DISK_EVENT_LOOP_IO" ]; then
			APP_ELIO="" start_app app-elio-default
			SLOWDISK[app-elio-default]=app-elio-default
		fi
		APP_ELIO=true start_app app-elio-true
		APP_ELIO=false start_app app-elio-false
	fi
	start_peers
	for key in "${!URI[@]}"; do
		case $key in app-start/* | */big) continue ;; esac
		wait_nbd "${URI[$key]}" 300 # several JVMs starting at once on a busy machine take a while
	done
	log "filling every image with the same random data (also warms up the JVMs)"
	for s in "${MEM_SERVERS[@]}" ${URI[app-1cpu/mem]+app-1cpu}; do
		[ $s = nbdkit-null ] || nbdcopy "$SHM/src.img" "${URI[$s/mem]}"
	done
	nbdcopy "$SHM/src.img" "${URI[app/disk]}" # one file, shared by every file server
	for s in "${MEM_SERVERS[@]}"; do
		fio --name=warm --ioengine=nbd --uri="${URI[$s/mem]}" --rw=randrw --bs=4k --iodepth=16 --time_based \
			--runtime=2 > /dev/null 2>&1 || true
	done
	# The JIT compiles each request path when it first gets hot, and on one CPU that takes seconds
	# of the CPU that serves (1 MiB reads of app-1cpu still got cheaper after 4 s of them): the apps
	# measured on the acceptance workloads run each of them before the first round.
	warm=()
	if has_part main; then warm+=(app:2); fi
	if [ $CONTAINER = 1 ]; then warm+=(app-1cpu:3); fi
	for entry in ${warm[@]+"${warm[@]}"}; do
		for export in mem disk; do
			for w in "${ACCEPTANCE[@]}"; do
				# shellcheck disable=SC2086
				fio --name=warm --ioengine=nbd --uri="${URI[${entry%:*}/$export]}" --time_based --runtime="${entry#*:}" \
					${FIO_ARGS[$w]} > /dev/null 2>&1 || true
			done
		done
	done
	if has_part slowdisk; then slowdisk_apps=("${SLOWDISK[@]}"); else slowdisk_apps=(); fi
	for s in ${slowdisk_apps[@]+"${slowdisk_apps[@]}"}; do
		# shellcheck disable=SC2086
		fio --name=warm --ioengine=nbd --uri="${URI[$s/disk]}" --time_based --runtime=2 ${FIO_ARGS[randread-4k-4conn]} \
			> /dev/null 2>&1 || true
	done
	for s in "${!URI[@]}"; do
		case $s in app-start/* | */big) continue ;; esac
		printf '%s\t%s\n' "$s" "$(nbdinfo --can multi-conn "${URI[$s]}" >/dev/null 2>&1 && echo multi-conn || echo single-conn)"
	done | sort > "$OUT/multiconn.txt"
fi

if has_part main; then
	for round in $(seq 1 "$ROUNDS"); do
		log "main: round $round/$ROUNDS"
		for export in mem disk; do
			servers_of $export
			for w in "${WORKLOADS[@]}"; do
				for s in $(shuffled "${servers[@]}"); do
					# shellcheck disable=SC2086
					fio_run main $export "$w" "$s" "$round" "$OUT/raw/main-$export-$w-$s-$round.json" ${FIO_ARGS[$w]}
				done
			done
		done
	done
fi

if has_part copy; then
	for round in $(seq 1 "$ROUNDS"); do
		log "copy: round $round/$ROUNDS"
		for export in mem disk; do
			servers_of $export
			for conns in 1 4; do
				for dir in $COPY_DIRS; do
					for s in $(shuffled "${servers[@]}"); do
						copy_run copy $export "nbdcopy-$dir-${conns}conn" "$s" "$round" $dir $conns
					done
				done
			done
		done
	done
fi

if has_part flush; then
	# Issue 3: how throughput scales with connections, and what group commit saves.
	for round in $(seq 1 "$FLUSH_ROUNDS"); do
		log "flush: round $round/$FLUSH_ROUNDS"
		for export in mem disk; do
			if [ $export = mem ]; then peer=nbdkit-mem; else peer=nbdkit-file; fi
			for conns in 1 2 4 8; do
				for flush in 0 "$FSYNC_EVERY"; do
					w="randwrite-4k-${conns}conn-fsync$flush"
					for s in $(shuffled app $peer); do
						before=$(flush_counts app $export)
						fio_run flush $export "$w" "$s" "$round" "$OUT/raw/flush-$export-$w-$s-$round.json" \
							--rw=randwrite --bs=4k --iodepth=8 --numjobs="$conns" --fsync="$flush"
						after=$(flush_counts app $export)
						if [ "$s" = app ]; then
							record set=flush-counts export=$export workload="$w" server=app round="$round" \
								before="$before" after="$after"
						fi
					done
				done
				for flush in "" --flush; do
					w="nbdcopy-write-${conns}conn${flush:+-flush}"
					for s in $(shuffled app $peer); do
						before=$(flush_counts app $export)
						# shellcheck disable=SC2086
						copy_run flush $export "$w" "$s" "$round" write "$conns" $flush
						after=$(flush_counts app $export)
						if [ "$s" = app ]; then
							record set=flush-counts export=$export workload="$w" server=app round="$round" \
								before="$before" after="$after"
						fi
					done
				done
			done
		done
	done
fi

if has_part metrics; then
	log "metrics on vs off"
	start_app app-nometrics --management.metrics.enable.nbd=false
	wait_nbd "${URI[app-nometrics/mem]}" 120
	nbdcopy "$SHM/src.img" "${URI[app-nometrics/mem]}"
	fio --name=warm --ioengine=nbd --uri="${URI[app-nometrics/mem]}" --rw=randrw --bs=4k --iodepth=16 --time_based \
		--runtime=2 > /dev/null 2>&1 || true
	if curl -fsS "${HTTP[app]}/actuator/prometheus" 2>/dev/null | grep -q '^nbd_requests_seconds'; then
		metrics_note="nbd_* meters present; off = --management.metrics.enable.nbd=false"
	else
		metrics_note="no nbd_* meters in this build: both instances run without NBD metrics"
	fi
	record set=metrics-note note="$metrics_note"
	for round in $(seq 1 "$ROUNDS"); do
		for w in randread-4k-qd32 randwrite-4k-qd32 randread-4k-4conn; do
			for s in $(shuffled app app-nometrics); do
				# shellcheck disable=SC2086
				fio_run metrics mem "$w" "$s" "$round" "$OUT/raw/metrics-$w-$s-$round.json" ${FIO_ARGS[$w]}
			done
		done
	done
fi

if has_part placement; then
	# Depth 1 is one round trip per request, and on a small VM the round trip is dominated by
	# waking the other side on another CPU. Pinning server and fio to one CPU, then to two
	# different CPUs, takes the scheduler's placement out of the comparison.
	if [ "$(nproc)" -ge 2 ]; then
		for round in $(seq 1 "$PLACEMENT_ROUNDS"); do
			log "placement: round $round/$PLACEMENT_ROUNDS"
			for placement in same-cpu other-cpu; do
				if [ $placement = same-cpu ]; then server_cpu=0; else server_cpu=1; fi
				pin "$server_cpu" "${MEM_SERVERS[@]}" "${DISK_SERVERS[@]}"
				for export in mem disk; do
					servers_of $export
					for w in randread-4k-qd1 randwrite-4k-qd1; do
						for s in $(shuffled "${servers[@]}"); do
							# shellcheck disable=SC2086
							FIO_CPU=0 fio_run placement $export "$w-$placement" "$s" "$round" \
								"$OUT/raw/placement-$export-$w-$placement-$s-$round.json" ${FIO_ARGS[$w]}
						done
					done
				done
			done
			pin "$ALL_CPUS" "${MEM_SERVERS[@]}" "${DISK_SERVERS[@]}"
		done
	else
		log "placement: skipped, needs 2 CPUs"
	fi
fi

if [ $CONTAINER = 1 ]; then
	# Where users deploy: a container with one CPU and a heap limit. The app instance app-1cpu was
	# launched on CPU 1 with -Xmx$CONTAINER_HEAP; the peers are pinned to the same CPU for this part,
	# and fio runs on the other one.
	PEERS=("${MEM_SERVERS[@]:1}" "${DISK_SERVERS[@]:1}")
	pin 1 "${PEERS[@]}"
	for round in $(seq 1 "$ROUNDS"); do
		log "container: round $round/$ROUNDS"
		for export in mem disk; do
			servers_of $export app-1cpu
			for w in "${ACCEPTANCE[@]}"; do
				for s in $(shuffled "${servers[@]}"); do
					# shellcheck disable=SC2086
					FIO_CPU=0 fio_run container $export "$w" "$s" "$round" "$OUT/raw/container-$export-$w-$s-$round.json" \
						${FIO_ARGS[$w]}
				done
			done
		done
	done
	pin "$ALL_CPUS" "${PEERS[@]}"
fi

if has_part slowdisk; then
	# File I/O on the network threads is cheap while the page cache answers; here it does not.
	# Every run starts with the disk file's pages dropped from the page cache; the pages cached
	# right before the run and right after it are recorded (set slowdisk-cache) to show it, and for
	# the apps where their file I/O ran before and after, with the fallbacks to workers (slowdisk-fileio).
	# The last part of a run: it leaves the file's pages cold.
	for round in $(seq 1 "$ROUNDS"); do
		log "slowdisk: round $round/$ROUNDS"
		for label in $(shuffled "${!SLOWDISK[@]}" "${DISK_SERVERS[@]:1}"); do
			s=${SLOWDISK[$label]:-$label}
			drop_cache "$WORK/disk.img"
			before=$(cached_pages "$WORK/disk.img")
			io_before="- -"
			[ -z "${HTTP[$s]:-}" ] || io_before=$(file_io "$s" disk)
			# shellcheck disable=SC2086
			FIO_LABEL=$label fio_run slowdisk disk randread-4k-4conn-cold "$s" "$round" \
				"$OUT/raw/slowdisk-$label-$round.json" ${FIO_ARGS[randread-4k-4conn]}
			record set=slowdisk-cache server="$label" round="$round" pages_before="$before" \
				pages_after="$(cached_pages "$WORK/disk.img")" pages_total=$(($(stat -c %s "$WORK/disk.img") / 4096))
			if [ -n "${HTTP[$s]:-}" ]; then
				read -r net_before fallbacks_before <<< "$io_before"
				read -r net_after fallbacks_after <<< "$(file_io "$s" disk)"
				record set=slowdisk-fileio server="$label" round="$round" network_threads_before="$net_before" \
					network_threads_after="$net_after" fallbacks_before="$fallbacks_before" fallbacks_after="$fallbacks_after"
			fi
		done
	done
fi

if has_part profile; then
	log "profile: JFR recordings per workload"
	start_app app-prof
	wait_nbd "${URI[app-prof/mem]}" 120
	nbdcopy "$SHM/src.img" "${URI[app-prof/mem]}"
	nbdcopy "$SHM/src.img" "${URI[app-prof/disk]}"
	pid=${APP_PID[app-prof]}
	for spec in "mem randread-4k-qd32" "mem randwrite-4k-qd32" "mem read-1m-qd8" "mem write-1m-qd8" \
		"disk randread-4k-qd1" "disk randwrite-4k-qd1"; do
		read -r export w <<< "$spec"
		# shellcheck disable=SC2086
		fio --name=warm --ioengine=nbd --uri="${URI[app-prof/$export]}" --time_based --runtime=2 ${FIO_ARGS[$w]} \
			> /dev/null 2>&1 || true
		jcmd "$pid" JFR.start name="$w" settings=profile filename="$OUT/profile-$export-$w.jfr" > /dev/null
		# shellcheck disable=SC2086
		fio --name=prof --ioengine=nbd --uri="${URI[app-prof/$export]}" --time_based --runtime="$((RUNTIME * 2))" \
			${FIO_ARGS[$w]} > /dev/null 2>&1 || true
		jcmd "$pid" JFR.stop name="$w" > /dev/null
		$PY "$ROOT/bench/jfr_top.py" "$OUT/profile-$export-$w.jfr" nbd- 15 > "$OUT/profile-$export-$w.txt" 2>&1 || true
		log "profile $export $w: $(head -1 "$OUT/profile-$export-$w.txt")"
	done
fi

log "report"
DOCS=$DOCS $PY "$ROOT/bench/report.py" "$OUT" "$ROOT/docs"
