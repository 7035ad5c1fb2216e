#!/usr/bin/python3
# FUA write rate: 4 KiB writes with NBD_CMD_FLAG_FUA at random offsets of a preallocated
# 256 MiB region, DEPTH in flight on one connection, for SECONDS.
#   bench/fua.py nbd://127.0.0.1:10809/disk 5 16
# Used to compare FUA through an O_DSYNC descriptor (each write syncs its own range) with FUA
# as write + group-committed fdatasync (docs/convert-bench.md).
import nbd, os, sys, time, random
uri = sys.argv[1]; secs = float(sys.argv[2]); depth = int(sys.argv[3])
h = nbd.NBD(); h.connect_uri(uri)
buf = nbd.Buffer.from_bytearray(bytearray(os.urandom(4096)))
size = 256 << 20
# preallocate the region so the test measures data syncs, not block allocation
for off in range(0, size, 32 << 20):
    h.pwrite(b"\x01" * (32 << 20), off)
h.flush()
done = 0
end = time.time() + secs
def cb(err):
    global done
    done += 1
    return 1
while time.time() < end:
    while h.aio_in_flight() < depth:
        h.aio_pwrite(buf, random.randrange(0, size // 4096) * 4096, completion=cb, flags=nbd.CMD_FLAG_FUA)
    h.poll(-1)
while h.aio_in_flight() > 0:
    h.poll(-1)
print(f"{done / secs:.0f} FUA writes/s at depth {depth}")
