package dev.nbd.server;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Executor;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;

/** Turn order and the bound on running chunks, with a pool the test runs by hand. */
class BackgroundSchedulerTests {

	private final ManualPool pool = new ManualPool();

	private final List<String> ran = new ArrayList<>();

	@Test
	void atMostMaxRunningChunksAreHandedToThePool() {
		BackgroundScheduler scheduler = new BackgroundScheduler(this.pool, 2);
		for (int i = 0; i < 5; i++) {
			scheduler.submit("mem", "c1", chunk("c1-" + i));
		}
		assertThat(this.pool.tasks).hasSize(2);
		assertThat(scheduler.running()).isEqualTo(2);
		assertThat(scheduler.waiting()).isEqualTo(3);
		this.pool.runOne();
		assertThat(this.pool.tasks).hasSize(2);
		this.pool.runAll();
		assertThat(this.ran).containsExactly("c1-0", "c1-1", "c1-2", "c1-3", "c1-4");
		assertThat(scheduler.running()).isZero();
		assertThat(scheduler.waiting()).isZero();
	}

	@Test
	void turnsRotateAcrossExportsThenAcrossConnectionsOfAnExport() {
		BackgroundScheduler scheduler = new BackgroundScheduler(this.pool, 1);
		scheduler.submit("mem", "a", chunk("a1"));
		scheduler.submit("mem", "a", chunk("a2"));
		scheduler.submit("mem", "a", chunk("a3"));
		scheduler.submit("mem", "b", chunk("b1"));
		scheduler.submit("mem", "b", chunk("b2"));
		scheduler.submit("disk", "c", chunk("c1"));
		scheduler.submit("disk", "c", chunk("c2"));
		this.pool.runAll();
		// a1 was handed to the pool at once; then exports alternate, and within mem the connections.
		assertThat(this.ran).containsExactly("a1", "a2", "c1", "b1", "c2", "a3", "b2");
	}

	/**
	 * Long requests submit their next chunk when the previous one finished: a client that
	 * arrives while another keeps many of them going waits for one chunk per request of the
	 * other, not for all their work.
	 */
	@Test
	void aLateComerWaitsForOneTurnNotForAnotherConnectionsBacklog() {
		BackgroundScheduler scheduler = new BackgroundScheduler(this.pool, 1);
		for (int request = 0; request < 3; request++) {
			selfRequeueing(scheduler, "hog", "hog-" + request, 10);
		}
		this.pool.runOne();
		this.pool.runOne();
		selfRequeueing(scheduler, "late", "late", 1);
		this.pool.runAll();
		assertThat(this.ran).hasSize(31);
		// Behind the chunk running when it came and the hog's one turn: not behind 27 more.
		assertThat(this.ran.indexOf("late/0")).isEqualTo(4);
	}

	private void selfRequeueing(BackgroundScheduler scheduler, String owner, String name, int chunks) {
		new Runnable() {

			int next;

			@Override
			public void run() {
				BackgroundSchedulerTests.this.ran.add(name + "/" + this.next);
				if (++this.next < chunks) {
					scheduler.submit("mem", owner, this);
				}
			}

			Runnable submit() {
				scheduler.submit("mem", owner, this);
				return this;
			}

		}.submit();
	}

	private Runnable chunk(String name) {
		return () -> this.ran.add(name);
	}

	/** A pool whose tasks run only when the test says. */
	private static final class ManualPool implements Executor {

		private final ArrayDeque<Runnable> tasks = new ArrayDeque<>();

		@Override
		public void execute(Runnable command) {
			this.tasks.add(command);
		}

		void runOne() {
			this.tasks.poll().run();
		}

		void runAll() {
			while (!this.tasks.isEmpty()) {
				runOne();
			}
		}

	}

}
