package dev.nbd.protocol;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;

class NbdEncoderTests {

	private static final ByteBufAllocator alloc = ByteBufAllocator.DEFAULT;

	private static final String REPLY_MAGIC = "0003e889045565a9";

	@Test
	void greetingAdvertisesFixedNewstyleAndNoZeroes() {
		assertThat(hex(NbdEncoder.greeting(alloc))).isEqualTo("4e42444d41474943" + "49484156454f5054" + "0003");
	}

	@Test
	void optionReplies() {
		assertThat(hex(NbdEncoder.optionReply(alloc, NbdProtocol.OPT_GO, NbdProtocol.REP_ACK, null)))
			.isEqualTo(REPLY_MAGIC + "00000007" + "00000001" + "00000000");
		assertThat(hex(NbdEncoder.optionError(alloc, 0x42, NbdProtocol.REP_ERR_UNSUP, "no")))
			.isEqualTo(REPLY_MAGIC + "00000042" + "80000001" + "00000002" + "6e6f");
		assertThat(hex(NbdEncoder.serverEntry(alloc, NbdProtocol.OPT_LIST, "mem", "d")))
			.isEqualTo(REPLY_MAGIC + "00000003" + "00000002" + "00000008" + "00000003" + "6d656d" + "64");
		assertThat(hex(NbdEncoder.serverEntry(alloc, NbdProtocol.OPT_LIST, "", null)))
			.isEqualTo(REPLY_MAGIC + "00000003" + "00000002" + "00000004" + "00000000");
		assertThat(hex(NbdEncoder.infoExport(alloc, NbdProtocol.OPT_INFO, 0x40000000L, 0x0d6d)))
			.isEqualTo(REPLY_MAGIC + "00000006" + "00000003" + "0000000c" + "0000" + "0000000040000000" + "0d6d");
		assertThat(hex(NbdEncoder.infoString(alloc, NbdProtocol.OPT_GO, NbdProtocol.INFO_NAME, "é")))
			.isEqualTo(REPLY_MAGIC + "00000007" + "00000003" + "00000004" + "0001" + "c3a9");
		assertThat(hex(NbdEncoder.infoBlockSize(alloc, NbdProtocol.OPT_GO, 1, 4096, 32 << 20)))
			.isEqualTo(REPLY_MAGIC + "00000007" + "00000003" + "0000000e" + "0003" + "00000001" + "00001000"
					+ "02000000");
		assertThat(hex(NbdEncoder.metaContext(alloc, NbdProtocol.OPT_SET_META_CONTEXT, 1, "base:allocation")))
			.isEqualTo(REPLY_MAGIC + "0000000a" + "00000004" + "00000013" + "00000001"
					+ ByteBufUtil.hexDump("base:allocation".getBytes()));
	}

	@Test
	void exportNameReplyWithAndWithoutZeroes() {
		assertThat(hex(NbdEncoder.exportNameReply(alloc, 4096, 0x0003, true))).isEqualTo("0000000000001000" + "0003");
		String padded = hex(NbdEncoder.exportNameReply(alloc, 4096, 0x0003, false));
		assertThat(padded).hasSize(2 * 134).startsWith("00000000000010000003").endsWith("00".repeat(124));
	}

	@Test
	void simpleReply() {
		assertThat(hex(NbdEncoder.simpleReply(alloc, 0x0102030405060708L, 22)))
			.isEqualTo("67446698" + "00000016" + "0102030405060708");
	}

	@Test
	void structuredChunks() {
		assertThat(hex(NbdEncoder.noneChunk(alloc, 5))).isEqualTo("668e33ef" + "0001" + "0000" + "0000000000000005"
				+ "00000000");
		assertThat(hex(NbdEncoder.errorChunk(alloc, 5, 22, "bad")))
			.isEqualTo("668e33ef" + "0001" + "8001" + "0000000000000005" + "00000009" + "00000016" + "0003" + "626164");
		assertThat(hex(NbdEncoder.errorChunk(alloc, 5, 5, null)))
			.isEqualTo("668e33ef" + "0001" + "8001" + "0000000000000005" + "00000006" + "00000005" + "0000");
		assertThat(hex(NbdEncoder.holeChunk(alloc, 6, false, 8192, 4096)))
			.isEqualTo("668e33ef" + "0000" + "0002" + "0000000000000006" + "0000000c" + "0000000000002000" + "00001000");
		assertThat(hex(NbdEncoder.holeChunk(alloc, 6, true, 0, 1)))
			.isEqualTo("668e33ef" + "0001" + "0002" + "0000000000000006" + "0000000c" + "0000000000000000" + "00000001");
		// The header announces offset + data; the data follows in its own buffer.
		assertThat(hex(NbdEncoder.dataChunkHeader(alloc, 7, true, 512, 1024)))
			.isEqualTo("668e33ef" + "0001" + "0001" + "0000000000000007" + "00000408" + "0000000000000200");
	}

	@Test
	void blockStatusChunk() {
		long[] lengths = { 4096, 1L << 20, 99 };
		int[] flags = { 0, 3, 1 };
		assertThat(hex(NbdEncoder.blockStatusChunk(alloc, 9, 1, lengths, flags, 2)))
			.isEqualTo("668e33ef" + "0001" + "0005" + "0000000000000009" + "00000014" + "00000001" + "00001000"
					+ "00000000" + "00100000" + "00000003");
	}

	@Test
	void optionReplyReleasesItsData() {
		ByteBuf data = Unpooled.buffer().writeInt(1);
		hex(NbdEncoder.optionReply(alloc, 1, NbdProtocol.REP_INFO, data));
		assertThat(data.refCnt()).isZero();
	}

	private static String hex(ByteBuf buf) {
		try {
			return ByteBufUtil.hexDump(buf);
		}
		finally {
			buf.release();
		}
	}

}
