package dev.nbd.server;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.Closeable;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.Socket;
import java.net.SocketException;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.function.LongToIntFunction;

import dev.nbd.protocol.NbdProtocol;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * A deliberately small NBD client over a plain socket, so tests control every byte: it can
 * send what a well-behaved client would never send.
 */
final class RawNbdClient implements Closeable {

	/** One option reply of the handshake. */
	record OptionReply(int option, int type, byte[] data) {

		boolean isError() {
			return (this.type & NbdProtocol.REP_FLAG_ERROR) != 0;
		}

		ByteBuffer buffer() {
			return ByteBuffer.wrap(this.data);
		}

	}

	/** A simple reply; {@code data} holds a successful READ's payload. */
	record SimpleReply(int error, long cookie, byte[] data) {
	}

	/** One structured reply chunk. */
	record Chunk(int flags, int type, long cookie, byte[] payload) {

		boolean done() {
			return (this.flags & NbdProtocol.REPLY_FLAG_DONE) != 0;
		}

		ByteBuffer buffer() {
			return ByteBuffer.wrap(this.payload);
		}

		/** Error value of an error chunk. */
		int error() {
			return buffer().getInt();
		}

	}

	final Socket socket;

	final DataInputStream in;

	final DataOutputStream out;

	/** Export size and transmission flags, after {@link #go}. */
	long size;

	int transmissionFlags;

