package dev.nbd.backend.filter;

import java.io.IOException;
import java.time.Duration;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Supplier;
import java.util.random.RandomGenerator;

import dev.nbd.backend.NbdBackendException;
import dev.nbd.protocol.NbdError;

/**
 * One fault for a {@link FaultInjectingBackend}: what happens (an error, a delay, a short read, a
 * failed sync) and when (which operations, which byte range, how often). Made by one of the
 * static factories and narrowed with the fluent methods before it is added to a backend:
 *
 * <pre>{@code
 * Fault.error(NbdError.ENOSPC).on(Operation.WRITE).at(1 << 30, 1 << 20)  // disk full past 1 GiB
 * Fault.error(NbdError.EIO).on(Operation.READ).rate(0.01)                 // 1% of reads fail
 * Fault.delay(Duration.ofMillis(20)).on(Operation.FLUSH)                  // slow syncs
 * Fault.shortRead(1).times(1)                                             // one buggy read
 * Fault.failedSync().after(3)                                             // the 4th sync fails
 * }</pre>
 *
 * A fault applies to an operation when the operation is one of {@link #on}'s (by default those
 * the kind applies to), its byte range overlaps {@link #at}'s (operations without a range, FLUSH,
 * never match a fault with a range), the first {@link #after} such operations have passed, a
 * draw succeeds at {@link #rate} and it has fired fewer than {@link #times} times. Configure a
 * fault before adding it; its counters are safe to read from any thread.
 */
public final class Fault {

	/** What a fault does. */
	public enum Kind {

		/** The operation fails with an exception (an NBD error, or one of your choosing). */
		ERROR,

		/** The operation waits, then runs. */
		DELAY,

		/** A READ leaves the end of its buffer unfilled (a backend bug: the server answers EIO). */
		SHORT_READ,

		/** A FLUSH, or the sync of a FUA write, fails with {@link java.io.SyncFailedException}. */
		FAILED_SYNC

	}

	private final Kind kind;

	private final Supplier<? extends Throwable> exception;

	private final Duration delay;

	private final int missingBytes;

	private Set<Operation> operations;

	private long offset;

	private long length = -1;

	private double rate = 1;

	private long after;

	private long times = Long.MAX_VALUE;

	private final AtomicLong matched = new AtomicLong();

	private final AtomicLong fired = new AtomicLong();

	private Fault(Kind kind, Supplier<? extends Throwable> exception, Duration delay, int missingBytes,
			Set<Operation> operations) {
		this.kind = kind;
		this.exception = exception;
		this.delay = delay;
		this.missingBytes = missingBytes;
		this.operations = operations;
	}

	/** Fails every operation it applies to with {@code error}, as an {@link NbdBackendException}. */
	public static Fault error(NbdError error) {
		Objects.requireNonNull(error, "error");
		return new Fault(Kind.ERROR, () -> new NbdBackendException(error, "injected " + error), null, 0,
				EnumSet.allOf(Operation.class));
	}

	/**
	 * Fails every operation it applies to with a new exception from {@code exception}, e.g.
	 * {@code () -> new IOException("No space left on device")} to see how the server maps what
	 * the JDK throws. Checked exceptions other than {@link IOException} are wrapped in one.
	 */
	public static Fault exception(Supplier<? extends Throwable> exception) {
		Objects.requireNonNull(exception, "exception");
		return new Fault(Kind.ERROR, exception, null, 0, EnumSet.allOf(Operation.class));
	}

	/** Delays every operation it applies to by {@code delay}, then runs it. */
	public static Fault delay(Duration delay) {
		if (delay.isNegative()) {
			throw new IllegalArgumentException("delay must not be negative: " + delay);
		}
		return new Fault(Kind.DELAY, null, delay, 0, EnumSet.allOf(Operation.class));
	}

	/**
	 * READs (and loans of memory for a READ) come back {@code missingBytes} short: the last bytes
	 * of the buffer are left as they were, as a buggy backend would.
	 */
	public static Fault shortRead(int missingBytes) {
		if (missingBytes < 1) {
			throw new IllegalArgumentException("missingBytes must be at least 1: " + missingBytes);
		}
		return new Fault(Kind.SHORT_READ, null, null, missingBytes, EnumSet.of(Operation.READ));
	}

