package dev.nbd.testsupport;

import java.nio.ByteBuffer;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import dev.nbd.backend.ExportBackend;

/**
 * A blocking backend whose reads and writes wait while its gate is closed, so tests can hold
 * requests in flight and know which ones the server started. Reads return {@link #expected}
 * bytes; writes are discarded. Records what happened, in order, in {@link #events()}:
 * {@code "read OFFSET"}, {@code "write OFFSET"} (when a call returns) and {@code "flush"}.
 */
public final class GatedBackend implements ExportBackend {

	private final String name;

	private final long size;

	private volatile CountDownLatch gate = new CountDownLatch(0);

	private final AtomicInteger started = new AtomicInteger();

	private final List<String> events = new CopyOnWriteArrayList<>();

	private final List<Long> startedOffsets = new CopyOnWriteArrayList<>();

	private final AtomicInteger active = new AtomicInteger();

	private final AtomicInteger maxActive = new AtomicInteger();

	public GatedBackend(String name, long size) {
		this.name = name;
		this.size = size;
	}

	/** The byte a read returns at {@code offset}. */
	public static byte expected(long offset) {
		return (byte) (offset * 7 + (offset >>> 12));
	}

	public void close() {
		this.gate = new CountDownLatch(1);
	}

	public void open() {
		this.gate.countDown();
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

	private void pass(long offset) {
		this.maxActive.accumulateAndGet(this.active.incrementAndGet(), Math::max);
		this.startedOffsets.add(offset);
		this.started.incrementAndGet();
		try {
			if (!this.gate.await(60, TimeUnit.SECONDS)) {
				throw new IllegalStateException("gate never opened");
			}
		}
		catch (InterruptedException ex) {
			Thread.currentThread().interrupt();
		}
		finally {
			this.active.decrementAndGet();
		}
	}

	@Override
	public String name() {
		return this.name;
	}

	@Override
	public long size() {
		return this.size;
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
	public void read(long offset, ByteBuffer dst) {
		pass(offset);
		for (long o = offset; dst.hasRemaining(); o++) {
			dst.put(expected(o));
		}
		this.events.add("read " + offset);
	}

	@Override
	public void write(long offset, ByteBuffer src, boolean fua) {
		pass(offset);
		src.position(src.limit());
		this.events.add("write " + offset);
	}

	@Override
	public void flush() {
		this.events.add("flush");
	}

}
