package dev.nbd.server;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

import io.netty.buffer.AbstractByteBufAllocator;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.Channel;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.util.ReferenceCountUtil;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.Size;

import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.HandshakeDecoder;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.protocol.RequestDecoder;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Random and mutated client byte streams through the server's whole pipeline (decoders,
 * handshake, transmission) in an {@link EmbeddedChannel}: nothing escapes the pipeline, no
 * decoder buffers more than its bound, no allocation exceeds the payload bound.
 */
class ProtocolFuzzTests {

	private static final int MAX_PAYLOAD = 64 * 1024;

	private static final int EXPORT_SIZE = 1 << 20;

	private static final int MAX_CHUNK = 4096;

	/** Decoders hold at most one frame (option data or WRITE payload) plus what arrived with it. */
	private static final int HANDSHAKE_BUFFER_BOUND = NbdServerConfig.MAX_OPTION_LENGTH + 16 + MAX_CHUNK;

	private static final int REQUEST_BUFFER_BOUND = MAX_PAYLOAD + NbdProtocol.REQUEST_HEADER_LENGTH + MAX_CHUNK;

	private static final Long[] LENGTH_EXTREMES = java.util.stream.LongStream
		.of(0, 1, 511, 512, 4096, MAX_PAYLOAD - 1, MAX_PAYLOAD, MAX_PAYLOAD + 1, NbdServerConfig.MAX_OPTION_LENGTH,
				NbdServerConfig.MAX_OPTION_LENGTH + 1, 0x7fffffffL, 0x80000000L, 0xffffffffL)
		.boxed()
		.toArray(Long[]::new);

	private static final Long[] OFFSET_EXTREMES = java.util.stream.LongStream
		.of(0, 512, EXPORT_SIZE - 512, EXPORT_SIZE - 1, EXPORT_SIZE, EXPORT_SIZE + 1, Long.MAX_VALUE, Long.MIN_VALUE, -1)
		.boxed()
		.toArray(Long[]::new);

	// The handshake timeout is real time even on an embedded channel: far above what feeding the
	// biggest stream takes on a loaded machine (the fuzz is about bytes, not timeouts).
	private final NbdServer server = new NbdServer(
			NbdServerConfig.builder().maxPayload(MAX_PAYLOAD).handshakeTimeout(Duration.ofMinutes(10)).build(),
			List.of(new MemoryBackend("mem", EXPORT_SIZE), new MemoryBackend("ro", EXPORT_SIZE, "read-only", true)),
			Map.of(), Map.of(), null);

	@Property(tries = 300)
	void randomBytesIntoTheHandshake(@ForAll @Size(max = 8192) byte[] bytes, @ForAll("chunkSizes") List<Integer> chunks) {
		feed(bytes, chunks);
	}

	@Property(tries = 300)
	void mutatedHandshakes(@ForAll("handshakes") byte[] stream, @ForAll("chunkSizes") List<Integer> chunks) {
		feed(stream, chunks);
	}

	@Property(tries = 400)
	void mutatedTransmission(@ForAll("transmissions") byte[] stream, @ForAll("chunkSizes") List<Integer> chunks) {
		feed(stream, chunks);
	}

	@Property(tries = 15)
	void oversizedFramesAreDiscardedNotBuffered(@ForAll("oversizedWrites") byte[] write,
			@ForAll("oversizedOptions") byte[] option, @ForAll("chunkSizes") List<Integer> chunks) {
		byte[] flags = ByteBuffer.allocate(4).putInt(NbdProtocol.FLAG_C_FIXED_NEWSTYLE).array();
		byte[] go = rawOption(NbdProtocol.OPT_GO, infoData("mem"));
		byte[] read = RawNbdClient.request(0, NbdProtocol.CMD_READ, 9, 0, 512);
		// Both are answered with an error and the stream stays in sync: the connection is open.
		assertThat(feed(concat(List.of(flags, option, go, write, read)), chunks)).isTrue();
	}

	@Provide
	Arbitrary<byte[]> oversizedWrites() {
		return oversized(NbdProtocol.REQUEST_HEADER_LENGTH, MAX_PAYLOAD,
				(length) -> RawNbdClient.request(0, NbdProtocol.CMD_WRITE, 9, 0, length), 100);
	}

