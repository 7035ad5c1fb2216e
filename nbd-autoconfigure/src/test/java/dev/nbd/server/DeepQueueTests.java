package dev.nbd.server;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.slf4j.LoggerFactory;

import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.PipelinedReads;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * Thousands of small READs queued on a backend that completes on the network thread while the
 * replies are backed up: the queue must be drained by a loop, so the stack does not grow with the
 * number of queued requests (recursion over thousands of them ends in a StackOverflowError that
 * kills the connection, depending on the thread's stack size). Measured as the stack depth at
 * which the backend is called, which recursion makes grow with every request served in a row.
 */
class DeepQueueTests {

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private static final int READS = 60_000;

	private static final int LENGTH = 512;

	/** Frames from the event loop's run() down to the backend; far below what recursion reaches. */
	private static final long MAX_DEPTH = 400;

	@Test
	void stackDepthDoesNotGrowWithTheQueue() throws Exception {
		AtomicLong maxDepth = new AtomicLong();
		MemoryBackend backend = new MemoryBackend("mem", 64L << 20) {
			@Override
			public void read(long offset, ByteBuffer dst) {
				long depth = StackWalker.getInstance().walk((frames) -> frames.count());
				maxDepth.accumulateAndGet(depth, Math::max);
				super.read(offset, dst);
			}
		};
		NbdServer server = this.servers.start(backend);
		try (RawNbdClient client = RawNbdClient.connect(server.port(), "mem")) {
			client.socket().setSoTimeout(120_000);
			warmUp(client);
			// All requests at once from another thread: the server stops reading while its replies
			// are backed up, so the write may block until we read.
			PipelinedReads reads = new PipelinedReads((offset) -> 0);
			CompletableFuture<Void> sent = reads.sendInBackground(client, READS, LENGTH);
			// Nobody reads the replies: they back up until the server stops dispatching, and the
			// requests decoded meanwhile (thousands, from one socket read) wait in its queue.
			await().atMost(Duration.ofSeconds(60)).until(() -> {
				NbdConnection c = server.connections().iterator().next();
				return !c.channel().isWritable() && c.inFlight() > 1;
			});
			assertThat(reads.receive(client).data()).as("READs answered").isEqualTo(READS);
			sent.get(60, TimeUnit.SECONDS);
			assertThat(maxDepth.get()).as("stack depth at the backend").isLessThan(MAX_DEPTH);
		}
	}

	/**
	 * Where the queue is drained by recursion, the StackOverflowError can strike inside a class's
	 * static initializer, which leaves that class unusable for the rest of this JVM (and fails
	 * other test classes). Everything the request and error paths load is loaded here first.
	 */
	private static void warmUp(RawNbdClient client) throws IOException {
		assertThat(client.call(NbdProtocol.CMD_READ, 0, LENGTH, null).error()).isZero();
		assertThat(client.call(NbdProtocol.CMD_READ, client.size(), LENGTH, null).error())
			.isEqualTo(NbdError.EINVAL.code());
		LoggerFactory.getLogger(DeepQueueTests.class).warn("Loading the classes that log an error",
				new IllegalStateException("not an error"));
	}

}
