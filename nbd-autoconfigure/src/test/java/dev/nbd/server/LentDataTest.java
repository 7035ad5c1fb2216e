package dev.nbd.server;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;

import dev.nbd.backend.ExportBackend;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.CompositeByteBuf;
import io.netty.buffer.UnpooledByteBufAllocator;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatExceptionOfType;

/** The lent data of a READ reply: the backend's buffers in order, the loan ended once when Netty lets go. */
class LentDataTest {

	private final AtomicInteger ended = new AtomicInteger();

	@Test
	void releasingTheDataReleasesEveryPieceAndEndsTheLoanOnce() throws Exception {
		ByteBuffer direct = ByteBuffer.allocateDirect(3).put("abc".getBytes(StandardCharsets.US_ASCII)).flip();
		ByteBuffer heap = ByteBuffer.wrap("xdefx".getBytes(StandardCharsets.US_ASCII), 1, 3);
		ByteBuf data = LentData.of(UnpooledByteBufAllocator.DEFAULT, lent(direct, heap), 6);
		assertThat(data.toString(StandardCharsets.US_ASCII)).isEqualTo("abcdef");
		CompositeByteBuf composite = (CompositeByteBuf) data;
		List<ByteBuf> pieces = new ArrayList<>();
		for (int i = 0; i < composite.numComponents(); i++) {
			pieces.add(composite.internalComponent(i));
		}
		assertThat(pieces).hasSize(2);
		data.retain().release();
		assertThat(this.ended).as("loan ended while the data is held").hasValue(0);
		assertThat(data.release()).isTrue();
		assertThat(this.ended).as("loan ended").hasValue(1);
		assertThat(pieces).allSatisfy((piece) -> assertThat(piece.refCnt()).as("piece released").isZero());
	}

	@Test
	void aLoanOfTheWrongLengthFailsAndEndsTheLoan() {
		ByteBuffer lent = ByteBuffer.allocate(5);
		assertThatExceptionOfType(UnfilledReadException.class)
			.isThrownBy(() -> LentData.of(UnpooledByteBufAllocator.DEFAULT, lent(lent), 6))
			.withMessageContaining("6 bytes lent 5");
		assertThat(this.ended).hasValue(1);
	}

	private ExportBackend.Lent lent(ByteBuffer... buffers) {
		return new ExportBackend.Lent() {

			@Override
			public ByteBuffer[] buffers() {
				return buffers;
			}

			@Override
			public void release() {
				LentDataTest.this.ended.incrementAndGet();
			}

		};
	}

}
