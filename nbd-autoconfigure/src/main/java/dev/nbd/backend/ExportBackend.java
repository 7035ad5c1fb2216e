package dev.nbd.backend;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.util.Map;

import dev.nbd.protocol.NbdError;

/**
 * A block device served as one NBD export: the contract between the server and storage,
 * modelled on nbdkit's plugin callbacks. Implement it as a Spring {@code @Bean} and it becomes
 * an export named {@link #name()}.
 *
 * <h2>Capabilities</h2> Every optional feature is declared by a {@code can…}/{@code is…}
 * method; the server advertises exactly what is declared and never calls an operation that is
 * not. The defaults describe the smallest backend: read and write only.
 *
 * <h2>Threading</h2> Methods are called concurrently: from several requests of one connection
 * (NBD pipelines) and from several connections. Implementations must be thread-safe. Requests
 * never overlap in a way the protocol defines an outcome for, so a backend needs no ordering
 * between concurrent calls beyond its own memory safety. Blocking backends
 * ({@link #isBlocking()}, the default) are called from worker threads, never from a network
 * event loop.
 *
 * <h2>Durability</h2> The server replies to a write only after {@link #write} returned, and to
 * a FLUSH only after {@link #flush()} returned. {@code flush()} must make durable every write
 * that has returned, whichever connection issued it. A backend that cannot promise this (for
 * example one that buffers writes per connection in {@link #connect()} views) must leave
 * {@link #isMultiConnSafe()} false.
 *
 * <h2>Errors</h2> Throw {@link NbdBackendException} to choose the NBD error a client sees; any
 * other exception is mapped by {@link BackendErrors} (a full disk to {@code NBD_ENOSPC}, a
 * read-only file system to {@code NBD_EPERM}, {@link OutOfMemoryError} to {@code NBD_ENOMEM}, the
 * rest to {@code NBD_EIO}). A failed {@link #flush()} is latched by the server: every later FLUSH
 * and FUA request of the export fails. A backend doing FUA itself whose sync fails throws (or
 * wraps) {@link java.io.SyncFailedException} so that it is latched too.
 *
 * <p>{@link #read} must fill its buffer (and {@link #lend} lend exactly the length asked): a read
 * left short is answered with {@code NBD_EIO}, so no client receives stale buffer contents.
 */
public interface ExportBackend {

	/** Export name clients ask for ({@code nbdinfo nbd://host/NAME}). */
	String name();

	/** Size in bytes. Called at each connection's negotiation. */
	long size() throws IOException;

	/** Free-form description, sent as {@code NBD_INFO_DESCRIPTION}; null for none. */
	default String description() {
		return null;
	}

	/** Whether the export refuses every write-type command ({@code NBD_EPERM}). */
	default boolean isReadOnly() {
		return false;
	}

	/**
	 * Whether a flush or FUA on one connection makes writes from every connection durable and
	 * visible to every connection. Declaring true lets the server advertise
	 * {@code NBD_FLAG_CAN_MULTI_CONN}; leave false for backends with per-connection state.
	 */
	default boolean isMultiConnSafe() {
		return false;
	}

	/** Whether calls may block on I/O; false lets the server call from its event loops. */
	default boolean isBlocking() {
		return true;
	}

	/** Whether {@link #flush()} does anything (otherwise FLUSH is not advertised). */
	default boolean canFlush() {
		return false;
	}

	/** Whether {@link #write} honours {@code fua} natively; otherwise the server flushes after it. */
	default boolean canFua() {
		return false;
	}

	/** Whether {@link #trim} is supported. */
	default boolean canTrim() {
		return false;
	}

	/**
	 * Whether {@link #zero} is supported efficiently. When false the server still offers
	 * WRITE_ZEROES, emulated with writes of zeroes.
	 */
	default boolean canZero() {
		return false;
	}

	/** Whether {@link #zero} can honour {@code fast} (zero without falling back to writing). */
	default boolean canFastZero() {
		return false;
	}

	/** Whether {@link #cache} does something useful (prefetch). */
	default boolean canCache() {
		return false;
	}

	/** Whether {@link #extents} reports real allocation (otherwise all data, no holes). */
	default boolean canExtents() {
		return false;
	}

	/** Whether the device is rotational (a scheduling hint for clients). */
	default boolean isRotational() {
		return false;
	}

	/** Smallest I/O unit; requests not aligned to it get {@code NBD_EINVAL}. Power of two, 1 to 65536. */
	default int minimumBlockSize() {
		return 1;
	}

	/** Preferred I/O size (a hint to clients). Power of two, at least 512. */
	default int preferredBlockSize() {
		return 4096;
	}

