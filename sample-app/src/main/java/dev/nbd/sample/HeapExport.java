package dev.nbd.sample;

import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.concurrent.locks.ReadWriteLock;
import java.util.concurrent.locks.ReentrantReadWriteLock;

import dev.nbd.backend.ExportBackend;

/**
 * The smallest useful backend, to copy: a block device in a Java byte array.
 *
 * <p>It declares what it can do and nothing more: writes land in the one shared array, so a
 * FLUSH (a no-op here) on any connection covers every write that has returned, and the export
 * is safe for several connections. Nothing blocks, so the server may call it from its event
 * loops. A read/write lock keeps each request atomic against a concurrent trim or zero.
 */
public class HeapExport implements ExportBackend {

	private final String name;

	private final byte[] data;

	private final ReadWriteLock lock = new ReentrantReadWriteLock();

	public HeapExport(String name, int size) {
		this.name = name;
		this.data = new byte[size];
	}

	@Override
	public String name() {
		return this.name;
	}

	@Override
	public long size() {
		return this.data.length;
	}

	@Override
	public String description() {
		return "64 MiB heap array defined in code (HeapExport)";
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
		return true;
	}

	@Override
	public boolean canZero() {
		return true;
	}

	@Override
	public void read(long offset, ByteBuffer dst) {
		this.lock.readLock().lock();
		try {
			dst.put(this.data, (int) offset, dst.remaining());
		}
		finally {
			this.lock.readLock().unlock();
		}
	}

	@Override
	public void write(long offset, ByteBuffer src, boolean fua) {
		this.lock.readLock().lock();
		try {
			src.get(this.data, (int) offset, src.remaining());
		}
		finally {
			this.lock.readLock().unlock();
		}
	}

	@Override
	public void zero(long offset, long length, boolean mayTrim, boolean fast, boolean fua) {
		this.lock.writeLock().lock();
		try {
			Arrays.fill(this.data, (int) offset, (int) (offset + length), (byte) 0);
		}
		finally {
			this.lock.writeLock().unlock();
		}
	}

}
