package dev.nbd.backend;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import dev.nbd.backend.ExportBackend.Lent;
import dev.nbd.protocol.NbdError;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class MemoryBackendTests {

	private static final int PAGE = 4096;

	/** Pages per slab and per page table, as in MemoryBackend: the boundaries worth crossing. */
	private static final int SLAB = 256 * PAGE;

	private static final long TABLE = 4096L * PAGE;

	private final List<Lent> loans = new ArrayList<>();

	@AfterEach
	void releaseLoans() {
		this.loans.forEach(Lent::release);
	}

	@Test
	void advertisesPiecewiseWrites() {
		assertThat(new MemoryBackend("m", PAGE).canWritePieces()).isTrue();
	}

	@Test
	void zeroesWithNoHoleLeaveTheRangeProvisionedAndReportItAsZeroes() throws Exception {
		MemoryBackend backend = new MemoryBackend("m", 8 * PAGE);
		backend.write(0, ByteBuffer.wrap(filled(2 * PAGE, (byte) 7)), false);
		// Pages 0-1 hold data; pages 2-3 are holes. NO_HOLE over 1..3 keeps all of them allocated.
		backend.zero(PAGE, 3 * PAGE, false, false, false);
		assertThat(backend.allocatedBytes()).isEqualTo(4 * PAGE);
		assertThat(extents(backend)).containsExactly(PAGE + "/0", 3 * PAGE + "/" + ExportBackend.ZERO,
				4 * PAGE + "/" + (ExportBackend.HOLE | ExportBackend.ZERO));
		assertThat(read(backend, 0, 4 * PAGE)).isEqualTo(concat(filled(PAGE, (byte) 7), new byte[3 * PAGE]));
		// Data written into a zeroed page makes it data again; a trim (may-trim zero) makes holes.
		backend.write(2 * PAGE + 5, ByteBuffer.wrap(new byte[] { 1 }), false);
		backend.zero(3 * PAGE, PAGE, true, false, false);
		assertThat(extents(backend)).containsExactly(PAGE + "/0", PAGE + "/" + ExportBackend.ZERO, PAGE + "/0",
				5 * PAGE + "/" + (ExportBackend.HOLE | ExportBackend.ZERO));
		assertThat(backend.allocatedBytes()).isEqualTo(3 * PAGE);
	}

	@Test
	void writesItCannotHoldGetEnospcAndTrimGivesMemoryBack() throws Exception {
		long[] available = { Long.MAX_VALUE };
		MemoryBackend backend = new MemoryBackend("m", 64L * SLAB, null, false, () -> available[0]);
		byte[] data = filled(SLAB, (byte) 3);
		for (int i = 0; i < 16; i++) {
			backend.write((long) i * SLAB, ByteBuffer.wrap(data), false);
		}
		// The machine runs low: no new slab, and the client sees a full disk.
		available[0] = MemoryBackend.MEMORY_RESERVE;
		assertThatThrownBy(() -> backend.write(16L * SLAB, ByteBuffer.wrap(data), false))
			.isInstanceOfSatisfying(NbdBackendException.class, (ex) -> assertThat(ex.error()).isEqualTo(NbdError.ENOSPC));
		assertThatThrownBy(() -> backend.zero(20L * SLAB, PAGE, false, false, false))
			.isInstanceOf(NbdBackendException.class);
		assertThat(backend.isFull()).isTrue();
		assertThat(backend.refusedWrites()).isEqualTo(2);
		// Writes into pages it holds still succeed; so do trims and zeroes that free pages.
		backend.write(PAGE, ByteBuffer.wrap(filled(PAGE, (byte) 9)), false);
		backend.trim(0, 4L * SLAB, false);
		backend.zero(4L * SLAB, SLAB, true, false, false);
		assertThat(backend.isFull()).isFalse();
		for (int i = 16; i < 21; i++) {
			backend.write((long) i * SLAB, ByteBuffer.wrap(data), false);
		}
		assertThat(read(backend, 20L * SLAB, SLAB)).isEqualTo(data);
		assertThat(backend.allocatedBytes()).isEqualTo(16L * SLAB);
	}

	@Test
	void aWriteThatRunsOutOfMemoryHalfWayKeepsWhatItWroteAndHoldsNoPage() throws Exception {
		long[] available = { Long.MAX_VALUE };
		MemoryBackend backend = new MemoryBackend("m", 64L * SLAB, null, false, () -> available[0]);
		// Sixteen slabs taken, the last one half used; then the machine runs low.
		backend.write(0, ByteBuffer.wrap(filled(15 * SLAB + SLAB / 2, (byte) 1)), false);
		available[0] = MemoryBackend.MEMORY_RESERVE;
		// A quarter slab of pages it holds, the free half of the last slab, then pages it would
		// need a new slab for.
		byte[] data = new byte[SLAB];
		new Random(7).nextBytes(data);
		long at = 15L * SLAB + SLAB / 4;
		assertThatThrownBy(() -> backend.write(at, ByteBuffer.wrap(data), false))
			.isInstanceOfSatisfying(NbdBackendException.class, (ex) -> assertThat(ex.error()).isEqualTo(NbdError.ENOSPC));
		assertThat(read(backend, at, 3 * SLAB / 4)).isEqualTo(Arrays.copyOf(data, 3 * SLAB / 4));
		// Every page it touched was unpinned: once trimmed, all sixteen slabs take writes again.
		backend.trim(0, 64L * SLAB, false);
		byte[] all = filled(16 * SLAB, (byte) 2);
		backend.write(0, ByteBuffer.wrap(all), false);
		assertThat(read(backend, 0, 16 * SLAB)).isEqualTo(all);
	}

	@Test
	void aWriteOverPagesScatteredInMemoryReadsBackAndLeavesZeroPagesHoles() throws Exception {
		MemoryBackend backend = new MemoryBackend("m", 4L * SLAB);
		// Pages written first, out of offset order, sit elsewhere in their slab than their neighbours.
		backend.write(5L * PAGE, ByteBuffer.wrap(filled(PAGE, (byte) 1)), false);
		backend.write(300L * PAGE, ByteBuffer.wrap(filled(PAGE, (byte) 1)), false);
		backend.write(2L * PAGE, ByteBuffer.wrap(filled(PAGE, (byte) 1)), false);
		byte[] data = new byte[SLAB + 100 * PAGE];
		new Random(11).nextBytes(data);
		Arrays.fill(data, 9 * PAGE, 10 * PAGE, (byte) 0);
		backend.write(0, ByteBuffer.wrap(data), false);
		assertThat(read(backend, 0, data.length)).isEqualTo(data);
		// The zero page in the middle stayed a hole; every other page holds data.
		assertThat(backend.allocatedBytes()).isEqualTo(data.length - PAGE);
		byte[] unaligned = new byte[3 * PAGE + 10];
		new Random(13).nextBytes(unaligned);
		backend.write(SLAB - PAGE - 5, ByteBuffer.wrap(unaligned), false);
		assertThat(read(backend, SLAB - PAGE - 5, unaligned.length)).isEqualTo(unaligned);
		assertThat(read(backend, 0, 2 * PAGE)).isEqualTo(Arrays.copyOf(data, 2 * PAGE));
	}

	@Test
	void onTmpfsPagesAreOneSharedCopyAndNewSlabsStopWhenItIsFull() throws Exception {
		java.nio.file.Path shm = java.nio.file.Path.of("/dev/shm");
		org.junit.jupiter.api.Assumptions.assumeTrue(java.nio.file.Files.isDirectory(shm)
				&& "tmpfs".equals(java.nio.file.Files.getFileStore(shm).type()), "no tmpfs at /dev/shm");
		java.nio.file.FileStore store = java.nio.file.Files.getFileStore(shm);
		MemoryBackend backend = new MemoryBackend("m", 64L * SLAB, null, false, () -> Long.MAX_VALUE, shm);
		long before = store.getUsableSpace();
		byte[] data = filled(SLAB, (byte) 7);
		for (int i = 0; i < 32; i++) {
			backend.write((long) i * SLAB, ByteBuffer.wrap(data), false);
		}
		// The pages are in the tmpfs once (a private mapping would take them twice: a copy of
		// each hole page of the file, and the page written).
		long used = before - store.getUsableSpace();
		assertThat(used).isBetween(28L * SLAB, 48L * SLAB);
		assertThat(read(backend, 31L * SLAB, SLAB)).isEqualTo(data);
	}

	@Test
	void neverHoldsMoreThanItsSizeNeeds() throws Exception {
		MemoryBackend backend = new MemoryBackend("m", 3L * SLAB);
		byte[] data = filled(SLAB, (byte) 1);
		for (int round = 0; round < 3; round++) {
			for (int i = 0; i < 3; i++) {
				backend.write((long) i * SLAB, ByteBuffer.wrap(data), false);
			}
			backend.trim(0, 3L * SLAB, false);
		}
		// Every page lent and then trimmed: the spare slab takes one new slab of writes, then it is full.
		for (int i = 0; i < 3; i++) {
			backend.write((long) i * SLAB, ByteBuffer.wrap(data), false);
		}
		List<Lent> held = new ArrayList<>();
		for (int i = 0; i < 3; i++) {
			held.add(backend.lend((long) i * SLAB, SLAB));
		}
		this.loans.addAll(held);
		backend.trim(0, 3L * SLAB, false);
		backend.write(0, ByteBuffer.wrap(data), false);
		assertThatThrownBy(() -> backend.write(SLAB, ByteBuffer.wrap(data), false)).isInstanceOf(NbdBackendException.class);
		held.forEach(Lent::release);
		backend.write(SLAB, ByteBuffer.wrap(data), false);
		backend.write(2L * SLAB, ByteBuffer.wrap(data), false);
		assertThat(read(backend, 0, 3 * SLAB)).isEqualTo(concat(data, data, data));
	}

	@Test
	void lendReturnsTheBytesReadReturns() throws Exception {
		MemoryBackend backend = new MemoryBackend("m", 2 * TABLE + SLAB);
		Random random = new Random(42);
		// Data around a table boundary and around a slab boundary, with holes between.
		for (long at : new long[] { TABLE - 3 * PAGE, TABLE + 2 * PAGE, 100, SLAB - 2 * PAGE - 7, 2 * TABLE - 5 }) {
			backend.write(at, ByteBuffer.wrap(randomBytes(random, 3 * PAGE + 11)), false);
		}
		backend.write(TABLE + SLAB - PAGE, ByteBuffer.wrap(randomBytes(random, 2 * PAGE)), false);
		long[][] ranges = { { 0, PAGE }, { 0, 3 * PAGE }, { 17, 5 * PAGE + 3 }, { 100, 1 }, { PAGE - 1, 2 },
				{ SLAB - 3 * PAGE, 6 * PAGE }, { SLAB - 2 * PAGE - 9, 3 * PAGE + 100 }, { TABLE - 4 * PAGE - 5, 8 * PAGE },
				{ TABLE - 1, 2 }, { TABLE + SLAB - 2 * PAGE + 1, 3 * PAGE }, { 2 * TABLE - PAGE, 2 * PAGE },
				{ TABLE / 2, 1 << 20 }, { TABLE - (1 << 19), 1 << 20 } };
		for (long[] range : ranges) {
			assertThat(lent(backend, range[0], (int) range[1])).as("range %s+%s", range[0], range[1])
				.isEqualTo(read(backend, range[0], (int) range[1]));
		}
		for (int i = 0; i < 200; i++) {
			long offset = (long) (random.nextDouble() * (backend.size() - (1 << 20)));
			int length = 1 + random.nextInt(1 << 20);
			assertThat(lent(backend, offset, length)).isEqualTo(read(backend, offset, length));
		}
	}

	@Test
	void lendMergesPagesThatAreContiguousInMemory() throws Exception {
		MemoryBackend backend = new MemoryBackend("m", 8L << 20);
		byte[] data = randomBytes(new Random(1), 1 << 20);
		backend.write(1 << 20, ByteBuffer.wrap(data), false);
		Lent aligned = lend(backend, 1 << 20, 1 << 20);
		assertThat(aligned.buffers().length).isLessThanOrEqualTo(2);
		assertThat(concat(aligned)).isEqualTo(data);
		Lent unaligned = lend(backend, (1 << 20) + 123, (1 << 20) - 1000);
		assertThat(unaligned.buffers().length).isLessThanOrEqualTo(2);
		// A 1 MiB hole is a few shared zero buffers, not one per page.
		Lent hole = lend(backend, 4 << 20, 1 << 20);
		assertThat(hole.buffers().length).isLessThanOrEqualTo(16);
		assertThat(concat(hole)).isEqualTo(new byte[1 << 20]);
	}

	@Test
	void lentBuffersAreReadOnly() throws Exception {
		MemoryBackend backend = new MemoryBackend("m", 4 * PAGE);
		backend.write(0, ByteBuffer.wrap(new byte[] { 1, 2, 3 }), false);
		for (ByteBuffer buffer : lend(backend, 0, 4 * PAGE).buffers()) {
			assertThat(buffer.isReadOnly()).isTrue();
			assertThat(buffer.isDirect()).isTrue();
		}
	}

	@Test
	void trimmedPagesStayWithTheLoanUntilReleased() throws Exception {
		MemoryBackend backend = new MemoryBackend("m", 64L << 20);
		byte[] data = randomBytes(new Random(7), 8 * PAGE);
		backend.write(0, ByteBuffer.wrap(data), false);
		assertThat(backend.allocatedBytes()).isEqualTo(8 * PAGE);
		Lent loan = backend.lend(0, 8 * PAGE);
		backend.trim(0, 8 * PAGE, false);
		// Trimmed, so reads see zeroes, but the lent pages are not free yet and still count.
		assertThat(read(backend, 0, 8 * PAGE)).isEqualTo(new byte[8 * PAGE]);
		assertThat(backend.allocatedBytes()).isEqualTo(8 * PAGE);
		// Writing elsewhere must take fresh pages, not the lent ones.
		byte[] other = filled(8 * PAGE, (byte) 0x5a);
		backend.write(32L << 20, ByteBuffer.wrap(other), false);
		assertThat(backend.allocatedBytes()).isEqualTo(16 * PAGE);
		assertThat(concat(loan)).isEqualTo(data);

		loan.release();
		loan.release(); // a second release must not free the pages twice
		assertThat(backend.allocatedBytes()).isEqualTo(8 * PAGE);
		// Now the freed pages are reused: the released loan's buffers still view them and show
		// the new data, zeroed where the partial last page was not written.
		backend.write(16L << 20, ByteBuffer.wrap(filled(8 * PAGE - 100, (byte) 7)), false);
		assertThat(backend.allocatedBytes()).isEqualTo(16 * PAGE);
		assertThat(read(backend, (16L << 20) + 8 * PAGE - 100, 100)).isEqualTo(new byte[100]);
		byte[] reused = concat(loan);
		assertThat(count(reused, (byte) 7)).isEqualTo(8 * PAGE - 100);
		assertThat(count(reused, (byte) 0)).isEqualTo(100);
		assertThat(read(backend, 32L << 20, 8 * PAGE)).isEqualTo(other);

		backend.trim(0, backend.size(), false);
		assertThat(backend.allocatedBytes()).isZero();
	}

	@Test
	void trimWithoutLoanFreesAtOnce() throws Exception {
		MemoryBackend backend = new MemoryBackend("m", 1 << 20);
		backend.write(0, ByteBuffer.wrap(filled(4 * PAGE, (byte) 1)), false);
		backend.lend(0, 4 * PAGE).release();
		backend.zero(PAGE, 2 * PAGE, true, false, false);
		assertThat(backend.allocatedBytes()).isEqualTo(2 * PAGE);
		// Partial-page zeroing keeps the page and zeroes the bytes.
		backend.zero(10, 20, true, false, false);
		assertThat(read(backend, 0, 40)).isEqualTo(concat(filled(10, (byte) 1), new byte[20], filled(10, (byte) 1)));
		assertThat(backend.allocatedBytes()).isEqualTo(2 * PAGE);
	}

	@Test
	void piecesWriteTheSameAsOneWrite() throws Exception {
		Random random = new Random(2024);
		for (int round = 0; round < 200; round++) {
			int size = 6 * PAGE;
			long base = random.nextInt(3) * PAGE + random.nextInt(PAGE);
			int length = 1 + random.nextInt(size - (int) base);
			byte[] payload = randomBytes(random, length);
			// Zero stretches, so some pieces are all zeroes and skip page allocation.
			for (int z = 0; z < 3; z++) {
				int from = random.nextInt(length);
				int to = Math.min(length, from + random.nextInt(2 * PAGE));
				Arrays.fill(payload, from, to, (byte) 0);
			}
			MemoryBackend whole = new MemoryBackend("whole", size);
			whole.write(base, ByteBuffer.wrap(payload), false);
			MemoryBackend pieces = new MemoryBackend("pieces", size);
			int at = 0;
			while (at < length) {
				int n = Math.min(length - at, 1 + random.nextInt(PAGE + PAGE / 2));
				// A piece is a view into a larger buffer, as a network buffer would be.
				ByteBuffer piece = ByteBuffer.wrap(payload, at, n).slice();
				pieces.write(base + at, piece, false);
				assertThat(piece.hasRemaining()).isFalse();
				at += n;
			}
			assertThat(read(pieces, 0, size)).isEqualTo(read(whole, 0, size));
			assertThat(pieces.allocatedBytes()).isEqualTo(whole.allocatedBytes());
			assertThat(extents(pieces)).isEqualTo(extents(whole));
		}
	}

	/**
	 * Readers lend and read ranges while writers rewrite, trim and zero overlapping pages. Every
	 * word written names its own offset, so a page handed to another offset while lent (or
	 * while a write copies into it) shows up as data of a wrong offset.
	 */
	@Test
	void concurrentLoansNeverSeeAnotherOffsetsData() throws Exception {
		int pages = 2048;
		MemoryBackend backend = new MemoryBackend("m", (long) pages * PAGE);
		int writers = 2;
		int readers = 2;
		AtomicBoolean stop = new AtomicBoolean();
		ExecutorService executor = Executors.newFixedThreadPool(writers + readers);
		try {
			List<Future<Long>> tasks = new ArrayList<>();
			for (int w = 0; w < writers; w++) {
				int writer = w;
				tasks.add(executor.submit(() -> {
					Random random = new Random(100 + writer);
					long operations = 0;
					while (!stop.get() || operations < 2000) {
						long offset = (long) random.nextInt(pages) * PAGE;
						int length = (int) Math.min((1 + random.nextInt(4)) * PAGE, backend.size() - offset);
						switch (random.nextInt(4)) {
							case 0 -> backend.trim(offset, length, false);
							// Partial pages: zeroed in place, so pinned like writes.
							case 1 -> backend.zero(offset + 8 * random.nextInt(64), length - 512, true, false, false);
							default -> backend.write(offset, pattern(offset, length), false);
						}
						operations++;
					}
					return operations;
				}));
			}
			for (int r = 0; r < readers; r++) {
				int reader = r;
				tasks.add(executor.submit(() -> {
					Random random = new Random(200 + reader);
					long operations = 0;
					while (!stop.get() || operations < 2000) {
						long offset = random.nextInt(pages * PAGE - 8) & ~7L;
						int length = (int) Math.min(8 + (random.nextInt(64 * PAGE) & ~7), backend.size() - offset);
						Lent loan = backend.lend(offset, length);
						try {
							verifyPattern(offset, concat(loan));
						}
						finally {
							loan.release();
						}
						if (random.nextBoolean()) {
							verifyPattern(offset, read(backend, offset, length));
						}
						operations++;
					}
					return operations;
				}));
			}
			Thread.sleep(1500);
			stop.set(true);
			for (Future<Long> task : tasks) {
				assertThat(task.get(60, TimeUnit.SECONDS)).isPositive();
			}
		}
		finally {
			stop.set(true);
			executor.shutdownNow();
			assertThat(executor.awaitTermination(60, TimeUnit.SECONDS)).isTrue();
		}
		// No pin leaked: every page is freed by a full trim, and reusable.
		backend.trim(0, backend.size(), false);
		assertThat(backend.allocatedBytes()).isZero();
		backend.write(0, pattern(0, pages * PAGE), false);
		assertThat(backend.allocatedBytes()).isEqualTo((long) pages * PAGE);
		byte[] all = read(backend, 0, pages * PAGE);
		assertThat(all).isEqualTo(pattern(0, pages * PAGE).array());
	}

	/**
	 * One word per 8 bytes naming its offset: the word index in the high half, its complement in
	 * the low half. Any other offset's word has a bit set that this one lacks, even if a copy
	 * racing a write mixes in zero bytes.
	 */
	private static ByteBuffer pattern(long offset, int length) {
		ByteBuffer buffer = ByteBuffer.allocate(length);
		for (int i = 0; i < length; i += 8) {
			buffer.putLong(i, word(offset + i));
		}
		return buffer;
	}

	private static long word(long offset) {
		long index = offset >>> 3;
		return (index << 32) | (~index & 0xffffffffL);
	}

	/** Each word is (partly) zero, from a trim or racing a write, or belongs at this very offset. */
	private static void verifyPattern(long offset, byte[] data) {
		ByteBuffer buffer = ByteBuffer.wrap(data);
		for (int i = 0; i + 8 <= data.length; i += 8) {
			long found = buffer.getLong(i);
			if ((found & ~word(offset + i)) != 0) {
				throw new AssertionError("at offset " + (offset + i) + " found data of offset " + ((found >>> 32) << 3));
			}
		}
	}

	private Lent lend(MemoryBackend backend, long offset, int length) {
		Lent loan = backend.lend(offset, length);
		this.loans.add(loan);
		return loan;
	}

	private byte[] lent(MemoryBackend backend, long offset, int length) {
		return concat(lend(backend, offset, length));
	}

	private static byte[] read(MemoryBackend backend, long offset, int length) {
		ByteBuffer dst = ByteBuffer.allocate(length);
		backend.read(offset, dst);
		assertThat(dst.hasRemaining()).isFalse();
		return dst.array();
	}

	private static byte[] concat(Lent loan) {
		int total = 0;
		for (ByteBuffer buffer : loan.buffers()) {
			total += buffer.remaining();
		}
		ByteBuffer all = ByteBuffer.allocate(total);
		for (ByteBuffer buffer : loan.buffers()) {
			all.put(buffer.duplicate());
		}
		return all.array();
	}

	private static byte[] concat(byte[]... parts) {
		ByteBuffer all = ByteBuffer.allocate(Arrays.stream(parts).mapToInt(p -> p.length).sum());
		for (byte[] part : parts) {
			all.put(part);
		}
		return all.array();
	}

	private static List<String> extents(MemoryBackend backend) {
		List<String> extents = new ArrayList<>();
		backend.extents(0, backend.size(), (length, flags) -> extents.add(length + "/" + flags));
		return extents;
	}

	private static byte[] randomBytes(Random random, int length) {
		byte[] bytes = new byte[length];
		random.nextBytes(bytes);
		return bytes;
	}

	private static int count(byte[] bytes, byte value) {
		int n = 0;
		for (byte b : bytes) {
			n += (b == value) ? 1 : 0;
		}
		return n;
	}

	private static byte[] filled(int length, byte value) {
		byte[] bytes = new byte[length];
		Arrays.fill(bytes, value);
		return bytes;
	}

}
