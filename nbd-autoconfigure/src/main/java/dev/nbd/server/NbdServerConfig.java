package dev.nbd.server;

import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.List;
import java.util.Set;

/**
 * Settings of one {@link NbdServer}. Immutable; build with {@link #builder()}.
 *
 * @param address bind address
 * @param port TCP port, 0 for any free port, negative for no TCP listener
 * @param unixSocket path of a Unix domain socket to listen on as well (or instead), or null
 * @param unixSocketPermissions permissions of the Unix domain socket file
 * @param maxConnections open connections beyond this are closed at once
 * @param maxInFlight per-connection requests in progress before the server stops reading
 * @param maxPayload largest READ/WRITE payload, advertised as the maximum block size
 * @param maxInFlightBytes per-connection payload bytes (READ and WRITE) in progress before the
 * server stops dispatching: with {@code maxPayload} it bounds memory held for one connection
 * @param handshakeTimeout a client still negotiating after this is dropped
 * @param idleTimeout a connection that sent no request for this long, with none in progress, is
 * closed; zero for never
 * @param writeStallTimeout a connection whose replies have not drained at all for this long (a
 * client that stopped reading) is closed; zero for never
 * @param drainTimeout a closing connection (DISC, graceful shutdown, actuator close) whose
 * replies have not all been sent after this long is cut off; zero for never
 * @param busyPoll how long a network thread keeps polling its sockets after the last event
 * before it blocks (trading CPU for latency); zero for never; null for adaptive: {@link #ADAPTIVE_SPIN},
 * by at most one thread fewer than the CPUs the process may use ({@link SpinSlots})
 * @param sendBufferSize socket send buffer (SO_SNDBUF) of each connection in bytes; zero leaves
 * it to the kernel's autotuning; {@link #ADAPTIVE_SEND_BUFFER} chooses per connection
 * ({@link #sendBufferFor})
 * @param allowedAddresses clients allowed to connect; empty for all
 * @param tls TLS settings, or null for plaintext only
 * @param transport Netty transport
 * @param eventLoopThreads network threads, 0 for Netty's default
 * @param workerThreads threads that call blocking backends
 * @param defaultExport export served for the empty name; null for the first export
 * @param memoryBudget bytes of WRITE payloads and unsent replies the server holds across all
 * connections before it stops reading from those that hold the most (see {@link MemoryBudget});
 * zero for half the JVM's direct-memory limit; at least twice {@code maxPayload}
 */
