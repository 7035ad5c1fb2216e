package dev.nbd.server;

import java.time.Duration;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import dev.nbd.testsupport.GatedBackend;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.PipelinedReads;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * {@code nbd.server.max-in-flight} as behaviour: with more requests pipelined than the cap, no
 * more than the cap run in the backend at once, and every request is still answered.
 */
class MaxInFlightTests {

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	@Test
	void noMoreThanTheCapRunAtOnce() throws Exception {
		GatedBackend backend = GatedBackend.withPattern("gated", 1 << 20);
		// More worker threads than requests: only the cap can hold them back.
		NbdServer server = this.servers.start(NbdServerConfig.builder().maxInFlight(3).workerThreads(16), backend);
		backend.close();
		try (RawNbdClient client = RawNbdClient.connect(server.port(), "gated")) {
			PipelinedReads reads = new PipelinedReads(GatedBackend::expected).send(client, 10, 4096);
			await().atMost(Duration.ofSeconds(60)).until(() -> backend.started() >= 3);
			// Whatever the network thread had received was dispatched by now.
			server.connections().iterator().next().channel().eventLoop().submit(() -> {
			}).get(30, TimeUnit.SECONDS);
			assertThat(backend.started()).as("requests in the backend while three are held").isEqualTo(3);
			backend.open();
			assertThat(reads.receive(client).data()).isEqualTo(10);
			assertThat(backend.maxConcurrent()).isEqualTo(3);
		}
		finally {
			backend.open();
		}
	}

}
