package dev.nbd.server;

/**
 * Hooks for observing the server (metrics, logs). Called on network threads: implementations
 * must be fast and must not block. Every method has a no-op default.
 */
public interface NbdServerListener {

	/** A client finished negotiation and is attached to an export. */
	default void connectionOpened(NbdConnection connection) {
	}

	/** A connection attached to an export has closed. */
	default void connectionClosed(NbdConnection connection) {
	}

	/** A connection was refused or dropped before reaching an export; {@code reason} is a short tag. */
	default void connectionRefused(String reason) {
	}

	/**
	 * A request was answered. {@code outcome} is {@code success} or the lower-case NBD error
	 * name; {@code bytes} is the payload moved.
	 */
	default void requestCompleted(Export export, String op, String outcome, long nanos, long bytes) {
	}

	/** A client FLUSH was answered after {@code nanos}. */
	default void flushCompleted(Export export, long nanos, boolean success) {
	}

	/**
	 * One chunk of a long CACHE, TRIM or WRITE_ZEROES request ran: {@code bytes} of the range
	 * ({@code op} is {@code cache}, {@code trim} or {@code write_zeroes}). Called from worker
	 * threads too.
	 */
	default void backgroundChunk(Export export, String op, long bytes) {
	}

}
