package dev.nbd.autoconfigure.metrics;

import java.time.Duration;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.FunctionCounter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.Meter;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Tags;
import io.micrometer.core.instrument.Timer;
import io.micrometer.core.instrument.binder.netty4.NettyAllocatorMetrics;
import io.micrometer.core.instrument.binder.netty4.NettyEventExecutorMetrics;

import dev.nbd.backend.MemoryBackend;
import dev.nbd.server.EventLoopFileIo;
import dev.nbd.server.Export;
import dev.nbd.server.MemoryBudget;
import dev.nbd.server.NbdConnection;
import dev.nbd.server.NbdServer;
import dev.nbd.server.NbdServerListener;
import io.netty.buffer.ByteBufAllocatorMetricProvider;
import io.netty.channel.EventLoopGroup;

/**
 * Micrometer meters for the NBD server (Prometheus names in brackets):
 * <ul>
 * <li>{@code nbd.requests} [{@code nbd_requests_seconds}]: timer per export, op and outcome;</li>
 * <li>{@code nbd.flush} [{@code nbd_flush_seconds}]: flush latency per export, histogram
 * buckets from 10&nbsp;µs to 10&nbsp;s;</li>
 * <li>{@code nbd.bytes} [{@code nbd_bytes_total}]: payload bytes per export and direction
 * ({@code read}, {@code written});</li>
 * <li>{@code nbd.connections} [{@code nbd_connections}]: open connections per export;</li>
 * <li>{@code nbd.connection.inflight} [{@code nbd_connection_inflight}]: queue depth of one
 * connection, removed when it closes;</li>
 * <li>{@code nbd.connections.refused} [{@code nbd_connections_refused_total}]: by reason;</li>
 * <li>{@code nbd.flush.requests} and {@code nbd.flush.syncs} [{@code _total}]: client flushes
 * and the backend syncs that served them (group commit saves the difference);</li>
 * <li>{@code nbd.background.bytes} and {@code nbd.background.chunks} [{@code _total}]: the work
 * of long CACHE, TRIM and WRITE_ZEROES requests, run in chunks, per export and op;</li>
 * <li>{@code nbd.background.waiting} [{@code nbd_background_waiting}]: such chunks waiting for a
 * worker;</li>
 * <li>{@code nbd.sync.failures} [{@code nbd_sync_failures_total}]: backend syncs that failed
 * (the first one latches the export: later FLUSH and FUA requests fail);</li>
 * <li>{@code nbd.backend.unfilled.reads} [{@code nbd_backend_unfilled_reads_total}]: reads the
 * backend left unfilled (a backend bug, answered with EIO);</li>
 * <li>{@code nbd.file.io.fallbacks} [{@code nbd_file_io_fallbacks_total}] and
 * {@code nbd.file.io.network.threads} [{@code nbd_file_io_network_threads}]: for exports with a
 * served file, the times slow calls moved its reads and writes to workers, and 1 while they run
 * on network threads ({@code event-loop-io}).</li>
 * </ul>
 * Listener methods run on network threads: every meter they touch is resolved once and looked
 * up in small maps afterwards, no builder runs per request.
 */
public class NbdMetrics implements NbdServerListener {

	/** Storage latency ladder: tens of microseconds (RAM, NVMe) to seconds (stalled disks). */
	static final Duration[] FLUSH_BUCKETS = { micros(10), micros(25), micros(50), micros(100), micros(250),
			micros(500), millis(1), millis(2.5), millis(5), millis(10), millis(25), millis(50), millis(100),
			millis(250), millis(500), millis(1000), millis(2500), millis(5000), millis(10000) };

	private static final String[] OPS = { "read", "write", "flush", "trim", "cache", "write_zeroes", "block_status" };

	private final MeterRegistry registry;

	private final Map<Export, ExportMeters> exports = new ConcurrentHashMap<>();

	private final Map<NbdConnection, Gauge> inFlightGauges = new ConcurrentHashMap<>();

	private final Map<String, Counter> refusals = new ConcurrentHashMap<>();

	private List<EventLoopGroup> boundGroups = List.of();

	private List<Meter> eventLoopMeters = List.of();

	private boolean allocatorBound;

	public NbdMetrics(MeterRegistry registry) {
		this.registry = registry;
	}

	@Override
	public void connectionOpened(NbdConnection connection) {
		Export export = connection.export();
		meters(export);
		Gauge gauge = Gauge.builder("nbd.connection.inflight", connection, NbdConnection::inFlight)
			.description("Requests received on the connection and not yet answered")
			.tags("export", export.name(), "connection", connection.id())
			.register(this.registry);
		this.inFlightGauges.put(connection, gauge);
	}

