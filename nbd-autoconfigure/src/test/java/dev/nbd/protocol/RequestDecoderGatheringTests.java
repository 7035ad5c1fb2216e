package dev.nbd.protocol;

import java.util.Random;

import io.netty.buffer.AbstractByteBufAllocator;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import io.netty.buffer.UnpooledByteBufAllocator;
import io.netty.channel.embedded.EmbeddedChannel;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/** Large WRITE payloads gathered across socket reads, and released when the connection ends. */
class RequestDecoderGatheringTests {

	private static ByteBuf header(int type, long cookie, long offset, int length) {
		return Unpooled.wrappedBuffer(RawNbdClient.request(0, type, cookie, offset, length));
	}

	@ParameterizedTest(name = "payload in pieces: {0}")
	@ValueSource(booleans = { false, true })
	void largeWriteArrivingInPiecesIsGatheredIntact(boolean payloadInPieces) {
		EmbeddedChannel channel = new EmbeddedChannel(new RequestDecoder(32 << 20, payloadInPieces));
		byte[] data = new byte[(1 << 20) + 5];
		new Random(7).nextBytes(data);
		ByteBuf stream = Unpooled.buffer();
		stream.writeBytes(header(NbdProtocol.CMD_WRITE, 1, 4096, data.length));
		stream.writeBytes(data);
		stream.writeBytes(header(NbdProtocol.CMD_READ, 2, 0, 512));
		// Odd-sized pieces: headers and payload boundaries fall inside pieces.
		while (stream.isReadable()) {
			channel.writeInbound(stream.readRetainedSlice(Math.min(7001, stream.readableBytes())));
		}
		stream.release();
		ProtocolMessage.Request write = channel.readInbound();
		assertThat(write.type()).isEqualTo(NbdProtocol.CMD_WRITE);
		assertThat(write.offset()).isEqualTo(4096);
		assertThat(ByteBufUtil.getBytes(write.payload())).isEqualTo(data);
		write.release();
		ProtocolMessage.Request read = channel.readInbound();
		assertThat(read.type()).isEqualTo(NbdProtocol.CMD_READ);
		assertThat(read.cookie()).isEqualTo(2);
		assertThat((Object) channel.readInbound()).isNull();
		assertThat(channel.finishAndReleaseAll()).isFalse();
	}

	@ParameterizedTest(name = "payload in pieces: {0}")
	@ValueSource(booleans = { false, true })
	void memoryForAPayloadIsTakenAsItArrivesNotForItsDeclaredLength(boolean payloadInPieces) {
		int declared = 32 << 20;
		long[] largest = new long[1];
		AbstractByteBufAllocator recording = new AbstractByteBufAllocator(true) {
			@Override
			protected ByteBuf newDirectBuffer(int initialCapacity, int maxCapacity) {
				largest[0] = Math.max(largest[0], initialCapacity);
				return UnpooledByteBufAllocator.DEFAULT.directBuffer(initialCapacity, maxCapacity);
			}

			@Override
			protected ByteBuf newHeapBuffer(int initialCapacity, int maxCapacity) {
				return UnpooledByteBufAllocator.DEFAULT.heapBuffer(initialCapacity, maxCapacity);
			}

			@Override
			public boolean isDirectBufferPooled() {
				return false;
			}
		};
		RequestDecoder decoder = new RequestDecoder(declared, payloadInPieces);
		EmbeddedChannel channel = new EmbeddedChannel();
		channel.config().setAllocator(recording);
		channel.pipeline().addLast(decoder);
		channel.writeInbound(header(NbdProtocol.CMD_WRITE, 1, 0, declared));
		byte[] sent = new byte[100 * 1024];
		new Random(3).nextBytes(sent);
		for (int i = 0; i < sent.length; i += 1000) {
			channel.writeInbound(Unpooled.wrappedBuffer(sent, i, Math.min(1000, sent.length - i)));
		}
		assertThat(largest[0]).isLessThan(1 << 20);
		assertThat(decoder.gathering()).isBetween((long) sent.length, 4L * sent.length);
		// What the memory budget reads to judge a writer's progress: exactly what is still to come.
		assertThat(decoder.payloadRemaining()).isEqualTo(declared - sent.length);
		// The rest arrives: all of it is there, and nothing is held for a partial payload any more.
		byte[] rest = new byte[declared - sent.length];
		channel.writeInbound(Unpooled.wrappedBuffer(rest));
		ProtocolMessage.Request write = channel.readInbound();
		assertThat(write.payload().readableBytes()).isEqualTo(declared);
		assertThat(ByteBufUtil.getBytes(write.payload(), 0, sent.length)).isEqualTo(sent);
		write.release();
		assertThat(decoder.gathering()).isZero();
		assertThat(decoder.payloadRemaining()).isZero();
		assertThat(channel.finishAndReleaseAll()).isFalse();
	}

	@Test
	void writesArrivingWholeAreDecodedBackToBack() {
		EmbeddedChannel channel = new EmbeddedChannel(new RequestDecoder(32 << 20));
		ByteBuf stream = Unpooled.buffer();
		for (int i = 0; i < 3; i++) {
			stream.writeBytes(header(NbdProtocol.CMD_WRITE, i, i * 4096L, 4096));
			stream.writeBytes(new byte[4096], 0, 4096);
			stream.setByte(stream.writerIndex() - 1, i + 1);
		}
		channel.writeInbound(stream);
		for (int i = 0; i < 3; i++) {
			ProtocolMessage.Request write = channel.readInbound();
			assertThat(write.cookie()).isEqualTo(i);
			assertThat(write.payload().readableBytes()).isEqualTo(4096);
			assertThat(write.payload().getByte(4095)).isEqualTo((byte) (i + 1));
			write.release();
		}
		assertThat(channel.finishAndReleaseAll()).isFalse();
	}

