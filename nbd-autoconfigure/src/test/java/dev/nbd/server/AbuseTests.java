package dev.nbd.server;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import io.netty.buffer.ByteBufAllocatorMetricProvider;
import io.netty.channel.Channel;
import io.netty.channel.ChannelOutboundBuffer;
import org.awaitility.Awaitility;
import org.awaitility.core.ConditionFactory;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.springframework.boot.test.system.CapturedOutput;
import org.springframework.boot.test.system.OutputCaptureExtension;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.FileBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;
import dev.nbd.testsupport.RecordingListener;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Clients that try to take the server down: too many connections, stalled handshakes, clients
 * that never read their replies. Each time the limits hold and another client is still served.
 */
@ExtendWith(OutputCaptureExtension.class)
class AbuseTests {

	private static final int MIB = 1 << 20;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private final RecordingListener listener = this.servers.listener();

	private final List<Socket> sockets = new ArrayList<>();

	private NbdServer server;

	@TempDir
	Path dir;

	@AfterEach
	void closeSockets() {
		for (Socket s : this.sockets) {
			closeQuietly(s);
		}
	}

	private int start(NbdServerConfig.Builder config) {
		return start(config, List.of(new MemoryBackend("mem", 16 * MIB)));
	}

	private int start(NbdServerConfig.Builder config, List<ExportBackend> backends) {
		this.server = this.servers.start(config, backends);
		return this.server.port();
	}

	/**
	 * "mem" and "file", 16 MiB each; the file's large READs are always sent by sendfile from the
	 * network thread (event-loop-io=always, no TLS), whatever the speed of its calls.
	 */
	private int startWithFile(NbdServerConfig.Builder config) throws IOException {
		FileBackend file = this.servers.closeAfter(new FileBackend("file", this.dir.resolve("file.img"), 16 * MIB,
				null, false, true));
		this.server = this.servers.startWithPolicies(config, List.of(new MemoryBackend("mem", 16 * MIB), file),
				Map.of("file", ExportPolicy.builder().eventLoopIo(EventLoopIo.ALWAYS).build()));
		return this.server.port();
	}

	@Test
	void thousandConnectionsAboveMaxConnectionsAreRefusedAndTheServerKeepsServing(CapturedOutput output)
			throws Exception {
		int port = start(NbdServerConfig.builder().maxConnections(50).handshakeTimeout(Duration.ofSeconds(60)));
		try (RawNbdClient normal = RawNbdClient.connect(port)) {
			normal.handshake();
			normal.go("mem");

			for (int i = 0; i < 1000; i++) {
				Socket s = new Socket();
				this.sockets.add(s);
				s.connect(new InetSocketAddress("127.0.0.1", port), 5000);
				s.setSoTimeout(5000);
			}
			int greeted = 0;
			int refused = 0;
			for (Socket s : this.sockets) {
				int first = s.getInputStream().read();
				if (first == 'N') {
					greeted++;
				}
				else if (first == -1) {
					refused++;
				}
			}
			// The normal client holds one of the 50 places.
			assertThat(greeted).isEqualTo(49);
			assertThat(refused).isEqualTo(951);
			assertThat(this.listener.awaitRefusals("max_connections", 951, Duration.ofSeconds(5))).isTrue();
			// Each is counted; the log says why without writing 951 lines.
			long logged = output.toString().lines().filter((l) -> l.contains("[max_connections]")).count();
			assertThat(logged).isBetween(1L, 20L);

			assertThat(roundTrip(normal, 1)).isTrue();

			for (Socket s : this.sockets) {
				closeQuietly(s);
			}
			this.sockets.clear();
			// Places are given back: a new client gets in.
			awaitConnections(1);
			try (RawNbdClient late = RawNbdClient.connect(port)) {
				late.handshake();
				late.go("mem");
				assertThat(roundTrip(late, 2)).isTrue();
			}
		}
	}

