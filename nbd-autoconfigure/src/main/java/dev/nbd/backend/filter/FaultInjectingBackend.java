package dev.nbd.backend.filter;

import java.io.IOException;
import java.io.InterruptedIOException;
import java.io.SyncFailedException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.Random;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.random.RandomGenerator;

import dev.nbd.backend.ExportBackend;

/**
 * An {@link ExportBackend} that passes every call to another backend and injects {@link Fault}s
 * on the way: errors at chosen offsets or rates (any NBD error, or any exception, such as the
 * JDK's "No space left on device"), delays, short reads and failed syncs. Like nbdkit's
 * {@code error} and {@code delay} filters; for testing how a backend, the server and clients
 * behave when storage misbehaves.
 *
 * <pre>{@code
 * FaultInjectingBackend disk = FaultInjectingBackend.builder(new FileBackend("disk", path, size, null, false))
 *     .fault(Fault.error(NbdError.ENOSPC).on(Operation.WRITE).at(512 << 20, 1 << 20))
 *     .fault(Fault.delay(Duration.ofMillis(5)).on(Operation.FLUSH))
 *     .seed(42)
 *     .build();
 * disk.add(Fault.failedSync().times(1));   // faults may also come and go while it serves
 * }</pre>
 *
 * Faults are checked in the order they were added, before the call reaches the backend (a failed
 * sync of a FUA write after it): every delay that fires is waited, the first error that fires is
 * thrown. The wrapped backend's capabilities are advertised unchanged, except that
 * {@link #servedFile()} is never offered (so every read and write passes through here) and the
 * backend is {@linkplain #isBlocking() blocking} unless the builder says otherwise (delays would
 * otherwise stall a network thread). Per-connection views of the wrapped backend are wrapped too
 * and share the faults. Thread-safe.
 */
public final class FaultInjectingBackend implements ExportBackend {

	private final ExportBackend delegate;

	private final List<Fault> faults;

	private final RandomGenerator random;

	private final boolean blocking;

	private FaultInjectingBackend(ExportBackend delegate, List<Fault> faults, RandomGenerator random,
			boolean blocking) {
		this.delegate = delegate;
		this.faults = faults;
		this.random = random;
		this.blocking = blocking;
	}

	/** Starts wrapping {@code delegate}. */
	public static Builder builder(ExportBackend delegate) {
		return new Builder(delegate);
	}

	/** Adds a fault (checked after those already there). */
	public FaultInjectingBackend add(Fault fault) {
		this.faults.add(Objects.requireNonNull(fault, "fault"));
		return this;
	}

	/** Removes a fault; true if it was there. */
	public boolean remove(Fault fault) {
		return this.faults.remove(fault);
	}

	/** Removes every fault: the backend behaves as the wrapped one from now on. */
	public void clear() {
		this.faults.clear();
	}

	/** The faults, in the order they are checked. */
	public List<Fault> faults() {
		return List.copyOf(this.faults);
	}

	/** The wrapped backend. */
	public ExportBackend delegate() {
		return this.delegate;
	}

	@Override
	public String name() {
		return this.delegate.name();
	}

	@Override
	public long size() throws IOException {
		return this.delegate.size();
	}

	@Override
	public String description() {
		return this.delegate.description();
	}

	@Override
	public boolean isReadOnly() {
		return this.delegate.isReadOnly();
	}

	@Override
	public boolean isMultiConnSafe() {
		return this.delegate.isMultiConnSafe();
	}

	@Override
	public boolean isBlocking() {
		return this.blocking;
	}

	@Override
	public boolean canFlush() {
		return this.delegate.canFlush();
	}

	@Override
	public boolean canFua() {
		return this.delegate.canFua();
	}

	@Override
	public boolean canTrim() {
		return this.delegate.canTrim();
	}

	@Override
	public boolean canZero() {
		return this.delegate.canZero();
	}

	@Override
	public boolean canFastZero() {
		return this.delegate.canFastZero();
	}

	@Override
	public boolean canCache() {
		return this.delegate.canCache();
	}

