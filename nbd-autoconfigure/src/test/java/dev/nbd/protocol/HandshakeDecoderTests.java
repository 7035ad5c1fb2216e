package dev.nbd.protocol;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import org.junit.jupiter.api.Test;

import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

class HandshakeDecoderTests {

	private static final int MAX = 64 * 1024;

	@Test
	void framesClientFlagsAndEveryOptionType() {
		ByteBuf in = Unpooled.buffer();
		in.writeInt(NbdProtocol.FLAG_C_FIXED_NEWSTYLE | NbdProtocol.FLAG_C_NO_ZEROES);
		for (int opt = 1; opt <= 12; opt++) {
			option(in, opt, ("data" + opt).getBytes(StandardCharsets.US_ASCII));
		}
		option(in, 0x7fff, new byte[0]);
		List<Object> out = decodeAll(in);
		assertThat(out).hasSize(14);
		assertThat(out.get(0)).isEqualTo(new ProtocolMessage.ClientFlags(3));
		for (int opt = 1; opt <= 12; opt++) {
			ProtocolMessage.Option o = (ProtocolMessage.Option) out.get(opt);
			assertThat(o.option()).isEqualTo(opt);
			assertThat(o.oversized()).isFalse();
			assertThat(o.data().toString(StandardCharsets.US_ASCII)).isEqualTo("data" + opt);
			o.release();
		}
		ProtocolMessage.Option empty = (ProtocolMessage.Option) out.get(13);
		assertThat(empty.option()).isEqualTo(0x7fff);
		assertThat(empty.length()).isZero();
		assertThat(empty.data().readableBytes()).isZero();
		empty.release();
	}

	@Test
	void byteByByteFeedingGivesTheSameMessages() {
		ByteBuf in = Unpooled.buffer();
		in.writeInt(1);
		option(in, NbdProtocol.OPT_STRUCTURED_REPLY, new byte[0]);
		option(in, NbdProtocol.OPT_GO, new byte[] { 0, 0, 0, 3, 'm', 'e', 'm', 0, 1, 0, 3 });
		option(in, NbdProtocol.OPT_ABORT, new byte[0]);
		byte[] bytes = ByteBufUtil.getBytes(in);
		in.release();
		EmbeddedChannel ch = new EmbeddedChannel(new HandshakeDecoder(MAX));
		List<Object> out = new ArrayList<>();
		for (byte b : bytes) {
			// A truncated frame yields nothing until its last byte arrives.
			ch.writeInbound(Unpooled.wrappedBuffer(new byte[] { b }));
			Decoding.drain(ch, out);
		}
		assertThat(out).hasSize(4);
		assertThat(out.get(0)).isEqualTo(new ProtocolMessage.ClientFlags(1));
		assertThat(((ProtocolMessage.Option) out.get(1)).option()).isEqualTo(NbdProtocol.OPT_STRUCTURED_REPLY);
		ProtocolMessage.Option go = (ProtocolMessage.Option) out.get(2);
		assertThat(go.option()).isEqualTo(NbdProtocol.OPT_GO);
		assertThat(ByteBufUtil.hexDump(go.data())).isEqualTo("000000036d656d00010003");
		assertThat(((ProtocolMessage.Option) out.get(3)).option()).isEqualTo(NbdProtocol.OPT_ABORT);
		out.forEach(m -> {
			if (m instanceof ProtocolMessage.Option o) {
				o.release();
			}
		});
		assertThat(ch.finishAndReleaseAll()).isFalse();
	}

	@Test
	void truncatedOptionYieldsNothing() {
		ByteBuf in = Unpooled.buffer();
		in.writeInt(1);
		in.writeBytes(RawNbdClient.optionHeader(NbdProtocol.OPT_LIST, 10));
		in.writeBytes(new byte[9]);
		List<Object> out = decodeAll(in);
		assertThat(out).containsExactly(new ProtocolMessage.ClientFlags(1));
	}

