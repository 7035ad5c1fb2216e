package dev.nbd.autoconfigure.actuate;

import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.springframework.context.ConfigurableApplicationContext;
import tools.jackson.databind.JsonNode;

import dev.nbd.server.NbdServer;
import dev.nbd.testsupport.ActuatorClient;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * Readiness leaves UP as soon as the server starts draining, while requests still finish. The
 * drain is started the way an application stops: by closing the context, whose lifecycle stops
 * NBD before the web server, so the actuator still answers meanwhile.
 */
class ReadinessDrainTests {

	private static final Duration PATIENCE = Duration.ofSeconds(60);

	private ConfigurableApplicationContext context;

	private int httpPort;

	private int nbdPort;

	private ObservabilityTestApplication.Gate gate;

	private NbdServer server;

	/** The application of its own: the test closes it. */
	@BeforeEach
	void start() {
		this.context = ObservabilityTestApplication.startAlone();
		this.httpPort = ObservabilityTestApplication.httpPort(this.context);
		this.nbdPort = ObservabilityTestApplication.nbdPort(this.context);
		this.gate = this.context.getBean(ObservabilityTestApplication.Gate.class);
		this.server = this.context.getBean(NbdServer.class);
	}

	@AfterEach
	void stop() {
		this.gate.open();
		this.context.close();
	}

	@Test
	void readinessIsOutOfServiceWhileDraining() throws Exception {
		assertThat(readiness().statusCode()).isEqualTo(200);
		this.gate.close();
		try (RawNbdClient client = RawNbdClient.connect(this.nbdPort, "slow")) {
			client.sendRead(0, 4096);
			await().atMost(PATIENCE)
				.until(() -> this.server.connections().stream().anyMatch((c) -> c.inFlight() == 1));
			CompletableFuture<Void> closed = CompletableFuture.runAsync(this.context::close);
			await().atMost(PATIENCE).until(this.server::isDraining);
			HttpResponse<String> readiness = readiness();
			assertThat(readiness.statusCode()).isEqualTo(503);
			JsonNode body = ActuatorClient.json(readiness);
			assertThat(body.get("components").get("nbd").get("status").asString()).isEqualTo("OUT_OF_SERVICE");
			// The request in flight is still answered.
			this.gate.open();
			assertThat(client.receive().error()).isZero();
			// NBD has stopped; the web server, stopped in a later phase, may still answer or be gone.
			await().atMost(PATIENCE).until(() -> !this.server.isRunning() && this.server.connections().isEmpty());
			closed.get(PATIENCE.toSeconds(), TimeUnit.SECONDS);
			assertThat(this.context.isActive()).isFalse();
		}
		finally {
			this.gate.open();
		}
	}

	private HttpResponse<String> readiness() {
		return new ActuatorClient(this.httpPort).get("/actuator/health/readiness");
	}

}
