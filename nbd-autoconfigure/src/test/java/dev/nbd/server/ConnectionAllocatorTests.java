package dev.nbd.server;

import org.junit.jupiter.api.Test;

import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.PooledByteBufAllocator;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Which buffer allocator NBD connections get: pooled where Netty's default would be in its
 * low-memory mode (heap limit of 512 MiB or less), Netty's default otherwise, and whatever a JVM
 * names with {@code -Dio.netty.allocator.type}.
 */
class ConnectionAllocatorTests {

	private static final long MIB = 1L << 20;

	@Test
	void aSmallHeapGetsThePooledAllocator() {
		assertThat(ConnectionAllocator.choose(256 * MIB, null)).isSameAs(PooledByteBufAllocator.DEFAULT);
		assertThat(ConnectionAllocator.choose(512 * MIB, null)).isSameAs(PooledByteBufAllocator.DEFAULT);
	}

	@Test
	void aLargerHeapGetsNettysDefault() {
		assertThat(ConnectionAllocator.choose(512 * MIB + 1, null)).isSameAs(ByteBufAllocator.DEFAULT);
		assertThat(ConnectionAllocator.choose(8192 * MIB, null)).isSameAs(ByteBufAllocator.DEFAULT);
	}

	@Test
	void anAllocatorTheJvmNamesIsKept() {
		assertThat(ConnectionAllocator.choose(256 * MIB, "adaptive")).isSameAs(ByteBufAllocator.DEFAULT);
		assertThat(ConnectionAllocator.choose(256 * MIB, "unpooled")).isSameAs(ByteBufAllocator.DEFAULT);
	}

}
