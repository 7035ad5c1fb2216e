package dev.nbd.backend;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicReferenceArray;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.LongSupplier;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import dev.nbd.protocol.NbdError;

/**
 * A sparse in-memory export. Memory is taken only for pages that hold non-zero data, off the
 * Java heap (1 MiB slabs carved into 4 KiB pages), so a large export costs what is written and
 * causes no GC pressure. Trim and zeroing of whole pages return them to a free list. The slabs
 * are memory the export owns ({@link PageMemory}), not the JVM's direct memory: an export of
 * size S holds S bytes whatever -XX:MaxDirectMemorySize is, and filling it never takes buffers
 * from the network.
 *
 * <p>Its bound: never more pages than the export's size needs, and no new slab while the
 * machine (or the container) has less than {@link #MEMORY_RESERVE} available, so that a full
 * machine refuses writes with {@code NBD_ENOSPC} instead of the kernel killing the process. A
 * refused write logs a WARN once per episode and counts in {@link #refusedWrites()}; pages
 * freed by TRIM or WRITE_ZEROES are reused, so later writes succeed.
 *
 * <p>The page table is two-level (a directory of 4096-page tables created on first write), so
 * the directory of a 1 TiB export is 64K references. Lookups and writes to existing pages take
 * no lock; only allocating a page does. Safe for many connections: there is one copy of the data.
 *
 * <p>Large READ replies are sent from the pages themselves ({@link #lend}). A page in use by a
 * read, write or loan is pinned, so trimming it only marks it free; it goes back to the free
 * list when the last pin is dropped and is never reused for another offset while in use.
 */
public class MemoryBackend implements ExportBackend {

	static final int PAGE_SHIFT = 12;

	static final int PAGE_SIZE = 1 << PAGE_SHIFT;

	private static final int TABLE_SHIFT = 12;

	private static final int TABLE_PAGES = 1 << TABLE_SHIFT;

	private static final int SLAB_PAGES = 256;

	/** Pin state of a page: the low bits count pins, this bit says "free when unpinned". */
	private static final int FREE_PENDING = 1 << 30;

	private static final int PIN_COUNT = FREE_PENDING - 1;

	/** Memory the machine keeps available: below it the export takes no new slabs. */
	public static final long MEMORY_RESERVE = 64L << 20;

	/** Slabs taken between two looks at the memory available (reading it costs a file read). */
	private static final int CHECK_EVERY = 16;

	private static final Logger logger = LoggerFactory.getLogger(MemoryBackend.class);

	private final String name;

	private final long size;

	private final String description;

	private final boolean readOnly;

	private final AtomicReferenceArray<AtomicIntegerArray> directory;

	private final PageAllocator allocator;

	public MemoryBackend(String name, long size) {
		this(name, size, null, false);
	}

	public MemoryBackend(String name, long size, String description, boolean readOnly) {
		this(name, size, description, readOnly, SystemMemory::available);
	}

	/** With {@code available} telling the memory the machine has left (tests fake a full one). */
	MemoryBackend(String name, long size, String description, boolean readOnly, LongSupplier available) {
		this(name, size, description, readOnly, available, null);
	}

	/** With the directory of the files its memory is mapped from (tests use a tmpfs), null for the default. */
	MemoryBackend(String name, long size, String description, boolean readOnly, LongSupplier available,
			java.nio.file.Path directory) {
		if (size < 0) {
			throw new IllegalArgumentException("size must not be negative");
		}
		this.name = name;
		this.size = size;
		this.description = description;
		this.readOnly = readOnly;
		long pages = (size + PAGE_SIZE - 1) >>> PAGE_SHIFT;
		long tables = (pages + TABLE_PAGES - 1) >>> TABLE_SHIFT;
		if (tables > Integer.MAX_VALUE) {
			throw new IllegalArgumentException("export too large for the memory backend: " + size);
		}
		this.directory = new AtomicReferenceArray<>((int) tables);
		// One spare slab: trimmed pages still lent to a READ reply cannot be reused until sent.
		int slabs = (int) Math.min(Integer.MAX_VALUE / SLAB_PAGES - 1, (pages + SLAB_PAGES - 1) / SLAB_PAGES + 1);
		int slabSize = SLAB_PAGES * PAGE_SIZE;
		PageMemory memory = (directory != null) ? new PageMemory(name, size, slabSize, directory)
				: new PageMemory(name, size, slabSize);
		this.allocator = new PageAllocator(name, memory, slabs, available);
	}

