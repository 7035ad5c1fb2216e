package dev.nbd.protocol;

import java.util.ArrayList;
import java.util.List;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.util.ReferenceCountUtil;
import org.junit.jupiter.api.Test;

import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

class RequestDecoderTests {

	private static final int MAX_PAYLOAD = 4096;

	@Test
	void framesEveryCommandWithItsFields() {
		ByteBuf in = Unpooled.buffer();
		for (int type = 0; type <= 8; type++) {
			header(in, type == NbdProtocol.CMD_WRITE ? 0 : type, type, 100 + type, 512L * type,
					type == NbdProtocol.CMD_WRITE ? 3 : 4096);
			if (type == NbdProtocol.CMD_WRITE) {
				in.writeBytes(new byte[] { 7, 8, 9 });
			}
		}
		List<Object> out = decodeAll(in);
		assertThat(out).hasSize(9);
		for (int type = 0; type <= 8; type++) {
			ProtocolMessage.Request r = (ProtocolMessage.Request) out.get(type);
			assertThat(r.type()).isEqualTo(type);
			assertThat(r.cookie()).isEqualTo(100 + type);
			assertThat(r.offset()).isEqualTo(512L * type);
			if (type == NbdProtocol.CMD_WRITE) {
				assertThat(r.length()).isEqualTo(3);
				assertThat(ByteBufUtil.hexDump(r.payload())).isEqualTo("070809");
				assertThat(r.payloadDiscarded()).isFalse();
			}
			else {
				assertThat(r.flags()).isEqualTo(type);
				assertThat(r.length()).isEqualTo(4096);
				assertThat(r.payload()).isNull();
			}
			r.release();
		}
	}

	@Test
	void unsignedFieldsAreReadUnsigned() {
		ByteBuf in = Unpooled.buffer();
		header(in, 0xffff, 0xfffe, -1L, Long.MIN_VALUE, 0xffffffffL);
		List<Object> out = decodeAll(in);
		ProtocolMessage.Request r = (ProtocolMessage.Request) out.get(0);
		assertThat(r.flags()).isEqualTo(0xffff);
		assertThat(r.type()).isEqualTo(0xfffe);
		assertThat(r.cookie()).isEqualTo(-1L);
		assertThat(r.offset()).isEqualTo(Long.MIN_VALUE);
		assertThat(r.length()).isEqualTo(0xffffffffL);
		r.release();
	}

	@Test
	void byteByByteFeedingOfHeadersAndPayloads() {
		ByteBuf in = Unpooled.buffer();
		header(in, NbdProtocol.CMD_FLAG_FUA, NbdProtocol.CMD_WRITE, 1, 0, 5);
		in.writeBytes(new byte[] { 1, 2, 3, 4, 5 });
		header(in, 0, NbdProtocol.CMD_READ, 2, 4096, 512);
		header(in, 0, NbdProtocol.CMD_DISC, 3, 0, 0);
		byte[] bytes = ByteBufUtil.getBytes(in);
		in.release();
		EmbeddedChannel ch = new EmbeddedChannel(new RequestDecoder(MAX_PAYLOAD));
		List<Object> out = new ArrayList<>();
		int[] emittedAt = new int[3];
		for (int i = 0; i < bytes.length; i++) {
			ch.writeInbound(Unpooled.wrappedBuffer(new byte[] { bytes[i] }));
			int before = out.size();
			Decoding.drain(ch, out);
			if (out.size() > before) {
				emittedAt[out.size() - 1] = i + 1;
			}
		}
		// Each request appears exactly when its last byte arrives.
		assertThat(emittedAt).containsExactly(33, 61, 89);
		ProtocolMessage.Request w = (ProtocolMessage.Request) out.get(0);
		assertThat(w.hasFlag(NbdProtocol.CMD_FLAG_FUA)).isTrue();
		assertThat(ByteBufUtil.hexDump(w.payload())).isEqualTo("0102030405");
		assertThat(((ProtocolMessage.Request) out.get(1)).cookie()).isEqualTo(2);
		assertThat(((ProtocolMessage.Request) out.get(2)).type()).isEqualTo(NbdProtocol.CMD_DISC);
		out.forEach(ReferenceCountUtil::release);
		assertThat(ch.finishAndReleaseAll()).isFalse();
	}

