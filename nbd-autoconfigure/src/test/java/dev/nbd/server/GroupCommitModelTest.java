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

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.RepeatedTest;

import dev.nbd.backend.ExportBackend;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Group commit against its contract, under a random multi-connection workload through the real
 * server. One logical clock orders everything: the client stamps when it sends a request and
 * when it receives a reply, the backend stamps when each write returns and when each sync
 * starts and ends. The model: an answered FLUSH needs a sync that started after the flush was
 * sent and after every write answered (on any connection) before the flush was sent, and that
 * ended before the flush's reply; an answered FUA write needs a sync that started after the
 * write returned and ended before its reply; no write is answered before the backend took it.
 */
class GroupCommitModelTest {

	private static final int BLOCK = 4096;

	private static final int CONNECTIONS = 6;

	private static final int THREADS_PER_CONNECTION = 3;

	private static final int OPS_PER_THREAD = 250;

	private final AtomicLong clock = new AtomicLong();

	private final RecordingBackend backend = new RecordingBackend(this.clock);

	private NbdServer server;

	@AfterEach
	void stop() {
		if (this.server != null) {
			this.server.stop();
		}
	}

	record ClientOp(long id, boolean flush, boolean fua, long sentAt, long repliedAt, int error) {
	}

	@RepeatedTest(3)
	void everyAnsweredFlushAndFuaIsCoveredByALaterSync() throws Exception {
		this.server = new NbdServer(NbdServerConfig.builder().port(0).build(), List.of(this.backend), Map.of(),
				Map.of(), null);
		this.server.start();
		List<RawNbdClient> clients = new ArrayList<>();
		for (int i = 0; i < CONNECTIONS; i++) {
			clients.add(RawNbdClient.connect(this.server.port(), "rec", this.clock::incrementAndGet));
		}
		Queue<ClientOp> ops = new ConcurrentLinkedQueue<>();
		AtomicLong ids = new AtomicLong();
		long seed = System.nanoTime();
		ExecutorService threads = Executors.newFixedThreadPool(CONNECTIONS * THREADS_PER_CONNECTION);
		try {
			List<Future<?>> running = new ArrayList<>();
			for (int t = 0; t < CONNECTIONS * THREADS_PER_CONNECTION; t++) {
				RawNbdClient client = clients.get(t % CONNECTIONS);
				Random random = new Random(seed + t);
				running.add(threads.submit(() -> {
					for (int i = 0; i < OPS_PER_THREAD; i++) {
						int dice = random.nextInt(100);
						if (dice < 30) {
							RawNbdClient.Pending p = client.flush();
							RawNbdClient.Reply r = p.reply().get(30, TimeUnit.SECONDS);
							ops.add(new ClientOp(-1, true, false, p.sentAt(), r.receivedAt(), r.error()));
						}
						else {
							long id = ids.incrementAndGet();
							boolean fua = dice < 40;
							byte[] data = new byte[BLOCK];
							ByteBuffer.wrap(data).putLong(id);
							long offset = (long) random.nextInt(RecordingBackend.BLOCKS) * BLOCK;
							RawNbdClient.Pending p = client.write(offset, data, fua);
							RawNbdClient.Reply r = p.reply().get(30, TimeUnit.SECONDS);
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
			clients.forEach(RawNbdClient::close);
		}
		check(new ArrayList<>(ops), seed);
		Export export = this.server.export("rec");
		long flushes = ops.stream().filter(o -> o.flush() || o.fua()).count();
		assertThat(export.flushRequests()).isEqualTo(flushes);
		assertThat(export.backendSyncs()).isEqualTo(this.backend.syncs.size());
		// Concurrent flushes from 18 threads over syncs that take a while: sharing must happen.
		assertThat(export.backendSyncs()).isLessThan(export.flushRequests());
	}

	private void check(List<ClientOp> ops, long seed) {
		String context = " (seed " + seed + ")";
		assertThat(ops).allMatch(o -> o.error() == 0, "every request succeeded" + context);
		List<long[]> syncs = new ArrayList<>(this.backend.syncs);
		syncs.sort(Comparator.comparingLong(s -> s[0]));
		long[] syncStarts = syncs.stream().mapToLong(s -> s[0]).toArray();
		// Writes by reply time, with the latest backend return among all answered so far.
		List<ClientOp> writes = ops.stream()
			.filter(o -> !o.flush())
			.sorted(Comparator.comparingLong(ClientOp::repliedAt))
			.toList();
		long[] replied = new long[writes.size()];
		long[] maxReturnedUpTo = new long[writes.size()];
		long max = 0;
		for (int i = 0; i < writes.size(); i++) {
			ClientOp w = writes.get(i);
			Long returned = this.backend.writeReturned.get(w.id());
			assertThat(returned).as("backend saw write " + w.id() + context).isNotNull();
			assertThat(returned).as("write " + w.id() + " answered only after the backend returned" + context)
				.isLessThan(w.repliedAt());
			max = Math.max(max, returned);
			replied[i] = w.repliedAt();
			maxReturnedUpTo[i] = max;
			if (w.fua()) {
				assertCovered(syncs, syncStarts, returned, w.repliedAt(), "FUA write " + w.id() + context);
			}
		}
		int checkedFlushes = 0;
		for (ClientOp f : ops) {
			if (!f.flush()) {
				continue;
			}
			// Writes whose replies the client had before sending the flush (on any connection).
			int n = upperBound(replied, f.sentAt());
			long mustStartAfter = Math.max(f.sentAt(), (n > 0) ? maxReturnedUpTo[n - 1] : 0);
			assertCovered(syncs, syncStarts, mustStartAfter, f.repliedAt(),
					"flush sent at " + f.sentAt() + " covering " + n + " writes" + context);
			checkedFlushes++;
		}
		assertThat(checkedFlushes).isGreaterThan(0);
	}

	/** A sync started after {@code after} and finished before {@code before} must exist. */
	private static void assertCovered(List<long[]> syncs, long[] starts, long after, long before, String what) {
		int i = upperBound(starts, after);
		boolean covered = false;
		for (; i < starts.length && starts[i] < before; i++) {
			if (syncs.get(i)[1] < before) {
				covered = true;
				break;
			}
		}
		assertThat(covered).as(what + ": no sync started after " + after + " and finished before " + before)
			.isTrue();
	}

	/** Number of elements of sorted {@code a} that are {@code <= key}. */
	private static int upperBound(long[] a, long key) {
		int lo = 0;
		int hi = a.length;
		while (lo < hi) {
			int mid = (lo + hi) >>> 1;
			if (a[mid] <= key) {
				lo = mid + 1;
			}
			else {
				hi = mid;
			}
		}
		return lo;
	}

	/**
	 * Stores nothing; records when each write (identified by its first 8 bytes) returned and
	 * when each sync started and ended, on the shared clock. Writes and syncs take a little
	 * random time so they overlap.
	 */
	static final class RecordingBackend implements ExportBackend {

		static final int BLOCKS = 4096;

		private final AtomicLong clock;

		final Map<Long, Long> writeReturned = new ConcurrentHashMap<>();

		final Queue<long[]> syncs = new ConcurrentLinkedQueue<>();

		RecordingBackend(AtomicLong clock) {
			this.clock = clock;
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
			return true;
		}

		@Override
		public boolean canFlush() {
			return true;
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
			this.writeReturned.put(id, this.clock.incrementAndGet());
		}

		@Override
		public void flush() {
			long start = this.clock.incrementAndGet();
			LockSupport.parkNanos(100_000 + ThreadLocalRandom.current().nextInt(500_000));
			this.syncs.add(new long[] { start, this.clock.incrementAndGet() });
		}

	}

}