	@Override
	public String name() {
		return this.name;
	}

	@Override
	public long size() {
		return this.size;
	}

	@Override
	public String description() {
		return this.description;
	}

	@Override
	public boolean isReadOnly() {
		return this.readOnly;
	}

	@Override
	public boolean isMultiConnSafe() {
		return true;
	}

	@Override
	public boolean isBlocking() {
		return false;
	}

	@Override
	public boolean canFlush() {
		// Nothing to make durable, but advertising FLUSH lets clients that insist on it work.
		return true;
	}

	@Override
	public boolean canFua() {
		return true;
	}

	@Override
	public boolean canTrim() {
		return true;
	}

	@Override
	public boolean canZero() {
		return true;
	}

	@Override
	public boolean canFastZero() {
		return true;
	}

	@Override
	public boolean canCache() {
		return true;
	}

	@Override
	public boolean canExtents() {
		return true;
	}

	@Override
	public boolean canWritePieces() {
		// write() takes any offset and length: a partial page is merged into the page in place.
		return true;
	}

	/**
	 * Bytes of page memory in use: pages holding data, plus trimmed pages still lent to a READ
	 * reply (they cannot be reused until the reply is sent, so they still cost memory).
	 */
	public long allocatedBytes() {
		return this.allocator.inUse.sum() * PAGE_SIZE;
	}

	/** Writes (and NO_HOLE zeroes) refused with {@code NBD_ENOSPC} because memory ran out. */
	public long refusedWrites() {
		return this.allocator.refused.sum();
	}

	/** Whether the last page the export needed could not be had, and none was freed since. */
	public boolean isFull() {
		return this.allocator.full;
	}

	@Override
	public void read(long offset, ByteBuffer dst) {
		int pos = dst.position();
		int remaining = dst.remaining();
		while (remaining > 0) {
			long page = offset >>> PAGE_SHIFT;
			int inPage = (int) (offset & (PAGE_SIZE - 1));
			int n = Math.min(remaining, PAGE_SIZE - inPage);
			int handle = pin(page);
			if (handle == 0) {
				zeroFill(dst, pos, n);
			}
			else {
				dst.put(pos, this.allocator.slab(handle), this.allocator.offset(handle) + inPage, n);
				this.allocator.unpin(handle);
			}
			pos += n;
			offset += n;
			remaining -= n;
		}
		dst.position(pos);
	}

	@Override
	public void write(long offset, ByteBuffer src, boolean fua) throws NbdBackendException {
		int pos = src.position();
		int remaining = src.remaining();
		// Pages that follow each other in one slab are copied in one go (a run), each pinned
		// until then so that a concurrent trim cannot hand it to another offset mid-copy. A run's
		// bytes are contiguous in src too, from runFrom up to pos.
		int runFirst = 0;
		int runPages = 0;
		int runAt = 0;
		int runFrom = 0;
		try {
			while (remaining > 0) {
				long page = offset >>> PAGE_SHIFT;
				int inPage = (int) (offset & (PAGE_SIZE - 1));
				int n = Math.min(remaining, PAGE_SIZE - inPage);
				int handle = pin(page);
				if (handle == 0 && !isZero(src, pos, n)) {
					handle = allocate(page);
				}
				if (runPages > 0 && !this.allocator.follows(handle, runFirst, runPages)) {
					copyRun(runFirst, runPages, runAt, src, runFrom, pos - runFrom);
					runPages = 0;
				}
				if (handle != 0) {
					this.allocator.slabOf(handle).markData(handle);
					if (runPages == 0) {
						runFirst = handle;
						runAt = this.allocator.offset(handle) + inPage;
						runFrom = pos;
					}
					runPages++;
				}
				pos += n;
				offset += n;
				remaining -= n;
			}
		}
		finally {
			if (runPages > 0) {
				copyRun(runFirst, runPages, runAt, src, runFrom, pos - runFrom);
			}
		}
		src.position(pos);
	}

