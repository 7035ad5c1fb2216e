package dev.nbd.server;

import java.io.EOFException;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.net.SocketException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.FileBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;
import io.netty.buffer.ByteBufAllocatorMetricProvider;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * Bounded soak: clients of mixed operations on memory, file and event-loop file exports, with
 * pipelining, DISC, abrupt disconnects and one graceful restart in the middle. Each client owns
 * a slice of an export and a model of it: every byte read must match, and a request the server
 * did not answer must have had no effect. Afterwards buffers, threads and open files are back
 * to their baseline. Runs {@code nbd.soak.seconds} (default 45).
 */
class SoakTests {

	private static final long SLICE = 8L << 20;

	private static final int SUB_SLICES = 8;

	private static final int CLIENTS_PER_EXPORT = 3;

	private static final int MAX_IO = 256 * 1024;

	private static final int ESHUTDOWN = NbdError.ESHUTDOWN.code();

	@TempDir
	Path dir;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private volatile NbdServer server;

	/** Odd while the server restarts; a connection may be lost only around a restart. */
	private volatile int generation;

	@Test
	void mixedClientsKeepEveryByteAcrossDisconnectsAndARestart() throws Exception {
		long seconds = Long.getLong("nbd.soak.seconds", 45);
		// One-time initialisation (the native binding's library file) is not part of the baseline.
		new FileBackend("warmup", this.dir.resolve("warmup.img"), 1 << 20, null, false).close();
		long baselineDirect = usedDirectMemory();
		long peakDirect;
		long baselineFds = openFiles();
		long baselineHeap = usedHeapAfterGc();
		// Other tests' servers in this JVM may still have threads: compare with what was there.
		long baselineNetworkThreads = threadsNamed("nbd-io", "nbd-accept");
		long baselineWorkers = threadsNamed("nbd-worker");
		MemoryBackend mem = new MemoryBackend("mem", SLICE * CLIENTS_PER_EXPORT);
		FileBackend disk = new FileBackend("disk", this.dir.resolve("disk.img"), SLICE * CLIENTS_PER_EXPORT, null,
				false);
		FileBackend fast = new FileBackend("fast", this.dir.resolve("fast.img"), SLICE * CLIENTS_PER_EXPORT, null,
				false, true);
		List<ExportBackend> backends = List.of(mem, disk, fast);
		this.server = this.servers.start(NbdServerConfig.builder().maxInFlight(16), backends);
		NbdServerConfig config = this.server.config();
		long deadline = System.nanoTime() + Duration.ofSeconds(seconds).toNanos();
		List<SliceClient> clients = new ArrayList<>();
		long seed = Long.getLong("nbd.soak.seed", System.nanoTime());
		for (ExportBackend backend : backends) {
			for (int i = 0; i < CLIENTS_PER_EXPORT; i++) {
				clients.add(new SliceClient(backend.name(), i * SLICE, new SplittableRandom(seed + clients.size())));
			}
		}
		ExecutorService pool = Executors.newFixedThreadPool(clients.size());
		try {
			List<Future<?>> running = new ArrayList<>();
			for (SliceClient c : clients) {
				running.add(pool.submit(() -> {
					c.run(deadline);
					return null;
				}));
			}
			// One graceful restart half-way: clients see ESHUTDOWN, closed connections, refusals.
			await().atMost(Duration.ofSeconds(seconds + 60))
				.until(() -> System.nanoTime() > deadline - Duration.ofSeconds(seconds).toNanos() / 2);
			this.generation++;
			this.server.shutdownGracefully(Duration.ofSeconds(30));
			this.server.start();
			this.generation++;
			for (Future<?> f : running) {
				f.get();
			}
			peakDirect = usedDirectMemory();
			for (SliceClient c : clients) {
				c.verifyWholeSlice();
			}
			assertThat(clients.stream().mapToLong(c -> c.verifiedBytes).sum()).as("bytes checked against the model")
				.isGreaterThan(clients.size() * SLICE);
			assertThat(clients.stream().mapToLong(c -> c.sessions).sum()).isGreaterThan(clients.size() * 3L);
			clients.clear(); // the models are garbage now
		}
		finally {
			pool.shutdownNow();
			// Now, not after the test: what follows checks that everything was released.
			this.servers.stopAll();
			disk.close();
			fast.close();
		}
		// Back to the baseline: no buffer left allocated, no network thread, no open file.
		await().atMost(Duration.ofSeconds(30)).untilAsserted(() -> {
			assertThat(usedDirectMemory() - baselineDirect).as("direct memory the allocator still holds (peak %d)", peakDirect)
				.isLessThan(32L << 20);
			assertThat(threadsNamed("nbd-io", "nbd-accept")).as("network threads")
				.isLessThanOrEqualTo(baselineNetworkThreads);
			assertThat(openFiles()).as("open files").isLessThanOrEqualTo(baselineFds);
		});
		// Heap back near its baseline: nothing of the soak (models, sessions, buffers) is retained.
		assertThat(usedHeapAfterGc()).as("heap after GC").isLessThan(baselineHeap + (32L << 20));
		// Idle workers time out after a minute; until then at most one pool's worth is new.
		assertThat(threadsNamed("nbd-worker")).isLessThanOrEqualTo(baselineWorkers + config.workerThreads());
	}

