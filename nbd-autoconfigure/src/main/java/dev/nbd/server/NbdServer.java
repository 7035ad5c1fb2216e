package dev.nbd.server;

import java.io.IOException;
import java.net.BindException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.spi.SelectorProvider;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFileAttributes;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.backend.SystemMemory;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.buffer.ByteBufAllocator;
import io.netty.channel.AdaptiveRecvByteBufAllocator;
import io.netty.channel.Channel;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.ChannelPipeline;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.IoHandlerFactory;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.ServerChannel;
import io.netty.channel.WriteBufferWaterMark;
import io.netty.channel.epoll.Epoll;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.epoll.EpollServerDomainSocketChannel;
import io.netty.channel.epoll.EpollServerSocketChannel;
import io.netty.channel.nio.NioIoHandler;
import io.netty.channel.socket.SocketChannel;
import io.netty.channel.socket.nio.NioServerDomainSocketChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import io.netty.channel.uring.IoUring;
import io.netty.channel.uring.IoUringIoHandler;
import io.netty.channel.uring.IoUringServerDomainSocketChannel;
import io.netty.channel.uring.IoUringServerSocketChannel;
import io.netty.channel.unix.DomainSocketAddress;
import io.netty.handler.flush.FlushConsolidationHandler;
import io.netty.util.concurrent.DefaultThreadFactory;

/**
 * The NBD listener: a Netty server whose pipeline per connection is
 * {@code flush-consolidation → [tls] → handshake decoder → handshake handler}, swapped to
 * {@code request decoder → transmission handler} once an export is chosen.
 */
public final class NbdServer {

	private static final Logger logger = LoggerFactory.getLogger(NbdServer.class);

	/** Largest single socket read (Netty's default stops at 64 KiB). */
	private static final int MAX_SOCKET_READ = 256 * 1024;

	private final NbdServerConfig config;

	private final MemoryBudget memoryBudget;

	private final Map<String, Export> exports;

	private final NbdServerListener listener;

	private final Set<NbdConnection> connections = ConcurrentHashMap.newKeySet();

	private final AtomicInteger openChannels = new AtomicInteger();

	private final RefusalLog refusals = new RefusalLog();

	private final Set<String> loggedFailures = ConcurrentHashMap.newKeySet();

	private volatile boolean draining;

	/** Set before the final flush of a graceful stop: nothing is answered after it. */
	private volatile boolean repliesStopped;

	private EventLoopGroup bossGroup;

	private EventLoopGroup workerGroup;

	private ExecutorService blockingExecutor;

	/** Chunks of long CACHE/TRIM/WRITE_ZEROES requests: at most half the workers, in fair turns. */
	private final BackgroundScheduler backgroundScheduler;

	private Channel serverChannel;

	/** The Unix domain socket listener, or null; also {@link #serverChannel} when TCP is off. */
	private Channel unixChannel;

	private Transport transport;

	/** Buffers of the connections, chosen for this JVM's heap ({@link ConnectionAllocator}). */
	private final ByteBufAllocator allocator = ConnectionAllocator.get();

	/** A server whose exports have only a multi-connection mode and an allow-list as policy. */
	public NbdServer(NbdServerConfig config, Collection<ExportBackend> backends, Map<String, MultiConnMode> modes,
			Map<String, List<Cidr>> exportAllowLists, NbdServerListener listener) {
		this(config, backends, policies(backends, modes, exportAllowLists), listener);
	}