	@Override
	public void connectionClosed(NbdConnection connection) {
		Gauge gauge = this.inFlightGauges.remove(connection);
		if (gauge != null) {
			this.registry.remove(gauge);
		}
	}

	@Override
	public void connectionRefused(String reason) {
		this.refusals
			.computeIfAbsent(reason,
					(r) -> Counter.builder("nbd.connections.refused")
						.description("Connections refused or dropped before reaching an export")
						.tag("reason", r)
						.register(this.registry))
			.increment();
	}

	@Override
	public void requestCompleted(Export export, String op, String outcome, long nanos, long bytes) {
		ExportMeters meters = meters(export);
		meters.timer(op, outcome).record(nanos, TimeUnit.NANOSECONDS);
		if (bytes > 0) {
			if ("read".equals(op)) {
				meters.bytesRead.increment(bytes);
			}
			else if ("write".equals(op)) {
				meters.bytesWritten.increment(bytes);
			}
		}
	}

	@Override
	public void flushCompleted(Export export, long nanos, boolean success) {
		meters(export).flush.record(nanos, TimeUnit.NANOSECONDS);
	}

	@Override
	public void backgroundChunk(Export export, String op, long bytes) {
		Counter[] counters = meters(export).background(op);
		counters[0].increment(bytes);
		counters[1].increment();
	}

	/**
	 * Registers what needs the running server: per-export gauges, and Netty's event loop and
	 * allocator metrics. Call after each {@link NbdServer#start()} and off the server's event
	 * loops (reading an event loop's thread name waits for the loop to run). A restarted server
	 * has new event loops: the meters of the old ones are removed.
	 */
	public synchronized void bindServer(NbdServer server) {
		for (Export export : server.exports()) {
			meters(export);
		}
		Gauge.builder("nbd.background.waiting", server, NbdServer::backgroundChunksWaiting)
			.description("Chunks of long CACHE, TRIM and WRITE_ZEROES requests waiting for a worker")
			.register(this.registry);
		List<EventLoopGroup> groups = server.eventLoopGroups();
		if (!groups.equals(this.boundGroups)) {
			this.eventLoopMeters.forEach(this.registry::remove);
			Set<Meter.Id> before = new HashSet<>();
			this.registry.getMeters().forEach((m) -> before.add(m.getId()));
			// eventLoopGroups() is [accept, io]; the tag keeps their "workers" gauges apart.
			for (int i = 0; i < groups.size(); i++) {
				String name = (i == 0) ? "nbd-accept" : "nbd-io";
				new NettyEventExecutorMetrics(groups.get(i), Tags.of("group", name)).bindTo(this.registry);
			}
			this.eventLoopMeters = this.registry.getMeters()
				.stream()
				.filter((m) -> m.getId().getName().startsWith("netty.eventexecutor") && !before.contains(m.getId()))
				.toList();
			this.boundGroups = groups;
		}
		MemoryBudget budget = server.memoryBudget();
		Gauge.builder("nbd.memory.budget.used", budget, MemoryBudget::held)
			.description("Bytes of WRITE payloads and unsent replies held, across connections")
			.baseUnit("bytes")
			.register(this.registry);
		Gauge.builder("nbd.memory.budget.limit", budget, MemoryBudget::limit)
			.description("The memory budget (nbd.server.memory-budget)")
			.baseUnit("bytes")
			.register(this.registry);
		Gauge.builder("nbd.memory.budget.paused", budget, MemoryBudget::pausedConnections)
			.description("Connections not read because the memory budget is spent")
			.register(this.registry);
		FunctionCounter.builder("nbd.memory.budget.pauses", budget, MemoryBudget::pauses)
			.description("Times a connection stopped being read because the memory budget was spent")
			.register(this.registry);
		if (!this.allocatorBound && server.bufferAllocator() instanceof ByteBufAllocatorMetricProvider allocator) {
			new NettyAllocatorMetrics(allocator).bindTo(this.registry);
			this.allocatorBound = true;
		}
	}

	private ExportMeters meters(Export export) {
		ExportMeters meters = this.exports.get(export);
		return (meters != null) ? meters : this.exports.computeIfAbsent(export, this::register);
	}

	private ExportMeters register(Export export) {
		return new ExportMeters(this.registry, export);
	}

	private static Duration micros(long us) {
		return Duration.ofNanos(us * 1000);
	}

	private static Duration millis(double ms) {
		return Duration.ofNanos((long) (ms * 1_000_000));
	}

	/** Meters of one export, resolved once. */
	private static final class ExportMeters {

		private final MeterRegistry registry;

		private final Tags tags;

