package dev.nbd.server;

import java.io.SyncFailedException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import dev.nbd.backend.BackendErrors;
import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.NbdBackendException;
import dev.nbd.protocol.NbdEncoder;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.protocol.ProtocolMessage;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelOutboundBuffer;
import io.netty.channel.ChannelProgressiveFuture;
import io.netty.channel.ChannelProgressiveFutureListener;
import io.netty.channel.ChannelProgressivePromise;
import io.netty.channel.DefaultFileRegion;
import io.netty.channel.FileRegion;
import io.netty.channel.socket.DuplexChannel;
import io.netty.handler.ssl.SslHandler;
import io.netty.util.concurrent.Future;
import io.netty.handler.timeout.IdleStateEvent;
import io.netty.util.ReferenceCountUtil;

/**
 * The transmission phase of one connection: validates requests, runs them against the
 * backend (inline for non-blocking backends, on worker threads otherwise), and writes replies
 * as each finishes, so replies may go out of order.
 *
 * <p>Backpressure: at most {@code maxInFlight} requests and {@code maxInFlightBytes} of payload
 * are in progress; beyond that requests wait in a queue and the socket is no longer read. Reading
 * also stops while the socket is not writable (a client that does not read its replies). Replies
 * sent by sendfile count toward that too ({@link #unsentFileBytes}), although Netty does not
 * count them (they hold no memory).
 *
 * <p>All state is touched on the channel's event loop only; workers hand results back to it.
 */
final class TransmissionHandler extends ChannelInboundHandlerAdapter {

	private static final Logger logger = LoggerFactory.getLogger(TransmissionHandler.class);

	private static final int ZERO_CHUNK = 1 << 20;

	private static final ByteBuffer ZEROES = ByteBuffer.allocateDirect(ZERO_CHUNK).asReadOnlyBuffer();

	/**
	 * CACHE and emulated WRITE_ZEROES longer than this (they move that many bytes through the
	 * storage) run as a series of chunks of this size, each queued behind other clients' work.
	 */
	private static final long DATA_CHUNK = ZERO_CHUNK;

	/** The same for TRIM and native WRITE_ZEROES, which the backend declared cheap per byte. */
	private static final long NATIVE_CHUNK = 4 << 20;

	private static final int MAX_EXTENTS = 1 << 16;

	/**
	 * Reads at least this long are large: from a backend's file they go out with sendfile (when
	 * TLS is off), from a backend that lends its memory without a copy; shorter ones are copied
	 * into the reply buffer, which is cheaper than the bookkeeping at that size.
	 */
	private static final int LARGE_READ = 64 * 1024;

	/** After the last reply and FIN, how long the client has to close its side before we close. */
	private static final long LINGER_MILLIS = 2000;

	/** The channel's user-defined writability bit that {@link #unsentFileBytes} clears. */
	private static final int UNSENT_FILE_WRITABILITY = 1;

	private final NbdServer server;

	private final NbdConnection connection;

	private final Export export;

	private final ExportBackend view;

	private final long size;

	private final boolean structured;

	private final boolean baseAllocation;

	private final int flags;

	private final int maxInFlight;

	private final long maxInFlightBytes;

	private final int maxPayload;

	/** The backend's file when reads and plain writes may run on this thread ({@link #fileIo}), else null. */
	private final FileChannel servedFile;

	/** Whether they run here now; measures them wherever they run. Null when {@link #servedFile} is. */
	private final EventLoopFileIo fileIo;

	private final ArrayDeque<ProtocolMessage.Request> queue = new ArrayDeque<>();

	private int running;

	private long runningBytes;

	/** DISC received or graceful close asked: answer what is in flight, then close. */
	private boolean closing;

	/** The last reply is written: the socket closes once it has been flushed to it. */
	private boolean closeScheduled;

	/** Closed by shutdown or the actuator: long requests stop at their next chunk (read by workers). */
	private volatile boolean shuttingDown;

	/** Replies handed to the socket so far. */
	private long repliesWritten;

	/** Every reply sent and FIN sent: what the client still sends is read and dropped. */
	private boolean outputShut;

	private boolean closed;

	/** Cuts a closing connection off when its replies do not drain in time, or null. */
	private ScheduledFuture<?> drainDeadline;

	/** Whether {@link #dispatch()} is on the stack: completions that re-enter it only ask it to go on. */
	private boolean dispatching;

	private boolean redispatch;

	private ChannelHandlerContext ctx;

	/** This connection's part of the server's memory budget. */
	private MemoryBudget.Share memory;

	/** Pending check that replies drain while the socket is unwritable, or null. */
	private ScheduledFuture<?> stallCheck;

	/** When the socket last became writable again (replies drained to the low mark). */
	private long drainedAt = System.nanoTime();

	/**
	 * Bytes of sendfile replies queued and not yet in the socket. Netty counts a FileRegion as
	 * nothing toward the channel's write buffer (it holds no memory), so without this a client
	 * that reads no replies of a file export would leave the socket writable: never paused, and
	 * never cut off at the write-stall timeout. Past the write buffer's high-water mark they make
	 * the channel unwritable (a user-defined writability bit, so what the memory budget counts
	 * stays memory) until they are back under the low mark.
	 */
	private long unsentFileBytes;

	/** How many replies {@link #unsentFileBytes} are part of. */
	private int unsentFileReplies;

	private final long openedNanos = System.nanoTime();

	TransmissionHandler(NbdServer server, NbdConnection connection, Export export, ExportBackend view, long size,
			boolean structured, boolean baseAllocation) {
		this.server = server;
		this.connection = connection;
		this.export = export;
		this.view = view;
		this.size = size;
		this.structured = structured;
		this.baseAllocation = baseAllocation;
		this.flags = export.transmissionFlags(structured);
		this.maxInFlight = server.config().maxInFlight();
		this.maxInFlightBytes = server.config().maxInFlightBytes();
		this.maxPayload = server.config().maxPayload();
		this.fileIo = export.fileIo();
		this.servedFile = (this.fileIo != null) ? view.servedFile() : null;
	}

