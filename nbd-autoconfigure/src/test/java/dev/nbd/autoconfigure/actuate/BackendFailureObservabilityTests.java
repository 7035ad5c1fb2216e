package dev.nbd.autoconfigure.actuate;

import java.net.http.HttpResponse;

import org.junit.jupiter.api.Test;
import org.springframework.boot.SpringBootConfiguration;
import org.springframework.boot.autoconfigure.EnableAutoConfiguration;
import org.springframework.boot.micrometer.metrics.test.autoconfigure.AutoConfigureMetrics;
import org.springframework.boot.test.context.SpringBootTest;
import org.springframework.boot.test.web.server.LocalServerPort;
import org.springframework.context.annotation.Bean;
import org.springframework.test.annotation.DirtiesContext;
import tools.jackson.databind.JsonNode;

import dev.nbd.autoconfigure.LocalNbdServerPort;
import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.backend.filter.Fault;
import dev.nbd.backend.filter.FaultInjectingBackend;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.ActuatorClient;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * What an operator sees when storage fails, through the running application: after a failed
 * sync the {@code nbd} health is DOWN (readiness 503) naming the export and
 * {@code nbd_sync_failures_total} counts it; a backend's unfilled read shows in
 * {@code nbd_backend_unfilled_reads_total}.
 */
@SpringBootTest(classes = BackendFailureObservabilityTests.App.class,
		webEnvironment = SpringBootTest.WebEnvironment.RANDOM_PORT,
		properties = { "nbd.server.port=0", "management.endpoints.web.exposure.include=health,prometheus",
				"management.endpoint.health.probes.enabled=true",
				"management.endpoint.health.group.readiness.include=readinessState,nbd",
				"management.endpoint.health.group.readiness.show-components=always",
				"management.endpoint.health.group.readiness.show-details=always" })
@AutoConfigureMetrics
@DirtiesContext
class BackendFailureObservabilityTests {

	@LocalServerPort
	int httpPort;

	@LocalNbdServerPort
	int nbdPort;

	@Test
	void aFailedSyncTurnsHealthDownAndIsCounted() throws Exception {
		assertThat(get("/actuator/health/readiness").statusCode()).isEqualTo(200);
		try (RawNbdClient client = RawNbdClient.connect(this.nbdPort, "faulty")) {
			assertThat(client.call(NbdProtocol.CMD_WRITE, 0, 8192, new byte[8192]).error()).isZero();
			assertThat(client.call(NbdProtocol.CMD_READ, 4096, 4096, null).error()).isEqualTo(NbdError.EIO.code());
			assertThat(client.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isEqualTo(NbdError.EIO.code());
			assertThat(client.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isEqualTo(NbdError.EIO.code());
		}
		HttpResponse<String> readiness = get("/actuator/health/readiness");
		assertThat(readiness.statusCode()).isEqualTo(503);
		JsonNode nbd = ActuatorClient.json(readiness).get("components").get("nbd");
		assertThat(nbd.get("status").asString()).isEqualTo("DOWN");
		assertThat(nbd.get("details").get("syncFailed").get(0).asString()).isEqualTo("faulty");
		assertThat(get("/actuator/prometheus").body()).contains("nbd_sync_failures_total{export=\"faulty\"} 1.0",
				"nbd_sync_failures_total{export=\"ok\"} 0.0", "nbd_backend_unfilled_reads_total{export=\"faulty\"} 1.0");
	}

	private HttpResponse<String> get(String path) {
		return new ActuatorClient(this.httpPort).get(path);
	}

	@SpringBootConfiguration(proxyBeanMethods = false)
	@EnableAutoConfiguration
	static class App {

		@Bean
		ExportBackend faulty() {
			return FaultInjectingBackend.builder(new MemoryBackend("faulty", 1 << 20))
				.fault(Fault.failedSync().times(1))
				.fault(Fault.shortRead(1).at(4096, 4096))
				.build();
		}

		@Bean
		ExportBackend ok() {
			return new MemoryBackend("ok", 1 << 20);
		}

	}

}