	/** Copies a run of pinned pages' bytes from {@code src}, then unpins them. */
	private void copyRun(int first, int pages, int at, ByteBuffer src, int from, int length) {
		try {
			this.allocator.slab(first).put(at, src, from, length);
		}
		finally {
			for (int i = 0; i < pages; i++) {
				this.allocator.unpin(first + i);
			}
		}
	}

	@Override
	public void trim(long offset, long length, boolean fua) throws NbdBackendException {
		zero(offset, length, true, false, fua);
	}

	/**
	 * Whole pages are released when {@code mayTrim} allows it. Without it (NO_HOLE) the range
	 * stays provisioned: pages are zeroed in place, holes get a zeroed page, and those pages are
	 * reported as allocated zeroes; that needs memory, so it can fail with {@code NBD_ENOSPC}.
	 */
	@Override
	public void zero(long offset, long length, boolean mayTrim, boolean fast, boolean fua) throws NbdBackendException {
		long end = offset + length;
		while (offset < end) {
			long page = offset >>> PAGE_SHIFT;
			int inPage = (int) (offset & (PAGE_SIZE - 1));
			int n = (int) Math.min(end - offset, PAGE_SIZE - inPage);
			boolean whole = inPage == 0 && n == PAGE_SIZE;
			if (whole && mayTrim) {
				release(page);
			}
			else {
				int handle = pin(page);
				boolean fresh = false;
				if (handle == 0 && !mayTrim) {
					// A fresh page is zeroes already, all of it.
					handle = allocate(page);
					fresh = true;
				}
				if (handle != 0) {
					Slab slab = this.allocator.slabOf(handle);
					zeroFill(slab.data, this.allocator.offset(handle) + inPage, n);
					if (whole || fresh) {
						slab.markZero(handle);
					}
					this.allocator.unpin(handle);
				}
			}
			offset += n;
		}
	}

	@Override
	public void extents(long offset, long length, ExtentSink sink) {
		long end = Math.min(offset + length, this.size);
		long runStart = offset;
		int runFlags = -1;
		long pos = offset;
		while (pos < end) {
			long page = pos >>> PAGE_SHIFT;
			AtomicIntegerArray table = this.directory.get((int) (page >>> TABLE_SHIFT));
			long next;
			int flags;
			if (table == null) {
				// A whole missing table: skip its pages in one step.
				next = Math.min(end, ((page >>> TABLE_SHIFT) + 1) << (TABLE_SHIFT + PAGE_SHIFT));
				flags = HOLE | ZERO;
			}
			else {
				next = Math.min(end, (page + 1) << PAGE_SHIFT);
				int handle = table.get((int) (page & (TABLE_PAGES - 1)));
				flags = (handle == 0) ? (HOLE | ZERO) : this.allocator.slabOf(handle).isZero(handle) ? ZERO : 0;
			}
			if (flags != runFlags) {
				if (runFlags != -1 && !sink.extent(pos - runStart, runFlags)) {
					return;
				}
				runStart = pos;
				runFlags = flags;
			}
			pos = next;
		}
		if (runFlags != -1) {
			sink.extent(end - runStart, runFlags);
		}
	}

