package dev.nbd.server;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.springframework.boot.test.system.CapturedOutput;
import org.springframework.boot.test.system.OutputCaptureExtension;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.FileBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.backend.filter.Fault;
import dev.nbd.backend.filter.FaultInjectingBackend;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * A backend whose read leaves the end of the buffer unfilled (or lends fewer bytes than asked)
 * must not make the server send what the reply buffer held before: pooled memory that last
 * carried another export's data. Such a READ fails with EIO and none of its bytes; the export
 * gets one WARN and a counter. Every read path is tried: header and data in one buffer (small),
 * a separate data buffer (large), lent memory, with simple and structured replies.
 */
@ExtendWith(OutputCaptureExtension.class)
class UnfilledReadTests {

	private static final int SIZE = 4 << 20;

	private static final byte SECRET = 0x5A;

	private static final int[] LENGTHS = { 4096, 65535, 128 * 1024, 1 << 20 };

	@TempDir
	Path dir;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private NbdServer server;

	@Test
	void aShortReadOfAFileBackendIsEioWithoutStaleBytes(CapturedOutput output) throws Exception {
		FileBackend file = this.servers
			.closeAfter(new FileBackend("buggy", this.dir.resolve("buggy.img"), SIZE, null, false));
		assertShortReadsFail(file, output);
	}

	@Test
	void aShortReadOrLoanOfAMemoryBackendIsEioWithoutStaleBytes(CapturedOutput output) throws Exception {
		// Large reads of the memory backend go out as lent memory: the loan comes back short.
		MemoryBackend memory = new MemoryBackend("buggy", SIZE);
		memory.write(0, ByteBuffer.wrap(pattern(SIZE, (byte) 1)), false);
		assertShortReadsFail(memory, output);
	}

	/** A backend that moves the buffer's limit instead of filling it is caught too. */
	@Test
	void aReadThatMovesTheLimitIsEio() throws Exception {
		ExportBackend limitMover = new MemoryBackend("buggy", SIZE) {

			@Override
			public void read(long offset, ByteBuffer dst) {
				dst.limit(dst.position());
			}

		};
		this.server = this.servers.start(limitMover);
		try (RawNbdClient client = RawNbdClient.connect(this.server.port(), "buggy")) {
			assertThat(client.call(NbdProtocol.CMD_READ, 0, 4096, null).error()).isEqualTo(NbdError.EIO.code());
			assertThat(client.call(NbdProtocol.CMD_WRITE, 0, 4096, new byte[4096]).error()).isZero();
		}
		assertThat(this.server.export("buggy").unfilledReads()).isOne();
	}

	private void assertShortReadsFail(ExportBackend backend, CapturedOutput output) throws Exception {
		Fault shortRead = Fault.shortRead(1).at(SIZE / 2, SIZE / 2);
		MemoryBackend secret = new MemoryBackend("secret", SIZE);
		secret.write(0, ByteBuffer.wrap(pattern(SIZE, SECRET)), false);
		this.server = this.servers.start(secret, FaultInjectingBackend.builder(backend).fault(shortRead).build());
		Export buggy = this.server.export("buggy");
		long expectedFailures = 0;
		for (boolean structured : new boolean[] { false, true }) {
			try (RawNbdClient secretClient = RawNbdClient.connect(this.server.port(), "secret", structured, false);
					RawNbdClient client = RawNbdClient.connect(this.server.port(), "buggy", structured, false)) {
				for (int length : LENGTHS) {
					// The secret export's reply buffers go back to the pool, ready for reuse.
					assertThat(read(secretClient, structured, 0, length)).containsOnly(SECRET);
					assertThat(read(client, structured, SIZE / 2, length)).as("%d bytes, structured %s", length, structured)
						.isNull();
					expectedFailures++;
					// Outside the faulty range, the same connection reads what is there.
					byte[] good = read(client, structured, 0, length);
					assertThat(good).isNotNull().doesNotContain(SECRET);
				}
			}
		}
		assertThat(shortRead.fired()).isEqualTo(expectedFailures);
		assertThat(buggy.unfilledReads()).isEqualTo(expectedFailures);
		assertThat(output.getOut().split("Export 'buggy' has a bug", -1)).hasSize(2);
	}

	/** A READ's data, or null when it failed with EIO (nothing else may arrive for it). */
	private static byte[] read(RawNbdClient client, boolean structured, long offset, int length) throws Exception {
		if (!structured) {
			RawNbdClient.Reply reply = client.call(NbdProtocol.CMD_READ, offset, length, null);
			if (reply.error() != 0) {
				assertThat(reply.error()).isEqualTo(NbdError.EIO.code());
				return null;
			}
			return reply.data();
		}
		client.sendRequest(NbdProtocol.CMD_FLAG_DF, NbdProtocol.CMD_READ, 7, offset, length, null);
		List<RawNbdClient.Chunk> chunks = client.readChunks();
		if (chunks.get(0).type() == NbdProtocol.REPLY_TYPE_ERROR) {
			assertThat(chunks).hasSize(1);
			assertThat(chunks.get(0).error()).isEqualTo(NbdError.EIO.code());
			return null;
		}
		byte[] data = new byte[length];
		for (RawNbdClient.Chunk chunk : chunks) {
			assertThat(chunk.type()).isEqualTo(NbdProtocol.REPLY_TYPE_OFFSET_DATA);
			ByteBuffer payload = chunk.buffer();
			int at = (int) (payload.getLong() - offset);
			payload.get(data, at, payload.remaining());
		}
		return data;
	}

	private static byte[] pattern(int length, byte value) {
		byte[] bytes = new byte[length];
		Arrays.fill(bytes, value);
		return bytes;
	}

}
