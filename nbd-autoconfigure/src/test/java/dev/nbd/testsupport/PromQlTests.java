package dev.nbd.testsupport;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;

class PromQlTests {

	@Test
	void metricNamesAreFoundInPromQl() {
		assertThat(PromQl.metricNames("histogram_quantile(0.99, sum by (export, le) (rate(nbd_flush_seconds_bucket"
				+ "{job=\"x\", export=~\"$export\"}[$__rate_interval]))) > 0.5"))
			.containsExactly("nbd_flush_seconds_bucket");
		assertThat(PromQl
			.metricNames("sum by (namespace, pod) (nbd_connections{a=\"b\"}) > 512 * 0.8 or absent(up{x=\"y\"})"))
			.containsExactlyInAnyOrder("nbd_connections", "up");
		assertThat(PromQl.metricNames("sum(rate(nbd_bytes_total{direction=\"read\"}[5m])) / ignoring(direction) "
				+ "group_left sum(rate(jvm_gc_pause_seconds_count[1m] offset 1h)) unless on(pod) bool 1e3"))
			.containsExactlyInAnyOrder("nbd_bytes_total", "jvm_gc_pause_seconds_count");
		assertThat(PromQl.metricNames("label_values(nbd_connections{namespace=\"$namespace\"}, export)"))
			.containsExactly("nbd_connections");
		assertThat(PromQl.metricNames("label_values(namespace)")).isEmpty();
	}

	@Test
	void queriesAreReadFromPanelsRowsAndQueryVariables() {
		String json = """
				{"panels": [{"title": "A", "targets": [{"expr": "sum(a_total)"}]},
				            {"type": "row", "panels": [{"title": "B", "targets": [{"expr": "b"}]}]}],
				 "templating": {"list": [{"type": "datasource", "query": "prometheus"},
				                         {"type": "query", "query": {"query": "label_values(c, x)"}}]}}
				""";
		assertThat(PromQl.queries(json)).containsExactly("sum(a_total)", "b", "label_values(c, x)");
		assertThat(PromQl.panelQueries(json)).containsExactly(new PromQl.PanelQuery("A", "sum(a_total)"),
				new PromQl.PanelQuery("B", "b"));
		assertThat(PromQl.variableQueries(json)).containsExactly("label_values(c, x)");
	}

}