	@Test
	void oversizedOptionIsSkippedWithoutBuffering() {
		HandshakeDecoder decoder = new HandshakeDecoder(MAX);
		EmbeddedChannel ch = new EmbeddedChannel(decoder);
		ByteBuf head = Unpooled.buffer();
		head.writeInt(1);
		head.writeBytes(RawNbdClient.optionHeader(NbdProtocol.OPT_LIST, 0x80000000L));
		ch.writeInbound(head);
		List<Object> out = new ArrayList<>();
		Decoding.drain(ch, out);
		assertThat(out).containsExactly(new ProtocolMessage.ClientFlags(1));
		// 2 GiB of option data in 1 MiB pieces: each is dropped as it arrives.
		byte[] chunk = new byte[1 << 20];
		long total = 0x80000000L;
		int maxBuffered = 0;
		for (long sent = 0; sent < total; sent += chunk.length) {
			ch.writeInbound(Unpooled.wrappedBuffer(chunk));
			maxBuffered = Math.max(maxBuffered, decoder.bufferedBytes());
			Decoding.drain(ch, out);
			if (sent + chunk.length < total) {
				assertThat(out).hasSize(1);
			}
		}
		assertThat(maxBuffered).isZero();
		assertThat(out).hasSize(2);
		ProtocolMessage.Option skipped = (ProtocolMessage.Option) out.get(1);
		assertThat(skipped.oversized()).isTrue();
		assertThat(skipped.length()).isEqualTo(total);
		assertThat(skipped.option()).isEqualTo(NbdProtocol.OPT_LIST);
		// The next option is framed normally: the stream stayed in sync.
		ByteBuf next = Unpooled.buffer();
		option(next, NbdProtocol.OPT_ABORT, new byte[0]);
		ch.writeInbound(next);
		Decoding.drain(ch, out);
		assertThat(out).hasSize(3);
		assertThat(((ProtocolMessage.Option) out.get(2)).option()).isEqualTo(NbdProtocol.OPT_ABORT);
		((ProtocolMessage.Option) out.get(2)).release();
		assertThat(ch.finishAndReleaseAll()).isFalse();
	}

	@Test
	void optionJustAboveTheLimitIsSkippedAndAtTheLimitIsKept() {
		ByteBuf in = Unpooled.buffer();
		in.writeInt(1);
		option(in, NbdProtocol.OPT_INFO, new byte[MAX + 1]);
		option(in, NbdProtocol.OPT_INFO, new byte[MAX]);
		List<Object> out = decodeAll(in);
		assertThat(out).hasSize(3);
		assertThat(((ProtocolMessage.Option) out.get(1)).oversized()).isTrue();
		ProtocolMessage.Option kept = (ProtocolMessage.Option) out.get(2);
		assertThat(kept.data().readableBytes()).isEqualTo(MAX);
		kept.release();
	}

	@Test
	void badOptionMagicIsAViolationAndTheRestIsIgnored() {
		ByteBuf in = Unpooled.buffer();
		in.writeInt(1);
		in.writeLong(0x1122334455667788L);
		in.writeInt(NbdProtocol.OPT_LIST);
		in.writeInt(0);
		option(in, NbdProtocol.OPT_LIST, new byte[0]);
		List<Object> out = decodeAll(in);
		assertThat(out).hasSize(2);
		assertThat(out.get(1)).isInstanceOf(ProtocolMessage.Violation.class);
		assertThat(((ProtocolMessage.Violation) out.get(1)).reason()).contains("1122334455667788");
	}

	@Test
	void garbageAfterAViolationProducesNothing() {
		EmbeddedChannel ch = new EmbeddedChannel(new HandshakeDecoder(MAX));
		ch.writeInbound(Unpooled.wrappedBuffer("GET / HTTP/1.1\r\nHost: x\r\n\r\n".getBytes(StandardCharsets.US_ASCII)));
		List<Object> out = new ArrayList<>();
		Decoding.drain(ch, out);
		assertThat(out).hasSize(2).last().isInstanceOf(ProtocolMessage.Violation.class);
		ch.writeInbound(Unpooled.wrappedBuffer(new byte[4096]));
		Decoding.drain(ch, out);
		assertThat(out).hasSize(2);
		assertThat(ch.finishAndReleaseAll()).isFalse();
	}

	static void option(ByteBuf buf, int option, byte[] data) {
		buf.writeBytes(RawNbdClient.option(option, data));
	}

	private static List<Object> decodeAll(ByteBuf in) {
		return Decoding.decodeAll(new HandshakeDecoder(MAX), in);
	}

}
