package dev.nbd.autoconfigure.actuate;

import java.net.http.HttpResponse;
import java.time.Duration;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.springframework.context.ConfigurableApplicationContext;

import dev.nbd.server.NbdConnection;
import dev.nbd.server.NbdServer;
import dev.nbd.testsupport.ActuatorClient;
import dev.nbd.testsupport.PipelinedReads;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * {@code DELETE /actuator/nbd/{export}/{connection}} closes a connection cleanly: a client that
 * reads its replies at an ordinary pace gets every one of them whole before the socket ends.
 */
class ActuatorCloseDrainTests {

	private static final int MIB = 1024 * 1024;

	private ConfigurableApplicationContext context;

	private int httpPort;

	private int nbdPort;

	private NbdServer server;

	/** The application of its own: 16 MiB read from {@code mem} must not show in other tests' counters. */
	@BeforeEach
	void start() {
		this.context = ObservabilityTestApplication.startAlone();
		this.httpPort = ObservabilityTestApplication.httpPort(this.context);
		this.nbdPort = ObservabilityTestApplication.nbdPort(this.context);
		this.server = this.context.getBean(NbdServer.class);
	}

	@AfterEach
	void stop() {
		this.context.close();
	}

	@Test
	void closedConnectionGetsEveryReplyWhole() throws Exception {
		try (RawNbdClient client = PipelinedReads.smallWindowClient(this.nbdPort, "mem")) {
			String remote = "127.0.0.1:" + client.socket().getLocalPort();
			PipelinedReads reads = new PipelinedReads((offset) -> 0).send(client, 16, MIB);
			// All received, replies backed up (16 MiB, far more than the socket buffers) when the
			// close comes.
			NbdConnection connection = await().atMost(Duration.ofSeconds(60))
				.until(() -> this.server.connections()
					.stream()
					.filter((c) -> c.remote().equals(remote) && c.requests() == 16 && c.bytesRead() > 0)
					.findFirst()
					.orElse(null), (c) -> c != null);
			HttpResponse<String> response = new ActuatorClient(this.httpPort)
				.delete("/actuator/nbd/mem/" + connection.id());
			assertThat(response.statusCode()).isEqualTo(200);
			reads.receiveWithAPause(client, 14, () -> connection.inFlight() == 0);
			// Each whole: with its data, or NBD_ESHUTDOWN for one the server had not read yet.
			assertThat(reads.answered()).as("complete replies").isEqualTo(16);
			assertThat(client.serverClosed()).isTrue();
		}
	}

}
