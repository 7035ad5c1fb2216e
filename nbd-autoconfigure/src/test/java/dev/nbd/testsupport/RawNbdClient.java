package dev.nbd.testsupport;

import java.io.BufferedInputStream;
import java.io.Closeable;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketException;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.cert.X509Certificate;

import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManager;
import javax.net.ssl.X509TrustManager;

import dev.nbd.protocol.NbdProtocol;

/**
 * A byte-level NBD client for tests that must send what real clients never would (wrong order,
 * garbage, no reads) or need exact control (requests left in flight, pipelining, thousands of
 * short connections). Blocking I/O with a read timeout; every method throws on protocol
 * surprises. Two levels: raw ({@link #connect(int)}, {@link #handshake()}, {@link #sendOption},
 * {@link #sendRequest}) and attached ({@link #connect(int, String)}, {@link #sendRead},
 * {@link #receive()}, {@link #call}). Not thread-safe.
 */
public final class RawNbdClient implements Closeable {

	private final String host;

	private final int port;

	private Socket socket;

	private DataInputStream in;

	private DataOutputStream out;

	/** READ lengths by cookie, to know how much data follows a reply. */
	private final java.util.Map<Long, Integer> readLengths = new java.util.HashMap<>();

	private long nextCookie = 1;

	private long size = -1;

	private Export export;

	/** One option reply: its type and data. */
	public record OptionReply(int option, int type, byte[] data) {

		public boolean isError() {
			return (this.type & NbdProtocol.REP_FLAG_ERROR) != 0;
		}

	}

	/** Result of a successful GO. */
	public record Export(long size, int flags) {
	}

	/** A simple reply header. */
	public record SimpleReply(int error, long cookie) {
	}

	/** A simple reply with a READ's data: {@code error} 0 on success. */
	public record Reply(long cookie, int error, byte[] data) {
	}

	/** One structured reply chunk. */
	public record Chunk(int flags, int type, long cookie, byte[] payload) {

		public boolean done() {
			return (this.flags & NbdProtocol.REPLY_FLAG_DONE) != 0;
		}

		public ByteBuffer buffer() {
			return ByteBuffer.wrap(this.payload);
		}

		/** Error value of an error chunk. */
		public int error() {
			return buffer().getInt();
		}

	}

	private RawNbdClient(String host, int port, Socket socket) throws IOException {
		this.host = host;
		this.port = port;
		use(socket);
	}

	public static RawNbdClient connect(int port) {
		return connect(port, 0);
	}

