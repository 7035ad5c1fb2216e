package dev.nbd.sample.helm;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.Predicate;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.yaml.snakeyaml.LoaderOptions;
import org.yaml.snakeyaml.Yaml;
import org.yaml.snakeyaml.constructor.SafeConstructor;

import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.micrometer.metrics.test.autoconfigure.AutoConfigureMetrics;
import org.springframework.boot.test.context.SpringBootTest;
import org.springframework.boot.test.context.SpringBootTest.WebEnvironment;
import org.springframework.boot.test.web.server.LocalServerPort;

import dev.nbd.autoconfigure.LocalNbdServerPort;
import dev.nbd.sample.helm.HelmChart.Rendered;
import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.Processes;

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
			used.addAll(metricNames((String) rule.get("expr")));
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
		List<String> queries = queries(json);
		assertThat(queries).as("PromQL queries in %s", dashboard).isNotEmpty();
		Set<String> used = new TreeSet<>();
		queries.forEach((q) -> used.addAll(metricNames(q)));
		assertThat(used).as("metrics the dashboard queries").anyMatch((name) -> name.startsWith("nbd_"));
		assertServed(used, servedAfterTraffic(), "dashboard " + HelmChart.DASHBOARD);
	}

	@Test
	void metricNamesAreFoundInPromQl() {
		assertThat(metricNames("histogram_quantile(0.99, sum by (export, le) (rate(nbd_flush_seconds_bucket"
				+ "{job=\"x\", export=~\"$export\"}[$__rate_interval]))) > 0.5"))
			.containsExactly("nbd_flush_seconds_bucket");
		assertThat(metricNames("sum by (namespace, pod) (nbd_connections{a=\"b\"}) > 512 * 0.8 or absent(up{x=\"y\"})"))
			.containsExactlyInAnyOrder("nbd_connections", "up");
		assertThat(metricNames("sum(rate(nbd_bytes_total{direction=\"read\"}[5m])) / ignoring(direction) "
				+ "group_left sum(rate(jvm_gc_pause_seconds_count[1m] offset 1h)) unless on(pod) bool 1e3"))
			.containsExactlyInAnyOrder("nbd_bytes_total", "jvm_gc_pause_seconds_count");
		assertThat(metricNames("label_values(nbd_connections{namespace=\"$namespace\"}, export)"))
			.containsExactly("nbd_connections");
		assertThat(metricNames("label_values(namespace)")).isEmpty();
	}

	@Test
	void queriesAreReadFromPanelsRowsAndQueryVariables() {
		String json = """
				{"panels": [{"targets": [{"expr": "sum(a_total)"}]},
				            {"type": "row", "panels": [{"targets": [{"expr": "b"}]}]}],
				 "templating": {"list": [{"type": "datasource", "query": "prometheus"},
				                         {"type": "query", "query": {"query": "label_values(c, x)"}}]}}
				""";
		assertThat(queries(json)).containsExactly("sum(a_total)", "b", "label_values(c, x)");
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
		Path nbdsh = ExternalTool.require("nbdsh");
		List<Process> held = new ArrayList<>();
		try {
			// Clients of an earlier test may still be closing; they would count against the limit.
			awaitScrape((b) -> !b.contains("nbd_connection_inflight{"), held);
			for (String export : List.of("mem", "scratch")) {
				Process client = Processes.builder(List.of(nbdsh.toString(), "-u", uri(export), "-c",
						"import time; h.pwrite(b'x' * 65536, 0); h.flush(); assert h.pread(65536, 0) == b'x' * 65536; "
								+ "print('ready', flush=True); time.sleep(120)"))
					.redirectErrorStream(true)
					.start();
				held.add(client);
				awaitReady(client);
			}
			assertThat(scrape().lines().anyMatch((l) -> l.startsWith("nbd_")))
				.as("/actuator/prometheus serves nbd_ metrics after NBD traffic (the NBD meters are registered)")
				.isTrue();
			String body = awaitScrape((b) -> b.lines().filter((l) -> l.startsWith("nbd_connection_inflight{")).count() == 2,
					held);
			Processes.Result third = Processes.run(Duration.ofSeconds(60), nbdsh.toString(), "-u", uri("mem"), "-c",
					"h.pread(512, 0)");
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
			for (Process p : held) {
				p.destroyForcibly();
				p.waitFor(10, TimeUnit.SECONDS);
			}
		}
	}

	/** Waits for the client's "ready" line: its write, flush and read are done, it stays connected. */
	private static void awaitReady(Process client) throws InterruptedException {
		BufferedReader out = new BufferedReader(new InputStreamReader(client.getInputStream(), StandardCharsets.UTF_8));
		CompletableFuture<String> output = CompletableFuture.supplyAsync(() -> {
			StringBuilder seen = new StringBuilder();
			try {
				for (String line = out.readLine(); line != null; line = out.readLine()) {
					if (line.equals("ready")) {
						return null;
					}
					seen.append(line).append('\n');
				}
			}
			catch (IOException ex) {
				seen.append(ex);
			}
			return seen.toString();
		});
		try {
			String failure = output.get(60, TimeUnit.SECONDS);
			if (failure != null) {
				throw new AssertionError("nbdsh client ended before it was ready:\n" + failure);
			}
		}
		catch (ExecutionException | TimeoutException ex) {
			throw new AssertionError("nbdsh client not ready within 60s", ex);
		}
	}

	private String uri(String export) {
		return "nbd://127.0.0.1:" + this.nbdPort + "/" + export;
	}

	/** Scrapes until {@code condition} holds (meters appear as clients act), or fails with the last scrape. */
	private String awaitScrape(Predicate<String> condition, List<Process> clients) throws InterruptedException {
		long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
		String body = scrape();
		while (!condition.test(body)) {
			if (System.nanoTime() > deadline) {
				StringBuilder out = new StringBuilder();
				for (Process p : clients) {
					out.append(p.isAlive() ? "(client running)\n" : "(client exited " + p.exitValue() + ")\n");
				}
				throw new AssertionError("metrics did not appear within 60s; clients:\n" + out + "last scrape (nbd_):\n"
						+ String.join("\n", body.lines().filter((l) -> l.startsWith("nbd_")).toList()));
			}
			Thread.sleep(200);
			body = scrape();
		}
		return body;
	}

	private String scrape() {
		HttpClient client = HttpClient.newHttpClient();
		try {
			HttpRequest request = HttpRequest
				.newBuilder(URI.create("http://127.0.0.1:" + this.httpPort + "/actuator/prometheus"))
				.build();
			HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
			assertThat(response.statusCode()).isEqualTo(200);
			return response.body();
		}
		catch (IOException ex) {
			throw new AssertionError(ex);
		}
		catch (InterruptedException ex) {
			Thread.currentThread().interrupt();
			throw new AssertionError(ex);
		}
	}

	/**
	 * PromQL in a Grafana dashboard: every panel target's {@code expr} (nested rows too) and
	 * every {@code query} variable. JSON is YAML, so SnakeYAML reads it.
	 */
	@SuppressWarnings("unchecked")
	static List<String> queries(String json) {
		Map<String, Object> dashboard = new Yaml(new SafeConstructor(new LoaderOptions())).load(json);
		List<String> out = new ArrayList<>();
		collectExprs(dashboard.get("panels"), out);
		List<Map<String, Object>> variables = get(dashboard, "templating.list");
		for (Map<String, Object> variable : (variables != null) ? variables : List.<Map<String, Object>>of()) {
			if ("query".equals(variable.get("type"))) {
				Object query = variable.get("query");
				out.add((query instanceof Map<?, ?> map) ? (String) map.get("query") : (String) query);
			}
		}
		out.removeIf((q) -> q == null || q.isBlank());
		return out;
	}

	@SuppressWarnings("unchecked")
	private static void collectExprs(Object node, List<String> out) {
		if (node instanceof List<?> list) {
			list.forEach((item) -> collectExprs(item, out));
		}
		else if (node instanceof Map<?, ?> map) {
			Object expr = map.get("expr");
			if (expr instanceof String s) {
				out.add(s);
			}
			map.values().forEach((value) -> collectExprs(value, out));
		}
	}

	private static final Set<String> KEYWORDS = Set.of("by", "without", "on", "ignoring", "group_left", "group_right",
			"bool", "and", "or", "unless", "offset", "inf", "nan", "atan2");

	/**
	 * Metric names in a PromQL expression: identifiers that are not functions, keywords, label
	 * names (inside braces or grouping clauses), strings, ranges or Grafana variables.
	 */
	static Set<String> metricNames(String expr) {
		String e = expr.replaceAll("label_values\\(\\s*([^,()]*(?:\\{[^}]*\\})?)\\s*,[^)]*\\)", "$1")
			.replaceAll("label_values\\([^)]*\\)", " ")
			.replaceAll("\\{[^}]*\\}", " ")
			.replaceAll("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'", " ")
			.replaceAll("\\[[^\\]]*\\]", " ")
			.replaceAll("\\b(?:by|without|on|ignoring|group_left|group_right)\\s*\\([^)]*\\)", " ")
			.replaceAll("\\$\\{?\\w+(?::\\w+)?\\}?", " ");
		Set<String> names = new TreeSet<>();
		Matcher m = Pattern.compile("(?<![\\w.])([A-Za-z_:][A-Za-z0-9_:]*+)(?!\\s*\\()").matcher(e);
		while (m.find()) {
			String token = m.group(1);
			if (!KEYWORDS.contains(token.toLowerCase())) {
				names.add(token);
			}
		}
		return names;
	}

}
