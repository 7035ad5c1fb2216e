package dev.nbd.server;

import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.time.Duration;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;
import io.netty.channel.SelectStrategy;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/** Spin-then-block polling of the network threads ({@code nbd.server.busy-poll}). */
class BusyPollSelectStrategyTests {

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private final AtomicLong now = new AtomicLong(1_000_000);

	private final AtomicInteger ready = new AtomicInteger();

	private final AtomicInteger selectNowCalls = new AtomicInteger();

	private final BusyPollSelectStrategy strategy = new BusyPollSelectStrategy(50_000, null, this.now::get);

	private int next(boolean hasTasks) throws Exception {
		return this.strategy.calculateStrategy(() -> {
			this.selectNowCalls.incrementAndGet();
			return this.ready.get();
		}, hasTasks);
	}

	@Test
	void blocksWhenNothingHappenedYet() throws Exception {
		assertThat(next(false)).isEqualTo(SelectStrategy.SELECT);
		assertThat(this.selectNowCalls).hasValue(0);
	}

	@Test
	void spinsAfterWakingUpAndBlocksOnceTheSpinPeriodPassesWithoutEvents() throws Exception {
		assertThat(next(false)).isEqualTo(SelectStrategy.SELECT);
		// Woken up by an event: poll without blocking for 50 µs.
		this.now.addAndGet(10_000);
		assertThat(next(false)).isEqualTo(SelectStrategy.CONTINUE);
		this.now.addAndGet(30_000);
		assertThat(next(false)).isEqualTo(SelectStrategy.CONTINUE);
		this.now.addAndGet(20_000);
		assertThat(next(false)).isEqualTo(SelectStrategy.SELECT);
		assertThat(this.selectNowCalls).hasValue(2);
	}

	@Test
	void eventsFoundWhileSpinningExtendTheSpinPeriod() throws Exception {
		assertThat(next(false)).isEqualTo(SelectStrategy.SELECT);
		this.now.addAndGet(1_000);
		this.ready.set(3);
		this.now.addAndGet(40_000);
		assertThat(next(false)).isEqualTo(3);
		this.ready.set(0);
		this.now.addAndGet(40_000);
		// 81 µs after waking, but only 40 µs after the last event.
		assertThat(next(false)).isEqualTo(SelectStrategy.CONTINUE);
		this.now.addAndGet(20_000);
		assertThat(next(false)).isEqualTo(SelectStrategy.SELECT);
	}

	@Test
	void pendingTasksAlwaysLookAtTheSocketsWithoutBlocking() throws Exception {
		this.ready.set(0);
		assertThat(next(true)).isZero();
		this.ready.set(2);
		assertThat(next(true)).isEqualTo(2);
	}

	@Test
	void adaptiveLoopsSpinOnlyWhileTheyHoldASpareCpu() throws Exception {
		SpinSlots slots = new SpinSlots(1);
		AtomicInteger polls = new AtomicInteger();
		BusyPollSelectStrategy a = new BusyPollSelectStrategy(50_000, slots, this.now::get);
		BusyPollSelectStrategy b = new BusyPollSelectStrategy(50_000, slots, this.now::get);
		io.netty.util.IntSupplier nothing = () -> {
			polls.incrementAndGet();
			return 0;
		};
		assertThat(a.calculateStrategy(nothing, false)).isEqualTo(SelectStrategy.SELECT);
		assertThat(b.calculateStrategy(nothing, false)).isEqualTo(SelectStrategy.SELECT);
		// Both woke up: a takes the one spare CPU and spins, b blocks as without busy-poll.
		this.now.addAndGet(1_000);
		assertThat(a.calculateStrategy(nothing, false)).isEqualTo(SelectStrategy.CONTINUE);
		assertThat(b.calculateStrategy(nothing, false)).isEqualTo(SelectStrategy.SELECT);
		assertThat(slots.available()).isZero();
		// a's spin period ends without events: it blocks and gives the CPU back; b may spin next.
		this.now.addAndGet(60_000);
		assertThat(a.calculateStrategy(nothing, false)).isEqualTo(SelectStrategy.SELECT);
		assertThat(slots.available()).isOne();
		assertThat(b.calculateStrategy(nothing, false)).isEqualTo(SelectStrategy.CONTINUE);
		assertThat(slots.available()).isZero();
		assertThat(a.calculateStrategy(nothing, false)).isEqualTo(SelectStrategy.SELECT);
		assertThat(polls).as("only the spinning loop polled").hasValue(2);
	}

