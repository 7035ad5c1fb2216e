package dev.nbd.server;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ThreadPoolExecutor;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.FileBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.GatedBackend;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;
import dev.nbd.testsupport.RawNbdClient.Reply;
import dev.nbd.testsupport.RecordingListener;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * CACHE, TRIM and WRITE_ZEROES over long ranges run as bounded chunks that queue behind other
 * clients' work: proven by events with a backend (no native zeroing, so the server writes the
 * zeroes 1 MiB a chunk) whose requests wait at a gate the test opens one request at a time, never
 * by timing.
 */
class LongRequestTests {

	private static final int MIB = 1 << 20;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	/**
	 * With a single worker busy zeroing 64 MiB for one client, another client's 4 KiB READ is
	 * answered after the chunk in progress, before the zeroing goes on (on one long task it
	 * would wait for all 64 chunks; here the gate lets through only the first chunk and one
	 * more request, which must be the READ, so without chunking the READ is never answered).
	 */
	@Test
	void aReadFromAnotherClientIsAnsweredBetweenTheChunksOfALongWriteZeroes() throws Exception {
		GatedBackend backend = GatedBackend.withPattern("gated", 64 * MIB);
		backend.close();
		NbdServer server = this.servers.start(NbdServerConfig.builder().workerThreads(1), backend);
		try (RawNbdClient zeroing = RawNbdClient.connect(server.port(), "gated");
				RawNbdClient reading = RawNbdClient.connect(server.port(), "gated")) {
			zeroing.sendRequest(0, NbdProtocol.CMD_WRITE_ZEROES, 1, 0, 64 * MIB, null);
			backend.awaitWaiting(1);
			reading.sendRequest(0, NbdProtocol.CMD_READ, 2, 8 * MIB, 4096, null);
			ThreadPoolExecutor pool = (ThreadPoolExecutor) server.blockingExecutor();
			await().atMost(Duration.ofSeconds(10)).until(() -> pool.getQueue().size() == 1);
			// The first chunk finishes; its successor queues behind the READ, which takes the second pass.
			backend.letThrough(2);
			Reply read = reading.readReply(4096);
			assertThat(read.error()).isZero();
			byte[] expected = new byte[4096];
			for (int i = 0; i < expected.length; i++) {
				expected[i] = GatedBackend.expected(8 * MIB + i);
			}
			assertThat(read.data()).as("the bytes before zeroing reached them").isEqualTo(expected);
			assertThat(writes(backend)).isEqualTo(1);
			backend.open();
			assertThat(zeroing.readSimpleReply().error()).isZero();
			assertThat(writes(backend)).isEqualTo(64);
			assertThat(this.servers.listener().chunkBytes("gated", "write_zeroes")).isEqualTo(64L * MIB);
			assertThat(this.servers.listener().chunks("gated", "write_zeroes")).isEqualTo(64);
		}
	}

	/** A connection that goes away stops its long request: no more chunks reach the backend. */
	@Test
	void aLongRequestStopsWhenItsConnectionCloses() throws Exception {
		GatedBackend backend = new GatedBackend("gated", 64 * MIB);
		backend.close();
		NbdServer server = this.servers.start(NbdServerConfig.builder().workerThreads(2), backend);
		RawNbdClient zeroing = RawNbdClient.connect(server.port(), "gated");
		zeroing.sendRequest(0, NbdProtocol.CMD_WRITE_ZEROES, 1, 0, 64 * MIB, null);
		backend.awaitWaiting(1);
		zeroing.close();
		await().atMost(Duration.ofSeconds(10)).until(() -> server.connections().isEmpty());
		backend.open();
		BackgroundScheduler scheduler = server.backgroundScheduler();
		await().atMost(Duration.ofSeconds(10)).until(() -> scheduler.running() == 0 && scheduler.waiting() == 0);
		assertThat(writes(backend)).isEqualTo(1);
	}

	/** A graceful shutdown does not wait for the rest of a long request: it is answered ESHUTDOWN. */
	@Test
	void aLongRequestStopsWithEshutdownWhenTheServerDrains() throws Exception {
		GatedBackend backend = new GatedBackend("gated", 64 * MIB);
		backend.close();
		NbdServer server = this.servers.start(NbdServerConfig.builder().workerThreads(2), backend);
		try (RawNbdClient zeroing = RawNbdClient.connect(server.port(), "gated")) {
			zeroing.sendRequest(0, NbdProtocol.CMD_WRITE_ZEROES, 1, 0, 64 * MIB, null);
			backend.awaitWaiting(1);
			Thread stopper = new Thread(() -> server.shutdownGracefully(Duration.ofSeconds(30)));
			stopper.start();
			await().atMost(Duration.ofSeconds(10)).until(server::isDraining);
			backend.open();
			assertThat(zeroing.readSimpleReply().error()).isEqualTo(NbdError.ESHUTDOWN.code());
			assertThat(writes(backend)).isEqualTo(1);
			stopper.join(30_000);
			assertThat(stopper.isAlive()).isFalse();
		}
	}

	/** Chunked or not, the bytes come out right: on a non-blocking (memory) and a blocking (file) export. */
	@Test
	void longRequestsLeaveTheRightBytes(@TempDir Path dir) throws Exception {
		long size = 24L * MIB;
		List<ExportBackend> backends = List.of(new MemoryBackend("mem", size, null, false),
				this.servers.closeAfter(new FileBackend("disk", dir.resolve("disk.img"), size, null, false) {
					@Override
					public boolean canZero() {
						// Zeroes written by the server (1 MiB data chunks), not with fallocate.
						return false;
					}
				}));
		NbdServer server = this.servers.start(NbdServerConfig.builder().maxPayload(4 * MIB), backends);
		for (String export : List.of("mem", "disk")) {
			try (RawNbdClient c = RawNbdClient.connect(server.port(), export)) {
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
		RecordingListener listener = this.servers.listener();
		assertThat(listener.chunkBytes("mem", "write_zeroes")).isEqualTo(17L * MIB + 5);
		assertThat(listener.chunks("mem", "write_zeroes")).isEqualTo(5);
		assertThat(listener.chunks("disk", "write_zeroes")).isEqualTo(18);
		assertThat(listener.chunkBytes("disk", "cache")).isEqualTo(size);
		assertThat(listener.chunks("mem", "trim")).isEqualTo(2);
	}

	private static int call(RawNbdClient c, int flags, int type, long offset, long length) throws IOException {
		c.sendRequest(flags, type, 9, offset, length, null);
		return c.readSimpleReply().error();
	}

	/** Writes the backend completed (the server's emulated zeroing: one per 1 MiB chunk). */
	private static long writes(GatedBackend backend) {
		return backend.events().stream().filter((e) -> e.startsWith("write ")).count();
	}

}
