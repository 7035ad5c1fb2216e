package dev.nbd.backend;

import java.io.IOException;
import java.io.SyncFailedException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import dev.nbd.protocol.NbdError;

import static dev.nbd.backend.LinuxFileCalls.FALLOC_FL_KEEP_SIZE;
import static dev.nbd.backend.LinuxFileCalls.FALLOC_FL_PUNCH_HOLE;
import static dev.nbd.backend.LinuxFileCalls.FALLOC_FL_ZERO_RANGE;
import static dev.nbd.backend.LinuxFileCalls.SEEK_DATA;
import static dev.nbd.backend.LinuxFileCalls.SEEK_HOLE;

/**
 * An export backed by one file, read and written with positional I/O on a single shared
 * {@link FileChannel} (no per-connection state, so safe for many connections: a
 * {@code force} makes every write that has returned durable, whichever connection made it).
 *
 * <p>Sparse files stay sparse, as with qemu-nbd and nbdkit's file plugin, where the platform
 * allows (64-bit Linux, through {@link LinuxFileCalls}; which calls the filesystem supports is
 * probed once at open and shown in {@link #details()}):
 * <ul>
 * <li>A missing file is created sparse, and a short one extended sparsely ({@code ftruncate}).</li>
 * <li>BLOCK_STATUS reports holes ({@code lseek} {@code SEEK_DATA}/{@code SEEK_HOLE}) as
 * hole+zero; a few calls per extent, whatever the file's size.</li>
 * <li>TRIM punches holes ({@code FALLOC_FL_PUNCH_HOLE}), so the file's allocation shrinks.</li>
 * <li>WRITE_ZEROES punches a hole, or with NO_HOLE zeroes the range in place
 * ({@code FALLOC_FL_ZERO_RANGE}; where that is missing, as on tmpfs, punch then allocate again,
 * as qemu does). Both are fast, so FAST_ZERO is offered; a FAST_ZERO request with no fast way
 * left is refused with {@code NBD_ENOTSUP} before anything is written.</li>
 * </ul>
 * Without these calls the backend falls back to what plain Java allows: no extents (all data),
 * no trim, zeroes written.
 *
 * <p>FLUSH is {@code FileChannel.force(false)}, i.e. {@code fdatasync}. A FUA write goes through
 * a second descriptor opened with {@code O_DSYNC}: the kernel syncs that write's range alone
 * before returning, instead of a flush of every dirty page of the file. ({@code sync_file_range}
 * would be cheaper still but is not durable: it neither commits metadata nor flushes the
 * disk's cache.) CACHE reads the range through the page cache (a real prefetch).
 */
public class FileBackend implements ExportBackend, AutoCloseable {

	private static final Logger logger = LoggerFactory.getLogger(FileBackend.class);

	private static final int ZERO_CHUNK = 1 << 20;

	private static final ByteBuffer ZEROES = ByteBuffer.allocateDirect(ZERO_CHUNK).asReadOnlyBuffer();

	private final String name;

	private final Path path;

	private final long size;

	private final String description;

	private final boolean readOnly;

	private final FileChannel channel;

	/** The same file opened with O_DSYNC, for FUA writes; null when read-only. */
	private final FileChannel syncChannel;

	private final boolean offerFile;

	/** Our own descriptor for fallocate and lseek, or null when those calls are unavailable. */
	private LinuxFileCalls.Descriptor sparse;

	private volatile boolean seekHoles;

	private volatile boolean punchHoles;

	private volatile boolean zeroRanges;

	private volatile boolean preallocates;

	/** Why a feature fell back, by feature ("extents", "trim", "zero-range", "allocate"). */
	private final Map<String, String> fallbacks = new ConcurrentHashMap<>();

	/**
	 * Opens (creating if missing, unless read-only) {@code path}. A {@code size} of -1 takes the
	 * file's current length; otherwise a shorter file is extended (sparsely) to {@code size}.
	 * The file is offered through {@link #servedFile()}: the server's export policy
	 * ({@code EventLoopIo}, adaptive by default) decides whether reads and plain writes run on its
	 * network threads.
	 */
	public FileBackend(String name, Path path, long size, String description, boolean readOnly) throws IOException {
		this(name, path, size, description, readOnly, true);
	}