	@Override
	public void handlerAdded(ChannelHandlerContext ctx) {
		this.ctx = ctx;
		this.memory = ctx.pipeline().get(MemoryGate.class).share();
		this.memory.onResume(this::updateAutoRead);
		this.export.connections().add(this.connection);
		this.connection.gracefulClose(() -> ctx.executor().execute(() -> beginClose(true)));
		logger.info("NBD {} opened ({}{}, flags 0x{})", this.connection, this.structured ? "structured replies" : "simple replies",
				this.connection.tls() ? ", TLS" : "", Integer.toHexString(this.flags));
		this.server.listener().connectionOpened(this.connection);
	}

	@Override
	public void channelInactive(ChannelHandlerContext ctx) {
		this.closed = true;
		if (this.drainDeadline != null) {
			this.drainDeadline.cancel(false);
		}
		for (ProtocolMessage.Request r : this.queue) {
			r.release();
		}
		this.queue.clear();
		// Release the view before leaving the export: an emulated multi-conn flush running
		// meanwhile still reaches the view, so writes it answered cannot slip past that flush.
		if (this.view != this.export.backend()) {
			try {
				this.view.disconnect();
			}
			catch (Exception ex) {
				logger.warn("Export '{}' failed to release a connection view", this.export.name(), ex);
			}
		}
		this.export.connectionClosed(this.connection);
		logger.info("NBD {} closed after {} ms: {} requests, {} bytes read, {} bytes written", this.connection,
				(System.nanoTime() - this.openedNanos) / 1_000_000, this.connection.requests(),
				this.connection.bytesRead(), this.connection.bytesWritten());
		this.server.listener().connectionClosed(this.connection);
		ctx.fireChannelInactive();
	}

	@Override
	public void channelRead(ChannelHandlerContext ctx, Object msg) {
		if (msg instanceof ProtocolMessage.Request request) {
			onRequest(request);
		}
		else if (msg instanceof ProtocolMessage.Violation v) {
			// Logged (rate-limited) and counted as a refusal; no log line of its own, so a
			// flood of broken clients cannot flood the log.
			this.server.refused("protocol_error", "Closed " + this.connection + ": " + v.reason());
			ctx.close();
		}
		else {
			ReferenceCountUtil.release(msg);
		}
	}

	@Override
	public void channelWritabilityChanged(ChannelHandlerContext ctx) {
		if (!ctx.channel().isWritable()) {
			scheduleStallCheck();
		}
		else {
			this.drainedAt = System.nanoTime();
		}
		dispatch();
		updateAutoRead();
		ctx.fireChannelWritabilityChanged();
	}

	/**
	 * While replies cannot be written, checks every write-stall-timeout that some drained; a
	 * client that reads nothing for that long is cut off (memory stays bounded meanwhile, but
	 * its connection slot and buffers would be held forever).
	 */
	private void scheduleStallCheck() {
		long ms = this.server.config().writeStallTimeout().toMillis();
		if (ms <= 0 || this.stallCheck != null || this.closed) {
			return;
		}
		long pendingBefore = pendingReplyBytes();
		long scheduledAt = System.nanoTime();
		this.stallCheck = this.ctx.executor().schedule(() -> {
			this.stallCheck = null;
			if (this.closed || !this.ctx.channel().isActive() || this.ctx.channel().isWritable()) {
				return;
			}
			// Stalled: unwritable all along (never drained to the low mark) and nothing drained.
			if (this.drainedAt - scheduledAt < 0 && pendingReplyBytes() >= pendingBefore) {
				this.server.refused("write_stall", "Closed " + this.connection + ": its replies did not drain for "
						+ ms + " ms (nbd.server.write-stall-timeout)");
				this.closed = true;
				this.ctx.close();
				return;
			}
			scheduleStallCheck();
		}, ms, TimeUnit.MILLISECONDS);
	}

	/**
	 * Replies queued and not yet in the socket: buffers, and what sendfile has still to send. On
	 * the event loop.
	 */
	long pendingReplyBytes() {
		ChannelOutboundBuffer out = this.ctx.channel().unsafe().outboundBuffer();
		return ((out != null) ? out.totalPendingWriteBytes() : 0) + this.unsentFileBytes;
	}

	/** READs whose sendfile reply is not all in the socket yet (each holds its in-flight slot). On the event loop. */
	int unsentFileReplies() {
		return this.unsentFileReplies;
	}

	/** {@code delta} more (or, negative, fewer) sendfile bytes not yet in the socket. */
	private void unsentFile(long delta) {
		this.unsentFileBytes += delta;
		ChannelOutboundBuffer out = this.ctx.channel().unsafe().outboundBuffer();
		if (out == null) {
			return;
		}
		boolean wasUnwritable = !out.getUserDefinedWritability(UNSENT_FILE_WRITABILITY);
		boolean unwritable = wasUnwritable
				? this.unsentFileBytes >= this.ctx.channel().config().getWriteBufferLowWaterMark()
				: this.unsentFileBytes > this.ctx.channel().config().getWriteBufferHighWaterMark();
		if (unwritable != wasUnwritable) {
			// Runs channelWritabilityChanged at once when the channel's writability flips.
			out.setUserDefinedWritability(UNSENT_FILE_WRITABILITY, !unwritable);
		}
	}

	@Override
	public void userEventTriggered(ChannelHandlerContext ctx, Object evt) {
		// Not while the server itself has stopped reading (memory budget, unsent replies): then
		// the client is waiting on us, not idle, and unsent replies have the write-stall timeout.
		if (evt instanceof IdleStateEvent && this.connection.inFlight() == 0 && ctx.channel().config().isAutoRead()) {
			logger.info("Closing idle NBD {}", this.connection);
			this.server.refused("idle_timeout", "Closed idle " + this.connection);
			beginClose(false);
			return;
		}
		ctx.fireUserEventTriggered(evt);
	}

