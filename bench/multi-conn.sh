#!/usr/bin/env bash
# Multi-connection scaling and group commit on the sample app's mem and disk exports:
#  - nbdcopy of a random image with 1, 2, 4 and 8 connections (-C), without and with --flush;
#  - fio (nbd engine, one connection per job) 4k random writes with 1, 2, 4 and 8 connections,
#    without flushes and with a FLUSH after every write (--fsync=1), plus the server's count of
#    flush requests against backend syncs (group commit), read from its shutdown log line.
# Needs: a built jar (mvn -B -q package -DskipTests), nbdcopy, nbdinfo, fio with the nbd engine.
# Usage: bench/multi-conn.sh [IMAGE_MB] [FIO_SECONDS]      Output: a Markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
image_mb=${1:-512}
fio_seconds=${2:-5}
jar=$(ls sample-app/target/sample-app-*.jar | grep -v -- -plain | head -1)
work=$(mktemp -d)
app=
trap '[ -n "$app" ] && kill "$app" 2>/dev/null; rm -rf "$work"' EXIT
export PATH=/usr/bin:/bin:$PATH

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_app() {
  port=$(free_port)
  rm -f "$work/disk.img"
  java -jar "$jar" --nbd.server.port="$port" --server.port=0 --nbd.exports.disk.path="$work/disk.img" \
    >"$work/app.log" 2>&1 &
  app=$!
  until nbdinfo --can connect "nbd://127.0.0.1:$port/mem" 2>/dev/null; do sleep 0.2; done
}

stop_app() {
  kill -TERM "$app"; wait "$app" 2>/dev/null || true; app=
}

seconds() { /usr/bin/python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$@"; }

head -c "${image_mb}M" /dev/urandom >"$work/src.img"
start_app
echo "### nbdcopy ${image_mb} MiB random image into the export"
echo
echo "| export | connections | MiB/s | MiB/s with --flush |"
echo "|---|---|---|---|"
for export in mem disk; do
  for c in 1 2 4 8; do
    row="| $export | $c |"
    for flush in "" --flush; do
      t0=$(date +%s.%N)
      nbdcopy -C "$c" $flush "$work/src.img" "nbd://127.0.0.1:$port/$export"
      t1=$(date +%s.%N)
      row="$row $(/usr/bin/python3 -c "print('%.0f' % ($image_mb / ($t1 - $t0)))") |"
    done
    echo "$row"
  done
done
stop_app

echo
echo "### fio 4k random writes, iodepth 16 per connection, ${fio_seconds}s"
echo
echo "| export | connections | IOPS, no flush | IOPS, FLUSH after each write | flush requests | backend syncs |"
echo "|---|---|---|---|---|---|"
for export in mem disk; do
  for c in 1 2 4 8; do
    row="| $export | $c |"
    for fsync in 0 1; do
      start_app
      iops=$(fio --name=w --ioengine=nbd --uri="nbd://127.0.0.1:$port/$export" --rw=randwrite --bs=4k \
        --iodepth=16 --numjobs="$c" --size=256m --time_based --runtime="$fio_seconds" --fsync="$fsync" \
        --group_reporting --output-format=json --output="$work/fio.json" >/dev/null 2>&1 \
        && /usr/bin/python3 -c 'import json,sys; print("%.0f" % json.load(open(sys.argv[1]))["jobs"][0]["write"]["iops"])' \
          "$work/fio.json")
      stop_app
      row="$row $iops |"
    done
    # The log is the FLUSH-after-each-write run's (the last one started).
    counts=$(grep -o "'$export': [0-9]* flush requests served by [0-9]* backend syncs" "$work/app.log" \
      | sed -E 's/.*: ([0-9]+) flush requests served by ([0-9]+) backend syncs/\1 | \2/')
    echo "$row ${counts:-? | ?} |"
  done
done
