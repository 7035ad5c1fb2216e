package dev.nbd.server;

import java.util.concurrent.atomic.AtomicBoolean;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.PooledByteBufAllocator;

/**
 * The buffer allocator of NBD connections: Netty's default, except in a small JVM.
 *
 * <p>Why: Netty 4.2's default (adaptive) allocator switches to a low-memory mode when the heap
 * limit is 512 MiB or less, where it pools nothing above 16.5 KiB and gives up thread-local
 * caches. Every socket read of a large WRITE (up to 256 KiB) then becomes a fresh, zeroed
 * {@code allocateDirect}: 8% of the CPU samples of 1 MiB writes on one CPU with {@code -Xmx512m},
 * the size users give containers. Netty's pooled allocator keeps pooling there, for 5-8% less CPU
 * per 1 MiB request (docs/BENCHMARKS.md), and returns a chunk once it is empty. A JVM that names
 * its allocator ({@code -Dio.netty.allocator.type}) gets the one it names.
 */
final class ConnectionAllocator {

	private static final Logger logger = LoggerFactory.getLogger(ConnectionAllocator.class);

	/** Netty's threshold for its adaptive allocator's low-memory mode ({@code Runtime.maxMemory()}). */
	static final long NETTY_LOW_MEMORY_HEAP = 512L << 20;

	static final String ALLOCATOR_TYPE_PROPERTY = "io.netty.allocator.type";

	/** Whether the choice was logged: once per JVM, though tests and restarts ask again. */
	private static final AtomicBoolean SAID = new AtomicBoolean();

	private ConnectionAllocator() {
	}

	/** The allocator for this JVM; says so at INFO (once) when it is not Netty's default. */
	static ByteBufAllocator get() {
		long maxHeap = Runtime.getRuntime().maxMemory();
		ByteBufAllocator allocator = choose(maxHeap, System.getProperty(ALLOCATOR_TYPE_PROPERTY));
		if (allocator != ByteBufAllocator.DEFAULT && !SAID.getAndSet(true)) {
			logger.info("NBD connections use Netty's pooled buffer allocator: the heap limit ({} MiB) puts Netty's "
					+ "default allocator in its low-memory mode, which pools no buffer above 16 KiB "
					+ "(-D{} chooses one)", maxHeap >> 20, ALLOCATOR_TYPE_PROPERTY);
		}
		return allocator;
	}

	/**
	 * Pooled when the heap limit puts Netty's adaptive allocator in its low-memory mode and no
	 * allocator type is configured; Netty's default otherwise.
	 */
	static ByteBufAllocator choose(long maxHeap, String configuredType) {
		if (configuredType == null && maxHeap <= NETTY_LOW_MEMORY_HEAP) {
			return PooledByteBufAllocator.DEFAULT;
		}
		return ByteBufAllocator.DEFAULT;
	}

}
