package dev.nbd.testkit;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.NbdBackendException;
import dev.nbd.protocol.NbdError;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Contract tests for an {@link ExportBackend}: extend this class in your test sources and
 * return a new backend from {@link #createBackend()}; every test gets a fresh one.
 *
 * <pre>{@code
 * class MyBackendContractTests extends ExportBackendContractTests {
 *
 *     @Override
 *     protected ExportBackend createBackend() {
 *         return new MyBackend("test", 16 * 1024 * 1024);
 *     }
 *
 * }
 * }</pre>
 *
 * <p>The tests call the backend directly (reads fill the buffer and touch nothing else, writes
 * read back, bounds, declared block sizes, what each {@code can…} capability promises: zero and
 * trim read back as zeroes, extents agree with the data, flush and FUA, cache, lent memory and served
 * files hold the same bytes as {@code read}, several threads on several {@code connect()} views),
 * then serve it with the real {@code NbdServer} and drive it with libnbd (an {@code nbdsh}
 * client, several connections at once). Tests for capabilities the backend does not declare pass
 * as not applicable (printed), rather than being skipped.
 *
 * <p>The backend must be writable and at least {@value #MINIMUM_SIZE} bytes; 4 to 64 MiB keep the
 * kit fast. A backend whose data outlives it (a file, a remote volume) can also be checked
 * across a close and reopen: override {@link #reopenBackend()}. Backends that are
 * {@link AutoCloseable} are closed after each test ({@link #closeBackend}).
 *
 * <p>The libnbd tests need {@code nbdsh} (Debian/Ubuntu {@code libnbd-bin} and
 * {@code python3-libnbd}, Fedora {@code libnbd}); without it they are skipped, or fail when the
 * system property {@code nbd.testkit.libnbd} is {@code required}.
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
public abstract class ExportBackendContractTests {

	/** Smallest backend the kit accepts. */
	public static final long MINIMUM_SIZE = 1024 * 1024;

	private static final int SENTINEL = 0x5A;

	private ExportBackend backend;

	/**
	 * A new, writable backend of at least {@value #MINIMUM_SIZE} bytes. Its initial contents
	 * may be anything.
	 */
	protected abstract ExportBackend createBackend() throws Exception;

	/**
	 * The backend of the last {@link #createBackend()} opened again on the same storage, after
	 * {@link #closeBackend} closed it; null (the default) when its data does not outlive it,
	 * which makes the reopen tests not applicable.
	 */
	protected ExportBackend reopenBackend() throws Exception {
		return null;
	}

	/** Releases a backend after a test, or before {@link #reopenBackend()}. */
	protected void closeBackend(ExportBackend backend) throws Exception {
		if (backend instanceof AutoCloseable closeable) {
			closeable.close();
		}
	}

	/**
	 * Whether a trimmed range reads back as zeroes. The protocol lets it read as anything;
	 * override to return false if your backend's does (the kit then checks only that trim
	 * leaves the rest of the device alone).
	 */
	protected boolean trimReadsBackZeroes() {
		return true;
	}

	/** The backend under test in the current test. */
	protected final ExportBackend backend() {
		return this.backend;
	}

	@BeforeEach
	void openBackend() throws Exception {
		this.backend = createBackend();
		assertNotNull(this.backend, "createBackend() returned null");
		long required = Math.max(MINIMUM_SIZE, 64L * page());
		assertTrue(this.backend.size() >= required,
				"the kit needs a backend of at least " + required + " bytes, size() is " + this.backend.size());
	}

	@AfterEach
	void releaseBackend() throws Exception {
		if (this.backend != null) {
			closeBackend(this.backend);
		}
	}

	@Test
	@DisplayName("name, size and block sizes are valid and stable")
	void declaresAValidGeometry() throws Exception {
		ExportBackend b = this.backend;
		assertNotNull(b.name(), "name() must not be null");
		assertFalse(b.name().isEmpty(), "name() must not be empty");
		long size = b.size();
		assertEquals(size, b.size(), "size() must not change between calls");
		int min = b.minimumBlockSize();
		int preferred = b.preferredBlockSize();
		assertTrue(min >= 1 && min <= 65536 && Integer.bitCount(min) == 1,
				"minimumBlockSize() must be a power of two from 1 to 65536, is " + min);
		assertTrue(preferred >= 512 && Integer.bitCount(preferred) == 1,
				"preferredBlockSize() must be a power of two of at least 512, is " + preferred);
		assertTrue(preferred >= min, "preferredBlockSize() " + preferred + " is below minimumBlockSize() " + min);
		assertEquals(0, size % min, "size() " + size + " must be a multiple of minimumBlockSize() " + min);
		if (b.canFastZero()) {
			assertTrue(b.canZero(), "canFastZero() without canZero(): fast zero is done by zero()");
		}
	}

	@Test
	@DisplayName("read fills the whole buffer with the written bytes and touches nothing outside it")
	void readFillsTheBuffer() throws Exception {
		if (!applies(!this.backend.isReadOnly(), "the kit checks writable backends")) {
			return;
		}
		long size = this.backend.size();
		for (int length : lengths()) {
			for (long offset : new long[] { 0, unit(), size - length }) {
				byte[] data = Patterns.bytes(length, offset ^ length);
				write(offset, data);
				for (boolean direct : new boolean[] { false, true }) {
					assertReads(offset, data, direct, "read(" + offset + ", " + length + " bytes, "
							+ (direct ? "direct" : "heap") + " buffer)");
				}
			}
		}
	}

	@Test
	@DisplayName("write consumes its source and leaves the neighbouring bytes alone")
	void writeReadsBackAndKeepsNeighbours() throws Exception {
		if (!applies(!this.backend.isReadOnly(), "the kit checks writable backends")) {
			return;
		}
		int u = unit();
		byte[] around = Patterns.bytes(8 * u, 1);
		write(0, around);
		for (boolean direct : new boolean[] { false, true }) {
			byte[] middle = Patterns.bytes(2 * u, direct ? 2 : 3);
			ByteBuffer src = buffer(middle.length + 32, direct);
			src.position(16);
			src.put(middle);
			src.position(16).limit(16 + middle.length);
			this.backend.write(3L * u, src, false);
			assertEquals(0, src.remaining(), "write must consume src.remaining() bytes (position at limit)");
			byte[] expected = around.clone();
			System.arraycopy(middle, 0, expected, 3 * u, middle.length);
			assertReads(0, expected, direct, "neighbours of a write at " + 3 * u);
		}
	}

	@Test
	@DisplayName("unaligned reads and writes work when minimumBlockSize() is 1")
	void unalignedAccess() throws Exception {
		if (!applies(!this.backend.isReadOnly(), "the kit checks writable backends")) {
			return;
		}
		if (!applies(this.backend.minimumBlockSize() == 1, "the backend asks for aligned requests")) {
			return;
		}
		byte[] base = Patterns.bytes(20000, 4);
		write(0, base);
		byte[] odd = Patterns.bytes(6001, 5);
		write(4097, odd);
		System.arraycopy(odd, 0, base, 4097, odd.length);
		assertReads(0, base, false, "after an unaligned write");
		assertReads(1, Arrays.copyOfRange(base, 1, 1 + 9999), true, "unaligned read");
		long last = this.backend.size() - 1;
		write(last, new byte[] { 42 });
		assertReads(last, new byte[] { 42 }, false, "the last byte");
	}

	@Test
	@DisplayName("a write handed over in pieces equals one write (canWritePieces)")
	void writePieces() throws Exception {
		if (!applies(!this.backend.isReadOnly(), "the kit checks writable backends")) {
			return;
		}
		if (!applies(this.backend.canWritePieces(), "canWritePieces() is false")) {
			return;
		}
		byte[] data = Patterns.bytes(256 * 1024, 6);
		int[] cuts = { 0, 1, 4095, 4096 + 17, 65536 + 3, 200_001, data.length };
		for (int i = 0; i + 1 < cuts.length; i++) {
			ByteBuffer piece = ByteBuffer.allocateDirect(cuts[i + 1] - cuts[i]);
			piece.put(data, cuts[i], cuts[i + 1] - cuts[i]).flip();
			this.backend.write(unit() + cuts[i], piece, false);
		}
		assertReads(unit(), data, false, "a payload written in " + (cuts.length - 1) + " pieces");
	}

	@Test
	@DisplayName("zero() reads back as zeroes, with and without mayTrim and fast (canZero)")
	void zeroReadsBackZeroes() throws Exception {
		if (!applies(!this.backend.isReadOnly(), "the kit checks writable backends")) {
			return;
		}
		if (!applies(this.backend.canZero(), "canZero() is false (the server then writes zeroes itself)")) {
			return;
		}
		int u = page();
		for (boolean mayTrim : new boolean[] { false, true }) {
			byte[] data = Patterns.bytes(64 * u, mayTrim ? 7 : 8);
			write(0, data);
			// an unaligned start (within the block size) and a whole-page middle
			long start = unit();
			long length = 40L * u + unit();
			this.backend.zero(start, length, mayTrim, false, false);
			Arrays.fill(data, (int) start, (int) (start + length), (byte) 0);
			assertReads(0, data, true, "after zero(" + start + ", " + length + ", mayTrim=" + mayTrim + ")");
		}
		if (this.backend.canFastZero()) {
			byte[] data = Patterns.bytes(16 * u, 9);
			write(0, data);
			try {
				this.backend.zero(0, 8L * u, true, true, false);
				Arrays.fill(data, 0, 8 * u, (byte) 0);
				assertReads(0, data, false, "after a fast zero");
			}
			catch (NbdBackendException ex) {
				assertEquals(NbdError.ENOTSUP, ex.error(), "a fast zero that cannot be fast must fail with ENOTSUP");
			}
		}
	}

	@Test
	@DisplayName("trim() leaves the rest alone and reads back as zeroes (canTrim)")
	void trimKeepsNeighbours() throws Exception {
		if (!applies(!this.backend.isReadOnly(), "the kit checks writable backends")) {
			return;
		}
		if (!applies(this.backend.canTrim(), "canTrim() is false")) {
			return;
		}
		int u = page();
		byte[] data = Patterns.bytes(64 * u, 10);
		write(0, data);
		long start = 4L * u;
		long length = 32L * u;
		this.backend.trim(start, length, false);
		byte[] read = read(0, data.length, false);
		assertArrayEquals(Arrays.copyOfRange(data, 0, (int) start), Arrays.copyOfRange(read, 0, (int) start),
				"trim changed bytes before the trimmed range");
		assertArrayEquals(Arrays.copyOfRange(data, (int) (start + length), data.length),
				Arrays.copyOfRange(read, (int) (start + length), data.length),
				"trim changed bytes after the trimmed range");
		if (trimReadsBackZeroes()) {
			assertArrayEquals(new byte[(int) length], Arrays.copyOfRange(read, (int) start, (int) (start + length)),
					"a trimmed range must read back as zeroes (override trimReadsBackZeroes() if yours does not)");
		}
	}

	@Test
	@DisplayName("extents are contiguous, stop when asked, and agree with the data (canExtents)")
	void extentsAgreeWithData() throws Exception {
		if (!applies(!this.backend.isReadOnly(), "the kit checks writable backends")) {
			return;
		}
		if (!applies(this.backend.canExtents(), "canExtents() is false (the server reports all data)")) {
			return;
		}
		int u = page();
		int span = (int) Math.min(256L * u, this.backend.size());
		write(0, new byte[span]);
		if (this.backend.canTrim()) {
			this.backend.trim(0, span, false);
		}
		if (this.backend.canZero()) {
			this.backend.zero(0, span, true, false, false);
		}
		byte[] data = Patterns.bytes(span / 8, 11);
		write(span / 4, data);
		byte[] contents = read(0, span, false);
		for (long start : new long[] { 0, span / 4 + unit(), span / 2 }) {
			List<long[]> extents = extents(start, span - start);
			long at = start;
			for (long[] extent : extents) {
				long length = extent[0];
				int flags = (int) extent[1];
				assertTrue(length > 0, "extent of length " + length + " at " + at);
				assertEquals(0, flags & ~(ExportBackend.HOLE | ExportBackend.ZERO), "unknown extent flags " + flags);
				if ((flags & ExportBackend.ZERO) != 0) {
					for (long i = at; i < Math.min(at + length, span); i++) {
						if (contents[(int) i] != 0) {
							fail("extent [" + at + ", " + (at + length) + ") is reported ZERO but byte " + i + " is "
									+ contents[(int) i]);
						}
					}
				}
				at += length;
			}
			assertTrue(at > start, "extents(" + start + ", ...) reported nothing: at least one extent is required");
			assertTrue(at <= span, "extents(" + start + ", " + (span - start) + ") reported past the requested range, up to "
					+ at);
		}
		int[] calls = { 0 };
		this.backend.extents(0, span, (length, flags) -> {
			calls[0]++;
			return false;
		});
		assertEquals(1, calls[0], "extents() must stop when the sink returns false");
	}

	@Test
	@DisplayName("flush() and FUA writes succeed and keep the data (canFlush, canFua)")
	void flushKeepsData() throws Exception {
		if (!applies(!this.backend.isReadOnly(), "the kit checks writable backends")) {
			return;
		}
		if (!applies(this.backend.canFlush() || this.backend.canFua(), "neither canFlush() nor canFua()")) {
			return;
		}
		byte[] data = Patterns.bytes(64 * 1024, 12);
		write(0, data);
		if (this.backend.canFlush()) {
			this.backend.flush();
		}
		if (this.backend.canFua()) {
			byte[] fua = Patterns.bytes(8 * unit(), 13);
			ByteBuffer src = ByteBuffer.wrap(fua);
			this.backend.write(unit(), src, true);
			System.arraycopy(fua, 0, data, unit(), fua.length);
		}
		assertReads(0, data, false, "after flush/FUA");
	}

	@Test
	@DisplayName("cache() succeeds and changes nothing (canCache)")
	void cacheKeepsData() throws Exception {
		if (!applies(!this.backend.isReadOnly(), "the kit checks writable backends")) {
			return;
		}
		if (!applies(this.backend.canCache(), "canCache() is false")) {
			return;
		}
		byte[] data = Patterns.bytes(64 * 1024, 19);
		write(0, data);
		this.backend.cache(0, data.length);
		this.backend.cache(this.backend.size() - unit(), unit());
		assertReads(0, data, false, "after cache()");
	}

	@Test
	@DisplayName("lend() lends the same bytes read() returns")
	void lentMemoryMatchesRead() throws Exception {
		if (!applies(!this.backend.isReadOnly(), "the kit checks writable backends")) {
			return;
		}
		byte[] data = Patterns.bytes(256 * 1024, 14);
		write(0, data);
		ExportBackend.Lent lent = this.backend.lend(0, data.length);
		if (!applies(lent != null, "lend() returns null (the server copies with read())")) {
			return;
		}
		try {
			ByteBuffer all = ByteBuffer.allocate(data.length);
			for (ByteBuffer b : lent.buffers()) {
				assertTrue(b.remaining() <= all.remaining(), "lent buffers hold more than the " + data.length
						+ " bytes asked for");
				all.put(b.duplicate());
			}
			assertEquals(0, all.remaining(), "lent buffers hold fewer bytes than asked for");
			assertArrayEquals(data, all.array(), "lent bytes differ from the written bytes");
		}
		finally {
			lent.release();
		}
	}

	@Test
	@DisplayName("servedFile() holds the same bytes at the same offsets")
	void servedFileMatchesRead() throws Exception {
		if (!applies(!this.backend.isReadOnly(), "the kit checks writable backends")) {
			return;
		}
		FileChannel file = this.backend.servedFile();
		if (!applies(file != null, "servedFile() returns null")) {
			return;
		}
		assertTrue(file.size() >= this.backend.size(), "servedFile() is shorter than size()");
		byte[] data = Patterns.bytes(64 * 1024, 15);
		long offset = this.backend.size() - data.length;
		write(offset, data);
		ByteBuffer dst = ByteBuffer.allocate(data.length);
		while (dst.hasRemaining() && file.read(dst, offset + dst.position()) >= 0) {
		}
		assertArrayEquals(data, dst.array(), "servedFile() bytes differ from the written bytes");
	}

	@Test
	@DisplayName("several threads on their own connect() views write and read concurrently")
	void concurrentViews() throws Exception {
		if (!applies(!this.backend.isReadOnly(), "the kit checks writable backends")) {
			return;
		}
		int threads = 8;
		int region = 64 * 1024;
		int rounds = 50;
		CyclicBarrier start = new CyclicBarrier(threads);
		ExecutorService pool = Executors.newFixedThreadPool(threads);
		try {
			List<Future<byte[]>> results = new ArrayList<>();
			for (int t = 0; t < threads; t++) {
				int id = t;
				results.add(pool.submit(() -> {
					ExportBackend view = this.backend.connect();
					try {
						start.await();
						long offset = (long) id * region;
						byte[] last = null;
						for (int r = 0; r < rounds; r++) {
							last = Patterns.bytes(region, id * 1000L + r);
							ByteBuffer src = (r % 2 == 0) ? ByteBuffer.wrap(last) : direct(last);
							view.write(offset, src, false);
							ByteBuffer dst = ByteBuffer.allocate(region);
							view.read(offset, dst);
							assertArrayEquals(last, dst.array(), "thread " + id + " round " + r
									+ ": its own write did not read back while other threads wrote");
						}
						if (view.canFlush()) {
							view.flush();
						}
						return last;
					}
					finally {
						if (view != this.backend) {
							view.disconnect();
						}
					}
				}));
			}
			ExportBackend reader = this.backend.connect();
			try {
				for (int t = 0; t < threads; t++) {
					byte[] expected = results.get(t).get(2, TimeUnit.MINUTES);
					assertArrayEquals(expected, read(reader, (long) t * region, region, false),
							"region " + t + " read on a new view after every view flushed and disconnected");
				}
			}
			finally {
				if (reader != this.backend) {
					reader.disconnect();
				}
			}
		}
		finally {
			pool.shutdownNow();
		}
	}

	@Test
	@DisplayName("a write flushed on one view is visible on every view (isMultiConnSafe)")
	void multiConnVisibility() throws Exception {
		if (!applies(!this.backend.isReadOnly(), "the kit checks writable backends")) {
			return;
		}
		if (!applies(this.backend.isMultiConnSafe(), "isMultiConnSafe() is false")) {
			return;
		}
		ExportBackend a = this.backend.connect();
		ExportBackend b = this.backend.connect();
		ExportBackend c = this.backend.connect();
		try {
			read(c, 0, 4096, false);
			byte[] data = Patterns.bytes(4096, 16);
			a.write(0, ByteBuffer.wrap(data), false);
			if (b.canFlush()) {
				b.flush();
			}
			assertArrayEquals(data, read(c, 0, data.length, false), "write on view A, flush on B, read on C");
		}
		finally {
			for (ExportBackend view : List.of(a, b, c)) {
				if (view != this.backend) {
					view.disconnect();
				}
			}
		}
	}

	@Test
	@DisplayName("flushed and FUA writes survive a close and reopen (reopenBackend)")
	void reopenKeepsFlushedWrites() throws Exception {
		if (!applies(!this.backend.isReadOnly(), "the kit checks writable backends")) {
			return;
		}
		if (!applies(this.backend.canFlush() || this.backend.canFua(), "neither canFlush() nor canFua()")) {
			return;
		}
		long size = this.backend.size();
		byte[] flushed = Patterns.bytes(128 * 1024, 17);
		write(0, flushed);
		if (this.backend.canFlush()) {
			this.backend.flush();
		}
		byte[] fua = Patterns.bytes(8 * unit(), 18);
		if (this.backend.canFua()) {
			this.backend.write(size - fua.length, ByteBuffer.wrap(fua), true);
		}
		ExportBackend closed = this.backend;
		this.backend = null;
		closeBackend(closed);
		this.backend = reopenBackend();
		if (!applies(this.backend != null, "reopenBackend() returns null: the data does not outlive the backend")) {
			return;
		}
		assertEquals(size, this.backend.size(), "size() after reopening");
		assertReads(0, flushed, false, "flushed data after close and reopen");
		if (closed.canFua()) {
			assertReads(size - fua.length, fua, false, "FUA write after close and reopen");
		}
	}

	@Test
	@DisplayName("served by NbdServer: libnbd reads, writes, zeroes, trims, flushes and maps it on several connections")
	void servedThroughLibnbd() throws Exception {
		if (!applies(!this.backend.isReadOnly(), "the kit checks writable backends")) {
			return;
		}
		Libnbd libnbd = Libnbd.find();
		try (ServedBackend served = ServedBackend.serve(this.backend)) {
			libnbd.runContractScript(served.uri(), this.backend.size(), this.backend.isMultiConnSafe());
		}
	}

	/**
	 * Whether a check applies to this backend. One that does not (a capability it does not declare)
	 * passes as not applicable instead of being skipped: a build that fails on skipped tests, as ours
	 * does on CI, still runs the kit.
	 */
	private static boolean applies(boolean applicable, String reason) {
		if (!applicable) {
			System.out.println("ExportBackendContractTests: not applicable: " + reason);
		}
		return applicable;
	}

	/** Alignment used by the tests: the declared minimum, at least 512. */
	private int unit() {
		return Math.max(this.backend.minimumBlockSize(), 512);
	}

	/** Granule of the zero, trim and extents tests: the alignment, at least a 4 KiB page. */
	private int page() {
		return Math.max(unit(), 4096);
	}

	private int[] lengths() throws IOException {
		int u = unit();
		long size = this.backend.size();
		return Arrays.stream(new int[] { u, 8 * u, 65536, 65536 + 8 * u, 1024 * 1024 })
			.filter((length) -> length % u == 0)
			.filter((length) -> length <= size - u)
			.distinct()
			.toArray();
	}

	private void write(long offset, byte[] data) throws IOException {
		ByteBuffer src = ByteBuffer.wrap(data);
		this.backend.write(offset, src, false);
	}

	private byte[] read(long offset, int length, boolean direct) throws IOException {
		return read(this.backend, offset, length, direct);
	}

	private static byte[] read(ExportBackend from, long offset, int length, boolean direct) throws IOException {
		ByteBuffer dst = buffer(length, direct);
		from.read(offset, dst);
		byte[] out = new byte[length];
		dst.get(0, out);
		return out;
	}

	/**
	 * Reads into the middle of a larger buffer prefilled with a sentinel, so bytes left unfilled
	 * or written outside {@code [position, limit)} are found.
	 */
	private void assertReads(long offset, byte[] expected, boolean direct, String what) throws IOException {
		int slack = 64;
		ByteBuffer dst = buffer(expected.length + 2 * slack, direct);
		for (int i = 0; i < dst.capacity(); i++) {
			dst.put(i, (byte) SENTINEL);
		}
		dst.position(slack).limit(slack + expected.length);
		this.backend.read(offset, dst);
		assertEquals(slack + expected.length, dst.limit(), what + ": read() changed the buffer's limit");
		dst.clear();
		for (int i = 0; i < slack; i++) {
			assertEquals((byte) SENTINEL, dst.get(i), what + ": read() wrote before the buffer's position");
			assertEquals((byte) SENTINEL, dst.get(slack + expected.length + i),
					what + ": read() wrote past the buffer's limit");
		}
		byte[] actual = new byte[expected.length];
		dst.get(slack, actual);
		int mismatch = Arrays.mismatch(expected, actual);
		if (mismatch >= 0) {
			fail(what + ": byte " + mismatch + " of " + expected.length + " differs (expected " + expected[mismatch]
					+ ", read " + actual[mismatch] + "): read() must fill every byte of dst.remaining()");
		}
	}

	private List<long[]> extents(long offset, long length) throws IOException {
		List<long[]> extents = new ArrayList<>();
		this.backend.extents(offset, length, (extentLength, flags) -> {
			extents.add(new long[] { extentLength, flags });
			return true;
		});
		return extents;
	}

	private static ByteBuffer buffer(int capacity, boolean direct) {
		return direct ? ByteBuffer.allocateDirect(capacity) : ByteBuffer.allocate(capacity);
	}

	private static ByteBuffer direct(byte[] data) {
		ByteBuffer buffer = ByteBuffer.allocateDirect(data.length);
		buffer.put(data).flip();
		return buffer;
	}

}
