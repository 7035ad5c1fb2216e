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
 * one blocks after one spin period.
 *
 * <p>With {@link SpinSlots} (adaptive busy-poll) a loop spins only while it holds a slot, taken
 * when it wakes up and given back when it blocks: spinning threads never take the last free CPU
 * from the client or the other threads; a loop that finds no slot blocks as without busy-poll.
 * One instance per event loop (not thread-safe).
 */
final class BusyPollSelectStrategy implements SelectStrategy {

	private final long spinNanos;

	/** Null: spin without asking (an explicit {@code busy-poll} setting). */
	private final SpinSlots slots;

	private final LongSupplier clock;

	private long spinUntil;

	/** The previous answer was SELECT: the loop blocked and has woken up since. */
	private boolean blocked;

	/** Holding one of {@link #slots}. */
	private boolean holding;

	BusyPollSelectStrategy(long spinNanos, SpinSlots slots) {
		this(spinNanos, slots, System::nanoTime);
	}

	BusyPollSelectStrategy(long spinNanos, SpinSlots slots, LongSupplier clock) {
		this.spinNanos = spinNanos;
		this.slots = slots;
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
			if (this.slots != null) {
				this.holding = this.slots.tryAcquire();
				if (!this.holding) {
					// Every spare CPU already has a spinner: block, as without busy-poll.
					return SelectStrategy.SELECT;
				}
			}
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
		if (this.holding) {
			this.holding = false;
			this.slots.release();
		}
		this.blocked = true;
		return SelectStrategy.SELECT;
	}

}
