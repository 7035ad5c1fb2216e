package dev.nbd.server;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Semaphore;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.FileBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.RawNbdClient;
import dev.nbd.testsupport.RawNbdClient.Reply;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * CACHE, TRIM and WRITE_ZEROES over long ranges run as bounded chunks that queue behind other
 * clients' work: proven by events with a backend whose zero-writes wait at a gate the test
 * opens one chunk at a time, never by timing.
 */
class LongRequestTests {

	private static final int MIB = 1 << 20;

	private final BackgroundCounter counter = new BackgroundCounter();

	private NbdServer server;

	@AfterEach
	void stop() {
		if (this.server != null) {
			this.server.stop();
		}
	}

	/**
	 * With a single worker busy zeroing 64 MiB for one client, another client's 4 KiB READ is
	 * answered after the chunk in progress, before the zeroing goes on (on one long task it
	 * would wait for all 64 chunks; here the gate holds the second chunk until the READ has
	 * been answered, so without chunking this test times out).
	 */
	@Test
	void aReadFromAnotherClientIsAnsweredBetweenTheChunksOfALongWriteZeroes() throws Exception {
		GatedBackend backend = new GatedBackend();
		start(backend, 1);
		try (RawNbdClient zeroing = RawNbdClient.connect(this.server.port(), "gated");
				RawNbdClient reading = RawNbdClient.connect(this.server.port(), "gated")) {
			zeroing.sendRequest(0, NbdProtocol.CMD_WRITE_ZEROES, 1, 0, 64 * MIB, null);
			assertThat(backend.writeEntered.await(10, TimeUnit.SECONDS)).isTrue();
			reading.sendRequest(0, NbdProtocol.CMD_READ, 2, 8 * MIB, 4096, null);
			ThreadPoolExecutor pool = (ThreadPoolExecutor) this.server.blockingExecutor();
			await().atMost(Duration.ofSeconds(10)).until(() -> pool.getQueue().size() == 1);
			// The first chunk finishes; its successor queues behind the READ.
			backend.gate.release();
			Reply read = reading.readReply(4096);
			assertThat(read.error()).isZero();
			assertThat(read.data()).containsOnly(GatedBackend.FILL);
			assertThat(backend.zeroWrites.get()).isEqualTo(1);
			backend.gate.release(Integer.MAX_VALUE / 2);
			assertThat(zeroing.readSimpleReply().error()).isZero();
			assertThat(backend.zeroWrites.get()).isEqualTo(64);
			assertThat(this.counter.bytes("gated", "write_zeroes")).isEqualTo(64L * MIB);
			assertThat(this.counter.chunks("gated", "write_zeroes")).isEqualTo(64);
		}
	}

	/** A connection that goes away stops its long request: no more chunks reach the backend. */
	@Test
	void aLongRequestStopsWhenItsConnectionCloses() throws Exception {
		GatedBackend backend = new GatedBackend();
		start(backend, 2);
		RawNbdClient zeroing = RawNbdClient.connect(this.server.port(), "gated");
		zeroing.sendRequest(0, NbdProtocol.CMD_WRITE_ZEROES, 1, 0, 64 * MIB, null);
		assertThat(backend.writeEntered.await(10, TimeUnit.SECONDS)).isTrue();
		zeroing.close();
		await().atMost(Duration.ofSeconds(10)).until(() -> this.server.connections().isEmpty());
		backend.gate.release(Integer.MAX_VALUE / 2);
		BackgroundScheduler scheduler = this.server.backgroundScheduler();
		await().atMost(Duration.ofSeconds(10)).until(() -> scheduler.running() == 0 && scheduler.waiting() == 0);
		assertThat(backend.zeroWrites.get()).isEqualTo(1);
	}

	/** A graceful shutdown does not wait for the rest of a long request: it is answered ESHUTDOWN. */
	@Test
	void aLongRequestStopsWithEshutdownWhenTheServerDrains() throws Exception {
		GatedBackend backend = new GatedBackend();
		start(backend, 2);
		try (RawNbdClient zeroing = RawNbdClient.connect(this.server.port(), "gated")) {
			zeroing.sendRequest(0, NbdProtocol.CMD_WRITE_ZEROES, 1, 0, 64 * MIB, null);
			assertThat(backend.writeEntered.await(10, TimeUnit.SECONDS)).isTrue();
			Thread stopper = new Thread(() -> this.server.shutdownGracefully(Duration.ofSeconds(30)));
			stopper.start();
			await().atMost(Duration.ofSeconds(10)).until(this.server::isDraining);
			backend.gate.release(Integer.MAX_VALUE / 2);
			assertThat(zeroing.readSimpleReply().error()).isEqualTo(NbdError.ESHUTDOWN.code());
			assertThat(backend.zeroWrites.get()).isEqualTo(1);
			stopper.join(30_000);
			assertThat(stopper.isAlive()).isFalse();
		}
	}

