package dev.nbd.server;

import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.atomic.LongAdder;

/**
 * Lock-free latency summary (count, mean, max, p99) kept by the server itself, so the
 * actuator view works with or without a metrics registry. Buckets are quarter powers of two
 * of nanoseconds (under 19% error), from 1 ns to hours.
 */
public final class LatencyStats {

	private static final int BUCKETS = 4 * 44;

	private final AtomicLongArray buckets = new AtomicLongArray(BUCKETS);

	private final LongAdder count = new LongAdder();

	private final LongAdder totalNanos = new LongAdder();

	private final AtomicLong maxNanos = new AtomicLong();

	public void record(long nanos) {
		long n = Math.max(1, nanos);
		this.count.increment();
		this.totalNanos.add(n);
		this.maxNanos.accumulateAndGet(n, Math::max);
		this.buckets.incrementAndGet(bucket(n));
	}

	public long count() {
		return this.count.sum();
	}

	public double meanMillis() {
		long c = count();
		return (c == 0) ? 0 : this.totalNanos.sum() / (double) c / 1e6;
	}

	public double maxMillis() {
		return this.maxNanos.get() / 1e6;
	}

	/** Upper bound of the bucket holding the given quantile, in milliseconds. */
	public double quantileMillis(double q) {
		long total = 0;
		long[] snapshot = new long[BUCKETS];
		for (int i = 0; i < BUCKETS; i++) {
			snapshot[i] = this.buckets.get(i);
			total += snapshot[i];
		}
		if (total == 0) {
			return 0;
		}
		long rank = (long) Math.ceil(q * total);
		long seen = 0;
		for (int i = 0; i < BUCKETS; i++) {
			seen += snapshot[i];
			if (seen >= rank) {
				return Math.min(upperBound(i), this.maxNanos.get()) / 1e6;
			}
		}
		return maxMillis();
	}

	static int bucket(long nanos) {
		int log2 = 63 - Long.numberOfLeadingZeros(nanos);
		// Two bits below the leading one pick the quarter.
		int quarter = (log2 >= 2) ? (int) ((nanos >>> (log2 - 2)) & 3) : 0;
		return Math.min(BUCKETS - 1, log2 * 4 + quarter);
	}

	static double upperBound(int bucket) {
		int log2 = bucket / 4;
		int quarter = bucket % 4;
		return Math.pow(2, log2) * (1 + (quarter + 1) / 4.0);
	}

}
