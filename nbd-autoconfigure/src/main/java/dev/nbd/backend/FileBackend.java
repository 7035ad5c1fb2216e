package dev.nbd.backend;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.EnumSet;
import java.util.Set;

/**
 * An export backed by one file, read and written with positional I/O on a single shared
 * {@link FileChannel} (no per-connection state, so safe for many connections: a
 * {@code force} makes every write that has returned durable, whichever connection made it).
 *
 * <p>What plain Java allows, and the choices made:
 * <ul>
 * <li>The file is created sparse when missing ({@code SPARSE} plus extending the length
 * without writing).</li>
 * <li>FLUSH is {@code FileChannel.force(false)}, i.e. {@code fdatasync}. FUA is not native:
 * Java has no per-write {@code O_DSYNC}, so the server follows a FUA write with a flush, which
 * its group commit shares between concurrent requests.</li>
 * <li>Trim is not offered: Java cannot punch holes ({@code fallocate}), and writing zeroes
 * instead would allocate what the client wanted freed.</li>
 * <li>Extents are not offered: Java has no {@code SEEK_DATA}/{@code SEEK_HOLE}, so the export
 * reports all data, which the protocol allows.</li>
 * <li>CACHE reads the range through the page cache (a real prefetch).</li>
 * </ul>
 */
public class FileBackend implements ExportBackend, AutoCloseable {

	private final String name;

	private final Path path;

	private final long size;

	private final String description;

	private final boolean readOnly;

	private final FileChannel channel;

	private final boolean eventLoopIo;

	/**
	 * Opens (creating if missing, unless read-only) {@code path}. A {@code size} of -1 takes the
	 * file's current length; otherwise a shorter file is extended (sparsely) to {@code size}.
	 * Every I/O runs on the server's worker threads.
	 */
	public FileBackend(String name, Path path, long size, String description, boolean readOnly) throws IOException {
		this(name, path, size, description, readOnly, false);
	}

	/**
	 * As above; {@code eventLoopIo} offers the file through {@link #servedFile()}, so reads
	 * ({@code pread}, or {@code sendfile} for large ones without TLS) and plain writes run on the
	 * network threads: faster on storage that stays in the page cache, but a cache miss or a
	 * write throttled by the kernel then stalls every connection on that thread.
	 */
	public FileBackend(String name, Path path, long size, String description, boolean readOnly, boolean eventLoopIo)
			throws IOException {
		this.eventLoopIo = eventLoopIo;
		this.name = name;
		this.path = path;
		this.description = description;
		this.readOnly = readOnly;
		Set<StandardOpenOption> options = readOnly ? EnumSet.of(StandardOpenOption.READ)
				: EnumSet.of(StandardOpenOption.READ, StandardOpenOption.WRITE, StandardOpenOption.CREATE,
						StandardOpenOption.SPARSE);
		if (!readOnly && path.getParent() != null) {
			Files.createDirectories(path.getParent());
		}
		this.channel = FileChannel.open(path, options);
		long current = this.channel.size();
		if (size < 0) {
			this.size = current;
		}
		else {
			if (current < size && !readOnly) {
				// Writing the last byte extends the file without allocating the blocks before it.
				this.channel.write(ByteBuffer.wrap(new byte[1]), size - 1);
			}
			else if (current < size) {
				throw new IOException(path + " is " + current + " bytes, shorter than the export size " + size);
			}
			this.size = size;
		}
	}

	public Path path() {
		return this.path;
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
	public boolean canWritePieces() {
		// Positional writes into the page cache: any split of a payload lands the same bytes.
		return true;
	}

	@Override
	public boolean canFlush() {
		return !this.readOnly;
	}

	@Override
	public boolean canCache() {
		return true;
	}

	/** This file when built with {@code eventLoopIo}: reads and plain writes then run on network threads. */
	@Override
	public FileChannel servedFile() {
		return this.eventLoopIo ? this.channel : null;
	}

	@Override
	public void read(long offset, ByteBuffer dst) throws IOException {
		try {
			while (dst.hasRemaining()) {
				int n = this.channel.read(dst, offset);
				if (n < 0) {
					// Past the end of a file shorter than the export (read-only case): zeroes.
					while (dst.hasRemaining()) {
						dst.put((byte) 0);
					}
					return;
				}
				offset += n;
			}
		}
		catch (IOException | RuntimeException ex) {
			throw failed("read at " + offset, ex);
		}
	}

	@Override
	public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
		try {
			while (src.hasRemaining()) {
				offset += this.channel.write(src, offset);
			}
		}
		catch (IOException | RuntimeException ex) {
			throw failed("write at " + offset, ex);
		}
		if (fua) {
			flush();
		}
	}

	@Override
	public void flush() throws IOException {
		try {
			this.channel.force(false);
		}
		catch (IOException | RuntimeException ex) {
			// The server latches a failed sync for the export: the kernel may have dropped the
			// dirty pages, so a later fdatasync that succeeds would not mean the data is safe.
			throw failed("fdatasync", ex);
		}
	}

	@Override
	public void cache(long offset, long length) throws IOException {
		try {
			ByteBuffer scratch = ByteBuffer.allocateDirect((int) Math.min(length, 1 << 20));
			long end = offset + length;
			while (offset < end) {
				scratch.clear().limit((int) Math.min(scratch.capacity(), end - offset));
				int n = this.channel.read(scratch, offset);
				if (n <= 0) {
					return;
				}
				offset += n;
			}
		}
		catch (IOException | RuntimeException | OutOfMemoryError ex) {
			throw failed("cache at " + offset, ex);
		}
	}

	@Override
	public void close() throws IOException {
		this.channel.close();
	}

	/** A failure as the NBD error it means (ENOSPC, EPERM, ENOMEM or EIO), naming the file. */
	private NbdBackendException failed(String what, Throwable ex) {
		return BackendErrors.translate(what + " of " + this.path, ex);
	}

}
