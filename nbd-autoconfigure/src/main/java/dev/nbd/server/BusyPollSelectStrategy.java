package dev.nbd.server;

import java.util.function.LongSupplier;

import io.netty.channel.SelectStrategy;
import io.netty.util.IntSupplier;

/**
 * Spin, then block: after the event loop wakes up with work, it keeps polling the sockets
 * without blocking for {@code spinNanos} after the last event before it blocks again. A
 * request that arrives meanwhile needs no wake-up; on a VM, waking a thread on another CPU
 * costs about as much as serving a 4 KiB request, so depth-1 latency halves. The price is CPU:
 * a thread serving a steady stream of requests spins between them instead of sleeping; an idle
 * one blocks after one spin period. One instance per event loop (not thread-safe).
 */
final class BusyPollSelectStrategy implements SelectStrategy {

	private final long spinNanos;

	private final LongSupplier clock;

	private long spinUntil;

	/** The previous answer was SELECT: the loop blocked and has woken up since. */
	private boolean blocked;

	BusyPollSelectStrategy(long spinNanos) {
		this(spinNanos, System::nanoTime);
	}

	BusyPollSelectStrategy(long spinNanos, LongSupplier clock) {
		this.spinNanos = spinNanos;
		this.clock = clock;
	}

	@Override
	public int calculateStrategy(IntSupplier selectNow, boolean hasTasks) throws Exception {
		if (hasTasks) {
			// As Netty's default: tasks are waiting, look at the sockets without blocking.
			return selectNow.get();
		}
		long now = this.clock.getAsLong();
		if (this.blocked) {
			this.blocked = false;
			this.spinUntil = now + this.spinNanos;
		}
		if (now - this.spinUntil < 0) {
			int ready = selectNow.get();
			if (ready > 0) {
				this.spinUntil = now + this.spinNanos;
				return ready;
			}
			return SelectStrategy.CONTINUE;
		}
		this.blocked = true;
		return SelectStrategy.SELECT;
	}

}