	/**
	 * A server of {@code backends}, each under the {@link ExportPolicy} of its name in
	 * {@code policies} ({@link ExportPolicy#DEFAULT} when absent). Throws
	 * {@link IllegalArgumentException} for duplicate or invalid names, a policy naming no
	 * backend, and invalid block sizes.
	 */
	public NbdServer(NbdServerConfig config, Collection<ExportBackend> backends, Map<String, ExportPolicy> policies,
			NbdServerListener listener) {
		this.config = config;
		this.memoryBudget = new MemoryBudget(
				(config.memoryBudget() > 0) ? config.memoryBudget() : MemoryBudget.defaultLimit(config.maxPayload()),
				config.maxPayload());
		this.listener = (listener != null) ? listener : new NbdServerListener() {
		};
		Map<String, ExportBackend> byName = new LinkedHashMap<>();
		for (ExportBackend backend : backends) {
			String name = backend.name();
			if (name == null || name.getBytes(java.nio.charset.StandardCharsets.UTF_8).length > 4096) {
				throw new IllegalArgumentException("export name must be set and at most 4096 bytes: " + name);
			}
			if (byName.putIfAbsent(name, backend) != null) {
				throw new IllegalArgumentException("two exports named '" + name + "'");
			}
		}
		for (String name : policies.keySet()) {
			if (!byName.containsKey(name)) {
				throw new IllegalArgumentException("a policy names export '" + name + "', which has no backend");
			}
		}
		this.blockingExecutor = new ThreadPoolExecutor(config.workerThreads(), config.workerThreads(), 60,
				TimeUnit.SECONDS, new LinkedBlockingQueue<>(), new DefaultThreadFactory("nbd-worker", true));
		((ThreadPoolExecutor) this.blockingExecutor).allowCoreThreadTimeOut(true);
		this.backgroundScheduler = new BackgroundScheduler(this.blockingExecutor,
				Math.max(1, config.workerThreads() / 2));
		Map<String, Export> map = new LinkedHashMap<>();
		byName.forEach((name, backend) -> map.put(name, new Export(backend,
				policies.getOrDefault(name, ExportPolicy.DEFAULT), config.maxPayload(), this.blockingExecutor)));
		this.exports = Collections.unmodifiableMap(map);
		warnIfMemoryExportsDoNotFit();
	}

	private static Map<String, ExportPolicy> policies(Collection<ExportBackend> backends,
			Map<String, MultiConnMode> modes, Map<String, List<Cidr>> allowLists) {
		Map<String, ExportPolicy> policies = new LinkedHashMap<>();
		for (ExportBackend backend : backends) {
			String name = backend.name();
			policies.put(name, ExportPolicy.builder()
				.multiConn(modes.getOrDefault(name, MultiConnMode.AUTO))
				.allowedAddresses(allowLists.getOrDefault(name, List.of()))
				.build());
		}
		return policies;
	}

	/** Binds the listener; throws {@link NbdServerException} when the port cannot be bound. */
	public synchronized void start() {
		if (this.serverChannel != null) {
			return;
		}
		this.transport = resolveTransport(this.config.transport());
		IoHandlerFactory ioFactory = ioHandlerFactory(this.transport, Duration.ZERO);
		IoHandlerFactory connectionIoFactory = ioHandlerFactory(this.transport, this.config.busyPoll());
		Class<? extends ServerChannel> channelClass = switch (this.transport) {
			case EPOLL -> EpollServerSocketChannel.class;
			case IO_URING -> IoUringServerSocketChannel.class;
			default -> NioServerSocketChannel.class;
		};
		if (this.config.port() < 0 && this.config.unixSocket() == null) {
			throw new NbdServerException("NBD server has nothing to listen on: nbd.server.port is negative and "
					+ "nbd.server.unix-socket is not set", this.config.port(), null);
		}
		this.bossGroup = new MultiThreadIoEventLoopGroup(1, new DefaultThreadFactory("nbd-accept"), ioFactory);
		this.workerGroup = new MultiThreadIoEventLoopGroup(this.config.eventLoopThreads(),
				new DefaultThreadFactory("nbd-io"), connectionIoFactory);
		ServerBootstrap bootstrap = connectionOptions(new ServerBootstrap()).channel(channelClass)
			.option(ChannelOption.SO_REUSEADDR, true)
			.childOption(ChannelOption.TCP_NODELAY, true)
			.childOption(ChannelOption.SO_KEEPALIVE, true)
			.childHandler(new ChannelInitializer<SocketChannel>() {
				@Override
				protected void initChannel(SocketChannel ch) {
					InetSocketAddress remote = ch.remoteAddress();
					int sendBuffer = NbdServer.this.config.sendBufferFor((remote != null) ? remote.getAddress() : null);
					if (sendBuffer > 0) {
						ch.config().setSendBufferSize(sendBuffer);
					}
					accept(ch);
				}
			});
		try {
			if (this.config.port() >= 0) {
				InetAddress bindAddress = InetAddress.getByName(this.config.address());
				warnIfExposed(bindAddress);
				this.serverChannel = bootstrap.bind(new InetSocketAddress(bindAddress, this.config.port()))
					.syncUninterruptibly()
					.channel();
			}
			if (this.config.unixSocket() != null) {
				this.unixChannel = bindUnixSocket(this.config.unixSocket());
				if (this.serverChannel == null) {
					this.serverChannel = this.unixChannel;
				}
			}
		}
		catch (Exception ex) {
			if (this.serverChannel != null) {
				this.serverChannel.close().syncUninterruptibly();
				this.serverChannel = null;
			}
			shutdownGroups(Duration.ZERO);
			if (ex instanceof NbdServerException nse) {
				throw nse;
			}
			if (ex instanceof BindException || ex.getCause() instanceof BindException
					|| String.valueOf(ex.getMessage()).contains("Address already in use")) {
				throw new NbdServerException("NBD port " + this.config.port() + " on " + this.config.address()
						+ " is already in use", this.config.port(), ex);
			}
			throw new NbdServerException("NBD server could not bind " + this.config.address() + ":"
					+ this.config.port() + ": " + ex.getMessage(), this.config.port(), ex);
		}
		this.draining = false;
		this.repliesStopped = false;
		logger.info("NBD server listening on {} ({} transport, {}) with exports {}", listeningOn(),
				this.transport.name().toLowerCase(), (this.config.tls() == null) ? "plaintext"
						: (this.config.tls().required() ? "TLS required" : "TLS optional"),
				this.exports.keySet());
	}

