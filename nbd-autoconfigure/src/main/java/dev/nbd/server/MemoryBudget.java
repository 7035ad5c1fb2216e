package dev.nbd.server;

import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.ProtocolMessage;
import dev.nbd.protocol.RequestDecoder;
import io.netty.channel.Channel;
import io.netty.channel.ChannelOutboundBuffer;
import io.netty.util.internal.PlatformDependent;

/**
 * One memory budget for the whole server: WRITE payloads being received, WRITE payloads queued
 * or in progress, and replies waiting to be sent count against it, across all connections.
 *
 * <p>One maximum payload is kept for a "finisher"; below the rest, the shared part, every
 * connection reads freely, which costs one atomic add per socket read. Over it, the connections
 * that hold more than {@link #FLOOR} stop reading (their sockets are no longer read, so their
 * clients' sends block in TCP) until memory is released, and nobody gets an error. Connections
 * holding less (clients with small requests, whatever others hold) go on reading. The finisher
 * is one connection part-way through a WRITE payload that may complete it in the part kept for
 * it: without it, connections each holding part of a large WRITE could wait on each other
 * forever. The finisher never waits for memory (its growth is bounded by its one payload, which
 * the part kept for it covers) and keeps the role until that payload has arrived or its
 * connection closes: a role taken away from a slow client would leave its partial payload
 * behind, and each next finisher could add another, so memory would grow without bound, or the
 * next finisher would wait for memory nobody releases. Paused connections look again every
 * {@link #RECHECK_MILLIS} ms and whenever the total falls back under the shared
 * part. The total passes the limit by at most {@link #FLOOR} plus one socket read per connection
 * (the reads in progress when the shared part filled up).
 * A client that stops sending in the middle of a payload keeps what it sent, and while it holds
 * the finisher's role, other large WRITEs wait (they do not fail); clients with small requests
 * go on.
 */
public final class MemoryBudget {

	static final long RECHECK_MILLIS = 10;

	/** A connection holding less than this reads while the total is within the limit. */
	static final long FLOOR = 128 * 1024;

	/** Changes in what a connection holds smaller than this are not reported to the total. */
	static final long REPORT_GRANULE = 64 * 1024;



	private final long limit;

	/** The limit less the part kept for the finisher. */
	private final long shared;

	private final AtomicLong held = new AtomicLong();

	private final Set<Share> shares = ConcurrentHashMap.newKeySet();

	private final Set<Share> paused = ConcurrentHashMap.newKeySet();

	private final LongAdder pauses = new LongAdder();

	/** The connection allowed to complete its partial WRITE over the shared part, or null. */
	private Share finisher;

	/** The finisher's count of received requests when it got the role: the payload it completes. */
	private long finisherMark;

	MemoryBudget(long limit, int maxPayload) {
		this.limit = limit;
		if (limit < 2L * maxPayload) {
			throw new IllegalArgumentException("memory-budget must be at least twice max-payload (" + 2L * maxPayload
					+ " bytes), was " + limit);
		}
		this.shared = limit - maxPayload;
	}

	/**
	 * The default limit: half the JVM's direct-memory limit (Netty's pool and the JDK's direct
	 * buffers share it), so that the other half is left for everything the budget does not count.
	 */
	static long defaultLimit(int maxPayload) {
		return Math.max(PlatformDependent.maxDirectMemory() / 2, 2L * maxPayload);
	}

	/** What the JVM takes besides heap and direct buffers (metaspace, threads, code), roughly. */
	static final long JVM_OVERHEAD = 128L << 20;

