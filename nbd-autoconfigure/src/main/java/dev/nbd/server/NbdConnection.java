package dev.nbd.server;

import java.net.SocketAddress;
import java.time.Instant;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

import dev.nbd.backend.ExportBackend;
import io.netty.channel.Channel;

/**
 * One client connection: who it is, which export it uses, and its live counters (read by the
 * actuator endpoint and metrics from other threads).
 */
public final class NbdConnection {

	private static final AtomicLong IDS = new AtomicLong();

	private final String id = Long.toString(IDS.incrementAndGet());

	private final Channel channel;

	private final Instant connectedAt = Instant.now();

	private final int maxInFlight;

	private final AtomicInteger inFlight = new AtomicInteger();

	private final AtomicInteger peakInFlight = new AtomicInteger();

	private final AtomicLong requests = new AtomicLong();

	private final AtomicLong bytesRead = new AtomicLong();

	private final AtomicLong bytesWritten = new AtomicLong();

	private volatile Export export;

	private volatile ExportBackend view;

	private volatile FlushCoordinator ownFlush;

	private volatile boolean tls;

	private volatile String tlsSubject;

	private volatile Runnable gracefulClose;

	NbdConnection(Channel channel, int maxInFlight) {
		this.channel = channel;
		this.maxInFlight = maxInFlight;
	}

	public String id() {
		return this.id;
	}

	public SocketAddress remoteAddress() {
		return this.channel.remoteAddress();
	}

	/** Remote address as {@code host:port}, or {@code unix:PATH} (the listener's) for a Unix socket client. */
	public String remote() {
		SocketAddress a = this.channel.remoteAddress();
		if (a instanceof java.net.InetSocketAddress inet) {
			String host = inet.getAddress().getHostAddress();
			return (host.indexOf(':') >= 0 ? "[" + host + "]" : host) + ":" + inet.getPort();
		}
		return "unix:" + this.channel.localAddress();
	}

	public Instant connectedAt() {
		return this.connectedAt;
	}

	/** Export attached to, or null while negotiating. */
	public Export export() {
		return this.export;
	}

	public boolean tls() {
		return this.tls;
	}

	/** Subject of the client certificate, or null. */
	public String tlsSubject() {
		return this.tlsSubject;
	}

	/** Requests received and not yet answered. */
	public int inFlight() {
		return this.inFlight.get();
	}

	/** Highest {@link #inFlight()} seen. */
	public int peakInFlight() {
		return this.peakInFlight.get();
	}

	public int maxInFlight() {
		return this.maxInFlight;
	}

	public long requests() {
		return this.requests.get();
	}

	/** Payload bytes sent to the client (READ). */
	public long bytesRead() {
		return this.bytesRead.get();
	}

	/** Payload bytes received from the client (WRITE). */
	public long bytesWritten() {
		return this.bytesWritten.get();
	}

	/**
	 * Ends the connection cleanly: new requests get {@code NBD_ESHUTDOWN}, requests in flight
	 * are finished and answered, then the socket closes.
	 */
	public void closeGracefully() {
		Runnable r = this.gracefulClose;
		if (r != null) {
			r.run();
		}
		else {
			this.channel.close();
		}
	}

	Channel channel() {
		return this.channel;
	}

	ExportBackend view() {
		return this.view;
	}

	FlushCoordinator ownFlush() {
		return this.ownFlush;
	}

	long flushRequests() {
		FlushCoordinator f = this.ownFlush;
		return (f != null) ? f.requests() : 0;
	}

	long flushSyncs() {
		FlushCoordinator f = this.ownFlush;
		return (f != null) ? f.syncs() : 0;
	}

	void attach(Export export, ExportBackend view, FlushCoordinator ownFlush) {
		this.view = view;
		this.ownFlush = ownFlush;
		this.export = export;
	}

	void tls(String subject) {
		this.tls = true;
		this.tlsSubject = subject;
	}

	void gracefulClose(Runnable action) {
		this.gracefulClose = action;
	}

	int requestReceived() {
		this.requests.incrementAndGet();
		int n = this.inFlight.incrementAndGet();
		this.peakInFlight.accumulateAndGet(n, Math::max);
		return n;
	}

	int requestAnswered() {
		return this.inFlight.decrementAndGet();
	}

	void addBytesRead(long n) {
		this.bytesRead.addAndGet(n);
	}

	void addBytesWritten(long n) {
		this.bytesWritten.addAndGet(n);
	}

	@Override
	public String toString() {
		Export e = this.export;
		return "connection " + this.id + " from " + remote() + ((e != null) ? " to export '" + e.name() + "'" : "");
	}

}
