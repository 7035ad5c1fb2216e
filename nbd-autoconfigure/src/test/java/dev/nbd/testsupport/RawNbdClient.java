package dev.nbd.testsupport;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.Closeable;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.InetAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

import dev.nbd.protocol.NbdProtocol;

/**
 * A minimal blocking NBD client speaking the wire protocol directly (fixed newstyle, OPT_GO,
 * simple replies), for tests that need exact control: requests left in flight, pipelining,
 * thousands of short connections. Not thread-safe.
 */
public final class RawNbdClient implements Closeable {

	private final Socket socket;

	private final DataInputStream in;

	private final DataOutputStream out;

	/** READ lengths by cookie, to know how much data follows a reply. */
	private final Map<Long, Integer> readLengths = new ConcurrentHashMap<>();

	private long nextCookie = 1;

	private final long size;

	private RawNbdClient(Socket socket, String export) throws IOException {
		this.socket = socket;
		socket.setTcpNoDelay(true);
		socket.setSoTimeout(10_000);
		this.in = new DataInputStream(new BufferedInputStream(socket.getInputStream()));
		this.out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream()));
		expect(this.in.readLong() == NbdProtocol.NBDMAGIC, "NBDMAGIC");
		expect(this.in.readLong() == NbdProtocol.IHAVEOPT, "IHAVEOPT");
		this.in.readUnsignedShort();
		this.out.writeInt(NbdProtocol.FLAG_C_FIXED_NEWSTYLE | NbdProtocol.FLAG_C_NO_ZEROES);
		byte[] name = export.getBytes(StandardCharsets.UTF_8);
		this.out.writeLong(NbdProtocol.IHAVEOPT);
		this.out.writeInt(NbdProtocol.OPT_GO);
		this.out.writeInt(4 + name.length + 2);
		this.out.writeInt(name.length);
		this.out.write(name);
		this.out.writeShort(0);
		this.out.flush();
		long exportSize = -1;
		while (true) {
			expect(this.in.readLong() == NbdProtocol.OPTION_REPLY_MAGIC, "option reply magic");
			this.in.readInt();
			int type = this.in.readInt();
			byte[] data = new byte[this.in.readInt()];
			this.in.readFully(data);
			if (type == NbdProtocol.REP_ACK) {
				break;
			}
			if ((type & 0x80000000) != 0) {
				throw new IOException("OPT_GO refused (0x" + Integer.toHexString(type) + "): "
						+ new String(data, StandardCharsets.UTF_8));
			}
			if (type == NbdProtocol.REP_INFO && data.length >= 12 && data[0] == 0 && data[1] == 0) {
				exportSize = java.nio.ByteBuffer.wrap(data, 2, 8).getLong();
			}
		}
		this.size = exportSize;
	}

	/** Connects to 127.0.0.1:{@code port} and attaches to {@code export}. */
	public static RawNbdClient connect(int port, String export) throws IOException {
		Socket socket = new Socket(InetAddress.getLoopbackAddress(), port);
		try {
			return new RawNbdClient(socket, export);
		}
		catch (IOException | RuntimeException ex) {
			socket.close();
			throw ex;
		}
	}

	public long size() {
		return this.size;
	}

	/** Sends a READ without waiting; returns its cookie. */
	public long sendRead(long offset, int length) throws IOException {
		long cookie = send(NbdProtocol.CMD_READ, offset, length, null);
		this.readLengths.put(cookie, length);
		return cookie;
	}

	public long sendWrite(long offset, byte[] data) throws IOException {
		return send(NbdProtocol.CMD_WRITE, offset, data.length, data);
	}

	public long sendFlush() throws IOException {
		return send(NbdProtocol.CMD_FLUSH, 0, 0, null);
	}

	/** Sends any request (no payload unless {@code data}). */
	public long send(int type, long offset, int length, byte[] data) throws IOException {
		long cookie = this.nextCookie++;
		this.out.writeInt(NbdProtocol.REQUEST_MAGIC);
		this.out.writeShort(0);
		this.out.writeShort(type);
		this.out.writeLong(cookie);
		this.out.writeLong(offset);
		this.out.writeInt(length);
		if (data != null) {
			this.out.write(data);
		}
		this.out.flush();
		return cookie;
	}

	/** Reads the next simple reply (and a READ's data). */
	public Reply receive() throws IOException {
		expect(this.in.readInt() == NbdProtocol.SIMPLE_REPLY_MAGIC, "simple reply magic");
		int error = this.in.readInt();
		long cookie = this.in.readLong();
		Integer length = this.readLengths.remove(cookie);
		byte[] data = null;
		if (length != null && error == 0) {
			data = new byte[length];
			this.in.readFully(data);
		}
		return new Reply(cookie, error, data);
	}

	/** Sends a request and waits for its reply (nothing else may be in flight). */
	public Reply call(int type, long offset, int length, byte[] data) throws IOException {
		if (type == NbdProtocol.CMD_READ) {
			sendRead(offset, length);
		}
		else {
			send(type, offset, length, data);
		}
		return receive();
	}

	/** Sends NBD_CMD_DISC and closes the socket. */
	public void disconnect() throws IOException {
		try {
			send(NbdProtocol.CMD_DISC, 0, 0, null);
		}
		finally {
			this.socket.close();
		}
	}

	/** True once the server has closed the connection (reads end of stream). */
	public boolean serverClosed() throws IOException {
		try {
			return this.in.read() == -1;
		}
		catch (java.net.SocketException ex) {
			return true;
		}
	}

	@Override
	public void close() throws IOException {
		this.socket.close();
	}

	private static void expect(boolean ok, String what) throws IOException {
		if (!ok) {
			throw new IOException("unexpected " + what);
		}
	}

	/** A simple reply: {@code error} 0 on success. */
	public record Reply(long cookie, int error, byte[] data) {
	}

}