	/** Connects to 127.0.0.1; {@code receiveBuffer} > 0 sets SO_RCVBUF before connecting. */
	public static RawNbdClient connect(int port, int receiveBuffer) {
		try {
			Socket s = new Socket();
			if (receiveBuffer > 0) {
				s.setReceiveBufferSize(receiveBuffer);
			}
			s.connect(new InetSocketAddress("127.0.0.1", port), 5000);
			s.setSoTimeout(10_000);
			s.setTcpNoDelay(true);
			return new RawNbdClient("127.0.0.1", port, s);
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
	}

	/** Whether a new connection to 127.0.0.1:{@code port} gets no greeting: refused, reset or closed at once. */
	public static boolean refusesConnection(int port) throws IOException {
		try (Socket s = new Socket()) {
			s.connect(new InetSocketAddress("127.0.0.1", port), 5000);
			s.setSoTimeout(10_000);
			return s.getInputStream().read() == -1;
		}
		catch (SocketException ex) {
			// Refused or reset.
			return true;
		}
	}

	/** Connects to 127.0.0.1:{@code port}, negotiates and attaches to {@code export} (simple replies). */
	public static RawNbdClient connect(int port, String export) throws IOException {
		return connect(port, export, false, false);
	}

	/**
	 * Negotiates like a modern client: optionally structured replies and the
	 * {@code base:allocation} context, then GO on {@code export}.
	 */
	public static RawNbdClient connect(int port, String export, boolean structuredReplies, boolean baseAllocation)
			throws IOException {
		RawNbdClient client = connect(port);
		try {
			client.handshake();
			if (structuredReplies) {
				expectAck(client.request(NbdProtocol.OPT_STRUCTURED_REPLY, new byte[0]));
			}
			if (baseAllocation) {
				expectAck(client.request(NbdProtocol.OPT_SET_META_CONTEXT,
						metaContextData(export, NbdProtocol.CONTEXT_BASE_ALLOCATION)));
			}
			client.go(export);
			return client;
		}
		catch (IOException | RuntimeException ex) {
			client.close();
			throw ex;
		}
	}

	/** Export size from the last GO, or -1. */
	public long size() {
		return this.size;
	}

	/** Size and transmission flags from the last GO, or null. */
	public Export export() {
		return this.export;
	}

	private static void expectAck(OptionReply reply) throws IOException {
		if (reply.type() != NbdProtocol.REP_ACK) {
			throw new IOException("option " + reply.option() + " refused: 0x" + Integer.toHexString(reply.type()));
		}
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

	/** Sends any request with the next cookie (no payload unless {@code data}). */
	public long send(int type, long offset, int length, byte[] data) throws IOException {
		long cookie = this.nextCookie++;
		sendRequest(0, type, cookie, offset, length, data);
		return cookie;
	}

	/** Reads the next simple reply (and a READ's data, for reads sent with {@link #sendRead}). */
	public Reply receive() throws IOException {
		SimpleReply header = readSimpleReply();
		Integer length = this.readLengths.remove(header.cookie());
		byte[] data = null;
		if (length != null && header.error() == 0) {
			data = new byte[length];
			this.in.readFully(data);
		}
		return new Reply(header.cookie(), header.error(), data);
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
			close();
		}
	}

	/** True once the server has closed the connection (reads end of stream). */
	public boolean serverClosed() throws IOException {
		try {
			return this.in.read() == -1;
		}
		catch (SocketException ex) {
			return true;
		}
	}

	private void use(Socket s) throws IOException {
		this.socket = s;
		this.in = new DataInputStream(new BufferedInputStream(s.getInputStream()));
		this.out = new DataOutputStream(s.getOutputStream());
	}

	public Socket socket() {
		return this.socket;
	}

	public DataInputStream input() {
		return this.in;
	}

	public OutputStream output() {
		return this.out;
	}

	/** Reads the greeting and answers with fixed newstyle + no zeroes; returns the handshake flags. */
	public int handshake() throws IOException {
		return handshake(NbdProtocol.FLAG_C_FIXED_NEWSTYLE | NbdProtocol.FLAG_C_NO_ZEROES);
	}

	/** Reads the greeting and answers with {@code clientFlags}; returns the handshake flags. */
	public int handshake(int clientFlags) throws IOException {
		int flags = greeting();
		this.out.writeInt(clientFlags);
		this.out.flush();
		return flags;
	}

	/** Reads the server greeting only; returns the handshake flags. */
	public int greeting() throws IOException {
		long magic = this.in.readLong();
		if (magic != NbdProtocol.NBDMAGIC || this.in.readLong() != NbdProtocol.IHAVEOPT) {
			throw new IOException("not an NBD newstyle greeting");
		}
		return this.in.readUnsignedShort();
	}

	/** An option header announcing {@code length} bytes of data (which may never be sent). */
	public static byte[] optionHeader(int option, long length) {
		return ByteBuffer.allocate(16).putLong(NbdProtocol.IHAVEOPT).putInt(option).putInt((int) length).array();
	}

	public static byte[] option(int option, byte[] data) {
		ByteBuffer b = ByteBuffer.allocate(16 + data.length);
		b.putLong(NbdProtocol.IHAVEOPT).putInt(option).putInt(data.length).put(data);
		return b.array();
	}

	public void sendOption(int option, byte[] data) throws IOException {
		this.out.write(option(option, data));
		this.out.flush();
	}

	public OptionReply readOptionReply() throws IOException {
		long magic = this.in.readLong();
		if (magic != NbdProtocol.OPTION_REPLY_MAGIC) {
			throw new IOException("bad option reply magic 0x" + Long.toHexString(magic));
		}
		int option = this.in.readInt();
		int type = this.in.readInt();
		byte[] data = new byte[this.in.readInt()];
		this.in.readFully(data);
		return new OptionReply(option, type, data);
	}

	/** Sends an option and reads replies up to the final one (ACK or error). */
	public OptionReply request(int option, byte[] data) throws IOException {
		sendOption(option, data);
		while (true) {
			OptionReply r = readOptionReply();
			if (r.type() == NbdProtocol.REP_ACK || r.isError()) {
				return r;
			}
		}
	}

	/** Sends an option and returns every reply up to and including the final one (ACK or error). */
	public java.util.List<OptionReply> replies(int option, byte[] data) throws IOException {
		sendOption(option, data);
		return readOptionReplies();
	}

	/** Option replies up to and including the final one. */
	public java.util.List<OptionReply> readOptionReplies() throws IOException {
		java.util.List<OptionReply> replies = new java.util.ArrayList<>();
		while (true) {
			OptionReply r = readOptionReply();
			replies.add(r);
			if (r.type() == NbdProtocol.REP_ACK || r.isError()) {
				return replies;
			}
		}
	}

	/** GO data for an export name with no information requests. */
	public static byte[] goData(String name) {
		return infoData(name);
	}

	/** INFO/GO data: an export name and the NBD_INFO_* items asked for. */
	public static byte[] infoData(String name, int... infoTypes) {
		byte[] n = name.getBytes(StandardCharsets.UTF_8);
		ByteBuffer b = ByteBuffer.allocate(4 + n.length + 2 + 2 * infoTypes.length);
		b.putInt(n.length).put(n).putShort((short) infoTypes.length);
		for (int t : infoTypes) {
			b.putShort((short) t);
		}
		return b.array();
	}

	/** LIST_META_CONTEXT/SET_META_CONTEXT data: an export name and queries. */
	public static byte[] metaContextData(String name, String... queries) {
		java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
		DataOutputStream data = new DataOutputStream(bytes);
		try {
			byte[] n = name.getBytes(StandardCharsets.UTF_8);
			data.writeInt(n.length);
			data.write(n);
			data.writeInt(queries.length);
			for (String q : queries) {
				byte[] qb = q.getBytes(StandardCharsets.UTF_8);
				data.writeInt(qb.length);
				data.write(qb);
			}
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
		return bytes.toByteArray();
	}

	/** NBD_OPT_GO; returns the export or throws on an error reply. */
	public Export go(String name) throws IOException {
		sendOption(NbdProtocol.OPT_GO, goData(name));
		Export export = null;
		while (true) {
			OptionReply r = readOptionReply();
			if (r.isError()) {
				throw new IOException("GO refused: 0x" + Integer.toHexString(r.type()) + " "
						+ new String(r.data(), StandardCharsets.UTF_8));
			}
			if (r.type() == NbdProtocol.REP_INFO) {
				ByteBuffer b = ByteBuffer.wrap(r.data());
				if (b.getShort() == NbdProtocol.INFO_EXPORT) {
					export = new Export(b.getLong(), b.getShort() & 0xffff);
				}
			}
			else if (r.type() == NbdProtocol.REP_ACK) {
				this.export = export;
				this.size = (export != null) ? export.size() : -1;
				return export;
			}
		}
	}

	/**
	 * STARTTLS, then a TLS handshake trusting any server certificate; returns the certificate
	 * the server presented.
	 */
	public X509Certificate startTls() throws IOException {
		OptionReply reply = request(NbdProtocol.OPT_STARTTLS, new byte[0]);
		if (reply.type() != NbdProtocol.REP_ACK) {
			throw new IOException("STARTTLS refused: 0x" + Integer.toHexString(reply.type()));
		}
		try {
			SSLContext context = SSLContext.getInstance("TLS");
			context.init(null, new TrustManager[] { new TrustAll() }, null);
			SSLSocket ssl = (SSLSocket) context.getSocketFactory().createSocket(this.socket, this.host, this.port, true);
			ssl.setUseClientMode(true);
			ssl.startHandshake();
			use(ssl);
			return (X509Certificate) ssl.getSession().getPeerCertificates()[0];
		}
		catch (java.security.GeneralSecurityException ex) {
			throw new IOException(ex);
		}
	}

	public static byte[] request(int flags, int type, long cookie, long offset, long length) {
		return ByteBuffer.allocate(NbdProtocol.REQUEST_HEADER_LENGTH)
			.putInt(NbdProtocol.REQUEST_MAGIC)
			.putShort((short) flags)
			.putShort((short) type)
			.putLong(cookie)
			.putLong(offset)
			.putInt((int) length)
			.array();
	}

	public void sendRequest(int flags, int type, long cookie, long offset, long length, byte[] payload)
			throws IOException {
		byte[] header = request(flags, type, cookie, offset, length);
		if (payload == null) {
			this.out.write(header);
		}
		else {
			// One write per request: header and payload in the same segments where possible.
			byte[] whole = java.util.Arrays.copyOf(header, header.length + payload.length);
			System.arraycopy(payload, 0, whole, header.length, payload.length);
			this.out.write(whole);
		}
		this.out.flush();
	}

	public SimpleReply readSimpleReply() throws IOException {
		int magic = this.in.readInt();
		if (magic != NbdProtocol.SIMPLE_REPLY_MAGIC) {
			throw new IOException("bad simple reply magic 0x" + Integer.toHexString(magic));
		}
		return new SimpleReply(this.in.readInt(), this.in.readLong());
	}

	/** A simple reply and, when it reports success, {@code dataLength} bytes of data. */
	public Reply readReply(int dataLength) throws IOException {
		SimpleReply header = readSimpleReply();
		byte[] data = new byte[(header.error() == 0) ? dataLength : 0];
		this.in.readFully(data);
		return new Reply(header.cookie(), header.error(), data);
	}

	/** One structured reply chunk. */
	public Chunk readChunk() throws IOException {
		int magic = this.in.readInt();
		if (magic != NbdProtocol.STRUCTURED_REPLY_MAGIC) {
			throw new IOException("bad structured reply magic 0x" + Integer.toHexString(magic));
		}
		int flags = this.in.readUnsignedShort();
		int type = this.in.readUnsignedShort();
		long cookie = this.in.readLong();
		byte[] payload = new byte[this.in.readInt()];
		this.in.readFully(payload);
		return new Chunk(flags, type, cookie, payload);
	}

	/** Chunks up to and including the one flagged DONE. */
	public java.util.List<Chunk> readChunks() throws IOException {
		java.util.List<Chunk> chunks = new java.util.ArrayList<>();
		Chunk c;
		do {
			c = readChunk();
			chunks.add(c);
		}
		while (!c.done());
		return chunks;
	}

	/** Whether the server closes without sending anything more (false if data arrives first). */
	public boolean closesWithoutData() throws IOException {
		try {
			return this.in.read() == -1;
		}
		catch (SocketException ex) {
			return true;
		}
	}

	public void readFully(byte[] buffer) throws IOException {
		this.in.readFully(buffer);
	}

	/**
	 * Whether the server closed the connection within {@code timeoutMillis}, discarding whatever
	 * it still sends; false if it stays open.
	 */
	public boolean closedByServer(int timeoutMillis) throws IOException {
		long deadline = System.currentTimeMillis() + timeoutMillis;
		byte[] sink = new byte[8192];
		try {
			while (System.currentTimeMillis() < deadline) {
				this.socket.setSoTimeout((int) Math.max(1, deadline - System.currentTimeMillis()));
				if (this.in.read(sink) < 0) {
					return true;
				}
			}
			return false;
		}
		catch (SocketTimeoutException ex) {
			return false;
		}
		catch (EOFException | SocketException ex) {
			// Reset by the server counts as closed.
			return true;
		}
		catch (javax.net.ssl.SSLException ex) {
			return true;
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

	private static final class TrustAll implements X509TrustManager {

		@Override
		public void checkClientTrusted(X509Certificate[] chain, String authType) {
		}

		@Override
		public void checkServerTrusted(X509Certificate[] chain, String authType) {
		}

		@Override
		public X509Certificate[] getAcceptedIssuers() {
			return new X509Certificate[0];
		}

	}

}
