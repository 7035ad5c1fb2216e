package dev.nbd.server;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.awaitility.Awaitility;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.backend.FileBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;
import dev.nbd.testsupport.RawNbdClient.Chunk;
import dev.nbd.testsupport.RawNbdClient.Reply;

import static org.assertj.core.api.Assertions.assertThat;

/** Clients that misbehave, vanish, or come in large numbers. */
class NbdServerRobustnessTests {

	private static final int SIZE = 16 << 20;

	private static final int MAX_PAYLOAD = 64 * 1024;

	@TempDir
	Path dir;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private NbdServer server;

	private FileBackend file;

	private int port;

	@BeforeEach
	void start() throws Exception {
		this.file = new FileBackend("file", this.dir.resolve("disk.img"), SIZE, null, false);
		this.server = this.servers.start(NbdServerConfig.builder().maxPayload(MAX_PAYLOAD),
				new MemoryBackend("mem", SIZE), this.file);
		this.port = this.server.port();
	}

	@AfterEach
	void stop() throws Exception {
		// The server first: it may still sync the file.
		this.servers.stopAll();
		this.file.close();
	}

	@Test
	void clientVanishingMidWriteIsCleanedUp() throws Exception {
		for (String export : new String[] { "mem", "file" }) {
			RawNbdClient c = RawNbdClient.connect(this.port, export, false, false);
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 1, 0, 4096, NbdServerTransmissionTests.pattern(4096, 1));
			// Header says 32 KiB, only part of the payload is sent.
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 2, 8192, 32768, new byte[1000]);
			assertThat(c.readSimpleReply().error()).isZero();
			c.close();
		}
		awaitNoConnections();
		// The server goes on serving, and the partial write left nothing behind.
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", false, false)) {
			c.sendRequest(0, NbdProtocol.CMD_READ, 3, 8192, 1000, null);
			assertThat(c.readReply(1000).data()).containsOnly(0);
		}
	}

	@Test
	void clientVanishingWithRepliesPendingIsCleanedUp() throws Exception {
		RawNbdClient c = RawNbdClient.connect(this.port, "file", false, false);
		for (int i = 0; i < 32; i++) {
			c.sendRequest(0, NbdProtocol.CMD_READ, i, 0, MAX_PAYLOAD, null);
		}
		c.close();
		awaitNoConnections();
		try (RawNbdClient again = RawNbdClient.connect(this.port, "file", false, false)) {
			again.sendRequest(0, NbdProtocol.CMD_FLUSH, 1, 0, 0, null);
			assertThat(again.readSimpleReply().error()).isZero();
		}
	}

	@Test
	void hugeRequestLengthsAreRefusedWithoutBreakingTheStream() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", true, true)) {
			c.sendRequest(0, NbdProtocol.CMD_READ, 1, 0, 0xffffffffL, null);
			c.sendRequest(0, NbdProtocol.CMD_TRIM, 2, 0, 0xffffffffL, null);
			c.sendRequest(0, NbdProtocol.CMD_WRITE_ZEROES, 3, 0, 0xffffffffL, null);
			c.sendRequest(0, NbdProtocol.CMD_CACHE, 4, 0, 0xffffffffL, null);
			c.sendRequest(0, NbdProtocol.CMD_BLOCK_STATUS, 5, 0, 0xffffffffL, null);
			c.sendRequest(0, NbdProtocol.CMD_FLUSH, 6, 0, 0, null);
			assertThat(c.readChunk().error()).isEqualTo(NbdError.EINVAL.code());
			assertThat(c.readSimpleReply().error()).isEqualTo(NbdError.EINVAL.code());
			assertThat(c.readSimpleReply().error()).isEqualTo(NbdError.ENOSPC.code());
			assertThat(c.readSimpleReply().error()).isEqualTo(NbdError.EINVAL.code());
			assertThat(c.readChunk().error()).isEqualTo(NbdError.EINVAL.code());
			assertThat(c.readSimpleReply().error()).isZero();
		}
		// A 4 GiB WRITE header followed by a hang-up: the server skipped, never buffered.
		RawNbdClient c = RawNbdClient.connect(this.port, "mem", false, false);
		c.sendRequest(0, NbdProtocol.CMD_WRITE, 1, 0, 0xffffffffL, new byte[4 << 20]);
		c.close();
		awaitNoConnections();
	}

	@Test
	void writesFlushedOnOneConnectionAreSeenOnAnother() throws Exception {
		try (RawNbdClient a = RawNbdClient.connect(this.port, "file", false, false);
				RawNbdClient b = RawNbdClient.connect(this.port, "file", false, false)) {
			assertThat(a.export().flags() & NbdProtocol.TFLAG_CAN_MULTI_CONN).isNotZero();
			byte[] data = NbdServerTransmissionTests.pattern(4096, 42);
			a.sendRequest(0, NbdProtocol.CMD_WRITE, 1, 12288, 4096, data);
			assertThat(a.readSimpleReply().error()).isZero();
			b.sendRequest(0, NbdProtocol.CMD_FLUSH, 2, 0, 0, null);
			assertThat(b.readSimpleReply().error()).isZero();
			b.sendRequest(0, NbdProtocol.CMD_READ, 3, 12288, 4096, null);
			assertThat(b.readReply(4096).data()).isEqualTo(data);
		}
	}

	@Test
	void connectionsBeyondTheLimitAreClosed() throws Exception {
		NbdServer limited = this.servers.start(NbdServerConfig.builder().maxConnections(2),
				new MemoryBackend("mem", SIZE));
		try (RawNbdClient a = RawNbdClient.connect(limited.port(), "mem", false, false);
				RawNbdClient b = RawNbdClient.connect(limited.port())) {
			b.handshake();
			try (RawNbdClient c = RawNbdClient.connect(limited.port())) {
				assertThat(c.closesWithoutData()).isTrue();
			}
			// The ones admitted work.
			assertThat(b.replies(NbdProtocol.OPT_LIST, new byte[0])).last()
				.extracting(RawNbdClient.OptionReply::type)
				.isEqualTo(NbdProtocol.REP_ACK);
			a.sendRequest(0, NbdProtocol.CMD_FLUSH, 1, 0, 0, null);
			assertThat(a.readSimpleReply().error()).isZero();
		}
	}

	@Test
	void manyConcurrentConnectionsEachDoingIo() throws Exception {
		int connections = 220;
		List<RawNbdClient> clients = new ArrayList<>();
		try {
			for (int i = 0; i < connections; i++) {
				clients.add(RawNbdClient.connect(this.port, (i % 2 == 0) ? "mem" : "file", i % 3 == 0, false));
			}
			assertThat(this.server.connections()).hasSize(connections);
			ExecutorService pool = Executors.newFixedThreadPool(32);
			try {
				List<Future<?>> futures = new ArrayList<>();
				for (int i = 0; i < connections; i++) {
					RawNbdClient c = clients.get(i);
					int id = i;
					futures.add(pool.submit(() -> {
						exercise(c, id);
						return null;
					}));
				}
				for (Future<?> f : futures) {
					f.get(60, TimeUnit.SECONDS);
				}
			}
			finally {
				pool.shutdownNow();
			}
		}
		finally {
			clients.forEach(RawNbdClient::close);
		}
		awaitNoConnections();
	}

	/** Pipelined writes to this connection's own region, a flush, then reads checked. */
	private static void exercise(RawNbdClient c, int id) throws Exception {
		boolean structured = id % 3 == 0;
		long base = (long) (id / 2) * 8 * 4096;
		for (int i = 0; i < 8; i++) {
			c.sendRequest(0, NbdProtocol.CMD_WRITE, i, base + i * 4096L, 4096,
					NbdServerTransmissionTests.pattern(4096, id * 8 + i));
		}
		c.sendRequest(0, NbdProtocol.CMD_FLUSH, 100, 0, 0, null);
		for (int i = 0; i < 9; i++) {
			assertThat(c.readSimpleReply().error()).isZero();
		}
		for (int i = 0; i < 8; i++) {
			c.sendRequest(0, NbdProtocol.CMD_READ, 200 + i, base + i * 4096L, 4096, null);
		}
		for (int i = 0; i < 8; i++) {
			long cookie;
			byte[] data;
			if (structured) {
				Chunk chunk = c.readChunk();
				assertThat(chunk.type()).isEqualTo(NbdProtocol.REPLY_TYPE_OFFSET_DATA);
				assertThat(chunk.done()).isTrue();
				cookie = chunk.cookie();
				data = Arrays.copyOfRange(chunk.payload(), 8, chunk.payload().length);
			}
			else {
				Reply r = c.readReply(4096);
				assertThat(r.error()).isZero();
				cookie = r.cookie();
				data = r.data();
			}
			assertThat(data).isEqualTo(NbdServerTransmissionTests.pattern(4096, id * 8 + (int) (cookie - 200)));
		}
		c.sendRequest(0, NbdProtocol.CMD_DISC, 0, 0, 0, null);
		assertThat(c.closesWithoutData()).isTrue();
	}

	private void awaitNoConnections() {
		// The server's and the exports' views are updated by separate close events: wait for both.
		Awaitility.await().atMost(Duration.ofMinutes(1)).pollInterval(Duration.ofMillis(10)).untilAsserted(() -> {
			assertThat(this.server.connections()).isEmpty();
			for (Export export : this.server.exports()) {
				assertThat(export.connections()).as("connections of %s", export.name()).isEmpty();
			}
		});
	}

}