		private final Counter bytesRead;

		private final Counter bytesWritten;

		private final Timer flush;

		/** op → outcome → timer. */
		private final Map<String, Map<String, Timer>> timers = new ConcurrentHashMap<>();

		/** op → [bytes, chunks] of long requests run in chunks. */
		private final Map<String, Counter[]> background = new ConcurrentHashMap<>();

		ExportMeters(MeterRegistry registry, Export export) {
			this.registry = registry;
			this.tags = Tags.of("export", export.name());
			this.bytesRead = bytes("read");
			this.bytesWritten = bytes("written");
			this.flush = Timer.builder("nbd.flush")
				.description("Latency of client FLUSH requests")
				.tags(this.tags)
				.serviceLevelObjectives(FLUSH_BUCKETS)
				.register(registry);
			Gauge.builder("nbd.connections", export, (e) -> e.connections().size())
				.description("Open connections")
				.tags(this.tags)
				.register(registry);
			FunctionCounter.builder("nbd.flush.requests", export, Export::flushRequests)
				.description("Client flushes (and emulated FUA) served by backend syncs")
				.tags(this.tags)
				.register(registry);
			FunctionCounter.builder("nbd.flush.syncs", export, Export::backendSyncs)
				.description("Backend syncs; fewer than flush requests when group commit shares them")
				.tags(this.tags)
				.register(registry);
			FunctionCounter.builder("nbd.sync.failures", export, Export::syncFailures)
				.description("Backend syncs that failed; the first latches the export (FLUSH and FUA fail after it)")
				.tags(this.tags)
				.register(registry);
			FunctionCounter.builder("nbd.backend.unfilled.reads", export, Export::unfilledReads)
				.description("Reads the backend left unfilled (a backend bug), answered with EIO")
				.tags(this.tags)
				.register(registry);
			for (String op : OPS) {
				timer(op, "success");
			}
			EventLoopFileIo fileIo = export.fileIo();
			if (fileIo != null) {
				FunctionCounter.builder("nbd.file.io.fallbacks", fileIo, EventLoopFileIo::fallbacks)
					.description("Times slow file calls moved an export's reads and writes from network threads to workers")
					.tags(this.tags)
					.register(registry);
				Gauge.builder("nbd.file.io.network.threads", fileIo, (io) -> io.onEventLoop() ? 1 : 0)
					.description("1 while a file export's reads and plain writes run on network threads")
					.tags(this.tags)
					.register(registry);
			}
			if (export.backend() instanceof MemoryBackend memory) {
				Gauge.builder("nbd.export.memory.used", memory, MemoryBackend::allocatedBytes)
					.description("Bytes of memory a memory export holds")
					.baseUnit("bytes")
					.tags(this.tags)
					.register(registry);
				Gauge.builder("nbd.export.memory.full", memory, (m) -> m.isFull() ? 1 : 0)
					.description("1 while a memory export refuses writes that need new pages (ENOSPC)")
					.tags(this.tags)
					.register(registry);
				FunctionCounter.builder("nbd.export.memory.refused", memory, MemoryBackend::refusedWrites)
					.description("Writes a memory export refused with ENOSPC for lack of memory")
					.tags(this.tags)
					.register(registry);
			}
		}

		Counter[] background(String op) {
			Counter[] counters = this.background.get(op);
			return (counters != null) ? counters
					: this.background.computeIfAbsent(op, (o) -> new Counter[] {
							counter("nbd.background.bytes", "Bytes of long CACHE, TRIM and WRITE_ZEROES requests", o),
							counter("nbd.background.chunks", "Chunks that long CACHE, TRIM and WRITE_ZEROES ran as", o) });
		}

		private Counter counter(String name, String description, String op) {
			return Counter.builder(name).description(description).tags(this.tags).tag("op", op).register(this.registry);
		}

		private Counter bytes(String direction) {
			return Counter.builder("nbd.bytes")
				.description("Payload bytes moved")
				.tags(this.tags)
				.tag("direction", direction)
				.register(this.registry);
		}

		Timer timer(String op, String outcome) {
			Map<String, Timer> byOutcome = this.timers.get(op);
			if (byOutcome == null) {
				byOutcome = this.timers.computeIfAbsent(op, (o) -> new ConcurrentHashMap<>());
			}
			Timer timer = byOutcome.get(outcome);
			if (timer == null) {
				timer = byOutcome.computeIfAbsent(outcome,
						(o) -> Timer.builder("nbd.requests")
							.description("NBD requests, from receipt to reply")
							.tags(this.tags)
							.tag("op", op)
							.tag("outcome", o)
							.register(this.registry));
			}
			return timer;
		}

	}

}