	/** What TCP and Unix socket listeners share: event loops, backlog, buffers, write buffer, socket reads. */
	private ServerBootstrap connectionOptions(ServerBootstrap bootstrap) {
		return bootstrap.group(this.bossGroup, this.workerGroup)
			.option(ChannelOption.SO_BACKLOG, 1024)
			.childOption(ChannelOption.ALLOCATOR, this.allocator)
			.childOption(ChannelOption.WRITE_BUFFER_WATER_MARK, new WriteBufferWaterMark(1 << 20, 4 << 20))
			// Socket reads grow up to 256 KiB: large WRITE payloads arrive in a few reads, each
			// kept as one piece (no gathering copy) for backends that take payloads in pieces.
			.childOption(ChannelOption.RECVBUF_ALLOCATOR, new AdaptiveRecvByteBufAllocator(64, 2048, MAX_SOCKET_READ));
	}

	private void warnIfMemoryExportsDoNotFit() {
		Map<String, Long> sizes = new LinkedHashMap<>();
		for (Export export : this.exports.values()) {
			if (export.backend() instanceof MemoryBackend memory && !memory.isReadOnly()) {
				sizes.put(export.name(), memory.size());
			}
		}
		String shortfall = MemoryBudget.memoryExportsShortfall(sizes, SystemMemory.limit(),
				Runtime.getRuntime().maxMemory(), this.memoryBudget.limit());
		if (shortfall != null) {
			logger.warn(shortfall);
		}
	}

	private String listeningOn() {
		List<String> on = new ArrayList<>();
		if (port() >= 0) {
			on.add(this.config.address() + ":" + port());
		}
		if (this.unixChannel != null) {
			on.add("unix:" + this.config.unixSocket());
		}
		return String.join(" and ", on);
	}

	/**
	 * Binds the Unix domain socket listener on the same event loops as TCP (every transport has
	 * domain sockets: epoll and io_uring natively, NIO through Java 16's UnixDomainSocketAddress).
	 * A socket file left by a server that died is replaced; one with a live server behind it, or
	 * a path that is not a socket, is an error. The file gets the configured permissions once
	 * bound (until then the umask's): put it in a directory only its users can enter to leave no
	 * window at all. Netty deletes the file when the listener closes.
	 */
	private Channel bindUnixSocket(Path path) {
		Class<? extends ServerChannel> channelClass = switch (this.transport) {
			case EPOLL -> EpollServerDomainSocketChannel.class;
			case IO_URING -> IoUringServerDomainSocketChannel.class;
			default -> NioServerDomainSocketChannel.class;
		};
		SocketAddress address = (this.transport == Transport.NIO) ? UnixDomainSocketAddress.of(path)
				: new DomainSocketAddress(path.toString());
		ServerBootstrap bootstrap = connectionOptions(new ServerBootstrap()).channel(channelClass)
			.childHandler(new ChannelInitializer<Channel>() {
				@Override
				protected void initChannel(Channel ch) {
					accept(ch);
				}
			});
		try {
			if (path.getParent() != null) {
				Files.createDirectories(path.getParent());
			}
			removeStaleSocket(path);
			Channel channel = bootstrap.bind(address).syncUninterruptibly().channel();
			try {
				Files.setPosixFilePermissions(path, this.config.unixSocketPermissions());
			}
			catch (IOException | RuntimeException ex) {
				channel.close().syncUninterruptibly();
				throw ex;
			}
			return channel;
		}
		catch (NbdServerException ex) {
			throw ex;
		}
		catch (Exception ex) {
			throw new NbdServerException("NBD server could not listen on unix socket " + path + ": " + ex.getMessage(),
					-1, ex);
		}
	}