	/**
	 * Lends the pages of the range: allocated pages as slices of their slab (pages adjacent in
	 * the same slab merged into one buffer), holes as slices of a shared zero buffer. Each
	 * allocated page stays pinned until {@link Lent#release()}. Large READs use this instead of
	 * {@link #read}: a subclass that overrides {@code read} should override this to return null.
	 */
	@Override
	public Lent lend(long offset, int length) {
		if (length <= 0) {
			return new LentPages(new ByteBuffer[0], new int[0], 0);
		}
		long first = offset >>> PAGE_SHIFT;
		int pages = (int) (((offset + length - 1) >>> PAGE_SHIFT) - first + 1);
		int[] pinned = new int[pages];
		int pinnedCount = 0;
		List<ByteBuffer> buffers = new ArrayList<>();
		// The run being merged: a slab (runSlab) from runStart, or zeroes when runSlab is null.
		Slab runSlab = null;
		int runStart = 0;
		int runLength = 0;
		int nextHandle = 0;
		long end = offset + length;
		while (offset < end) {
			long page = offset >>> PAGE_SHIFT;
			int inPage = (int) (offset & (PAGE_SIZE - 1));
			int n = (int) Math.min(end - offset, PAGE_SIZE - inPage);
			int handle = pin(page);
			if (handle == 0) {
				if (runLength > 0 && (runSlab != null || runLength + n > ZEROES.capacity())) {
					buffers.add(lendable(runSlab, runStart, runLength));
					runLength = 0;
				}
				runSlab = null;
			}
			else {
				pinned[pinnedCount++] = handle;
				Slab slab = this.allocator.slabOf(handle);
				// A page continues the run only if it follows the previous one in the same slab;
				// inner pages are whole, so the bytes are then contiguous.
				if (runLength > 0 && (slab != runSlab || handle != nextHandle)) {
					buffers.add(lendable(runSlab, runStart, runLength));
					runLength = 0;
				}
				if (runLength == 0) {
					runStart = this.allocator.offset(handle) + inPage;
				}
				runSlab = slab;
				nextHandle = handle + 1;
			}
			runLength += n;
			offset += n;
		}
		buffers.add(lendable(runSlab, runStart, runLength));
		return new LentPages(buffers.toArray(new ByteBuffer[0]), pinned, pinnedCount);
	}

	private static ByteBuffer lendable(Slab slab, int start, int length) {
		return (slab != null) ? slab.readOnly.slice(start, length) : ZEROES.slice(0, length);
	}

	/**
	 * Pins the page mapped at {@code page} and returns its handle, or 0 for a hole. The pin is
	 * taken first and the mapping checked after: if a trim unmapped the page in between, its
	 * free saw either our pin (and left freeing to our unpin) or came after our check failed,
	 * so a page is never pinned while it belongs to another offset. A stale handle pinned
	 * briefly here may sit on the free list; the pin count tolerates that (see
	 * {@link PageAllocator#free}).
	 */
	private int pin(long page) {
		AtomicIntegerArray table = this.directory.get((int) (page >>> TABLE_SHIFT));
		if (table == null) {
			return 0;
		}
		int slot = (int) (page & (TABLE_PAGES - 1));
		int handle = table.get(slot);
		while (handle != 0) {
			this.allocator.pin(handle);
			int current = table.get(slot);
			if (current == handle) {
				return handle;
			}
			this.allocator.unpin(handle);
			handle = current;
		}
		return 0;
	}

	/** Allocates the page if still missing and returns it pinned (ours or a racing writer's). */
	private int allocate(long page) throws NbdBackendException {
		int t = (int) (page >>> TABLE_SHIFT);
		AtomicIntegerArray table = this.directory.get(t);
		if (table == null) {
			AtomicIntegerArray fresh = new AtomicIntegerArray(TABLE_PAGES);
			table = this.directory.compareAndExchange(t, null, fresh);
			if (table == null) {
				table = fresh;
			}
		}
		int slot = (int) (page & (TABLE_PAGES - 1));
		int handle = this.allocator.allocate();
		// Pinned before it is published, so a trim right after publishing cannot free it under us.
		this.allocator.pin(handle);
		while (!table.compareAndSet(slot, 0, handle)) {
			int existing = pin(page);
			if (existing != 0) {
				// Another writer allocated the page first; use theirs.
				this.allocator.unpin(handle);
				this.allocator.free(handle);
				return existing;
			}
			// Theirs was trimmed again before we could pin it: try to publish ours once more.
		}
		return handle;
	}

	private void release(long page) {
		AtomicIntegerArray table = this.directory.get((int) (page >>> TABLE_SHIFT));
		if (table != null) {
			int handle = table.getAndSet((int) (page & (TABLE_PAGES - 1)), 0);
			if (handle != 0) {
				this.allocator.free(handle);
			}
		}
	}

	/** Shared zeroes: 16 pages, so a lent hole of up to 64 KiB is one buffer. */
	private static final ByteBuffer ZEROES = ByteBuffer.allocateDirect(16 * PAGE_SIZE).asReadOnlyBuffer();

