package dev.nbd.autoconfigure;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import org.springframework.boot.context.properties.ConfigurationProperties;
import org.springframework.util.unit.DataSize;

import dev.nbd.server.Transport;

/**
 * Settings of the NBD listener.
 */
@ConfigurationProperties("nbd.server")
public class NbdServerProperties {

	/**
	 * Whether to start the NBD listener.
	 */
	private boolean enabled = true;

	/**
	 * Bind address. Loopback unless configured: binding a routable address without TLS is
	 * logged as a warning.
	 */
	private String address = "127.0.0.1";

	/**
	 * TCP port; 0 picks a free one, published as 'local.nbd.server.port'; -1 for no TCP
	 * listener (with unix-socket set).
	 */
	private int port = 10809;

	/**
	 * Also (or, with port -1, only) listen on this Unix domain socket path, for clients on the
	 * same host or a sidecar sharing a volume ('nbd+unix:///EXPORT?socket=PATH'). A socket file
	 * left by a server that died is replaced.
	 */
	private Path unixSocket;

	/**
	 * Permissions of the Unix socket file, octal ('660') or symbolic ('rw-rw----'); a client
	 * needs write permission to connect.
	 */
	private String unixSocketPermissions = "rw-rw----";

	/**
	 * Open connections beyond this are refused (closed before the greeting).
	 */
	private int maxConnections = 512;

	/**
	 * Per-connection requests in progress before the server stops reading from that socket.
	 */
	private int maxInFlight = 64;

	/**
	 * Largest READ/WRITE payload accepted, advertised as the maximum block size.
	 */
	private DataSize maxPayload = DataSize.ofMegabytes(32);

	/**
	 * Per-connection READ/WRITE payload in progress before the server stops dispatching; with
	 * max-payload it bounds the memory one connection can hold.
	 */
	private DataSize maxInFlightBytes = DataSize.ofMegabytes(64);

	/**
	 * Memory for WRITE payloads being received, queued or in progress and for unsent replies,
	 * across all connections. When it is spent the server stops reading from the connections
	 * that hold the most until memory is released; nobody gets an error. At least twice
	 * max-payload. Unset: half the JVM's direct-memory limit (-XX:MaxDirectMemorySize, by
	 * default the heap size).
	 */
	private DataSize memoryBudget;

	/**
	 * A client that has not finished option haggling by then is dropped.
	 */
	private Duration handshakeTimeout = Duration.ofSeconds(10);

	/**
	 * A connection that sent no request for this long, with none in progress, is closed
	 * cleanly. Zero disables (block devices are often idle for hours).
	 */
	private Duration idleTimeout = Duration.ZERO;

	/**
	 * A connection whose replies have not drained at all for this long (a client that stopped
	 * reading) is closed. Zero disables.
	 */
	private Duration writeStallTimeout = Duration.ofMinutes(2);

	/**
	 * A closing connection (after NBD_CMD_DISC, during graceful shutdown, or closed through the
	 * actuator) whose replies have not all reached the socket after this long is cut off. Zero
	 * disables (graceful shutdown still ends at the shutdown phase timeout).
	 */
	private Duration drainTimeout = Duration.ofSeconds(30);

	/**
	 * How long a network thread keeps polling its sockets after the last event before it blocks
	 * (epoll and nio transports). Trades CPU for latency: a request arriving meanwhile needs no
	 * thread wake-up, which roughly halves depth-1 latency on VMs, but a thread serving a steady
	 * stream of requests then spins between them. 0 disables. Unset: adaptive, 50us by at most
	 * one thread fewer than the CPUs the process may use (so never with one CPU), the others block.
	 */
	private Duration busyPoll;

	/**
	 * Socket send buffer (SO_SNDBUF) of each connection; the kernel doubles it. 0 leaves it to
	 * the kernel's autotuning, which suits links with a large bandwidth-delay product (WAN).
	 * Unset: 512KB for clients on this host (loopback), autotuning for all others.
	 */
	private DataSize sendBufferSize;

	/**
	 * Comma-separated CIDR blocks (IPv4 or IPv6) allowed to connect; empty allows all. Checked
	 * before any handshake byte is sent.
	 */
	private List<String> allowedAddresses = new ArrayList<>();

	/**
	 * Network transport: auto (epoll when available, else nio), nio, epoll or io-uring.
	 */
	private Transport transport = Transport.AUTO;

	/**
	 * Network event loop threads; 0 for Netty's default (twice the processors).
	 */
	private int eventLoopThreads;

	/**
	 * Threads that call blocking backends (file exports, most user backends). Defaults to four
	 * per processor, at least 8.
	 */
	private int workerThreads = Math.max(8, 4 * Runtime.getRuntime().availableProcessors());

	/**
	 * Export served to clients that ask for the empty name; the first export when unset.
	 */
	private String defaultExport;

	private final Ssl ssl = new Ssl();

	public boolean isEnabled() {
		return this.enabled;
	}

	public void setEnabled(boolean enabled) {
		this.enabled = enabled;
	}

	public String getAddress() {
		return this.address;
	}

	public void setAddress(String address) {
		this.address = address;
	}

