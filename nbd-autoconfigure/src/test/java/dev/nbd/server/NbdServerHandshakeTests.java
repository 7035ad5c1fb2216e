package dev.nbd.server;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Random;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;
import dev.nbd.testsupport.RawNbdClient.Chunk;
import dev.nbd.testsupport.RawNbdClient.OptionReply;
import dev.nbd.testsupport.RawNbdClient.Reply;

import static org.assertj.core.api.Assertions.assertThat;

/** Option haggling against a real server, byte by byte. */
class NbdServerHandshakeTests {

	private static final long SIZE = 1 << 20;

	private static final int MEM_FLAGS = NbdProtocol.TFLAG_HAS_FLAGS | NbdProtocol.TFLAG_SEND_FLUSH
			| NbdProtocol.TFLAG_SEND_FUA | NbdProtocol.TFLAG_SEND_TRIM | NbdProtocol.TFLAG_SEND_WRITE_ZEROES
			| NbdProtocol.TFLAG_CAN_MULTI_CONN | NbdProtocol.TFLAG_SEND_CACHE | NbdProtocol.TFLAG_SEND_FAST_ZERO;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private int port;

	@BeforeEach
	void start() {
		// The default handshake timeout: a loaded machine must not drop a client that is slow
		// through no fault of its own (a 16 MiB option under paranoid leak detection).
		start(NbdServerConfig.builder());
	}

	private void start(NbdServerConfig.Builder config) {
		this.servers.stopAll();
		this.port = this.servers
			.start(config.maxPayload(64 * 1024), new MemoryBackend("mem", SIZE, "in memory", false),
					new MemoryBackend("ro", SIZE, null, true))
			.port();
	}

	@Test
	void clientWithoutFixedNewstyleIsDisconnected() throws Exception {
		try (RawNbdClient c = negotiating(0)) {
			assertThat(c.closedByServer(5000)).isTrue();
		}
	}

	@Test
	void unknownClientFlagsAreDisconnected() throws Exception {
		try (RawNbdClient c = negotiating(NbdProtocol.FLAG_C_FIXED_NEWSTYLE | 0x4)) {
			assertThat(c.closedByServer(5000)).isTrue();
		}
	}

	@Test
	void exportNameWithoutNoZeroesGetsTheZeroPadding() throws Exception {
		try (RawNbdClient c = negotiating(NbdProtocol.FLAG_C_FIXED_NEWSTYLE)) {
			c.sendOption(NbdProtocol.OPT_EXPORT_NAME, "mem".getBytes(StandardCharsets.UTF_8));
			assertThat(c.input().readLong()).isEqualTo(SIZE);
			assertThat(c.input().readUnsignedShort()).isEqualTo(MEM_FLAGS);
			byte[] zeroes = new byte[124];
			c.readFully(zeroes);
			assertThat(zeroes).containsOnly(0);
			// Transmission follows directly, with simple replies.
			c.sendRequest(0, NbdProtocol.CMD_READ, 77, 0, 512, null);
			Reply r = c.readReply(512);
			assertThat(r.error()).isZero();
			assertThat(r.cookie()).isEqualTo(77);
		}
	}

	@Test
	void exportNameWithNoZeroesOmitsThePadding() throws Exception {
		try (RawNbdClient c = negotiating()) {
			c.sendOption(NbdProtocol.OPT_EXPORT_NAME, "ro".getBytes(StandardCharsets.UTF_8));
			assertThat(c.input().readLong()).isEqualTo(SIZE);
			assertThat(c.input().readUnsignedShort())
				.isEqualTo(NbdProtocol.TFLAG_HAS_FLAGS | NbdProtocol.TFLAG_READ_ONLY | NbdProtocol.TFLAG_CAN_MULTI_CONN
						| NbdProtocol.TFLAG_SEND_CACHE);
			// The next bytes are the reply to our request, not padding.
			c.sendRequest(0, NbdProtocol.CMD_READ, 5, 0, 16, null);
			assertThat(c.readReply(16).cookie()).isEqualTo(5);
		}
	}

	@Test
	void exportNameWithEmptyNameSelectsTheDefaultExport() throws Exception {
		try (RawNbdClient c = negotiating()) {
			c.sendOption(NbdProtocol.OPT_EXPORT_NAME, new byte[0]);
			assertThat(c.input().readLong()).isEqualTo(SIZE);
			assertThat(c.input().readUnsignedShort()).isEqualTo(MEM_FLAGS);
		}
	}

	@Test
	void exportNameOfAnUnknownExportClosesTheConnection() throws Exception {
		try (RawNbdClient c = negotiating()) {
			c.sendOption(NbdProtocol.OPT_EXPORT_NAME, "nope".getBytes(StandardCharsets.UTF_8));
			assertThat(c.closedByServer(5000)).isTrue();
		}
	}