	@Override
	public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
		if (cause instanceof Error) {
			// Not a client going away: a bug or an exhausted JVM. Operators must see it.
			this.server.connectionFailed(this.connection, cause);
		}
		else {
			logger.debug("Closing NBD {}: {}", this.connection, cause.toString());
		}
		ctx.close();
	}

	private void onRequest(ProtocolMessage.Request r) {
		if (this.outputShut) {
			// No reply can be sent any more; read only so that closing does not reset the
			// connection (a close with unread input sends RST, which drops unsent replies).
			r.release();
			return;
		}
		if (r.type() == NbdProtocol.CMD_DISC) {
			// The spec: requests sent before DISC are still handled and answered.
			r.release();
			beginClose(false);
			return;
		}
		this.connection.requestReceived();
		this.memory.received(r);
		if (this.closing || this.server.isDraining()) {
			// Nothing new starts once we are closing; the client learns why.
			r.release();
			finish(r, System.nanoTime(), errorReply(r, NbdError.ESHUTDOWN, "server is shutting down"), NbdError.ESHUTDOWN, 0);
			return;
		}
		this.queue.add(r);
		dispatch();
		updateAutoRead();
	}

	/**
	 * Stops taking requests and closes once every request received is answered and its reply
	 * sent. {@code shutdown}: requests not started yet are answered {@code NBD_ESHUTDOWN}
	 * instead of run (graceful shutdown, actuator close); after DISC they are run.
	 */
	private void beginClose(boolean shutdown) {
		if (this.closed) {
			return;
		}
		if (!this.closing) {
			this.closing = true;
			armDrainDeadline();
		}
		if (shutdown) {
			this.shuttingDown = true;
			ProtocolMessage.Request r;
			while ((r = this.queue.poll()) != null) {
				r.release();
				finish(r, System.nanoTime(), errorReply(r, NbdError.ESHUTDOWN, "server is shutting down"),
						NbdError.ESHUTDOWN, 0);
			}
		}
		updateAutoRead();
		maybeClose();
	}

	private void armDrainDeadline() {
		long ms = this.server.config().drainTimeout().toMillis();
		if (ms <= 0) {
			return;
		}
		this.drainDeadline = this.ctx.executor().schedule(() -> {
			if (!this.closed && this.ctx.channel().isActive()) {
				this.server.refused("drain_timeout", "Closed " + this.connection + " while draining: "
						+ this.connection.inFlight() + " request(s) unanswered and " + pendingReplyBytes()
						+ " reply bytes unsent after " + ms + " ms (nbd.server.drain-timeout)");
				this.closed = true;
				this.ctx.close();
			}
		}, ms, TimeUnit.MILLISECONDS);
	}

	/**
	 * Closing and every request answered: once the last reply byte is in the socket, sends FIN
	 * (after TLS close_notify) and closes when the client does, or after {@link #LINGER_MILLIS}.
	 * The socket is not closed at once: a close with unread input (a client still sending)
	 * would reset the connection and drop replies the kernel has not sent yet.
	 */
	private void maybeClose() {
		if (this.closing && this.connection.inFlight() == 0 && !this.closed && !this.closeScheduled) {
			this.closeScheduled = true;
			long repliesBefore = this.repliesWritten;
			// Writes complete in order: this one completes after every reply before it was sent.
			this.ctx.writeAndFlush(Unpooled.EMPTY_BUFFER).addListener(f -> {
				if (!f.isSuccess() || this.closed || !(this.ctx.channel() instanceof DuplexChannel duplex)) {
					this.ctx.close();
					return;
				}
				if (this.repliesWritten != repliesBefore) {
					// An ESHUTDOWN reply to a request that came meanwhile: send it too first.
					this.closeScheduled = false;
					maybeClose();
					return;
				}
				if (this.drainDeadline != null) {
					this.drainDeadline.cancel(false);
				}
				SslHandler tls = this.ctx.pipeline().get(SslHandler.class);
				Future<?> notified = (tls != null) ? tls.closeOutbound() : this.ctx.executor().newSucceededFuture(null);
				notified.addListener(n -> {
					this.outputShut = true;
					updateAutoRead();
					duplex.shutdownOutput().addListener(s -> {
						if (!s.isSuccess()) {
							this.ctx.close();
						}
					});
					this.ctx.executor().schedule(() -> this.ctx.close(), LINGER_MILLIS, TimeUnit.MILLISECONDS);
				});
			});
		}
	}

	private void updateAutoRead() {
		// While closing, what arrives is answered at once (ESHUTDOWN) or dropped once output is
		// shut: keep reading, so that nothing unread is left when the socket closes.
		boolean read = this.outputShut || (this.ctx.channel().isWritable() && (this.closing
				|| (this.queue.isEmpty() && this.connection.inFlight() < this.maxInFlight && this.memory.mayRead())));
		if (this.ctx.channel().config().isAutoRead() != read) {
			this.ctx.channel().config().setAutoRead(read);
			if (read) {
				this.ctx.read();
			}
		}
	}

	private static long cost(ProtocolMessage.Request r) {
		return (r.type() == NbdProtocol.CMD_READ || r.type() == NbdProtocol.CMD_WRITE) ? r.length() : 0;
	}

	/**
	 * Starts queued requests while limits allow. A request that completes inline (non-blocking
	 * backends) calls back into this method through {@link #done}: that call only asks the
	 * loop below to go on, so the stack does not grow with the number of queued requests.
	 */
	private void dispatch() {
		if (this.dispatching) {
			this.redispatch = true;
			return;
		}
		this.dispatching = true;
		try {
			do {
				this.redispatch = false;
				dispatchQueued();
			}
			while (this.redispatch);
		}
		finally {
			this.dispatching = false;
		}
	}

	private void dispatchQueued() {
		// Nothing starts while replies pile up unsent: one read can decode thousands of
		// requests, and a client that does not read its replies must not make us buffer them.
		while (!this.queue.isEmpty() && this.running < this.maxInFlight && this.ctx.channel().isWritable()) {
			ProtocolMessage.Request next = this.queue.peek();
			long cost = cost(next);
			if (this.runningBytes > 0 && this.runningBytes + cost > this.maxInFlightBytes) {
				return;
			}
			this.queue.poll();
			this.running++;
			this.runningBytes += cost;
			start(next, cost);
		}
	}

	private void start(ProtocolMessage.Request r, long cost) {
		long startNanos = System.nanoTime();
		NbdError invalid = validate(r);
		if (invalid != null) {
			r.release();
			done(r, cost, startNanos, errorReply(r, invalid, null), invalid, 0);
			return;
		}
		if (!this.view.isBlocking()) {
			execute(r, cost, startNanos);
			return;
		}
		// A served file's reads go out as data, holes included (zeroes from the page cache): one
		// pread or sendfile beats looking up extents for every read; clients ask BLOCK_STATUS.
		// While its calls are slow (fileIo), they run on workers like any blocking call.
		boolean fileOnLoop = this.servedFile != null && this.fileIo.onEventLoop();
		if (r.type() == NbdProtocol.CMD_READ && fileOnLoop) {
			if (r.length() < LARGE_READ) {
				// One pread into the reply buffer: cheaper than two thread hand-offs.
				execute(r, cost, startNanos);
				return;
			}
			if (!this.connection.tls()) {
				sendFile(r, cost, startNanos);
				return;
			}
			// Large reads under TLS cannot use sendfile: they take the worker path.
		}
		if (r.type() == NbdProtocol.CMD_WRITE && fileOnLoop && !r.hasFlag(NbdProtocol.CMD_FLAG_FUA)) {
			// A page-cache write: cheaper than two thread hand-offs.
			execute(r, cost, startNanos);
			return;
		}
		try {
			this.server.blockingExecutor().execute(() -> execute(r, cost, startNanos));
		}
		catch (RejectedExecutionException ex) {
			r.release();
			done(r, cost, startNanos, errorReply(r, NbdError.ESHUTDOWN, null), NbdError.ESHUTDOWN, 0);
		}
	}

	/** Error for a request that must not reach the backend, or null. */
	private NbdError validate(ProtocolMessage.Request r) {
		int type = r.type();
		boolean writeType = type == NbdProtocol.CMD_WRITE || type == NbdProtocol.CMD_TRIM
				|| type == NbdProtocol.CMD_WRITE_ZEROES;
		if (writeType && this.export.readOnly()) {
			// Whatever else is wrong with it, a write to a read-only export is refused as such.
			return NbdError.EPERM;
		}
		int allowed = switch (type) {
			case NbdProtocol.CMD_READ -> this.structured ? NbdProtocol.CMD_FLAG_DF : 0;
			case NbdProtocol.CMD_WRITE, NbdProtocol.CMD_TRIM -> NbdProtocol.CMD_FLAG_FUA;
			case NbdProtocol.CMD_WRITE_ZEROES -> NbdProtocol.CMD_FLAG_FUA | NbdProtocol.CMD_FLAG_NO_HOLE
					| (((this.flags & NbdProtocol.TFLAG_SEND_FAST_ZERO) != 0) ? NbdProtocol.CMD_FLAG_FAST_ZERO : 0);
			case NbdProtocol.CMD_BLOCK_STATUS -> NbdProtocol.CMD_FLAG_REQ_ONE;
			case NbdProtocol.CMD_FLUSH, NbdProtocol.CMD_CACHE -> 0;
			default -> -1;
		};
		if (allowed == -1) {
			return NbdError.EINVAL;
		}
		// FUA is valid on every command once SEND_FUA is advertised: the spec says the server "MUST
		// accept all commands with this bit set (even by ignoring the bit)", as some clients set it
		// on reads and flushes. Without SEND_FUA it is refused below.
		allowed |= NbdProtocol.CMD_FLAG_FUA;
		if ((r.flags() & ~allowed) != 0) {
			return NbdError.EINVAL;
		}
		if ((r.flags() & NbdProtocol.CMD_FLAG_FUA) != 0 && (this.flags & NbdProtocol.TFLAG_SEND_FUA) == 0) {
			return NbdError.EINVAL;
		}
		switch (type) {
			case NbdProtocol.CMD_FLUSH -> {
				return ((this.flags & NbdProtocol.TFLAG_SEND_FLUSH) != 0) ? null : NbdError.EINVAL;
			}
			case NbdProtocol.CMD_TRIM -> {
				if ((this.flags & NbdProtocol.TFLAG_SEND_TRIM) == 0) {
					return NbdError.EINVAL;
				}
			}
			case NbdProtocol.CMD_CACHE -> {
				if ((this.flags & NbdProtocol.TFLAG_SEND_CACHE) == 0) {
					return NbdError.EINVAL;
				}
			}
			case NbdProtocol.CMD_BLOCK_STATUS -> {
				if (!this.baseAllocation) {
					return NbdError.EINVAL;
				}
			}
			case NbdProtocol.CMD_WRITE -> {
				if (r.payloadDiscarded()) {
					return NbdError.EINVAL;
				}
			}
			case NbdProtocol.CMD_READ -> {
				if (r.length() > this.maxPayload) {
					return NbdError.EINVAL;
				}
			}
			default -> {
			}
		}
		long offset = r.offset();
		long length = r.length();
		if (length == 0) {
			// The spec leaves zero-length requests unspecified (but not a reason to disconnect):
			// nothing to do is an invalid request, not a full disk.
			return NbdError.EINVAL;
		}
		if (offset < 0 || offset > this.size || length > this.size - offset) {
			// Past the end: writes get ENOSPC (as a full device would), others EINVAL, as the spec says.
			return (type == NbdProtocol.CMD_WRITE || type == NbdProtocol.CMD_WRITE_ZEROES) ? NbdError.ENOSPC
					: NbdError.EINVAL;
		}
		int min = this.export.minimumBlockSize();
		if (min > 1 && ((offset | length) & (min - 1)) != 0) {
			return NbdError.EINVAL;
		}
		return null;
	}

	/** A large READ sent from the backend's file by sendfile: the data never passes through the JVM. */
	private void sendFile(ProtocolMessage.Request r, long cost, long startNanos) {
		int length = (int) r.length();
		long offset = r.offset();
		r.release();
		ByteBuf header = dataHeader(this.ctx.alloc(), r.cookie(), this.structured, true, offset, length, 0);
		// Retained once more: Netty releases a region once sent, which would close the shared file.
		FileRegion region = new DefaultFileRegion(this.servedFile, offset, length).retain();
		if (!this.ctx.channel().isActive() || this.server.repliesStopped()) {
			done(r, cost, startNanos, List.of(header, region), null, length);
			return;
		}
		// The file is read while the region is sent: the request is answered (counted, timed,
		// its slot freed) only once its bytes are in the socket, not when they are queued. Until
		// then they count as unsent replies, less what each send got into the socket.
		this.ctx.write(header, this.ctx.voidPromise());
		ChannelProgressivePromise sent = this.ctx.newProgressivePromise();
		sent.addListener(new ChannelProgressiveFutureListener() {

			private long progress;

			@Override
			public void operationProgressed(ChannelProgressiveFuture future, long progress, long total) {
				unsentFile(-(progress - this.progress));
				this.progress = progress;
			}

			@Override
			public void operationComplete(ChannelProgressiveFuture future) {
				TransmissionHandler.this.unsentFileReplies--;
				unsentFile(-(length - this.progress));
				this.progress = length;
				NbdError error = future.isSuccess() ? null : NbdError.EIO;
				done(r, cost, startNanos, List.of(), error, (error == null) ? length : 0);
			}

		});
		this.unsentFileReplies++;
		unsentFile(length);
		this.ctx.writeAndFlush(region, sent);
	}

	/** Runs a validated request; on a worker thread for blocking backends. */
	private void execute(ProtocolMessage.Request r, long cost, long startNanos) {
		if (r.length() > chunkSize(r)) {
			r.release();
			new LongRequest(r, cost, startNanos).begin();
			return;
		}
		List<ByteBuf> reply = null;
		NbdError error = null;
		long bytes = 0;
		boolean flushAfter = false;
		boolean timed = fileCall(r) && this.fileIo.measures();
		long callStart = timed ? System.nanoTime() : 0;
		try {
			switch (r.type()) {
				case NbdProtocol.CMD_READ -> {
					reply = read(r);
					bytes = r.length();
				}
				case NbdProtocol.CMD_WRITE -> {
					boolean fua = r.hasFlag(NbdProtocol.CMD_FLAG_FUA);
					ByteBuf payload = r.payload();
					if (payload.nioBufferCount() == 1) {
						this.view.write(r.offset(), payload.nioBuffer(), fua && this.export.nativeFua());
						flushAfter = fua && !this.export.nativeFua();
					}
					else {
						// Received in pieces (the backend takes them): each as it came, never with FUA,
						// which a flush afterwards provides instead.
						long offset = r.offset();
						for (ByteBuffer piece : payload.nioBuffers()) {
							int n = piece.remaining();
							this.view.write(offset, piece, false);
							offset += n;
						}
						flushAfter = fua;
					}
					bytes = r.length();
				}
				case NbdProtocol.CMD_FLUSH -> {
					flushAfter = true;
				}
				case NbdProtocol.CMD_TRIM -> {
					boolean fua = r.hasFlag(NbdProtocol.CMD_FLAG_FUA);
					this.view.trim(r.offset(), r.length(), fua && this.export.nativeFua());
					flushAfter = fua && !this.export.nativeFua();
				}
				case NbdProtocol.CMD_WRITE_ZEROES -> {
					boolean fua = r.hasFlag(NbdProtocol.CMD_FLAG_FUA);
					// Zeroes emulated with several writes: one flush after all of them, not FUA on each.
					boolean nativeFua = fua && this.export.nativeFua() && this.view.canZero();
					zero(r, nativeFua);
					flushAfter = fua && !nativeFua;
				}
				case NbdProtocol.CMD_CACHE -> this.view.cache(r.offset(), r.length());
				case NbdProtocol.CMD_BLOCK_STATUS -> reply = blockStatus(r);
				default -> error = NbdError.EINVAL;
			}
			if (timed) {
				this.fileIo.record(System.nanoTime() - callStart, r.length());
			}
			if (durable(r)) {
				// After a failed sync no FLUSH or FUA may claim durability (native FUA included).
				this.export.checkSync();
			}
		}
		catch (Throwable ex) {
			if (durable(r) && isSyncFailure(ex)) {
				this.export.syncFailed(ex);
			}
			error = BackendErrors.errorOf(ex);
			logFailure(r, ex, error);
		}
		finally {
			r.release();
		}
		if (error != null && reply != null) {
			reply.forEach(ByteBuf::release);
			reply = null;
		}
		answer(r, cost, startNanos, reply, error, bytes, flushAfter);
	}

	/** A read or plain write of the served file: what {@link #fileIo} decides about and times. */
	private boolean fileCall(ProtocolMessage.Request r) {
		return this.servedFile != null && (r.type() == NbdProtocol.CMD_READ
				|| (r.type() == NbdProtocol.CMD_WRITE && !r.hasFlag(NbdProtocol.CMD_FLAG_FUA)));
	}

	/**
	 * Hands the outcome of an executed request to the event loop, after a flush when
	 * {@code flushAfter} (FUA done by the server) and the request succeeded.
	 */
	private void answer(ProtocolMessage.Request r, long cost, long startNanos, List<ByteBuf> reply, NbdError error,
			long bytes, boolean flushAfter) {
		if (error == null && flushAfter) {
			long b = bytes;
			CompletableFuture<Void> flush = (this.export.sharedFlush() != null) ? this.export.sharedFlush().flush()
					: this.connection.ownFlush().flush();
			flush.whenComplete((v, ex) -> {
				NbdError e = null;
				if (ex != null) {
					Throwable cause = (ex instanceof java.util.concurrent.CompletionException) ? ex.getCause() : ex;
					e = BackendErrors.errorOf(cause);
					logFailure(r, cause, e);
				}
				NbdError fe = e;
				onLoop(() -> done(r, cost, startNanos, (fe == null) ? simpleOk(r) : errorReply(r, fe, null), fe,
						(fe == null) ? b : 0));
			});
			return;
		}
		List<ByteBuf> out = (error != null) ? errorReply(r, error, null) : (reply != null) ? reply : simpleOk(r);
		NbdError e = error;
		long b = (error == null) ? bytes : 0;
		if (!onLoop(() -> done(r, cost, startNanos, out, e, b))) {
			out.forEach(ByteBuf::release);
		}
	}

	/** Runs {@code task} on the connection's event loop; false if that loop is gone (nothing to answer). */
	private boolean onLoop(Runnable task) {
		if (this.ctx.executor().inEventLoop()) {
			task.run();
			return true;
		}
		try {
			this.ctx.executor().execute(task);
			return true;
		}
		catch (RejectedExecutionException ex) {
			// Event loop gone: the connection is closed, nothing to answer.
			return false;
		}
	}

	/**
	 * An error the backend chose (an {@link NbdBackendException} without a cause) is the client's
	 * business: DEBUG. A failure (I/O error, full disk, a bug) is the operator's: WARN, at most once
	 * a second per export and error (a full disk fails every write), except a backend's unfilled
	 * read, logged once per export and then only counted.
	 */
	private void logFailure(ProtocolMessage.Request r, Throwable ex, NbdError error) {
		if (ex instanceof UnfilledReadException) {
			if (this.export.unfilledRead()) {
				logger.warn("Export '{}' has a bug: {} for {}; answered with EIO, none of its bytes sent. "
						+ "Further ones are only counted (nbd_backend_unfilled_reads_total)", this.export.name(),
						ex.getMessage(), r);
			}
			else {
				logger.debug("Export '{}' failed {}: {}", this.export.name(), r, ex.getMessage());
			}
		}
		else if (ex instanceof NbdBackendException && ex.getCause() == null) {
			logger.debug("Export '{}' failed {}: {}", this.export.name(), r, ex.getMessage());
		}
		else {
			long suppressed = this.export.failureLogPermit(error);
			if (suppressed >= 0) {
				logger.warn("Export '{}' failed {} with {}{}", this.export.name(), r, error,
						LogRateLimit.suppressed(suppressed), ex);
			}
			else {
				logger.debug("Export '{}' failed {} with {}: {}", this.export.name(), r, error, ex.toString());
			}
		}
	}

	/** A FLUSH, or a write-type request with FUA: its success promises durability. */
	private static boolean durable(ProtocolMessage.Request r) {
		return switch (r.type()) {
			case NbdProtocol.CMD_FLUSH -> true;
			case NbdProtocol.CMD_WRITE, NbdProtocol.CMD_TRIM, NbdProtocol.CMD_WRITE_ZEROES ->
				r.hasFlag(NbdProtocol.CMD_FLAG_FUA);
			default -> false;
		};
	}

	/** Whether a request failed in its sync (a backend doing FUA natively says so with SyncFailedException). */
	private static boolean isSyncFailure(Throwable ex) {
		for (Throwable t = ex; t != null; t = (t.getCause() != t) ? t.getCause() : null) {
			if (t instanceof SyncFailedException) {
				return true;
			}
		}
		return false;
	}

	private List<ByteBuf> read(ProtocolMessage.Request r) throws Exception {
		ByteBufAllocator alloc = this.ctx.alloc();
		int length = (int) r.length();
		if (!this.structured) {
			return dataReply(alloc, r.cookie(), false, true, r.offset(), length);
		}
		boolean df = r.hasFlag(NbdProtocol.CMD_FLAG_DF);
		if (df || !this.view.canExtents() || this.servedFile != null) {
			return dataReply(alloc, r.cookie(), true, true, r.offset(), length);
		}
		// Holes go out as OFFSET_HOLE chunks: no zero bytes on the wire.
		List<long[]> extents = new ArrayList<>();
		this.view.extents(r.offset(), length, (len, fl) -> {
			extents.add(new long[] { len, fl });
			return true;
		});
		List<ByteBuf> out = new ArrayList<>();
		long pos = r.offset();
		long end = r.offset() + length;
		try {
			for (int i = 0; i < extents.size() && pos < end; i++) {
				long len = Math.min(extents.get(i)[0], end - pos);
				if (len <= 0) {
					continue;
				}
				boolean zero = (extents.get(i)[1] & ExportBackend.ZERO) != 0;
				boolean last = pos + len >= end;
				if (zero) {
					out.add(NbdEncoder.holeChunk(alloc, r.cookie(), last, pos, (int) len));
				}
				else {
					out.addAll(dataReply(alloc, r.cookie(), true, last, pos, (int) len));
				}
				pos += len;
			}
			if (pos < end) {
				// The backend reported less than asked: read the rest as data.
				out.addAll(dataReply(alloc, r.cookie(), true, true, pos, (int) (end - pos)));
			}
		}
		catch (Exception | Error ex) {
			out.forEach(ByteBuf::release);
			throw ex;
		}
		return out;
	}

	/**
	 * A simple reply or OFFSET_DATA chunk with its data. Small ones are one buffer (one
	 * allocation, one iovec); large ones keep the data in a buffer of exactly its size, which the
	 * pooled allocator serves up to 1 MiB, where header plus data would not be pooled.
	 */
	private List<ByteBuf> dataReply(ByteBufAllocator alloc, long cookie, boolean chunk, boolean last, long offset,
			int length) throws Exception {
		boolean together = length < LARGE_READ;
		ByteBuf header = dataHeader(alloc, cookie, chunk, last, offset, length, together ? length : 0);
		try {
			if (!together) {
				return List.of(header, readData(alloc, offset, length));
			}
			int headerLength = header.writerIndex();
			ByteBuffer nio = header.internalNioBuffer(headerLength, length);
			int end = nio.limit();
			this.view.read(offset, nio);
			UnfilledReadException.check(nio, end, offset, length);
			header.writerIndex(headerLength + length);
			return List.of(header);
		}
		catch (Exception | Error ex) {
			header.release();
			throw ex;
		}
	}

	/**
	 * Header of a successful READ reply (simple, or an OFFSET_DATA chunk with its offset) in a
	 * buffer with room for {@code room} bytes of data after it.
	 */
	private static ByteBuf dataHeader(ByteBufAllocator alloc, long cookie, boolean chunk, boolean last, long offset,
			int length, int room) {
		ByteBuf header = alloc.directBuffer((chunk ? 28 : 16) + room);
		if (chunk) {
			NbdEncoder.writeChunkHeader(header, last ? NbdProtocol.REPLY_FLAG_DONE : 0,
					NbdProtocol.REPLY_TYPE_OFFSET_DATA, cookie, 8 + length);
			header.writeLong(offset);
		}
		else {
			NbdEncoder.writeSimpleReply(header, cookie, 0);
		}
		return header;
	}

	private ByteBuf readData(ByteBufAllocator alloc, long offset, int length) throws Exception {
		ExportBackend.Lent lent = this.view.lend(offset, length);
		if (lent != null) {
			return LentData.of(alloc, lent, length);
		}
		ByteBuf data = alloc.directBuffer(length);
		try {
			ByteBuffer nio = data.internalNioBuffer(0, length);
			int end = nio.limit();
			this.view.read(offset, nio);
			UnfilledReadException.check(nio, end, offset, length);
			data.writerIndex(length);
			return data;
		}
		catch (Exception | Error ex) {
			data.release();
			throw ex;
		}
	}

	private void zero(ProtocolMessage.Request r, boolean fua) throws Exception {
		checkFastZero(r);
		zero(r.offset(), r.length(), !r.hasFlag(NbdProtocol.CMD_FLAG_NO_HOLE), r.hasFlag(NbdProtocol.CMD_FLAG_FAST_ZERO),
				fua);
	}

	private void checkFastZero(ProtocolMessage.Request r) throws NbdBackendException {
		if (r.hasFlag(NbdProtocol.CMD_FLAG_FAST_ZERO) && !(this.view.canZero() && this.view.canFastZero())) {
			throw new NbdBackendException(NbdError.ENOTSUP, "fast zero not supported");
		}
	}

	private void zero(long offset, long length, boolean mayTrim, boolean fast, boolean fua) throws Exception {
		if (this.view.canZero()) {
			this.view.zero(offset, length, mayTrim, fast, fua);
			return;
		}
		// Emulation: write zeroes from a shared read-only buffer, chunk by chunk.
		long end = offset + length;
		while (offset < end) {
			int n = (int) Math.min(ZERO_CHUNK, end - offset);
			ByteBuffer chunk = ZEROES.duplicate();
			chunk.limit(n);
			this.view.write(offset, chunk, false);
			offset += n;
		}
	}

	/**
	 * Most bytes of CACHE, TRIM or WRITE_ZEROES that run in one go; longer ones run as a
	 * {@link LongRequest}. Unbounded for other requests.
	 */
	private long chunkSize(ProtocolMessage.Request r) {
		return switch (r.type()) {
			case NbdProtocol.CMD_CACHE -> DATA_CHUNK;
			case NbdProtocol.CMD_TRIM -> NATIVE_CHUNK;
			case NbdProtocol.CMD_WRITE_ZEROES -> this.view.canZero() ? NATIVE_CHUNK : DATA_CHUNK;
			default -> Long.MAX_VALUE;
		};
	}

	/**
	 * A CACHE, TRIM or WRITE_ZEROES longer than one chunk, run chunk by chunk: each next chunk
	 * queues behind other work (the server's {@link BackgroundScheduler}, round robin across
	 * exports and connections, for blocking backends; the event loop's task queue otherwise), so
	 * one client's long requests cannot hold the workers or a network thread while other
	 * clients' requests wait. FUA is honoured by one flush after the last chunk. Stops early,
	 * answering {@code NBD_ESHUTDOWN}, once the connection is gone or the server shuts down (the
	 * range is then unspecified, as after any failed write).
	 */
	private final class LongRequest implements Runnable {

		private final ProtocolMessage.Request request;

		private final long cost;

		private final long startNanos;

		private final String op;

		private final long chunk;

		private final long end;

		private long offset;

		LongRequest(ProtocolMessage.Request request, long cost, long startNanos) {
			this.request = request;
			this.cost = cost;
			this.startNanos = startNanos;
			this.op = NbdProtocol.commandName(request.type());
			this.chunk = chunkSize(request);
			this.offset = request.offset();
			this.end = request.offset() + request.length();
		}

		void begin() {
			try {
				if (this.request.type() == NbdProtocol.CMD_WRITE_ZEROES) {
					checkFastZero(this.request);
				}
			}
			catch (NbdBackendException ex) {
				finish(ex.error());
				return;
			}
			if (TransmissionHandler.this.view.isBlocking()) {
				queueNext();
			}
			else {
				run();
			}
		}

		@Override
		public void run() {
			if (!TransmissionHandler.this.ctx.channel().isActive() || TransmissionHandler.this.server.isDraining()
					|| TransmissionHandler.this.shuttingDown) {
				finish(NbdError.ESHUTDOWN);
				return;
			}
			ProtocolMessage.Request r = this.request;
			long n = Math.min(this.chunk, this.end - this.offset);
			try {
				switch (r.type()) {
					case NbdProtocol.CMD_CACHE -> TransmissionHandler.this.view.cache(this.offset, n);
					case NbdProtocol.CMD_TRIM -> TransmissionHandler.this.view.trim(this.offset, n, false);
					default -> zero(this.offset, n, !r.hasFlag(NbdProtocol.CMD_FLAG_NO_HOLE),
							r.hasFlag(NbdProtocol.CMD_FLAG_FAST_ZERO), false);
				}
			}
			catch (Throwable ex) {
				NbdError error = BackendErrors.errorOf(ex);
				logFailure(r, ex, error);
				finish(error);
				return;
			}
			TransmissionHandler.this.server.listener().backgroundChunk(TransmissionHandler.this.export, this.op, n);
			this.offset += n;
			if (this.offset < this.end) {
				queueNext();
			}
			else {
				finish(null);
			}
		}

		private void queueNext() {
			if (TransmissionHandler.this.view.isBlocking()) {
				TransmissionHandler.this.server.backgroundScheduler()
					.submit(TransmissionHandler.this.export, TransmissionHandler.this.connection, this);
				return;
			}
			try {
				TransmissionHandler.this.ctx.executor().execute(this);
			}
			catch (RejectedExecutionException ex) {
				// Event loop gone: the connection is closed, nothing to answer.
			}
		}

		private void finish(NbdError error) {
			boolean flushAfter = error == null && this.request.hasFlag(NbdProtocol.CMD_FLAG_FUA);
			answer(this.request, this.cost, this.startNanos, null, error, 0, flushAfter);
		}

	}

	private List<ByteBuf> blockStatus(ProtocolMessage.Request r) throws Exception {
		// Each descriptor is 8 bytes after the 4-byte context id: the reply stays within the
		// advertised maximum payload, which the spec lets the server exceed only by chunk overhead.
		int maxDescriptors = Math.min(MAX_EXTENTS, (this.maxPayload - 4) / 8);
		Descriptors descriptors = new Descriptors(r.length(),
				r.hasFlag(NbdProtocol.CMD_FLAG_REQ_ONE) ? 1 : maxDescriptors);
		this.view.extents(r.offset(), r.length(), descriptors);
		if (descriptors.count == 0) {
			// A backend that reported nothing: the whole range as data.
			descriptors.extent(r.length(), 0);
		}
		return List.of(NbdEncoder.blockStatusChunk(this.ctx.alloc(), r.cookie(), NbdProtocol.CONTEXT_ID_BASE_ALLOCATION,
				descriptors.lengths, descriptors.flags, descriptors.count));
	}

	/** BLOCK_STATUS descriptors: extents clipped to the request, neighbours of one kind merged. */
	private static final class Descriptors implements ExportBackend.ExtentSink {

		private final long wanted;

		private final int max;

		private long[] lengths = new long[16];

		private int[] flags = new int[16];

		private int count;

		private long covered;

		Descriptors(long wanted, int max) {
			this.wanted = wanted;
			this.max = max;
		}

		@Override
		public boolean extent(long length, int flags) {
			long l = Math.min(length, this.wanted - this.covered);
			if (l <= 0) {
				return false;
			}
			int kind = flags & (ExportBackend.HOLE | ExportBackend.ZERO);
			if (this.count > 0 && this.flags[this.count - 1] == kind) {
				this.lengths[this.count - 1] += l;
			}
			else {
				if (this.count == this.lengths.length) {
					this.lengths = java.util.Arrays.copyOf(this.lengths, this.count * 2);
					this.flags = java.util.Arrays.copyOf(this.flags, this.count * 2);
				}
				this.lengths[this.count] = l;
				this.flags[this.count] = kind;
				this.count++;
			}
			this.covered += l;
			return this.covered < this.wanted && this.count < this.max;
		}

	}

	private List<ByteBuf> simpleOk(ProtocolMessage.Request r) {
		return List.of(NbdEncoder.simpleReply(this.ctx.alloc(), r.cookie(), 0));
	}

	private List<ByteBuf> errorReply(ProtocolMessage.Request r, NbdError error, String message) {
		if (this.structured && (r.type() == NbdProtocol.CMD_READ || r.type() == NbdProtocol.CMD_BLOCK_STATUS)) {
			return List.of(NbdEncoder.errorChunk(this.ctx.alloc(), r.cookie(), error.code(), message));
		}
		return List.of(NbdEncoder.simpleReply(this.ctx.alloc(), r.cookie(), error.code()));
	}

	/** On the event loop: account, reply, and let the next requests in. */
	private void done(ProtocolMessage.Request r, long cost, long startNanos, List<?> reply, NbdError error,
			long bytes) {
		this.running--;
		this.runningBytes -= cost;
		finish(r, startNanos, reply, error, bytes);
		dispatch();
		updateAutoRead();
	}

	private void finish(ProtocolMessage.Request r, long startNanos, List<?> reply, NbdError error, long bytes) {
		if (!this.ctx.channel().isActive() || this.server.repliesStopped()) {
			reply.forEach(ReferenceCountUtil::release);
			this.ctx.close();
		}
		else {
			for (Object b : reply) {
				this.ctx.write(b, this.ctx.voidPromise());
			}
			this.ctx.flush();
			this.repliesWritten++;
		}
		long nanos = System.nanoTime() - startNanos;
		if (error == null && bytes > 0) {
			if (r.type() == NbdProtocol.CMD_READ) {
				this.connection.addBytesRead(bytes);
				this.export.addBytesRead(bytes);
			}
			else if (r.type() == NbdProtocol.CMD_WRITE) {
				this.connection.addBytesWritten(bytes);
				this.export.addBytesWritten(bytes);
			}
		}
		String op = NbdProtocol.commandName(r.type());
		String outcome = (error == null) ? "success" : error.name().toLowerCase();
		if (r.type() == NbdProtocol.CMD_FLUSH) {
			this.export.flushLatency().record(nanos);
			this.server.listener().flushCompleted(this.export, nanos, error == null);
		}
		this.server.listener().requestCompleted(this.export, op, outcome, nanos, (error == null) ? bytes : 0);
		this.connection.requestAnswered();
		this.memory.answered(r);
		maybeClose();
	}

}
