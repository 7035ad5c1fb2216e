package dev.nbd.backend;

import java.nio.ByteBuffer;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicReferenceArray;
import java.util.concurrent.atomic.LongAdder;

import dev.nbd.protocol.NbdError;

/**
 * A sparse in-memory export. Memory is taken only for pages that hold non-zero data, off the
 * Java heap (1 MiB direct slabs carved into 4 KiB pages), so a large export costs what is
 * written and causes no GC pressure. Trim and zeroing of whole pages return them to a free list.
 *
 * <p>The page table is two-level (a directory of 4096-page tables created on first write), so
 * the directory of a 1 TiB export is 64K references. Lookups and writes to existing pages take
 * no lock; only allocating a page does. Safe for many connections: there is one copy of the data.
 */
public class MemoryBackend implements ExportBackend {

	static final int PAGE_SHIFT = 12;

	static final int PAGE_SIZE = 1 << PAGE_SHIFT;

	private static final int TABLE_SHIFT = 12;

	private static final int TABLE_PAGES = 1 << TABLE_SHIFT;

	private static final int SLAB_PAGES = 256;

	private final String name;

	private final long size;

	private final String description;

	private final boolean readOnly;

	private final AtomicReferenceArray<AtomicIntegerArray> directory;

	private final PageAllocator allocator = new PageAllocator();

	public MemoryBackend(String name, long size) {
		this(name, size, null, false);
	}

	public MemoryBackend(String name, long size, String description, boolean readOnly) {
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

	/** Bytes of page memory currently holding data. */
	public long allocatedBytes() {
		return this.allocator.inUse.sum() * PAGE_SIZE;
	}

	@Override
	public void read(long offset, ByteBuffer dst) {
		int pos = dst.position();
		int remaining = dst.remaining();
		while (remaining > 0) {
			long page = offset >>> PAGE_SHIFT;
			int inPage = (int) (offset & (PAGE_SIZE - 1));
			int n = Math.min(remaining, PAGE_SIZE - inPage);
			int handle = handle(page);
			if (handle == 0) {
				zeroFill(dst, pos, n);
			}
			else {
				dst.put(pos, this.allocator.slab(handle), this.allocator.offset(handle) + inPage, n);
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
		while (remaining > 0) {
			long page = offset >>> PAGE_SHIFT;
			int inPage = (int) (offset & (PAGE_SIZE - 1));
			int n = Math.min(remaining, PAGE_SIZE - inPage);
			int handle = handle(page);
			if (handle == 0 && !isZero(src, pos, n)) {
				handle = allocate(page);
			}
			if (handle != 0) {
				this.allocator.slab(handle).put(this.allocator.offset(handle) + inPage, src, pos, n);
			}
			pos += n;
			offset += n;
			remaining -= n;
		}
		src.position(pos);
	}

	@Override
	public void trim(long offset, long length, boolean fua) {
		zero(offset, length, true, false, fua);
	}

	@Override
	public void zero(long offset, long length, boolean mayTrim, boolean fast, boolean fua) {
		// Whole pages are always released: a missing page reads as zeroes, which is what
		// NO_HOLE asks for too; only the accounting of "allocated" differs and we report it honestly.
		long end = offset + length;
		while (offset < end) {
			long page = offset >>> PAGE_SHIFT;
			int inPage = (int) (offset & (PAGE_SIZE - 1));
			int n = (int) Math.min(end - offset, PAGE_SIZE - inPage);
			if (inPage == 0 && n == PAGE_SIZE) {
				release(page);
			}
			else {
				int handle = handle(page);
				if (handle != 0) {
					zeroFill(this.allocator.slab(handle), this.allocator.offset(handle) + inPage, n);
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
				flags = (table.get((int) (page & (TABLE_PAGES - 1))) == 0) ? (HOLE | ZERO) : 0;
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

	private int handle(long page) {
		AtomicIntegerArray table = this.directory.get((int) (page >>> TABLE_SHIFT));
		return (table != null) ? table.get((int) (page & (TABLE_PAGES - 1))) : 0;
	}

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
		int existing = table.compareAndExchange(slot, 0, handle);
		if (existing != 0) {
			// Another writer allocated the page first; use theirs.
			this.allocator.free(handle);
			return existing;
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

	private static final ByteBuffer ZEROES = ByteBuffer.allocateDirect(PAGE_SIZE).asReadOnlyBuffer();

	private static void zeroFill(ByteBuffer buf, int index, int n) {
		while (n > 0) {
			int k = Math.min(n, PAGE_SIZE);
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

	/**
	 * Hands out pages as int handles (slab * SLAB_PAGES + page + 1; 0 means none). Freed pages
	 * are zeroed when reused, so a page always starts as zeroes.
	 */
	private static final class PageAllocator {

		private volatile ByteBuffer[] slabs = new ByteBuffer[0];

		private int[] free = new int[1024];

		private int freeCount;

		private final LongAdder inUse = new LongAdder();

		ByteBuffer slab(int handle) {
			return this.slabs[(handle - 1) / SLAB_PAGES];
		}

		int offset(int handle) {
			return ((handle - 1) % SLAB_PAGES) << PAGE_SHIFT;
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
			this.inUse.increment();
			return handle;
		}

		void free(int handle) {
			synchronized (this) {
				if (this.freeCount == this.free.length) {
					this.free = java.util.Arrays.copyOf(this.free, this.free.length * 2);
				}
				// Positive entries are dirty (need zeroing); fresh slab pages are stored negative.
				this.free[this.freeCount++] = handle;
			}
			this.inUse.decrement();
		}

		private void grow() throws NbdBackendException {
			ByteBuffer[] current = this.slabs;
			if (current.length >= Integer.MAX_VALUE / SLAB_PAGES - 1) {
				throw new OutOfMemoryError("memory backend page handles exhausted");
			}
			ByteBuffer[] next = java.util.Arrays.copyOf(current, current.length + 1);
			try {
				next[current.length] = ByteBuffer.allocateDirect(SLAB_PAGES * PAGE_SIZE);
			}
			catch (OutOfMemoryError ex) {
				// The JVM's direct memory limit (-XX:MaxDirectMemorySize, by default the heap size)
				// is reached: the client sees a full disk, not an I/O error.
				throw new NbdBackendException(NbdError.ENOSPC,
						"memory export cannot grow: direct memory exhausted (raise -XX:MaxDirectMemorySize)");
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

	}

}