	@Test
	void slowLorisHandshakesAreDroppedAtTheHandshakeTimeout() throws Exception {
		// Long enough that the normal client always finishes negotiating in time on a loaded
		// machine, and that the trickle (19 bytes 150 ms apart) ends before it.
		int port = start(NbdServerConfig.builder().handshakeTimeout(Duration.ofSeconds(5)));
		ExecutorService pool = Executors.newFixedThreadPool(3);
		try {
			// Silent; flags then an option one byte at a time; an unfinished option header.
			List<Future<Long>> dropped = new ArrayList<>();
			dropped.add(pool.submit(() -> millisUntilClosed(port, new byte[0], 0)));
			byte[] trickle = ByteBuffer.allocate(4 + 16)
				.putInt(NbdProtocol.FLAG_C_FIXED_NEWSTYLE)
				.put(RawNbdClient.optionHeader(NbdProtocol.OPT_LIST, 0))
				.array();
			dropped.add(pool.submit(() -> millisUntilClosed(port, Arrays.copyOf(trickle, 19), 150)));
			dropped.add(pool.submit(() -> millisUntilClosed(port, Arrays.copyOf(trickle, 10), 0)));
			try (RawNbdClient normal = RawNbdClient.connect(port)) {
				normal.handshake();
				normal.go("mem");
				for (Future<Long> f : dropped) {
					assertThat(f.get(90, TimeUnit.SECONDS)).isBetween(4_900L, 60_000L);
				}
				// A client that finished negotiating is not subject to the handshake timeout.
				assertThat(roundTrip(normal, 1)).isTrue();
			}
			assertThat(this.listener.refusals("handshake_timeout")).isEqualTo(3);
		}
		finally {
			pool.shutdownNow();
		}
	}

	@Test
	void aClientThatNeverReadsItsRepliesIsNoLongerReadAndHoldsBoundedMemory() throws Exception {
		int port = start(NbdServerConfig.builder().maxPayload(MIB).maxInFlightBytes(8 * MIB));
		long bound = 8 * MIB + 4 * MIB + MIB; // in flight + write buffer high water mark + one payload
		try (RawNbdClient greedy = RawNbdClient.connect(port, 64 * 1024);
				RawNbdClient normal = RawNbdClient.connect(port)) {
			greedy.handshake();
			greedy.go("mem");
			normal.handshake();
			normal.go("mem");
			Channel channel = this.listener.opened().get(0).channel();
			long usedBefore = usedDirectMemory(channel);

			// 4,000 READs of 1 MiB (4 GiB of replies), never read. The requests may not all be
			// accepted by the server: a writer thread sends what it can.
			byte[] requests = new byte[4000 * NbdProtocol.REQUEST_HEADER_LENGTH];
			ByteBuffer b = ByteBuffer.wrap(requests);
			for (int i = 0; i < 4000; i++) {
				b.put(RawNbdClient.request(0, NbdProtocol.CMD_READ, i, (long) (i % 16) * MIB, MIB));
			}
			Thread writer = new Thread(() -> {
				try {
					greedy.output().write(requests);
					greedy.output().flush();
				}
				catch (IOException ex) {
					// Closed at the end of the test.
				}
			});
			writer.setDaemon(true);
			writer.start();

			// The replies back up until the server stops reading the greedy client and starting its
			// requests (its channel unwritable): that lasts as long as the client reads nothing.
			// The bound holds all along.
			await().alias("server stopped reading the greedy client, its replies backed up")
				.failFast("bytes queued for the greedy client over " + bound, () -> pendingBytes(channel) > bound)
				.until(() -> !channel.config().isAutoRead() && !channel.isWritable());
			long maxPending = 0;
			long maxUsed = 0;
			for (int i = 0; i < 20; i++) {
				maxPending = Math.max(maxPending, pendingBytes(channel));
				maxUsed = Math.max(maxUsed, usedDirectMemory(channel) - usedBefore);
				// Meanwhile another client is served.
				assertThat(roundTrip(normal, 100 + i)).isTrue();
			}
			System.out.printf("greedy client: max pending %d, max direct memory growth %d, bound %d%n", maxPending,
					maxUsed, bound);
			assertThat(maxPending).as("bytes queued for the greedy client").isLessThanOrEqualTo(bound);
			// The allocator reserves whole chunks per thread: allow for that, far below the
			// gigabytes that 4,000 unbounded replies would take.
			assertThat(maxUsed).as("direct memory held meanwhile").isLessThanOrEqualTo(2 * bound + 4 * MIB);
			assertThat(channel.config().isAutoRead()).isFalse();

			greedy.close();
			assertThat(channel.closeFuture().await(5, TimeUnit.SECONDS)).isTrue();
			assertThat(roundTrip(normal, 1000)).isTrue();
		}
	}

	/** READ replies of "mem" are buffers; those of "file" are sent from the file by sendfile. */
	@ParameterizedTest
	@ValueSource(strings = { "mem", "file" })
	void aClientWhoseRepliesNeverDrainIsCutOffAfterTheWriteStallTimeout(String export) throws Exception {
		int port = startWithFile(NbdServerConfig.builder().maxPayload(MIB).writeStallTimeout(Duration.ofSeconds(5)));
		try (RawNbdClient stalled = RawNbdClient.connect(port, 64 * 1024);
				RawNbdClient normal = RawNbdClient.connect(port)) {
			stalled.handshake();
			stalled.go(export);
			normal.handshake();
			normal.go("mem");
			Channel channel = this.listener.opened().get(0).channel();
			for (int i = 0; i < 64; i++) {
				stalled.sendRequest(0, NbdProtocol.CMD_READ, i, (long) (i % 16) * MIB, MIB, null);
			}
			assertThat(channel.closeFuture().await(60, TimeUnit.SECONDS)).as("stalled client cut off").isTrue();
			assertThat(this.listener.refusals("write_stall")).isEqualTo(1);
			assertThat(roundTrip(normal, 1)).isTrue();
		}
	}

