package dev.nbd.testsupport;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.SocketException;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.LongSupplier;

import dev.nbd.protocol.NbdProtocol;

/**
 * {@link RawNbdClient} made concurrent: requests may be sent from many threads at once, replies
 * are matched by cookie on a reader thread and complete futures. Each request and reply is stamped
 * with {@code clock} at the moment it is sent or received, so tests can order client events
 * against what a backend recorded on the same clock.
 */
public final class PipelinedNbdClient implements AutoCloseable {

	/** A reply: NBD error (0 = success), data for READ, and when it was received. */
	public record Reply(int error, byte[] data, long receivedAt) {
	}

	/** A request on its way: when it was sent and its reply to come. */
	public record Pending(long sentAt, CompletableFuture<Reply> reply) {
	}

	private final RawNbdClient raw;

	private final LongSupplier clock;

	private final AtomicLong cookies = new AtomicLong();

	private final Map<Long, CompletableFuture<Reply>> waiting = new ConcurrentHashMap<>();

	private final Map<Long, Integer> readLengths = new ConcurrentHashMap<>();

	private PipelinedNbdClient(RawNbdClient raw, LongSupplier clock) throws SocketException {
		this.raw = raw;
		this.clock = clock;
		// Reply futures carry their own timeouts; the reader may wait as long as the test runs.
		raw.socket().setSoTimeout(0);
		Thread reader = new Thread(this::readReplies, "pipelined-nbd-client-reader");
		reader.setDaemon(true);
		reader.start();
	}

	/** Attaches to {@code export} (simple replies), stamping with {@link System#nanoTime()}. */
	public static PipelinedNbdClient connect(int port, String export) {
		return connect(port, export, System::nanoTime);
	}

	public static PipelinedNbdClient connect(int port, String export, LongSupplier clock) {
		try {
			RawNbdClient raw = RawNbdClient.connect(port, export);
			try {
				return new PipelinedNbdClient(raw, clock);
			}
			catch (IOException | RuntimeException ex) {
				raw.close();
				throw ex;
			}
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
	}

	public Pending write(long offset, byte[] data, boolean fua) {
		return send(NbdProtocol.CMD_WRITE, fua ? NbdProtocol.CMD_FLAG_FUA : 0, offset, data.length, data);
	}

	public Pending flush() {
		return send(NbdProtocol.CMD_FLUSH, 0, 0, 0, null);
	}

	public Pending read(long offset, int length) {
		return send(NbdProtocol.CMD_READ, 0, offset, length, null);
	}

	private Pending send(int type, int flags, long offset, int length, byte[] payload) {
		long cookie = this.cookies.incrementAndGet();
		CompletableFuture<Reply> reply = new CompletableFuture<>();
		this.waiting.put(cookie, reply);
		if (type == NbdProtocol.CMD_READ) {
			this.readLengths.put(cookie, length);
		}
		long sentAt;
		synchronized (this.raw) {
			sentAt = this.clock.getAsLong();
			try {
				this.raw.sendRequest(flags, type, cookie, offset, length, payload);
			}
			catch (IOException ex) {
				this.waiting.remove(cookie);
				reply.completeExceptionally(ex);
			}
		}
		return new Pending(sentAt, reply);
	}

	private void readReplies() {
		try {
			while (true) {
				RawNbdClient.SimpleReply header = this.raw.readSimpleReply();
				long receivedAt = this.clock.getAsLong();
				Integer length = this.readLengths.remove(header.cookie());
				byte[] data = null;
				if (length != null && header.error() == 0) {
					data = new byte[length];
					this.raw.readFully(data);
				}
				CompletableFuture<Reply> f = this.waiting.remove(header.cookie());
				if (f == null) {
					throw new IOException("reply to unknown cookie " + header.cookie());
				}
				f.complete(new Reply(header.error(), data, receivedAt));
			}
		}
		catch (IOException | RuntimeException ex) {
			this.waiting.values().forEach(f -> f.completeExceptionally(ex));
			this.waiting.clear();
		}
	}

	/** Sends NBD_CMD_DISC and closes the socket. */
	@Override
	public void close() {
		synchronized (this.raw) {
			try {
				this.raw.sendRequest(0, NbdProtocol.CMD_DISC, this.cookies.incrementAndGet(), 0, 0, null);
			}
			catch (IOException ex) {
				// Already gone.
			}
			this.raw.close();
		}
	}

}
