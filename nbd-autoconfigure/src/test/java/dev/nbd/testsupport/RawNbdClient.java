package dev.nbd.testsupport;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.LongSupplier;

import dev.nbd.protocol.NbdProtocol;

/**
 * A minimal pipelined NBD client over a plain socket (fixed newstyle, EXPORT_NAME, simple
 * replies): requests may be sent from many threads at once, replies are matched by cookie on a
 * reader thread. Each request and reply is stamped with {@code clock} at the moment it is sent
 * or received, so tests can order client events against what a backend recorded.
 */
public final class RawNbdClient implements AutoCloseable {

	/** A reply: NBD error (0 = success), data for READ, and when it was received. */
	public record Reply(int error, byte[] data, long receivedAt) {
	}

	/** A request on its way: when it was sent and its reply to come. */
	public record Pending(long sentAt, CompletableFuture<Reply> reply) {
	}

	private final Socket socket;

	private final DataInputStream in;

	private final DataOutputStream out;

	private final LongSupplier clock;

	private final long size;

	private final int transmissionFlags;

	private final AtomicLong cookies = new AtomicLong();

	private final Map<Long, CompletableFuture<Reply>> waiting = new ConcurrentHashMap<>();

	private final Map<Long, Integer> readLengths = new ConcurrentHashMap<>();

	private final Thread reader;

	private RawNbdClient(Socket socket, LongSupplier clock, long size, int transmissionFlags) throws IOException {
		this.socket = socket;
		this.clock = clock;
		this.in = new DataInputStream(new BufferedInputStream(socket.getInputStream(), 1 << 16));
		this.out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream(), 1 << 16));
		this.size = size;
		this.transmissionFlags = transmissionFlags;
		this.reader = new Thread(this::readReplies, "raw-nbd-client-reader");
		this.reader.setDaemon(true);
		this.reader.start();
	}

	public static RawNbdClient connect(int port, String export) {
		return connect(port, export, System::nanoTime);
	}

	public static RawNbdClient connect(int port, String export, LongSupplier clock) {
		Socket socket = new Socket();
		try {
			socket.setTcpNoDelay(true);
			socket.connect(new InetSocketAddress("127.0.0.1", port), 5000);
			// Unbuffered streams for the handshake: nothing is read past its end.
			DataInputStream in = new DataInputStream(socket.getInputStream());
			DataOutputStream out = new DataOutputStream(socket.getOutputStream());
			expect(in.readLong() == NbdProtocol.NBDMAGIC, "NBDMAGIC");
			expect(in.readLong() == NbdProtocol.IHAVEOPT, "IHAVEOPT");
			int serverFlags = in.readUnsignedShort();
			expect((serverFlags & NbdProtocol.FLAG_FIXED_NEWSTYLE) != 0, "fixed newstyle");
			out.writeInt(NbdProtocol.FLAG_C_FIXED_NEWSTYLE | NbdProtocol.FLAG_C_NO_ZEROES);
			byte[] name = export.getBytes(StandardCharsets.UTF_8);
			out.writeLong(NbdProtocol.IHAVEOPT);
			out.writeInt(NbdProtocol.OPT_EXPORT_NAME);
			out.writeInt(name.length);
			out.write(name);
			out.flush();
			long size = in.readLong();
			int flags = in.readUnsignedShort();
			return new RawNbdClient(socket, clock, size, flags);
		}
		catch (IOException ex) {
			try {
				socket.close();
			}
			catch (IOException ignored) {
				// closing after a failed handshake
			}
			throw new UncheckedIOException(ex);
		}
	}

	public long size() {
		return this.size;
	}

	public int transmissionFlags() {
		return this.transmissionFlags;
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
		synchronized (this.out) {
			sentAt = this.clock.getAsLong();
			try {
				this.out.writeInt(NbdProtocol.REQUEST_MAGIC);
				this.out.writeShort(flags);
				this.out.writeShort(type);
				this.out.writeLong(cookie);
				this.out.writeLong(offset);
				this.out.writeInt(length);
				if (payload != null) {
					this.out.write(payload);
				}
				this.out.flush();
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
				int magic = this.in.readInt();
				expect(magic == NbdProtocol.SIMPLE_REPLY_MAGIC, "simple reply magic, got " + Integer.toHexString(magic));
				int error = this.in.readInt();
				long cookie = this.in.readLong();
				long receivedAt = this.clock.getAsLong();
				Integer length = this.readLengths.remove(cookie);
				byte[] data = null;
				if (length != null && error == 0) {
					data = new byte[length];
					this.in.readFully(data);
				}
				CompletableFuture<Reply> f = this.waiting.remove(cookie);
				expect(f != null, "reply to unknown cookie " + cookie);
				f.complete(new Reply(error, data, receivedAt));
			}
		}
		catch (IOException | RuntimeException ex) {
			Throwable cause = (ex instanceof EOFException) ? new EOFException("server closed the connection") : ex;
			this.waiting.values().forEach(f -> f.completeExceptionally(cause));
			this.waiting.clear();
		}
	}

	private static void expect(boolean condition, String what) throws IOException {
		if (!condition) {
			throw new IOException("protocol error: expected " + what);
		}
	}

	@Override
	public void close() {
		try {
			synchronized (this.out) {
				this.out.writeInt(NbdProtocol.REQUEST_MAGIC);
				this.out.writeShort(0);
				this.out.writeShort(NbdProtocol.CMD_DISC);
				this.out.writeLong(this.cookies.incrementAndGet());
				this.out.writeLong(0);
				this.out.writeInt(0);
				this.out.flush();
			}
		}
		catch (IOException ex) {
			// Already gone.
		}
		try {
			this.socket.close();
		}
		catch (IOException ex) {
			// Closing.
		}
	}

}