	/** Chunked or not, the bytes come out right: on a non-blocking (memory) and a blocking (file) export. */
	@Test
	void longRequestsLeaveTheRightBytes(@TempDir Path dir) throws Exception {
		long size = 24L * MIB;
		List<ExportBackend> backends = List.of(new MemoryBackend("mem", size, null, false),
				new FileBackend("disk", dir.resolve("disk.img"), size, null, false) {
					@Override
					public boolean canZero() {
						// Zeroes written by the server (1 MiB data chunks), not with fallocate.
						return false;
					}
				});
		this.server = new NbdServer(NbdServerConfig.builder().port(0).maxPayload(4 * MIB).build(), backends, Map.of(),
				Map.of(), this.counter);
		this.server.start();
		for (String export : List.of("mem", "disk")) {
			try (RawNbdClient c = RawNbdClient.connect(this.server.port(), export)) {
				byte[] model = new byte[(int) size];
				new Random(7).nextBytes(model);
				for (int off = 0; off < size; off += 4 * MIB) {
					assertThat(c.call(NbdProtocol.CMD_WRITE, off, 4 * MIB, Arrays.copyOfRange(model, off, off + 4 * MIB))
						.error()).isZero();
				}
				// Unaligned ends, several chunks of either size, FUA answered after one flush.
				long zeroFrom = 100;
				long zeroLength = 17L * MIB + 5;
				assertThat(call(c, NbdProtocol.CMD_FLAG_FUA, NbdProtocol.CMD_WRITE_ZEROES, zeroFrom, zeroLength))
					.isZero();
				Arrays.fill(model, (int) zeroFrom, (int) (zeroFrom + zeroLength), (byte) 0);
				assertThat(call(c, 0, NbdProtocol.CMD_CACHE, 0, size)).isZero();
				if (export.equals("mem")) {
					// Trimmed memory reads back as zeroes.
					assertThat(call(c, NbdProtocol.CMD_FLAG_NO_HOLE, NbdProtocol.CMD_WRITE_ZEROES, 20L * MIB + 3, 9)).isZero();
					assertThat(call(c, 0, NbdProtocol.CMD_TRIM, 18L * MIB, 5L * MIB)).isZero();
					Arrays.fill(model, 20 * MIB + 3, 20 * MIB + 12, (byte) 0);
					Arrays.fill(model, 18 * MIB, 23 * MIB, (byte) 0);
				}
				for (int off = 0; off < size; off += 4 * MIB) {
					Reply r = c.call(NbdProtocol.CMD_READ, off, 4 * MIB, null);
					assertThat(r.error()).isZero();
					assertThat(Arrays.equals(r.data(), Arrays.copyOfRange(model, off, off + 4 * MIB)))
						.as("%s bytes at %d", export, off)
						.isTrue();
				}
			}
		}
		assertThat(this.counter.bytes("mem", "write_zeroes")).isEqualTo(17L * MIB + 5);
		assertThat(this.counter.chunks("mem", "write_zeroes")).isEqualTo(5);
		assertThat(this.counter.chunks("disk", "write_zeroes")).isEqualTo(18);
		assertThat(this.counter.bytes("disk", "cache")).isEqualTo(size);
		assertThat(this.counter.chunks("mem", "trim")).isEqualTo(2);
	}

	private static int call(RawNbdClient c, int flags, int type, long offset, long length) throws IOException {
		c.sendRequest(flags, type, 9, offset, length, null);
		return c.readSimpleReply().error();
	}

	private void start(ExportBackend backend, int workers) {
		this.server = new NbdServer(NbdServerConfig.builder().port(0).workerThreads(workers).build(),
				List.of(backend), Map.of(), Map.of(), this.counter);
		this.server.start();
	}

	/**
	 * 1 GiB that reads as {@link #FILL} and stores nothing; each write (the server's emulated
	 * zeroing, 1 MiB a chunk) waits for a permit of {@link #gate}.
	 */
	private static final class GatedBackend implements ExportBackend {

		static final byte FILL = (byte) 0xab;

		final Semaphore gate = new Semaphore(0);

		final CountDownLatch writeEntered = new CountDownLatch(1);

		final AtomicInteger zeroWrites = new AtomicInteger();

		@Override
		public String name() {
			return "gated";
		}

		@Override
		public long size() {
			return 1L << 30;
		}

		@Override
		public void read(long offset, ByteBuffer dst) {
			while (dst.hasRemaining()) {
				dst.put(FILL);
			}
		}

		@Override
		public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
			this.writeEntered.countDown();
			try {
				if (!this.gate.tryAcquire(30, TimeUnit.SECONDS)) {
					throw new IOException("gate never opened");
				}
			}
			catch (InterruptedException ex) {
				Thread.currentThread().interrupt();
				throw new IOException(ex);
			}
			src.position(src.limit());
			this.zeroWrites.incrementAndGet();
		}

	}

	/** Sums {@link NbdServerListener#backgroundChunk} per export and op. */
	private static final class BackgroundCounter implements NbdServerListener {

		private final Map<String, AtomicLong> bytes = new ConcurrentHashMap<>();

		private final Map<String, AtomicLong> chunks = new ConcurrentHashMap<>();

		@Override
		public void backgroundChunk(Export export, String op, long n) {
			String key = export.name() + "/" + op;
			this.bytes.computeIfAbsent(key, (k) -> new AtomicLong()).addAndGet(n);
			this.chunks.computeIfAbsent(key, (k) -> new AtomicLong()).incrementAndGet();
		}

		long bytes(String export, String op) {
			return this.bytes.getOrDefault(export + "/" + op, new AtomicLong()).get();
		}

		long chunks(String export, String op) {
			return this.chunks.getOrDefault(export + "/" + op, new AtomicLong()).get();
		}

	}

}
