package dev.nbd.server;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Lets at most one log line per key through each second (or interval) and counts the ones held back, so a
 * flood (refused connections, a full disk failing every write) cannot flood the log.
 */
final class LogRateLimit {

	private static final long SECOND_NANOS = 1_000_000_000L;

	private final long intervalNanos;

	private final Map<String, long[]> last = new ConcurrentHashMap<>();

	LogRateLimit() {
		this(SECOND_NANOS);
	}

	/** At most one line per key each {@code intervalNanos}. */
	LogRateLimit(long intervalNanos) {
		this.intervalNanos = intervalNanos;
	}

	/**
	 * -1 when a line for {@code key} went out less than an interval ago (this one is held back and
	 * counted); otherwise the number held back since that line, and this one may go out.
	 */
	long acquire(String key) {
		long now = System.nanoTime();
		long[] state = this.last.computeIfAbsent(key, (k) -> new long[] { now - 2 * this.intervalNanos, 0 });
		synchronized (state) {
			if (now - state[0] >= this.intervalNanos) {
				long suppressed = state[1];
				state[0] = now;
				state[1] = 0;
				return suppressed;
			}
			state[1]++;
			return -1;
		}
	}

	/** " (N similar suppressed)" for a count from {@link #acquire}, or nothing. */
	static String suppressed(long count) {
		return (count > 0) ? " (" + count + " similar suppressed)" : "";
	}

}