	@Override
	public boolean canExtents() {
		return this.delegate.canExtents();
	}

	@Override
	public boolean isRotational() {
		return this.delegate.isRotational();
	}

	@Override
	public java.util.Map<String, Object> details() {
		return this.delegate.details();
	}

	@Override
	public int minimumBlockSize() {
		return this.delegate.minimumBlockSize();
	}

	@Override
	public int preferredBlockSize() {
		return this.delegate.preferredBlockSize();
	}

	@Override
	public boolean canWritePieces() {
		return this.delegate.canWritePieces();
	}

	/** Never offered: the server would read and write the file directly, past the faults. */
	@Override
	public FileChannel servedFile() {
		return null;
	}

	@Override
	public void read(long offset, ByteBuffer dst) throws IOException {
		Fault shortRead = before(Operation.READ, offset, dst.remaining());
		if (shortRead == null) {
			this.delegate.read(offset, dst);
			return;
		}
		int wanted = Math.max(0, dst.remaining() - shortRead.missingBytes());
		ByteBuffer part = dst.slice();
		part.limit(wanted);
		this.delegate.read(offset, part);
		dst.position(dst.position() + part.position());
	}

	/**
	 * Lends what the wrapped backend lends, after the READ faults (a short read shortens the
	 * loan). When it lends nothing the server reads instead, and {@link #read} applies them.
	 */
	@Override
	public Lent lend(long offset, int length) throws IOException {
		Lent lent = this.delegate.lend(offset, length);
		if (lent == null) {
			return null;
		}
		try {
			Fault shortRead = before(Operation.READ, offset, length);
			return (shortRead != null) ? shortened(lent, shortRead.missingBytes()) : lent;
		}
		catch (IOException | RuntimeException | Error ex) {
			lent.release();
			throw ex;
		}
	}