	@Test
	void adaptiveSpinningLeavesOneCpuFreeAndNeverSpinsOnOne() throws Exception {
		assertThat(SpinSlots.forCpus(1).available()).isZero();
		assertThat(SpinSlots.forCpus(2).available()).isOne();
		assertThat(SpinSlots.forCpus(8).available()).isEqualTo(7);
		BusyPollSelectStrategy oneCpu = new BusyPollSelectStrategy(50_000, SpinSlots.forCpus(1), this.now::get);
		for (int i = 0; i < 5; i++) {
			this.now.addAndGet(1_000);
			assertThat(oneCpu.calculateStrategy(() -> {
				this.selectNowCalls.incrementAndGet();
				return 0;
			}, false)).isEqualTo(SelectStrategy.SELECT);
		}
		assertThat(this.selectNowCalls).hasValue(0);
	}

	@Test
	void busyPollIsAdaptiveUnlessSet() {
		assertThat(NbdServerConfig.builder().build().busyPoll()).as("unset: adaptive").isNull();
		assertThat(NbdServerConfig.builder().busyPoll(Duration.ZERO).build().busyPoll()).isZero();
	}

	/**
	 * The setting reaches the network threads: after one request, the thread serving the
	 * connection keeps polling (burning CPU) with nothing to do, where a blocking one sleeps.
	 */
	@ParameterizedTest
	@EnumSource(value = Transport.class, names = { "EPOLL", "NIO" })
	void theNetworkThreadKeepsPollingAfterARequest(Transport transport) throws Exception {
		ThreadMXBean threads = ManagementFactory.getThreadMXBean();
		assertThat(threads.isThreadCpuTimeSupported()).isTrue();
		NbdServer server = this.servers.start(
				NbdServerConfig.builder().transport(transport).eventLoopThreads(1).busyPoll(Duration.ofSeconds(60)),
				new MemoryBackend("mem", 1 << 20));
		try (RawNbdClient client = RawNbdClient.connect(server.port(), "mem")) {
			await().atMost(Duration.ofSeconds(30)).until(() -> !server.connections().isEmpty());
			long thread = server.connections()
				.iterator()
				.next()
				.channel()
				.eventLoop()
				.submit(() -> Thread.currentThread().getId())
				.get(30, TimeUnit.SECONDS);
			long before = threads.getThreadCpuTime(thread);
			assertThat(client.call(NbdProtocol.CMD_READ, 0, 4096, null).error()).isZero();
			// 200 ms of CPU with nothing to do: only a spinning loop gets there (a blocked one
			// stays near zero); 60 s is an upper bound for a loaded machine.
			await().atMost(Duration.ofSeconds(60))
				.until(() -> threads.getThreadCpuTime(thread) - before >= Duration.ofMillis(200).toNanos());
		}
	}

	@ParameterizedTest
	@EnumSource(value = Transport.class, names = { "EPOLL", "NIO" })
	void aBusyPollingServerServesRequests(Transport transport) throws Exception {
		NbdServer server = this.servers.start(NbdServerConfig.builder().transport(transport).busyPoll(Duration.ofMillis(1)),
				new MemoryBackend("mem", 16 << 20));
		try (RawNbdClient client = RawNbdClient.connect(server.port(), "mem")) {
			byte[] data = new byte[256 * 1024];
			new Random(4).nextBytes(data);
			for (int i = 0; i < 20; i++) {
				assertThat(client.call(NbdProtocol.CMD_WRITE, i * 4096L, data.length, data).error()).isZero();
				assertThat(client.call(NbdProtocol.CMD_READ, i * 4096L, data.length, null).data()).isEqualTo(data);
				// Longer than the spin period: the next request finds the loop blocked again.
				Thread.sleep(2);
			}
		}
	}

}