	@ParameterizedTest
	@ValueSource(strings = { "mem", "file" })
	void aSlowButReadingClientIsNotCutOff(String export) throws Exception {
		// A stall timeout no scheduling hiccup of a loaded machine reaches, so that only a client
		// that stopped reading is cut off.
		int port = startWithFile(NbdServerConfig.builder().maxPayload(MIB).writeStallTimeout(Duration.ofSeconds(5)));
		try (RawNbdClient slow = RawNbdClient.connect(port, 64 * 1024)) {
			slow.handshake();
			slow.go(export);
			Channel channel = this.listener.opened().get(0).channel();
			int reads = 48;
			for (int i = 0; i < reads; i++) {
				slow.sendRequest(0, NbdProtocol.CMD_READ, i, (long) (i % 16) * MIB, MIB, null);
			}
			// Drains 48 MiB at about 4 MiB/s: replies stay queued for more than two stall timeouts,
			// but some always drain within each.
			byte[] piece = new byte[256 * 1024];
			long total = (long) reads * (16 + MIB);
			for (long read = 0; read < total;) {
				int n = slow.input().read(piece, 0, (int) Math.min(piece.length, total - read));
				assertThat(n).as("server closed a client that was reading").isPositive();
				read += n;
				Thread.sleep(60);
			}
			assertThat(channel.isActive()).isTrue();
			assertThat(this.listener.refusals("write_stall")).isZero();
		}
	}

	@Test
	void optionsSentWithoutReadingTheRepliesDoNotBufferWithoutBound() throws Exception {
		// Twenty exports with long descriptions: each 16-byte LIST asks for about 80 KB of replies.
		List<ExportBackend> backends = new ArrayList<>();
		backends.add(new MemoryBackend("mem", 16 * MIB));
		for (int i = 0; i < 20; i++) {
			backends.add(new MemoryBackend("export-" + i, 4096, "d".repeat(4000), false));
		}
		int port = start(NbdServerConfig.builder().handshakeTimeout(Duration.ofSeconds(30)), backends);
		try (RawNbdClient flood = RawNbdClient.connect(port, 64 * 1024)) {
			flood.handshake();
			// 250 LISTs in one burst (4 KB) asking for 20 MB of replies, not read for now.
			byte[] list = RawNbdClient.option(NbdProtocol.OPT_LIST, new byte[0]);
			byte[] burst = new byte[list.length * 250];
			for (int i = 0; i < 250; i++) {
				System.arraycopy(list, 0, burst, i * list.length, list.length);
			}
			Thread writer = new Thread(() -> {
				try {
					flood.output().write(burst);
				}
				catch (IOException ex) {
					// Closed at the end of the test.
				}
			});
			writer.setDaemon(true);
			writer.start();
			NbdConnection negotiating = await().until(() -> this.server.allConnections().stream().findFirst().orElse(null),
					Objects::nonNull);
			Channel channel = negotiating.channel();
			// The server stops reading when its replies make the channel unwritable, and stops
			// decoding what it has read: once the task that did so has ended (a task queued behind it
			// on the connection's loop has run), nothing more is queued until the client reads.
			await().alias("server stopped reading the flooding client")
				.failFast("replies queued for the flooding client over 5 MiB", () -> pendingBytes(channel) > 5 * MIB)
				.until(() -> !channel.config().isAutoRead());
			channel.eventLoop().submit(() -> {
			}).get(1, TimeUnit.MINUTES);
			assertThat(pendingBytes(channel)).isLessThanOrEqualTo(5 * MIB);
			try (RawNbdClient normal = RawNbdClient.connect(port)) {
				normal.handshake();
				normal.go("mem");
				assertThat(roundTrip(normal, 1)).isTrue();
			}
			// Once the client reads, the server resumes where it paused: every LIST is answered.
			int acks = 0;
			int entries = 0;
			while (acks < 250) {
				RawNbdClient.OptionReply r = flood.readOptionReply();
				if (r.type() == NbdProtocol.REP_ACK) {
					acks++;
				}
				else {
					assertThat(r.type()).isEqualTo(NbdProtocol.REP_SERVER);
					entries++;
				}
			}
			assertThat(entries).isEqualTo(250 * 21);
			assertThat(flood.go("mem").size()).isEqualTo(16 * MIB);
		}
	}

