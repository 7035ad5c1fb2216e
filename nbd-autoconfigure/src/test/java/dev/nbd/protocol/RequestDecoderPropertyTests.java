package dev.nbd.protocol;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.util.ReferenceCountUtil;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;

import static org.assertj.core.api.Assertions.assertThat;

/** However the stream is cut into reads, the decoder frames the same requests. */
class RequestDecoderPropertyTests {

	private static final int MAX_PAYLOAD = 1024;

	@Property(tries = 50)
	void framingDoesNotDependOnHowBytesArrive(@ForAll long seed, @ForAll @IntRange(min = 1, max = 20) int count) {
		Random random = new Random(seed);
		ByteBuf stream = Unpooled.buffer();
		List<String> expected = new ArrayList<>();
		for (int i = 0; i < count; i++) {
			int type = random.nextInt(10);
			long cookie = random.nextLong();
			long offset = random.nextLong();
			// Some writes exceed the payload bound: their bytes must be skipped, not framed.
			long length = (type == NbdProtocol.CMD_WRITE) ? random.nextInt(MAX_PAYLOAD * 2)
					: random.nextInt() & 0xffffffffL;
			int flags = random.nextInt(1 << 16);
			RequestDecoderTests.header(stream, flags, type, cookie, offset, length);
			byte[] payload = new byte[0];
			if (type == NbdProtocol.CMD_WRITE) {
				payload = new byte[(int) length];
				random.nextBytes(payload);
				stream.writeBytes(payload);
			}
			boolean kept = type == NbdProtocol.CMD_WRITE && length <= MAX_PAYLOAD;
			expected.add(describe(flags, type, cookie, offset, length, kept ? ByteBufUtil.hexDump(payload) : "-"));
		}
		EmbeddedChannel ch = new EmbeddedChannel(new RequestDecoder(MAX_PAYLOAD));
		List<String> actual = new ArrayList<>();
		while (stream.isReadable()) {
			int n = Math.min(stream.readableBytes(), 1 + random.nextInt(random.nextBoolean() ? 8 : 3000));
			ch.writeInbound(stream.readRetainedSlice(n));
			Object m;
			while ((m = ch.readInbound()) != null) {
				ProtocolMessage.Request r = (ProtocolMessage.Request) m;
				actual.add(describe(r.flags(), r.type(), r.cookie(), r.offset(), r.length(),
						(r.payload() != null) ? ByteBufUtil.hexDump(r.payload()) : "-"));
				ReferenceCountUtil.release(r);
			}
		}
		stream.release();
		assertThat(actual).containsExactlyElementsOf(expected);
		assertThat(ch.finishAndReleaseAll()).isFalse();
	}

	private static String describe(int flags, int type, long cookie, long offset, long length, String payload) {
		return flags + "/" + type + "/" + cookie + "/" + offset + "/" + length + "/" + payload;
	}

}
