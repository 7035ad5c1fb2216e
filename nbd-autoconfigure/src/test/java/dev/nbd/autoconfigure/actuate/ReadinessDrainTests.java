package dev.nbd.autoconfigure.actuate;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;

import org.junit.jupiter.api.Test;
import org.springframework.beans.factory.annotation.Autowired;
import org.springframework.boot.test.web.server.LocalServerPort;
import org.springframework.test.annotation.DirtiesContext;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.json.JsonMapper;

import dev.nbd.autoconfigure.LocalNbdServerPort;
import dev.nbd.server.NbdServer;
import dev.nbd.testsupport.RawNbdClient;

import static dev.nbd.autoconfigure.actuate.NbdObservabilityTests.await;
import static org.assertj.core.api.Assertions.assertThat;

/** Readiness leaves UP as soon as the server starts draining, while requests still finish. */
@ObservabilityTest
@DirtiesContext
class ReadinessDrainTests {

	@LocalServerPort
	int httpPort;

	@LocalNbdServerPort
	int nbdPort;

	@Autowired
	ObservabilityTestApplication.Gate gate;

	@Autowired
	NbdServer server;

	@Test
	void readinessIsOutOfServiceWhileDraining() throws Exception {
		assertThat(readiness().statusCode()).isEqualTo(200);
		this.gate.close();
		try (RawNbdClient client = RawNbdClient.connect(this.nbdPort, "slow")) {
			client.sendRead(0, 4096);
			await(() -> this.server.connections().stream().anyMatch((c) -> c.inFlight() == 1));
			CompletableFuture<Void> drain = CompletableFuture
				.runAsync(() -> this.server.shutdownGracefully(Duration.ofSeconds(20)));
			await(this.server::isDraining);
			HttpResponse<String> readiness = readiness();
			assertThat(readiness.statusCode()).isEqualTo(503);
			JsonNode body = JsonMapper.builder().build().readTree(readiness.body());
			assertThat(body.get("components").get("nbd").get("status").asString()).isEqualTo("OUT_OF_SERVICE");
			// The request in flight is still answered.
			this.gate.open();
			assertThat(client.receive().error()).isZero();
			drain.get();
			assertThat(readiness().statusCode()).isEqualTo(503);
		}
		finally {
			this.gate.open();
		}
	}

	private HttpResponse<String> readiness() throws Exception {
		return HttpClient.newHttpClient()
			.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + this.httpPort + "/actuator/health/readiness"))
				.timeout(Duration.ofSeconds(10))
				.build(), HttpResponse.BodyHandlers.ofString());
	}

}
