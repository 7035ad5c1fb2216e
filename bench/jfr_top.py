"""Where the app's network threads spend their time, from a JFR recording.

Usage: jfr_top.py RECORDING.jfr [THREAD_PREFIX=nbd-] [N=20]
Runs `jfr print` for Java samples (jdk.ExecutionSample) and native samples
(jdk.NativeMethodSample: threads inside system calls such as epoll_wait, writev, read) and
prints, for threads whose name starts with THREAD_PREFIX, the share of samples per top frame
and per "first frame of ours or Netty's", so both the hot leaf and the caller show.
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
        yield re.findall(r"^\s+([\w$.<>]+\([^)]*\))\s+line:", block, re.M)


leaf = collections.Counter()
ours = collections.Counter()
kinds = collections.Counter()
for kind, event in (("java", "jdk.ExecutionSample"), ("native", "jdk.NativeMethodSample")):
    for frames in samples(event):
        if not frames:
            continue
        kinds[kind] += 1
        leaf["%s %s" % (kind, frames[0])] += 1
        first = next((f for f in frames if f.startswith("dev.nbd.")), None)
        ours[first or "(no dev.nbd frame) " + frames[-1]] += 1
total = sum(kinds.values())
if not total:
    sys.exit("no samples for threads starting with %r" % prefix)
print("%d samples on %s* threads: %s" % (total, prefix, ", ".join("%s %.0f%%" % (k, 100 * v / total)
                                                                   for k, v in kinds.items())))
print("-- top leaf frames")
for frame, count in leaf.most_common(top):
    print("%5.1f%%  %s" % (100 * count / total, frame))
print("-- innermost dev.nbd frame")
for frame, count in ours.most_common(top):
    print("%5.1f%%  %s" % (100 * count / total, frame))