	@Test
	void oversizedWritePayloadIsDiscardedAndTheStreamStaysInSync() {
		EmbeddedChannel ch = new EmbeddedChannel(new RequestDecoder(MAX_PAYLOAD));
		ByteBuf in = Unpooled.buffer();
		header(in, 0, NbdProtocol.CMD_WRITE, 9, 0, MAX_PAYLOAD + 1);
		ch.writeInbound(in);
		List<Object> out = new ArrayList<>();
		Decoding.drain(ch, out);
		assertThat(out).isEmpty();
		// The payload arrives in pieces; none is kept.
		for (int i = 0; i < 4; i++) {
			ch.writeInbound(Unpooled.wrappedBuffer(new byte[1024]));
		}
		Decoding.drain(ch, out);
		assertThat(out).isEmpty();
		ByteBuf rest = Unpooled.buffer();
		rest.writeByte(0xee);
		header(rest, 0, NbdProtocol.CMD_FLUSH, 10, 0, 0);
		ch.writeInbound(rest);
		Decoding.drain(ch, out);
		assertThat(out).hasSize(2);
		ProtocolMessage.Request w = (ProtocolMessage.Request) out.get(0);
		assertThat(w.payloadDiscarded()).isTrue();
		assertThat(w.cookie()).isEqualTo(9);
		assertThat(w.length()).isEqualTo(MAX_PAYLOAD + 1);
		ProtocolMessage.Request f = (ProtocolMessage.Request) out.get(1);
		assertThat(f.type()).isEqualTo(NbdProtocol.CMD_FLUSH);
		assertThat(f.cookie()).isEqualTo(10);
		out.forEach(ReferenceCountUtil::release);
		assertThat(ch.finishAndReleaseAll()).isFalse();
	}

	@Test
	void hugeWriteLengthIsSkippedNotAllocated() {
		EmbeddedChannel ch = new EmbeddedChannel(new RequestDecoder(MAX_PAYLOAD));
		ByteBuf in = Unpooled.buffer();
		header(in, 0, NbdProtocol.CMD_WRITE, 1, 0, 0xffffffff);
		in.writeBytes(new byte[1 << 16]);
		ch.writeInbound(in);
		assertThat((Object) ch.readInbound()).isNull();
		assertThat(ch.finishAndReleaseAll()).isFalse();
	}

	@Test
	void readLengthIsNotPayload() {
		// A READ of 4 GiB - 1 has no payload to wait for: it is framed at once for the server to refuse.
		ByteBuf in = Unpooled.buffer();
		header(in, 0, NbdProtocol.CMD_READ, 1, 0, 0xffffffff);
		header(in, 0, NbdProtocol.CMD_FLUSH, 2, 0, 0);
		List<Object> out = decodeAll(in);
		assertThat(out).hasSize(2);
		out.forEach(ReferenceCountUtil::release);
	}

	@Test
	void badMagicIsAViolationAndEndsDecoding() {
		ByteBuf in = Unpooled.buffer();
		header(in, 0, NbdProtocol.CMD_FLUSH, 1, 0, 0);
		in.writeInt(0x25609514);
		in.writeBytes(new byte[24]);
		header(in, 0, NbdProtocol.CMD_FLUSH, 2, 0, 0);
		List<Object> out = decodeAll(in);
		assertThat(out).hasSize(2);
		assertThat(((ProtocolMessage.Request) out.get(0)).cookie()).isEqualTo(1);
		assertThat(out.get(1)).isInstanceOf(ProtocolMessage.Violation.class);
		assertThat(((ProtocolMessage.Violation) out.get(1)).reason()).contains("25609514");
		ReferenceCountUtil.release(out.get(0));
	}

	static void header(ByteBuf buf, int flags, int type, long cookie, long offset, long length) {
		buf.writeBytes(RawNbdClient.request(flags, type, cookie, offset, length));
	}

	private static List<Object> decodeAll(ByteBuf in) {
		return Decoding.decodeAll(new RequestDecoder(MAX_PAYLOAD), in);
	}

}
