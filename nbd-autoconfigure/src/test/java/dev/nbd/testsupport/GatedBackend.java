package dev.nbd.testsupport;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.awaitility.Awaitility;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.MemoryBackend;

/**
 * An export of {@code size} bytes in memory whose reads, writes and flushes wait at a gate while
 * it is closed (open at first), so a test holds requests in flight for as long as it needs and
 * knows when they arrived ({@link #awaitWaiting(int)}, {@link #started()}) instead of sleeping, and
 * lets them on one at a time if it likes ({@link #letThrough(int)}).
 * Only the plain operations (no lending, no pieces), so every request passes the gate; blocking,
 * so the server runs them on its worker threads and the event loop stays free. Records what
 * happened, in order, in {@link #events()}: {@code "read OFFSET"}, {@code "write OFFSET"} (when a
 * call returns) and {@code "flush"}.
 */
public class GatedBackend implements ExportBackend {

	private final MemoryBackend data;

	/** Guards {@link #closed} and {@link #passes}; waiters wait on it. */
	private final Object gate = new Object();

	private boolean closed;

	/** Requests that may still pass the closed gate ({@link #letThrough(int)}). */
	private long passes;

	private final AtomicInteger waiting = new AtomicInteger();

	private final AtomicInteger started = new AtomicInteger();

	private final List<Long> startedOffsets = new CopyOnWriteArrayList<>();

	private final AtomicInteger active = new AtomicInteger();

	private final AtomicInteger maxActive = new AtomicInteger();

	private final List<String> events = new CopyOnWriteArrayList<>();

	/** Starts zeroed. */
	public GatedBackend(String name, long size) {
		this.data = new MemoryBackend(name, size);
	}

	/** Starts holding {@link #expected(long)} at every offset, so reads can be checked byte by byte. */
	public static GatedBackend withPattern(String name, long size) {
		GatedBackend backend = new GatedBackend(name, size);
		byte[] chunk = new byte[64 * 1024];
		for (long pos = 0; pos < size; pos += chunk.length) {
			int n = (int) Math.min(chunk.length, size - pos);
			for (int i = 0; i < n; i++) {
				chunk[i] = expected(pos + i);
			}
			try {
				backend.data.write(pos, ByteBuffer.wrap(chunk, 0, n), false);
			}
			catch (IOException ex) {
				throw new java.io.UncheckedIOException(ex);
			}
		}
		return backend;
	}

	/** The byte a {@link #withPattern} backend holds at {@code offset} until it is written. */
	public static byte expected(long offset) {
		return (byte) (offset * 7 + (offset >>> 12));
	}

	/** Requests arriving from now on wait until {@link #open()} (or {@link #letThrough(int)}). */
	public void close() {
		synchronized (this.gate) {
			this.closed = true;
			this.passes = 0;
		}
	}

	/** Lets every waiting and later request through. */
	public void open() {
		synchronized (this.gate) {
			this.closed = false;
			this.gate.notifyAll();
		}
	}

	/**
	 * Lets {@code count} more requests through the closed gate (any of those waiting or coming
	 * next); it stays closed for the rest.
	 */
	public void letThrough(int count) {
		synchronized (this.gate) {
			this.passes += count;
			this.gate.notifyAll();
		}
	}

	/** How many requests wait at the gate now. */
	public int waiting() {
		return this.waiting.get();
	}

	/** Waits (up to a minute, an upper bound) until {@code count} requests wait at the gate. */
	public void awaitWaiting(int count) {
		Awaitility.await()
			.atMost(Duration.ofMinutes(1))
			.pollInterval(Duration.ofMillis(5))
			.until(() -> this.waiting.get() >= count);
	}

	/** Reads and writes that reached the backend (including those waiting at the gate). */
	public int started() {
		return this.started.get();
	}

	/** Offsets of the reads and writes that reached the backend. */
	public List<Long> startedOffsets() {
		return this.startedOffsets;
	}

	/** Most reads and writes that were in the backend at the same time. */
	public int maxConcurrent() {
		return this.maxActive.get();
	}

	public List<String> events() {
		return this.events;
	}

	@Override
	public String name() {
		return this.data.name();
	}

	@Override
	public long size() {
		return this.data.size();
	}

	@Override
	public boolean isMultiConnSafe() {
		return true;
	}

	@Override
	public boolean canFlush() {
		return true;
	}

	@Override
	public void read(long offset, ByteBuffer dst) throws IOException {
		io(offset);
		this.data.read(offset, dst);
		this.events.add("read " + offset);
	}

	@Override
	public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
		io(offset);
		this.data.write(offset, src, fua);
		this.events.add("write " + offset);
	}

	@Override
	public void flush() throws IOException {
		pass();
		this.events.add("flush");
	}

	private void io(long offset) {
		this.maxActive.accumulateAndGet(this.active.incrementAndGet(), Math::max);
		this.startedOffsets.add(offset);
		this.started.incrementAndGet();
		try {
			pass();
		}
		finally {
			this.active.decrementAndGet();
		}
	}

	private void pass() {
		long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(5);
		synchronized (this.gate) {
			this.waiting.incrementAndGet();
			try {
				while (this.closed && this.passes == 0) {
					long left = deadline - System.nanoTime();
					if (left <= 0) {
						throw new IllegalStateException("gate of " + name() + " never opened");
					}
					TimeUnit.NANOSECONDS.timedWait(this.gate, left);
				}
				if (this.closed) {
					this.passes--;
				}
			}
			catch (InterruptedException ex) {
				Thread.currentThread().interrupt();
			}
			finally {
				this.waiting.decrementAndGet();
			}
		}
	}

}
