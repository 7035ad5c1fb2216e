package dev.nbd.server;

/**
 * Where the reads and plain writes of an export's served file ({@code ExportBackend.servedFile()})
 * run: on the network thread that received them, or on a worker.
 */
public enum EventLoopIo {

	/**
	 * On the network thread while the file answers like the page cache, on workers while its calls
	 * are slow (cache misses, writes throttled by the kernel), back once they are fast again: see
	 * {@link EventLoopFileIo}.
	 */
	ADAPTIVE,

	/** Always on the network thread: fastest from the page cache, but a slow call stalls the thread's connections. */
	ALWAYS,

	/** Always on workers, as for any blocking backend. */
	NEVER

}
