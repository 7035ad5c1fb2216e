package dev.nbd.testsupport;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import tools.jackson.databind.JsonNode;
import tools.jackson.databind.json.JsonMapper;

/**
 * PromQL as the monitoring assets hold it: the queries of a Grafana dashboard and the metric
 * names a query reads. One reading for every test (the chart's name check and the real-Prometheus
 * check), so they agree on what the dashboard asks.
 */
public final class PromQl {

	private static final JsonMapper json = JsonMapper.builder().build();

	private static final Set<String> KEYWORDS = Set.of("by", "without", "on", "ignoring", "group_left", "group_right",
			"bool", "and", "or", "unless", "offset", "inf", "nan", "atan2");

	private static final Pattern IDENTIFIER = Pattern.compile("(?<![\\w.])([A-Za-z_:][A-Za-z0-9_:]*+)(?!\\s*\\()");

	private PromQl() {
	}

	/** A panel target's query and the title of its panel. */
	public record PanelQuery(String panel, String expr) {
	}

	/** Every panel target's {@code expr}, panels inside rows included. */
	public static List<PanelQuery> panelQueries(String dashboardJson) {
		List<PanelQuery> out = new ArrayList<>();
		collectPanels(json.readTree(dashboardJson).path("panels"), out);
		return out;
	}

	/** The queries of the dashboard's {@code query} variables (Grafana's {@code label_values(...)}, not PromQL as such). */
	public static List<String> variableQueries(String dashboardJson) {
		List<String> out = new ArrayList<>();
		for (JsonNode variable : json.readTree(dashboardJson).path("templating").path("list")) {
			if ("query".equals(variable.path("type").asString())) {
				JsonNode query = variable.path("query");
				String text = query.isObject() ? query.path("query").asString() : query.asString();
				if (text != null && !text.isBlank()) {
					out.add(text);
				}
			}
		}
		return out;
	}

	/** Panel queries, then variable queries. */
	public static List<String> queries(String dashboardJson) {
		List<String> out = new ArrayList<>();
		panelQueries(dashboardJson).forEach((q) -> out.add(q.expr()));
		out.addAll(variableQueries(dashboardJson));
		return out;
	}

	private static void collectPanels(JsonNode panels, List<PanelQuery> out) {
		for (JsonNode panel : panels) {
			for (JsonNode target : panel.path("targets")) {
				String expr = target.path("expr").asString();
				if (expr != null && !expr.isBlank()) {
					out.add(new PanelQuery(panel.path("title").asString(), expr));
				}
			}
			collectPanels(panel.path("panels"), out);
		}
	}

	/**
	 * Metric names in a PromQL expression: identifiers that are not functions, keywords, label
	 * names (inside braces or grouping clauses), strings, ranges or Grafana variables.
	 */
	public static Set<String> metricNames(String expr) {
		String e = expr.replaceAll("label_values\\(\\s*([^,()]*(?:\\{[^}]*\\})?)\\s*,[^)]*\\)", "$1")
			.replaceAll("label_values\\([^)]*\\)", " ")
			.replaceAll("\\{[^}]*\\}", " ")
			.replaceAll("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'", " ")
			.replaceAll("\\[[^\\]]*\\]", " ")
			.replaceAll("\\b(?:by|without|on|ignoring|group_left|group_right)\\s*\\([^)]*\\)", " ")
			.replaceAll("\\$\\{?\\w+(?::\\w+)?\\}?", " ");
		Set<String> names = new TreeSet<>();
		Matcher m = IDENTIFIER.matcher(e);
		while (m.find()) {
			String token = m.group(1);
			if (!KEYWORDS.contains(token.toLowerCase())) {
				names.add(token);
			}
		}
		return names;
	}

}