	@Test
	void infoReportsNameDescriptionBlockSizeAndExportThenHagglingContinues() throws Exception {
		try (RawNbdClient c = negotiating()) {
			List<OptionReply> replies = c.replies(NbdProtocol.OPT_INFO, RawNbdClient.infoData("mem",
					NbdProtocol.INFO_NAME, NbdProtocol.INFO_DESCRIPTION, NbdProtocol.INFO_BLOCK_SIZE));
			assertThat(replies).extracting(OptionReply::option).containsOnly(NbdProtocol.OPT_INFO);
			assertThat(replies).extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_INFO, NbdProtocol.REP_INFO, NbdProtocol.REP_INFO, NbdProtocol.REP_INFO,
						NbdProtocol.REP_ACK);
			assertThat(infoString(replies, NbdProtocol.INFO_NAME)).isEqualTo("mem");
			assertThat(infoString(replies, NbdProtocol.INFO_DESCRIPTION)).isEqualTo("in memory");
			ByteBuffer bs = info(replies, NbdProtocol.INFO_BLOCK_SIZE);
			assertThat(bs.remaining()).isEqualTo(12);
			assertThat(bs.getInt()).isEqualTo(1);
			assertThat(bs.getInt()).isEqualTo(4096);
			assertThat(bs.getInt()).isEqualTo(64 * 1024);
			ByteBuffer ex = info(replies, NbdProtocol.INFO_EXPORT);
			assertThat(ex.remaining()).isEqualTo(10);
			assertThat(ex.getLong()).isEqualTo(SIZE);
			assertThat(ex.getShort() & 0xffff).isEqualTo(MEM_FLAGS);
			// Still haggling: GO on the same export gives the same information and enters transmission.
			List<OptionReply> go = c.replies(NbdProtocol.OPT_GO, RawNbdClient.infoData("mem"));
			assertThat(go.get(go.size() - 1).type()).isEqualTo(NbdProtocol.REP_ACK);
			ByteBuffer goEx = info(go, NbdProtocol.INFO_EXPORT);
			assertThat(goEx.getLong()).isEqualTo(SIZE);
			assertThat(goEx.getShort() & 0xffff).isEqualTo(MEM_FLAGS);
			c.sendRequest(0, NbdProtocol.CMD_FLUSH, 1, 0, 0, null);
			assertThat(c.readSimpleReply().error()).isZero();
		}
	}

	@Test
	void bytesPipelinedBehindGoAndExportNameReachTransmission() throws Exception {
		// Flags, options and the first requests in one segment: nothing may be lost in the pipeline switch.
		try (RawNbdClient c = RawNbdClient.connect(this.port)) {
			c.greeting();
			ByteArrayOutputStream segment = new ByteArrayOutputStream();
			DataOutputStream out = new DataOutputStream(segment);
			out.writeInt(NbdProtocol.FLAG_C_FIXED_NEWSTYLE | NbdProtocol.FLAG_C_NO_ZEROES);
			out.write(RawNbdClient.option(NbdProtocol.OPT_STRUCTURED_REPLY, new byte[0]));
			out.write(RawNbdClient.option(NbdProtocol.OPT_GO, RawNbdClient.infoData("mem")));
			out.write(RawNbdClient.request(0, NbdProtocol.CMD_WRITE, 1, 0, 3));
			out.write(new byte[] { 1, 2, 3 });
			out.write(RawNbdClient.request(NbdProtocol.CMD_FLAG_DF, NbdProtocol.CMD_READ, 2, 0, 3));
			c.output().write(segment.toByteArray());
			assertThat(c.readOptionReplies()).extracting(OptionReply::type).containsExactly(NbdProtocol.REP_ACK);
			assertThat(c.readOptionReplies()).last().extracting(OptionReply::type).isEqualTo(NbdProtocol.REP_ACK);
			assertThat(c.readSimpleReply().cookie()).isEqualTo(1);
			Chunk chunk = c.readChunk();
			assertThat(chunk.cookie()).isEqualTo(2);
			assertThat(chunk.payload()).endsWith(1, 2, 3);
		}
		try (RawNbdClient c = RawNbdClient.connect(this.port)) {
			c.greeting();
			ByteArrayOutputStream segment = new ByteArrayOutputStream();
			DataOutputStream out = new DataOutputStream(segment);
			out.writeInt(NbdProtocol.FLAG_C_FIXED_NEWSTYLE);
			out.write(RawNbdClient.option(NbdProtocol.OPT_EXPORT_NAME, "mem".getBytes(StandardCharsets.UTF_8)));
			out.write(RawNbdClient.request(0, NbdProtocol.CMD_READ, 3, 0, 3));
			c.output().write(segment.toByteArray());
			c.readFully(new byte[134]);
			Reply r = c.readReply(3);
			assertThat(r.cookie()).isEqualTo(3);
			assertThat(r.data()).containsExactly(1, 2, 3);
		}
	}

	@Test
	void goWithStructuredRepliesAdvertisesDf() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", true, false)) {
			assertThat(c.export().flags()).isEqualTo(MEM_FLAGS | NbdProtocol.TFLAG_SEND_DF);
			assertThat(c.size()).isEqualTo(SIZE);
		}
	}

	@Test
	void unknownExportIsErrUnknownAndHagglingContinues() throws Exception {
		try (RawNbdClient c = negotiating()) {
			for (int opt : new int[] { NbdProtocol.OPT_INFO, NbdProtocol.OPT_GO }) {
				List<OptionReply> replies = c.replies(opt, RawNbdClient.infoData("nope"));
				assertThat(replies).hasSize(1);
				assertThat(replies.get(0).type()).isEqualTo(NbdProtocol.REP_ERR_UNKNOWN);
				assertThat(replies.get(0).option()).isEqualTo(opt);
			}
			assertThat(c.replies(NbdProtocol.OPT_GO, RawNbdClient.infoData("mem")))
				.last()
				.extracting(OptionReply::type)
				.isEqualTo(NbdProtocol.REP_ACK);
		}
	}

	@Test
	void listNamesEveryExportWithItsDescription() throws Exception {
		try (RawNbdClient c = negotiating()) {
			List<OptionReply> replies = c.replies(NbdProtocol.OPT_LIST, new byte[0]);
			assertThat(replies).extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_SERVER, NbdProtocol.REP_SERVER, NbdProtocol.REP_ACK);
			ByteBuffer first = ByteBuffer.wrap(replies.get(0).data());
			int len = first.getInt();
			byte[] name = new byte[len];
			first.get(name);
			byte[] desc = new byte[first.remaining()];
			first.get(desc);
			assertThat(new String(name, StandardCharsets.UTF_8)).isEqualTo("mem");
			assertThat(new String(desc, StandardCharsets.UTF_8)).isEqualTo("in memory");
			ByteBuffer second = ByteBuffer.wrap(replies.get(1).data());
			assertThat(second.getInt()).isEqualTo(2);
			assertThat(second.remaining()).isEqualTo(2);
			// LIST with data is invalid, and haggling continues.
			assertThat(c.replies(NbdProtocol.OPT_LIST, new byte[] { 1 })).extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_ERR_INVALID);
			assertThat(c.replies(NbdProtocol.OPT_LIST, new byte[0])).hasSize(3);
		}
	}

	@Test
	void abortIsAcknowledgedThenClosed() throws Exception {
		try (RawNbdClient c = negotiating()) {
			assertThat(c.replies(NbdProtocol.OPT_ABORT, new byte[0])).extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_ACK);
			assertThat(c.closedByServer(5000)).isTrue();
		}
	}

	@Test
	void unknownOptionsAreUnsupportedAndHagglingContinues() throws Exception {
		try (RawNbdClient c = negotiating()) {
			for (int opt : new int[] { NbdProtocol.OPT_PEEK_EXPORT, NbdProtocol.OPT_EXTENDED_HEADERS, 0x1234,
					0x7fffffff }) {
				List<OptionReply> replies = c.replies(opt, new byte[] { 1, 2, 3 });
				assertThat(replies).hasSize(1);
				assertThat(replies.get(0).option()).isEqualTo(opt);
				assertThat(replies.get(0).type()).isEqualTo(NbdProtocol.REP_ERR_UNSUP);
			}
			// STARTTLS without TLS configured is unsupported too.
			assertThat(c.replies(NbdProtocol.OPT_STARTTLS, new byte[0])).extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_ERR_UNSUP);
			assertThat(c.replies(NbdProtocol.OPT_LIST, new byte[0])).last()
				.extracting(OptionReply::type)
				.isEqualTo(NbdProtocol.REP_ACK);
		}
	}

	@Test
	void malformedInfoIsInvalid() throws Exception {
		try (RawNbdClient c = negotiating()) {
			assertThat(c.replies(NbdProtocol.OPT_GO, new byte[] { 0, 0, 0, 9, 'm' })).extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_ERR_INVALID);
			assertThat(c.replies(NbdProtocol.OPT_INFO, new byte[] { 0, 0, 0, 2, (byte) 0xc3, 0x28, 0, 0 }))
				.extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_ERR_INVALID);
			assertThat(c.replies(NbdProtocol.OPT_STRUCTURED_REPLY, new byte[] { 0 })).extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_ERR_INVALID);
		}
	}

	@Test
	void structuredRepliesAndMetaContexts() throws Exception {
		try (RawNbdClient c = negotiating()) {
			// Meta contexts need structured replies first.
			assertThat(c.replies(NbdProtocol.OPT_SET_META_CONTEXT,
					RawNbdClient.metaContextData("mem", NbdProtocol.CONTEXT_BASE_ALLOCATION)))
				.extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_ERR_INVALID);
			assertThat(c.replies(NbdProtocol.OPT_STRUCTURED_REPLY, new byte[0])).extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_ACK);
			// LIST with no query lists all; "base:" lists the namespace; unknown namespaces are ignored.
			for (String[] queries : new String[][] { {}, { "base:" }, { "qemu:dirty-bitmap:x", "base:allocation" } }) {
				List<OptionReply> list = c.replies(NbdProtocol.OPT_LIST_META_CONTEXT,
						RawNbdClient.metaContextData("mem", queries));
				assertThat(list).extracting(OptionReply::type)
					.containsExactly(NbdProtocol.REP_META_CONTEXT, NbdProtocol.REP_ACK);
				assertThat(metaContextName(list.get(0))).isEqualTo("base:allocation");
			}
			assertThat(c.replies(NbdProtocol.OPT_LIST_META_CONTEXT, RawNbdClient.metaContextData("mem", "qemu:x")))
				.extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_ACK);
			assertThat(c.replies(NbdProtocol.OPT_SET_META_CONTEXT, RawNbdClient.metaContextData("nope", "base:allocation")))
				.extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_ERR_UNKNOWN);
			List<OptionReply> set = c.replies(NbdProtocol.OPT_SET_META_CONTEXT,
					RawNbdClient.metaContextData("mem", "base:allocation"));
			assertThat(set).extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_META_CONTEXT, NbdProtocol.REP_ACK);
			assertThat(ByteBuffer.wrap(set.get(0).data()).getInt()).isEqualTo(NbdProtocol.CONTEXT_ID_BASE_ALLOCATION);
			List<OptionReply> go = c.replies(NbdProtocol.OPT_GO, RawNbdClient.infoData("mem"));
			assertThat(go).last().extracting(OptionReply::type).isEqualTo(NbdProtocol.REP_ACK);
			c.sendRequest(0, NbdProtocol.CMD_BLOCK_STATUS, 3, 0, 4096, null);
			Chunk chunk = c.readChunk();
			assertThat(chunk.type()).isEqualTo(NbdProtocol.REPLY_TYPE_BLOCK_STATUS);
			assertThat(chunk.done()).isTrue();
		}
	}

	/**
	 * A SET_META_CONTEXT replaces earlier selections even when it fails (spec): after a failed
	 * one, BLOCK_STATUS is refused as if no context had been selected.
	 */
	@Test
	void failedSetMetaContextClearsTheEarlierSelection() throws Exception {
		byte[] unknownExport = RawNbdClient.metaContextData("nope", NbdProtocol.CONTEXT_BASE_ALLOCATION);
		byte[] malformed = { 0, 0, 0, 9, 'm' };
		for (byte[] failing : new byte[][] { unknownExport, malformed }) {
			try (RawNbdClient c = negotiating()) {
				assertThat(c.replies(NbdProtocol.OPT_STRUCTURED_REPLY, new byte[0])).extracting(OptionReply::type)
					.containsExactly(NbdProtocol.REP_ACK);
				assertThat(c.replies(NbdProtocol.OPT_SET_META_CONTEXT,
						RawNbdClient.metaContextData("mem", NbdProtocol.CONTEXT_BASE_ALLOCATION)))
					.extracting(OptionReply::type)
					.containsExactly(NbdProtocol.REP_META_CONTEXT, NbdProtocol.REP_ACK);
				assertThat(c.replies(NbdProtocol.OPT_SET_META_CONTEXT, failing)).extracting(OptionReply::type)
					.singleElement()
					.isIn(NbdProtocol.REP_ERR_UNKNOWN, NbdProtocol.REP_ERR_INVALID);
				assertThat(c.replies(NbdProtocol.OPT_GO, RawNbdClient.infoData("mem"))).last()
					.extracting(OptionReply::type)
					.isEqualTo(NbdProtocol.REP_ACK);
				c.sendRequest(0, NbdProtocol.CMD_BLOCK_STATUS, 3, 0, 4096, null);
				Chunk chunk = c.readChunk();
				assertThat(chunk.type()).isEqualTo(NbdProtocol.REPLY_TYPE_ERROR);
				assertThat(chunk.error()).isEqualTo(NbdError.EINVAL.code());
			}
		}
	}

	@Test
	void oversizedOptionIsTooBigAndHagglingContinues() throws Exception {
		try (RawNbdClient c = negotiating()) {
			// 16 MiB of option data, far past the server's 64 KiB option limit.
			c.output().write(RawNbdClient.optionHeader(NbdProtocol.OPT_INFO, 16 << 20));
			byte[] chunk = new byte[1 << 20];
			for (int i = 0; i < 16; i++) {
				c.output().write(chunk);
			}
			List<OptionReply> replies = c.readOptionReplies();
			assertThat(replies).extracting(OptionReply::type).containsExactly(NbdProtocol.REP_ERR_TOO_BIG);
			assertThat(c.replies(NbdProtocol.OPT_GO, RawNbdClient.infoData("mem"))).last()
				.extracting(OptionReply::type)
				.isEqualTo(NbdProtocol.REP_ACK);
		}
	}

	@Test
	void oversizedExportNameCloses() throws Exception {
		try (RawNbdClient c = negotiating()) {
			c.sendOption(NbdProtocol.OPT_EXPORT_NAME, new byte[128 * 1024]);
			assertThat(c.closedByServer(5000)).isTrue();
		}
	}

	@Test
	void hugeOptionLengthThenHangUpLeavesTheServerServing() throws Exception {
		try (RawNbdClient c = negotiating()) {
			c.output().write(RawNbdClient.optionHeader(NbdProtocol.OPT_LIST, 0xfffffff0L));
			c.output().write(new byte[1 << 20]);
		}
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", false, false)) {
			assertThat(c.size()).isEqualTo(SIZE);
		}
	}

	@Test
	void garbageInsteadOfAHandshakeIsDisconnected() throws Exception {
		try (RawNbdClient c = RawNbdClient.connect(this.port)) {
			c.greeting();
			c.output().write("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
			assertThat(c.closedByServer(5000)).isTrue();
		}
		try (RawNbdClient c = negotiating()) {
			byte[] junk = new byte[4096];
			new Random(42).nextBytes(junk);
			c.output().write(junk);
			assertThat(c.closedByServer(5000)).isTrue();
		}
		// A client that hangs up right after the greeting.
		RawNbdClient.connect(this.port).close();
		try (RawNbdClient c = RawNbdClient.connect(this.port, "mem", true, true)) {
			assertThat(c.size()).isEqualTo(SIZE);
		}
	}

	@Test
	void clientThatNeverFinishesNegotiatingIsDropped() throws Exception {
		start(NbdServerConfig.builder().handshakeTimeout(Duration.ofSeconds(1)));
		try (RawNbdClient c = negotiating()) {
			// Half an option header, then silence past the 1 s handshake timeout.
			c.output().write(RawNbdClient.optionHeader(NbdProtocol.OPT_LIST, 0), 0, 8);
			assertThat(c.closedByServer(60_000)).isTrue();
		}
	}

	private RawNbdClient negotiating() throws Exception {
		return negotiating(NbdProtocol.FLAG_C_FIXED_NEWSTYLE | NbdProtocol.FLAG_C_NO_ZEROES);
	}

	/** Connected, greeted and past the client flags: ready for options. */
	private RawNbdClient negotiating(int clientFlags) throws Exception {
		RawNbdClient c = RawNbdClient.connect(this.port);
		assertThat(c.handshake(clientFlags)).isEqualTo(NbdProtocol.FLAG_FIXED_NEWSTYLE | NbdProtocol.FLAG_NO_ZEROES);
		return c;
	}

	private static ByteBuffer info(List<OptionReply> replies, int infoType) {
		for (OptionReply r : replies) {
			ByteBuffer b = ByteBuffer.wrap(r.data());
			if (r.type() == NbdProtocol.REP_INFO && b.getShort() == infoType) {
				return b;
			}
		}
		throw new AssertionError("no NBD_INFO " + infoType + " in " + replies);
	}

	private static String infoString(List<OptionReply> replies, int infoType) {
		ByteBuffer b = info(replies, infoType);
		return StandardCharsets.UTF_8.decode(b).toString();
	}

	private static String metaContextName(OptionReply reply) {
		ByteBuffer b = ByteBuffer.wrap(reply.data());
		assertThat(b.getInt()).isEqualTo(NbdProtocol.CONTEXT_ID_BASE_ALLOCATION);
		return StandardCharsets.UTF_8.decode(b).toString();
	}

}
