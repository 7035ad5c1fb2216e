package dev.nbd.sample;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.json.JsonMapper;

import dev.nbd.autoconfigure.NbdExportProperties;
import dev.nbd.autoconfigure.NbdServerProperties;
import dev.nbd.autoconfigure.actuate.NbdEndpoint;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.sample.support.SampleAppProcess;
import dev.nbd.testsupport.ActuatorClient;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The sample app after Spring AOT processing (profile {@code aot}: {@code process-aot} runs in
 * {@code package} unless tests are skipped), started with {@code -Dspring.aot.enabled=true}:
 * the generated bean definitions replace the auto-configuration classes, and the server, its
 * property and bean exports, the actuator endpoint, health and metrics still work.
 */
class AotModeIT {


	@Test
	void sampleAppRunsAotProcessed(@TempDir Path dir) throws Exception {
		// an export the build-time processing never saw: export properties are read at startup
		try (SampleAppProcess app = SampleAppProcess.startWithJvmOptions(dir, List.of("-Dspring.aot.enabled=true"),
				"--nbd.exports.extra.type=memory", "--nbd.exports.extra.size=1MB")) {
			assertThat(app.log()).contains("Starting AOT-processed SampleApplication");
			byte[] data = new byte[65536];
			Arrays.fill(data, (byte) 7);
			for (String export : List.of("mem", "disk", "scratch", "extra")) {
				try (RawNbdClient client = RawNbdClient.connect(app.nbdPort(), export)) {
					assertThat(client.call(NbdProtocol.CMD_WRITE, 4096, data.length, data).error()).as(export).isZero();
					RawNbdClient.Reply read = client.call(NbdProtocol.CMD_READ, 4096, data.length, null);
					assertThat(read.error()).as(export).isZero();
					assertThat(read.data()).as(export).isEqualTo(data);
					client.disconnect();
				}
			}
			JsonNode nbd = JsonMapper.builder().build().readTree(get(app, "/actuator/nbd"));
			assertThat(nbd.get("exports").findValuesAsString("name")).containsExactlyInAnyOrder("mem", "disk", "scratch",
					"extra");
			JsonNode health = JsonMapper.builder().build().readTree(get(app, "/actuator/health/readiness"));
			assertThat(health.get("components").get("nbd").get("status").asString()).isEqualTo("UP");
			assertThat(get(app, "/actuator/prometheus")).contains("nbd_bytes_total{direction=\"written\",export=\"scratch\"} 65536");
		}
	}

	/**
	 * What a native image reflects on: the actuator endpoint's JSON records and the
	 * configuration properties the binder fills. Spring Boot's AOT processors register them
	 * (the starter needs no RuntimeHintsRegistrar of its own); this keeps it so.
	 */
	@Test
	void aotProcessingRegistersReflectionHintsForEndpointAndProperties() throws Exception {
		Path metadata = Path.of("target/spring-aot/main/resources/META-INF/native-image/dev.nbd/sample-app/reachability-metadata.json");
		JsonNode reflection = JsonMapper.builder().build().readTree(Files.readString(metadata)).get("reflection");
		List<String> types = reflection.findValuesAsString("type");
		List<Class<?>> needed = new ArrayList<>(List.of(NbdServerProperties.class, NbdServerProperties.Ssl.class,
				NbdExportProperties.class, NbdExportProperties.Export.class, NbdEndpoint.class));
		Arrays.stream(NbdEndpoint.class.getDeclaredClasses()).filter(Class::isRecord).forEach(needed::add);
		assertThat(types).containsAll(needed.stream().map(Class::getName).toList());
	}

	private String get(SampleAppProcess app, String path) {
		return new ActuatorClient(app.httpPort()).getOk(path);
	}

}