	private static void removeStaleSocket(Path path) throws IOException {
		if (!Files.exists(path, LinkOption.NOFOLLOW_LINKS)) {
			return;
		}
		if (!Files.readAttributes(path, PosixFileAttributes.class, LinkOption.NOFOLLOW_LINKS).isOther()) {
			throw new NbdServerException("NBD unix socket path " + path + " exists and is not a socket", -1, null);
		}
		try (java.nio.channels.SocketChannel probe = java.nio.channels.SocketChannel.open(StandardProtocolFamily.UNIX)) {
			probe.connect(UnixDomainSocketAddress.of(path));
		}
		catch (IOException refused) {
			// Nobody listens: a socket file left behind by a server that did not close it.
			Files.deleteIfExists(path);
			return;
		}
		throw new NbdServerException("NBD unix socket " + path + " is already in use by another server", -1, null);
	}

	/** The Unix domain socket listened on, or null. */
	public Path unixSocket() {
		return (this.unixChannel != null) ? this.config.unixSocket() : null;
	}

	private void warnIfExposed(InetAddress bindAddress) {
		if (bindAddress.isLoopbackAddress()) {
			return;
		}
		TlsSettings tls = this.config.tls();
		if (tls == null || !tls.required()) {
			logger.warn("NBD server binds {} {}: anyone who can reach it can read and overwrite the exports. "
					+ "Set nbd.server.ssl.bundle (with nbd.server.ssl.mode=required), and restrict "
					+ "nbd.server.allowed-addresses.", this.config.address(),
					(tls == null) ? "without TLS" : "with TLS optional");
		}
	}

	/** Bound TCP port, or -1 when not listening on TCP. */
	public int port() {
		Channel ch = this.serverChannel;
		return (ch != null && ch.localAddress() instanceof InetSocketAddress a) ? a.getPort() : -1;
	}

	public boolean isRunning() {
		Channel ch = this.serverChannel;
		return ch != null && ch.isActive();
	}

	/** Whether the final flush of a graceful stop has begun: connections get no more replies. */
	boolean repliesStopped() {
		return this.repliesStopped;
	}

	/** Whether a graceful shutdown is in progress. */
	public boolean isDraining() {
		return this.draining;
	}

	public Transport transport() {
		return this.transport;
	}

	/** The buffer allocator of the connections (metrics report it). */
	public ByteBufAllocator bufferAllocator() {
		return this.allocator;
	}

	/** The memory budget shared by all connections. */
	public MemoryBudget memoryBudget() {
		return this.memoryBudget;
	}

	public NbdServerConfig config() {
		return this.config;
	}

	public Collection<Export> exports() {
		return this.exports.values();
	}

	public Export export(String name) {
		return this.exports.get(name);
	}

	/** Connections attached to an export. */
	public Collection<NbdConnection> connections() {
		List<NbdConnection> list = new ArrayList<>();
		for (NbdConnection c : this.connections) {
			if (c.export() != null) {
				list.add(c);
			}
		}
		return list;
	}

	/** Every open connection, negotiating or attached. */
	Collection<NbdConnection> allConnections() {
		return List.copyOf(this.connections);
	}

	/** Event loop groups, for metrics. Null before start. */
	public List<EventLoopGroup> eventLoopGroups() {
		return (this.workerGroup == null) ? List.of() : List.of(this.bossGroup, this.workerGroup);
	}