	/**
	 * FLUSH fails, and so does a FUA WRITE, TRIM or ZERO after it ran (the data reached the
	 * backend, the sync did not), with {@link java.io.SyncFailedException}.
	 */
	public static Fault failedSync() {
		return new Fault(Kind.FAILED_SYNC, null, null, 0,
				EnumSet.of(Operation.FLUSH, Operation.WRITE, Operation.TRIM, Operation.ZERO));
	}

	/** Only these operations. */
	public Fault on(Operation... operations) {
		if (operations.length == 0) {
			throw new IllegalArgumentException("at least one operation");
		}
		this.operations = EnumSet.copyOf(Arrays.asList(operations));
		return this;
	}

	/** Only operations whose byte range overlaps {@code [offset, offset + length)}. */
	public Fault at(long offset, long length) {
		if (offset < 0 || length < 1) {
			throw new IllegalArgumentException("offset must be >= 0 and length >= 1: " + offset + ", " + length);
		}
		this.offset = offset;
		this.length = length;
		return this;
	}

	/** Fires with this probability (0 to 1) each time it applies; 1 by default. */
	public Fault rate(double probability) {
		if (!(probability >= 0 && probability <= 1)) {
			throw new IllegalArgumentException("rate must be within [0, 1]: " + probability);
		}
		this.rate = probability;
		return this;
	}

	/** Lets the first {@code n} operations it applies to through untouched. */
	public Fault after(long n) {
		if (n < 0) {
			throw new IllegalArgumentException("after must be >= 0: " + n);
		}
		this.after = n;
		return this;
	}

	/** Fires at most {@code n} times. */
	public Fault times(long n) {
		if (n < 0) {
			throw new IllegalArgumentException("times must be >= 0: " + n);
		}
		this.times = n;
		return this;
	}

	public Kind kind() {
		return this.kind;
	}

	/** Operations it applied to (in range, {@link #after} included), whether it fired or not. */
	public long matched() {
		return this.matched.get();
	}

	/** Times it fired. */
	public long fired() {
		return this.fired.get();
	}

	/** Whether this fault fires for {@code operation} on {@code [offset, offset + length)} (length -1: no range). */
	boolean fires(Operation operation, long offset, long length, RandomGenerator random) {
		if (!this.operations.contains(operation)) {
			return false;
		}
		if (this.length > 0 && (length < 0 || offset >= this.offset + this.length || offset + length <= this.offset)) {
			return false;
		}
		if (this.matched.incrementAndGet() <= this.after) {
			return false;
		}
		if (this.rate < 1 && !(random.nextDouble() < this.rate)) {
			return false;
		}
		long n;
		do {
			n = this.fired.get();
			if (n >= this.times) {
				return false;
			}
		}
		while (!this.fired.compareAndSet(n, n + 1));
		return true;
	}

	/** The exception an ERROR fault throws, as something a backend method may throw. */
	IOException failure() {
		Throwable t = this.exception.get();
		if (t instanceof RuntimeException re) {
			throw re;
		}
		if (t instanceof Error e) {
			throw e;
		}
		return (t instanceof IOException io) ? io : new IOException(t);
	}

	Duration delay() {
		return this.delay;
	}

	int missingBytes() {
		return this.missingBytes;
	}

	@Override
	public String toString() {
		String what = switch (this.kind) {
			case ERROR -> "error";
			case DELAY -> "delay " + this.delay;
			case SHORT_READ -> "short read by " + this.missingBytes;
			case FAILED_SYNC -> "failed sync";
		};
		return "Fault[" + what + " on " + this.operations + ((this.length > 0) ? " at " + this.offset + "+" + this.length : "")
				+ ((this.rate < 1) ? " rate " + this.rate : "") + ((this.after > 0) ? " after " + this.after : "")
				+ ((this.times < Long.MAX_VALUE) ? " times " + this.times : "") + "]";
	}

}