	/**
	 * A warning when memory exports may not fit in the memory the process may use (RAM, or the
	 * container's limit), or null when they fit. Each memory export holds up to its size.
	 */
	static String memoryExportsShortfall(Map<String, Long> exportSizes, long processLimit, long heap, long budget) {
		long exports = exportSizes.values().stream().mapToLong(Long::longValue).sum();
		if (processLimit <= 0 || exports == 0) {
			return null;
		}
		long room = processLimit - heap - budget - JVM_OVERHEAD - MemoryBackend.MEMORY_RESERVE;
		if (exports <= room) {
			return null;
		}
		StringBuilder sizes = new StringBuilder();
		exportSizes.forEach((name, size) -> sizes.append((sizes.length() > 0) ? ", " : "")
			.append(name)
			.append(' ')
			.append(mib(size)));
		return "Memory exports can hold " + mib(exports) + " (" + sizes + ") but this process may use "
				+ mib(processLimit) + " (RAM or container limit), of which the heap may take " + mib(heap)
				+ " (-Xmx), network buffers " + mib(budget) + " (nbd.server.memory-budget) and the JVM itself about "
				+ mib(JVM_OVERHEAD + MemoryBackend.MEMORY_RESERVE) + ": about " + mib(exports - Math.max(0, room))
				+ " of export data will not fit. Writes beyond what fits get ENOSPC once memory runs low. "
				+ "Make the exports smaller or give the process more memory.";
	}

	private static String mib(long bytes) {
		return (bytes >> 20) + " MiB";
	}

	/** The limit in bytes. */
	public long limit() {
		return this.limit;
	}

	/** Bytes counted against the budget now, summed over the connections. */
	public long held() {
		long total = 0;
		for (Share s : this.shares) {
			total += s.live();
		}
		return total;
	}

	/** Connections not being read because of the budget. */
	public int pausedConnections() {
		return this.paused.size();
	}

	/** How many times a connection was paused because of the budget. */
	public long pauses() {
		return this.pauses.sum();
	}

	/** A connection's share; {@code decoder} tells what its partial WRITE payload holds. */
	Share share(Channel channel, RequestDecoder decoder) {
		Share share = new Share(channel, decoder);
		this.shares.add(share);
		return share;
	}

	private synchronized boolean decide(Share share) {
		long total = held();
		if (total <= this.shared) {
			return true;
		}
		if (share.live() < FLOOR) {
			return true;
		}
		if (this.finisher != null) {
			checkFinisher();
		}
		if (this.finisher == null && share.gathering()) {
			this.finisher = share;
			this.finisherMark = share.requests;
		}
		// The finisher always reads: what it adds is bounded by the rest of its one payload, which
		// the part kept for it covers. Making it wait for the limit could deadlock: the others' last
		// socket reads can push the total past the shared part, and they hold what they have until
		// their own turn comes, so the memory the finisher would wait for is never released.
		return this.finisher == share;
	}

	/** Ends the finisher's role once its payload has arrived. */
	private void checkFinisher() {
		Share f = this.finisher;
		if (!f.gathering() || f.requests != this.finisherMark) {
			this.finisher = null;
		}
	}

	private void released() {
		if (!this.paused.isEmpty() && this.held.get() <= this.shared) {
			for (Share s : this.paused) {
				s.recheck();
			}
		}
	}

	/**
	 * What one connection holds. Its owner (the connection's event loop) reports changes with
	 * {@link #update()}; any thread may read {@link #live()}.
	 */
	final class Share {

		private final Channel channel;

		private final RequestDecoder decoder;

		/** WRITE payload bytes received and not yet answered (owner thread writes). */
		private volatile long payloads;

		/** Requests received (owner thread writes). */
		private volatile long requests;

		/** What this share last added to the server total (owner thread only). */
		private long reported;

		private boolean pausedNow;

		private boolean recheckScheduled;

		/** A recheck posted from another thread and not yet run: posted once, not per release. */
		private final AtomicBoolean recheckPosted = new AtomicBoolean();

		private boolean closed;

		private Runnable onResume = () -> {
		};

		Share(Channel channel, RequestDecoder decoder) {
			this.channel = channel;
			this.decoder = decoder;
		}

