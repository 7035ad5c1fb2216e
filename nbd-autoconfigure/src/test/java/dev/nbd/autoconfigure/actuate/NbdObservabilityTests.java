package dev.nbd.autoconfigure.actuate;

import java.io.IOException;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.Socket;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

import io.micrometer.core.instrument.MeterRegistry;
import org.awaitility.Awaitility;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.springframework.beans.factory.annotation.Autowired;
import org.springframework.boot.test.system.CapturedOutput;
import org.springframework.boot.test.system.OutputCaptureExtension;
import org.springframework.boot.test.web.server.LocalServerPort;
import tools.jackson.databind.JsonNode;

import dev.nbd.autoconfigure.LocalNbdServerPort;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.server.NbdServer;
import dev.nbd.testsupport.ActuatorClient;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The {@code nbd} endpoint, the Prometheus text, readiness and connection logging, against real
 * NBD traffic: connections held open with requests in flight on the {@code slow} export.
 * Draining is in {@link ReadinessDrainTests}.
 */
@ObservabilityTest
@ExtendWith(OutputCaptureExtension.class)
class NbdObservabilityTests {

	@LocalServerPort
	int httpPort;

	@LocalNbdServerPort
	int nbdPort;

	@Autowired
	ObservabilityTestApplication.Gate gate;

	@Autowired
	MeterRegistry registry;

	@Autowired
	NbdServer server;