	/**
	 * As above; {@code offerFile} false keeps the file from the server ({@link #servedFile()}
	 * returns null), so every read and write runs on its worker threads, whatever its policy.
	 */
	public FileBackend(String name, Path path, long size, String description, boolean readOnly, boolean offerFile)
			throws IOException {
		this.offerFile = offerFile;
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
		try {
			long current = this.channel.size();
			if (size < 0) {
				this.size = current;
			}
			else {
				if (current < size && !readOnly) {
					// ftruncate: the new length is one hole, nothing allocated.
					try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
						file.setLength(size);
					}
				}
				else if (current < size) {
					throw new IOException(path + " is " + current + " bytes, shorter than the export size " + size);
				}
				this.size = size;
			}
			this.syncChannel = readOnly ? null
					: FileChannel.open(path, StandardOpenOption.WRITE, StandardOpenOption.DSYNC);
		}
		catch (IOException | RuntimeException ex) {
			this.channel.close();
			throw ex;
		}
		probe();
	}

	/** Finds, once, which sparse-file calls this platform and filesystem offer. */
	private void probe() {
		String unavailable;
		try {
			unavailable = LinuxFileCalls.unavailable();
		}
		catch (LinkageError ex) {
			// JNA excluded from the classpath.
			unavailable = "JNA unavailable: " + ex;
		}
		if (unavailable == null && !Files.isRegularFile(this.path)) {
			unavailable = "not a regular file";
		}
		if (unavailable == null) {
			try {
				this.sparse = LinuxFileCalls.open(this.path, !this.readOnly);
			}
			catch (IOException ex) {
				unavailable = ex.getMessage();
			}
		}
		if (unavailable != null) {
			for (String feature : this.readOnly ? new String[] { "extents" }
					: new String[] { "extents", "trim", "zero-range", "allocate" }) {
				this.fallbacks.put(feature, unavailable);
			}
		}
		else {
			try {
				this.sparse.seek(0, SEEK_HOLE);
				this.seekHoles = true;
			}
			catch (LinuxFileCalls.ErrnoException ex) {
				this.fallbacks.put("extents", ex.getMessage());
			}
			if (!this.readOnly) {
				probeFallocate();
			}
		}
		if (this.fallbacks.isEmpty()) {
			logger.info("File export '{}' ({}): sparse (SEEK_DATA/SEEK_HOLE, punch hole, zero range), FUA with O_DSYNC",
					this.name, this.path);
		}
		else if (this.seekHoles && (this.readOnly || this.punchHoles)) {
			// Holes are kept and reported; only a way of zeroing is missing (tmpfs: zero range).
			logger.info("File export '{}' ({}): sparse, with fallbacks for {}", this.name, this.path, this.fallbacks);
		}
		else {
			logger.warn("File export '{}' ({}) is not kept sparse, falling back to plain file I/O for {}", this.name,
					this.path, this.fallbacks);
		}
	}

	/**
	 * Tries each fallocate mode on a scratch file in the same directory (same filesystem), so
	 * the export's own blocks are never touched by a probe. When no scratch file can be made,
	 * each mode is tried at first use instead (and dropped if the filesystem refuses it).
	 */
	private void probeFallocate() {
		Path dir = this.path.toAbsolutePath().getParent();
		Path scratch;
		try {
			scratch = Files.createTempFile(dir, ".nbd-probe-", ".tmp");
		}
		catch (IOException | RuntimeException ex) {
			logger.debug("Cannot probe fallocate in {}: tried at first use instead", dir, ex);
			this.punchHoles = true;
			this.zeroRanges = true;
			this.preallocates = true;
			return;
		}
		try (LinuxFileCalls.Descriptor probe = LinuxFileCalls.open(scratch, true)) {
			this.preallocates = supports(probe, 0, 8192, "allocate");
			this.punchHoles = supports(probe, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, "trim");
			this.zeroRanges = supports(probe, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 4096, "zero-range");
		}
		catch (IOException ex) {
			this.fallbacks.putIfAbsent("trim", ex.getMessage());
			this.fallbacks.putIfAbsent("zero-range", ex.getMessage());
			this.fallbacks.putIfAbsent("allocate", ex.getMessage());
		}
		finally {
			try {
				Files.deleteIfExists(scratch);
			}
			catch (IOException ex) {
				logger.warn("Could not delete probe file {}", scratch, ex);
			}
		}
	}

	private boolean supports(LinuxFileCalls.Descriptor probe, int mode, long length, String feature) {
		try {
			probe.fallocate(mode, 0, length);
			return true;
		}
		catch (LinuxFileCalls.ErrnoException ex) {
			if (ex.unsupported()) {
				this.fallbacks.put(feature, ex.getMessage());
				return false;
			}
			// Failed for another reason (a full disk, say): the call itself exists.
			return true;
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

	/** FUA writes go through the O_DSYNC descriptor: only their own range is synced. */
	@Override
	public boolean canFua() {
		return !this.readOnly;
	}

	@Override
	public boolean canTrim() {
		return !this.readOnly && this.punchHoles;
	}

	@Override
	public boolean canZero() {
		return !this.readOnly && (this.punchHoles || this.zeroRanges);
	}

	@Override
	public boolean canFastZero() {
		return canZero();
	}

	@Override
	public boolean canExtents() {
		return this.seekHoles;
	}

	@Override
	public boolean canCache() {
		return true;
	}

	/** This file unless built without {@code offerFile}: the server may run reads and plain writes on its network threads. */
	@Override
	public FileChannel servedFile() {
		return this.offerFile ? this.channel : null;
	}

	/**
	 * The file, and for each sparse-file feature the call that serves it or, after
	 * {@code fallback}, why it is not used.
	 */
	@Override
	public Map<String, Object> details() {
		Map<String, Object> details = new LinkedHashMap<>();
		details.put("type", "file");
		details.put("path", this.path.toAbsolutePath().toString());
		details.put("extents", this.seekHoles ? "lseek SEEK_DATA/SEEK_HOLE" : "none: all data");
		if (!this.readOnly) {
			details.put("trim", this.punchHoles ? "fallocate PUNCH_HOLE" : "none: ignored");
			details.put("zero", this.punchHoles ? "fallocate PUNCH_HOLE"
					: this.zeroRanges ? "fallocate ZERO_RANGE" : "writes zeroes");
			details.put("zeroNoHole", this.zeroRanges ? "fallocate ZERO_RANGE"
					: (this.punchHoles && this.preallocates) ? "fallocate PUNCH_HOLE then allocate" : "writes zeroes");
			details.put("fastZero", canFastZero());
			details.put("fua", "write through an O_DSYNC descriptor");
		}
		details.put("fallback", Map.copyOf(this.fallbacks));
		return details;
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
		FileChannel target = fua ? this.syncChannel : this.channel;
		try {
			while (src.hasRemaining()) {
				offset += target.write(src, offset);
			}
		}
		catch (IOException | RuntimeException ex) {
			// An O_DSYNC write that failed with EIO may have failed in its sync: latched like a
			// failed flush. (ENOSPC, EPERM... fail before anything is written.)
			throw failed("write at " + offset, (fua && BackendErrors.errorOf(ex) == NbdError.EIO) ? syncFailure(ex) : ex);
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

	/** The sync of a FUA trim or zero: its failure is a failed sync, latched by the server. */
	private void syncForFua() throws IOException {
		try {
			this.channel.force(false);
		}
		catch (IOException | RuntimeException ex) {
			throw failed("fdatasync", syncFailure(ex));
		}
	}

	private static SyncFailedException syncFailure(Throwable ex) {
		SyncFailedException failure = new SyncFailedException(String.valueOf(ex.getMessage()));
		failure.initCause(ex);
		return failure;
	}

	@Override
	public void trim(long offset, long length, boolean fua) throws IOException {
		// A hint: where holes cannot be punched (any more), nothing is done.
		if (this.punchHoles) {
			fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length, "trim");
		}
		if (fua) {
			syncForFua();
		}
	}

	@Override
	public void zero(long offset, long length, boolean mayTrim, boolean fast, boolean fua) throws IOException {
		if (!zeroInPlace(offset, length, mayTrim)) {
			if (fast) {
				throw new NbdBackendException(NbdError.ENOTSUP, "no fast way to zero on " + this.path);
			}
			writeZeroes(offset, length);
		}
		if (fua) {
			syncForFua();
		}
	}

	/** Zeroes with fallocate, honouring {@code mayTrim}; false when no call could (nothing done). */
	private boolean zeroInPlace(long offset, long length, boolean mayTrim) throws IOException {
		int punch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		if (mayTrim && this.punchHoles && fallocate(punch, offset, length, "trim")) {
			return true;
		}
		if (this.zeroRanges && fallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length, "zero-range")) {
			return true;
		}
		// NO_HOLE without ZERO_RANGE (tmpfs): punch, then allocate the range again, as qemu does.
		if (!mayTrim && this.punchHoles && this.preallocates && fallocate(punch, offset, length, "trim")) {
			// Zeroes now; should allocating fail after all, the range stays a hole, still zeroes.
			fallocate(FALLOC_FL_KEEP_SIZE, offset, length, "allocate");
			return true;
		}
		return false;
	}

	/**
	 * One fallocate call; false (and the feature dropped, with the reason kept for
	 * {@link #details()}) when the filesystem does not support it.
	 */
	private boolean fallocate(int mode, long offset, long length, String feature) throws IOException {
		try {
			this.sparse.fallocate(mode, offset, length);
			return true;
		}
		catch (LinuxFileCalls.ErrnoException ex) {
			if (ex.unsupported()) {
				disable(feature, ex.getMessage());
				return false;
			}
			throw new NbdBackendException(ex.nbdError(), ex.getMessage() + " on " + this.path, ex);
		}
	}

	/** Stops using a fallocate mode ("trim", "zero-range" or "allocate"), keeping the reason. */
	void disable(String feature, String reason) {
		if (this.fallbacks.putIfAbsent(feature, reason) == null) {
			logger.warn("File export '{}': {} falls back ({})", this.name, feature, reason);
		}
		switch (feature) {
			case "trim" -> this.punchHoles = false;
			case "zero-range" -> this.zeroRanges = false;
			case "allocate" -> this.preallocates = false;
			default -> throw new IllegalArgumentException(feature);
		}
	}

	private void writeZeroes(long offset, long length) throws IOException {
		long end = offset + length;
		try {
			while (offset < end) {
				ByteBuffer chunk = ZEROES.duplicate();
				chunk.limit((int) Math.min(ZERO_CHUNK, end - offset));
				while (chunk.hasRemaining()) {
					offset += this.channel.write(chunk, offset);
				}
			}
		}
		catch (IOException | RuntimeException ex) {
			throw failed("write of zeroes at " + offset, ex);
		}
	}

	/** Holes (and the part of a short read-only file past its end) as hole+zero, the rest as data. */
	@Override
	public void extents(long offset, long length, ExtentSink sink) throws IOException {
		long end = offset + length;
		long pos = offset;
		try {
			while (pos < end) {
				long data = this.sparse.seek(pos, SEEK_DATA);
				if (data < 0 || data >= end) {
					sink.extent(end - pos, HOLE | ZERO);
					return;
				}
				if (data > pos) {
					if (!sink.extent(data - pos, HOLE | ZERO)) {
						return;
					}
					pos = data;
				}
				long hole = this.sparse.seek(pos, SEEK_HOLE);
				if (hole == pos) {
					// Punched between the two calls: look again.
					continue;
				}
				long dataEnd = (hole < 0) ? end : Math.min(hole, end);
				if (!sink.extent(dataEnd - pos, 0)) {
					return;
				}
				pos = dataEnd;
			}
		}
		catch (LinuxFileCalls.ErrnoException ex) {
			// Reporting data is always correct: the rest as data.
			logger.debug("File export '{}': lseek failed, reporting data", this.name, ex);
			sink.extent(end - pos, 0);
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

	/** A failure as the NBD error it means (ENOSPC, EPERM, ENOMEM or EIO), naming the file. */
	private NbdBackendException failed(String what, Throwable ex) {
		return BackendErrors.translate(what + " of " + this.path, ex);
	}

	@Override
	public void close() throws IOException {
		try (FileChannel main = this.channel; FileChannel sync = this.syncChannel;
				LinuxFileCalls.Descriptor descriptor = this.sparse) {
			// Each closed, in reverse order, even when one fails.
		}
	}

}