	private static void zeroFill(ByteBuffer buf, int index, int n) {
		while (n > 0) {
			int k = Math.min(n, ZEROES.capacity());
			buf.put(index, ZEROES, 0, k);
			index += k;
			n -= k;
		}
	}

	private static boolean isZero(ByteBuffer buf, int index, int n) {
		int i = index;
		int end = index + n;
		for (; i + 8 <= end; i += 8) {
			if (buf.getLong(i) != 0) {
				return false;
			}
		}
		for (; i < end; i++) {
			if (buf.get(i) != 0) {
				return false;
			}
		}
		return true;
	}

	/** A loan of pinned pages; releasing it drops the pins (a second release does nothing). */
	private final class LentPages implements Lent {

		private final ByteBuffer[] buffers;

		private final int[] pinned;

		private final int pinnedCount;

		private final AtomicBoolean released = new AtomicBoolean();

		LentPages(ByteBuffer[] buffers, int[] pinned, int pinnedCount) {
			this.buffers = buffers;
			this.pinned = pinned;
			this.pinnedCount = pinnedCount;
		}

		@Override
		public ByteBuffer[] buffers() {
			return this.buffers;
		}

		@Override
		public void release() {
			if (this.released.compareAndSet(false, true)) {
				for (int i = 0; i < this.pinnedCount; i++) {
					MemoryBackend.this.allocator.unpin(this.pinned[i]);
				}
			}
		}

	}

	/**
	 * One 1 MiB slab of pages, a read-only view of it to lend, the pin state of each page, and
	 * which pages were zeroed without being released (NO_HOLE): allocated, but known zeroes.
	 */
	private static final class Slab {

		final ByteBuffer data;

		final ByteBuffer readOnly;

		final AtomicIntegerArray pins = new AtomicIntegerArray(SLAB_PAGES);

		final AtomicIntegerArray zeroed = new AtomicIntegerArray(SLAB_PAGES);

		Slab(ByteBuffer data) {
			this.data = data;
			this.readOnly = data.asReadOnlyBuffer();
		}

		boolean isZero(int handle) {
			return this.zeroed.get(PageAllocator.indexInSlab(handle)) != 0;
		}

		void markZero(int handle) {
			this.zeroed.set(PageAllocator.indexInSlab(handle), 1);
		}

		/** Before data goes into the page; a read first, so the common case writes nothing shared. */
		void markData(int handle) {
			int index = PageAllocator.indexInSlab(handle);
			if (this.zeroed.get(index) != 0) {
				this.zeroed.set(index, 0);
			}
		}

	}

	/**
	 * Hands out pages as int handles (slab * SLAB_PAGES + page + 1; 0 means none). Freed pages
	 * are zeroed when reused, so a page always starts as zeroes.
	 *
	 * <p>Each page has a pin state: a pin count plus {@link #FREE_PENDING}. {@link #free} sets
	 * FREE_PENDING; whoever brings the state to exactly FREE_PENDING with no pins (the freer
	 * itself, or the last {@link #unpin}) and wins the compare-and-set to 0 pushes the page to
	 * the free list, so each free pushes it exactly once. Pins taken on a stale handle (one that
	 * is free or was reused) only raise and lower the count; they never free anything because
	 * FREE_PENDING is not set unless the page was freed again, and then the same rule applies.
	 */
	private static final class PageAllocator {

		private volatile Slab[] slabs = new Slab[0];

		private int[] free = new int[1024];

		private int freeCount;

		private final LongAdder inUse = new LongAdder();

		private final LongAdder refused = new LongAdder();

		private final String name;

		private final PageMemory memory;

		private final int maxSlabs;

		private final LongSupplier available;

		/** Set when a page could not be had; cleared when one is freed. Guards the WARN too. */
		private volatile boolean full;

		PageAllocator(String name, PageMemory memory, int maxSlabs, LongSupplier available) {
			this.name = name;
			this.memory = memory;
			this.maxSlabs = maxSlabs;
			this.available = available;
		}

		ByteBuffer slab(int handle) {
			return slabOf(handle).data;
		}

		Slab slabOf(int handle) {
			return this.slabs[(handle - 1) / SLAB_PAGES];
		}

		void pin(int handle) {
			slabOf(handle).pins.incrementAndGet(indexInSlab(handle));
		}

