package dev.nbd.server;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Queue;
import java.util.Random;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import dev.nbd.backend.ExportBackend;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.PipelinedNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Group commit against its contract, under a random multi-connection workload through the real
 * server. One logical clock orders everything: the client stamps when it sends a request and
 * when it receives a reply, the backend stamps when each write returns and when each sync
 * starts and ends. The model: an answered FLUSH needs a sync that started after the flush was
 * sent and after every write answered (on any connection) before the flush was sent, and that
 * ended before the flush's reply; an answered FUA write needs a sync that started after the
 * write returned and ended before its reply; no write is answered before the backend took it.
 *
 * <p>Run twice: a multi-conn-safe backend (one shared sync), and a backend with a view per
 * connection under {@code multi-conn=emulate}, where the covering sync must be a flush of the
 * view that took each write.
 */
class GroupCommitModelTest {

	private static final int BLOCK = 4096;

	private static final int CONNECTIONS = 6;

	private static final int THREADS_PER_CONNECTION = 3;

	private static final int OPS_PER_THREAD = 250;

	private final AtomicLong clock = new AtomicLong();

	private RecordingBackend backend;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private NbdServer server;

	record ClientOp(long id, boolean flush, boolean fua, long sentAt, long repliedAt, int error) {
	}

	@ParameterizedTest
	@ValueSource(booleans = { true, true, false, false })
	void everyAnsweredFlushAndFuaIsCoveredByALaterSync(boolean multiConnSafe) throws Exception {
		this.backend = new RecordingBackend(this.clock, multiConnSafe);
		this.server = this.servers.start(NbdServerConfig.builder(), List.of(this.backend),
				multiConnSafe ? Map.of() : Map.of("rec", MultiConnMode.EMULATE), Map.of());
		List<PipelinedNbdClient> clients = new ArrayList<>();
		for (int i = 0; i < CONNECTIONS; i++) {
			clients.add(PipelinedNbdClient.connect(this.server.port(), "rec", this.clock::incrementAndGet));
		}
		Queue<ClientOp> ops = new ConcurrentLinkedQueue<>();
		AtomicLong ids = new AtomicLong();
		long seed = System.nanoTime();
		ExecutorService threads = Executors.newFixedThreadPool(CONNECTIONS * THREADS_PER_CONNECTION);
		try {
			List<Future<?>> running = new ArrayList<>();
			for (int t = 0; t < CONNECTIONS * THREADS_PER_CONNECTION; t++) {
				PipelinedNbdClient client = clients.get(t % CONNECTIONS);
				Random random = new Random(seed + t);
				running.add(threads.submit(() -> {
					for (int i = 0; i < OPS_PER_THREAD; i++) {
						int dice = random.nextInt(100);
						if (dice < 30) {
							PipelinedNbdClient.Pending p = client.flush();
							PipelinedNbdClient.Reply r = p.reply().get(30, TimeUnit.SECONDS);
							ops.add(new ClientOp(-1, true, false, p.sentAt(), r.receivedAt(), r.error()));
						}
						else {
							long id = ids.incrementAndGet();
							boolean fua = dice < 40;
							byte[] data = new byte[BLOCK];
							ByteBuffer.wrap(data).putLong(id);
							long offset = (long) random.nextInt(RecordingBackend.BLOCKS) * BLOCK;
							PipelinedNbdClient.Pending p = client.write(offset, data, fua);
							PipelinedNbdClient.Reply r = p.reply().get(30, TimeUnit.SECONDS);
							ops.add(new ClientOp(id, false, fua, p.sentAt(), r.receivedAt(), r.error()));
						}
					}
					return null;
				}));
			}
			for (Future<?> f : running) {
				f.get(120, TimeUnit.SECONDS);
			}
		}
		finally {
			threads.shutdownNow();
			clients.forEach(PipelinedNbdClient::close);
		}
		check(new ArrayList<>(ops), seed);
		Export export = this.server.export("rec");
		long flushes = ops.stream().filter(o -> o.flush() || o.fua()).count();
		assertThat(export.flushRequests()).isEqualTo(flushes);
		// Emulation flushes every open view per sync.
		assertThat(export.backendSyncs()).isEqualTo(this.backend.syncs.size() / (multiConnSafe ? 1 : CONNECTIONS));
		// Concurrent flushes from 18 threads over syncs that take a while: sharing must happen.
		assertThat(export.backendSyncs()).isLessThan(export.flushRequests());
	}

