package dev.nbd.testsupport;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.awaitility.Awaitility;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.MemoryBackend;

/**
 * An export of {@code size} bytes in memory whose reads, writes and flushes wait at a gate while
 * it is closed (open at first), so a test holds requests in flight for as long as it needs and
 * knows when they arrived ({@link #awaitWaiting(int)}) instead of sleeping. Only the plain
 * operations (no lending, no pieces), so every request passes the gate; blocking, so the server
 * runs them on its worker threads and the event loop stays free.
 */
public class GatedBackend implements ExportBackend {

	private final MemoryBackend data;

	private volatile CountDownLatch gate = new CountDownLatch(0);

	private final AtomicInteger waiting = new AtomicInteger();

	public GatedBackend(String name, long size) {
		this.data = new MemoryBackend(name, size);
	}

	/** Requests arriving from now on wait until {@link #open()}. */
	public void close() {
		this.gate = new CountDownLatch(1);
	}

	/** Lets every waiting and later request through. */
	public void open() {
		this.gate.countDown();
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
		pass();
		this.data.read(offset, dst);
	}

	@Override
	public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
		pass();
		this.data.write(offset, src, fua);
	}

	@Override
	public void flush() throws IOException {
		pass();
	}

	private void pass() {
		this.waiting.incrementAndGet();
		try {
			if (!this.gate.await(5, TimeUnit.MINUTES)) {
				throw new IllegalStateException("gate of " + name() + " never opened");
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
