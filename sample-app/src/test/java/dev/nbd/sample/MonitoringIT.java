package dev.nbd.sample;

import java.net.http.HttpResponse;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;

import dev.nbd.protocol.NbdProtocol;
import dev.nbd.sample.support.SampleAppProcess;
import dev.nbd.testsupport.ActuatorClient;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The packaged sample app as users run it: the {@code nbd} endpoint, the Prometheus names of
 * the contract, readiness with the {@code nbd} indicator, and disconnecting from the endpoint.
 */
class MonitoringIT {

	@Test
	void sampleAppIsObservable(@TempDir Path dir) throws Exception {
		try (SampleAppProcess app = SampleAppProcess.start(dir)) {
			ActuatorClient actuator = new ActuatorClient(app.httpPort());
			try (RawNbdClient mem = RawNbdClient.connect(app.nbdPort(), "mem");
					RawNbdClient disk = RawNbdClient.connect(app.nbdPort(), "disk")) {
				assertThat(mem.call(NbdProtocol.CMD_WRITE, 0, 65536, new byte[65536]).error()).isZero();
				assertThat(mem.call(NbdProtocol.CMD_READ, 0, 65536, null).error()).isZero();
				for (int i = 0; i < 3; i++) {
					assertThat(mem.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isZero();
				}
				assertThat(disk.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isZero();

				JsonNode nbd = actuator.getJson("/actuator/nbd");
				assertThat(nbd.get("exports").findValuesAsString("name")).contains("mem", "disk", "scratch");
				for (JsonNode export : nbd.get("exports")) {
					if (export.get("name").asString().equals("mem")) {
						assertThat(export.get("size").asLong()).isEqualTo(1L << 30);
						assertThat(export.get("flush").get("count").asLong()).isEqualTo(3);
						assertThat(export.get("connections").asInt()).isEqualTo(1);
					}
				}
				assertThat(nbd.get("connections").size()).isEqualTo(2);
				JsonNode diskExport = actuator.getJson("/actuator/nbd/disk");
				assertThat(diskExport.get("connections").size()).isEqualTo(1);
				String diskConnection = diskExport.get("connections").get(0).get("id").asString();

				String prometheus = actuator.prometheus();
				assertThat(prometheus).contains("nbd_requests_seconds_count{export=\"mem\",op=\"write\",outcome=\"success\"} 1",
						"nbd_requests_seconds_sum{", "nbd_requests_seconds_max{",
						"nbd_flush_seconds_bucket{export=\"mem\",le=", "nbd_flush_seconds_count{export=\"mem\"} 3",
						"nbd_bytes_total{direction=\"read\",export=\"mem\"} 65536",
						"nbd_bytes_total{direction=\"written\",export=\"mem\"} 65536",
						"nbd_connections{export=\"disk\"} 1",
						"nbd_connection_inflight{connection=\"" + diskConnection + "\",export=\"disk\"}");

				HttpResponse<String> readiness = actuator.get("/actuator/health/readiness");
				assertThat(readiness.statusCode()).isEqualTo(200);
				assertThat(ActuatorClient.json(readiness).get("components").get("nbd").get("status").asString())
					.isEqualTo("UP");

				HttpResponse<String> deleted = actuator.delete("/actuator/nbd/disk/" + diskConnection);
				assertThat(deleted.statusCode()).isEqualTo(200);
				assertThat(disk.serverClosed()).isTrue();
				mem.disconnect();
			}
		}
	}

}
