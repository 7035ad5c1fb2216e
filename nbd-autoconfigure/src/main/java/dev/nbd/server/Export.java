package dev.nbd.server;

import java.io.IOException;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executor;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.atomic.LongAdder;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.NbdBackendException;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;

/**
 * An export as the server runs it: the backend, its advertised flags, the connections open
 * on it, its flush coordination and its statistics.
 */
public final class Export {

	private static final Logger logger = LoggerFactory.getLogger(Export.class);

	private final ExportBackend backend;

	private final String name;

	private final ExportPolicy policy;

	private final MultiConnMode multiConnMode;

	private final List<Cidr> allowedAddresses;

	private final boolean readOnly;

	private final String description;

	private final int minimumBlockSize;

	private final int preferredBlockSize;

	private final Set<NbdConnection> connections = ConcurrentHashMap.newKeySet();

	private final FlushCoordinator sharedFlush;

	private final LatencyStats flushLatency = new LatencyStats();

	private final LongAdder bytesRead = new LongAdder();

	private final LongAdder bytesWritten = new LongAdder();

	/** Flush counts of closed connections' own coordinators (AUTO with an unsafe backend). */
	private final LongAdder closedFlushRequests = new LongAdder();

	private final LongAdder closedFlushSyncs = new LongAdder();

	/**
	 * The first failed sync, latched: once a sync has failed, writes the server acknowledged may
	 * be lost (the kernel can drop the dirty pages and a later fdatasync then succeeds), so no
	 * later FLUSH or FUA may claim durability until the export is opened anew.
	 */
	private final AtomicReference<Throwable> syncFailure = new AtomicReference<>();

	private final LongAdder syncFailures = new LongAdder();

	private final LongAdder unfilledReads = new LongAdder();

	private final AtomicBoolean unfilledReadLogged = new AtomicBoolean();

	/** Backend failures are logged at most once a second per error value. */
	private final LogRateLimit failureLog = new LogRateLimit();

	/** Where the served file's reads and plain writes run; null without a served file or with NEVER. */
	private final EventLoopFileIo fileIo;

	/** SINGLE: the connection holding the export, from negotiation until it closes. */
	private NbdConnection holder;

	/** An export whose policy is only a multi-connection mode and an allow-list. */
	public Export(ExportBackend backend, MultiConnMode multiConnMode, List<Cidr> allowedAddresses,
			Executor syncExecutor) {
		this(backend, ExportPolicy.builder().multiConn(multiConnMode).allowedAddresses(allowedAddresses).build(),
				Integer.MAX_VALUE, syncExecutor);
	}

	/**
	 * An export of {@code backend} under {@code policy} (see {@link ExportPolicy} for which side
	 * wins). Throws {@link IllegalArgumentException} when the resulting block sizes are invalid
	 * or exceed {@code maxPayload}.
	 */
	public Export(ExportBackend backend, ExportPolicy policy, int maxPayload, Executor syncExecutor) {
		// A backend that never blocks flushes on the calling (network) thread: no hand-off.
		syncExecutor = backend.isBlocking() ? syncExecutor : Runnable::run;
		this.backend = backend;
		this.name = backend.name();
		this.policy = policy;
		this.multiConnMode = policy.multiConn();
		this.allowedAddresses = policy.allowedAddresses();
		this.readOnly = policy.readOnly() || backend.isReadOnly();
		this.description = (policy.description() != null) ? policy.description() : backend.description();
		try {
			this.minimumBlockSize = (policy.minimumBlockSize() != 0) ? policy.minimumBlockSize()
					: backend.minimumBlockSize();
			ExportPolicy.checkMinimumBlockSize(this.minimumBlockSize);
			// A declared preference below the minimum is only a hint: raised to the minimum.
			this.preferredBlockSize = (policy.preferredBlockSize() != 0) ? policy.preferredBlockSize()
					: Math.max(backend.preferredBlockSize(), this.minimumBlockSize);
			ExportPolicy.checkPreferredBlockSize(this.preferredBlockSize, this.minimumBlockSize);
			if (this.preferredBlockSize > maxPayload) {
				throw new IllegalArgumentException("preferred block size " + this.preferredBlockSize
						+ " is larger than the maximum payload " + maxPayload);
			}
		}
		catch (IllegalArgumentException ex) {
			throw new IllegalArgumentException("export '" + this.name + "': " + ex.getMessage(), ex);
		}
		this.fileIo = (backend.servedFile() != null && policy.eventLoopIo() != EventLoopIo.NEVER)
				? new EventLoopFileIo(this.name, policy.eventLoopIo()) : null;
		if (backend.isMultiConnSafe()) {
			this.sharedFlush = new FlushCoordinator(latched(backend::flush), syncExecutor);
		}
		else if (this.multiConnMode == MultiConnMode.EMULATE) {
			this.sharedFlush = new FlushCoordinator(latched(this::flushAllViews), syncExecutor);
		}
		else {
			this.sharedFlush = null;
		}
	}

