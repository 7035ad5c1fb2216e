# The test kit's libnbd checks of a backend served by NbdServer:
#   python3 backend-contract.py URI SIZE MULTI_CONN
# Every capability the server advertises for the backend is used and its effect read back.
# Prints "ok" when every check held; an AssertionError or nbd.Error says what did not.
import errno
import os
import sys
import threading

import nbd

uri, size, multi_conn = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "true"


def data(n):
    # never zero, so a range that reads back as zeroes is always noticed
    return os.urandom(n).replace(b"\0", b"\1")


def connect():
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(uri)
    return h


h = connect()
assert h.get_size() == size, "export size %d, backend size() %d" % (h.get_size(), size)
assert not h.is_read_only(), "a writable backend is advertised read-only"
assert h.can_multi_conn() == multi_conn, "CAN_MULTI_CONN is %s, isMultiConnSafe() is %s" % (h.can_multi_conn(), multi_conn)
unit = max(h.get_block_size(nbd.SIZE_MINIMUM), 512)
page = max(unit, 4096)

# Reads and writes of every size class (copied reads, lent reads from 64 KiB), at both ends.
for length in sorted({unit, 8 * unit, 65536, 256 * 1024, 1024 * 1024}):
    if length > size - unit or length % unit:
        continue
    for off in (0, unit, size - length):
        d = data(length)
        h.pwrite(d, off)
        got = h.pread(length, off)
        assert got == d, "pread(%d, %d) differs from what was written, first at byte %d" % (
            length, off, next(i for i in range(length) if got[i] != d[i]))

# Bounds: past the end is an error and the connection stays usable.
h.set_strict_mode(0)
try:
    h.pread(unit, size)
    raise AssertionError("a read past the end succeeded")
except nbd.Error:
    pass
assert h.pread(unit, size - unit) is not None

if h.can_flush():
    h.flush()
if h.can_fua():
    d = data(8 * unit)
    h.pwrite(d, 0, nbd.CMD_FLAG_FUA)
    assert h.pread(len(d), 0) == d, "FUA write did not read back"

# WRITE_ZEROES (emulated by the server when the backend cannot zero), with and without NO_HOLE.
if h.can_zero():
    for flags in (0, nbd.CMD_FLAG_NO_HOLE):
        d = data(16 * page)
        h.pwrite(d, 0)
        h.zero(8 * page, 4 * page, flags)
        got = h.pread(16 * page, 0)
        assert got == d[:4 * page] + bytes(8 * page) + d[12 * page:], "zero(flags=%d) did not read back as zeroes" % flags
if h.can_fast_zero():
    d = data(4 * page)
    h.pwrite(d, 0)
    try:
        h.zero(4 * page, 0, nbd.CMD_FLAG_FAST_ZERO)
        assert h.pread(4 * page, 0) == bytes(4 * page), "fast zero did not read back as zeroes"
    except nbd.Error as e:
        assert e.errnum == errno.ENOTSUP, "fast zero failed with %s, not ENOTSUP" % e

if h.can_trim():
    d = data(16 * page)
    h.pwrite(d, 0)
    h.trim(8 * page, 4 * page)
    got = h.pread(16 * page, 0)
    assert got[:4 * page] == d[:4 * page] and got[12 * page:] == d[12 * page:], "trim changed bytes outside its range"

if h.can_cache():
    h.cache(256 * 1024, 0)

# base:allocation agrees with the data: every range reported zero reads as zeroes.
if h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
    span = min(size, 256 * page)
    h.pwrite(data(2 * page), 2 * page)
    extents = []

    def collect(context, offset, entries, err):
        if context == nbd.CONTEXT_BASE_ALLOCATION:
            extents.extend(zip(entries[0::2], entries[1::2]))
        return 0

    at = 0
    while at < span:
        extents.clear()
        h.block_status(span - at, at, collect)
        assert extents, "block status at %d reported nothing" % at
        for length, flags in extents:
            assert length > 0, "empty extent at %d" % at
            if flags & nbd.STATE_ZERO:
                n = min(length, span - at)
                assert h.pread(n, at) == bytes(n), "extent at %d (+%d) reported zero but is not" % (at, n)
            at += length

# Several connections writing at once, each with many requests in flight.
if multi_conn:
    handles = [h] + [connect() for _ in range(3)]
else:
    handles = [h]
block = 65536
per_handle = 8
plan = [(i, (i * per_handle + k) * block, data(block)) for i in range(len(handles)) for k in range(per_handle)]
start = threading.Barrier(len(handles))
errors = []


def write_all(i):
    hh = handles[i]
    mine = [(off, nbd.Buffer.from_bytearray(bytearray(d))) for w, off, d in plan if w == i]
    start.wait()
    try:
        cookies = [hh.aio_pwrite(buf, off) for off, buf in mine]
        for c in cookies:
            while not hh.aio_command_completed(c):
                hh.poll(-1)
    except Exception as e:
        errors.append(e)


threads = [threading.Thread(target=write_all, args=(i,)) for i in range(len(handles))]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors
if h.can_flush():
    handles[-1].flush()
for i, off, d in plan:
    reader = handles[(i + 1) % len(handles)]
    assert reader.pread(block, off) == d, "write from connection %d at %d not read back on connection %d" % (
        i, off, (i + 1) % len(handles))

for hh in handles:
    hh.shutdown()
print("ok")
