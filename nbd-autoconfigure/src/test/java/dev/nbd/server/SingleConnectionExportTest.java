package dev.nbd.server;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import dev.nbd.backend.MemoryBackend;
import dev.nbd.testsupport.PipelinedNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/** multi-conn=single under a stampede: exactly one of many simultaneous clients gets the export. */
class SingleConnectionExportTest {

	private NbdServer server;

	@AfterEach
	void stop() {
		if (this.server != null) {
			this.server.stop();
		}
	}

	@Test
	void simultaneousClientsCannotBothWin() throws Exception {
		this.server = new NbdServer(NbdServerConfig.builder().port(0).build(),
				List.of(new MemoryBackend("solo", 1 << 20)), Map.of("solo", MultiConnMode.SINGLE), Map.of(), null);
		this.server.start();
		int clients = 16;
		CyclicBarrier start = new CyclicBarrier(clients);
		ExecutorService pool = Executors.newFixedThreadPool(clients);
		List<PipelinedNbdClient> connected = new ArrayList<>();
		try {
			List<Future<PipelinedNbdClient>> attempts = new ArrayList<>();
			for (int i = 0; i < clients; i++) {
				attempts.add(pool.submit(() -> {
					start.await(10, TimeUnit.SECONDS);
					try {
						return PipelinedNbdClient.connect(this.server.port(), "solo");
					}
					catch (RuntimeException refused) {
						return null;
					}
				}));
			}
			for (Future<PipelinedNbdClient> f : attempts) {
				PipelinedNbdClient c = f.get(30, TimeUnit.SECONDS);
				if (c != null) {
					connected.add(c);
				}
			}
			assertThat(connected).hasSize(1);
			assertThat(this.server.export("solo").transmissionFlags() & dev.nbd.protocol.NbdProtocol.TFLAG_CAN_MULTI_CONN)
				.as("single never advertises CAN_MULTI_CONN")
				.isZero();
		}
		finally {
			connected.forEach(PipelinedNbdClient::close);
			pool.shutdownNow();
		}
	}

}