	public String name() {
		return this.name;
	}

	public ExportBackend backend() {
		return this.backend;
	}

	/** The policy the export was created with (its unset values left to the backend). */
	/** Where reads and plain writes of the backend's served file run, or null when they never run on network threads. */
	public EventLoopFileIo fileIo() {
		return this.fileIo;
	}

	public ExportPolicy policy() {
		return this.policy;
	}

	public MultiConnMode multiConnMode() {
		return this.multiConnMode;
	}

	public List<Cidr> allowedAddresses() {
		return this.allowedAddresses;
	}

	/**
	 * Whether {@code NBD_FLAG_CAN_MULTI_CONN} is advertised (and honoured). Never with SINGLE:
	 * clients that see the flag open more connections, which would then be refused.
	 */
	public boolean multiConn() {
		return switch (this.multiConnMode) {
			case SINGLE -> false;
			case EMULATE -> true;
			case AUTO -> this.backend.isMultiConnSafe();
		};
	}

	/**
	 * Takes the export for {@code connection} before it is told the export is ready. With
	 * SINGLE this fails while another connection holds it (checked and taken atomically, so
	 * two clients negotiating at once cannot both win); the hold ends when the channel closes.
	 */
	boolean claim(NbdConnection connection) {
		if (this.multiConnMode != MultiConnMode.SINGLE) {
			return true;
		}
		synchronized (this) {
			if (this.holder != null && this.holder != connection) {
				return false;
			}
			this.holder = connection;
		}
		connection.channel().closeFuture().addListener(f -> {
			synchronized (this) {
				if (this.holder == connection) {
					this.holder = null;
				}
			}
		});
		return true;
	}

	/** Gives back a claim whose negotiation failed before the export was attached. */
	void unclaim(NbdConnection connection) {
		synchronized (this) {
			if (this.holder == connection) {
				this.holder = null;
			}
		}
	}

	/** Whether FUA is done by the backend itself (otherwise write, then flush). */
	boolean nativeFua() {
		return this.backend.canFua() && (this.backend.isMultiConnSafe() || this.multiConnMode != MultiConnMode.EMULATE);
	}

	/** Whether writes are refused: the policy or the backend says so. */
	public boolean readOnly() {
		return this.readOnly;
	}

	/** Sent as {@code NBD_INFO_DESCRIPTION} and in export lists; null for none. */
	public String description() {
		return this.description;
	}

	/** Alignment every request must have, advertised in {@code NBD_INFO_BLOCK_SIZE}. */
	public int minimumBlockSize() {
		return this.minimumBlockSize;
	}

	/** I/O size hint advertised in {@code NBD_INFO_BLOCK_SIZE}. */
	public int preferredBlockSize() {
		return this.preferredBlockSize;
	}

	public long size() throws IOException {
		return this.backend.size();
	}

	/** Transmission flags, exactly what the backend supports (as seen without structured replies). */
	public int transmissionFlags() {
		return transmissionFlags(false);
	}

	/** Transmission flags; DF is offered only once structured replies are negotiated. */
	public int transmissionFlags(boolean structuredReplies) {
		ExportBackend b = this.backend;
		int flags = NbdProtocol.TFLAG_HAS_FLAGS;
		if (this.readOnly) {
			flags |= NbdProtocol.TFLAG_READ_ONLY;
		}
		else {
			flags |= NbdProtocol.TFLAG_SEND_WRITE_ZEROES;
			if (b.canFlush()) {
				flags |= NbdProtocol.TFLAG_SEND_FLUSH | NbdProtocol.TFLAG_SEND_FUA;
			}
			if (b.canTrim()) {
				flags |= NbdProtocol.TFLAG_SEND_TRIM;
			}
			if (b.canFastZero()) {
				flags |= NbdProtocol.TFLAG_SEND_FAST_ZERO;
			}
		}
		if (b.isRotational()) {
			flags |= NbdProtocol.TFLAG_ROTATIONAL;
		}
		if (b.canCache()) {
			flags |= NbdProtocol.TFLAG_SEND_CACHE;
		}
		if (multiConn()) {
			flags |= NbdProtocol.TFLAG_CAN_MULTI_CONN;
		}
		if (structuredReplies) {
			flags |= NbdProtocol.TFLAG_SEND_DF;
		}
		return flags;
	}