	/**
	 * Graceful stop: stop accepting; every connection answers what it received (requests not
	 * started get {@code NBD_ESHUTDOWN}), sends its last reply byte and closes; negotiating
	 * clients get {@code NBD_REP_ERR_SHUTDOWN}. Waits up to {@code timeout} for that, then
	 * flushes every export and closes what is left.
	 */
	public void shutdownGracefully(Duration timeout) {
		long deadline = System.nanoTime() + timeout.toNanos();
		synchronized (this) {
			if (this.serverChannel == null) {
				return;
			}
			this.draining = true;
			this.serverChannel.close().syncUninterruptibly();
			closeUnixListener();
		}
		List<NbdConnection> attached = List.copyOf(connections());
		logger.info("NBD server draining {} connection(s)", attached.size());
		for (NbdConnection c : attached) {
			c.closeGracefully();
		}
		for (NbdConnection c : attached) {
			long left = deadline - System.nanoTime();
			if (left <= 0 || !c.channel().closeFuture().awaitUninterruptibly(TimeUnit.NANOSECONDS.toMillis(left))) {
				break;
			}
		}
		long undrained = attached.stream().filter(c -> c.channel().isOpen()).count();
		if (undrained > 0) {
			refused("drain_timeout", "NBD shutdown timeout reached with " + undrained
					+ " connection(s) still draining: their remaining replies are dropped");
		}
		// A request still running past the deadline must not be answered after the flush below
		// started, or its reply would promise what that flush may not cover.
		this.repliesStopped = true;
		for (Export export : this.exports.values()) {
			if (export.flushRequests() > 0) {
				logger.info("NBD export '{}': {} flush requests served by {} backend syncs", export.name(),
						export.flushRequests(), export.backendSyncs());
			}
			try {
				export.flushAll();
			}
			catch (Exception ex) {
				logger.error("Flushing export '{}' at shutdown failed", export.name(), ex);
			}
		}
		stop(Duration.ofNanos(Math.max(0, deadline - System.nanoTime())));
	}

	/** Immediate stop: close the listener and every connection. */
	public void stop() {
		stop(Duration.ZERO);
	}

	private synchronized void stop(Duration remaining) {
		this.draining = true;
		if (this.serverChannel != null) {
			this.serverChannel.close().syncUninterruptibly();
		}
		closeUnixListener();
		for (NbdConnection c : this.connections) {
			c.channel().close();
		}
		shutdownGroups(remaining);
		// The worker pool is kept (its idle threads time out): start() may be called again.
		this.serverChannel = null;
		logger.info("NBD server stopped");
	}

	private void closeUnixListener() {
		if (this.unixChannel != null) {
			this.unixChannel.close().syncUninterruptibly();
			this.unixChannel = null;
		}
	}

	private void shutdownGroups(Duration timeout) {
		long ms = Math.min(Math.max(timeout.toMillis(), 100), 5000);
		if (this.bossGroup != null) {
			this.bossGroup.shutdownGracefully(0, ms, TimeUnit.MILLISECONDS);
		}
		if (this.workerGroup != null) {
			this.workerGroup.shutdownGracefully(0, ms, TimeUnit.MILLISECONDS).awaitUninterruptibly(ms + 1000);
		}
	}

	/**
	 * A new connection, TCP or Unix domain socket. The server's CIDR list applies to TCP only: who
	 * may use the Unix socket is decided by its file permissions. (Per-export lists refuse Unix
	 * socket clients: they name the only clients allowed.)
	 */
	private void accept(Channel ch) {
		InetSocketAddress remote = (ch instanceof SocketChannel tcp) ? tcp.remoteAddress() : null;
		if (this.draining) {
			refuse(ch, "shutting_down", "server is shutting down");
			return;
		}
		if (ch instanceof SocketChannel && !this.config.allowedAddresses().isEmpty() && (remote == null
				|| this.config.allowedAddresses().stream().noneMatch(c -> c.contains(remote.getAddress())))) {
			refuse(ch, "address_not_allowed", remote + " is not in nbd.server.allowed-addresses");
			return;
		}
		if (this.openChannels.incrementAndGet() > this.config.maxConnections()) {
			this.openChannels.decrementAndGet();
			refuse(ch, "max_connections", "nbd.server.max-connections (" + this.config.maxConnections() + ") reached");
			return;
		}
		ch.closeFuture().addListener(f -> this.openChannels.decrementAndGet());
		initPipeline(ch);
	}

	/** Sets up a new connection's pipeline: greeting, then option haggling. */
	NbdConnection initPipeline(Channel ch) {
		NbdConnection connection = new NbdConnection(ch, this.config.maxInFlight());
		this.connections.add(connection);
		ch.closeFuture().addListener(f -> this.connections.remove(connection));
		ChannelPipeline p = ch.pipeline();
		// First, so replies written from worker threads and during read loops go out in batches.
		p.addLast(PipelineNames.FLUSH, new FlushConsolidationHandler(256, true));
		p.addLast(PipelineNames.HANDSHAKE_DECODER, new dev.nbd.protocol.HandshakeDecoder(NbdServerConfig.MAX_OPTION_LENGTH));
		p.addLast(PipelineNames.HANDSHAKE, new HandshakeHandler(this, connection));
		return connection;
	}

