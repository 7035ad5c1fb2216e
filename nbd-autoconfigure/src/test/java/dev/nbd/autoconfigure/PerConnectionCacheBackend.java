package dev.nbd.autoconfigure;

import java.nio.ByteBuffer;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;

import dev.nbd.backend.ExportBackend;

/**
 * A backend that is honestly unsafe for several connections: each connection gets a view with
 * its own write-back cache, which also keeps what it has read. Only the view's {@link View#flush}
 * writes its dirty blocks back to the shared store and drops its cache, so without emulation
 * one connection neither sees another's writes nor re-reads what changed underneath it.
 */
final class PerConnectionCacheBackend implements ExportBackend {

	private static final int BLOCK = 4096;

	private final String name;

	private final byte[] store;

	PerConnectionCacheBackend(String name, int size) {
		this.name = name;
		this.store = new byte[size];
	}

	@Override
	public String name() {
		return this.name;
	}

	@Override
	public long size() {
		return this.store.length;
	}

	@Override
	public boolean canFlush() {
		return true;
	}

	@Override
	public void read(long offset, ByteBuffer dst) {
		synchronized (this.store) {
			dst.put(this.store, (int) offset, dst.remaining());
		}
	}

	@Override
	public void write(long offset, ByteBuffer src, boolean fua) {
		synchronized (this.store) {
			src.get(this.store, (int) offset, src.remaining());
		}
	}

	@Override
	public ExportBackend connect() {
		return new View();
	}

	/** One connection's cached view. */
	private final class View implements ExportBackend {

		private final Map<Long, byte[]> cache = new HashMap<>();

		private final Set<Long> dirty = new HashSet<>();

		@Override
		public String name() {
			return PerConnectionCacheBackend.this.name;
		}

		@Override
		public long size() {
			return PerConnectionCacheBackend.this.store.length;
		}

		@Override
		public boolean canFlush() {
			return true;
		}

		@Override
		public synchronized void read(long offset, ByteBuffer dst) {
			while (dst.hasRemaining()) {
				long index = offset / BLOCK;
				int within = (int) (offset % BLOCK);
				int n = Math.min(BLOCK - within, dst.remaining());
				dst.put(block(index), within, n);
				offset += n;
			}
		}

		@Override
		public synchronized void write(long offset, ByteBuffer src, boolean fua) {
			while (src.hasRemaining()) {
				long index = offset / BLOCK;
				int within = (int) (offset % BLOCK);
				int n = Math.min(BLOCK - within, src.remaining());
				src.get(block(index), within, n);
				this.dirty.add(index);
				offset += n;
			}
		}

		/** Writes back what this connection wrote and forgets everything it cached. */
		@Override
		public synchronized void flush() {
			synchronized (PerConnectionCacheBackend.this.store) {
				for (long index : this.dirty) {
					System.arraycopy(this.cache.get(index), 0, PerConnectionCacheBackend.this.store,
							(int) (index * BLOCK), BLOCK);
				}
			}
			this.dirty.clear();
			this.cache.clear();
		}

		@Override
		public void disconnect() {
			flush();
		}

		private byte[] block(long index) {
			return this.cache.computeIfAbsent(index, i -> {
				byte[] b = new byte[BLOCK];
				synchronized (PerConnectionCacheBackend.this.store) {
					System.arraycopy(PerConnectionCacheBackend.this.store, (int) (i * BLOCK), b, 0, BLOCK);
				}
				return b;
			});
		}

	}

}
