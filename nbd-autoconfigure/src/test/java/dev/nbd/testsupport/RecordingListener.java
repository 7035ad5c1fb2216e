package dev.nbd.testsupport;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicLong;

import org.awaitility.Awaitility;
import org.awaitility.core.ConditionTimeoutException;

import dev.nbd.server.Export;
import dev.nbd.server.NbdConnection;
import dev.nbd.server.NbdServerListener;

/** Remembers refusals, opened connections and the chunks of long requests, for assertions. */
public final class RecordingListener implements NbdServerListener {

	private final List<String> refusals = new CopyOnWriteArrayList<>();

	private final List<NbdConnection> opened = new CopyOnWriteArrayList<>();

	/** Per "export/op": bytes and count of the chunks long requests ran in. */
	private final Map<String, AtomicLong> chunkBytes = new ConcurrentHashMap<>();

	private final Map<String, AtomicLong> chunks = new ConcurrentHashMap<>();

	@Override
	public void connectionRefused(String reason) {
		this.refusals.add(reason);
	}

	@Override
	public void connectionOpened(NbdConnection connection) {
		this.opened.add(connection);
	}

	@Override
	public void backgroundChunk(Export export, String op, long bytes) {
		String key = export.name() + "/" + op;
		this.chunkBytes.computeIfAbsent(key, (k) -> new AtomicLong()).addAndGet(bytes);
		this.chunks.computeIfAbsent(key, (k) -> new AtomicLong()).incrementAndGet();
	}

	public List<String> refusals() {
		return this.refusals;
	}

	public long refusals(String reason) {
		return this.refusals.stream().filter(reason::equals).count();
	}

	public List<NbdConnection> opened() {
		return this.opened;
	}

	/** Bytes that long {@code op} requests (e.g. "write_zeroes") on {@code export} ran in chunks. */
	public long chunkBytes(String export, String op) {
		AtomicLong n = this.chunkBytes.get(export + "/" + op);
		return (n != null) ? n.get() : 0;
	}

	/** How many chunks long {@code op} requests on {@code export} ran in. */
	public long chunks(String export, String op) {
		AtomicLong n = this.chunks.get(export + "/" + op);
		return (n != null) ? n.get() : 0;
	}

	/** Waits up to {@code timeout} for at least {@code count} refusals with {@code reason}. */
	public boolean awaitRefusals(String reason, long count, Duration timeout) {
		try {
			Awaitility.await().atMost(timeout).pollInterval(Duration.ofMillis(10)).until(() -> refusals(reason) >= count);
			return true;
		}
		catch (ConditionTimeoutException ex) {
			return false;
		}
	}

}
