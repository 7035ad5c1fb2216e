package dev.nbd.server;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;

/**
 * Runs the chunks of long requests (CACHE, TRIM and WRITE_ZEROES over large ranges) on the
 * worker pool, fairly: round robin across exports and, within an export, across connections,
 * each connection's chunks in the order given. At most {@code maxRunning} chunks are handed to
 * the pool at once, so the rest of the pool stays free for other requests; and a request
 * submits its next chunk only when the previous one finished, so the chunk goes to the back of
 * the line behind everyone else's work.
 */
final class BackgroundScheduler {

	private final Executor executor;

	private final int maxRunning;

	/** Exports with chunks waiting, in turn order. */
	private final ArrayDeque<Group> turns = new ArrayDeque<>();

	private final Map<Object, Group> groups = new HashMap<>();

	private int running;

	private int waiting;

	BackgroundScheduler(Executor executor, int maxRunning) {
		if (maxRunning < 1) {
			throw new IllegalArgumentException("maxRunning must be at least 1: " + maxRunning);
		}
		this.executor = executor;
		this.maxRunning = maxRunning;
	}

	/** Queues {@code chunk} of {@code owner} (a connection) of {@code group} (an export). */
	void submit(Object group, Object owner, Runnable chunk) {
		List<Runnable> start;
		synchronized (this) {
			Group g = this.groups.get(group);
			if (g == null) {
				g = new Group(group);
				this.groups.put(group, g);
				this.turns.add(g);
			}
			g.add(owner, chunk);
			this.waiting++;
			start = takeStartable();
		}
		startAll(start);
	}

	/** Chunks handed to the pool and not finished. */
	synchronized int running() {
		return this.running;
	}

	/** Chunks waiting for their turn. */
	synchronized int waiting() {
		return this.waiting;
	}

	/** Under the lock: the next chunks, in turn, that may start now. */
	private List<Runnable> takeStartable() {
		List<Runnable> start = null;
		while (this.running < this.maxRunning && !this.turns.isEmpty()) {
			Group g = this.turns.poll();
			Runnable chunk = g.next();
			if (g.isEmpty()) {
				this.groups.remove(g.key);
			}
			else {
				this.turns.add(g);
			}
			this.waiting--;
			this.running++;
			if (start == null) {
				start = new ArrayList<>(2);
			}
			start.add(chunk);
		}
		return (start != null) ? start : List.of();
	}

	private void startAll(List<Runnable> chunks) {
		for (Runnable chunk : chunks) {
			Runnable run = () -> {
				try {
					chunk.run();
				}
				finally {
					finished();
				}
			};
			try {
				this.executor.execute(run);
			}
			catch (RejectedExecutionException ex) {
				// The pool is not shut down while the server lives; should it be, finish here.
				run.run();
			}
		}
	}

	private void finished() {
		List<Runnable> start;
		synchronized (this) {
			this.running--;
			start = takeStartable();
		}
		startAll(start);
	}

	/** One export's connections with chunks waiting, in turn order. */
	private static final class Group {

		private final Object key;

		private final ArrayDeque<Owner> turns = new ArrayDeque<>();

		private final Map<Object, Owner> owners = new HashMap<>();

		Group(Object key) {
			this.key = key;
		}

		void add(Object owner, Runnable chunk) {
			Owner o = this.owners.get(owner);
			if (o == null) {
				o = new Owner(owner);
				this.owners.put(owner, o);
				this.turns.add(o);
			}
			o.chunks.add(chunk);
		}

		Runnable next() {
			Owner o = this.turns.poll();
			Runnable chunk = o.chunks.poll();
			if (o.chunks.isEmpty()) {
				this.owners.remove(o.key);
			}
			else {
				this.turns.add(o);
			}
			return chunk;
		}

		boolean isEmpty() {
			return this.turns.isEmpty();
		}

	}

	private static final class Owner {

		private final Object key;

		private final ArrayDeque<Runnable> chunks = new ArrayDeque<>();

		Owner(Object key) {
			this.key = key;
		}

	}

}
