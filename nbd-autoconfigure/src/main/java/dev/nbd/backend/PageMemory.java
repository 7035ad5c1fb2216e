package dev.nbd.backend;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.FileStore;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Memory a {@link MemoryBackend} owns, handed out in slabs, outside the JVM's direct-memory
 * limit, so that a memory export of size S holds S bytes whatever -XX:MaxDirectMemorySize is and
 * never takes buffers from the pool the network uses.
 *
 * <p>Why a private mapping of a deleted, sparse temporary file: it is anonymous memory in all but
 * name (a write to a MAP_PRIVATE page copies it into the process's own memory and nothing is ever
 * written back to the file, which holds no blocks), it is a plain direct {@link ByteBuffer} that
 * can be lent to Netty without a copy, and it needs only public Java APIs. The alternatives do
 * not work without JVM flags: Netty's {@code PlatformDependent.directBuffer(address, size)} needs
 * {@code --add-opens java.base/java.nio} and {@code -Dio.netty.tryReflectionSetAccessible=true}
 * on Java 17, and Netty 4.2 disables {@code sun.misc.Unsafe} altogether on Java 24+; the foreign
 * memory API needs Java 22. Each region gets a file of its own that is deleted and closed once
 * mapped, so no file or descriptor remains; the mapping lives until its buffers are collected.
 *
 * <p>The first write to a private page reads the file's page (a hole: zeroes) into the page cache
 * before copying it; on a disk file system those are clean pages the kernel reclaims first. On
 * tmpfs they would be shared memory that cannot be reclaimed, doubling what the export costs, so
 * there the mapping is shared instead (one copy, in the tmpfs, which nothing writes back) and a
 * new slab is taken only while the tmpfs has room for it. Where no temporary file can be mapped,
 * slabs fall back to direct buffers (with a WARN), which count against the JVM's direct-memory
 * limit as before.
 */
final class PageMemory {

	private static final Logger logger = LoggerFactory.getLogger(PageMemory.class);

	/** Largest region mapped at once: few mappings (vm.max_map_count), no memory until written. */
	static final long MAX_REGION = 64L << 20;

	/** Room a tmpfs keeps beyond a new slab: other users of it must not run out because of us. */
	static final long TMPFS_RESERVE = 16L << 20;

	private final String name;

	private final Path directory;

	private final int slabSize;

	private final int slabsPerRegion;

	private final List<ByteBuffer> regions = new ArrayList<>();

	private boolean direct;

	/** The tmpfs holding shared mappings, or null for private mappings of a disk file. */
	private FileStore tmpfs;

	private boolean storeChecked;

	/** Sizes regions for an export of {@code exportSize} bytes (a small export maps just its size). */
	PageMemory(String name, long exportSize, int slabSize) {
		this(name, exportSize, slabSize, Path.of(System.getProperty("java.io.tmpdir")));
	}

	PageMemory(String name, long exportSize, int slabSize, Path directory) {
		this.name = name;
		this.directory = directory;
		this.slabSize = slabSize;
		long region = Math.min(MAX_REGION, Math.max(slabSize, (exportSize + slabSize - 1) / slabSize * slabSize));
		this.slabsPerRegion = (int) (region / slabSize);
	}

	/** Memory of slab {@code index}: zeroes until written. Slabs are asked for in order. */
	ByteBuffer slab(int index) throws IOException {
		if (this.direct) {
			return ByteBuffer.allocateDirect(this.slabSize);
		}
		int region = index / this.slabsPerRegion;
		if (this.tmpfs != null && this.tmpfs.getUsableSpace() < this.slabSize + TMPFS_RESERVE) {
			throw new IOException("the tmpfs at " + this.directory + " is full");
		}
		if (region == this.regions.size()) {
			try {
				this.regions.add(map((long) this.slabsPerRegion * this.slabSize));
			}
			catch (IOException | UnsupportedOperationException ex) {
				if (!this.regions.isEmpty()) {
					// Mapping worked before: out of address space or mappings, not unsupported.
					throw ex;
				}
				logger.warn("Memory export '{}' cannot map memory of its own ({}); its pages come out of the "
						+ "JVM's direct-memory limit instead (-XX:MaxDirectMemorySize)", this.name, ex.toString());
				this.direct = true;
				return ByteBuffer.allocateDirect(this.slabSize);
			}
		}
		int start = (index % this.slabsPerRegion) * this.slabSize;
		return this.regions.get(region).slice(start, this.slabSize);
	}

	private ByteBuffer map(long size) throws IOException {
		if (!this.storeChecked) {
			FileStore store = Files.getFileStore(this.directory);
			this.tmpfs = "tmpfs".equals(store.type()) ? store : null;
			this.storeChecked = true;
		}
		Path file = Files.createTempFile(this.directory, "nbd-memory-", ".pages");
		try (FileChannel channel = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE,
				StandardOpenOption.DELETE_ON_CLOSE)) {
			try {
				// Unlinked at once (where the platform allows it): nothing is left behind on a crash.
				Files.deleteIfExists(file);
			}
			catch (IOException ex) {
				// Windows: DELETE_ON_CLOSE removes it when the channel closes.
			}
			// Mapping past the end grows the file sparsely; private pages are never written back.
			return channel.map((this.tmpfs != null) ? FileChannel.MapMode.READ_WRITE : FileChannel.MapMode.PRIVATE, 0,
					size);
		}
		catch (OutOfMemoryError ex) {
			// "Map failed": the JDK throws this when mmap returns ENOMEM.
			throw new IOException("cannot map " + size + " bytes: " + ex.getMessage(), ex);
		}
	}

}
