package dev.nbd.sample.helm;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Predicate;

import org.awaitility.Awaitility;
import org.awaitility.core.ConditionTimeoutException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.springframework.boot.micrometer.metrics.test.autoconfigure.AutoConfigureMetrics;
import org.springframework.boot.test.context.SpringBootTest;
import org.springframework.boot.test.context.SpringBootTest.WebEnvironment;
import org.springframework.boot.test.web.server.LocalServerPort;

import dev.nbd.autoconfigure.LocalNbdServerPort;
import dev.nbd.sample.helm.HelmChart.Rendered;
import dev.nbd.testsupport.ActuatorClient;
import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.Libnbd;
import dev.nbd.testsupport.Processes;
import dev.nbd.testsupport.PromQl;

import static dev.nbd.sample.helm.HelmChart.get;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * The alerts and the Grafana dashboard shipped in the chart only query metric names that the
 * app really serves on {@code /actuator/prometheus} after some NBD traffic, so a renamed meter
 * cannot leave them silently empty.
 */
@SpringBootTest(webEnvironment = WebEnvironment.RANDOM_PORT,
		properties = { "nbd.server.port=0", "management.endpoints.web.exposure.include=health,prometheus",
				"nbd.exports.disk.path=target/chart-metric-names/disk.img", "nbd.server.max-connections=2" })
@AutoConfigureMetrics
class ChartMetricNamesTest {

	/** Series that come from Prometheus itself or kube-state-metrics, not from the app. */
	private static final Set<String> EXTERNAL = Set.of("up", "kube_pod_status_ready");

	@LocalNbdServerPort
	int nbdPort;

	@LocalServerPort
	int httpPort;

	@TempDir
	Path tmp;

	@Test
	void alertRulesQueryOnlyServedMetrics() throws Exception {
		Set<String> served = servedAfterTraffic();
		Rendered r = HelmChart.withDashboard(this.tmp)
			.template("-f", HelmChart.CHART.resolve("ci/monitoring-values.yaml").toString(),
					"--api-versions=monitoring.coreos.com/v1");
		List<Map<String, Object>> rules = get(r.one("PrometheusRule"), "spec.groups.0.rules");
		Set<String> used = new TreeSet<>();
		for (Map<String, Object> rule : rules) {
			used.addAll(PromQl.metricNames((String) rule.get("expr")));
		}
		assertThat(used).contains("nbd_flush_seconds_bucket", "nbd_requests_seconds_count", "nbd_connections", "up");
		assertServed(used, served, "PrometheusRule");
	}

	@Test
	void dashboardQueriesOnlyServedMetrics() throws Exception {
		Path dashboard = HelmChart.CHART.resolve(HelmChart.DASHBOARD);
		ExternalTool.requireThat(Files.exists(dashboard),
				"the Grafana dashboard " + dashboard + " is missing from the chart (grafanaDashboard.enabled needs it)");
		String json = Files.readString(dashboard);
		List<String> queries = PromQl.queries(json);
		assertThat(queries).as("PromQL queries in %s", dashboard).isNotEmpty();
		Set<String> used = new TreeSet<>();
		queries.forEach((q) -> used.addAll(PromQl.metricNames(q)));
		assertThat(used).as("metrics the dashboard queries").anyMatch((name) -> name.startsWith("nbd_"));
		assertServed(used, servedAfterTraffic(), "dashboard " + HelmChart.DASHBOARD);
	}

	private void assertServed(Set<String> used, Set<String> served, String where) {
		List<String> missing = new ArrayList<>();
		for (String name : used) {
			if (!served.contains(name) && !EXTERNAL.contains(name)) {
				missing.add(name);
			}
		}
		assertThat(missing).as("metric names in the %s that /actuator/prometheus does not serve (it serves: %s)",
				where, served.stream().filter((n) -> n.startsWith("nbd_")).toList())
			.isEmpty();
	}

	/**
	 * Scrapes the sample names served while two clients that wrote, flushed and read stay
	 * connected (per-connection series exist only then), after a third was refused for
	 * max-connections (refusal counters appear on the first refusal).
	 */
	private Set<String> servedAfterTraffic() throws IOException, InterruptedException {
		List<Process> held = new ArrayList<>();
		try {
			// Clients of an earlier test may still be closing; they would count against the limit.
			awaitScrape((b) -> !b.contains("nbd_connection_inflight{"), held);
			for (String export : List.of("mem", "scratch")) {
				Process client = Libnbd.startNbdsh(uri(export),
						"import time; h.pwrite(b'x' * 65536, 0); h.flush(); assert h.pread(65536, 0) == b'x' * 65536; "
								+ "print('ready', flush=True); time.sleep(120)");
				held.add(client);
				Libnbd.awaitLine(client, "ready", Duration.ofSeconds(60));
			}
			assertThat(new ActuatorClient(this.httpPort).prometheus().lines().anyMatch((l) -> l.startsWith("nbd_")))
				.as("/actuator/prometheus serves nbd_ metrics after NBD traffic (the NBD meters are registered)")
				.isTrue();
			String body = awaitScrape((b) -> b.lines().filter((l) -> l.startsWith("nbd_connection_inflight{")).count() == 2,
					held);
			Processes.Result third = Libnbd.nbdsh(Duration.ofSeconds(60), uri("mem"), "h.pread(512, 0)");
			assertThat(third.exitCode()).as("a third client beyond nbd.server.max-connections=2").isNotZero();
			body = awaitScrape((b) -> b.contains("nbd_connections_refused_total{"), held);
			List<String> nbdLines = body.lines().filter((l) -> l.startsWith("nbd_")).toList();
			// The error-rate alert compares against this outcome value.
			assertThat(body.contains("outcome=\"success\""))
				.as("a series with outcome=\"success\" after successful requests; nbd_ series served: %s", nbdLines)
				.isTrue();
			Set<String> names = new TreeSet<>();
			for (String line : body.split("\n")) {
				if (!line.isBlank() && !line.startsWith("#")) {
					names.add(line.split("[{ ]", 2)[0]);
				}
			}
			return names;
		}
		finally {
			Libnbd.stop(held);
		}
	}

	private String uri(String export) {
		return "nbd://127.0.0.1:" + this.nbdPort + "/" + export;
	}

	/** Scrapes until {@code condition} holds (meters appear as clients act), or fails with the last scrape. */
	private String awaitScrape(Predicate<String> condition, List<Process> clients) {
		ActuatorClient actuator = new ActuatorClient(this.httpPort);
		try {
			return Awaitility.await()
				.atMost(Duration.ofMinutes(1))
				.pollInterval(Duration.ofMillis(200))
				.until(actuator::prometheus, condition);
		}
		catch (ConditionTimeoutException ex) {
			StringBuilder out = new StringBuilder();
			for (Process p : clients) {
				out.append(p.isAlive() ? "(client running)\n" : "(client exited " + p.exitValue() + ")\n");
			}
			throw new AssertionError("metrics did not appear within a minute; clients:\n" + out + "last scrape (nbd_):\n"
					+ String.join("\n", actuator.prometheus().lines().filter((l) -> l.startsWith("nbd_")).toList()), ex);
		}
	}

}