	private RawNbdClient(Socket socket) throws IOException {
		this.socket = socket;
		socket.setSoTimeout(10_000);
		socket.setTcpNoDelay(true);
		this.in = new DataInputStream(new BufferedInputStream(socket.getInputStream(), 1 << 16));
		this.out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream(), 1 << 16));
	}

	static RawNbdClient connect(int port) {
		try {
			return new RawNbdClient(new Socket(InetAddress.getLoopbackAddress(), port));
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
	}

	/** Reads the greeting, checks its magics and returns the handshake flags. */
	int greeting() throws IOException {
		assertThat(this.in.readLong()).isEqualTo(NbdProtocol.NBDMAGIC);
		assertThat(this.in.readLong()).isEqualTo(NbdProtocol.IHAVEOPT);
		return this.in.readUnsignedShort();
	}

	/** Greeting, then the given client flags. */
	RawNbdClient hello(int clientFlags) throws IOException {
		assertThat(greeting()).isEqualTo(NbdProtocol.FLAG_FIXED_NEWSTYLE | NbdProtocol.FLAG_NO_ZEROES);
		this.out.writeInt(clientFlags);
		this.out.flush();
		return this;
	}

	RawNbdClient hello() throws IOException {
		return hello(NbdProtocol.FLAG_C_FIXED_NEWSTYLE | NbdProtocol.FLAG_C_NO_ZEROES);
	}

	void option(int option, byte[] data) throws IOException {
		optionHeader(option, data.length);
		this.out.write(data);
		this.out.flush();
	}

	void optionHeader(int option, long length) throws IOException {
		this.out.writeLong(NbdProtocol.IHAVEOPT);
		this.out.writeInt(option);
		this.out.writeInt((int) length);
	}

	OptionReply readOptionReply() throws IOException {
		assertThat(this.in.readLong()).isEqualTo(NbdProtocol.OPTION_REPLY_MAGIC);
		int option = this.in.readInt();
		int type = this.in.readInt();
		int length = this.in.readInt();
		assertThat(length).isBetween(0, 1 << 20);
		byte[] data = new byte[length];
		this.in.readFully(data);
		return new OptionReply(option, type, data);
	}

	/** Replies up to and including the final one (ACK or an error). */
	List<OptionReply> readOptionReplies() throws IOException {
		List<OptionReply> replies = new ArrayList<>();
		while (true) {
			OptionReply r = readOptionReply();
			replies.add(r);
			if (r.type() == NbdProtocol.REP_ACK || r.isError()) {
				return replies;
			}
		}
	}

	/** Sends an option and returns its replies. */
	List<OptionReply> haggle(int option, byte[] data) throws IOException {
		option(option, data);
		return readOptionReplies();
	}

	static byte[] infoData(String export, int... infoTypes) {
		byte[] name = export.getBytes(StandardCharsets.UTF_8);
		ByteBuffer b = ByteBuffer.allocate(4 + name.length + 2 + 2 * infoTypes.length);
		b.putInt(name.length).put(name).putShort((short) infoTypes.length);
		for (int t : infoTypes) {
			b.putShort((short) t);
		}
		return b.array();
	}

	static byte[] metaData(String export, String... queries) {
		byte[] name = export.getBytes(StandardCharsets.UTF_8);
		int len = 4 + name.length + 4;
		for (String q : queries) {
			len += 4 + q.getBytes(StandardCharsets.UTF_8).length;
		}
		ByteBuffer b = ByteBuffer.allocate(len);
		b.putInt(name.length).put(name).putInt(queries.length);
		for (String q : queries) {
			byte[] qb = q.getBytes(StandardCharsets.UTF_8);
			b.putInt(qb.length).put(qb);
		}
		return b.array();
	}

	/**
	 * Negotiates like a modern client: optionally structured replies and base:allocation, then
	 * GO. Leaves the client in transmission with {@link #size} and {@link #transmissionFlags} set.
	 */
	static RawNbdClient go(int port, String export, boolean structured, boolean baseAllocation) throws IOException {
		RawNbdClient c = connect(port).hello();
		if (structured) {
			assertThat(c.haggle(NbdProtocol.OPT_STRUCTURED_REPLY, new byte[0]))
				.extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_ACK);
		}
		if (baseAllocation) {
			List<OptionReply> replies = c.haggle(NbdProtocol.OPT_SET_META_CONTEXT,
					metaData(export, NbdProtocol.CONTEXT_BASE_ALLOCATION));
			assertThat(replies).extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_META_CONTEXT, NbdProtocol.REP_ACK);
		}
		List<OptionReply> replies = c.haggle(NbdProtocol.OPT_GO, infoData(export));
		OptionReply last = replies.get(replies.size() - 1);
		assertThat(last.type()).as("GO %s: %s", export, replies).isEqualTo(NbdProtocol.REP_ACK);
		for (OptionReply r : replies) {
			if (r.type() == NbdProtocol.REP_INFO && r.buffer().getShort() == NbdProtocol.INFO_EXPORT) {
				ByteBuffer b = r.buffer();
				b.getShort();
				c.size = b.getLong();
				c.transmissionFlags = b.getShort() & 0xffff;
			}
		}
		return c;
	}

	void request(int flags, int type, long cookie, long offset, long length, byte[] payload) throws IOException {
		writeRequest(flags, type, cookie, offset, length, payload);
		this.out.flush();
	}

	/** Buffers a request without flushing, to pipeline several in one segment. */
	void writeRequest(int flags, int type, long cookie, long offset, long length, byte[] payload) throws IOException {
		this.out.writeInt(NbdProtocol.REQUEST_MAGIC);
		this.out.writeShort(flags);
		this.out.writeShort(type);
		this.out.writeLong(cookie);
		this.out.writeLong(offset);
		this.out.writeInt((int) length);
		if (payload != null) {
			this.out.write(payload);
		}
	}

	void flush() throws IOException {
		this.out.flush();
	}

	/** A simple reply; a successful reply carries {@code readLength} bytes of data. */
	SimpleReply readSimpleReply(int readLength) throws IOException {
		assertThat(this.in.readInt()).isEqualTo(NbdProtocol.SIMPLE_REPLY_MAGIC);
		int error = this.in.readInt();
		long cookie = this.in.readLong();
		byte[] data = new byte[(error == 0) ? readLength : 0];
		this.in.readFully(data);
		return new SimpleReply(error, cookie, data);
	}

	/** A simple reply whose data length, when successful, depends on which request it answers. */
	SimpleReply readSimpleReply(LongToIntFunction readLengthOfCookie) throws IOException {
		assertThat(this.in.readInt()).isEqualTo(NbdProtocol.SIMPLE_REPLY_MAGIC);
		int error = this.in.readInt();
		long cookie = this.in.readLong();
		byte[] data = new byte[(error == 0) ? readLengthOfCookie.applyAsInt(cookie) : 0];
		this.in.readFully(data);
		return new SimpleReply(error, cookie, data);
	}

	SimpleReply readSimpleReply() throws IOException {
		return readSimpleReply(0);
	}

	Chunk readChunk() throws IOException {
		assertThat(this.in.readInt()).isEqualTo(NbdProtocol.STRUCTURED_REPLY_MAGIC);
		int flags = this.in.readUnsignedShort();
		int type = this.in.readUnsignedShort();
		long cookie = this.in.readLong();
		int length = this.in.readInt();
		byte[] payload = new byte[length];
		this.in.readFully(payload);
		return new Chunk(flags, type, cookie, payload);
	}

	/** Chunks up to and including the one flagged DONE. */
	List<Chunk> readChunks() throws IOException {
		List<Chunk> chunks = new ArrayList<>();
		Chunk c;
		do {
			c = readChunk();
			chunks.add(c);
		}
		while (!c.done());
		return chunks;
	}

	/** Waits for the server to close: true on end of stream or reset, false on data. */
	boolean closedByServer() throws IOException {
		try {
			return this.in.read() == -1;
		}
		catch (SocketException ex) {
			return true;
		}
		catch (SocketTimeoutException ex) {
			return false;
		}
	}

	/** Reads everything until the server closes, failing on timeout. */
	byte[] readToEnd() throws IOException {
		try {
			return this.in.readAllBytes();
		}
		catch (SocketException ex) {
			return new byte[0];
		}
	}

	void readFully(byte[] b) throws IOException {
		try {
			this.in.readFully(b);
		}
		catch (EOFException ex) {
			throw new AssertionError("server closed the connection", ex);
		}
	}

	@Override
	public void close() {
		try {
			this.socket.close();
		}
		catch (IOException ex) {
			// Closing.
		}
	}

}