	private void check(List<ClientOp> ops, long seed) {
		String context = " (seed " + seed + ")";
		assertThat(ops).allMatch(o -> o.error() == 0, "every request succeeded" + context);
		// Syncs of each view (a safe backend has one view, itself), by start.
		Map<Integer, List<long[]>> syncsByView = new java.util.HashMap<>();
		for (long[] sync : this.backend.syncs) {
			syncsByView.computeIfAbsent((int) sync[2], v -> new ArrayList<>()).add(sync);
		}
		syncsByView.values().forEach(l -> l.sort(Comparator.comparingLong(sync -> sync[0])));
		// Writes of each view by reply time, with the latest backend return among those answered so far.
		List<ClientOp> writes = ops.stream()
			.filter(o -> !o.flush())
			.sorted(Comparator.comparingLong(ClientOp::repliedAt))
			.toList();
		Map<Integer, List<long[]>> repliedAndMaxReturned = new java.util.HashMap<>();
		for (ClientOp w : writes) {
			long[] taken = this.backend.writes.get(w.id());
			assertThat(taken).as("backend saw write " + w.id() + context).isNotNull();
			long returned = taken[0];
			int view = (int) taken[1];
			assertThat(returned).as("write " + w.id() + " answered only after the backend returned" + context)
				.isLessThan(w.repliedAt());
			List<long[]> list = repliedAndMaxReturned.computeIfAbsent(view, v -> new ArrayList<>());
			long max = list.isEmpty() ? returned : Math.max(returned, list.get(list.size() - 1)[1]);
			list.add(new long[] { w.repliedAt(), max });
			if (w.fua()) {
				assertCovered(syncsByView.getOrDefault(view, List.of()), returned, w.repliedAt(),
						"FUA write " + w.id() + " on view " + view + context);
			}
		}
		int checkedFlushes = 0;
		for (ClientOp f : ops) {
			if (!f.flush()) {
				continue;
			}
			// Every view with writes answered before the flush was sent (on any connection) needs a
			// sync that started after the flush was sent and after those writes returned.
			for (Map.Entry<Integer, List<long[]>> e : repliedAndMaxReturned.entrySet()) {
				List<long[]> list = e.getValue();
				int n = countRepliedUpTo(list, f.sentAt());
				if (n == 0) {
					continue;
				}
				long mustStartAfter = Math.max(f.sentAt(), list.get(n - 1)[1]);
				assertCovered(syncsByView.getOrDefault(e.getKey(), List.of()), mustStartAfter, f.repliedAt(),
						"flush sent at " + f.sentAt() + " covering " + n + " writes of view " + e.getKey() + context);
			}
			checkedFlushes++;
		}
		assertThat(checkedFlushes).isGreaterThan(0);
	}

	/** A sync (sorted by start) started after {@code after} and finished before {@code before} must exist. */
	private static void assertCovered(List<long[]> syncs, long after, long before, String what) {
		boolean covered = false;
		for (long[] sync : syncs) {
			if (sync[0] > after && sync[1] < before) {
				covered = true;
				break;
			}
			if (sync[0] >= before) {
				break;
			}
		}
		assertThat(covered).as(what + ": no sync started after " + after + " and finished before " + before)
			.isTrue();
	}

	/** How many entries of {@code list} (sorted by reply time, element 0) were replied at or before {@code key}. */
	private static int countRepliedUpTo(List<long[]> list, long key) {
		int lo = 0;
		int hi = list.size();
		while (lo < hi) {
			int mid = (lo + hi) >>> 1;
			if (list.get(mid)[0] <= key) {
				lo = mid + 1;
			}
			else {
				hi = mid;
			}
		}
		return lo;
	}

	/**
	 * Stores nothing; records, on the shared clock, when each write (identified by its first 8
	 * bytes) returned and in which view, and when each sync of which view started and ended. Safe:
	 * one view, itself. Unsafe: a view per connection (as a backend with per-connection caches
	 * would have). Writes and syncs take a little random time so they overlap.
	 */
	static final class RecordingBackend implements ExportBackend {

		static final int BLOCKS = 4096;

		private final AtomicLong clock;

		private final boolean multiConnSafe;

		private final int view;

		private final AtomicLong views;

		/** Write id to {returned, view}. */
		final Map<Long, long[]> writes;

		/** {start, end, view}. */
		final Queue<long[]> syncs;

		RecordingBackend(AtomicLong clock, boolean multiConnSafe) {
			this(clock, multiConnSafe, 0, new AtomicLong(), new ConcurrentHashMap<>(), new ConcurrentLinkedQueue<>());
		}

		private RecordingBackend(AtomicLong clock, boolean multiConnSafe, int view, AtomicLong views,
				Map<Long, long[]> writes, Queue<long[]> syncs) {
			this.clock = clock;
			this.multiConnSafe = multiConnSafe;
			this.view = view;
			this.views = views;
			this.writes = writes;
			this.syncs = syncs;
		}

		@Override
		public String name() {
			return "rec";
		}

		@Override
		public long size() {
			return (long) BLOCKS * BLOCK;
		}

		@Override
		public boolean isMultiConnSafe() {
			return this.multiConnSafe;
		}

		@Override
		public boolean canFlush() {
			return true;
		}

		@Override
		public ExportBackend connect() {
			return this.multiConnSafe ? this : new RecordingBackend(this.clock, false,
					(int) this.views.incrementAndGet(), this.views, this.writes, this.syncs);
		}

		@Override
		public void read(long offset, ByteBuffer dst) {
			dst.position(dst.limit());
		}

		@Override
		public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
			long id = src.getLong(src.position());
			if (ThreadLocalRandom.current().nextInt(4) == 0) {
				LockSupport.parkNanos(ThreadLocalRandom.current().nextInt(200_000));
			}
			this.writes.put(id, new long[] { this.clock.incrementAndGet(), this.view });
		}

		@Override
		public void flush() {
			long start = this.clock.incrementAndGet();
			LockSupport.parkNanos(this.multiConnSafe ? 100_000 + ThreadLocalRandom.current().nextInt(500_000)
					: 20_000 + ThreadLocalRandom.current().nextInt(100_000));
			this.syncs.add(new long[] { start, this.clock.incrementAndGet(), this.view });
		}

	}

}
