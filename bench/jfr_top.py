"""Where the app's network threads spend their time, from a JFR recording.

Usage: jfr_top.py RECORDING.jfr [THREAD_PREFIX=nbd-] [N=20]
Runs `jfr print` for Java samples (jdk.ExecutionSample) and native samples
(jdk.NativeMethodSample: threads inside system calls such as epoll_wait, writev, read) and
prints, for the busiest thread whose name starts with THREAD_PREFIX, how much it waits in
epoll_wait and, of the rest, the share per leaf frame and per innermost dev.nbd frame.
"""
import collections
import re
import subprocess
import sys

recording = sys.argv[1]
prefix = sys.argv[2] if len(sys.argv) > 2 else "nbd-"
top = int(sys.argv[3]) if len(sys.argv) > 3 else 20


def samples(event):
    text = subprocess.run(["jfr", "print", "--events", event, recording], capture_output=True, text=True).stdout
    for block in text.split(event + " {")[1:]:
        m = re.search(r'sampledThread = "([^"]+)"', block)
        if not m or not m.group(1).startswith(prefix):
            continue
        yield m.group(1), re.findall(r"^\s+([\w$.<>]+\([^)]*\))\s+line:", block, re.M)


# Idle network threads sit in epoll_wait: report the busiest thread only, and its idle share.
by_thread = collections.defaultdict(list)
for kind, event in (("java", "jdk.ExecutionSample"), ("native", "jdk.NativeMethodSample")):
    for thread, frames in samples(event):
        if frames:
            by_thread[thread].append((kind, frames))


def idle(frames):
    return "epollWait" in frames[0] or "epoll_wait" in frames[0]


if not by_thread:
    sys.exit("no samples for threads starting with %r" % prefix)
thread, rows = max(by_thread.items(), key=lambda kv: sum(1 for _, f in kv[1] if not idle(f)))
busy = [(k, f) for k, f in rows if not idle(f)]
print("busiest thread %s: %d samples, %.0f%% waiting in epoll_wait; of the rest (java %d, native %d):" % (
    thread, len(rows), 100 * (len(rows) - len(busy)) / len(rows), sum(1 for k, _ in busy if k == "java"),
    sum(1 for k, _ in busy if k == "native")))
leaf = collections.Counter("%s %s" % (k, f[0]) for k, f in busy)
ours = collections.Counter(next((x for x in f if x.startswith("dev.nbd.")), "(no dev.nbd frame) " + f[-1])
                           for _, f in busy)
total = max(len(busy), 1)
print("-- top leaf frames")
for frame, count in leaf.most_common(top):
    print("%5.1f%%  %s" % (100 * count / total, frame))
print("-- innermost dev.nbd frame")
for frame, count in ours.most_common(top):
    print("%5.1f%%  %s" % (100 * count / total, frame))
