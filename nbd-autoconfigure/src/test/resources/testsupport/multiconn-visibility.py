# Cross-connection visibility probe (after nbdkit's tests/test-multi-conn.sh), run with the
# system python3 and libnbd's "nbd" module:
#   python3 multiconn-visibility.py URI CONNECTIONS BASE_OFFSET [--no-flag-check]
# Every check reads on a connection that did not write, after that connection has read (and a
# per-connection cache would hold) the old contents. Prints "ok" when the contract holds.
import os
import sys
import threading

import nbd

uri, n, base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
check_flag = "--no-flag-check" not in sys.argv
B = 65536
hs = []
for _ in range(n):
    h = nbd.NBD()
    h.connect_uri(uri)
    hs.append(h)
if check_flag:
    assert all(h.can_multi_conn() for h in hs), "NBD_FLAG_CAN_MULTI_CONN not advertised"
next_block = [0]


def block():
    off = base + next_block[0] * B
    next_block[0] += 1
    return off


# 1. Write on one connection, flush on another, read on a third.
off = block()
hs[2 % n].pread(B, off)
data = os.urandom(B)
hs[0].pwrite(data, off)
hs[1 % n].flush()
assert hs[2 % n].pread(B, off) == data, "write on 0 + flush on 1: not visible on 2"

# 2. Many writers in flight at once: every connection but the last sends its writes as aio
# commands (all queued before any is awaited), then the last connection flushes and every
# block is read back on a connection other than its writer.
writers = hs[:-1] if n > 1 else hs
per_writer = 16
plan = []
for i in range(len(writers)):
    for _ in range(per_writer):
        plan.append((i, block(), os.urandom(B)))
for i, off, _ in plan:
    hs[(i + 1) % n].pread(B, off)
start = threading.Barrier(len(writers))
errors = []


def write_all(i):
    h = writers[i]
    mine = [(off, nbd.Buffer.from_bytearray(d)) for w, off, d in plan if w == i]
    start.wait()
    cookies = [h.aio_pwrite(buf, off) for off, buf in mine]
    try:
        for c in cookies:
            while not h.aio_command_completed(c):
                h.poll(-1)
    except nbd.Error as e:
        errors.append(e)


threads = [threading.Thread(target=write_all, args=(i,)) for i in range(len(writers))]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors
hs[-1].flush()
for i, off, d in plan:
    assert hs[(i + 1) % n].pread(B, off) == d, "aio write from %d at %d not visible on %d" % (i, off, (i + 1) % n)
    assert hs[-1].pread(B, off) == d, "aio write from %d at %d not visible on the flusher" % (i, off)

# 3. FUA on one connection: visible on every other without any FLUSH.
off = block()
for h in hs[1:]:
    h.pread(B, off)
data = os.urandom(B)
hs[0].pwrite(data, off, nbd.CMD_FLAG_FUA)
for k, h in enumerate(hs[1:], 1):
    assert h.pread(B, off) == data, "FUA write on 0 not visible on %d" % k

for h in hs:
    h.shutdown()
print("ok")
