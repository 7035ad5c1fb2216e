package dev.nbd.server;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/** multi-conn=single under a stampede: exactly one of many simultaneous clients gets the export. */
class SingleConnectionExportTest {

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private NbdServer server;

	@Test
	void simultaneousClientsCannotBothWin() throws Exception {
		this.server = this.servers.start(NbdServerConfig.builder(), List.of(new MemoryBackend("solo", 1 << 20)),
				Map.of("solo", MultiConnMode.SINGLE), Map.of());
		int clients = 16;
		CyclicBarrier start = new CyclicBarrier(clients);
		ExecutorService pool = Executors.newFixedThreadPool(clients);
		List<RawNbdClient> open = new CopyOnWriteArrayList<>();
		try {
			List<Future<RawNbdClient.OptionReply>> attempts = new ArrayList<>();
			for (int i = 0; i < clients; i++) {
				attempts.add(pool.submit(() -> {
					RawNbdClient client = RawNbdClient.connect(this.server.port());
					open.add(client);
					client.handshake();
					start.await(30, TimeUnit.SECONDS);
					// The final reply to GO: ACK for the winner, the policy refusal for the others.
					return client.request(NbdProtocol.OPT_GO, RawNbdClient.goData("solo"));
				}));
			}
			List<RawNbdClient.OptionReply> replies = new ArrayList<>();
			for (Future<RawNbdClient.OptionReply> f : attempts) {
				replies.add(f.get(60, TimeUnit.SECONDS));
			}
			assertThat(replies).filteredOn((r) -> r.type() == NbdProtocol.REP_ACK).hasSize(1);
			// Every other client was refused for this reason, not for any other failure.
			assertThat(replies).filteredOn((r) -> r.type() != NbdProtocol.REP_ACK)
				.hasSize(clients - 1)
				.allSatisfy((r) -> {
					assertThat(r.type()).isEqualTo(NbdProtocol.REP_ERR_POLICY);
					assertThat(new String(r.data(), StandardCharsets.UTF_8)).contains("one connection at a time");
				});
			assertThat(this.server.export("solo").transmissionFlags() & NbdProtocol.TFLAG_CAN_MULTI_CONN)
				.as("single never advertises CAN_MULTI_CONN")
				.isZero();
		}
		finally {
			open.forEach(RawNbdClient::close);
			pool.shutdownNow();
		}
	}

}
