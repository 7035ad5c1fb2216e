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
			this.executor.execute(() -> run(current));
		}
		catch (RejectedExecutionException ex) {
			// Executor gone (server stopped): fail this round rather than leave it pending forever.
			finish(current, ex);
		}
	}

	private void run(CompletableFuture<Void> current) {
		Throwable failure = null;
		try {
			this.syncs.increment();
			this.sync.sync();
		}
		catch (Throwable ex) {
			failure = ex;
		}
		finish(current, failure);
	}

	/** Hands over to the flushes that arrived during this sync, then answers this one's. */
	private void finish(CompletableFuture<Void> current, Throwable failure) {
		CompletableFuture<Void> following;
		synchronized (this) {
			following = this.next;
			this.next = null;
			this.running = following;
		}
		// Answer this round first: with an inline executor the next sync runs on this thread.
		if (failure != null) {
			current.completeExceptionally(failure);
		}
		else {
			current.complete(null);
		}
		if (following != null) {
			start(following);
		}
	}

}