	@Provide
	Arbitrary<byte[]> oversizedOptions() {
		return oversized(16, NbdServerConfig.MAX_OPTION_LENGTH, (length) -> RawNbdClient.optionHeader(NbdProtocol.OPT_LIST, length),
				100);
	}

	/** Feeds the stream in chunks and checks the properties after each; returns whether it was still open. */
	private boolean feed(byte[] stream, List<Integer> chunks) {
		MaxRequestAllocator alloc = new MaxRequestAllocator();
		EmbeddedChannel ch = new EmbeddedChannel(false, true, new ChannelInitializer<Channel>() {
			@Override
			protected void initChannel(Channel c) {
				ProtocolFuzzTests.this.server.initPipeline(c);
			}
		});
		ch.config().setAllocator(alloc);
		try {
			ch.register();
			drainOutbound(ch);
			int pos = 0;
			int i = 0;
			while (pos < stream.length && ch.isOpen()) {
				int n = Math.min(stream.length - pos, chunks.isEmpty() ? MAX_CHUNK : chunks.get(i++ % chunks.size()));
				ch.writeInbound(Unpooled.wrappedBuffer(stream, pos, n));
				pos += n;
				ch.runPendingTasks();
				drainOutbound(ch);
				ch.checkException();
				assertBuffersBounded(ch);
			}
			assertThat(alloc.max).as("largest buffer asked for").isLessThanOrEqualTo(MAX_PAYLOAD + 64L * 1024);
			boolean open = ch.isOpen();
			// The connection ends cleanly, whatever state it was left in.
			ch.close().syncUninterruptibly();
			ch.runPendingTasks();
			drainOutbound(ch);
			ch.checkException();
			return open;
		}
		catch (Exception ex) {
			throw new AssertionError(ex);
		}
		finally {
			ch.finishAndReleaseAll();
		}
	}

	private static void assertBuffersBounded(EmbeddedChannel ch) {
		if (ch.pipeline().get(PipelineNames.HANDSHAKE_DECODER) instanceof HandshakeDecoder d) {
			assertThat(d.bufferedBytes()).isLessThanOrEqualTo(HANDSHAKE_BUFFER_BOUND);
		}
		if (ch.pipeline().get(PipelineNames.REQUEST_DECODER) instanceof RequestDecoder d) {
			assertThat(d.bufferedBytes()).isLessThanOrEqualTo(REQUEST_BUFFER_BOUND);
		}
	}

	private static void drainOutbound(EmbeddedChannel ch) {
		for (Object o = ch.readOutbound(); o != null; o = ch.readOutbound()) {
			ReferenceCountUtil.release(o);
		}
	}

	@Provide
	Arbitrary<List<Integer>> chunkSizes() {
		return Arbitraries.integers()
			.between(1, MAX_CHUNK)
			.edgeCases((c) -> c.includeOnly(1, MAX_CHUNK))
			.list()
			.ofMinSize(1)
			.ofMaxSize(8);
	}

	@Provide
	Arbitrary<byte[]> handshakes() {
		return handshakeStreams();
	}

	@Provide
	Arbitrary<byte[]> transmissions() {
		return transmissionStreams();
	}

	/** Client flags and options, then mutated. */
	static Arbitrary<byte[]> handshakeStreams() {
		Arbitrary<byte[]> options = Arbitraries.frequencyOf(net.jqwik.api.Tuple.of(9, option()),
				net.jqwik.api.Tuple.of(1, oversized(16, NbdServerConfig.MAX_OPTION_LENGTH, (length) -> RawNbdClient
					.optionHeader(NbdProtocol.OPT_LIST, length), 0)))
			.list()
			.ofMaxSize(6)
			.map(ProtocolFuzzTests::concat);
		Arbitrary<Integer> flags = Arbitraries.oneOf(Arbitraries.of(1, 3, 0, 2, 7), Arbitraries.integers());
		return Combinators.combine(flags, options)
			.as((f, o) -> concat(List.of(ByteBuffer.allocate(4).putInt(f).array(), o)))
			.flatMap(ProtocolFuzzTests::mutated);
	}

