"""Prints seconds from T0 (epoch nanoseconds) until URI served its first READ.

Usage: first_request.py URI T0_NS TIMEOUT_S. Polls every 10 ms with libnbd (python3-libnbd).
"""
import sys
import time

import nbd

uri, t0, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
while True:
    h = nbd.NBD()
    try:
        h.connect_uri(uri)
        h.pread(512, 0)
        print("%.3f" % ((time.time_ns() - t0) / 1e9))
        h.shutdown()
        break
    except nbd.Error:
        if time.monotonic() > deadline:
            sys.exit("no reply from %s within %ss" % (uri, timeout))
        time.sleep(0.01)
    del h
