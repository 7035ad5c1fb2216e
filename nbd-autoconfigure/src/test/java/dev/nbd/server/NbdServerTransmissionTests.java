package dev.nbd.server;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.FileBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.backend.NbdBackendException;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.GatedBackend;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;
import dev.nbd.testsupport.RawNbdClient.Chunk;
import dev.nbd.testsupport.RawNbdClient.Reply;
import dev.nbd.testsupport.RawNbdClient.SimpleReply;
import io.netty.channel.Channel;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/** Every command, and every error the spec names for it, against a real server. */
class NbdServerTransmissionTests {

	private static final int SIZE = 1 << 20;

	private static final int MAX_PAYLOAD = 64 * 1024;

	private static final int EPERM = NbdError.EPERM.code();

	private static final int EINVAL = NbdError.EINVAL.code();

	private static final int ENOSPC = NbdError.ENOSPC.code();

	private static final int ENOTSUP = NbdError.ENOTSUP.code();

	@TempDir
	Path dir;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private NbdServer server;

	private int port;

	private MemoryBackend mem;

	private FileBackend file;

	@BeforeEach
	void start() throws IOException {
		this.mem = new MemoryBackend("mem", SIZE);
		this.file = new FileBackend("file", this.dir.resolve("disk.img"), SIZE, null, false);
		this.server = this.servers.start(NbdServerConfig.builder().maxPayload(MAX_PAYLOAD), this.mem, this.file,
				new MemoryBackend("ro", SIZE, null, true), new SlowZeroBackend(), new GatedBackend("gated", SIZE),
				new OrderedBackend(), new StripedBackend());
		this.port = this.server.port();
	}

	@AfterEach
	void stop() throws IOException {
		// The server first: it may still sync the file.
		this.servers.stopAll();
		this.file.close();
	}