	@Test
	void idleConnectionsAreClosedAtTheIdleTimeout() throws Exception {
		// Long enough that the round trip right after negotiating is never late on a loaded machine.
		int port = start(NbdServerConfig.builder().idleTimeout(Duration.ofSeconds(5)));
		try (RawNbdClient idle = RawNbdClient.connect(port)) {
			idle.handshake();
			idle.go("mem");
			assertThat(roundTrip(idle, 1)).isTrue();
			assertThat(idle.closedByServer(60_000)).isTrue();
		}
		assertThat(this.listener.refusals("idle_timeout")).isEqualTo(1);
	}

	@Test
	void payloadsAboveMaxPayloadAreRefusedWithoutBufferingAndTheStreamStaysInSync() throws Exception {
		int port = start(NbdServerConfig.builder().maxPayload(64 * 1024));
		try (RawNbdClient c = RawNbdClient.connect(port)) {
			c.handshake();
			c.go("mem");
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 1, 0, 64 * 1024 + 1, new byte[64 * 1024 + 1]);
			assertThat(c.readSimpleReply()).isEqualTo(new RawNbdClient.SimpleReply(22, 1));
			c.sendRequest(0, NbdProtocol.CMD_READ, 2, 0, 64 * 1024 + 1, null);
			assertThat(c.readSimpleReply()).isEqualTo(new RawNbdClient.SimpleReply(22, 2));
			assertThat(roundTrip(c, 3)).isTrue();
		}
	}

	/** Sends {@code bytes} one at a time, {@code pauseMillis} apart, then waits for the server to close. */
	private static long millisUntilClosed(int port, byte[] bytes, long pauseMillis) throws IOException {
		long start = System.nanoTime();
		try (Socket s = new Socket()) {
			s.connect(new InetSocketAddress("127.0.0.1", port), 5000);
			s.setSoTimeout(60_000);
			InputStream in = s.getInputStream();
			OutputStream out = s.getOutputStream();
			in.readNBytes(18);
			try {
				for (byte b : bytes) {
					out.write(b);
					out.flush();
					Thread.sleep(pauseMillis);
				}
				while (in.read() >= 0) {
					// Drain until closed.
				}
			}
			catch (IOException ex) {
				// Reset: closed.
			}
			catch (InterruptedException ex) {
				Thread.currentThread().interrupt();
			}
		}
		return (System.nanoTime() - start) / 1_000_000;
	}

	/** Writes a block and reads it back on an attached client. */
	private static boolean roundTrip(RawNbdClient c, long cookie) throws IOException {
		byte[] data = new byte[4096];
		Arrays.fill(data, (byte) cookie);
		long offset = (cookie % 64) * 4096;
		c.sendRequest(0, NbdProtocol.CMD_WRITE, cookie, offset, data.length, data);
		if (c.readSimpleReply().error() != 0) {
			return false;
		}
		c.sendRequest(0, NbdProtocol.CMD_READ, cookie, offset, data.length, null);
		RawNbdClient.SimpleReply reply = c.readSimpleReply();
		byte[] back = new byte[data.length];
		c.readFully(back);
		return reply.error() == 0 && reply.cookie() == cookie && Arrays.equals(back, data);
	}

	/** Reply bytes queued on {@code channel} and not yet in the socket. */
	private static long pendingBytes(Channel channel) {
		ChannelOutboundBuffer out = channel.unsafe().outboundBuffer();
		return (out != null) ? out.totalPendingWriteBytes() : 0;
	}

	private void awaitConnections(int count) {
		await().untilAsserted(() -> assertThat(this.server.allConnections()).hasSize(count));
	}

	/** Polls often, up to a minute: only an upper bound on a loaded machine. */
	private static ConditionFactory await() {
		return Awaitility.await().atMost(Duration.ofMinutes(1)).pollInterval(Duration.ofMillis(10));
	}

	/**
	 * Direct memory the channel's allocator holds, or Netty's own count of direct memory; fails
	 * when neither is known, as the memory bound would then be checked against nothing.
	 */
	static long usedDirectMemory(Channel channel) {
		if (channel.alloc() instanceof ByteBufAllocatorMetricProvider provider) {
			return provider.metric().usedDirectMemory();
		}
		long used = io.netty.util.internal.PlatformDependent.usedDirectMemory();
		if (used < 0) {
			throw new AssertionError("cannot measure direct memory: " + channel.alloc().getClass().getName()
					+ " has no metrics and Netty does not count direct memory");
		}
		return used;
	}

	private static void closeQuietly(Socket s) {
		try {
			s.close();
		}
		catch (IOException ex) {
			// Closing.
		}
	}

}