	/** Direct memory the server's allocator (Netty's default) holds. */
	private static long usedDirectMemory() {
		return ((ByteBufAllocatorMetricProvider) ConnectionAllocator.get()).metric().usedDirectMemory();
	}

	private static long usedHeapAfterGc() {
		System.gc();
		return ManagementFactory.getMemoryMXBean().getHeapMemoryUsage().getUsed();
	}

	private static long openFiles() throws IOException {
		try (Stream<Path> fds = Files.list(Path.of("/proc/self/fd"))) {
			List<Path> all = fds.toList();
			if (System.getProperty("nbd.soak.fds") != null) {
				for (Path fd : all) {
					try {
						System.out.println("FD " + fd + " -> " + Files.readSymbolicLink(fd));
					}
					catch (IOException ex) {
						// gone
					}
				}
			}
			return all.size();
		}
	}

	private static long threadsNamed(String... prefixes) {
		return Arrays.stream(ManagementFactory.getThreadMXBean().dumpAllThreads(false, false))
			.filter(t -> Arrays.stream(prefixes).anyMatch(p -> t.getThreadName().startsWith(p)))
			.count();
	}

	/** A client that owns one slice of an export and keeps a model of its bytes. */
	private final class SliceClient {

		private final String export;

		private final long base;

		private final SplittableRandom random;

		private final byte[] model = new byte[(int) SLICE];

		private long verifiedBytes;

		private long sessions;

		private final AtomicLong cookies = new AtomicLong();

		SliceClient(String export, long base, SplittableRandom random) {
			this.export = export;
			this.base = base;
			this.random = random;
		}

		void run(long deadline) throws Exception {
			while (System.nanoTime() < deadline) {
				RawNbdClient c = connect();
				if (c == null) {
					continue;
				}
				this.sessions++;
				try (c) {
					session(c, deadline);
				}
			}
		}

		/** Connects, or null while the server restarts (refused, or refused with ESHUTDOWN). */
		private RawNbdClient connect() throws InterruptedException {
			int port = SoakTests.this.server.port();
			if (port > 0) {
				try {
					return RawNbdClient.connect(port, this.export, false, false);
				}
				catch (IOException | RuntimeException ex) {
					// Restarting.
				}
			}
			Thread.sleep(20);
			return null;
		}

		private void session(RawNbdClient c, long deadline) throws IOException {
			int batches = 1 + this.random.nextInt(60);
			for (int b = 0; b < batches && System.nanoTime() < deadline; b++) {
				int ending = this.random.nextInt(40);
				if (ending == 0) {
					return; // abrupt close between batches
				}
				if (!batch(c, ending == 1, ending == 2)) {
					return; // the server is closing this connection
				}
				if (ending == 1 || ending == 2) {
					return;
				}
			}
			c.disconnect();
		}