	@Test
	void endpointAndPrometheusShowLiveConnections(CapturedOutput output) throws Exception {
		ActuatorClient actuator = new ActuatorClient(this.httpPort);
		// The context is shared: counts below are exact once other classes' clients are gone.
		await(() -> this.server.connections().isEmpty());
		// Traffic on mem: bytes both ways and flushes.
		try (RawNbdClient mem = RawNbdClient.connect(this.nbdPort, "mem")) {
			assertThat(mem.call(NbdProtocol.CMD_WRITE, 0, 8192, new byte[8192]).error()).isZero();
			assertThat(mem.call(NbdProtocol.CMD_READ, 0, 4096, null).error()).isZero();
			for (int i = 0; i < 5; i++) {
				assertThat(mem.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isZero();
			}
			// An error outcome: read past the end.
			assertThat(mem.call(NbdProtocol.CMD_READ, mem.size(), 4096, null).error()).isEqualTo(22);
			mem.disconnect();
		}
		refuseOne();
		this.gate.close();
		RawNbdClient a = RawNbdClient.connect(this.nbdPort, "slow");
		RawNbdClient b = RawNbdClient.connect(this.nbdPort, "slow");
		try {
			for (int i = 0; i < 3; i++) {
				a.sendRead(i * 4096L, 4096);
			}
			for (int i = 0; i < 2; i++) {
				b.sendRead(i * 4096L, 4096);
			}
			await(() -> this.server.export("slow").connections().stream().mapToInt((c) -> c.inFlight()).sum() == 5);

			JsonNode all = actuator.getJson("/actuator/nbd");
			JsonNode slow = find(all.get("exports"), "name", "slow");
			assertThat(slow.get("size").asLong()).isEqualTo(1024 * 1024);
			assertThat(slow.get("readOnly").asBoolean()).isFalse();
			assertThat(slow.get("multiConn").asBoolean()).isTrue();
			assertThat(slow.get("connections").asInt()).isEqualTo(2);
			JsonNode memExport = find(all.get("exports"), "name", "mem");
			assertThat(memExport.get("flush").get("count").asLong()).isEqualTo(5);
			assertThat(memExport.get("flush").get("meanMs").asDouble()).isPositive();
			assertThat(memExport.get("flush").get("p99Ms").asDouble()).isPositive();
			assertThat(memExport.get("flush").get("maxMs").asDouble()).isPositive();
			assertThat(memExport.get("flushRequests").asLong()).isEqualTo(5);
			// One after the other, each FLUSH needs a sync of its own: group commit has nothing to share.
			assertThat(memExport.get("backendSyncs").asLong()).isEqualTo(5);
			assertThat(memExport.get("bytesWritten").asLong()).isEqualTo(8192);
			assertThat(memExport.get("bytesRead").asLong()).isEqualTo(4096);
			assertThat(memExport.get("connections").asInt()).isZero();

			JsonNode connections = all.get("connections");
			assertThat(connections.size()).isEqualTo(2);
			List<Integer> inFlight = new ArrayList<>();
			for (JsonNode c : connections) {
				assertThat(c.get("export").asString()).isEqualTo("slow");
				assertThat(c.get("remote").asString()).startsWith("127.0.0.1:");
				assertThat(c.get("tls").asBoolean()).isFalse();
				assertThat(c.get("maxInFlight").asInt()).isEqualTo(64);
				assertThat(c.get("requests").asLong()).isEqualTo(c.get("inFlight").asLong());
				assertThat(c.get("peakInFlight").asInt()).isEqualTo(c.get("inFlight").asInt());
				assertThat(c.get("bytesRead").asLong()).isZero();
				assertThat(c.get("bytesWritten").asLong()).isZero();
				assertThat(Instant.parse(c.get("connectedAt").asString())).isBeforeOrEqualTo(Instant.now());
				assertThat(c.get("id").asString()).isNotEmpty();
				inFlight.add(c.get("inFlight").asInt());
			}
			assertThat(inFlight).containsExactlyInAnyOrder(3, 2);
			String idFirst = connections.get(0).get("id").asString();
			String idSecond = connections.get(1).get("id").asString();

			JsonNode one = actuator.getJson("/actuator/nbd/slow");
			assertThat(one.get("name").asString()).isEqualTo("slow");
			assertThat(one.get("connectionCount").asInt()).isEqualTo(2);
			assertThat(one.get("connections").size()).isEqualTo(2);
			assertThat(actuator.status("/actuator/nbd/nope")).isEqualTo(404);

			String prometheus = actuator.prometheus();
			assertThat(prometheus).contains("nbd_requests_seconds_count{export=\"mem\",op=\"write\",outcome=\"success\"} 1",
					"nbd_requests_seconds_sum{export=\"mem\",op=\"read\",outcome=\"success\"}",
					"nbd_requests_seconds_max{export=\"mem\",op=\"flush\",outcome=\"success\"}",
					"nbd_requests_seconds_count{export=\"mem\",op=\"read\",outcome=\"einval\"} 1",
					"nbd_flush_seconds_bucket{export=\"mem\",le=\"1.0E-5\"}",
					"nbd_flush_seconds_bucket{export=\"mem\",le=\"10.0\"}",
					"nbd_flush_seconds_count{export=\"mem\"} 5",
					"nbd_bytes_total{direction=\"read\",export=\"mem\"} 4096",
					"nbd_bytes_total{direction=\"written\",export=\"mem\"} 8192",
					"nbd_connections{export=\"slow\"} 2", "nbd_connections{export=\"mem\"} 0",
					"nbd_connection_inflight{connection=\"" + idFirst + "\",export=\"slow\"}",
					"nbd_connection_inflight{connection=\"" + idSecond + "\",export=\"slow\"}",
					"nbd_connections_refused_total{reason=\"protocol_error\"}", "nbd_flush_requests_total{export=\"mem\"} 5",
					"nbd_flush_syncs_total{export=\"mem\"}", "netty_eventexecutor_tasks_pending",
					"netty_allocator_memory_used");

			HttpResponse<String> readiness = actuator.get("/actuator/health/readiness");
			assertThat(readiness.statusCode()).isEqualTo(200);
			assertThat(ActuatorClient.json(readiness).get("components").get("nbd").get("status").asString())
				.isEqualTo("UP");

			// Disconnect b (two reads in flight) from the endpoint: its reads are answered first,
			// then the server closes the socket.
			String idB = (inFlight.get(0) == 2) ? idFirst : idSecond;
			HttpResponse<String> deleted = actuator.delete("/actuator/nbd/slow/" + idB);
			assertThat(deleted.statusCode()).isEqualTo(200);
			assertThat(ActuatorClient.json(deleted).get("id").asString()).isEqualTo(idB);
			assertThat(actuator.delete("/actuator/nbd/mem/" + idB).statusCode()).isEqualTo(404);
			this.gate.open();
			assertThat(b.receive().error()).isZero();
			assertThat(b.receive().error()).isZero();
			assertThat(b.serverClosed()).isTrue();
			for (int i = 0; i < 3; i++) {
				assertThat(a.receive().error()).isZero();
			}
			a.disconnect();
		}
		finally {
			this.gate.open();
			a.close();
			b.close();
		}
		await(() -> this.registry.find("nbd.connection.inflight").gauges().isEmpty());
		assertThat(actuator.prometheus()).doesNotContain("nbd_connection_inflight{");
		await(() -> output.getOut().contains("to export 'slow' closed after"));
		assertThat(output.getOut()).contains("to export 'mem' opened", "to export 'mem' closed after",
				"requests, 4096 bytes read, 8192 bytes written");
	}

	@Test
	void perConnectionMetersDoNotLeak() throws Exception {
		cycle();
		await(() -> this.registry.find("nbd.connection.inflight").gauges().isEmpty());
		List<String> baseline = meterIds();
		try (RawNbdClient open = RawNbdClient.connect(this.nbdPort, "mem")) {
			await(() -> this.registry.find("nbd.connection.inflight").tag("export", "mem").gauges().size() == 1);
		}
		for (int i = 0; i < 2000; i++) {
			cycle();
		}
		await(() -> this.registry.find("nbd.connection.inflight").gauges().isEmpty());
		assertThat(meterIds()).containsExactlyInAnyOrderElementsOf(baseline);
		assertThat(this.server.connections()).isEmpty();
	}

	/** Our meters (the JVM's come and go with GC causes). */
	private List<String> meterIds() {
		return this.registry.getMeters()
			.stream()
			.map((m) -> m.getId())
			.filter((id) -> id.getName().startsWith("nbd.") || id.getName().startsWith("netty."))
			.map(Object::toString)
			.toList();
	}

	private void cycle() throws IOException {
		RawNbdClient c = RawNbdClient.connect(this.nbdPort, "mem");
		c.disconnect();
	}

	/** A client that sends bad flags: refused as protocol_error. */
	private void refuseOne() throws IOException {
		try (Socket s = new Socket(InetAddress.getLoopbackAddress(), this.nbdPort)) {
			s.getInputStream().readNBytes(18);
			OutputStream out = s.getOutputStream();
			out.write(new byte[4]);
			out.flush();
			assertThat(s.getInputStream().read()).isEqualTo(-1);
		}
	}

	private static JsonNode find(JsonNode array, String field, String value) {
		for (JsonNode n : array) {
			if (value.equals(n.get(field).asString())) {
				return n;
			}
		}
		throw new AssertionError("no element with " + field + "=" + value + " in " + array);
	}

	static void await(Callable<Boolean> condition) {
		Awaitility.await().atMost(Duration.ofMinutes(1)).pollInterval(Duration.ofMillis(10)).until(condition);
	}

}