	/** Coordinator shared by every connection, or null when each connection flushes its own view. */
	FlushCoordinator sharedFlush() {
		return this.sharedFlush;
	}

	public Set<NbdConnection> connections() {
		return this.connections;
	}

	public LatencyStats flushLatency() {
		return this.flushLatency;
	}

	/** Client FLUSH requests (and FUA writes answered through a flush) served by backend syncs. */
	public long flushRequests() {
		return (this.sharedFlush != null) ? this.sharedFlush.requests()
				: this.closedFlushRequests.sum()
						+ this.connections.stream().mapToLong(NbdConnection::flushRequests).sum();
	}

	/** Backend syncs performed; fewer than flush requests when group commit shares them. */
	public long backendSyncs() {
		return (this.sharedFlush != null) ? this.sharedFlush.syncs()
				: this.closedFlushSyncs.sum() + this.connections.stream().mapToLong(NbdConnection::flushSyncs).sum();
	}

	public long bytesRead() {
		return this.bytesRead.sum();
	}

	public long bytesWritten() {
		return this.bytesWritten.sum();
	}

	/** A connection has gone: keep its flush counts in the export's totals. */
	void connectionClosed(NbdConnection connection) {
		if (this.connections.remove(connection)) {
			this.closedFlushRequests.add(connection.flushRequests());
			this.closedFlushSyncs.add(connection.flushSyncs());
		}
	}

	void addBytesRead(long n) {
		this.bytesRead.add(n);
	}

	void addBytesWritten(long n) {
		this.bytesWritten.add(n);
	}

	/** Flush the whole export (shutdown): the shared sync, or every open view. */
	void flushAll() throws Exception {
		if (this.readOnly || !this.backend.canFlush()) {
			return;
		}
		if (this.backend.isMultiConnSafe()) {
			latched(this.backend::flush).sync();
		}
		else {
			latched(this::flushAllViews).sync();
		}
	}

	/**
	 * {@code sync} guarded by the export's sync latch: it fails at once (NBD_EIO) once an earlier
	 * sync failed, and a failure of its own latches. Every flush coordinator of the export runs
	 * its syncs through this, so the latch holds for any backend.
	 */
	FlushCoordinator.Sync latched(FlushCoordinator.Sync sync) {
		return () -> {
			checkSync();
			try {
				sync.sync();
			}
			catch (Throwable ex) {
				syncFailed(ex);
				throw ex;
			}
		};
	}

	/** Fails with NBD_EIO when a sync of this export has failed: nothing can be promised durable. */
	void checkSync() throws NbdBackendException {
		Throwable failure = this.syncFailure.get();
		if (failure != null) {
			throw new NbdBackendException(NbdError.EIO,
					"an earlier sync of export '" + this.name + "' failed (" + failure + ")");
		}
	}

	/** Latches a failed sync: counted; the first one of the export is logged. */
	void syncFailed(Throwable failure) {
		this.syncFailures.increment();
		if (this.syncFailure.compareAndSet(null, failure)) {
			logger.warn("Export '{}': a sync failed, so writes acknowledged before it may be lost. Every later "
					+ "FLUSH and FUA request fails with EIO until the export is opened again (restart the server); "
					+ "health is DOWN", this.name, failure);
		}
	}

	/** Whether a sync of this export has failed (latched until the export is opened again). */
	public boolean syncFailed() {
		return this.syncFailure.get() != null;
	}

	/** Backend syncs (flushes, FUA) that failed. */
	public long syncFailures() {
		return this.syncFailures.sum();
	}

	/**
	 * Counts a read the backend left unfilled (answered with NBD_EIO, none of its bytes sent);
	 * true the first time, when it is worth a WARN.
	 */
	boolean unfilledRead() {
		this.unfilledReads.increment();
		return this.unfilledReadLogged.compareAndSet(false, true);
	}

	/** For a failure answered with {@code error}: -1 to hold its log line back, else the number held back before it. */
	long failureLogPermit(NbdError error) {
		return this.failureLog.acquire(error.name());
	}

	/** Reads the backend left unfilled (or lent the wrong length for): a backend bug, answered with EIO. */
	public long unfilledReads() {
		return this.unfilledReads.sum();
	}

	private void flushAllViews() throws IOException {
		for (NbdConnection connection : this.connections) {
			ExportBackend view = connection.view();
			if (view != null) {
				view.flush();
			}
		}
	}

}
