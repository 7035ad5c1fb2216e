package dev.nbd.server;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.atomic.LongAdder;

/**
 * Group commit: concurrent flush requests share backend syncs without weakening what each
 * one promises. A flush is answered only by a sync that <em>started after it arrived</em>:
 * one that arrives while a sync is running waits for the next sync, which every flush that
 * arrived during the running one shares. So under load there are at most two syncs per
 * "generation" of concurrent flushes, and every answered flush covers every write answered
 * before it arrived.
 */
public final class FlushCoordinator {

	/** The durable operation: a backend flush, or a fan-out over connection views. */
	@FunctionalInterface
	public interface Sync {

		void sync() throws Exception;

	}

	private final Sync sync;

	private final Executor executor;

	private final LongAdder requests = new LongAdder();

	private final LongAdder syncs = new LongAdder();

	private CompletableFuture<Void> running;

	private CompletableFuture<Void> next;

	public FlushCoordinator(Sync sync, Executor executor) {
		this.sync = sync;
		this.executor = executor;
	}

	/** Completes once a sync that started after this call has finished. */
	public CompletableFuture<Void> flush() {
		this.requests.increment();
		CompletableFuture<Void> toStart;
		CompletableFuture<Void> result;
		synchronized (this) {
			if (this.running == null) {
				this.running = new CompletableFuture<>();
				toStart = this.running;
				result = this.running;
			}
			else {
				if (this.next == null) {
					this.next = new CompletableFuture<>();
				}
				return this.next;
			}
		}
		start(toStart);
		return result;
	}

	/** Flush requests received. */
	public long requests() {
		return this.requests.sum();
	}

	/** Syncs performed; {@code requests() - syncs()} is what group commit saved. */
	public long syncs() {
		return this.syncs.sum();
	}

	private void start(CompletableFuture<Void> current) {
		try {
			this.executor.execute(() -> runRounds(current));
		}
		catch (RejectedExecutionException ex) {
			// Executor gone (server stopped): fail this round and those queued behind it rather
			// than leave them pending forever.
			for (CompletableFuture<Void> round = current; round != null; round = handOver(round, ex)) {
			}
		}
	}

	/**
	 * Runs syncs while flushes keep arriving, one round after the other on this thread: a loop,
	 * not a chain of calls, so inline syncs (non-blocking backends) do not grow the stack.
	 */
	private void runRounds(CompletableFuture<Void> first) {
		for (CompletableFuture<Void> round = first; round != null;) {
			Throwable failure = null;
			try {
				this.syncs.increment();
				this.sync.sync();
			}
			catch (Throwable ex) {
				failure = ex;
			}
			round = handOver(round, failure);
		}
	}

	/**
	 * Answers a finished round, then returns the round of flushes that arrived meanwhile (now
	 * running), or null. Answered while still "running", so a flush its callbacks start joins the
	 * next round instead of starting a sync of its own on this stack.
	 */
	private CompletableFuture<Void> handOver(CompletableFuture<Void> current, Throwable failure) {
		if (failure != null) {
			current.completeExceptionally(failure);
		}
		else {
			current.complete(null);
		}
		synchronized (this) {
			CompletableFuture<Void> following = this.next;
			this.next = null;
			this.running = following;
			return following;
		}
	}

}