	@Override
	public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
		int length = src.remaining();
		before(Operation.WRITE, offset, length);
		this.delegate.write(offset, src, fua);
		if (fua) {
			afterSync(Operation.WRITE, offset, length);
		}
	}

	@Override
	public void flush() throws IOException {
		before(Operation.FLUSH, 0, -1);
		this.delegate.flush();
	}

	@Override
	public void trim(long offset, long length, boolean fua) throws IOException {
		before(Operation.TRIM, offset, length);
		this.delegate.trim(offset, length, fua);
		if (fua) {
			afterSync(Operation.TRIM, offset, length);
		}
	}

	@Override
	public void zero(long offset, long length, boolean mayTrim, boolean fast, boolean fua) throws IOException {
		before(Operation.ZERO, offset, length);
		this.delegate.zero(offset, length, mayTrim, fast, fua);
		if (fua) {
			afterSync(Operation.ZERO, offset, length);
		}
	}

	@Override
	public void cache(long offset, long length) throws IOException {
		before(Operation.CACHE, offset, length);
		this.delegate.cache(offset, length);
	}

	@Override
	public void extents(long offset, long length, ExtentSink sink) throws IOException {
		before(Operation.EXTENTS, offset, length);
		this.delegate.extents(offset, length, sink);
	}

	/** The wrapped backend's view for a connection, wrapped with the same faults. */
	@Override
	public ExportBackend connect() throws IOException {
		ExportBackend view = this.delegate.connect();
		return (view == this.delegate) ? this : new FaultInjectingBackend(view, this.faults, this.random, this.blocking);
	}

	@Override
	public void disconnect() throws IOException {
		this.delegate.disconnect();
	}

	@Override
	public String toString() {
		return "FaultInjectingBackend[" + this.delegate.name() + ", " + this.faults + "]";
	}

	/**
	 * Applies the faults due before {@code operation} runs: waits the delays, throws the first
	 * error (or failed sync of a FLUSH); returns the first short read that fired for a READ.
	 */
	private Fault before(Operation operation, long offset, long length) throws IOException {
		Fault shortRead = null;
		for (Fault fault : this.faults) {
			switch (fault.kind()) {
				case DELAY -> {
					if (fault.fires(operation, offset, length, this.random)) {
						sleep(fault);
					}
				}
				case ERROR -> {
					if (fault.fires(operation, offset, length, this.random)) {
						throw fault.failure();
					}
				}
				case FAILED_SYNC -> {
					if (operation == Operation.FLUSH && fault.fires(operation, offset, length, this.random)) {
						throw new SyncFailedException("injected failed sync (" + fault + ")");
					}
				}
				case SHORT_READ -> {
					if (shortRead == null && fault.fires(operation, offset, length, this.random)) {
						shortRead = fault;
					}
				}
			}
		}
		return shortRead;
	}

	/** After a FUA operation ran: its sync fails when a failed-sync fault fires. */
	private void afterSync(Operation operation, long offset, long length) throws SyncFailedException {
		for (Fault fault : this.faults) {
			if (fault.kind() == Fault.Kind.FAILED_SYNC && fault.fires(operation, offset, length, this.random)) {
				throw new SyncFailedException("injected failed sync of a FUA " + operation + " (" + fault + ")");
			}
		}
	}

	private static void sleep(Fault fault) throws InterruptedIOException {
		try {
			TimeUnit.NANOSECONDS.sleep(fault.delay().toNanos());
		}
		catch (InterruptedException ex) {
			Thread.currentThread().interrupt();
			throw new InterruptedIOException("interrupted during an injected delay");
		}
	}

	/** The loan without its last {@code missing} bytes. */
	private static Lent shortened(Lent lent, int missing) {
		ByteBuffer[] buffers = lent.buffers();
		List<ByteBuffer> kept = new ArrayList<>(buffers.length);
		long total = 0;
		for (ByteBuffer b : buffers) {
			total += b.remaining();
		}
		long keep = Math.max(0, total - missing);
		for (ByteBuffer b : buffers) {
			if (keep <= 0) {
				break;
			}
			ByteBuffer d = b.duplicate();
			if (d.remaining() > keep) {
				d.limit(d.position() + (int) keep);
			}
			keep -= d.remaining();
			kept.add(d);
		}
		ByteBuffer[] result = kept.toArray(new ByteBuffer[0]);
		return new Lent() {

			@Override
			public ByteBuffer[] buffers() {
				return result;
			}

			@Override
			public void release() {
				lent.release();
			}

		};
	}

	/** Builds a {@link FaultInjectingBackend}. */
	public static final class Builder {

		private final ExportBackend delegate;

		private final List<Fault> faults = new ArrayList<>();

		private Long seed;

		private boolean blocking = true;

		private Builder(ExportBackend delegate) {
			this.delegate = Objects.requireNonNull(delegate, "delegate");
		}

		/** Adds a fault; faults are checked in the order added. */
		public Builder fault(Fault fault) {
			this.faults.add(Objects.requireNonNull(fault, "fault"));
			return this;
		}

		/** Seeds the draws of {@link Fault#rate}, so a run can be repeated; random by default. */
		public Builder seed(long seed) {
			this.seed = seed;
			return this;
		}

		/**
		 * Whether the backend says it blocks (true by default, so delays run on worker threads).
		 * False keeps a non-blocking backend on the network threads: then use no delays.
		 */
		public Builder blocking(boolean blocking) {
			this.blocking = blocking;
			return this;
		}

		public FaultInjectingBackend build() {
			// A seeded Random is thread-safe and repeatable; unseeded draws use the thread's own.
			RandomGenerator random = (this.seed != null) ? new Random(this.seed) : new ThreadLocalDraws();
			return new FaultInjectingBackend(this.delegate, new CopyOnWriteArrayList<>(this.faults), random,
					this.blocking);
		}

	}

	/** Draws from the calling thread's {@link ThreadLocalRandom}. */
	private static final class ThreadLocalDraws implements RandomGenerator {

		@Override
		public long nextLong() {
			return ThreadLocalRandom.current().nextLong();
		}

		@Override
		public double nextDouble() {
			return ThreadLocalRandom.current().nextDouble();
		}

	}

}