	public int getPort() {
		return this.port;
	}

	public void setPort(int port) {
		this.port = port;
	}

	public Path getUnixSocket() {
		return this.unixSocket;
	}

	public void setUnixSocket(Path unixSocket) {
		this.unixSocket = unixSocket;
	}

	public String getUnixSocketPermissions() {
		return this.unixSocketPermissions;
	}

	public void setUnixSocketPermissions(String unixSocketPermissions) {
		this.unixSocketPermissions = unixSocketPermissions;
	}

	public int getMaxConnections() {
		return this.maxConnections;
	}

	public void setMaxConnections(int maxConnections) {
		this.maxConnections = maxConnections;
	}

	public int getMaxInFlight() {
		return this.maxInFlight;
	}

	public void setMaxInFlight(int maxInFlight) {
		this.maxInFlight = maxInFlight;
	}

	public DataSize getMaxPayload() {
		return this.maxPayload;
	}

	public void setMaxPayload(DataSize maxPayload) {
		this.maxPayload = maxPayload;
	}

	public DataSize getMaxInFlightBytes() {
		return this.maxInFlightBytes;
	}

	public void setMaxInFlightBytes(DataSize maxInFlightBytes) {
		this.maxInFlightBytes = maxInFlightBytes;
	}

	public Duration getHandshakeTimeout() {
		return this.handshakeTimeout;
	}

	public void setHandshakeTimeout(Duration handshakeTimeout) {
		this.handshakeTimeout = handshakeTimeout;
	}

	public Duration getIdleTimeout() {
		return this.idleTimeout;
	}

	public void setIdleTimeout(Duration idleTimeout) {
		this.idleTimeout = idleTimeout;
	}

	public Duration getDrainTimeout() {
		return this.drainTimeout;
	}

	public void setDrainTimeout(Duration drainTimeout) {
		this.drainTimeout = drainTimeout;
	}

	public Duration getWriteStallTimeout() {
		return this.writeStallTimeout;
	}

	public void setWriteStallTimeout(Duration writeStallTimeout) {
		this.writeStallTimeout = writeStallTimeout;
	}

	public Duration getBusyPoll() {
		return this.busyPoll;
	}

	public void setBusyPoll(Duration busyPoll) {
		this.busyPoll = busyPoll;
	}

	public DataSize getMemoryBudget() {
		return this.memoryBudget;
	}

	public void setMemoryBudget(DataSize memoryBudget) {
		this.memoryBudget = memoryBudget;
	}

	public DataSize getSendBufferSize() {
		return this.sendBufferSize;
	}

	public void setSendBufferSize(DataSize sendBufferSize) {
		this.sendBufferSize = sendBufferSize;
	}

	public List<String> getAllowedAddresses() {
		return this.allowedAddresses;
	}

	public void setAllowedAddresses(List<String> allowedAddresses) {
		this.allowedAddresses = allowedAddresses;
	}

	public Transport getTransport() {
		return this.transport;
	}

	public void setTransport(Transport transport) {
		this.transport = transport;
	}

	public int getEventLoopThreads() {
		return this.eventLoopThreads;
	}

	public void setEventLoopThreads(int eventLoopThreads) {
		this.eventLoopThreads = eventLoopThreads;
	}

	public int getWorkerThreads() {
		return this.workerThreads;
	}

	public void setWorkerThreads(int workerThreads) {
		this.workerThreads = workerThreads;
	}

	public String getDefaultExport() {
		return this.defaultExport;
	}

	public void setDefaultExport(String defaultExport) {
		this.defaultExport = defaultExport;
	}

	public Ssl getSsl() {
		return this.ssl;
	}

	/**
	 * TLS through a Spring Boot SSL bundle.
	 */
	public static class Ssl {

		/**
		 * Name of an SSL bundle ('spring.ssl.bundle.*'); setting it turns TLS on.
		 */
		private String bundle;

		/**
		 * Whether TLS is required (FORCEDTLS) or optional.
		 */
		private Mode mode = Mode.REQUIRED;

		/**
		 * Client certificate authentication against the bundle's trust store.
		 */
		private ClientAuth clientAuth = ClientAuth.NONE;

		public String getBundle() {
			return this.bundle;
		}

		public void setBundle(String bundle) {
			this.bundle = bundle;
		}

		public Mode getMode() {
			return this.mode;
		}

		public void setMode(Mode mode) {
			this.mode = mode;
		}

		public ClientAuth getClientAuth() {
			return this.clientAuth;
		}

		public void setClientAuth(ClientAuth clientAuth) {
			this.clientAuth = clientAuth;
		}

	}

	/**
	 * TLS mode.
	 */
	public enum Mode {

		/**
		 * Every option but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD until TLS is up.
		 */
		REQUIRED,

		/**
		 * Clients may use TLS or not.
		 */
		OPTIONAL

	}

	/**
	 * Client certificate policy.
	 */
	public enum ClientAuth {

		/**
		 * No client certificate asked.
		 */
		NONE,

		/**
		 * Asked and checked when sent, not required.
		 */
		WANT,

		/**
		 * Required.
		 */
		NEED

	}

}
