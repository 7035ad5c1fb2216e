package dev.nbd.server;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.LongSupplier;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Decides, for one export with a served file, whether its reads and plain writes run on the
 * network thread that received them ({@link EventLoopIo}).
 *
 * <p>A 4 KiB read from the page cache takes a few microseconds, less than handing it to a worker
 * and back (two thread wake-ups, 15-20 µs each on a VM); a cache miss or a write the kernel
 * throttles takes milliseconds, and meanwhile every connection on that network thread waits. So,
 * adaptively: calls run on the network thread until {@value #SLOW_TO_MOVE} slow calls come close
 * together (a slow call adds {@value #SLOW_WEIGHT} to a score, every fast one takes 1 off, and
 * more than {@value #SLOW_TO_MOVE} - 1 weights move them): one slow call now and then can be a thread the
 * scheduler paused on a busy machine, not storage, while misses come in runs. Then on workers, where their durations are still measured, until
 * {@link #required()} calls in a row were fast. An export that
 * turns slow again within a minute of coming back must show twice as many fast calls the next time
 * (up to {@value #MAX_REQUIRED}), so a file that is only partly cached does not stall a network
 * thread every few dozen calls; one that stayed fast for a minute starts again from
 * {@value #MIN_REQUIRED}.
 *
 * <p>"Slow" is {@value #SLOW_BASE_NANOS} ns plus half a nanosecond per byte (the page cache copies
 * at several GB/s): about 0.2 ms for 4 KiB, 0.7 ms for 1 MiB. Thread-safe without locks on the
 * per-call path: the connections of one export run on several network threads and workers; a
 * lost update of the counter only delays a decision by one call.
 */
public final class EventLoopFileIo {

	private static final Logger logger = LoggerFactory.getLogger(EventLoopFileIo.class);

	static final long SLOW_BASE_NANOS = 200_000;

	/** Slow calls close together on the network thread that move them to workers. */
	static final int SLOW_TO_MOVE = 4;

	/** What a slow call adds to the score; a fast one takes 1 off: more than 1 slow call in 17 adds up. */
	static final int SLOW_WEIGHT = 16;

	static final int MIN_REQUIRED = 32;

	static final int MAX_REQUIRED = 1024;

	/** A return to the network thread that lasted this long resets {@link #required()}. */
	static final long STEADY_NANOS = 60_000_000_000L;

	private final String exportName;

	private final EventLoopIo mode;

	private final LongSupplier clock;

	private volatile boolean onEventLoop;

	private final AtomicInteger fastInARow = new AtomicInteger();

	/** Recent slow calls on the network thread, weighed against fast ones. */
	private final AtomicInteger slowScore = new AtomicInteger();

	/** Moves are logged at most once a minute (a busy machine can make a file look slow often). */
	private final LogRateLimit moveLog = new LogRateLimit(60_000_000_000L);

	private volatile int required = MIN_REQUIRED;

	private volatile long returnedAt;

	private final LongAdder fallbacks = new LongAdder();

	EventLoopFileIo(String exportName, EventLoopIo mode) {
		this(exportName, mode, System::nanoTime);
	}

	EventLoopFileIo(String exportName, EventLoopIo mode, LongSupplier clock) {
		this.exportName = exportName;
		this.mode = mode;
		this.clock = clock;
		this.onEventLoop = mode != EventLoopIo.NEVER;
		this.returnedAt = clock.getAsLong() - STEADY_NANOS;
	}

	public EventLoopIo mode() {
		return this.mode;
	}

	/** Whether {@link #record} uses call durations (only the adaptive mode does). */
	boolean measures() {
		return this.mode == EventLoopIo.ADAPTIVE;
	}

	/** Whether the next read or plain write of the served file runs on the network thread. */
	public boolean onEventLoop() {
		return this.onEventLoop;
	}

	/** Times the file's calls went back to workers because one was slow. */
	public long fallbacks() {
		return this.fallbacks.sum();
	}

	/** Fast calls in a row that bring the file's calls back to the network thread. */
	int required() {
		return this.required;
	}

	static boolean slow(long nanos, long bytes) {
		return nanos > SLOW_BASE_NANOS + bytes / 2;
	}

	/** How long one read or plain write of {@code bytes} took, on whichever thread ran it. */
	void record(long nanos, long bytes) {
		if (this.mode != EventLoopIo.ADAPTIVE) {
			return;
		}
		boolean slow = slow(nanos, bytes);
		if (this.onEventLoop) {
			if (!slow) {
				if (this.slowScore.get() > 0) {
					this.slowScore.decrementAndGet();
				}
			}
			else if (this.slowScore.addAndGet(SLOW_WEIGHT) > (SLOW_TO_MOVE - 1) * SLOW_WEIGHT) {
				toWorkers(nanos, bytes);
			}
			return;
		}
		if (slow) {
			this.fastInARow.set(0);
		}
		else if (this.fastInARow.incrementAndGet() >= this.required) {
			toEventLoop();
		}
	}

	private synchronized void toWorkers(long nanos, long bytes) {
		if (!this.onEventLoop) {
			return;
		}
		long now = this.clock.getAsLong();
		this.required = (now - this.returnedAt < STEADY_NANOS) ? Math.min(this.required * 2, MAX_REQUIRED)
				: MIN_REQUIRED;
		this.fastInARow.set(0);
		this.slowScore.set(0);
		this.onEventLoop = false;
		this.fallbacks.increment();
		long suppressed = this.moveLog.acquire("workers");
		if (suppressed >= 0) {
			logger.info("Export '{}': {} slow file calls (the last took {} µs for {} bytes); its reads and writes run on"
					+ " worker threads until {} calls in a row are fast{}", this.exportName, SLOW_TO_MOVE, nanos / 1000,
					bytes, this.required, LogRateLimit.suppressed(suppressed));
		}
	}

	private synchronized void toEventLoop() {
		if (this.onEventLoop) {
			return;
		}
		this.returnedAt = this.clock.getAsLong();
		this.onEventLoop = true;
		long suppressed = this.moveLog.acquire("network");
		if (suppressed >= 0) {
			logger.info("Export '{}': {} file calls in a row were fast; its reads and writes run on the network threads"
					+ " again{}", this.exportName, this.required, LogRateLimit.suppressed(suppressed));
		}
	}

}