		/** What to run (on the connection's event loop) when reading may resume. */
		void onResume(Runnable onResume) {
			this.onResume = onResume;
		}

		/** A request was received: its WRITE payload counts until it is {@link #answered}. */
		void received(ProtocolMessage.Request request) {
			this.payloads += payloadBytes(request);
			this.requests++;
		}

		void answered(ProtocolMessage.Request request) {
			long bytes = payloadBytes(request);
			if (bytes > 0) {
				this.payloads -= bytes;
				update();
			}
		}

		private static long payloadBytes(ProtocolMessage.Request request) {
			return (request.payload() != null) ? request.length() : 0;
		}

		boolean gathering() {
			return !this.closed && this.decoder.gathering() > 0;
		}

		/** Memory held now; callable from any thread. */
		long live() {
			if (this.closed) {
				return 0;
			}
			ChannelOutboundBuffer out = this.channel.unsafe().outboundBuffer();
			return this.decoder.gathering() + this.payloads + ((out != null) ? out.totalPendingWriteBytes() : 0);
		}

		/** Reports what this connection holds now to the server total. */
		void update() {
			if (this.closed) {
				return;
			}
			long now = live();
			long delta = now - this.reported;
			// Small changes are not worth a write to the shared total from every network thread;
			// the total is off by less than this per connection (and exact when idle).
			if (delta != 0 && (now == 0 || Math.abs(delta) >= REPORT_GRANULE)) {
				this.reported = now;
				MemoryBudget.this.held.addAndGet(delta);
				if (delta < 0) {
					released();
				}
			}
		}

		/**
		 * Whether this connection may read now, after reporting what it holds. When it may not,
		 * it is looked at again shortly and {@link #onResume} runs once it may.
		 */
		boolean mayRead() {
			update();
			boolean read = this.closed || MemoryBudget.this.held.get() <= MemoryBudget.this.shared || decide(this);
			if (read != !this.pausedNow) {
				this.pausedNow = !read;
				if (this.pausedNow) {
					MemoryBudget.this.paused.add(this);
					MemoryBudget.this.pauses.increment();
				}
				else {
					MemoryBudget.this.paused.remove(this);
				}
			}
			if (this.pausedNow) {
				scheduleRecheck();
			}
			return read;
		}

		/** Whether the budget stopped this connection's reading at its last look. */
		boolean paused() {
			return this.pausedNow;
		}

		private void scheduleRecheck() {
			if (this.recheckScheduled) {
				return;
			}
			this.recheckScheduled = true;
			try {
				this.channel.eventLoop().schedule(() -> {
					this.recheckScheduled = false;
					resumeIfAllowed();
				}, RECHECK_MILLIS, TimeUnit.MILLISECONDS);
			}
			catch (RejectedExecutionException ex) {
				// Event loop shut down: the connection is going away.
			}
		}

		/** From any thread: look again soon, on the owner's event loop. */
		void recheck() {
			if (!this.recheckPosted.compareAndSet(false, true)) {
				return;
			}
			try {
				this.channel.eventLoop().execute(() -> {
					this.recheckPosted.set(false);
					resumeIfAllowed();
				});
			}
			catch (RejectedExecutionException ex) {
				// Event loop shut down: the connection is going away.
			}
		}

		private void resumeIfAllowed() {
			if (!this.closed && this.pausedNow && mayRead()) {
				this.onResume.run();
			}
		}

		/** The connection ended: what it held no longer counts. */
		void close() {
			if (this.closed) {
				return;
			}
			this.closed = true;
			MemoryBudget.this.shares.remove(this);
			MemoryBudget.this.paused.remove(this);
			MemoryBudget.this.held.addAndGet(-this.reported);
			this.reported = 0;
			synchronized (MemoryBudget.this) {
				if (MemoryBudget.this.finisher == this) {
					MemoryBudget.this.finisher = null;
				}
			}
			released();
		}

	}

}
