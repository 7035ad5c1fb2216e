package dev.nbd.server;

import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import dev.nbd.backend.ExportBackend;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * Large transfers without copies: READ replies sent from memory the backend lends
 * ({@link ExportBackend#lend}) and WRITE payloads handed over in the pieces they arrived in
 * ({@link ExportBackend#canWritePieces}). The bytes must be the same as with copies, and every
 * loan must end, whether the reply was sent, failed or dropped with its connection.
 */
class CopyFreeTransferTests {

	private static final int SIZE = 16 << 20;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private NbdServer server;

	@Test
	void largeWritesArriveInPiecesAndLargeReadsComeFromLentMemory() throws Exception {
		LendingBackend backend = new LendingBackend(SIZE);
		start(backend);
		byte[] data = new byte[(3 << 20) + 4097];
		new Random(1).nextBytes(data);
		try (RawNbdClient client = RawNbdClient.connect(this.server.port(), "lend")) {
			assertThat(client.call(NbdProtocol.CMD_WRITE, 12345, data.length, data).error()).isZero();
			// The payload reached the backend in more than one call, and every byte landed.
			assertThat(backend.writeCalls.get()).isGreaterThan(1);
			assertThat(backend.bytes(12345, data.length)).isEqualTo(data);
			RawNbdClient.Reply read = client.call(NbdProtocol.CMD_READ, 12345, data.length, null);
			assertThat(read.error()).isZero();
			assertThat(read.data()).isEqualTo(data);
			assertThat(backend.loans.get()).isPositive();
			// A small read is copied, not lent.
			int loans = backend.loans.get();
			assertThat(client.call(NbdProtocol.CMD_READ, 12345, 4096, null).data())
				.isEqualTo(java.util.Arrays.copyOf(data, 4096));
			assertThat(backend.loans.get()).isEqualTo(loans);
		}
		awaitNoLoansOutstanding(backend);
	}

	@Test
	void loansEndWhenTheClientLeavesWithoutReadingItsReplies() throws Exception {
		LendingBackend backend = new LendingBackend(SIZE);
		start(backend);
		RawNbdClient client = RawNbdClient.connect(this.server.port(), "lend");
		for (int i = 0; i < 32; i++) {
			client.sendRead((i % 8) << 20, 1 << 20);
		}
		assertThat(client.receive().error()).isZero();
		client.close();
		awaitNoLoansOutstanding(backend);
		assertThat(backend.loans.get()).isGreaterThan(1);
	}

	@Test
	void aLoanOfTheWrongLengthIsAnIoErrorAndStillEnds() throws Exception {
		LendingBackend backend = new LendingBackend(SIZE);
		backend.shortBy = 1;
		start(backend);
		try (RawNbdClient client = RawNbdClient.connect(this.server.port(), "lend")) {
			assertThat(client.call(NbdProtocol.CMD_READ, 0, 1 << 20, null).error()).isEqualTo(NbdError.EIO.code());
			backend.shortBy = 0;
			assertThat(client.call(NbdProtocol.CMD_READ, 0, 1 << 20, null).error()).isZero();
		}
		awaitNoLoansOutstanding(backend);
	}

	@Test
	void aFuaWriteInPiecesIsFollowedByAFlush() throws Exception {
		LendingBackend backend = new LendingBackend(SIZE);
		start(backend);
		byte[] data = new byte[2 << 20];
		new Random(2).nextBytes(data);
		try (RawNbdClient client = RawNbdClient.connect(this.server.port(), "lend")) {
			client.sendRequest(NbdProtocol.CMD_FLAG_FUA, NbdProtocol.CMD_WRITE, 77, 0, data.length, data);
			RawNbdClient.SimpleReply reply = client.readSimpleReply();
			assertThat(reply.error()).isZero();
			assertThat(backend.fuaWrites.get()).isZero();
			assertThat(backend.flushes.get()).isEqualTo(1);
			assertThat(backend.bytes(0, data.length)).isEqualTo(data);
		}
	}

	private void start(ExportBackend backend) {
		this.server = this.servers.start(backend);
	}

	private static void awaitNoLoansOutstanding(LendingBackend backend) {
		// Loans end on the event loop right after the socket write.
		await().atMost(Duration.ofSeconds(30)).until(() -> backend.outstanding.get() <= 0);
		assertThat(backend.outstanding.get()).isZero();
		// Counted, not asserted where it happens: release() runs on the event loop, where a
		// thrown AssertionError would be swallowed.
		assertThat(backend.extraReleases.get()).as("loans released more than once").isZero();
	}

	/** Bytes in one direct buffer; lends them in three pieces to exercise gathering writes. */
	private static final class LendingBackend implements ExportBackend {

		private final ByteBuffer memory;

		final AtomicInteger loans = new AtomicInteger();

		final AtomicInteger outstanding = new AtomicInteger();

		final AtomicInteger extraReleases = new AtomicInteger();

		final AtomicInteger writeCalls = new AtomicInteger();

		final AtomicInteger fuaWrites = new AtomicInteger();

		final AtomicInteger flushes = new AtomicInteger();

		volatile int shortBy;

		LendingBackend(int size) {
			this.memory = ByteBuffer.allocateDirect(size);
		}

		byte[] bytes(long offset, int length) {
			byte[] out = new byte[length];
			this.memory.get((int) offset, out);
			return out;
		}

		@Override
		public String name() {
			return "lend";
		}

		@Override
		public long size() {
			return this.memory.capacity();
		}

		@Override
		public boolean isBlocking() {
			return false;
		}

		@Override
		public boolean canFlush() {
			return true;
		}

		@Override
		public boolean canFua() {
			return true;
		}

		@Override
		public boolean canWritePieces() {
			return true;
		}

		@Override
		public void read(long offset, ByteBuffer dst) {
			int n = dst.remaining();
			dst.put(dst.position(), this.memory, (int) offset, n);
			dst.position(dst.position() + n);
		}

		@Override
		public void write(long offset, ByteBuffer src, boolean fua) {
			this.writeCalls.incrementAndGet();
			if (fua) {
				this.fuaWrites.incrementAndGet();
			}
			int n = src.remaining();
			this.memory.put((int) offset, src, src.position(), n);
			src.position(src.position() + n);
		}

		@Override
		public void flush() {
			this.flushes.incrementAndGet();
		}

		@Override
		public Lent lend(long offset, int length) {
			int third = length / 3;
			int end = (int) offset + length - this.shortBy;
			ByteBuffer[] buffers = { this.memory.slice((int) offset, third),
					this.memory.slice((int) offset + third, third),
					this.memory.slice((int) offset + 2 * third, end - (int) offset - 2 * third) };
			this.loans.incrementAndGet();
			this.outstanding.incrementAndGet();
			AtomicInteger released = new AtomicInteger();
			return new Lent() {

				@Override
				public ByteBuffer[] buffers() {
					return buffers;
				}

				@Override
				public void release() {
					if (released.incrementAndGet() > 1) {
						LendingBackend.this.extraReleases.incrementAndGet();
						return;
					}
					LendingBackend.this.outstanding.decrementAndGet();
				}

			};
		}

	}

}
