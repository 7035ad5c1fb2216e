package dev.nbd.server;

import java.util.concurrent.atomic.AtomicInteger;

/**
 * The CPUs network threads may spin on at once under adaptive busy-poll: one less than the
 * process may use, so spinning threads always leave a CPU to everything else, such as a client on
 * the same host or the threads serving a backend. With one CPU (a container limited to one, or a
 * process pinned to one), no thread ever spins.
 */
final class SpinSlots {

	private final AtomicInteger free;

	SpinSlots(int slots) {
		this.free = new AtomicInteger(Math.max(0, slots));
	}

	/** Slots for a process that may use {@code cpus} CPUs. */
	static SpinSlots forCpus(int cpus) {
		return new SpinSlots(cpus - 1);
	}

	boolean tryAcquire() {
		int n;
		do {
			n = this.free.get();
			if (n <= 0) {
				return false;
			}
		}
		while (!this.free.compareAndSet(n, n - 1));
		return true;
	}

	void release() {
		this.free.incrementAndGet();
	}

	int available() {
		return this.free.get();
	}

}