	private void refuse(Channel ch, String reason, String detail) {
		this.listener.connectionRefused(reason);
		this.refusals.log(reason, "Refused NBD connection from " + ch.remoteAddress() + ": " + detail);
		ch.close();
	}

	void refused(String reason, String message) {
		this.listener.connectionRefused(reason);
		this.refusals.log(reason, message);
	}

	/**
	 * A connection closed by an unexpected {@link Error}: logged at WARN with its stack trace once
	 * per kind of error (a flood must not flood the log), always counted.
	 */
	void connectionFailed(NbdConnection connection, Throwable cause) {
		this.listener.connectionRefused("internal_error");
		if (this.loggedFailures.add(cause.getClass().getName())) {
			logger.warn("Closed NBD {} after an unexpected error (logged once per kind, counted as "
					+ "nbd_connections_refused_total{reason=\"internal_error\"})", connection, cause);
		}
		else {
			logger.debug("Closed NBD {} after an unexpected error: {}", connection, cause.toString());
		}
	}

	NbdServerListener listener() {
		return this.listener;
	}

	ExecutorService blockingExecutor() {
		return this.blockingExecutor;
	}

	BackgroundScheduler backgroundScheduler() {
		return this.backgroundScheduler;
	}

	/**
	 * Chunks of long CACHE, TRIM and WRITE_ZEROES requests waiting for a worker (a backlog that
	 * stays high means clients ask for more background work than the workers give it).
	 */
	public int backgroundChunksWaiting() {
		return this.backgroundScheduler.waiting();
	}

	Map<String, Export> exportMap() {
		return this.exports;
	}

	/** Export served for a name: the empty name means the default export. */
	Export resolve(String name) {
		if (name.isEmpty()) {
			String def = this.config.defaultExport();
			if (def != null && !def.isEmpty()) {
				return this.exports.get(def);
			}
			return this.exports.values().stream().findFirst().orElse(null);
		}
		return this.exports.get(name);
	}

	/**
	 * The transport's I/O handler; with {@code busyPoll} > 0 its loops spin that long before
	 * blocking; with null (adaptive) they spin {@link NbdServerConfig#ADAPTIVE_SPIN} while a spare
	 * CPU is free ({@link SpinSlots}).
	 */
	private static IoHandlerFactory ioHandlerFactory(Transport transport, Duration busyPoll) {
		SpinSlots slots = (busyPoll == null) ? SpinSlots.forCpus(Runtime.getRuntime().availableProcessors()) : null;
		long spinNanos = (busyPoll == null) ? ((slots.available() > 0) ? NbdServerConfig.ADAPTIVE_SPIN.toNanos() : 0)
				: busyPoll.toNanos();
		return switch (transport) {
			case EPOLL -> (spinNanos > 0) ? EpollIoHandler.newFactory(0, () -> new BusyPollSelectStrategy(spinNanos, slots))
					: EpollIoHandler.newFactory();
			case IO_URING -> {
				if (spinNanos > 0 && busyPoll != null) {
					logger.warn("nbd.server.busy-poll is not supported by the io_uring transport; ignored");
				}
				yield IoUringIoHandler.newFactory();
			}
			default -> (spinNanos > 0)
					? NioIoHandler.newFactory(SelectorProvider.provider(), () -> new BusyPollSelectStrategy(spinNanos, slots))
					: NioIoHandler.newFactory();
		};
	}

	private static Transport resolveTransport(Transport requested) {
		return switch (requested) {
			case NIO -> Transport.NIO;
			case EPOLL -> {
				Epoll.ensureAvailability();
				yield Transport.EPOLL;
			}
			case IO_URING -> {
				IoUring.ensureAvailability();
				yield Transport.IO_URING;
			}
			case AUTO -> {
				if (Epoll.isAvailable()) {
					yield Transport.EPOLL;
				}
				logger.debug("epoll unavailable, using NIO", Epoll.unavailabilityCause());
				yield Transport.NIO;
			}
		};
	}

	/** Logs each refusal reason at most once a second, with the number suppressed meanwhile. */
	private static final class RefusalLog {

		private final LogRateLimit limit = new LogRateLimit();

		void log(String reason, String message) {
			long suppressed = this.limit.acquire(reason);
			if (suppressed >= 0) {
				logger.warn("{} [{}]{}", message, reason, LogRateLimit.suppressed(suppressed));
			}
		}

	}

}