		/**
		 * Sends up to eight requests on distinct sub-slices, then reads every reply. With
		 * {@code disc} reads only, then DISC: all replies, then the server closes. With
		 * {@code abandon} reads only, then the client closes with them in flight. Returns false
		 * once the server is closing.
		 */
		private boolean batch(RawNbdClient c, boolean disc, boolean abandon) throws IOException {
			int generation = SoakTests.this.generation;
			int k = 1 + this.random.nextInt(SUB_SLICES);
			Map<Long, Op> sent = new HashMap<>();
			try {
				for (int j = 0; j < k; j++) {
					Op op = randomOp(j, disc || abandon);
					long cookie = this.cookies.incrementAndGet();
					long offset = (op.type == NbdProtocol.CMD_FLUSH) ? 0 : this.base + op.offset;
					c.sendRequest(op.flags, op.type, cookie, offset, op.length, op.data);
					sent.put(cookie, op);
				}
				if (disc) {
					c.sendRequest(0, NbdProtocol.CMD_DISC, 0, 0, 0, null);
				}
				if (abandon) {
					return false;
				}
				boolean closing = false;
				while (!sent.isEmpty()) {
					RawNbdClient.SimpleReply reply = c.readSimpleReply();
					Op op = sent.remove(reply.cookie());
					assertThat(op).as("reply to a request in flight").isNotNull();
					if (reply.error() == ESHUTDOWN) {
						closing = true;
						continue;
					}
					assertThat(reply.error()).as("%s on %s", op, this.export).isZero();
					apply(c, op);
				}
				if (disc) {
					assertThat(c.closesWithoutData()).isTrue();
				}
				return !closing;
			}
			catch (EOFException | SocketException ex) {
				// Closed with requests unanswered: only allowed while the server restarts, and those
				// requests must have had no effect (checked by later reads against the model).
				int now = SoakTests.this.generation;
				assertThat(now != generation || (now % 2) == 1).as("connection lost outside a restart: %s", ex)
					.isTrue();
				return false;
			}
		}

		private Op randomOp(int subSlice, boolean readOnly) {
			long span = SLICE / SUB_SLICES;
			int length = 1 + this.random.nextInt(MAX_IO);
			long offset = subSlice * span + this.random.nextLong(span - length);
			int pick = readOnly ? 0 : this.random.nextInt(10);
			if (pick < 4) {
				return new Op(NbdProtocol.CMD_READ, 0, offset, length, null);
			}
			if (pick < 8) {
				byte[] data = new byte[length];
				this.random.nextBytes(data);
				return new Op(NbdProtocol.CMD_WRITE, (pick == 7) ? NbdProtocol.CMD_FLAG_FUA : 0, offset, length, data);
			}
			if (pick == 8) {
				return new Op(NbdProtocol.CMD_WRITE_ZEROES, 0, offset, length, null);
			}
			return new Op(NbdProtocol.CMD_FLUSH, 0, 0, 0, null);
		}

		private void apply(RawNbdClient c, Op op) throws IOException {
			switch (op.type) {
				case NbdProtocol.CMD_READ -> {
					byte[] data = new byte[op.length];
					c.readFully(data);
					assertThat(data).as("%s read back from %s", op, this.export)
						.isEqualTo(Arrays.copyOfRange(this.model, (int) op.offset, (int) op.offset + op.length));
					this.verifiedBytes += op.length;
				}
				case NbdProtocol.CMD_WRITE -> System.arraycopy(op.data, 0, this.model, (int) op.offset, op.length);
				case NbdProtocol.CMD_WRITE_ZEROES -> Arrays.fill(this.model, (int) op.offset,
						(int) op.offset + op.length, (byte) 0);
				default -> {
				}
			}
		}

		/** The whole slice, read back after the soak, equals the model. */
		void verifyWholeSlice() throws IOException {
			try (RawNbdClient c = RawNbdClient.connect(SoakTests.this.server.port(), this.export, false, false)) {
				for (long pos = 0; pos < SLICE; pos += MAX_IO) {
					c.sendRequest(0, NbdProtocol.CMD_READ, 1, this.base + pos, MAX_IO, null);
					RawNbdClient.Reply reply = c.readReply(MAX_IO);
					assertThat(reply.error()).isZero();
					assertThat(reply.data()).as("%s at %d", this.export, this.base + pos)
						.isEqualTo(Arrays.copyOfRange(this.model, (int) pos, (int) pos + MAX_IO));
					this.verifiedBytes += MAX_IO;
				}
				c.disconnect();
			}
		}

	}

	private record Op(int type, int flags, long offset, int length, byte[] data) {

		@Override
		public String toString() {
			return NbdProtocol.commandName(this.type) + "(" + this.offset + "+" + this.length + ")";
		}

	}

}