	/** A valid negotiation, then requests, mutated. */
	static Arbitrary<byte[]> transmissionStreams() {
		Arbitrary<byte[]> prefix = Arbitraries.of(goPrefix("mem", false), goPrefix("mem", true), goPrefix("ro", true),
				exportNamePrefix("mem"), exportNamePrefix("ro"));
		Arbitrary<byte[]> requests = Arbitraries.frequencyOf(net.jqwik.api.Tuple.of(9, request()),
				net.jqwik.api.Tuple.of(1, oversized(NbdProtocol.REQUEST_HEADER_LENGTH, MAX_PAYLOAD, (length) -> RawNbdClient
					.request(0, NbdProtocol.CMD_WRITE, 9, 0, length), 0)))
			.list()
			.ofMaxSize(12)
			.map(ProtocolFuzzTests::concat);
		return Combinators.combine(prefix, requests.flatMap(ProtocolFuzzTests::mutated))
			.as((p, r) -> concat(List.of(p, r)));
	}

	private static Arbitrary<byte[]> option() {
		Arbitrary<Integer> type = Arbitraries.oneOf(Arbitraries.integers().between(0, 12), Arbitraries.integers());
		Arbitrary<byte[]> data = Arbitraries.oneOf(Arbitraries.bytes().array(byte[].class).ofMaxSize(64),
				Arbitraries.strings().ofMaxLength(20).map((n) -> infoData(n)),
				Arbitraries.of(infoData("mem"), infoData(""), infoData("ro"), metaData("mem", "base:allocation"),
						metaData("mem", "base:"), new byte[0]),
				// Length fields inside the data at their extremes.
				Combinators.combine(Arbitraries.of(LENGTH_EXTREMES), Arbitraries.of(LENGTH_EXTREMES))
					.as(ProtocolFuzzTests::lyingData));
		Arbitrary<Long> declared = Arbitraries.oneOf(Arbitraries.just(-1L), Arbitraries.of(LENGTH_EXTREMES));
		return Combinators.combine(type, data, declared).as((t, d, len) -> {
			long length = (len < 0) ? d.length : len;
			return concat(List.of(RawNbdClient.optionHeader(t, length), d));
		});
	}

	private static Arbitrary<byte[]> request() {
		Arbitrary<Integer> type = Arbitraries.oneOf(Arbitraries.integers().between(0, 9),
				Arbitraries.integers().between(0, 0xffff));
		Arbitrary<Integer> flags = Arbitraries.oneOf(Arbitraries.of(0, 1, 2, 4, 8, 16, 32, 0xffff),
				Arbitraries.integers().between(0, 0xffff));
		Arbitrary<Long> offset = Arbitraries.oneOf(Arbitraries.of(OFFSET_EXTREMES),
				Arbitraries.longs().between(0, EXPORT_SIZE));
		Arbitrary<Long> length = Arbitraries.oneOf(Arbitraries.of(LENGTH_EXTREMES),
				Arbitraries.longs().between(0, 8192));
		Arbitrary<Integer> payload = Arbitraries.oneOf(Arbitraries.just(-1), Arbitraries.integers().between(0, 8192));
		return Combinators.combine(type, flags, offset, length, payload).as((t, f, o, l, p) -> {
			// A WRITE carries its declared payload (when small enough to make), or a random amount.
			int n = (p >= 0) ? p : ((t == NbdProtocol.CMD_WRITE && l <= MAX_PAYLOAD) ? l.intValue() : 0);
			return Arrays.copyOf(RawNbdClient.request(f, t, 7, o, l), NbdProtocol.REQUEST_HEADER_LENGTH + n);
		});
	}

	/**
	 * A frame declaring more data than the bound, with all of it (or most of it) sent: decoders
	 * must discard it as it arrives, not buffer it.
	 */
	private static Arbitrary<byte[]> oversized(int headerLength, int bound,
			java.util.function.LongFunction<byte[]> header, int minPercentSent) {
		return Combinators
			.combine(Arbitraries.integers().between(bound + 1, bound + 3 * MAX_CHUNK + 70_000),
					Arbitraries.integers().between(minPercentSent, 100))
			.as((length, percentSent) -> {
				return Arrays.copyOf(header.apply(length), headerLength + (int) ((long) length * percentSent / 100));
			});
	}