	@Test
	void payloadInPiecesKeepsLargeReceivedBuffersAndCopiesSmallOnesTogether() {
		EmbeddedChannel channel = new EmbeddedChannel(new RequestDecoder(32 << 20, true));
		byte[] data = new byte[(1 << 20) + 5];
		new Random(11).nextBytes(data);
		channel.writeInbound(header(NbdProtocol.CMD_WRITE, 1, 0, data.length));
		int pos = 0;
		int large = 0;
		int step = 0;
		while (pos < data.length) {
			// Large pieces alternate with runs of tiny ones.
			int n = Math.min(data.length - pos, (step++ % 10 == 0) ? 40_000 : 700);
			if (n >= RequestDecoder.MIN_PIECE) {
				large++;
			}
			channel.writeInbound(Unpooled.wrappedBuffer(data, pos, n));
			pos += n;
		}
		ProtocolMessage.Request write = channel.readInbound();
		assertThat(ByteBufUtil.getBytes(write.payload())).isEqualTo(data);
		// Each large piece stays a piece of its own; a run of tiny ones becomes one or a few.
		assertThat(write.payload().nioBufferCount()).isGreaterThanOrEqualTo(large)
			.isLessThanOrEqualTo(large * 2 + data.length / (4 * RequestDecoder.MIN_PIECE) + 2);
		write.release();
		assertThat(channel.finishAndReleaseAll()).isFalse();
	}

	@Test
	void payloadTrickledByteByByteStaysInAFewPieces() {
		EmbeddedChannel channel = new EmbeddedChannel(new RequestDecoder(32 << 20, true));
		int length = 200_000;
		channel.writeInbound(header(NbdProtocol.CMD_WRITE, 1, 0, length));
		for (int i = 0; i < length; i++) {
			channel.writeInbound(Unpooled.wrappedBuffer(new byte[] { (byte) i }));
		}
		ProtocolMessage.Request write = channel.readInbound();
		assertThat(write.payload().readableBytes()).isEqualTo(length);
		assertThat(write.payload().getByte(length - 1)).isEqualTo((byte) (length - 1));
		assertThat(write.payload().nioBufferCount()).isLessThanOrEqualTo(length / (4 * RequestDecoder.MIN_PIECE) + 1);
		write.release();
		assertThat(channel.finishAndReleaseAll()).isFalse();
	}

	@Test
	void piecesThatFillLittleOfTheirBufferAreCopiedNotKept() {
		EmbeddedChannel channel = new EmbeddedChannel(new RequestDecoder(32 << 20, true));
		channel.writeInbound(header(NbdProtocol.CMD_WRITE, 1, 0, 5 * 20_000));
		java.util.List<ByteBuf> received = new java.util.ArrayList<>();
		for (int i = 0; i < 5; i++) {
			// 20,000 bytes in a 256 KiB buffer: keeping it would pin 13 times the payload.
			ByteBuf buf = Unpooled.directBuffer(256 * 1024).writeBytes(new byte[20_000], 0, 20_000);
			buf.setByte(0, i + 1);
			received.add(buf.retain());
			channel.writeInbound(buf);
		}
		ProtocolMessage.Request write = channel.readInbound();
		assertThat(write.payload().readableBytes()).isEqualTo(5 * 20_000);
		assertThat(write.payload().getByte(2 * 20_000)).isEqualTo((byte) 3);
		for (ByteBuf buf : received) {
			assertThat(buf.refCnt()).as("received buffer not kept by the payload").isEqualTo(1);
			buf.release();
		}
		write.release();
		assertThat(channel.finishAndReleaseAll()).isFalse();
	}

	@ParameterizedTest(name = "payload in pieces: {0}")
	@ValueSource(booleans = { false, true })
	void partlyGatheredPiecesAreReleasedWhenTheConnectionCloses(boolean payloadInPieces) {
		EmbeddedChannel channel = new EmbeddedChannel(new RequestDecoder(32 << 20, payloadInPieces));
		channel.writeInbound(header(NbdProtocol.CMD_WRITE, 1, 0, 1 << 20));
		ByteBuf large = Unpooled.directBuffer(40_000).writeZero(40_000);
		ByteBuf small = Unpooled.directBuffer(100).writeZero(100);
		channel.writeInbound(large);
		channel.writeInbound(small);
		channel.close();
		assertThat((Object) channel.readInbound()).isNull();
		assertThat(large.refCnt()).isZero();
		assertThat(small.refCnt()).isZero();
	}

	@Test
	void partlyGatheredPayloadIsReleasedWhenTheConnectionCloses() {
		EmbeddedChannel channel = new EmbeddedChannel(new RequestDecoder(32 << 20));
		channel.writeInbound(header(NbdProtocol.CMD_WRITE, 1, 0, 1 << 20));
		ByteBuf part = Unpooled.wrappedBuffer(new byte[1000]);
		channel.writeInbound(part);
		channel.close();
		assertThat((Object) channel.readInbound()).isNull();
		assertThat(part.refCnt()).isZero();
	}

}