	/**
	 * A file holding the export's bytes at the same offsets, or null (the default). When set,
	 * the server may run reads and plain writes on its network thread instead of handing them to
	 * a worker (two thread wake-ups saved per request): READ as data from the file (small ones
	 * through {@link #read}, large ones with {@code sendfile} when TLS is off), WRITE through
	 * {@link #write}. Flushes, FUA writes and zeroing still go to workers. Whether it does is the
	 * export's policy ({@code EventLoopIo}): by default only while those calls are fast (page
	 * cache), falling back to workers while they are slow. The file must be at least
	 * {@link #size()} long.
	 */
	default FileChannel servedFile() {
		return null;
	}

	/**
	 * Whether {@link #write} may receive one WRITE's payload in several consecutive pieces (as it
	 * arrived from the network, at any byte boundary, never with {@code fua}), so the server need
	 * not gather a large payload into one buffer first. Leave false for backends that need whole,
	 * block-aligned writes (checksums, encryption, devices with a sector size).
	 */
	default boolean canWritePieces() {
		return false;
	}

	/**
	 * Facts about how this backend serves its export, shown with the export by the actuator's
	 * {@code nbd} endpoint (the file backend lists the system calls it uses and why any fell
	 * back). Values must serialize to JSON; empty by default.
	 */
	default Map<String, Object> details() {
		return Map.of();
	}

	/** Read {@code dst.remaining()} bytes at {@code offset} into {@code dst}. */
	void read(long offset, ByteBuffer dst) throws IOException;

	/**
	 * Lends the backend's own memory holding {@code [offset, offset+length)} so a large READ reply
	 * goes to the socket without being copied first; null (the default) makes the server copy
	 * with {@link #read}. The server only reads the buffers and calls {@link Lent#release()} once
	 * the reply has been sent (or dropped). Until then the backend must not reuse that memory for
	 * other offsets; writes to the same offsets may change it, as a READ that overlaps a WRITE in
	 * flight may return either data.
	 */
	default Lent lend(long offset, int length) throws IOException {
		return null;
	}

	/**
	 * Write {@code src.remaining()} bytes at {@code offset}. When {@code fua} is true (only if
	 * {@link #canFua()}), the data must be durable on return.
	 */
	void write(long offset, ByteBuffer src, boolean fua) throws IOException;

	/** Make every write that has returned durable. */
	default void flush() throws IOException {
	}

	/** Discard a range; its contents may read back as anything afterwards. */
	default void trim(long offset, long length, boolean fua) throws IOException {
		throw new NbdBackendException(NbdError.EINVAL, "trim not supported");
	}

	/**
	 * Make a range read back as zeroes. {@code mayTrim} allows deallocating; {@code fast} asks to
	 * fail with {@link NbdError#ENOTSUP} rather than zero slowly.
	 */
	default void zero(long offset, long length, boolean mayTrim, boolean fast, boolean fua) throws IOException {
		throw new NbdBackendException(NbdError.ENOTSUP, "zero not supported");
	}

	/** Prefetch a range. */
	default void cache(long offset, long length) throws IOException {
	}

	/**
	 * Report allocation of {@code [offset, offset+length)} in ascending, contiguous extents,
	 * starting at {@code offset}. Reporting may stop early (the client asks again) but must
	 * report at least one extent.
	 */
	default void extents(long offset, long length, ExtentSink sink) throws IOException {
		sink.extent(length, 0);
	}

	/**
	 * The view used by one client connection; called once per connection after negotiation.
	 * Backends with per-connection state return a fresh view, whose {@link #disconnect()} is
	 * called when the connection ends. The default shares this backend.
	 */
	default ExportBackend connect() throws IOException {
		return this;
	}

	/** Called on a view returned by {@link #connect()} when its connection has ended. */
	default void disconnect() throws IOException {
	}

	/** Memory lent by {@link #lend}: the requested bytes in order, valid until {@link #release()}. */
	interface Lent {

		/** The bytes, in order, from each buffer's position to its limit. */
		ByteBuffer[] buffers();

		/** Ends the loan; called exactly once. */
		void release();

	}

	/** Receives extents: {@code flags} is a combination of {@link #HOLE} and {@link #ZERO}. */
	@FunctionalInterface
	interface ExtentSink {

		/** Reports the next extent; returns false when the server wants no more. */
		boolean extent(long length, int flags);

	}

	/** Extent flag: not allocated. */
	int HOLE = 1;

	/** Extent flag: reads as zeroes. */
	int ZERO = 2;

}
