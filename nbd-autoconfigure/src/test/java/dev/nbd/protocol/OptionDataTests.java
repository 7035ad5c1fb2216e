package dev.nbd.protocol;

import java.nio.charset.StandardCharsets;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import org.junit.jupiter.api.Test;

import dev.nbd.protocol.OptionData.MalformedOptionException;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatExceptionOfType;

class OptionDataTests {

	@Test
	void parsesInfoRequest() throws Exception {
		ByteBuf data = Unpooled.buffer();
		string(data, "mem");
		data.writeShort(3);
		data.writeShort(NbdProtocol.INFO_NAME);
		data.writeShort(NbdProtocol.INFO_DESCRIPTION);
		data.writeShort(NbdProtocol.INFO_BLOCK_SIZE);
		OptionData.InfoRequest request = OptionData.parseInfo(data);
		assertThat(request.exportName()).isEqualTo("mem");
		assertThat(request.infoTypes()).containsExactly(1, 2, 3);
	}

	@Test
	void parsesInfoRequestWithEmptyNameAndNoRequests() throws Exception {
		ByteBuf data = Unpooled.buffer();
		string(data, "");
		data.writeShort(0);
		OptionData.InfoRequest request = OptionData.parseInfo(data);
		assertThat(request.exportName()).isEmpty();
		assertThat(request.infoTypes()).isEmpty();
	}

	@Test
	void rejectsMalformedInfoRequests() {
		// Name length past the end.
		ByteBuf pastEnd = Unpooled.buffer().writeInt(100).writeBytes("mem".getBytes());
		assertMalformed(pastEnd, "truncated");
		// Name length near 4 GiB: refused before anything is read or allocated.
		ByteBuf huge = Unpooled.buffer().writeInt(0xfffffff0).writeShort(0);
		assertMalformed(huge, "longer than 4096");
		// No room for the request count.
		ByteBuf noCount = Unpooled.buffer();
		string(noCount, "mem");
		noCount.writeByte(0);
		assertMalformed(noCount, "truncated");
		// Count larger than the data.
		ByteBuf count = Unpooled.buffer();
		string(count, "mem");
		count.writeShort(2).writeShort(1);
		assertMalformed(count, "does not match");
		// Trailing byte after the requests.
		ByteBuf trailing = Unpooled.buffer();
		string(trailing, "mem");
		trailing.writeShort(1).writeShort(1).writeByte(0);
		assertMalformed(trailing, "does not match");
		// Shorter than a name length.
		assertMalformed(Unpooled.buffer().writeShort(0), "truncated");
	}

	@Test
	void rejectsNamesThatAreNotUtf8() {
		ByteBuf data = Unpooled.buffer().writeInt(2).writeByte(0xc3).writeByte(0x28).writeShort(0);
		assertMalformed(data, "UTF-8");
		ByteBuf overlong = Unpooled.buffer().writeInt(2).writeByte(0xc0).writeByte(0x80).writeShort(0);
		assertMalformed(overlong, "UTF-8");
		assertThatExceptionOfType(MalformedOptionException.class)
			.isThrownBy(() -> OptionData.remainingString(Unpooled.wrappedBuffer(new byte[] { (byte) 0xff })));
	}

	@Test
	void namesUpTo4096BytesAreAccepted() throws Exception {
		String max = "x".repeat(NbdProtocol.MAX_STRING);
		ByteBuf data = Unpooled.buffer();
		string(data, max);
		data.writeShort(0);
		assertThat(OptionData.parseInfo(data).exportName()).isEqualTo(max);
		ByteBuf tooLong = Unpooled.buffer();
		string(tooLong, max + "x");
		tooLong.writeShort(0);
		assertMalformed(tooLong, "longer than 4096");
		assertThat(OptionData.remainingString(Unpooled.copiedBuffer(max, StandardCharsets.UTF_8))).isEqualTo(max);
		assertThatExceptionOfType(MalformedOptionException.class).isThrownBy(
				() -> OptionData.remainingString(Unpooled.copiedBuffer(max + "x", StandardCharsets.UTF_8)));
	}

	@Test
	void remainingStringDecodesUtf8() throws Exception {
		assertThat(OptionData.remainingString(Unpooled.copiedBuffer("dïsk", StandardCharsets.UTF_8)))
			.isEqualTo("dïsk");
		assertThat(OptionData.remainingString(Unpooled.buffer())).isEmpty();
	}

	@Test
	void parsesMetaContextRequest() throws Exception {
		ByteBuf data = Unpooled.buffer();
		string(data, "mem");
		data.writeInt(2);
		string(data, "base:allocation");
		string(data, "qemu:dirty-bitmap:x");
		OptionData.MetaContextRequest request = OptionData.parseMetaContext(data);
		assertThat(request.exportName()).isEqualTo("mem");
		assertThat(request.queries()).containsExactly("base:allocation", "qemu:dirty-bitmap:x");
		ByteBuf none = Unpooled.buffer();
		string(none, "");
		none.writeInt(0);
		assertThat(OptionData.parseMetaContext(none).queries()).isEmpty();
	}

	@Test
	void rejectsMalformedMetaContextRequests() {
		// Query count far beyond the data: refused without allocating a list for it.
		ByteBuf count = Unpooled.buffer();
		string(count, "mem");
		count.writeInt(0x7fffffff);
		assertMetaMalformed(count, "exceeds");
		// Query length past the end.
		ByteBuf query = Unpooled.buffer();
		string(query, "mem");
		query.writeInt(1).writeInt(50).writeBytes("base:".getBytes());
		assertMetaMalformed(query, "truncated");
		// Trailing bytes.
		ByteBuf trailing = Unpooled.buffer();
		string(trailing, "mem");
		trailing.writeInt(1);
		string(trailing, "base:allocation");
		trailing.writeByte(1);
		assertMetaMalformed(trailing, "trailing");
		// Query that is not UTF-8.
		ByteBuf bad = Unpooled.buffer();
		string(bad, "mem");
		bad.writeInt(1).writeInt(1).writeByte(0xfe);
		assertMetaMalformed(bad, "UTF-8");
		// Query longer than 4096 bytes.
		ByteBuf longQuery = Unpooled.buffer();
		string(longQuery, "mem");
		longQuery.writeInt(1);
		string(longQuery, "q".repeat(4097));
		assertMetaMalformed(longQuery, "longer than 4096");
		// Missing count.
		ByteBuf noCount = Unpooled.buffer();
		string(noCount, "mem");
		assertMetaMalformed(noCount, "truncated");
	}

	private static void string(ByteBuf buf, String s) {
		byte[] b = s.getBytes(StandardCharsets.UTF_8);
		buf.writeInt(b.length);
		buf.writeBytes(b);
	}

	private static void assertMalformed(ByteBuf data, String message) {
		assertThatExceptionOfType(MalformedOptionException.class).isThrownBy(() -> OptionData.parseInfo(data))
			.withMessageContaining(message);
	}

	private static void assertMetaMalformed(ByteBuf data, String message) {
		assertThatExceptionOfType(MalformedOptionException.class).isThrownBy(() -> OptionData.parseMetaContext(data))
			.withMessageContaining(message);
	}

}
