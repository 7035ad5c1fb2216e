package dev.nbd.sample.helm;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.stream.Stream;

import org.yaml.snakeyaml.LoaderOptions;
import org.yaml.snakeyaml.Yaml;
import org.yaml.snakeyaml.constructor.SafeConstructor;

import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.Processes;

/**
 * The chart under {@code helm/nbd-server}, rendered with the real {@code helm} binary and parsed
 * into plain maps, as a reviewer would read {@code helm template} output.
 */
final class HelmChart {

	static final Path CHART = Path.of("..", "helm", "nbd-server").toAbsolutePath().normalize();

	static final String DASHBOARD = "dashboards/nbd-server.json";

	/** Stand-in dashboard for rendering tests while the real one is not in the chart. */
	private static final Path PLACEHOLDER_DASHBOARD = Path.of("src", "test", "resources", "helm",
			"placeholder-dashboard.json");

	private static final Duration TIMEOUT = Duration.ofSeconds(60);

	private final Path helm;

	private final Path dir;

	private HelmChart(Path helm, Path dir) {
		this.helm = helm;
		this.dir = dir;
	}

	/** The chart as committed. */
	static HelmChart committed() {
		return new HelmChart(ExternalTool.require("helm"), CHART);
	}

	/**
	 * A copy of the chart in {@code tmp} that has a dashboard: the committed one if present, a
	 * placeholder otherwise (so rendering tests do not depend on the dashboard's author).
	 */
	static HelmChart withDashboard(Path tmp) {
		Path copy = tmp.resolve("nbd-server");
		copyTree(CHART, copy);
		Path dashboard = copy.resolve(DASHBOARD);
		if (!Files.exists(dashboard)) {
			try {
				Files.createDirectories(dashboard.getParent());
				Files.copy(PLACEHOLDER_DASHBOARD, dashboard);
			}
			catch (IOException ex) {
				throw new UncheckedIOException(ex);
			}
		}
		return new HelmChart(ExternalTool.require("helm"), copy);
	}

	Path dir() {
		return this.dir;
	}

	/** The {@code ci/*-values.yaml} files, sorted. */
	static List<Path> ciValues() {
		try (Stream<Path> files = Files.list(CHART.resolve("ci"))) {
			return files.filter((p) -> p.getFileName().toString().endsWith("-values.yaml")).sorted().toList();
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
	}

	Processes.Result lint(String... args) {
		List<String> cmd = new ArrayList<>(List.of(this.helm.toString(), "lint", "--strict", this.dir.toString()));
		cmd.addAll(List.of(args));
		return Processes.run(TIMEOUT, null, null, cmd);
	}

	/** {@code helm template} output; fails the test if helm fails. */
	Rendered template(String... args) {
		Processes.Result result = templateRaw(args).assertSuccess();
		return new Rendered(result.stdout());
	}

	Processes.Result templateRaw(String... args) {
		List<String> cmd = new ArrayList<>(List.of(this.helm.toString(), "template", "rel", this.dir.toString(),
				"--namespace", "storage"));
		cmd.addAll(List.of(args));
		return Processes.run(TIMEOUT, null, null, cmd);
	}

	private static void copyTree(Path from, Path to) {
		try (Stream<Path> paths = Files.walk(from)) {
			for (Path p : paths.sorted(Comparator.naturalOrder()).toList()) {
				Path target = to.resolve(from.relativize(p).toString());
				if (Files.isDirectory(p)) {
					Files.createDirectories(target);
				}
				else {
					Files.copy(p, target);
				}
			}
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
	}

	/** Rendered manifests, one map per YAML document. */
	record Rendered(String text, List<Map<String, Object>> objects) {

		Rendered(String text) {
			this(text, parse(text));
		}

		@SuppressWarnings("unchecked")
		private static List<Map<String, Object>> parse(String text) {
			Yaml yaml = new Yaml(new SafeConstructor(new LoaderOptions()));
			List<Map<String, Object>> out = new ArrayList<>();
			for (Object doc : yaml.loadAll(text)) {
				if (doc != null) {
					out.add((Map<String, Object>) doc);
				}
			}
			return out;
		}

		List<Map<String, Object>> ofKind(String kind) {
			return this.objects.stream().filter((o) -> kind.equals(o.get("kind"))).toList();
		}

		Map<String, Object> one(String kind) {
			List<Map<String, Object>> all = ofKind(kind);
			if (all.size() != 1) {
				throw new AssertionError("expected one " + kind + ", found " + all.size() + "\n" + this.text);
			}
			return all.get(0);
		}

		Map<String, Object> named(String kind, String name) {
			return ofKind(kind).stream()
				.filter((o) -> name.equals(get(o, "metadata.name")))
				.findFirst()
				.orElseThrow(() -> new AssertionError("no " + kind + " named " + name + "\n" + this.text));
		}

		List<String> kinds() {
			return this.objects.stream().map((o) -> Objects.toString(o.get("kind"))).toList();
		}

	}

	/** Walks a dotted path through maps; list elements by index ("containers.0.name"). */
	@SuppressWarnings("unchecked")
	static <T> T get(Object root, String path) {
		Object current = root;
		for (String part : path.split("\\.")) {
			if (current instanceof Map<?, ?> map) {
				current = map.get(part);
			}
			else if (current instanceof List<?> list && part.matches("\\d+")) {
				current = list.get(Integer.parseInt(part));
			}
			else {
				return null;
			}
		}
		return (T) current;
	}

}