		void unpin(int handle) {
			AtomicIntegerArray pins = slabOf(handle).pins;
			int index = indexInSlab(handle);
			if (pins.addAndGet(index, -1) == FREE_PENDING && pins.compareAndSet(index, FREE_PENDING, 0)) {
				push(handle);
			}
		}

		int offset(int handle) {
			return indexInSlab(handle) << PAGE_SHIFT;
		}

		/** Whether page {@code handle} comes right after a run of {@code pages} from {@code first} in its slab. */
		boolean follows(int handle, int first, int pages) {
			return handle == first + pages && (handle - 1) / SLAB_PAGES == (first - 1) / SLAB_PAGES;
		}

		private static int indexInSlab(int handle) {
			return (handle - 1) % SLAB_PAGES;
		}

		int allocate() throws NbdBackendException {
			int handle;
			boolean reused;
			synchronized (this) {
				if (this.freeCount == 0) {
					grow();
				}
				handle = this.free[--this.freeCount];
				reused = handle > 0;
				handle = Math.abs(handle);
			}
			if (reused) {
				zeroFill(slab(handle), offset(handle), PAGE_SIZE);
			}
			slabOf(handle).markData(handle);
			this.inUse.increment();
			return handle;
		}

		/** Frees a page no longer mapped; it is reused only once nobody has it pinned. */
		void free(int handle) {
			AtomicIntegerArray pins = slabOf(handle).pins;
			int index = indexInSlab(handle);
			int before = pins.getAndAdd(index, FREE_PENDING);
			// If a pin came in between, the CAS fails and that pin's unpin frees the page.
			if ((before & PIN_COUNT) == 0 && pins.compareAndSet(index, FREE_PENDING, 0)) {
				push(handle);
			}
		}

		private void push(int handle) {
			synchronized (this) {
				if (this.freeCount == this.free.length) {
					this.free = java.util.Arrays.copyOf(this.free, this.free.length * 2);
				}
				// Positive entries are dirty (need zeroing); fresh slab pages are stored negative.
				this.free[this.freeCount++] = handle;
			}
			this.inUse.decrement();
			if (this.full) {
				this.full = false;
			}
		}

		private void grow() throws NbdBackendException {
			Slab[] current = this.slabs;
			if (current.length >= this.maxSlabs) {
				throw refuse("it holds " + (current.length * (long) SLAB_PAGES * PAGE_SIZE >> 20)
						+ " MiB, all its size allows; trimmed pages are still being sent");
			}
			if (current.length % CHECK_EVERY == 0) {
				long left = this.available.getAsLong();
				if (left < MEMORY_RESERVE + (long) CHECK_EVERY * SLAB_PAGES * PAGE_SIZE) {
					throw refuse("the machine or container has only " + (left >> 20)
							+ " MiB of memory available (" + (MEMORY_RESERVE >> 20) + " MiB are kept in reserve)");
				}
			}
			Slab[] next = java.util.Arrays.copyOf(current, current.length + 1);
			try {
				next[current.length] = new Slab(this.memory.slab(current.length));
			}
			catch (IOException | OutOfMemoryError ex) {
				throw refuse("no memory could be mapped: " + ex.getMessage());
			}
			this.slabs = next;
			int base = current.length * SLAB_PAGES;
			if (this.free.length < SLAB_PAGES) {
				this.free = java.util.Arrays.copyOf(this.free, SLAB_PAGES);
			}
			for (int i = SLAB_PAGES - 1; i >= 0; i--) {
				this.free[this.freeCount++] = -(base + i + 1);
			}
		}

		/** A write that cannot be held: ENOSPC for the client, a WARN for the operator (once per episode). */
		private NbdBackendException refuse(String why) {
			this.refused.increment();
			if (!this.full) {
				this.full = true;
				logger.warn("Memory export '{}' is full: {} MiB in use and {}. Writes that need new pages get "
						+ "ENOSPC until TRIM or WRITE_ZEROES frees some", this.name, (this.inUse.sum() * PAGE_SIZE) >> 20,
						why);
			}
			return new NbdBackendException(NbdError.ENOSPC, "memory export '" + this.name + "' is full: " + why);
		}

	}

}