	/** The stream as is, truncated, with bytes flipped, or with a random tail. */
	private static Arbitrary<byte[]> mutated(byte[] stream) {
		if (stream.length == 0) {
			return Arbitraries.just(stream);
		}
		Arbitrary<byte[]> truncated = Arbitraries.integers().between(0, stream.length - 1)
			.map((n) -> java.util.Arrays.copyOf(stream, n));
		Arbitrary<byte[]> flipped = Combinators
			.combine(Arbitraries.integers().between(0, stream.length - 1).list().ofMinSize(1).ofMaxSize(4),
					Arbitraries.bytes())
			.as((positions, value) -> {
				byte[] copy = stream.clone();
				for (int p : positions) {
					copy[p] ^= (value == 0) ? (byte) 0xff : value;
				}
				return copy;
			});
		Arbitrary<byte[]> tail = Arbitraries.bytes().array(byte[].class).ofMaxSize(256)
			.map((t) -> concat(List.of(stream, t)));
		return Arbitraries.frequencyOf(net.jqwik.api.Tuple.of(3, Arbitraries.just(stream)),
				net.jqwik.api.Tuple.of(2, truncated), net.jqwik.api.Tuple.of(3, flipped), net.jqwik.api.Tuple.of(2, tail));
	}

	static byte[] goPrefix(String export, boolean structured) {
		List<byte[]> parts = new ArrayList<>();
		parts.add(ByteBuffer.allocate(4).putInt(NbdProtocol.FLAG_C_FIXED_NEWSTYLE | NbdProtocol.FLAG_C_NO_ZEROES).array());
		if (structured) {
			parts.add(rawOption(NbdProtocol.OPT_STRUCTURED_REPLY, new byte[0]));
			parts.add(rawOption(NbdProtocol.OPT_SET_META_CONTEXT, metaData(export, "base:allocation")));
		}
		parts.add(rawOption(NbdProtocol.OPT_GO, infoData(export)));
		return concat(parts);
	}

	static byte[] exportNamePrefix(String export) {
		return concat(List.of(ByteBuffer.allocate(4).putInt(NbdProtocol.FLAG_C_FIXED_NEWSTYLE).array(),
				rawOption(NbdProtocol.OPT_EXPORT_NAME, export.getBytes(StandardCharsets.UTF_8))));
	}

	static byte[] rawOption(int option, byte[] data) {
		return ByteBuffer.allocate(16 + data.length)
			.putLong(NbdProtocol.IHAVEOPT)
			.putInt(option)
			.putInt(data.length)
			.put(data)
			.array();
	}

	static byte[] infoData(String name) {
		byte[] n = name.getBytes(StandardCharsets.UTF_8);
		return ByteBuffer.allocate(4 + n.length + 2 + 2)
			.putInt(n.length)
			.put(n)
			.putShort((short) 1)
			.putShort((short) NbdProtocol.INFO_BLOCK_SIZE)
			.array();
	}

	/** "mem", declared as {@code nameLength} bytes, then a count of {@code count} entries and one query. */
	static byte[] lyingData(long nameLength, long count) {
		return ByteBuffer.allocate(4 + 3 + 4 + 4 + 15)
			.putInt((int) nameLength)
			.put("mem".getBytes(StandardCharsets.UTF_8))
			.putInt((int) count)
			.putInt((int) count)
			.put(NbdProtocol.CONTEXT_BASE_ALLOCATION.getBytes(StandardCharsets.UTF_8))
			.array();
	}

	static byte[] metaData(String name, String query) {
		byte[] n = name.getBytes(StandardCharsets.UTF_8);
		byte[] q = query.getBytes(StandardCharsets.UTF_8);
		return ByteBuffer.allocate(4 + n.length + 4 + 4 + q.length)
			.putInt(n.length)
			.put(n)
			.putInt(1)
			.putInt(q.length)
			.put(q)
			.array();
	}

	static byte[] concat(List<byte[]> parts) {
		int total = parts.stream().mapToInt((p) -> p.length).sum();
		ByteBuffer b = ByteBuffer.allocate(total);
		parts.forEach(b::put);
		return b.array();
	}

	/** Remembers the largest buffer asked for. */
	static final class MaxRequestAllocator extends AbstractByteBufAllocator {

		volatile long max;

		MaxRequestAllocator() {
			super(false);
		}

		@Override
		protected ByteBuf newHeapBuffer(int initialCapacity, int maxCapacity) {
			this.max = Math.max(this.max, initialCapacity);
			return Unpooled.buffer(initialCapacity, maxCapacity);
		}

		@Override
		protected ByteBuf newDirectBuffer(int initialCapacity, int maxCapacity) {
			this.max = Math.max(this.max, initialCapacity);
			return Unpooled.directBuffer(initialCapacity, maxCapacity);
		}

		@Override
		public boolean isDirectBufferPooled() {
			return false;
		}

	}

}
