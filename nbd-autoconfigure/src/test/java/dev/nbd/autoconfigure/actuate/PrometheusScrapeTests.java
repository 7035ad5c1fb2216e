package dev.nbd.autoconfigure.actuate;

import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import org.awaitility.Awaitility;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.springframework.beans.factory.annotation.Autowired;
import org.springframework.boot.test.web.server.LocalServerPort;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.json.JsonMapper;

import dev.nbd.autoconfigure.LocalNbdServerPort;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.server.NbdServer;
import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.FreePort;
import dev.nbd.testsupport.Processes;
import dev.nbd.testsupport.PromQl;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * A real Prometheus server (Debian's {@code prometheus}) scrapes the application while a client
 * flushes, and answers the dashboard's flush-latency query.
 */
@ObservabilityTest
class PrometheusScrapeTests {

	static final String FLUSH_P99 = "histogram_quantile(0.99, sum by (le, export) (rate(nbd_flush_seconds_bucket[1m])))";

	/** The dashboard the Helm chart ships (tests run in the module directory). */
	static final Path DASHBOARD = Path.of("../helm/nbd-server/dashboards/nbd-server.json");

	private final HttpClient http = HttpClient.newHttpClient();

	@LocalServerPort
	int httpPort;

	@LocalNbdServerPort
	int nbdPort;

	@Autowired
	NbdServer server;

	@Test
	void prometheusAnswersFlushLatencyQuantile(@TempDir Path dir) throws Exception {
		Path prometheus = ExternalTool.require("prometheus");
		int port = FreePort.find();
		Path config = dir.resolve("prometheus.yml");
		Files.writeString(config, """
				global:
				  scrape_interval: 1s
				  evaluation_interval: 1s
				scrape_configs:
				  - job_name: nbd
				    metrics_path: /actuator/prometheus
				    static_configs:
				      - targets: ['127.0.0.1:%d']
				""".formatted(this.httpPort));
		Path log = dir.resolve("prometheus.log");
		Process process = Processes
			.builder(List.of(prometheus.toString(), "--config.file=" + config, "--storage.tsdb.path=" + dir.resolve("data"),
					"--web.listen-address=127.0.0.1:" + port, "--log.level=warn"))
			.redirectErrorStream(true)
			.redirectOutput(log.toFile())
			.start();
		AtomicBoolean running = new AtomicBoolean(true);
		Thread traffic = new Thread(() -> flushUntilStopped(running), "flush-traffic");
		traffic.start();
		try {
			// Prometheus scrapes every second and needs a few scrapes for a rate.
			JsonNode result = Awaitility.await()
				.atMost(Duration.ofMinutes(2))
				.pollInterval(Duration.ofMillis(500))
				.ignoreExceptions()
				.alias("a p99 for export slow; prometheus log in " + log)
				.until(() -> query(port, FLUSH_P99), (r) -> r != null && hasValue(r, "slow"));
			for (JsonNode series : result) {
				if ("slow".equals(series.get("metric").get("export").asString())) {
					double seconds = Double.parseDouble(series.get("value").get(1).asString());
					assertThat(seconds).isGreaterThan(0).isLessThanOrEqualTo(10);
				}
			}
			assertDashboardQueriesWork(port);
		}
		finally {
			running.set(false);
			traffic.join(10_000);
			// The context is shared with classes that count connections: leave none behind.
			NbdObservabilityTests.await(() -> this.server.connections().isEmpty());
			process.destroy();
			if (!process.waitFor(10, TimeUnit.SECONDS)) {
				process.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
			}
		}
	}

	/**
	 * Every query of the Grafana dashboard is valid PromQL over series the application exports
	 * (error and refusal panels may be empty: this traffic has none).
	 */
	private void assertDashboardQueriesWork(int port) throws Exception {
		List<PromQl.PanelQuery> queries = PromQl.panelQueries(Files.readString(DASHBOARD));
		for (PromQl.PanelQuery query : queries) {
			String promql = query.expr().replace("$__rate_interval", "1m").replace("$export", ".*");
			JsonNode result = query(port, promql);
			assertThat(result).as("panel '%s': %s", query.panel(), promql).isNotNull();
			if (!query.expr().contains("outcome!=") && !query.expr().contains("refused")) {
				assertThat(result).as("panel '%s' has data: %s", query.panel(), promql).isNotEmpty();
			}
		}
		assertThat(queries).hasSizeGreaterThan(10);
	}

	private void flushUntilStopped(AtomicBoolean running) {
		// On "slow" (its gate is open here): the other tests count exact traffic on "mem".
		try (RawNbdClient client = RawNbdClient.connect(this.nbdPort, "slow")) {
			while (running.get()) {
				client.call(NbdProtocol.CMD_WRITE, 0, 4096, new byte[4096]);
				client.call(NbdProtocol.CMD_FLUSH, 0, 0, null);
				Thread.sleep(10);
			}
			client.disconnect();
		}
		catch (Exception ex) {
			throw new IllegalStateException(ex);
		}
	}

	/** The {@code result} array of an instant query, or null while Prometheus is not up. */
	private JsonNode query(int port, String promql) throws InterruptedException {
		URI uri = URI.create("http://127.0.0.1:" + port + "/api/v1/query?query="
				+ URLEncoder.encode(promql, StandardCharsets.UTF_8));
		try {
			HttpResponse<String> response = this.http.send(
					HttpRequest.newBuilder(uri).timeout(Duration.ofSeconds(5)).build(),
					HttpResponse.BodyHandlers.ofString());
			if (response.statusCode() != 200) {
				return null;
			}
			return JsonMapper.builder().build().readTree(response.body()).get("data").get("result");
		}
		catch (java.io.IOException ex) {
			return null;
		}
	}

	private static boolean hasValue(JsonNode result, String export) {
		for (JsonNode series : result) {
			if (export.equals(series.get("metric").get("export").asString())
					&& !"NaN".equals(series.get("value").get(1).asString())) {
				return true;
			}
		}
		return false;
	}

}