public record NbdServerConfig(String address, int port, Path unixSocket,
		Set<PosixFilePermission> unixSocketPermissions, int maxConnections, int maxInFlight, int maxPayload,
		long maxInFlightBytes, Duration handshakeTimeout, Duration idleTimeout, Duration writeStallTimeout, Duration drainTimeout, Duration busyPoll, int sendBufferSize,
		List<Cidr> allowedAddresses,
		TlsSettings tls, Transport transport, int eventLoopThreads, int workerThreads, String defaultExport,
		long memoryBudget) {

	/** Longest option data accepted; longer options are skipped and refused with TOO_BIG. */
	public static final int MAX_OPTION_LENGTH = 64 * 1024;

	/**
	 * Default SO_SNDBUF: 512 KiB (the kernel doubles it). Autotuning grows a fast local
	 * connection's buffer to megabytes, and large READ replies then leave the CPU caches before
	 * the client reads them; measured on loopback, this size makes 1 MiB reads about 20% cheaper
	 * per byte, and a 1 MiB window still fills 10 Gbit/s at a 0.8 ms round trip.
	 */
	public static final int DEFAULT_SEND_BUFFER_SIZE = 512 * 1024;

	/**
	 * How long a thread spins under adaptive busy-poll ({@code busyPoll} null): measured on a
	 * 2-CPU VM, 50 µs catches the next request of a depth-1 client (a 20-40 µs round trip); 20 µs
	 * caught too few.
	 */
	public static final Duration ADAPTIVE_SPIN = Duration.ofNanos(50_000);

	/** {@code sendBufferSize} that picks per connection: see {@link #sendBufferFor}. */
	public static final int ADAPTIVE_SEND_BUFFER = -1;

	/**
	 * SO_SNDBUF for a connection from {@code remote}, 0 for the kernel's autotuning. Adaptive:
	 * {@link #DEFAULT_SEND_BUFFER_SIZE} for a client on this host (the round trip is microseconds,
	 * so a small buffer loses nothing and keeps large replies cache-warm), autotuning for any other
	 * (a 1 MiB window caps a 20 ms path near 50 MB/s; autotuning grows to what the path needs).
	 */
	public int sendBufferFor(java.net.InetAddress remote) {
		if (this.sendBufferSize != ADAPTIVE_SEND_BUFFER) {
			return this.sendBufferSize;
		}
		return (remote != null && remote.isLoopbackAddress()) ? DEFAULT_SEND_BUFFER_SIZE : 0;
	}

	public NbdServerConfig {
		if (maxPayload < 4096) {
			throw new IllegalArgumentException("max-payload must be at least 4KB, was " + maxPayload);
		}
		if (maxInFlight < 1) {
			throw new IllegalArgumentException("max-in-flight must be at least 1, was " + maxInFlight);
		}
		if (maxConnections < 1) {
			throw new IllegalArgumentException("max-connections must be at least 1, was " + maxConnections);
		}
		if (drainTimeout.isNegative()) {
			throw new IllegalArgumentException("drain-timeout must not be negative, was " + drainTimeout);
		}
		if (busyPoll != null && busyPoll.isNegative()) {
			throw new IllegalArgumentException("busy-poll must not be negative, was " + busyPoll);
		}
		if (sendBufferSize < 0 && sendBufferSize != ADAPTIVE_SEND_BUFFER) {
			throw new IllegalArgumentException("send-buffer-size must not be negative, was " + sendBufferSize);
		}
		if (memoryBudget != 0 && memoryBudget < 2L * maxPayload) {
			throw new IllegalArgumentException("memory-budget must be at least twice max-payload (" + 2L * maxPayload
					+ " bytes), was " + memoryBudget);
		}
		allowedAddresses = List.copyOf(allowedAddresses);
		unixSocketPermissions = Set.copyOf(unixSocketPermissions);
	}

	public static Builder builder() {
		return new Builder();
	}

	/** Builder with the defaults documented in the README. */
	public static final class Builder {

		private String address = "127.0.0.1";

		private int port = 10809;

		private Path unixSocket;

		private Set<PosixFilePermission> unixSocketPermissions = PosixFilePermissions.fromString("rw-rw----");

		private int maxConnections = 512;

		private int maxInFlight = 64;

		private int maxPayload = 32 * 1024 * 1024;

		private long maxInFlightBytes = 64L * 1024 * 1024;

		private Duration handshakeTimeout = Duration.ofSeconds(10);

		private Duration idleTimeout = Duration.ZERO;

		private Duration writeStallTimeout = Duration.ofMinutes(2);

		private Duration drainTimeout = Duration.ofSeconds(30);

		private Duration busyPoll;

		private int sendBufferSize = ADAPTIVE_SEND_BUFFER;

		private List<Cidr> allowedAddresses = List.of();

		private TlsSettings tls;

		private Transport transport = Transport.AUTO;

		private int eventLoopThreads;

		private int workerThreads = Math.max(8, 4 * Runtime.getRuntime().availableProcessors());

		private String defaultExport;

		private long memoryBudget;

		public Builder address(String address) {
			this.address = address;
			return this;
		}

		public Builder port(int port) {
			this.port = port;
			return this;
		}

		public Builder unixSocket(Path unixSocket) {
			this.unixSocket = unixSocket;
			return this;
		}

		public Builder unixSocketPermissions(Set<PosixFilePermission> unixSocketPermissions) {
			this.unixSocketPermissions = unixSocketPermissions;
			return this;
		}

		public Builder maxConnections(int maxConnections) {
			this.maxConnections = maxConnections;
			return this;
		}

		public Builder maxInFlight(int maxInFlight) {
			this.maxInFlight = maxInFlight;
			return this;
		}

		public Builder maxPayload(int maxPayload) {
			this.maxPayload = maxPayload;
			return this;
		}

		public Builder maxInFlightBytes(long maxInFlightBytes) {
			this.maxInFlightBytes = maxInFlightBytes;
			return this;
		}

		public Builder handshakeTimeout(Duration handshakeTimeout) {
			this.handshakeTimeout = handshakeTimeout;
			return this;
		}

		public Builder idleTimeout(Duration idleTimeout) {
			this.idleTimeout = idleTimeout;
			return this;
		}

		public Builder writeStallTimeout(Duration writeStallTimeout) {
			this.writeStallTimeout = writeStallTimeout;
			return this;
		}

		public Builder drainTimeout(Duration drainTimeout) {
			this.drainTimeout = drainTimeout;
			return this;
		}

		public Builder busyPoll(Duration busyPoll) {
			this.busyPoll = busyPoll;
			return this;
		}

		public Builder sendBufferSize(int sendBufferSize) {
			this.sendBufferSize = sendBufferSize;
			return this;
		}

		public Builder allowedAddresses(List<Cidr> allowedAddresses) {
			this.allowedAddresses = allowedAddresses;
			return this;
		}

		public Builder tls(TlsSettings tls) {
			this.tls = tls;
			return this;
		}

		public Builder transport(Transport transport) {
			this.transport = transport;
			return this;
		}

		public Builder eventLoopThreads(int eventLoopThreads) {
			this.eventLoopThreads = eventLoopThreads;
			return this;
		}

		public Builder workerThreads(int workerThreads) {
			this.workerThreads = workerThreads;
			return this;
		}

		public Builder defaultExport(String defaultExport) {
			this.defaultExport = defaultExport;
			return this;
		}

		public Builder memoryBudget(long memoryBudget) {
			this.memoryBudget = memoryBudget;
			return this;
		}

		public NbdServerConfig build() {
			return new NbdServerConfig(this.address, this.port, this.unixSocket, this.unixSocketPermissions,
					this.maxConnections, this.maxInFlight, this.maxPayload,
					Math.max(this.maxInFlightBytes, this.maxPayload), this.handshakeTimeout, this.idleTimeout,
					this.writeStallTimeout, this.drainTimeout, this.busyPoll, this.sendBufferSize, this.allowedAddresses, this.tls, this.transport, this.eventLoopThreads, this.workerThreads,
					this.defaultExport, this.memoryBudget);
		}

	}

}