	@Test
	void writeReadFlushTrimCacheZeroOnMemory() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", false, false)) {
			byte[] data = pattern(8192, 3);
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 1, 4096, data.length, data);
			assertOk(c.readSimpleReply(), 1);
			c.sendRequest(NbdProtocol.CMD_FLAG_FUA, NbdProtocol.CMD_WRITE, 2, 65536, data.length, data);
			assertOk(c.readSimpleReply(), 2);
			c.sendRequest(0, NbdProtocol.CMD_FLUSH, 3, 0, 0, null);
			assertOk(c.readSimpleReply(), 3);
			c.sendRequest(0, NbdProtocol.CMD_READ, 4, 4096, data.length, null);
			Reply read = c.readReply(data.length);
			assertOk(read, 4);
			assertThat(read.data()).isEqualTo(data);
			c.sendRequest(0, NbdProtocol.CMD_CACHE, 5, 0, SIZE, null);
			assertOk(c.readSimpleReply(), 5);
			c.sendRequest(0, NbdProtocol.CMD_TRIM, 6, 4096, 4096, null);
			assertOk(c.readSimpleReply(), 6);
			c.sendRequest(NbdProtocol.CMD_FLAG_NO_HOLE, NbdProtocol.CMD_WRITE_ZEROES, 7, 8192, 100, null);
			assertOk(c.readSimpleReply(), 7);
			c.sendRequest(NbdProtocol.CMD_FLAG_FAST_ZERO | NbdProtocol.CMD_FLAG_FUA, NbdProtocol.CMD_WRITE_ZEROES, 8,
					65536, 4096, null);
			assertOk(c.readSimpleReply(), 8);
			c.sendRequest(0, NbdProtocol.CMD_READ, 9, 4096, data.length, null);
			byte[] expected = data.clone();
			// Trimmed memory reads back as zeroes; then 100 zeroed bytes.
			Arrays.fill(expected, 0, 4096 + 100, (byte) 0);
			assertThat(c.readReply(data.length).data()).isEqualTo(expected);
			c.sendRequest(0, NbdProtocol.CMD_READ, 10, 65536, data.length, null);
			byte[] expected2 = data.clone();
			Arrays.fill(expected2, 0, 4096, (byte) 0);
			assertThat(c.readReply(data.length).data()).isEqualTo(expected2);
		}
	}

	@Test
	void everyCommandOnAFileExport() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "file", true, false)) {
			// A sparse file (where the filesystem can punch holes): trim and fast zero.
			assertThat(c.export().flags() & NbdProtocol.TFLAG_SEND_TRIM).isNotZero();
			assertThat(c.export().flags() & NbdProtocol.TFLAG_SEND_FAST_ZERO).isNotZero();
			byte[] data = pattern(MAX_PAYLOAD, 9);
			c.sendRequest(NbdProtocol.CMD_FLAG_FUA, NbdProtocol.CMD_WRITE, 1, SIZE - MAX_PAYLOAD, MAX_PAYLOAD, data);
			assertOk(c.readSimpleReply(), 1);
			c.sendRequest(0, NbdProtocol.CMD_WRITE_ZEROES, 2, SIZE - MAX_PAYLOAD, 10, null);
			assertOk(c.readSimpleReply(), 2);
			c.sendRequest(0, NbdProtocol.CMD_FLUSH, 3, 0, 0, null);
			assertOk(c.readSimpleReply(), 3);
			c.sendRequest(0, NbdProtocol.CMD_CACHE, 4, 0, SIZE, null);
			assertOk(c.readSimpleReply(), 4);
			c.sendRequest(0, NbdProtocol.CMD_READ, 5, SIZE - MAX_PAYLOAD, MAX_PAYLOAD, null);
			List<Chunk> chunks = c.readChunks();
			// All of it data (the 10 zeroed bytes share a block with data): one data chunk.
			assertThat(chunks).hasSize(1);
			Chunk chunk = chunks.get(0);
			assertThat(chunk.type()).isEqualTo(NbdProtocol.REPLY_TYPE_OFFSET_DATA);
			ByteBuffer b = chunk.buffer();
			assertThat(b.getLong()).isEqualTo(SIZE - MAX_PAYLOAD);
			byte[] expected = data.clone();
			Arrays.fill(expected, 0, 10, (byte) 0);
			assertThat(Arrays.copyOfRange(chunk.payload(), 8, chunk.payload().length)).isEqualTo(expected);
			c.sendRequest(0, NbdProtocol.CMD_TRIM, 6, 0, 4096, null);
			assertOk(c.readSimpleReply(), 6);
			c.sendRequest(NbdProtocol.CMD_FLAG_FAST_ZERO, NbdProtocol.CMD_WRITE_ZEROES, 7, 0, 4096, null);
			assertOk(c.readSimpleReply(), 7);
			// BLOCK_STATUS without a negotiated meta context.
			c.sendRequest(0, NbdProtocol.CMD_BLOCK_STATUS, 8, 0, 4096, null);
			Chunk error = c.readChunk();
			assertThat(error.type()).isEqualTo(NbdProtocol.REPLY_TYPE_ERROR);
			assertThat(error.error()).isEqualTo(EINVAL);
		}
	}

	@Test
	void outOfRangeRequests() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", false, false)) {
			c.sendRequest(0, NbdProtocol.CMD_READ, 1, SIZE - 512, 1024, null);
			assertError(c.readSimpleReply(), 1, EINVAL);
			c.sendRequest(0, NbdProtocol.CMD_READ, 2, SIZE, 1, null);
			assertError(c.readSimpleReply(), 2, EINVAL);
			c.sendRequest(0, NbdProtocol.CMD_READ, 3, Long.MIN_VALUE, 512, null);
			assertError(c.readSimpleReply(), 3, EINVAL);
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 4, SIZE - 2, 4, new byte[4]);
			assertError(c.readSimpleReply(), 4, ENOSPC);
			c.sendRequest(0, NbdProtocol.CMD_WRITE_ZEROES, 5, SIZE - 1, 0xffffffffL, null);
			assertError(c.readSimpleReply(), 5, ENOSPC);
			c.sendRequest(0, NbdProtocol.CMD_TRIM, 6, Long.MAX_VALUE, 4096, null);
			assertError(c.readSimpleReply(), 6, EINVAL);
			c.sendRequest(0, NbdProtocol.CMD_CACHE, 7, SIZE, 4096, null);
			assertError(c.readSimpleReply(), 7, EINVAL);
			// The export is unchanged and the connection still works.
			c.sendRequest(0, NbdProtocol.CMD_READ, 8, SIZE - 4, 4, null);
			Reply ok = c.readReply(4);
			assertOk(ok, 8);
			assertThat(ok.data()).containsOnly(0);
		}
	}

	@Test
	void zeroLengthRequestsAreInvalidNotAFullDisk() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", false, false)) {
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 1, 0, 0, new byte[0]);
			assertError(c.readSimpleReply(), 1, EINVAL);
			c.sendRequest(0, NbdProtocol.CMD_WRITE_ZEROES, 2, 4096, 0, null);
			assertError(c.readSimpleReply(), 2, EINVAL);
			c.sendRequest(0, NbdProtocol.CMD_READ, 3, 0, 0, null);
			assertError(c.readSimpleReply(), 3, EINVAL);
			// Still in step: the next request is answered normally.
			c.sendRequest(0, NbdProtocol.CMD_READ, 4, 0, 4, null);
			assertOk(c.readReply(4), 4);
		}
	}

	/** Payload bytes moved are counted per connection and per export; failed requests count none. */
	@Test
	void bytesMovedAreCountedPerConnectionAndExport() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", false, false)) {
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 1, 0, 4096, new byte[4096]);
			assertOk(c.readSimpleReply(), 1);
			c.sendRequest(0, NbdProtocol.CMD_READ, 2, 0, 8192, null);
			assertOk(c.readReply(8192), 2);
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 3, SIZE - 2, 4, new byte[4]);
			assertError(c.readSimpleReply(), 3, ENOSPC);
			c.sendRequest(0, NbdProtocol.CMD_READ, 4, SIZE, 512, null);
			assertError(c.readSimpleReply(), 4, EINVAL);
			NbdConnection connection = this.server.connections().iterator().next();
			assertThat(connection.bytesWritten()).isEqualTo(4096);
			assertThat(connection.bytesRead()).isEqualTo(8192);
			assertThat(this.server.export("mem").bytesWritten()).isEqualTo(4096);
			assertThat(this.server.export("mem").bytesRead()).isEqualTo(8192);
			assertThat(this.server.export("file").bytesRead()).isZero();
		}
	}

	@Test
	void blockStatusReplyStaysWithinMaximumPayload() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "striped", true, true)) {
			c.sendRequest(0, NbdProtocol.CMD_BLOCK_STATUS, 1, 0, StripedBackend.SIZE, null);
			Chunk chunk = c.readChunk();
			assertThat(chunk.type()).isEqualTo(NbdProtocol.REPLY_TYPE_BLOCK_STATUS);
			assertThat(chunk.done()).isTrue();
			// Many descriptors (the backend has 131072 extents), but no more than fit the payload.
			assertThat(chunk.payload().length).isLessThanOrEqualTo(MAX_PAYLOAD).isGreaterThan(MAX_PAYLOAD - 16);
			ByteBuffer payload = ByteBuffer.wrap(chunk.payload());
			payload.getInt();
			long covered = 0;
			for (int i = 0; payload.hasRemaining(); i++) {
				long length = Integer.toUnsignedLong(payload.getInt());
				int flags = payload.getInt();
				assertThat(length).isEqualTo(StripedBackend.STRIPE);
				assertThat(flags).isEqualTo(((i % 2) == 0) ? 0 : (NbdProtocol.STATE_HOLE | NbdProtocol.STATE_ZERO));
				covered += length;
			}
			assertThat(covered).isPositive().isLessThan(StripedBackend.SIZE);
		}
	}

	@Test
	void badFlagsAndUnknownCommands() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", false, false)) {
			// DF without structured replies; NO_HOLE on a WRITE; REQ_ONE on a READ; undefined bit.
			c.sendRequest(NbdProtocol.CMD_FLAG_DF, NbdProtocol.CMD_READ, 1, 0, 512, null);
			assertError(c.readSimpleReply(), 1, EINVAL);
			c.sendRequest(NbdProtocol.CMD_FLAG_NO_HOLE, NbdProtocol.CMD_WRITE, 2, 0, 4, new byte[] { 1, 2, 3, 4 });
			assertError(c.readSimpleReply(), 2, EINVAL);
			c.sendRequest(NbdProtocol.CMD_FLAG_REQ_ONE, NbdProtocol.CMD_READ, 3, 0, 512, null);
			assertError(c.readSimpleReply(), 3, EINVAL);
			c.sendRequest(1 << 12, NbdProtocol.CMD_FLUSH, 4, 0, 0, null);
			assertError(c.readSimpleReply(), 4, EINVAL);
			for (int type : new int[] { 8, 99, 0xffff }) {
				c.sendRequest(0, type, 10 + type, 0, 512, null);
				assertError(c.readSimpleReply(), 10 + type, EINVAL);
			}
			// The refused write did not land.
			c.sendRequest(0, NbdProtocol.CMD_READ, 5, 0, 4, null);
			assertThat(c.readReply(4).data()).containsOnly(0);
		}
	}

	@Test
	void fuaIsAcceptedOnEveryCommandWhenAdvertised() throws Exception {
		// Spec: with NBD_FLAG_SEND_FUA the server MUST accept FUA on all commands (even by ignoring it).
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", true, true)) {
			c.sendRequest(NbdProtocol.CMD_FLAG_FUA, NbdProtocol.CMD_FLUSH, 1, 0, 0, null);
			assertOk(c.readSimpleReply(), 1);
			c.sendRequest(NbdProtocol.CMD_FLAG_FUA, NbdProtocol.CMD_CACHE, 2, 0, 4096, null);
			assertOk(c.readSimpleReply(), 2);
			c.sendRequest(NbdProtocol.CMD_FLAG_FUA, NbdProtocol.CMD_READ, 3, 0, 4096, null);
			assertThat(c.readChunks()).last().extracting(Chunk::type).isNotEqualTo(NbdProtocol.REPLY_TYPE_ERROR);
			c.sendRequest(NbdProtocol.CMD_FLAG_FUA, NbdProtocol.CMD_BLOCK_STATUS, 4, 0, 4096, null);
			assertThat(c.readChunk().type()).isEqualTo(NbdProtocol.REPLY_TYPE_BLOCK_STATUS);
		}
	}

	@Test
	void readOnlyExportRefusesWritesWithEperm() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "ro", false, false)) {
			assertThat(c.export().flags() & NbdProtocol.TFLAG_READ_ONLY).isNotZero();
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 1, 0, 4, new byte[4]);
			assertError(c.readSimpleReply(), 1, EPERM);
			c.sendRequest(0, NbdProtocol.CMD_WRITE_ZEROES, 2, 0, 4096, null);
			assertError(c.readSimpleReply(), 2, EPERM);
			c.sendRequest(0, NbdProtocol.CMD_TRIM, 3, 0, 4096, null);
			assertError(c.readSimpleReply(), 3, EPERM);
			c.sendRequest(0, NbdProtocol.CMD_READ, 4, 0, 4096, null);
			assertOk(c.readReply(4096), 4);
		}
	}

	@Test
	void fastZeroTheBackendCannotDoFastIsEnotsup() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "slowzero", false, false)) {
			assertThat(c.export().flags() & NbdProtocol.TFLAG_SEND_FAST_ZERO).isNotZero();
			byte[] data = pattern(4096, 1);
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 1, 0, 4096, data);
			assertOk(c.readSimpleReply(), 1);
			c.sendRequest(NbdProtocol.CMD_FLAG_FAST_ZERO, NbdProtocol.CMD_WRITE_ZEROES, 2, 0, 4096, null);
			assertError(c.readSimpleReply(), 2, ENOTSUP);
			// The contents are untouched by the failed fast zero; a slow zero works.
			c.sendRequest(0, NbdProtocol.CMD_READ, 3, 0, 4096, null);
			assertThat(c.readReply(4096).data()).isEqualTo(data);
			c.sendRequest(0, NbdProtocol.CMD_WRITE_ZEROES, 4, 0, 4096, null);
			assertOk(c.readSimpleReply(), 4);
			c.sendRequest(0, NbdProtocol.CMD_READ, 5, 0, 4096, null);
			assertThat(c.readReply(4096).data()).containsOnly(0);
		}
	}

	@Test
	void oversizedWriteIsDiscardedAndTheConnectionStaysInSync() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", false, false)) {
			byte[] big = pattern(MAX_PAYLOAD + 1, 5);
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 1, 0, big.length, big);
			c.sendRequest(0, NbdProtocol.CMD_READ, 2, 0, 8, null);
			assertError(c.readSimpleReply(), 1, EINVAL);
			Reply read = c.readReply(8);
			assertOk(read, 2);
			assertThat(read.data()).containsOnly(0);
		}
	}

	@Test
	void oversizedReadIsRefused() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", false, false)) {
			c.sendRequest(0, NbdProtocol.CMD_READ, 1, 0, MAX_PAYLOAD + 1, null);
			assertError(c.readSimpleReply(), 1, EINVAL);
			c.sendRequest(0, NbdProtocol.CMD_READ, 2, 0, 0xffffffffL, null);
			assertError(c.readSimpleReply(), 2, EINVAL);
		}
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", true, false)) {
			c.sendRequest(0, NbdProtocol.CMD_READ, 3, 0, MAX_PAYLOAD + 1, null);
			Chunk chunk = c.readChunk();
			assertThat(chunk.type()).isEqualTo(NbdProtocol.REPLY_TYPE_ERROR);
			assertThat(chunk.done()).isTrue();
			assertThat(chunk.cookie()).isEqualTo(3);
			assertThat(chunk.error()).isEqualTo(EINVAL);
		}
	}

	@Test
	void structuredReadSendsHolesAsHoleChunksAndDfGivesOneDataChunk() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", true, false)) {
			byte[] data = pattern(4096, 7);
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 1, 8192, 4096, data);
			assertOk(c.readSimpleReply(), 1);
			c.sendRequest(0, NbdProtocol.CMD_READ, 2, 0, 6 * 4096, null);
			List<Chunk> chunks = c.readChunks();
			assertThat(chunks).extracting(Chunk::type)
				.containsExactly(NbdProtocol.REPLY_TYPE_OFFSET_HOLE, NbdProtocol.REPLY_TYPE_OFFSET_DATA,
						NbdProtocol.REPLY_TYPE_OFFSET_HOLE);
			assertThat(chunks).extracting(Chunk::cookie).containsOnly(2L);
			assertThat(chunks).extracting(Chunk::done).containsExactly(false, false, true);
			assertHole(chunks.get(0), 0, 8192);
			ByteBuffer d = chunks.get(1).buffer();
			assertThat(d.getLong()).isEqualTo(8192);
			byte[] got = new byte[d.remaining()];
			d.get(got);
			assertThat(got).isEqualTo(data);
			assertHole(chunks.get(2), 12288, 3 * 4096);
			// DF: one content chunk covering everything.
			c.sendRequest(NbdProtocol.CMD_FLAG_DF, NbdProtocol.CMD_READ, 3, 0, 6 * 4096, null);
			List<Chunk> df = c.readChunks();
			assertThat(df).hasSize(1);
			assertThat(df.get(0).type()).isEqualTo(NbdProtocol.REPLY_TYPE_OFFSET_DATA);
			ByteBuffer all = df.get(0).buffer();
			assertThat(all.getLong()).isZero();
			assertThat(all.remaining()).isEqualTo(6 * 4096);
			byte[] expected = new byte[6 * 4096];
			System.arraycopy(data, 0, expected, 8192, 4096);
			byte[] whole = new byte[all.remaining()];
			all.get(whole);
			assertThat(whole).isEqualTo(expected);
			// A read entirely inside a hole.
			c.sendRequest(0, NbdProtocol.CMD_READ, 4, 100, 50, null);
			List<Chunk> hole = c.readChunks();
			assertThat(hole).hasSize(1);
			assertHole(hole.get(0), 100, 50);
		}
	}

	@Test
	void writeZeroesWithNoHoleLeavesTheRangeProvisionedAndReportsItAsZeroes() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", true, true)) {
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 1, 0, 8192, pattern(8192, 3));
			assertOk(c.readSimpleReply(), 1);
			// Over data and a hole: both pages stay (or become) allocated, and read as zeroes.
			c.sendRequest(NbdProtocol.CMD_FLAG_NO_HOLE, NbdProtocol.CMD_WRITE_ZEROES, 2, 4096, 8192, null);
			assertOk(c.readSimpleReply(), 2);
			c.sendRequest(0, NbdProtocol.CMD_BLOCK_STATUS, 3, 0, 65536, null);
			assertThat(extents(c.readChunk())).containsExactly(new long[] { 4096, 0 },
					new long[] { 8192, NbdProtocol.STATE_ZERO }, new long[] { 65536 - 12288, 3 });
			// Without NO_HOLE the same range becomes a hole again.
			c.sendRequest(0, NbdProtocol.CMD_WRITE_ZEROES, 4, 4096, 8192, null);
			assertOk(c.readSimpleReply(), 4);
			c.sendRequest(0, NbdProtocol.CMD_BLOCK_STATUS, 5, 0, 65536, null);
			assertThat(extents(c.readChunk())).containsExactly(new long[] { 4096, 0 }, new long[] { 65536 - 4096, 3 });
		}
	}

	@Test
	void blockStatusWithAndWithoutReqOne() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", true, true)) {
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 1, 4096, 8192, pattern(8192, 2));
			assertOk(c.readSimpleReply(), 1);
			c.sendRequest(0, NbdProtocol.CMD_BLOCK_STATUS, 2, 0, 65536, null);
			Chunk all = c.readChunk();
			assertThat(all.type()).isEqualTo(NbdProtocol.REPLY_TYPE_BLOCK_STATUS);
			assertThat(all.done()).isTrue();
			assertThat(all.cookie()).isEqualTo(2);
			assertThat(extents(all)).containsExactly(new long[] { 4096, 3 }, new long[] { 8192, 0 },
					new long[] { 65536 - 12288, 3 });
			c.sendRequest(NbdProtocol.CMD_FLAG_REQ_ONE, NbdProtocol.CMD_BLOCK_STATUS, 3, 0, 65536, null);
			assertThat(extents(c.readChunk())).containsExactly(new long[] { 4096, 3 });
			c.sendRequest(NbdProtocol.CMD_FLAG_REQ_ONE, NbdProtocol.CMD_BLOCK_STATUS, 4, 4096, 65536, null);
			assertThat(extents(c.readChunk())).containsExactly(new long[] { 8192, 0 });
			// Past the end: an error chunk.
			c.sendRequest(0, NbdProtocol.CMD_BLOCK_STATUS, 5, SIZE, 4096, null);
			Chunk error = c.readChunk();
			assertThat(error.type()).isEqualTo(NbdProtocol.REPLY_TYPE_ERROR);
			assertThat(error.error()).isEqualTo(EINVAL);
			// Near the end: no extent reaches past the export.
			c.sendRequest(0, NbdProtocol.CMD_BLOCK_STATUS, 6, SIZE - 100, 100, null);
			assertThat(extents(c.readChunk())).containsExactly(new long[] { 100, 3 });
		}
	}

	@Test
	void discAnswersRequestsInFlightThenCloses() throws Exception {
		GatedBackend gated = (GatedBackend) this.server.export("gated").backend();
		try (RawNbdClient c = RawNbdClient.connect(this.port, "gated", false, false)) {
			// The writes are held in the backend, so they are certainly in flight when DISC arrives.
			gated.close();
			for (int i = 0; i < 5; i++) {
				c.sendRequest(0, NbdProtocol.CMD_WRITE, 100 + i, i * 4096L, 4096, pattern(4096, i));
			}
			gated.awaitWaiting(1);
			c.sendRequest(0, NbdProtocol.CMD_DISC, 999, 0, 0, null);
			gated.open();
			List<Long> cookies = new ArrayList<>();
			for (int i = 0; i < 5; i++) {
				SimpleReply r = c.readSimpleReply();
				assertThat(r.error()).isZero();
				cookies.add(r.cookie());
			}
			assertThat(cookies).containsExactlyInAnyOrder(100L, 101L, 102L, 103L, 104L);
			// No reply to DISC: the server closes.
			assertThat(c.closesWithoutData()).isTrue();
		}
		for (int i = 0; i < 5; i++) {
			ByteBuffer b = ByteBuffer.allocate(4096);
			gated.read(i * 4096L, b);
			assertThat(b.array()).isEqualTo(pattern(4096, i));
		}
	}

	@Test
	void badRequestMagicEndsTheConnection() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", false, false)) {
			byte[] bad = RawNbdClient.request(0, NbdProtocol.CMD_FLUSH, 1, 0, 0);
			bad[3] ^= 1;
			c.output().write(bad);
			assertThat(c.closesWithoutData()).isTrue();
		}
	}

	@Test
	void repliesMayArriveOutOfOrderButEachCookieIsAnsweredOnce() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "file", false, false)) {
			Map<Long, byte[]> written = new HashMap<>();
			for (long i = 0; i < 64; i++) {
				byte[] data = pattern(4096, (int) i);
				written.put(i, data);
				c.sendRequest(0, NbdProtocol.CMD_WRITE, i, i * 4096, 4096, data);
			}
			List<Long> answered = new ArrayList<>();
			for (int i = 0; i < 64; i++) {
				SimpleReply r = c.readSimpleReply();
				assertThat(r.error()).isZero();
				answered.add(r.cookie());
			}
			assertThat(answered).containsExactlyInAnyOrderElementsOf(written.keySet());
			for (long i = 0; i < 64; i++) {
				c.sendRequest(0, NbdProtocol.CMD_READ, 1000 + i, i * 4096, 4096, null);
			}
			for (int i = 0; i < 64; i++) {
				Reply r = c.readReply(4096);
				assertThat(r.data()).isEqualTo(written.get(r.cookie() - 1000));
			}
		}
	}

	@Test
	void aSlowRequestDoesNotHoldBackTheRepliesOfLaterOnes() throws Exception {
		// The read at offset 0 blocks until the client writes, and the client writes only after the
		// reply to a later read: that reply can only come out of order.
		try (RawNbdClient c = RawNbdClient.connect(this.port, "ordered", false, false)) {
			c.sendRequest(0, NbdProtocol.CMD_READ, 1, 0, 512, null);
			c.sendRequest(0, NbdProtocol.CMD_READ, 2, 4096, 512, null);
			Reply second = c.readReply(512);
			assertThat(second.cookie()).isEqualTo(2);
			assertThat(second.error()).isZero();
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 3, 8192, 4, new byte[4]);
			List<Long> rest = new ArrayList<>();
			for (int i = 0; i < 2; i++) {
				// Which reply comes first is up to the server; only the read's carries data.
				SimpleReply r = c.readSimpleReply();
				assertThat(r.error()).isZero();
				if (r.cookie() == 1) {
					c.readFully(new byte[512]);
				}
				rest.add(r.cookie());
			}
			assertThat(rest).containsExactlyInAnyOrder(1L, 3L);
		}
	}

	@ParameterizedTest
	@ValueSource(strings = { "mem", "file" })
	void aClientThatDoesNotReadRepliesIsThrottledNotBuffered(String export) throws Exception {
		int requests = 2000;
		int length = 64 * 1024;
		try (RawNbdClient c = RawNbdClient.connect(this.port, export, false, false)) {
			// 56 KB of requests in one write, asking for 125 MiB of replies that are not read for a while.
			ByteBuffer batch = ByteBuffer.allocate(requests * NbdProtocol.REQUEST_HEADER_LENGTH);
			for (int i = 0; i < requests; i++) {
				batch.put(RawNbdClient.request(0, NbdProtocol.CMD_READ, i, (i % 16) * (long) length, length));
			}
			c.output().write(batch.array());
			NbdConnection connection = this.server.connections().iterator().next();
			// Nothing is read: the replies back up until the server stops reading the socket and
			// cannot start another request: its channel is unwritable ("mem": the replies are
			// buffers), or every in-flight slot holds a reply not yet in the socket ("file": READs
			// are sent by sendfile and answered once sent). That state comes whatever the machine's
			// speed and lasts until the client reads; it is looked at on the connection's event
			// loop, all at one moment.
			long bound = 16L << 20;
			Backlog throttled = await().atMost(Duration.ofSeconds(60))
				.pollInterval(Duration.ofMillis(10))
				.failFast("the server queued " + bound + " reply bytes or more",
						() -> backlog(connection).pendingReplyBytes() >= bound)
				.until(() -> backlog(connection),
						(b) -> !b.reading() && (!b.writable() || b.unsentFileReplies() == connection.maxInFlight()));
			// Meanwhile and then, replies wait in socket buffers and up to the channel's high water
			// mark (4 MiB), plus what requests then in flight add (at most 64 of 64 KiB), not in
			// unbounded server memory (2,000 replies would be 125 MiB).
			assertThat(throttled.pendingReplyBytes()).as("reply bytes queued by the server").isLessThan(bound);
			// Not vacuous: what stops the server is counted (an unwritable channel holds at least the
			// low water mark, 1 MiB; 64 sendfile replies of 64 KiB not yet sent are nearly 4 MiB).
			assertThat(throttled.pendingReplyBytes()).as("reply bytes queued by the server").isGreaterThanOrEqualTo(1L << 20);
			Set<Long> cookies = new HashSet<>();
			for (int i = 0; i < requests; i++) {
				Reply r = c.readReply(length);
				assertThat(r.error()).isZero();
				cookies.add(r.cookie());
			}
			assertThat(cookies).hasSize(requests);
		}
	}

	/**
	 * Whether the connection's socket is writable and read, how many of its READs wait for their
	 * sendfile reply to be sent, and the reply bytes it has queued.
	 */
	private record Backlog(boolean writable, boolean reading, int unsentFileReplies, long pendingReplyBytes) {
	}

	private static Backlog backlog(NbdConnection connection) throws Exception {
		Channel channel = connection.channel();
		return channel.eventLoop()
			.submit(() -> {
				TransmissionHandler handler = channel.pipeline().get(TransmissionHandler.class);
				return new Backlog(channel.isWritable(), channel.config().isAutoRead(), handler.unsentFileReplies(),
						handler.pendingReplyBytes());
			})
			.get();
	}

	static byte[] pattern(int length, int seed) {
		byte[] b = new byte[length];
		for (int i = 0; i < length; i++) {
			b[i] = (byte) (i * 31 + seed * 17 + 1);
		}
		return b;
	}

	private static void assertOk(Reply reply, long cookie) {
		assertThat(reply.cookie()).isEqualTo(cookie);
		assertThat(reply.error()).as("error of request %d", cookie).isZero();
	}

	private static void assertOk(SimpleReply reply, long cookie) {
		assertThat(reply.cookie()).isEqualTo(cookie);
		assertThat(reply.error()).as("error of request %d", cookie).isZero();
	}

	private static void assertError(SimpleReply reply, long cookie, int error) {
		assertThat(reply.cookie()).isEqualTo(cookie);
		assertThat(reply.error()).as("error of request %d", cookie).isEqualTo(error);
	}

	private static void assertHole(Chunk chunk, long offset, int length) {
		assertThat(chunk.type()).isEqualTo(NbdProtocol.REPLY_TYPE_OFFSET_HOLE);
		ByteBuffer b = chunk.buffer();
		assertThat(b.remaining()).isEqualTo(12);
		assertThat(b.getLong()).isEqualTo(offset);
		assertThat(b.getInt()).isEqualTo(length);
	}

	private static List<long[]> extents(Chunk chunk) {
		assertThat(chunk.type()).isEqualTo(NbdProtocol.REPLY_TYPE_BLOCK_STATUS);
		ByteBuffer b = chunk.buffer();
		assertThat(b.getInt()).isEqualTo(NbdProtocol.CONTEXT_ID_BASE_ALLOCATION);
		List<long[]> list = new ArrayList<>();
		while (b.hasRemaining()) {
			list.add(new long[] { b.getInt() & 0xffffffffL, b.getInt() });
		}
		return list;
	}

	/** Advertises fast zero but, like a file without hole punching, can only zero slowly. */
	/** 64 MiB of alternating 512-byte data and hole extents. */
	static final class StripedBackend implements ExportBackend {

		static final long SIZE = 64L << 20;

		static final int STRIPE = 512;

		@Override
		public String name() {
			return "striped";
		}

		@Override
		public long size() {
			return SIZE;
		}

		@Override
		public boolean canExtents() {
			return true;
		}

		@Override
		public void extents(long offset, long length, ExtentSink sink) {
			for (long pos = offset; pos < offset + length; pos += STRIPE) {
				boolean hole = ((pos / STRIPE) % 2) == 1;
				if (!sink.extent(STRIPE, hole ? (HOLE | ZERO) : 0)) {
					return;
				}
			}
		}

		@Override
		public void read(long offset, ByteBuffer dst) {
			while (dst.hasRemaining()) {
				dst.put((byte) 0);
			}
		}

		@Override
		public void write(long offset, ByteBuffer src, boolean fua) {
			src.position(src.limit());
		}

	}

	static final class SlowZeroBackend implements ExportBackend {

		private final MemoryBackend data = new MemoryBackend("slowzero", SIZE);

		@Override
		public String name() {
			return this.data.name();
		}

		@Override
		public long size() {
			return SIZE;
		}

		@Override
		public boolean canZero() {
			return true;
		}

		@Override
		public boolean canFastZero() {
			return true;
		}

		@Override
		public void read(long offset, ByteBuffer dst) {
			this.data.read(offset, dst);
		}

		@Override
		public void write(long offset, ByteBuffer src, boolean fua) throws java.io.IOException {
			this.data.write(offset, src, fua);
		}

		@Override
		public void zero(long offset, long length, boolean mayTrim, boolean fast, boolean fua) throws IOException {
			if (fast) {
				throw new NbdBackendException(NbdError.ENOTSUP, "only slow zeroing here");
			}
			this.data.zero(offset, length, mayTrim, false, fua);
		}

	}

	/** Blocks a read at offset 0 until a write arrives. */
	static final class OrderedBackend extends MemoryBackend {

		private final CountDownLatch written = new CountDownLatch(1);

		OrderedBackend() {
			super("ordered", SIZE);
		}

		@Override
		public boolean isBlocking() {
			return true;
		}

		@Override
		public void read(long offset, ByteBuffer dst) {
			try {
				if (offset == 0 && !this.written.await(10, TimeUnit.SECONDS)) {
					throw new IllegalStateException("no write came");
				}
			}
			catch (InterruptedException ex) {
				Thread.currentThread().interrupt();
			}
			super.read(offset, dst);
		}

		@Override
		public void write(long offset, ByteBuffer src, boolean fua) throws dev.nbd.backend.NbdBackendException {
			super.write(offset, src, fua);
			this.written.countDown();
		}

	}

}
