package dev.nbd.server;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class FlushCoordinatorTest {

	private final ExecutorService executor = Executors.newCachedThreadPool();

	/** Each sync announces itself, then blocks until the test releases it. */
	private final BlockingQueue<CountDownLatch> started = new LinkedBlockingQueue<>();

	private final AtomicInteger syncCalls = new AtomicInteger();

	private final FlushCoordinator coordinator = new FlushCoordinator(() -> {
		this.syncCalls.incrementAndGet();
		CountDownLatch release = new CountDownLatch(1);
		this.started.add(release);
		if (!release.await(10, TimeUnit.SECONDS)) {
			throw new IllegalStateException("test never released the sync");
		}
	}, this.executor);

	@AfterEach
	void shutdown() {
		this.executor.shutdownNow();
	}

	@Test
	void inlineSyncRoundsRunAsALoopNotNestedCalls() throws Exception {
		// A non-blocking backend syncs on the calling thread. While each sync runs, another
		// connection flushes, so a next round is always due: 2,000 rounds in a row must not nest.
		AtomicInteger deepest = new AtomicInteger();
		AtomicInteger syncs = new AtomicInteger();
		ExecutorService otherConnection = Executors.newSingleThreadExecutor();
		FlushCoordinator[] inline = new FlushCoordinator[1];
		inline[0] = new FlushCoordinator(() -> {
			deepest.accumulateAndGet(Thread.currentThread().getStackTrace().length, Math::max);
			if (syncs.incrementAndGet() < 2000) {
				otherConnection.submit(() -> inline[0].flush()).get();
			}
		}, Runnable::run);
		int base = Thread.currentThread().getStackTrace().length;
		try {
			inline[0].flush().get(30, TimeUnit.SECONDS);
		}
		finally {
			otherConnection.shutdownNow();
		}
		assertThat(syncs).hasValue(2000);
		assertThat(deepest.get() - base).isLessThan(100);
	}

	@Test
	void flushArrivingWhileSyncRunsIsNotAnsweredByThatSync() throws Exception {
		CompletableFuture<Void> first = this.coordinator.flush();
		CountDownLatch firstSync = awaitSyncStart();
		CompletableFuture<Void> late = this.coordinator.flush();
		firstSync.countDown();
		first.get(10, TimeUnit.SECONDS);
		// The running sync finished, but it started before 'late' arrived: 'late' must wait.
		CountDownLatch secondSync = awaitSyncStart();
		assertThat(late).isNotDone();
		secondSync.countDown();
		late.get(10, TimeUnit.SECONDS);
		assertThat(this.syncCalls).hasValue(2);
	}

	@Test
	void flushesArrivingDuringOneSyncShareTheNext() throws Exception {
		CompletableFuture<Void> first = this.coordinator.flush();
		CountDownLatch firstSync = awaitSyncStart();
		List<CompletableFuture<Void>> waiting = new ArrayList<>();
		for (int i = 0; i < 10; i++) {
			waiting.add(this.coordinator.flush());
		}
		firstSync.countDown();
		first.get(10, TimeUnit.SECONDS);
		awaitSyncStart().countDown();
		CompletableFuture.allOf(waiting.toArray(CompletableFuture[]::new)).get(10, TimeUnit.SECONDS);
		assertThat(this.coordinator.requests()).isEqualTo(11);
		assertThat(this.coordinator.syncs()).isEqualTo(2);
		assertThat(this.started).isEmpty();
	}

	@Test
	void idleCoordinatorStartsASyncForEachFlush() throws Exception {
		for (int i = 0; i < 3; i++) {
			CompletableFuture<Void> f = this.coordinator.flush();
			awaitSyncStart().countDown();
			f.get(10, TimeUnit.SECONDS);
		}
		assertThat(this.coordinator.requests()).isEqualTo(3);
		assertThat(this.coordinator.syncs()).isEqualTo(3);
	}

	@Test
	void failureReachesEveryFlushOfThatSyncAndTheNextSyncStillRuns() throws Exception {
		AtomicInteger calls = new AtomicInteger();
		CountDownLatch firstStarted = new CountDownLatch(1);
		CountDownLatch releaseFirst = new CountDownLatch(1);
		FlushCoordinator failing = new FlushCoordinator(() -> {
			int n = calls.incrementAndGet();
			if (n == 1) {
				firstStarted.countDown();
				releaseFirst.await(10, TimeUnit.SECONDS);
			}
			else if (n == 2) {
				throw new IOException("disk on fire");
			}
		}, this.executor);
		CompletableFuture<Void> first = failing.flush();
		assertThat(firstStarted.await(10, TimeUnit.SECONDS)).isTrue();
		CompletableFuture<Void> a = failing.flush();
		CompletableFuture<Void> b = failing.flush();
		releaseFirst.countDown();
		first.get(10, TimeUnit.SECONDS);
		for (CompletableFuture<Void> f : List.of(a, b)) {
			assertThatThrownBy(() -> f.get(10, TimeUnit.SECONDS)).isInstanceOf(ExecutionException.class)
				.hasCauseInstanceOf(IOException.class)
				.hasRootCauseMessage("disk on fire");
		}
		failing.flush().get(10, TimeUnit.SECONDS);
		assertThat(calls).hasValue(3);
		assertThat(failing.requests()).isEqualTo(4);
		assertThat(failing.syncs()).isEqualTo(3);
	}

	@Test
	void stoppedExecutorFailsTheFlushInsteadOfLeavingItPending() {
		ExecutorService stopped = Executors.newSingleThreadExecutor();
		stopped.shutdown();
		FlushCoordinator coordinator = new FlushCoordinator(() -> {
		}, stopped);
		assertThatThrownBy(() -> coordinator.flush().get(10, TimeUnit.SECONDS)).isInstanceOf(ExecutionException.class);
		// And the next one is not stuck behind a round that never ran.
		assertThatThrownBy(() -> coordinator.flush().get(10, TimeUnit.SECONDS)).isInstanceOf(ExecutionException.class);
	}

	private CountDownLatch awaitSyncStart() throws InterruptedException {
		CountDownLatch release = this.started.poll(10, TimeUnit.SECONDS);
		assertThat(release).as("a sync started").isNotNull();
		return release;
	}

}
