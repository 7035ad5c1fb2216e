package dev.nbd.server;

import java.util.concurrent.atomic.AtomicLong;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;

/** The decisions of adaptive event-loop file I/O ({@link EventLoopFileIo}), with a fake clock. */
class EventLoopFileIoPolicyTests {

	private static final long FAST = 10_000;

	private static final long SLOW = 5_000_000;

	private final AtomicLong now = new AtomicLong(1_000_000_000_000L);

	private final EventLoopFileIo io = new EventLoopFileIo("disk", EventLoopIo.ADAPTIVE, this.now::get);

	@Test
	void slowMeansMoreThanTheBasePlusHalfANanosecondPerByte() {
		assertThat(EventLoopFileIo.slow(200_000, 0)).isFalse();
		assertThat(EventLoopFileIo.slow(200_001, 0)).isTrue();
		assertThat(EventLoopFileIo.slow(202_048, 4096)).isFalse();
		assertThat(EventLoopFileIo.slow(202_049, 4096)).isTrue();
		// A 1 MiB page-cache write (a few hundred microseconds) is not slow.
		assertThat(EventLoopFileIo.slow(600_000, 1 << 20)).isFalse();
		assertThat(EventLoopFileIo.slow(800_000, 1 << 20)).isTrue();
	}

	@Test
	void startsOnTheNetworkThreadAndStaysThereWhileCallsAreFast() {
		assertThat(this.io.onEventLoop()).isTrue();
		for (int i = 0; i < 10_000; i++) {
			this.io.record(FAST, 4096);
		}
		assertThat(this.io.onEventLoop()).isTrue();
		assertThat(this.io.fallbacks()).isZero();
	}

	@Test
	void aFewSlowCallsCloseTogetherMoveCallsToWorkers() {
		for (int i = 0; i < EventLoopFileIo.SLOW_TO_MOVE - 1; i++) {
			this.io.record(SLOW, 4096);
			this.io.record(FAST, 4096);
		}
		assertThat(this.io.onEventLoop()).as("one slow call short").isTrue();
		this.io.record(SLOW, 4096);
		assertThat(this.io.onEventLoop()).isFalse();
		assertThat(this.io.fallbacks()).isOne();
	}

	@Test
	void slowCallsNowAndThenDoNotMoveThem() {
		// A busy machine pauses a thread now and then: one slow call in 17 never adds up.
		for (int i = 0; i < 100_000; i++) {
			this.io.record((i % (EventLoopFileIo.SLOW_WEIGHT + 1) == 0) ? SLOW : FAST, 4096);
		}
		assertThat(this.io.onEventLoop()).isTrue();
		assertThat(this.io.fallbacks()).isZero();
	}

	@Test
	void slowCallsMoreOftenAddUp() {
		int calls = 0;
		while (this.io.onEventLoop() && calls < 10_000) {
			this.io.record((calls % 8 == 0) ? SLOW : FAST, 4096);
			calls++;
		}
		assertThat(this.io.onEventLoop()).as("one slow call in 8").isFalse();
	}

	private void moveToWorkers() {
		for (int i = 0; i < EventLoopFileIo.SLOW_TO_MOVE; i++) {
			this.io.record(SLOW, 4096);
		}
		assertThat(this.io.onEventLoop()).isFalse();
	}

	@Test
	void comesBackAfterEnoughFastCallsInARowOnWorkers() {
		moveToWorkers();
		assertThat(this.io.required()).isEqualTo(EventLoopFileIo.MIN_REQUIRED);
		for (int i = 0; i < EventLoopFileIo.MIN_REQUIRED - 1; i++) {
			this.io.record(FAST, 4096);
		}
		assertThat(this.io.onEventLoop()).isFalse();
		// A slow one on the workers starts the count again.
		this.io.record(SLOW, 4096);
		for (int i = 0; i < EventLoopFileIo.MIN_REQUIRED - 1; i++) {
			this.io.record(FAST, 4096);
		}
		assertThat(this.io.onEventLoop()).isFalse();
		this.io.record(FAST, 4096);
		assertThat(this.io.onEventLoop()).isTrue();
		assertThat(this.io.fallbacks()).as("slow calls on workers are not new fallbacks").isOne();
	}

	@Test
	void turningSlowSoonAfterComingBackDoublesTheFastCallsRequiredUpToALimit() {
		int expected = EventLoopFileIo.MIN_REQUIRED;
		for (int round = 0; round < 10; round++) {
			moveToWorkers();
			assertThat(this.io.required()).isEqualTo(expected);
			for (int i = 0; i < expected; i++) {
				this.io.record(FAST, 4096);
			}
			assertThat(this.io.onEventLoop()).isTrue();
			this.now.addAndGet(1_000_000_000L);
			expected = Math.min(expected * 2, EventLoopFileIo.MAX_REQUIRED);
		}
		assertThat(expected).isEqualTo(EventLoopFileIo.MAX_REQUIRED);
		assertThat(this.io.fallbacks()).isEqualTo(10);
	}

	@Test
	void aMinuteOfFastCallsOnTheNetworkThreadResetsTheRequirement() {
		for (int round = 0; round < 3; round++) {
			moveToWorkers();
			for (int i = 0; i < this.io.required(); i++) {
				this.io.record(FAST, 4096);
			}
		}
		assertThat(this.io.required()).isEqualTo(4 * EventLoopFileIo.MIN_REQUIRED);
		this.now.addAndGet(EventLoopFileIo.STEADY_NANOS);
		moveToWorkers();
		assertThat(this.io.required()).isEqualTo(EventLoopFileIo.MIN_REQUIRED);
	}

	@Test
	void alwaysAndNeverIgnoreDurations() {
		EventLoopFileIo always = new EventLoopFileIo("disk", EventLoopIo.ALWAYS, this.now::get);
		EventLoopFileIo never = new EventLoopFileIo("disk", EventLoopIo.NEVER, this.now::get);
		for (int i = 0; i < 100; i++) {
			always.record(SLOW, 4096);
			never.record(FAST, 4096);
		}
		assertThat(always.onEventLoop()).isTrue();
		assertThat(never.onEventLoop()).isFalse();
		assertThat(always.fallbacks()).isZero();
	}

}
